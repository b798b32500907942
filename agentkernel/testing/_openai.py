"""OpenAI wire formats: the Responses API (Codex) and Chat Completions (Copilot and others).

Mapping of script blocks: ``text`` -> assistant output text, ``tool_use`` -> a function
call (``id`` becomes the ``call_id``), ``thinking`` -> a reasoning summary (Responses) or
``reasoning_content`` deltas (Chat Completions, the common extension).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ._dialect import (
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
from ._script import Reply, Text, Thinking, ToolUse

_TEXT_PART_TYPES = ("text", "input_text", "output_text")


def _texts(content: object) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        p["text"]
        for p in content
        if isinstance(p, dict)
        and p.get("type") in _TEXT_PART_TYPES
        and isinstance(p.get("text"), str)
    ]


def _openai_error(status: int, message: str) -> dict[str, Any]:
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", None
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _latest_turn(items: list[Any], *, is_output: Any, is_model: Any) -> Turn:
    """The text after the model's last output: tool outputs plus the newest user message.

    Earlier user messages in that tail (instructions and environment context that agent
    CLIs send ahead of the prompt) are left out, like Claude Code's system reminders.
    """
    outputs: list[str] = []
    user: list[str] = []
    for item in reversed(items):
        if not isinstance(item, dict) or is_model(item):
            break
        if is_output(item):
            outputs[:0] = _texts(item.get("output", item.get("content")))
        elif item.get("role") == "user" and not user:
            user = _texts(item.get("content"))
    markers = frozenset({TOOL_RESULT}) if outputs else frozenset()
    return Turn(join_text(outputs + user), markers)


def _is_custom_tool_call(block: ToolUse) -> bool:
    """A ``tool_use`` whose whole input is ``{"input": "<text>"}`` is a call to a custom
    (freeform) tool, e.g. Codex's ``apply_patch``: such a tool takes raw text, not JSON."""
    return list(block.input) == ["input"] and isinstance(block.input["input"], str)


