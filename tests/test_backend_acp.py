"""The ACP backend's own behaviour; the shared contract is in the conformance suite.

The agent is the real claude-agent-acp (Claude Code behind ACP) against the scripted model.
No agent that runs offline here calls the client's ``fs/*`` and ``terminal/*`` methods (Claude
Code and Copilot use their own tools), so those are exercised by calling the client half of a
connected backend exactly as the library does when such a request arrives: same handler, same
`acp.RequestError` that becomes the agent's JSON-RPC error answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import acp
import pytest
from acp import schema

from agentkernel import Session, _runtime
from agentkernel.backends._acp_agents import AgentConfigError, describe_agents, load_agents
from agentkernel.backends.acp import AcpBackend, find_program, pick_option
from agentkernel.errors import TurnFailedError
from agentkernel.events import (
    Decision,
    FileChange,
    PermissionRequest,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolResult,
)
from agentkernel.testing import Reply, ScriptedModelServer, text, thinking, tool_use
from agentkernel.testing.backend_conformance import ACP_COPILOT

from .conftest import wait_until_gone

AGENT = find_program("claude-agent-acp", os.environ)
needs_agent = pytest.mark.skipif(
    AGENT is None,
    reason="claude-agent-acp is not on PATH: npm install -g @agentclientprotocol/claude-agent-acp",
)


@pytest.fixture
def acp_session(make_session: Callable[..., Session]) -> Callable[..., Session]:
    """Sessions on the ACP backend running claude-agent-acp (closed and checked by
    `make_session`)."""

    def make(**options: Any) -> Session:
        options.setdefault("backend_options", {"agent": "claude"})
        return make_session(backend="acp", **options)

    return make


async def _connected_client(session: Session) -> tuple[Any, str | None]:
    """Connect `session`; the client half of its ACP backend (what the agent's requests
    reach) and the agent's session id (what those requests name)."""
    await session.connect()
    backend = session._core.backend
    assert isinstance(backend, AcpBackend)
    return backend._client, session.backend_session_id


def _on_agent_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a client handler where the library runs it: on the session's own loop."""
    return _runtime.call(coro)


async def _refused(coro: Coroutine[Any, Any, Any]) -> acp.RequestError:
    with pytest.raises(acp.RequestError) as refused:
        await _on_agent_loop(coro)
    return refused.value


# -- events from a real agent ---------------------------------------------------------------


@needs_agent
async def test_tool_calls_carry_kind_title_diff_and_locations(
    acp_session: Callable[..., Session], server: ScriptedModelServer, workspace: Path
) -> None:
    notes = workspace / "notes.txt"
    notes.write_text("old line\n")
    marker = workspace / "denied.txt"
    server.add(
        # Claude Code edits only files it has read.
        Reply(
            match="edit the notes",
            blocks=[tool_use("Read", {"file_path": str(notes)})],
            times=0,  # the adapter's title request quotes the prompt: it must not use this up
        ),
        Reply(
            match="tool_result",
            blocks=[
                tool_use(
                    "Edit",
                    {"file_path": str(notes), "old_string": "old line", "new_string": "new line"},
                )
            ],
        ),
        Reply(match="tool_result", blocks=[text("Edited.")]),
        Reply(match="run it", blocks=[tool_use("Bash", {"command": f"touch {marker}"})], times=0),
        Reply(match="tool_result", blocks=[text("It was refused.")]),
        Reply(match="think first", blocks=[thinking("Let me think."), text("Thought.")], times=0),
    )
    session = acp_session(
        permission_handler=lambda request: (
            Decision("deny", reason="not that one")
            if request.kind == "execute"
            else Decision("allow")
        )
    )

    edit = await session.send("edit the notes")
    assert notes.read_text() == "new line\n"
    calls = [e for e in edit.events if isinstance(e, ToolCall)]
    assert [c.kind for c in calls] == ["read", "edit"], "one ToolCall per call, once known"
    call = calls[1]
    assert "notes.txt" in call.title and str(notes) in calls[0].locations
    assert str(notes) in call.locations
    assert call.diff and "-old line" in call.diff and "+new line" in call.diff
    assert call.input["new_string"] == "new line"
    request = [e for e in edit.events if isinstance(e, PermissionRequest)][-1]
    assert (request.kind, request.title, request.diff) == (call.kind, call.title, call.diff)
    assert request.tool_use_id == call.tool_use_id
    (change,) = [e for e in edit.events if isinstance(e, FileChange)]
    assert change.path == str(notes) and "+new line" in change.diff
    assert [r.is_error for r in edit.events if isinstance(r, ToolResult)] == [False, False]

    shell = await session.send("run it")
    (call,) = [e for e in shell.events if isinstance(e, ToolCall)]
    assert call.kind == "execute" and call.command == f"touch {marker}"
    (request,) = [e for e in shell.events if isinstance(e, PermissionRequest)]
    assert request.command == f"touch {marker}"
    assert not marker.exists(), "a rejected command ran"
    assert [r.is_error for r in shell.events if isinstance(r, ToolResult)] == [True]

    thought = await session.send("think first")
    kinds = [type(e) for e in thought.events if isinstance(e, ThinkingDelta | Thinking | Text)]
    assert kinds[-2:] == [Thinking, Text] and ThinkingDelta in kinds
    assert thought.text == "Thought."


