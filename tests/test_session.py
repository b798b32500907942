"""Session core over the real bundled Claude Code CLI and the scripted model server."""

from __future__ import annotations

import asyncio
import gc
import json
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from agentkernel import (
    BudgetExceededError,
    Decision,
    Event,
    FileChange,
    Other,
    PermissionDecided,
    PermissionRequest,
    PlanUpdate,
    Question,
    Session,
    SessionClosedError,
    SessionStarted,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnFailedError,
    _runtime,
)
from agentkernel.events import event_from_dict
from agentkernel.store import Store
from agentkernel.testing import (
    FakeBackend,
    FakeTurn,
    Reply,
    Say,
    ScriptedModelServer,
    text,
    thinking,
    tool_use,
)

from .conftest import BurstReads, check_a_flood_is_read_in_bursts, wait_until_gone

MakeSession = Callable[..., Session]
PRICED_MODEL = "claude-opus-5-5"
"""A model the CLI has a list price for: the tests of cost accounting name it (the scripted
server's own model has no price, so its turns report no cost)."""


async def collect(session: Session, prompt: str, **options: object) -> list[Event]:
    return [event async for event in session.stream(prompt, **options)]


def request_texts(server: ScriptedModelServer) -> list[str]:
    """Every message text of the last request, flattened (to check what the model saw)."""
    body = server.requests[-1].body or {}
    return [json.dumps(m.get("content")) for m in body.get("messages", [])]


# -- streaming and history ---------------------------------------------------------------------


async def test_text_turn_streams_in_order_and_next_turn_sends_history(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(
        Reply(
            match="first",
            blocks=[thinking("Let me think."), text("Alpha beta gamma delta.")],
            chunk_size=4,
        ),
        Reply(match="second", blocks=[text("Second answer.")]),
    )
    session = make_session(model=PRICED_MODEL)
    events = await collect(session, "first question")

    deltas = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert deltas == "Alpha beta gamma delta."
    assert len([e for e in events if isinstance(e, TextDelta)]) > 3, "reply was not streamed"
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)) == "Let me think."
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert all(e.turn == 1 and e.session_id == session.id for e in events)
    ended = events[-1]
    assert isinstance(ended, TurnEnded) and ended.stop_reason == "end_turn"
    assert ended.usage.output_tokens > 0 and ended.usage.cost_usd > 0
    assert ended.model_calls == 1
    assert any(isinstance(e, SessionStarted) and e.backend_session_id for e in events)

    record = await session.send("second question")
    assert record.text == "Second answer." and record.status == "completed"
    sent = " ".join(request_texts(server))
    assert "first question" in sent and "Alpha beta gamma delta." in sent
    stats = session.stats
    assert stats.turns == 2 and stats.model_calls == 2
    assert stats.cost_usd == pytest.approx(sum(r.usage.cost_usd for r in session.history))
    assert [r.number for r in session.history] == [1, 2]


