"""`AgentKernel`: a Jupyter kernel whose cells are turns of one persistent agent session.

A prompt cell runs exactly as a ``%%agent`` cell does. The kernel's first input transformer
rewrites the cell being executed into what the magics' transformer makes of
``%%agent\\n<prompt>``: ``await __agentkernel__.run_cell("", prompt)``, which IPython runs as an
async cell on the kernel's loop (IPython still gets the cell as typed, so its history holds the
prompt). So the live view, the static output, approvals (ipykernel dispatches widget messages
while an async cell awaits) and interrupts (ipykernel cancels an async cell on SIGINT, which
both interrupt modes deliver) are the magics' own. Python cells (``%%python``, ``%...``,
``!...``) run in IPython as usual, in the same namespace; ``%%python`` only loses its line.

Starting the agent takes seconds (importing its SDK, then its CLI's handshake), so the kernel
answers ``kernel_info`` first and then starts the session in the background ("warm-up"): this
notebook's last session when there is one (``on_start = "resume"``), else a new one. Every
cell waits for the warm-up to end, so no cell races the session's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ipykernel.ipkernel import IPythonKernel
from traitlets import Bool, Enum, Unicode

from .. import __version__, _runtime
from . import _introspect
from ._cells import classify

if TYPE_CHECKING:
    from ..notebook.magics import AgentMagics
    from ..notebook.sessions import SessionRegistry
    from ..session import Session

LANGUAGE_INFO: dict[str, Any] = {
    "name": "markdown",
    "version": "",
    "mimetype": "text/markdown",
    "file_extension": ".md",
    "codemirror_mode": "markdown",
    "pygments_lexer": "markdown",
}
"""Cells are prompts: front ends edit and highlight them as Markdown."""

SHUTDOWN_WARM_UP_WAIT_S = 3.0
"""How long a shutdown waits for a starting agent to finish connecting, so it can be closed
instead of abandoned mid-handshake. Jupyter waits 5 s for a kernel to exit before killing it."""
SHUTDOWN_CLOSE_S = 1.5
"""How long closing the sessions (all at once) may take at shutdown before their agents are
killed: a close takes about 0.5 s."""


class AgentKernel(IPythonKernel):
    """The Agent kernel. Configure with ``--AgentKernel.<name>=...`` in kernel.json's argv or
    ``c.AgentKernel.<name>`` in ``ipython_kernel_config.py``; the ``%agent`` magics' settings
    (``AgentMagics.*``) apply too."""

    implementation = "agentkernel"
    implementation_version = __version__
    language_info = LANGUAGE_INFO

    backend = Unicode(
        None, allow_none=True, help="Backend of the kernel's session (default: claude)."
    ).tag(config=True)
    model = Unicode(
        None, allow_none=True, help="Model of the kernel's session (default: the backend's)."
    ).tag(config=True)
    on_start = Enum(
        ("resume", "new"),
        default_value="resume",
        help="When the kernel starts: continue this notebook's last session (resume) or start "
        "a new one (new). `%agent new` starts a new one at any time.",
    ).tag(config=True)
    connect_on_start = Bool(
        True,
        help="Start the agent as soon as the kernel is ready, so the first prompt does not "
        "wait for it.",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._magics: AgentMagics | None = None
        self._warm_up: asyncio.Task[None] | None = None
        self._warmed_up = threading.Event()
        self._starting = threading.Lock()
        """Held while the warm-up creates the session, so a shutdown (on the control thread)
        either sees it created, and waits for it to connect, or stops its creation."""
        self._shutting_down = False
        self._session_created = False
        self._notice: str | None = None
        self._help: str | None = None
        self._executing: str | None = None
        self._fresh: Session | None = None
        """The session the warm-up started new, until the first prompt: that prompt's cell may
        show the notebook is one with a stored session after all (its file was not saved)."""
        from ..notebook import _clients

        _clients.install(self, at_start=True)

    @property
    def banner(self) -> str:  # type: ignore[override]
        return (
            f"Agent kernel (agentkernel {__version__}, Python {sys.version.split()[0]})\n"
            "Each cell is a prompt: one turn of this notebook's agent session, which a kernel "
            "restart continues.\nA cell starting with %%python (or a % magic, or !) runs "
            "Python in the same namespace; `%agent help` lists the session commands."
        )

    @property
    def magics(self) -> AgentMagics:
        """The ``%agent`` magics of this kernel, loaded on first use rather than at start: the
        kernel is ready sooner without the live view's imports."""
        if self._magics is None:
            from ..notebook.magics import load
            from ._continuity import session_options

            # First: IPython's own cleanup (prompt strippers for ">>> " and "In [1]:") must
            # not edit a prompt.
            self.shell.input_transformers_cleanup.insert(0, self._transform_cell)
            magics = load(self.shell)
            if self.backend:
                magics.default_backend = self.backend
            if self.model:
                magics.default_model = self.model
            magics.session_options = {**session_options(self.shell), **magics.session_options}
            self._magics = magics
        return self._magics

    # -- the session -----------------------------------------------------------------------

    async def kernel_info_request(self, stream: Any, ident: Any, parent: Any) -> None:
        await super().kernel_info_request(stream, ident, parent)
        # Ready: start the agent now (on the shell's loop, whichever channel asked).
        self.io_loop.add_callback(self._start_warm_up)

    def _start_warm_up(self) -> asyncio.Task[None]:
        if self._warm_up is None:
            self._warm_up = asyncio.ensure_future(self._warm_up_session())
        return self._warm_up

    async def _warm_up_session(self) -> None:
        try:
            magics = self.magics
            # The backend's SDK takes seconds to import: on the runtime thread (a daemon, so a
            # shutdown meanwhile does not wait for it), while the kernel's loop keeps answering.
            await _runtime.call(_import_backend(magics.default_backend))
            with self._starting:
                if self._shutting_down:
                    return
                session, resumed = self._start_session(magics)
                self._session_created = True
            if self.connect_on_start:
                await self._connect(magics, session, resumed)
        except Exception:
            # The first prompt starts the session itself and shows what goes wrong.
            self.log.warning("agentkernel: the agent session did not start", exc_info=True)
        finally:
            self._warmed_up.set()

    def _start_session(self, magics: AgentMagics) -> tuple[Session, bool]:
        """The kernel's session: this notebook's own (if resuming), else a new one."""
        from ..notebook import continuity
        from ..session import shared_store
        from ._continuity import starting_match

        store = shared_store()
        if self.on_start == "resume" and store is not None:
            match = starting_match(store, self.shell, magics.default_backend)
            if match is not None:
                return self._adopt(magics, match), True
            others = continuity.strangers(store, continuity.Origin.of(self.shell))
            if others:
                self._notice = (
                    f"(a new session: the {len(others)} stored session(s) of a notebook once at "
                    "this path belong to a notebook that was renamed, moved or replaced, not to "
                    "this one; `%agent sessions` lists them, `%agent resume ID` continues one)"
                )
        self._fresh = _new_session(magics, magics.sessions.current)
        return self._fresh, False

    def _adopt(self, magics: AgentMagics, match: Any) -> Session:
        """Continue the matched session (a fork of it, for a copied notebook)."""
        from ..notebook import continuity
        from ..session import Session, shared_store

        options = {}
        if magics.default_permission_mode:
            options["permission_mode"] = magics.default_permission_mode
        session = Session.resume(match.record.id, store=shared_store(), **options)
        turns = len(session.history)
        if match.how == "copy":
            session = session.fork(notebook_path=continuity.notebook_path(self.shell))
        registry = magics.sessions
        registry.add(match.record.name or registry.current, session)
        registry.use(session.name)
        self._notice = f"({match.describe(turns)})"
        return session

    async def _check_identity(self, cell_id: str | None) -> None:
        """At the first prompt: a session the warm-up started new gives way to the stored one
        this cell ran a turn of (a notebook whose file did not yet hold its cells)."""
        from ..notebook import continuity
        from ..session import shared_store

        fresh, self._fresh = self._fresh, None
        store = shared_store()
        if fresh is None or not cell_id or store is None or fresh.history:
            return
        origin = continuity.Origin(continuity.notebook_path(self.shell), cell_id)
        match = continuity.find(store, origin, backend=fresh.backend_name)
        if match is None or match.record.id == fresh.id:
            return
        with contextlib.suppress(Exception):
            await fresh.close()
        with contextlib.suppress(Exception):
            store.delete(fresh.id)  # it never ran a turn
        self._adopt(self.magics, match)

    async def _connect(self, magics: AgentMagics, session: Session, resumed: bool) -> None:
        try:
            await session.connect()
        except Exception as exc:
            if not resumed:
                raise
            # The agent no longer has that conversation (its files were removed, another
            # machine...): start afresh and say so in the first prompt's output.
            with contextlib.suppress(Exception):
                await session.close()
            fresh = _new_session(magics, session.name)
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
            self._notice = (
                f"(could not continue this notebook's session {session.id[:8]}: {reason}; "
                "this is a new session)"
            )
            await fresh.connect()

    async def _wait_for_warm_up(self) -> bool:
        """Start the warm-up if no kernel_info did, and wait for it. False if a kernel
        interrupt ended the wait (the warm-up itself goes on)."""
        warm_up = self._start_warm_up()
        if warm_up.done():
            return True
        interrupted = asyncio.get_running_loop().create_future()

        def interrupt() -> None:
            if not interrupted.done():
                interrupted.set_result(None)

        with _on_sigint(interrupt):
            await asyncio.wait({warm_up, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        return warm_up.done()

    # -- requests --------------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict[str, Any] | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        if not await self._wait_for_warm_up():
            print("(interrupted while the agent was starting)", file=sys.stderr)
            return {
                "status": "error",
                "ename": "KeyboardInterrupt",
                "evalue": "interrupted while the agent was starting",
                "traceback": [],
                "execution_count": self.shell.execution_count,
                "user_expressions": {},
                "payload": [],
            }
        kind = classify(code).kind
        if kind == "prompt" and self._fresh is not None:
            await self._check_identity(cell_id)
        if self._notice and kind == "prompt":
            print(self._notice)
            self._notice = None
        self._executing = code if code.endswith("\n") else code + "\n"
        try:
            return await super().do_execute(
                code,
                silent,
                store_history,
                user_expressions,
                allow_stdin,
                cell_meta=cell_meta,
                cell_id=cell_id,
            )
        finally:
            self._executing = None

    def _transform_cell(self, lines: list[str]) -> list[str]:
        """The first input transformer: the cell being executed, as IPython is to run it. A
        prompt becomes the awaited call of a ``%%agent`` cell; a ``%%python`` cell loses its
        marker line. Other input (a cell magic's body, ``run_cell`` from user code) is left
        as it is."""
        if self._executing is None or "".join(lines) != self._executing:
            return lines
        from ..notebook.magics import agent_cell_transformer

        cell = classify(self._executing)
        if cell.kind == "python":
            return cell.source.splitlines(keepends=True)
        return agent_cell_transformer(["%%agent\n", *cell.source.splitlines(keepends=True)])

    async def do_is_complete(self, code: str) -> dict[str, Any]:  # type: ignore[override]
        """A console runs a cell on Enter when it is complete. A prompt is; a ``%%python``
        line alone is not (its code comes on the next lines)."""
        cell = classify(code)
        if cell.kind == "prompt":
            return {"status": "complete"}
        if cell.python_marker and not cell.source.strip():
            return {"status": "incomplete", "indent": ""}
        return super().do_is_complete(cell.source)

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:  # type: ignore[override]
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        word = _introspect.agent_subcommand_at(code, cursor_pos)
        if word is not None and word.start <= cursor_pos <= word.end:
            names = _introspect.complete_subcommand(word, cursor_pos, self._subcommands())
            return _completions(names, word.start, word.end)
        cell = classify(code)
        if cell.kind == "python":
            if cursor_pos < cell.offset:  # on the %%python line itself
                return super().do_complete(code, cursor_pos)
            return _shifted(super().do_complete(cell.source, cell.cursor(cursor_pos)), cell.offset)
        field = _introspect.field_before(cell.source, cell.cursor(cursor_pos))
        if field is None:
            return _completions([], cursor_pos, cursor_pos)
        reply = super().do_complete(field.text, len(field.text))
        return _completions(
            _introspect.name_like(reply["matches"]),
            cell.offset + field.start + reply["cursor_start"],
            cell.offset + field.start + reply["cursor_end"],
        )

    async def do_inspect(  # type: ignore[override]
        self,
        code: str,
        cursor_pos: int | None,
        detail_level: int = 0,
        omit_sections: Any = (),
    ) -> dict[str, Any]:
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        word = _introspect.agent_subcommand_at(code, cursor_pos)
        if word is not None:
            described = self._subcommands().get(word.text)
            text = (
                f"%agent {word.text}: {described}\n\n`%agent help` lists every subcommand."
                if described
                else self._help_text()
            )
            return _inspection(text)
        cell = classify(code)
        if cell.kind == "python":
            cursor = cell.cursor(cursor_pos)
            return super().do_inspect(cell.source, cursor, detail_level, omit_sections)
        field = _introspect.field_around(cell.source, cell.cursor(cursor_pos))
        if field is not None:
            return super().do_inspect(field.text, len(field.text), detail_level, omit_sections)
        return _inspection(self._describe_prompt_cell())

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        """End every agent process of this kernel before it exits (a restart too)."""
        with self._starting:
            self._shutting_down = True
        if self._session_created:
            # A starting agent is let finish its handshake, then closed: not abandoned in it.
            await asyncio.to_thread(self._warmed_up.wait, SHUTDOWN_WARM_UP_WAIT_S)
        if self._magics is not None:
            await self._close_sessions(self._magics.sessions)
        return super().do_shutdown(restart)

    async def _close_sessions(self, registry: SessionRegistry) -> None:
        sessions = [session for _, session in registry.items() if not session.is_finished]
        closing = asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        try:
            await asyncio.wait_for(closing, SHUTDOWN_CLOSE_S)
        except asyncio.TimeoutError:
            self.log.warning("agentkernel: killing agents that did not close in time")
        for session in sessions:
            if not session.is_finished:
                session.kill()

    # -- help ------------------------------------------------------------------------------

    def _help_text(self) -> str:
        if self._help is None:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.magics.line("help")
            self._help = out.getvalue()
        return self._help

    def _subcommands(self) -> dict[str, str]:
        from ..notebook.magics import SUBCOMMANDS

        return _introspect.subcommand_descriptions(self._help_text(), [*SUBCOMMANDS, "help"])

    def _describe_prompt_cell(self) -> str:
        registry = self.magics.sessions
        name = registry.current
        if name in registry:
            session = registry.get(name)
            where = f"session {name!r} ({session.backend_name}, model {session.model or 'default'})"
        else:
            where = f"session {name!r} (started by the first prompt)"
        return (
            f"A prompt: running the cell sends it as one turn of {where}.\n"
            "{name} fields are filled in from the notebook's variables ({{ and }} are literal "
            "braces).\nA cell starting with %%python, a % magic or ! runs as Python in the "
            "same namespace; `%agent help` lists the session commands."
        )


def _new_session(magics: AgentMagics, name: str) -> Session:
    """A new session under `name` with the magics' defaults, as a plain ``%%agent`` makes."""
    registry = magics.sessions
    registry.defaults = magics.session_defaults()
    session = registry.create(name)
    registry.use(name)
    return session


async def _import_backend(name: str) -> None:
    from ..backends import load_backend

    load_backend(name)


@contextlib.contextmanager
def _on_sigint(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` on the running loop when SIGINT (a kernel interrupt, in either mode)
    arrives, instead of KeyboardInterrupt being raised somewhere inside the loop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(callback))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _completions(matches: list[str], start: int, end: int) -> dict[str, Any]:
    return {
        "status": "ok",
        "matches": matches,
        "cursor_start": start,
        "cursor_end": end,
        "metadata": {},
    }


def _shifted(reply: dict[str, Any], offset: int) -> dict[str, Any]:
    """A completion reply for the Python source of a cell, moved to cell positions."""
    reply["cursor_start"] += offset
    reply["cursor_end"] += offset
    for item in reply.get("metadata", {}).get("_jupyter_types_experimental", []):
        item["start"] += offset
        item["end"] += offset
    return reply


def _inspection(text: str) -> dict[str, Any]:
    return {"status": "ok", "found": True, "data": {"text/plain": text}, "metadata": {}}
