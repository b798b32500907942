"""The live view of one turn in a cell, and the static output it leaves behind.

`TurnView` consumes events only (it never talks to a backend or the session). While the turn
runs it shows a widget: one block per text / thinking / tool call / diff / plan, approval and
question prompts, and a status line. `finish` swaps the widget for the static bundle of
`agentkernel.render` (plain text, Markdown, HTML) through the display handle, so the saved
notebook keeps an output that renders without a kernel and no widget reference.

Updates are coalesced: `handle` only records what changed (a streamed delta: one list append);
`flush` (the caller's ~50 ms ticker, or `handle` itself for any other event once the interval
has passed) sends it, at most one batch per interval, with streamed text sent as appended
chunks only.

The live output is the widget plus a text/plain and text/markdown of its own that say what the
turn is doing ("running", "waiting for your approval: make test"), updated when that
changes: a notebook saved mid-turn, or a front end without widgets, shows that instead of a
widget's repr.

Text mode, for a front end that shows no widgets (``jupyter console``; a client that never
reports a drawn view within ``probe`` seconds): the plain text is printed as it comes
(`agentkernel.render.TextPrinter`) and is what such a client shows; the widget stays, in case
a view appears late.

Headless (nbclient, papermill, terminals): no widget. In a terminal (no kernel) the plain text
is printed as it comes and is the whole output. In a kernel nobody watches the cell live, so
`finish` displays the static bundle once and nothing is printed before it: the saved notebook
holds the turn once (clearing earlier prints would need ``clear_output``, which nbval does not
replay).
"""

from __future__ import annotations

import asyncio
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

from . import _clients
from ._widget import BlockWidget
from .prompts import ApprovalPrompt, DecisionCard, QuestionPrompt, close_tree

__all__ = ["TurnView"]

