"""One event model for every backend.

Backends translate their SDK's messages into these frozen dataclasses; the session stamps each
event with its session id, turn number, sequence number and time; the store appends them; the
views render them. Every event round-trips through JSON (`to_dict` / `event_from_dict`), which is
what the store and the static notebook output rely on.

Two events are *decisions in flight*: `PermissionRequest` and `Question`. They carry a slot that a
handler, a policy, a widget or a test resolves (`request.allow()`, `question.answer(...)`). The
slot is a `concurrent.futures.Future`, because the click that resolves it arrives on the kernel's
thread while the backend waits on the session's own loop thread.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, get_args

__all__ = [
    "ERROR_KINDS",
    "READ_ONLY_KINDS",
    "STOP_REASONS",
    "TOOL_KINDS",
    "Compaction",
    "Decision",
    "Error",
    "ErrorKind",
    "Event",
    "FileChange",
    "Other",
    "PermissionDecided",
    "PermissionRequest",
    "PlanUpdate",
    "Question",
    "SessionStarted",
    "StopReason",
    "Task",
    "Text",
    "TextDelta",
    "Thinking",
    "ThinkingDelta",
    "ToolCall",
    "ToolKind",
    "ToolResult",
    "TurnEnded",
    "TurnStarted",
    "Usage",
    "UsageUpdate",
    "event_from_dict",
    "text_delta",
    "thinking_delta",
]

ToolKind = Literal[
    "read", "edit", "delete", "move", "search", "execute", "think", "fetch", "switch_mode", "other"
]
"""What a tool call does, in the Agent Client Protocol's words. Backends map their own tool
names onto these; permissions, rendering and the notebook see only the kind."""
TOOL_KINDS: tuple[str, ...] = get_args(ToolKind)

READ_ONLY_KINDS = frozenset({"read", "search", "think"})
"""Kinds that change nothing and send nothing anywhere: what ``allow-reads`` allows.
``fetch`` is left out on purpose: a request to a URL can carry data out of the machine."""

StopReason = Literal[
    "end_turn", "max_tokens", "max_turns", "budget", "refusal", "interrupted", "error"
]
"""Why a turn ended. A backend maps its own words here; `TurnEnded.raw_stop_reason` keeps them."""
STOP_REASONS: tuple[str, ...] = get_args(StopReason)

ErrorKind = Literal[
    "cli_missing",
    "cli_crashed",
    "connection",
    "auth",
    "overloaded",
    "rate_limit",
    "invalid_request",
    "api_error",
    "stream_cut",
    "budget",
    "closed",
    "timeout",
    "interrupted",
    "retrying",
    "internal",
]
"""What went wrong, whatever the backend. ``retrying`` is a notice: the agent retries the model
API and the turn may still succeed. `Error.raw_kind` keeps the backend's own word."""
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)

_EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event. The session fills the envelope fields; backends leave them empty."""

    type: ClassVar[str] = "event"
    session_id: str = ""
    turn: int = 0
    seq: int = 0
    timestamp: float = field(default_factory=time.time)
    parent_tool_use_id: str | None = None
    """Set by the backend on the events of a sub-agent: the parent's tool call that runs it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            _EVENT_TYPES[cls.type] = cls

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields plus ``type``. Private slots (decisions) are left out."""
        data: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            if not f.name.startswith("_"):
                data[f.name] = _jsonable(getattr(self, f.name))
        return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from `Event.to_dict` output; an unknown ``type`` becomes `Other`."""
    payload = dict(data)
    kind = payload.pop("type", None)
    cls = _EVENT_TYPES.get(str(kind))
    if cls is None:
        return Other(kind=str(kind), data=payload)
    names = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    args = {k: v for k, v in payload.items() if k in names}
    if isinstance(args.get("usage"), dict):
        args["usage"] = Usage(**args["usage"])
    if isinstance(args.get("locations"), list):
        args["locations"] = tuple(args["locations"])
    return cls(**args)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Usage):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Usage:
    """Token counts and cost, summed over one turn or a whole session."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True, kw_only=True)
class SessionStarted(Event):
    """The backend is connected: its own session/thread id, the model and the tools it offers."""

    type: ClassVar[str] = "session_started"
    backend: str
    backend_session_id: str | None = None
    model: str | None = None
    tools: list[str] = field(default_factory=list)
    cwd: str | None = None


@dataclass(frozen=True, kw_only=True)
class TurnStarted(Event):
    type: ClassVar[str] = "turn_started"
    prompt: str


@dataclass(frozen=True, kw_only=True)
class TextDelta(Event):
    """A piece of streamed text. Backends build them with `text_delta`, at a third of the
    cost of the constructor."""

    type: ClassVar[str] = "text_delta"
    text: str


@dataclass(frozen=True, kw_only=True)
class Text(Event):
    """A whole text block, sent after its deltas (or alone when the backend does not stream)."""

    type: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True, kw_only=True)
class ThinkingDelta(Event):
    """A piece of streamed reasoning (built with `thinking_delta`, as `TextDelta`)."""

    type: ClassVar[str] = "thinking_delta"
    text: str


@dataclass(frozen=True, kw_only=True)
class Thinking(Event):
    type: ClassVar[str] = "thinking"
    text: str


@dataclass(frozen=True, kw_only=True)
class ToolInfo:
    """What a tool call means, filled in by the backend that knows its agent's tools.

    ``kind`` drives permissions (`READ_ONLY_KINDS`) and rendering; ``title`` is a human line
    ("Edit src/app.py", or the command); ``locations`` the paths it touches; ``diff`` the
    unified diff an edit would make; ``command`` the exact shell command of an execute call
    (what an "always allow" rule remembers). ``name`` and ``input`` stay the agent's own.
    """

    kind: ToolKind = "other"
    title: str = ""
    locations: tuple[str, ...] = ()
    diff: str | None = None
    command: str | None = None

    @property
    def read_only(self) -> bool:
        return self.kind in READ_ONLY_KINDS


@dataclass(frozen=True, kw_only=True)
class ToolCall(Event, ToolInfo):
    type: ClassVar[str] = "tool_call"
    tool_use_id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ToolResult(Event):
    type: ClassVar[str] = "tool_result"
    tool_use_id: str
    output: str
    is_error: bool = False


@dataclass(frozen=True, kw_only=True)
class FileChange(Event):
    """A file the agent wrote or edited, as a unified diff (``diff`` is empty for binary files)."""

    type: ClassVar[str] = "file_change"
    path: str
    diff: str
    tool_use_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class PlanUpdate(Event):
    """The agent's task list, whole. Each item: ``{"id", "content", "status"}`` (status:
    pending, in_progress, completed; ``id`` optional). Sent only for a task update that took
    effect, never for a failed call."""

    type: ClassVar[str] = "plan_update"
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Task:
    """One item of the agent's task list (`Session.tasks`)."""

    id: str
    text: str
    status: Literal["pending", "in_progress", "completed"] | str = "pending"

    @classmethod
    def from_item(cls, number: int, item: dict[str, Any]) -> Task:
        return cls(
            id=str(item.get("id") or number),
            text=str(item.get("content", "")),
            status=str(item.get("status", "pending")),
        )


@dataclass(frozen=True)
class Decision:
    """How a permission request or question was answered.

    ``always`` remembers an allow rule for the rest of the session; ``updated_input`` replaces
    the tool's input (an edited command); ``answers`` maps each question to the chosen answer.
    ``by`` records who decided, for provenance: user, rule, policy or handler.
    """

    behavior: Literal["allow", "deny"]
    always: bool = False
    reason: str = ""
    updated_input: dict[str, Any] | None = None
    answers: dict[str, str] | None = None
    by: str = "user"

    @property
    def allowed(self) -> bool:
        return self.behavior == "allow"


class _Pending:
    """Resolvable slot shared by the two events that wait for an answer."""

    _decision: concurrent.futures.Future[Decision] | None

    def resolve(self, decision: Decision) -> bool:
        """Resolve the request; returns False when it was already decided (first answer wins)."""
        future = self._decision
        if future is None:
            raise RuntimeError(
                "this event is a stored copy, not a live request: it can no longer be answered"
            )
        try:
            future.set_result(decision)
        except concurrent.futures.InvalidStateError:
            return False
        return True

    @property
    def decided(self) -> bool:
        return self._decision is not None and self._decision.done()

    @property
    def decision(self) -> Decision | None:
        future = self._decision
        if future is None or not future.done() or future.cancelled():
            return None
        return future.result()


@dataclass(frozen=True, kw_only=True)
class PermissionRequest(Event, ToolInfo, _Pending):
    """The agent wants to run a tool. Answer with `allow`, `allow_always` or `deny`."""

    type: ClassVar[str] = "permission_request"
    request_id: str
    tool_name: str
    input: dict[str, Any] = field(default_factory=dict)
    tool_use_id: str | None = None
    reason: str | None = None
    _decision: concurrent.futures.Future[Decision] | None = field(
        default=None, compare=False, repr=False
    )

    def allow(self, updated_input: dict[str, Any] | None = None, *, by: str = "user") -> bool:
        return self.resolve(Decision("allow", updated_input=updated_input, by=by))

    def allow_always(self, *, by: str = "user") -> bool:
        return self.resolve(Decision("allow", always=True, by=by))

    def deny(self, reason: str = "", *, by: str = "user") -> bool:
        return self.resolve(Decision("deny", reason=reason or "Denied by the user.", by=by))


