"""What an Agent kernel cell is: a prompt for the agent, or Python.

A cell is a prompt unless its first non-blank line starts with ``%`` (a magic: ``%agent``,
``%%bash``, ``%time``...) or ``!`` (a shell command), or is exactly ``%%python``, or the
whole cell is ``exit`` or ``quit`` (what a console user types to leave: IPython's own exit,
never a prompt for the agent). The
``%%python`` line is the kernel's own marker: it is removed and the rest runs as Python.
IPython has a ``%%python`` script magic of its own (it runs the cell in a subprocess); the
marker shadows it here because the point of a Python cell in this kernel is the shared
namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PYTHON_MARKER = "%%python"
EXIT_WORDS = frozenset({"exit", "quit", "exit()", "quit()"})


@dataclass(frozen=True)
class Cell:
    """A classified cell. ``source`` is what runs: the prompt, or the Python code (without the
    ``%%python`` line and any blank lines before it). ``offset`` is where ``source`` starts in
    the cell, to map cursor positions between the two."""

    kind: Literal["prompt", "python"]
    source: str
    offset: int
    python_marker: bool = False
    """The cell starts with the ``%%python`` line."""

    def cursor(self, cursor_pos: int) -> int:
        """A cursor position in the cell, as a position in ``source`` (clamped to it)."""
        return min(max(cursor_pos - self.offset, 0), len(self.source))


def classify(code: str) -> Cell:
    """Classify a cell; a blank cell is Python, where running it does nothing."""
    stripped = code.lstrip()
    if not stripped:
        return Cell("python", code, 0)
    start = len(code) - len(stripped)
    # Keep the first line's indentation out of the blank lines skipped.
    start = code.rfind("\n", 0, start) + 1
    first, newline, _ = code[start:].partition("\n")
    if first.strip() == PYTHON_MARKER:
        offset = start + len(first) + len(newline)
        return Cell("python", code[offset:], offset, python_marker=True)
    if stripped.startswith(("%", "!")) or stripped.rstrip() in EXIT_WORDS:
        return Cell("python", code[start:], start)
    return Cell("prompt", code[start:], start)
