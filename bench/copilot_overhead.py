"""What a Copilot `Session` turn costs on top of driving the `github-copilot-sdk` directly.
Prints figures only.

    python bench/copilot_overhead.py [--turns 30] [--big-kb 100] [--big-turns 3] [--connects 3]

Both sides run the same Copilot CLI (the one `agentkernel._cli_install` finds, from npm) against
the same scripted model server (an instant model, in a child process so its Python work does
not compete with ours for the GIL) through the same BYOK provider (OpenAI Chat Completions),
with the same model, offline (``COPILOT_OFFLINE=true``), a fresh HOME / COPILOT_HOME and cwd per
client, and streaming on:

- sdk:    ``CopilotClient`` + ``create_session(on_event=..., streaming=True)``, the SDK's most
          direct path: ``await session.send(prompt)``, then the events up to ``session.idle``
          (counting ``assistant.message_delta``), with ``PermissionHandler.approve_all``;
- hooked: the same SDK session with a pre-tool-use hook that does nothing, as ours has;
- stream: ``async for event in session.stream(prompt)`` to the end (our backend also ends a
          turn at ``session.idle``; it adds its permission handler, user-input handler and
          pre-tool-use hook).

Why "hooked": a session with any hook makes the CLI call the client for every hook type, so
each turn waits for three JSON-RPC round trips (userPromptSubmitted, userPromptTransformed,
agentStop) even when no tool runs. The hook is how every tool call reaches our permissions,
so ours pays it; ``stream`` against ``hooked`` is what agentkernel's own code adds.

How to read it:

- connect: a fresh client up to a created session (sdk: ``start()`` + ``create_session``; ours:
  ``session.connect()``), median of ``--connects`` per side, alternating, after one unmeasured
  start per side. Ours also starts the CLI under agentkernel's supervisor (one more small
  process, so that the CLI cannot outlive us).
- small turns: 2 unmeasured turns per client, then ``--turns`` rounds of one turn per side, the
  order alternating. Each turn answers "ok " * 50 in 16-character deltas. ``ratio`` is
  median(stream) / median(sdk) (and / median(hooked)); ``added`` the median of the per-round
  differences. Target: ratio <= 1.05x and added < 5 ms.
- big turn: ``--big-kb`` KB of text in 16-character deltas, ``--big-turns`` measured turns per
  side after one unmeasured one; ``us/delta`` = (median(stream) - median(sdk)) / deltas.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import copilot as sdk
from _scripted import BIG_MARKER, model_server
from _sides import ms, rounds, session_turn
from copilot import session_events

from agentkernel import Session
from agentkernel._cli_install import ensure_copilot_cli
from agentkernel.testing import API_KEY

MODEL = "gpt-4.1"
WARMUP_TURNS = 2
TURN_TIMEOUT_S = 120.0
_T = session_events.SessionEventType


class Clients:
    """Both sides' clients, each with a fresh HOME / COPILOT_HOME and cwd (removed at the end)."""

    def __init__(self, url: str) -> None:
        self.cli = str(ensure_copilot_cli())
        self.provider = {
            "type": "openai",
            "base_url": f"{url}/v1",
            "api_key": API_KEY,
            "wire_api": "completions",
        }
        self.folders: list[str] = []

    def _fresh(self) -> tuple[dict[str, str], str]:
        home, cwd = tempfile.mkdtemp(prefix="ak-copilot-home-"), tempfile.mkdtemp(prefix="ak-cwd-")
        self.folders += [home, cwd]
        return {"HOME": home, "COPILOT_HOME": home, "COPILOT_OFFLINE": "true"}, cwd

    async def sdk(self, *, hooked: bool = False) -> tuple[sdk.CopilotClient, Callable[[str], Any]]:
        """A started client and a session driven through the SDK alone (with a pre-tool-use
        hook that does nothing when `hooked`); its turn function."""
        env, cwd = self._fresh()
        # What our backend gives the CLI too: the provider as the CLI's own variables (offline
        # mode needs them) and the shared runtime cache (the CLI unpacks ~235 MB per new HOME).
        cli_env = {
            **os.environ,
            **env,
            "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"),
            "COPILOT_PROVIDER_BASE_URL": self.provider["base_url"],
            "COPILOT_PROVIDER_TYPE": self.provider["type"],
            "COPILOT_PROVIDER_API_KEY": self.provider["api_key"],
            "COPILOT_PROVIDER_WIRE_API": self.provider["wire_api"],
            "COPILOT_MODEL": MODEL,
        }
        client = sdk.CopilotClient(
            connection=sdk.RuntimeConnection.for_stdio(path=self.cli),
            env=cli_env,
            working_directory=cwd,
        )
        await client.start()
        waiting: list[tuple[asyncio.Future[None], list[int]]] = []

        def on_event(event: Any) -> None:
            if not waiting:
                return
            done, deltas = waiting[-1]
            if event.type == _T.ASSISTANT_MESSAGE_DELTA:
                deltas[0] += 1
            elif event.type == _T.SESSION_IDLE and not done.done():
                done.set_result(None)

        session = await client.create_session(
            on_permission_request=sdk.PermissionHandler.approve_all,
            on_event=on_event,
            model=MODEL,
            working_directory=cwd,
            provider=self.provider,
            streaming=True,
            include_sub_agent_streaming_events=False,
            hooks={"on_pre_tool_use": _no_hook} if hooked else None,
        )

        async def turn(prompt: str) -> tuple[float, int]:
            started = time.perf_counter()
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            deltas = [0]
            waiting.append((done, deltas))
            await session.send(prompt)
            await asyncio.wait_for(done, TURN_TIMEOUT_S)
            elapsed = time.perf_counter() - started
            waiting.clear()
            return elapsed, deltas[0]

        return client, turn

    def session(self) -> Session:
        env, cwd = self._fresh()
        return Session(
            "copilot",
            model=MODEL,
            cwd=cwd,
            env=env,
            store=False,
            permission_mode="allow-all",
            backend_options={"provider": self.provider, "cli_path": self.cli},
        )

    def remove(self) -> None:
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)


