"""The session store: every session, turn and event in one SQLite file that all kernels share.

Where it lives: the ``AGENTKERNEL_STORE`` environment variable (a path, or ``:memory:``) if set,
else ``<jupyter data dir>/agentkernel/sessions.db``, with the data dir from
`jupyter_core.paths.jupyter_data_dir` (``~/.local/share/jupyter`` on Linux,
``~/Library/Jupyter`` on macOS, ``%APPDATA%\\jupyter`` on Windows, or ``$JUPYTER_DATA_DIR``).
`Store(path)` overrides both; `default_store_path` says which applies.

Several kernels and processes use one file at once, so the database runs in WAL mode (readers
never wait for the writer) with a busy timeout, and every write is a ``BEGIN IMMEDIATE``
transaction: a writer waits for the write lock up front instead of failing half way. Writes
are kept cheap by batching: `Store.append` only buffers the event; a flusher thread writes the
buffer in one transaction when it holds `batch_size` events (200) or its oldest event is
`flush_interval` seconds old (0.1 s, so a process killed with SIGKILL loses at most that last
stretch), and `end_turn`, `flush` and `close` write it at once. So a turn of 10,000 streamed
deltas costs at most 10,000 / 200 = 50 commits plus one per 0.1 s it streamed (a few in
practice), not 10,000. ``synchronous=NORMAL``: a commit survives the process dying at any
moment; only a power cut can lose the last commits.

A turn records the pid, host and process start time of the process that runs it. When a store
is opened, turns left ``running`` by a process of this host that no longer exists are marked
``interrupted``; a turn that a live kernel is still running is left alone.

Nothing reaches the file unredacted: prompts, titles, summaries, errors, metadata and every
event's payload pass through `agentkernel._redact` on the way in. When a whole text block turns
out to hold a secret that its streamed deltas split between them, those deltas are deleted and
the redacted block stands in for them (``secure_delete`` zeroes the deleted bytes).

The schema version is ``PRAGMA user_version``; `MIGRATIONS` takes a database from each version
to the next, and opening a store applies the missing ones.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import errno
import functools
import json
import logging
import math
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from ._redact import Redactor, redactor
from .errors import AgentKernelError
from .events import Event, Other, Usage, event_from_dict

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STORE_ENV",
    "TURN_STATUSES",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreWarning",
    "StoredTurn",
    "TurnStatus",
    "default_store_path",
]

log = logging.getLogger("agentkernel.store")

STORE_ENV = "AGENTKERNEL_STORE"
MEMORY = ":memory:"

TurnStatus = Literal["running", "completed", "interrupted", "error", "refused"]
TURN_STATUSES: tuple[str, ...] = get_args(TurnStatus)


class StoreError(AgentKernelError):
    """The store file cannot be used (for example, a newer agentkernel wrote it)."""


class StoreWarning(UserWarning):
    """The store could not be opened; the session carries on with an in-memory store."""


def default_store_path() -> str:
    """``$AGENTKERNEL_STORE`` if set (a path or ``:memory:``), else the Jupyter data dir's
    ``agentkernel/sessions.db``."""
    configured = os.environ.get(STORE_ENV, "").strip()
    if configured:
        return configured if configured == MEMORY else str(Path(configured).expanduser())
    from jupyter_core.paths import jupyter_data_dir

    return str(Path(jupyter_data_dir()) / "agentkernel" / "sessions.db")


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SessionRecord:
    """One session as stored. ``id`` is agentkernel's own id; ``backend_session_id`` is the
    agent's (Claude session id, Codex thread id...), what resuming the conversation needs."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    backend: str = ""
    name: str | None = None
    backend_session_id: str | None = None
    title: str | None = None
    pinned: bool = False
    kind: str = "main"
    parent_id: str | None = None
    root_id: str | None = None
    spawn_depth: int = 0
    model: str | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    budget_usd: float | None = None
    budget_tokens: int | None = None
    usage: Usage = field(default_factory=Usage)
    summary: str | None = None
    notebook_path: str | None = None
    cwd: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class StoredTurn:
    """One turn as stored. ``pid``/``host`` name the process that ran it (crash recovery)."""

    session_id: str
    number: int
    prompt: str
    status: TurnStatus
    usage: Usage
    started_at: float
    ended_at: float | None
    duration_s: float | None
    model_calls: int
    stop_reason: str | None
    error: str | None
    pid: int | None
    host: str | None


