"""A text or thinking block, grown by deltas."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._block import Block
from ._style import _MUTED, _esc, _md_to_html


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
