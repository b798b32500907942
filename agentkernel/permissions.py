"""Approval policy: permission modes, "always allow" rules, and the headless default.

The agent never gets a permission the user did not give: the only ways to an "allow" are a
person's click (or a handler the user installed), a rule the user created with "Always allow",
or a mode the user chose explicitly (``allow-reads``, ``allow-all``). When nothing can answer a
request (no front end, no handler), the default is to deny, and the denial says how to change it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from .events import Decision, PermissionRequest

PermissionMode = Literal["ask", "deny", "allow-reads", "allow-all"]
PERMISSION_MODES: tuple[str, ...] = get_args(PermissionMode)


WRITE_KINDS = frozenset({"edit", "delete", "move"})
"""Kinds that change the files in their `locations`."""


def notebook_warning(request: PermissionRequest, notebooks: Iterable[str]) -> str | None:
    """The warning for a file tool that would write one of the open `notebooks` directly, or
    None. Such a write bypasses the live document (unsaved cells and outputs) and corrupts
    what the front end holds, so it is always asked, never allowed by a mode or a rule."""
    if request.kind not in WRITE_KINDS or not request.locations:
        return None
    targets = {os.path.realpath(location) for location in request.locations}
    for notebook in notebooks:
        # A front end may name the notebook relative to its server root, not to our cwd.
        candidates = {os.path.realpath(notebook), os.path.realpath(os.path.basename(notebook))}
        if targets & candidates:
            return (
                f"{notebook} is the notebook open in this kernel: writing its file directly "
                "bypasses the live document (unsaved cells and outputs) and can corrupt it. "
                "Use the insert_cell tool to add a cell instead."
            )
    return None


def validate_mode(mode: str | None) -> PermissionMode | None:
    """Check a mode named by a user; the error lists the valid ones."""
    if mode is None or mode in PERMISSION_MODES:
        return mode  # type: ignore[return-value]
    raise ValueError(
        f"unknown permission mode {mode!r}; valid modes: {', '.join(PERMISSION_MODES)}"
    )


@dataclass(frozen=True)
class Rule:
    """An "always allow" remembered for the session: a tool, or for a call that runs a shell
    command, that one exact command (never the whole shell)."""

    tool_name: str
    command: str | None = None

    @classmethod
    def for_request(cls, request: PermissionRequest) -> Rule:
        return cls(request.tool_name, request.command)

    def matches(self, request: PermissionRequest) -> bool:
        return self == Rule.for_request(request)

    def __str__(self) -> str:
        return f"{self.tool_name}({self.command})" if self.command is not None else self.tool_name


class PermissionPolicy:
    """Decides what it can on its own; returns None when a person (or handler) must decide."""

    def __init__(self, mode: PermissionMode | None = None) -> None:
        self.mode = validate_mode(mode)
        self._rules: list[Rule] = []
        self._lock = threading.Lock()

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def remember(self, request: PermissionRequest) -> Rule:
        rule = Rule.for_request(request)
        with self._lock:
            if rule not in self._rules:
                self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def decide(
        self,
        request: PermissionRequest,
        *,
        can_ask: bool,
        mode: PermissionMode | None = None,
    ) -> Decision | None:
        """The decision the policy makes alone, or None to ask (only when `can_ask`).

        By kind, never by tool name: ``think`` (the agent's own planning, which touches
        nothing) is always allowed; ``allow-reads`` allows `READ_ONLY_KINDS`; ``deny`` denies
        everything else, shell commands included.
        """
        effective = mode or self.mode or ("ask" if can_ask else "deny")
        if any(rule.matches(request) for rule in self.rules):
            return Decision("allow", by="rule")
        if effective == "allow-all" or request.kind == "think":
            return Decision("allow", by="policy")
        if effective == "allow-reads" and request.read_only:
            return Decision("allow", by="policy")
        if effective == "deny" or not can_ask:
            what = request.title or request.tool_name
            return Decision(
                "deny",
                reason=(
                    f"{what} ({request.kind}) was denied by the permission mode "
                    f"{effective!r}: nothing could ask a person. Use the permission mode "
                    "'allow-reads' (read-only tools) or 'allow-all', or run interactively to "
                    "approve it."
                ),
                by="policy",
            )
        return None
