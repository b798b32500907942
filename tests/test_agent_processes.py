"""Agent processes end with their kernel in every state, tool processes included."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .conftest import agent_processes, alive, running
from .kernel_client import KernelDriver

TOOL = "sleep 304.4"


def test_kill_9_of_the_kernel_during_a_tool_leaves_nothing_after_a_second(
    server: ScriptedModelServer, agent_env: dict[str, str], workspace: Path
) -> None:
    server.add(
        Reply(match="wait a while", blocks=[tool_use("Bash", {"command": "sh wait.sh"})]),
        Reply(match="tool_result", blocks=[text("Waited.")]),
    )
    # A script, not a bare `sleep`: Claude Code refuses long sleeps as a command.
    (workspace / "wait.sh").write_text(f"{TOOL}\n")
    km, kc = start_new_kernel(
        kernel_name="python3", env={**os.environ, **agent_env}, cwd=str(workspace)
    )
    driver = KernelDriver(kc)
    try:
        assert driver.run("%load_ext agentkernel").status == "ok"
        kc.execute("%%agent -p allow-all\nwait a while")
        deadline = time.monotonic() + 60
        while not running(TOOL) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running(TOOL), "the scripted tool never started"
        agents = [p.pid for p in agent_processes()]
        assert agents
        kernel_pid = km.provisioner.process.pid
        os.kill(kernel_pid, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while (running(TOOL) or alive(agents)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not running(TOOL), "the agent's tool process outlived the kernel by a second"
        assert not alive(agents), "the agent CLI outlived the kernel by a second"
    finally:
        kc.stop_channels()
        km.cleanup_resources()


EXIT_MID_STREAM = """
import sys
from agentkernel import Session, TextDelta
session = Session(store=False)
for event in session.sync.stream("talk"):
    if isinstance(event, TextDelta):
        print("leaving", flush=True)
        sys.exit(0)
"""


def test_a_script_that_exits_mid_stream_exits_quietly(
    server: ScriptedModelServer, agent_env: dict[str, str], workspace: Path
) -> None:
    import subprocess
    import sys

    server.add(Reply(blocks=[text("word " * 300)], chunk_size=4, delay=0.02))
    done = subprocess.run(
        [sys.executable, "-c", EXIT_MID_STREAM],
        env={**os.environ, **agent_env},
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "leaving\n"
    assert done.stderr == "", done.stderr
