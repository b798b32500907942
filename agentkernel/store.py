"""The session store: every session, turn and event in one SQLite file that all kernels share.

Where it lives: the ``AGENTKERNEL_STORE`` environment variable (a path, or ``:memory:``) if set,
else ``<jupyter data dir>/agentkernel/sessions.db``, with the data dir from
`jupyter_core.paths.jupyter_data_dir` (``~/.local/share/jupyter`` on Linux,
``~/Library/Jupyter`` on macOS, ``%APPDATA%\\jupyter`` on Windows, or ``$JUPYTER_DATA_DIR``).
`Store(path)` overrides both; `default_store_path` says which applies.

Several kernels and processes use one file at once, so the database runs in WAL mode (readers
never wait for the writer) with a busy timeout, and every write is a ``BEGIN IMMEDIATE``
transaction: a writer waits for the write lock up front instead of failing half way. Setting
up WAL and the schema on a fresh file does not wait for the busy timeout by itself (SQLite
answers "database is locked" at once while another process is creating the file), so opening
retries within the busy timeout: kernels started together all open the file.

Writes are kept cheap by batching: `Store.append` only queues the event; a flusher thread
writes the queue in one transaction when it holds `batch_size` events (1,000) or its oldest
event is `flush_interval` seconds old (0.1 s, so a process killed with SIGKILL loses at most that
last stretch), and the other writes (`update_session`, ...) write it at once, with themselves.
A session's own turn writes (`start_turn` and `end_turn` with ``wait=False``) are queued in
order too, so its event loop never waits on the disk: the start of a turn goes in with the
turn's first batch, and the end of a turn makes the flusher write 5 ms later. So a turn of 10,000
streamed deltas costs at most 10,000 / 1,000 = 10 commits plus one per 0.1 s it streamed, not
10,000; and the flusher thread wakes as rarely (each wake-up takes the GIL from the thread
streaming the deltas). Within a batch, a run of consecutive deltas of one stream is one row
(every delta's seq, timestamp and text inside it; `events` returns them one by one again), so
the rows a turn costs do not grow with its deltas either. ``synchronous=NORMAL``: a commit
survives the process dying at any moment; only a power cut can lose the last commits.

When the file cannot be written (locked past the timeout, disk full, I/O error), nothing is
dropped: every write stays queued, in order, and is retried with a growing pause (reconnecting
to the file), while the session carries on. The write that found the problem raises
`StoreWriteError`, which says what is not stored yet (a queued write that finds it sets
`problem`, which the session reports as a `StoreWarning`); `Store.healthy` and `Store.problem` tell
the state, and the next successful write clears it.

A turn records the pid, host and process start time of the process that runs it. When a store
is opened, turns left ``running`` by a process of this host that no longer exists are marked
``interrupted``; a turn that a live kernel is still running is left alone.

Secrets: what the store's own API takes (prompts, titles, summaries, errors, metadata) is
redacted here, by `agentkernel._redact`. Events are stored as given: the session redacts each
one as it is emitted, and streamed text as a stream (`_redact.StreamRedactor`), which is the
only place a secret split across deltas can be caught. Text is stored whole; a lone surrogate
(what a file name decoded with ``surrogateescape`` holds), which SQLite text cannot hold, is
kept as written inside events and becomes U+FFFD in the other columns (`utf8_text`).

The schema version is ``PRAGMA user_version``; `MIGRATIONS` takes a database from each version
to the next, and opening a store applies the missing ones.
"""

from __future__ import annotations

import array
import atexit
import base64
import collections
import contextlib
import dataclasses
import errno
import functools
import json
import logging
import math
import os
import random
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

from ._event_log import EventLog
from ._redact import Redactor, redactor
from .errors import AgentKernelError
from .events import Event, Other, TextDelta, ThinkingDelta, Usage, event_from_dict

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STORE_ENV",
    "TURN_STATUSES",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreWarning",
    "StoreWriteError",
    "StoredTurn",
    "TurnStatus",
    "default_store_path",
    "utf8_text",
]

