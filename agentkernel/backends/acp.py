"""Any Agent Client Protocol agent (Zed's editor protocol), through the `agent-client-protocol`
reference library.

The agent is a subprocess speaking JSON-RPC on stdio; the library frames and routes the
messages, and this module is the *client* side of the protocol: it starts the agent, opens or
loads a session, sends prompts, and serves what the protocol lets an agent ask of its client —
permission (`session/request_permission`), files (`fs/*`) and terminals (`terminal/*`). Every
one of those requests goes through ``host.decide``; files and terminals are also confined to
the session's working directory.

ACP's vocabulary is already neutral (its ToolKind *is* our tool kind), so the mapping here is
thin. What the protocol leaves to agents (which option ids mean what, when a tool call's input
is complete) is read from the spec's own fields: option ``kind``, tool ``status``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import shlex
import signal
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import acp
from acp import schema

from .._tool_server import SERVER_NAME, LoopbackToolServer
from ..events import (
    Decision,
    Error,
    FileChange,
    Other,
    PermissionRequest,
    PlanUpdate,
    SessionStarted,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
    TurnEnded,
    Usage,
    text_delta,
    thinking_delta,
)
from . import BackendConfig, BackendHost, CloseResult, Prompt, _launcher
from ._acp_agents import AgentPreset, describe_agents, find_program, load_agents
from ._diff import unified_diff

__all__ = ["AcpBackend", "describe_agents", "find_program", "pick_option"]


_STOP_REASONS = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "max_turn_requests": "max_turns",
    "refusal": "refusal",
    "cancelled": "interrupted",
}
_STDERR_KEEP = 200
_STARTUP_TIMEOUT_S = 60.0
_CANCEL_GRACE_S = 10.0
_TERMINAL_OUTPUT_LIMIT = 1 << 20
# JSON-RPC "server error" range; ACP reserves -32000 (auth) and -32002 (resource not found).
_PERMISSION_DENIED = -32001
_OUTSIDE_CWD = -32602  # invalid params: the path is not one this client serves


class AcpBackend:
    """One ACP agent process and one of its sessions.

    ``backend_options``: ``agent`` (an agent name, see `load_agents`, or a command line;
    default ``claude``), ``session_meta`` (``_meta`` for session/new, replacing the preset's),
    ``startup_timeout`` (seconds for initialize + session/new, default 60).
    """

    name: ClassVar[str] = "acp"

    def __init__(self) -> None:
        self.backend_session_id: str | None = None
        self._host: BackendHost | None = None
        self._conn: acp.core.ClientSideConnection | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._owner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._drain: asyncio.Task[None] | None = None
        self._env: dict[str, str] = {}
        self._meta: dict[str, Any] = {}
        self._stderr: list[str] = []
        self._argv: list[str] = []
        self._cwd = Path.cwd()
        self._capabilities = schema.AgentCapabilities()
        self._config_options: list[Any] = []
        self._model: str | None = None
        self._turn: _Turn | None = None
        self._tools: dict[str, _Tool] = {}
        self._replaying = False
        self._cost_seen = 0.0
        self._tool_server: LoopbackToolServer | None = None
        self.served_titles: frozenset[str] = frozenset()
        """The titles under which the agent announces calls of our MCP server's tools."""
        self._preset: AgentPreset | None = None
        self._client = _Client(self)

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self, config: BackendConfig, host: BackendHost) -> None:
        self._host = host
        options = dict(config.options)
        agent = options.get("agent", "claude")
        agents = load_agents({**os.environ, **config.env})
        preset = agents.get(agent) if isinstance(agent, str) else None
        env = self._env = {**os.environ, **(preset.env if preset else {}), **config.env}
        self._argv = _agent_argv(agent, agents, env)
        self._meta = dict(options.get("session_meta", preset.session_meta if preset else {}))
        self._preset = preset
        self._cwd = Path(config.cwd or os.getcwd()).resolve()
        timeout = float(options.get("startup_timeout", _STARTUP_TIMEOUT_S))
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._own_agent(config, env, timeout, ready))
        try:
            await ready
        except BaseException:
            # The agent is being killed; wait for that, so no process outlives the error.
            await asyncio.wait({self._owner}, timeout=5)
            raise

    async def _own_agent(
        self,
        config: BackendConfig,
        env: dict[str, str],
        timeout: float,
        ready: asyncio.Future[None],
    ) -> None:
        """Hold the agent process (the library's spawn context) from connect to close."""
        try:
            async with acp.spawn_agent_process(
                self._client,
                *_launcher.argv(self._argv),
                env=env,
                cwd=self._cwd,
                transport_kwargs={"limit": 50 * 1024 * 1024, "shutdown_timeout": 1.0},
            ) as (conn, process):
                self._conn, self._process = conn, process
                self._drain = asyncio.create_task(self._drain_stderr(process))
                try:
                    await asyncio.wait_for(self._open_session(conn, config), timeout)
                except Exception as exc:  # handed to the caller of connect()
                    if isinstance(exc, (ConnectionError, OSError)) and not isinstance(
                        exc, asyncio.TimeoutError
                    ):
                        # The agent went away: let its exit code and last words arrive.
                        await asyncio.wait(
                            {self._drain, asyncio.ensure_future(process.wait())}, timeout=2
                        )
                    ready.set_exception(self._startup_error(exc, timeout))
                    self._kill_group()
                    return
                ready.set_result(None)
                exited = asyncio.ensure_future(process.wait())
                stop = asyncio.ensure_future(self._stop.wait())
                try:
                    await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    exited.cancel()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(self._startup_error(exc, timeout))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._conn = None
            self._client.terminals.kill_all()
            self._kill_group()
            if self._tool_server is not None:
                await self._tool_server.stop()

    async def _open_session(self, conn: Any, config: BackendConfig) -> None:
        assert self._host is not None
        init = await conn.initialize(
            protocol_version=acp.PROTOCOL_VERSION,
            client_capabilities=schema.ClientCapabilities(
                fs=schema.FileSystemCapabilities(read_text_file=True, write_text_file=True),
                terminal=True,
            ),
            client_info=schema.Implementation(
                name="agentkernel", title="agentkernel", version=_version()
            ),
        )
        self._capabilities = init.agent_capabilities or schema.AgentCapabilities()
        cwd = str(self._cwd)
        mcp_servers = await self._serve_tools(config)
        if config.resume and config.fork:
            if not (self._capabilities.session_capabilities or schema.SessionCapabilities()).fork:
                raise NotImplementedError(
                    f"the ACP agent {self._agent_label()} cannot fork sessions (no "
                    "sessionCapabilities.fork in its initialize answer): resume without fork"
                )
            response = await conn.fork_session(
                session_id=config.resume, cwd=cwd, mcp_servers=mcp_servers, **self._meta
            )
            self.backend_session_id = response.session_id
        elif config.resume:
            if not self._capabilities.load_session:
                raise NotImplementedError(
                    f"the ACP agent {self._agent_label()} cannot load sessions (no loadSession "
                    "in its initialize answer), so this conversation cannot be resumed in a "
                    "new process: start a new session instead"
                )
            self._replaying = True
            try:
                response = await conn.load_session(
                    session_id=config.resume, cwd=cwd, mcp_servers=mcp_servers, **self._meta
                )
            finally:
                self._replaying = False
            self.backend_session_id = config.resume
        else:
            response = await conn.new_session(cwd=cwd, mcp_servers=mcp_servers, **self._meta)
            self.backend_session_id = response.session_id
        await self._enter_mode(conn, getattr(response, "modes", None))
        self._config_options = list(response.config_options or [])
        self._model = _current_model(self._config_options)
        if config.model and config.model != self._model:
            await self.set_model(config.model)
        self._host.emit(
            SessionStarted(
                backend=self.name,
                backend_session_id=self.backend_session_id,
                model=self._model,
                cwd=cwd,
            )
        )

    async def _enter_mode(self, conn: Any, modes: Any) -> None:
        wanted = self._preset.mode if self._preset is not None else None
        if wanted is None or modes is None or modes.current_mode_id == wanted:
            return
        if wanted not in {m.id for m in modes.available_modes}:
            return
        await conn.set_session_mode(session_id=self.backend_session_id, mode_id=wanted)

    async def _serve_tools(self, config: BackendConfig) -> list[Any]:
        """The session's Python tools as an MCP server on loopback, given to the agent in
        session/new (load, fork) when it takes HTTP MCP servers (``mcpCapabilities.http``). The
        server puts each call through our permission flow, once. An agent without HTTP MCP
        support gets no tools (ACP's other transport, stdio, would be a process of ours the
        agent starts, with no way back to this kernel's objects); a warning says so."""
        if not config.tools:
            return []
        capabilities = self._capabilities.mcp_capabilities or schema.McpCapabilities()
        if not capabilities.http:
            warnings.warn(
                f"the ACP agent {self._agent_label()} does not take HTTP MCP servers (no "
                "mcpCapabilities.http), so the session's Python tools are not offered to it",
                RuntimeWarning,
                stacklevel=2,
            )
            return []

        async def decide(request: PermissionRequest) -> Decision:
            decided = await self.decide(request)
            return decided or Decision("deny", reason="the turn ended before an answer")

        preset = self._preset
        if preset is not None and preset.mcp_tool_title is not None:
            title = preset.mcp_tool_title
            self.served_titles = frozenset(
                title.format(server=SERVER_NAME, tool=tool.name) for tool in config.tools
            )
        self._tool_server = LoopbackToolServer(
            config.tools,
            decide,
            tool_meta=preset.tool_meta if preset else None,
            tool_use_id_key=preset.tool_use_id_key if preset else None,
        )
        url = await self._tool_server.start()
        return [schema.HttpMcpServer(type="http", name=SERVER_NAME, url=url, headers=[])]

    async def run_turn(self, prompt: Prompt) -> None:
        assert self._host is not None
        conn = self._conn
        if conn is None or self.backend_session_id is None:
            raise ConnectionError(
                f"the ACP agent {self._agent_label()} is not running: connect first"
                f"{self._stderr_tail()}"
            )
        blocks = self._prompt_blocks(prompt)
        turn = self._turn = _Turn()
        try:
            response = await conn.prompt(session_id=self.backend_session_id, prompt=blocks)
        except acp.RequestError as exc:
            self._end_turn_failed(turn, _request_error(exc, self._stderr_tail()))
        except (ConnectionError, OSError) as exc:
            self._end_turn_failed(
                turn,
                Error(
                    kind="cli_crashed",
                    message=f"the ACP agent {self._agent_label()} stopped during the turn "
                    f"({exc}){self._stderr_tail()}",
                ),
            )
        else:
            self._end_turn(turn, response)
        finally:
            self._turn = None

    async def interrupt(self) -> None:
        turn, conn = self._turn, self._conn
        if turn is None or conn is None or self.backend_session_id is None:
            return
        turn.cancelled.set()
        await conn.cancel(session_id=self.backend_session_id)

    async def set_model(self, model: str | None) -> None:
        if model is None or self._conn is None or self.backend_session_id is None:
            return
        option = _model_option(self._config_options)
        if option is None:
            raise ValueError(
                f"the ACP agent {self._agent_label()} offers no model choice (no session config "
                "option of category 'model'); choose the model in the agent's own settings"
            )
        response = await self._conn.set_config_option(
            config_id=option.id, session_id=self.backend_session_id, value=model
        )
        self._config_options = list(response.config_options or self._config_options)
        self._model = _current_model(self._config_options) or model

    async def close(self) -> CloseResult:
        if self._owner is not None and not self._owner.done():
            self._stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._owner), timeout=15)
            except asyncio.TimeoutError:
                self.kill()
        exit_code = self._process.returncode if self._process is not None else None
        return CloseResult(exit_code, "".join(self._stderr))

    def kill(self) -> None:
        if self._tool_server is not None:
            self._tool_server.abort()
        self._client.terminals.kill_all()
        self._kill_group()
        if self._owner is not None and not self._owner.done():
            self._owner.cancel()

    def pids(self) -> list[int]:
        process = self._process
        alive = [process.pid] if process is not None and process.returncode is None else []
        return alive + self._client.terminals.pids()

    def _kill_group(self) -> None:
        """Kill the agent and all it started: agents start helpers (Claude Code's CLI, MCP
        servers) that must not outlive the session."""
        if self._process is not None:
            _kill(self._process)

    # -- errors and stderr -----------------------------------------------------------------

    async def _drain_stderr(self, process: asyncio.subprocess.Process) -> None:
        """Keep the agent's stderr (a full pipe would block it) for error messages."""
        if process.stderr is None:
            return
        async for raw in process.stderr:
            self._stderr.append(raw.decode("utf-8", "replace"))
            del self._stderr[:-_STDERR_KEEP]

    def _stderr_tail(self, lines: int = 15) -> str:
        tail = "".join(self._stderr[-lines:]).strip()
        return f"\nagent stderr:\n{tail}" if tail else ""

    def _agent_label(self) -> str:
        return f"`{shlex.join(self._argv)}`" if self._argv else "(not started)"

    def _startup_error(self, exc: BaseException, timeout: float) -> BaseException:
        label = self._agent_label()
        if isinstance(exc, asyncio.TimeoutError):
            return TimeoutError(
                f"the ACP agent {label} did not answer initialize / session setup within "
                f"{timeout:g} s{self._stderr_tail()}"
            )
        if isinstance(exc, acp.RequestError):
            if exc.code == -32000:
                return PermissionError(
                    f"the ACP agent {label} needs you to log in first (authentication "
                    f"required): {_error_text(exc)}{self._stderr_tail()}"
                )
            return ConnectionError(
                f"the ACP agent {label} refused to start a session: {_error_text(exc)}"
                f"{self._stderr_tail()}"
            )
        if isinstance(exc, (ConnectionError, OSError)):
            code = self._process.returncode if self._process is not None else None
            exited = f" (exit code {code})" if code is not None else ""
            return ConnectionError(
                f"the ACP agent {label} exited during startup{exited}{self._stderr_tail()}"
            )
        return exc

    # -- one turn ----------------------------------------------------------------------------

    def _prompt_blocks(self, prompt: Prompt) -> list[Any]:
        blocks: list[Any] = []
        if prompt.images:
            capabilities = self._capabilities.prompt_capabilities or schema.PromptCapabilities()
            if not capabilities.image:
                raise ValueError(
                    f"the ACP agent {self._agent_label()} does not accept images "
                    "(promptCapabilities.image is false): send the prompt as text"
                )
            blocks += [acp.image_block(i.base64, i.media_type) for i in prompt.images]
        blocks.append(acp.text_block(prompt.text))
        return blocks

    def _end_turn(self, turn: _Turn, response: schema.PromptResponse) -> None:
        assert self._host is not None
        if (failure := self._reported_failure(turn, response)) is not None:
            self._end_turn_failed(turn, failure)
            return
        self._flush(turn)
        raw = response.stop_reason
        stop_reason = _STOP_REASONS.get(raw, "end_turn")
        usage = _usage(response.usage, turn.cost)
        self._host.emit(
            TurnEnded(
                stop_reason=stop_reason,  # type: ignore[arg-type]
                raw_stop_reason=raw,
                usage=usage,
                duration_s=time.monotonic() - turn.started,
                result="".join(turn.answer),
            )
        )

    def _reported_failure(self, turn: _Turn, response: schema.PromptResponse) -> Error | None:
        """The failure an agent reported as its last message (see
        `AgentPreset.error_prefix`), taken out of the answer; None for a turn that went well."""
        if turn.held is None or response.usage is not None or response.stop_reason != "end_turn":
            return None
        message, turn.held = turn.held.strip(), None
        return Error(
            kind="api_error",
            message=f"the ACP agent {self._agent_label()} could not get an answer from its "
            f"model: {message}{self._stderr_tail()}",
            raw_kind="error_message",
        )

    def _end_turn_failed(self, turn: _Turn, error: Error) -> None:
        assert self._host is not None
        self._flush(turn)
        duration = time.monotonic() - turn.started
        if turn.cancelled.is_set():
            self._host.emit(
                TurnEnded(
                    stop_reason="interrupted", raw_stop_reason=error.raw_kind, duration_s=duration
                )
            )
            return
        self._host.emit(error)
        self._host.emit(
            TurnEnded(
                stop_reason="error",
                raw_stop_reason=error.raw_kind,
                is_error=True,
                duration_s=duration,
            )
        )

    def _release(self, turn: _Turn) -> None:
        """The held-back chunk was answer text after all: stream it."""
        assert self._host is not None
        if turn.held is not None:
            turn.buffer.append(turn.held)
            self._host.emit(text_delta(turn.held))
            turn.held = None

    def _flush(self, turn: _Turn) -> None:
        """Close the running text or thinking block with its whole-block event."""
        assert self._host is not None
        self._release(turn)
        if turn.buffer:
            whole = "".join(turn.buffer)
            self._host.emit(
                Thinking(text=whole) if turn.buffer_kind == "thinking" else Text(text=whole)
            )
            if turn.buffer_kind == "text":
                turn.answer.append(whole)
        turn.buffer.clear()
        turn.buffer_kind = None

    # -- session/update ----------------------------------------------------------------------

    def on_update(self, update: Any) -> None:
        """Translate one `session/update` notification into events."""
        assert self._host is not None
        turn = self._turn
        if self._replaying:
            return  # session/load replays the history the session already has
        if isinstance(update, (schema.AgentMessageChunk, schema.AgentThoughtChunk)):
            kind = "text" if isinstance(update, schema.AgentMessageChunk) else "thinking"
            if turn is not None:
                self._chunk(turn, kind, update)
            return
        if turn is not None and isinstance(
            update, (schema.ToolCallStart, schema.ToolCallProgress, schema.AgentPlanUpdate)
        ):
            self._flush(turn)
        if isinstance(update, (schema.ToolCallStart, schema.ToolCallProgress)):
            self._tool_update(update)
        elif isinstance(update, schema.AgentPlanUpdate):
            self._host.emit(
                PlanUpdate(
                    items=[{"content": e.content, "status": e.status} for e in update.entries]
                )
            )
        elif isinstance(update, schema.UsageUpdate):
            cost = update.cost.amount if update.cost is not None else None
            if cost is not None and turn is not None:
                turn.cost += max(cost - self._cost_seen, 0.0)
                self._cost_seen = max(cost, self._cost_seen)
            self._host.emit(Other(kind="context_usage", data=_dump(update)))
        elif isinstance(update, schema.ConfigOptionUpdate):
            self._config_options = list(update.config_options)
            self._model = _current_model(self._config_options) or self._model
            self._host.emit(Other(kind="config_option_update", data=_dump(update)))
        else:
            kind = getattr(update, "session_update", type(update).__name__)
            self._host.emit(Other(kind=str(kind), data=_dump(update)))

    def _chunk(self, turn: _Turn, kind: str, update: Any) -> None:
        assert self._host is not None
        content = update.content
        if not isinstance(content, schema.TextContentBlock):
            self._flush(turn)
            self._host.emit(Other(kind=f"{kind}_content", data=_dump(content)))
            return
        preset = self._preset
        retry = preset.retry_prefix if preset is not None else None
        if kind == "text" and retry is not None and content.text.startswith(retry):
            self._host.emit(Error(kind="retrying", message=content.text.strip(), retryable=True))
            return
        if turn.buffer_kind != kind or (update.message_id and update.message_id != turn.message_id):
            self._flush(turn)
        self._release(turn)
        turn.buffer_kind, turn.message_id = kind, update.message_id
        prefix = preset.error_prefix if preset is not None else None
        if kind == "text" and prefix is not None and content.text.startswith(prefix):
            turn.held = content.text
        elif content.text:
            turn.buffer.append(content.text)
            self._host.emit(
                text_delta(content.text) if kind == "text" else thinking_delta(content.text)
            )

    def tool(
        self, update: schema.ToolCallStart | schema.ToolCallProgress | schema.ToolCallUpdate
    ) -> _Tool:
        """The merged state of a tool call, created on first sight."""
        tool = self._tools.get(update.tool_call_id)
        if tool is None:
            tool = self._tools[update.tool_call_id] = _Tool(update.tool_call_id)
            tool.announced_title = update.title
        tool.merge(update)
        return tool

    def _tool_update(self, update: schema.ToolCallStart | schema.ToolCallProgress) -> None:
        tool = self.tool(update)
        # Agents announce a call before its input is known and fill it in by updates: show the
        # call once it says what it does (input, and for an edit its diff; or it started /
        # needs a decision / ended).
        described = tool.raw_input and (tool.kind != "edit" or tool.diffs())
        if described or tool.status in ("in_progress", "completed", "failed"):
            self.show_tool(tool)
        if tool.status in ("completed", "failed"):
            self._finish_tool(tool)

    def show_tool(self, tool: _Tool) -> None:
        assert self._host is not None
        if tool.shown:
            return
        tool.shown = True
        self._host.emit(
            ToolCall(tool_use_id=tool.id, name=tool.kind, input=tool.input(), **tool.info())
        )

    def _finish_tool(self, tool: _Tool) -> None:
        assert self._host is not None
        self._tools.pop(tool.id, None)
        failed = tool.status == "failed"
        self._host.emit(
            ToolResult(
                tool_use_id=tool.id,
                output=tool.output(self._client.terminals),
                is_error=failed,
            )
        )
        if failed:
            return
        written = self._client.written
        for diff in tool.diffs():
            if diff.path in written:
                written.discard(diff.path)
                continue
            self._host.emit(FileChange(path=diff.path, diff=_unified(diff), tool_use_id=tool.id))

    # -- permission --------------------------------------------------------------------------

    async def decide(self, request: PermissionRequest) -> Decision | None:
        """Ask the host; None when the turn was cancelled before an answer came."""
        assert self._host is not None
        turn = self._turn
        decision = asyncio.ensure_future(self._host.decide(request))
        if turn is None:
            return await decision
        cancelled = asyncio.ensure_future(turn.cancelled.wait())
        try:
            await asyncio.wait({decision, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if decision.done():
            return decision.result()
        decision.cancel()
        return None


@dataclass
class _Turn:
    started: float = field(default_factory=time.monotonic)
    buffer: list[str] = field(default_factory=list)
    buffer_kind: str | None = None
    message_id: str | None = None
    answer: list[str] = field(default_factory=list)
    cost: float = 0.0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    held: str | None = None
    """A text chunk that may be the agent's report of a failure, kept back until the next
    chunk or the turn's end says whether it is (`AgentPreset.error_prefix`)."""


@dataclass
class _Tool:
    """A tool call as the agent's `tool_call` and `tool_call_update`s have described it."""

    id: str
    kind: str = "other"
    title: str = ""
    status: str | None = None
    content: list[Any] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    raw_input: Any = None
    raw_output: Any = None
    shown: bool = False
    announced_title: str | None = None
    """The title of the agent's first word about the call (later updates may retitle it)."""

    def merge(self, update: Any) -> None:
        for name in ("kind", "title", "status", "raw_input", "raw_output"):
            value = getattr(update, name, None)
            if value is not None:
                setattr(self, name, value)
        if update.content is not None:
            self.content = list(update.content)
        if update.locations is not None:
            self.locations = [location.path for location in update.locations]

    def input(self) -> dict[str, Any]:
        if isinstance(self.raw_input, dict):
            return dict(self.raw_input)
        return {} if self.raw_input is None else {"input": self.raw_input}

    def command(self) -> str | None:
        """The shell command of an execute call, from the conventional ``command`` input."""
        if self.kind != "execute":
            return None
        raw = self.input().get("command")
        if isinstance(raw, list) and all(isinstance(part, str) for part in raw):
            return shlex.join(raw)
        if isinstance(raw, str) and raw:
            return raw
        return self.title or None

    def diffs(self) -> list[schema.FileEditToolCallContent]:
        return [c for c in self.content if isinstance(c, schema.FileEditToolCallContent)]

    def paths(self) -> tuple[str, ...]:
        found = [*self.locations, *(d.path for d in self.diffs())]
        return tuple(dict.fromkeys(found))

    def info(self) -> dict[str, Any]:
        """The `ToolInfo` fields of this call."""
        diffs = self.diffs()
        return {
            "kind": self.kind,
            "title": self.title or self.kind,
            "locations": self.paths(),
            "diff": "".join(_unified(d) for d in diffs) if diffs else None,
            "command": self.command(),
        }

    def output(self, terminals: _Terminals) -> str:
        parts: list[str] = []
        for item in self.content:
            if isinstance(item, schema.ContentToolCallContent):
                block = item.content
                text = getattr(block, "text", None)
                parts.append(text if isinstance(text, str) else f"[{block.type}]")
            elif isinstance(item, schema.TerminalToolCallContent):
                parts.append(terminals.output_of(item.terminal_id))
        if parts:
            return "\n".join(parts)
        if isinstance(self.raw_output, str):
            return self.raw_output
        if self.raw_output is None:
            return ""
        return json.dumps(self.raw_output, default=str)


class _Client:
    """The client half of ACP: what the agent may call on us.

    The library routes each JSON-RPC request here by method name; an `acp.RequestError`
    raised here is what the agent receives as the error answer, message included.
    """

    def __init__(self, backend: AcpBackend) -> None:
        self._backend = backend
        self.terminals = _Terminals()
        self.written: set[str] = set()
        self._allowed_paths: list[str] = []
        self._allowed_commands: list[str] = []

    # session/update and session/request_permission

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self._backend.on_update(update)

    async def request_permission(
        self,
        session_id: str,
        tool_call: schema.ToolCallUpdate,
        options: list[schema.PermissionOption],
        **kwargs: Any,
    ) -> schema.RequestPermissionResponse:
        backend = self._backend
        tool = backend.tool(tool_call)
        backend.show_tool(tool)
        if tool.announced_title in backend.served_titles:
            # A call of our own MCP server's tool: the server asks about it when the call
            # reaches it, so the agent may make it. An agent that does not announce the call
            # first is asked about twice, never not at all.
            once = pick_option(options, Decision("allow"))
            if once is not None:
                return schema.RequestPermissionResponse(
                    outcome=schema.AllowedOutcome(outcome="selected", option_id=once.option_id)
                )
        info = tool.info()
        decision = await backend.decide(
            PermissionRequest(
                request_id=uuid.uuid4().hex,
                tool_name=tool.kind,
                input=tool.input(),
                tool_use_id=tool.id,
                **info,
            )
        )
        if decision is None:
            return schema.RequestPermissionResponse(
                outcome=schema.DeniedOutcome(outcome="cancelled")
            )
        # An allow the agent has no option for (it offers only "always") becomes a reject:
        # never grant more than the user did.
        option = pick_option(options, decision) or pick_option(options, Decision("deny"))
        if option is None:
            return schema.RequestPermissionResponse(
                outcome=schema.DeniedOutcome(outcome="cancelled")
            )
        if option.kind.startswith("allow"):
            # The user allowed this call: the file writes and the command it announced need
            # no second question when the agent asks us to carry them out.
            self._allowed_paths += info["locations"]
            if info["command"]:
                self._allowed_commands.append(info["command"])
        return schema.RequestPermissionResponse(
            outcome=schema.AllowedOutcome(outcome="selected", option_id=option.option_id)
        )

    # fs/*

    async def read_text_file(
        self,
        session_id: str,
        path: str,
        line: int | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> schema.ReadTextFileResponse:
        target = self._confine(path, "read")
        if not self._take(self._allowed_paths, str(target)):
            await self._ask(
                tool_name="read_text_file",
                kind="read",
                title=f"Read {self._shown(target)}",
                locations=(str(target),),
                input={"path": path, "line": line, "limit": limit},
                what=f"reading {target}",
            )
        try:
            text = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise acp.RequestError.resource_not_found(str(target)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise acp.RequestError(-32603, f"cannot read {target}: {exc}") from None
        if line is not None or limit is not None:
            lines = text.splitlines(keepends=True)
            start = max((line or 1) - 1, 0)
            end = None if limit is None else start + limit
            text = "".join(lines[start:end])
        return schema.ReadTextFileResponse(content=text)

    async def write_text_file(
        self, session_id: str, path: str, content: str, **kwargs: Any
    ) -> schema.WriteTextFileResponse:
        target = self._confine(path, "write")
        before = _read_text(target)
        diff = _unified(
            schema.FileEditToolCallContent(
                type="diff", path=str(target), old_text=before, new_text=content
            )
        )
        if not self._take(self._allowed_paths, str(target)):
            await self._ask(
                tool_name="write_text_file",
                kind="edit",
                title=f"Write {self._shown(target)}",
                locations=(str(target),),
                diff=diff,
                input={"path": path, "content": content},
                what=f"writing {target}",
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except OSError as exc:
            raise acp.RequestError(-32603, f"cannot write {target}: {exc}") from None
        self.written.add(str(target))
        host = self._backend._host
        if host is not None and before != content:
            host.emit(FileChange(path=str(target), diff=diff))
        return schema.WriteTextFileResponse()

    # terminal/*

    async def create_terminal(
        self,
        session_id: str,
        command: str,
        args: list[str] | None = None,
        env: list[schema.EnvVariable] | None = None,
        cwd: str | None = None,
        output_byte_limit: int | None = None,
        **kwargs: Any,
    ) -> schema.CreateTerminalResponse:
        workdir = self._confine(cwd or str(self._backend._cwd), "run a command in")
        line = shlex.join([command, *args]) if args else command
        if not (
            self._take(self._allowed_commands, line) or self._take(self._allowed_commands, command)
        ):
            await self._ask(
                tool_name="terminal",
                kind="execute",
                title=line,
                command=line,
                input={"command": command, "args": list(args or []), "cwd": str(workdir)},
                what=f"running `{line}`",
            )
        extra = {variable.name: variable.value for variable in env or []}
        argv = [command, *args] if args else ["/bin/sh", "-c", command]
        terminal_id = await self.terminals.start(
            argv,
            cwd=workdir,
            env={**self._backend._env, **extra},
            limit=output_byte_limit or _TERMINAL_OUTPUT_LIMIT,
        )
        return schema.CreateTerminalResponse(terminal_id=terminal_id)

    async def terminal_output(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.TerminalOutputResponse:
        terminal = self.terminals.get(terminal_id)
        return schema.TerminalOutputResponse(
            output=terminal.text(), truncated=terminal.truncated, exit_status=terminal.exit_status()
        )

    async def wait_for_terminal_exit(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.WaitForTerminalExitResponse:
        terminal = self.terminals.get(terminal_id)
        await terminal.done.wait()
        status = terminal.exit_status()
        assert status is not None
        return schema.WaitForTerminalExitResponse(exit_code=status.exit_code, signal=status.signal)

    async def kill_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.KillTerminalResponse:
        self.terminals.get(terminal_id).kill()
        return schema.KillTerminalResponse()

    async def release_terminal(
        self, session_id: str, terminal_id: str, **kwargs: Any
    ) -> schema.ReleaseTerminalResponse:
        self.terminals.release(terminal_id)
        return schema.ReleaseTerminalResponse()

    # confinement and permission

    def _confine(self, path: str, verb: str) -> Path:
        """The resolved path, if it lies inside the session's cwd; else the agent's error."""
        root = self._backend._cwd
        raw = Path(path)
        target = (raw if raw.is_absolute() else root / raw).resolve()
        if target != root and not target.is_relative_to(root):
            raise acp.RequestError(
                _OUTSIDE_CWD,
                f"refused to {verb} {path}: this client only serves files inside the session's "
                f"working directory {root}",
                {"path": path, "cwd": str(root)},
            )
        return target

    def _shown(self, target: Path) -> str:
        root = self._backend._cwd
        return str(target.relative_to(root)) if target.is_relative_to(root) else str(target)

    @staticmethod
    def _take(allowed: list[str], item: str) -> bool:
        if item in allowed:
            allowed.remove(item)
            return True
        return False

    async def _ask(self, *, what: str, tool_name: str, **fields: Any) -> None:
        """Put a client-side operation through the permission flow; raise the agent's error
        (with the user's reason) when it is not allowed."""
        decision = await self._backend.decide(
            PermissionRequest(request_id=uuid.uuid4().hex, tool_name=tool_name, **fields)
        )
        if decision is None:
            raise acp.RequestError(_PERMISSION_DENIED, f"{what} was cancelled: the turn ended")
        if not decision.allowed:
            reason = decision.reason or "no reason given"
            raise acp.RequestError(
                _PERMISSION_DENIED,
                f"{what} was not allowed by the user: {reason}",
                {"reason": reason},
            )


class _Terminal:
    def __init__(self, process: asyncio.subprocess.Process, limit: int) -> None:
        self.process = process
        self.limit = limit
        self.buffer = bytearray()
        self.truncated = False
        self.done = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            while chunk := await self.process.stdout.read(65536):
                self.buffer += chunk
                if len(self.buffer) > self.limit:
                    del self.buffer[: len(self.buffer) - self.limit]
                    # Cut at a character boundary: drop UTF-8 continuation bytes.
                    while self.buffer and self.buffer[0] & 0xC0 == 0x80:
                        del self.buffer[0]
                    self.truncated = True
            await self.process.wait()
        finally:
            self.done.set()

    def text(self) -> str:
        return self.buffer.decode("utf-8", "replace")

    def exit_status(self) -> schema.TerminalExitStatus | None:
        code = self.process.returncode
        if code is None or not self.done.is_set():
            return None
        if code < 0:
            return schema.TerminalExitStatus(signal=signal.Signals(-code).name)
        return schema.TerminalExitStatus(exit_code=code)

    def kill(self) -> None:
        if self.process.returncode is None:
            _kill(self.process)


class _Terminals:
    """Commands the agent runs through `terminal/create`: each in its own process group, tied
    to our life like the agent, and killed when released or when the session ends."""

    def __init__(self) -> None:
        self._running: dict[str, _Terminal] = {}
        self._released_output: dict[str, str] = {}

    async def start(self, argv: list[str], *, cwd: Path, env: dict[str, str], limit: int) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *_launcher.argv(argv),
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise acp.RequestError(-32603, f"cannot start {argv[0]}: {exc}") from None
        terminal_id = f"term-{uuid.uuid4().hex[:12]}"
        self._running[terminal_id] = _Terminal(process, limit)
        return terminal_id

    def get(self, terminal_id: str) -> _Terminal:
        terminal = self._running.get(terminal_id)
        if terminal is None:
            raise acp.RequestError.invalid_params({"terminalId": terminal_id, "error": "unknown"})
        return terminal

    def output_of(self, terminal_id: str) -> str:
        terminal = self._running.get(terminal_id)
        if terminal is not None:
            return terminal.text()
        return self._released_output.get(terminal_id, "")

    def release(self, terminal_id: str) -> None:
        terminal = self.get(terminal_id)
        terminal.kill()
        self._released_output[terminal_id] = terminal.text()
        del self._running[terminal_id]

    def kill_all(self) -> None:
        for terminal in self._running.values():
            terminal.kill()

    def pids(self) -> list[int]:
        return [t.process.pid for t in self._running.values() if t.process.returncode is None]


# -- translation helpers ----------------------------------------------------------------------


def pick_option(
    options: list[schema.PermissionOption], decision: Decision
) -> schema.PermissionOption | None:
    """The agent's option for our decision, chosen by the option's ``kind`` (ids are the
    agent's own): allow -> ``allow_once``, deny -> ``reject_once`` (else ``reject_always``).

    "Always allow" is answered with ``allow_once`` too: the session's policy keeps the rule
    (one exact command) and answers the agent's next request itself. The agent's own
    ``allow_always`` would let it run later calls without asking us at all, under its own
    notion of "the same" (Copilot: the command; Claude Code: for an edit, every edit)."""
    by_kind: dict[str, schema.PermissionOption] = {}
    for option in options:
        by_kind.setdefault(option.kind, option)
    wanted = ("allow_once",) if decision.allowed else ("reject_once", "reject_always")
    return next((by_kind[kind] for kind in wanted if kind in by_kind), None)


def _agent_argv(agent: Any, agents: dict[str, AgentPreset], env: dict[str, str]) -> list[str]:
    """The agent's command line: an agent's name or a command line, its program resolved."""
    if isinstance(agent, (list, tuple)):
        argv = [str(part) for part in agent]
    elif isinstance(agent, str) and agent in agents:
        argv = list(agents[agent].command)
    elif isinstance(agent, str) and agent.strip():
        argv = shlex.split(agent)
    else:
        raise ValueError(
            f"backend_options['agent'] must be an agent name ({', '.join(agents)}) or a "
            f"command line, not {agent!r}"
        )
    program = argv[0]
    found = find_program(program, env)
    if found is None:
        preset = next((p for p in agents.values() if p.command[0] == program), None)
        hint = f"install it with `{preset.install}`, or " if preset and preset.install else ""
        where = "does not exist or is not executable" if os.sep in program else "is not on PATH"
        raise FileNotFoundError(
            f"ACP agent command {program!r} {where}: {hint}pass backend_options="
            "{'agent': '/path/to/agent --flags'}"
        )
    return [str(Path(found).absolute()), *argv[1:]]


def _version() -> str:
    try:
        return importlib.metadata.version("jupyter-agentkernel")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _model_option(options: list[Any]) -> Any:
    for option in options:
        if isinstance(option, schema.SessionConfigOptionSelect) and (
            option.category == "model" or option.id == "model"
        ):
            return option
    return None


def _current_model(options: list[Any]) -> str | None:
    option = _model_option(options)
    return option.current_value if option is not None else None


def _usage(raw: schema.Usage | None, cost: float) -> Usage:
    if raw is None:
        return Usage(cost_usd=cost)
    return Usage(
        input_tokens=raw.input_tokens,
        output_tokens=raw.output_tokens,
        cache_read_tokens=raw.cached_read_tokens or 0,
        cache_creation_tokens=raw.cached_write_tokens or 0,
        cost_usd=cost,
    )


def _error_text(exc: acp.RequestError) -> str:
    details = exc.data.get("details") if isinstance(exc.data, dict) else exc.data
    return f"{exc}: {details}" if details else str(exc)


def _request_error(exc: acp.RequestError, stderr_tail: str) -> Error:
    kinds = {-32000: "auth", -32600: "invalid_request", -32602: "invalid_request"}
    return Error(
        kind=kinds.get(exc.code, "api_error"),  # type: ignore[arg-type]
        message=f"the ACP agent failed the turn: {_error_text(exc)}{stderr_tail}",
        raw_kind=str(exc.code),
    )


def _unified(diff: schema.Diff) -> str:
    return unified_diff(diff.path, diff.old_text, diff.new_text)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _dump(model: Any) -> dict[str, Any]:
    data = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data if isinstance(data, dict) else {"value": data}


def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL what `process` (started under our supervisor) runs: it, everything under it,
    and its process group. Only while it is unreaped, so its pid cannot be anyone else's."""
    if process.returncode is None:
        _launcher.kill(process.pid)
