"""An in-process backend that plays a script of neutral steps: no CLI, no model server.

For fast tests of what sits above a backend (the Session, permissions, the store, the views):
a turn costs microseconds instead of a CLI start. Everything a real agent does is still the
backend's to prove, in the conformance suite against the real CLIs.

    from agentkernel import Session
    from agentkernel.testing import FakeBackend, FakeTurn, Say, UseTool

    session = Session(FakeBackend, store=False, backend_options={"script": [
        FakeTurn("hello", [Say("Hi there!")]),
        FakeTurn("clean", [UseTool("shell", kind="execute", command="rm -rf build",
                                   output="removed"), Say("Cleaned.")]),
    ]})
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..backends import BackendConfig, BackendHost, CloseResult, Prompt
from ..events import (
    PermissionRequest,
    PlanUpdate,
    SessionStarted,
    Text,
    ToolCall,
    ToolKind,
    ToolResult,
    TurnEnded,
    Usage,
    text_delta,
)


@dataclass(frozen=True)
class Say:
    """The agent says `text`, streamed in `chunk_size` pieces, `delay` seconds apart."""

    text: str
    chunk_size: int = 16
    delay: float = 0.0


@dataclass(frozen=True)
class UseTool:
    """The agent calls a tool. It runs only when the host allows it: then the result is
    `output`; when denied, the result is the denial's reason, marked as an error."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)
    kind: ToolKind = "other"
    title: str = ""
    command: str | None = None
    locations: tuple[str, ...] = ()
    diff: str | None = None
    output: str = ""


@dataclass(frozen=True)
class Plan:
    """The agent reports its task list: ``(text, status)`` pairs."""

    tasks: Sequence[tuple[str, str]]


Step = Say | UseTool | Plan


@dataclass(frozen=True)
class FakeTurn:
    """Answers the first prompt that contains `match` (None: any prompt), once."""

    match: str | None
    steps: Sequence[Step]
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))


class FakeBackend:
    """Plays ``backend_options["script"]`` (a list of `FakeTurn`). Conversations are kept per
    backend session id for the life of the interpreter, so `Session.resume` works."""

    name: ClassVar[str] = "fake"
    in_process: ClassVar[bool] = True
    conversations: ClassVar[dict[str, list[str]]] = {}
    """Prompts seen, per backend session id."""

    def __init__(self) -> None:
        self.backend_session_id: str | None = None
        self._host: BackendHost | None = None
        self._script: list[FakeTurn] = []
        self._interrupted = asyncio.Event()

    async def connect(self, config: BackendConfig, host: BackendHost) -> None:
        self._host = host
        self._script = list(config.options.get("script", []))
        if config.resume and config.resume not in self.conversations:
            raise ConnectionError(f"no fake conversation {config.resume!r} to resume")
        if config.resume and not config.fork:
            self.backend_session_id = config.resume
        else:
            self.backend_session_id = f"fake-{uuid.uuid4().hex[:12]}"
            self.conversations[self.backend_session_id] = list(
                self.conversations.get(config.resume or "", [])
            )
        host.emit(
            SessionStarted(
                backend=self.name,
                backend_session_id=self.backend_session_id,
                model=config.model or "fake-model",
                cwd=config.cwd,
            )
        )

    async def run_turn(self, prompt: Prompt) -> None:
        assert self._host is not None and self.backend_session_id is not None
        self._interrupted.clear()
        self.conversations[self.backend_session_id].append(prompt.text)
        turn = self._next_turn(prompt.text)
        said: list[str] = []
        steps = (
            turn.steps if turn else [Say(f"[fake] no turn in the script matches {prompt.text!r}")]
        )
        for step in steps:
            if self._interrupted.is_set():
                break
            if isinstance(step, Say):
                said.append(await self._say(step))
            elif isinstance(step, Plan):
                items = [{"content": text, "status": status} for text, status in step.tasks]
                self._host.emit(PlanUpdate(items=items))
            else:
                await self._use(step)
        if self._interrupted.is_set():
            self._host.emit(TurnEnded(stop_reason="interrupted", raw_stop_reason="interrupted"))
            return
        if said:
            self._host.emit(Text(text="".join(said)))
        usage = turn.usage if turn else Usage()
        self._host.emit(TurnEnded(stop_reason="end_turn", raw_stop_reason="done", usage=usage))

    def _next_turn(self, prompt: str) -> FakeTurn | None:
        for index, turn in enumerate(self._script):
            if turn.match is None or turn.match in prompt:
                return self._script.pop(index)
        return None

    async def _say(self, step: Say) -> str:
        assert self._host is not None
        sent = []
        for start in range(0, len(step.text), max(step.chunk_size, 1)):
            if self._interrupted.is_set():
                break
            chunk = step.text[start : start + step.chunk_size]
            self._host.emit(text_delta(chunk))
            sent.append(chunk)
            await asyncio.sleep(step.delay)
        return "".join(sent)

    async def _use(self, step: UseTool) -> None:
        assert self._host is not None
        tool_use_id = f"fake-tool-{uuid.uuid4().hex[:8]}"
        info: dict[str, Any] = {
            "kind": step.kind,
            "title": step.title,
            "command": step.command,
            "locations": step.locations,
            "diff": step.diff,
        }
        self._host.emit(ToolCall(tool_use_id=tool_use_id, name=step.name, input=step.input, **info))
        decision = await self._host.decide(
            PermissionRequest(
                request_id=uuid.uuid4().hex,
                tool_name=step.name,
                input=step.input,
                tool_use_id=tool_use_id,
                **info,
            )
        )
        if self._interrupted.is_set():
            return
        if decision.allowed:
            self._host.emit(ToolResult(tool_use_id=tool_use_id, output=step.output))
        else:
            self._host.emit(
                ToolResult(tool_use_id=tool_use_id, output=decision.reason, is_error=True)
            )

    async def interrupt(self) -> None:
        self._interrupted.set()

    async def set_model(self, model: str | None) -> None:
        return None

    async def close(self) -> CloseResult:
        self._interrupted.set()
        return CloseResult(exit_code=0)

    def kill(self) -> None:
        self._interrupted.set()

    def pids(self) -> list[int]:
        return []
