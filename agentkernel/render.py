"""Static rendering of a turn: events in, plain text / Markdown / HTML out.

Pure functions with no IPython or widget import, so the exporter, the headless runner and the
saved notebook all draw a turn the same way the live view freezes it. Two folds do the work:

* `Transcript` groups events into blocks (a text block, a tool card holding its call, permission
  and result, a diff, the plan, ...) for `markdown` and `html`.
* `TextPrinter` turns events into plain-text chunks *in arrival order*, so a headless run can print
  as it goes; `text` is exactly the concatenation of those chunks. Plain text carries no times,
  durations, costs or ids, so a rerun of a scripted turn compares equal (nbval).

Tool output is untrusted: every string reaching HTML is escaped and agent Markdown is rendered
with raw HTML escaped and harmful links dropped.
"""

from __future__ import annotations

import html as _html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import mistune

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
    ToolInfo,
    ToolResult,
    TurnEnded,
    TurnStarted,
    Usage,
    UsageUpdate,
)

__all__ = [
    "Block",
    "QuestionBlock",
    "StreamBlock",
    "TextPrinter",
    "ToolBlock",
    "Transcript",
    "html",
    "markdown",
    "mime_bundle",
    "text",
    "tool_input_html",
    "tool_summary",
]

# (max lines, max characters) kept of a tool result or diff in each format.
TEXT_CAP = (20, 2000)
MARKDOWN_CAP = (40, 4000)
HTML_CAP = (400, 40_000)
# Results up to this many lines show open in HTML; longer ones start collapsed.
HTML_OPEN_LINES = 12

_GREEN = "#2da44e"
_RED = "#d1242f"
_AMBER = "#bf8700"
_MUTED = "opacity:0.7"
_CARD = "border:1px solid rgba(128,128,128,0.35);border-radius:6px;margin:6px 0;padding:4px 8px"
_MONO = "font-family:monospace;font-size:0.9em"
_PRE = (
    f"white-space:pre-wrap;word-break:break-word;margin:4px 0;padding:4px 6px;{_MONO};"
    "background-color:rgba(128,128,128,0.08);border-radius:4px;max-height:480px;overflow-y:auto;"
    "line-height:1.35"
)
_DIFF_BG = {
    "+": "background-color:rgba(46,160,67,0.18)",
    "-": "background-color:rgba(248,81,73,0.18)",
    "@": "background-color:rgba(56,139,253,0.15)",
}

_md_to_html = mistune.create_markdown(
    escape=True, plugins=["strikethrough", "table", "task_lists", "url"]
)

# --------------------------------------------------------------------------- helpers


def _esc(value: str) -> str:
    return _html.escape(value, quote=True)


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _one_line(value: str, limit: int = 120) -> str:
    lines = value.strip().splitlines() or [""]
    head = lines[0]
    if len(head) > limit:
        return head[: limit - 1] + "…"
    return head + (" …" if len(lines) > 1 else "")


def _clip(value: str, cap: tuple[int, int]) -> tuple[str, str]:
    """Keep at most ``cap`` (lines, chars) of ``value``; return the kept text and a note saying
    how much was cut (empty when nothing was)."""
    max_lines, max_chars = cap
    value = value.rstrip("\n")
    total_lines = value.count("\n") + 1
    if total_lines <= max_lines and len(value) <= max_chars:
        return value, ""
    kept = "\n".join(value.split("\n")[:max_lines])[:max_chars]
    kept_lines = kept.count("\n") + 1
    more_chars = len(value) - len(kept)
    more_lines = total_lines - kept_lines
    if more_lines:
        return kept, f"… {more_lines:,} more lines ({more_chars:,} characters) cut"
    return kept, f"… {more_chars:,} more characters cut"


def _fence(body: str, lang: str = "") -> str:
    """A Markdown code fence longer than any backtick run inside ``body``."""
    longest = run = 0
    for ch in body:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{body}\n{ticks}"


def _code_span(value: str) -> str:
    ticks = "`"
    while ticks in value:
        ticks += "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{ticks}{pad}{value}{pad}{ticks}"


def tool_summary(name: str, input: dict[str, Any], info: ToolInfo) -> str:
    """One line saying what a tool call acts on: the backend's title, else the input as
    compact JSON, clipped."""
    if info.title:
        return _one_line(info.title)
    return _one_line(_compact_json(input)) if input else ""


