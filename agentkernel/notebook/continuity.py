"""Which stored session a notebook continues: decided by the notebook's identity, not its name.

A path is not an identity: renaming ``Untitled.ipynb`` frees the name and the next new notebook
takes it. A notebook's identity is its cells. Jupyter gives every cell an id, saved in the file
(nbformat 4.5) and sent with each execution (JupyterLab and Notebook 7 put it in the
``execute_request`` metadata as ``cellId``); a rename or a move keeps the ids, a new notebook
has new ones, and a copied file has the same ones as its original.

So every turn records the id of the cell it ran in with its session (`remember`: in the store,
the session's metadata ``notebook_cells``), and "this notebook's session" is found from
evidence the kernel can see (`find`): the id of the cell being run, and the ids of the cells in
the notebook's file as last saved (the path Jupyter Server gives in ``JPY_SESSION_NAME`` is
where to read them). A session that ran in one of those cells belongs to this notebook:

- ``same``: it was last used at this path;
- ``moved``: it was last used at another path that no longer holds those cells (the notebook
  was renamed or moved): it continues here, and its path is updated;
- ``copy``: its notebook is still there and still holds those cells: this notebook is a copy,
  which continues a fork of the session (same history, a new id), leaving the original's own.

A notebook never saved since its agent cells ran has none of them in its file: after a kernel
restart it continues only from a cell that ran a turn before (re-running it, or Run All).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..store import SessionRecord, Store

CELLS_KEY = "notebook_cells"
"""The session metadata key holding the ids of the cells the session's turns ran in."""
MAX_CELLS = 2000
"""Most cell ids kept per session (the newest); a notebook rarely has more cells."""


@dataclass(frozen=True)
class Origin:
    """Where a cell runs: the notebook file (if known) and the cell's id (if sent)."""

    path: str | None
    cell: str | None = None

    @classmethod
    def of(cls, shell: Any, cell: str | None = None) -> Origin:
        return cls(notebook_path(shell), cell)

    def evidence(self) -> set[str]:
        """The cell ids that say which notebook this is."""
        found = notebook_cells(self.path) if self.path else set()
        if self.cell:
            found.add(self.cell)
        return found


@dataclass(frozen=True)
class Match:
    """A stored session this notebook continues, and how (see the module docstring)."""

    record: SessionRecord
    how: Literal["same", "moved", "copy"]

    def describe(self, turns: int) -> str:
        """The note shown in the first output: which session, and how to start afresh."""
        r = self.record
        fresh = "`%agent new` (or `%%agent --new`) starts a fresh one"
        if self.how == "copy":
            return (
                f"this notebook is a copy of {_short(r.notebook_path)}: continuing a fork of "
                f"its session {r.name!r} ({r.id[:8]}, {turns} earlier turn(s)) under a new id; "
                f"the original keeps its own. {fresh[0].upper()}{fresh[1:]}"
            )
        moved = f", last used as {_short(r.notebook_path)}" if self.how == "moved" else ""
        return (
            f"continuing this notebook's session {r.name!r} ({r.id[:8]}, {turns} earlier "
            f"turn(s){moved}); {fresh}"
        )


def notebook_path(shell: Any) -> str | None:
    """The notebook this kernel serves: Jupyter Server tells kernels in ``JPY_SESSION_NAME``,
    VS Code in ``__vsc_ipynb_file__``. Where the notebook is, not which one it is."""
    found = os.environ.get("JPY_SESSION_NAME") or (
        getattr(shell, "user_ns", {}).get("__vsc_ipynb_file__") if shell is not None else None
    )
    return str(found) if found else None


def notebook_cells(path: str | None) -> set[str]:
    """The cell ids in the notebook file at `path` as saved (none if unreadable)."""
    if not path:
        return set()
    try:
        with open(path, encoding="utf-8") as file:
            cells = json.load(file).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {str(c["id"]) for c in cells if isinstance(c, dict) and c.get("id")}


def find(
    store: Store, origin: Origin, *, name: str | None = None, backend: str | None = None
) -> Match | None:
    """The stored session of this notebook (named `name`, on `backend`, if given) with a
    conversation to continue; None when the notebook has no cell any session ran in."""
    evidence = origin.evidence()
    if not evidence:
        return None
    candidates = [
        r
        for r in store.list_sessions(backend=backend, limit=None)
        if r.backend_session_id
        and (name is None or r.name == name)
        and evidence & set(r.metadata.get(CELLS_KEY) or ())
    ]
    if not candidates:
        return None
    here = origin.path
    best = max(candidates, key=lambda r: (r.notebook_path == here, r.updated_at))
    if here is None or best.notebook_path in (None, here):
        return Match(best, "same")
    shared = evidence & set(best.metadata.get(CELLS_KEY) or ())
    if shared & notebook_cells(best.notebook_path):
        return Match(best, "copy")
    return Match(best, "moved")


def strangers(store: Store, origin: Origin, *, name: str | None = None) -> list[SessionRecord]:
    """Sessions stored at this notebook's path that are not this notebook's (it took the name
    of a notebook that was renamed or deleted): worth a word, since a path alone used to be
    enough to continue them."""
    if not origin.path:
        return []
    evidence = origin.evidence()
    return [
        r
        for r in store.list_sessions(notebook=origin.path, limit=None)
        if r.backend_session_id
        and (name is None or r.name == name)
        and not evidence & set(r.metadata.get(CELLS_KEY) or ())
    ]


def remember(store: Store | None, session: Any, origin: Origin) -> None:
    """Record that `session` ran a turn in `origin`'s cell, at `origin`'s path."""
    if store is None:
        return
    fields: dict[str, Any] = {}
    if origin.cell:
        cells = [c for c in session.metadata.get(CELLS_KEY) or () if c != origin.cell]
        cells.append(origin.cell)
        session.metadata[CELLS_KEY] = cells[-MAX_CELLS:]
        fields["metadata"] = session.metadata
    if origin.path and session.notebook_path != origin.path:
        session.notebook_path = origin.path
        fields["notebook_path"] = origin.path
    if fields:
        store.update_session(session.id, **fields)


def _short(path: str | None) -> str:
    if not path:
        return "another notebook"
    name = Path(path).name
    return name if name else path
