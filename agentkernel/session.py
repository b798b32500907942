"""`Session`: one persistent, multi-turn conversation with an agent.

The async API is the core; `Session.sync` is a thin blocking facade. Both talk to a `_Core` that
lives on agentkernel's runtime loop (see `_runtime`) and owns the backend. The core holds no
reference back to the `Session`, so dropping the last reference to a session finalizes it and
ends its agent process.

Data flows one way: backend -> `_Core.emit` (stamps session id, turn, sequence) -> turn record,
store, subscribers, and the stream of the caller that started the turn. Decisions flow back
through the `PermissionRequest` / `Question` events themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import inspect
import itertools
import logging
import os
import queue
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import _runtime
from ._event_log import EventLog
from ._redact import Redactor, StreamRedactor, redactor
from .backends import (
    DEFAULT_BACKEND,
    Backend,
    BackendConfig,
    CloseResult,
    Image,
    Prompt,
    available_backends,
    load_backend,
)
from .errors import BudgetExceededError, SessionClosedError, TurnFailedError
from .events import (
    Compaction,
    Decision,
    Error,
    ErrorKind,
    Event,
    PermissionDecided,
    PermissionRequest,
    PlanUpdate,
    Question,
    SessionStarted,
    Task,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnStarted,
    Usage,
)
from .hooks import SessionHooks
from .permissions import PermissionMode, PermissionPolicy, notebook_warning, validate_mode
from .store import (
    MEMORY,
    SessionRecord,
    Store,
    StoredTurn,
    StoreWarning,
    StoreWriteError,
    default_store_path,
)
from .tools import Tool, ToolBox, ToolOutput

log = logging.getLogger("agentkernel")

_DELTA_KIND: dict[type[Event], str] = {TextDelta: "text", ThinkingDelta: "thinking"}
_DELTA_OF_KIND: dict[str, type[TextDelta | ThinkingDelta]] = {
    "text": TextDelta,
    "thinking": ThinkingDelta,
}
_ENDS_BLOCKS = (Text, Thinking, ToolCall, Error)
"""Events after which no delta continues the text or thinking block of their scope (their
agent or sub-agent): the rest a stream held back is released before them. Other events
(token counts, usage, plans) arrive in the middle of a block and leave it open."""

PermissionHandler = Callable[
    [PermissionRequest | Question], Decision | Awaitable[Decision | None] | None
]
"""Called for each request the policy cannot settle. Return a `Decision`, or resolve the
request yourself (``request.allow()``) now or later and return None."""

EventHandler = Callable[[Event], Any]
TurnStatus = Literal["running", "completed", "interrupted", "error", "refused"]

DEFAULT_IDLE_TIMEOUT_S = 600.0
"""How long a session may sit idle before its agent process is parked (see `_Core.park`):
a kernel with twenty sessions should not keep twenty CLIs of ~200 MB each alive forever."""
_INTERRUPT_GRACE_S = 5.0
"""How long an interrupted turn may take to end before the agent process is killed."""
_DELTA_LINGER_S = 0.002
_DELTA_BATCH = 256
"""Streamed deltas are emitted together, at the latest `_DELTA_LINGER_S` after the first of
them, when `_DELTA_BATCH` wait, or before any other event: each delta's redaction, stamping,
storing and cross-thread hand-off (a wake-up of the consumer's loop per delta) costs more one
by one than the work itself, and 2 ms is far below what a person (or a 20-per-second view)
can tell. Every delta is still its own event, in order."""
_GATHER_S = 0.02
_URGENT = (TurnEnded, PermissionRequest, Question)
"""`stream` lets events gather for `_GATHER_S` before each batch it yields (each wake-up of
the caller's loop costs its thread a wait for the GIL), cut short by an `_URGENT` event:
20 ms is below what a person, or a view that redraws 20 times a second, can tell."""
_WAKE_INTERVAL_S = 0.2
"""Stream consumers wake at least this often, so a kernel interrupt (a cancel scheduled without
waking the loop) is heard promptly even while nothing streams."""


@dataclass
class TurnRecord:
    """One turn: its prompt, every event, and how it ended. ``events`` is a sequence (an
    `EventLog`: kept so the garbage collector skips its deltas); ``list(record.events)`` for a
    list."""

    number: int
    prompt: str
    status: TurnStatus = "running"
    events: EventLog = field(default_factory=EventLog)
    usage: Usage = field(default_factory=Usage)
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    model_calls: int = 0
    stop_reason: str = ""
    error: str | None = None
    backend_session_id: str | None = None
    replay_key: str | None = None
    """What the turn was asked, as a digest (`agentkernel.replay`)."""
    replayed_from: str | None = None
    """``SESSION_ID:TURN`` of the recorded turn this one replays; None: the agent ran it."""

    def __post_init__(self) -> None:
        if not isinstance(self.events, EventLog):  # (given as a list)
            self.events = EventLog(self.events)

    @classmethod
    def stored(cls, turn: StoredTurn, events: list[Event]) -> TurnRecord:
        """The record of a turn read back from the store, with its events."""
        return cls(
            number=turn.number,
            prompt=turn.prompt,
            status=turn.status,
            events=EventLog(events),
            usage=turn.usage,
            started_at=turn.started_at,
            duration_s=turn.duration_s or 0.0,
            model_calls=turn.model_calls,
            stop_reason=turn.stop_reason or "",
            error=turn.error,
            replay_key=turn.replay_key,
            replayed_from=turn.replayed_from,
        )

    @property
    def text(self) -> str:
        """The turn's text blocks, joined: what the agent itself said (a sub-agent's words stay
        with its tool call)."""
        return "\n\n".join(
            e.text
            for e in self.events.not_deltas()
            if isinstance(e, Text) and e.parent_tool_use_id is None
        )


class Metadata(dict[str, Any]):
    """`Session.metadata`: a dict whose every change is saved with the session."""

    def __init__(self, initial: dict[str, Any], *, saved: Callable[[dict[str, Any]], None]):
        super().__init__(initial)
        self._saved = saved

    def _changed(self) -> None:
        self._saved(self)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed()

    def __ior__(self, other: Any) -> Metadata:  # type: ignore[override,misc]
        self.update(other)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed()
        return value

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._changed()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._changed()
        return value

    def clear(self) -> None:
        super().clear()
        self._changed()


@dataclass(frozen=True)
class Stats:
    """Totals over the session's turns; ``turns`` counts the completed ones."""

    turns: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float
    wall_time_s: float
    model_calls: int


@dataclass
class _Subscription:
    kind: str
    handler: EventHandler
    loop: asyncio.AbstractEventLoop | None


@dataclass
class _TurnState:
    record: TurnRecord
    sink: Callable[[EventLog], None] | None
    """Gets the turn's events as they are emitted, a batch at a time."""
    can_ask: bool
    mode: PermissionMode | None
    handler: PermissionHandler | None
    ended: bool = False
    compact: bool = False
    """A compaction, not a prompt: the backend compacts (``prompt.text``: instructions)."""


class _Core:
    """The session's state on the runtime loop. Only runtime-loop code mutates it."""

    def __init__(
        self,
        session_id: str,
        backend: str | type[Backend],
        config: BackendConfig,
        policy: PermissionPolicy,
        permission_handler: PermissionHandler | None,
        max_tokens: int | None,
        store: Store | None,
    ) -> None:
        self.session_id = session_id
        self.store = store
        self.redact: Redactor = redactor(config.env)
        self.streams = StreamRedactor(self.redact)
        """Streamed text, redacted as a stream: per (kind, parent_tool_use_id)."""
        self.delta_key: tuple[str, str | None] | None = None
        """The stream of the last delta: the next delta of it opens no other stream."""
        self.pending_deltas: list[TextDelta | ThinkingDelta] = []
        """Deltas not emitted yet (at most `_DELTA_LINGER_S` old)."""
        self.delta_timer: asyncio.TimerHandle | None = None
        self.store_warned = False
        self._backend_cls = backend
        self.backend: Backend | None = None
        self.config = config
        self.policy = policy
        self.permission_handler = permission_handler
        self.max_tokens = max_tokens
        self.backend_session_id: str | None = config.resume
        self.state: Literal["new", "connected", "disconnected", "closed"] = "new"
        self.history: list[TurnRecord] = []
        self.subscriptions: list[_Subscription] = []
        self.current: _TurnState | None = None
        self.seq = 0
        self.turns_started = 0
        self.pending: dict[str, PermissionRequest | Question] = {}
        """Open requests (live, answerable), by request id."""
        self.hooks = SessionHooks()
        self.earlier: list[TurnRecord] = []
        """Turns of conversations cleared away: they still count in stats and budgets."""
        self.reported_model: str | None = None
        self.tasks: list[Task] = []
        self.children: dict[str, SessionRecord] = {}
        """Sub-agent sessions, by the parent tool call that runs them."""
        self.calls: dict[str, ToolCall] = {}
        self.summary: str | None = None
        self.close_result: CloseResult | None = None
        self.idle = threading.Event()
        self.idle.set()
        self._turn_lock: asyncio.Lock | None = None
        self._connect_lock: asyncio.Lock | None = None
        self.idle_timeout: float | None = None
        """Seconds idle before the agent process is parked (None: never)."""
        self.notebooks: tuple[str, ...] = ()
        """Notebook files open in this kernel: the agent's file tools may not write them."""
        self.parked = False
        self._park_timer: asyncio.TimerHandle | None = None
        self.reseed = False
        """The history holds replayed turns no agent conversation continues exactly: the next
        turn starts a new one, its prompt preceded by that history (`Session.record_replay`)."""
        self.before_replay: tuple[TurnRecord, str | None, bool, bool, str | None] | None = None
        """The last replayed turn, and the conversation, fork, reseed and reported model
        before it (`Session.take_back_replay`)."""

    @property
    def backend_cls(self) -> type[Backend]:
        """The backend class, imported when first needed: a session that only replays
        recorded turns never imports an agent SDK (which takes seconds for some)."""
        if isinstance(self._backend_cls, str):
            self._backend_cls = load_backend(self._backend_cls)
        return self._backend_cls

    # -- the BackendHost side --------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if type(event) in _DELTA_KIND:
            # Deltas wait a moment and go on together: redacted as one run, stamped, stored
            # and handed to the stream's consumer in one go (see `_DELTA_LINGER_S`).
            pending = self.pending_deltas
            pending.append(event)  # type: ignore[arg-type]
            if len(pending) >= _DELTA_BATCH:
                self.flush_deltas()
            elif self.delta_timer is None:
                self.delta_timer = asyncio.get_running_loop().call_later(
                    _DELTA_LINGER_S, self.flush_deltas
                )
            return
        self.flush_deltas()  # every event in order: the deltas before it first
        self._emit_batch(self._redact_event(event))

    def flush_deltas(self) -> None:
        """Emit the deltas that wait (the timer's, a full batch's, or the next event's
        call): each run of one stream is redacted in one piece by `StreamRedactor.feed_run`,
        which passes ordinary text through as it came (the same delta objects) and holds
        back only the beginning of a possible secret; a delta whose text is all held back is
        dropped. The streams of a scope are closed only when the stream changes."""
        if self.delta_timer is not None:
            self.delta_timer.cancel()
            self.delta_timer = None
        pending = self.pending_deltas
        if not pending:
            return
        self.pending_deltas = []
        out: list[Event] = []
        start = 0
        count = len(pending)
        while start < count:
            first = pending[start]
            cls, scope = type(first), first.parent_tool_use_id
            end = start + 1
            while (
                end < count
                and type(pending[end]) is cls
                and (pending[end].parent_tool_use_id == scope)
            ):
                end += 1
            kind = _DELTA_KIND[cls]
            key = (kind, scope)
            if key != self.delta_key:
                self.delta_key = key
                out += self._close_streams(scope, keep=kind)  # text after thinking ends it
            run = pending[start:end] if start or end < count else pending
            pieces = [delta.text for delta in run]
            texts = self.streams.feed_run(key, pieces)
            if texts is pieces:  # nothing held back or redacted: the run goes on as it came
                out += run
            else:
                for delta, text in zip(run, texts, strict=True):
                    if text is delta.text:
                        out.append(delta)
                    elif text:
                        out.append(cls(text=text, parent_tool_use_id=scope))
            start = end
        self._emit_batch(out)

    def _redact_event(self, event: Event) -> list[Event]:
        """`event` (not a delta) redacted, after the rest of any text stream it ends: one
        redaction per event, here, so nothing downstream (view, store, history, handlers)
        sees a secret."""
        if isinstance(event, TurnEnded):
            out = self._close_streams(None, every=True)
        elif isinstance(event, _ENDS_BLOCKS):
            out = self._close_streams(event.parent_tool_use_id)
        else:
            out = []
        changed = self._redacted(event)
        out.append(dataclasses.replace(event, **changed) if changed else event)
        return out

    def _close_streams(
        self, scope: str | None, keep: str | None = None, *, every: bool = False
    ) -> list[Event]:
        """Flush the open streams of `scope` (of every scope if `every`), but for kind
        `keep`: each rest becomes the last delta of its block."""
        out: list[Event] = []
        for key in self.streams.open_keys:
            kind, key_scope = key  # type: ignore[misc]
            if not every and (key_scope != scope or kind == keep):
                continue
            rest = self.streams.flush(key)
            if rest:
                out.append(_DELTA_OF_KIND[kind](text=rest, parent_tool_use_id=key_scope))
        return out

    def _emit_batch(self, events: list[Event]) -> None:
        """Stamp redacted events and hand them on: turn record, store, the stream's consumer,
        subscribers. Stamped in place, not copied: each is the backend's fresh object, seen by
        no one yet, and a copy per delta (thousands a second) costs more than the rest."""
        if not events:
            return
        session_id = self.session_id
        current = self.current
        turn = current.record.number if current else 0
        seq = self.seq
        for event in events:
            seq += 1
            # Into the instance's dict (frozen for everyone else): a third of the cost of
            # `object.__setattr__`; deltas come with one (`events.text_delta`).
            envelope = event.__dict__
            envelope["session_id"] = session_id
            envelope["turn"] = turn
            envelope["seq"] = seq
            if type(event) not in _DELTA_KIND:  # a delta has no state to track
                self.seq = seq
                if isinstance(event, SessionStarted):
                    self._started(event)
                self._track(event)
            parent = event.parent_tool_use_id
            if parent and parent not in self.children:
                self._child(parent)
        self.seq = seq
        # From here on the deltas travel as their field dicts, which the garbage collector
        # does not track: the store's queue and the stream's hand-off hold a batch for up to
        # tens of ms, long enough for its objects to reach the oldest generation and set off
        # walks of the whole heap (see `agentkernel._event_log`).
        log = EventLog(events)
        store = self.store
        if store is not None:
            try:
                store.extend(log)
            except Exception as exc:
                self._store_failed(store, exc)
            else:
                if self.store_warned or store.problem is not None:
                    self._store_state(store)
        if current is not None:
            record = current.record
            record.events += log
            if isinstance(events[-1], TurnEnded):
                current.ended = True
                if record.status == "running":  # (a refused turn is already settled)
                    self._finish_record(record)  # final before anyone sees the TurnEnded
            if current.sink is not None:
                current.sink(log)
        if self.subscriptions:
            for event in events:
                for sub in list(self.subscriptions):
                    if sub.kind in ("*", event.type):
                        _dispatch(sub, event)

    def workspace(self) -> Path:
        """The session's own directory, beside its store (created on first use)."""
        store_path = getattr(self.store, "path", MEMORY)
        if store_path != MEMORY:
            base = Path(store_path).parent
        else:
            base = Path(tempfile.gettempdir()) / f"agentkernel-{os.getuid()}"
        folder = base / "workspaces" / self.session_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _started(self, event: SessionStarted) -> None:
        if event.backend_session_id:
            self.backend_session_id = backend_id = event.backend_session_id
            self.persist(lambda s: s.update_session(self.session_id, backend_session_id=backend_id))
        if event.model:
            self.reported_model = event.model

    def _track(self, event: Event) -> None:
        """Keep the session's state (tasks, tool calls, summary) as events report it."""
        if isinstance(event, PlanUpdate) and event.parent_tool_use_id is None:
            self.tasks = [Task.from_item(n, item) for n, item in enumerate(event.items, 1)]
        elif isinstance(event, ToolCall):
            self.calls[event.tool_use_id] = event
        elif isinstance(event, ToolResult):
            call = self.calls.pop(event.tool_use_id, None)
            _spawn(self.hooks.tool_done(call, event))
        elif isinstance(event, Compaction) and event.summary:
            self.summary = summary = event.summary
            self.persist(lambda s: s.update_session(self.session_id, summary=summary))

    def _child(self, parent_tool_use_id: str) -> None:
        """A sub-agent started: record it as a child session of this one."""
        call = self.calls.get(parent_tool_use_id)
        parent = self.store.get_session(self.session_id) if self.store is not None else None
        child = SessionRecord(
            backend=parent.backend if parent else "",
            name=f"subagent-{parent_tool_use_id[-8:]}",
            title=(call.title or call.name) if call else None,
            kind="subagent",
            parent_id=self.session_id,
            root_id=(parent.root_id or parent.id) if parent else self.session_id,
            spawn_depth=(parent.spawn_depth + 1) if parent else 1,
            metadata={"parent_tool_use_id": parent_tool_use_id},
            cwd=self.config.cwd,
        )
        self.children[parent_tool_use_id] = child
        self.persist(lambda s: s.create_session(child))

    def _redacted(self, event: Event) -> dict[str, Any]:
        """Payload fields holding a secret, redacted: nothing downstream (view, store, history,
        handlers) ever sees the secret."""
        changed: dict[str, Any] = {}
        for name in _payload_fields(type(event)):
            value = getattr(event, name)
            if isinstance(value, str):
                clean: Any = self.redact.text(value)
            elif isinstance(value, (dict, list)):
                clean = self.redact.obj(value)
            else:
                continue
            if clean != value:
                changed[name] = clean
        return changed

    def persist(self, write: Callable[[Store], object]) -> None:
        """Write to the store (``write(store)``). A store that cannot write keeps the write
        queued and retries it by itself; the first failure of a spell warns, saying what is
        not stored yet, and the session carries on with the same store. A write the store
        refuses (a bug) warns too; neither ends the session."""
        store = self.store
        if store is None:
            return
        try:
            write(store)
        except Exception as exc:
            self._store_failed(store, exc)
        else:
            self._store_state(store)

    def _store_state(self, store: Store) -> None:
        """Warn once a spell that the store cannot write (found by a queued write, which the
        store's own thread made), and be ready to warn again once it works."""
        problem = store.problem
        if problem is None:
            self.store_warned = False
        elif not self.store_warned:
            self.store_warned = True
            warnings.warn(StoreWarning(problem), stacklevel=4)

    def _store_failed(self, store: Store, exc: Exception) -> None:
        if isinstance(exc, StoreWriteError):  # the store's `problem` says what is not stored
            self._store_state(store)
        else:
            warnings.warn(
                StoreWarning(f"the session store {store.path} refused a write: {exc}"),
                stacklevel=3,
            )

    async def decide(self, request: PermissionRequest | Question) -> Decision:
        current = self.current
        can_ask = current is not None and (
            current.can_ask or (current.handler or self.permission_handler) is not None
        )
        mode = current.mode if current else None
        decision: Decision | None = None
        if isinstance(request, PermissionRequest):
            warning = notebook_warning(request, self.notebooks)
            if warning is not None:
                # The open notebook: asked with the warning whatever the mode or rules say.
                request = dataclasses.replace(request, reason=warning)
                if not can_ask:
                    decision = Decision("deny", reason=warning, by="policy")
            else:
                decision = await self.hooks.decide(request)
                if decision is None:
                    decision = self.policy.decide(request, can_ask=can_ask, mode=mode)
        elif not can_ask or (mode or self.policy.mode) == "deny":
            decision = Decision(
                "deny",
                reason="Nothing can answer questions in this session (no front end or handler); "
                "continue with your best judgement and say what you assumed.",
                by="policy",
            )
        if decision is None:
            decision = await self._ask(request, current.handler if current else None)
        if isinstance(request, PermissionRequest) and decision.allowed and decision.always:
            self.policy.remember(request)
        self.emit(
            PermissionDecided(
                request_id=request.request_id,
                tool_name=request.tool_name
                if isinstance(request, PermissionRequest)
                else "question",
                behavior=decision.behavior,
                always=decision.always,
                reason=decision.reason,
                by=decision.by,
            )
        )
        return decision

    async def _ask(
        self, request: PermissionRequest | Question, turn_handler: PermissionHandler | None
    ) -> Decision:
        future: concurrent.futures.Future[Decision] = concurrent.futures.Future()
        request = dataclasses.replace(request, _decision=future)
        try:
            self.emit(request)
            # emit() stamped a copy; the handler must see the same live object the stream got.
            live = self.current.record.events[-1] if self.current else request
            self.pending[request.request_id] = live  # type: ignore[assignment]
            handler = turn_handler or self.permission_handler
            if handler is not None:
                outcome = handler(live)  # type: ignore[arg-type]
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                if isinstance(outcome, Decision):
                    live.resolve(outcome)  # type: ignore[union-attr]
            return await asyncio.wrap_future(future)
        finally:
            self.pending.pop(request.request_id, None)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def turn_lock(self) -> asyncio.Lock:
        if self._turn_lock is None:
            self._turn_lock = asyncio.Lock()
        return self._turn_lock

    async def connect(self) -> None:
        """Connect once: an explicit connect still starting when a turn arrives is awaited,
        not started again."""
        async with self.connect_lock:
            await self._connect_locked()

    @property
    def connect_lock(self) -> asyncio.Lock:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        return self._connect_lock

    async def _connect_locked(self) -> None:
        if self.state == "closed":
            raise SessionClosedError(
                f"session {self.session_id} is closed; start a new Session, or "
                f"Session.resume({self.backend_session_id!r}) to continue its conversation"
            )
        if self.state == "connected" and self._backend_alive():
            return
        config = dataclasses.replace(
            self.config, resume=self.backend_session_id, workspace=str(self.workspace())
        )
        if self.backend is not None:
            stale, self.backend = self.backend, None
            with contextlib.suppress(Exception):
                await stale.close()
        self.backend = self.backend_cls()
        try:
            await self.backend.connect(config, self)
        except BaseException:
            self.backend = None
            raise
        self.state = "connected"
        self.parked = False
        # Forking happens once: reconnects continue the forked conversation itself.
        self.config = dataclasses.replace(self.config, fork=False)

    def _backend_alive(self) -> bool:
        """Whether the agent process still runs; one that died (a crash, a signal) is
        reconnected on the next turn, resuming the conversation."""
        if self.backend is None:
            return False
        return bool(self.backend.pids()) or getattr(self.backend, "in_process", False)

    async def disconnect(self, final: bool = False) -> CloseResult:
        self._cancel_park()
        if self.current is not None:
            await self.interrupt()
        backend, self.backend = self.backend, None
        result = await backend.close() if backend is not None else CloseResult(None)
        self.state = "closed" if final else "disconnected"
        self.close_result = result
        self.persist(Store.flush)  # the queued end of the last turn is on disk when this returns
        return result

    def kill(self) -> None:
        if self.backend is not None:
            self.backend.kill()
        self._deny_pending("The session was killed.")
        self.state = "closed"

    # -- turns -------------------------------------------------------------------------------

    async def run_turn(self, prompt: Prompt, turn: _TurnState) -> TurnRecord:
        self._cancel_park()
        async with self.turn_lock:
            self.idle.clear()
            try:
                return await self._run_turn_locked(prompt, turn)
            finally:
                self.current = None
                self.idle.set()
                self._schedule_park()

    # -- parking: an idle session holds no agent process -------------------------------------

    def _schedule_park(self) -> None:
        if self.idle_timeout is None or self.state != "connected":
            return
        self._cancel_park()
        loop = asyncio.get_running_loop()
        self._park_timer = loop.call_later(self.idle_timeout, lambda: _spawn(self.park()))

    def _cancel_park(self) -> None:
        if self._park_timer is not None:
            self._park_timer.cancel()
            self._park_timer = None

    async def park(self) -> None:
        """End the idle agent process; the next turn starts a new one that resumes the
        conversation. Never while a turn runs or a request waits (the turn lock and the check
        below), and only once the conversation has an id to resume."""
        if self.turn_lock.locked() or self.pending or not self.backend_session_id:
            return
        async with self.turn_lock:
            if self.state != "connected" or self.backend is None or self.current is not None:
                return
            backend, self.backend = self.backend, None
            with contextlib.suppress(Exception):
                await backend.close()
            self.state = "new"
            self.parked = True

    async def _run_turn_locked(self, prompt: Prompt, turn: _TurnState) -> TurnRecord:
        if self.state in ("disconnected", "closed"):
            raise SessionClosedError(
                f"session {self.session_id} is {self.state}: "
                + (
                    "call `await session.connect()` to reconnect (the conversation continues)"
                    if self.state == "disconnected"
                    else "start a new Session, or resume its conversation with "
                    f"Session.resume({self.backend_session_id!r})"
                )
            )
        self.flush_deltas()  # late deltas of the turn before belong to it
        record = turn.record
        self.turns_started += 1
        record.number = self.turns_started
        self.history.append(record)
        self.current = turn
        self.redact = redactor(self.config.env)
        self.streams.redactor = self.redact
        # Queued, not written: the store's thread writes the turn's row with its first events,
        # while the prompt travels to the agent.
        self.persist(
            lambda s: s.start_turn(self.session_id, record.number, record.prompt, wait=False)
        )
        refusal = self._budget_refusal()
        if refusal:
            record.status, record.error = "refused", refusal
            self.emit(Error(kind="budget", message=refusal))
            self.emit(TurnEnded(stop_reason="budget", is_error=True))
            self.persist(
                lambda s: s.end_turn(
                    self.session_id,
                    record.number,
                    "refused",
                    error=refusal,
                    stop_reason="budget",
                    wait=False,
                )
            )
            raise BudgetExceededError(refusal)
        self.emit(TurnStarted(prompt=record.prompt))
        started = time.monotonic()
        try:
            await self._send_to_backend(prompt, turn)
        except Exception as exc:  # becomes the turn's Error event
            if not turn.ended:
                self.emit(Error(kind=_error_kind(exc), message=str(exc)))
                self.emit(
                    TurnEnded(
                        stop_reason="error", is_error=True, duration_s=time.monotonic() - started
                    )
                )
        finally:
            if not turn.ended:
                self.emit(
                    TurnEnded(stop_reason="interrupted", duration_s=time.monotonic() - started)
                )
        await self.hooks.turn_ended(record)
        return record

    async def _send_to_backend(self, prompt: Prompt, turn: _TurnState) -> None:
        """Run the turn on a live backend. An agent process that died since the last turn (a
        crash, a signal) is reconnected first; one found dead only when the prompt could not
        be delivered is reconnected once, and the prompt sent again."""
        for attempt in (1, 2):
            if self.state == "new" or not self._backend_alive():
                await self.connect()
            assert self.backend is not None
            delivered = len(turn.record.events)
            try:
                if turn.compact:
                    await self.backend.compact(prompt.text or None)  # type: ignore[attr-defined]
                else:
                    await self.backend.run_turn(prompt)
                return
            except ConnectionError:
                self.flush_deltas()
                nothing_arrived = len(turn.record.events) == delivered
                if attempt == 2 or not nothing_arrived or turn.ended:
                    raise
                log.info("the agent process was gone; reconnecting and sending the turn again")
                self.state = "new"

    def _finish_record(self, record: TurnRecord) -> None:
        """Settle the record from its TurnEnded (the last event) and queue its end for the
        store: when the turn's consumer, a subscriber or ``history`` sees the TurnEnded, the
        record already says how the turn ended."""
        ended = record.events[-1]
        assert isinstance(ended, TurnEnded)
        # A retry notice followed by success does not make the turn an error; nor does
        # reaching the budget the user set: that is a stop, not a failure.
        errors = [
            e
            for e in record.events.not_deltas()
            if isinstance(e, Error) and e.kind not in ("retrying", "budget")
        ]
        record.usage = ended.usage
        record.duration_s = ended.duration_s
        record.model_calls = ended.model_calls
        record.stop_reason = ended.stop_reason
        record.backend_session_id = self.backend_session_id
        if ended.stop_reason == "interrupted":
            record.status = "interrupted"
        elif ended.is_error or errors:
            record.status = "error"
            record.error = "; ".join(f"{e.kind}: {e.message}" for e in errors) or ended.result
        else:
            record.status = "completed"
        self.persist(
            lambda s: s.end_turn(
                self.session_id,
                record.number,
                record.status,
                usage=record.usage,
                duration_s=record.duration_s,
                model_calls=record.model_calls,
                error=record.error,
                stop_reason=record.stop_reason,
                wait=False,
            )
        )

    def _budget_refusal(self) -> str | None:
        budget_usd = self.config.max_budget_usd
        if budget_usd is None and self.max_tokens is None:
            return None
        spent = self.totals()
        if budget_usd is not None and spent.cost_usd >= budget_usd:
            return (
                f"budget reached: this session has spent ${spent.cost_usd:.4f} of its "
                f"max_budget_usd=${budget_usd:.4f}, so the turn was not sent. Raise the budget "
                "(session.max_budget_usd = ...) or start a new session."
            )
        if self.max_tokens is not None and spent.total_tokens >= self.max_tokens:
            return (
                f"budget reached: this session has used {spent.total_tokens} tokens of its "
                f"max_tokens={self.max_tokens}, so the turn was not sent. Raise the budget "
                "(session.max_tokens = ...) or start a new session."
            )
        return None

    def totals(self) -> Usage:
        """Usage of every turn this session ever ran, cleared conversations included."""
        total = Usage()
        for record in (*self.earlier, *self.history):
            total = total + record.usage
        return total

    async def interrupt(self) -> None:
        if self.current is None:
            return
        self._deny_pending("Interrupted by the user.")
        backend = self.backend
        if backend is None:
            return
        try:
            await asyncio.wait_for(backend.interrupt(), _INTERRUPT_GRACE_S)
            await asyncio.wait_for(self._turn_over(), _INTERRUPT_GRACE_S)
        except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
            log.warning("agent did not stop after an interrupt (%s); killing its process", exc)
            backend.kill()

    async def _turn_over(self) -> None:
        while self.current is not None and not self.current.ended:
            await asyncio.sleep(0.01)

    def _deny_pending(self, reason: str) -> None:
        for request in list(self.pending.values()):
            request.resolve(Decision("deny", reason=reason, by="user"))


@functools.cache
def _payload_fields(cls: type[Event]) -> tuple[str, ...]:
    """The fields of an event class that may carry text from the agent (not the envelope)."""
    envelope = {"session_id", "turn", "seq", "timestamp"}
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if not f.name.startswith("_") and f.name not in envelope
    )


