"""GitHub Copilot, through the official `github-copilot-sdk` and the Copilot CLI from npm.

One `CopilotClient` (one CLI process) and one `CopilotSession` per backend. The SDK is asyncio
native and dispatches the CLI's session events on the loop that started it, so there is no
owner task as for Claude: every method runs on the session's owner loop, and the event handler
given at session creation (a handler added later misses ``session.start``) translates each event
as it arrives.

Permissions: the CLI asks (``permission.requested``) before the tools it guards itself (shell,
file reads, writes and searches); a pre-tool-use hook makes it ask before every other tool too,
so every call reaches `BackendHost.decide`. The CLI is only ever told "approve once" or
"reject": "always allow" is remembered by our policy, so later calls are still decided by us.

A turn runs from ``session.send`` to ``session.idle``. The CLI goes idle only once no background
shell or sub-agent it started is still running, so a turn includes that work.

The SDK would download a CLI at first use (which fails offline): the path is always ours, from
`agentkernel._cli_install`, and runs through a launcher that ties the CLI to our life.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

try:
    import copilot as sdk
    from copilot import rpc as sdk_rpc
    from copilot import session_events as sdk_events
    from copilot import tools as sdk_tools
except ImportError as exc:  # github-copilot-sdk needs Python >= 3.11
    raise ImportError(
        f"the Copilot backend needs github-copilot-sdk (Python >= 3.11): {exc}"
    ) from exc

from .._cli_install import find_copilot_cli
from ..events import (
    Error,
    ErrorKind,
    FileChange,
    Other,
    PermissionRequest,
    PlanUpdate,
    Question,
    SessionStarted,
    StopReason,
    Text,
    Thinking,
    ToolCall,
    ToolKind,
    ToolResult,
    TurnEnded,
    Usage,
    UsageUpdate,
    text_delta,
    thinking_delta,
)
from ..tools import Tool
from . import BackendConfig, BackendHost, CloseResult, Prompt, _launcher

_T = sdk_events.SessionEventType

_CLI_GATED_TOOLS = frozenset({"bash", "view", "create", "edit", "grep", "glob"})
"""Tools the CLI asks permission for itself, with richer detail (a diff, the parsed command)
than a hook request has. Every other tool is made to ask by the pre-tool-use hook."""

_TOOL_KINDS: dict[str, ToolKind] = {
    "bash": "execute",
    "write_bash": "execute",
    "stop_bash": "execute",
    "read_bash": "read",
    "list_bash": "read",
    "view": "read",
    "skill": "read",
    "create": "edit",
    "edit": "edit",
    "grep": "search",
    "glob": "search",
    "web_fetch": "fetch",
    "web_search": "fetch",
    "read_agent": "think",
    "list_agents": "think",
}

_SQL_FILE_ACCESS = re.compile(r"\b(attach|vacuum|load_extension|readfile|writefile)\b", re.I)
"""SQLite statements that reach files outside the session's own database."""

_SILENT = frozenset(
    {
        _T.USER_MESSAGE,  # our TurnStarted carries the prompt
        _T.SYSTEM_MESSAGE,  # the whole system prompt (~40 KB), again on every turn
        _T.ASSISTANT_TURN_START,
        _T.ASSISTANT_TURN_END,
        _T.HOOK_START,  # our own pre-tool-use hook at work
        _T.HOOK_END,
        _T.PERMISSION_REQUESTED,  # reach us through the permission handler
        _T.PERMISSION_COMPLETED,
        _T.USER_INPUT_REQUESTED,  # reach us through the user-input handler
        _T.USER_INPUT_COMPLETED,
        _T.EXTERNAL_TOOL_REQUESTED,  # our Python tools: their tool.execution_* events say it
        _T.EXTERNAL_TOOL_COMPLETED,
    }
)
"""Non-ephemeral events we drop on purpose. Ephemeral events (the CLI's own telemetry, which
it does not keep in the session history either) are dropped unless mapped."""