class OpenAIResponses(Dialect):
    """The Responses API. ``tool_use(name, {"input": "<text>"})`` becomes a
    ``custom_tool_call`` with that raw text as input; any other ``tool_use`` a
    ``function_call`` with JSON arguments."""

    name = "openai-responses"

    def user_turn(self, body: Mapping[str, Any]) -> Turn:
        items = body.get("input")
        if isinstance(items, str):
            return Turn(join_text([items]))
        return _latest_turn(
            items if isinstance(items, list) else [],
            is_output=lambda i: str(i.get("type", "")).endswith("_call_output"),
            is_model=lambda i: (
                i.get("role") == "assistant"
                or i.get("type") == "reasoning"
                or str(i.get("type", "")).endswith("_call")
            ),
        )

    def stream(self, reply: Reply, ctx: AnswerContext) -> Iterator[Event]:
        seq = itertools.count()

        def event(kind: str, fields: dict[str, Any], *, delta: bool = False) -> Event:
            data = {"type": kind, "sequence_number": next(seq), **fields}
            return Event(data, kind, delta=delta, final=kind == "response.completed")

        done = self._response(reply, ctx)
        started = {**done, "status": "in_progress", "output": [], "usage": None}
        yield event("response.created", {"response": started})
        yield event("response.in_progress", {"response": started})
        size = reply.chunk_size
        for index, (block, item) in enumerate(zip(reply.blocks, done["output"], strict=True)):
            at = {"item_id": item["id"], "output_index": index}
            if isinstance(block, Text):
                yield event(
                    "response.output_item.added",
                    {
                        "output_index": index,
                        "item": {**item, "status": "in_progress", "content": []},
                    },
                )
                part = item["content"][0]
                at = {**at, "content_index": 0}
                yield event("response.content_part.added", {**at, "part": {**part, "text": ""}})
                for c in chunks(block.text, size):
                    yield event("response.output_text.delta", {**at, "delta": c}, delta=True)
                yield event("response.output_text.done", {**at, "text": block.text})
                yield event("response.content_part.done", {**at, "part": part})
            elif isinstance(block, Thinking):
                yield event(
                    "response.output_item.added",
                    {"output_index": index, "item": {**item, "summary": []}},
                )
                part = item["summary"][0]
                at = {**at, "summary_index": 0}
                yield event(
                    "response.reasoning_summary_part.added", {**at, "part": {**part, "text": ""}}
                )
                for c in chunks(block.thinking, size):
                    yield event(
                        "response.reasoning_summary_text.delta", {**at, "delta": c}, delta=True
                    )
                yield event("response.reasoning_summary_text.done", {**at, "text": block.thinking})
                yield event("response.reasoning_summary_part.done", {**at, "part": part})
            else:
                # A function call streams its JSON arguments; a custom (freeform) tool call
                # streams its raw input text.
                field, kind = (
                    ("input", "custom_tool_call_input")
                    if item["type"] == "custom_tool_call"
                    else ("arguments", "function_call_arguments")
                )
                yield event(
                    "response.output_item.added",
                    {"output_index": index, "item": {**item, "status": "in_progress", field: ""}},
                )
                for c in chunks(item[field], size):
                    yield event(f"response.{kind}.delta", {**at, "delta": c}, delta=True)
                yield event(f"response.{kind}.done", {**at, field: item[field]})
            yield event("response.output_item.done", {"output_index": index, "item": item})
        yield event("response.completed", {"response": done})

    def complete(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        return self._response(reply, ctx)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return _openai_error(status, message)

    @staticmethod
    def _response(reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        """The finished response object; streaming derives its in-progress views from it."""
        output: list[dict[str, Any]] = []
        for block, call_id in zip(reply.blocks, ctx.tool_ids(reply, "call_scripted"), strict=True):
            if isinstance(block, Text):
                output.append(
                    {
                        "id": ctx.new_id("msg_scripted"),
                        "type": "message",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": block.text, "annotations": []}],
                    }
                )
            elif isinstance(block, Thinking):
                output.append(
                    {
                        "id": ctx.new_id("rs_scripted"),
                        "type": "reasoning",
                        "summary": [{"type": "summary_text", "text": block.thinking}],
                    }
                )
            elif _is_custom_tool_call(block):
                output.append(
                    {
                        "id": ctx.new_id("ctc_scripted"),
                        "type": "custom_tool_call",
                        "status": "completed",
                        "call_id": call_id,
                        "name": block.name,
                        "input": block.input["input"],
                    }
                )
            else:
                output.append(
                    {
                        "id": ctx.new_id("fc_scripted"),
                        "type": "function_call",
                        "status": "completed",
                        "call_id": call_id,
                        "name": block.name,
                        "arguments": tool_input_json(block),
                    }
                )
        counts = usage_counts(reply, ctx)
        return {
            "id": ctx.new_id("resp_scripted"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": ctx.model,
            "output": output,
            "error": None,
            "incomplete_details": None,
            "usage": {
                "input_tokens": counts["input_tokens"],
                "input_tokens_details": {"cached_tokens": counts["cache_read_input_tokens"]},
                "output_tokens": counts["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": counts["input_tokens"] + counts["output_tokens"],
            },
        }


_FINISH_REASONS = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


class OpenAIChatCompletions(Dialect):
    name = "openai-chat-completions"

    def user_turn(self, body: Mapping[str, Any]) -> Turn:
        messages = body.get("messages")
        return _latest_turn(
            messages if isinstance(messages, list) else [],
            is_output=lambda m: m.get("role") == "tool",
            is_model=lambda m: m.get("role") == "assistant",
        )

    def stream(self, reply: Reply, ctx: AnswerContext) -> Iterator[Event]:
        head = self._head(ctx, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**head, "choices": [choice], **extra}

        yield Event(chunk({"role": "assistant", "content": ""}))
        size = reply.chunk_size
        calls = 0
        for block, call_id in zip(reply.blocks, ctx.tool_ids(reply, "call_scripted"), strict=True):
            if isinstance(block, Text):
                for c in chunks(block.text, size):
                    yield Event(chunk({"content": c}), delta=True)
            elif isinstance(block, Thinking):
                for c in chunks(block.thinking, size):
                    yield Event(chunk({"reasoning_content": c}), delta=True)
            else:
                start = {"index": calls, "id": call_id, "type": "function"}
                start["function"] = {"name": block.name, "arguments": ""}
                yield Event(chunk({"tool_calls": [start]}))
                for c in chunks(tool_input_json(block), size):
                    call = {"index": calls, "function": {"arguments": c}}
                    yield Event(chunk({"tool_calls": [call]}), delta=True)
                calls += 1
        yield Event(chunk({}, self._finish(reply), usage=self._usage(reply, ctx)), final=True)
        yield Event("[DONE]", final=True)

    def complete(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        texts = [b.text for b in reply.blocks if isinstance(b, Text)]
        if texts:
            message["content"] = "".join(texts)
        thoughts = [b.thinking for b in reply.blocks if isinstance(b, Thinking)]
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        calls = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": block.name, "arguments": tool_input_json(block)},
            }
            for block, call_id in zip(
                reply.blocks, ctx.tool_ids(reply, "call_scripted"), strict=True
            )
            if isinstance(block, ToolUse)
        ]
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "message": message, "finish_reason": self._finish(reply)}
        return {
            **self._head(ctx, "chat.completion"),
            "choices": [choice],
            "usage": self._usage(reply, ctx),
        }

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return _openai_error(status, message)

    @staticmethod
    def _head(ctx: AnswerContext, kind: str) -> dict[str, Any]:
        return {
            "id": ctx.new_id("chatcmpl_scripted"),
            "object": kind,
            "created": int(time.time()),
            "model": ctx.model,
        }

    @staticmethod
    def _finish(reply: Reply) -> str:
        reason = stop_reason(reply)
        return _FINISH_REASONS.get(reason, reason)

    @staticmethod
    def _usage(reply: Reply, ctx: AnswerContext) -> dict[str, int]:
        counts = usage_counts(reply, ctx)
        return {
            "prompt_tokens": counts["input_tokens"],
            "completion_tokens": counts["output_tokens"],
            "total_tokens": counts["input_tokens"] + counts["output_tokens"],
        }
