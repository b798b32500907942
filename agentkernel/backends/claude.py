"""Claude Code, through the official `claude-agent-sdk` (its wheel bundles the CLI).

One `ClaudeSDKClient` per session, owned by one long-lived task: the SDK's anyio task group must
be entered and exited by the same task, so connect, every turn and disconnect all run inside
`_own_client`, which takes work from a queue. `interrupt` and `set_model` are control requests
and may come from any task on the same loop while a turn streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import claude_agent_sdk as sdk

from .._tool_server import SERVER_NAME, mcp_server
from ..events import (
    Compaction,
    Decision,
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
    text_delta,
    thinking_delta,
)
from ..tools import Tool, ToolOutput
from . import BackendConfig, BackendHost, CloseResult, Prompt, _launcher
from ._claude_transport import transport_for
from ._diff import unified_diff

# The SDK logs through Python's last-resort handler when no logging is configured, so a CLI
# it stops at exit prints "Fatal error in message reader" into the user's output. What it
# reports reaches the user as our events; its records still reach handlers the user sets up.
logging.getLogger("claude_agent_sdk").addHandler(logging.NullHandler())

_FILE_TOOLS = {"Write", "Edit", "MultiEdit", "NotebookEdit"}
_QUESTION_TOOL = "AskUserQuestion"
_COMPACT_BOUNDARY = "compact_boundary"
_COMPACT_COMMAND = "/compact"
_SUMMARY_HEAD = "Summary:\n"
_SUMMARY_TAIL = "\n\nIf you need specific details from before compaction"
_TODO_TOOL = "TodoWrite"
_STDERR_KEEP = 200
_API_ERROR_KINDS: dict[int, ErrorKind] = {
    401: "auth",
    403: "auth",
    400: "invalid_request",
    429: "rate_limit",
    529: "overloaded",
    500: "api_error",
    503: "overloaded",
}
_MESSAGE_ERROR_KINDS: dict[str, ErrorKind] = {
    "authentication_failed": "auth",
    "billing_error": "auth",
    "rate_limit": "rate_limit",
    "invalid_request": "invalid_request",
    "server_error": "api_error",
    "overloaded": "overloaded",
}
_RESULT_STOP_REASONS: dict[str, StopReason] = {
    "error_max_budget_usd": "budget",
    "error_max_turns": "max_turns",
    "error_during_execution": "error",
}
_MODEL_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "end_turn",
    "pause_turn": "end_turn",
    "max_tokens": "max_tokens",
    "refusal": "refusal",
}
_TOOL_KINDS: dict[str, ToolKind] = {
    "Bash": "execute",
    "BashOutput": "read",
    "KillShell": "execute",
    "KillBash": "execute",
    "Read": "read",
    "NotebookRead": "read",
    "Write": "edit",
    "Edit": "edit",
    "MultiEdit": "edit",
    "NotebookEdit": "edit",
    "Glob": "search",
    "Grep": "search",
    "LS": "search",
    "ToolSearch": "think",
    "ListMcpResourcesTool": "read",
    "ReadMcpResourceTool": "read",
    "WebFetch": "fetch",
    "WebSearch": "fetch",
    "TodoWrite": "think",
    "TaskCreate": "think",
    "TaskUpdate": "think",
    "TaskList": "think",
    "TaskGet": "think",
    "EnterPlanMode": "switch_mode",
    "ExitPlanMode": "switch_mode",
}
"""Claude Code's tools in the neutral vocabulary; a tool not listed (Agent, Skill, MCP tools)
is "other", which every permission mode short of allow-all asks about or denies."""
_HOOK_DENIAL = re.compile(r"^PreToolUse:\S+ hook error: ")
"""How the CLI prefixes a denial our PreToolUse hook gave; the user sees only our reason."""
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""The largest line of the CLI's output the SDK reads (its ``max_buffer_size``; the SDK's own
default is 1 MiB): a turn's closing messages each carry its whole reply, so a long answer or a
big tool result went past 1 MiB and failed the turn. Override with ``backend_options``."""
_HOOK_TIMEOUT_S = 24 * 3600.0
"""The PreToolUse hook waits for a person's click: the CLI's 60 s default would decide for them."""
_TOOL_PREFIX = f"mcp__{SERVER_NAME}__"
"""How the CLI names the session's Python tools (served by our in-process MCP server)."""
_ALWAYS_LOAD = "anthropic/alwaysLoad"
"""A tool's ``_meta`` key that keeps it in the prompt instead of behind ToolSearch."""


