"""The backend contract, run for every backend in `CASES`; and proof that it can fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from agentkernel.backends.claude import ClaudeBackend
from agentkernel.events import Decision, Event, PermissionRequest, Question, TurnEnded
from agentkernel.testing.backend_conformance import *  # noqa: F403
from agentkernel.testing.backend_conformance import (
    CLAUDE,
    Harness,
    check_denied_shell_command_does_not_run,
    check_text_streams_in_order,
)


class _DropsTurnEnded(ClaudeBackend):
    """A broken backend: its turns never say they ended."""

    async def connect(self, config: Any, host: Any) -> None:
        await super().connect(config, _Filter(host, drop=TurnEnded))


class _RunsWithoutAsking(ClaudeBackend):
    """A broken backend: it allows every tool itself instead of asking the host."""

    async def connect(self, config: Any, host: Any) -> None:
        await super().connect(config, _Filter(host, allow_all=True))


@dataclasses.dataclass
class _Filter:
    host: Any
    drop: type[Event] | None = None
    allow_all: bool = False

    def emit(self, event: Event) -> None:
        if self.drop is None or not isinstance(event, self.drop):
            self.host.emit(event)

    async def decide(self, request: PermissionRequest | Question) -> Decision:
        if self.allow_all:
            return Decision("allow", by="backend")
        return await self.host.decide(request)


@pytest.mark.parametrize(
    ("double", "check"),
    [
        (_DropsTurnEnded, check_text_streams_in_order),
        (_RunsWithoutAsking, check_denied_shell_command_does_not_run),
    ],
    ids=["drops-TurnEnded", "runs-tools-without-asking"],
)
async def test_a_broken_backend_fails_the_suite(
    double: type[ClaudeBackend], check: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentkernel.testing.backend_conformance.TURN_TIMEOUT_S", 10.0)
    world = Harness(dataclasses.replace(CLAUDE, name="broken", backend=double), tmp_path)
    world.server.start()
    try:
        with pytest.raises(AssertionError):
            await check(world)
    finally:
        for session in world.sessions:
            session.kill()
        world.server.stop()


async def test_a_wrong_continues_after_deny_fails_the_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The declaration is checked, not trusted: Claude goes on after a denial, so a case that
    says it ends its turn there fails."""
    monkeypatch.setattr("agentkernel.testing.backend_conformance.TURN_TIMEOUT_S", 30.0)
    case = dataclasses.replace(
        CLAUDE, name="claims-to-stop", backend="claude", continues_after_deny=False
    )
    world = Harness(case, tmp_path)
    world.server.start()
    try:
        with pytest.raises(AssertionError, match="declared to end its turn on a denial"):
            await check_denied_shell_command_does_not_run(world)
    finally:
        for session in world.sessions:
            session.kill()
        world.server.stop()