def _dispatch(sub: _Subscription, event: Event) -> None:
    def invoke() -> None:
        try:
            outcome = sub.handler(event)
            if inspect.iscoroutine(outcome):
                _spawn(outcome)
        except Exception:  # a broken handler must not break the turn
            log.exception("event handler %r failed on %s", sub.handler, event.type)

    if sub.loop is None or sub.loop is _runtime.loop():
        invoke()
    elif not sub.loop.is_closed():
        sub.loop.call_soon_threadsafe(invoke)


def _check_budget(label: str, value: float | None) -> None:
    """One check for a budget, at creation and on every change."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError(f"{label} must be a number >= 0 or None, not {value!r}")


def _error_kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, FileNotFoundError):
        return "cli_missing"
    if isinstance(exc, ConnectionError):
        return "cli_crashed"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, PermissionError):
        return "auth"
    return "internal"


def _finalize(core: _Core) -> None:
    """Runs when a Session is garbage-collected: its agent process must not outlive it."""
    if core.state in ("connected", "new") and core.backend is not None:
        with contextlib.suppress(RuntimeError):
            _runtime.loop().call_soon_threadsafe(_close_soon, core)


def _close_soon(core: _Core) -> None:
    _spawn(core.disconnect(final=True))


_background: set[asyncio.Future[Any]] = set()


def _spawn(coro: Awaitable[Any]) -> None:
    """Run `coro` in the background on the current loop, keeping it referenced until done."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


