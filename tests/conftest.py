"""Shared fixtures: the real Claude Code CLI against the scripted model server."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.manager import KernelManager, start_new_kernel

from agentkernel import Session, TextDelta
from agentkernel.backends import _bursts
from agentkernel.testing import Reply, ScriptedModelServer, text
from agentkernel.testing.backend_conformance import ACP_COPILOT

from .kernel_client import KernelDriver

_AGENT_MARKERS = (
    "claude_agent_sdk/_bundled",
    "codex_cli_bin",
    "@github/copilot",
    "claude-agent-acp",
)
"""What the command lines of the agent CLIs we start contain."""


def agent_processes() -> list[psutil.Process]:
    """Agent CLI processes descended from this test process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(marker in cmdline for marker in _AGENT_MARKERS):
            found.append(child)
    return found


def wait_until_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Pids from `pids` still alive (not zombies) after waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = alive(pids)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def alive(pids: list[int]) -> list[int]:
    """The pids of `pids` that still run (zombies count as gone)."""
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            continue
    return left


def running(command_line: str) -> list[psutil.Process]:
    """The live processes, anyone's, whose whole command line is `command_line` (a tool an
    agent started, found even after its parent died)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if " ".join(proc.info["cmdline"] or []) == command_line and (
                proc.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


@contextmanager
def agent_kernel(
    env: dict[str, str], cwd: Path, *setup: str
) -> Iterator[tuple[KernelManager, KernelDriver]]:
    """A stock python3 kernel, as a notebook starts it, with ``%load_ext agentkernel`` and
    then `setup` run. On leaving it is shut down, and no agent CLI it started may outlive it
    (its agents end with their kernel)."""
    before = {p.pid for p in agent_processes()}
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd))
    driver = KernelDriver(kc)
    try:
        driver.prepare("%load_ext agentkernel", *setup)
        yield km, driver
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    leftover = [p.pid for p in agent_processes() if p.pid not in before]
    assert wait_until_gone(leftover) == [], "an agent CLI outlived the kernel"


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer([]) as scripted:
        yield scripted


@pytest.fixture
def agent_env(server: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    """Env for the CLI: the scripted server, a fresh config dir, and no retry back-off."""
    config = tmp_path / "claude-config"
    config.mkdir()
    return {
        **server.claude_env(),
        "CLAUDE_CONFIG_DIR": str(config),
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }


@pytest.fixture
def copilot_env(server: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    """Env for the Copilot CLI offline, as the conformance case runs it: the scripted server
    as its OpenAI-format provider (``copilot --acp`` reads it only from these variables), and
    HOME and COPILOT_HOME a fresh folder."""
    home = tmp_path / "copilot-home"
    home.mkdir()
    return dict(ACP_COPILOT.session_options(server, home)["env"])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
async def make_session(
    agent_env: dict[str, str], workspace: Path
) -> AsyncIterator[Callable[..., Session]]:
    """Build sessions on the scripted server; all are closed and checked for leftovers."""
    made: list[Session] = []

    def make(**options: Any) -> Session:
        options.setdefault("env", agent_env)
        options.setdefault("cwd", workspace)
        session = Session(**options)
        made.append(session)
        return session

    yield make
    pids = [pid for session in made for pid in session.pids()]
    for session in made:
        if not session.is_finished:
            await session.close()
    assert wait_until_gone(pids) == [], "an agent CLI outlived its session"


@pytest.fixture(autouse=True)
def _no_stale_pyenv_lock() -> None:
    """Many tests end an agent moments after it starts, by design (close, kill -9, dropping
    the session). An agent's first act is often a login shell (Claude Code snapshots it; tool
    shells are login shells), and on a machine whose shell profile runs pyenv, a shell killed
    inside ``pyenv rehash`` leaves its lock file behind: from then on every login shell waits
    for it, so every later tool call hangs. Clear such a lock when no rehash is running."""
    lock = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"), "shims", ".pyenv-shim")
    if not lock.exists():
        return
    for proc in psutil.process_iter(["cmdline"]):
        if any("pyenv-rehash" in part for part in proc.info["cmdline"] or ()):
            return
    lock.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's session store out of the user's Jupyter data dir."""
    monkeypatch.setenv("AGENTKERNEL_STORE", str(tmp_path / "sessions.db"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))


@dataclass
class BurstReads:
    """What `Bursts` did: when each read was asked and whether it lingered first, and when we
    wrote to the process."""

    reads: list[tuple[float, bool]] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)


@pytest.fixture
def burst_reads(monkeypatch: pytest.MonkeyPatch) -> BurstReads:
    recorded = BurstReads()
    before_read, answer_expected = _bursts.Bursts.before_read, _bursts.Bursts.answer_expected

    async def counted(self: _bursts.Bursts) -> None:
        recorded.reads.append((time.monotonic(), self._busy_reads >= _bursts._BUSY_READS))
        await before_read(self)

    def noted(self: _bursts.Bursts) -> None:
        recorded.writes.append(time.monotonic())
        answer_expected(self)

    monkeypatch.setattr(_bursts.Bursts, "before_read", counted)
    monkeypatch.setattr(_bursts.Bursts, "answer_expected", noted)
    return recorded


async def check_a_flood_is_read_in_bursts(
    session: Session, server: ScriptedModelServer, recorded: BurstReads
) -> None:
    """The backend reads its CLI's stdout through `Bursts` (a backend whose reader changed
    would read line by line again, unnoticed but for this check): a flood of deltas comes in
    far fewer reads, whole, and a short turn's reads after its prompt never linger."""
    flood = "".join(f"{i:05d}, " for i in range(3000))
    server.add(
        Reply(match="flood", blocks=[text(flood)], delay=0.0003),
        Reply(match="short", blocks=[text("ok " * 20)]),
    )
    deltas = [e.text async for e in session.stream("flood me") if isinstance(e, TextDelta)]
    assert "".join(deltas) == flood
    reads = recorded.reads
    assert reads and len(reads) < len(deltas) / 3, f"{len(reads)} reads for {len(deltas)} deltas"
    assert any(lingered for _, lingered in reads), "no read waited for the flood"
    sent = time.monotonic()
    assert (await session.send("a short one")).text == "ok " * 20
    prompted = min(t for t in recorded.writes if t > sent)  # reads before it wait for nothing
    short = [lingered for asked, lingered in reads if asked > prompted]
    assert short and not any(short), "a short turn's read waited"
