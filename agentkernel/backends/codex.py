"""OpenAI Codex, through ``codex app-server`` (the pinned binary of the official `openai-codex`
SDK, shipped in its `openai-codex-cli-bin` wheel: no npm, no download).

Why this module speaks the app-server's JSON-RPC itself instead of using the SDK's client: the
SDK answers every approval request on its single stdout-reader thread, with the handler's return
value, so a handler that waits for a person freezes every other event and delays an interrupt
(whose answer the same thread must read); its high-level `Codex` API offers no handler at all
and its default handler accepts everything. Here the transport is asyncio on the session's own
loop: one reader task routes responses and notifications, and each approval request is its own
task, answered whenever our permission flow decides, while events keep streaming and
``turn/interrupt`` goes out at once. The messages follow the protocol the SDK's generated types
describe (``codex app-server generate-json-schema``); the tests check ours against those types.
Importing the SDK's generated models costs about a second, so the runtime does not.

Process: the binary runs in a session of its own (a kernel interrupt signals the kernel's whole
process group; Codex must hear only our ``turn/interrupt``) and, on Linux, asks for SIGTERM
when its parent dies, so it cannot outlive a kernel killed with SIGKILL. `close` ends it by
closing its stdin; `kill` SIGKILLs its process group (its shell commands included).

Approvals: threads start with ``approvalPolicy: "untrusted"`` and ``approvalsReviewer: "user"``,
so Codex asks before every command and every file change. Command execution, file change and
permission requests and ``requestUserInput`` questions all go through ``host.decide``: allow ->
``accept``; deny -> ``decline``, and our reason reaches the model as a ``turn/steer`` message
right after the declined call (a decision carries no text); deny while an interrupt is under
way -> ``cancel``. "Always allow" is answered ``accept`` too, not ``acceptForSession``: the rule
lives in our policy, so a later call still passes through ``host.decide`` (recorded as decided
by the rule), and clearing rules or switching to ``deny`` takes effect at once.

``backend_options`` (all optional):

- ``codex_bin``: path of a ``codex`` executable (default: the one bundled with the SDK).
- ``sandbox``: ``read-only``, ``workspace-write`` (default: approved commands may write inside
  the working directory) or ``danger-full-access``. On a machine where Codex's bubblewrap
  sandbox cannot run (no user namespaces), approved commands fail unless this is
  ``danger-full-access``.
- ``approval_policy``: ``untrusted`` (default), ``on-request`` or ``never`` (Codex then runs
  commands without asking, and the session's permission mode no longer applies to them).
- ``config``: Codex config overrides, ``{"key.path": value}``, each passed as ``-c key=value``
  (values: str, bool, number, list, dict). `provider_config` builds the ones that send model
  calls to an OpenAI Responses API of your own (a local server, a proxy, the scripted model);
  `config_toml` writes the same as a ``config.toml`` for a CODEX_HOME.
- ``prices``: ``{model: {"input": usd, "cached_input": usd, "output": usd}}`` per million
  tokens. Codex reports tokens, not dollars: without a price for the model a turn's cost is 0,
  never an estimate. ``cached_input`` defaults to the ``input`` price.

Retries: a model API error is retried ``request_max_retries`` / ``stream_max_retries`` times
(provider settings; with Codex's defaults a dead server fails the turn only after tens of
seconds); `provider_config` sets both (default 1: a failing server fails the turn in about a
second). A connection that cannot be made at all is, in Codex's default configuration, retried
forever ("Reconnecting... waiting for network"); this backend turns that off
(``features.unbounded_connection_retries = false``), so such a turn fails with a clear error;
set it back through ``config`` to wait for the network instead. A request retry is silent; a
stream retry is reported as an ``Error(kind="retrying")``.

Threads: `Session.resume` continues one with ``thread/resume`` in a new process, ``fork`` makes
a new thread with its history (``thread/fork``). CODEX_HOME (in the session's ``env``) picks
Codex's home: its config, login and thread store (default ``~/.codex``; created when missing);
a thread resumes only where it was stored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import math
import os
import re
import shlex
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..events import (
    Decision,
    Error,
    ErrorKind,
    Event,
    FileChange,
    Other,
    PermissionRequest,
    PlanUpdate,
    Question,
    SessionStarted,
    StopReason,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolKind,
    ToolResult,
    TurnEnded,
    Usage,
    UsageUpdate,
    text_delta,
    thinking_delta,
)
from ..tools import Tool, ToolOutput
from . import BackendConfig, BackendHost, CloseResult, Prompt, _launcher
from ._bursts import Bursts, read_pipe

log = logging.getLogger("agentkernel.codex")

_SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")
_APPROVAL_POLICIES = ("untrusted", "on-request", "never")
_OPTION_KEYS = ("codex_bin", "sandbox", "approval_policy", "config", "prices")
_PRICE_KEYS = ("input", "cached_input", "output")

_BASE_CONFIG: dict[str, Any] = {
    "check_for_update_on_startup": False,
    "analytics.enabled": False,
    "features.unbounded_connection_retries": False,
    "tools.update_plan": {"enabled": True},
}
"""Passed to every app-server before the user's ``config``: no update check and no analytics
(nothing leaves the machine but model calls), a connection that fails fails the turn, and the
model is offered Codex's ``update_plan`` tool (off by default in Codex 0.163 for every model
``codex debug models`` lists: a call to it was answered "unsupported call"), whose plan becomes
the session's task list."""

_LINE_LIMIT = 64 * 1024 * 1024
"""One JSON-RPC message per line; a resumed thread or a long command output makes big ones."""
_READ_BYTES = 256 * 1024
_START_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 5.0
_STDERR_KEEP = 200
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_QUIET_NOTIFICATIONS = frozenset(
    {
        "thread/started",
        "thread/status/changed",
        "thread/readState/changed",
        "thread/settings/updated",
        "turn/started",
        "account/rateLimits/updated",
        "remoteControl/status/changed",
        "item/fileChange/outputDelta",
        "item/fileChange/patchUpdated",
    }
)
"""Notifications that carry nothing for the event model: client UI state (status, read marks,
rate-limit meters) or what another notification reports whole (a patch's output is in its
item's completion). Every other notification we do not map becomes `Other`."""