_STATUS_KINDS: dict[int, ErrorKind] = {
    400: "invalid_request",
    401: "auth",
    403: "auth",
    404: "invalid_request",
    429: "rate_limit",
    503: "overloaded",
    529: "overloaded",
}
_FINISH_REASONS: dict[str, StopReason] = {"length": "max_tokens", "content_filter": "refusal"}
_RESERVED_OPTIONS = frozenset(
    {"on_permission_request", "on_user_input_request", "on_event", "hooks", "streaming"}
)
_CLOSE_TIMEOUT_S = 10.0
_POLL_S = 0.25


@dataclass
class _Turn:
    """What one turn has gathered so far; `CopilotBackend.run_turn` ends it with TurnEnded."""

    done: asyncio.Future[None]
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    model_calls: int = 0
    finish_reason: str = ""
    aborted: str = ""
    error: str = ""
    text: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class CopilotBackend:
    """GitHub Copilot over `CopilotClient` / `CopilotSession`.

    ``backend_options``: ``cli_path`` (a native ``copilot`` binary), ``provider`` (BYOK: an
    OpenAI-compatible or Anthropic endpoint, e.g. ``{"type": "openai", "base_url": ...,
    "api_key": ..., "wire_api": "completions"}``), and any other keyword of the SDK's
    ``create_session`` (``system_message``, ``available_tools``, ``mcp_servers``...).
    """

    name: ClassVar[str] = "copilot"

    def __init__(self) -> None:
        self.backend_session_id: str | None = None
        self.workspace: Path | None = None
        """The session's infinite-session workspace (checkpoints, plan.md, files)."""
        self._host: BackendHost | None = None
        self._client: sdk.CopilotClient | None = None
        self._session: sdk.CopilotSession | None = None
        self._process: Any = None
        self._rpc_client: Any = None
        self._cwd: str = os.getcwd()
        self._turn: _Turn | None = None
        self._interrupted = False
        self._closing = False
        self._started: asyncio.Future[None] | None = None
        self._tools: dict[str, tuple[str, dict[str, Any]]] = {}
        self._python_tools: dict[str, Tool] = {}
        self._asking: str | None = None
        self._last_failure: tuple[str, str] = ("", "")
        self._handlers = {
            _T.SESSION_START: self._on_start,
            _T.SESSION_RESUME: self._on_start,
            _T.ASSISTANT_MESSAGE_DELTA: self._on_text_delta,
            _T.ASSISTANT_MESSAGE: self._on_message,
            _T.ASSISTANT_REASONING_DELTA: self._on_reasoning_delta,
            _T.ASSISTANT_REASONING: self._on_reasoning,
            _T.ASSISTANT_USAGE: self._on_usage,
            _T.TOOL_EXECUTION_START: self._on_tool_start,
            _T.TOOL_EXECUTION_PROGRESS: self._on_tool_progress,
            _T.TOOL_SHELL_OUTPUT: self._on_shell_output,
            _T.TOOL_EXECUTION_COMPLETE: self._on_tool_complete,
            _T.SESSION_TITLE_CHANGED: self._on_title,
            _T.SESSION_TODOS_CHANGED: self._on_todos,
            _T.MODEL_CALL_FAILURE: self._on_call_failure,
            _T.ASSISTANT_TURN_RETRY: self._on_retry,
            _T.SESSION_ERROR: self._on_error,
            _T.ABORT: self._on_abort,
            _T.SESSION_IDLE: self._on_idle,
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self, config: BackendConfig, host: BackendHost) -> None:
        self._host = host
        self._cwd = config.cwd or os.getcwd()
        self._python_tools = {t.name: t for t in config.tools}
        extra = dict(config.options)
        cli = find_copilot_cli(extra.pop("cli_path", None), config.env)
        provider = extra.pop("provider", None)
        if provider is None:
            provider, model = _env_provider({**os.environ, **config.env})
            if provider and not config.model:
                config = dataclasses.replace(config, model=model)
        reserved = _RESERVED_OPTIONS & extra.keys()
        if reserved:
            raise ValueError(
                f"backend option(s) {', '.join(sorted(reserved))} are managed by agentkernel's "
                "Copilot backend (events and approvals go through the Session)"
            )
        if provider and not config.model:
            raise ValueError(
                "a BYOK provider needs a model: pass model=... (the name the provider serves), "
                "or set COPILOT_MODEL"
            )
        client = sdk.CopilotClient(
            connection=sdk.RuntimeConnection.for_stdio(path=_launcher.script(cli, "copilot")),
            env=_cli_env(config, provider),
            working_directory=self._cwd,
        )
        self._client = client
        self._started = asyncio.get_running_loop().create_future()
        try:
            await client.start()
        except Exception as exc:
            self._capture_process(client)
            stderr = self._stderr_tail()
            await self._stop_client(client)
            raise ConnectionError(f"the Copilot CLI {cli} failed to start: {exc}{stderr}") from exc
        self._capture_process(client)
        try:
            self._session = await self._open_session(client, config, provider, extra)
        except TypeError as exc:  # an unknown backend option
            await self._stop_client(client)
            raise ValueError(f"unsupported Copilot backend option: {exc}") from exc
        except Exception as exc:
            await self._stop_client(client)
            action = f"resume session {config.resume}" if config.resume else "start a session"
            raise ConnectionError(
                f"the Copilot CLI could not {action}: {exc}{self._stderr_tail()}"
            ) from exc
        self.backend_session_id = self._session.session_id
        self.workspace = self._session.workspace_path
        # session.start / session.resume is already queued on this loop: SessionStarted is
        # emitted before connect returns, never in the middle of the first turn.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._started, timeout=5)

    async def _open_session(
        self,
        client: sdk.CopilotClient,
        config: BackendConfig,
        provider: dict[str, Any] | None,
        extra: dict[str, Any],
    ) -> sdk.CopilotSession:
        options: dict[str, Any] = {
            "on_permission_request": self._on_permission,
            "on_user_input_request": self._on_user_input,
            "hooks": {"on_pre_tool_use": self._on_pre_tool_use},
            "on_event": self._on_event,
            "model": config.model,
            "reasoning_effort": config.reasoning_effort,
            "working_directory": self._cwd,
            "provider": provider,
            "streaming": True,
            # A sub-agent's deltas would interleave with the answer's text.
            "include_sub_agent_streaming_events": False,
            **extra,
        }
        if config.tools:
            options["tools"] = [*extra.get("tools", []), *(_copilot_tool(t) for t in config.tools)]
        if not config.resume:
            return await client.create_session(**options)
        session_id = config.resume
        if config.fork:
            forked = await client.rpc.sessions.fork(sdk_rpc.SessionsForkRequest(session_id))
            session_id = forked.session_id
        # session.resume (which names no session) may arrive before resume_session returns.
        self.backend_session_id = session_id
        return await client.resume_session(session_id, **options)

    async def run_turn(self, prompt: Prompt) -> None:
        session = self._session
        if session is None or not self.pids():
            raise ConnectionError(f"the Copilot CLI is not running{self._stderr_tail()}")
        assert self._host is not None
        turn = self._turn = _Turn(asyncio.get_running_loop().create_future())
        self._interrupted = False
        self._last_failure = ("", "")
        try:
            await session.send(prompt.text, attachments=_attachments(prompt))
            while not turn.done.done():
                await asyncio.wait({turn.done}, timeout=_POLL_S)
                if not turn.done.done() and not self.pids():
                    raise ConnectionError(
                        f"the Copilot CLI stopped during the turn (exit code "
                        f"{self._exit_code()}){self._stderr_tail()}"
                    )
            if turn.tasks:
                await asyncio.gather(*turn.tasks, return_exceptions=True)
        except Exception as exc:
            if self.pids() or isinstance(exc, ConnectionError):
                raise
            raise ConnectionError(f"the Copilot CLI is gone: {exc}{self._stderr_tail()}") from exc
        finally:
            self._turn = None
        self._host.emit(self._turn_ended(turn))

    async def interrupt(self) -> None:
        if self._session is not None and self._turn is not None:
            self._interrupted = True
            await self._session.abort()

    async def set_model(self, model: str | None) -> None:
        # Copilot has no "back to the default model" mid-session: None keeps the current one.
        if self._session is not None and model:
            await self._session.set_model(model)

    async def close(self) -> CloseResult:
        self._closing = True
        if self._client is not None:
            await self._stop_client(self._client)
        return CloseResult(self._exit_code(), self._stderr_text())

    async def _stop_client(self, client: sdk.CopilotClient) -> None:
        try:
            await asyncio.wait_for(client.stop(), timeout=_CLOSE_TIMEOUT_S)
        except Exception:  # a CLI that will not stop is killed either way
            self.kill()
        self._client = self._session = None

    def kill(self) -> None:
        """SIGKILL the CLI and every process under it (the CLI runs each shell in a session
        of its own, which the supervisor finds and ends too)."""
        self._closing = True
        pid = getattr(self._process, "pid", None)
        if pid is None or self._process.poll() is not None:
            return
        _launcher.kill(pid)
        with contextlib.suppress(Exception):
            self._process.wait(timeout=5)

    def pids(self) -> list[int]:
        process = self._process
        return [process.pid] if process is not None and process.poll() is None else []

    def _capture_process(self, client: sdk.CopilotClient) -> None:
        """The CLI's process and JSON-RPC reader. The SDK exposes neither; we need the pid to
        guarantee cleanup (kill, liveness during a turn) and the reader for the CLI's stderr."""
        self._process = getattr(client, "_cli_process", None) or self._process
        self._rpc_client = getattr(client, "_client", None) or self._rpc_client

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def _stderr_text(self) -> str:
        getter = getattr(self._rpc_client, "get_stderr_output", None)
        return getter() if getter is not None else ""

    def _stderr_tail(self, lines: int = 15) -> str:
        tail = "\n".join(self._stderr_text().splitlines()[-lines:]).strip()
        return f"\nCLI stderr:\n{tail}" if tail else ""

    # -- decisions -------------------------------------------------------------------------

    async def _on_pre_tool_use(self, hook_input: Any, invocation: Any) -> dict[str, Any] | None:
        """Make the CLI ask before the tools it would run unasked (``ask_user`` excepted: it is
        a question, answered through `_on_user_input`)."""
        tool = str(hook_input.get("toolName") or "")
        if tool in _CLI_GATED_TOOLS or tool == "ask_user":
            return None
        return {
            "permissionDecision": "ask",
            "permissionDecisionReason": "agentkernel decides every tool call",
        }

    async def _on_permission(self, request: Any, invocation: Any) -> Any:
        assert self._host is not None
        tool_use_id = getattr(request, "tool_call_id", None)
        name, args = self._tools.get(tool_use_id or "", ("", {}))
        asked = _permission_request(request, name, args, self._cwd)
        ours = self._python_tools.get(asked.tool_name)
        if ours is not None and getattr(request, "kind", "") in ("custom-tool", "hook"):
            asked = dataclasses.replace(asked, **ours.info(asked.input))
        decision = await self._host.decide(asked)
        if not decision.allowed:
            return sdk_rpc.PermissionDecisionReject(feedback=decision.reason or "Denied.")
        if decision.updated_input is not None:
            # The CLI cannot run a changed input: tell the model what the user wants instead.
            return sdk_rpc.PermissionDecisionReject(
                feedback="The user changed this call's input; make the call again with exactly "
                f"this input: {json.dumps(decision.updated_input)}"
            )
        return sdk_rpc.PermissionDecisionApproveOnce(approved_interactively=decision.by == "user")

    async def _on_user_input(self, request: Any, invocation: Any) -> dict[str, Any]:
        assert self._host is not None
        text = str(request.get("question") or "")
        choices = [str(c) for c in request.get("choices") or []]
        decision = await self._host.decide(
            Question(
                request_id=uuid.uuid4().hex,
                questions=[
                    {
                        "question": text,
                        "header": "",
                        "options": [{"label": c, "description": ""} for c in choices],
                        "multi_select": False,
                    }
                ],
                tool_use_id=self._asking,
            )
        )
        if not decision.allowed:
            return {"answer": f"(no answer: {decision.reason})", "wasFreeform": True}
        answers = decision.answers or {}
        answer = answers.get(text) or next(iter(answers.values()), "")
        return {"answer": answer, "wasFreeform": answer not in choices}

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: sdk_events.SessionEvent) -> None:
        if self._closing or self._host is None:
            return
        handler = self._handlers.get(event.type)
        if handler is not None:
            handler(event.data)
        elif not event.ephemeral and event.type not in _SILENT:
            self._host.emit(Other(kind=event.raw_type or event.type.value, data=_data(event)))

    def _emit(self, event: Any) -> None:
        assert self._host is not None
        self._host.emit(event)

    def _on_start(self, data: Any) -> None:
        if self._started is None or self._started.done():
            return
        self._started.set_result(None)
        self.backend_session_id = getattr(data, "session_id", None) or self.backend_session_id
        context = getattr(data, "context", None)
        self._emit(
            SessionStarted(
                backend=self.name,
                backend_session_id=self.backend_session_id,
                model=getattr(data, "selected_model", None),
                cwd=getattr(context, "cwd", None) or self._cwd,
            )
        )

    def _on_text_delta(self, data: Any) -> None:
        if not data.parent_tool_call_id and data.delta_content:
            self._emit(text_delta(data.delta_content))

    def _on_message(self, data: Any) -> None:
        if data.parent_tool_call_id:  # a sub-agent's message: the task tool's result shows it
            return
        if data.content:
            self._emit(Text(text=data.content))
            if self._turn is not None:
                self._turn.text = data.content

    def _on_reasoning_delta(self, data: Any) -> None:
        if data.delta_content:
            self._emit(thinking_delta(data.delta_content))

    def _on_reasoning(self, data: Any) -> None:
        if data.content:
            self._emit(Thinking(text=data.content))

    def _on_usage(self, data: Any) -> None:
        turn = self._turn
        if turn is None:
            return
        # Copilot's (experimental) ``cost`` is no dollar figure: it is reported beside request
        # counts in its own metrics, and is 0 for BYOK. cost_usd stays 0.
        turn.usage = turn.usage + Usage(
            input_tokens=data.input_tokens or 0,
            output_tokens=data.output_tokens or 0,
            cache_read_tokens=data.cache_read_tokens or 0,
            cache_creation_tokens=data.cache_write_tokens or 0,
        )
        turn.model_calls += 1
        turn.finish_reason = data.finish_reason or turn.finish_reason
        self._emit(UsageUpdate(usage=turn.usage))

    def _on_tool_start(self, data: Any) -> None:
        args = data.arguments if isinstance(data.arguments, dict) else {}
        self._tools[data.tool_call_id] = (data.tool_name, args)
        if data.tool_name == "ask_user":
            self._asking = data.tool_call_id
        ours = self._python_tools.get(data.tool_name)
        info = (
            ours.info(args)
            if ours is not None
            else _tool_info(data.tool_name, args, self._cwd, data.tool_title)
        )
        self._emit(ToolCall(tool_use_id=data.tool_call_id, name=data.tool_name, input=args, **info))

    def _on_tool_progress(self, data: Any) -> None:
        self._emit(
            Other(
                kind="tool_progress",
                data={"tool_use_id": data.tool_call_id, "message": data.progress_message},
            )
        )

    def _on_shell_output(self, data: Any) -> None:
        stream = getattr(data.stream, "value", data.stream)
        self._emit(
            Other(
                kind="shell_output",
                data={"tool_use_id": data.tool_call_id, "text": data.text, "stream": stream},
            )
        )

    def _on_tool_complete(self, data: Any) -> None:
        name, _ = self._tools.pop(data.tool_call_id, ("", {}))
        if data.success:
            output = data.result.content if data.result is not None else ""
        else:
            output = data.error.message if data.error is not None else "the tool failed"
        self._emit(
            ToolResult(tool_use_id=data.tool_call_id, output=output, is_error=not data.success)
        )
        detailed = (data.result.detailed_content or "") if data.result is not None else ""
        for edit in data.file_edits or []:
            self._emit(
                FileChange(
                    path=edit.path,
                    diff=_diff_for(detailed, edit.path),
                    tool_use_id=data.tool_call_id,
                )
            )
        if name == "ask_user":
            self._asking = None

    def _on_title(self, data: Any) -> None:
        self._emit(Other(kind="title_changed", data={"title": data.title}))

    def _on_todos(self, data: Any) -> None:
        """The agent wrote its todo table; read it back (the event has no payload). The turn
        waits for the read, so its PlanUpdate comes before TurnEnded."""
        if self._session is None:
            return
        task = asyncio.ensure_future(self._read_todos(self._session))
        if self._turn is not None:
            self._turn.tasks.add(task)

    async def _read_todos(self, session: sdk.CopilotSession) -> None:
        result = await session.rpc.plan.read_sql_todos()
        items = [
            {"content": row.title or row.description or row.id or "", "status": _todo_status(row)}
            for row in result.rows
        ]
        if not self._closing:
            self._emit(PlanUpdate(items=items))

    def _on_call_failure(self, data: Any) -> None:
        kind = getattr(data.failure_kind, "value", data.failure_kind) or ""
        self._last_failure = (str(kind), data.error_message or "")

    def _on_retry(self, data: Any) -> None:
        cause = self._last_failure[1] or data.reason or "the model call failed"
        self._emit(
            Error(
                kind="retrying",
                message=f"the model API failed ({cause}); Copilot retries",
                retryable=True,
                raw_kind=data.reason or "",
            )
        )

    def _on_error(self, data: Any) -> None:
        if self._turn is not None:
            self._turn.error = data.error_type or "error"
        self._emit(
            Error(
                kind=_error_kind(data.status_code, data.error_type, self._last_failure[0]),
                message=data.message,
                retryable=data.status_code in (429, 500, 502, 503, 529),
                raw_kind=str(data.status_code or data.error_type or ""),
            )
        )

    def _on_abort(self, data: Any) -> None:
        if self._turn is not None:
            self._turn.aborted = getattr(data.reason, "value", str(data.reason))

    def _on_idle(self, data: Any) -> None:
        turn = self._turn
        if turn is None or turn.done.done():
            return
        if data.aborted and not turn.aborted:
            turn.aborted = "aborted"
        turn.done.set_result(None)

    def _turn_ended(self, turn: _Turn) -> TurnEnded:
        stop_reason: StopReason
        if turn.aborted or self._interrupted:
            stop_reason, raw = "interrupted", turn.aborted or "interrupted"
        elif turn.error:
            stop_reason, raw = "error", turn.error
        else:
            raw = turn.finish_reason
            stop_reason = _FINISH_REASONS.get(raw, "end_turn")
        return TurnEnded(
            stop_reason=stop_reason,
            raw_stop_reason=raw,
            usage=turn.usage,
            duration_s=time.monotonic() - turn.started,
            model_calls=turn.model_calls,
            result=turn.text,
            is_error=stop_reason == "error",
        )