_USAGE_COLUMNS = tuple(f.name for f in dataclasses.fields(Usage))
"""`Usage` is stored as one column per field, in sessions and in turns."""
_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(SessionRecord))
_UPDATABLE = frozenset(_SESSION_FIELDS) - {"id", "created_at", "updated_at"}
_ENVELOPE = ("type", "session_id", "turn", "seq", "timestamp")
"""Event fields kept in their own columns, so the JSON ``data`` holds only the payload."""
_BLOCK_OF_DELTA = {"text_delta": "text", "thinking_delta": "thinking"}
_DELTA_OF_BLOCK = {block: delta for delta, block in _BLOCK_OF_DELTA.items()}


# -- schema ----------------------------------------------------------------------------------

Migration = Callable[[sqlite3.Connection], None]


def _schema_v1(conn: sqlite3.Connection) -> None:
    usage = """input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0"""
    statements = [
        f"""CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            backend TEXT NOT NULL DEFAULT '',
            name TEXT,
            backend_session_id TEXT,
            title TEXT,
            pinned INTEGER NOT NULL DEFAULT 0,
            kind TEXT NOT NULL DEFAULT 'main',
            parent_id TEXT,
            root_id TEXT,
            spawn_depth INTEGER NOT NULL DEFAULT 0,
            model TEXT,
            reasoning_effort TEXT,
            metadata TEXT NOT NULL DEFAULT '{{}}',
            budget_usd REAL,
            budget_tokens INTEGER,
            {usage},
            summary TEXT,
            notebook_path TEXT,
            cwd TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX sessions_by_backend_id ON sessions (backend_session_id)",
        "CREATE INDEX sessions_by_update ON sessions (updated_at)",
        f"""CREATE TABLE turns (
            session_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            prompt TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            {usage},
            started_at REAL NOT NULL,
            ended_at REAL,
            duration_s REAL,
            model_calls INTEGER NOT NULL DEFAULT 0,
            stop_reason TEXT,
            error TEXT,
            pid INTEGER,
            host TEXT,
            pid_started TEXT,
            PRIMARY KEY (session_id, number)
        )""",
        "CREATE INDEX turns_running ON turns (status) WHERE status = 'running'",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            turn INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            timestamp REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_turn ON events (session_id, turn, id)",
    ]
    for statement in statements:
        conn.execute(statement)


MIGRATIONS: list[Migration] = [_schema_v1]
"""``MIGRATIONS[n]`` takes a database from schema version n to n + 1 (version 0: empty file).
Append a function for each schema change; never edit a released one."""
SCHEMA_VERSION = len(MIGRATIONS)


# -- the store -------------------------------------------------------------------------------


class Store:
    """Sessions, turns and events in SQLite. Thread-safe; many processes may share one file.

    ``path``: a file path or ``":memory:"``; None means `default_store_path`. Buffered events
    are written once `batch_size` of them wait, and at the latest `flush_interval` seconds after
    they were appended. Use `open_or_memory` where a broken store must not stop the session.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 200,
        flush_interval: float = 0.1,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = default_store_path() if path is None else os.fspath(path)
        if self.path != MEMORY:
            self.path = str(Path(self.path).expanduser())
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.commits = 0
        """Write transactions committed by this object (batching is measured with it)."""
        self._db = threading.RLock()  # the connection
        self._buffer: collections.deque[Event] = collections.deque()
        """Appended at the right, taken from the left: both atomic, so `append` takes no lock
        in the common case (a lock there starves the flusher thread of a busy appender)."""
        self._lock = threading.Lock()  # guards _oldest, _closed and the flusher's sleep
        self._wake = threading.Condition(self._lock)
        self._oldest = 0.0
        self._closed = False
        self._delta_runs: dict[tuple[str, int, str], int] = {}
        """(session, turn, delta type) -> seq of the first delta of the block being streamed."""
        if self.path != MEMORY:
            _prepare_file(Path(self.path))
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA secure_delete=ON")
            _require_json(self._conn)
            self._migrate()
            self._recover_interrupted_turns()
        except BaseException:
            self._conn.close()
            raise
        self._flusher = threading.Thread(
            target=self._flush_when_due, name="agentkernel-store", daemon=True
        )
        self._flusher.start()
        _open_stores.add(self)

    @classmethod
    def open_or_memory(cls, path: str | os.PathLike[str] | None = None, **options: Any) -> Store:
        """Open the store at `path`; if it is damaged or cannot be written, warn once (naming
        the file and the fix) and return an in-memory store, so the session carries on."""
        target = default_store_path() if path is None else os.fspath(path)
        try:
            return cls(target, **options)
        except (sqlite3.Error, OSError, StoreError) as exc:
            warnings.warn(
                StoreWarning(
                    f"agentkernel cannot use its session store {target} ({exc}). Sessions of "
                    "this kernel are kept in memory only and are lost when it stops. To fix "
                    "it, move that file away if it is damaged, make its folder writable, or "
                    f"set {STORE_ENV} to another file, then restart the kernel."
                ),
                stacklevel=2,
            )
            return cls(MEMORY, **options)

    def __repr__(self) -> str:
        return f"<Store {self.path}>"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions ------------------------------------------------------------------------

    def create_session(self, record: SessionRecord) -> SessionRecord:
        """Store a new session (``created_at``/``updated_at`` default to now); returns it as
        stored, redacted. Raises ValueError if the id exists."""
        now = time.time()
        record = dataclasses.replace(
            record, created_at=record.created_at or now, updated_at=record.updated_at or now
        )
        values = _session_columns(vars(record), redactor())
        placeholders = ", ".join("?" for _ in values)
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO sessions ({', '.join(values)}) VALUES ({placeholders})",
                    tuple(values.values()),
                )
        except sqlite3.IntegrityError:
            raise ValueError(f"a session with id {record.id!r} is already stored") from None
        return self._session(record.id)

    def update_session(self, session_id: str, **fields: Any) -> SessionRecord:
        """Change some fields of a session (any `SessionRecord` field but ``id`` and the
        timestamps); ``updated_at`` becomes now. Returns the updated record."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(
                f"cannot update session field(s) {sorted(unknown)}; updatable: {sorted(_UPDATABLE)}"
            )
        values = _session_columns({**fields, "updated_at": time.time()}, redactor())
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE sessions SET {assignments} WHERE id = ?", (*values.values(), session_id)
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no session {session_id!r} in {self.path}")
        return self._session(session_id)

    def rename(self, session_id: str, title: str) -> None:
        self.update_session(session_id, title=title)

    def pin(self, session_id: str, pinned: bool = True) -> None:
        self.update_session(session_id, pinned=pinned)

    def delete(self, session_id: str) -> None:
        """Delete a session with its turns and events (sessions forked from it are kept)."""
        with self._write(forget=(session_id,)) as conn:
            cursor = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            if cursor.rowcount == 0:
                raise KeyError(f"no session {session_id!r} in {self.path}")
            conn.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM events WHERE session_id = ?", (session_id,))

    def get_session(self, ref: str) -> SessionRecord | None:
        """The session whose id, backend session id, or unique id prefix is `ref`; None if
        there is none. Raises ValueError when a prefix matches several sessions."""
        if not ref:
            return None
        for where, params in (
            ("id = ?", (ref,)),
            ("backend_session_id = ? ORDER BY updated_at DESC", (ref,)),
        ):
            rows = self._query(f"SELECT * FROM sessions WHERE {where} LIMIT 1", params)
            if rows:
                return _session_record(rows[0])
        rows = self._query("SELECT * FROM sessions WHERE substr(id, 1, ?) = ?", (len(ref), ref))
        if len(rows) > 1:
            ids = ", ".join(row["id"] for row in rows[:5])
            raise ValueError(
                f"{ref!r} is the start of {len(rows)} session ids ({ids}); give more characters"
            )
        return _session_record(rows[0]) if rows else None

    def list_sessions(
        self,
        search: str | None = None,
        backend: str | None = None,
        notebook: str | None = None,
        since: float | datetime | None = None,
        pinned: bool | None = None,
        limit: int | None = 50,
        parent: str | None = None,
    ) -> list[SessionRecord]:
        """Sessions, pinned first, then most recently updated. `search` matches (case-blind)
        the title, name, summary, id and the prompts; `since` is on ``updated_at``; `parent`
        keeps the children (forks, sub-agents) of one session."""
        clauses: list[str] = []
        params: list[Any] = []
        if search:
            like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            columns = ("title", "name", "summary", "id")
            clauses.append(
                "("
                + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns)
                + " OR EXISTS (SELECT 1 FROM turns WHERE turns.session_id = sessions.id"
                " AND turns.prompt LIKE ? ESCAPE '\\'))"
            )
            params += [like] * (len(columns) + 1)
        filters = (("backend", backend), ("notebook_path", notebook), ("parent_id", parent))
        for column, value in filters:
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("updated_at >= ?")
            params.append(since.timestamp() if isinstance(since, datetime) else since)
        if pinned is not None:
            clauses.append("pinned = ?")
            params.append(int(pinned))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT * FROM sessions {where} ORDER BY pinned DESC, updated_at DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [_session_record(row) for row in rows]

    # -- turns and events ----------------------------------------------------------------

    def start_turn(self, session_id: str, number: int, prompt: str) -> None:
        """Record that this process runs turn `number` of the session (status ``running``)."""
        now = time.time()
        pid = os.getpid()
        with self._write() as conn:
            conn.execute(
                """INSERT INTO turns (session_id, number, prompt, status, started_at, pid, host,
                    pid_started) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)
                ON CONFLICT (session_id, number) DO UPDATE SET prompt = excluded.prompt,
                    status = 'running', started_at = excluded.started_at, ended_at = NULL,
                    error = NULL, pid = excluded.pid, host = excluded.host,
                    pid_started = excluded.pid_started""",
                (session_id, number, redactor().text(prompt), now, pid, _HOST, _process_start(pid)),
            )
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))

    def append(self, event: Event) -> None:
        """Buffer an event (stamped with its session, turn and seq) for the next batch.

        Never waits for the disk or for another process's write lock: the flusher thread
        writes, so the session's event loop is not held up by a busy store."""
        if not event.session_id:
            raise ValueError(f"cannot store an event without a session id: {event!r}")
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        self._buffer.append(event)
        size = len(self._buffer)
        if size == 1 or size % self.batch_size == 0:
            with self._wake:
                if size == 1:
                    self._oldest = time.monotonic()
                self._wake.notify()

    def end_turn(
        self,
        session_id: str,
        number: int,
        status: TurnStatus,
        usage: Usage | None = None,
        duration_s: float | None = None,
        model_calls: int = 0,
        error: str | None = None,
        stop_reason: str | None = None,
    ) -> None:
        """Record how the turn ended and add its usage to the session's. Every event appended
        before this call is written in the same transaction: durable when this returns."""
        if status not in TURN_STATUSES or status == "running":
            raise ValueError(f"a turn ends as one of {TURN_STATUSES[1:]}, not {status!r}")
        usage = usage or Usage()
        now = time.time()
        with self._write(forget=(session_id, number)) as conn:
            before = conn.execute(
                f"SELECT {', '.join(_USAGE_COLUMNS)} FROM turns WHERE session_id = ? "
                "AND number = ?",
                (session_id, number),
            ).fetchone()
            turn_usage = tuple(getattr(usage, c) for c in _USAGE_COLUMNS)
            conn.execute(
                """INSERT INTO turns (session_id, number, status, started_at)
                VALUES (?, ?, ?, ?) ON CONFLICT (session_id, number) DO NOTHING""",
                (session_id, number, status, now - (duration_s or 0.0)),
            )
            conn.execute(
                f"""UPDATE turns SET status = ?, ended_at = ?, duration_s = ?, model_calls = ?,
                    error = ?, stop_reason = ?, {", ".join(f"{c} = ?" for c in _USAGE_COLUMNS)}
                WHERE session_id = ? AND number = ?""",
                (
                    status,
                    now,
                    duration_s,
                    model_calls,
                    None if error is None else redactor().text(error),
                    stop_reason,
                    *turn_usage,
                    session_id,
                    number,
                ),
            )
            # Add the difference, so ending a turn twice does not count its usage twice.
            added = [
                new - old
                for new, old in zip(turn_usage, before or (0,) * len(turn_usage), strict=True)
            ]
            conn.execute(
                f"""UPDATE sessions SET updated_at = ?,
                    {", ".join(f"{c} = {c} + ?" for c in _USAGE_COLUMNS)} WHERE id = ?""",
                (now, *added, session_id),
            )

    def turns(self, session_id: str) -> list[StoredTurn]:
        rows = self._query(
            "SELECT * FROM turns WHERE session_id = ? ORDER BY number", (session_id,)
        )
        return [_stored_turn(row) for row in rows]

    def events(self, session_id: str, turn: int | None = None) -> list[Event]:
        """The session's events (of one turn, if given) in the order they were appended."""
        self.flush()
        sql = "SELECT session_id, turn, seq, type, timestamp, data FROM events WHERE session_id = ?"
        params: tuple[Any, ...] = (session_id,)
        if turn is not None:
            sql += " AND turn = ?"
            params += (turn,)
        with self._db:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [_event(row) for row in rows]

    def transcript(self, session_id: str) -> str:
        """The session as plain text: per turn, its prompt and the turn as `render.text`
        draws it (what the agent said and did, no times or costs)."""
        from . import render  # only here: opening a store must not need the renderer

        record = self._session(session_id)
        by_turn: dict[int, list[Event]] = {}
        for event in self.events(record.id):
            by_turn.setdefault(event.turn, []).append(event)
        turns = {t.number: t for t in self.turns(record.id)}
        parts = [f"# {record.title or record.name or record.id}"]
        for number in sorted(set(turns) | set(by_turn)):
            stored = turns.get(number)
            if stored is None:
                parts.append(f"## Turn {number}")
            else:
                prompt = "\n".join(f"> {line}" for line in stored.prompt.splitlines())
                parts.append(f"## Turn {number} ({stored.status})\n\n{prompt}")
            parts.append(render.text(by_turn.get(number, [])).strip())
            if stored is not None and stored.error:
                parts.append(f"Error: {stored.error}")
        return "\n\n".join(part for part in parts if part) + "\n"

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered event now; returns once all events appended before the call
        are committed. An empty buffer costs no transaction."""
        with self._db:  # waits for a batch the flusher thread may be writing
            if not self._buffer:
                return
            with self._write():
                pass

    def close(self) -> None:
        """Write what is buffered, stop the flusher thread and close the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify()
        self._flusher.join()
        try:
            self.flush()
        finally:
            with self._db:
                self._conn.close()
            _open_stores.discard(self)

    @contextlib.contextmanager
    def _write(self, forget: tuple[str | int, ...] = ()) -> Iterator[sqlite3.Connection]:
        """One write transaction, carrying every buffered event first: a direct write never
        overtakes events appended before it, and `end_turn` is a single commit. If the
        transaction fails, the events go back to the buffer for the next attempt.

        `forget`: a (session,) or (session, turn) whose streamed-delta tracking is over."""
        with self._db:
            buffer = self._buffer
            batch = [buffer.popleft() for _ in range(len(buffer))]
            runs = dict(self._delta_runs)
            rows, purges = _encode(batch, redactor(), runs)  # before taking the write lock
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    if batch:  # (the migration that creates the table runs in here too)
                        self._conn.execute(_INSERT_EVENTS, (rows,))
                    if purges:
                        self._conn.executemany(
                            "DELETE FROM events WHERE session_id = ? AND turn = ? AND type = ? "
                            "AND seq >= ? AND seq < ?",
                            purges,
                        )
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # some errors already rolled it back
                        self._conn.execute("ROLLBACK")
                    raise
            except BaseException:
                buffer.extendleft(reversed(batch))
                with self._lock:
                    self._oldest = time.monotonic()
                raise
            if forget:
                runs = {k: v for k, v in runs.items() if k[: len(forget)] != forget}
            self._delta_runs = runs
            self.commits += 1

    def _flush_when_due(self) -> None:
        """The flusher thread: writes the buffer when it is full or its oldest event is due."""
        failing = False
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    if len(self._buffer) >= self.batch_size:
                        break
                    if self._buffer:
                        due_in = self._oldest + self.flush_interval - time.monotonic()
                        if due_in <= 0:
                            break
                        self._wake.wait(due_in)
                    else:
                        self._wake.wait()
            try:
                with self._write():
                    pass
            except Exception as exc:  # the events stay buffered; retry after an interval
                if not failing:
                    log.warning(
                        "cannot write to the session store %s (%s); retrying", self.path, exc
                    )
                failing = True
                with self._lock:
                    self._wake.wait(max(self.flush_interval, 0.05))
            else:
                failing = False

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._db:
            cursor = self._conn.cursor()
            cursor.row_factory = sqlite3.Row
            return cursor.execute(sql, params).fetchall()

    def _session(self, session_id: str) -> SessionRecord:
        record = self.get_session(session_id)
        if record is None:
            raise KeyError(f"no session {session_id!r} in {self.path}")
        return record

    # -- opening -------------------------------------------------------------------------

    def _migrate(self) -> None:
        latest = len(MIGRATIONS)
        if self._schema_version(self._conn) == latest:
            return
        with self._write() as conn:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = self._schema_version(conn)
            for migration in MIGRATIONS[version:]:
                migration(conn)
            conn.execute(f"PRAGMA user_version = {latest}")

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the session store {self.path} has schema version {version}, newer than this "
                f"agentkernel understands ({len(MIGRATIONS)}): upgrade agentkernel, or set "
                f"{STORE_ENV} to another file"
            )
        return version

    def _recover_interrupted_turns(self) -> None:
        running = self._query(
            "SELECT session_id, number, pid, pid_started FROM turns "
            "WHERE status = 'running' AND host = ?",
            (_HOST,),
        )
        orphans = [
            (row["session_id"], row["number"], row["pid"])
            for row in running
            if row["pid"] is not None and not _process_alive(row["pid"], row["pid_started"])
        ]
        if not orphans:
            return
        with self._write() as conn:
            for session_id, number, pid in orphans:
                conn.execute(
                    """UPDATE turns SET status = 'interrupted', error = ?,
                        ended_at = COALESCE((SELECT MAX(timestamp) FROM events
                            WHERE session_id = turns.session_id AND turn = turns.number),
                            started_at)
                    WHERE session_id = ? AND number = ? AND status = 'running'""",
                    (
                        f"the process running this turn (pid {pid} on {_HOST}) ended before it",
                        session_id,
                        number,
                    ),
                )
        log.info("marked %d turn(s) of ended processes as interrupted", len(orphans))


