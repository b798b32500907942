"""A file the agent changed, as its diff."""

from __future__ import annotations

from dataclasses import dataclass

from agentkernel.events import (
    FileChange,
)

from ._block import Block
from ._style import _CARD, _MONO, _code_span, _esc, _html_body, _md_body


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