# -- translation helpers ----------------------------------------------------------------------


def _tool_info(
    name: str, args: dict[str, Any], cwd: str, cli_title: str | None = None
) -> dict[str, Any]:
    """ToolInfo fields (kind, title, locations, command) for a call of Copilot tool `name`."""
    path = str(args.get("path") or "")
    locations = (_absolute(path, cwd),) if path else ()
    command: str | None = None
    if name == "bash":
        command = str(args.get("command") or "")
        title = command
    elif name in ("view", "create", "edit"):
        title = f"{name.capitalize()} {path}"
    elif name in ("grep", "glob"):
        title = f"{name} {args.get('pattern', '')}"
    elif name == "web_fetch":
        title = f"Fetch {args.get('url', '')}"
    elif name == "task":
        title = f"Sub-agent: {args.get('description') or args.get('name') or ''}"
    else:
        title = str(args.get("description") or cli_title or name)
    kind = _TOOL_KINDS.get(name, "other")
    if name == "sql":
        # The session's own SQLite database holds the agent's todos and notes: planning
        # state, like a todo list, unless the statement reaches other files.
        kind = "other" if _SQL_FILE_ACCESS.search(str(args.get("query") or "")) else "think"
    return {"kind": kind, "title": title, "locations": locations, "command": command}


