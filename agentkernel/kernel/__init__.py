"""The Agent kernel: a Jupyter kernel whose cells are turns of one persistent agent session.

`AgentKernel` is the kernel (``python -m agentkernel.kernel -f CONNECTION_FILE``);
`install_kernel_spec` installs a variant of its ``agent`` kernel spec
(``python -m agentkernel install --name agent-codex --backend codex``).
"""

from .install import install_kernel_spec, kernel_spec
from .kernel import AgentKernel

__all__ = ["AgentKernel", "install_kernel_spec", "kernel_spec"]
