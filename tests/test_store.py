"""The SQLite session store: batching, crash recovery, many writers, damaged files, secrets,
migrations, the query API, and export."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pytest

import agentkernel.store as store_module
from agentkernel import export
from agentkernel._redact import StreamRedactor, redactor
from agentkernel.events import (
    Event,
    Other,
    Text,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnStarted,
    Usage,
)
from agentkernel.store import (
    SCHEMA_VERSION,
    SessionRecord,
    Store,
    StoreError,
    StoreWarning,
    StoreWriteError,
    default_store_path,
)

FAKE_ANTHROPIC_KEY = "sk-ant-api03-PLANTEDfakeKEY0123456789abcdefghij"
FAKE_ENV_TOKEN = "planted-env-token-5Qx9Lw2"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    with Store(path) as opened:
        yield opened


def new_session(store: Store, **fields: object) -> SessionRecord:
    return store.create_session(SessionRecord(**{"backend": "test", **fields}))  # type: ignore[arg-type]


def raw_bytes(path: Path) -> bytes:
    """Everything SQLite keeps on disk for this database."""
    return b"".join(
        p.read_bytes()
        for p in (path, *(Path(f"{path}-{suffix}") for suffix in ("wal", "shm", "journal")))
        if p.exists()
    )


def run_child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def count_rows(path: Path, sql: str, params: Sequence[object] = ()) -> int:
    with sqlite3.connect(path, timeout=30) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


STORED_EVENTS = """SELECT coalesce(sum(CASE WHEN type GLOB '*_delta_run'
    THEN json_array_length(data, '$.seq') ELSE 1 END), 0) FROM events"""
"""Events in the file as another process sees them: a packed run of deltas counts each."""


# -- batching --------------------------------------------------------------------------------


def test_ten_thousand_deltas_take_a_few_commits(store: Store) -> None:
    """Size-triggered flushes only (age flushing pushed out of reach): each commit carries at
    least `batch_size` events, so 10,000 deltas are at most 10,000 / `batch_size` commits, plus
    the one `end_turn` commit."""
    store.flush_interval = 3600.0
    session = new_session(store)
    store.start_turn(session.id, 1, "stream a lot")
    before = store.commits
    for i in range(1, 10_001):
        store.append(TextDelta(session_id=session.id, turn=1, seq=i, text=f"{i} "))
    store.end_turn(session.id, 1, "completed")
    commits = store.commits - before
    assert 1 <= commits <= 10_000 // store.batch_size + 1
    stored = store.events(session.id, turn=1)
    assert [e.seq for e in stored] == list(range(1, 10_001))
    assert all(isinstance(e, TextDelta) and e.text == f"{e.seq} " for e in stored)


def test_default_policy_commit_bound(store: Store) -> None:
    """Default settings: a commit per `batch_size` events, plus at most one per
    `flush_interval` of wall time (an age flush), plus `end_turn`. Well under 100 here."""
    session = new_session(store)
    store.start_turn(session.id, 1, "stream a lot")
    before = store.commits
    started = time.monotonic()
    for i in range(1, 10_001):
        store.append(TextDelta(session_id=session.id, turn=1, seq=i, text="x"))
    store.end_turn(session.id, 1, "completed")
    elapsed = time.monotonic() - started
    commits = store.commits - before
    bound = 10_000 // store.batch_size + math.ceil(elapsed / store.flush_interval) + 1
    assert commits <= bound
    assert commits < 100
    assert len(store.events(session.id)) == 10_000


def test_runs_of_deltas_are_one_row_and_read_back_delta_by_delta(store: Store, path: Path) -> None:
    """Consecutive deltas of one stream share a row; a delta of another kind, scope, session
    or turn, or any other event, starts a new one. Reading gives back every event exactly:
    type, seq, timestamp, scope and text (odd characters too)."""
    first, second = new_session(store), new_session(store)
    store.flush_interval = 3600.0  # one batch, written by the reads below
    odd = "\udcff\x00\U0001f600"
    made: list[Event] = []
    seq = 0

    def add(cls: type[Event], session: SessionRecord = first, **fields: object) -> None:
        nonlocal seq
        seq += 1
        fields.setdefault("turn", 1)
        made.append(cls(session_id=session.id, seq=seq, timestamp=1000.0 + seq / 7, **fields))
        store.append(made[-1])

    for text in ("a", "b", odd, "c"):  # one run
        add(TextDelta, text=text)
    for text in ("t1", "t2"):  # thinking: a run of its own
        add(ThinkingDelta, text=text)
    add(TextDelta, text="sub", parent_tool_use_id="tool-1")  # another scope: a lone delta
    add(TextDelta, text="again")
    add(TextDelta, second, text="other session")  # another session: not in the run
    add(TextDelta, text="more")
    add(TextDelta, text="next turn", turn=2)  # another turn
    add(Text, text="abc")  # not a delta: its own row, and it ends the run
    add(TextDelta, text="x")
    add(TextDelta, text="y")

    got = store.events(first.id) + store.events(second.id)
    want = [e for e in made if e.session_id == first.id] + [
        e for e in made if e.session_id == second.id
    ]
    assert got == want
    assert [type(e) for e in got] == [type(e) for e in want]
    assert [e.seq for e in store.events(first.id, turn=1)] == [
        e.seq for e in want if e.session_id == first.id and e.turn == 1
    ]
    # 4 + 2 + 1 + 1 (again) + 1 (other session) + 1 (more) + 1 (turn 2) + 1 (Text) + 2 -> 9 rows
    assert count_rows(path, "SELECT count(*) FROM events") == 9
    assert count_rows(path, STORED_EVENTS) == len(made)


def test_events_are_flushed_by_age_without_end_turn(store: Store, path: Path) -> None:
    session = new_session(store)
    store.start_turn(session.id, 1, "slow")
    for i in range(1, 6):
        store.append(TextDelta(session_id=session.id, turn=1, seq=i, text="."))
    deadline = time.monotonic() + 5
    while count_rows(path, STORED_EVENTS) < 5:
        assert time.monotonic() < deadline, "the flusher thread never wrote the events"
        time.sleep(0.02)
    assert store.commits >= 1


def test_appends_from_one_thread_reads_from_another(store: Store) -> None:
    session = new_session(store)
    store.start_turn(session.id, 1, "threads")
    total = 3000

    def produce() -> None:
        for i in range(1, total + 1):
            store.append(TextDelta(session_id=session.id, turn=1, seq=i, text="y"))
            if i % 300 == 0:
                time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    while producer.is_alive():
        seqs = [e.seq for e in store.events(session.id)]
        assert seqs == list(range(1, len(seqs) + 1))
    producer.join()
    store.end_turn(session.id, 1, "completed")
    assert [e.seq for e in store.events(session.id)] == list(range(1, total + 1))


# -- crashes and other processes -------------------------------------------------------------

APPEND_FOREVER = """
    import sys, time
    from agentkernel.events import TextDelta
    from agentkernel.store import SessionRecord, Store

    store = Store(sys.argv[1])
    store.create_session(SessionRecord(id="victim", backend="test"))
    store.start_turn("victim", 1, "count forever")
    seq = 0
    while True:
        seq += 1
        store.append(TextDelta(session_id="victim", turn=1, seq=seq, text=f"{seq} "))
        time.sleep(0.002)