_Events = EventLog | tuple[Event, ...]
"""Events queued together: a session's batch as it hands it over, or what `Store.extend` got."""

log = logging.getLogger("agentkernel.store")

STORE_ENV = "AGENTKERNEL_STORE"
MEMORY = ":memory:"
END_DELAY_S = 0.005
"""How long after a turn ends its end is written (with the events still queued). Not at once:
the turn's caller is just then waking on another thread to take the turn's last events, and a
write of the flusher thread's at that moment holds the interpreter (the GIL) it waits for: the
last event reached `stream()` 0.96 ms after the turn ended with it, 0.2 ms without a store."""

TurnStatus = Literal["running", "completed", "interrupted", "error", "refused"]
TURN_STATUSES: tuple[str, ...] = get_args(TurnStatus)


class StoreError(AgentKernelError):
    """The store file cannot be used (for example, a newer agentkernel wrote it)."""


class StoreWriteError(StoreError):
    """A write did not reach the file (locked, full, I/O error...). Nothing is dropped: the
    write stays queued and is retried; the message says what is not stored yet."""


class StoreWarning(UserWarning):
    """The store could not be opened (the session carries on with an in-memory store), or
    could not be written (the writes are queued and retried)."""


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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``SessionRecord.from_dict`` gives back an equal record)."""
        data = dataclasses.asdict(self)
        data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionRecord:
        """A record from `to_dict` output; unknown keys (a newer version's) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        if isinstance(fields.get("usage"), dict):
            fields["usage"] = Usage(**fields["usage"])
        return cls(**fields)


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
    replay_key: str | None = None
    """What the turn was asked, as a digest (`agentkernel.replay`): an unchanged notebook cell
    finds its recorded turn by it."""
    replayed_from: str | None = None
    """``SESSION_ID:TURN`` of the recorded turn this one replays (None: the agent ran it)."""


_USAGE_COLUMNS = tuple(f.name for f in dataclasses.fields(Usage))
"""`Usage` is stored as one column per field, in sessions and in turns."""
_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(SessionRecord))
_UPDATABLE = frozenset(_SESSION_FIELDS) - {"id", "created_at", "updated_at"}
_ENVELOPE = ("type", "session_id", "turn", "seq", "timestamp")
"""Event fields kept in their own columns, so the JSON ``data`` holds only the payload."""


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


def _schema_v2(conn: sqlite3.Connection) -> None:
    """Replay keys on turns (`agentkernel.replay`), indexed: a cell's lookup is one probe."""
    conn.execute("ALTER TABLE turns ADD COLUMN replay_key TEXT")
    conn.execute("ALTER TABLE turns ADD COLUMN replayed_from TEXT")
    conn.execute(
        "CREATE INDEX turns_by_replay_key ON turns (replay_key, started_at) "
        "WHERE replay_key IS NOT NULL"
    )


MIGRATIONS: list[Migration] = [_schema_v1, _schema_v2]
"""``MIGRATIONS[n]`` takes a database from schema version n to n + 1 (version 0: empty file).
Append a function for each schema change; never edit a released one."""
SCHEMA_VERSION = len(MIGRATIONS)


# -- the store -------------------------------------------------------------------------------