def _diff_lines(diff: str) -> str:
    """A unified diff's change lines (' ', '-', '+'), without its file headers: the card's
    title already names the file."""
    return "\n".join(
        ln
        for ln in diff.splitlines()
        if not ln.startswith(("--- ", "+++ ", "@@")) and ln not in ("---", "+++")
    )


def _input_view(
    name: str, input: dict[str, Any], info: ToolInfo
) -> tuple[str, tuple[str, str] | None]:
    """What a tool card shows of the input: a header summary and a (language, body) below it,
    never saying the same thing twice."""
    if info.kind == "execute" and info.command is not None:
        return "", ("bash", info.command)
    summary = tool_summary(name, input, info)
    if info.diff:
        return summary, ("diff", _diff_lines(info.diff))
    if not input or info.kind == "think":
        return summary, None
    whole = _compact_json(input)
    if info.title:
        said = all(_compact_json(v).strip('"') in info.title for v in input.values())
        return summary, None if said else ("json", whole)
    if len(whole) <= 120:
        return whole, None
    return "", ("json", whole)


def _decision_words(
    d: PermissionDecided, *, with_tool: bool, question: Question | None = None
) -> tuple[bool, str]:
    """(allowed, words) for a decision: "Allowed run (by user)", "Denied (by rule): why", or
    for a question "Answered (by user)" / "Declined (by user)"; ``with_tool`` names the tool,
    or for a question the answers (when no card shows them)."""
    allowed = d.behavior == "allow"
    if question is not None:
        answers = "; ".join(_answers(question).values()) if with_tool else ""
        verb = (f"Answered: {answers}" if answers else "Answered") if allowed else "Declined"
    else:
        verb = ("Always allowed" if d.always else "Allowed") if allowed else "Denied"
        verb = f"{verb} {d.tool_name}" if with_tool else verb
    words = f"{verb} (by {d.by})"
    if not allowed and d.reason:
        words += f": {d.reason}"
    return allowed, words


def _usage_words(usage: Usage) -> str:
    if not usage.total_tokens:
        return ""
    words = f"{usage.total_tokens:,} tokens ({usage.input_tokens:,} in, {usage.output_tokens:,} out"
    cached = usage.cache_read_tokens + usage.cache_creation_tokens
    return words + (f", {cached:,} cached)" if cached else ")")


def _status_words(end: TurnEnded) -> str:
    """The Markdown / HTML footer: stop reason, tokens, cost, duration and model calls. (Plain
    text keeps only the stop reason: token counts follow the prompt, which holds paths and
    dates, so they differ from run to run.)"""
    parts = [end.stop_reason]
    if usage := _usage_words(end.usage):
        parts.append(usage)
    if end.usage.cost_usd:
        parts.append(f"${end.usage.cost_usd:.4f}")
    if end.duration_s:
        parts.append(f"{end.duration_s:.1f}s")
    if end.model_calls:
        parts.append(f"{end.model_calls} model call{'s' if end.model_calls != 1 else ''}")
    return " · ".join(parts)


def _html_pre(body: str, style: str = _PRE) -> str:
    return f'<div style="{style}">{_esc(body)}</div>'


def _html_diff(body: str) -> str:
    rows = []
    for line in body.split("\n"):
        bg = _DIFF_BG.get(line[:1], "") if not line.startswith(("+++", "---")) else ""
        rows.append(f'<div style="{bg}">{_esc(line) or " "}</div>')
    style = _PRE.replace("white-space:pre-wrap", "white-space:pre").replace(
        "word-break:break-word", "overflow-x:auto"
    )
    return f'<div style="{style}">{"".join(rows)}</div>'


def _html_note(note: str) -> str:
    if not note:
        return ""
    return f'<div style="{_MUTED};font-size:0.85em;font-style:italic">{_esc(note)}</div>'


def _html_body(lang: str, body: str) -> str:
    clipped, note = _clip(body, HTML_CAP)
    shown = _html_diff(clipped) if lang == "diff" else _html_pre(clipped)
    return shown + _html_note(note)


def _md_body(lang: str, body: str) -> str:
    clipped, note = _clip(body, MARKDOWN_CAP)
    return _fence(clipped, lang) + (f"\n\n*{note}*" if note else "")


