"""A tool card: what the call does (from the backend's `ToolInfo`), its approval or question,
and its result; and the permission and question blocks not tied to a card."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkernel.events import (
    PermissionDecided,
    PermissionRequest,
    Question,
    ToolInfo,
    ToolResult,
)

from ._block import Block

if TYPE_CHECKING:
    from .transcript import Transcript
from ._style import (
    _AMBER,
    _CARD,
    _GREEN,
    _MONO,
    _MUTED,
    _PRE,
    _RED,
    HTML_CAP,
    HTML_OPEN_LINES,
    MARKDOWN_CAP,
    _badge,
    _clip,
    _code_span,
    _compact_json,
    _esc,
    _fence,
    _html_body,
    _html_note,
    _html_pre,
    _md_body,
    _one_line,
)
from ._words import _answers, _decision_words, _question_lines


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
    unfinished: str = ""
    """Set when the turn ended without the call's result: why ("interrupted", "not
    finished")."""
    nested: Transcript | None = None
    """What a sub-agent run by this call did, folded like a turn of its own."""

    @property
    def denied(self) -> bool:
        return self.decided is not None and self.decided.behavior == "deny"

    def shown_result(self) -> ToolResult | None:
        """The result the card shows: none for a denied call, whose error result only repeats
        the denial the card already states (the tool never ran)."""
        if self.result is not None and self.result.is_error and self.denied:
            return None
        return self.result

    def state(self) -> tuple[str, str]:
        """(label, color) of the card's status badge."""
        if self.denied:
            return "denied", _denial_color(self.decided)
        if self.result is not None:
            return ("error", _RED) if self.result.is_error else ("done", _GREEN)
        if self.unfinished:
            return self.unfinished, _AMBER
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
        if self.nested is not None:
            inner = self.nested.markdown()
            parts.append(f"<details><summary>Sub-agent</summary>\n\n{inner}\n\n</details>")
        if (result := self.shown_result()) is not None:
            parts.append(_result_md(result))
        return "\n\n".join(parts)

    def html(self) -> str:
        """A card; a tool call's card folds (its head is a ``<summary>``, whose own marker is
        the arrow, turning as it opens and closes)."""
        label, color = self.state()
        if self.question is not None:
            inner = _question_html(self.question)
        else:
            head, inner = _tool_parts(self.name, self.input, self.info, _badge(label, color))
        if self.decided is not None:
            inner += _decision_html(self.decided, with_tool=False, question=self.question)
        if self.nested is not None:
            inner += (
                f'<details><summary style="cursor:pointer;{_MUTED};font-size:0.85em">'
                f"Sub-agent</summary>{self.nested.html()}</details>"
            )
        if (result := self.shown_result()) is not None:
            inner += _result_html(result)
        if self.question is not None:
            return f'<div style="{_CARD}">{inner}</div>'
        return (
            f'<details open style="{_CARD}"><summary style="cursor:pointer">{head}</summary>'
            f"{inner}</details>"
        )


def _tool_parts(
    name: str, input: dict[str, Any], info: ToolInfo, badge: str = ""
) -> tuple[str, str]:
    """(head, body) of a tool call as escaped HTML: its name, what it acts on and the badge;
    then the command, diff or input below."""
    summary, body = _input_view(name, input, info)
    head = f'<span style="font-weight:600">{_esc(name)}</span>'
    if summary:
        head += f' <span style="{_MONO}">{_esc(summary)}</span>'
    return head + badge, _html_body(*body) if body else ""


def tool_input_html(request: PermissionRequest) -> str:
    """What a permission request would run (the command, an edit's diff, else its input) as
    the escaped HTML a tool card shows."""
    head, body = _tool_parts(request.tool_name, request.input, request)
    return f"<div>{head}</div>{body}"


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


def _denial_color(d: PermissionDecided | None) -> str:
    """Red for a denial somebody chose; amber for one the permission mode made because
    nobody could be asked (a headless run): nothing failed, the rules held."""
    return _AMBER if d is not None and d.by == "policy" else _RED


def _decision_html(
    d: PermissionDecided, *, with_tool: bool, question: Question | None = None
) -> str:
    allowed, words = _decision_words(d, with_tool=with_tool, question=question)
    icon, color = ("✔", _GREEN) if allowed else ("✖", _denial_color(d))
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