_TURN_STOP_REASONS: dict[str, StopReason] = {
    "completed": "end_turn",
    "interrupted": "interrupted",
    "failed": "error",
}
_ERROR_KINDS: dict[str, ErrorKind] = {
    "contextWindowExceeded": "invalid_request",
    "sessionBudgetExceeded": "budget",
    "usageLimitExceeded": "rate_limit",
    "rateLimitExceeded": "rate_limit",
    "serverOverloaded": "overloaded",
    "internalServerError": "api_error",
    "unauthorized": "auth",
    "badRequest": "invalid_request",
    "sandboxError": "internal",
    "httpConnectionFailed": "connection",
    "responseStreamConnectionFailed": "connection",
    "responseStreamDisconnected": "stream_cut",
    "responseTooManyFailedAttempts": "api_error",
}
"""Codex's ``codexErrorInfo`` in the neutral words; an HTTP status, when given, wins."""
_HTTP_ERROR_KINDS: dict[int, ErrorKind] = {
    400: "invalid_request",
    401: "auth",
    403: "auth",
    429: "rate_limit",
    503: "overloaded",
    529: "overloaded",
}
_PLAN_STATUSES = {"pending": "pending", "inProgress": "in_progress", "completed": "completed"}
_SHELLS = frozenset({"bash", "sh", "zsh"})


def provider_config(
    base_url: str,
    *,
    env_key: str = "OPENAI_API_KEY",
    name: str = "agentkernel",
    retries: int = 1,
) -> dict[str, Any]:
    """``backend_options["config"]`` entries that send every model call to the OpenAI
    Responses API at ``base_url`` (ending in ``/v1``), with the key from the environment
    variable ``env_key``, retrying a failed request or stream ``retries`` times."""
    return {
        "model_provider": name,
        f"model_providers.{name}": {
            "name": name,
            "base_url": base_url,
            "wire_api": "responses",
            "env_key": env_key,
            "request_max_retries": retries,
            "stream_max_retries": retries,
        },
    }


def config_toml(config: Mapping[str, Any]) -> str:
    """Config overrides (``{"key.path": value}``, e.g. from `provider_config`) as the text of a
    ``config.toml``: for a CODEX_HOME that a process we do not start reads (a kernel, a shell)."""
    return "".join(f"{key} = {_toml(value)}\n" for key, value in config.items())


class _RpcError(Exception):
    """A JSON-RPC error answer from the app-server."""

    def __init__(self, method: str, error: Mapping[str, Any]) -> None:
        self.code = int(error.get("code", -32000))
        self.message = str(error.get("message", "unknown error"))
        super().__init__(f"Codex refused {method}: {self.message} (JSON-RPC {self.code})")


