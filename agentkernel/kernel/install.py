"""Kernel specs of the Agent kernel.

``pip install`` ships the ``agent`` spec as data files (``share/jupyter/kernels/agent``), so
Jupyter finds it with no further step. `install_kernel_spec` installs variants of it, such as
an "Agent (Codex)" kernel whose argv selects the backend and model.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_path

KERNEL_NAME = "agent"
DISPLAY_NAME = "Agent"
LOGOS = ("logo-32x32.png", "logo-64x64.png")


def kernel_spec(
    display_name: str = DISPLAY_NAME,
    *,
    backend: str | None = None,
    model: str | None = None,
    python: str = "python",
    interrupt_mode: str = "signal",
) -> dict[str, Any]:
    """The kernel.json of an Agent kernel. ``python`` is the interpreter to run: ``"python"``
    (the data-file spec: Jupyter runs it with its own interpreter) or a path."""
    argv = [python, "-m", "agentkernel.kernel", "-f", "{connection_file}"]
    if backend:
        argv.append(f"--AgentKernel.backend={backend}")
    if model:
        argv.append(f"--AgentKernel.model={model}")
    return {
        "argv": argv,
        "display_name": display_name,
        "language": "markdown",
        "interrupt_mode": interrupt_mode,
        # Prompt cells are not Python: the debugger has nothing to step through.
        "metadata": {"debugger": False},
    }


def install_kernel_spec(
    name: str = KERNEL_NAME,
    *,
    display_name: str | None = None,
    backend: str | None = None,
    model: str | None = None,
    user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install an Agent kernel spec that runs this Python; returns the directory written.

    Where, as for ``jupyter kernelspec install``: system-wide by default, ``user=True`` for
    the current user, or under ``prefix`` (``sys.prefix`` for this environment). The display
    name defaults to "Agent", or "Agent (Codex, gpt-5)" with a backend or model.
    """
    spec = kernel_spec(
        display_name or default_display_name(backend, model),
        backend=backend,
        model=model,
        python=sys.executable,
    )
    with tempfile.TemporaryDirectory() as source:
        (Path(source) / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
        for logo in _logos():
            shutil.copy(logo, source)
        return KernelSpecManager().install_kernel_spec(source, name, user=user, prefix=prefix)


def default_display_name(backend: str | None = None, model: str | None = None) -> str:
    details = [p for p in ((backend or "").capitalize(), model) if p]
    return f"{DISPLAY_NAME} ({', '.join(details)})" if details else DISPLAY_NAME


def _logos() -> list[Path]:
    """The logos of the installed ``agent`` spec (wherever pip put the data files); none if
    it cannot be found, and the variant then shows Jupyter's default icon."""
    for directory in jupyter_path("kernels", KERNEL_NAME):
        found = [Path(directory) / logo for logo in LOGOS]
        if all(path.is_file() for path in found):
            return found
    return []
