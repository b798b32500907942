"""The contract every backend passes: one pytest suite, run once per backend.

Each backend adds one `BackendCase` to `CASES`: how to point its real CLI at the scripted model
server, and how its agent spells the two neutral actions the checks script ("run this shell
command", "create this file"). Every check is written once, in those neutral words, and runs
against every case; a backend's own test file covers only what is its alone.

Use it from a test module::

    from agentkernel.testing.backend_conformance import *  # noqa: F403

Each check is also a plain coroutine function (``check_*``) taking a `Harness`, so a test can
run one against a backend double and expect it to fail (see ``tests/test_conformance.py``).
Needs pytest (and pytest-asyncio in auto mode), like any test module.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from ..backends import Backend
from ..errors import TurnFailedError
from ..events import (
    Event,
    FileChange,
    PermissionDecided,
    PermissionRequest,
    SessionStarted,
    Text,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnStarted,
)
from ..session import Session
from ._script import Reply, ToolUse, text, tool_use
from ._server import ScriptedModelServer

__all__ = [
    "CASES",
    "BackendCase",
    "Harness",
    "conformance_case",
    "harness",
    "test_allow_always_is_not_asked_again",
    "test_allow_reads_allows_no_write",
    "test_bad_cli_path_is_a_clear_error",
    "test_denied_shell_command_does_not_run",
    "test_flood_of_text_arrives_whole_and_a_command_after_it_is_asked",
    "test_headless_default_denies_every_command",
    "test_history_reaches_the_model",
    "test_interrupt_while_an_approval_waits",
    "test_interrupt_while_streaming",
    "test_model_server_down_fails_the_turn",
    "test_no_process_outlives_its_session",
    "test_python_tool_runs_with_the_models_arguments",
    "test_resume_in_a_new_process",
    "test_shell_command_allowed_runs",
    "test_text_streams_in_order",
    "test_write_file_allowed_shows_its_change",
]

TURN_TIMEOUT_S = 90.0
"""A bound for one scripted turn, so a backend that never ends its turn fails instead of
hanging the suite. Scripted turns take well under a second each.

Rules matched on a prompt are unlimited (``times=0``): some agents send side requests that
quote the prompt (Claude Code behind ACP titles a session from it), which must not use the
rule up before the turn's own request comes."""


@dataclass(frozen=True)
class BackendCase:
    """How the suite drives one backend."""

    name: str
    """The case's id; also the backend's entry-point name unless `backend` says otherwise."""
    shell: Callable[[str], ToolUse]
    """This agent's tool call that runs a shell command."""
    write_file: Callable[[str, str], ToolUse]
    """This agent's tool call that creates the file at an absolute path with a text."""
    session_options: Callable[[ScriptedModelServer, Path], dict[str, Any]]
    """`Session` keyword arguments that point the backend at the server; the path is a
    directory for the agent's own config and state, fresh per check and shared by its sessions
    (so a resumed session finds its conversation), apart from the working directory."""
    bad_cli_options: Callable[[Path], dict[str, Any]]
    """`Session` keyword arguments naming a CLI executable that does not exist at that path."""
    missing: Callable[[], str | None] = field(default=lambda: None)
    """Why the backend cannot run here (its CLI is not installed), or None."""
    backend: str | type[Backend] | None = None
    """The backend to run, when not the registered one named `name` (a test double)."""
    continues_after_deny: bool = True
    """Whether the agent goes on with its turn after a denied tool call (the model hears of
    the denial at once and answers), or ends the turn there, as a person's "stop" (Copilot over
    ACP): then the model hears of it with the next prompt. Checked both ways: an agent
    declared to end its turn must not ask its model again in that turn."""


