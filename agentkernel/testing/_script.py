"""Script data model: reply blocks, :class:`Reply` rules, and loading scripts from JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "Block",
    "Reply",
    "Script",
    "ScriptError",
    "Text",
    "Thinking",
    "ToolUse",
    "load_script",
    "text",
    "thinking",
    "tool_use",
]


class ScriptError(ValueError):
    """A script (Python or JSON) is malformed; the message names the offending place."""


@dataclass(frozen=True)
class Text:
    """Visible assistant text."""

    text: str


@dataclass(frozen=True)
class Thinking:
    """Extended-thinking text (sent with a placeholder signature)."""

    thinking: str


@dataclass(frozen=True)
class ToolUse:
    """A tool call. ``id`` is generated per answer (``toolu_scripted_N``) when None."""

    name: str
    # Excluded from hashing because dicts are unhashable; compared by value.
    input: Mapping[str, Any] = field(default_factory=dict, hash=False)
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ScriptError(f"tool_use name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.input, Mapping):
            raise ScriptError(f"tool_use input must be a JSON object, got {self.input!r}")
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise ScriptError(f"tool_use id must be a non-empty string or None, got {self.id!r}")
        # A JSON round trip both proves the input can go on the wire and detaches it from
        # the caller's dict, so later mutations cannot change an answer mid-test.
        try:
            frozen = json.loads(json.dumps(dict(self.input)))
        except (TypeError, ValueError) as exc:
            raise ScriptError(f"tool_use input is not JSON-serialisable: {exc}") from None
        object.__setattr__(self, "input", frozen)


Block = Text | Thinking | ToolUse
_BLOCK_TYPES = (Text, Thinking, ToolUse)


def text(s: str) -> Text:
    """A text block."""
    if not isinstance(s, str):
        raise ScriptError(f"text() needs a string, got {s!r}")
    return Text(s)


def thinking(s: str) -> Thinking:
    """A thinking block."""
    if not isinstance(s, str):
        raise ScriptError(f"thinking() needs a string, got {s!r}")
    return Thinking(s)


def tool_use(name: str, input: Mapping[str, Any] | None = None, id: str | None = None) -> ToolUse:
    """A tool call block: the agent CLI runs tool ``name`` with ``input``."""
    return ToolUse(name, {} if input is None else input, id)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class Reply:
    """One rule of a script: which request it answers and how.

    ``eq=False`` on purpose: two identical rules are still two rules, each with its own
    ``times`` budget, and ``RecordedRequest.matched`` identifies the rule object itself.
    """

    match: str | None = None
    blocks: tuple[Block, ...] = ()
    times: int = 1
    chunk_size: int = 16
    delay: float = 0.0
    status: int | None = None
    cut_after: int | None = None
    usage: Mapping[str, int] | None = None
    model: str | None = None
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        if self.match is not None and not isinstance(self.match, str):
            raise ScriptError(f"match must be a string or None, got {self.match!r}")
        if isinstance(self.blocks, (str, bytes, Mapping)) or not isinstance(self.blocks, Iterable):
            raise ScriptError(
                f"blocks must be a list of text()/thinking()/tool_use(), got {self.blocks!r}"
            )
        blocks = tuple(self.blocks)
        for block in blocks:
            if not isinstance(block, _BLOCK_TYPES):
                raise ScriptError(
                    f"blocks must hold text()/thinking()/tool_use() values, got {block!r}"
                )
        object.__setattr__(self, "blocks", blocks)
        if not _is_int(self.times) or self.times < 0:
            raise ScriptError(f"times must be an int >= 0 (0 = unlimited), got {self.times!r}")
        if not _is_int(self.chunk_size) or self.chunk_size < 1:
            raise ScriptError(f"chunk_size must be an int >= 1, got {self.chunk_size!r}")
        if (
            isinstance(self.delay, bool)
            or not isinstance(self.delay, (int, float))
            or not math.isfinite(self.delay)
            or self.delay < 0
        ):
            raise ScriptError(f"delay must be a number of seconds >= 0, got {self.delay!r}")
        if self.status is not None and (not _is_int(self.status) or not 400 <= self.status <= 599):
            raise ScriptError(f"status must be an HTTP error status 400-599, got {self.status!r}")
        if self.cut_after is not None and (not _is_int(self.cut_after) or self.cut_after < 0):
            raise ScriptError(f"cut_after must be an int >= 0 or None, got {self.cut_after!r}")
        if self.usage is not None:
            if not isinstance(self.usage, Mapping) or not all(
                isinstance(k, str) and _is_int(v) and v >= 0 for k, v in self.usage.items()
            ):
                raise ScriptError(
                    f"usage must map token-count names to ints >= 0, got {self.usage!r}"
                )
            object.__setattr__(self, "usage", dict(self.usage))
        for name in ("model", "stop_reason"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ScriptError(f"{name} must be a non-empty string or None, got {value!r}")

    def matches(self, last_user_text: str, markers: Iterable[str]) -> bool:
        """Whether this rule's ``match`` selects a request (ignoring its ``times`` budget)."""
        return self.match is None or self.match in last_user_text or self.match in markers


