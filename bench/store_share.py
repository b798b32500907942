"""The session store's share of a streaming turn, and its raw throughput, in one run.

    python bench/store_share.py [--big-kb 200] [--big-rounds 12] [--small-rounds 60]
                                [--events 12500 100000]

Two `Session` objects on the same bundled Claude Code CLI and scripted model server (an
instant model: `agentkernel.testing.ScriptedModelServer`, in a child process so its Python work
does not compete with this one for the GIL), each on its own CLI process with a fresh
CLAUDE_CONFIG_DIR and cwd, CLAUDE_CODE_MAX_RETRIES=0:

- store: ``Session(store=Store(<temporary file>))``: every event is queued and written by the
  store's flusher thread (batches of 1,000, or every 0.1 s), with the turn's start and end rows
  (the end, with whatever is still queued, written at once as the turn ends);
- none:  ``Session(store=False)``: the same session kept in memory only.

Each turn is consumed as a notebook cell does: ``async for event in session.stream(prompt)`` to
the end (the iterator ends after `TurnEnded`).

How to read it:

- turns: one unmeasured warm-up round, then rounds of one turn per session, the order
  alternating from round to round so drift and noise hit both alike. big: ``--big-kb`` KB of
  text in 16-character deltas (12,500 deltas for 200 KB); small: "ok " * 50 in 16-character
  deltas (10 text deltas). Wall time per turn (median, p10, p90) and CPU = this process's CPU
  time per turn, all its threads (the store's flusher thread and SQLite included; the CLI and
  the model server are other processes); ``runtime`` and ``flusher``: the part of it spent on
  agentkernel's runtime thread (reads the CLI, maps and stamps events, queues them for the
  store) and on the store's flusher thread (encodes and writes batches, and the turn's rows).
- added: the median of the per-round differences store - none (wall, and CPU); ``share`` is
  added / median(none): what the store adds to a streaming turn. Target: share < 2% (wall).
  ``IQR``: first to third quartile of the paired wall differences; the verdict says "not
  resolved" when that range straddles the target. Turns vary by a few ms (the CLI alone takes
  tens of ms), and far more when other work loads the machine (the load average is printed),
  so a small turn's share is only resolved to a few percent; the CPU figures are steadier.
- raw store: `Store.append` of N `TextDelta` events into one turn of a fresh store file, then
  `Store.flush` (every event committed): events/s for the append calls alone (the cost on the
  session's loop) and until durable (the flusher thread writes while the appends go on), CPU
  per event (all threads), commits taken. Median of 3 runs per N. ``per big turn`` converts the
  CPU per event into what the big turn's deltas should cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _scripted import BIG_MARKER, model_server

from agentkernel import Session
from agentkernel.events import TextDelta, TurnEnded
from agentkernel.store import SessionRecord, Store

STORE_RUNS = 3
TARGET_SHARE = 0.02


@dataclass
class Dirs:
    """Temporary folders (CLI config, cwd, store files), all removed at the end."""

    paths: list[str] = field(default_factory=list)

    def new(self, label: str) -> str:
        path = tempfile.mkdtemp(prefix=f"ak-bench-{label}-")
        self.paths.append(path)
        return path

    def env_and_cwd(self, server_env: dict[str, str]) -> tuple[dict[str, str], str]:
        env = {
            **server_env,
            "CLAUDE_CONFIG_DIR": self.new("config"),
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        return env, self.new("cwd")

    def remove(self) -> None:
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)


# -- turns --------------------------------------------------------------------------------------


@dataclass
class Turn:
    wall: float
    cpu: float
    deltas: int
    threads: dict[str, float]
    """CPU seconds of agentkernel's runtime thread and of the store's flusher thread."""


THREADS = {"runtime": "agentkernel-runtime", "flusher": "agentkernel-store"}


def threads_cpu() -> dict[str, float]:
    """CPU seconds so far of the threads in THREADS (0 for one not running, or where a thread's
    CPU clock cannot be read: POSIX only)."""
    running = {t.name: t.ident for t in threading.enumerate()}
    times: dict[str, float] = {}
    for key, name in THREADS.items():
        ident = running.get(name)
        try:
            clock = time.pthread_getcpuclockid(ident) if ident else None
            times[key] = time.clock_gettime(clock) if clock is not None else 0.0
        except (AttributeError, OSError):
            times[key] = 0.0
    return times


async def streamed_turn(session: Session, prompt: str) -> Turn:
    threads = threads_cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    deltas = 0
    last: object = None
    async for event in session.stream(prompt):
        last = event
        if isinstance(event, TextDelta):
            deltas += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = threads_cpu()
    turn = Turn(wall, cpu, deltas, {k: after[k] - threads[k] for k in THREADS})
    if not isinstance(last, TurnEnded) or last.is_error:
        raise RuntimeError(f"turn did not end well: {last!r}")
    return turn


NAMES = ("store", "none")


async def rounds(
    sessions: dict[str, Session], count: int, prompt: Callable[[int], str]
) -> dict[str, list[Turn]]:
    """`count` rounds of one turn per session, the order alternating each round."""
    results: dict[str, list[Turn]] = {name: [] for name in sessions}
    for number in range(count):
        order = NAMES if number % 2 == 0 else NAMES[::-1]
        for name in order:
            results[name].append(await streamed_turn(sessions[name], prompt(number)))
    return results


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, p10, p90."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), deciles[0], deciles[-1]


def paired(results: dict[str, list[Turn]], measure: Callable[[Turn], float]) -> float:
    return statistics.median(
        measure(s) - measure(n) for s, n in zip(results["store"], results["none"], strict=True)
    )


def quartiles(results: dict[str, list[Turn]]) -> tuple[float, float]:
    """First and third quartiles of the paired wall-time differences store - none."""
    diffs = [s.wall - n.wall for s, n in zip(results["store"], results["none"], strict=True)]
    if len(diffs) < 2:
        return diffs[0], diffs[0]
    q1, _, q3 = statistics.quantiles(diffs, n=4, method="inclusive")
    return q1, q3


@dataclass
class Share:
    median: float
    q1: float
    q3: float


def report_turns(label: str, results: dict[str, list[Turn]]) -> Share:
    """Print one table; returns the store's wall-time share (median and quartiles)."""
    deltas = {t.deltas for turns in results.values() for t in turns}
    if len(deltas) != 1:
        raise RuntimeError(f"{label}: turns streamed different numbers of deltas: {deltas}")
    count = len(results["store"])
    print(f"\n{label}: {deltas.pop():,} text deltas per turn, {count} rounds, interleaved")
    print(
        f"  {'':7}{'median':>9} {'p10':>9} {'p90':>9} {'CPU':>9}   "
        f"{'runtime':>8} {'flusher':>8}   {'added':>8} {'IQR':>15} {'share':>7}   "
        f"{'CPU added':>9} {'share':>7}   (ms)"
    )
    none_wall = statistics.median(t.wall for t in results["none"])
    none_cpu = statistics.median(t.cpu for t in results["none"])
    share = paired(results, lambda t: t.wall) / none_wall
    low, high = quartiles(results)
    for name in NAMES:
        median, p10, p90 = spread([t.wall for t in results[name]])
        cpu = statistics.median(t.cpu for t in results[name])
        runtime, flusher = (statistics.median(t.threads[k] for t in results[name]) for k in THREADS)
        extra = ""
        if name == "store":
            added, cpu_added = paired(results, lambda t: t.wall), paired(results, lambda t: t.cpu)
            extra = (
                f"   {added * 1e3:+8.1f} {f'{low * 1e3:+.1f}..{high * 1e3:+.1f}':>15} "
                f"{share:+7.1%}   {cpu_added * 1e3:+9.1f} {cpu_added / none_cpu:+7.1%}"
            )
        print(
            f"  {name:7}{median * 1e3:9.1f} {p10 * 1e3:9.1f} {p90 * 1e3:9.1f} "
            f"{cpu * 1e3:9.1f} {runtime * 1e3:8.1f} {flusher * 1e3:8.1f}{extra}"
        )
    return Share(share, low / none_wall, high / none_wall)


