"""The live view of one turn in a cell, and the static output it leaves behind.

`TurnView` consumes events only (it never talks to a backend or the session). While the turn
runs it shows a widget: one block per text / thinking / tool call / diff / plan, approval and
question prompts, and a status line. `finish` swaps the widget for the static bundle of
`agentkernel.render` (plain text, Markdown, HTML) through the display handle, so the saved
notebook keeps an output that renders without a kernel and no widget reference.

Updates are coalesced: `handle` only records what changed; `flush` (the caller's ~50 ms ticker,
or `handle` itself once the interval has passed) sends it, at most one batch per interval,
with streamed text sent as appended chunks only.

Headless (nbclient, papermill, terminals): no widget. In a terminal (no kernel) the plain text
is printed as it comes (`agentkernel.render.TextPrinter`) and is the whole output. In a kernel
nobody watches the cell live, so `finish` displays the static bundle once and nothing is
printed before it: the saved notebook holds the turn once (clearing earlier prints would need
``clear_output``, which nbval does not replay).
"""

from __future__ import annotations

import html
import sys
import threading
import time
from typing import Any

import ipywidgets as widgets
from IPython import get_ipython
from IPython.display import DisplayHandle, display

from agentkernel.events import (
    Error,
    Event,
    PermissionDecided,
    PermissionRequest,
    Question,
    TextDelta,
    ThinkingDelta,
)
from agentkernel.render import Block, QuestionBlock, StreamBlock, TextPrinter, ToolBlock, Transcript

from ._widget import BlockWidget
from .prompts import ApprovalPrompt, DecisionCard, QuestionPrompt, close_tree

__all__ = ["TurnView"]

FLUSH_INTERVAL_S = 0.05
"""Least time between two batches of widget updates: at most ~20 a second."""
STATUS_INTERVAL_S = 1.0
"""The status line (tokens, cost, elapsed) changes at most once a second."""