def _copilot_tool(tool: Tool) -> sdk.Tool:
    """A Python tool registered with the CLI as an external tool. The CLI asks permission for
    it (kind "custom-tool"), which our handler decides with the tool's kind; the handler here
    only runs it."""

    async def run(invocation: Any) -> Any:
        arguments = invocation.arguments if isinstance(invocation.arguments, dict) else {}
        output = await tool.invoke(arguments)
        images = [
            sdk_tools.ToolBinaryResult(data=i.base64, mime_type=i.media_type, type="image")
            for i in output.images
        ]
        return sdk_tools.ToolResult(
            text_result_for_llm=output.text,
            result_type="failure" if output.is_error else "success",
            error=output.text if output.is_error else None,
            binary_results_for_llm=images or None,
        )

    return sdk.Tool(
        name=tool.name,
        description=tool.description,
        handler=run,
        parameters=tool.input_schema,
    )


def _permission_request(
    request: Any, tool_name: str, args: dict[str, Any], cwd: str
) -> PermissionRequest:
    """Our PermissionRequest for a CLI permission request; `tool_name` / `args` are the call's
    own, from its tool.execution_start (empty for requests no tool call started)."""
    kind = getattr(request, "kind", "")
    if kind == "hook":
        tool_name = tool_name or request.tool_name
        args = args or (request.tool_args if isinstance(request.tool_args, dict) else {})
    info = _tool_info(tool_name or kind, args, cwd)
    reason = getattr(request, "intention", None)
    if kind == "shell":
        command = request.full_command_text
        info.update(kind="execute", title=command, command=command)
        info["locations"] = tuple(request.possible_paths) or info["locations"]
        reason = "; ".join(x for x in (request.intention, request.warning) if x)
    elif kind == "write":
        verb = "Create" if tool_name == "create" else "Edit"
        info.update(kind="edit", title=f"{verb} {request.file_name}", diff=request.diff.lstrip())
        info["locations"] = (request.file_name,)
    elif kind == "read":
        if info["kind"] not in ("read", "search"):
            info["kind"] = "read"
        info.update(title=request.intention, locations=(request.path,))
    elif kind == "url":
        info.update(kind="fetch", title=f"Fetch {request.url}")
    elif kind in ("mcp", "custom-tool"):
        tool_name = tool_name or request.tool_name
        server = getattr(request, "server_name", "")
        info.update(kind="other", title=f"{server}: {request.tool_name}" if server else tool_name)
        args = args or (request.args if isinstance(request.args, dict) else {})
    elif kind == "memory":
        info.update(kind="other", title=f"Remember: {request.fact}")
    return PermissionRequest(
        request_id=uuid.uuid4().hex,
        tool_name=tool_name or kind,
        input=args,
        tool_use_id=getattr(request, "tool_call_id", None),
        reason=reason or None,
        **info,
    )


