"""The whole session record: tasks, sub-agents, compaction, hooks, pending requests, honest
figures. Real Claude Code CLI against the scripted model, except where the fake backend is
the only way to script a behaviour (this CLI has no task-list tool)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agentkernel import (
    BudgetExceededError,
    Decision,
    PermissionDecided,
    PermissionRequest,
    Session,
    ToolResult,
    render,
)
from agentkernel.store import Store
from agentkernel.testing import FakeBackend, FakeTurn, Plan, Reply, Say, text, tool_use

MakeSession = Callable[..., Session]


def test_tasks_are_kept_shown_and_restored(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    plan = Plan([("Load the data", "completed"), ("Plot revenue", "in_progress")])
    session = Session(
        FakeBackend,
        store=store,
        backend_options={"script": [FakeTurn(None, [plan, Say("Working on it.")])]},
    )
    record = session.sync.send("plan it")
    assert [(t.text, t.status) for t in session.tasks] == [
        ("Load the data", "completed"),
        ("Plot revenue", "in_progress"),
    ]
    assert "Plot revenue" in render.text(record.events)
    session.sync.close()
    again = Session.resume(session.id, backend=FakeBackend, store=store)
    assert [t.text for t in again.tasks] == ["Load the data", "Plot revenue"]
    store.close()


async def test_a_failed_task_tool_call_shows_no_plan(server, make_session: MakeSession) -> None:
    """This Claude Code has no TodoWrite: the call fails, and no plan may appear for it."""
    todos = [{"content": "Never shown", "status": "pending", "activeForm": "x"}]
    server.add(
        Reply(match="plan", blocks=[tool_use("TodoWrite", {"todos": todos})]),
        Reply(match="tool_result", blocks=[text("No task tool here.")]),
    )
    session = make_session(permission_mode="allow-all")
    record = await session.send("plan the work")
    assert not [e for e in record.events if e.type == "plan_update"]
    assert session.tasks == []
    assert "Never shown" not in render.markdown(record.events).split("▶")[0]


async def test_a_subagent_is_a_child_session_and_keeps_its_words(
    server, make_session: MakeSession
) -> None:
    task = {"description": "count birds", "prompt": "SUBTASK count the birds"}
    # Claude Code runs the sub-agent in the background: the main agent's next model call goes
    # out beside the sub-agent's. That main reply streams slowly here (as a real model's would
    # beside a one-line sub-agent), so the sub-agent's words come within the turn.
    server.add(
        Reply(match="SUBTASK", blocks=[text("Sub-agent here: 3 birds.")]),
        Reply(match="delegate", blocks=[tool_use("Agent", {**task, "subagent_type": "claude"})]),
        Reply(match="tool_result", blocks=[text("The helper found 3 birds.")], delay=0.5),
    )
    session = make_session(permission_mode="allow-all")
    record = await session.send("delegate the counting")
    assert record.text == "The helper found 3 birds."
    nested = [e for e in record.events if e.parent_tool_use_id]
    assert any(e.type == "text" and "3 birds" in e.text for e in nested)
    md = render.markdown(record.events)
    assert md.index("<summary>Sub-agent</summary>") < md.index("Sub-agent here: 3 birds.")
    assert md.count("Sub-agent here: 3 birds.") == 1
    assert "  ↳ Sub-agent here: 3 birds." in render.text(record.events)
    (child,) = session.children
    assert (child.kind, child.parent_id, child.spawn_depth) == ("subagent", session.id, 1)
    assert session.store is not None
    stored = session.store.list_sessions(parent=session.id)
    assert [s.id for s in stored] == [child.id]


async def test_compact_yields_the_summary(server, make_session: MakeSession) -> None:
    server.add(
        Reply(match="Summary", blocks=[text("<summary>The user likes pelicans.</summary>")]),
        Reply(match="hello", blocks=[text("hi")]),
    )
    session = make_session()
    await session.send("hello")
    record = await session.compact("keep the birds")
    (compaction,) = [e for e in record.events if e.type == "compaction"]
    assert compaction.trigger == "manual" and compaction.tokens_before
    assert "The user likes pelicans." in (compaction.summary or "")
    assert "keep the birds" in server.requests[-1].last_user_text
    assert session.summary == compaction.summary
    assert session.store is not None
    assert session.store.get_session(session.id).summary == compaction.summary


async def test_a_spent_budget_stays_spent_after_clear(server, make_session: MakeSession) -> None:
    server.add(Reply(blocks=[text("one")], usage={"input_tokens": 50, "output_tokens": 10}))
    session = make_session(max_tokens=40)
    await session.send("first")
    spent = session.stats
    await session.clear()
    assert session.stats == spent and session.history == []
    with pytest.raises(BudgetExceededError):
        await session.send("second")


async def test_hooks_deny_rewrite_observe_and_fail_safely(
    server, make_session: MakeSession, workspace: Path
) -> None:
    server.add(
        Reply(match="three", blocks=[tool_use("Bash", {"command": "touch one.txt"})]),
        Reply(match="tool_result", blocks=[tool_use("Bash", {"command": "touch two.txt"})]),
        Reply(match="tool_result", blocks=[tool_use("Bash", {"command": "touch three.txt"})]),
        Reply(match="tool_result", blocks=[text("Done.")]),
    )
    session = make_session(permission_mode="allow-all")
    results: list[ToolResult] = []

    def before(request: PermissionRequest) -> Decision | None:
        if "one.txt" in (request.command or ""):
            return Decision("deny", reason="not that one")
        if "two.txt" in (request.command or ""):
            return Decision("allow", updated_input={"command": "touch rewritten.txt"})
        raise RuntimeError("hook broke")

    remove = session.hooks.before_tool(before)
    session.hooks.after_tool(lambda call, result: results.append(result))
    record = await session.send("make three files")
    assert not (workspace / "one.txt").exists() and not (workspace / "two.txt").exists()
    assert (workspace / "rewritten.txt").exists() and not (workspace / "three.txt").exists()
    decided = [(d.behavior, d.by) for d in record.events if isinstance(d, PermissionDecided)]
    assert decided == [("deny", "hook"), ("allow", "hook"), ("deny", "hook")]
    denial = [d.reason for d in record.events if isinstance(d, PermissionDecided)][-1]
    assert "hook broke" in denial
    assert len(results) == 3
    remove()
    assert session.hooks.decide is not None


async def test_pending_is_answerable_from_another_thread(
    server, make_session: MakeSession, workspace: Path
) -> None:
    server.add(
        Reply(match="make", blocks=[tool_use("Bash", {"command": "touch made.txt"})]),
        Reply(match="tool_result", blocks=[text("Made.")]),
    )
    session = make_session()
    answered = threading.Event()

    def answer_when_asked() -> None:
        while session.pending is None:
            threading.Event().wait(0.02)
        session.pending.allow()
        answered.set()

    threading.Thread(target=answer_when_asked, daemon=True).start()
    events = [e async for e in session.stream("make the file")]
    assert answered.is_set() and (workspace / "made.txt").exists()
    assert session.pending is None and events[-1].type == "turn_ended"


async def test_figures_are_honest_and_metadata_is_saved(server, make_session: MakeSession) -> None:
    server.add(Reply(blocks=[text("hi")], times=0))
    session = make_session(model="claude-opus-4-1")
    seen: list[str] = []
    unsubscribe = session.on("text", lambda e: seen.append(e.text))
    await session.send("hello")
    requested = server.requests[-1].body["model"]
    assert session.model == requested, "the model is the one the agent used"
    unsubscribe()
    await session.send("again")
    assert seen == ["hi"]
    session.metadata["owner"] = "ada"
    assert session.store is not None
    assert session.store.get_session(session.id).metadata == {"owner": "ada"}
    assert session.workspace.is_dir()


def test_a_session_record_round_trips_through_json(tmp_path: Path) -> None:
    import json

    store = Store(str(tmp_path / "s.db"))
    session = Session(
        FakeBackend,
        store=store,
        metadata={"owner": "ada"},
        backend_options={"script": [FakeTurn(None, [Say("hi")])]},
    )
    session.sync.send("hello")
    record = store.get_session(session.id)
    assert record is not None and record.usage.total_tokens
    again = type(record).from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    session.sync.close()
    store.close()
