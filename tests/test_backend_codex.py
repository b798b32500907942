"""What is Codex's own (the shared contract is in the conformance suite): the wire we speak
matches the protocol the `openai-codex` SDK's generated types describe, a denial's reason
reaches the model, patches follow decisions, usage and cost, error kinds and retry notices,
fork, model and effort switches, and a Codex process that dies with its parent.

The real ``codex`` binary from `openai-codex-cli-bin` runs against the scripted model server,
with a fresh CODEX_HOME per test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agentkernel import Session
from agentkernel.backends import codex
from agentkernel.errors import TurnFailedError
from agentkernel.events import (
    Error,
    Event,
    FileChange,
    PermissionRequest,
    PlanUpdate,
    Thinking,
    ThinkingDelta,
    ToolResult,
    TurnEnded,
    UsageUpdate,
)
from agentkernel.testing import API_KEY, Reply, ScriptedModelServer, text, thinking, tool_use

from .conftest import BurstReads, check_a_flood_is_read_in_bursts

MODEL = "gpt-5.5"


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as running:
        yield running


def _options(
    server: ScriptedModelServer, root: Path, *, retries: int = 0, **backend_options: Any
) -> dict[str, Any]:
    work = root / "work"
    work.mkdir(exist_ok=True)
    config = codex.provider_config(
        f"{server.url}/v1", env_key="SCRIPTED_MODEL_KEY", retries=retries
    )
    return {
        "model": MODEL,
        "cwd": work,
        "store": False,
        "env": {"CODEX_HOME": str(root / "codex-home"), "SCRIPTED_MODEL_KEY": API_KEY},
        "backend_options": {"config": config, **backend_options},
    }


def _patch(*lines: str) -> dict[str, Any]:
    return {"input": "\n".join(["*** Begin Patch", *lines, "*** End Patch", ""])}


def _of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def _sent_after(server: ScriptedModelServer, prompt_index: int) -> str:
    """Everything sent to the model from request `prompt_index` on."""
    return json.dumps([r.body for r in server.requests[prompt_index:]])


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every request we send to the app-server and every answer we give to its requests."""
    sent: list[tuple[str, Any]] = []
    request, respond = codex._AppServer.request, codex._AppServer.respond

    async def recording_request(self: Any, method: str, params: dict[str, Any]) -> Any:
        sent.append((method, params))
        return await request(self, method, params)

    def recording_respond(self: Any, request_id: Any, result: dict[str, Any]) -> None:
        sent.append(("<answer>", result))
        respond(self, request_id, result)

    monkeypatch.setattr(codex._AppServer, "request", recording_request)
    monkeypatch.setattr(codex._AppServer, "respond", recording_respond)
    return sent


async def test_denials_reach_the_model_and_patches_follow_decisions(
    server: ScriptedModelServer, tmp_path: Path, wire: list[tuple[str, Any]]
) -> None:
    session = Session("codex", **_options(server, tmp_path))
    work = tmp_path / "work"
    # The working folder inside a repository: Codex's turn diff names paths from its root.
    (tmp_path / ".git").mkdir()
    marker, created, edited = work / "marker.txt", work / "created.txt", work / "edited.txt"
    edited.write_text("old line\n")
    server.add(
        Reply(
            match="run the command", blocks=[tool_use("exec_command", {"cmd": f"touch {marker}"})]
        ),
        Reply(
            match="create the file",
            blocks=[tool_use("apply_patch", _patch(f"*** Add File: {created}", "+hello"))],
        ),
        Reply(
            match="edit the file",
            blocks=[
                tool_use(
                    "apply_patch",
                    _patch(f"*** Update File: {edited}", "@@", "-old line", "+new line"),
                )
            ],
        ),
        Reply(match="tool_result", blocks=[text("Understood.")], times=0),
    )

    async def turn(prompt: str, answer: Any) -> list[Event]:
        events = []
        async for event in session.stream(prompt):
            events.append(event)
            if isinstance(event, PermissionRequest):
                answer(event)
        return events

    # A declined command does not run; the model hears the decline and our reason.
    before = len(server.requests)
    events = await turn("run the command", lambda r: r.deny("not in this folder"))
    assert not marker.exists()
    sent = _sent_after(server, before)
    assert "rejected by user" in sent and "not in this folder" in sent
    (result,) = _of(events, ToolResult)
    assert result.is_error and "not in this folder" in result.output

    # A declined patch is not applied, and the model hears why.
    before = len(server.requests)
    events = await turn("create the file", lambda r: r.deny("keep the folder empty"))
    assert not created.exists()
    assert "keep the folder empty" in _sent_after(server, before)
    assert not _of(events, FileChange)

    # An approved update shows the same unified diff before (the request) and after.
    events = await turn("edit the file", lambda r: r.allow())
    assert edited.read_text() == "new line\n"
    (request,) = _of(events, PermissionRequest)
    assert (request.kind, request.title, request.locations) == (
        "edit",
        "Edit edited.txt",
        (str(edited),),
    )
    (change,) = _of(events, FileChange)
    assert change.path == str(edited) and change.diff == request.diff
    assert change.diff.startswith("--- a/edited.txt\n+++ b/edited.txt\n@@ -1 +1 @@\n")
    assert "-old line\n+new line\n" in change.diff
    await session.close()

    _check_wire_against_the_sdk_types(wire, tmp_path / "schema")