REPLY_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Reply))
_BLOCK_KINDS = ("text", "thinking", "tool_use")
_TOOL_USE_KEYS = ("name", "input", "id")


@dataclass(frozen=True)
class Script:
    """An ordered list of :class:`Reply` rules, e.g. loaded from a JSON file."""

    replies: tuple[Reply, ...] = ()

    def __post_init__(self) -> None:
        replies = tuple(self.replies)
        for reply in replies:
            if not isinstance(reply, Reply):
                raise ScriptError(f"a script holds Reply values, got {reply!r}")
        object.__setattr__(self, "replies", replies)

    def __iter__(self) -> Iterator[Reply]:
        return iter(self.replies)

    def __len__(self) -> int:
        return len(self.replies)

    @classmethod
    def from_dict(cls, data: object) -> Script:
        """Build a script from parsed JSON: ``{"replies": [{...}, ...]}``."""
        if not isinstance(data, Mapping):
            raise ScriptError('a script is a JSON object like {"replies": [...]}')
        _check_keys(data, ("replies",), "script")
        replies = data.get("replies", [])
        if not isinstance(replies, list):
            raise ScriptError('script: "replies" must be a list')
        return cls(tuple(_reply_from_json(r, f"replies[{i}]") for i, r in enumerate(replies)))

    @classmethod
    def from_file(cls, path: str | Path) -> Script:
        """Load a JSON script file; errors name the file and the offending entry."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ScriptError(f"{path}: cannot read script: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{path}: invalid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except ScriptError as exc:
            raise ScriptError(f"{path}: {exc}") from None


def load_script(path: str | Path) -> Script:
    """Load a JSON script file (same as :meth:`Script.from_file`)."""
    return Script.from_file(path)


def _check_keys(obj: Mapping[str, Any], valid: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in valid:
            raise ScriptError(f"{where}: unknown key {key!r}; valid keys are: {', '.join(valid)}")


def _reply_from_json(obj: object, where: str) -> Reply:
    if not isinstance(obj, Mapping):
        raise ScriptError(f"{where}: a reply must be a JSON object, got {obj!r}")
    _check_keys(obj, REPLY_KEYS, where)
    kwargs = dict(obj)
    raw_blocks = kwargs.pop("blocks", [])
    if not isinstance(raw_blocks, list):
        raise ScriptError(f"{where}.blocks: must be a list")
    blocks = tuple(_block_from_json(b, f"{where}.blocks[{i}]") for i, b in enumerate(raw_blocks))
    try:
        return Reply(blocks=blocks, **kwargs)
    except ScriptError as exc:
        raise ScriptError(f"{where}: {exc}") from None


def _block_from_json(obj: object, where: str) -> Block:
    if not isinstance(obj, Mapping) or len(obj) != 1:
        raise ScriptError(
            f'{where}: a block is an object with one key, e.g. {{"text": "Hi"}}, '
            f'{{"thinking": "..."}} or {{"tool_use": {{"name": "Bash", "input": {{}}}}}}'
        )
    ((kind, value),) = obj.items()
    _check_keys(obj, _BLOCK_KINDS, where)
    try:
        if kind == "text":
            return text(value)
        if kind == "thinking":
            return thinking(value)
        if not isinstance(value, Mapping):
            raise ScriptError('tool_use must be an object like {"name": ..., "input": {...}}')
        _check_keys(value, _TOOL_USE_KEYS, "tool_use")
        if "name" not in value:
            raise ScriptError('tool_use needs a "name"')
        return tool_use(value["name"], value.get("input"), value.get("id"))
    except ScriptError as exc:
        raise ScriptError(f"{where}: {exc}") from None
