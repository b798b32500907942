"""Turn runners the "ours against the raw SDK" benches share: each side is an async callable
taking a prompt and returning (seconds, text deltas); `rounds` interleaves the sides, in
alternating order, so that drift on a noisy machine falls on both."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agentkernel import Session, TextDelta, TurnEnded

Side = Callable[[str], Any]


def session_turn(session: Session) -> Side:
    """Our Session's side: one streamed turn, every event consumed."""

    async def run(prompt: str) -> tuple[float, int]:
        started = time.perf_counter()
        deltas = 0
        last = None
        async for event in session.stream(prompt):
            last = event
            deltas += isinstance(event, TextDelta)
        elapsed = time.perf_counter() - started
        if not isinstance(last, TurnEnded) or last.is_error:
            raise RuntimeError(f"the session turn did not end well: {last!r}")
        return elapsed, deltas

    return run


async def rounds(sides: dict[str, Side], count: int, prompt: str) -> dict:
    """`count` turns per side, interleaved: {side: [(seconds, deltas), ...]}."""
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    names = list(sides)
    for number in range(count):
        for name in names if number % 2 == 0 else names[::-1]:
            results[name].append(await sides[name](f"{prompt} {number}"))
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"