def _check_wire_against_the_sdk_types(wire: list[tuple[str, Any]], scratch: Path) -> None:
    """Each request we sent round-trips through the SDK's generated params model unchanged (a
    field the protocol does not know would be dropped), and each approval answer is one that
    the binary's own protocol schema lists."""
    from openai_codex.generated import v2_all as protocol

    models = {
        "thread/start": protocol.ThreadStartParams,
        "thread/resume": protocol.ThreadResumeParams,
        "thread/fork": protocol.ThreadForkParams,
        "turn/start": protocol.TurnStartParams,
        "turn/interrupt": protocol.TurnInterruptParams,
        "turn/steer": protocol.TurnSteerParams,
    }
    methods = [method for method, _ in wire]
    assert {"thread/start", "turn/start", "turn/steer", "<answer>"} <= set(methods), methods
    for method, params in wire:
        if method in models:
            parsed = models[method].model_validate(params)
            assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == params
    codex_bin = str(codex._codex_path(None))
    subprocess.run(
        [codex_bin, "app-server", "generate-json-schema", "--out", str(scratch)],
        check=True,
        capture_output=True,
    )
    allowed = set()
    for name, definition in (
        ("CommandExecutionRequestApprovalResponse", "CommandExecutionApprovalDecision"),
        ("FileChangeRequestApprovalResponse", "FileChangeApprovalDecision"),
    ):
        schema = json.loads((scratch / f"{name}.json").read_text())
        allowed |= {
            word
            for one in schema["definitions"][definition]["oneOf"]
            for word in one.get("enum", [])
        }
    decisions = {answer["decision"] for method, answer in wire if method == "<answer>"}
    assert decisions == {"accept", "decline"} and decisions <= allowed, (decisions, allowed)


async def test_usage_cost_thinking_and_error_kinds(
    server: ScriptedModelServer, tmp_path: Path
) -> None:
    prices = {MODEL: {"input": 2.0, "cached_input": 0.5, "output": 10.0}}
    session = Session("codex", **_options(server, tmp_path, prices=prices))
    usage = {"input_tokens": 1000, "cache_read_input_tokens": 200, "output_tokens": 50}
    server.add(
        Reply(match="think", blocks=[thinking("First, the plan."), text("Done.")], usage=usage),
        Reply(match="overloaded", status=500),
        Reply(match="limited", status=429),
    )
    record = await session.send("think about it")
    assert "".join(e.text for e in _of(record.events, ThinkingDelta)) == "First, the plan."
    assert [e.text for e in _of(record.events, Thinking)] == ["First, the plan."]
    ended = record.events[-1]
    assert isinstance(ended, TurnEnded) and ended.model_calls == 1
    # Codex counts cached tokens inside the input; we keep them apart, and price each kind.
    assert (ended.usage.input_tokens, ended.usage.cache_read_tokens, ended.usage.output_tokens) == (
        800,
        200,
        50,
    )
    assert ended.usage.cost_usd == pytest.approx((800 * 2.0 + 200 * 0.5 + 50 * 10.0) / 1e6)
    assert _of(record.events, UsageUpdate)[-1].usage == ended.usage
    thread = session.backend_session_id

    for prompt, kind in (("overloaded", "api_error"), ("limited", "rate_limit")):
        with pytest.raises(TurnFailedError) as failed:
            await session.send(prompt)
        errors = _of(failed.value.record.events, Error)
        assert [e.kind for e in errors] == [kind], errors
        assert session.backend_session_id == thread, "the thread id is kept when a turn fails"
    await session.close()