def _claude_options(server: ScriptedModelServer, config: Path) -> dict[str, Any]:
    return {
        "env": {
            **server.claude_env(),
            "CLAUDE_CONFIG_DIR": str(config),
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
    }


CLAUDE = BackendCase(
    name="claude",
    shell=lambda command: tool_use("Bash", {"command": command}),
    write_file=lambda path, body: tool_use("Write", {"file_path": path, "content": body}),
    session_options=_claude_options,
    bad_cli_options=lambda folder: {"backend_options": {"cli_path": str(folder / "no-claude")}},
)


def _acp_claude_missing() -> str | None:
    import os

    from ..backends._acp_agents import find_program

    if find_program("claude-agent-acp", os.environ):
        return None
    return "claude-agent-acp is not on PATH: npm install -g @agentclientprotocol/claude-agent-acp"


ACP = BackendCase(
    name="acp",
    shell=lambda command: tool_use("Bash", {"command": command}),
    write_file=lambda path, body: tool_use("Write", {"file_path": path, "content": body}),
    session_options=lambda server, config: {
        **_claude_options(server, config),
        "backend_options": {"agent": "claude"},  # claude-agent-acp: Claude Code behind ACP
    },
    bad_cli_options=lambda folder: {
        "backend_options": {"agent": str(folder / "no-claude-agent-acp")}
    },
    missing=_acp_claude_missing,
)


def _acp_copilot_options(server: ScriptedModelServer, config: Path) -> dict[str, Any]:
    """`copilot --acp` takes its provider from the CLI's own variables (offline mode needs
    them); the session model is the CLI's ``COPILOT_MODEL``."""
    openai = server.openai_env()
    return {
        "env": {
            "HOME": str(config),
            "COPILOT_HOME": str(config),
            "COPILOT_OFFLINE": "true",
            "COPILOT_PROVIDER_BASE_URL": openai["OPENAI_BASE_URL"],
            "COPILOT_PROVIDER_TYPE": "openai",
            "COPILOT_PROVIDER_API_KEY": openai["OPENAI_API_KEY"],
            "COPILOT_PROVIDER_WIRE_API": "completions",
            "COPILOT_MODEL": "gpt-4.1",
        },
        "backend_options": {"agent": "copilot"},
    }


ACP_COPILOT = BackendCase(
    name="acp-copilot",
    backend="acp",
    shell=lambda command: tool_use("bash", {"command": command, "description": "Run it"}),
    write_file=lambda path, body: tool_use("create", {"path": path, "file_text": body}),
    session_options=_acp_copilot_options,
    bad_cli_options=lambda folder: {"backend_options": {"agent": str(folder / "no-copilot")}},
    missing=lambda: _copilot_missing(),
    continues_after_deny=False,
)


def _codex_options(server: ScriptedModelServer, config: Path) -> dict[str, Any]:
    from ..backends.codex import provider_config  # the backend module, only when it runs
    from ._server import API_KEY

    return {
        "model": "gpt-5.5",  # a model the CLI knows (`codex debug models`)
        "env": {"CODEX_HOME": str(config), "SCRIPTED_MODEL_KEY": API_KEY},
        "backend_options": {
            "config": provider_config(f"{server.url}/v1", env_key="SCRIPTED_MODEL_KEY", retries=0)
        },
    }


CODEX = BackendCase(
    name="codex",
    shell=lambda command: tool_use("exec_command", {"cmd": command}),
    write_file=lambda path, body: tool_use(
        "apply_patch",
        {
            "input": f"*** Begin Patch\n*** Add File: {path}\n"
            + "".join(f"+{line}\n" for line in body.splitlines())
            + "*** End Patch\n"
        },
    ),
    session_options=_codex_options,
    bad_cli_options=lambda folder: {"backend_options": {"codex_bin": str(folder / "no-codex")}},
)


def _copilot_options(server: ScriptedModelServer, config: Path) -> dict[str, Any]:
    openai = server.openai_env()
    provider = {"type": "openai", "base_url": openai["OPENAI_BASE_URL"], "wire_api": "completions"}
    return {
        "model": "gpt-4.1",  # a model the CLI knows: its tool set and token limits follow
        "env": {"HOME": str(config), "COPILOT_HOME": str(config), "COPILOT_OFFLINE": "true"},
        "backend_options": {"provider": {**provider, "api_key": openai["OPENAI_API_KEY"]}},
    }


def _copilot_missing() -> str | None:
    from .._cli_install import CLIInstallError, CLINotFoundError, ensure_copilot_cli

    try:
        ensure_copilot_cli()  # installs it (npm) on a fresh machine
    except (CLIInstallError, CLINotFoundError) as exc:
        return f"the Copilot CLI is missing and could not be installed: {exc}"
    return None


COPILOT = BackendCase(
    name="copilot",
    shell=lambda command: tool_use("bash", {"command": command, "description": "Run it"}),
    write_file=lambda path, body: tool_use("create", {"path": path, "file_text": body}),
    session_options=_copilot_options,
    bad_cli_options=lambda folder: {"backend_options": {"cli_path": str(folder / "no-copilot")}},
    missing=_copilot_missing,
)

CASES: list[BackendCase] = [CLAUDE, ACP, ACP_COPILOT, CODEX, COPILOT]


# -- the harness -------------------------------------------------------------------------------


class Harness:
    """One check's world: a scripted server, a working directory, and the sessions made,
    all closed (and checked for leftover processes) at the end."""

    def __init__(self, case: BackendCase, root: Path) -> None:
        self.case = case
        self.root = root
        self.cwd = root / "work"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.config = root / "agent-config"
        self.config.mkdir(parents=True, exist_ok=True)
        self.server = ScriptedModelServer([])
        self.sessions: list[Session] = []

    def script(self, *replies: Reply) -> None:
        self.server.add(*replies)

    def options(self, **overrides: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "cwd": self.cwd,
            "store": False,
            **self.case.session_options(self.server, self.config),
        }
        options.update(overrides)
        return options

    def session(self, options: dict[str, Any] | None = None, **overrides: Any) -> Session:
        """A session on this case's backend, with `options` (default: `self.options`)."""
        backend = self.case.backend or self.case.name
        session = Session(backend, **(options or self.options(**overrides)))
        self.sessions.append(session)
        return session

    async def stream(
        self,
        session: Session,
        prompt: str,
        on_event: Callable[[Event], Any] | None = None,
        **options: Any,
    ) -> list[Event]:
        """All events of one streamed turn, calling `on_event` on each as it arrives."""

        async def run() -> list[Event]:
            events: list[Event] = []
            async for event in session.stream(prompt, **options):
                events.append(event)
                if on_event is not None:
                    outcome = on_event(event)
                    if asyncio.iscoroutine(outcome):
                        await outcome
            return events

        try:
            return await asyncio.wait_for(run(), TURN_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.case.name}: the turn {prompt!r} did not end within {TURN_TIMEOUT_S} s "
                "(a backend must end every turn with exactly one TurnEnded)"
            ) from None

    async def close(self) -> None:
        pids = [pid for session in self.sessions for pid in session.pids()]
        for session in self.sessions:
            if not session.is_finished:
                await session.close()
        self.server.stop()
        alive = _still_alive(pids)
        assert not alive, f"{self.case.name}: agent processes outlived their session: {alive}"


