"""The unified diff of a file change, labelled as git labels it, for backends that see the
text before and after (Claude Code's edits, ACP diff content)."""

from __future__ import annotations

import difflib


def unified_diff(path: str, before: str | None, after: str) -> str:
    """``before`` None: the file is new (``--- /dev/null``). An absolute path is labelled
    ``a/tmp/x``, as git does, not ``a//tmp/x``."""
    name = path.lstrip("/")
    return "".join(
        difflib.unified_diff(
            (before or "").splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile="/dev/null" if before is None else f"a/{name}",
            tofile=f"b/{name}",
        )
    )
