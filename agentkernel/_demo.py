"""The offline demo: JupyterLab on the quickstart notebook, answered by a scripted model.

With real credentials (``ANTHROPIC_API_KEY`` set, or a logged-in Claude Code) the demo starts no
scripted model and the same notebook talks to the real agent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .testing import Reply, ScriptedModelServer, text, tool_use

LABEL = "[scripted demo model]"
PACE = {"chunk_size": 3, "delay": 0.03}
"""The demo model streams its replies about as fast as a real one (~100 characters a second),
so a newcomer sees the live view at work."""


def demo_script() -> list[Reply]:
    """The replies of the demo model, matched on the quickstart notebook's prompts."""
    return [
        # Tool follow-ups first: their text (the tool's result, a denial naming the command)
        # may contain words of the rules below.
        Reply(
            match="tool_error",
            blocks=[text(f"{LABEL} The command was not run, so hello.txt was not created.")],
            times=0,
            **PACE,
        ),
        Reply(
            match="tool_result",
            blocks=[text(f"{LABEL} Done: hello.txt now holds a greeting.")],
            times=0,
            **PACE,
        ),
        Reply(
            match="What can you do",
            blocks=[
                text(
                    f"{LABEL} Hello! I am a scripted stand-in for a real model, so this "
                    "notebook runs offline. A real agent reads and edits files, runs commands "
                    "(after you approve them) and remembers the whole conversation."
                )
            ],
            times=0,
            **PACE,
        ),
        Reply(
            match="hello.txt",
            blocks=[
                text(f"{LABEL} I will create the file with a shell command."),
                tool_use(
                    "Bash",
                    {
                        "command": "echo 'Hello from agentkernel' > hello.txt",
                        "description": "Create hello.txt",
                    },
                ),
            ],
            times=0,
            **PACE,
        ),
        Reply(
            match="double 21",
            blocks=[text(f"{LABEL} Double 21 is **42**.\n\n```python\nanswer = 21 * 2\n```")],
            times=0,
            **PACE,
        ),
        Reply(
            match="first thing",
            blocks=[text(f"{LABEL} The first thing you asked was what I can do.")],
            times=0,
            **PACE,
        ),
    ]


def has_real_credentials() -> bool:
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return True
    config = Path(os.environ.get("CLAUDE_CONFIG_DIR", Path.home() / ".claude"))
    return (config / ".credentials.json").is_file()


def run_demo(notebook: str | None = None, *, lab_args: list[str] | None = None) -> int:
    """Open JupyterLab on the quickstart notebook; returns JupyterLab's exit code."""
    path = Path(notebook or "notebooks/quickstart.ipynb")
    if not path.is_file():
        print(
            f"error: {path} not found. Run the demo from the repository root, or pass the "
            "notebook: python -m agentkernel demo PATH",
            file=sys.stderr,
        )
        return 2
    if shutil.which("jupyter-lab") is None and not _has_module("jupyterlab"):
        print(
            "error: JupyterLab is not installed: pip install 'jupyter-agentkernel[demo]'",
            file=sys.stderr,
        )
        return 2
    # The URL JupyterLab prints (and opens) is its default URL: make it the notebook's page.
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        str(path),
        f"--ServerApp.root_dir={path.resolve().parent}",
        f"--LabApp.default_url=/lab/tree/{path.name}",
        *(lab_args or []),
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in command:
        command.append("--allow-root")  # containers often run as root; JupyterLab refuses it
    if has_real_credentials():
        print("Real credentials found: the notebook talks to the real agent.")
        return subprocess.call(command)
    from .kernel._demo_script import agent_kernel_script

    script = demo_script() + agent_kernel_script()
    with ScriptedModelServer(script) as server, tempfile.TemporaryDirectory() as config:
        print(f"Scripted demo model on {server.url}: answers are canned, labelled {LABEL}.")
        env = {**os.environ, **server.claude_env(), "CLAUDE_CONFIG_DIR": config}
        try:
            return subprocess.call(command, env=env)
        except KeyboardInterrupt:
            return 0


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None
