"""Anthropic Messages API (``POST /v1/messages``), as used by Claude Code."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._dialect import (
    TOOL_ERROR,
    TOOL_RESULT,
    AnswerContext,
    Dialect,
    Event,
    Turn,
    chunks,
    join_text,
    stop_reason,
    tool_input_json,
    usage_counts,
)
from ._script import Reply, Text, Thinking

# Real signatures are opaque to clients; Claude Code only stores and echoes them back.
_SIGNATURE = "c2NyaXB0ZWQtbW9kZWwtc2lnbmF0dXJl"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _text_of(content: object) -> list[str]:
    """Text parts of a message or tool_result ``content`` (a string or a list of blocks)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        b["text"]
        for b in content
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    ]


class AnthropicMessages(Dialect):
    name = "anthropic-messages"

    def user_turn(self, body: Mapping[str, Any]) -> Turn:
        messages = body.get("messages")
        users = [
            m
            for m in (messages if isinstance(messages, list) else [])
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        if not users:
            return Turn("")
        content = users[-1].get("content")
        parts: list[str] = []
        markers: set[str] = set()
        for block in content if isinstance(content, list) else [content]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                markers.add(TOOL_RESULT)
                if block.get("is_error"):
                    markers.add(TOOL_ERROR)
                parts += _text_of(block.get("content"))
            else:
                parts += _text_of([block] if isinstance(block, dict) else block)
        return Turn(join_text(parts), frozenset(markers))

    def stream(self, reply: Reply, ctx: AnswerContext) -> Iterator[Event]:
        usage = usage_counts(reply, ctx)
        message = self._message(reply, ctx, content=[], stop=None, usage=usage)
        yield Event({"type": "message_start", "message": message}, "message_start")
        yield Event({"type": "ping"}, "ping")
        size = reply.chunk_size
        for index, (block, tool_id) in enumerate(
            zip(reply.blocks, ctx.tool_ids(reply, "toolu_scripted"), strict=True)
        ):
            if isinstance(block, Text):
                start: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": c} for c in chunks(block.text, size)]
            elif isinstance(block, Thinking):
                start = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    {"type": "thinking_delta", "thinking": c} for c in chunks(block.thinking, size)
                ]
                deltas.append({"type": "signature_delta", "signature": _SIGNATURE})
            else:
                start = {"type": "tool_use", "id": tool_id, "name": block.name, "input": {}}
                deltas = [
                    {"type": "input_json_delta", "partial_json": c}
                    for c in chunks(tool_input_json(block), size)
                ]
            yield Event(
                {"type": "content_block_start", "index": index, "content_block": start},
                "content_block_start",
            )
            for delta in deltas:
                yield Event(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                    delta=True,
                )
            yield Event({"type": "content_block_stop", "index": index}, "content_block_stop")
        yield Event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reply), "stop_sequence": None},
                "usage": usage,
            },
            "message_delta",
            final=True,
        )
        yield Event({"type": "message_stop"}, "message_stop", final=True)

    def complete(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block, tool_id in zip(reply.blocks, ctx.tool_ids(reply, "toolu_scripted"), strict=True):
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            elif isinstance(block, Thinking):
                content.append(
                    {"type": "thinking", "thinking": block.thinking, "signature": _SIGNATURE}
                )
            else:
                content.append(
                    {"type": "tool_use", "id": tool_id, "name": block.name, "input": block.input}
                )
        return self._message(
            reply, ctx, content=content, stop=stop_reason(reply), usage=usage_counts(reply, ctx)
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error_type(status), "message": message}}

    @staticmethod
    def _message(
        reply: Reply,
        ctx: AnswerContext,
        *,
        content: list[dict[str, Any]],
        stop: str | None,
        usage: dict[str, int],
    ) -> dict[str, Any]:
        return {
            "id": ctx.new_id("msg_scripted"),
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
