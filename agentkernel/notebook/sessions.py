"""The named sessions of one IPython shell, shared by the magics and the Agent kernel."""

from __future__ import annotations

import re
from typing import Any

from ..session import Session

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SessionRegistry:
    """Named sessions; ``current`` is the one a plain ``%%agent`` cell talks to.

    ``defaults`` are the Session options every new session starts from (backend, model,
    permission mode, env...): the magics' configuration, overridden per cell.
    """

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults: dict[str, Any] = dict(defaults or {})
        self.current = "default"
        self._sessions: dict[str, Session] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._sessions

    def items(self) -> list[tuple[str, Session]]:
        return list(self._sessions.items())

    def get(self, name: str | None = None) -> Session:
        """The named (or current) session; a clear error lists the ones that exist."""
        name = name or self.current
        if name not in self._sessions:
            existing = ", ".join(self._sessions) or "none yet"
            raise KeyError(
                f"no session named {name!r} (sessions: {existing}); create it with "
                f"`%agent new {name}` or `%%agent --session {name}`"
            )
        return self._sessions[name]

    def create(self, name: str, **options: Any) -> Session:
        """A new session under `name`; a session already there is replaced (not closed)."""
        check_name(name)
        merged = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
        session = Session(name=name, **merged)
        self._sessions[name] = session
        return session

    def add(self, name: str, session: Session) -> Session:
        check_name(name)
        session.name = name
        self._sessions[name] = session
        return session

    def use(self, name: str) -> Session:
        session = self.get(name)
        self.current = name
        return session

    def pop(self, name: str) -> Session:
        session = self.get(name)
        del self._sessions[name]
        if self.current == name:
            self.current = "default"
        return session

    def free_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`... whichever is not taken."""
        name, n = base, 1
        while name in self._sessions:
            n += 1
            name = f"{base}-{n}"
        return name

    async def close_all(self) -> None:
        for session in list(self._sessions.values()):
            if not session.is_finished:
                await session.close()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"invalid session name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name
