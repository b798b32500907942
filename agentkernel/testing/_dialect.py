"""The wire-format abstraction: one :class:`Dialect` per model API the server can speak.

The server owns HTTP, matching, recording, pacing (``delay``) and cutting (``cut_after``);
a dialect only knows its API's JSON: how to find the user's latest words in a request and
how to render a :class:`~agentkernel.testing.Reply` as SSE events or as one JSON body.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._script import Block, Reply, Text, Thinking, ToolUse

TOOL_RESULT = "tool_result"
TOOL_ERROR = "tool_error"

# Claude Code prepends <system-reminder> blocks (attribution, context notes) to user
# messages; they are never what a script author means to match, and would make a rule
# like match="commit" fire on every first request.
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)


@dataclass(frozen=True)
class Turn:
    """What matching sees of a request: the latest user text plus marker strings."""

    text: str
    markers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Event:
    """One SSE event. ``delta`` events are paced and counted for ``cut_after``; ``final``
    events complete the message, so a cut always happens before the first of them."""

    data: Any
    name: str | None = None
    delta: bool = False
    final: bool = False

    def encode(self) -> bytes:
        payload = self.data if isinstance(self.data, str) else json.dumps(self.data)
        head = f"event: {self.name}\n" if self.name else ""
        return f"{head}data: {payload}\n\n".encode()


@dataclass(frozen=True)
class AnswerContext:
    """Per-answer facts the server supplies to a dialect."""

    model: str
    input_tokens: int
    new_id: Callable[[str], str]

    def tool_ids(self, reply: Reply, prefix: str) -> list[str | None]:
        """The id of each block (None for non-tool blocks), generating missing tool ids."""
        return [
            (b.id or self.new_id(prefix)) if isinstance(b, ToolUse) else None for b in reply.blocks
        ]


class Dialect(ABC):
    """One model API's request and response format."""

    #: Short name used in logs and error messages.
    name: str

    @abstractmethod
    def user_turn(self, body: Mapping[str, Any]) -> Turn:
        """Extract the text a script's ``match`` is tested against."""

    @abstractmethod
    def stream(self, reply: Reply, ctx: AnswerContext) -> Iterator[Event]:
        """Render ``reply`` as the API's SSE events."""

    @abstractmethod
    def complete(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        """Render ``reply`` as the API's non-streaming JSON body."""

    @abstractmethod
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The API's JSON error body for an HTTP error ``status``."""

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True


def strip_reminders(s: str) -> str:
    return _REMINDER.sub("", s).strip()


def join_text(parts: list[str]) -> str:
    """Join user text parts, dropping system reminders and parts left empty by that."""
    return "\n".join(p for p in (strip_reminders(p) for p in parts) if p)


def chunks(s: str, size: int) -> list[str]:
    return [s[i : i + size] for i in range(0, len(s), size)]


def tool_input_json(block: ToolUse) -> str:
    return json.dumps(block.input, separators=(",", ":"))


def block_chars(block: Block) -> int:
    if isinstance(block, Text):
        return len(block.text)
    if isinstance(block, Thinking):
        return len(block.thinking)
    return len(block.name) + len(tool_input_json(block))


def usage_counts(reply: Reply, ctx: AnswerContext) -> dict[str, int]:
    """Token usage in Anthropic field names: the reply's ``usage`` over rough estimates
    (about four characters per token), so cost and context displays show plausible numbers."""
    estimated = sum(block_chars(b) for b in reply.blocks)
    counts = {
        "input_tokens": ctx.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": max(1, (estimated + 3) // 4),
    }
    counts.update(reply.usage or {})
    return counts


def stop_reason(reply: Reply) -> str:
    if reply.stop_reason:
        return reply.stop_reason
    return "tool_use" if any(isinstance(b, ToolUse) for b in reply.blocks) else "end_turn"
