"""Run one agent turn inside a notebook cell: the code `%%agent` and the Agent kernel share.

The turn runs as an *async* cell on the kernel's own loop, so ipykernel (>= 7.4) keeps
dispatching ``comm_msg`` (widget clicks) while the cell awaits; the agent itself runs on
agentkernel's runtime thread. A ticker flushes the live view ~20 times a second, which also keeps
the kernel loop awake so a kernel interrupt (a cancel scheduled without waking the loop) lands
at once. The interrupt becomes a backend interrupt and the cell ends with a note, leaving the
kernel and the session usable.
"""

from __future__ import annotations

import asyncio
import functools
import html
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal

import ipywidgets as widgets
from IPython.display import DisplayHandle, display

from ..events import Event, PermissionRequest, Question
from ..permissions import PermissionMode
from ..replay import Recording
from ..session import Session, TurnRecord
from . import _clients
from .view import TurnView

Frontend = Literal["widget", "stdin", "headless"]
FRONTENDS: tuple[str, ...] = ("auto", "widget", "stdin", "headless")

TICK_S = 0.05
"""Live view flush interval: at most ~20 updates a second, however fast the deltas come."""
RENDER_GRACE_S = 3.0
"""How long an approval waits for a widget view to report itself before falling back."""
PROBE_S = 2.0
"""How long a turn waits for a view of its widget to report itself, when nothing says whether
the front end shows widgets, before it prints its text for one that does not."""


def detect_frontend(shell: Any, forced: str = "auto") -> Frontend:
    """Who can answer an approval in this cell.

    A front end a person uses (JupyterLab, Notebook, VS Code) sends ``allow_stdin: true``;
    batch runners (nbclient, papermill, ``jupyter execute``) send false and can answer nothing,
    so they get ``headless``. ``AGENTKERNEL_FRONTEND`` or the magics' ``frontend`` setting can
    force a choice.
    """
    choice = os.environ.get("AGENTKERNEL_FRONTEND") or forced
    if choice not in FRONTENDS:
        raise ValueError(f"unknown front end {choice!r}; valid: {', '.join(FRONTENDS)}")
    if choice != "auto":
        return choice  # type: ignore[return-value]
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return "stdin" if sys.stdin is not None and sys.stdin.isatty() else "headless"
    parent = kernel.get_parent() or {}
    return "widget" if parent.get("content", {}).get("allow_stdin", False) else "headless"


def widget_probe(shell: Any, forced: str = "auto") -> float | None:
    """For a widget front end: how long to wait for a drawn view before printing the text too.
    None: the client is known to show widgets (or widgets were asked for by name); 0: it is
    known not to (it connected without asking for any, as a console does)."""
    if (os.environ.get("AGENTKERNEL_FRONTEND") or forced) != "auto":
        return None
    shows = _clients.shows_widgets(getattr(shell, "kernel", None))
    if shows is None:
        return PROBE_S
    return None if shows else 0.0


def cell_id(shell: Any) -> str | None:
    """The id of the cell being run, when the front end sends one (JupyterLab, Notebook 7)."""
    kernel = getattr(shell, "kernel", None)
    parent = (kernel.get_parent() or {}) if kernel is not None else {}
    found = (parent.get("metadata") or {}).get("cellId")
    return str(found) if found else None


def _view(
    shell: Any,
    session: Session,
    frontend: Frontend,
    quiet: bool,
    probe: float | None = None,
    into: str | None = None,
) -> TurnView:
    """The view of one cell's turn, live or replayed, for `frontend`."""
    return TurnView(
        session_name=session.name,
        backend=session.backend_name,
        model=session.model,
        headless=frontend == "headless",
        text=frontend == "stdin",
        quiet=quiet,
        probe=probe,
        cell_id=cell_id(shell),
        into=into,
    )


