"""The Session core on the in-process fake backend: policy by tool kind, rules, history, the
store, interrupts. Fast (no CLI); what real agents do is in the conformance suite."""

from __future__ import annotations

import asyncio

import pytest

from agentkernel import PermissionDecided, PermissionRequest, Session, TextDelta, ToolResult
from agentkernel.store import Store
from agentkernel.testing import FakeBackend, FakeTurn, Say, UseTool

RM = UseTool("shell", kind="execute", command="rm -rf build", title="rm -rf build", output="ok")
READ = UseTool("open", {"path": "a.txt"}, kind="read", title="Read a.txt", output="contents")
EDIT = UseTool("patch", kind="edit", title="Edit a.txt", locations=("a.txt",), output="done")
PLAN = UseTool("plan", kind="think", title="Update the task list", output="noted")
FETCH = UseTool("get", kind="fetch", title="Fetch https://example.org", output="<html>")


def fake(*turns: FakeTurn, **options: object) -> Session:
    return Session(FakeBackend, store=False, backend_options={"script": list(turns)}, **options)


def decisions(events: list) -> list[tuple[str, str, str]]:
    return [(e.tool_name, e.behavior, e.by) for e in events if isinstance(e, PermissionDecided)]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (None, ["deny", "deny", "deny", "allow", "deny"]),
        ("deny", ["deny", "deny", "deny", "allow", "deny"]),
        ("allow-reads", ["deny", "allow", "deny", "allow", "deny"]),
        ("allow-all", ["allow", "allow", "allow", "allow", "allow"]),
    ],
)
async def test_headless_modes_decide_by_kind(mode: str | None, expected: list[str]) -> None:
    """Nothing can ask: the mode decides from the kind alone; fetch is not a read (it can
    carry data out), think (planning) touches nothing and is always allowed."""
    session = fake(FakeTurn(None, [RM, READ, EDIT, PLAN, FETCH, Say("done")]))
    record = await session.send("go", permission_mode=mode)
    assert [behavior for _, behavior, _ in decisions(record.events)] == expected
    results = [e for e in record.events if isinstance(e, ToolResult)]
    assert [not r.is_error for r in results] == [b == "allow" for b in expected]
    denial = next(r for r in results if r.is_error) if "deny" in expected else None
    if denial is not None:
        assert "allow-reads" in denial.output and "allow-all" in denial.output  # says how
    await session.close()


async def test_always_allow_remembers_one_exact_command() -> None:
    other = UseTool("shell", kind="execute", command="rm -rf dist", output="ok")
    session = fake(
        FakeTurn("one", [RM]), FakeTurn("two", [RM]), FakeTurn("three", [other, Say("x")])
    )
    asked: list[PermissionRequest] = []

    def handler(request: PermissionRequest) -> None:
        asked.append(request)
        request.allow_always() if len(asked) == 1 else request.deny("no")

    session.permission_handler = handler
    await session.send("one")
    second = await session.send("two")
    assert decisions(second.events) == [("shell", "allow", "rule")]
    third = await session.send("three")
    assert decisions(third.events) == [("shell", "deny", "user")]
    assert [str(rule) for rule in session.permissions.rules] == ["shell(rm -rf build)"]
    assert len(asked) == 2
    await session.close()


async def test_stream_interrupt_and_history_with_the_store(tmp_path) -> None:
    store = Store(str(tmp_path / "s.db"))
    slow = Say("word " * 200, chunk_size=5, delay=0.01)
    session = Session(
        FakeBackend,
        store=store,
        backend_options={"script": [FakeTurn("slow", [slow]), FakeTurn("next", [Say("Fine.")])]},
    )
    seen = 0
    async for event in session.stream("talk slowly"):
        if isinstance(event, TextDelta):
            seen += 1
            if seen == 3:
                await session.interrupt()
    assert session.history[-1].status == "interrupted"
    assert (await session.send("next one")).text == "Fine."
    assert session.stats.turns == 1  # completed turns: the interrupted one does not count
    thread = session.backend_session_id
    await session.close()
    assert FakeBackend.conversations[thread] == ["talk slowly", "next one"]
    again = Session.resume(session.id, backend=FakeBackend, store=store)
    assert [t.prompt for t in again.history] == ["talk slowly", "next one"]
    assert again.backend_session_id == thread
    store.close()


async def test_many_sessions_run_concurrently_in_milliseconds() -> None:
    sessions = [fake(FakeTurn(None, [Say(f"reply {n}")])) for n in range(20)]
    records = await asyncio.gather(*(s.send("hi") for s in sessions))
    assert [r.text for r in records] == [f"reply {n}" for n in range(20)]
    await asyncio.gather(*(s.close() for s in sessions))


async def test_a_write_to_the_open_notebook_is_always_asked_with_a_warning(tmp_path) -> None:
    notebook = tmp_path / "analysis.ipynb"
    notebook.write_text("{}")
    write = UseTool("patch", kind="edit", title="Edit analysis.ipynb", locations=(str(notebook),))
    turns = [FakeTurn("headless", [write]), FakeTurn("asked", [write])]
    session = fake(*turns, permission_mode="allow-all", notebook_path=str(notebook))
    record = await session.send("headless run")
    (decided,) = [e for e in record.events if isinstance(e, PermissionDecided)]
    assert (decided.behavior, decided.by) == ("deny", "policy")
    assert "insert_cell" in decided.reason
    asked: list[PermissionRequest] = []
    session.permission_handler = lambda request: asked.append(request) or request.deny("no")
    await session.send("asked now")
    assert len(asked) == 1 and "bypasses the live document" in (asked[0].reason or "")
    await session.close()


def test_the_record_is_settled_before_anyone_sees_its_turn_ended() -> None:
    """A handler of turn_ended (here on the session's own thread, registered outside any loop,
    so it runs the moment the event is emitted) reads the record: it already says how the
    turn ended, not "running"."""
    session = fake(FakeTurn("hi", [Say("hello")]))
    seen: list[tuple[str, str | None, bool]] = []

    def handler(event: object) -> None:
        record = session.history[-1]
        seen.append((record.status, record.stop_reason, record.usage == event.usage))  # type: ignore[attr-defined]

    session.on("turn_ended", handler)
    session.sync.send("hi")
    assert seen == [("completed", "end_turn", True)]
    session.sync.close()
