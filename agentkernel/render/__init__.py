"""Static rendering of a turn: events in, plain text / Markdown / HTML out.

One module per output format (`plain`: text/plain; `transcript`: the fold behind Markdown and
HTML) and per block kind (`stream`, `tool`, `file`, `plan`, `status`); `_style` and `_words`
hold what they share.

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

from collections.abc import Iterable
from typing import Any

from agentkernel.events import Event

from ._block import Block
from .plain import TextPrinter
from .stream import StreamBlock
from .tool import QuestionBlock, ToolBlock, tool_input_html, tool_summary
from .transcript import Transcript

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
