"""Idle sessions park their agent process and resume it on the next turn, transparently."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from agentkernel import Event, PermissionRequest, Session, TextDelta
from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .conftest import agent_processes, wait_until_gone
from .kernel_client import KernelDriver

MakeSession = Callable[..., Session]


async def _until_parked(session: Session, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not session.is_parked:
        assert time.monotonic() < deadline, "the idle session was never parked"
        await asyncio.sleep(0.05)


async def test_a_parked_session_resumes_with_its_history(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(
        Reply(match="remember", blocks=[text("Noted: pelican.")]),
        Reply(match="which word", blocks=[text("It was pelican.")]),
    )
    session = make_session(idle_timeout=0.3)
    await session.send("remember the word pelican")
    first_pids = session.pids()
    await _until_parked(session)
    assert session.pids() == [] and wait_until_gone(first_pids) == []
    record = await session.send("which word did I say?")
    assert record.text == "It was pelican." and not session.is_parked
    assert "remember the word pelican" in json.dumps(server.requests[-1].body)
    assert [t.status for t in session.history] == ["completed", "completed"]
    assert all(t.events[-1].type == "turn_ended" for t in session.history)


async def test_never_parked_mid_turn_or_while_an_approval_waits(
    server: ScriptedModelServer, make_session: MakeSession, workspace
) -> None:
    server.add(
        Reply(match="slowly", blocks=[text("word " * 40)], chunk_size=4, delay=0.02),
        Reply(match="make", blocks=[tool_use("Bash", {"command": "touch made.txt"})]),
        Reply(match="tool_result", blocks=[text("Made.")]),
    )
    session = make_session(idle_timeout=0.05)
    slow = await session.send("talk slowly")
    assert slow.status == "completed"
    await _until_parked(session)

    async def allow_later(event: Event) -> None:
        if isinstance(event, PermissionRequest):
            await asyncio.sleep(0.5)  # ten idle timeouts while the approval waits
            event.allow()

    events = []
    async for event in session.stream("make the file"):
        events.append(event)
        await allow_later(event)
    assert (workspace / "made.txt").exists() and events[-1].stop_reason == "end_turn"


async def test_an_interrupt_of_a_resuming_turn_lands(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(
        Reply(match="hello", blocks=[text("hi")]),
        Reply(match="slowly", blocks=[text("word " * 400)], chunk_size=4, delay=0.05),
    )
    session = make_session(idle_timeout=0.2)
    await session.send("hello")
    await _until_parked(session)
    events = []
    async for event in session.stream("talk slowly"):
        events.append(event)
        if isinstance(event, TextDelta) and len(events) < 50:
            await session.interrupt()
    assert events[-1].stop_reason == "interrupted"


# -- the warm start: %load_ext starts the agent before the first cell -----------------------


def _until_agents(timeout: float = 60.0) -> set[int]:
    """The agent processes once some run and none has started for a second (the supervisor
    starts the CLI a moment after itself)."""
    deadline = time.monotonic() + timeout
    pids: set[int] = set()
    stable_since = time.monotonic()
    while not pids or time.monotonic() - stable_since < 1.0:
        assert time.monotonic() < deadline, "%load_ext started no agent in the background"
        time.sleep(0.1)
        now = {p.pid for p in agent_processes()}
        if now != pids:
            pids, stable_since = now, time.monotonic()
    return pids


def test_load_ext_starts_the_agent_and_the_first_plain_cell_takes_it(
    server: ScriptedModelServer, agent_env: dict[str, str], workspace: Path
) -> None:
    server.add(Reply(match="say hi", blocks=[text("Hi there.")]))
    km, kc = start_new_kernel(
        kernel_name="python3", env={**os.environ, **agent_env}, cwd=str(workspace)
    )
    driver = KernelDriver(kc)
    try:
        assert driver.run("%load_ext agentkernel").status == "ok"
        warm = _until_agents()  # no cell has asked for it yet
        assert "No sessions yet" in driver.run("%agent list").stdout
        cell = driver.run("%%agent\nsay hi")
        assert cell.status == "ok" and "Hi there." in "".join(cell.outputs())
        assert {p.pid for p in agent_processes()} == warm, "the cell started an agent of its own"
        assert "default" in driver.run("%agent list").stdout
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


@pytest.mark.parametrize(
    ("between", "cell"),
    [
        ("", "%%agent --session other\nsay hi"),  # a cell for another session
        ("%env AGENTKERNEL_TEST_SETTING=1", "%%agent\nsay hi"),  # the environment changed
        ("%config AgentMagics.default_permission_mode = 'allow-reads'", "%%agent\nsay hi"),
    ],
    ids=["other-session", "env-changed", "config-changed"],
)
def test_a_first_cell_the_warm_agent_does_not_fit_ends_it(
    server: ScriptedModelServer,
    agent_env: dict[str, str],
    workspace: Path,
    between: str,
    cell: str,
) -> None:
    """The warm agent was started from the settings at ``%load_ext``: a first cell that wants
    another session, or runs after the environment or the defaults changed, gets an agent of
    its own made from what holds now, and the warm one ends."""
    server.add(Reply(match="say hi", blocks=[text("Hi there.")]))
    km, kc = start_new_kernel(
        kernel_name="python3", env={**os.environ, **agent_env}, cwd=str(workspace)
    )
    driver = KernelDriver(kc)
    try:
        assert driver.run("%load_ext agentkernel").status == "ok"
        warm = _until_agents()
        if between:
            assert driver.run(between).status == "ok"
        ran = driver.run(cell)
        assert ran.status == "ok" and "Hi there." in "".join(ran.outputs())
        assert wait_until_gone(list(warm)) == [], "the unfit warm agent was left running"
        assert {p.pid for p in agent_processes()}, "the cell's own session has no agent"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
