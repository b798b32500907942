"""What only the Copilot backend does; the shared contract runs in tests/test_conformance.py.

Every session runs the real Copilot CLI (from npm, installed on first use) against the scripted
model server, over OpenAI Chat Completions, with a fresh HOME and COPILOT_HOME per test.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agentkernel import Session
from agentkernel._cli_install import (
    INSTALL_COMMAND,
    CLIInstallError,
    CLINotFoundError,
    _platform_packages,
    ensure_copilot_cli,
    find_copilot_cli,
)
from agentkernel.errors import TurnFailedError
from agentkernel.events import (
    Error,
    Event,
    FileChange,
    Other,
    PermissionDecided,
    PermissionRequest,
    PlanUpdate,
    Question,
    Thinking,
    ThinkingDelta,
    ToolResult,
    TurnEnded,
    UsageUpdate,
)
from agentkernel.testing import Reply, ScriptedModelServer, text, thinking, tool_use
from agentkernel.testing.backend_conformance import COPILOT

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def copilot_cli() -> Path:
    try:
        return ensure_copilot_cli()
    except (CLIInstallError, CLINotFoundError) as exc:
        pytest.skip(f"the Copilot CLI is missing and could not be installed: {exc}")


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer([]) as scripted:
        yield scripted


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
async def make_session(
    copilot_cli: Path, server: ScriptedModelServer, tmp_path: Path, workdir: Path
) -> AsyncIterator[Callable[..., Session]]:
    home = tmp_path / "home"
    home.mkdir()
    made: list[Session] = []

    def make(**overrides: Any) -> Session:
        options = {"cwd": workdir, "store": False, **COPILOT.session_options(server, home)}
        session = Session("copilot", **{**options, **overrides})
        made.append(session)
        return session

    yield make
    for session in made:
        if not session.is_finished:
            await session.close()


async def _turn(
    session: Session, prompt: str, answer: Callable[[Event], Any] | None = None
) -> list[Event]:
    events = []
    async for event in session.stream(prompt):
        events.append(event)
        if answer is not None and isinstance(event, PermissionRequest | Question):
            answer(event)
    return events


def _of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def _tool_messages(server: ScriptedModelServer) -> list[str]:
    """What the model was told about each tool call, in the order it was told."""
    seen: list[str] = []
    for request in server.requests:
        for message in request.body.get("messages", []):
            if message.get("role") == "tool" and message["content"] not in seen:
                seen.append(message["content"])
    return seen


# -- finding the CLI (no CLI runs) ---------------------------------------------------------


def _fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    path.chmod(0o755)
    return path


def test_cli_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cli_path > COPILOT_CLI_PATH > our install folder > an npm install behind PATH."""
    package = _platform_packages()[0]
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("COPILOT_CLI_PATH", raising=False)
    global_npm = tmp_path / "npm" / "lib" / "node_modules" / "@github"
    _fake_binary(global_npm / "copilot" / "npm-loader.js")
    on_path = _fake_binary(global_npm / package / "copilot")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "copilot").symlink_to(global_npm / "copilot" / "npm-loader.js")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert find_copilot_cli(None, {}) == on_path, "the native binary behind npm's bin link"

    ours = tmp_path / "data" / "agentkernel" / "cli" / "node_modules" / "@github" / package
    installed = _fake_binary(ours / "copilot")
    assert find_copilot_cli(None, {}) == installed

    from_env = _fake_binary(tmp_path / "env" / "copilot")
    monkeypatch.setenv("COPILOT_CLI_PATH", str(tmp_path / "wrong"))
    assert find_copilot_cli(None, {"COPILOT_CLI_PATH": str(from_env)}) == from_env
    explicit = _fake_binary(tmp_path / "explicit" / "copilot")
    assert find_copilot_cli(explicit, {"COPILOT_CLI_PATH": str(from_env)}) == explicit


async def test_missing_cli_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("COPILOT_CLI_PATH", raising=False)
    session = Session("copilot", model="gpt-4.1", store=False)
    with pytest.raises(TurnFailedError) as failure:
        await session.send("hello")
    errors = _of(failure.value.record.events, Error)
    assert [e.kind for e in errors] == ["cli_missing"]
    assert f"`{INSTALL_COMMAND}`" in errors[0].message
    given = Session(
        "copilot", store=False, backend_options={"cli_path": str(tmp_path / "no-copilot")}
    )
    with pytest.raises(TurnFailedError, match="no-copilot") as failure:
        await given.send("hello")
    assert INSTALL_COMMAND in str(failure.value)


