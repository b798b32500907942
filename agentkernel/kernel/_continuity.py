"""Which stored session a starting Agent kernel continues.

A notebook's kernel continues the notebook's own session, found by the notebook's identity (its
cells, `agentkernel.notebook.continuity`), never by its path alone. A kernel started without a
notebook (``jupyter console``, a test harness) has no cells to go by: it continues the last
session started in its working directory, so a console restarted in the same folder goes on
where it left off.
"""

from __future__ import annotations

import os
from typing import Any

from ..notebook import continuity
from ..store import Store


def session_options(shell: Any) -> dict[str, Any]:
    """Session options that place this kernel's sessions: in its folder, for a kernel without
    a notebook (so `starting_match` finds them again)."""
    return {} if continuity.notebook_path(shell) else {"notebook_path": os.getcwd()}


def starting_match(store: Store, shell: Any, backend: str) -> continuity.Match | None:
    """The session a kernel starting now continues, before any cell has run."""
    origin = continuity.Origin.of(shell)
    if origin.path:
        return continuity.find(store, origin, backend=backend)
    records = store.list_sessions(notebook=os.getcwd(), backend=backend, limit=None)
    resumable = [r for r in records if r.backend_session_id]
    last = max(resumable, key=lambda r: r.updated_at, default=None)
    return continuity.Match(last, "same") if last is not None else None