class _AppServer:
    """One ``codex app-server`` process and the JSON-RPC conversation on its stdio (one JSON
    object per line). Server requests and notifications go to the callbacks; a callback that
    fails is logged and never stops the reader. Its stdout is read in chunks paced by `Bursts`
    (a flood of deltas comes a few dozen lines per read) and split into lines here."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        on_notification: Callable[[str, dict[str, Any]], None],
        on_request: Callable[[Any, str, dict[str, Any]], None],
    ) -> None:
        self.process = process
        self._on_notification = on_notification
        self._on_request = on_request
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_KEEP)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pipe = read_pipe(process.stdout)
        self._bursts = Bursts(pipe) if pipe is not None else None
        self._tasks = (
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        )

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its answer; `_RpcError` when Codex refuses it,
        ConnectionError when the process is gone."""
        request_id = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, answer)
        try:
            self._write({"id": request_id, "method": method, "params": params})
            return await answer
        finally:
            self._pending.pop(request_id, None)

    def notify(self, method: str) -> None:
        self._write({"method": method})

    def respond(self, request_id: Any, result: dict[str, Any]) -> None:
        self._write({"id": request_id, "result": result})

    def respond_error(self, request_id: Any, message: str) -> None:
        self._write({"id": request_id, "error": {"code": -32601, "message": message}})

    def _write(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        if self.closed.done() or stdin is None or stdin.is_closing():
            raise ConnectionError(f"the Codex app-server is not running{self.stderr_tail()}")
        stdin.write(json.dumps(message).encode() + b"\n")
        if self._bursts is not None:
            self._bursts.answer_expected()

    def close_stdin(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    async def finished(self) -> None:
        """Wait until both output streams are read to their end."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def stderr_tail(self, lines: int = 15) -> str:
        tail = "".join(list(self._stderr)[-lines:]).strip()
        return f"\nCodex stderr:\n{tail}" if tail else ""

    async def _read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        bursts = self._bursts
        partial = bytearray()  # the start of a line whose end has not come yet
        try:
            while True:
                if bursts is not None:
                    await bursts.before_read()
                chunk = await stdout.read(_READ_BYTES)
                if bursts is not None:
                    bursts.after_read(len(chunk))
                if not chunk:
                    break
                end = chunk.rfind(b"\n")
                if end < 0:
                    partial += chunk
                    if len(partial) > _LINE_LIMIT:
                        raise ValueError(f"a line longer than {_LINE_LIMIT} bytes")
                    continue
                lines = (bytes(partial) + chunk[:end]).split(b"\n")
                partial[:] = chunk[end + 1 :]
                for line in lines:
                    self._line(line)
            self._line(bytes(partial))
        except (OSError, ValueError) as exc:  # a broken pipe, a line over the limit
            log.warning("reading from the Codex app-server failed: %s", exc)
        finally:
            gone = ConnectionError(f"the Codex app-server exited{self.stderr_tail()}")
            for _, answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(gone)
            if not self.closed.done():
                self.closed.set_result(None)

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("Codex app-server wrote a line that is not JSON: %.200r", line)
            return
        if isinstance(message, dict):
            self._dispatch(message)

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            while line := await self.process.stderr.readline():
                self._stderr.append(_ANSI.sub("", line.decode(errors="replace")))

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        try:
            if isinstance(method, str) and "id" in message:
                self._on_request(message["id"], method, params)
            elif isinstance(method, str):
                self._on_notification(method, params)
            else:
                self._answer(message)
        except Exception:  # a bug in one event's translation must not end the session
            log.exception("agentkernel failed on the Codex message %.300r", message)

    def _answer(self, message: dict[str, Any]) -> None:
        pending = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if pending is None:
            return
        method, answer = pending
        if answer.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            answer.set_exception(_RpcError(method, error))
        else:
            result = message.get("result")
            answer.set_result(result if isinstance(result, dict) else {})


@dataclass
class _Options:
    """``backend_options``, checked once at connect so a typo fails with the valid names."""

    codex_bin: Path | None = None
    sandbox: str = "workspace-write"
    approval_policy: str | dict[str, Any] = "untrusted"
    config: dict[str, Any] = field(default_factory=dict)
    prices: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> _Options:
        unknown = sorted(set(raw) - set(_OPTION_KEYS))
        if unknown:
            raise ValueError(
                f"unknown Codex backend option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(_OPTION_KEYS)}"
            )
        options = cls(
            codex_bin=Path(str(raw["codex_bin"])) if raw.get("codex_bin") else None,
            sandbox=str(raw.get("sandbox") or "workspace-write"),
            approval_policy=raw.get("approval_policy") or "untrusted",
            config=dict(raw.get("config") or {}),
            prices=_check_prices(raw.get("prices") or {}),
        )
        if options.sandbox not in _SANDBOX_MODES:
            raise ValueError(
                f"unknown Codex sandbox {options.sandbox!r}; valid: {', '.join(_SANDBOX_MODES)}"
            )
        policy = options.approval_policy
        if not isinstance(policy, dict) and policy not in _APPROVAL_POLICIES:
            raise ValueError(
                f"unknown Codex approval_policy {policy!r}; valid: "
                f"{', '.join(_APPROVAL_POLICIES)} (or a granular policy dict)"
            )
        return options


@dataclass
class _Turn:
    """What one turn has seen so far."""

    started: float
    done: asyncio.Future[None]
    turn_id: str | None = None
    usage: Usage = field(default_factory=Usage)
    model_calls: int = 0
    last_text: str = ""
    error_reported: bool = False
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Items started in this turn, by id: an approval request names only the item."""
    output: dict[str, list[str]] = field(default_factory=dict)
    declined: dict[str, str] = field(default_factory=dict)
    """Why each item we declined was declined, for its result."""
    edited_paths: set[str] = field(default_factory=set)
    turn_diffs: dict[str, str] = field(default_factory=dict)


class CodexBackend:
    """OpenAI Codex over ``codex app-server``."""

    name: ClassVar[str] = "codex"

    def __init__(self) -> None:
        self.backend_session_id: str | None = None
        self._host: BackendHost | None = None
        self._server: _AppServer | None = None
        self._options = _Options()
        self._model: str | None = None
        self._model_changed = False
        self._effort: str | None = None
        self._cwd: str | None = None
        self._turn: _Turn | None = None
        self._interrupting = False
        self._requests: dict[Any, asyncio.Task[None]] = {}
        self._tools: dict[str, Tool] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self, config: BackendConfig, host: BackendHost) -> None:
        self._host = host
        self._options = options = _Options.parse(config.options)
        self._model = config.model
        self._effort = config.reasoning_effort
        self._tools = {t.name: t for t in config.tools}
        codex = _codex_path(options.codex_bin)
        argv = _launch_argv(codex, {**_BASE_CONFIG, **options.config})
        env = _process_env(config.env, bundled=options.codex_bin is None)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=config.cwd,
                env=env,
                start_new_session=True,
                limit=_LINE_LIMIT,
            )
        except OSError as exc:
            raise ConnectionError(f"the Codex CLI at {codex} could not start: {exc}") from exc
        self._server = server = _AppServer(process, self._on_notification, self._on_request)
        try:
            thread = await asyncio.wait_for(self._open_thread(server, config), _START_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.kill()
            raise ConnectionError(
                f"the Codex app-server at {codex} did not answer within {_START_TIMEOUT_S:.0f} s"
                f"{server.stderr_tail()}"
            ) from None
        except BaseException:
            self.kill()
            raise
        self.backend_session_id = str(thread["thread"]["id"])
        self._cwd = str(thread.get("cwd") or config.cwd or os.getcwd())
        if self._model is None:
            self._model = thread.get("model")
        host.emit(
            SessionStarted(
                backend=self.name,
                backend_session_id=self.backend_session_id,
                model=thread.get("model"),
                cwd=self._cwd,
            )
        )

    async def _open_thread(self, server: _AppServer, config: BackendConfig) -> dict[str, Any]:
        """Initialize the connection, then start, resume or fork the thread."""
        try:
            await server.request(
                "initialize",
                {
                    "clientInfo": {
                        "name": "agentkernel",
                        "title": "agentkernel",
                        "version": _version(),
                    },
                    "capabilities": {"experimentalApi": True},
                },
            )
        except ConnectionError as exc:
            raise ConnectionError(f"the Codex app-server failed to start: {exc}") from None
        server.notify("initialized")
        params: dict[str, Any] = {
            "approvalPolicy": self._options.approval_policy,
            "approvalsReviewer": "user",
            "sandbox": self._options.sandbox,
        }
        if config.cwd:
            params["cwd"] = config.cwd
        if config.model:
            params["model"] = config.model
        if config.resume is None:
            if config.tools:
                params["dynamicTools"] = [_dynamic_tool(t) for t in config.tools]
            return await server.request("thread/start", params)
        method = "thread/fork" if config.fork else "thread/resume"
        params.update(threadId=config.resume, excludeTurns=True)
        try:
            return await server.request(method, params)
        except _RpcError as exc:
            home = config.env.get("CODEX_HOME") or os.environ.get("CODEX_HOME") or "~/.codex"
            raise RuntimeError(
                f"Codex cannot {method.split('/')[1]} thread {config.resume}: {exc.message}. "
                f"Threads are stored under CODEX_HOME ({home}): resume with the same one."
            ) from None

    async def run_turn(self, prompt: Prompt) -> None:
        server = self._server
        if server is None or server.closed.done():
            raise ConnectionError("the Codex app-server is not running: connect first")
        assert self._host is not None and self.backend_session_id is not None
        loop = asyncio.get_running_loop()
        turn = _Turn(started=time.monotonic(), done=loop.create_future())
        self._turn, self._interrupting = turn, False
        params: dict[str, Any] = {
            "threadId": self.backend_session_id,
            "input": _input_items(prompt),
        }
        if self._model_changed and self._model:
            params["model"] = self._model
        if self._effort:
            params["effort"] = self._effort
        try:
            try:
                started = await server.request("turn/start", params)
            except _RpcError as exc:
                self._host.emit(
                    Error(kind="invalid_request", raw_kind=str(exc.code), message=str(exc))
                )
                self._end_turn(turn, "error", "rejected")
                return
            self._model_changed = False
            turn.turn_id = str(started["turn"]["id"])
            if self._interrupting:
                await self._send_interrupt(turn)
            await asyncio.wait({turn.done, server.closed}, return_when=asyncio.FIRST_COMPLETED)
            if not turn.done.done():
                self._host.emit(
                    Error(
                        kind="cli_crashed",
                        message=f"the Codex app-server exited mid-turn{server.stderr_tail()}",
                    )
                )
                self._end_turn(turn, "error", "exited")
        finally:
            if self._turn is turn:
                self._turn = None
            for task in list(self._requests.values()):
                task.cancel()

    async def interrupt(self) -> None:
        # Set before any await: a decision that lands during the interrupt answers "cancel".
        self._interrupting = True
        turn = self._turn
        if turn is not None and turn.turn_id is not None:
            await self._send_interrupt(turn)

    async def _send_interrupt(self, turn: _Turn) -> None:
        if self._server is None or turn.done.done():
            return
        with contextlib.suppress(_RpcError):  # the turn ended meanwhile
            await self._server.request(
                "turn/interrupt",
                {"threadId": self.backend_session_id, "turnId": turn.turn_id},
            )

    async def set_model(self, model: str | None) -> None:
        if model:
            self._model, self._model_changed = model, True

    async def close(self) -> CloseResult:
        server = self._server
        if server is None:
            return CloseResult(None)
        process = server.process
        server.close_stdin()
        try:
            await asyncio.wait_for(process.wait(), _CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("the Codex app-server did not exit within %.0f s", _CLOSE_TIMEOUT_S)
        self.kill()  # its process group: the shells and sandboxes it started
        await process.wait()
        await server.finished()
        return CloseResult(process.returncode, server.stderr)

    def kill(self) -> None:
        server = self._server
        if server is None:
            return
        _launcher.kill(server.process.pid)

    def pids(self) -> list[int]:
        server = self._server
        if server is None or server.process.returncode is not None:
            return []
        return [server.process.pid]

    # -- notifications -----------------------------------------------------------------------

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        assert self._host is not None
        if params.get("threadId", self.backend_session_id) != self.backend_session_id:
            return  # a sub-agent's thread: its work shows as our thread's collab item
        turn = self._turn
        handler = _HANDLERS.get(method)
        if handler is not None:
            if turn is not None:
                handler(self, turn, params)
            return
        if method == "serverRequest/resolved":
            task = self._requests.get(params.get("requestId"))
            if task is not None:  # Codex stopped waiting (an interrupt): so do we
                task.cancel()
            return
        if method in _QUIET_NOTIFICATIONS:
            return
        if turn is None and "turnId" in params:
            return  # a late word about a turn that is over
        self._host.emit(Other(kind=method, data=params))

    def _emit(self, event: Event) -> None:
        assert self._host is not None
        self._host.emit(event)

    def _item_started(self, turn: _Turn, params: dict[str, Any]) -> None:
        item = params.get("item") or {}
        item_id = str(item.get("id", ""))
        turn.items[item_id] = item
        call = _tool_call(item, self._cwd, self._tools)
        if call is not None:
            self._emit(call)

    def _item_completed(self, turn: _Turn, params: dict[str, Any]) -> None:
        item = params.get("item") or {}
        kind = item.get("type")
        item_id = str(item.get("id", ""))
        turn.items.pop(item_id, None)
        if kind == "agentMessage":
            text = str(item.get("text") or "")
            if text:
                turn.last_text = text
                self._emit(Text(text=text))
        elif kind == "reasoning":
            text = "\n\n".join(item.get("summary") or item.get("content") or [])
            if text:
                self._emit(Thinking(text=text))
        elif kind == "commandExecution":
            self._command_result(turn, item_id, item)
        elif kind == "fileChange":
            self._file_change_result(turn, item_id, item)
        elif kind in _TOOL_ITEMS:
            self._emit(_tool_result(item_id, item))
        elif kind != "userMessage":
            self._emit(Other(kind=f"item/completed:{kind}", data=item))

    def _command_result(self, turn: _Turn, item_id: str, item: dict[str, Any]) -> None:
        streamed = "".join(turn.output.pop(item_id, []))
        status = item.get("status")
        if status == "declined":
            reason = turn.declined.pop(item_id, "")
            output = f"The command was declined{': ' + reason if reason else '.'}"
            self._emit(ToolResult(tool_use_id=item_id, output=output, is_error=True))
            return
        output = item.get("aggregatedOutput")
        output = str(output if output is not None else streamed)
        exit_code = item.get("exitCode")
        failed = status == "failed" or (exit_code not in (None, 0))
        if exit_code not in (None, 0):
            output = f"{output.rstrip()}\n(exit code {exit_code})".lstrip()
        self._emit(ToolResult(tool_use_id=item_id, output=output, is_error=failed))

    def _file_change_result(self, turn: _Turn, item_id: str, item: dict[str, Any]) -> None:
        status = item.get("status")
        changes = [c for c in item.get("changes") or [] if isinstance(c, dict)]
        paths = ", ".join(str(c.get("path")) for c in changes)
        if status == "completed":
            self._emit(ToolResult(tool_use_id=item_id, output=f"Changed {paths}"))
            for change in changes:
                path = str(change.get("path", ""))
                turn.edited_paths.add(path)
                self._emit(
                    FileChange(path=path, diff=_change_diff(change, self._cwd), tool_use_id=item_id)
                )
            return
        if status == "declined":
            reason = turn.declined.pop(item_id, "")
            output = f"The change to {paths} was declined{': ' + reason if reason else '.'}"
        else:
            output = f"The change to {paths} failed ({status})"
        self._emit(ToolResult(tool_use_id=item_id, output=output, is_error=True))

    def _turn_diff(self, turn: _Turn, params: dict[str, Any]) -> None:
        """The turn's whole diff so far: report each file whose diff is new, unless a file
        change item of this turn already reported it (with the call that made it)."""
        root = _repo_root(Path(self._cwd or "."))
        for path, section in _split_git_diff(str(params.get("diff") or "")):
            absolute = str(root / path)
            if absolute in turn.edited_paths or path in turn.edited_paths:
                continue
            if turn.turn_diffs.get(absolute) != section:
                turn.turn_diffs[absolute] = section
                self._emit(FileChange(path=absolute, diff=section))

    def _token_usage(self, turn: _Turn, params: dict[str, Any]) -> None:
        last = (params.get("tokenUsage") or {}).get("last") or {}
        turn.usage = turn.usage + _usage(last, self._prices())
        turn.model_calls += 1
        self._emit(UsageUpdate(usage=turn.usage))

    def _prices(self) -> dict[str, float] | None:
        return self._options.prices.get(self._model or "")

    def _error(self, turn: _Turn, params: dict[str, Any]) -> None:
        error = params.get("error") or {}
        if params.get("willRetry"):
            self._emit(_error_event(error, retrying=True))
        else:
            turn.error_reported = True
            self._emit(_error_event(error))

    def _turn_completed(self, turn: _Turn, params: dict[str, Any]) -> None:
        finished = params.get("turn") or {}
        if turn.turn_id is not None and finished.get("id") != turn.turn_id:
            return
        status = str(finished.get("status") or "")
        stop_reason = _TURN_STOP_REASONS.get(status, "error")
        if stop_reason == "error" and not turn.error_reported:
            self._emit(_error_event(finished.get("error") or {"message": f"turn {status}"}))
        self._end_turn(turn, stop_reason, status)

    def _end_turn(self, turn: _Turn, stop_reason: StopReason, raw: str) -> None:
        if turn.done.done():
            return
        self._turn = None  # later words about this turn are stale
        self._emit(
            TurnEnded(
                stop_reason=stop_reason,
                raw_stop_reason=raw,
                usage=turn.usage,
                duration_s=time.monotonic() - turn.started,
                model_calls=turn.model_calls,
                result=turn.last_text,
                is_error=stop_reason == "error",
            )
        )
        turn.done.set_result(None)

    # -- server requests: approvals and questions ----------------------------------------------

    def _on_request(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        answer = _ANSWERS.get(method)
        server = self._server
        assert server is not None
        if answer is None:
            server.respond_error(request_id, f"agentkernel does not handle {method}")
            self._emit(Other(kind=f"request:{method}", data=params))
            return
        task = asyncio.create_task(self._serve(request_id, answer, params))
        self._requests[request_id] = task
        task.add_done_callback(lambda _: self._requests.pop(request_id, None))

    async def _serve(
        self,
        request_id: Any,
        answer: Callable[[CodexBackend, dict[str, Any]], Any],
        params: dict[str, Any],
    ) -> None:
        """Answer one server request when our permission flow decides: its own task, so the
        reader keeps routing events and an interrupt goes out while a person thinks."""
        server = self._server
        assert server is not None
        try:
            result = await answer(self, params)
        except Exception as exc:  # a failed decision must still answer, or Codex waits forever
            log.exception("answering the Codex request %s failed", request_id)
            if not server.closed.done():
                server.respond_error(request_id, f"agentkernel could not decide: {exc}")
            return
        if not server.closed.done():
            server.respond(request_id, result)

    async def _decide(self, request: PermissionRequest | Question) -> Decision:
        assert self._host is not None
        return await self._host.decide(request)

    async def _answer_command(self, params: dict[str, Any]) -> dict[str, Any]:
        item_id = str(params.get("itemId", ""))
        info = _command_info(str(params.get("command") or ""))
        if params.get("networkApprovalContext"):
            info["kind"] = "fetch"  # the command asks to reach the network
        request = PermissionRequest(
            request_id=uuid.uuid4().hex,
            tool_name="shell",
            input={"command": info["command"], "cwd": params.get("cwd")},
            tool_use_id=item_id,
            reason=params.get("reason"),
            **info,
        )
        return {"decision": await self._decision_word(item_id, await self._decide(request))}

    async def _answer_file_change(self, params: dict[str, Any]) -> dict[str, Any]:
        item_id = str(params.get("itemId", ""))
        turn = self._turn
        item = turn.items.get(item_id, {}) if turn else {}
        info = _file_change_info(item, self._cwd)
        reason = params.get("reason")
        if params.get("grantRoot"):
            reason = f"{reason or ''} (asks to write under {params['grantRoot']})".strip()
        request = PermissionRequest(
            request_id=uuid.uuid4().hex,
            tool_name="apply_patch",
            input={"changes": item.get("changes") or []},
            tool_use_id=item_id,
            reason=reason,
            **info,
        )
        return {"decision": await self._decision_word(item_id, await self._decide(request))}

    async def _answer_permissions(self, params: dict[str, Any]) -> dict[str, Any]:
        wanted = params.get("permissions") or {}
        request = PermissionRequest(
            request_id=uuid.uuid4().hex,
            tool_name="permissions",
            input=dict(wanted),
            tool_use_id=str(params.get("itemId", "")) or None,
            reason=params.get("reason"),
            kind="other",
            title=f"Grant more sandbox access: {json.dumps(wanted, sort_keys=True)}",
        )
        decision = await self._decide(request)
        # Granted for this turn only: a later request asks again (and our rules answer it).
        return {"permissions": wanted if decision.allowed else {}, "scope": "turn"}

    async def _answer_tool_call(self, params: dict[str, Any]) -> dict[str, Any]:
        """One of the session's Python tools (a dynamic tool: Codex hands the call to us and
        asks nothing itself), put through our permission flow once, then run."""
        name = str(params.get("tool", ""))
        arguments = params.get("arguments")
        arguments = arguments if isinstance(arguments, dict) else {}
        tool = self._tools.get(name)
        if tool is None:
            output = ToolOutput.error(f"no tool named {name!r} in this session")
        else:
            decision = await self._decide(
                PermissionRequest(
                    request_id=uuid.uuid4().hex,
                    tool_name=name,
                    input=arguments,
                    tool_use_id=str(params.get("callId", "")) or None,
                    **tool.info(arguments),
                )
            )
            if decision.allowed:
                given = decision.updated_input
                output = await tool.invoke(given if given is not None else arguments)
            else:
                output = ToolOutput.error(f"{name} was not run: {decision.reason or 'denied'}")
        return {"contentItems": _content_items(output), "success": not output.is_error}

    async def _answer_question(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = [q for q in params.get("questions") or [] if isinstance(q, dict)]
        question = Question(
            request_id=uuid.uuid4().hex,
            questions=[_question(q) for q in raw],
            tool_use_id=str(params.get("itemId", "")) or None,
        )
        decision = await self._decide(question)
        if not decision.allowed:
            return {"answers": {}}
        given = decision.answers or {}
        return {
            "answers": {
                str(q.get("id")): {"answers": [given[q["question"]]]}
                for q in raw
                if given.get(q.get("question", "")) is not None
            }
        }

    async def _decision_word(self, item_id: str, decision: Decision) -> str:
        """``accept``, ``decline`` (after steering our reason in) or ``cancel``."""
        if decision.allowed:
            return "accept"
        if self._interrupting:
            return "cancel"
        turn = self._turn
        if turn is not None:
            turn.declined[item_id] = decision.reason
            await self._steer(turn, decision.reason)
        return "decline"

    async def _steer(self, turn: _Turn, reason: str) -> None:
        """Tell the model why: the decline itself reaches it only as "rejected by user"."""
        if not reason or self._server is None or turn.turn_id is None:
            return
        try:
            await self._server.request(
                "turn/steer",
                {
                    "threadId": self.backend_session_id,
                    "expectedTurnId": turn.turn_id,
                    "input": [{"type": "text", "text": f"Tool call denied: {reason}"}],
                },
            )
        except (_RpcError, ConnectionError) as exc:
            log.info("could not pass the denial reason to Codex: %s", exc)


def _on_delta(make: Callable[[str], TextDelta | ThinkingDelta]) -> Callable[..., None]:
    def handler(backend: CodexBackend, turn: _Turn, params: dict[str, Any]) -> None:
        delta = params.get("delta")
        if isinstance(delta, str) and delta:
            backend._emit(make(delta))

    return handler


def _on_summary_part(backend: CodexBackend, turn: _Turn, params: dict[str, Any]) -> None:
    """A reasoning summary's next part: the same break its whole `Thinking` text has."""
    if params.get("summaryIndex"):
        backend._emit(ThinkingDelta(text="\n\n"))


def _on_output(backend: CodexBackend, turn: _Turn, params: dict[str, Any]) -> None:
    delta = params.get("delta")
    if isinstance(delta, str):
        turn.output.setdefault(str(params.get("itemId", "")), []).append(delta)


def _on_plan(backend: CodexBackend, turn: _Turn, params: dict[str, Any]) -> None:
    steps = [s for s in params.get("plan") or [] if isinstance(s, dict)]
    backend._emit(
        PlanUpdate(
            items=[
                {
                    "content": str(s.get("step", "")),
                    "status": _PLAN_STATUSES.get(str(s.get("status")), "pending"),
                }
                for s in steps
            ]
        )
    )


_HANDLERS: dict[str, Callable[[CodexBackend, _Turn, dict[str, Any]], None]] = {
    "item/agentMessage/delta": _on_delta(text_delta),
    "item/reasoning/summaryTextDelta": _on_delta(thinking_delta),
    "item/reasoning/textDelta": _on_delta(thinking_delta),
    "item/reasoning/summaryPartAdded": _on_summary_part,
    "item/commandExecution/outputDelta": _on_output,
    "item/started": CodexBackend._item_started,
    "item/completed": CodexBackend._item_completed,
    "turn/diff/updated": CodexBackend._turn_diff,
    "turn/plan/updated": _on_plan,
    "thread/tokenUsage/updated": CodexBackend._token_usage,
    "error": CodexBackend._error,
    "turn/completed": CodexBackend._turn_completed,
}
"""Turn notifications we translate; they are dropped when no turn of ours is running."""

_ANSWERS: dict[str, Callable[[CodexBackend, dict[str, Any]], Any]] = {
    "item/commandExecution/requestApproval": CodexBackend._answer_command,
    "item/fileChange/requestApproval": CodexBackend._answer_file_change,
    "item/permissions/requestApproval": CodexBackend._answer_permissions,
    "item/tool/requestUserInput": CodexBackend._answer_question,
    "item/tool/call": CodexBackend._answer_tool_call,
}
"""Server requests answered through ``host.decide``; any other one is refused (JSON-RPC
error) and reported as `Other`, never accepted."""


# -- translation helpers ----------------------------------------------------------------------

_TOOL_ITEMS = frozenset({"mcpToolCall", "dynamicToolCall", "webSearch", "imageView"})
"""Items besides commands and file changes that `_tool_call` reports as tool calls."""


def _tool_call(item: dict[str, Any], cwd: str | None, tools: dict[str, Tool]) -> ToolCall | None:
    """A started item that is a tool call, in the neutral words; None for other items."""
    kind = item.get("type")
    item_id = str(item.get("id", ""))
    if kind == "commandExecution":
        info = _command_info(str(item.get("command") or ""))
        return ToolCall(
            tool_use_id=item_id,
            name="shell",
            input={"command": info["command"], "cwd": item.get("cwd")},
            **info,
        )
    if kind == "fileChange":
        return ToolCall(
            tool_use_id=item_id,
            name="apply_patch",
            input={"changes": item.get("changes") or []},
            **_file_change_info(item, cwd),
        )
    if kind == "mcpToolCall":
        server, tool = item.get("server"), item.get("tool")
        arguments = item.get("arguments")
        return ToolCall(
            tool_use_id=item_id,
            name=f"mcp__{server}__{tool}",
            input=arguments if isinstance(arguments, dict) else {"arguments": arguments},
            title=f"{server}: {tool}",
        )
    if kind == "dynamicToolCall":
        arguments = item.get("arguments")
        arguments = arguments if isinstance(arguments, dict) else {"arguments": arguments}
        name = str(item.get("tool"))
        ours = tools.get(name)
        return ToolCall(
            tool_use_id=item_id,
            name=name,
            input=arguments,
            **(ours.info(arguments) if ours is not None else {"title": name}),
        )
    if kind == "webSearch":
        query = str(item.get("query") or "")
        return ToolCall(
            tool_use_id=item_id,
            name="web_search",
            input={"query": query},
            kind="fetch",
            title=f"Search the web: {query}",
        )
    if kind == "imageView":
        path = str(item.get("path") or "")
        return ToolCall(
            tool_use_id=item_id,
            name="view_image",
            input={"path": path},
            kind="read",
            title=f"View {path}",
            locations=(path,),
        )
    return None


def _tool_result(item_id: str, item: dict[str, Any]) -> ToolResult:
    """The result of an MCP, dynamic, web search or image view item."""
    error = item.get("error")
    if isinstance(error, dict):
        return ToolResult(tool_use_id=item_id, output=str(error.get("message")), is_error=True)
    result = item.get("result") or item.get("contentItems") or item.get("results")
    if isinstance(result, dict):
        result = result.get("content", result)
    if isinstance(result, list):
        output = "\n".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in result
        )
    else:
        output = "" if result is None else str(result)
    failed = item.get("success") is False or item.get("status") == "failed"
    return ToolResult(tool_use_id=item_id, output=output, is_error=failed)


def _dynamic_tool(tool: Tool) -> dict[str, Any]:
    """A Python tool as a Codex dynamic tool, offered to the model up front."""
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
        "deferLoading": False,
    }


def _content_items(output: ToolOutput) -> list[dict[str, Any]]:
    return [
        {"type": "inputText", "text": part}
        if isinstance(part, str)
        else {"type": "inputImage", "imageUrl": f"data:{part.media_type};base64,{part.base64}"}
        for part in output.content
    ] or [{"type": "inputText", "text": ""}]


def _file_change_info(item: dict[str, Any], cwd: str | None) -> dict[str, Any]:
    """ToolInfo fields of a file change item: kind, title, paths and the unified diff."""
    changes = [c for c in item.get("changes") or [] if isinstance(c, dict)]
    kinds = {(c.get("kind") or {}).get("type") for c in changes}
    moved = any((c.get("kind") or {}).get("move_path") for c in changes)
    paths = tuple(str(c.get("path", "")) for c in changes)
    kind: ToolKind = "delete" if kinds == {"delete"} else "move" if moved else "edit"
    verb = {"delete": "Delete", "move": "Move"}.get(kind, "Create" if kinds == {"add"} else "Edit")
    shown = [_relative(p, cwd) for p in paths]
    title = f"{verb} {shown[0]}" if len(shown) == 1 else f"{verb} {len(shown)} files"
    diff = "".join(_change_diff(c, cwd) for c in changes) or None
    return {"kind": kind, "title": title, "locations": paths, "diff": diff}


def _change_diff(change: dict[str, Any], cwd: str | None) -> str:
    """One change of a file change item as a unified diff. Codex gives an added or deleted
    file's whole text and an update's hunks without file headers."""
    path = _relative(str(change.get("path", "")), cwd)
    kind = change.get("kind") or {}
    body = str(change.get("diff") or "")
    if kind.get("type") in ("add", "delete"):
        sign, lines = ("+" if kind["type"] == "add" else "-"), body.splitlines()
        if kind["type"] == "add":
            head, hunk = f"--- /dev/null\n+++ b/{path}\n", f"@@ -0,0 +1,{len(lines)} @@\n"
        else:
            head, hunk = f"--- a/{path}\n+++ /dev/null\n", f"@@ -1,{len(lines)} +0,0 @@\n"
        if not lines:
            return head
        text = "".join(f"{sign}{line}\n" for line in lines)
        if not body.endswith("\n"):
            text += "\\ No newline at end of file\n"
        return head + hunk + text
    target = _relative(str(kind.get("move_path")), cwd) if kind.get("move_path") else path
    if body and not body.endswith("\n"):
        body += "\n"
    return f"--- a/{path}\n+++ b/{target}\n{body}"


def _split_git_diff(diff: str) -> list[tuple[str, str]]:
    """A ``git diff`` text split per file: (path, that file's section)."""
    sections = re.split(r"(?m)^(?=diff --git )", diff)
    found = []
    for section in sections:
        if not section.startswith("diff --git "):
            continue
        target = re.search(r"(?m)^\+\+\+ b/(.+)$", section) or re.search(
            r"(?m)^--- a/(.+)$", section
        )
        if target:
            found.append((target.group(1), section))
    return found


def _repo_root(cwd: Path) -> Path:
    """Where Codex's turn diff paths start: the nearest folder at or above `cwd` holding a
    ``.git`` (Codex renders them relative to the repository root, which need not be the
    working directory), else `cwd`."""
    for folder in (cwd, *cwd.parents):
        if (folder / ".git").exists():
            return folder
    return cwd


def _relative(path: str, cwd: str | None) -> str:
    if cwd:
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(cwd))
    return path


def _command_info(wrapped: str) -> dict[str, Any]:
    """ToolInfo fields of a shell command. Codex shows the command the model asked for
    wrapped as ``/bin/bash -lc '...'``: rules and titles use the model's own command."""
    command = wrapped
    with contextlib.suppress(ValueError):
        parts = shlex.split(wrapped)
        if len(parts) == 3 and Path(parts[0]).name in _SHELLS and parts[1] in ("-lc", "-c"):
            command = parts[2]
    title = command.strip().split("\n", 1)[0]
    return {"kind": "execute", "title": title, "command": command}


def _question(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "question": str(raw.get("question", "")),
        "header": str(raw.get("header", "")),
        "options": [
            {"label": str(o.get("label", "")), "description": str(o.get("description", ""))}
            for o in raw.get("options") or []
            if isinstance(o, dict)
        ],
        "multi_select": False,
    }


def _usage(raw: Mapping[str, Any], prices: Mapping[str, float] | None) -> Usage:
    """One model call's token counts. Codex counts cached and cache-written tokens inside
    ``inputTokens`` (and reasoning inside ``outputTokens``); `Usage` keeps them apart."""
    total_input = int(raw.get("inputTokens") or 0)
    cached = int(raw.get("cachedInputTokens") or 0)
    written = int(raw.get("cacheWriteInputTokens") or 0)
    output = int(raw.get("outputTokens") or 0)
    fresh = max(total_input - cached - written, 0)
    cost = 0.0
    if prices:
        input_price = prices["input"]
        cost = (
            (fresh + written) * input_price
            + cached * prices.get("cached_input", input_price)
            + output * prices["output"]
        ) / 1_000_000
    return Usage(
        input_tokens=fresh,
        output_tokens=output,
        cache_read_tokens=cached,
        cache_creation_tokens=written,
        cost_usd=cost,
    )


def _error_event(error: Mapping[str, Any], *, retrying: bool = False) -> Error:
    """An ``error`` notification (or a failed turn's error) as our `Error`."""
    message = str(error.get("message") or "Codex reported an error")
    details = error.get("additionalDetails")
    if details and details not in message:
        message = f"{message} ({details})"
    raw_kind, status = _error_info(error.get("codexErrorInfo"))
    kind: ErrorKind = _HTTP_ERROR_KINDS.get(status or 0) or _ERROR_KINDS.get(raw_kind, "api_error")
    if retrying:
        return Error(kind="retrying", message=message, retryable=True, raw_kind=raw_kind)
    retryable = kind in ("rate_limit", "overloaded", "connection", "stream_cut") or (
        status is not None and status >= 500
    )
    return Error(kind=kind, message=message, retryable=retryable, raw_kind=raw_kind)


def _error_info(info: Any) -> tuple[str, int | None]:
    """``codexErrorInfo`` is a word, or ``{"variant": {"httpStatusCode": N}}``."""
    if isinstance(info, str):
        return info, None
    if isinstance(info, dict) and len(info) == 1:
        ((variant, detail),) = info.items()
        status = detail.get("httpStatusCode") if isinstance(detail, dict) else None
        return str(variant), status if isinstance(status, int) else None
    return "", None


def _check_prices(raw: Any) -> dict[str, dict[str, float]]:
    if not isinstance(raw, Mapping):
        raise ValueError('prices must map model names to {"input": usd, "output": usd, ...}')
    table: dict[str, dict[str, float]] = {}
    for model, entry in raw.items():
        if not isinstance(entry, Mapping) or not {"input", "output"} <= set(entry):
            raise ValueError(
                f"prices[{model!r}] needs 'input' and 'output' (USD per million tokens), "
                f"optionally 'cached_input'; got {entry!r}"
            )
        bad = sorted(set(entry) - set(_PRICE_KEYS))
        if bad:
            raise ValueError(f"prices[{model!r}]: unknown key(s) {', '.join(bad)}")
        values = {k: float(v) for k, v in entry.items()}
        if any(not math.isfinite(v) or v < 0 for v in values.values()):
            raise ValueError(f"prices[{model!r}]: prices are USD amounts >= 0, got {entry!r}")
        table[str(model)] = values
    return table


def _input_items(prompt: Prompt) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"type": "image", "url": f"data:{image.media_type};base64,{image.base64}"}
        for image in prompt.images
    ]
    items.append({"type": "text", "text": prompt.text})
    return items