class ClaudeBackend:
    """The default backend: Claude Code over `ClaudeSDKClient`."""

    name: ClassVar[str] = "claude"

    def __init__(self) -> None:
        self.backend_session_id: str | None = None
        self._host: BackendHost | None = None
        self._client: sdk.ClaudeSDKClient | None = None
        self._owner: asyncio.Task[None] | None = None
        self._work: asyncio.Queue[tuple[Prompt, asyncio.Future[None]] | None] = asyncio.Queue()
        self._stderr: list[str] = []
        self._interrupted = False
        self._turn_had_error = False
        self._started_emitted = False
        self._file_snapshots: dict[str, tuple[str, str | None]] = {}
        self._process: Any = None
        self._cost_reported = 0.0
        self._allowed_by_hook: set[str] = set()
        self._pending_plans: dict[str, list[dict[str, Any]]] = {}
        self._compaction: dict[str, Any] | None = None
        self._config_dir: Path | None = None
        self._tools: dict[str, Tool] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self, config: BackendConfig, host: BackendHost) -> None:
        self._host = host
        options = self._options(config)
        connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._own_client(options, connected))
        await connected

    async def _own_client(
        self, options: sdk.ClaudeAgentOptions, connected: asyncio.Future[None]
    ) -> None:
        client = sdk.ClaudeSDKClient(options, transport=transport_for(options))
        try:
            await client.connect()
        except BaseException as exc:  # handed to the caller of connect()
            connected.set_exception(self._connect_error(exc, options))
            return
        self._client = client
        self._process = _cli_process(client)
        connected.set_result(None)
        try:
            while (item := await self._work.get()) is not None:
                prompt, done = item
                try:
                    await self._turn(client, prompt)
                except BaseException as exc:  # reported to the turn's caller
                    if not done.done():
                        done.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    # The SDK's reader may be gone (a message over the size limit ends it)
                    # and the turn's messages half read: this client is done. The next turn
                    # starts a new CLI that resumes the conversation.
                    break
                else:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._client = None
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def run_turn(self, prompt: Prompt) -> None:
        if self._owner is None or self._owner.done():
            raise ConnectionError("the Claude Code CLI is not running: connect first")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._work.put((prompt, done))
        finished, _ = await asyncio.wait({done, self._owner}, return_when=asyncio.FIRST_COMPLETED)
        if done not in finished:
            raise ConnectionError(
                f"the Claude Code CLI stopped during the turn{self._stderr_tail()}"
            )
        done.result()

    async def compact(self, instructions: str | None) -> None:
        """Claude Code compacts on its ``/compact`` command, run as a turn."""
        command = f"{_COMPACT_COMMAND} {instructions}" if instructions else _COMPACT_COMMAND
        await self.run_turn(Prompt(command))

    async def interrupt(self) -> None:
        if self._client is not None:
            self._interrupted = True
            await self._client.interrupt()

    async def set_model(self, model: str | None) -> None:
        if self._client is not None:
            await self._client.set_model(model)

    async def close(self) -> CloseResult:
        if self._owner is not None and not self._owner.done():
            await self._work.put(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._owner), timeout=15)
            except asyncio.TimeoutError:
                self.kill()
                self._owner.cancel()
        exit_code = getattr(self._process, "returncode", None)
        return CloseResult(exit_code, "".join(self._stderr))

    def kill(self) -> None:
        pid = getattr(self._process, "pid", None)
        if pid is not None and getattr(self._process, "returncode", None) is None:
            _launcher.kill(pid)
        if self._owner is not None and not self._owner.done():
            self._owner.cancel()

    def pids(self) -> list[int]:
        pid = getattr(self._process, "pid", None)
        alive = pid is not None and getattr(self._process, "returncode", None) is None
        return [pid] if alive else []

    # -- options and errors ----------------------------------------------------------------

    def _options(self, config: BackendConfig) -> sdk.ClaudeAgentOptions:
        extra = dict(config.options)
        configured = config.env.get("CLAUDE_CONFIG_DIR") or os.environ.get("CLAUDE_CONFIG_DIR")
        self._config_dir = Path(configured) if configured else Path.home() / ".claude"
        if "cli_path" in extra:
            cli_path = Path(str(extra["cli_path"]))
            if not cli_path.exists():
                raise FileNotFoundError(
                    f"Claude Code CLI not found at {cli_path}: pass the path of a `claude` "
                    "executable as cli_path, or leave it out to use the CLI bundled with "
                    "claude-agent-sdk"
                )
        real_cli = Path(str(extra.pop("cli_path", "") or _default_cli() or ""))
        if real_cli.is_file():
            extra["cli_path"] = _launcher.script(real_cli, "claude")
        self._tools = {t.name: t for t in config.tools}
        if self._tools:
            extra["mcp_servers"] = {**_tool_server(config.tools), **extra.get("mcp_servers", {})}
        extra.setdefault("max_buffer_size", _MAX_MESSAGE_BYTES)
        return sdk.ClaudeAgentOptions(
            model=config.model,
            effort=config.reasoning_effort,  # type: ignore[arg-type]
            cwd=config.cwd,
            env=dict(config.env),
            resume=config.resume,
            fork_session=config.fork,
            max_budget_usd=config.max_budget_usd,
            add_dirs=[
                *extra.pop("add_dirs", []),
                *([config.workspace] if config.workspace else []),
            ],
            include_partial_messages=True,
            can_use_tool=self._can_use_tool,
            hooks={
                "PreToolUse": [
                    sdk.HookMatcher(
                        hooks=[self._pre_tool_use], timeout=_HOOK_TIMEOUT_S, on_failure="block"
                    )
                ]
            },
            stderr=self._on_stderr,
            **extra,
        )

    def _compact_summary(self) -> str | None:
        """The summary of the last compaction, from the CLI's own transcript of the session
        (the SDK does not pass it on): the newest entry flagged as a compact summary."""
        if self._config_dir is None or not self.backend_session_id:
            return None
        pattern = f"projects/*/{self.backend_session_id}.jsonl"
        for transcript in self._config_dir.glob(pattern):
            summary = None
            with contextlib.suppress(OSError):
                for line in transcript.read_text(encoding="utf-8").splitlines():
                    if '"isCompactSummary":true' not in line:
                        continue
                    with contextlib.suppress(ValueError):
                        content = json.loads(line).get("message", {}).get("content")
                        summary = content if isinstance(content, str) else _result_text(content)
            if summary:
                # The CLI wraps the model's summary in its own preamble and closing advice.
                summary = summary.split(_SUMMARY_HEAD, 1)[-1].split(_SUMMARY_TAIL, 1)[0]
                return summary.strip()
        return None

    def _on_stderr(self, line: str) -> None:
        self._stderr.append(line if line.endswith("\n") else line + "\n")
        del self._stderr[:-_STDERR_KEEP]

    def _stderr_tail(self, lines: int = 15) -> str:
        tail = "".join(self._stderr[-lines:]).strip()
        return f"\nCLI stderr:\n{tail}" if tail else ""

    def _connect_error(self, exc: BaseException, options: sdk.ClaudeAgentOptions) -> BaseException:
        if isinstance(exc, sdk.CLINotFoundError):
            return FileNotFoundError(
                f"Claude Code CLI not found ({exc}). Reinstall claude-agent-sdk (its wheel "
                "bundles the CLI) or pass cli_path= the path of a working `claude` executable."
            )
        if isinstance(exc, (sdk.ClaudeSDKError, OSError)):
            where = f" at {options.cli_path}" if options.cli_path else ""
            return ConnectionError(
                f"the Claude Code CLI{where} failed to start: {exc}{self._stderr_tail()}"
            )
        return exc

    # -- permissions -------------------------------------------------------------------------

    def _describe(self, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
        """`ToolInfo` fields of a call: one of the session's Python tools describes itself
        (its kind decides the permission), Claude Code's own tools are described here."""
        ours = self._tools.get(name[len(_TOOL_PREFIX) :]) if name.startswith(_TOOL_PREFIX) else None
        return ours.info(tool_input) if ours is not None else _describe(name, tool_input)

    async def _pre_tool_use(
        self, hook_input: Any, tool_use_id: str | None, context: sdk.HookContext
    ) -> dict[str, Any]:
        """Every tool call passes here before it runs, including the ones the CLI would
        approve on its own (``echo``, reads inside cwd), so our policy decides all of them.
        Questions go on to `_can_use_tool`, the only path that carries answers back."""
        assert self._host is not None
        name = str(hook_input.get("tool_name", ""))
        tool_input = dict(hook_input.get("tool_input") or {})
        if name == _QUESTION_TOOL:
            return {}
        decision = await self._host.decide(
            PermissionRequest(
                request_id=uuid.uuid4().hex,
                tool_name=name,
                input=tool_input,
                tool_use_id=tool_use_id,
                **self._describe(name, tool_input),
            )
        )
        output: dict[str, Any] = {"hookEventName": "PreToolUse"}
        if decision.allowed:
            output["permissionDecision"] = "allow"
            if decision.updated_input is not None:
                output["updatedInput"] = decision.updated_input
            if tool_use_id:
                self._allowed_by_hook.add(tool_use_id)
        else:
            output["permissionDecision"] = "deny"
            output["permissionDecisionReason"] = decision.reason or "Denied."
        return {"hookSpecificOutput": output}

    async def _can_use_tool(
        self, tool_name: str, tool_input: dict[str, Any], context: sdk.ToolPermissionContext
    ) -> sdk.PermissionResultAllow | sdk.PermissionResultDeny:
        assert self._host is not None
        request_id = uuid.uuid4().hex
        if tool_name == _QUESTION_TOOL:
            questions = [_question(q) for q in tool_input.get("questions", [])]
            decision = await self._host.decide(
                Question(
                    request_id=request_id, questions=questions, tool_use_id=context.tool_use_id
                )
            )
            if not decision.allowed:
                return sdk.PermissionResultDeny(message=decision.reason)
            return sdk.PermissionResultAllow(
                updated_input={**tool_input, "answers": dict(decision.answers or {})}
            )
        if context.tool_use_id in self._allowed_by_hook:
            # Already decided by our policy in the PreToolUse hook; do not ask twice.
            self._allowed_by_hook.discard(context.tool_use_id)
            return sdk.PermissionResultAllow()
        decision = await self._host.decide(
            PermissionRequest(
                request_id=request_id,
                tool_name=tool_name,
                input=tool_input,
                tool_use_id=context.tool_use_id,
                reason=context.decision_reason,
                **self._describe(tool_name, tool_input),
            )
        )
        return _permission_result(decision)

    # -- one turn ----------------------------------------------------------------------------

    async def _turn(self, client: sdk.ClaudeSDKClient, prompt: Prompt) -> None:
        assert self._host is not None
        self._interrupted = False
        self._turn_had_error = False
        started = time.monotonic()
        model_calls = 0
        try:
            await client.query(_prompt_messages(prompt) if prompt.images else prompt.text)
        except sdk.CLIConnectionError as exc:
            raise ConnectionError(f"the Claude Code CLI is gone: {exc}") from exc
        async for message in client.receive_response():
            if isinstance(message, sdk.StreamEvent):
                model_calls += self._stream_event(message.event, message.parent_tool_use_id)
            elif isinstance(message, sdk.AssistantMessage):
                self._assistant(message)
            elif isinstance(message, sdk.UserMessage):
                self._user(message)
            elif isinstance(message, sdk.SystemMessage):
                self._system(message)
            elif isinstance(message, sdk.ResultMessage):
                self._result(message, time.monotonic() - started, model_calls)
                return
            else:
                self._host.emit(Other(kind=type(message).__name__, data=_as_data(message)))
        # The stream ended without a result: the CLI went away mid-turn.
        self._host.emit(
            Error(
                kind="cli_crashed",
                message=f"the Claude Code CLI ended mid-turn{self._stderr_tail()}",
            )
        )
        self._host.emit(
            TurnEnded(stop_reason="error", is_error=True, duration_s=time.monotonic() - started)
        )

    def _stream_event(self, event: dict[str, Any], parent: str | None) -> int:
        """Emit deltas; return 1 for each new model call (message_start)."""
        assert self._host is not None
        kind = event.get("type")
        if kind == "message_start":
            return 1
        if kind == "content_block_delta":
            delta = event.get("delta", {})
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                self._host.emit(text_delta(delta.get("text", ""), parent))
            elif delta_kind == "thinking_delta":
                thought = delta.get("thinking", "")
                self._host.emit(thinking_delta(thought, parent))
        return 0

    def _assistant(self, message: sdk.AssistantMessage) -> None:
        assert self._host is not None
        parent = message.parent_tool_use_id
        if message.error:
            self._turn_had_error = True
            self._host.emit(
                Error(
                    parent_tool_use_id=parent,
                    kind=_MESSAGE_ERROR_KINDS.get(message.error, "api_error"),
                    raw_kind=message.error,
                    message=_block_text(message.content) or message.error,
                    retryable=message.error in {"rate_limit", "server_error", "overloaded"},
                )
            )
            return
        for block in message.content:
            if isinstance(block, sdk.TextBlock):
                self._host.emit(Text(text=block.text, parent_tool_use_id=parent))
            elif isinstance(block, sdk.ThinkingBlock):
                self._host.emit(Thinking(text=block.thinking, parent_tool_use_id=parent))
            elif isinstance(block, (sdk.ToolUseBlock, sdk.ServerToolUseBlock)):
                tool_input = dict(block.input)
                self._host.emit(
                    ToolCall(
                        tool_use_id=block.id,
                        name=block.name,
                        input=tool_input,
                        parent_tool_use_id=parent,
                        **self._describe(block.name, tool_input),
                    )
                )
                self._tool_side_events(block.id, block.name, tool_input)

    def _tool_side_events(self, tool_use_id: str, name: str, tool_input: dict[str, Any]) -> None:
        """Remember what a call's result will need: the task list it sets (shown only once
        the call succeeds), the file it changes (for the diff)."""
        if name == _TODO_TOOL:
            todos = tool_input.get("todos") or []
            self._pending_plans[tool_use_id] = [_todo(t) for t in todos if isinstance(t, dict)]
        elif name in _FILE_TOOLS:
            path = str(tool_input.get("file_path") or tool_input.get("notebook_path") or "")
            if path:
                self._file_snapshots[tool_use_id] = (path, _read_text(path))

    def _user(self, message: sdk.UserMessage) -> None:
        assert self._host is not None
        if not isinstance(message.content, list):
            return
        parent = message.parent_tool_use_id
        for block in message.content:
            if isinstance(block, sdk.ToolResultBlock):
                is_error = bool(block.is_error)
                output = _result_text(block.content)
                if is_error:
                    output = _HOOK_DENIAL.sub("", output, count=1)
                self._host.emit(
                    ToolResult(
                        tool_use_id=block.tool_use_id,
                        output=output,
                        is_error=is_error,
                        parent_tool_use_id=parent,
                    )
                )
                plan = self._pending_plans.pop(block.tool_use_id, None)
                if plan is not None and not is_error:
                    self._host.emit(PlanUpdate(items=plan, parent_tool_use_id=parent))
                snapshot = self._file_snapshots.pop(block.tool_use_id, None)
                if snapshot and not is_error:
                    self._emit_file_change(block.tool_use_id, *snapshot, message.tool_use_result)

    def _emit_file_change(
        self, tool_use_id: str, path: str, before: str | None, result: dict[str, Any] | None
    ) -> None:
        assert self._host is not None
        if result and isinstance(result.get("originalFile"), str):
            before = result["originalFile"]
        after = _read_text(path)
        if after is None or after == before:
            return
        diff = unified_diff(path, before, after)
        self._host.emit(FileChange(path=path, diff=diff, tool_use_id=tool_use_id))

    def _system(self, message: sdk.SystemMessage) -> None:
        assert self._host is not None
        if message.subtype == "init":
            self.backend_session_id = message.data.get("session_id") or self.backend_session_id
            if not self._started_emitted:
                self._started_emitted = True
                self._host.emit(
                    SessionStarted(
                        backend=self.name,
                        backend_session_id=self.backend_session_id,
                        model=message.data.get("model"),
                        tools=list(message.data.get("tools") or []),
                        cwd=message.data.get("cwd"),
                    )
                )
            return
        if message.subtype == "api_retry":
            self._host.emit(_retry_notice(message.data))
            return
        if message.subtype == _COMPACT_BOUNDARY:
            # Reported at the turn's end: the summary is in the CLI's transcript only by then.
            self._compaction = message.data.get("compact_metadata") or {}
            return
        self._host.emit(Other(kind=f"system:{message.subtype}", data=dict(message.data)))

    def _result(self, message: sdk.ResultMessage, duration_s: float, model_calls: int) -> None:
        assert self._host is not None
        self.backend_session_id = message.session_id or self.backend_session_id
        # The CLI reports the process's cumulative cost; a turn costs the difference. For a
        # model it has no price for (costBasis "unknown") its figure is a guess at another
        # model's rate: no cost is reported rather than a made-up one.
        total_cost = message.total_cost_usd or 0.0
        priced = message.model_usage or {}
        guessed = any(
            u.get("costBasis") == "unknown" for u in priced.values() if isinstance(u, dict)
        )
        turn_cost = 0.0 if guessed else max(total_cost - self._cost_reported, 0.0)
        usage = _usage(message.usage, turn_cost)
        self._cost_reported = max(total_cost, self._cost_reported)
        aborted = message.terminal_reason in ("aborted_streaming", "aborted_tools")
        stop_reason: StopReason
        if (self._interrupted or aborted) and message.subtype != "success":
            stop_reason = "interrupted"
        elif message.subtype in _RESULT_STOP_REASONS:
            stop_reason = _RESULT_STOP_REASONS[message.subtype]
        elif message.is_error:
            stop_reason = "error"
        else:
            stop_reason = _MODEL_STOP_REASONS.get(message.stop_reason or "", "end_turn")
        if self._compaction is not None:
            meta, self._compaction = self._compaction, None
            self._host.emit(
                Compaction(
                    trigger="auto" if meta.get("trigger") == "auto" else "manual",
                    tokens_before=meta.get("pre_tokens"),
                    summary=self._compact_summary(),
                )
            )
        if message.is_error and stop_reason != "interrupted" and not self._turn_had_error:
            self._host.emit(_result_error(message, self._stderr_tail()))
        self._host.emit(
            TurnEnded(
                stop_reason=stop_reason,
                raw_stop_reason=message.stop_reason or message.subtype,
                usage=usage,
                duration_s=duration_s,
                model_calls=model_calls,
                result=message.result or "",
                is_error=message.is_error and stop_reason not in ("interrupted", "budget"),
            )
        )


# -- translation helpers ----------------------------------------------------------------------


def _tool_server(tools: tuple[Tool, ...]) -> dict[str, sdk.McpSdkServerConfig]:
    """The session's Python tools as an MCP server the SDK serves in process. Each call was
    already decided by our PreToolUse hook (with the tool's kind), so the server only runs it:
    asking again would ask twice. Loaded up front, not deferred behind ToolSearch: they are
    the point of the session."""

    async def run(tool: Tool, arguments: dict[str, Any], meta: dict[str, Any]) -> ToolOutput:
        return await tool.invoke(arguments)

    server = mcp_server(tools, run, tool_meta={_ALWAYS_LOAD: True})
    return {SERVER_NAME: sdk.McpSdkServerConfig(type="sdk", name=SERVER_NAME, instance=server)}


def _permission_result(decision: Decision) -> sdk.PermissionResultAllow | sdk.PermissionResultDeny:
    if decision.allowed:
        return sdk.PermissionResultAllow(updated_input=decision.updated_input)
    return sdk.PermissionResultDeny(message=decision.reason or "Denied.")


def _question(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "question": raw.get("question", ""),
        "header": raw.get("header", ""),
        "options": [
            {"label": o.get("label", ""), "description": o.get("description", "")}
            for o in raw.get("options", [])
            if isinstance(o, dict)
        ],
        "multi_select": bool(raw.get("multiSelect", False)),
    }


def _describe(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    """A Claude Code tool call in the neutral words of `ToolInfo`."""
    kind: ToolKind = _TOOL_KINDS.get(name, "other")
    path = next(
        (str(tool_input[k]) for k in ("file_path", "notebook_path", "path") if tool_input.get(k)),
        None,
    )
    info: dict[str, Any] = {"kind": kind, "locations": (path,) if path else ()}
    command = tool_input.get("command")
    if kind == "execute" and isinstance(command, str):
        info["command"] = command
        info["title"] = command.strip().split("\n", 1)[0]
    elif name in _FILE_TOOLS and path:
        info["title"] = f"{'Write' if name == 'Write' else 'Edit'} {path}"
        info["diff"] = _proposed_diff(name, path, tool_input)
    elif kind == "read" and path:
        info["title"] = f"Read {path}"
    elif kind == "search" and isinstance(tool_input.get("pattern"), str):
        where = f" in {path}" if path else ""
        info["title"] = f"Search {tool_input['pattern']}{where}"
    elif kind == "fetch":
        target = tool_input.get("url") or tool_input.get("query") or ""
        info["title"] = f"Fetch {target}" if tool_input.get("url") else f"Search the web: {target}"
    elif name == _TODO_TOOL:
        info["title"] = f"Update the task list ({len(tool_input.get('todos') or [])} items)"
    elif isinstance(tool_input.get("description"), str):
        info["title"] = f"{name}: {tool_input['description']}"
    return info


def _proposed_diff(name: str, path: str, tool_input: dict[str, Any]) -> str | None:
    """The unified diff a Write / Edit / MultiEdit call would make to the file as it is now;
    None when it cannot be known (NotebookEdit, unreadable file, malformed input)."""
    before = _read_text(path)
    if name == "Write":
        after = tool_input.get("content")
    elif name in ("Edit", "MultiEdit"):
        edits = tool_input.get("edits") if name == "MultiEdit" else [tool_input]
        if not isinstance(edits, list):
            return None
        after = before
        for edit in edits:
            old, new = edit.get("old_string"), edit.get("new_string")
            if not isinstance(old, str) or not isinstance(new, str):
                return None
            if after is None or old not in after:
                # The file cannot show where the edit lands: show the edit itself.
                after, before = new, old
                break
            count = -1 if edit.get("replace_all") else 1
            after = after.replace(old, new, count)
    else:
        return None
    if not isinstance(after, str):
        return None
    return unified_diff(path, before, after)


def _todo(item: dict[str, Any]) -> dict[str, Any]:
    return {"content": item.get("content", ""), "status": item.get("status", "pending")}


def _usage(raw: dict[str, Any] | None, cost: float | None) -> Usage:
    raw = raw or {}
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        cache_read_tokens=int(raw.get("cache_read_input_tokens") or 0),
        cache_creation_tokens=int(raw.get("cache_creation_input_tokens") or 0),
        cost_usd=float(cost or 0.0),
    )


def _retry_notice(data: dict[str, Any]) -> Error:
    status = data.get("error_status")
    error = data.get("error")
    cause = f"HTTP {status}" if status else (error if error not in (None, "unknown") else "")
    cause = cause or "no connection"

    delay = float(data.get("retry_delay_ms") or 0) / 1000
    return Error(
        kind="retrying",
        message=(
            f"the model API failed ({cause}); retry {data.get('attempt')} of "
            f"{data.get('max_retries')} in {delay:.1f} s"
        ),
        retryable=True,
    )


def _result_error(message: sdk.ResultMessage, stderr_tail: str) -> Error:
    status = message.api_error_status
    if status:
        text = message.result or f"the model API answered HTTP {status}"
        return Error(
            kind=_API_ERROR_KINDS.get(status, "api_error"),
            raw_kind=f"HTTP {status}",
            message=f"{text} (HTTP {status})",
            retryable=status in (429, 500, 503, 529),
        )
    if message.subtype == "error_max_budget_usd":
        return Error(
            kind="budget",
            raw_kind=message.subtype,
            message="the session reached its max_budget_usd: the agent stopped, and the next "
            "turn will be refused until the budget is raised",
        )
    details = "; ".join(message.errors or []) or message.result or message.subtype
    return Error(kind="api_error", raw_kind=message.subtype, message=f"{details}{stderr_tail}")


def _prompt_messages(prompt: Prompt) -> AsyncIterator[dict[str, Any]]:
    content: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": i.media_type, "data": i.base64},
        }
        for i in prompt.images
    ]
    content.append({"type": "text", "text": prompt.text})

    async def one_message() -> AsyncIterator[dict[str, Any]]:
        yield {
            "type": "user",
            "message": {"role": "user", "content": content},
            "parent_tool_use_id": None,
        }

    return one_message()


def _block_text(blocks: list[Any]) -> str:
    return "".join(b.text for b in blocks if isinstance(b, sdk.TextBlock))


def _result_text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(part.get("text", "")) if part.get("type") == "text" else f"[{part.get('type')}]"
        for part in content
    )


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _as_data(message: object) -> dict[str, Any]:
    data = getattr(message, "__dict__", None)
    return {
        k: v for k, v in (data or {}).items() if isinstance(v, (str, int, float, bool, type(None)))
    }


def _cli_process(client: sdk.ClaudeSDKClient) -> Any:
    """The CLI's process handle. The SDK does not expose it; we need its pid to guarantee
    cleanup (kill) and its exit code for `close`."""
    transport = getattr(client, "_transport", None)
    return getattr(transport, "_process", None)


def _default_cli() -> Path | None:
    """The CLI the SDK would pick: the one bundled in its wheel, else `claude` on PATH."""
    bundled = Path(sdk.__file__).parent / "_bundled" / "claude"
    if bundled.is_file():
        return bundled
    found = shutil.which("claude")
    return Path(found) if found else None