_live_cores: weakref.WeakSet[_Core] = weakref.WeakSet()


async def _close_all() -> None:
    await asyncio.gather(
        *(core.disconnect(final=True) for core in list(_live_cores) if core.state != "closed"),
        return_exceptions=True,
    )


_runtime.on_shutdown(_close_all)


class Session:
    """A persistent, multi-turn conversation with a coding agent.

    ``await session.send("...")`` runs a turn and returns its `TurnRecord`;
    ``async for event in session.stream("...")`` yields its events as they arrive. The first turn
    connects (or call `connect`). Blocking versions of everything: ``session.sync``.

    Permissions: ``permission_mode`` is ``ask`` (a person or handler decides), ``deny``,
    ``allow-reads`` or ``allow-all``. Left unset, a turn asks when something can answer (a
    stream consumer, or a ``permission_handler``) and denies otherwise.
    """

    def __init__(
        self,
        backend: str | type[Backend] = DEFAULT_BACKEND,
        *,
        model: str | None = None,
        reasoning_effort: str | None = None,
        permission_mode: PermissionMode | None = None,
        permission_handler: PermissionHandler | None = None,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        title: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_budget_usd: float | None = None,
        max_tokens: int | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT_S,
        resume: str | None = None,
        fork: bool = False,
        parent_id: str | None = None,
        backend_options: dict[str, Any] | None = None,
        store: Store | bool = True,
        notebook_path: str | None = None,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        shared_tools: bool = True,
    ) -> None:
        _check_budget("max_budget_usd", max_budget_usd)
        _check_budget("max_tokens", max_tokens)
        if cwd is not None and not Path(cwd).is_dir():
            raise NotADirectoryError(f"cwd {str(cwd)!r} is not an existing directory")
        self.id = uuid.uuid4().hex
        if isinstance(backend, str) and backend not in available_backends():
            load_backend(backend)  # raises, listing the backends there are
        self.backend_name = backend if isinstance(backend, str) else backend.name
        self._title = title
        self._name = name or self.id[:8]
        self.parent_id = parent_id
        self.notebook_path = notebook_path
        self._tools = ToolBox(tools, shared_tools=shared_tools)
        config = BackendConfig(
            model=model,
            reasoning_effort=reasoning_effort,
            cwd=str(cwd) if cwd is not None else None,
            env=dict(env or {}),
            resume=resume,
            fork=fork,
            max_budget_usd=max_budget_usd,
            tools=self._tools.tools(),
            options=dict(backend_options or {}),
        )
        self._core = _Core(
            self.id,
            backend,
            config,
            PermissionPolicy(validate_mode(permission_mode)),
            permission_handler,
            max_tokens,
            _open_store(store),
        )
        self.metadata = Metadata(metadata or {}, saved=self._save_metadata)
        self.compact_instructions: str | None = None
        if idle_timeout is not None and idle_timeout < 0:
            raise ValueError(f"idle_timeout must be seconds >= 0 or None, not {idle_timeout!r}")
        self._core.idle_timeout = idle_timeout
        self._core.notebooks = (notebook_path,) if notebook_path else ()
        """What `compact` asks the summary to keep, unless given there."""
        created = self._record(kind="fork" if fork else "main")
        self._core.persist(lambda s: s.create_session(created))
        _live_cores.add(self._core)
        self._finalizer = weakref.finalize(self, _finalize, self._core)
        self._tools.on_change(self._tools_changed)
        self.sync = SyncSession(self)

    def _save_metadata(self, metadata: dict[str, Any]) -> None:
        saved = dict(metadata)
        self._core.persist(lambda s: s.update_session(self.id, metadata=saved))

    def __repr__(self) -> str:
        return (
            f"<Session {self.name!r} backend={self.backend_name} id={self.id[:8]} "
            f"state={self._core.state} turns={len(self._core.history)}>"
        )

    # -- state -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        self._core.persist(lambda s: s.update_session(self.id, name=value))

    @property
    def title(self) -> str | None:
        return self._title

    @title.setter
    def title(self, value: str | None) -> None:
        self._title = value
        self._core.persist(lambda s: s.update_session(self.id, title=value))

    @property
    def store(self) -> Store | None:
        """Where this session is kept (None: memory only)."""
        return self._core.store

    def _record(self, kind: str) -> SessionRecord:
        config = self._core.config
        store = self._core.store
        parent = store.get_session(self.parent_id) if (self.parent_id and store) else None
        return SessionRecord(
            id=self.id,
            backend=self.backend_name,
            name=self._name,
            backend_session_id=config.resume,
            title=self._title,
            kind=kind,
            parent_id=self.parent_id,
            root_id=(parent.root_id or parent.id) if parent else None,
            spawn_depth=(parent.spawn_depth + 1) if parent else 0,
            model=config.model,
            reasoning_effort=config.reasoning_effort,
            metadata=self.metadata,
            budget_usd=config.max_budget_usd,
            budget_tokens=self._core.max_tokens,
            notebook_path=self.notebook_path,
            cwd=config.cwd,
        )

    @property
    def backend_session_id(self) -> str | None:
        """The backend's own session/thread id (what `resume` takes); kept when a turn fails."""
        return self._core.backend_session_id

    @property
    def model(self) -> str | None:
        """The model the agent says it uses (its init message), else the one asked for."""
        return self._core.reported_model or self._core.config.model

    @property
    def reasoning_effort(self) -> str | None:
        return self._core.config.reasoning_effort

    @property
    def cwd(self) -> str | None:
        return self._core.config.cwd

    @property
    def backend_options(self) -> dict[str, Any]:
        """The backend-specific options the session was made with (a copy)."""
        return dict(self._core.config.options)

    @property
    def permission_mode(self) -> PermissionMode | None:
        return self._core.policy.mode

    @permission_mode.setter
    def permission_mode(self, mode: PermissionMode | None) -> None:
        self._core.policy.mode = validate_mode(mode)

    @property
    def permissions(self) -> PermissionPolicy:
        """The policy, with the "always allow" rules given so far (``.rules``, ``.clear()``)."""
        return self._core.policy

    @property
    def permission_handler(self) -> PermissionHandler | None:
        return self._core.permission_handler

    @permission_handler.setter
    def permission_handler(self, handler: PermissionHandler | None) -> None:
        self._core.permission_handler = handler

    @property
    def max_budget_usd(self) -> float | None:
        return self._core.config.max_budget_usd

    @max_budget_usd.setter
    def max_budget_usd(self, value: float | None) -> None:
        _check_budget("max_budget_usd", value)
        self._core.config = dataclasses.replace(self._core.config, max_budget_usd=value)

    @property
    def max_tokens(self) -> int | None:
        return self._core.max_tokens

    @max_tokens.setter
    def max_tokens(self, value: int | None) -> None:
        _check_budget("max_tokens", value)
        self._core.max_tokens = value

    @property
    def is_connected(self) -> bool:
        return self._core.state == "connected"

    @property
    def is_finished(self) -> bool:
        """True once the session is closed or killed: it takes no more turns."""
        return self._core.state == "closed"

    @property
    def is_idle(self) -> bool:
        return self._core.idle.is_set()

    @property
    def is_parked(self) -> bool:
        """True while an idle session holds no agent process (``idle_timeout`` passed); the
        next turn starts one that resumes the conversation."""
        return self._core.parked

    @property
    def history(self) -> list[TurnRecord]:
        return list(self._core.history)

    @property
    def pending(self) -> PermissionRequest | Question | None:
        """The open permission request or question, live: answer it from anywhere
        (``session.pending.allow()``), e.g. another thread or a front end after a reload."""
        return next(iter(self._core.pending.values()), None)

    @property
    def workspace(self) -> Path:
        """A directory of this session's own for files the agent or tools produce; the agent
        is given it as an added directory."""
        return self._core.workspace()

    @property
    def hooks(self) -> SessionHooks:
        """Python callbacks around tools and turns: ``before_tool``, ``after_tool``,
        ``on_turn_end`` (see `agentkernel.hooks`)."""
        return self._core.hooks

    @property
    def tasks(self) -> list[Task]:
        """The agent's current task list, as it last reported it."""
        return list(self._core.tasks)

    @property
    def children(self) -> list[SessionRecord]:
        """The sub-agent sessions this session ran (kind "subagent")."""
        return list(self._core.children.values())

    @property
    def summary(self) -> str | None:
        """The conversation summary of the last compaction, if any."""
        return self._core.summary

    @property
    def stats(self) -> Stats:
        """Totals over every turn the session ran, conversations cleared away included (so a
        budget, once spent, stays spent)."""
        history = [*self._core.earlier, *self._core.history]
        usage = self._core.totals()
        return Stats(
            turns=sum(1 for r in history if r.status == "completed"),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            cost_usd=usage.cost_usd,
            wall_time_s=sum(r.duration_s for r in history),
            model_calls=sum(r.model_calls for r in history),
        )

    def pids(self) -> list[int]:
        """The agent processes this session holds right now."""
        backend = self._core.backend
        return backend.pids() if backend is not None else []

    # -- lifecycle ---------------------------------------------------------------------------

    def load_backend(self) -> type[Backend]:
        """The backend class, imported now if it was not yet (a session imports it when first
        needed: one that only replays recorded turns never does). Call it before anything
        timed, such as a live view waiting for a front end: an agent SDK can take seconds."""
        return self._core.backend_cls

    async def connect(self) -> None:
        """Start the agent. Also reconnects a disconnected session (its conversation goes on)."""
        if self._core.state == "disconnected":
            self._core.state = "new"
        self.load_backend()  # here, not on the runtime loop
        await _runtime.call(self._core.connect())

    async def disconnect(self) -> CloseResult:
        """Stop the agent process; `connect` can start it again on the same conversation."""
        return await _runtime.call(self._core.disconnect())

    async def close(self) -> CloseResult:
        """End the session for good: the agent's exit code and captured stderr."""
        result = await _runtime.call(self._core.disconnect(final=True))
        self._finalizer.detach()
        return result

    def kill(self) -> None:
        """End the agent process now, without waiting."""
        _runtime.loop().call_soon_threadsafe(self._core.kill)
        self._finalizer.detach()

    async def __aenter__(self) -> Session:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- turns -------------------------------------------------------------------------------

    async def stream(
        self,
        prompt: str,
        *,
        images: Sequence[str | Path | bytes | Image] = (),
        permission_mode: PermissionMode | None = None,
        permission_handler: PermissionHandler | None = None,
        can_ask: bool = True,
    ) -> AsyncIterator[Event]:
        """Run one turn and yield its events as they arrive, ending with `TurnEnded`.

        While you iterate, you can answer `PermissionRequest` and `Question` events
        (``event.allow()``...). Pass ``can_ask=False`` when nothing will answer them: the
        permission mode then decides (and defaults to deny). Leaving the loop early (break,
        cancellation, a kernel interrupt) interrupts the turn.
        """
        handoff: _runtime.Handoff[EventLog] = _runtime.Handoff(asyncio.get_running_loop())

        def sink(events: EventLog) -> None:
            handoff.put_many((events,), urgent=isinstance(events[-1], _URGENT))

        turn = self._new_turn(
            prompt,
            images,
            sink,
            can_ask,
            permission_mode,
            permission_handler,
        )
        running = _runtime.submit(self._core.run_turn(turn[0], turn[1]))
        finished = False
        try:
            while not finished:
                # The first batch gathers too: a wake-up for the turn's opening events would
                # take the GIL from the runtime thread just as it sends the prompt.
                batch = await handoff.take(_WAKE_INTERVAL_S, gather=_GATHER_S)
                if not batch:
                    if running.done():
                        running.result()  # raises what the turn raised (e.g. a refusal)
                        return
                    continue
                for event in itertools.chain.from_iterable(batch):
                    yield event
                    if isinstance(event, TurnEnded):
                        finished = True
                        break
            if running.done():  # (mostly: the turn is over once its TurnEnded is out)
                running.result()
            else:
                await asyncio.wrap_future(running)
        finally:
            if not finished and not running.done():
                _runtime.submit(self._core.interrupt())

    async def send(
        self,
        prompt: str,
        *,
        images: Sequence[str | Path | bytes | Image] = (),
        timeout: float | None = None,
        permission_mode: PermissionMode | None = None,
        permission_handler: PermissionHandler | None = None,
        raise_on_error: bool = True,
    ) -> TurnRecord:
        """Run one turn and return its record (``record.text`` is the reply).

        Nothing watches the events here, so requests are settled by the permission mode or
        the permission handler. On `timeout` the turn is interrupted and TimeoutError raised.
        A turn that fails raises `TurnFailedError` (its ``.record`` holds the events) unless
        ``raise_on_error=False``; an interrupted turn is returned, not raised.
        """
        prompt_obj, turn = self._new_turn(
            prompt, images, None, False, permission_mode, permission_handler
        )
        running = _runtime.submit(self._core.run_turn(prompt_obj, turn))
        try:
            record = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), timeout)
        except asyncio.TimeoutError:
            await self.interrupt()
            raise TimeoutError(
                f"the turn took longer than {timeout} s and was interrupted"
            ) from None
        except asyncio.CancelledError:
            _runtime.submit(self._core.interrupt())
            raise
        if raise_on_error and record.status == "error":
            raise TurnFailedError(record.error or "the turn failed", record)
        return record

    async def compact(self, instructions: str | None = None) -> TurnRecord:
        """Have the agent compact its conversation (older turns become a summary), as a turn
        of its own; it yields a `Compaction` event and sets `summary`. `instructions` (else
        `compact_instructions`) say what the summary must keep."""
        if not callable(getattr(self._core.backend_cls, "compact", None)):
            raise NotImplementedError(
                f"the {self.backend_name} backend cannot compact a conversation"
            )
        text = instructions or self.compact_instructions or ""
        label = "(compact the conversation)" + (f" {text}" if text else "")
        state = _TurnState(TurnRecord(0, label), None, False, None, None, compact=True)
        running = _runtime.submit(self._core.run_turn(Prompt(text), state))
        return await asyncio.wrap_future(running)

    async def send_and_collect(
        self, prompt: str, *, timeout: float | None = None, **options: Any
    ) -> list[Event]:
        """Run one turn and return all its events."""
        return list((await self.send(prompt, timeout=timeout, **options)).events)

    async def interrupt(self) -> None:
        """Stop the running turn (it ends with stop_reason "interrupted"); no-op when idle."""
        await _runtime.call(self._core.interrupt())

    async def wait_for_idle(self, timeout: float | None = None) -> None:
        """Wait until no turn is running; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._core.idle.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"session still busy after {timeout} s")
            await asyncio.sleep(0.02)

    async def set_model(self, model: str | None) -> None:
        """Switch model for the next turns."""
        core = self._core
        core.config = dataclasses.replace(core.config, model=model)
        core.persist(lambda s: s.update_session(self.id, model=model))

        async def apply() -> None:
            if core.backend is not None and core.state == "connected":
                await core.backend.set_model(model)

        await _runtime.call(apply())

    def _new_turn(
        self,
        prompt: str,
        images: Sequence[str | Path | bytes | Image],
        sink: Callable[[EventLog], None] | None,
        can_ask: bool,
        mode: PermissionMode | None,
        handler: PermissionHandler | None,
    ) -> tuple[Prompt, _TurnState]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty: write what you want the agent to do")
        self.load_backend()  # here, not on the runtime loop
        sent = prompt
        if self._core.reseed and not self._core.backend_session_id:
            sent = _earlier_conversation(self._core.history) + prompt
        prompt_obj = Prompt(sent, tuple(Image.load(i) for i in images))
        state = _TurnState(TurnRecord(0, prompt), sink, can_ask, validate_mode(mode), handler)
        return prompt_obj, state

    # -- tools -------------------------------------------------------------------------------

    def register_tool(self, fn: Tool | Callable[..., Any]) -> Tool:
        """Offer a Python function (or `agentkernel.tools.Tool`) to the agent of this session;
        one of the same name is replaced. The agent sees it from the next turn on (an agent
        already running is restarted on its conversation to learn it)."""
        return self._tools.own.add(fn)

    def register_tools(self, fns: Sequence[Tool | Callable[..., Any]]) -> list[Tool]:
        return [self.register_tool(fn) for fn in fns]

    def unregister_tool(self, name: str) -> None:
        """Stop offering this session's own tool `name` (kernel-wide ones stay)."""
        if self._tools.own.remove(name) is None:
            raise KeyError(f"this session has no tool of its own named {name!r}")

    def get_tool(self, name: str) -> Tool:
        """The tool the agent knows as `name` (the session's own, else a kernel-wide one)."""
        found = self._tools.get(name)
        if found is None:
            names = ", ".join(t.name for t in self._tools.tools()) or "none"
            raise KeyError(f"no tool named {name!r}; this session offers: {names}")
        return found

    def get_tools(self) -> list[Tool]:
        """Every tool this session offers: its own, then the kernel-wide ones (`@tool`)."""
        return list(self._tools.tools())

    async def invoke_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolOutput:
        """Run a tool yourself, as the agent would (no permission asked: you are the user)."""
        return await self.get_tool(name).invoke(arguments)

    def _tools_changed(self) -> None:
        """The offered set changed: the next connect offers the new one, and an agent already
        running is reconnected (state "new": resumed on its conversation) before its next turn.
        Applied on the runtime loop, so it lands before any turn submitted after it."""
        offered = self._tools.tools()
        core = self._core

        def apply() -> None:
            if offered == core.config.tools:
                return
            core.config = dataclasses.replace(core.config, tools=offered)
            if core.state == "connected":
                core.state = "new"

        _runtime.loop().call_soon_threadsafe(apply)

    # -- events ------------------------------------------------------------------------------

    def on(self, kind: str | type[Event], handler: EventHandler) -> Callable[[], None]:
        """Call `handler` for every event of `kind` (an event class, its type name, or "*");
        returns a function that removes it (as ``off(kind, handler)`` does).

        Handlers run on the loop that registered them (or the session's own thread when none
        was running); async handlers are scheduled there.
        """
        name = kind if isinstance(kind, str) else kind.type
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        subscription = _Subscription(name, handler, loop)
        self._core.subscriptions.append(subscription)

        def unsubscribe() -> None:
            if subscription in self._core.subscriptions:
                self._core.subscriptions.remove(subscription)

        return unsubscribe

    def off(self, kind: str | type[Event], handler: EventHandler | None = None) -> None:
        """Remove handlers of `kind` (all of them when `handler` is None)."""
        name = kind if isinstance(kind, str) else kind.type
        self._core.subscriptions[:] = [
            s
            for s in self._core.subscriptions
            if not (s.kind == name and (handler is None or s.handler == handler))
        ]

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call `handler` for every event; returns a function that unsubscribes it."""
        return self.on("*", handler)

    # -- conversations -----------------------------------------------------------------------

    @classmethod
    def resume(
        cls, ref: str, backend: str | type[Backend] | None = None, **options: Any
    ) -> Session:
        """Continue a conversation in a new agent process.

        `ref` is a stored session's id (or a unique prefix of it) or a backend session id. A
        stored session comes back whole: same id, name, settings, and its turns as `history`;
        new turns are appended to it. Otherwise `ref` is taken as a backend session id.
        """
        if not ref:
            raise ValueError("resume needs a session id (session.id or session.backend_session_id)")
        store = _open_store(options.pop("store", True))
        record = store.get_session(ref) if store is not None else None
        if record is None:
            return cls(backend or DEFAULT_BACKEND, resume=ref, store=store or False, **options)
        if not record.backend_session_id:
            raise ValueError(
                f"stored session {record.id} never reached its agent (no turn completed), so "
                "there is no conversation to resume; start a new Session"
            )
        settings: dict[str, Any] = {
            "model": record.model,
            "reasoning_effort": record.reasoning_effort,
            "title": record.title,
            "name": record.name,
            "metadata": record.metadata,
            "max_budget_usd": record.budget_usd,
            "max_tokens": record.budget_tokens,
            "cwd": record.cwd if record.cwd and Path(record.cwd).is_dir() else None,
            "notebook_path": record.notebook_path,
            "parent_id": record.parent_id,
        }
        settings.update(options)
        session = cls.__new__(cls)
        session._adopt(record, store, backend or record.backend, settings)  # type: ignore[arg-type]
        return session

    def _adopt(
        self, record: SessionRecord, store: Store, backend: str, settings: dict[str, Any]
    ) -> None:
        """Become the stored session `record` (used by `resume`): same id, turns continued."""
        Session.__init__(self, backend, resume=record.backend_session_id, store=False, **settings)
        self.id = record.id
        core = self._core
        core.session_id = record.id
        core.store = store
        core.history = [
            TurnRecord.stored(t, store.events(record.id, t.number)) for t in store.turns(record.id)
        ]
        core.turns_started = max((t.number for t in core.history), default=0)
        core.seq = max((e.seq for t in core.history for e in t.events), default=0)
        for event in (e for t in core.history for e in t.events):
            core._track(event)
        core.summary = record.summary or core.summary
        core.children = {
            str(c.metadata.get("parent_tool_use_id")): c
            for c in store.list_sessions(parent=record.id, limit=None)
            if c.kind == "subagent"
        }

    def fork(self, **overrides: Any) -> Session:
        """A new Session with this conversation's history and a new id; this one is unchanged."""
        if not self.backend_session_id:
            raise ValueError("nothing to fork yet: the session has no conversation (run a turn)")
        config = self._core.config
        options: dict[str, Any] = {
            "model": config.model,
            "reasoning_effort": config.reasoning_effort,
            "permission_mode": self.permission_mode,
            "permission_handler": self.permission_handler,
            "cwd": config.cwd,
            "env": dict(config.env),
            "title": f"{self.title or self.name} (fork)",
            "metadata": dict(self.metadata),
            "max_budget_usd": config.max_budget_usd,
            "max_tokens": self.max_tokens,
            "backend_options": dict(config.options),
            "tools": list(self._tools.own.tools()),
            "shared_tools": self._tools.shared is not None,
        }
        options.setdefault("store", self._core.store or False)
        options.setdefault("notebook_path", self.notebook_path)
        options.update(overrides)
        return Session(
            self.backend_name,
            resume=self.backend_session_id,
            fork=True,
            parent_id=self.id,
            **options,
        )

    def set_replay_key(self, record: TurnRecord, key: str) -> None:
        """Give a turn of this session its replay key (kept with the turn in the store), so
        an unchanged cell can later replay it (`agentkernel.replay`)."""
        record.replay_key = key
        self._core.persist(lambda s: s.set_replay_key(self.id, record.number, key))

    async def record_replay(
        self, source: TurnRecord, source_session_id: str, backend_session_id: str | None
    ) -> TurnRecord:
        """Append a recorded turn to this session without running the agent: its events,
        re-stamped as this session's next turn, go into the history and the store, marked
        as a replay at no cost. So that the next turn the agent runs carries the replayed
        history, and only it: given `backend_session_id` (the recorded conversation, when it
        ends with this turn), that turn forks it, leaving the recorded one as it was; without
        it (the recording continued past this turn, or came from a replay file of another
        machine) that turn starts a new conversation whose first prompt is preceded by this
        session's history as text (`_earlier_conversation`)."""

        async def adopt() -> TurnRecord:
            core = self._core
            async with core.turn_lock:
                before = (
                    core.backend_session_id,
                    core.config.fork,
                    core.reseed,
                    core.reported_model,
                )
                core.turns_started += 1
                number = core.turns_started
                events = []
                for event in source.events:
                    core.seq += 1
                    events.append(
                        dataclasses.replace(
                            event, session_id=core.session_id, turn=number, seq=core.seq
                        )
                    )
                origin = f"{source_session_id}:{source.number}"
                record = TurnRecord(
                    number,
                    source.prompt,
                    status="completed",
                    events=EventLog(events),
                    stop_reason=source.stop_reason,
                    backend_session_id=backend_session_id,
                    replay_key=source.replay_key,
                    replayed_from=origin,
                )
                core.history.append(record)
                for event in events:
                    core._track(event)
                    if isinstance(event, SessionStarted) and event.model:
                        core.reported_model = event.model

                def write(store: Store) -> None:
                    store.start_turn(core.session_id, number, source.prompt)
                    for event in events:
                        store.append(event)
                    store.end_turn(
                        core.session_id, number, "completed", stop_reason=source.stop_reason
                    )
                    if source.replay_key:
                        store.set_replay_key(core.session_id, number, source.replay_key, origin)

                core.persist(write)
                core.before_replay = (record, *before)
                await _continue_conversation(
                    core, backend_session_id, backend_session_id is not None
                )
                core.reseed = backend_session_id is None
                return record

        return await _runtime.call(adopt())

    async def take_back_replay(self, record: TurnRecord) -> None:
        """Remove the replayed turn `record`, the session's last, from the history and the
        store, the conversation left as before it: a person asked for a fresh answer in its
        place ("run fresh"), which then gets its number and its replay key. ValueError if
        `record` is not the session's last turn or not a replay."""

        async def undo() -> None:
            core = self._core
            async with core.turn_lock:
                saved = core.before_replay
                if saved is None or saved[0] is not record or core.history[-1] is not record:
                    raise ValueError(
                        f"turn {record.number} is not this session's last turn, a replay: only "
                        "that one can be taken back"
                    )
                _, backend_session_id, fork, reseed, core.reported_model = saved
                core.history.pop()
                core.turns_started -= 1
                core.before_replay = None
                await _continue_conversation(core, backend_session_id, fork)
                core.reseed = reseed
                core.persist(lambda s: s.drop_replayed_turn(core.session_id, record.number))

        await _runtime.call(undo())

    async def clear(self) -> None:
        """Start a fresh conversation in this session: history cleared, while `stats` and the
        budgets keep counting every turn ever run."""

        async def reset() -> None:
            core = self._core
            async with core.turn_lock:
                await core.disconnect()
                core.backend_session_id = None
                core.earlier.extend(core.history)
                core.history.clear()
                core.tasks = []
                core.state = "new"

        await _runtime.call(reset())