@pytest.fixture(params=CASES, ids=lambda case: case.name)
def conformance_case(request: pytest.FixtureRequest) -> BackendCase:
    case: BackendCase = request.param
    if reason := case.missing():
        pytest.skip(f"{case.name}: {reason}")
    return case


@pytest.fixture
async def harness(conformance_case: BackendCase, tmp_path: Path) -> AsyncIterator[Harness]:
    world = Harness(conformance_case, tmp_path)
    world.server.start()
    try:
        yield world
    finally:
        await world.close()


# -- helpers -----------------------------------------------------------------------------------


def _ended(events: list[Event]) -> TurnEnded:
    ends = [e for e in events if isinstance(e, TurnEnded)]
    assert len(ends) == 1, f"a turn must end with exactly one TurnEnded, got {len(ends)}"
    assert events[-1] is ends[0], "TurnEnded must be the turn's last event"
    return ends[0]


def _of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def _still_alive(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _descendants() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


SLOW_TEXT = "word " * 400
"""Streamed 4 characters every 50 ms: about 25 s unless interrupted."""


# -- the checks --------------------------------------------------------------------------------


async def check_text_streams_in_order(h: Harness) -> None:
    reply = "Hello from the scripted model, streamed in pieces."
    h.script(Reply(match="say hello", blocks=[text(reply)], chunk_size=8, times=0))
    events = await h.stream(h.session(), "say hello")
    assert isinstance(events[0], SessionStarted | TurnStarted), events[0]
    started = _of(events, SessionStarted)
    assert started and started[0].backend_session_id, "SessionStarted names the backend's id"
    deltas = _of(events, TextDelta)
    assert len(deltas) >= 2, "text must stream as deltas"
    assert "".join(d.text for d in deltas) == reply
    assert [t.text for t in _of(events, Text)] == [reply]
    assert _ended(events).stop_reason == "end_turn"
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


FLOOD_TEXT = "".join(f"line {i:04d}: café, 漢字, flood\n" for i in range(600))
"""About 1,000 deltas of 16 characters, each written on its own about 0.3 ms apart: faster
than a reader that wakes for every write keeps up with (so readers that gather writes do), with
characters of two and three UTF-8 bytes that a read can cut in half."""


async def check_flood_of_text_arrives_whole_and_a_command_after_it_is_asked(h: Harness) -> None:
    marker = h.cwd / "after-the-flood.txt"
    h.script(
        Reply(
            match="flood me",
            blocks=[text(FLOOD_TEXT), h.case.shell(f"touch {marker}")],
            delay=0.0003,
            times=0,
        ),
        Reply(match="tool_result", blocks=[text("Done after the flood.")], times=0),
    )
    events = await h.stream(h.session(), "flood me", _allow)
    streamed = "".join(d.text for d in _of(events, TextDelta))
    assert streamed.startswith(FLOOD_TEXT), "characters of the flood were lost or reordered"
    assert [t.text for t in _of(events, Text)][:1] == [FLOOD_TEXT]
    assert len(_of(events, PermissionRequest)) == 1, "the command after the flood was not asked"
    assert marker.exists(), "the command after the flood did not run"
    assert _ended(events).stop_reason == "end_turn"


async def check_history_reaches_the_model(h: Harness) -> None:
    h.script(
        Reply(match="remember the word", blocks=[text("Noted: pelican.")], times=0),
        Reply(match="which word", blocks=[text("It was pelican.")], times=0),
    )
    session = h.session()
    first = await session.send("remember the word pelican")
    assert first.text == "Noted: pelican."
    second = await session.send("which word did I say?")
    assert second.text == "It was pelican."
    # Any request of the second turn (an agent may send side requests after it, e.g. a title).
    sent = [json.dumps(r.body) for r in h.server.requests if r.matched is not None]
    assert any("remember the word pelican" in b and "Noted: pelican." in b for b in sent)
    assert session.stats.turns == 2


async def _shell_turn(h: Harness, session: Session, command: str, answer: Callable[..., Any]):
    prompt = f"run the command, take {len(h.server.requests)}"  # one rule per turn
    h.script(
        Reply(match=prompt, blocks=[h.case.shell(command)], times=0),
        Reply(match="tool_result", blocks=[text("The command is done.")]),
    )

    def on_event(event: Event) -> None:
        if isinstance(event, PermissionRequest):
            answer(event)

    return await h.stream(session, prompt, on_event)


async def check_shell_command_allowed_runs(h: Harness) -> None:
    marker = h.cwd / "allowed.txt"
    events = await _shell_turn(h, h.session(), f"touch {marker}", lambda r: r.allow())
    requests = _of(events, PermissionRequest)
    assert len(requests) == 1, f"one request for one command, got {requests}"
    assert requests[0].kind == "execute" and str(marker) in (requests[0].command or "")
    calls = _of(events, ToolCall)
    assert calls and calls[0].kind == "execute", calls
    assert marker.exists(), "the allowed command did not run"
    assert [d.behavior for d in _of(events, PermissionDecided)] == ["allow"]
    assert _of(events, ToolResult), "the command's result is reported"
    assert _ended(events).stop_reason == "end_turn"


async def check_denied_shell_command_does_not_run(h: Harness) -> None:
    marker = h.cwd / "denied.txt"
    session = h.session()
    command = f"touch {marker}"
    events = await _shell_turn(h, session, command, lambda r: r.deny("not now"))
    assert not marker.exists(), "a denied command ran"
    decided = _of(events, PermissionDecided)
    assert [(d.behavior, d.by) for d in decided] == [("deny", "user")]
    assert _ended(events).stop_reason == "end_turn"
    follow_up = [r for r in h.server.requests if r.matched and r.matched.match == "tool_result"]
    if h.case.continues_after_deny:
        assert follow_up, "the model must hear that its command was denied"
        return
    assert not follow_up, f"{h.case.name} is declared to end its turn on a denial, yet went on"
    results = _of(events, ToolResult)
    assert results and results[-1].is_error, "the denied call must end as failed"
    h.script(Reply(match="and now", blocks=[text("Understood.")], times=0))
    await session.send("and now?")
    later = [json.dumps(r.body) for r in h.server.requests if "and now" in r.last_user_text]
    assert any(command in body for body in later), "the next prompt must carry the denied call"
    assert not marker.exists()


async def check_allow_always_is_not_asked_again(h: Harness) -> None:
    log = h.cwd / "always.log"
    command = f"echo again >> {log}"
    session = h.session()
    first = await _shell_turn(h, session, command, lambda r: r.allow_always())
    assert len(_of(first, PermissionRequest)) == 1
    second = await _shell_turn(h, session, command, lambda r: r.deny("asked twice"))
    assert not _of(second, PermissionRequest), "an always-allowed command was asked again"
    assert [d.by for d in _of(second, PermissionDecided)] == ["rule"]
    assert log.read_text().count("again") == 2
    other = h.cwd / "other.txt"
    third = await _shell_turn(h, session, f"touch {other}", lambda r: r.deny("other command"))
    assert len(_of(third, PermissionRequest)) == 1, "a rule covers one exact command only"
    assert not other.exists()


async def check_headless_default_denies_every_command(h: Harness) -> None:
    """Nothing can ask (``send`` with no handler, no mode): every command is denied, even one
    the agent would approve on its own, and each denial is recorded."""
    marker = h.cwd / "headless.txt"
    h.script(
        Reply(match="two commands", blocks=[h.case.shell("echo conformance-echo")], times=0),
        Reply(match="tool_result", blocks=[h.case.shell(f"touch {marker}")], times=1),
        Reply(match="tool_result", blocks=[text("Both were refused.")]),
    )
    record = await h.session().send("run two commands")
    decided = _of(record.events, PermissionDecided)
    asked = 2 if h.case.continues_after_deny else 1  # or the turn ends at the first denial
    assert [(d.behavior, d.by) for d in decided] == [("deny", "policy")] * asked, decided
    assert not marker.exists()
    ran = [r for r in _of(record.events, ToolResult) if not r.is_error]
    assert not any(r.output.strip() == "conformance-echo" for r in ran), "echo ran"


async def check_write_file_allowed_shows_its_change(h: Harness) -> None:
    target = h.cwd / "notes.txt"
    h.script(
        Reply(
            match="write the notes",
            blocks=[h.case.write_file(str(target), "first line\n")],
            times=0,
        ),
        Reply(match="tool_result", blocks=[text("Written.")]),
    )
    seen: list[PermissionRequest] = []

    def on_event(event: Event) -> None:
        if isinstance(event, PermissionRequest):
            seen.append(event)
            event.allow()

    events = await h.stream(h.session(), "write the notes", on_event)
    assert seen and seen[0].kind == "edit", seen
    assert any(str(target) in loc or loc.endswith("notes.txt") for loc in seen[0].locations)
    assert target.read_text() == "first line\n"
    changes = _of(events, FileChange)
    assert changes and "+first line" in changes[-1].diff, changes


async def check_allow_reads_allows_no_write(h: Harness) -> None:
    target = h.cwd / "blocked.txt"
    h.script(
        Reply(match="write it", blocks=[h.case.write_file(str(target), "nope\n")], times=0),
        Reply(match="tool_result", blocks=[text("Could not write.")]),
    )
    record = await h.session(permission_mode="allow-reads").send("write it")
    assert not target.exists(), "allow-reads let a write through"
    assert [d.behavior for d in _of(record.events, PermissionDecided)] == ["deny"]


async def check_interrupt_while_streaming(h: Harness) -> None:
    h.script(
        Reply(match="talk slowly", blocks=[text(SLOW_TEXT)], chunk_size=4, delay=0.05, times=0),
        Reply(match="still there", blocks=[text("Still here.")], times=0),
    )
    session = h.session()
    interrupted_at: list[float] = []

    async def on_event(event: Event) -> None:
        if isinstance(event, TextDelta) and not interrupted_at:
            interrupted_at.append(time.monotonic())
            await session.interrupt()

    events = await h.stream(session, "talk slowly", on_event)
    assert interrupted_at, "no text streamed before the interrupt"
    assert _ended(events).stop_reason == "interrupted"
    streamed = "".join(d.text for d in _of(events, TextDelta))
    assert len(streamed) < len(SLOW_TEXT) // 2, "the interrupt did not stop the stream"
    again = await session.send("are you still there?")
    assert "Still here." in again.text, "the session must stay usable after an interrupt"


async def check_interrupt_while_an_approval_waits(h: Harness) -> None:
    marker = h.cwd / "never.txt"
    h.script(
        Reply(match="run the command", blocks=[h.case.shell(f"touch {marker}")], times=0),
        Reply(match="still there", blocks=[text("Still here.")], times=0),
    )
    session = h.session()
    pending: list[PermissionRequest] = []

    async def on_event(event: Event) -> None:
        if isinstance(event, PermissionRequest):
            pending.append(event)
            await session.interrupt()

    events = await h.stream(session, "run the command", on_event)
    assert pending, "the command was not asked about"
    assert _ended(events).stop_reason == "interrupted"
    assert not marker.exists(), "an interrupted, unanswered command ran"
    again = await session.send("are you still there?")
    assert "Still here." in again.text


async def check_resume_in_a_new_process(h: Harness) -> None:
    h.script(
        Reply(match="the secret word", blocks=[text("Kept: heron.")], times=0),
        Reply(match="what was", blocks=[text("It was heron.")], times=0),
    )
    first = h.session()
    await first.send("the secret word is heron")
    thread = first.backend_session_id
    assert thread, "a session that ran a turn has a backend session id"
    first_pids = first.pids()
    await first.close()
    backend = h.case.backend or h.case.name
    resumed = Session.resume(thread, backend=backend, **h.options())
    h.sessions.append(resumed)
    record = await resumed.send("what was the word?")
    assert record.text == "It was heron."
    asked = [json.dumps(r.body) for r in h.server.requests if "what was" in r.last_user_text]
    assert any("the secret word is heron" in body for body in asked)
    assert not set(resumed.pids()) & set(first_pids), "resume must start a new process"


async def check_bad_cli_path_is_a_clear_error(h: Harness) -> None:
    session = h.session(**h.case.bad_cli_options(h.root))
    try:
        await asyncio.wait_for(session.send("hello"), TURN_TIMEOUT_S)
    except TurnFailedError as failure:
        kinds = [e.kind for e in failure.record.events if e.type == "error"]
        assert "cli_missing" in kinds, kinds
        assert str(h.root) in str(failure), f"the error must name the path: {failure}"
    else:
        raise AssertionError("a missing CLI must fail the turn")


async def check_model_server_down_fails_the_turn(h: Harness) -> None:
    options = h.options()  # still pointing at the server's address, soon dead
    h.server.stop()
    session = h.session(options)
    try:
        await asyncio.wait_for(session.send("hello"), TURN_TIMEOUT_S)
    except TurnFailedError as failure:
        assert failure.record.status == "error"
        assert [e for e in failure.record.events if e.type == "error"], "an Error event says why"
    except asyncio.TimeoutError:
        raise AssertionError("a dead model server must fail the turn, not hang it") from None
    else:
        raise AssertionError("a dead model server must fail the turn")


async def check_no_process_outlives_its_session(h: Harness) -> None:
    h.script(Reply(match="hi", blocks=[text("hi")], times=0))
    before = _descendants()

    async def started() -> tuple[Session, set[int]]:
        session = h.session()
        await session.send("hi")
        assert session.pids(), "a connected session reports its agent process"
        return session, _descendants() - before

    closed, spawned = await started()
    await closed.close()
    assert not _still_alive(list(spawned)), "close() left processes behind"

    killed, spawned = await started()
    killed.kill()
    assert not _still_alive(list(spawned)), "kill() left processes behind"

    dropped, spawned = await started()
    h.sessions.remove(dropped)
    del dropped
    gc.collect()
    assert not _still_alive(list(spawned)), "a dropped session left processes behind"


def _offered_names(body: Any) -> list[str]:
    """The tool names a model request offers, in any of the three wire formats (Anthropic
    ``tools[].name``, Responses ``tools[].name`` and namespaces, Chat ``tools[].function``)."""
    names: list[str] = []
    for entry in (body or {}).get("tools") or [] if isinstance(body, dict) else []:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name") or (entry.get("function") or {}).get("name")
        if isinstance(name, str):
            names.append(name)
        names += _offered_names({"tools": entry.get("tools")}) if entry.get("tools") else []
    return names


def _offered_as(server: ScriptedModelServer, tool: str) -> str:
    """The name under which the agent offers our Python tool `tool` to the model: the tool's
    own, or prefixed with the agent's namespace for it (``mcp__agentkernel__add``)."""
    for request in reversed(server.requests):
        for name in _offered_names(request.body):
            if name == tool or name.endswith((f"__{tool}", f"-{tool}", f".{tool}")):
                return name
    raise AssertionError(f"the agent never offered the Python tool {tool!r} to the model")


async def check_python_tool_runs_with_the_models_arguments(h: Harness) -> None:
    """A Python function given to the session is offered to the model; the model's call runs
    it with the model's arguments after one permission request with the tool's kind, and the
    model receives the result. A function that raises gives the model its error and the turn
    goes on; a denied call does not run."""
    calls: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    def fail() -> str:
        """Always fails."""
        raise ValueError("conformance-tool-failure")

    # Prompt rules are unlimited: an agent may send the prompt in a side request of its own
    # too (a session title), before or after the turn's request.
    h.script(Reply(match="which tools", blocks=[text("These ones.")], times=0))
    session = h.session(tools=[add, fail], shared_tools=False)
    await session.send("which tools do you have?", permission_mode="allow-all")
    add_name, fail_name = _offered_as(h.server, "add"), _offered_as(h.server, "fail")
    h.script(
        Reply(match="add two and three", blocks=[tool_use(add_name, {"a": 2, "b": 3})], times=0),
        Reply(match="tool_result", blocks=[tool_use(fail_name, {})], times=1),
        Reply(match="tool_result", blocks=[text("Added; the other one failed.")]),
    )
    asked: list[PermissionRequest] = []

    def allow(event: Event) -> None:
        if isinstance(event, PermissionRequest):
            asked.append(event)
            event.allow()

    events = await h.stream(session, "add two and three", allow)
    assert calls == [(2, 3)], f"the function ran with {calls}"
    assert [(r.kind, r.title) for r in asked] == [
        ("execute", "add(a=2, b=3)"),
        ("execute", "fail()"),
    ]
    texts = [r.last_user_text for r in h.server.requests]
    assert any(t.strip() == "5" for t in texts), "the model must receive the result 5"
    assert any("conformance-tool-failure" in t for t in texts), "the model must hear the error"
    assert _ended(events).stop_reason == "end_turn"
    assert "Added; the other one failed." in [t.text for t in _of(events, Text)]

    h.script(
        Reply(match="add once more", blocks=[tool_use(add_name, {"a": 1, "b": 1})], times=0),
        Reply(match="tool_result", blocks=[text("Not allowed.")]),
    )
    denied = await h.stream(session, "add once more", lambda e: _deny(e, "not this time"))
    assert calls == [(2, 3)], "a denied Python tool ran"
    assert [d.behavior for d in _of(denied, PermissionDecided)] == ["deny"]
    assert any("not this time" in r.last_user_text for r in h.server.requests[-2:])


def _allow(event: Event) -> None:
    if isinstance(event, PermissionRequest):
        event.allow()


def _deny(event: Event, reason: str) -> None:
    if isinstance(event, PermissionRequest):
        event.deny(reason)


# -- the suite: one pytest test per check ----------------------------------------------------


async def test_text_streams_in_order(harness: Harness) -> None:
    await check_text_streams_in_order(harness)


async def test_flood_of_text_arrives_whole_and_a_command_after_it_is_asked(
    harness: Harness,
) -> None:
    await check_flood_of_text_arrives_whole_and_a_command_after_it_is_asked(harness)


async def test_history_reaches_the_model(harness: Harness) -> None:
    await check_history_reaches_the_model(harness)


async def test_shell_command_allowed_runs(harness: Harness) -> None:
    await check_shell_command_allowed_runs(harness)


async def test_denied_shell_command_does_not_run(harness: Harness) -> None:
    await check_denied_shell_command_does_not_run(harness)


async def test_allow_always_is_not_asked_again(harness: Harness) -> None:
    await check_allow_always_is_not_asked_again(harness)


async def test_headless_default_denies_every_command(harness: Harness) -> None:
    await check_headless_default_denies_every_command(harness)


async def test_write_file_allowed_shows_its_change(harness: Harness) -> None:
    await check_write_file_allowed_shows_its_change(harness)


async def test_allow_reads_allows_no_write(harness: Harness) -> None:
    await check_allow_reads_allows_no_write(harness)


async def test_interrupt_while_streaming(harness: Harness) -> None:
    await check_interrupt_while_streaming(harness)


async def test_interrupt_while_an_approval_waits(harness: Harness) -> None:
    await check_interrupt_while_an_approval_waits(harness)


async def test_resume_in_a_new_process(harness: Harness) -> None:
    await check_resume_in_a_new_process(harness)


async def test_bad_cli_path_is_a_clear_error(harness: Harness) -> None:
    await check_bad_cli_path_is_a_clear_error(harness)


async def test_model_server_down_fails_the_turn(harness: Harness) -> None:
    await check_model_server_down_fails_the_turn(harness)


async def test_no_process_outlives_its_session(harness: Harness) -> None:
    await check_no_process_outlives_its_session(harness)


async def test_python_tool_runs_with_the_models_arguments(harness: Harness) -> None:
    await check_python_tool_runs_with_the_models_arguments(harness)