def test_permission_options_are_chosen_by_kind() -> None:
    """Our decision picks the agent's option by its ``kind`` (ids are the agent's own), and
    never grants more than one call: "always" stays the session policy's rule."""
    offered = [
        schema.PermissionOption(option_id="yes-forever", name="Always", kind="allow_always"),
        schema.PermissionOption(option_id="yes", name="Allow", kind="allow_once"),
        schema.PermissionOption(option_id="no", name="Reject", kind="reject_once"),
        schema.PermissionOption(option_id="never", name="Never", kind="reject_always"),
    ]

    def chosen(decision: Decision, options: list[schema.PermissionOption] = offered) -> Any:
        option = pick_option(options, decision)
        return option.option_id if option else None

    assert chosen(Decision("allow")) == "yes"
    assert chosen(Decision("allow", always=True)) == "yes"
    assert chosen(Decision("deny")) == "no"
    assert chosen(Decision("deny"), [offered[0], offered[3]]) == "never"
    assert chosen(Decision("allow"), [offered[0], offered[2]]) is None, "once is not always"


# -- the client half: files and terminals ---------------------------------------------------


@needs_agent
async def test_client_files_stay_inside_the_working_directory(
    acp_session: Callable[..., Session], workspace: Path, tmp_path: Path
) -> None:
    session = acp_session(permission_mode="allow-all")
    client, sid = await _connected_client(session)

    await _on_agent_loop(client.write_text_file(sid, str(workspace / "sub/new.txt"), "a\nb\nc\n"))
    assert (workspace / "sub/new.txt").read_text() == "a\nb\nc\n"
    read = await _on_agent_loop(client.read_text_file(sid, str(workspace / "sub/new.txt"), 2, 1))
    assert read.content == "b\n"

    outside = tmp_path / "outside.txt"
    (workspace / "escape").symlink_to(tmp_path)
    for path in (str(outside), str(workspace / ".." / "outside.txt"), "escape/outside.txt"):
        error = await _refused(client.write_text_file(sid, path, "x"))
        assert error.code == -32602 and str(workspace) in str(error), error
    assert not outside.exists()
    outside.write_text("secret")
    error = await _refused(client.read_text_file(sid, str(outside)))
    assert "working directory" in str(error)
    missing = await _refused(client.read_text_file(sid, str(workspace / "missing.txt")))
    assert missing.code == -32002