# -- raw store throughput -----------------------------------------------------------------------


@dataclass
class StoreRun:
    append_s: float
    durable_s: float
    cpu_s: float
    commits: int


def store_run(folder: str, count: int) -> StoreRun:
    """Append `count` deltas to one turn of a fresh store, then flush; the store is closed and
    its file removed afterwards."""
    path = Path(tempfile.mkdtemp(dir=folder)) / "sessions.db"
    with Store(path) as store:
        session = store.create_session(SessionRecord(backend="bench"))
        store.start_turn(session.id, 1, "raw")
        before = store.commits
        cpu = time.process_time()
        started = time.perf_counter()
        for seq in range(1, count + 1):
            store.append(TextDelta(session_id=session.id, turn=1, seq=seq, text="a streamed tok "))
        appended = time.perf_counter()
        store.flush()
        durable = time.perf_counter()
        run = StoreRun(
            appended - started, durable - started, time.process_time() - cpu, store.commits - before
        )
    shutil.rmtree(path.parent, ignore_errors=True)
    return run


def report_store(folder: str, counts: list[int], big_deltas: int) -> None:
    print(
        f"\nraw store: Store.append x N TextDelta (15 characters each), then Store.flush; "
        f"median of {STORE_RUNS} runs on fresh files"
    )
    print(
        f"  {'N':>8} {'append/s':>11} {'durable/s':>11} {'CPU us/event':>13} {'commits':>8}"
        f" {'per big turn':>13}"
    )
    for count in counts:
        runs = [store_run(folder, count) for _ in range(STORE_RUNS)]
        append = statistics.median(r.append_s for r in runs)
        durable = statistics.median(r.durable_s for r in runs)
        cpu = statistics.median(r.cpu_s for r in runs) / count
        commits = statistics.median(r.commits for r in runs)
        print(
            f"  {count:>8,} {count / append:>11,.0f} {count / durable:>11,.0f} "
            f"{cpu * 1e6:>13.1f} {commits:>8.0f} {cpu * big_deltas * 1e3:>10.1f} ms"
        )