def _error_kind(status: int | None, error_type: str | None, failure_kind: str) -> ErrorKind:
    if status:
        return _STATUS_KINDS.get(status, "api_error")
    if failure_kind == "transport":
        return "connection"
    text = (error_type or "").lower()
    if "auth" in text:
        return "auth"
    if "rate" in text or "quota" in text:
        return "rate_limit"
    return "api_error"


def _todo_status(row: Any) -> str:
    status = (row.status or "pending").lower()
    if status in ("done", "completed", "complete"):
        return "completed"
    return "in_progress" if status in ("in_progress", "in-progress", "active") else "pending"


def _diff_for(detailed: str, path: str) -> str:
    """The section of the CLI's git-style diff (all files of one call) for `path`."""
    sections = re.split(r"(?m)^(?=diff --git )", detailed.lstrip("\n"))
    for section in sections:
        if section.startswith("diff --git ") and path in section.splitlines()[0]:
            return section
    return detailed.lstrip("\n")


def _absolute(path: str, cwd: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(cwd, path))


def _attachments(prompt: Prompt) -> list[dict[str, Any]] | None:
    if not prompt.images:
        return None
    return [{"type": "blob", "data": i.base64, "mimeType": i.media_type} for i in prompt.images]


def _data(event: sdk_events.SessionEvent) -> dict[str, Any]:
    raw = event.data.to_dict()
    payload = json.loads(json.dumps(raw, default=str))
    return payload if isinstance(payload, dict) else {"value": payload}