"""


def test_a_queued_turn_end_is_written_by_the_flusher_soon_with_the_events_before_it(
    path: Path,
) -> None:
    """``end_turn(wait=False)`` (a session's turn end) is due `END_DELAY_S` later, not after
    `flush_interval`: another process sees the ended turn and its events without this store
    being read or flushed."""
    with Store(path, flush_interval=3600) as store:
        session = new_session(store)
        store.start_turn(session.id, 1, "hello", wait=False)
        store.extend([TextDelta(session_id=session.id, turn=1, seq=n, text="x") for n in (1, 2)])
        store.end_turn(session.id, 1, "completed", wait=False)
        deadline = time.monotonic() + 20
        row = None
        while row is None or row[0] != "completed":
            assert time.monotonic() < deadline, "the turn's end was not written"
            time.sleep(0.02)
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as other:
                row = other.execute(
                    "SELECT status FROM turns WHERE session_id = ? AND number = 1", (session.id,)
                ).fetchone()
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as other:
            assert other.execute(STORED_EVENTS).fetchone()[0] == 2


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_kill_9_mid_turn_keeps_flushed_events_and_marks_the_turn_interrupted(
    path: Path,
) -> None:
    child = run_child(APPEND_FOREVER, str(path))
    try:
        # Batches of 1,000 would take 2 s to fill; seeing rows early proves age flushing.
        deadline = time.monotonic() + 60
        known = 0
        while known < 50:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "no events reached the store"
            time.sleep(0.05)
            if path.exists():
                with sqlite3.connect(path, timeout=30) as conn:
                    tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
                    if ("events",) in tables:
                        known = conn.execute(STORED_EVENTS).fetchone()[0]

        # A live writer's turn is left running by another process opening the store.
        with Store(path) as observer:
            assert observer.turns("victim")[0].status == "running"

        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    with Store(path) as reopened:
        (turn,) = reopened.turns("victim")
        assert turn.status == "interrupted"
        assert str(child.pid) in (turn.error or "")
        assert turn.ended_at is not None and turn.ended_at >= turn.started_at
        seqs = [e.seq for e in reopened.events("victim")]
        assert len(seqs) >= known
        assert seqs == list(range(1, len(seqs) + 1))


def test_a_reused_pid_or_another_host_is_handled(path: Path) -> None:
    with Store(path) as first:
        session = new_session(first)
        first.start_turn(session.id, 1, "mine, but from an older process with my pid")
        first.start_turn(session.id, 2, "another machine's")
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE turns SET pid_started = 'long ago' WHERE number = 1")
            conn.execute("UPDATE turns SET host = 'elsewhere', pid = 1 WHERE number = 2")
    with Store(path) as second:
        statuses = {t.number: t.status for t in second.turns(session.id)}
    if sys.platform.startswith("linux"):
        assert statuses == {1: "interrupted", 2: "running"}
    else:
        assert statuses[2] == "running"


WRITER = """
    import sys, time
    from pathlib import Path
    from agentkernel.events import TextDelta
    from agentkernel.store import Store

    path, session, turn, count, go = sys.argv[1:]
    turn, count, go = int(turn), int(count), Path(go)
    with Store(path, batch_size=25, flush_interval=0.005) as store:
        while not go.exists():
            time.sleep(0.005)
        store.start_turn(session, turn, f"writer {session}/{turn}")
        for seq in range(1, count + 1):
            store.append(TextDelta(session_id=session, turn=turn, seq=seq, text="z"))
            if seq % 50 == 0:
                time.sleep(0.002)
        store.end_turn(session, turn, "completed")
"""


def test_processes_writing_at_once_lose_nothing(path: Path, tmp_path: Path) -> None:
    with Store(path) as setup:
        for sid in ("alpha", "beta", "shared"):
            setup.create_session(SessionRecord(id=sid, backend="test"))
    go = tmp_path / "go"
    count = 2000
    writers = [("alpha", 1), ("beta", 1), ("shared", 1), ("shared", 2)]
    children = [
        run_child(WRITER, str(path), sid, str(turn), str(count), str(go)) for sid, turn in writers
    ]
    time.sleep(0.5)
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=90)
        assert child.returncode == 0, err
    with sqlite3.connect(path) as conn:
        order = conn.execute("SELECT session_id, turn FROM events ORDER BY id").fetchall()
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > len(writers), "the writers did not overlap; the test proved nothing"
    with Store(path) as check:
        for sid, turn in writers:
            assert [e.seq for e in check.events(sid, turn=turn)] == list(range(1, count + 1))
            (stored,) = [t for t in check.turns(sid) if t.number == turn]
            assert stored.status == "completed"
        assert len(check.events("shared")) == 2 * count


CREATE_AT_ONCE = """
    import json, os, sys, warnings
    from pathlib import Path
    from agentkernel.store import SessionRecord, Store

    folder, worker, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for number in range(rounds):
        gate = folder / f"gate-{number}"
        (folder / f"ready-{number}-{worker}").touch()
        os.close(os.open(gate, os.O_RDONLY))  # a FIFO: every worker wakes when it opens
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = Store.open_or_memory(folder / f"round-{number}.db")
            store.create_session(SessionRecord(id=f"{worker}-{number}", backend="test"))
            store.close()
        print(json.dumps([store.path, [str(w.message) for w in caught]]), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the start gate is a FIFO")
@pytest.mark.parametrize("processes", [2, 4, 8])
def test_processes_creating_a_fresh_store_at_once_all_open_it(
    tmp_path: Path, processes: int
) -> None:
    """Kernels started together (a first launch restoring several notebooks) each create the
    store file at the same instant. SQLite answers "database is locked" at once to all but
    one setting up WAL; every one must still open the file, with no warning."""
    rounds = 20
    gates = [tmp_path / f"gate-{number}" for number in range(rounds)]
    for gate in gates:
        os.mkfifo(gate)
    workers = [
        run_child(CREATE_AT_ONCE, str(tmp_path), str(worker), str(rounds))
        for worker in range(processes)
    ]
    try:
        for number, gate in enumerate(gates):
            ready = [tmp_path / f"ready-{number}-{worker}" for worker in range(processes)]
            deadline = time.monotonic() + 60
            while not all(p.exists() for p in ready):
                assert time.monotonic() < deadline, "the workers did not get ready"
                time.sleep(0.002)
            time.sleep(0.02)  # let them reach the gate
            os.close(os.open(gate, os.O_WRONLY))
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            reports += [json.loads(line) for line in out.splitlines()]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert len(reports) == processes * rounds
    assert [warned for _, warned in reports if warned] == []
    assert {stored for stored, _ in reports} == {
        str(tmp_path / f"round-{number}.db") for number in range(rounds)
    }
    for number in range(rounds):
        with sqlite3.connect(tmp_path / f"round-{number}.db") as conn:
            ids = {row[0] for row in conn.execute("SELECT id FROM sessions")}
        assert ids == {f"{worker}-{number}" for worker in range(processes)}


def test_a_failing_store_keeps_every_write_in_order_and_catches_up(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the write lock past the busy timeout, then the disk is full:
    nothing is dropped, the error says what is not stored yet, and once the store can be
    written again everything goes in, in order, without anyone asking."""
    with Store(path, busy_timeout=0.05, flush_interval=0.01) as store:
        session = new_session(store)
        store.start_turn(session.id, 1, "before the lock")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for seq in range(1, 41):
                store.append(TextDelta(session_id=session.id, turn=1, seq=seq, text=f"{seq} "))
            with pytest.raises(StoreWriteError) as raised:
                store.end_turn(session.id, 1, "completed", Usage(3, 4))
            message = str(raised.value)
            assert str(path) in message and "database is locked" in message
            assert f"40 events of session {session.id[:8]}" in message
            assert f"the end of turn 1 of session {session.id[:8]}" in message
            assert not store.healthy and store.problem == message
            with pytest.raises(StoreWriteError):
                store.rename("no-such-session", "queued, and found wrong when retried")
            store.append(TextDelta(session_id=session.id, turn=1, seq=41, text="late"))
            time.sleep(0.4)  # the flusher thread retries, and fails, meanwhile
            assert blocker.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        deadline = time.monotonic() + 30
        while not store.healthy:
            assert time.monotonic() < deadline, "the store never caught up by itself"
            time.sleep(0.02)
        assert [e.seq for e in store.events(session.id)] == list(range(1, 42))
        (turn,) = store.turns(session.id)
        assert (turn.status, turn.usage) == ("completed", Usage(3, 4))
        assert "no-such-session" in caplog.text

        # A full disk (here: this connection's page limit): the same, and the retry opens a
        # fresh connection to the file.
        store._conn.execute("PRAGMA max_page_count = 1")
        with pytest.raises(StoreWriteError, match="full"):
            store.start_turn(session.id, 2, "a prompt too long for one page " * 200)
        deadline = time.monotonic() + 30
        while not store.healthy:
            assert time.monotonic() < deadline, "the store never reconnected"
            time.sleep(0.02)
        assert [t.number for t in store.turns(session.id)] == [1, 2]


# -- damaged or unwritable stores ------------------------------------------------------------


def check_memory_fallback(target: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = Store.open_or_memory(target)
    try:
        assert len(caught) == 1
        assert issubclass(caught[0].category, StoreWarning)
        message = str(caught[0].message)
        assert str(target) in message and "AGENTKERNEL_STORE" in message
        assert fallback.path == ":memory:"
        session = new_session(fallback, title="still works")
        fallback.start_turn(session.id, 1, "hello")
        fallback.append(Text(session_id=session.id, turn=1, seq=1, text="hi"))
        fallback.end_turn(session.id, 1, "completed")
        assert [e.text for e in fallback.events(session.id)] == ["hi"]  # type: ignore[attr-defined]
    finally:
        fallback.close()


def test_corrupt_file_warns_once_and_falls_back_to_memory(path: Path) -> None:
    path.write_bytes(b"this is not a database, just garbage \x00\xff" * 200)
    check_memory_fallback(path)
    assert path.read_bytes().startswith(b"this is not a database")  # left for the user


def test_unwritable_location_warns_once_and_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    check_memory_fallback(blocker / "agentkernel" / "sessions.db")


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root can write to read-only folders"
)
def test_read_only_folder_warns_once_and_falls_back_to_memory(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        check_memory_fallback(folder / "sessions.db")
    finally:
        folder.chmod(0o700)


def test_read_only_file_is_refused_up_front(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite opens a read-only file without complaint and fails at the first write; the store
    checks up front, so the fallback happens at open, not mid-turn. (Simulated: tests may run
    as root, who can write anything.)"""
    Store(path).close()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode)
    )
    check_memory_fallback(path)


def test_newer_schema_is_refused(path: Path) -> None:
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    check_memory_fallback(path)


# -- migrations ------------------------------------------------------------------------------


def test_empty_version_zero_file_is_migrated(path: Path) -> None:
    sqlite3.connect(path).close()
    with Store(path) as opened:
        new_session(opened)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"sessions", "turns", "events"} <= tables