async def _no_hook(hook_input: Any, invocation: Any) -> None:
    return None


async def main(args: argparse.Namespace) -> None:
    print(f"python {platform.python_version()}, {platform.machine()}, model {MODEL}")
    with model_server(args.big_kb) as server_env:
        clients = Clients(server_env["ANTHROPIC_BASE_URL"])
        print(f"Copilot CLI {clients.cli}")
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
                client, _ = await clients.sdk()
                elapsed = time.perf_counter() - started
                await client.stop()
            else:
                session = clients.session()
                await session.connect()
                elapsed = time.perf_counter() - started
                await session.close()
            if number >= 0:
                connects[side].append(elapsed)
    print("\nconnect (to a created session), median:")
    for side, times in connects.items():
        print(f"  {side:7}{ms(statistics.median(times))}")

    client, sdk_turn = await clients.sdk()
    hooked_client, hooked_turn = await clients.sdk(hooked=True)
    session = clients.session()
    try:
        sides = {"sdk": sdk_turn, "hooked": hooked_turn, "stream": session_turn(session)}
        await rounds(sides, WARMUP_TURNS, "warm up")
        small = await rounds(sides, args.turns, "small turn")
        report("small turns", small)
        await rounds(sides, 1, BIG_MARKER)
        big = await rounds(sides, args.big_turns, BIG_MARKER)
        report(f"big turn ({args.big_kb} KB)", big)
    finally:
        await client.stop()
        await hooked_client.stop()
        await session.close()


def report(title: str, results: dict[str, list[tuple[float, int]]]) -> None:
    walls = {name: [wall for wall, _ in turns] for name, turns in results.items()}
    deltas = {name: turns[0][1] for name, turns in results.items()}
    counts = ", ".join(f"{name} {count}" for name, count in deltas.items())
    print(f"\n{title}: {len(walls['sdk'])} turns per side, text deltas per turn: {counts}")
    for name, times in walls.items():
        q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
        print(f"  {name:7}{ms(statistics.median(times))}   p10 {ms(q[0])}   p90 {ms(q[-1])}")
    ours = statistics.median(walls["stream"])
    for base_name in ("sdk", "hooked"):
        base = statistics.median(walls[base_name])
        added = statistics.median(
            s - r for r, s in zip(walls[base_name], walls["stream"], strict=True)
        )
        print(f"  vs {base_name:7}{ours / base:.3f}x   added {ms(added)} per turn", end="")
        if deltas["stream"]:
            print(f"   {(ours - base) / deltas['stream'] * 1e6:.1f} us/delta")
        else:
            print()
    print("  target   <= 1.05x and < 5 ms added (small turns)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--big-kb", type=int, default=100)
    parser.add_argument("--big-turns", type=int, default=3)
    parser.add_argument("--connects", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