async def test_events_round_trip_through_json(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(Reply(blocks=[thinking("hm"), text("ok")]))
    events = await collect(make_session(), "anything")
    for event in events:
        assert event_from_dict(json.loads(json.dumps(event.to_dict()))) == event


# -- permissions -------------------------------------------------------------------------------


def _write_file_script(server: ScriptedModelServer, path: Path, times: int = 1) -> None:
    server.add(
        Reply(
            match="make the file",
            blocks=[tool_use("Bash", {"command": f"echo made > {path} && echo wrote-it"})],
            times=times,
        ),
        Reply(match="tool_result", blocks=[text("Finished.")], times=0),
    )


async def test_allowed_tool_runs_and_model_gets_its_output(
    server: ScriptedModelServer, make_session: MakeSession, workspace: Path
) -> None:
    target = workspace / "out.txt"
    _write_file_script(server, target)
    session = make_session()
    asked: list[PermissionRequest] = []
    async for event in session.stream("please make the file"):
        if isinstance(event, PermissionRequest):
            asked.append(event)
            event.allow()
    assert [r.tool_name for r in asked] == ["Bash"]
    assert target.read_text() == "made\n"
    follow_up = server.requests[-1]
    assert "tool_result" in follow_up.last_user_text or "wrote-it" in follow_up.last_user_text
    assert "wrote-it" in follow_up.last_user_text
    decided = [e for e in session.history[-1].events if isinstance(e, PermissionDecided)]
    assert [(d.behavior, d.by) for d in decided] == [("allow", "user")]


async def test_denied_tool_does_not_run_and_model_gets_the_reason(
    server: ScriptedModelServer, make_session: MakeSession, workspace: Path
) -> None:
    target = workspace / "out.txt"
    _write_file_script(server, target)
    session = make_session()
    async for event in session.stream("please make the file"):
        if isinstance(event, PermissionRequest):
            event.deny("not in this folder")
    assert not target.exists()
    body = server.requests[-1].body or {}
    last = body["messages"][-1]["content"]
    results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
    assert results and results[0].get("is_error") is True
    assert "not in this folder" in json.dumps(results[0])
    outputs = [e for e in session.history[-1].events if isinstance(e, ToolResult)]
    assert outputs and outputs[0].is_error


async def test_allow_all_mode_and_a_permission_handler(
    server: ScriptedModelServer, make_session: MakeSession, workspace: Path
) -> None:
    target = workspace / "out.txt"
    _write_file_script(server, target, times=2)
    await make_session(permission_mode="allow-all").send("please make the file")
    assert target.exists()
    target.unlink()

    seen: list[str] = []

    async def handler(request: PermissionRequest | Question) -> Decision:
        assert isinstance(request, PermissionRequest)
        seen.append(request.tool_name)
        return Decision("deny", reason="handler says no", by="handler")

    record = await make_session(permission_handler=handler).send("please make the file")
    assert seen == ["Bash"] and not target.exists()
    assert any(isinstance(e, PermissionDecided) and e.by == "handler" for e in record.events)


async def test_question_answer_reaches_the_model(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    question = {
        "question": "Which database?",
        "header": "Database",
        "options": [
            {"label": "SQLite", "description": "embedded"},
            {"label": "Postgres", "description": "server"},
        ],
        "multiSelect": False,
    }
    server.add(
        Reply(
            match="set up storage", blocks=[tool_use("AskUserQuestion", {"questions": [question]})]
        ),
        Reply(match="tool_result", blocks=[text("Using your choice.")]),
    )
    session = make_session()
    async for event in session.stream("set up storage"):
        if isinstance(event, Question):
            assert event.questions[0]["options"][0]["label"] == "SQLite"
            event.answer("Postgres")
    assert "Postgres" in server.requests[-1].last_user_text
    assert session.history[-1].text == "Using your choice."


# -- interrupt, resume, fork, budget -----------------------------------------------------------


async def test_resume_in_a_new_process_and_fork(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(
        Reply(match="remember", blocks=[text("I will remember 42.")]),
        Reply(match="recall", blocks=[text("It was 42.")], times=2),
    )
    first = make_session()
    await first.send("remember the number 42")
    backend_id = first.backend_session_id
    old_pids = first.pids()
    await first.close()
    assert wait_until_gone(old_pids) == []

    resumed = make_session(resume=backend_id)
    record = await resumed.send("recall it")
    assert record.text == "It was 42."
    assert "remember the number 42" in " ".join(request_texts(server))
    assert resumed.backend_session_id == backend_id

    fork = resumed.fork()
    fork_record = await fork.send("recall it")
    assert fork_record.text == "It was 42."
    assert fork.backend_session_id and fork.backend_session_id != backend_id
    assert fork.parent_id == resumed.id and fork.id != resumed.id
    assert "remember the number 42" in " ".join(request_texts(server))
    await fork.close()


async def test_budget_refuses_the_next_turn(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(
        Reply(blocks=[text("costly")], times=0, usage={"input_tokens": 5000, "output_tokens": 5000})
    )
    session = make_session(model=PRICED_MODEL, max_budget_usd=0.0001)
    await session.send("one")
    requests_before = len(server.requests)
    with pytest.raises(BudgetExceededError, match="max_budget_usd"):
        await session.send("two")
    assert len(server.requests) == requests_before, "a refused turn must not reach the model"
    assert session.history[-1].status == "refused"

    tokens = make_session(max_tokens=100)
    await tokens.send("one")
    with pytest.raises(BudgetExceededError, match="max_tokens"):
        async for _ in tokens.stream("two"):
            pass


# -- bad input and failures --------------------------------------------------------------------


async def test_bad_arguments_fail_fast_and_clearly(make_session: MakeSession) -> None:
    session = make_session()
    with pytest.raises(ValueError, match="prompt is empty"):
        await session.send("   ")
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; available backends: .*claude"):
        Session("nope")
    with pytest.raises(ValueError, match="valid modes: ask, deny, allow-reads, allow-all"):
        Session(permission_mode="yolo")  # type: ignore[arg-type]
    with pytest.raises(NotADirectoryError):
        Session(cwd="/no/such/dir")
    with pytest.raises(ValueError, match="nothing to fork"):
        session.fork()


async def test_missing_and_broken_cli(make_session: MakeSession, tmp_path: Path) -> None:
    missing = make_session(backend_options={"cli_path": str(tmp_path / "no-claude")})
    with pytest.raises(TurnFailedError, match="CLI not found"):
        await missing.send("hi")

    broken = tmp_path / "broken-claude"
    broken.write_text("#!/bin/sh\necho 'fatal: broken install' >&2\nexit 3\n")
    broken.chmod(0o755)
    session = make_session(backend_options={"cli_path": str(broken)})
    started = time.monotonic()
    with pytest.raises(TurnFailedError, match="failed to start") as failure:
        await session.send("hi")
    assert time.monotonic() - started < 30
    assert failure.value.record.status == "error"


async def test_overloaded_and_cut_stream_are_clear_errors_and_session_recovers(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    # The CLI keeps a failed prompt and merges it into the next user message, so the recovery
    # rule comes first: "fine" must win over the markers of the failed turns still in the text.
    server.add(
        Reply(match="fine", blocks=[text("All good.")]),
        Reply(match="busy", status=529),
        Reply(
            match="cut", blocks=[text("partial answer that never ends " * 20)], cut_after=3, times=0
        ),
    )
    session = make_session()
    with pytest.raises(TurnFailedError, match="529") as overloaded:
        await session.send("are you busy")
    assert overloaded.value.record.status == "error"

    events = await collect(session, "cut me off")
    ended = events[-1]
    assert isinstance(ended, TurnEnded) and ended.is_error
    assert any(e.type == "error" for e in events)

    assert (await session.send("fine now?")).text == "All good."


async def test_a_reply_past_a_mebibyte_and_a_message_past_the_limit(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    """A 1.2 MB reply streams whole (its closing messages carry it all: past the SDK's own
    1 MiB line limit, which failed such turns). A message past the limit the session sets
    fails its turn clearly, and the next turn runs in a new CLI that resumes the conversation."""
    long_reply = ("All work and no play makes a long answer. " * 30_000)[:1_200_000]
    server.add(
        Reply(match="again", blocks=[text("Back again.")]),
        Reply(match="essay", blocks=[text(long_reply)], chunk_size=4096, times=0),
    )
    session = make_session()
    record = await session.send("write the essay")
    assert record.status == "completed" and record.text == long_reply

    small = make_session(backend_options={"max_buffer_size": 256 * 1024})
    failed = await small.send("write the essay", raise_on_error=False)
    assert failed.status == "error" and "maximum buffer size" in (failed.error or "")
    first_cli = small.pids()
    assert (await small.send("say it again")).text == "Back again."
    assert small.pids() and small.pids() != first_cli, "the broken CLI was used again"
    assert "write the essay" in json.dumps(server.requests[-1].body), "the conversation was lost"


async def test_the_history_keeps_every_delta_out_of_the_garbage_collectors_sight(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    """A turn's record holds each of its 10,000 deltas, equal to the ones streamed, yet leaves
    no object per delta for the cyclic garbage collector to walk (each one cost ~3 us in the
    full collections a growing history set off)."""
    server.add(
        Reply(match="warm", blocks=[text("Warm.")]),
        Reply(match="many", blocks=[thinking("hm" * 100), text("abcd" * 5000)], chunk_size=2),
    )
    session = make_session()
    await session.send("warm up")
    gc.collect()
    before = len(gc.get_objects())
    streamed = await collect(session, "many deltas please")
    kept = session.history[-1].events
    deltas = [e for e in kept if isinstance(e, TextDelta)]
    assert len(deltas) == 10_000 and "".join(d.text for d in deltas) == "abcd" * 5000
    assert [type(e) for e in kept].count(ThinkingDelta) == 100
    assert kept == streamed and list(kept) == streamed and kept[-1] is streamed[-1]
    assert kept[3:6] == streamed[3:6] and kept[-2] == streamed[-2]
    assert [e.seq for e in kept] == sorted({e.seq for e in streamed})
    del streamed, deltas
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert grown < 5000, f"{grown:,} more objects tracked: the history keeps one per delta"


async def test_deltas_waiting_for_the_consumer_and_the_store_never_reach_the_oldest_gc_generation(
    tmp_path: Path,
) -> None:
    """A delta waits in the stream's hand-off and in the store's queue, tens of ms each. As
    objects, a flood of them outlived the young generations' collections and reached the
    oldest, and each time it grew by a quarter the collector walked the whole heap (~100 ms a
    MiB of reply in a kernel): some 4,000 of the 20,000 streamed here were there at each
    collection of the middle generation. They wait as field dicts, which the collector does
    not track: only the batch the session is still gathering (at most 256 deltas, 2 ms) are
    objects, though the consumer gets every delta and the turn is stored and kept whole."""
    reply = "abcd" * 20_000
    store = Store(tmp_path / "sessions.db")
    session = Session(
        FakeBackend, store=store, backend_options={"script": [FakeTurn("", [Say(reply, 4)])]}
    )
    in_oldest: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 1:  # its survivors just moved up
            in_oldest.append(sum(1 for o in gc.get_objects(2) if type(o) is TextDelta))

    try:
        gc.collect()
        gc.callbacks.append(count)
        streamed = 0
        async for event in session.stream("flood"):
            streamed += type(event) is TextDelta
    finally:
        gc.callbacks.remove(count)
    assert streamed == 20_000
    assert len(in_oldest) >= 2, f"only {len(in_oldest)} collections of generation 1 ran"
    assert max(in_oldest) <= 256, f"deltas reached the oldest generation: {in_oldest}"
    assert session.history[-1].text == reply
    store.flush()
    stored = store.events(session.id)
    assert "".join(e.text for e in stored if isinstance(e, TextDelta)) == reply
    await session.close()
    store.close()


def test_the_runtime_thread_tells_sniffio_it_runs_asyncio() -> None:
    """anyio asks sniffio at every checkpoint of the SDK's streams; the runtime thread answers
    from a thread-local instead of sniffing for the current task each time."""
    sniffio = pytest.importorskip("sniffio")

    async def asked() -> tuple[object, str]:
        return sniffio.thread_local.name, sniffio.current_async_library()

    assert _runtime.call_sync(asked()) == ("asyncio", "asyncio")
    assert sniffio.thread_local.name is None, "only the runtime thread is named"


async def test_a_flood_of_cli_lines_is_read_in_bursts_and_a_short_turn_never_waits(
    server: ScriptedModelServer, make_session: MakeSession, burst_reads: BurstReads
) -> None:
    await check_a_flood_is_read_in_bursts(make_session(), server, burst_reads)


async def test_unknown_backend_messages_are_kept_as_other(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(Reply(blocks=[text("hi")]))
    events = await collect(make_session(), "hello")
    others = [e for e in events if isinstance(e, Other)]
    assert others and all(o.kind for o in others)
    assert isinstance(event_from_dict({"type": "from_the_future", "x": 1}), Other)


async def test_send_after_disconnect_and_close(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    server.add(Reply(blocks=[text("hello")], times=0))
    session = make_session()
    await session.send("one")
    await session.disconnect()
    with pytest.raises(SessionClosedError, match="connect"):
        await session.send("two")
    await session.connect()
    assert (await session.send("three")).text == "hello"
    result = await session.close()
    assert result.exit_code == 0
    assert session.is_finished
    with pytest.raises(SessionClosedError, match="resume"):
        await session.send("four")


# -- tools that change files and plans ---------------------------------------------------------


async def test_file_change_and_a_failed_plan_call(
    server: ScriptedModelServer, make_session: MakeSession, workspace: Path
) -> None:
    target = workspace / "notes.md"
    server.add(
        Reply(
            match="plan it",
            blocks=[
                tool_use(
                    "TodoWrite",
                    {
                        "todos": [
                            {
                                "content": "write notes",
                                "status": "in_progress",
                                "activeForm": "Writing",
                            },
                            {"content": "review", "status": "pending", "activeForm": "Reviewing"},
                        ]
                    },
                ),
                tool_use("Write", {"file_path": str(target), "content": "line one\nline two\n"}),
            ],
        ),
        Reply(match="tool_result", blocks=[text("Done.")], times=0),
    )
    record = await make_session(permission_mode="allow-all").send("plan it")
    # This CLI has no TodoWrite: the call fails, so no plan may be shown for it.
    assert not [e for e in record.events if isinstance(e, PlanUpdate)]
    changes = [e for e in record.events if isinstance(e, FileChange)]
    assert target.read_text() == "line one\nline two\n"
    assert changes and changes[0].path == str(target) and "+line two" in changes[0].diff
    calls = [e.name for e in record.events if isinstance(e, ToolCall)]
    assert calls == ["TodoWrite", "Write"]


# -- the rest of the API -----------------------------------------------------------------------


async def test_handlers_sync_facade_images_and_timeouts(
    server: ScriptedModelServer, make_session: MakeSession, tmp_path: Path
) -> None:
    server.add(
        Reply(match="picture", blocks=[text("A red pixel.")]),
        Reply(match="sync", blocks=[text("sync reply")]),
        Reply(match="slow", blocks=[text("z" * 2000)], chunk_size=2, delay=0.01),
    )
    session = make_session()
    seen: list[str] = []
    texts: list[str] = []
    session.on(TextDelta, lambda e: texts.append(e.text))
    unsubscribe = session.subscribe(lambda e: seen.append(e.type))

    png = tmp_path / "pixel.png"
    png.write_bytes(_png_pixel())
    record = await session.send("what is in this picture", images=[png])
    assert record.text == "A red pixel."
    await asyncio.sleep(0.1)  # handlers run on this loop: let them
    assert "turn_ended" in seen and "".join(texts) == "A red pixel."
    messages = (server.requests[-1].body or {})["messages"]
    blocks = [b for m in messages if m["role"] == "user" for b in m["content"]]
    assert any(isinstance(b, dict) and b.get("type") == "image" for b in blocks)

    unsubscribe()
    session.off(TextDelta)
    count = len(seen)
    # The blocking facade works even from inside this running loop.
    assert session.sync.send("sync please").text == "sync reply"
    assert len(seen) == count and "".join(texts) == "A red pixel."

    with pytest.raises(TimeoutError, match="interrupted"):
        await session.send("slow please", timeout=0.5)
    await session.wait_for_idle(timeout=5)
    assert session.history[-1].status == "interrupted"
    events = await session.send_and_collect("slow please", timeout=0.5)
    assert events[-1].type == "turn_ended"


def _png_pixel() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# -- no orphans --------------------------------------------------------------------------------


async def test_the_scripted_model_reports_tokens_but_no_made_up_cost(
    server: ScriptedModelServer, make_session: MakeSession
) -> None:
    """No price table has the scripted model: its turns count tokens and cost nothing, rather
    than the CLI's guess at another model's rate."""
    server.add(Reply(blocks=[text("free")]))
    record = await make_session().send("one")
    assert record.usage.input_tokens > 0 and record.usage.cost_usd == 0
