"""The supervisor every agent CLI runs under: stdio and exit codes pass through; a stop, a
kill or the death of our process ends the agent and the tool processes it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from agentkernel.backends import _launcher

from .conftest import running


def _gone_within(marker: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not running(marker):
            return True
        time.sleep(0.02)
    return not running(marker)


def test_stdio_and_exit_code_pass_through() -> None:
    echoed = subprocess.run(_launcher.argv(["cat"]), input=b"hello", capture_output=True)
    assert echoed.stdout == b"hello" and echoed.returncode == 0
    failed = subprocess.run(
        _launcher.argv(["sh", "-c", "echo oops >&2; exit 3"]), capture_output=True
    )
    assert failed.returncode == 3 and failed.stderr == b"oops\n"
    missing = subprocess.run(_launcher.argv(["/no/such/agent"]), capture_output=True)
    assert missing.returncode == 127 and b"cannot run /no/such/agent" in missing.stderr


def test_sigterm_ends_the_agent_and_its_tools_within_a_second() -> None:
    marker = "sleep 301.1"
    proc = subprocess.Popen(_launcher.argv(["sh", "-c", f"{marker} & {marker}; wait"]))
    deadline = time.monotonic() + 5
    while len(running(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert _gone_within(marker, 1.0)
    proc.wait(5)


def test_kill_ends_the_whole_group() -> None:
    marker = "sleep 302.2"
    proc = subprocess.Popen(_launcher.argv(["sh", "-c", f"{marker} & wait"]))
    deadline = time.monotonic() + 5
    while not running(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    _launcher.kill(proc.pid)
    assert _gone_within(marker, 1.0)
    proc.wait(5)


def test_the_death_of_our_process_ends_the_agent_and_its_tools() -> None:
    marker = "sleep 303.3"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from agentkernel.backends import _launcher\n"
            f"subprocess.Popen(_launcher.argv(['sh', '-c', '{marker} & {marker}; wait']))\n"
            "time.sleep(60)\n",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while len(running(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(running(marker)) == 2
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(5)
    assert _gone_within(marker, 1.0), "the agent's tools outlived a SIGKILLed owner"


def test_script_runs_a_program_under_the_supervisor(tmp_path) -> None:
    launcher = _launcher.script(__import__("pathlib").Path("/bin/sh"), "sh")
    done = subprocess.run([launcher, "-c", "echo $0 ok; exit 4"], capture_output=True, text=True)
    assert done.returncode == 4 and done.stdout.strip().endswith("ok")


def test_a_tool_in_a_session_of_its_own_ends_too() -> None:
    """Agents (Copilot) run shells with setsid: no process-group signal reaches them."""
    marker = "sleep 305.5"
    proc = subprocess.Popen(_launcher.argv(["sh", "-c", f"setsid {marker} & {marker}; wait"]))
    deadline = time.monotonic() + 5
    while len(running(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(running(marker)) == 2
    proc.send_signal(signal.SIGTERM)
    assert _gone_within(marker, 1.0)
    proc.wait(5)
    marker = "sleep 306.6"
    proc = subprocess.Popen(_launcher.argv(["sh", "-c", f"setsid {marker} & {marker}; wait"]))
    deadline = time.monotonic() + 5
    while len(running(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    _launcher.kill(proc.pid)
    assert _gone_within(marker, 1.0)
    proc.wait(5)