def _badge(label: str, color: str) -> str:
    return f'<span style="color:{color};font-size:0.85em;margin-left:8px">{_esc(label)}</span>'


def _plan_marks(status: str) -> tuple[str, str]:
    """(checkbox for text, Markdown task marker) for a plan item status."""
    if status == "completed":
        return "☑", "[x]"
    if status == "in_progress":
        return "◐", "[ ]"
    return "☐", "[ ]"


def _question_lines(q: Question) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(header, question, [(label, description)]) for each question asked."""
    out = []
    for item in q.questions:
        options = [
            (str(o.get("label", "")), str(o.get("description", "") or ""))
            for o in item.get("options", []) or []
        ]
        out.append((str(item.get("header", "") or ""), str(item.get("question", "")), options))
    return out


def _answers(q: Question) -> dict[str, str]:
    """The answers when this is the live event and it was answered (stored copies lose them)."""
    decision = q.decision
    return dict(decision.answers or {}) if decision is not None else {}


# --------------------------------------------------------------------------- blocks


class Block:
    """One unit of a rendered turn. ``kind`` tells a live view how to draw it while it changes:
    ``text`` and ``thinking`` blocks stream, every other block is redrawn from `html`."""

    kind: ClassVar[str] = "card"

    def markdown(self) -> str:
        raise NotImplementedError

    def html(self) -> str:
        raise NotImplementedError


@dataclass(eq=False)
class StreamBlock(Block):
    """A text or thinking block; ``done`` once its whole-block event arrived (or the turn ended).

    Deltas are kept as pieces and joined on read: appending to one growing string would copy
    it on every delta (quadratic in a long answer)."""

    thinking: bool = False
    done: bool = False
    _parts: list[str] = field(default_factory=list, repr=False)
    _html: str = field(default="", repr=False)  # the finished block's HTML, rendered once

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "thinking" if self.thinking else "text"

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def extend(self, delta: str) -> None:
        self._parts.append(delta)

    def complete(self, text: str) -> None:
        self._parts, self.done, self._html = [text], True, ""

    def markdown(self) -> str:
        body = self.text.strip("\n")
        if not self.thinking:
            return body
        return f"<details><summary>Thinking</summary>\n\n{body}\n\n</details>"

    def html(self) -> str:
        if self.thinking:
            return (
                f'<details style="margin:4px 0"><summary style="cursor:pointer;{_MUTED}">'
                f"✻ Thinking</summary>"
                f'<div style="white-space:pre-wrap;{_MUTED};font-style:italic;'
                f'padding-left:12px">{_esc(self.text.strip())}</div></details>'
            )
        if not self.done:
            return f'<div style="white-space:pre-wrap">{_esc(self.text)}</div>'
        if not self._html:
            self._html = f"<div>{_md_to_html(self.text)}</div>"
        return self._html


@dataclass(eq=False)
class ToolBlock(Block):
    """A tool call with what happened to it: approval, question, result."""

    tool_use_id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)
    info: ToolInfo = field(default_factory=ToolInfo)
    result: ToolResult | None = None
    request: PermissionRequest | None = None
    decided: PermissionDecided | None = None
    question: Question | None = None
    interrupted: bool = False

    def state(self) -> tuple[str, str]:
        """(label, color) of the card's status badge."""
        if self.result is not None:
            return ("error", _RED) if self.result.is_error else ("done", _GREEN)
        if self.decided is not None and self.decided.behavior == "deny":
            return "denied", _RED
        if self.interrupted:
            return "not finished", _AMBER
        if self.question is not None and self.decided is None and not self.question.decided:
            return "waiting for an answer", _AMBER
        if self.request is not None and self.decided is None and not self.request.decided:
            return "awaiting approval", _AMBER
        return "running", _AMBER

    def markdown(self) -> str:
        label, _ = self.state()
        if self.question is not None:
            parts = [_question_md(self.question)]
        else:
            summary, body = _input_view(self.name, self.input, self.info)
            head = f"**▶ {self.name}**" + (f" {_code_span(summary)}" if summary else "")
            parts = [head + ("" if label in ("done", "running") else f" — *{label}*")]
            if body:
                parts.append(_md_body(*body))
        if self.decided is not None:
            allowed, words = _decision_words(self.decided, with_tool=False, question=self.question)
            parts.append(f"{'✔' if allowed else '✖'} {words}")
        if self.result is not None:
            parts.append(_result_md(self.result))
        return "\n\n".join(parts)

    def html(self) -> str:
        label, color = self.state()
        if self.question is not None:
            inner = _question_html(self.question)
        else:
            inner = _tool_html(self.name, self.input, self.info, _badge(label, color))
        if self.decided is not None:
            inner += _decision_html(self.decided, with_tool=False, question=self.question)
        if self.result is not None:
            inner += _result_html(self.result)
        return f'<div style="{_CARD}">{inner}</div>'


