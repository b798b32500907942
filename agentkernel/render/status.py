"""Turn-level blocks: an error, a later turn's prompt, and the footer."""

from __future__ import annotations

from dataclasses import dataclass

from agentkernel.events import (
    Error,
    TurnEnded,
)

from ._block import Block
from ._style import _AMBER, _GREEN, _MUTED, _RED, _code_span, _esc, _md_to_html
from ._words import _status_words


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