_ENV_PROVIDER: dict[str, str] = {
    "COPILOT_PROVIDER_TYPE": "type",
    "COPILOT_PROVIDER_BASE_URL": "base_url",
    "COPILOT_PROVIDER_API_KEY": "api_key",
    "COPILOT_PROVIDER_API_KEY_COMMAND": "api_key_command",
    "COPILOT_PROVIDER_BEARER_TOKEN": "bearer_token",
    "COPILOT_PROVIDER_WIRE_API": "wire_api",
    "COPILOT_PROVIDER_TRANSPORT": "transport",
    "COPILOT_PROVIDER_MODEL_ID": "model_id",
    "COPILOT_PROVIDER_WIRE_MODEL": "wire_model",
    "COPILOT_PROVIDER_MAX_PROMPT_TOKENS": "max_prompt_tokens",
    "COPILOT_PROVIDER_MAX_OUTPUT_TOKENS": "max_output_tokens",
}
"""The Copilot CLI's own bring-your-own-provider variables, as the SDK's provider fields."""


def _env_provider(env: Mapping[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """The provider (and model) that the CLI's ``COPILOT_PROVIDER_*`` / ``COPILOT_MODEL``
    variables name, or ``(None, None)`` when ``COPILOT_PROVIDER_BASE_URL`` is unset.

    Why: the CLI reads these itself only when it runs a prompt; a session the SDK creates
    without a provider asks for a GitHub login even when they are set. Reading them here lets
    a kernel, or any process whose environment is all a user can set, use their provider.
    """
    if not env.get("COPILOT_PROVIDER_BASE_URL"):
        return None, None
    provider: dict[str, Any] = {"type": "openai"}
    for name, key in _ENV_PROVIDER.items():
        value = env.get(name)
        if not value:
            continue
        if key.startswith("max_"):
            try:
                provider[key] = int(value)
            except ValueError:
                raise ValueError(f"{name} must be a number of tokens, not {value!r}") from None
        else:
            provider[key] = value
    if env.get("COPILOT_PROVIDER_AZURE_API_VERSION"):
        provider["azure"] = {"api_version": env["COPILOT_PROVIDER_AZURE_API_VERSION"]}
    return provider, env.get("COPILOT_MODEL") or None


def _cli_env(config: BackendConfig, provider: dict[str, Any] | None) -> dict[str, str]:
    """The CLI's environment: ours plus the session's. A BYOK provider is also given as the
    CLI's own provider variables, which offline mode (``COPILOT_OFFLINE=true``) requires.

    The CLI unpacks its runtime (~235 MB) into ``$XDG_CACHE_HOME/copilot`` on first run: a
    session with a HOME of its own (a fresh one per test) keeps using our cache, instead of
    unpacking it again into every new HOME.
    """
    env = {**os.environ, **config.env}
    # The CLI's own "allow every tool" switch: every decision is the Session's.
    env.pop("COPILOT_ALLOW_ALL", None)
    if "HOME" in config.env and "XDG_CACHE_HOME" not in config.env:
        env["XDG_CACHE_HOME"] = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    if provider:
        mirrored = {
            "COPILOT_PROVIDER_BASE_URL": provider.get("base_url"),
            "COPILOT_PROVIDER_TYPE": provider.get("type"),
            "COPILOT_PROVIDER_API_KEY": provider.get("api_key"),
            "COPILOT_PROVIDER_WIRE_API": provider.get("wire_api"),
            "COPILOT_MODEL": config.model,
        }
        for name, value in mirrored.items():
            if value and name not in config.env:
                env[name] = str(value)
    return env
