"""Which stored session a starting Agent kernel continues.

Sessions are kept in agentkernel's session store (`agentkernel.store`) with the notebook they
belong to. Jupyter Server tells a kernel its notebook in ``JPY_SESSION_NAME`` (VS Code in
``__vsc_ipynb_file__``); a kernel started without one (``jupyter console``, a test harness)
is keyed by its working directory instead, so a restart in the same place still continues.
"""

from __future__ import annotations

import os
from typing import Any

from ..notebook.magics import notebook_path
from ..store import SessionRecord, Store


def notebook_key(shell: Any) -> tuple[str, bool]:
    """The key this kernel's sessions are stored under, and whether it is the working-directory
    fallback (no notebook path known)."""
    path = notebook_path(shell)
    return (path, False) if path else (os.getcwd(), True)


def last_session(store: Store, notebook: str, backend: str) -> SessionRecord | None:
    """The most recently used session of `notebook` on `backend` that reached its agent (has a
    backend session id: there is a conversation to continue)."""
    records = store.list_sessions(notebook=notebook, backend=backend, limit=None)
    resumable = [r for r in records if r.backend_session_id]
    return max(resumable, key=lambda r: r.updated_at, default=None)