@needs_agent
async def test_a_write_nobody_allowed_is_refused_with_the_reason(
    acp_session: Callable[..., Session], workspace: Path
) -> None:
    """Nothing can ask a person here (no handler, no turn): the policy denies, and the agent
    receives that denial's reason as the error message of its request."""
    session = acp_session(permission_mode="allow-reads")
    client, sid = await _connected_client(session)
    target = workspace / "kept-out.txt"

    error = await _refused(client.write_text_file(sid, str(target), "nope"))
    wire = error.to_error_obj()  # what the library sends back to the agent
    assert wire["code"] == -32001
    assert "was not allowed" in wire["message"] and "allow-reads" in wire["message"]
    assert wire["data"]["reason"] in wire["message"]
    assert not target.exists()
    refused = await _refused(client.create_terminal(sid, "touch", [str(target)]))
    assert "was not allowed" in str(refused) and not target.exists()

    (workspace / "readable.txt").write_text("fine\n")
    read = await _on_agent_loop(client.read_text_file(sid, str(workspace / "readable.txt")))
    assert read.content == "fine\n", "allow-reads allows a read"


@needs_agent
async def test_terminals_run_in_the_working_directory_and_end_with_the_session(
    acp_session: Callable[..., Session], workspace: Path, tmp_path: Path
) -> None:
    session = acp_session(permission_mode="allow-all")
    client, sid = await _connected_client(session)

    made = await _on_agent_loop(client.create_terminal(sid, "sh", ["-c", "pwd; echo hi"]))
    exited = await _on_agent_loop(client.wait_for_terminal_exit(sid, made.terminal_id))
    assert exited.exit_code == 0
    output = await _on_agent_loop(client.terminal_output(sid, made.terminal_id))
    assert output.output == f"{workspace}\nhi\n" and not output.truncated
    await _on_agent_loop(client.release_terminal(sid, made.terminal_id))

    error = await _refused(client.create_terminal(sid, "pwd", cwd=str(tmp_path)))
    assert error.code == -32602

    long = await _on_agent_loop(client.create_terminal(sid, "sleep 30"))
    sleeper = [pid for pid in session.pids() if pid not in _agent_pids(session)]
    assert len(sleeper) == 1, "a running terminal is one of the session's processes"
    killed = await _on_agent_loop(client.kill_terminal(sid, long.terminal_id))
    assert killed is not None
    status = await _on_agent_loop(client.wait_for_terminal_exit(sid, long.terminal_id))
    assert status.signal == "SIGKILL"

    await _on_agent_loop(client.create_terminal(sid, "sleep 30"))
    left = [pid for pid in session.pids() if pid not in _agent_pids(session)]
    await session.close()
    assert wait_until_gone(left) == [], "a terminal outlived its session"


def _agent_pids(session: Session) -> list[int]:
    backend = session._core.backend
    assert isinstance(backend, AcpBackend) and backend._process is not None
    return [backend._process.pid]


# -- startup failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "says"),
    [
        ("false", "exited during startup (exit code 1)"),
        ("sh -c 'echo no credentials here >&2; exit 3'", "no credentials here"),
        ("sleep 60", "did not answer initialize"),
        ("sh -c 'echo this is not JSON-RPC; sleep 60'", "did not answer initialize"),
    ],
    ids=["exits", "exits-with-stderr", "hangs", "malformed"],
)
async def test_a_broken_agent_fails_fast_and_clearly(
    make_session: Callable[..., Session], agent: str, says: str
) -> None:
    session = make_session(backend="acp", backend_options={"agent": agent, "startup_timeout": 1})
    with pytest.raises(TurnFailedError) as failed:
        await session.send("hello")
    assert says in str(failed.value), failed.value
    assert session.pids() == []


async def test_a_preset_that_is_not_installed_names_its_install_command(
    make_session: Callable[..., Session], tmp_path: Path
) -> None:
    session = make_session(
        backend="acp", backend_options={"agent": "gemini"}, env={"PATH": str(tmp_path)}
    )
    with pytest.raises(TurnFailedError) as failed:
        await session.send("hello")
    kinds = [e.kind for e in failed.value.record.events if e.type == "error"]
    assert kinds == ["cli_missing"]
    assert "npm install -g @google/gemini-cli" in str(failed.value)


