"""Backends: one adapter per agent, all behind the small `Backend` protocol.

A backend turns one agent SDK into agentkernel events. It is given a `BackendHost` at connect:
it reports every event through ``host.emit`` and asks for every decision (tool permission,
question) through ``host.decide``; policy, rules and front ends live on the host's side, so no
backend knows about notebooks. Backends are found by name in the ``agentkernel.backends``
entry-point group, so a third-party package can add one without touching this one.
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..events import Decision, Event, PermissionRequest, Question

if TYPE_CHECKING:
    from ..tools import Tool

ENTRY_POINT_GROUP = "agentkernel.backends"
DEFAULT_BACKEND = "claude"
"""The backend a session uses when none is named."""


@dataclass(frozen=True)
class Image:
    """An image attached to a prompt."""

    data: bytes
    media_type: str

    @classmethod
    def load(cls, source: str | Path | bytes | Image) -> Image:
        """From a path or raw PNG/JPEG/GIF/WebP bytes; the error says which input was refused."""
        if isinstance(source, Image):
            return source
        if isinstance(source, bytes):
            return cls(source, _sniff_media_type(source))
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        media_type = mimetypes.guess_type(path.name)[0] or _sniff_media_type(path.read_bytes())
        return cls(path.read_bytes(), media_type)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def _sniff_media_type(data: bytes) -> str:
    signatures = {
        b"\x89PNG": "image/png",
        b"\xff\xd8\xff": "image/jpeg",
        b"GIF8": "image/gif",
        b"RIFF": "image/webp",
    }
    for magic, media_type in signatures.items():
        if data.startswith(magic):
            return media_type
    raise ValueError("unrecognised image bytes: pass PNG, JPEG, GIF or WebP data, or a file path")


@dataclass(frozen=True)
class Prompt:
    text: str
    images: tuple[Image, ...] = ()


@dataclass
class BackendConfig:
    """What a session asks of its backend. ``options`` holds backend-specific settings
    (for Claude: ``cli_path``, ``system_prompt``, ``allowed_tools``, ``setting_sources``...)."""

    model: str | None = None
    reasoning_effort: str | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    resume: str | None = None
    fork: bool = False
    max_budget_usd: float | None = None
    workspace: str | None = None
    """A directory of the session's own for files the agent or tools produce: offer it to the
    agent as an added directory where the agent has such a notion."""
    tools: tuple[Tool, ...] = ()
    """Python tools (`agentkernel.tools`) to offer the agent, by whatever means it has; each
    call goes through ``host.decide`` (with the tool's kind) exactly once before it runs."""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CloseResult:
    """How the backend's process ended: exit code (None when it never started) and its stderr."""

    exit_code: int | None
    stderr: str = ""


class BackendHost(Protocol):
    """The session side a backend talks to."""

    def emit(self, event: Event) -> None: ...

    async def decide(self, request: PermissionRequest | Question) -> Decision: ...


@runtime_checkable
class Backend(Protocol):
    """One agent. Every method runs on the session's owner loop (see `agentkernel._runtime`)."""

    name: ClassVar[str]
    backend_session_id: str | None

    async def connect(self, config: BackendConfig, host: BackendHost) -> None:
        """Start the agent; emit `SessionStarted` once its id is known."""

    async def run_turn(self, prompt: Prompt) -> None:
        """Send one prompt; emit its events, ending with exactly one `TurnEnded`."""

    async def interrupt(self) -> None:
        """Stop the running turn soon; it still ends with `TurnEnded` (stop_reason interrupted)."""

    async def set_model(self, model: str | None) -> None: ...

    # Optional: ``async def compact(self, instructions: str | None) -> None`` compacts the
    # conversation as a turn (emitting `Compaction`, ending with `TurnEnded`). A backend
    # without it makes `Session.compact` raise NotImplementedError.

    async def close(self) -> CloseResult:
        """End the agent process gracefully."""

    def kill(self) -> None:
        """End the agent process now (no await: usable from finalizers and signal paths)."""

    def pids(self) -> list[int]:
        """Processes this backend started and still holds (for cleanup checks). A session
        whose backend holds none is reconnected before its next turn, unless the backend
        class sets ``in_process = True`` (it runs inside this interpreter)."""


def available_backends() -> dict[str, Any]:
    """Registered backend names -> entry points."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_backend(name: str) -> type[Backend]:
    """The backend class registered as `name`; the error lists the ones that exist."""
    found = available_backends()
    if name not in found:
        names = ", ".join(sorted(found)) or "none (is jupyter-agentkernel installed?)"
        raise ValueError(f"unknown backend {name!r}; available backends: {names}")
    return found[name].load()
