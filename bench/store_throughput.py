"""How fast the session store takes streamed events. Prints figures; asserts nothing.

    python bench/store_throughput.py [--events 100000] [--turns 5]

- bulk: `--events` TextDelta events appended to one turn as fast as possible, then `end_turn`
  (which writes whatever is still buffered): events/s for the append calls alone and for the
  whole run until every event is durable, and the number of commits it took;
- turns: `--turns` turns of 10,000 deltas each, start to `end_turn`: time per turn, commits
  per turn;
- paced: 2,000 deltas at ~1,000 a second (a fast model stream): how long `end_turn` blocks
  the caller when the flusher thread has been keeping up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from agentkernel.events import TextDelta
from agentkernel.store import SessionRecord, Store

DELTA = "a streamed token "


def bulk(store: Store, count: int) -> None:
    session = store.create_session(SessionRecord(backend="bench"))
    store.start_turn(session.id, 1, "bulk")
    before = store.commits
    started = time.perf_counter()
    for seq in range(1, count + 1):
        store.append(TextDelta(session_id=session.id, turn=1, seq=seq, text=DELTA))
    appended = time.perf_counter()
    store.end_turn(session.id, 1, "completed")
    durable = time.perf_counter()
    print(f"bulk: {count:,} deltas in one turn")
    print(f"  append calls       {count / (appended - started):>12,.0f} events/s")
    print(f"  until durable      {count / (durable - started):>12,.0f} events/s")
    print(f"  end_turn blocked   {(durable - appended) * 1e3:>12.1f} ms")
    print(f"  commits            {store.commits - before:>12,}")


def turns(store: Store, count: int) -> None:
    session = store.create_session(SessionRecord(backend="bench"))
    durations: list[float] = []
    commits: list[int] = []
    for number in range(1, count + 1):
        before = store.commits
        started = time.perf_counter()
        store.start_turn(session.id, number, "ten thousand deltas")
        for seq in range(1, 10_001):
            store.append(TextDelta(session_id=session.id, turn=number, seq=seq, text=DELTA))
        store.end_turn(session.id, number, "completed")
        durations.append(time.perf_counter() - started)
        commits.append(store.commits - before)
    print(f"turns: {count} turns of 10,000 deltas, start_turn to end_turn")
    print(f"  time per turn      {statistics.median(durations) * 1e3:>12.1f} ms (median)")
    print(f"  commits per turn   {statistics.median(commits):>12.0f} (median)")


def paced(store: Store, count: int = 2000, rate: float = 1000.0) -> None:
    session = store.create_session(SessionRecord(backend="bench"))
    store.start_turn(session.id, 1, "paced")
    before = store.commits
    started = time.perf_counter()
    for seq in range(1, count + 1):
        store.append(TextDelta(session_id=session.id, turn=1, seq=seq, text=DELTA))
        delay = started + seq / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    ending = time.perf_counter()
    store.end_turn(session.id, 1, "completed")
    blocked = time.perf_counter() - ending
    print(f"paced: {count:,} deltas at {rate:,.0f}/s")
    print(f"  end_turn blocked   {blocked * 1e3:>12.1f} ms")
    print(f"  commits            {store.commits - before:>12,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sessions.db"
        with Store(path) as store:
            print(
                f"store: {path} (batch_size={store.batch_size}, "
                f"flush_interval={store.flush_interval} s)"
            )
            bulk(store, args.events)
            turns(store, args.turns)
            paced(store)
        events = args.events + args.turns * 10_000 + 2000
        print(f"file size: {path.stat().st_size / events:,.0f} bytes per delta event")


if __name__ == "__main__":
    main()
