"""`TextPrinter`: the plain-text format, in chunks as events arrive."""

from __future__ import annotations

from agentkernel.events import (
    Error,
    Event,
    FileChange,
    PermissionDecided,
    PermissionRequest,
    PlanUpdate,
    Question,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnStarted,
)

from ._style import TEXT_CAP, _clip
from ._words import _decision_words, _plan_marks, _question_lines
from .tool import tool_summary


class TextPrinter:
    """Events in, plain-text chunks out, in arrival order: deltas as they come, one line per
    tool call, results indented under it. ``printer.text`` is everything printed so far and
    equals `text` over the same events."""

    def __init__(self, *, title: str = "", show_prompt: bool = False, quiet: bool = False) -> None:
        self.title = title
        self.show_prompt = show_prompt
        self.quiet = quiet
        self._chunks: list[str] = []
        self._last = ""  # kind of the last item printed
        self._line_open = False  # the last chunk ended mid-line
        # The text block being streamed (pieces printed so far), and one cut short by another
        # item before its closing `Text` arrived (the whole text printed for it).
        self._text: list[str] | None = None
        self._cut_text: str | None = None
        self._thinking = False  # a thinking block is open (its line is printed)
        self._answer: list[str] = []  # quiet: the last text block, printed at the end
        self._answer_open = False
        self._names: dict[str, str] = {}  # tool_use_id -> name
        self._asked: dict[str, Question] = {}  # request_id -> question
        self._calls: dict[str, str] = {}  # request_id -> tool_use_id of its call
        self._denied: set[str] = set()  # tool_use_ids of calls denied
        self._done: set[str] = set()  # tool_use_ids of calls with a result or a decision
        self._tool = ""  # tool_use_id of the card the last lines belong to
        self._plan: dict[str, str] = {}  # item -> status at the last printed plan
        self._turn_has_text = False

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def feed(self, event: Event) -> str:
        """Print one event; returns the chunk (often empty) that was added."""
        if event.parent_tool_use_id is not None:
            return "" if self.quiet else self._feed_nested(event)
        if self.quiet:
            return self._feed_quiet(event)
        if isinstance(event, TextDelta | Text):
            self._turn_has_text = True
            return self._feed_text(event)
        return self._feed_item(event)

    def _feed_nested(self, event: Event) -> str:
        """A sub-agent's work, indented under the call that runs it: its tool calls, failed
        results and whole text blocks (its deltas would interleave with the parent's)."""
        if isinstance(event, Text):
            body = event.text.strip()
        elif isinstance(event, ToolCall):
            body = _tool_line(event).rstrip("\n")
        elif isinstance(event, ToolResult) and event.is_error:
            body = "Error: " + (event.output.strip().splitlines() or [""])[0]
        else:
            return ""
        return self._emit("tool", "".join(f"  ↳ {line}\n" for line in body.splitlines()))

    def _append(self, chunk: str) -> str:
        if chunk:
            self._chunks.append(chunk)
            self._line_open = not chunk.endswith("\n")
        return chunk

    def _emit(self, kind: str, chunk: str) -> str:
        """Print one item, with a blank line around text blocks, prompts and the status line."""
        lead = ""
        if self._text is not None and kind != "text":  # cut short before its closing `Text`
            self._cut_text, self._text = "".join(self._text), None
            lead = self._append("\n") if self._line_open else ""
        if not self._chunks and self.title:
            chunk = f"● {self.title}\n" + ("\n" if kind in ("text", "thinking") else "") + chunk
        elif self._last and {kind, self._last} & {"text", "prompt", "end"}:
            chunk = "\n" + chunk
        self._last = kind
        if kind != "tool":
            self._tool = ""
        return lead + self._append(chunk)

    def _feed_text(self, event: TextDelta | Text) -> str:
        if isinstance(event, TextDelta):
            if not event.text:
                return ""
            if self._text is not None:
                self._text.append(event.text)
                return self._append(event.text)
            self._text, self._cut_text = [event.text], None
            return self._emit("text", event.text)
        if self._text is not None:
            printed, self._text = "".join(self._text), None
            rest = event.text[len(printed) :].rstrip("\n") if event.text.startswith(printed) else ""
            return self._append(rest + ("" if (printed + rest).endswith("\n") else "\n"))
        printed, self._cut_text = self._cut_text or "", None
        if printed and event.text.startswith(printed):
            rest = event.text[len(printed) :].strip("\n")
            return self._emit("text", rest + "\n") if rest else ""
        return self._emit("text", event.text.rstrip("\n") + "\n")

    def _feed_quiet(self, event: Event) -> str:
        """Errors as they come; the last text block and the status line at the end."""
        if isinstance(event, TextDelta):
            if not self._answer_open:  # a new block is the answer now
                self._answer, self._answer_open = [], True
            self._answer.append(event.text)
            return ""
        if isinstance(event, Text):
            self._answer, self._answer_open = [event.text], False
            return ""
        if isinstance(event, TurnStarted):
            self._answer, self._answer_open = [], False
            return self._emit("prompt", "───\n") if self._chunks else ""
        if isinstance(event, TurnEnded):
            answer = "".join(self._answer).rstrip("\n")
            self._answer, self._answer_open, self._turn_has_text = [], False, bool(answer)
            chunk = self._emit("text", answer + "\n") if answer else ""
            return chunk + self._end_lines(event)
        if isinstance(event, Error):
            return self._feed_item(event)
        return ""

    def _feed_item(self, event: Event) -> str:
        if isinstance(event, ThinkingDelta | Thinking):
            was_open, self._thinking = self._thinking, isinstance(event, ThinkingDelta)
            return "" if was_open else self._emit("thinking", "✻ Thinking…\n")
        if isinstance(event, ToolCall):
            self._names[event.tool_use_id] = event.name
            chunk = self._emit("tool", _tool_line(event))
            self._tool = event.tool_use_id
            return chunk
        if isinstance(event, ToolResult):
            self._done.add(event.tool_use_id)
            if event.is_error and event.tool_use_id in self._denied:
                return ""  # it only repeats the denial printed above: the tool never ran
            same = self._tool == event.tool_use_id and self._last == "tool"
            name = self._names.get(event.tool_use_id, "tool")
            head = "" if same else f"◀ {name} result\n"
            chunk = self._emit("tool", head + _result_text(event))
            self._tool = event.tool_use_id
            return chunk
        if isinstance(event, PermissionRequest | PermissionDecided):
            keep = self._tool
            if isinstance(event, PermissionRequest):
                if event.tool_use_id:
                    self._calls[event.request_id] = event.tool_use_id
                chunk = self._emit("tool", f"? Permission requested: {event.tool_name}\n")
            else:
                call = self._calls.get(event.request_id) or self._unasked_call(event.tool_name)
                if event.behavior == "deny" and call:
                    self._denied.add(call)
                asked = self._asked.get(event.request_id)
                allowed, words = _decision_words(event, with_tool=True, question=asked)
                chunk = self._emit("tool", f"{'✔' if allowed else '✖'} {words}\n")
            self._tool = keep  # the result still belongs under its call
            return chunk
        if isinstance(event, Question):
            self._asked[event.request_id] = event
            return self._emit("tool", _question_text(event))
        if isinstance(event, FileChange):
            clipped, note = _clip(event.diff, TEXT_CAP) if event.diff else ("", "")
            body = "".join(f"    {ln}\n" for ln in clipped.split("\n")) if clipped else ""
            return self._emit("tool", f"± {event.path}\n{body}" + (f"    {note}\n" if note else ""))
        if isinstance(event, PlanUpdate):
            return self._plan_lines(event)
        if isinstance(event, Error):
            retry = " (retryable)" if event.retryable else ""
            return self._emit("error", f"✖ Error ({event.kind}): {event.message}{retry}\n")
        if isinstance(event, TurnStarted):
            self._plan, self._turn_has_text = {}, False
            if self.show_prompt:
                lines = event.prompt.splitlines() or [""]
                return self._emit("prompt", "".join(f"> {ln}\n" for ln in lines))
            return self._emit("prompt", "───\n") if self._chunks else ""
        if isinstance(event, TurnEnded):
            return self._end_lines(event)
        return ""

    def _unasked_call(self, tool_name: str) -> str:
        """The call a decision made without asking is about (see `Transcript`): the first
        call of that tool without a request, decision or result yet."""
        asked = set(self._calls.values())
        for tool_use_id, name in self._names.items():
            if name == tool_name and tool_use_id not in self._done | asked:
                self._done.add(tool_use_id)
                return tool_use_id
        return ""

    def _plan_lines(self, event: PlanUpdate) -> str:
        """The whole plan the first time; then only the items whose status changed."""
        first = not self._plan
        lines = []
        for item in event.items:
            content, status = str(item.get("content", "")), str(item.get("status", ""))
            if first or self._plan.get(content) != status:
                lines.append(f"  {_plan_marks(status)[0]} {content}\n")
            self._plan[content] = status
        if not lines:
            return ""
        return self._emit("plan", ("☰ Plan\n" if first else "☰ Plan updated\n") + "".join(lines))

    def _end_lines(self, event: TurnEnded) -> str:
        self._thinking, self._cut_text = False, None
        out = ""
        if event.result and event.is_error:
            out += self._emit("error", f"✖ {event.result}\n")
        elif event.result and not self._turn_has_text:
            out += self._emit("text", event.result.rstrip("\n") + "\n")
        return out + self._emit("end", f"── {event.stop_reason}\n")


def _tool_line(call: ToolCall) -> str:
    if call.kind == "execute" and call.command is not None:
        first, *rest = call.command.strip().split("\n") or [""]
        return f"▶ {call.name}: {first}\n" + "".join(f"    {ln}\n" for ln in rest)
    summary = tool_summary(call.name, call.input, call)
    return f"▶ {call.name}: {summary}\n" if summary else f"▶ {call.name}\n"


def _result_text(result: ToolResult) -> str:
    if not result.output.strip():
        return "  ⎿ (no output)\n"
    clipped, note = _clip(result.output, TEXT_CAP)
    lines = clipped.split("\n") + ([note] if note else [])
    if result.is_error:
        lines[0] = "Error: " + lines[0]
    return "".join(("  ⎿ " if i == 0 else "    ") + ln + "\n" for i, ln in enumerate(lines))


def _question_text(q: Question) -> str:
    out = ""
    for header, question, options in _question_lines(q):
        out += f"? {header + ': ' if header else ''}{question}\n"
        out += "".join(f"    - {label}" + (f": {d}" if d else "") + "\n" for label, d in options)
    return out