class TurnView:
    """Live widget for one turn; static rich output once it is over.

    Call `display` once, `handle` for every event in order (on the kernel's thread), `flush`
    about every 50 ms, and `finish` at the end. ``updates_sent`` counts the batches of widget
    messages sent (at most one per ``interval``); ``rendered`` turns true when a front end drew
    the widget (each view reports itself), so a caller can tell nobody can click.
    """

    def __init__(
        self,
        session_name: str = "",
        backend: str = "",
        model: str | None = None,
        *,
        headless: bool = False,
        quiet: bool = False,
        interval: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.title = " · ".join(p for p in (session_name, backend, model or "") if p)
        self.headless = headless
        self._in_kernel = getattr(get_ipython(), "kernel", None) is not None
        self.quiet = quiet
        self.interval = interval
        self.updates_sent = 0
        self.rendered = False
        self._lock = threading.RLock()
        self._started = time.monotonic()
        self._transcript = Transcript(title=self.title, quiet=quiet)
        self._printer = TextPrinter(title=self.title, quiet=quiet)
        self._finished: dict[str, str] | None = None
        self._printed = False
        self._last_flush = 0.0
        self._last_status = 0.0
        # The widget, made by `display` (a widget opens its comm when created).
        self._handle: DisplayHandle | None = None
        self._box: widgets.VBox | None = None
        self._status: BlockWidget | None = None
        self._status_html = ""
        # What is shown, in order (blocks and prompts), and what the front end has not got yet.
        self._items: list[Block | DecisionCard] = []
        self._placed: set[Block] = set()
        self._widgets: dict[Block, BlockWidget] = {}
        self._prompts: dict[str, DecisionCard] = {}
        self._dirty: set[Block] = set()
        self._pending: dict[StreamBlock, list[str]] = {}
        self._sent: dict[StreamBlock, int] = {}  # characters of a stream block sent so far
        self._layout_changed = False
        self._closing: list[widgets.Widget] = []

    # ------------------------------------------------------------------ public

    def display(self) -> None:
        """Show the live widget in the current cell (nothing in headless mode)."""
        with self._lock:
            if self.headless or self._box is not None:
                return
            self._status = BlockWidget(html="", on_rendered=self._on_rendered)
            self._box = widgets.VBox([self._status], _dom_classes=["agentkernel-turn"])
            self._layout_changed = True
            self._sync(force_status=True)
            self._handle = display(self._box, display_id=True)

    def handle(self, event: Event) -> None:
        """Take one event. Cheap: records the change; sends only when an interval has passed."""
        with self._lock:
            if self._finished is not None:
                return
            chunk = self._printer.feed(event)
            block = self._transcript.add(event)
            if self.headless:
                if chunk and not self._in_kernel:
                    sys.stdout.write(chunk)
                    self._printed = True
                self.flush()
            elif self._record(event, block):
                self.flush(force=True)  # a question for the user goes out at once
            else:
                self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Send what changed since the last flush, unless one happened less than ``interval``
        ago (``force`` sends anyway)."""
        with self._lock:
            now = time.monotonic()
            if self._finished is not None or (not force and now - self._last_flush < self.interval):
                return
            self._last_flush = now
            if self.headless:
                if self._printed:
                    sys.stdout.flush()
            elif self._box is not None and self._sync(force_status=force):
                self.updates_sent += 1

    def finish(
        self, metadata: dict[str, Any] | None = None, *, interrupted: bool = False
    ) -> dict[str, str]:
        """End the live view and leave the static bundle in its place; returns the bundle.

        ``metadata`` is stored with the output under ``"agentkernel"``. ``interrupted`` adds
        a note when the turn ended without its closing event.
        """
        with self._lock:
            if self._finished is not None:
                return self._finished
            if interrupted and self._transcript.ended is None:
                note = Error(kind="interrupted", message="The turn was interrupted.")
                self._printer.feed(note)
                self._transcript.add(note)
            bundle = {
                "text/plain": self._printer.text,
                "text/markdown": self._transcript.markdown(),
                "text/html": self._transcript.html(),
            }
            self._finished = bundle
            extra = {"agentkernel": metadata} if metadata is not None else {}
            if self.headless:
                self._finish_headless(bundle, extra)
            else:
                self._finish_widget(bundle, extra)
            return bundle

    # ------------------------------------------------------------------ recording

    def _record(self, event: Event, block: Block | None) -> bool:
        """Note what ``event`` changed; returns whether it asks the user something."""
        if block is not None and not self.quiet and block not in self._placed:
            self._placed.add(block)
            self._items.append(block)
            self._layout_changed = True
        if isinstance(event, TextDelta | ThinkingDelta) and isinstance(block, StreamBlock):
            self._pending.setdefault(block, []).append(event.text)
        elif block is not None:
            self._dirty.add(block)
        if isinstance(event, PermissionDecided):
            self._drop_prompt(event.request_id)
        if not isinstance(event, PermissionRequest | Question):
            return False
        # Under a card that already shows the tool's input or the question, the prompt
        # carries only its controls.
        carded = not self.quiet and isinstance(block, ToolBlock | QuestionBlock)
        return self._add_prompt(event, carded=carded)

    def _add_prompt(self, event: PermissionRequest | Question, *, carded: bool) -> bool:
        if event._decision is None or event.decided:
            return False  # a stored copy, or already settled by a rule or a policy
        prompt: DecisionCard
        if isinstance(event, PermissionRequest):
            prompt = ApprovalPrompt(event, show_input=not carded)
        else:
            prompt = QuestionPrompt(event, show_question=not carded)
        self._prompts[event.request_id] = prompt
        self._items.append(prompt)
        self._layout_changed = True
        self._last_status = 0.0  # the status line says at once that the turn waits for you
        return True

    def _drop_prompt(self, request_id: str) -> None:
        """The decision is recorded in the tool's card now; the buttons can go."""
        prompt = self._prompts.pop(request_id, None)
        if prompt is not None:
            self._items.remove(prompt)
            self._layout_changed = True
            self._closing.append(prompt)
            self._last_status = 0.0

    # ------------------------------------------------------------------ sending

    def _sync(self, *, force_status: bool) -> bool:
        """Bring the front end up to date; returns whether anything was sent."""
        sent = False
        for item in self._items:
            if isinstance(item, Block) and item not in self._widgets:
                self._widgets[item] = self._open_block(item)
                sent = True
        for block in self._dirty:
            widget = self._widgets.get(block)
            if widget is None or (isinstance(block, StreamBlock) and not block.done):
                continue
            drawn = block.html()
            if widget.html != drawn:
                widget.html = drawn
                sent = True
        self._dirty.clear()
        for block, parts in self._pending.items():
            widget = self._widgets.get(block)
            if widget is not None and not block.done:
                text = "".join(parts)
                widget.append(text)
                self._sent[block] = self._sent.get(block, 0) + len(text)
                sent = True
        self._pending.clear()
        for prompt in self._prompts.values():
            if prompt.event.decided and not prompt.settled:
                prompt.settle()
                sent = True
        if self._layout_changed and self._box is not None and self._status is not None:
            self._box.children = (*self._children(), self._status)
            self._layout_changed = False
            sent = True
        for widget in self._closing:
            close_tree(widget)
        self._closing.clear()
        return self._send_status(force=force_status) or sent

    def _open_block(self, block: Block) -> BlockWidget:
        streaming = isinstance(block, StreamBlock) and not block.done
        return BlockWidget(
            kind=block.kind, html="" if streaming else block.html(), on_rendered=self._on_rendered
        )

    def _children(self) -> list[widgets.Widget]:
        return [self._widgets[i] if isinstance(i, Block) else i for i in self._items]

    def _on_rendered(self, widget: BlockWidget) -> None:
        """A front-end view drew ``widget``: note it, and resend a streaming block's text."""
        with self._lock:
            self.rendered = True
            for block, shown in self._widgets.items():
                if shown is not widget or not isinstance(block, StreamBlock) or block.done:
                    continue
                if sent := self._sent.get(block, 0):
                    widget.reset(block.text[:sent])

    def _send_status(self, *, force: bool) -> bool:
        now = time.monotonic()
        if self._status is None or (not force and now - self._last_status < STATUS_INTERVAL_S):
            return False
        line = self._status_line(now)
        if line == self._status_html:
            return False
        self._status.html = self._status_html = line
        self._last_status = now
        return True

    def _status_line(self, now: float) -> str:
        t = self._transcript
        parts = [self.title] if self.title else []
        waiting = any(not p.event.decided for p in self._prompts.values())
        parts.append("waiting for you" if waiting else "● running")
        if t.usage.total_tokens:
            parts.append(f"{t.usage.total_tokens:,} tokens")
        if t.usage.cost_usd:
            parts.append(f"${t.usage.cost_usd:.4f}")
        if t.plan is not None:
            parts.append(f"plan {t.plan.progress()}")
        parts.append(f"{int(now - self._started)}s")
        words = html.escape(" · ".join(parts))
        return f'<div style="font-size:0.85em;opacity:0.75">{words}</div>'

    # ------------------------------------------------------------------ finishing

    def _finish_widget(self, bundle: dict[str, str], extra: dict[str, Any]) -> None:
        """Replace the widget's output with the static bundle, then close every widget so
        nothing in the saved notebook points at a model that no longer exists."""
        if self._handle is None:
            display(bundle, raw=True, metadata=extra)
        else:
            self._handle.update(bundle, raw=True, metadata=extra)
        for widget in [*self._prompts.values(), *self._widgets.values(), *self._closing]:
            close_tree(widget)
        if self._box is not None:
            close_tree(self._box)

    def _finish_headless(self, bundle: dict[str, str], extra: dict[str, Any]) -> None:
        if self._printed:
            sys.stdout.flush()
        if self._in_kernel:
            display(bundle, raw=True, metadata=extra)
