"""The agent's plan / task list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._block import Block
from ._style import _CARD, _MUTED, _esc
from ._words import _plan_marks


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