async def _continue_conversation(core: _Core, backend_session_id: str | None, fork: bool) -> None:
    """Make the next turn continue `backend_session_id` (forking it, if `fork`; a new
    conversation if None): the running agent, on another conversation, is ended."""
    if backend_session_id != core.backend_session_id:
        if core.backend is not None:
            stale, core.backend = core.backend, None
            with contextlib.suppress(Exception):
                await stale.close()
        if core.state == "connected":
            core.state = "new"
        core.backend_session_id = backend_session_id
    core.config = dataclasses.replace(core.config, fork=fork)


def _earlier_conversation(history: list[TurnRecord]) -> str:
    """The conversation so far as text ahead of a prompt: how a new agent conversation learns
    the replayed turns it never saw (what each was asked and answered; the tool calls they made
    are not repeated). Empty for an empty history."""
    if not history:
        return ""
    turns = "\n\n".join(f"User:\n{r.prompt}\n\nAssistant:\n{r.text}" for r in history)
    return (
        "[The conversation so far, restored from a recording:]\n\n"
        f"{turns}\n\n[End of the conversation so far. The new message:]\n\n"
    )


_default_store: Store | None = None
_default_store_for: str | None = None
"""The path the shared store was opened for (it may have fallen back to memory)."""
_default_store_lock = threading.Lock()


