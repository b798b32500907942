"""Formatting shared by every format and block: caps, colours, escaping, clipping, fences."""

from __future__ import annotations

import html as _html
import json
from typing import Any

import mistune

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

# hard_wrap: a single line break stays a break, as in the live view (which shows the text as it
# streams, breaks kept), so nothing reflows when the turn ends and its output turns static.
_MARKDOWN_PLUGINS = ["strikethrough", "table", "task_lists"]
_md_with_bare_urls = mistune.create_markdown(
    escape=True, hard_wrap=True, plugins=[*_MARKDOWN_PLUGINS, "url"]
)
_md_without_bare_urls = mistune.create_markdown(
    escape=True, hard_wrap=True, plugins=_MARKDOWN_PLUGINS
)


def _md_to_html(text: str) -> str:
    """The agent's Markdown as HTML (its raw HTML escaped), bare URLs made links.

    mistune's bare-URL rule names no start character, which takes its inline parser off the
    fast path (skipping plain text up to the next character a rule starts with): it tries its
    rules at every word, about 15x slower (a 1 MiB answer: 0.25 s, against 0.015 s). That
    rule matches only at a "://", so a text without one renders without it: the same HTML."""
    return (_md_with_bare_urls if "://" in text else _md_without_bare_urls)(text)  # type: ignore[return-value]


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