def _require_json(conn: sqlite3.Connection) -> None:
    """Batches are inserted through SQLite's JSON functions (built in since SQLite 3.38, and
    compiled into the SQLite of common Python builds before that)."""
    try:
        conn.execute("SELECT json_valid('[]')")
    except sqlite3.OperationalError:
        raise StoreError(
            f"this Python's SQLite {sqlite3.sqlite_version} lacks the JSON functions the "
            "session store needs; use a Python built with SQLite 3.38 or newer"
        ) from None


def _prepare_file(path: Path) -> None:
    """Create the folder; refuse a file or folder we cannot write to now rather than at the
    first flush (SQLite opens read-only files without complaint). WAL also writes two files
    next to the database, hence the folder check."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in (path, path.parent):
        if target.exists() and not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable", str(target))


# -- encoding --------------------------------------------------------------------------------


def _session_columns(fields: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    """Column values for these `SessionRecord` fields, redacted and JSON-encoded."""
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "usage":
            columns.update((c, getattr(value, c)) for c in _USAGE_COLUMNS)
        elif name == "metadata":
            columns[name] = json.dumps(redact.obj(value or {}), default=str)
        elif name in ("title", "summary") and value is not None:
            columns[name] = redact.text(value)
        elif name == "pinned":
            columns[name] = int(bool(value))
        else:
            columns[name] = value
    return columns


def _session_record(row: sqlite3.Row) -> SessionRecord:
    values = {name: row[name] for name in _SESSION_FIELDS if name != "usage"}
    values["pinned"] = bool(values["pinned"])
    values["metadata"] = json.loads(values["metadata"])
    return SessionRecord(**values, usage=Usage(*(row[c] for c in _USAGE_COLUMNS)))


def _stored_turn(row: sqlite3.Row) -> StoredTurn:
    names = [f.name for f in dataclasses.fields(StoredTurn) if f.name != "usage"]
    return StoredTurn(
        **{name: row[name] for name in names}, usage=Usage(*(row[c] for c in _USAGE_COLUMNS))
    )


_INSERT_EVENTS = """INSERT INTO events (session_id, turn, seq, type, timestamp, data)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]')
    FROM json_each(?)"""
"""The whole batch in one statement, as one JSON array of rows.