def _tool_html(name: str, input: dict[str, Any], info: ToolInfo, badge: str = "") -> str:
    summary, body = _input_view(name, input, info)
    head = f'<span style="font-weight:600">▶ {_esc(name)}</span>'
    if summary:
        head += f' <span style="{_MONO}">{_esc(summary)}</span>'
    return f"<div>{head}{badge}</div>" + (_html_body(*body) if body else "")


def tool_input_html(request: PermissionRequest) -> str:
    """What a permission request would run (the command, an edit's diff, else its input) as
    the escaped HTML a tool card shows."""
    return _tool_html(request.tool_name, request.input, request)


def _result_md(result: ToolResult) -> str:
    if not result.output.strip():
        return "*(no output)*"
    clipped, note = _clip(result.output, MARKDOWN_CAP)
    head = "**Error:**\n\n" if result.is_error else ""
    return head + _fence(clipped, "text") + (f"\n\n*{note}*" if note else "")


def _result_html(result: ToolResult) -> str:
    if not result.output.strip():
        return f'<div style="{_MUTED};font-size:0.85em">(no output)</div>'
    clipped, note = _clip(result.output, HTML_CAP)
    lines = result.output.rstrip("\n").count("\n") + 1
    label = ("Error" if result.is_error else "Output") + f" · {lines:,} line{'s' * (lines != 1)}"
    style = _PRE + (f";color:{_RED}" if result.is_error else "")
    is_open = " open" if lines <= HTML_OPEN_LINES else ""
    return (
        f'<details{is_open}><summary style="cursor:pointer;{_MUTED};font-size:0.85em">'
        f"{_esc(label)}</summary>{_html_pre(clipped, style)}{_html_note(note)}</details>"
    )


def _decision_html(
    d: PermissionDecided, *, with_tool: bool, question: Question | None = None
) -> str:
    allowed, words = _decision_words(d, with_tool=with_tool, question=question)
    icon, color = ("✔", _GREEN) if allowed else ("✖", _RED)
    return f'<div style="color:{color};font-size:0.9em">{icon} {_esc(words)}</div>'


