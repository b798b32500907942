"""What a `Session` turn costs on top of driving `ClaudeSDKClient` directly. Prints figures only.

    python bench/session_overhead.py [--turns 200] [--big-kb 200] [--big-turns 9] [--connects 5]

Both sides run the same bundled Claude Code CLI against the same scripted model server (an
instant model: `agentkernel.testing.ScriptedModelServer`, in a child process so its Python work
does not compete with ours for the GIL), with the same environment (a fresh CLAUDE_CONFIG_DIR and
cwd per client, CLAUDE_CODE_MAX_RETRIES=0). Three variants, each on its own CLI process so every
conversation grows alike:

- raw:    `ClaudeSDKClient(include_partial_messages=True)`: ``query()``, then every message of
          ``receive_response()`` up to and including the `ResultMessage`;
- stream: ``async for event in session.stream(prompt)`` to the end (the iterator finishes right
          after `TurnEnded`): every event crosses from agentkernel's runtime thread to this loop;
- send:   ``await session.send(prompt)``: the same turn, events only recorded, not streamed.

How to read it:

- connect: time for ``connect()`` alone (the CLI starting up), median of ``--connects`` fresh
  clients per side, alternating, after one unmeasured connect per side. CLI start-up varies by
  100 ms or more from one start to the next, so only a large difference here means anything.
- small turns: each connected client first takes 2 unmeasured turns, then ``--turns`` rounds;
  every round runs one turn of each variant, the order rotating from round to round so drift
  and noise hit all three alike. Each turn answers "ok " * 50 in 16-character deltas (10 text
  deltas). Wall time per turn: median, p10, p90; CPU = this process's CPU time per turn (all of
  its threads; the CLI and the model server are other processes). ``ratio`` is median(variant) /
  median(raw); ``added`` is the median of the per-round differences variant - raw, i.e. what a
  turn costs extra. Target: ratio <= 1.05x and added < 2 ms for ``stream``.
- big turn: one reply of ``--big-kb`` KB of text in 16-character deltas (12,500 deltas for
  200 KB), ``--big-turns`` measured turns per variant after one unmeasured one, rotating order
  as above. deltas/s: text deltas per second of turn; ``added`` is the median of the
  per-round differences variant - raw, as for small turns, and ``us/delta`` (and its CPU twin)
  is that over the deltas: the per-event cost of mapping, stamping, recording and handing
  events to the caller's loop. Target: ratio <= 1.15x and < 3 us/delta for ``stream``.

Figures vary from run to run by a few ms per turn (the CLI itself takes tens of ms); compare
the ratio and the added time, not absolute turn times across machines. The defaults (200 small
rounds, 9 big ones: about a minute) keep a run's ratio within about +-2% of the next run's; with
40 small rounds it swung by +-5%, as much as the target allows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import claude_agent_sdk as sdk
from _scripted import BIG_MARKER, CHUNK, SMALL_REPLY, model_server

from agentkernel import Session
from agentkernel.events import TextDelta, TurnEnded

WARMUP_TURNS = 2


@dataclass
class Dirs:
    """Fresh CLAUDE_CONFIG_DIR and cwd for each client, all removed at the end."""

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


def raw_client(env: dict[str, str], cwd: str) -> sdk.ClaudeSDKClient:
    return sdk.ClaudeSDKClient(
        sdk.ClaudeAgentOptions(env=env, cwd=cwd, include_partial_messages=True)
    )


@dataclass
class Turn:
    wall: float
    cpu: float
    deltas: int
    items: int


Variant = Callable[[str], Awaitable[Turn]]


def raw_variant(client: sdk.ClaudeSDKClient) -> Variant:
    async def run(prompt: str) -> Turn:
        wall, cpu = time.perf_counter(), time.process_time()
        deltas = items = 0
        last: object = None
        await client.query(prompt)
        async for message in client.receive_response():
            items += 1
            last = message
            if isinstance(message, sdk.StreamEvent):
                event = message.event
                if (
                    event.get("type") == "content_block_delta"
                    and event.get("delta", {}).get("type") == "text_delta"
                ):
                    deltas += 1
        turn = Turn(time.perf_counter() - wall, time.process_time() - cpu, deltas, items)
        if not isinstance(last, sdk.ResultMessage) or last.is_error:
            raise RuntimeError(f"raw turn did not end well: {last!r}")
        return turn

    return run


def stream_variant(session: Session) -> Variant:
    async def run(prompt: str) -> Turn:
        wall, cpu = time.perf_counter(), time.process_time()
        deltas = items = 0
        last: object = None
        async for event in session.stream(prompt):
            items += 1
            last = event
            if isinstance(event, TextDelta):
                deltas += 1
        turn = Turn(time.perf_counter() - wall, time.process_time() - cpu, deltas, items)
        if not isinstance(last, TurnEnded) or last.is_error:
            raise RuntimeError(f"streamed turn did not end well: {last!r}")
        return turn

    return run


def send_variant(session: Session) -> Variant:
    async def run(prompt: str) -> Turn:
        wall, cpu = time.perf_counter(), time.process_time()
        record = await session.send(prompt)
        turn = Turn(
            time.perf_counter() - wall,
            time.process_time() - cpu,
            sum(isinstance(e, TextDelta) for e in record.events),
            len(record.events),
        )
        if record.status != "completed":
            raise RuntimeError(f"sent turn did not complete: {record.status} {record.error}")
        return turn

    return run


# -- measuring ---------------------------------------------------------------------------------

NAMES = ("raw", "stream", "send")


async def rounds(
    variants: dict[str, Variant], count: int, prompt: Callable[[int], str]
) -> dict[str, list[Turn]]:
    """`count` rounds of one turn per variant, the order rotating each round."""
    results: dict[str, list[Turn]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(count):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(await variants[name](prompt(number)))
    return results


async def time_connects(
    server_env: dict[str, str], dirs: Dirs, count: int
) -> dict[str, list[float]]:
    """Connect times of `count` fresh clients per side, alternating, after one unmeasured
    connect per side (the first CLI start of a run pays for cold caches); all closed again."""
    times: dict[str, list[float]] = {"raw": [], "session": []}
    for number in range(-1, count):
        for side in ("raw", "session") if number % 2 == 0 else ("session", "raw"):
            env, cwd = dirs.env_and_cwd(server_env)
            if side == "raw":
                client = raw_client(env, cwd)
                started = time.perf_counter()
                try:
                    await client.connect()
                    elapsed = time.perf_counter() - started
                finally:
                    await client.disconnect()
            else:
                session = Session(env=env, cwd=cwd)
                started = time.perf_counter()
                try:
                    await session.connect()
                    elapsed = time.perf_counter() - started
                finally:
                    await session.close()
            if number >= 0:
                times[side].append(elapsed)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f}"


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, p10, p90."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), deciles[0], deciles[-1]


def paired_added(results: dict[str, list[Turn]], name: str, what: str = "wall") -> float:
    """The median over rounds of (variant - raw) in `what` ("wall" or "cpu"): the turns of a
    round run back to back, so drift in the CLI's and the machine's speed falls on both."""
    return statistics.median(
        getattr(v, what) - getattr(r, what)
        for v, r in zip(results[name], results["raw"], strict=True)
    )


def report_small(results: dict[str, list[Turn]], turns: int) -> tuple[float, float]:
    raw = results["raw"]
    print(
        f"\nsmall turns: {turns} per variant, interleaved; reply {len(SMALL_REPLY)} chars "
        f"= {raw[0].deltas} text deltas; per turn {raw[0].items} SDK messages (raw), "
        f"{results['stream'][0].items} events (ours)"
    )
    print(
        f"  {'':8}{'median':>8} {'p10':>8} {'p90':>8} {'CPU':>8}   {'ratio':>6} "
        f"{'added':>8}   (ms; added = median of paired differences)"
    )
    raw_median = statistics.median(t.wall for t in raw)
    for name in NAMES:
        median, p10, p90 = spread([t.wall for t in results[name]])
        cpu = statistics.median(t.cpu for t in results[name])
        extra = ""
        if name != "raw":
            extra = f"   {median / raw_median:5.3f}x {paired_added(results, name) * 1e3:+8.2f}"
        print(f"  {name:8}{ms(median)} {ms(p10)} {ms(p90)} {ms(cpu)}{extra}")
    stream_median = statistics.median(t.wall for t in results["stream"])
    return stream_median / raw_median, paired_added(results, "stream")


def report_big(results: dict[str, list[Turn]], kilobytes: int) -> None:
    deltas = results["raw"][0].deltas
    print(
        f"\nbig turn: {kilobytes} KB of text in {CHUNK}-char deltas = {deltas:,} text deltas; "
        f"{len(results['raw'])} measured turn(s) per variant, interleaved"
    )
    print(
        f"  {'':8}{'median':>8} {'CPU':>8}  {'deltas/s':>9}  {'ratio':>6} {'added':>8} "
        f"{'us/delta':>9} {'CPU us/delta':>13}   (ms, except deltas/s and us)"
    )
    raw_wall = statistics.median(t.wall for t in results["raw"])
    for name in NAMES:
        turns = results[name]
        if any(t.deltas != deltas for t in turns):
            raise RuntimeError(f"{name}: expected {deltas} deltas, got {[t.deltas for t in turns]}")
        wall = statistics.median(t.wall for t in turns)
        cpu = statistics.median(t.cpu for t in turns)
        extra = ""
        if name != "raw":
            added, added_cpu = paired_added(results, name), paired_added(results, name, "cpu")
            extra = (
                f"  {wall / raw_wall:5.2f}x {added * 1e3:+8.1f} "
                f"{added / deltas * 1e6:+9.1f} {added_cpu / deltas * 1e6:+13.1f}"
            )
        print(f"  {name:8}{ms(wall)} {ms(cpu)}  {deltas / wall:9,.0f}{extra}")
    stream_wall = statistics.median(t.wall for t in results["stream"])
    ratio, per_delta = stream_wall / raw_wall, paired_added(results, "stream") / deltas
    met = ratio <= 1.15 and per_delta < 3e-6
    print(
        f"  target for stream (ratio <= 1.15x, added < 3 us/delta): "
        f"{'met' if met else 'MISSED'} ({ratio:.2f}x, {per_delta * 1e6:+.1f} us/delta)"
    )


def cli_version() -> str:
    """The version of the CLI bundled with the SDK (a private module: "?" if it moved)."""
    try:
        from claude_agent_sdk._cli_version import __cli_version__
    except ImportError:
        return "?"
    return str(__cli_version__)


def cli_children() -> list[int]:
    """Child processes of this one still alive (Linux; [] elsewhere)."""
    pids: list[int] = []
    for children in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids.extend(int(p) for p in children.read_text().split())
    return pids


async def bench(args: argparse.Namespace, server_env: dict[str, str], dirs: Dirs) -> None:
    print(
        f"agentkernel Session vs ClaudeSDKClient: claude-agent-sdk {sdk.__version__}, "
        f"Claude Code {cli_version()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs\nscripted model in a child process; session store (the "
        f"default, redirected to a temporary file): {os.environ['AGENTKERNEL_STORE']}"
    )
    connects = await time_connects(server_env, dirs, args.connects)
    raw_connect, our_connect = (statistics.median(connects[k]) for k in ("raw", "session"))
    print(f"\nconnect: median of {args.connects} fresh clients per side (min-max), ms")
    for label, key, median in (
        ("raw ClaudeSDKClient.connect", "raw", raw_connect),
        ("Session.connect", "session", our_connect),
    ):
        low, high = min(connects[key]), max(connects[key])
        extra = f"   {(our_connect - raw_connect) * 1e3:+.1f} ms" if key == "session" else ""
        print(f"  {label:28}{ms(median)} ({low * 1e3:.0f}-{high * 1e3:.0f}){extra}")

    env, cwd = dirs.env_and_cwd(server_env)
    client = raw_client(env, cwd)
    streamed = Session(env=env, cwd=cwd, name="stream")
    env, cwd = dirs.env_and_cwd(server_env)
    sent = Session(env=env, cwd=cwd, name="send")
    try:
        await client.connect()
        await streamed.connect()
        await sent.connect()
        variants = {
            "raw": raw_variant(client),
            "stream": stream_variant(streamed),
            "send": send_variant(sent),
        }
        await rounds(variants, WARMUP_TURNS, lambda n: f"warm-up turn {n}: say ok")
        small = await rounds(variants, args.turns, lambda n: f"turn {n}: say ok")
        ratio, added = report_small(small, args.turns)
        met = ratio <= 1.05 and added < 0.002
        print(
            f"  target for stream (ratio <= 1.05x, added < 2 ms): "
            f"{'met' if met else 'MISSED'} ({ratio:.3f}x, {added * 1e3:+.2f} ms)"
        )
        if args.big_turns:
            big = await rounds(
                variants, args.big_turns + 1, lambda n: f"{BIG_MARKER} {n}: write a lot"
            )
            report_big({name: turns[1:] for name, turns in big.items()}, args.big_kb)
    finally:
        await sent.close()
        await streamed.close()
        await client.disconnect()
        close_stores(streamed, sent)


def close_stores(*sessions: Session) -> None:
    """Close the session store(s) the sessions wrote to, before their folder is removed."""
    stores = {id(store): store for s in sessions if (store := getattr(s, "store", None))}
    for store in stores.values():
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="measured small turns per variant")
    parser.add_argument("--big-kb", type=int, default=200, help="size of the big reply, KB")
    parser.add_argument(
        "--big-turns", type=int, default=9, help="measured big turns per variant (0: skip)"
    )
    parser.add_argument("--connects", type=int, default=5, help="connects timed per side")
    args = parser.parse_args(argv)
    if args.turns < 1 or args.connects < 1 or args.big_turns < 0 or args.big_kb < 1:
        parser.error("--turns, --connects and --big-kb must be >= 1, --big-turns >= 0")
    dirs = Dirs()
    # Sessions keep their turns in the shared session store by default: keep that cost in the
    # figures, but in a throwaway file rather than the user's own store.
    os.environ["AGENTKERNEL_STORE"] = str(Path(dirs.new("store")) / "sessions.db")
    started = time.perf_counter()
    try:
        with model_server(args.big_kb) as server_env:
            asyncio.run(bench(args, server_env, dirs))
    finally:
        dirs.remove()
    left = cli_children()
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s; "
        f"child processes left: {len(left)}{' ' + str(left) if left else ''}"
    )


if __name__ == "__main__":
    main()