Why not `executemany`: it releases and retakes the GIL around every row, and each retake
waits up to the interpreter's switch interval (5 ms) while another thread runs Python code,
such as the session loop streaming deltas; a batch of 1,000 rows then took seconds. One
statement is a handful of GIL round trips whatever the batch size, and no slower."""


def _encode(
    batch: list[Event], redact: Redactor, runs: dict[tuple[str, int, str], int]
) -> tuple[str, list[tuple[Any, ...]]]:
    """The batch as the JSON array `_INSERT_EVENTS` takes, and the runs of deltas to delete
    because the block they streamed held a secret that only the whole block revealed.
    Updates `runs` in place."""
    rows: list[list[Any]] = []
    purges: list[tuple[Any, ...]] = []
    for event in batch:
        payload = {name: getattr(event, name) for name in _payload_fields(type(event))}
        clean = redact.obj(payload)
        key = (event.session_id, event.turn, event.type)
        if event.type in _BLOCK_OF_DELTA:
            runs.setdefault(key, event.seq)
        elif event.type in _DELTA_OF_BLOCK:
            delta = _DELTA_OF_BLOCK[event.type]
            first = runs.pop((event.session_id, event.turn, delta), None)
            if first is not None and clean.get("text") != payload.get("text"):
                purges.append((event.session_id, event.turn, delta, first, event.seq))
        rows.append([event.session_id, event.turn, event.seq, event.type, event.timestamp, clean])
    try:
        return _ENCODER.encode(rows), purges
    except ValueError:  # NaN or infinity somewhere, which JSON cannot hold: keep them as text
        return _ENCODER.encode(_finite(rows)), purges


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@functools.cache
def _payload_fields(cls: type[Event]) -> tuple[str, ...]:
    """The fields `Event.to_dict` writes, minus the envelope kept in columns. Read directly
    (with `_json_default` for nested dataclasses such as `Usage`) because ``to_dict`` spends
    most of its time in `dataclasses.fields`, and every streamed delta comes through here."""
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if not f.name.startswith("_") and f.name not in _ENVELOPE
    )


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _finite(dataclasses.asdict(value))
    return str(value)  # anything else unusual is kept readable rather than failing the batch


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"), allow_nan=False)
"""Built once: `json.dumps` with options builds a new encoder per call."""


def _event(row: tuple[Any, ...]) -> Event:
    session_id, turn, seq, kind, timestamp, data = row
    envelope = {"session_id": session_id, "turn": turn, "seq": seq, "timestamp": timestamp}
    payload = json.loads(data)
    try:
        return event_from_dict({**payload, **envelope, "type": kind})
    except TypeError:  # written by a version whose fields differ: keep it whole, not crash
        return Other(kind=kind, data=payload, **envelope)


# -- processes -------------------------------------------------------------------------------

_HOST = socket.gethostname()


def _process_start(pid: int) -> str | None:
    """When the process started (Linux, from /proc), so a reused pid is not mistaken for the
    process that ran a turn; None elsewhere."""
    stat = _linux_stat(pid)
    return stat[1] if stat else None


def _linux_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from ``/proc/<pid>/stat``; None if unavailable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _process_alive(pid: int, started: str | None) -> bool:
    if sys.platform.startswith("linux"):
        stat = _linux_stat(pid)
        return (
            stat is not None
            and stat[0] not in ("Z", "X")  # a zombie has already died
            and (started is None or stat[1] == started)
        )
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    """`os.kill(pid, 0)` would *terminate* the process on Windows, so ask the kernel32 API."""
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return bool(kernel32.GetLastError() == 5)  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
    finally:
        kernel32.CloseHandle(handle)


# -- exit ------------------------------------------------------------------------------------

_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Write what is buffered when the interpreter exits. Stores stay open: the runtime's own
    exit hooks may still end turns after this runs."""
    for store in list(_open_stores):
        with contextlib.suppress(Exception):
            store.flush()