class Store:
    """Sessions, turns and events in SQLite. Thread-safe; many processes may share one file.

    ``path``: a file path or ``":memory:"``; None means `default_store_path`. Queued events
    are written once `batch_size` of them wait, and at the latest `flush_interval` seconds after
    they were appended. Use `open_or_memory` where a broken store must not stop the session.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.1,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = default_store_path() if path is None else os.fspath(path)
        if self.path != MEMORY:
            self.path = str(Path(self.path).expanduser())
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.busy_timeout = busy_timeout
        self.commits = 0
        """Write transactions committed by this object (batching is measured with it)."""
        self.problem: str | None = None
        """Why writes fail and what is not stored yet; None while the store works."""
        self._db = threading.RLock()  # the connection, `problem` and the retry schedule
        self._queue: collections.deque[_Events | _Write] = collections.deque()
        """Writes in the order they were made, events a batch (one `extend`) an item. Appended at
        the right, taken from the left: both atomic, so `append` takes no lock in the common
        case (a lock there starves the flusher thread of a busy appender)."""
        self._queued = 0
        """Events queued (about: an `extend` racing a write may go uncounted, which only delays
        its batch to `flush_interval`)."""
        self._lock = threading.Lock()  # guards _oldest, _closed and the flusher's sleep
        self._wake = threading.Condition(self._lock)
        self._oldest = 0.0
        self._due_at: float | None = None
        """When a queued write asked to be written soon (the end of a turn) is due."""
        self._closed = False
        self._retry_at = 0.0
        self._backoff = 0.0
        self._reconnect = False
        if self.path != MEMORY:
            _prepare_file(Path(self.path))
        self._conn = self._connect()
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

    @property
    def healthy(self) -> bool:
        """Whether the last write reached the file (False: writes are queued and retried)."""
        return self.problem is None

    # -- sessions ------------------------------------------------------------------------

    def create_session(self, record: SessionRecord) -> SessionRecord:
        """Store a new session (``created_at``/``updated_at`` default to now); returns it as
        stored, redacted. Raises ValueError if the id exists."""
        now = time.time()
        record = dataclasses.replace(
            record, created_at=record.created_at or now, updated_at=record.updated_at or now
        )
        values = _session_columns(vars(record), redactor())
        sql = f"INSERT INTO sessions ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})"

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(sql, tuple(values.values()))
            except sqlite3.IntegrityError:
                raise ValueError(f"a session with id {record.id!r} is already stored") from None

        self._write(_Write(f"the new session {record.id[:8]}", insert))
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

        def update(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                f"UPDATE sessions SET {assignments} WHERE id = ?", (*values.values(), session_id)
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no session {session_id!r} in {self.path}")

        changed = ", ".join(sorted(fields))
        self._write(_Write(f"the change of {changed} of session {session_id[:8]}", update))
        return self._session(session_id)

    def rename(self, session_id: str, title: str) -> None:
        self.update_session(session_id, title=title)

    def pin(self, session_id: str, pinned: bool = True) -> None:
        self.update_session(session_id, pinned=pinned)

    def delete(self, session_id: str) -> None:
        """Delete a session with its turns and events (sessions forked from it are kept)."""

        def delete(conn: sqlite3.Connection) -> None:
            cursor = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            if cursor.rowcount == 0:
                raise KeyError(f"no session {session_id!r} in {self.path}")
            conn.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM events WHERE session_id = ?", (session_id,))

        self._write(_Write(f"the deletion of session {session_id[:8]}", delete))

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

    def start_turn(self, session_id: str, number: int, prompt: str, *, wait: bool = True) -> None:
        """Record that this process runs turn `number` of the session (status ``running``).
        ``wait=False`` queues the write behind the queued events instead (the flusher thread
        writes it with the turn's first batch); a failure is then recorded in `problem`, not
        raised."""
        now = time.time()
        pid = os.getpid()
        row = (session_id, number, _column_text(redactor().text(prompt)), now, pid, _HOST)
        started = _own_start(pid)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                """INSERT INTO turns (session_id, number, prompt, status, started_at, pid, host,
                    pid_started) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)
                ON CONFLICT (session_id, number) DO UPDATE SET prompt = excluded.prompt,
                    status = 'running', started_at = excluded.started_at, ended_at = NULL,
                    error = NULL, pid = excluded.pid, host = excluded.host,
                    pid_started = excluded.pid_started""",
                (*row, started),
            )
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))

        write = _Write(f"the start of turn {number} of session {session_id[:8]}", insert)
        if wait:
            self._write(write)
        else:
            self._enqueue(write, soon=False)

    def append(self, event: Event) -> None:
        """Queue an event (stamped with its session, turn and seq) for the next batch. It is
        stored as given: redacting it is the emitter's job (see the module docstring).

        Never waits for the disk or for another process's write lock: the flusher thread
        writes, so the session's event loop is not held up by a busy store."""
        self.extend((event,))

    def extend(self, events: Sequence[Event]) -> None:
        """`append` each of `events`, in order, at the cost of one. An `EventLog` (how the
        session hands over a batch) waits as it is: its deltas as field dicts, which the
        garbage collector does not track, so the thousands a second of a streamed reply do
        not set off walks of the whole heap while they wait (see `agentkernel._event_log`)."""
        batch: _Events
        if type(events) is EventLog:
            batch = events
            for index, (cls, item) in enumerate(batch.entries()):
                if not (item["session_id"] if cls else item.session_id):
                    raise ValueError(
                        f"cannot store an event without a session id: {batch[index]!r}"
                    )
        else:
            batch = tuple(events)
            for event in batch:
                if not event.session_id:
                    raise ValueError(f"cannot store an event without a session id: {event!r}")
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        if not batch:
            return
        queue = self._queue
        first = not queue
        queue.append(batch)
        before = self._queued
        self._queued = after = before + len(batch)
        if first or after // self.batch_size > before // self.batch_size:
            with self._wake:
                if first:
                    self._oldest = time.monotonic()
                self._wake.notify()

    def _enqueue(self, write: _Write, *, soon: bool) -> None:
        """Queue `write` behind what is queued, for the flusher thread: written with the next
        batch, or `END_DELAY_S` from now if `soon` (a failing store is then retried then too,
        as a write made by the caller would be)."""
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        queue = self._queue
        first = not queue
        queue.append(write)
        with self._wake:
            if first:
                self._oldest = time.monotonic()
            if soon:
                due = time.monotonic() + END_DELAY_S
                self._due_at = due if self._due_at is None else min(self._due_at, due)
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
        *,
        wait: bool = True,
    ) -> None:
        """Record how the turn ended and add its usage to the session's. Every event appended
        before this call is written in the same transaction: durable when this returns.
        ``wait=False`` hands that transaction to the flusher thread, which writes it
        `END_DELAY_S` later (retrying a failing store then too) while the caller carries on;
        a failure is then recorded in `problem`, not raised. Reads (`turns`, `events`, ...)
        write what is queued first, so they see it either way."""
        if status not in TURN_STATUSES or status == "running":
            raise ValueError(f"a turn ends as one of {TURN_STATUSES[1:]}, not {status!r}")
        usage = usage or Usage()
        now = time.time()
        turn_usage = tuple(getattr(usage, c) for c in _USAGE_COLUMNS)
        error = None if error is None else _column_text(redactor().text(error))
        stop_reason = None if stop_reason is None else _column_text(stop_reason)

        def record(conn: sqlite3.Connection) -> None:
            before = conn.execute(
                f"SELECT {', '.join(_USAGE_COLUMNS)} FROM turns WHERE session_id = ? "
                "AND number = ?",
                (session_id, number),
            ).fetchone()
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
                    error,
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

        write = _Write(f"the end of turn {number} of session {session_id[:8]}", record)
        if wait:
            self._write(write)
        else:
            self._enqueue(write, soon=True)

    def set_replay_key(
        self, session_id: str, number: int, key: str, replayed_from: str | None = None
    ) -> None:
        """Record the replay key of a turn (and, for a replayed turn, which one it replays).
        Queued in order with the turn's other writes, so it lands after its `start_turn`."""

        def record(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE turns SET replay_key = ?, replayed_from = ? "
                "WHERE session_id = ? AND number = ?",
                (key, replayed_from, session_id, number),
            )

        self._write(_Write(f"the replay key of turn {number} of session {session_id[:8]}", record))

    def drop_replayed_turn(self, session_id: str, number: int) -> None:
        """Delete a replayed turn and its events: a person asked for a fresh answer in its
        place (`Session.take_back_replay`). A turn the agent ran is never deleted here."""

        def drop(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "DELETE FROM turns WHERE session_id = ? AND number = ? "
                "AND replayed_from IS NOT NULL",
                (session_id, number),
            )
            if cursor.rowcount:
                conn.execute(
                    "DELETE FROM events WHERE session_id = ? AND turn = ?", (session_id, number)
                )

        self._write(_Write(f"the replayed turn {number} of session {session_id[:8]}", drop))

    def find_replay(self, key: str) -> StoredTurn | None:
        """The newest completed turn the agent itself ran with this replay key (a replay of a
        turn is never the source of another: they all point at the original)."""
        self.flush()
        rows = self._query(
            "SELECT * FROM turns WHERE replay_key = ? AND status = 'completed' "
            "AND replayed_from IS NULL ORDER BY started_at DESC LIMIT 1",
            (key,),
        )
        return _stored_turn(rows[0]) if rows else None

    def turns(self, session_id: str) -> list[StoredTurn]:
        rows = self._query(
            "SELECT * FROM turns WHERE session_id = ? ORDER BY number", (session_id,)
        )
        return [_stored_turn(row) for row in rows]

    def events(self, session_id: str, turn: int | None = None) -> list[Event]:
        """The session's events (of one turn, if given) in the order they were appended.
        Raises `StoreWriteError` if queued events cannot be written first."""
        self.flush()
        sql = "SELECT session_id, turn, seq, type, timestamp, data FROM events WHERE session_id = ?"
        params: tuple[Any, ...] = (session_id,)
        if turn is not None:
            sql += " AND turn = ?"
            params += (turn,)
        with self._db:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return _rows_to_events(rows)

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything queued now; returns once all writes made before the call are
        committed (an empty queue costs no transaction). Raises `StoreWriteError` if the file
        cannot be written: the writes stay queued and are retried."""
        with self._db:  # waits for a batch the flusher thread may be writing
            if self._queue:
                self._write()

    def close(self) -> None:
        """Write what is queued, stop the flusher thread and close the file. Idempotent.
        Raises `StoreWriteError` (after closing) if queued writes could not be written: they
        are lost."""
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

    def _write(self, write: _Write | None = None) -> None:
        """Write everything queued, then `write`, in one transaction.

        If the store fails (locked, full, I/O error...), everything stays queued in order,
        `write` included, to be retried by the flusher thread, and `StoreWriteError` says what
        is not stored. If `write` itself is wrong (a missing session: KeyError; a duplicate:
        ValueError), only it is undone and its error raised."""
        with self._db:
            queue = self._queue
            items = [queue.popleft() for _ in range(len(queue))]
            self._queued = 0
            if write is not None:
                items.append(write)
            try:
                wrong = self._commit(items, write)
            except BaseException as exc:
                queue.extendleft(reversed(items))
                self._queued += sum(len(item) for item in items if not isinstance(item, _Write))
                with self._wake:
                    self._oldest = time.monotonic()
                    self._wake.notify()  # the flusher thread retries them
                if isinstance(exc, (sqlite3.Error, OSError, StoreError)):
                    raise self._failed(exc) from exc
                raise
            self.commits += 1
            if self.problem is not None:
                log.info("the session store %s works again: all queued writes are in", self.path)
                self.problem, self._backoff = None, 0.0
        if wrong is not None:
            raise wrong

    def _commit(self, items: list[_Events | _Write], write: _Write | None) -> Exception | None:
        """One transaction of `items`; returns the error of `write` if it was wrong. A queued
        write found wrong on a retry is dropped with a log message: its caller is long gone."""
        if self._reconnect:  # a fresh connection first: the old one may be broken
            fresh = self._connect()
            self._conn.close()
            self._conn, self._reconnect = fresh, False
        runs = [run if isinstance(run, _Write) else _encode(run) for run in _runs(items)]
        wrong = None
        with _transaction(self._conn) as conn:  # (events encoded before taking the lock)
            for run in runs:
                if not isinstance(run, _Write):
                    for start in range(0, len(run), _ROWS_PER_STATEMENT):
                        rows = run[start : start + _ROWS_PER_STATEMENT]
                        conn.execute(_insert_events(len(rows)), [v for row in rows for v in row])
                elif (error := _apply(conn, run)) is not None and run is write:
                    wrong = error
                elif error is not None:
                    log.warning("dropped a queued store write (%s): %s", run.what, error)
        return wrong

    def _failed(self, exc: BaseException) -> StoreWriteError:
        """Record a failed write: what is not stored, when to retry (sooner for a lock, which
        clears by itself; reconnecting first for anything else)."""
        self._backoff = min(max(self._backoff * 2, 0.25), _MAX_BACKOFF)
        self._retry_at = time.monotonic() + self._backoff
        self._reconnect = not _is_locked(exc) and self.path != MEMORY
        first = self.problem is None
        self.problem = (
            f"agentkernel cannot write to its session store {self.path} ({exc}): "
            f"{_describe(self._queue)} not stored yet. It is kept in memory and written when "
            "the store works again (retried every few seconds); it is lost if this process "
            "ends first."
        )
        if first:  # the caller of the failed write tells the user (the session warns)
            log.info("%s", self.problem)
        return StoreWriteError(self.problem)

    def _flush_when_due(self) -> None:
        """The flusher thread: writes the queue when it is full or its oldest event is due,
        and retries a failing store after a pause."""
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    if not self._queue:
                        self._due_at = None
                        self._wake.wait()
                        continue
                    if self.problem is not None:
                        due = self._retry_at
                    elif self._queued >= self.batch_size:
                        due = 0.0
                    else:
                        due = self._oldest + self.flush_interval
                    if self._due_at is not None:
                        due = min(due, self._due_at)
                    wait = due - time.monotonic()
                    if wait <= 0:
                        self._due_at = None  # this write takes the whole queue
                        break
                    self._wake.wait(wait)
            with contextlib.suppress(StoreWriteError):  # recorded in `problem`; retried
                self._write()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read, after writing what is queued (a turn's queued start or end must be
        seen); a failing store is read as it is (`problem` says what is not in it yet)."""
        params = [_column_text(p) if isinstance(p, str) else p for p in params]
        with contextlib.suppress(StoreWriteError):
            self.flush()
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

    def _connect(self) -> sqlite3.Connection:
        """A connection to the file, set up (WAL, schema, crash recovery). Set-up steps that
        find the file locked by another process creating it are retried until the busy
        timeout: SQLite fails them at once instead of waiting."""
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.002
        while True:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._set_up(conn)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if not _is_locked(exc) or time.monotonic() + pause > deadline:
                    raise
            except BaseException:
                conn.close()
                raise
            time.sleep(pause * random.uniform(0.5, 1.5))  # apart from the other openers
            pause = min(pause * 2, 0.1)

    def _set_up(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA secure_delete=ON")
        _require_json(conn)
        self._migrate(conn)
        self._recover_interrupted_turns(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        latest = len(MIGRATIONS)
        if self._schema_version(conn) == latest:
            return
        with _transaction(conn):
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

    def _recover_interrupted_turns(self, conn: sqlite3.Connection) -> None:
        running = conn.execute(
            "SELECT session_id, number, pid, pid_started FROM turns "
            "WHERE status = 'running' AND host = ?",
            (_HOST,),
        ).fetchall()
        orphans = [
            (session_id, number, pid)
            for session_id, number, pid, started in running
            if pid is not None and not _process_alive(pid, started)
        ]
        if not orphans:
            return
        with _transaction(conn):
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


_MAX_BACKOFF = 5.0
"""The longest pause between retries of a failing store, in seconds."""


@dataclass(frozen=True)
class _Write:
    """A write other than an event, queued in order with the events: what it stores (for a
    failure message) and how."""

    what: str
    run: Callable[[sqlite3.Connection], None]


def _runs(items: list[_Events | _Write]) -> Iterator[EventLog | _Write]:
    """The queue in order: the events between two other writes as one log (one statement),
    and each other write alone."""
    events = EventLog()
    for item in items:
        if not isinstance(item, _Write):
            events += item
        else:
            if events:
                yield events
                events = EventLog()
            yield item
    if events:
        yield events


def _apply(conn: sqlite3.Connection, write: _Write) -> Exception | None:
    """Run one write inside the transaction; if the write itself is wrong (not the store),
    undo just it and return its error. A failure of the store propagates."""
    conn.execute("SAVEPOINT write")
    try:
        write.run(conn)
    except (KeyError, ValueError, TypeError, sqlite3.IntegrityError) as exc:
        conn.execute("ROLLBACK TO write")
        conn.execute("RELEASE write")
        return exc
    conn.execute("RELEASE write")
    return None


def _describe(queue: collections.deque[_Events | _Write]) -> str:
    """What the queue holds, in a phrase: "40 events of session 1a2b3c4d and the end of
    turn 3 of session 1a2b3c4d"."""
    events: collections.Counter[str] = collections.Counter()
    writes: list[str] = []
    for item in list(queue):
        if isinstance(item, _Write):
            writes.append(item.what)
        else:
            events.update(event.session_id[:8] for event in item)
    parts = [
        f"{count} event{'s' if count > 1 else ''} of session {session}"
        for session, count in events.items()
    ]
    parts += writes[:3] + ([f"{len(writes) - 3} more writes"] if len(writes) > 3 else [])
    if not parts:
        return "nothing"
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken (or waited for) up front."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # some errors already rolled it back
            conn.execute("ROLLBACK")
        raise


def _is_locked(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked" / "busy": another connection holds the
    lock, which clears by itself."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


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


def utf8_text(text: str) -> str:
    """`text` as UTF-8 can hold it: a lone surrogate (a file name decoded with
    ``surrogateescape``, half of a broken pair) becomes U+FFFD, visibly; a valid pair becomes
    its character; everything else, NUL included, is kept. For SQLite text columns, files and
    anything else that must be valid UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


_column_text = utf8_text


def _session_columns(fields: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    """Column values for these `SessionRecord` fields, redacted and JSON-encoded."""
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "usage":
            columns.update((c, getattr(value, c)) for c in _USAGE_COLUMNS)
        elif name == "metadata":
            columns[name] = json.dumps(redact.obj(value or {}), default=str)  # ASCII
        elif name in ("title", "summary") and value is not None:
            columns[name] = _column_text(redact.text(value))
        elif name == "pinned":
            columns[name] = int(bool(value))
        elif isinstance(value, str):
            columns[name] = _column_text(value)
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


_ROWS_PER_STATEMENT = 150
"""Rows of events per INSERT statement: 6 parameters each, within the 999 of SQLite < 3.32."""


@functools.lru_cache(maxsize=64)
def _insert_events(rows: int) -> str:
    """An INSERT of `rows` events in one statement.

    Why not `executemany`: it releases and retakes the GIL around every row, and each retake
    waits up to the interpreter's switch interval (5 ms) while another thread runs Python code,
    such as the session loop streaming deltas; a batch of 1,000 rows then took seconds. One
    statement is a handful of GIL round trips whatever the batch size. The payload is bound
    as JSON text, ASCII (``\\uXXXX`` escapes), which SQLite stores as it is: text that UTF-8
    cannot hold (a lone surrogate) and NUL survive the round trip, and SQLite parses none of
    it on the way in."""
    values = ",".join(["(?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO events (session_id, turn, seq, type, timestamp, data) VALUES {values}"


def _encode(events: EventLog) -> list[list[Any]]:
    """The events as rows for `_insert_events`, payloads as JSON text: one row per event, but
    one per *run* of deltas (consecutive `TextDelta` or `ThinkingDelta` of one stream: session,
    turn and scope), which `_rows_to_events` expands again. A 200 KB reply streams 12,500
    deltas; a row each cost more than the rest of the session's work per delta, a row per run
    costs next to nothing, and every delta keeps its own seq, timestamp and text. The deltas
    are read as the log keeps them, field dicts (`EventLog.entries`)."""
    rows: list[list[Any]] = []
    run: list[dict[str, Any]] = []
    run_cls: type[Event] | None = None
    for cls, item in events.entries():
        if run and (
            cls is not run_cls
            or item["parent_tool_use_id"] != run[0]["parent_tool_use_id"]
            or item["turn"] != run[0]["turn"]
            or item["session_id"] != run[0]["session_id"]
        ):
            rows.append(_delta_row(run_cls, run))  # type: ignore[arg-type]
            run = []
        if cls is None:
            rows.append(_row(item))
        else:
            run.append(item)
            run_cls = cls
    if run:
        rows.append(_delta_row(run_cls, run))  # type: ignore[arg-type]
    for row in rows:
        try:
            row[5] = _ENCODER.encode(row[5])
        except ValueError:  # NaN or infinity, which JSON cannot hold: kept as text
            row[5] = _ENCODER.encode(_finite(row[5]))
    return rows


def _row(event: Event) -> list[Any]:
    return [
        event.session_id,
        event.turn,
        event.seq,
        event.type,
        event.timestamp,
        {name: getattr(event, name) for name in _payload_fields(type(event))},
    ]


def _delta_row(cls: type[TextDelta | ThinkingDelta], run: list[dict[str, Any]]) -> list[Any]:
    """The row of a run of deltas of class `cls`, given as their field dicts: a delta's own row
    for one, else one packed row. Its seq column is the first delta's, its timestamp the
    last's (crash recovery dates a turn's end by it)."""
    first = run[0]
    if len(run) == 1:
        payload = {name: first[name] for name in _payload_fields(cls)}
        return [
            first["session_id"],
            first["turn"],
            first["seq"],
            cls.type,
            first["timestamp"],
            payload,
        ]
    return [
        first["session_id"],
        first["turn"],
        first["seq"],
        _RUN_TYPES[cls],
        run[-1]["timestamp"],
        {
            "parent_tool_use_id": first["parent_tool_use_id"],
            "text": [delta["text"] for delta in run],
            "seq": [delta["seq"] for delta in run],
            "timestamp": _pack_floats([delta["timestamp"] for delta in run]),
        },
    ]


def _pack_floats(values: list[float]) -> str:
    """Floats, exactly, as base64 of little-endian doubles: JSON's decimal form of a
    timestamp costs more to write than the rest of a delta's row."""
    packed = array.array("d", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unpack_floats(text: str) -> list[float]:
    packed = array.array("d", base64.b64decode(text))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tolist()


_RUN_TYPES: dict[type[Event], str] = {
    TextDelta: "text_delta_run",
    ThinkingDelta: "thinking_delta_run",
}
"""Row types of packed delta runs (an older agentkernel reads such a row as one `Other`)."""
_RUN_CLASSES = {name: cls for cls, name in _RUN_TYPES.items()}


def _rows_to_events(rows: list[tuple[Any, ...]]) -> list[Event]:
    """Events from stored rows, a packed run expanded to its deltas."""
    events: list[Event] = []
    for row in rows:
        cls = _RUN_CLASSES.get(row[3])
        if cls is None:
            events.append(_event(row))
            continue
        session_id, turn = row[0], row[1]
        payload = json.loads(row[5])
        parent = payload["parent_tool_use_id"]
        events += (
            cls(
                session_id=session_id,
                turn=turn,
                seq=seq,
                timestamp=timestamp,
                parent_tool_use_id=parent,
                text=text,
            )
            for text, seq, timestamp in zip(
                payload["text"], payload["seq"], _unpack_floats(payload["timestamp"]), strict=True
            )
        )
    return events


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


@functools.lru_cache(maxsize=1)
def _own_start(pid: int) -> str | None:
    """`_process_start` of this process (`pid`: a forked child asks anew), read once."""
    return _process_start(pid)


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
        try:
            store.flush()
        except Exception as exc:  # nothing else will write it now
            log.error("%s", exc)