def _question_md(q: Question) -> str:
    answers = _answers(q)
    parts = []
    for header, question, options in _question_lines(q):
        lines = [f"**? {header}** {question}" if header else f"**?** {question}"]
        lines += [f"- **{label}**" + (f" — {desc}" if desc else "") for label, desc in options]
        if question in answers:
            lines.append(f"\n**Answer:** {answers[question]}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _question_html(q: Question) -> str:
    answers = _answers(q)
    out = []
    for header, question, options in _question_lines(q):
        head = f'<span style="font-weight:600">? {_esc(header)}</span> ' if header else "? "
        items = "".join(
            f"<li><b>{_esc(label)}</b>" + (f" — {_esc(desc)}" if desc else "") + "</li>"
            for label, desc in options
        )
        answer = (
            f'<div style="color:{_GREEN}">Answer: {_esc(answers[question])}</div>'
            if question in answers
            else ""
        )
        items = f'<ul style="margin:2px 0">{items}</ul>'
        out.append(f"<div>{head}{_esc(question)}</div>{items}{answer}")
    return "".join(out)


@dataclass(eq=False)
class QuestionBlock(Block):
    """A question not tied to a tool card."""

    question: Question
    decided: PermissionDecided | None = None

    def markdown(self) -> str:
        if self.decided is None:
            return _question_md(self.question)
        allowed, words = _decision_words(self.decided, with_tool=False, question=self.question)
        return f"{_question_md(self.question)}\n\n{'✔' if allowed else '✖'} {words}"

    def html(self) -> str:
        inner = _question_html(self.question)
        if self.decided is not None:
            inner += _decision_html(self.decided, with_tool=False, question=self.question)
        return f'<div style="{_CARD}">{inner}</div>'


@dataclass(eq=False)
class PermissionBlock(Block):
    """A permission request or decision not tied to a tool card."""

    tool_name: str
    request: PermissionRequest | None = None
    decided: PermissionDecided | None = None

    def markdown(self) -> str:
        if self.decided is not None:
            allowed, words = _decision_words(self.decided, with_tool=True)
            return f"{'✔' if allowed else '✖'} {words}"
        return f"? Permission requested: {self.tool_name}"

    def html(self) -> str:
        if self.decided is not None:
            return _decision_html(self.decided, with_tool=True)
        return f'<div style="color:{_AMBER}">? Permission requested: {_esc(self.tool_name)}</div>'


@dataclass(eq=False)
class FileBlock(Block):
    change: FileChange

    def markdown(self) -> str:
        head = f"**± {_code_span(self.change.path)}**"
        return head + ("\n\n" + _md_body("diff", self.change.diff) if self.change.diff else "")

    def html(self) -> str:
        path = f'<span style="{_MONO}">{_esc(self.change.path)}</span>'
        head = f'<div style="font-weight:600">± {path}</div>'
        body = _html_body("diff", self.change.diff) if self.change.diff else ""
        return f'<div style="{_CARD}">{head}{body}</div>'


@dataclass(eq=False)
class PlanBlock(Block):
    """The turn's plan, drawn once at its first appearance and kept at its latest state."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def progress(self) -> str:
        done = sum(1 for i in self.items if i.get("status") == "completed")
        return f"{done}/{len(self.items)}"

    def markdown(self) -> str:
        lines = ["**Plan**", ""]
        for item in self.items:
            _, mark = _plan_marks(str(item.get("status", "")))
            note = " *(in progress)*" if item.get("status") == "in_progress" else ""
            lines.append(f"- {mark} {item.get('content', '')}{note}")
        return "\n".join(lines)

    def html(self) -> str:
        rows = []
        for item in self.items:
            status = str(item.get("status", ""))
            box, _ = _plan_marks(status)
            style = {
                "completed": f"text-decoration:line-through;{_MUTED}",
                "in_progress": "font-weight:600",
            }.get(status, "")
            rows.append(f'<li style="{style}">{box} {_esc(str(item.get("content", "")))}</li>')
        progress = f'<span style="{_MUTED}">{self.progress()}</span>'
        head = f'<div style="font-weight:600">☰ Plan {progress}</div>'
        items = "".join(rows)
        ul = f'<ul style="list-style-type:none;padding-left:8px;margin:2px 0">{items}</ul>'
        return f'<div style="{_CARD}">{head}{ul}</div>'


@dataclass(eq=False)
class ErrorBlock(Block):
    error: Error

    def markdown(self) -> str:
        retry = " *(retryable)*" if self.error.retryable else ""
        return f"**✖ Error** ({_code_span(self.error.kind)}): {self.error.message}{retry}"

    def html(self) -> str:
        retry = " (retryable)" if self.error.retryable else ""
        return (
            f'<div style="border-left:3px solid {_RED};background-color:rgba(209,36,47,0.08);'
            f'padding:4px 8px;margin:6px 0"><b style="color:{_RED}">✖ Error</b> '
            f"({_esc(self.error.kind)}): {_esc(self.error.message)}{_esc(retry)}</div>"
        )


@dataclass(eq=False)
class PromptBlock(Block):
    """A turn's prompt (``show``) or, when hidden, the rule between two turns."""

    prompt: str
    show: bool

    def markdown(self) -> str:
        if not self.show:
            return "---"
        return "\n".join("> " + ln for ln in self.prompt.splitlines() or [""])

    def html(self) -> str:
        if not self.show:
            return '<hr style="border-top:1px solid rgba(128,128,128,0.35)">'
        return (
            f'<div style="border-left:3px solid rgba(128,128,128,0.5);padding:2px 8px;'
            f'margin:6px 0;white-space:pre-wrap"><b>&gt;</b> {_esc(self.prompt)}</div>'
        )


@dataclass(eq=False)
class EndBlock(Block):
    """The footer; also shows the final result when the turn produced no text block."""

    ended: TurnEnded
    show_result: bool = False

    def ok(self) -> bool:
        return not self.ended.is_error and self.ended.stop_reason == "end_turn"

    def markdown(self) -> str:
        parts = []
        if self.ended.result and (self.show_result or self.ended.is_error):
            parts.append(
                f"**✖ Error:** {self.ended.result}" if self.ended.is_error else self.ended.result
            )
        parts.append(f"*{'✔' if self.ok() else '⚠'} {_status_words(self.ended)}*")
        return "\n\n".join(parts)

    def html(self) -> str:
        out = ""
        if self.ended.result and self.ended.is_error:
            out += f'<div style="color:{_RED}">✖ {_esc(self.ended.result)}</div>'
        elif self.ended.result and self.show_result:
            out += f"<div>{_md_to_html(self.ended.result)}</div>"
        icon, color = ("✔", _GREEN) if self.ok() else ("⚠", _AMBER)
        return out + (
            f'<div style="font-size:0.85em;border-top:1px solid rgba(128,128,128,0.3);'
            f'margin-top:6px;padding-top:4px"><span style="color:{color}">{icon}</span> '
            f'<span style="{_MUTED}">{_esc(_status_words(self.ended))}</span></div>'
        )


# --------------------------------------------------------------------------- folds


class Transcript:
    """Folds events into `Block`s in display order.

    `add` returns the block an event created or changed (None when it changed nothing visible),
    so a live view can redraw only that block. Deltas grow the open text/thinking block; the
    whole-block `Text` / `Thinking` event replaces its text, so no block is shown twice.
    """

    def __init__(self, *, title: str = "", show_prompt: bool = False, quiet: bool = False) -> None:
        self.title = title
        self.show_prompt = show_prompt
        self.quiet = quiet
        self.blocks: list[Block] = []
        self.plan: PlanBlock | None = None
        self.usage = Usage()
        self.ended: TurnEnded | None = None
        self._open: dict[bool, StreamBlock] = {}  # thinking? -> open block
        self._tools: dict[str, ToolBlock] = {}
        self._requests: dict[str, Block] = {}
        self._turn_has_text = False

    def _new(self, block: Block) -> Block:
        self.blocks.append(block)
        return block

    def add(self, event: Event) -> Block | None:
        if isinstance(event, TextDelta | ThinkingDelta):
            thinking = isinstance(event, ThinkingDelta)
            block = self._open.get(thinking)
            if block is None:
                block = self._open[thinking] = StreamBlock(thinking=thinking)
                self._new(block)
            block.extend(event.text)
            self._turn_has_text |= not thinking
            return block
        if isinstance(event, Text | Thinking):
            thinking = isinstance(event, Thinking)
            block = self._open.pop(thinking, None)
            if block is None:
                block = StreamBlock(thinking=thinking)
                self._new(block)
            block.complete(event.text)
            self._turn_has_text |= not thinking
            return block
        if isinstance(event, ToolCall):
            tool = ToolBlock(event.tool_use_id, event.name, dict(event.input), event)
            self._tools[event.tool_use_id] = tool
            return self._new(tool)
        if isinstance(event, ToolResult):
            found = self._tools.get(event.tool_use_id)
            if found is None:
                found = ToolBlock(event.tool_use_id, "tool")
                self._new(found)
            found.result = event
            return found
        if isinstance(event, PermissionRequest | Question):
            return self._add_request(event)
        if isinstance(event, PermissionDecided):
            target = self._requests.get(event.request_id)
            if isinstance(target, ToolBlock | QuestionBlock | PermissionBlock):
                target.decided = event
                return target
            return self._new(PermissionBlock(event.tool_name, decided=event))
        if isinstance(event, FileChange):
            return self._new(FileBlock(event))
        if isinstance(event, PlanUpdate):
            if self.plan is None:
                self.plan = PlanBlock()
                self._new(self.plan)
            self.plan.items = [dict(i) for i in event.items]
            return self.plan
        if isinstance(event, Error):
            return self._new(ErrorBlock(event))
        if isinstance(event, UsageUpdate):
            self.usage = event.usage
            return None
        if isinstance(event, TurnStarted):
            self.plan, self._turn_has_text, self.ended = None, False, None
            if self.show_prompt or self.blocks:
                return self._new(PromptBlock(event.prompt, self.show_prompt))
            return None
        if isinstance(event, TurnEnded):
            return self._end(event)
        return None

    def _add_request(self, event: PermissionRequest | Question) -> Block:
        tool = self._tools.get(event.tool_use_id or "")
        block: Block
        if tool is not None:
            if isinstance(event, Question):
                tool.question = event
            else:
                tool.request = event
            block = tool
        elif isinstance(event, Question):
            block = self._new(QuestionBlock(event))
        else:
            block = self._new(PermissionBlock(event.tool_name, request=event))
        self._requests[event.request_id] = block
        return block

    def _end(self, event: TurnEnded) -> Block:
        for block in self._open.values():
            block.done = True
        self._open.clear()
        for tool in self._tools.values():
            tool.interrupted = tool.result is None
        self.usage, self.ended = event.usage, event
        return self._new(EndBlock(event, show_result=not self._turn_has_text))

    def shown(self) -> list[Block]:
        """The blocks drawn: all of them, or when ``quiet`` the last text block, errors and the
        status line."""
        if not self.quiet:
            return self.blocks
        texts = [b for b in self.blocks if isinstance(b, StreamBlock) and not b.thinking]
        last = texts[-1] if texts else None
        return [b for b in self.blocks if b is last or isinstance(b, ErrorBlock | EndBlock)]

    def markdown(self) -> str:
        parts = [f"*{self.title}*"] if self.title else []
        parts += [m for b in self.shown() if (m := b.markdown())]
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        head = ""
        if self.title:
            head = f'<div style="{_MUTED};font-size:0.85em">● {_esc(self.title)}</div>'
        body = "".join(b.html() for b in self.shown())
        return f'<div class="agentkernel-turn" style="line-height:1.45">{head}{body}</div>'


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
        self._tool = ""  # tool_use_id of the card the last lines belong to
        self._plan: dict[str, str] = {}  # item -> status at the last printed plan
        self._turn_has_text = False

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def feed(self, event: Event) -> str:
        """Print one event; returns the chunk (often empty) that was added."""
        if self.quiet:
            return self._feed_quiet(event)
        if isinstance(event, TextDelta | Text):
            self._turn_has_text = True
            return self._feed_text(event)
        return self._feed_item(event)

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
            same = self._tool == event.tool_use_id and self._last == "tool"
            name = self._names.get(event.tool_use_id, "tool")
            head = "" if same else f"◀ {name} result\n"
            chunk = self._emit("tool", head + _result_text(event))
            self._tool = event.tool_use_id
            return chunk
        if isinstance(event, PermissionRequest | PermissionDecided):
            keep = self._tool
            if isinstance(event, PermissionRequest):
                chunk = self._emit("tool", f"? Permission requested: {event.tool_name}\n")
            else:
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


# --------------------------------------------------------------------------- entry points


def text(
    events: Iterable[Event], *, title: str = "", show_prompt: bool = False, quiet: bool = False
) -> str:
    """The turn as stable plain text (``text/plain``; compared by nbval)."""
    printer = TextPrinter(title=title, show_prompt=show_prompt, quiet=quiet)
    for event in events:
        printer.feed(event)
    return printer.text


def _transcript(events: Iterable[Event], **options: Any) -> Transcript:
    transcript = Transcript(**options)
    for event in events:
        transcript.add(event)
    return transcript


def markdown(
    events: Iterable[Event], *, title: str = "", show_prompt: bool = False, quiet: bool = False
) -> str:
    """The turn as Markdown. ``title`` heads it; ``show_prompt`` includes each turn's prompt (for
    exports: a cell's output leaves it out, the cell shows it); ``quiet`` keeps only the final
    answer, errors and the status line."""
    return _transcript(events, title=title, show_prompt=show_prompt, quiet=quiet).markdown()


def html(
    events: Iterable[Event], *, title: str = "", show_prompt: bool = False, quiet: bool = False
) -> str:
    """The turn as self-contained HTML: inline styles only, no scripts, all text escaped."""
    return _transcript(events, title=title, show_prompt=show_prompt, quiet=quiet).html()


def mime_bundle(
    events: Iterable[Event], *, title: str = "", show_prompt: bool = False, quiet: bool = False
) -> dict[str, str]:
    """``text/plain``, ``text/markdown`` and ``text/html`` for a static cell output."""
    events = list(events)
    transcript = _transcript(events, title=title, show_prompt=show_prompt, quiet=quiet)
    return {
        "text/plain": text(events, title=title, show_prompt=show_prompt, quiet=quiet),
        "text/markdown": transcript.markdown(),
        "text/html": transcript.html(),
    }