# -- the run ------------------------------------------------------------------------------------


def cli_version() -> str:
    """The version of the CLI bundled with the SDK (a private module: "?" if it moved)."""
    try:
        from claude_agent_sdk._cli_version import __cli_version__
    except ImportError:
        return "?"
    return str(__cli_version__)


def load() -> str:
    """The 1-minute load average: above the CPU count, other work shares the machine and the
    wall times are noisier."""
    return f"{psutil.getloadavg()[0]:.1f}"


async def bench(args: argparse.Namespace, server_env: dict[str, str], dirs: Dirs) -> None:
    store = Store(Path(dirs.new("store")) / "sessions.db")
    env, cwd = dirs.env_and_cwd(server_env)
    stored = Session(env=env, cwd=cwd, name="store", store=store)
    env, cwd = dirs.env_and_cwd(server_env)
    memory = Session(env=env, cwd=cwd, name="none", store=False)
    print(
        f"agentkernel session store share: Claude Code {cli_version()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load {load()}; store file "
        f"{store.path} (batch_size {store.batch_size}, flush_interval {store.flush_interval} s)"
    )
    sessions = {"store": stored, "none": memory}
    big_deltas = 0
    try:
        await stored.connect()
        await memory.connect()
        await rounds(sessions, 1, lambda n: f"warm-up {n}: say ok")
        small = await rounds(sessions, args.small_rounds, lambda n: f"turn {n}: say ok")
        await rounds(sessions, 1, lambda n: f"{BIG_MARKER} warm-up: write a lot")
        big = await rounds(sessions, args.big_rounds, lambda n: f"{BIG_MARKER} {n}: write a lot")
        big_deltas = big["none"][0].deltas
        shares = {
            "small": report_turns("small turn", small),
            "big": report_turns(f"big turn ({args.big_kb} KB)", big),
        }
        stats = store.commits
    finally:
        await stored.close()
        await memory.close()
        store.close()
    print(f"  (the store session's file took {stats:,} commits over the whole run)")
    report_store(dirs.new("raw"), args.events, big_deltas)
    print(
        f"\ntarget: the store adds < {TARGET_SHARE:.0%} to a streaming turn (wall, median of "
        "the paired differences; in brackets their quartiles, as shares)"
    )
    for label, share in shares.items():
        met = share.median < TARGET_SHARE
        firm = "" if share.q3 < TARGET_SHARE or share.q1 > TARGET_SHARE else ", not resolved"
        print(
            f"  {label + ' turn':12} {'met' if met else 'MISSED':7} ({share.median:+.2%}; "
            f"{share.q1:+.1%}..{share.q3:+.1%}{firm})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-kb", type=int, default=200, help="size of the big reply, KB")
    parser.add_argument("--big-rounds", type=int, default=12, help="measured big-turn rounds")
    parser.add_argument("--small-rounds", type=int, default=60, help="measured small rounds")
    parser.add_argument(
        "--events", type=int, nargs="+", default=[12_500, 100_000], help="raw store sizes"
    )
    args = parser.parse_args(argv)
    if args.big_kb < 1 or args.big_rounds < 1 or args.small_rounds < 1 or min(args.events) < 1:
        parser.error("--big-kb, --big-rounds, --small-rounds and --events must be >= 1")
    dirs = Dirs()
    started = time.perf_counter()
    try:
        with model_server(args.big_kb) as server_env:
            asyncio.run(bench(args, server_env, dirs))
    finally:
        dirs.remove()
    left = psutil.Process().children(recursive=True)
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s (load now {load()}); "
        f"child processes left: {len(left)}" + (f" {[p.pid for p in left]}" if left else "")
    )


if __name__ == "__main__":
    main()