async def test_byok_provider_without_a_model_is_refused(copilot_cli: Path) -> None:
    session = Session(
        "copilot",
        store=False,
        backend_options={"provider": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    )
    with pytest.raises(TurnFailedError, match="needs a model"):
        await session.send("hello")
    assert not session.pids()


async def test_provider_variables_need_a_whole_token_count(copilot_cli: Path) -> None:
    env = {
        "COPILOT_PROVIDER_BASE_URL": "http://127.0.0.1:9/v1",
        "COPILOT_MODEL": "gpt-4.1",
        "COPILOT_PROVIDER_MAX_PROMPT_TOKENS": "lots",
    }
    session = Session("copilot", store=False, env=env)
    with pytest.raises(TurnFailedError, match="COPILOT_PROVIDER_MAX_PROMPT_TOKENS"):
        await session.send("hello")
    assert not session.pids()


# -- the real CLI --------------------------------------------------------------------------


async def test_the_clis_provider_variables_are_the_provider(
    copilot_cli: Path, server: ScriptedModelServer, tmp_path: Path, workdir: Path
) -> None:
    """No ``provider`` option: the CLI's own COPILOT_PROVIDER_* / COPILOT_MODEL variables (what
    a kernel's environment can carry) reach the model, with no GitHub login."""
    server.add(Reply(match="hello", blocks=[text("Hello from your provider.")]))
    home = tmp_path / "home"
    home.mkdir()
    openai = server.openai_env()
    env = {
        "HOME": str(home),
        "COPILOT_HOME": str(home),
        "COPILOT_OFFLINE": "true",
        "COPILOT_PROVIDER_BASE_URL": openai["OPENAI_BASE_URL"],
        "COPILOT_PROVIDER_API_KEY": openai["OPENAI_API_KEY"],
        "COPILOT_PROVIDER_WIRE_API": "completions",
        "COPILOT_MODEL": "gpt-4.1",
    }
    session = Session("copilot", cwd=workdir, store=False, env=env)
    try:
        record = await session.send("hello")
        assert record.text == "Hello from your provider."
        assert session.model == "gpt-4.1"
        assert server.requests[-1].body["model"] == "gpt-4.1"
    finally:
        await session.close()


async def test_edits_show_their_diff_and_denials_reach_the_model(
    make_session: Callable[..., Session], server: ScriptedModelServer, workdir: Path
) -> None:
    notes = workdir / "notes.txt"
    notes.write_text("alpha\nbeta\n")
    server.add(
        Reply(match="edit it", blocks=[tool_use("edit", _edit(notes, "beta", "BETA"))]),
        Reply(match="edit again", blocks=[tool_use("edit", _edit(notes, "alpha", "ALPHA"))]),
        Reply(match="remove it", blocks=[COPILOT.shell(f"rm {notes}")]),
        Reply(match="tool_result", blocks=[text("Done.")], times=0),
    )
    session = make_session()

    allowed = await _turn(session, "edit it", lambda request: request.allow())
    [request] = _of(allowed, PermissionRequest)
    assert (request.kind, request.title, request.locations) == (
        "edit",
        f"Edit {notes}",
        (str(notes),),
    )
    assert "-beta" in request.diff and "+BETA" in request.diff, request.diff
    assert notes.read_text() == "alpha\nBETA\n"
    [change] = _of(allowed, FileChange)
    assert change.path == str(notes) and "+BETA" in change.diff

    denied = await _turn(session, "edit again", lambda request: request.deny("keep alpha"))
    assert _of(denied, PermissionRequest) and not _of(denied, FileChange)
    assert notes.read_text() == "alpha\nBETA\n", "a denied edit was applied"
    await _turn(session, "remove it", lambda request: request.deny("the notes stay"))
    assert notes.exists(), "a denied command ran"
    told = _tool_messages(server)
    assert any("keep alpha" in m for m in told[1:]), told
    assert any("the notes stay" in m for m in told[2:]), told


async def test_tools_the_cli_runs_unasked_are_decided_too(
    make_session: Callable[..., Session], server: ScriptedModelServer, workdir: Path
) -> None:
    """sql, which the CLI would run without asking, is decided by our policy: its own todo
    table is planning (allowed as ``think``, shown as a plan); reaching another file is not."""
    todo = "INSERT INTO todos (id, title, status) VALUES ('t1', 'Write the tests', 'pending')"
    outside = workdir / "outside.db"
    server.add(
        Reply(match="plan it", blocks=[tool_use("sql", {"description": "plan", "query": todo})]),
        Reply(
            match="attach it",
            blocks=[
                tool_use(
                    "sql",
                    {"description": "x", "query": f"ATTACH DATABASE '{outside}' AS x"},
                )
            ],
        ),
        Reply(match="tool_result", blocks=[text("Done.")], times=0),
    )
    session = make_session()
    planned = await session.send("plan it")
    decided = _of(planned.events, PermissionDecided)
    assert [(d.tool_name, d.behavior, d.by) for d in decided] == [("sql", "allow", "policy")]
    plans = _of(planned.events, PlanUpdate)
    assert plans and plans[-1].items == [{"content": "Write the tests", "status": "pending"}]

    attached = await session.send("attach it")
    decided = _of(attached.events, PermissionDecided)
    assert [(d.tool_name, d.behavior) for d in decided] == [("sql", "deny")]
    assert not outside.exists(), "a denied sql statement reached another file"


async def test_questions_and_thinking(
    make_session: Callable[..., Session], server: ScriptedModelServer
) -> None:
    ask = {"question": "Which colour?", "choices": ["red", "blue"]}
    server.add(
        Reply(match="ask me", blocks=[tool_use("ask_user", ask)]),
        Reply(match="tool_result", blocks=[text("Blue it is.")]),
        Reply(match="think", blocks=[thinking("Weighing it up."), text("Decided.")]),
    )
    session = make_session()
    asked = await _turn(session, "ask me", lambda question: question.answer("blue"))
    [question] = _of(asked, Question)
    assert question.questions[0]["question"] == "Which colour?"
    assert [o["label"] for o in question.questions[0]["options"]] == ["red", "blue"]
    assert question.tool_use_id, "the question names its ask_user call"
    assert not _of(asked, PermissionRequest), "a question is not also a permission request"
    assert "User selected: blue" in _tool_messages(server)

    thought = await _turn(session, "think")
    assert "".join(d.text for d in _of(thought, ThinkingDelta)) == "Weighing it up."
    assert [t.text for t in _of(thought, Thinking)] == ["Weighing it up."]
    usage = _of(thought, UsageUpdate)
    assert usage and usage[-1].usage.output_tokens > 0
    [ended] = _of(thought, TurnEnded)
    assert ended.usage == usage[-1].usage and ended.model_calls == 1


async def test_kill_takes_the_cli_shells_with_it(
    make_session: Callable[..., Session], server: ScriptedModelServer
) -> None:
    """A background shell is the CLI's child: kill() ends the CLI's whole process group, so
    nothing the agent started outlives the session."""
    sleeper = tool_use("bash", {"command": "sleep 300", "description": "wait", "mode": "async"})
    server.add(
        Reply(match="start it", blocks=[sleeper]),
        Reply(match="tool_result", blocks=[text("Started.")]),
    )
    session = make_session()
    shells: list[int] = []

    def on_event(event: Event) -> None:
        if isinstance(event, PermissionRequest):
            event.allow()
        if isinstance(event, ToolResult) and not shells:
            shells.extend(p.pid for p in _descendants() if "sleep" in _cmdline(p))
            session.kill()

    events = []
    async for event in session.stream("start it"):
        events.append(event)
        on_event(event)
    assert shells, "the background shell was not running"
    assert _ended_in_error(events)
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) and _alive(p) for p in shells):
        assert time.monotonic() < deadline, "the agent's shell outlived the killed CLI"
        time.sleep(0.05)
    assert not session.pids()


async def test_shell_output_streams_as_other_events(
    make_session: Callable[..., Session], server: ScriptedModelServer
) -> None:
    server.add(
        Reply(match="print it", blocks=[COPILOT.shell("echo copilot-live-output")]),
        Reply(match="tool_result", blocks=[text("Printed.")]),
    )
    events = await _turn(make_session(), "print it", lambda request: request.allow())
    live = [e.data for e in _of(events, Other) if e.kind == "shell_output"]
    assert any("copilot-live-output" in chunk["text"] for chunk in live), live
    [result] = _of(events, ToolResult)
    assert "copilot-live-output" in result.output


def _edit(path: Path, old: str, new: str) -> dict[str, str]:
    return {"path": str(path), "old_str": old, "new_str": new}


def _descendants() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ended_in_error(events: list[Event]) -> bool:
    ends = _of(events, TurnEnded)
    return len(ends) == 1 and ends[0].stop_reason in ("error", "interrupted")
