"""Completion and inspection for what the Agent kernel adds to Python: ``%agent`` subcommands
and ``{name}`` fields in prompts. Python itself is left to IPython.

The subcommands and their one-line descriptions are read from the ``%agent help`` text (the
magics' public help), so they cannot drift from what ``%agent`` accepts.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable
from dataclasses import dataclass

_AGENT_LINE = re.compile(r"^[ \t]*%agent[ \t]+(?P<word>\S*)")
_HELP_ENTRY = re.compile(r"^ {4}(?P<name>\S+)(?: {2,}(?P<text>\S.*))?$")
_HELP_MORE = re.compile(r"^ {5,}(?P<text>\S.*)$")
_FIELD_START = re.compile(r"(?<!\{)\{(?P<field>[A-Za-z_][\w.]*)?$")
_FIELD_AROUND = re.compile(r"(?<!\{)\{(?P<field>[A-Za-z_][\w.]*)[^{}]*\}")


@dataclass(frozen=True)
class Span:
    """A word of the cell: its text and where it starts and ends."""

    text: str
    start: int
    end: int


def subcommand_descriptions(help_text: str, names: Iterable[str]) -> dict[str, str]:
    """``{subcommand: description}`` from the ``%agent help`` text, for the given names.

    argparse lists each subcommand indented by four spaces with its description beside it, or
    on the next lines when the name is long; wrapped descriptions continue further indented.
    """
    wanted = set(names)
    found: dict[str, str] = {}
    current: str | None = None
    for line in help_text.splitlines():
        entry = _HELP_ENTRY.match(line)
        if entry and entry["name"] in wanted:
            current = entry["name"]
            found[current] = entry["text"] or ""
            continue
        more = _HELP_MORE.match(line)
        if more and current is not None:
            found[current] = f"{found[current]} {more['text']}".strip()
        else:
            current = None
    return found


def agent_subcommand_at(code: str, cursor_pos: int) -> Span | None:
    """The subcommand word of a ``%agent`` line when the cursor is in or right after it."""
    line_start = code.rfind("\n", 0, cursor_pos) + 1
    line_end = code.find("\n", cursor_pos)
    line = code[line_start : len(code) if line_end < 0 else line_end]
    match = _AGENT_LINE.match(line)
    if match is None:
        return None
    start, end = line_start + match.start("word"), line_start + match.end("word")
    if not start <= cursor_pos <= end:
        return None
    return Span(match["word"], start, end)


def complete_subcommand(span: Span, cursor_pos: int, names: Iterable[str]) -> list[str]:
    """Subcommands that start with the part of the word before the cursor."""
    typed = span.text[: cursor_pos - span.start]
    return sorted(n for n in names if n.startswith(typed))


def field_before(prompt: str, cursor_pos: int) -> Span | None:
    """The ``{name`` field being typed just before the cursor (``{{`` is a literal brace)."""
    match = _FIELD_START.search(prompt[:cursor_pos])
    if match is None:
        return None
    text = match["field"] or ""
    return Span(text, cursor_pos - len(text), cursor_pos)


def field_around(prompt: str, cursor_pos: int) -> Span | None:
    """The complete ``{name...}`` field the cursor is in."""
    for match in _FIELD_AROUND.finditer(prompt):
        if match.start() <= cursor_pos <= match.end():
            return Span(match["field"], match.start("field"), match.end("field"))
    return None


def name_like(matches: Iterable[str]) -> list[str]:
    """Completions that can stand in a ``{field}``: names and attribute paths, no keywords."""
    return [
        m
        for m in matches
        if not keyword.iskeyword(m) and all(part.isidentifier() for part in m.split("."))
    ]
