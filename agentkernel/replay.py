"""Reproducible agent cells: an unchanged cell gives back the turn it gave before.

Run All or a batch run of a notebook would otherwise send every prompt to the model again,
paying and waiting again for different answers. Each turn is stored with a *replay key*, a
digest of everything that decides what the agent is asked: the backend, the model, the prompt
after ``{name}`` filling with its attached context, the permission mode, and the key of the
session's previous turn (so a changed earlier cell changes every key after it). A cell whose
key is found replays the recorded turn from the store instead of calling the model.

The policy (`resolve`): ``auto`` replays an unchanged cell and runs a changed one (the default
for headless runs), ``always`` replays or fails naming the cell (for CI: nothing may call a
model), ``never`` always runs the agent (the default for a person's cells: nothing surprises
them). A cell's ``--replay`` / ``--fresh`` beats ``AGENTKERNEL_REPLAY``, which beats the
notebook's ``%agent replay`` setting, which beats the default.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Literal

from .errors import AgentKernelError
from .session import TurnRecord
from .store import Store

Policy = Literal["auto", "always", "never"]
POLICIES: tuple[str, ...] = ("auto", "always", "never")
ENV = "AGENTKERNEL_REPLAY"
KEY_VERSION = 1
"""Part of every key: a change to what goes into keys makes old recordings miss, not lie."""


class ReplayMissingError(AgentKernelError):
    """``always`` was asked and the cell has no recorded turn."""


def replay_key(
    *,
    backend: str,
    model: str | None,
    prompt: str,
    context: tuple[str, ...] = (),
    permission_mode: str | None,
    previous: str | None,
) -> str:
    """The digest of what a turn is asked. ``prompt`` is the text sent (``{name}`` filled,
    context attached); ``context`` the names of the attached variables; ``previous`` the key
    of the session's turn before it (None for its first)."""
    fields = {
        "v": KEY_VERSION,
        "backend": backend,
        "model": model,
        "prompt": prompt,
        "context": list(context),
        "permission_mode": permission_mode,
        "previous": previous,
    }
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()


def previous_key(history: list[TurnRecord]) -> str | None:
    """The key the next turn chains to: that of the session's last turn."""
    return history[-1].replay_key if history else None


def resolve(cell: Policy | None, notebook: Policy | None, *, headless: bool) -> Policy:
    """The policy of one cell: its own flag, else ``AGENTKERNEL_REPLAY``, else the notebook's
    setting, else ``auto`` headless and ``never`` for a person."""
    env = os.environ.get(ENV, "").strip().lower() or None
    if env is not None and env not in POLICIES:
        raise ValueError(f"{ENV}={env!r} is not a replay policy; valid: {', '.join(POLICIES)}")
    chosen = cell or env or notebook
    if chosen is not None:
        return chosen  # type: ignore[return-value]
    return "auto" if headless else "never"


@dataclass(frozen=True)
class Recording:
    """A recorded turn to replay: the turn, its events, and the conversation it was part of."""

    session_id: str
    record: TurnRecord
    backend_session_id: str | None

    @property
    def started_at(self) -> float:
        return self.record.started_at


def find(store: Store | None, key: str) -> Recording | None:
    """The recorded turn with this key, if the store has one."""
    if store is None:
        return None
    turn = store.find_replay(key)
    if turn is None:
        return None
    session = store.get_session(turn.session_id)
    return Recording(
        turn.session_id,
        TurnRecord.stored(turn, store.events(turn.session_id, turn.number)),
        session.backend_session_id if session is not None else None,
    )


def missing(prompt: str, where: str | None) -> ReplayMissingError:
    """The error of a cell that must replay and cannot: which cell, and what to do."""
    first = next((line for line in prompt.splitlines() if line.strip()), "").strip()[:80]
    cell = f"cell {where}" if where else "this cell"
    return ReplayMissingError(
        f"replay policy 'always' (--replay or {ENV}=always), but the agent {cell} "
        f"({first!r}) has no recorded turn: it is new, or its prompt, context, model or an "
        f"earlier agent cell changed since the notebook was recorded. Nothing was sent to the "
        f"model. Run it with {ENV}=auto (or `%%agent --fresh`) to record it."
    )