@dataclass(frozen=True, kw_only=True)
class Question(Event, _Pending):
    """The agent asks the user. ``questions``: ``[{"question", "header", "options":
    [{"label", "description"}], "multi_select"}]``. Answer with `answer`."""

    type: ClassVar[str] = "question"
    request_id: str
    questions: list[dict[str, Any]] = field(default_factory=list)
    tool_use_id: str | None = None
    _decision: concurrent.futures.Future[Decision] | None = field(
        default=None, compare=False, repr=False
    )

    def answer(self, answers: dict[str, str] | str, *, by: str = "user") -> bool:
        """Answer every question: a dict question -> answer, or one string for a single one."""
        if isinstance(answers, str):
            if len(self.questions) != 1:
                raise ValueError(
                    f"{len(self.questions)} questions were asked: pass a dict mapping each "
                    "question text to its answer"
                )
            answers = {self.questions[0]["question"]: answers}
        return self.resolve(Decision("allow", answers=dict(answers), by=by))

    def decline(self, reason: str = "", *, by: str = "user") -> bool:
        return self.resolve(
            Decision("deny", reason=reason or "The user declined to answer.", by=by)
        )


@dataclass(frozen=True, kw_only=True)
class PermissionDecided(Event):
    """How a permission request or question was settled: kept for provenance and the store."""

    type: ClassVar[str] = "permission_decided"
    request_id: str
    tool_name: str
    behavior: Literal["allow", "deny"]
    always: bool = False
    reason: str = ""
    by: str = "user"


@dataclass(frozen=True, kw_only=True)
class UsageUpdate(Event):
    """Running token usage within a turn (backends that report it as they go)."""

    type: ClassVar[str] = "usage_update"
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, kw_only=True)
class TurnEnded(Event):
    """The turn is over. ``stop_reason`` is one of `STOP_REASONS`; ``raw_stop_reason`` is the
    backend's own word for it."""

    type: ClassVar[str] = "turn_ended"
    stop_reason: StopReason
    raw_stop_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    duration_s: float = 0.0
    model_calls: int = 0
    result: str = ""
    is_error: bool = False


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    """Something went wrong. ``kind`` is one of `ERROR_KINDS`; ``raw_kind`` is the backend's own
    word for it (an SDK error name, an HTTP status)."""

    type: ClassVar[str] = "error"
    kind: ErrorKind
    message: str
    retryable: bool = False
    raw_kind: str = ""


@dataclass(frozen=True, kw_only=True)
class Compaction(Event):
    """The agent compacted its conversation: older turns were replaced by a summary."""

    type: ClassVar[str] = "compaction"
    trigger: Literal["manual", "auto"] = "manual"
    tokens_before: int | None = None
    tokens_after: int | None = None
    summary: str | None = None


@dataclass(frozen=True, kw_only=True)
class Other(Event):
    """A backend message we do not model yet, kept whole instead of dropped or crashing."""

    type: ClassVar[str] = "other"
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


_Delta = TypeVar("_Delta", TextDelta, ThinkingDelta)


def _delta_constructor(cls: type[_Delta], name: str) -> Callable[[str, str | None], _Delta]:
    """``cls(text=text, parent_tool_use_id=parent)``, made the fast way. Why: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` after parsing
    keywords (1.4 us here), and a streamed reply is thousands of deltas a second; an instance
    given its ``__dict__`` whole costs a third of that, and the session then stamps the
    envelope into that dict. The fields are checked here, once, so a field added to the class
    cannot be left out."""
    names = [f.name for f in dataclasses.fields(cls)]
    if names != ["session_id", "turn", "seq", "timestamp", "parent_tool_use_id", "text"]:
        raise TypeError(f"{cls.__name__}'s fields changed ({names}): update _delta_constructor")
    new, set_dict, now = object.__new__, object.__setattr__, time.time

    def make(text: str, parent_tool_use_id: str | None = None) -> _Delta:
        event = new(cls)
        set_dict(
            event,
            "__dict__",
            {
                "session_id": "",
                "turn": 0,
                "seq": 0,
                "timestamp": now(),
                "parent_tool_use_id": parent_tool_use_id,
                "text": text,
            },
        )
        return event

    make.__name__ = make.__qualname__ = name
    return make


text_delta = _delta_constructor(TextDelta, "text_delta")
"""``text_delta(text, parent_tool_use_id=None)``: a `TextDelta`, fast."""
thinking_delta = _delta_constructor(ThinkingDelta, "thinking_delta")
"""``thinking_delta(text, parent_tool_use_id=None)``: a `ThinkingDelta`, fast."""