def test_older_schema_is_upgraded_and_data_kept(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(path) as old:
        session = new_session(old, title="from v1")
        old.start_turn(session.id, 1, "old prompt")
        old.append(Text(session_id=session.id, turn=1, seq=1, text="old answer"))
        old.end_turn(session.id, 1, "completed")

    def add_color(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE sessions ADD COLUMN color TEXT NOT NULL DEFAULT 'blue'")

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, add_color])
    with Store(path) as upgraded:
        assert upgraded.get_session(session.id).title == "from v1"  # type: ignore[union-attr]
        assert [e.text for e in upgraded.events(session.id)] == ["old answer"]  # type: ignore[attr-defined]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert conn.execute("SELECT color FROM sessions").fetchone()[0] == "blue"


# -- secrets ---------------------------------------------------------------------------------


def test_planted_secrets_never_reach_the_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the store's own API takes is redacted here; events come redacted by their emitter
    (the session), as a stream for streamed text: together nothing reaches the file."""
    monkeypatch.setenv("MY_SERVICE_TOKEN", FAKE_ENV_TOKEN)
    leak = f"token={FAKE_ENV_TOKEN} key={FAKE_ANTHROPIC_KEY}"
    clean = redactor()
    stream = StreamRedactor(clean)
    with Store(path) as store:
        session = new_session(store, title=f"title {leak}", metadata={"note": leak})
        store.update_session(session.id, summary=f"summary {leak}")
        store.start_turn(session.id, 1, f"prompt {leak}")
        pieces = [leak[i : i + 3] for i in range(0, len(leak), 3)]
        events: list[Event] = [
            TextDelta(text=released) for piece in pieces if (released := stream.feed("t", piece))
        ]
        events += [
            TextDelta(text=stream.flush("t")),
            Text(text=clean.text(leak)),
            ToolCall(tool_use_id="t1", name="Bash", input=clean.obj({"command": f"echo {leak}"})),
            ToolResult(tool_use_id="t1", output=clean.text(f"output {leak}")),
        ]
        for seq, event in enumerate(events, start=1):
            store.append(dataclasses.replace(event, session_id=session.id, turn=1, seq=seq))
        store.end_turn(session.id, 1, "error", error=f"failed with {leak}")
        stored = store.events(session.id)
        assert "".join(e.text for e in stored if isinstance(e, TextDelta)) == stored[-3].text  # type: ignore[attr-defined]
        record = store.get_session(session.id)
        assert record is not None and "[REDACTED]" in (record.title or "")
        assert "[REDACTED]" in (store.turns(session.id)[0].error or "")
        shown = export.transcript(store, session.id)
        assert "[REDACTED]" in shown and FAKE_ENV_TOKEN not in shown
        data = raw_bytes(path)
        assert FAKE_ENV_TOKEN.encode() not in data
        assert FAKE_ANTHROPIC_KEY.encode() not in data
    data = raw_bytes(path)
    assert FAKE_ENV_TOKEN.encode() not in data
    assert FAKE_ANTHROPIC_KEY.encode() not in data


def test_lone_surrogates_and_nuls_are_stored_and_shown(store: Store) -> None:
    """A file name decoded with surrogateescape (and a NUL) in a prompt, a title and an
    event: stored, not raised on; events keep them exactly, text columns show U+FFFD."""
    odd = "file \udcff name\x00 and \ud83d\ude00 \ud800"
    session = new_session(store, title=f"title {odd}", cwd=f"/tmp/{odd}")
    store.start_turn(session.id, 1, odd)
    store.append(TurnStarted(session_id=session.id, turn=1, seq=1, prompt=odd))
    store.append(Text(session_id=session.id, turn=1, seq=2, text=f"Read {odd}."))
    store.end_turn(session.id, 1, "error", error=f"cannot open {odd}")
    started, text = store.events(session.id)
    kept = odd.replace("\ud83d\ude00", "\U0001f600")  # a surrogate pair is its character
    assert started.prompt == kept and text.text == f"Read {kept}."  # type: ignore[attr-defined]
    shown = "file \ufffd name\x00 and \U0001f600 \ufffd"
    (turn,) = store.turns(session.id)
    assert (turn.prompt, turn.error) == (shown, f"cannot open {shown}")
    record = store.get_session(session.id)
    assert record is not None and record.title == f"title {shown}"
    assert [s.id for s in store.list_sessions(search="\udcff name")] == [session.id]
    transcript = export.transcript(store, session.id)
    assert shown in transcript and f"Read {shown}." in transcript
    transcript.encode("utf-8")  # printable and writable as it is
    export.to_markdown(store, session.id).encode("utf-8")


# -- the API ---------------------------------------------------------------------------------


def test_sessions_round_trip_and_update(store: Store) -> None:
    created = new_session(
        store,
        name="analysis",
        backend_session_id="claude-abc",
        model="sonnet",
        reasoning_effort="high",
        metadata={"tags": ["a"]},
        budget_usd=2.5,
        budget_tokens=10_000,
        notebook_path="work/a.ipynb",
        cwd="/tmp",
        kind="main",
    )
    assert created.created_at > 0 and created.updated_at == created.created_at
    assert store.get_session(created.id) == created
    with pytest.raises(ValueError, match="already stored"):
        store.create_session(created)
    updated = store.update_session(created.id, summary="sums up", spawn_depth=1, usage=Usage(1, 2))
    assert (updated.summary, updated.spawn_depth, updated.usage) == ("sums up", 1, Usage(1, 2))
    assert updated.updated_at >= created.updated_at
    store.rename(created.id, "New title")
    store.pin(created.id)
    record = store.get_session(created.id)
    assert record is not None and (record.title, record.pinned) == ("New title", True)
    with pytest.raises(TypeError, match="colour"):
        store.update_session(created.id, colour="red")
    with pytest.raises(KeyError):
        store.rename("nope", "x")


def test_get_session_by_prefix_and_backend_id(store: Store) -> None:
    one = new_session(store, id="abc123", backend_session_id="thread-9")
    new_session(store, id="abd456")
    assert store.get_session("abc") == one
    assert store.get_session("thread-9") == one
    assert store.get_session("zzz") is None
    assert store.get_session("") is None
    with pytest.raises(ValueError, match="give more characters"):
        store.get_session("ab")


def test_list_sessions_filters_and_order(store: Store) -> None:
    old = new_session(
        store,
        id="old",
        title="Plot the data",
        notebook_path="a.ipynb",
        created_at=1000.0,
        updated_at=1000.0,
    )
    mid = new_session(store, id="mid", title="Refactor 100%_done", backend="other")
    new = new_session(store, id="new", name="scratch", notebook_path="a.ipynb")
    store.start_turn(new.id, 1, "Please fix the Flaky test")
    store.pin(old.id)
    assert [s.id for s in store.list_sessions()] == ["old", "new", "mid"]
    assert [s.id for s in store.list_sessions(search="flaky")] == ["new"]
    assert [s.id for s in store.list_sessions(search="PLOT")] == ["old"]
    assert [s.id for s in store.list_sessions(search="100%_")] == ["mid"]
    assert [s.id for s in store.list_sessions(search="%")] == ["mid"]  # a literal %
    assert [s.id for s in store.list_sessions(backend="other")] == ["mid"]
    assert {s.id for s in store.list_sessions(notebook="a.ipynb")} == {"old", "new"}
    assert [s.id for s in store.list_sessions(pinned=False, limit=1)] == ["new"]
    assert {s.id for s in store.list_sessions(since=datetime.now() - timedelta(hours=1))} == {
        "old",  # pinning updated it
        "mid",
        "new",
    }
    assert [s.id for s in store.list_sessions(since=time.time() + 60)] == []
    assert len(store.list_sessions(limit=None)) == 3
    assert mid in store.list_sessions(backend="other")


def test_turns_usage_and_events_by_turn(store: Store) -> None:
    session = new_session(store)
    for number in (1, 2):
        store.start_turn(session.id, number, f"prompt {number}")
        store.append(
            TurnStarted(
                session_id=session.id, turn=number, seq=number * 10, prompt=f"prompt {number}"
            )
        )
        store.append(
            TurnEnded(
                session_id=session.id,
                turn=number,
                seq=number * 10 + 1,
                stop_reason="end_turn",
                usage=Usage(10, 5, cost_usd=0.25),
            )
        )
        store.end_turn(
            session.id,
            number,
            "completed",
            Usage(10, 5, cost_usd=0.25),
            duration_s=1.5,
            model_calls=2,
            stop_reason="end_turn",
        )
    store.end_turn(session.id, 2, "completed", Usage(10, 5, cost_usd=0.25))  # counted once
    turns = store.turns(session.id)
    assert [(t.number, t.prompt, t.status) for t in turns] == [
        (1, "prompt 1", "completed"),
        (2, "prompt 2", "completed"),
    ]
    assert turns[0].duration_s == 1.5 and turns[0].model_calls == 2
    assert turns[0].pid == os.getpid() and turns[0].stop_reason == "end_turn"
    record = store.get_session(session.id)
    assert record is not None and record.usage == Usage(20, 10, cost_usd=0.5)
    second = store.events(session.id, turn=2)
    assert [type(e) for e in second] == [TurnStarted, TurnEnded]
    assert second[1].usage == Usage(10, 5, cost_usd=0.25)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="not 'running'"):
        store.end_turn(session.id, 1, "running")


def test_unknown_or_changed_event_types_survive(store: Store, path: Path) -> None:
    session = new_session(store)
    store.append(Other(session_id=session.id, turn=1, seq=1, kind="future", data={"x": [1]}))
    store.append(Text(session_id=session.id, turn=1, seq=2, text="renamed field below"))
    store.flush()
    with sqlite3.connect(path) as conn:  # as if a later version renamed Text.text
        conn.execute('UPDATE events SET data = \'{"body": "hi"}\' WHERE seq = 2')
    other, changed = store.events(session.id)
    assert isinstance(other, Other) and other.kind == "future" and other.data == {"x": [1]}
    assert isinstance(changed, Other) and changed.kind == "text"
    assert changed.data["body"] == "hi" and changed.seq == 2


def test_delete_removes_turns_and_events_only_of_that_session(store: Store) -> None:
    keep, gone = new_session(store), new_session(store)
    for session in (keep, gone):
        store.start_turn(session.id, 1, "p")
        store.append(Text(session_id=session.id, turn=1, seq=1, text="t"))
        store.end_turn(session.id, 1, "completed")
    store.delete(gone.id)
    assert store.get_session(gone.id) is None
    assert store.turns(gone.id) == [] and store.events(gone.id) == []
    assert len(store.events(keep.id)) == 1 and len(store.turns(keep.id)) == 1
    with pytest.raises(KeyError):
        store.delete(gone.id)


def test_transcript(store: Store) -> None:
    session = new_session(store, title="Fixing things")
    store.start_turn(session.id, 1, "What is in the folder?")
    events: list[Event] = [
        TextDelta(session_id=session.id, turn=1, seq=1, text="Let me "),
        TextDelta(session_id=session.id, turn=1, seq=2, text="look."),
        Text(session_id=session.id, turn=1, seq=3, text="Let me look."),
        ToolCall(
            session_id=session.id,
            turn=1,
            seq=4,
            tool_use_id="t",
            name="Bash",
            input={"command": "ls"},
        ),
        ToolResult(session_id=session.id, turn=1, seq=5, tool_use_id="t", output="a.py"),
        TextDelta(session_id=session.id, turn=1, seq=6, text="One file."),
    ]
    for event in events:
        store.append(event)
    store.end_turn(session.id, 1, "completed")
    text = export.transcript(store, session.id[:8])
    assert text.startswith("# Fixing things\n\n## Turn 1 (completed)\n\n> What is in the folder?\n")
    assert text.count("Let me look.") == 1  # the whole block, not its deltas again
    assert "ls" in text and "a.py" in text
    assert text.index("Let me look.") < text.index("a.py") < text.index("One file.")


def test_store_path_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AGENTKERNEL_STORE", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    assert default_store_path() == str(tmp_path / "jupyter-data" / "agentkernel" / "sessions.db")
    with Store() as opened:
        assert Path(opened.path).exists()
    monkeypatch.setenv("AGENTKERNEL_STORE", str(tmp_path / "elsewhere.db"))
    assert default_store_path() == str(tmp_path / "elsewhere.db")
    monkeypatch.setenv("AGENTKERNEL_STORE", ":memory:")
    with Store() as memory:
        assert memory.path == ":memory:"
        new_session(memory)
    with Store(tmp_path / "explicit.db") as explicit:
        assert explicit.path == str(tmp_path / "explicit.db")


def test_closed_store_refuses_appends(path: Path) -> None:
    store = Store(path)
    session = new_session(store)
    store.append(Text(session_id=session.id, turn=1, seq=1, text="last words"))
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.append(Text(session_id=session.id, turn=1, seq=2, text="too late"))
    with Store(path) as reopened:
        assert len(reopened.events(session.id)) == 1
    with pytest.raises(ValueError, match="session id"):
        Store(":memory:").append(Text(text="unstamped"))


# -- export ----------------------------------------------------------------------------------


def seed_two_turns(store: Store, leak: str = "") -> SessionRecord:
    session = new_session(
        store, name="demo", title="Export me", model="sonnet", backend_session_id="claude-123"
    )
    prompts = ["List the files", f"Now print the config {leak}"]
    answers = ["There are two files.", f"Here it is: {leak}"]
    for number, (prompt, answer) in enumerate(zip(prompts, answers, strict=True), start=1):
        base = number * 10
        store.start_turn(session.id, number, prompt)
        store.append(TurnStarted(session_id=session.id, turn=number, seq=base, prompt=prompt))
        store.append(TextDelta(session_id=session.id, turn=number, seq=base + 1, text=answer))
        store.append(Text(session_id=session.id, turn=number, seq=base + 2, text=answer))
        store.append(
            ToolResult(
                session_id=session.id,
                turn=number,
                seq=base + 3,
                tool_use_id="t",
                output=f"tool said {leak}",
            )
        )
        store.append(
            TurnEnded(
                session_id=session.id,
                turn=number,
                seq=base + 4,
                stop_reason="end_turn",
                usage=Usage(100, 50, cost_usd=0.01),
            )
        )
        store.end_turn(session.id, number, "completed", Usage(100, 50, cost_usd=0.01))
    return session


def test_export_markdown(store: Store) -> None:
    session = seed_two_turns(store)
    text = export.to_markdown(store, session.id[:6])
    assert text.startswith("# Export me\n")
    assert "- **Backend:** test (session `claude-123`)" in text
    assert "- **Cost:** $0.0200" in text
    assert "## Turn 1" in text and "## Turn 2" in text
    assert "> List the files" in text and "There are two files." in text
    assert text.index("List the files") < text.index("Now print the config")


def test_export_notebook_validates_and_reopens(store: Store, tmp_path: Path) -> None:
    session = seed_two_turns(store)
    target = tmp_path / "out" / "demo.ipynb"
    assert export.to_notebook(store, session.id, target) == target
    notebook = nbformat.read(target, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["agentkernel"]["sessions"]["demo"]["id"] == session.id
    header, load, *turns = notebook.cells
    assert header.cell_type == "markdown" and "Export me" in header.source
    assert load.source == "%load_ext agentkernel"
    assert [c.source for c in turns] == [
        "%%agent --session demo\nList the files",
        "%%agent --session demo\nNow print the config ",
    ]
    (output,) = turns[0].outputs
    assert output.output_type == "display_data"
    assert {"text/plain", "text/markdown", "text/html"} <= set(output.data)
    assert "There are two files." in output.data["text/markdown"]
    assert turns[1].metadata["agentkernel"] == {
        "session_id": session.id,
        "turn": 2,
        "status": "completed",
    }
    with pytest.raises(FileExistsError):
        export.to_notebook(store, session.id, target)
    export.to_notebook(store, session.id, target, overwrite=True)


def test_export_is_redacted(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", FAKE_ENV_TOKEN)
    session = seed_two_turns(store, leak=f"{FAKE_ENV_TOKEN} {FAKE_ANTHROPIC_KEY}")
    markdown = export.to_markdown(store, session.id)
    target = export.to_notebook(store, session.id, tmp_path / "x.ipynb")
    for text in (markdown, target.read_text()):
        assert FAKE_ENV_TOKEN not in text and FAKE_ANTHROPIC_KEY not in text
        assert "[REDACTED]" in text


def test_extend_queues_in_order_and_refuses_a_batch_with_an_unstamped_event(store: Store) -> None:
    """`Store.extend` (the session's batches of deltas) is `append` of each, in order; a batch
    holding an event without a session id is refused whole, none of it queued."""
    session = new_session(store)
    batch = [TextDelta(session_id=session.id, turn=1, seq=n, text=f"{n}") for n in range(1, 4)]
    store.extend(batch)
    whole = Text(session_id=session.id, turn=1, seq=4, text="123")
    store.append(whole)
    with pytest.raises(ValueError, match="without a session id"):
        store.extend(
            [TextDelta(session_id=session.id, turn=1, seq=5, text="x"), TextDelta(text="y")]
        )
    assert store.events(session.id) == [*batch, whole]