async def test_the_plan_tool_fills_the_task_list(
    server: ScriptedModelServer, tmp_path: Path
) -> None:
    """Codex offers ``update_plan``; the model's plan becomes a PlanUpdate and the session's
    tasks, each later call replacing the list whole."""
    first = {
        "explanation": "Two steps.",
        "plan": [
            {"step": "Read the data", "status": "in_progress"},
            {"step": "Write the report", "status": "pending"},
        ],
    }
    later = {
        "plan": [
            {"step": "Read the data", "status": "completed"},
            {"step": "Write the report", "status": "in_progress"},
        ]
    }
    server.add(
        Reply(match="plan it", blocks=[tool_use("update_plan", first)]),
        Reply(match="tool_result", blocks=[tool_use("update_plan", later)], times=1),
        Reply(match="tool_result", blocks=[text("Planned.")]),
    )
    session = Session("codex", **_options(server, tmp_path))
    record = await session.send("plan it")
    assert record.text == "Planned."
    offered = [t.get("name") for t in server.requests[0].body.get("tools", [])]
    assert "update_plan" in offered, offered
    plans = [[(i["content"], i["status"]) for i in p.items] for p in _of(record.events, PlanUpdate)]
    assert plans == [
        [("Read the data", "in_progress"), ("Write the report", "pending")],
        [("Read the data", "completed"), ("Write the report", "in_progress")],
    ]
    assert [(t.text, t.status) for t in session.tasks] == plans[-1]
    assert "unsupported call" not in _sent_after(server, 1)
    await session.close()


async def test_a_flood_of_app_server_lines_is_read_in_bursts(
    server: ScriptedModelServer, tmp_path: Path, burst_reads: BurstReads
) -> None:
    session = Session("codex", **_options(server, tmp_path))
    try:
        await check_a_flood_is_read_in_bursts(session, server, burst_reads)
    finally:
        await session.close()


async def test_retry_notice_then_success(server: ScriptedModelServer, tmp_path: Path) -> None:
    server.add(
        Reply(match="flaky", status=500, times=2),  # one silent request retry, one reported
        Reply(match="flaky", blocks=[text("Recovered.")]),
    )
    session = Session("codex", **_options(server, tmp_path, retries=1))
    record = await session.send("a flaky model")
    assert record.status == "completed" and record.text == "Recovered."
    assert [e.kind for e in _of(record.events, Error)] == ["retrying"]
    assert len(server.requests) == 3
    await session.close()


async def test_fork_model_and_effort(server: ScriptedModelServer, tmp_path: Path) -> None:
    server.add(
        Reply(match="the word is", blocks=[text("Noted: ibis.")]),
        Reply(match="which word", blocks=[text("Ibis.")], times=0),
    )
    first = Session("codex", reasoning_effort="high", **_options(server, tmp_path))
    await first.send("the word is ibis")
    assert server.requests[-1].body["reasoning"]["effort"] == "high"
    branch = first.fork()
    await first.close()
    await branch.set_model("gpt-5.6-sol")
    record = await branch.send("which word was it?")
    assert record.text == "Ibis."
    assert branch.backend_session_id not in (None, first.backend_session_id)
    body = server.requests[-1].body
    assert body["model"] == "gpt-5.6-sol" and "the word is ibis" in json.dumps(body)
    await branch.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from agentkernel import Session

    async def main():
        session = Session("codex", **json.loads(sys.argv[1]))
        await session.send("hi")
        print(session.pids()[0], flush=True)
        time.sleep(120)

    asyncio.run(main())
    """
)


def test_codex_dies_with_its_parent(server: ScriptedModelServer, tmp_path: Path) -> None:
    """SIGKILL of the process that started it (a kernel killed with kill -9): nothing can
    close the session, and the Codex process still ends."""
    server.add(Reply(match="hi", blocks=[text("hi")]))
    options = _options(server, tmp_path)
    options = {**options, "cwd": str(options["cwd"])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(options)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        # Its own session: the kernel's interrupt (a signal to its process group) misses it.
        assert os.getsid(pid) == pid != os.getsid(child.pid)
        agents = [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "codex"]
        assert agents, "codex runs under agentkernel's supervisor"
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 10
        for proc in [psutil.Process(pid), *agents]:
            while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < deadline, "codex outlived the process that started it"
                time.sleep(0.05)
    finally:
        child.kill()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="valid options: codex_bin, sandbox"):
        codex._Options.parse({"sandbox_mode": "read-only"})
    with pytest.raises(ValueError, match="valid: read-only, workspace-write, danger-full-access"):
        codex._Options.parse({"sandbox": "full"})
    with pytest.raises(ValueError, match="needs 'input' and 'output'"):
        codex._Options.parse({"prices": {MODEL: {"input": 1.0}}})