_CLOSE_DELAY_S = 1.0
"""How long a dropped approval card stays open after the view stops showing it."""
FLUSH_INTERVAL_S = 0.05
"""Least time between two batches of widget updates: at most ~20 a second."""
STATUS_INTERVAL_S = 1.0
"""The status line (tokens, cost, elapsed) changes at most once a second."""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
DRAW_WAIT_S = 3.0
"""How long a finished turn waits for a page to draw its newest blocks (see `TurnView.drawn`)."""
CLOSE_DELAY_S = 1.0
"""How long a finished turn's widgets outlive its static output on a page that shows them."""
_HELD = (TextDelta, ThinkingDelta)
"""Deltas `TurnView.handle` holds and takes in joined, at the next flush."""


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
        text: bool = False,
        probe: float | None = None,
        cell_id: str | None = None,
        into: str | None = None,
    ) -> None:
        self.title = " · ".join(p for p in (session_name, backend, model or "") if p)
        self.headless = headless
        self.text_mode = text and not headless
        """Printing the plain text as it comes (a front end that shows no widgets)."""
        self.probe = probe
        """Seconds to wait for a drawn view before switching to text mode (None: never)."""
        self.cell_id = cell_id
        self.into = into
        """The display id of an output to draw in, replacing it (None: a new output). How a
        turn started from a widget click, which has no cell output of its own, shows."""
        self._widget_shown = not text
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
        self._closing: list[tuple[float, widgets.Widget]] = []
        self._live_text = ""  # the live output's text/plain, as last sent
        self._held: list[str] = []  # streamed text not taken in yet (see `handle`)
        self._held_kind: type[TextDelta | ThinkingDelta] | None = None
        self._streamed = False  # a delta came (the first is sent without waiting)
        self._title_skipped = False
        self._interrupted = False
        self._drawn: set[BlockWidget] = set()  # blocks a front end reported drawn

    # ------------------------------------------------------------------ public

    def display(self) -> None:
        """Show the live widget in the current cell (nothing in headless mode)."""
        with self._lock:
            if self.headless or self._box is not None or not self._widget_shown:
                return
            self._status = BlockWidget(html="", on_rendered=self._on_rendered)
            self._box = widgets.VBox([self._status], _dom_classes=["agentkernel-turn"])
            _clients.protect(self)
            self._layout_changed = True
            self._sync(force_status=True)
            bundle = self._live_bundle()
            self._status.turn = {
                "box": self._box.model_id,
                "cell": self.cell_id or "",
                "text": bundle["text/plain"],
            }
            if self.into is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle = DisplayHandle(self.into)
                self._handle.update(bundle, raw=True)

    @property
    def display_id(self) -> str | None:
        """The display id of the turn's output, once displayed (live, or static at the end)."""
        return self._handle.display_id if self._handle is not None else None

    def owns(self, comm_id: str) -> bool:
        """Whether `comm_id` is one of this turn's widgets (while the turn runs)."""
        with self._lock:
            if self._finished is not None or self._box is None:
                return False
            return any(getattr(w, "model_id", None) == comm_id for w in _tree(self._box))

    def handle(self, event: Event) -> None:
        """Take one event. Cheap: records the change; sends only when an interval has passed.

        A streamed delta of the agent's own text or thinking, of the kind held (the common
        case: thousands a turn), costs a list append and nothing else (no lock, no clock): it
        joins the text held since the last flush, which takes it in as one piece. The caller's
        ticker sends it (every ``interval``); only the turn's first delta is sent at once."""
        kind = type(event)
        if kind is self._held_kind and event.parent_tool_use_id is None:
            self._held.append(event.text)  # type: ignore[attr-defined]
            return
        if kind in _HELD and event.parent_tool_use_id is None and not self.headless:
            with self._lock:
                if self._finished is not None:
                    return
                self._take_held()
                self._held_kind = kind  # type: ignore[assignment]
                self._held.append(event.text)  # type: ignore[attr-defined]
                if not self._streamed:  # the turn's first text shows at once
                    self._streamed = True
                    self.flush(force=True)
            return
        with self._lock:
            if self._finished is not None:
                return
            self._take_held()
            asks = self._take(event)
            self.flush(force=asks)  # a question for the user goes out at once

    def _take_held(self) -> None:
        """Take in the deltas held since the last flush, joined: one delta of the same text."""
        if self._held:
            assert self._held_kind is not None
            held, self._held = self._held, []
            self._take(self._held_kind(text="".join(held)))

    def _take(self, event: Event) -> bool:
        """Record what `event` changes; returns whether it asks the user something."""
        chunk = self._printer.feed(event)
        block = self._transcript.add(event)
        if self.headless:
            if chunk and not self._in_kernel:
                sys.stdout.write(chunk)
                self._printed = True
            return False
        if self.text_mode and chunk:
            self._print(chunk)
        return self._widget_shown and self._record(event, block)

    def flush(self, *, force: bool = False) -> None:
        """Send what changed since the last flush, unless one happened less than ``interval``
        ago (``force`` sends anyway)."""
        with self._lock:
            now = time.monotonic()
            if self._finished is not None:
                return
            self._take_held()
            if self._unseen_for(self.probe, now):
                self._enter_text_mode()
            if not force and now - self._last_flush < self.interval:
                return
            self._last_flush = now
            if self._printed:
                sys.stdout.flush()
            if self._box is not None and self._sync(force_status=force):
                self.updates_sent += 1
                self._update_live_output()

    async def front_end_known(self) -> None:
        """Wait until a view reported itself or the probe ran out (text mode): a turn shorter
        than the probe must still end as text for a front end that shows no widgets."""
        while self.probe is not None and not (self.rendered or self.text_mode):
            await asyncio.sleep(self.interval)
            self.flush()

    async def drawn(self, timeout: float = DRAW_WAIT_S) -> None:
        """Before the static output replaces the live one, on a page that shows widgets: wait
        (at most ``timeout``) until every block in the box has reported its view drawn.

        The widget manager creates a box's child views asynchronously; removing the box (what
        replacing the output does) while one is still being created makes its pending
        ``add_child_model`` find the box's Lumino widget gone ("Could not add child view to
        box", "Cannot read properties of null (reading 'widgets')")."""
        self.flush(force=True)
        deadline = time.monotonic() + timeout
        while self.rendered and time.monotonic() < deadline:
            with self._lock:
                if self._box is None or self._finished is not None:
                    return
                shown = [w for w in self._box.children if isinstance(w, BlockWidget)]
                if all(w in self._drawn for w in shown):
                    return
            await asyncio.sleep(self.interval)

    def _unseen_for(self, seconds: float | None, now: float) -> bool:
        return (
            seconds is not None
            and not self.rendered
            and not self.text_mode
            and not self.headless
            and now - self._started >= seconds
        )

    def _enter_text_mode(self) -> None:
        """No view reported itself: print what the turn said so far, and the rest as it comes.
        The title line is left out: the live output's text already showed it."""
        self.text_mode = True
        self._print(self._printer.text)

    def _print(self, chunk: str) -> None:
        """Print plain text in text mode, without the title line when the live output's text
        (what a console shows of it) already said it."""
        if self._box is not None and not self._title_skipped and chunk:
            self._title_skipped = True
            head = f"● {self.title}\n"
            if chunk.startswith(head):
                chunk = chunk[len(head) :].lstrip("\n")
        if chunk:
            sys.stdout.write(chunk)
            self._printed = True

    def interrupt(self) -> None:
        """The user stopped the turn (a kernel interrupt): at once, before the agent has
        wound down, calls without a result say "interrupted" and open prompts say they were
        stopped, so nothing is left looking "running" or clickable."""
        with self._lock:
            if self._finished is not None or self._interrupted:
                return
            self._interrupted = True
            self._dirty.update(self._transcript.interrupt())
            for prompt in self._prompts.values():
                if not prompt.event.decided:
                    prompt.stop()
            self._last_status = 0.0
            self.flush(force=True)

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
            self._take_held()
            self._held_kind = None  # nothing is held after the end (see `handle`)
            if self.probe is not None and not (self.rendered or self.text_mode):
                self._enter_text_mode()  # ended before any view could say it is there
            if interrupted and self._transcript.ended is None:
                self._transcript.interrupt()
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
            elif not self._widget_shown:
                self._finish_text(bundle, extra)
            else:
                self._finish_widget(bundle, extra)
            _clients.release(self)
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
            self._closing.append((time.monotonic(), prompt))
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
        # A dropped card's model closes a while after the box stops listing it: a front end
        # still drawing the old children would otherwise find the model gone ("Could not
        # add child view to box").
        now = time.monotonic()
        while self._closing and now - self._closing[0][0] >= _CLOSE_DELAY_S:
            close_tree(self._closing.pop(0)[1])
        return self._send_status(force=force_status) or sent

    def _open_block(self, block: Block) -> BlockWidget:
        streaming = isinstance(block, StreamBlock) and not block.done
        return BlockWidget(
            kind=block.kind, html="" if streaming else block.html(), on_rendered=self._on_rendered
        )

    def _children(self) -> list[widgets.Widget]:
        return [self._widgets[i] if isinstance(i, Block) else i for i in self._items]

    def _on_rendered(self, widget: BlockWidget) -> None:
        """A front-end view drew ``widget``: note it, and send a streaming block's text so far
        (even none: the view shows appends only once it knows what came before them)."""
        with self._lock:
            self.rendered = True
            self._drawn.add(widget)
            for block, shown in self._widgets.items():
                if shown is not widget or not isinstance(block, StreamBlock) or block.done:
                    continue
                widget.reset(block.text[: self._sent.get(block, 0)])

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
        if self._interrupted:
            parts.append("■ stopping")
        else:
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
        nothing in the saved notebook points at a model that no longer exists.

        Where a page shows the widget, the closing waits a moment (`CLOSE_DELAY_S`): a page
        still creating the views of the newest blocks when their models close fails in its
        widget manager ("Cannot read properties of null"), and the static output has
        replaced the views by then anyway."""
        if self._printed:
            sys.stdout.flush()
        if self._handle is None:
            display(bundle, raw=True, metadata=extra)
        else:
            self._handle.update(bundle, raw=True, metadata=extra)
        if self._status is not None:
            output = {"output_type": "display_data", "data": bundle, "metadata": extra}
            shell = get_ipython()
            self._status.finished(output, getattr(shell, "execution_count", None))
        widgets_left = [
            *self._prompts.values(),
            *self._widgets.values(),
            *(widget for _, widget in self._closing),
        ]
        if self._box is not None:
            widgets_left.append(self._box)

        def close() -> None:
            for widget in widgets_left:
                close_tree(widget)

        loop = _running_loop()
        if self.rendered and loop is not None:
            loop.call_later(CLOSE_DELAY_S, close)
        else:
            close()

    def _finish_text(self, bundle: dict[str, str], extra: dict[str, Any]) -> None:
        """Text mode from the start (no widget): the printed text is the turn for a console;
        the rich formats go in a display of their own for a front end that keeps them."""
        sys.stdout.flush()
        if self._in_kernel:
            rich = {k: v for k, v in bundle.items() if k != "text/plain"}
            display(rich, raw=True, metadata=extra)

    # ------------------------------------------------------------------ the live output

    def _live_bundle(self) -> dict[str, Any]:
        """The live output: the widget, and words for whoever cannot show it (a console, the
        notebook file saved mid-turn)."""
        assert self._box is not None
        state = self._waiting_for() or "running"
        self._live_text = f"● {self.title} · {state}" if self.title else f"● {state}"
        view = self._box._repr_mimebundle_()[WIDGET_VIEW]
        note = "(the agent's turn was still running when this output was saved)"
        return {
            WIDGET_VIEW: view,
            "text/plain": self._live_text,
            "text/markdown": f"{_md_escape(self._live_text)}\n\n*{note}*",
        }

    def _update_live_output(self) -> None:
        """Resend the live output's words when what the turn waits for changed."""
        if self._handle is None or self._box is None:
            return
        state = self._waiting_for() or "running"
        words = f"● {self.title} · {state}" if self.title else f"● {state}"
        if words != self._live_text:
            self._handle.update(self._live_bundle(), raw=True)

    def _waiting_for(self) -> str:
        if self._interrupted:
            return "stopping"
        for prompt in self._prompts.values():
            event = prompt.event
            if event.decided:
                continue
            if isinstance(event, PermissionRequest):
                what = event.command or event.title or ""
                what = what.strip().splitlines()[0][:120] if what.strip() else ""
                return f"waiting for your approval: {event.tool_name}" + (
                    f": {what}" if what else ""
                )
            questions = [str(q.get("question", "")) for q in event.questions]
            return "waiting for your answer: " + " / ".join(q for q in questions if q)[:160]
        return ""

    def _finish_headless(self, bundle: dict[str, str], extra: dict[str, Any]) -> None:
        if self._printed:
            sys.stdout.flush()
        if self._in_kernel:  # with a display id: a fresh run may be drawn in its place
            self._handle = display(bundle, raw=True, metadata=extra, display_id=True)


def _tree(widget: widgets.Widget) -> list[widgets.Widget]:
    """A widget and everything below it: children, layouts and styles."""
    found = [widget]
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget):
            found.append(part)
    for child in getattr(widget, "children", ()):
        found += _tree(child)
    return found


def _md_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_{}[]<>#|" else c for c in text)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