async def run_cell_turn(
    shell: Any,
    session: Session,
    prompt: str,
    *,
    frontend: Frontend,
    permission_mode: PermissionMode | None = None,
    quiet: bool = False,
    probe: float | None = None,
    replay_key: str | None = None,
    into: str | None = None,
) -> TurnRecord:
    """Stream one turn of `session` into the current cell and return its record. ``probe``:
    see `widget_probe`; ``replay_key``: kept with the turn, so an unchanged cell can replay it
    (`agentkernel.replay`); ``into``: the display id of an output to draw in (`TurnView`)."""
    session.load_backend()  # before the view's probe clock starts
    probe = probe if frontend == "widget" else None
    view = _view(shell, session, frontend, quiet, probe=probe, into=into)
    view.display()
    ticker = asyncio.ensure_future(_tick(view))
    fallbacks: set[asyncio.Future[Any]] = set()
    interrupted = False
    try:
        async for event in session.stream(
            prompt, permission_mode=permission_mode, can_ask=frontend != "headless"
        ):
            view.handle(event)
            if isinstance(event, (PermissionRequest, Question)):
                if frontend == "stdin":
                    _ask_on_stdin(shell, event)
                elif frontend == "widget":
                    task = asyncio.ensure_future(_fallback_if_unseen(shell, view, event))
                    fallbacks.add(task)
                    task.add_done_callback(fallbacks.discard)
        await view.front_end_known()
        await view.drawn()
    except asyncio.CancelledError:
        interrupted = True
        view.interrupt()
        await session.interrupt()
        await session.wait_for_idle(timeout=10)
    finally:
        ticker.cancel()
        for task in fallbacks:
            task.cancel()
    record = session.history[-1]
    if replay_key is not None:
        session.set_replay_key(record, replay_key)
    view.finish(provenance(session, record), interrupted=interrupted)
    return record


async def replay_cell_turn(
    shell: Any,
    session: Session,
    recording: Recording,
    *,
    frontend: Frontend,
    quiet: bool = False,
    run_fresh: Callable[[TurnRecord, str], Awaitable[Any]] | None = None,
) -> TurnRecord:
    """Show a recorded turn in the current cell, exactly as it was shown (its stored events
    through the same view), and append it to `session` without calling the agent: no model
    request, no tool run again. For a person's cell (a widget front end) `run_fresh` is offered
    below it as a "run fresh" button, called with the replayed turn and the display id of its
    output, for the fresh turn to draw in."""
    # Static only: a live widget replaced at once by the static output races the page's
    # widget manager (see `TurnView.drawn`), and the static output is all a replay shows.
    view = _view(shell, session, "headless" if frontend == "widget" else frontend, quiet)
    recorded_at = datetime.fromtimestamp(recording.started_at, timezone.utc)
    when = f"recorded {recorded_at:%Y-%m-%d %H:%M} UTC"
    # The status line says it (the static output stays exactly what the original showed).
    view.title = f"{view.title} · replayed, {when}"
    view.display()
    for event in recording.record.events:
        view.handle(event)
    record = await session.record_replay(
        recording.record, recording.session_id, recording.backend_session_id
    )
    meta = provenance(session, record)
    meta["replayed"] = {
        "from_session_id": recording.session_id,
        "from_turn": recording.record.number,
        "recorded_at": recorded_at.isoformat(timespec="seconds"),
    }
    view.finish(meta)
    if run_fresh is not None and view.display_id is not None:
        fresh = functools.partial(run_fresh, record, view.display_id)
        FreshOffer(f"replayed · {when}", fresh).display()
    return record


class FreshOffer:
    """The line under a replayed cell that a person runs: "replayed · recorded ..." and a
    "run fresh" button, which asks the agent again, the fresh turn drawn in place of the
    replayed output. The line is an output of its own (the replayed output stays exactly what
    the original showed); a saved notebook keeps its words, without the button."""

    CSS_CLASS = "agentkernel-fresh"

    def __init__(self, words: str, run_fresh: Callable[[], Awaitable[Any]]) -> None:
        self.words = words
        self.run_fresh = run_fresh
        self.running: asyncio.Future[Any] | None = None
        self.status = widgets.HTML(_small(words))
        self.button = widgets.Button(
            description="run fresh",
            tooltip="Ask the agent again, in place of the recorded turn",
            _dom_classes=[self.CSS_CLASS],
            layout=widgets.Layout(width="auto"),
        )
        self.button.on_click(self._clicked)
        self.box = widgets.HBox([self.status, self.button])
        self.handle: DisplayHandle | None = None

    def display(self) -> None:
        note = f"({self.words}; `%%agent --fresh` asks the agent again)"
        bundle = {
            **self.box._repr_mimebundle_(),
            "text/plain": note,
            "text/markdown": f"*{note}*",
        }
        self.handle = display(bundle, raw=True, display_id=True)

    def _clicked(self, _button: Any) -> None:
        if self.running is not None:
            return
        self.button.disabled = True
        self.status.value = _small("running fresh…")
        self.running = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """Run the fresh turn; then the line says what happened, without a button."""
        try:
            await self.run_fresh()
            note = f"ran fresh at {datetime.now(timezone.utc):%H:%M} UTC, in place of the replay"
        except Exception as exc:  # shown where the click was: nothing else would show it
            note = f"run fresh failed: {exc}"
        if self.handle is not None:
            words = {"text/plain": f"({note})", "text/markdown": f"*({note})*"}
            self.handle.update(words, raw=True)
        for widget in (self.status, self.button, self.box):
            widget.close()


