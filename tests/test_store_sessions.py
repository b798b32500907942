"""Sessions that last: the store under real sessions, kernels and CLI processes."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from agentkernel import PermissionRequest, Session, TextDelta
from agentkernel.store import Store, StoreWarning
from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .conftest import agent_processes, wait_until_gone
from .kernel_client import KernelDriver

MakeSession = Callable[..., Session]
SECRET = "svc-7f3a9c1e5b2d4f60a8e1"


async def test_turns_and_events_are_stored_and_resume_restores_the_session(
    server: ScriptedModelServer, make_session: MakeSession, tmp_path: Path
) -> None:
    server.add(
        Reply(match="remember", blocks=[text("Noted: 7.")]),
        Reply(match="recall", blocks=[text("It was 7.")]),
    )
    session = make_session(title="numbers")
    events = [e async for e in session.stream("remember 7")]
    store = session.store
    assert store is not None
    store.flush()
    stored = store.events(session.id, 1)
    assert [e.seq for e in stored] == [e.seq for e in events]
    assert [type(e) for e in stored] == [type(e) for e in events]
    turn = store.turns(session.id)[0]
    assert turn.status == "completed" and turn.usage.cost_usd == events[-1].usage.cost_usd
    record = store.get_session(session.id)
    assert record is not None and record.title == "numbers"
    assert record.backend_session_id == session.backend_session_id
    await session.close()

    again = Session.resume(session.id[:10], env=session._core.config.env)
    try:
        assert again.id == session.id and again.title == "numbers"
        assert [r.prompt for r in again.history] == ["remember 7"]
        reply = await again.send("recall it")
        assert reply.text == "It was 7." and reply.number == 2
        assert "remember 7" in str((server.requests[-1].body or {}).get("messages"))
        store.flush()
        assert [t.number for t in store.turns(session.id)] == [1, 2]
    finally:
        await again.close()


async def test_fork_lineage_is_stored(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(Reply(blocks=[text("ok")], times=0))
    parent = make_session()
    await parent.send("one")
    child = parent.fork()
    await child.send("two")
    grandchild = child.fork()
    await grandchild.send("three")
    store = parent.store
    assert store is not None
    rec = store.get_session(grandchild.id)
    assert rec is not None
    assert rec.parent_id == child.id and rec.root_id == parent.id and rec.spawn_depth == 2
    assert rec.kind == "fork"
    for s in (child, grandchild):
        await s.close()


async def test_planted_secret_never_reaches_events_store_or_output(
    server: ScriptedModelServer, agent_env: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    server.add(
        Reply(
            match="show the token", blocks=[tool_use("Bash", {"command": "echo $MY_SERVICE_TOKEN"})]
        ),
        Reply(match="tool_result", blocks=[text("The token is sk-ant-api03-abcdefghijklmnop.")]),
    )
    store = Store(tmp_path / "secret.db")
    session = Session(env={**agent_env, "MY_SERVICE_TOKEN": SECRET}, cwd=workspace, store=store)
    seen = []
    async for event in session.stream("show the token"):
        seen.append(event)
        if isinstance(event, PermissionRequest):
            event.allow()
    await session.close()
    store.close()
    # The tool really printed the secret: the model got it (that is the agent's own business).
    assert SECRET in server.requests[-1].last_user_text
    shown = " ".join(str(e.to_dict()) for e in seen)
    assert SECRET not in shown and "sk-ant-api03-abcdefghijklmnop" not in shown
    assert "[REDACTED]" in shown
    raw = (tmp_path / "secret.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("secret.db-*")
    )
    assert SECRET.encode() not in raw and b"sk-ant-api03" not in raw


def test_kill_minus_nine_mid_turn_keeps_events_and_marks_the_turn_interrupted(
    server: ScriptedModelServer, agent_env: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    server.add(Reply(match="long", blocks=[text("z" * 20000)], chunk_size=4, delay=0.005))
    db = tmp_path / "killed.db"
    env = {**os.environ, **agent_env, "AGENTKERNEL_STORE": str(db)}
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(workspace))
    driver = KernelDriver(kc)
    assert driver.run("%load_ext agentkernel").status == "ok"
    run = driver.start("%%agent\na long story")
    server.wait_for_requests(1, timeout=60)
    time.sleep(2.0)  # let a good part of the reply stream and be stored
    kernel_pid = km.provisioner.pid  # type: ignore[union-attr]
    agents = [
        p.pid
        for p in psutil.Process(kernel_pid).children(recursive=True)
        if "claude" in " ".join(p.cmdline())
    ]
    os.kill(kernel_pid, signal.SIGKILL)
    assert wait_until_gone([kernel_pid]) == []
    kc.stop_channels()
    km.cleanup_resources()
    del run

    store = Store(db)
    try:
        records = store.list_sessions()
        assert len(records) == 1
        turns = store.turns(records[0].id)
        assert [t.status for t in turns] == ["interrupted"]
        deltas = [e for e in store.events(records[0].id) if isinstance(e, TextDelta)]
        assert len(deltas) > 50, "events streamed before the kill must be in the store"
        assert [e.seq for e in deltas] == sorted(e.seq for e in deltas)
    finally:
        store.close()
    # The agent CLI notices its parent is gone (stdin closed) and ends too.
    assert wait_until_gone(agents, timeout=20) == []


def test_resume_from_a_second_kernel_continues_the_conversation(
    server: ScriptedModelServer, agent_env: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    server.add(
        Reply(match="codeword", blocks=[text("Stored the codeword.")]),
        Reply(match="what was", blocks=[text("The codeword was kiwi.")]),
    )
    env = {**os.environ, **agent_env, "AGENTKERNEL_STORE": str(tmp_path / "shared.db")}
    first_km, first_kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(workspace))
    first = KernelDriver(first_kc)
    assert first.run("%load_ext agentkernel").status == "ok"
    assert first.run("%%agent\nthe codeword is kiwi").status == "ok"
    listing = first.run("%agent sessions")
    session_id = listing.stdout.splitlines()[1].split()[0]

    second_km, second_kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(workspace))
    second = KernelDriver(second_kc)
    try:
        assert second.run("%load_ext agentkernel").status == "ok"
        resumed = second.run(f"%agent resume {session_id}")
        assert resumed.status == "ok", resumed.error
        assert "1 earlier turn" in resumed.stdout
        run = second.run("%%agent\nwhat was the codeword?")
        assert run.status == "ok", run.error
        assert "The codeword was kiwi." in "".join(run.outputs())
        assert "the codeword is kiwi" in str((server.requests[-1].body or {}).get("messages"))
        shown = second.run(f"%agent show {session_id}")
        assert "what was the codeword" in shown.stdout
    finally:
        for km, kc in ((first_km, first_kc), (second_km, second_kc)):
            kc.stop_channels()
            km.shutdown_kernel()
    assert wait_until_gone([p.pid for p in agent_processes()]) == []


@pytest.mark.parametrize("damage", ["corrupt", "unwritable"])
async def test_a_broken_store_warns_once_and_the_session_carries_on(
    damage: str,
    server: ScriptedModelServer,
    agent_env: dict[str, str],
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.add(Reply(blocks=[text("still fine")], times=0))
    path = tmp_path / "broken" / "sessions.db"
    path.parent.mkdir()
    if damage == "corrupt":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.write_bytes(b"")
        path.chmod(0o444)
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setenv("AGENTKERNEL_STORE", str(path))
    with pytest.warns(UserWarning, match="sessions.db") as caught:
        session = Session(env=agent_env, cwd=workspace)
        second = Session(env=agent_env, cwd=workspace)
    assert len([w for w in caught if "sessions.db" in str(w.message)]) == 1
    assert (await session.send("hi")).text == "still fine"
    await session.close()
    await second.close()


@contextlib.contextmanager
def another_process_holds_the_write_lock(store: Store) -> Iterator[sqlite3.Connection]:
    """A second connection holding the store's write lock (as another kernel writing would),
    given up on leaving."""
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield blocker
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_a_turn_never_waits_for_the_stores_write_lock(
    server: ScriptedModelServer, make_session: MakeSession, tmp_path: Path
) -> None:
    """Another process holds the write lock (for less than the busy timeout): the turn runs
    and returns while the lock is held, its start, events and end queued for the store's own
    thread, which writes them, in order, once the lock is gone; nothing warns meanwhile."""
    server.add(Reply(blocks=[text("not held up")], times=0))
    store = Store(tmp_path / "busy.db", busy_timeout=60)
    session = make_session(store=store)
    await session.send("one")
    with another_process_holds_the_write_lock(store) as blocker:
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)
            record = await session.send("two")
        assert record.text == "not held up" and record.status == "completed"
        (count,) = blocker.execute(
            "SELECT count(*) FROM turns WHERE session_id = ?", (session.id,)
        ).fetchone()
        assert count == 1, "turn two was written past another process's write lock"
    turns = store.turns(session.id)  # a read writes what is queued first
    assert [(t.number, t.status) for t in turns] == [(1, "completed"), (2, "completed")]
    assert [e.seq for e in store.events(session.id, 2)] == [e.seq for e in record.events]
    await session.close()
    store.close()


async def test_a_store_that_fails_mid_session_catches_up_and_warns_once(
    server: ScriptedModelServer, make_session: MakeSession, tmp_path: Path
) -> None:
    """Another process holds the store's write lock for two turns: the store's own thread
    finds it writing the end of the first, the next turn says so in one warning (what is not
    stored yet), the session goes on with the same store (not memory only), and when the lock
    is gone every turn and event of those turns goes in."""
    server.add(Reply(blocks=[text("fine")], times=0))
    store = Store(tmp_path / "flaky.db", busy_timeout=0.05)
    session = make_session(store=store)
    await session.send("one")
    with another_process_holds_the_write_lock(store):
        with pytest.warns(StoreWarning, match="not stored yet") as caught:
            await session.send("two")
            deadline = time.monotonic() + 30
            while store.healthy:
                assert time.monotonic() < deadline, "the store's thread never tried to write"
                time.sleep(0.01)
            await session.send("three")
        warned = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
        assert len(warned) == 1 and "database is locked" in warned[0]
        assert session.store is store and not store.healthy
    await session.send("four")  # the store works again: what waited goes in first
    store.flush()  # (the store's own thread writes the end of a turn as it ends: wait for it)
    assert store.healthy
    turns = store.turns(session.id)
    assert [(t.number, t.prompt, t.status) for t in turns] == [
        (n, prompt, "completed") for n, prompt in enumerate(["one", "two", "three", "four"], 1)
    ]
    events = store.events(session.id)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert {e.turn for e in events} >= {1, 2, 3, 4}
    assert [r.text for r in session.history] == ["fine"] * 4
    store.close()
