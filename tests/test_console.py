"""``jupyter console`` in a real terminal (tmux), as a person types into it.

A console sends ``allow_stdin: true`` like a notebook page, but shows no widgets and ignores
``update_display_data``: the turn must reach it as printed text, and an approval as an input
prompt. Both ways in are covered: the Agent kernel (every line a prompt) and the stock Python
kernel with ``%%agent``. The screen is read with ``tmux capture-pane``, so what is checked is
what the person sees, escape sequences resolved.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .conftest import wait_until_gone
from .test_kernel import SHARE, cli_processes

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.timeout(180),
]

CONSOLE = Path(sys.executable).with_name("jupyter-console")
REPLY = "Hi from the console, streamed in small pieces."
DONE = "The file is made."


@dataclass
class Terminal:
    """One tmux session running a command; keys in, the screen out."""

    socket: str

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-1000", "-t", "console")

    def type(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "console", *keys)

    def wait_for(self, shown: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if shown in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{shown!r} not on the screen in {timeout:.0f} s:\n{screen}")
            time.sleep(0.1)

    def exited(self, timeout: float = 30) -> bool:
        """Whether the command ended (its pane stays, dead, for the screen to be read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tmux("display-message", "-p", "-t", "console", "#{pane_dead}").strip() == "1":
                return True
            time.sleep(0.2)
        return False


StartConsole = Callable[[str], Terminal]


@pytest.fixture
def console(agent_env: dict[str, str], workspace: Path, tmp_path: Path) -> Iterator[StartConsole]:
    """Start ``jupyter console --kernel NAME`` in tmux with the scripted model's env."""
    socket = f"agentkernel-test-{os.getpid()}-{tmp_path.name}"
    env = {
        **agent_env,
        "JUPYTER_PATH": str(SHARE),
        "AGENTKERNEL_STORE": str(tmp_path / "sessions.db"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    terminal = Terminal(socket)

    def start(kernel: str) -> Terminal:
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        command = f"env {assignments} {shlex.quote(str(CONSOLE))} --kernel={kernel}"
        size = ["-x", "160", "-y", "60"]
        terminal.tmux(
            *("-f", "/dev/null", "new-session", "-d", "-s", "console", *size),
            *("-c", str(workspace), command, ";", "set-option", "-w", "remain-on-exit", "on"),
        )
        terminal.wait_for("In [1]")
        return terminal

    yield start
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    leftover = [p.pid for p in cli_processes(agent_env["CLAUDE_CONFIG_DIR"])]
    assert wait_until_gone(leftover) == [], "an agent CLI outlived the console"


def _script(server: ScriptedModelServer) -> None:
    server.add(
        Reply(match="hello agent", blocks=[text(REPLY)], chunk_size=4, delay=0.01),
        Reply(match="make the file", blocks=[tool_use("Bash", {"command": "echo hi > made.txt"})]),
        Reply(match="tool_result", blocks=[text(DONE)]),
    )


def _check_turns(screen: str) -> None:
    assert REPLY in screen
    assert "VBox" not in screen and "BlockWidget" not in screen, screen
    assert "✔ Allowed Bash (by user)" in screen
    assert screen.count("── end_turn") == 2, screen


def test_agent_kernel_console_shows_turns_and_asks_at_the_prompt(
    server: ScriptedModelServer, console: StartConsole, workspace: Path
) -> None:
    _script(server)
    terminal = console("agent")
    terminal.type("hello agent", "Enter")
    terminal.wait_for(REPLY)
    terminal.wait_for("In [2]")
    terminal.type("please make the file", "Enter")
    terminal.wait_for("Allow Bash echo hi > made.txt? [y]es")
    assert not (workspace / "made.txt").exists()
    terminal.type("y", "Enter")
    terminal.wait_for(DONE)
    terminal.wait_for("In [3]")
    _check_turns(terminal.screen())
    assert (workspace / "made.txt").read_text() == "hi\n"
    # `%%python` alone waits for its code; `exit` leaves the console, it is no prompt.
    terminal.type("%%python", "Enter", "print(6 * 7)", "Enter", "Enter")
    terminal.wait_for("42")
    asked = len(server.requests)
    terminal.type("exit", "Enter")
    assert terminal.exited(), f"`exit` did not end the console:\n{terminal.screen()}"
    assert len(server.requests) == asked, "`exit` was sent to the agent"


def test_python_kernel_console_runs_agent_cells_as_text(
    server: ScriptedModelServer, console: StartConsole, workspace: Path
) -> None:
    _script(server)
    terminal = console("python3")
    terminal.type("%load_ext agentkernel", "Enter")
    terminal.wait_for("In [2]")
    # A cell magic ends with blank lines, as IPython's own do in a console.
    terminal.type("%%agent", "Enter", "hello agent", "Enter", "Enter", "Enter")
    terminal.wait_for(REPLY)
    terminal.wait_for("In [3]")
    terminal.type("%%agent", "Enter", "please make the file", "Enter", "Enter", "Enter")
    terminal.wait_for("Allow Bash echo hi > made.txt? [y]es")
    terminal.type("y", "Enter")
    terminal.wait_for(DONE)
    terminal.wait_for("In [4]")
    _check_turns(terminal.screen())
    assert (workspace / "made.txt").read_text() == "hi\n"
