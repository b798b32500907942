"""Python callbacks around a session's tools and turns, the same on every backend.

``session.hooks.before_tool(fn)``: ``fn(request)`` sees every tool call before our policy
and may settle it: return a `Decision` (allow, allow with a rewritten input, or deny with a
reason) or None to let the policy and the user decide. A hook that raises denies the call with
the error as its reason; the turn goes on. ``after_tool(fn)``: ``fn(call, result)`` for every
result (``call`` is the `ToolCall`, None if the backend reported none). ``on_turn_end(fn)``:
``fn(record)`` when a turn ends. Each registration returns a function that removes it.
Callbacks run on agentkernel's runtime thread and may be coroutine functions.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .events import Decision, PermissionRequest, ToolCall, ToolResult

if TYPE_CHECKING:
    from .session import TurnRecord

log = logging.getLogger("agentkernel")

BeforeTool = Callable[[PermissionRequest], Awaitable[Decision | None] | Decision | None]
AfterTool = Callable[[ToolCall | None, ToolResult], Any]
TurnEnd = Callable[["TurnRecord"], Any]
F = TypeVar("F")


class SessionHooks:
    """The hooks of one session."""

    def __init__(self) -> None:
        self._before: list[BeforeTool] = []
        self._after: list[AfterTool] = []
        self._turn_end: list[TurnEnd] = []

    def before_tool(self, fn: BeforeTool) -> Callable[[], None]:
        return _register(self._before, fn)

    def after_tool(self, fn: AfterTool) -> Callable[[], None]:
        return _register(self._after, fn)

    def on_turn_end(self, fn: TurnEnd) -> Callable[[], None]:
        return _register(self._turn_end, fn)

    async def decide(self, request: PermissionRequest) -> Decision | None:
        """The first decision a before_tool hook gives, or None when none has an opinion."""
        for fn in list(self._before):
            try:
                outcome = fn(request)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except Exception as exc:  # a broken hook denies, never breaks the turn
                log.warning("before_tool hook %r failed: %s", fn, exc)
                reason = f"a before_tool hook failed: {type(exc).__name__}: {exc}"
                return Decision("deny", reason=reason, by="hook")
            if isinstance(outcome, Decision):
                return Decision(
                    outcome.behavior,
                    always=False,
                    reason=outcome.reason,
                    updated_input=outcome.updated_input,
                    by="hook",
                )
        return None

    async def tool_done(self, call: ToolCall | None, result: ToolResult) -> None:
        for fn in list(self._after):
            await _call(fn, call, result)

    async def turn_ended(self, record: TurnRecord) -> None:
        for fn in list(self._turn_end):
            await _call(fn, record)


def _register(hooks: list[F], fn: F) -> Callable[[], None]:
    hooks.append(fn)

    def remove() -> None:
        if fn in hooks:
            hooks.remove(fn)

    return remove


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    try:
        outcome = fn(*args)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:  # an observer that fails must not break the turn
        log.exception("hook %r failed", fn)
