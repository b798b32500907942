"""``%%agent`` and ``%agent``: agent sessions from IPython.

A ``%%agent`` cell must run as an *async* cell so that approval clicks reach the kernel while
it waits (see `turn`). A cell magic that returns a coroutine is never awaited, so an input
transformer rewrites the cell into ``await __agentkernel__.run_cell(line, body)`` before IPython
compiles it; IPython then runs it with top-level await. Calling the cell magic directly (e.g.
``run_cell_magic``) still works, blocking and without approvals (the permission mode decides).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import logging
import math
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
    parse_argstring,
)
from traitlets import Dict, Enum, Float, Unicode

from .. import _runtime, export, replay
from ..backends import DEFAULT_BACKEND, available_backends, load_backend
from ..errors import AgentKernelError
from ..permissions import PERMISSION_MODES, validate_mode
from ..session import DEFAULT_IDLE_TIMEOUT_S, Session, TurnRecord, shared_store
from ..store import Store, StoreError
from . import _clients, context, continuity
from . import tools as kernel_tools
from .sessions import SessionRegistry
from .turn import (
    FRONTENDS,
    cell_id,
    detect_frontend,
    replay_cell_turn,
    run_cell_turn,
    widget_probe,
)

log = logging.getLogger("agentkernel")

HANDLE = "__agentkernel__"
"""Name under which the magics object sits in the user namespace (hidden from %who)."""

_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|ipython)?[ \t]*\n(.*?)```", re.DOTALL)


def budget_usd(value: str) -> float:
    """The one check of a budget, for ``%%agent --max-budget`` and ``%agent new --max-budget``
    alike, new session or existing: an amount of USD, 0 or more."""
    try:
        amount = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes an amount in USD, like 2.50, not {value!r}"
        ) from None
    if not math.isfinite(amount) or amount < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (USD), not {value}")
    return amount


@magics_class
class AgentMagics(Magics):
    """Agent sessions in IPython. Configure defaults with ``%config AgentMagics.<name>``."""

    default_backend = Unicode(DEFAULT_BACKEND, help="Backend for new sessions.").tag(config=True)
    default_model = Unicode(None, allow_none=True, help="Model for new sessions.").tag(config=True)
    default_permission_mode = Enum(
        PERMISSION_MODES,
        default_value=None,
        allow_none=True,
        help="Permission mode for new sessions; unset: ask when a person can answer, "
        "deny in headless runs.",
    ).tag(config=True)
    frontend = Enum(
        FRONTENDS, default_value="auto", help="Who answers approvals (auto-detected)."
    ).tag(config=True)
    session_options = Dict(
        help="Extra Session options for new sessions (cwd, env, max_budget_usd...)."
    ).tag(config=True)
    idle_timeout = Float(
        DEFAULT_IDLE_TIMEOUT_S,
        allow_none=True,
        help="Seconds an idle session keeps its agent process before parking it (the next "
        "turn resumes the conversation in a new one); None: never park.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.sessions = SessionRegistry()
        self._subcommands = _subcommand_parser()
        self.replay_policy: replay.Policy | None = None
        """This notebook's replay setting (`%agent replay`); None: the front end's default."""
        self._warm: Session | None = None
        """The session `warm_up` started, until the first ``%%agent`` cell takes it."""
        self._warming: asyncio.Future[None] | None = None
        """Done once `warm_up` has made its session (or decided not to)."""
        self._warm_basis: tuple[Any, ...] | None = None
        """What the warm session was made from (`_basis`): a cell takes it only if unchanged."""

    def _basis(self) -> tuple[Any, ...]:
        """What a new session is made from: the configured defaults, the environment and the
        working directory (an agent started before ``%env KEY=...`` or ``%cd`` would run
        without them)."""
        return (self.session_defaults(), dict(os.environ), os.getcwd())

    def session_defaults(self) -> dict[str, Any]:
        return {
            "backend": self.default_backend,
            "model": self.default_model,
            "permission_mode": self.default_permission_mode,
            "notebook_path": continuity.notebook_path(self.shell),
            "idle_timeout": self.idle_timeout,
            **self.session_options,
        }

    @property
    def store(self) -> Store:
        """The session store this kernel's sessions are kept in."""
        store = shared_store()
        if store is None:
            raise UsageError("the session store could not be opened; see the warning above")
        return store

    def _continue_stored(self, name: str) -> Session | None:
        """This notebook's session of that name, if one is stored (`continuity`): after a
        kernel restart, a rename or reopening the notebook a cell continues where it left off;
        a copied notebook continues a fork. The first output says which, and how to start
        afresh."""
        store = shared_store()
        if store is None:
            return None
        origin = continuity.Origin.of(self.shell, cell_id(self.shell))
        match = continuity.find(store, origin, name=name)
        if match is None:
            others = continuity.strangers(store, origin, name=name)
            if others:
                print(
                    f"(a new session {name!r}: the {len(others)} stored session(s) named so at "
                    "this path belong to a notebook that was renamed, moved or replaced, not to "
                    "this one; `%agent sessions` lists them, `%agent resume ID` continues one)"
                )
            return None
        session = Session.resume(match.record.id, store=store)
        turns = len(session.history)
        if match.how == "copy":
            session = session.fork(title=match.record.title, notebook_path=origin.path)
        self.sessions.add(name, session)
        print(f"({match.describe(turns)})")
        return session

    # -- %%agent ------------------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "--session",
        "-s",
        metavar="NAME",
        help="Session name (default: the current one, 'default').",
    )
    @argument("--backend", "-b", help="Backend for a new session (default: claude).")
    @argument("--model", "-m", help="Model for a new session, or switch this one's model.")
    @argument(
        "--agent",
        "-a",
        metavar="NAME",
        help="With --backend acp: the ACP agent of a new session (`%%agent agents` lists them).",
    )
    @argument("--new", action="store_true", help="Start a fresh session under this name.")
    @argument(
        "--permission-mode",
        "-p",
        choices=PERMISSION_MODES,
        help="How tool requests are decided in this turn.",
    )
    @argument("--max-budget", type=budget_usd, metavar="USD", help="Session budget in USD.")
    @argument("-o", "--output", metavar="VAR", help="Store the turn's text in this variable.")
    @argument("--quiet", "-q", action="store_true", help="Show only the final answer.")
    @argument("--context", "-c", metavar="A,B", help="Attach summaries of these variables.")
    @argument(
        "--insert-code",
        action="store_true",
        help="Offer the answer's last Python code block as the next cell.",
    )
    @argument("--raw", action="store_true", help="Send the text as is: no {name} filling.")
    @argument(
        "--replay",
        action="store_true",
        help="Give back this cell's recorded turn (fails if it has none); no model call.",
    )
    @argument("--fresh", action="store_true", help="Run the agent even if a recorded turn matches.")
    @line_cell_magic
    def agent(self, line: str, cell: str | None = None) -> None:
        """%%agent [options]: send the cell to an agent session as one turn.

        %agent SUBCOMMAND: manage sessions (`%agent help` lists them).
        """
        if cell is None:
            self.line(line)
            return
        # Called directly (not through the transformer): no loop to await on, so block and
        # let the permission mode decide.
        _runtime.call_sync(self.run_cell(line, cell, frontend="headless"))

    async def run_cell(self, line: str, body: str, frontend: str | None = None) -> None:
        """The body of a ``%%agent`` cell, awaited by the rewritten cell."""
        args = self._cell_args(line)
        prompt = self._prompt(body, args)
        if self._warming is not None:  # the warm-up's session may be moments away: take it
            with contextlib.suppress(Exception):
                await asyncio.shield(self._warming)
            self._warming = None
        session = self._session_for(args)
        forced = frontend or self.frontend
        detected = detect_frontend(self.shell, forced)
        key = _replay_key(session, prompt, args)
        recording = self._recording(args, key, prompt, session, headless=detected == "headless")
        if recording is not None:

            async def run_fresh(replayed: TurnRecord, into: str) -> None:
                # In place of the replay when nothing came after it (the fresh turn gets its
                # key); after other turns, as a new turn, as re-running with --fresh does.
                with contextlib.suppress(ValueError):
                    await session.take_back_replay(replayed)
                fresh = await run_cell_turn(
                    self.shell,
                    session,
                    prompt,
                    frontend="widget",
                    permission_mode=args.permission_mode,
                    quiet=args.quiet,
                    replay_key=_replay_key(session, prompt, args),
                    into=into,
                )
                if args.output:  # (--insert-code: no cell to insert after, from a click)
                    self.shell.user_ns[args.output] = fresh.text

            record = await replay_cell_turn(
                self.shell,
                session,
                recording,
                frontend=detected,
                quiet=args.quiet,
                run_fresh=run_fresh if detected == "widget" else None,
            )
        else:
            record = await run_cell_turn(
                self.shell,
                session,
                prompt,
                frontend=detected,
                permission_mode=args.permission_mode,
                quiet=args.quiet,
                probe=widget_probe(self.shell, forced),
                replay_key=key,
            )
        origin = continuity.Origin.of(self.shell, cell_id(self.shell))
        # A store that fails has said so; the turn itself is kept in memory.
        with contextlib.suppress(StoreError):
            continuity.remember(session.store, session, origin)
        self._after_turn(record, args)

    def _recording(
        self, args: Any, key: str, prompt: str, session: Session, *, headless: bool
    ) -> replay.Recording | None:
        """The recorded turn this cell replays, if its replay policy says so (`replay`)."""
        cell: replay.Policy | None = "always" if args.replay else "never" if args.fresh else None
        try:
            policy = replay.resolve(cell, self.replay_policy, headless=headless)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if policy == "never":
            return None
        try:
            files = replay.replay_files(continuity.notebook_path(self.shell))
            found = replay.find(session.store, key, files)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"cannot replay: {exc}") from None
        except StoreError as exc:
            if policy == "always":
                raise UsageError(f"cannot replay: {exc}") from None
            return None
        if found is None and policy == "always":
            raise UsageError(str(replay.missing(prompt, cell_id(self.shell)))) from None
        return found

    def _cell_args(self, line: str) -> Any:
        """The ``%%agent`` line's options, checked before anything happens."""
        try:
            args = parse_argstring(self.agent, line)
        except UsageError as exc:
            raise UsageError(f"{exc}\n{_option_list(self.agent.parser)}") from None
        if args.replay and args.fresh:
            raise UsageError("--replay and --fresh contradict each other: pick one")
        if args.output and not args.output.isidentifier():
            raise UsageError(f"-o needs a variable name, not {args.output!r}")
        return args

    def _session_for(self, args: Any) -> Session:
        name = args.session or self.sessions.current
        if args.backend and args.backend not in available_backends():
            raise UsageError(
                f"unknown backend {args.backend!r}; available: {', '.join(available_backends())}"
            )
        exists = name in self.sessions and not self.sessions.get(name).is_finished
        if not exists and not args.new and not args.backend:
            exists = self._continue_stored(name) is not None
        warm, self._warm = self._warm, None
        if args.new or not exists:
            self.sessions.defaults = self.session_defaults()
            fits = warm is not None and name == warm.name and not args.max_budget
            fits = fits and args.backend in (None, warm.backend_name) and not args.model
            if fits and not args.agent and self._warm_basis == self._basis():
                session = self.sessions.add(name, warm)  # type: ignore[arg-type]
                warm = None
            else:
                session = self.sessions.create(
                    name,
                    backend=args.backend,
                    model=args.model,
                    max_budget_usd=args.max_budget,
                    backend_options=self._agent_options(args),
                )
        else:
            session = self.sessions.get(name)
            if args.backend and args.backend != session.backend_name:
                raise UsageError(
                    f"session {name!r} uses backend {session.backend_name!r}; start a new one "
                    f"with `--new --backend {args.backend}` or pick another --session name"
                )
            agent = session.backend_options.get("agent")
            if args.agent and args.agent != agent:
                runs = f"the ACP agent {agent!r}" if agent else f"backend {session.backend_name!r}"
                raise UsageError(
                    f"session {name!r} runs {runs}; start a new one with "
                    f"`--new --backend acp --agent {args.agent}` or pick another --session name"
                )
            if args.model and args.model != session.model:
                session.sync.set_model(args.model)
            if args.max_budget is not None:
                session.max_budget_usd = args.max_budget
        if warm is not None:  # started for a cell that turned out to want another session
            _runtime.submit(warm.close())
        self.sessions.current = name
        return session

    def _agent_options(self, args: Any) -> dict[str, Any] | None:
        """``--agent NAME`` as the new session's backend options (over the configured ones)."""
        if args.agent is None:
            return None
        if (args.backend or self.default_backend) != "acp":
            raise UsageError(
                f"--agent {args.agent} names an ACP agent: add `--backend acp` (other backends "
                "run one agent each)"
            )
        configured = self.session_defaults().get("backend_options") or {}
        return {**configured, "agent": args.agent}

    def warm_up(self) -> None:
        """Start what the first plain ``%%agent`` cell needs while the user writes it: the
        backend's SDK is imported (seconds) on the runtime thread, then the default session
        is created and its agent connected, unless this notebook has a stored session that
        cell will continue (`continuity`). Best effort: a failure here is the cell's to show."""
        imported = _runtime.submit(_import_backend(self.default_backend))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to create the session on later: the import alone
            return

        made: asyncio.Future[None] = loop.create_future()
        self._warming = made

        async def start() -> None:
            try:
                await asyncio.wrap_future(imported)
                name = self.sessions.current
                store = shared_store()
                origin = continuity.Origin.of(self.shell)
                if name in self.sessions or self._warm is not None:
                    return
                if store is not None and continuity.find(store, origin, name=name) is not None:
                    return
                self._warm_basis = self._basis()
                self._warm = warm = Session(name=name, **self.session_defaults())
            finally:
                if not made.done():
                    made.set_result(None)
            await warm.connect()

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.info("agentkernel: the warm-up did not start the agent: %s", task.exception())

        # In a context of its own, not the ``%load_ext`` cell's: the agent's tasks, started by
        # the connect, would otherwise carry that cell's context (ipykernel's parent header)
        # into later cells' turns (seen: a widget cell's approved tool call never finished).
        task = contextvars.Context().run(loop.create_task, start())
        task.add_done_callback(done)
        _background.add(task)
        task.add_done_callback(_background.discard)

    def _prompt(self, body: str, args: Any) -> str:
        namespace = self.shell.user_ns
        try:
            prompt = body if args.raw else context.interpolate(body, namespace)
            prompt = context.attach(prompt, _context_names(args), namespace)
        except context.PromptContextError as exc:
            raise UsageError(str(exc)) from None
        if not prompt.strip():
            raise UsageError("the %%agent cell is empty: write the prompt below the %%agent line")
        return prompt

    def _after_turn(self, record: TurnRecord, args: Any) -> None:
        if args.output:
            self.shell.user_ns[args.output] = record.text
        if args.insert_code:
            blocks = _CODE_BLOCK.findall(record.text)
            if blocks:
                self.shell.set_next_input(blocks[-1].rstrip("\n"), replace=False)
            else:
                print("(--insert-code: the answer has no Python code block to insert)")

    # -- %agent -------------------------------------------------------------------------------

    def line(self, line: str) -> None:
        words = shlex.split(line)
        if not words or words[0] in ("help", "-h", "--help"):
            print(self._subcommands.format_help())
            return
        command = SUBCOMMANDS.get(words[0])
        if command is None:
            raise UsageError(
                f"unknown %agent subcommand {words[0]!r}; valid: {', '.join(SUBCOMMANDS)} "
                "(`%agent help` explains each)"
            )
        args = self._subcommands.parse_args(words)
        try:
            command(self, args)
        except (KeyError, ValueError, AgentKernelError) as exc:
            raise UsageError(str(exc).strip("'\"")) from None
        except OSError as exc:
            raise UsageError(_os_error(exc)) from None

    def cmd_new(self, args: Any) -> None:
        name = args.name or self.sessions.free_name("session")
        self.sessions.defaults = self.session_defaults()
        session = self.sessions.create(
            name,
            backend=args.backend,
            model=args.model,
            permission_mode=args.permission_mode,
            max_budget_usd=args.max_budget,
        )
        self.sessions.use(name)
        print(f"New session {name!r} ({session.backend_name}); it is now the current session.")

    def cmd_list(self, args: Any) -> None:
        items = self.sessions.items()
        if not items:
            print("No sessions yet: a %%agent cell starts 'default'.")
            return
        print(f"{'':2}{'name':16} {'backend':8} {'model':22} {'turns':>5} {'cost $':>9}  state")
        for name, s in items:
            mark = "* " if name == self.sessions.current else "  "
            state = (
                "closed"
                if s.is_finished
                else "parked"
                if s.is_parked
                else ("connected" if s.is_connected else "idle")
            )
            stats = s.stats
            print(
                f"{mark}{name:16} {s.backend_name:8} {s.model or '(default)':22} "
                f"{stats.turns:>5} {_dollars(stats.cost_usd):>9}  {state}"
            )

    def cmd_use(self, args: Any) -> None:
        self.sessions.use(args.name)
        print(f"Current session: {args.name!r}")

    def cmd_resume(self, args: Any) -> None:
        store = shared_store()
        stored = store.get_session(args.id) if store is not None else None
        if stored is None and not args.backend:
            raise UsageError(
                f"no session {args.id!r} anywhere: no stored session has that id, id prefix or "
                "backend session id. `%agent sessions` lists the stored ones (ids in the first "
                "column; `%agent sessions TEXT` searches). To continue an agent's own session "
                "made outside agentkernel, name its backend: "
                f"`%agent resume {args.id} --backend {DEFAULT_BACKEND}`"
            )
        if args.backend and args.backend not in available_backends():
            raise UsageError(
                f"unknown backend {args.backend!r}; available: {', '.join(available_backends())}"
            )
        session = Session.resume(args.id, backend=args.backend)
        if stored is None:
            self._check_resumable(session, args.id)
        name = args.name or (
            session.name
            if session.name not in self.sessions
            else self.sessions.free_name(session.name)
        )
        self.sessions.add(name, session)
        self.sessions.use(name)
        turns = len(session.history)
        print(
            f"Session {name!r} resumes {session.id[:8]} ({turns} earlier turn(s)); it is now "
            "the current session."
        )

    def _check_resumable(self, session: Session, ref: str) -> None:
        """A backend session id we never stored: start the agent on it now, so a wrong id is
        an error here and not at the next turn, and leaves nothing behind."""
        try:
            _runtime.call_sync(session.connect())
        except Exception as exc:
            _runtime.call_sync(session.close())
            if session.store is not None:
                session.store.delete(session.id)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise UsageError(
                f"could not resume {ref!r} on {session.backend_name}: {reason}. "
                "`%agent sessions` lists the stored sessions"
            ) from None

    def cmd_sessions(self, args: Any) -> None:
        since = _parse_since(args.since) if args.since else None
        records = self.store.list_sessions(
            search=args.search,
            backend=args.backend,
            notebook=args.notebook,
            since=since,
            limit=None if args.all else 20,
        )
        if not records:
            print("No stored sessions match.")
            return
        print(f"{'id':9} {'':1} {'name':14} {'backend':8} {'updated':16}  title / notebook")
        for r in records:
            when = _when(r.updated_at)
            pin = "*" if r.pinned else " "
            where = r.title or (Path(r.notebook_path).name if r.notebook_path else "")
            print(f"{r.id[:8]:9} {pin} {r.name or '':14.14} {r.backend:8} {when:16}  {where}")

    def cmd_show(self, args: Any) -> None:
        print(export.transcript(self.store, self._stored(args.id).id))

    def cmd_rename(self, args: Any) -> None:
        record = self._stored(args.id)
        title = " ".join(args.title)
        self.store.rename(record.id, title)
        for _, session in self.sessions.items():
            if session.id == record.id:
                session.title = title
        print(f"Renamed {record.id[:8]} to {title!r}.")

    def cmd_pin(self, args: Any) -> None:
        record = self._stored(args.id)
        self.store.pin(record.id, not args.unpin)
        print(f"{'Unpinned' if args.unpin else 'Pinned'} {record.id[:8]}.")

    def cmd_delete(self, args: Any) -> None:
        record = self._stored(args.id)
        if any(s.id == record.id for _, s in self.sessions.items()):
            raise UsageError(
                f"session {record.id[:8]} is open in this kernel: `%agent close` it first"
            )
        self.store.delete(record.id)
        print(f"Deleted {record.id[:8]} and its turns from the store.")

    def cmd_agents(self, args: Any) -> None:
        # Imported here: the listing reads a config file and PATH, and needs no agent SDK.
        from ..backends._acp_agents import config_path, describe_agents

        env = {**os.environ, **(self.session_options.get("env") or {})}
        rows = describe_agents(env)
        path = config_path(env)
        print(
            f"ACP agents (`%%agent --backend acp --agent NAME`); your agents file: {path}"
            + ("" if path.is_file() else " (none yet)")
        )
        width = max(len(row["name"]) for row in rows)
        for row in rows:
            state = (
                f"installed: {row['installed']}"
                if row["installed"]
                else f"not installed: {row['install'] or 'no install command known'}"
            )
            changed = "" if row["source"] == "preset" else f"  [{row['source']}]"
            print(f"  {row['name']:{width}}  {row['command']}  ({state}){changed}")

    def _stored(self, ref: str) -> Any:
        record = self.store.get_session(ref)
        if record is None:
            raise UsageError(f"no stored session {ref!r}: `%agent sessions` lists them")
        return record

    def cmd_fork(self, args: Any) -> None:
        source = self.sessions.get(args.source)
        name = args.name or self.sessions.free_name(f"{source.name}-fork")
        self.sessions.add(name, source.fork())
        self.sessions.use(name)
        print(f"Forked {source.name!r} into {name!r}; it is now the current session.")

    def cmd_interrupt(self, args: Any) -> None:
        session = self.sessions.get(args.name)
        _runtime.call_sync(session.interrupt())
        print(f"Interrupted {session.name!r}.")

    def cmd_compact(self, args: Any) -> None:
        session = self.sessions.get()
        try:
            record = _runtime.call_sync(session.compact(" ".join(args.instructions) or None))
        except NotImplementedError as exc:
            raise UsageError(str(exc)) from None
        if record.status != "completed":
            raise UsageError(f"the compaction did not complete: {record.error or record.status}")
        summary = session.summary
        print(f"Compacted {session.name!r}" + (f"; summary:\n{summary}" if summary else "."))

    def cmd_tools(self, args: Any) -> None:
        if args.action in ("on", "off"):
            kernel_tools.set_enabled(args.action == "on")
        elif args.action not in (None, "show"):
            raise UsageError(f"unknown tools action {args.action!r}; valid: on, off, show")
        state = "on" if kernel_tools.enabled() else "off"
        current = self.sessions.current
        names = (
            ", ".join(t.name for t in self.sessions.get().get_tools())
            if current in self.sessions
            else "-"
        )
        print(f"notebook tools: {state}; the current session offers: {names or 'none'}")

    def cmd_stats(self, args: Any) -> None:
        session = self.sessions.get(args.name)
        s = session.stats
        cost = f"${s.cost_usd:.4f}" if s.cost_usd else "unknown (no price for the model)"
        print(
            f"session {session.name!r} ({session.backend_name}, "
            f"model {session.model or 'default'})\n"
            f"  turns {s.turns}, model calls {s.model_calls}\n"
            f"  tokens: input {s.input_tokens}, output {s.output_tokens}, cache read "
            f"{s.cache_read_tokens}, cache write {s.cache_creation_tokens}\n"
            f"  cost {cost}"
            + (f" of ${session.max_budget_usd:.4f}" if session.max_budget_usd else "")
            + f", agent time {s.wall_time_s:.1f} s"
        )

    def cmd_history(self, args: Any) -> None:
        session = self.sessions.get(args.name)
        if not session.history:
            print(f"session {session.name!r} has no turns yet")
        for r in session.history:
            prompt = r.prompt.strip().splitlines()[0][:60] if r.prompt.strip() else ""
            # No price (a scripted or unpriced model): the tokens, never a made-up figure.
            spent = (
                f"${r.usage.cost_usd:.4f}"
                if r.usage.cost_usd
                else f"{r.usage.total_tokens:,} tokens"
            )
            print(f"{r.number:>3}  {r.status:11} {spent}  {prompt}")

    def cmd_model(self, args: Any) -> None:
        session = self.sessions.get(args.session)
        if args.model:
            _runtime.call_sync(session.set_model(args.model))
        print(f"session {session.name!r} model: {session.model or '(backend default)'}")

    def cmd_permissions(self, args: Any) -> None:
        session = self.sessions.get(args.session)
        if args.action == "clear":
            session.permissions.clear()
            print("Forgot every 'always allow' rule of this session.")
        elif args.action in PERMISSION_MODES:
            session.permission_mode = validate_mode(args.action)
        elif args.action not in (None, "show"):
            raise UsageError(
                f"unknown permissions action {args.action!r}; valid: show, clear, "
                + ", ".join(PERMISSION_MODES)
            )
        rules = session.permissions.rules
        mode = session.permission_mode or "ask when someone can answer, else deny"
        print(f"session {session.name!r} permission mode: {mode}")
        print("always allowed: " + (", ".join(map(str, rules)) if rules else "nothing"))

    def cmd_title(self, args: Any) -> None:
        session = self.sessions.get(args.session)
        if args.title:
            session.title = " ".join(args.title)
        print(f"session {session.name!r} title: {session.title or '(none)'}")

    def cmd_export(self, args: Any) -> None:
        session_id = args.id or self.sessions.get(args.session).id
        store = self.store
        store.flush()
        try:
            if args.path and args.path.endswith(".ipynb"):
                written = export.to_notebook(store, session_id, args.path, overwrite=args.force)
                print(f"Wrote {written}")
            elif args.path:
                text = export.to_markdown(store, session_id)
                Path(args.path).write_text(text, encoding="utf-8")
                print(f"Wrote {args.path}")
            else:
                print(export.to_markdown(store, session_id))
        except FileExistsError:
            raise UsageError(
                f"cannot write {args.path}: it exists; add --force to replace it"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot write {args.path}: {_os_error(exc)}") from None

    def cmd_replay(self, args: Any) -> None:
        settings: dict[str, replay.Policy | None] = {"on": "auto", "off": "never", "auto": None}
        if args.action in settings:
            self.replay_policy = settings[args.action]
        elif args.action not in (None, "show"):
            raise UsageError(f"unknown replay setting {args.action!r}; valid: on, off, auto, show")
        setting = {"auto": "on", "never": "off", None: "auto"}[self.replay_policy]
        meaning = {
            "on": "an unchanged agent cell replays its recorded turn; a changed one runs",
            "off": "every agent cell runs the agent",
            "auto": "replay in headless runs, run the agent in cells a person runs",
        }[setting]
        env = os.environ.get(replay.ENV)
        print(
            f"replay: {setting} ({meaning})"
            + (f"; {replay.ENV}={env} overrides it" if env else "")
            + "; `%%agent --replay` / `--fresh` decide one cell"
        )

    def cmd_export_replay(self, args: Any) -> None:
        """Write the recorded turns this notebook uses to a replay file, for a machine without
        the store: those its sessions in this kernel ran or replayed, and those its saved
        outputs name (`replay.saved_keys`), found in the store."""
        notebook = continuity.notebook_path(self.shell)
        if args.path:
            target = Path(args.path)
        elif notebook:
            target = replay.file_for(notebook)
        else:
            raise UsageError(
                "the kernel does not know this notebook's path (a batch run does not say it): "
                "name the file, e.g. `%agent export-replay analysis.agentreplay.json`, and put "
                "it beside the notebook"
            )
        recordings: dict[str, replay.Recording] = {}
        for _, session in self.sessions.items():
            for turn in session.history:
                if turn.replay_key and turn.status == "completed":
                    recordings[turn.replay_key] = replay.Recording.of(session.id, turn)
        unknown = 0
        for key in replay.saved_keys(notebook) if notebook else []:
            if key not in recordings:
                found = replay.find(shared_store(), key)
                if found is None:
                    unknown += 1
                else:
                    recordings[key] = found
        written = replay.export(recordings.values(), target)
        print(
            f"Wrote {target}: {written} recorded turn(s); a run beside it replays them without "
            f"the store ({replay.FILE_ENV}=PATH names it from elsewhere)"
            + (f". {unknown} saved output(s) name turns not in this store" if unknown else "")
        )

    def cmd_close(self, args: Any) -> None:
        session = self.sessions.pop(args.name or self.sessions.current)
        result = _runtime.call_sync(session.close())
        print(f"Closed {session.name!r} (agent exit code {result.exit_code}).")


def _replay_key(session: Session, prompt: str, args: Any) -> str:
    """The replay key of the cell's turn, as the next turn of `session` (`replay.replay_key`)."""
    return replay.replay_key(
        backend=session.backend_name,
        model=session.model,
        prompt=prompt,
        context=tuple(_context_names(args)),
        permission_mode=args.permission_mode or session.permission_mode,
        previous=replay.previous_key(session.history),
    )


def _context_names(args: Any) -> list[str]:
    """The variables ``--context A,B`` attaches."""
    return [n.strip() for n in (args.context or "").split(",") if n.strip()]


def _os_error(exc: OSError) -> str:
    """One line for a file error: what went wrong, not a traceback."""
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename and exc.strerror else reason


def _option_list(parser: argparse.ArgumentParser) -> str:
    options = [
        "/".join(a.option_strings) + (f" {a.metavar or a.dest.upper()}" if a.nargs != 0 else "")
        for a in parser._actions
        if a.option_strings and a.dest != "help"
    ]
    return "valid options: " + ", ".join(options) + " (`%%agent?` explains each)"


def _parse_since(value: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise UsageError(f"--since takes a date like 2026-11-21, not {value!r}") from None


def _when(timestamp: float | None) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else ""


SUBCOMMANDS: dict[str, Callable[[AgentMagics, Any], None]] = {
    "new": AgentMagics.cmd_new,
    "list": AgentMagics.cmd_list,
    "use": AgentMagics.cmd_use,
    "resume": AgentMagics.cmd_resume,
    "fork": AgentMagics.cmd_fork,
    "interrupt": AgentMagics.cmd_interrupt,
    "compact": AgentMagics.cmd_compact,
    "tools": AgentMagics.cmd_tools,
    "stats": AgentMagics.cmd_stats,
    "history": AgentMagics.cmd_history,
    "model": AgentMagics.cmd_model,
    "permissions": AgentMagics.cmd_permissions,
    "title": AgentMagics.cmd_title,
    "export": AgentMagics.cmd_export,
    "close": AgentMagics.cmd_close,
    "export-replay": AgentMagics.cmd_export_replay,
    "replay": AgentMagics.cmd_replay,
    "sessions": AgentMagics.cmd_sessions,
    "show": AgentMagics.cmd_show,
    "rename": AgentMagics.cmd_rename,
    "pin": AgentMagics.cmd_pin,
    "delete": AgentMagics.cmd_delete,
    "agents": AgentMagics.cmd_agents,
}


def _subcommand_parser() -> MagicArgumentParser:
    # The plain formatter: IPython's magic formatter writes usage as reStructuredText ("::")
    # and puts another "%" before the prog.
    plain = argparse.HelpFormatter
    parser = MagicArgumentParser(
        prog="%agent",
        description="Manage agent sessions. A %%agent cell sends a turn.",
        formatter_class=plain,
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")

    def add(name: str, help_text: str) -> Any:
        # argparse %-formats help strings (a literal "%" is written "%%"), not descriptions.
        return sub.add_parser(
            name, help=help_text.replace("%", "%%"), description=help_text, formatter_class=plain
        )

    new = add("new", "Start a new session and make it current.")
    new.add_argument("name", nargs="?", help="Session name (default: session, session-2...).")
    new.add_argument("--backend", "-b")
    new.add_argument("--model", "-m")
    new.add_argument("--permission-mode", "-p", choices=PERMISSION_MODES)
    new.add_argument("--max-budget", type=budget_usd, metavar="USD")
    add("list", "List the sessions of this kernel.")
    add("use", "Make a session current.").add_argument("name")
    resume = add(
        "resume", "Continue a stored session (id or prefix; `%agent sessions`) or a backend id."
    )
    resume.add_argument("id")
    resume.add_argument("--name", help="Name for the resumed session.")
    resume.add_argument("--backend", "-b")
    fork = add("fork", "Fork a session (same history, new id) and make the fork current.")
    fork.add_argument("name", nargs="?", help="Name for the fork.")
    fork.add_argument("--from", dest="source", help="Session to fork (default: current).")
    add("interrupt", "Interrupt a session's running turn.").add_argument("name", nargs="?")
    compact = add("compact", "Compact the current conversation; words after it: what to keep.")
    compact.add_argument("instructions", nargs="*")
    add(
        "tools", "Offer the notebook tools (run_python, inspect_variable...): on | off | show."
    ).add_argument("action", nargs="?")
    add("stats", "Tokens, cost, time and turns of a session.").add_argument("name", nargs="?")
    add("history", "The turns of a session.").add_argument("name", nargs="?")
    model = add("model", "Show or switch the model of the current session.")
    model.add_argument("model", nargs="?")
    model.add_argument("--session", "-s")
    perms = add("permissions", "show | clear (forget 'always allow' rules) | a mode to set.")
    perms.add_argument("action", nargs="?", help="show, clear, " + ", ".join(PERMISSION_MODES))
    perms.add_argument("--session", "-s")
    title = add("title", "Show or set the session title.")
    title.add_argument("title", nargs="*")
    title.add_argument("--session", "-s")
    exporting = add(
        "export",
        "Export a session as Markdown (printed, or to PATH.md) or a notebook (PATH.ipynb).",
    )
    exporting.add_argument("path", nargs="?")
    exporting.add_argument("--session", "-s", help="Session name in this kernel.")
    exporting.add_argument("--id", help="Any stored session (id or prefix).")
    exporting.add_argument("--force", action="store_true", help="Overwrite PATH.ipynb.")
    add("close", "Close a session and end its agent process.").add_argument("name", nargs="?")
    add(
        "replay",
        "Replay unchanged agent cells from the store: on | off | auto (headless only) | show.",
    ).add_argument("action", nargs="?")
    add(
        "export-replay",
        "Write this notebook's recorded turns to PATH (default <notebook>.agentreplay.json), "
        "so a machine without the store replays them.",
    ).add_argument("path", nargs="?")
    listing = add("sessions", "List and search stored sessions (all notebooks and kernels).")
    listing.add_argument("search", nargs="?", help="Text in the title, name or prompts.")
    listing.add_argument("--backend", "-b")
    listing.add_argument("--notebook", help="Notebook path.")
    listing.add_argument("--since", help="Updated on or after this date (YYYY-MM-DD).")
    listing.add_argument("--all", action="store_true", help="All of them, not the last 20.")
    add("show", "Print a stored session's transcript.").add_argument("id")
    rename = add("rename", "Set a stored session's title.")
    rename.add_argument("id")
    rename.add_argument("title", nargs="+")
    pin = add("pin", "Pin a stored session (listed first).")
    pin.add_argument("id")
    pin.add_argument("--unpin", action="store_true")
    add("delete", "Delete a stored session and its turns.").add_argument("id")
    add("agents", "List the ACP agents (--backend acp --agent NAME): installed, or how to.")
    add("help", "Show this help.")
    return parser


def agent_cell_transformer(lines: list[str]) -> list[str]:
    """Rewrite a ``%%agent`` cell into an awaited call, so it runs as an async cell."""
    start = next((i for i, text in enumerate(lines) if text.strip()), len(lines))
    first = lines[start].rstrip("\n") if start < len(lines) else ""
    if first != "%%agent" and not first.startswith("%%agent "):
        return lines
    line = first[len("%%agent") :].strip()
    body = "".join(lines[start + 1 :])
    return [f"await {HANDLE}.run_cell({line!r}, {body!r})\n"]


# Not for IPython's "is this cell complete?" check (a console asks it on every Enter): there
# the cell stays a cell magic, which a blank line completes, so a prompt can span lines.
agent_cell_transformer.has_side_effects = True  # type: ignore[attr-defined]


async def _import_backend(name: str) -> None:
    load_backend(name)


_background: set[asyncio.Task[None]] = set()


def _dollars(cost_usd: float) -> str:
    """A cost for a column: "-" where the backend gave none (an unpriced model: no figure is
    better than a made-up one)."""
    return f"{cost_usd:.4f}" if cost_usd else "-"


def load(shell: Any, *, warm_up: bool = False) -> AgentMagics:
    """Register the magics; ``warm_up``: start the default session's agent in the background
    (`AgentMagics.warm_up`), as ``%load_ext agentkernel`` does."""
    _clients.install(getattr(shell, "kernel", None))
    kernel_tools.install(shell)  # the built-in notebook tools, for every session in the kernel
    magics = AgentMagics(shell)
    shell.register_magics(magics)
    shell.user_ns[HANDLE] = magics
    shell.user_ns_hidden[HANDLE] = magics
    if agent_cell_transformer not in shell.input_transformers_cleanup:
        # First, before IPython's prompt strippers: a prompt keeps its ">>> " lines as typed.
        shell.input_transformers_cleanup.insert(0, agent_cell_transformer)
    if warm_up:
        magics.warm_up()
    return magics


def unload(shell: Any) -> None:
    if agent_cell_transformer in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(agent_cell_transformer)
    magics = shell.user_ns.pop(HANDLE, None)
    shell.user_ns_hidden.pop(HANDLE, None)
    if isinstance(magics, AgentMagics):
        _runtime.call_sync(magics.sessions.close_all())
        if magics._warm is not None:
            _runtime.call_sync(magics._warm.close())
