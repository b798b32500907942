"""``python -m agentkernel.kernel -f CONNECTION_FILE``: start the Agent kernel (what the
``agent`` kernel spec runs)."""

from ipykernel.kernelapp import IPKernelApp

from .kernel import AgentKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=AgentKernel)