def test_presets_are_found_where_install_cli_puts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    npm_bin = tmp_path / "agentkernel" / "cli" / "node_modules" / ".bin"
    npm_bin.mkdir(parents=True)
    program = npm_bin / "gemini"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert find_program("gemini", {"PATH": str(tmp_path / "empty")}) == str(program)
    rows = {row["name"]: row for row in describe_agents({"PATH": "", "XDG_CONFIG_HOME": ""})}
    assert rows["gemini"]["installed"] == str(program)
    assert rows["codex"]["installed"] is None
    assert rows["codex"]["install"] == "npm install -g @zed-industries/codex-acp"


@needs_agent
async def test_loading_an_unknown_session_is_a_clear_error(
    acp_session: Callable[..., Session],
) -> None:
    session = acp_session(resume="00000000-0000-0000-0000-000000000000")
    with pytest.raises(TurnFailedError) as failed:
        await session.send("hello")
    assert "refused to start a session" in str(failed.value), failed.value
    assert str(AGENT) in str(failed.value), "the error names the agent"


# -- the agents file ----------------------------------------------------------------------------


def _agents_file(tmp_path: Path, body: str) -> dict[str, str]:
    path = tmp_path / "agentkernel" / "agents.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return {"XDG_CONFIG_HOME": str(tmp_path), "PATH": os.environ["PATH"]}


def test_the_agents_file_adds_agents_and_changes_presets(tmp_path: Path) -> None:
    env = _agents_file(
        tmp_path,
        """
[agents.mine]
command = "sh"
args = ["-c", "exec my-agent --acp"]
env = { MY_AGENT_MODE = "strict" }
install = "pipx install my-agent"

[agents.copilot]
command = "/opt/copilot/bin/copilot"
env = { COPILOT_MODEL = "gpt-4.1" }
""",
    )
    agents = load_agents(env)
    assert agents["mine"].command == ("sh", "-c", "exec my-agent --acp")
    assert agents["mine"].env == {"MY_AGENT_MODE": "strict"}
    copilot = agents["copilot"]
    assert copilot.command == ("/opt/copilot/bin/copilot", "--acp"), "the preset's args stay"
    assert copilot.env == {"COPILOT_MODEL": "gpt-4.1"}
    assert copilot.mcp_tool_title == "{server}-{tool}", "what the preset knows stays"
    assert agents["gemini"].source == "preset"
    rows = {row["name"]: row for row in describe_agents(env)}
    assert rows["mine"]["installed"] == find_program("sh", env)
    assert rows["copilot"]["installed"] is None, "/opt/copilot/bin/copilot does not exist"
    assert rows["copilot"]["source"].startswith("preset, changed in ")

    named = tmp_path / "elsewhere.toml"
    named.write_text('[agents.other]\ncommand = "other-agent"\n')
    assert "other" in load_agents({"AGENTKERNEL_AGENTS": str(named)})
    with pytest.raises(AgentConfigError, match="does not exist"):
        load_agents({"AGENTKERNEL_AGENTS": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("[agents.x\ncommand = 1", "is not valid TOML"),
        ("[agent.x]\ncommand = 'x'", "unknown top-level key(s) agent"),
        ("[agents.x]\nargs = ['--acp']", "[agents.x] needs a command"),
        ("[agents.x]\ncommand = 'x'\nargv = ['a']", "unknown key 'argv'"),
        ("[agents.x]\ncommand = ['x', 'y']", "command must be a str"),
        ("[agents.x]\ncommand = 'x'\nenv = { N = 1 }", "env values must be strings"),
        ("[agents.copilot]\nargs = [1]", "args must be a list of strings"),
    ],
    ids=["toml", "top-level", "no-command", "unknown-key", "command-type", "env", "args"],
)
def test_a_malformed_agents_file_names_the_file_and_the_problem(
    tmp_path: Path, body: str, says: str
) -> None:
    env = _agents_file(tmp_path, body)
    with pytest.raises(AgentConfigError) as failed:
        load_agents(env)
    assert str(tmp_path / "agentkernel" / "agents.toml") in str(failed.value)
    assert says in str(failed.value), failed.value