def _small(words: str) -> str:
    return f'<span style="font-size:0.85em;opacity:0.75">{html.escape(words)}</span>'


async def _tick(view: TurnView) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        view.flush()


async def _fallback_if_unseen(shell: Any, view: TurnView, event: Event) -> None:
    """No widget view appeared (a front end without widgets): ask on stdin, or let the
    permission mode's default (deny) answer, saying why."""
    waited = 0.0
    while not (view.rendered or view.text_mode or waited >= RENDER_GRACE_S):
        await asyncio.sleep(TICK_S)
        waited += TICK_S
    if view.rendered or event.decided:  # type: ignore[attr-defined]
        return
    if _stdin_allowed(shell):
        _ask_on_stdin(shell, event)
        return
    reason = "No front end could show the approval buttons, so it was denied."
    if isinstance(event, Question):
        event.decline(reason, by="policy")
    elif isinstance(event, PermissionRequest):
        event.deny(reason, by="policy")


def _stdin_allowed(shell: Any) -> bool:
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return sys.stdin is not None and sys.stdin.isatty()
    return bool((kernel.get_parent() or {}).get("content", {}).get("allow_stdin", False))


def _ask_on_stdin(shell: Any, event: Event) -> None:
    """Ask in the front end's input box (or the terminal); blocks the kernel thread, which is
    fine: the answer arrives on the stdin channel, not as a widget click."""
    ask = getattr(getattr(shell, "kernel", None), "raw_input", None) or input
    if isinstance(event, PermissionRequest):
        answer = ask(
            f"Allow {event.tool_name} {_brief(event)}? [y]es / [a]lways / [n]o (reason): "
        ).strip()
        if answer.lower() in ("y", "yes"):
            event.allow()
        elif answer.lower() in ("a", "always"):
            event.allow_always()
        else:
            reason = answer[1:].strip() if answer.lower().startswith("n") else answer
            event.deny(reason)
    elif isinstance(event, Question):
        answers: dict[str, str] = {}
        for q in event.questions:
            options = [o["label"] for o in q.get("options", [])]
            menu = "".join(f"\n  {i}. {label}" for i, label in enumerate(options, 1))
            reply = ask(f"{q['question']}{menu}\nAnswer (number or text): ").strip()
            if reply.isdigit() and 1 <= int(reply) <= len(options):
                reply = options[int(reply) - 1]
            answers[q["question"]] = reply
        event.answer(answers)


def _brief(request: PermissionRequest) -> str:
    text = request.command or request.title or str(request.input)
    return text if len(text) <= 200 else text[:200] + "..."


def provenance(session: Session, record: TurnRecord) -> dict[str, Any]:
    """What the saved output records about how it was made (kept in the output's metadata)."""
    decisions = [e.to_dict() for e in record.events.not_deltas() if e.type == "permission_decided"]
    return {
        "session_id": session.id,
        "session_name": session.name,
        "backend": session.backend_name,
        "backend_session_id": record.backend_session_id,
        "model": session.model,
        "turn": record.number,
        "status": record.status,
        "replay_key": record.replay_key,
        "cost_usd": round(record.usage.cost_usd, 6),
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "approvals": [
            {k: d[k] for k in ("tool_name", "behavior", "always", "by", "reason")}
            for d in decisions
        ],
    }