def _open_store(store: Store | bool | None) -> Store | None:
    """The store a session uses: the given one, none (False), or the shared default one."""
    global _default_store, _default_store_for
    if isinstance(store, Store):
        return store
    if not store:
        return None
    with _default_store_lock:
        wanted = default_store_path()
        if _default_store is None or _default_store_for != wanted:
            _default_store = Store.open_or_memory(wanted)
            _default_store_for = wanted
        return _default_store


def shared_store() -> Store | None:
    """The store sessions use by default (``AGENTKERNEL_STORE`` or the Jupyter data dir)."""
    return _open_store(True)


class SyncSession:
    """Blocking facade over a `Session`, for plain scripts. Safe inside a running loop too,
    since the agent runs on agentkernel's own thread (but a blocked kernel thread cannot
    receive widget clicks: in notebooks prefer ``await`` or ``%%agent``)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def connect(self) -> None:
        _runtime.call_sync(self._session.connect())

    def disconnect(self) -> CloseResult:
        return _runtime.call_sync(self._session.disconnect())

    def close(self) -> CloseResult:
        return _runtime.call_sync(self._session.close())

    def send(self, prompt: str, **options: Any) -> TurnRecord:
        return _runtime.call_sync(self._session.send(prompt, **options))

    def send_and_collect(self, prompt: str, **options: Any) -> list[Event]:
        return _runtime.call_sync(self._session.send_and_collect(prompt, **options))

    def interrupt(self) -> None:
        _runtime.call_sync(self._session.interrupt())

    def wait_for_idle(self, timeout: float | None = None) -> None:
        _runtime.call_sync(self._session.wait_for_idle(timeout))

    def set_model(self, model: str | None) -> None:
        _runtime.call_sync(self._session.set_model(model))

    def clear(self) -> None:
        _runtime.call_sync(self._session.clear())

    def compact(self, instructions: str | None = None) -> TurnRecord:
        return _runtime.call_sync(self._session.compact(instructions))

    # -- tools -------------------------------------------------------------------------------

    def invoke_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolOutput:
        return _runtime.call_sync(self._session.invoke_tool(name, arguments))

    def stream(self, prompt: str, **options: Any) -> Iterator[Event]:
        """Yield the turn's events as they arrive (closing the iterator interrupts the turn)."""
        events: queue.Queue[Event | BaseException | None] = queue.Queue()

        async def pump() -> None:
            try:
                async for event in self._session.stream(prompt, **options):
                    events.put(event)
            except BaseException as exc:  # handed to the iterating thread
                events.put(exc)
            else:
                events.put(None)

        future = _runtime.submit(pump())
        try:
            while (item := events.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            future.cancel()
