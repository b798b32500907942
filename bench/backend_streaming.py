"""Our Session's streaming cost on each backend that runs on the Claude scripted model: the
big turn through ``stream()`` and through ``send()``, and this process's CPU per delta.

    python bench/backend_streaming.py [--backends claude acp] [--big-kb 200] [--turns 3]

For the raw SDKs' side by side see `session_overhead.py` (Claude), `codex_overhead.py` (Codex)
and `copilot_overhead.py` (Copilot). Here every backend plays the same scripted reply
(``--big-kb`` KB of text in 16-character deltas, the scripted model server in a child
process): ``claude`` on the bundled Claude Code CLI, ``acp`` on claude-agent-acp (the ACP
adapter of the same CLI). Per backend, two sessions (``stream`` and ``send``), one unmeasured
turn each, then ``--turns`` rounds of one turn per session, the order alternating.

Figures: wall per turn (median), this process's CPU per turn (all threads: the backend's
mapping, the session, the store's flusher, the loop that consumes ``stream()``; the agent's
processes and the model server are others) and per delta, and the split of that CPU between
agentkernel's runtime thread, the store's flusher thread and this (the consumer's) thread.
``stream - send`` per delta is what handing every event to the caller's loop costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass

from _scripted import BIG_MARKER, CHUNK, model_server

from agentkernel import Session
from agentkernel.events import TextDelta

THREADS = {"runtime": "agentkernel-runtime", "flusher": "agentkernel-store"}


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of the runtime thread, the store's flusher and this thread."""
    running = {t.name: t.ident for t in threading.enumerate()}
    times = {"consumer": time.thread_time()}
    for key, name in THREADS.items():
        ident = running.get(name)
        times[key] = time.clock_gettime(time.pthread_getcpuclockid(ident)) if ident else 0.0
    return times


@dataclass
class Turn:
    wall: float
    cpu: float
    deltas: int
    threads: dict[str, float]


async def one_turn(session: Session, prompt: str, mode: str) -> Turn:
    before, wall, cpu = thread_cpu(), time.perf_counter(), time.process_time()
    if mode == "stream":
        deltas = 0
        async for event in session.stream(prompt):
            deltas += isinstance(event, TextDelta)
    else:
        record = await session.send(prompt)
        deltas = sum(isinstance(e, TextDelta) for e in record.events)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = thread_cpu()
    return Turn(wall, cpu, deltas, {k: after[k] - before[k] for k in after})


async def bench_backend(
    backend: str, server_env: dict[str, str], turns: int
) -> dict[str, list[Turn]]:
    folders = [tempfile.mkdtemp(prefix="ak-bench-") for _ in range(4)]
    sessions = {}
    options = {"backend_options": {"agent": "claude"}} if backend == "acp" else {}
    for mode, (config, cwd) in zip(("stream", "send"), (folders[:2], folders[2:]), strict=True):
        env = {**server_env, "CLAUDE_CONFIG_DIR": config, "CLAUDE_CODE_MAX_RETRIES": "0"}
        sessions[mode] = Session(backend=backend, env=env, cwd=cwd, name=mode, **options)
    results: dict[str, list[Turn]] = {"stream": [], "send": []}
    try:
        for number in range(turns + 1):
            order = ("stream", "send") if number % 2 == 0 else ("send", "stream")
            for mode in order:
                turn = await one_turn(sessions[mode], f"{BIG_MARKER} {number}: write", mode)
                if number:
                    results[mode].append(turn)
    finally:
        for session in sessions.values():
            await session.close()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    return results


def report(backend: str, results: dict[str, list[Turn]]) -> None:
    deltas = results["stream"][0].deltas
    print(f"\n{backend}: {deltas:,} text deltas per turn, {len(results['stream'])} turns each")
    print(
        f"  {'':7}{'wall ms':>9} {'CPU ms':>8} {'CPU us/delta':>13}   "
        f"{'runtime':>8} {'flusher':>8} {'consumer':>9}  (CPU us/delta per thread)"
    )
    per_delta = {}
    for mode, turns in results.items():
        if any(t.deltas != deltas for t in turns):
            raise RuntimeError(f"{backend} {mode}: deltas differ: {[t.deltas for t in turns]}")
        cpu = statistics.median(t.cpu for t in turns)
        per_delta[mode] = cpu / deltas * 1e6
        split = {k: statistics.median(t.threads[k] for t in turns) / deltas * 1e6 for k in THREADS}
        consumer = statistics.median(t.threads["consumer"] for t in turns) / deltas * 1e6
        print(
            f"  {mode:7}{statistics.median(t.wall for t in turns) * 1e3:9.0f} {cpu * 1e3:8.0f} "
            f"{per_delta[mode]:13.1f}   {split['runtime']:8.1f} {split['flusher']:8.1f} "
            f"{consumer:9.1f}"
        )
    print(f"  stream - send: {per_delta['stream'] - per_delta['send']:+.1f} us CPU per delta")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["claude", "acp"])
    parser.add_argument("--big-kb", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args(argv)
    store = tempfile.mkdtemp(prefix="ak-bench-store-")
    os.environ["AGENTKERNEL_STORE"] = os.path.join(store, "sessions.db")
    print(
        f"our Session streaming {args.big_kb} KB in {CHUNK}-character deltas, per backend; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    try:
        with model_server(args.big_kb) as server_env:
            for backend in args.backends:
                report(backend, asyncio.run(bench_backend(backend, server_env, args.turns)))
    finally:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
