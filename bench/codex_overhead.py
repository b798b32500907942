"""What a Codex `Session` turn costs on top of driving the `openai-codex` SDK directly. Prints
figures only.

    python bench/codex_overhead.py [--turns 30] [--big-kb 100] [--big-turns 3] [--connects 3]

Both sides run the same bundled ``codex app-server`` against the same scripted model server (an
instant model, in a child process so its Python work does not compete with ours for the GIL),
with the same ``-c`` config overrides, a fresh CODEX_HOME and cwd per client, and the same model:

- sdk:    ``openai_codex.Codex`` (its synchronous client, the SDK's most direct path):
          ``thread.turn(prompt)``, then every notification of ``handle.stream()`` up to
          ``turn/completed``;
- stream: ``async for event in session.stream(prompt)`` to the end.

Both threads are alike: read-only sandbox, approval policy "never" (``ApprovalMode.deny_all``
on the SDK side; the turns are text only, so nothing would be asked anyway).

How to read it:

- connect: a fresh client up to a started thread (sdk: ``Codex()`` + ``thread_start``; ours:
  ``session.connect()``), median of ``--connects`` per side, alternating, after one unmeasured
  start per side. Both processes have already imported the SDK's generated protocol models
  (about 1 s, which our backend never imports); app-server start-up itself varies by tens of ms.
- small turns: 2 unmeasured turns per client, then ``--turns`` rounds of one turn per side, the
  order alternating. Each turn answers "ok " * 50 in 16-character deltas. ``ratio`` is
  median(stream) / median(sdk); ``added`` the median of the per-round differences. Target:
  ratio <= 1.05x and added < 5 ms.
- big turn: ``--big-kb`` KB of text in 16-character deltas, ``--big-turns`` measured turns per
  side after one unmeasured one; ``us/delta`` = (median(stream) - median(sdk)) / deltas.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _scripted import BIG_MARKER, model_server
from _sides import ms, rounds, session_turn
from openai_codex import ApprovalMode, Codex, CodexConfig, Sandbox

from agentkernel import Session
from agentkernel.backends import codex as backend
from agentkernel.testing import API_KEY

MODEL = "gpt-5.5"
KEY_VARIABLE = "SCRIPTED_MODEL_KEY"
WARMUP_TURNS = 2


class Clients:
    """Both sides' clients, each with a fresh CODEX_HOME and cwd (all removed at the end)."""

    def __init__(self, url: str) -> None:
        self.config = backend.provider_config(f"{url}/v1", env_key=KEY_VARIABLE, retries=0)
        self.folders: list[str] = []

    def _fresh(self) -> tuple[dict[str, str], str]:
        home, cwd = tempfile.mkdtemp(prefix="ak-codex-home-"), tempfile.mkdtemp(prefix="ak-cwd-")
        self.folders += [home, cwd]
        return {"CODEX_HOME": home, KEY_VARIABLE: API_KEY}, cwd

    def sdk(self) -> tuple[Codex, Any]:
        env, cwd = self._fresh()
        # The same overrides our backend passes (its base config, then the provider).
        overrides = {**backend._BASE_CONFIG, **self.config}
        codex = Codex(
            CodexConfig(
                config_overrides=tuple(f"{k}={backend._toml(v)}" for k, v in overrides.items()),
                env=env,
                cwd=cwd,
            )
        )
        thread = codex.thread_start(
            model=MODEL, cwd=cwd, approval_mode=ApprovalMode.deny_all, sandbox=Sandbox.read_only
        )
        return codex, thread

    def session(self) -> Session:
        env, cwd = self._fresh()
        return Session(
            "codex",
            model=MODEL,
            cwd=cwd,
            env=env,
            store=False,
            backend_options={
                "config": self.config,
                "approval_policy": "never",
                "sandbox": "read-only",
            },
        )

    def remove(self) -> None:
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)


def sdk_turn(thread: Any) -> Callable[[str], Any]:
    async def run(prompt: str) -> tuple[float, int]:
        started = time.perf_counter()
        deltas = 0
        last = None
        for notification in thread.turn(prompt).stream():
            last = notification
            deltas += notification.method == "item/agentMessage/delta"
        elapsed = time.perf_counter() - started
        status = getattr(getattr(last, "payload", None), "turn", None)
        if status is None or status.status.value != "completed":
            raise RuntimeError(f"the SDK turn did not complete: {last!r}")
        return elapsed, deltas

    return run


async def main(args: argparse.Namespace) -> None:
    print(f"python {platform.python_version()}, {platform.machine()}, model {MODEL}")
    with model_server(args.big_kb) as server_env:
        clients = Clients(server_env["ANTHROPIC_BASE_URL"])
        try:
            await measure(clients, args)
        finally:
            clients.remove()


async def measure(clients: Clients, args: argparse.Namespace) -> None:
    connects: dict[str, list[float]] = {"sdk": [], "stream": []}
    for number in range(-1, args.connects):
        for side in ("sdk", "stream") if number % 2 == 0 else ("stream", "sdk"):
            started = time.perf_counter()
            if side == "sdk":
                codex, _ = clients.sdk()
                elapsed = time.perf_counter() - started
                codex.close()
            else:
                session = clients.session()
                await session.connect()
                elapsed = time.perf_counter() - started
                await session.close()
            if number >= 0:
                connects[side].append(elapsed)
    print("\nconnect (to a started thread), median:")
    for side, times in connects.items():
        print(f"  {side:7}{ms(statistics.median(times))}")

    codex, thread = clients.sdk()
    session = clients.session()
    try:
        sides = {"sdk": sdk_turn(thread), "stream": session_turn(session)}
        await rounds(sides, WARMUP_TURNS, "warm up")
        small = await rounds(sides, args.turns, "small turn")
        report("small turns", small)
        await rounds(sides, 1, BIG_MARKER)
        big = await rounds(sides, args.big_turns, BIG_MARKER)
        report(f"big turn ({args.big_kb} KB)", big)
    finally:
        codex.close()
        await session.close()


def report(title: str, results: dict[str, list[tuple[float, int]]]) -> None:
    walls = {name: [wall for wall, _ in turns] for name, turns in results.items()}
    base = statistics.median(walls["sdk"])
    ours = statistics.median(walls["stream"])
    added = statistics.median(s - r for r, s in zip(walls["sdk"], walls["stream"], strict=True))
    deltas = results["stream"][0][1]
    print(f"\n{title}: {len(walls['sdk'])} turns per side, {deltas} text deltas per turn")
    for name, times in walls.items():
        q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
        print(f"  {name:7}{ms(statistics.median(times))}   p10 {ms(q[0])}   p90 {ms(q[-1])}")
    print(f"  ratio    {ours / base:.3f}x   added {ms(added)} per turn", end="")
    if deltas:
        print(f"   {(ours - base) / deltas * 1e6:.1f} us/delta")
    else:
        print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--big-kb", type=int, default=100)
    parser.add_argument("--big-turns", type=int, default=3)
    parser.add_argument("--connects", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
