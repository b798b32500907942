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

Where recordings come from (`find`): the store, then *replay files*. The store holds every turn
this machine ran; a notebook's saved outputs carry their turns' keys (`saved_keys`), which is
enough to find them in it. ``%agent export-replay`` (`export`) writes the recorded turns a
notebook uses to ``<notebook>.agentreplay.json`` beside it, redacted like every export, so a CI
machine without the store replays from the notebook and that file alone: a replay file is
found beside the notebook, in the kernel's working directory (where papermill and nbclient run
a notebook) and at the paths in ``AGENTKERNEL_REPLAY_FILE``. Keys are digests of the whole
conversation up to the turn, so a key found in any file is the same question.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._event_log import EventLog
from ._redact import redactor
from .errors import AgentKernelError
from .events import event_from_dict
from .session import TurnRecord
from .store import Store, utf8_text

Policy = Literal["auto", "always", "never"]
POLICIES: tuple[str, ...] = ("auto", "always", "never")
ENV = "AGENTKERNEL_REPLAY"
KEY_VERSION = 1
"""Part of every key: a change to what goes into keys makes old recordings miss, not lie."""
FILE_ENV = "AGENTKERNEL_REPLAY_FILE"
"""Replay files to read besides the discovered ones (`os.pathsep`-separated paths)."""
FILE_SUFFIX = ".agentreplay.json"
FILE_FORMAT = "agentkernel-replay"
FILE_VERSION = 1


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
    """A recorded turn to replay: the turn with its events, the session it was recorded in,
    and the agent's conversation to continue after it, when continuing that conversation gives
    exactly the replayed history (the turn was its session's last; see `find`)."""

    session_id: str
    record: TurnRecord
    backend_session_id: str | None

    @property
    def started_at(self) -> float:
        return self.record.started_at

    @classmethod
    def of(cls, session_id: str, record: TurnRecord) -> Recording:
        """A turn of a session in memory, as its recording: a replayed one names the turn it
        replays."""
        if record.replayed_from:
            source, number = record.replayed_from.rsplit(":", 1)
            return cls(source, dataclasses.replace(record, number=int(number)), None)
        return cls(session_id, record, None)

    def to_dict(self) -> dict[str, Any]:
        """The turn as a replay file holds it (no agent conversation: not on another machine)."""
        r = self.record
        return {
            "key": r.replay_key,
            "session_id": self.session_id,
            "turn": r.number,
            "prompt": r.prompt,
            "recorded_at": r.started_at,
            "stop_reason": r.stop_reason,
            "events": [e.to_dict() for e in r.events],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recording:
        record = TurnRecord(
            int(data["turn"]),
            str(data["prompt"]),
            status="completed",
            events=EventLog(event_from_dict(e) for e in data["events"]),
            started_at=float(data["recorded_at"]),
            stop_reason=str(data.get("stop_reason") or ""),
            replay_key=str(data["key"]),
        )
        return cls(str(data["session_id"]), record, None)


def find(store: Store | None, key: str, files: Sequence[Path] = ()) -> Recording | None:
    """The recorded turn with this key: from the store if it has one, else from the replay
    `files` (see `replay_files`)."""
    if store is not None:
        turn = store.find_replay(key)
        if turn is not None:
            session = store.get_session(turn.session_id)
            last = store.turns(turn.session_id)[-1].number
            # Continuing the recorded conversation is exact only after its last turn; after
            # an earlier one it would carry the turns that followed (the session then starts
            # a new conversation seeded with the replayed history instead).
            continues = session.backend_session_id if session and last == turn.number else None
            return Recording(
                turn.session_id,
                TurnRecord.stored(turn, store.events(turn.session_id, turn.number)),
                continues,
            )
    for path in files:
        found = read(path).get(key)
        if found is not None:
            return found
    return None


def replay_files(notebook: str | None, cwd: Path | None = None) -> list[Path]:
    """The replay files a kernel reads: those named in ``AGENTKERNEL_REPLAY_FILE`` (each must
    exist), the one beside the notebook, and any in the working directory."""
    named = [Path(p) for p in os.environ.get(FILE_ENV, "").split(os.pathsep) if p.strip()]
    for path in named:
        if not path.is_file():
            raise FileNotFoundError(
                f"{FILE_ENV} names {str(path)!r}, which is not a file: write it with "
                "`%agent export-replay PATH` where the notebook was recorded, or unset it"
            )
    found = list(named)
    if notebook:
        found.append(file_for(notebook))
    found += sorted((cwd or Path.cwd()).glob(f"*{FILE_SUFFIX}"))
    unique = dict.fromkeys(p.resolve() for p in found if p.is_file())
    return list(unique)


def file_for(notebook: str) -> Path:
    """The replay file of a notebook: ``quickstart.ipynb`` -> ``quickstart.agentreplay.json``."""
    path = Path(notebook)
    return path.with_name(path.stem + FILE_SUFFIX)


_read_cache: dict[Path, tuple[int, dict[str, Recording]]] = {}


def read(path: Path) -> dict[str, Recording]:
    """The recordings in a replay file, by key (read once per change of the file)."""
    stamp = path.stat().st_mtime_ns
    cached = _read_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FILE_FORMAT or data.get("version") != FILE_VERSION:
            raise ValueError(f"not a version-{FILE_VERSION} {FILE_FORMAT} file")
        found = {r.record.replay_key or "": r for r in map(Recording.from_dict, data["turns"])}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path} is not a replay file agentkernel can read ({exc}); write it again with "
            "`%agent export-replay`"
        ) from None
    _read_cache[path] = (stamp, found)
    return found


def saved_keys(notebook: str | Path) -> list[str]:
    """The replay keys in a saved notebook's outputs (the provenance each agent cell's output
    keeps), in cell order: enough to find the notebook's turns in a store."""
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return []
    keys = []
    for cell in cells:
        for output in cell.get("outputs", []) if isinstance(cell, dict) else []:
            key = ((output.get("metadata") or {}).get("agentkernel") or {}).get("replay_key")
            if key and key not in keys:
                keys.append(str(key))
    return keys


def export(recordings: Iterable[Recording], path: Path) -> int:
    """Write the recordings to a replay file; returns how many turns it holds. Everything was
    redacted on the way into the store; the file is redacted once more with the secrets of the
    environment as it is now, as every export is."""
    redact = redactor()

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return utf8_text(redact.text(value))
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    turns = {r.record.replay_key: clean(r.to_dict()) for r in recordings if r.record.replay_key}
    data = {"format": FILE_FORMAT, "version": FILE_VERSION, "turns": list(turns.values())}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(turns)


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
