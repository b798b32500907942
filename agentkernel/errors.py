"""Errors a user can meet. Each message says what was wrong and how to fix it."""

from __future__ import annotations

from typing import Any


class AgentKernelError(Exception):
    """Base of agentkernel's own errors."""


class SessionClosedError(AgentKernelError):
    """The session was closed or disconnected and cannot take this call."""


class BudgetExceededError(AgentKernelError):
    """The session's cost or token budget is spent; the turn was refused, nothing was sent."""


class TurnFailedError(AgentKernelError):
    """A turn ended with an error (the model API, the CLI, ...). The session stays usable;
    ``record`` is the failed turn's `TurnRecord`, with every event it produced."""

    def __init__(self, message: str, record: Any = None) -> None:
        super().__init__(message)
        self.record = record