def _codex_path(configured: Path | None) -> Path:
    """The binary to run: ``codex_bin``, else the one bundled in `openai-codex-cli-bin`."""
    if configured is not None:
        if not configured.is_file():
            raise FileNotFoundError(
                f"Codex CLI not found at {configured}: pass the path of a `codex` executable "
                "as backend_options['codex_bin'], or leave it out to use the binary bundled "
                "with openai-codex"
            )
        return configured
    try:
        from codex_cli_bin import bundled_codex_path
    except ImportError:
        raise FileNotFoundError(
            "the Codex CLI is not installed: `pip install openai-codex` (its "
            "openai-codex-cli-bin wheel bundles it), or pass backend_options['codex_bin']"
        ) from None
    return bundled_codex_path()


def _launch_argv(codex: Path, config: Mapping[str, Any]) -> list[str]:
    argv = [str(codex)]
    for key, value in config.items():
        argv += ["-c", f"{key}={_toml(value)}"]
    argv += ["app-server", "--listen", "stdio://"]
    return _launcher.argv(argv)


def _process_env(extra: Mapping[str, str], *, bundled: bool) -> dict[str, str]:
    env = {**os.environ, **extra}
    home = env.get("CODEX_HOME")
    if home:
        Path(home).expanduser().mkdir(parents=True, exist_ok=True)
    if bundled:
        # The bundled wheel also ships the helpers Codex expects on PATH (ripgrep).
        from codex_cli_bin import bundled_path_dir

        helpers = bundled_path_dir()
        if helpers is not None:
            env["PATH"] = os.pathsep.join(p for p in (str(helpers), env.get("PATH", "")) if p)
    return env


def _toml(value: Any) -> str:
    """A value as TOML for ``-c key=value`` (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(
        f"a Codex config value must be a str, bool, number, list or dict, not "
        f"{type(value).__name__}: {value!r}"
    )


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jupyter-agentkernel")
    except PackageNotFoundError:
        return "0"