async def test_an_agent_from_the_agents_file_runs_with_its_env(
    make_session: Callable[..., Session],
    server: ScriptedModelServer,
    copilot_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A name the user defined runs that command, with the file's env: here Copilot under
    another name, pointed at the scripted model only by the file."""
    copilot = find_program("copilot", os.environ)
    if copilot is None:
        pytest.skip("copilot is not installed: python -m agentkernel install-cli copilot")
    table = ", ".join(f"{k} = {json.dumps(v)}" for k, v in copilot_env.items())
    env = _agents_file(
        tmp_path,
        f'[agents.pilot]\ncommand = {json.dumps(copilot)}\nargs = ["--acp"]\nenv = {{ {table} }}\n',
    )
    server.add(Reply(match="hello", blocks=[text("Hi from the file.")], times=0))
    session = make_session(backend="acp", env=env, backend_options={"agent": "pilot"})
    assert (await session.send("hello")).text == "Hi from the file."

    broken = _agents_file(tmp_path, "[agents.pilot]\nargs = 3\n")
    session = make_session(backend="acp", env=broken, backend_options={"agent": "pilot"})
    with pytest.raises(TurnFailedError) as failed:
        await session.send("hello")
    assert "agents.toml" in str(failed.value) and "args must be a list" in str(failed.value)


async def test_copilot_answering_error_colon_is_an_answer_not_a_failure(
    make_session: Callable[..., Session], server: ScriptedModelServer, tmp_path: Path
) -> None:
    """Copilot reports a failed model request as an ``Error: ...`` message; a model whose
    answer merely begins so (the request succeeded: the answer has usage) is not a failure."""
    if find_program("copilot", os.environ) is None:
        pytest.skip("copilot is not installed: python -m agentkernel install-cli copilot")
    answer = "Error: the file has no header row, so I stopped."
    server.add(Reply(match="check the file", blocks=[text(answer)], times=0))
    session = make_session(backend="acp", **ACP_COPILOT.session_options(server, tmp_path))
    record = await session.send("check the file")
    assert record.text == answer and record.status == "completed"


async def test_copilot_reports_retries_and_a_dead_model_as_errors_not_as_text(
    make_session: Callable[..., Session], server: ScriptedModelServer, tmp_path: Path
) -> None:
    """Copilot says "Info: ... Retrying..." and then "Error: ..." as messages when its model
    cannot be reached: they are a retry and the turn's failure, and none of it is answer."""
    if find_program("copilot", os.environ) is None:
        pytest.skip("copilot is not installed: python -m agentkernel install-cli copilot")
    options = ACP_COPILOT.session_options(server, tmp_path)
    server.stop()
    session = make_session(backend="acp", **options)
    with pytest.raises(TurnFailedError) as failed:
        await session.send("hello")
    events = failed.value.record.events
    errors = [e for e in events if e.type == "error"]
    assert [e.kind for e in errors][-1] == "api_error"
    assert "Could not connect" in errors[-1].message
    assert "retrying" in [e.kind for e in errors], "Copilot retries before it gives up"
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta | Text))
    assert streamed == "", f"the agent's own notices are not answer text: {streamed!r}"


def test_the_readme_agents_file_example_is_a_valid_agents_file(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### ACP") :]
    example = section[section.index("```toml\n") + 8 :]
    example = example[: example.index("```")]
    agents = load_agents(_agents_file(tmp_path, example))
    assert agents["mine"].command == ("my-agent", "--acp")
    assert agents["copilot"].command == ("/opt/copilot/bin/copilot", "--acp")
