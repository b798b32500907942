"""agentkernel: coding agents in Jupyter as real, persistent, multi-turn sessions.

``%load_ext agentkernel`` registers the ``%%agent`` / ``%agent`` magics; `Session` is the
Python API underneath them.
"""

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        AgentKernelError,
        BudgetExceededError,
        SessionClosedError,
        TurnFailedError,
    )
    from .events import (
        Compaction,
        Decision,
        Error,
        Event,
        FileChange,
        Other,
        PermissionDecided,
        PermissionRequest,
        PlanUpdate,
        Question,
        SessionStarted,
        Task,
        Text,
        TextDelta,
        Thinking,
        ThinkingDelta,
        ToolCall,
        ToolInfo,
        ToolKind,
        ToolResult,
        TurnEnded,
        TurnStarted,
        Usage,
        UsageUpdate,
    )
    from .session import Session, Stats, SyncSession, TurnRecord
    from .tools import Tool, tool

_HOMES = {
    "errors": ("AgentKernelError", "BudgetExceededError", "SessionClosedError", "TurnFailedError"),
    "events": (
        "Compaction",
        "Decision",
        "Error",
        "Event",
        "FileChange",
        "Other",
        "PermissionDecided",
        "PermissionRequest",
        "PlanUpdate",
        "Question",
        "SessionStarted",
        "Task",
        "Text",
        "TextDelta",
        "Thinking",
        "ThinkingDelta",
        "ToolCall",
        "ToolInfo",
        "ToolKind",
        "ToolResult",
        "TurnEnded",
        "TurnStarted",
        "Usage",
        "UsageUpdate",
    ),
    "session": ("Session", "Stats", "SyncSession", "TurnRecord"),
    "tools": ("Tool", "tool"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (PEP 562). Why lazily: the Agent kernel and
    ``%load_ext`` import this package first, and the session's modules (the store, the event
    model, pydantic for tool schemas) took 130 ms before the kernel could say it was ready."""
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkernel' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})


__version__ = "0.1.0"

# A library's logger stays silent unless the application configures logging (the logging
# HOWTO's advice): without this, Python's last-resort handler prints our diagnostics into
# notebook cells and scripts' stderr. What a user must see arrives as events or warnings.
logging.getLogger("agentkernel").addHandler(logging.NullHandler())


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext agentkernel``: register ``%%agent`` / ``%agent``, and start the agent in
    the background while the first cell is written."""
    from .notebook.magics import load

    load(ipython, warm_up=True)


def unload_ipython_extension(ipython: object) -> None:
    from .notebook.magics import unload

    unload(ipython)


__all__ = [
    "AgentKernelError",
    "BudgetExceededError",
    "Compaction",
    "Decision",
    "Error",
    "Event",
    "FileChange",
    "Other",
    "PermissionDecided",
    "PermissionRequest",
    "PlanUpdate",
    "Question",
    "Session",
    "SessionClosedError",
    "SessionStarted",
    "Stats",
    "SyncSession",
    "Task",
    "Text",
    "TextDelta",
    "Thinking",
    "ThinkingDelta",
    "Tool",
    "ToolCall",
    "ToolInfo",
    "ToolKind",
    "ToolResult",
    "TurnEnded",
    "TurnFailedError",
    "TurnRecord",
    "TurnStarted",
    "Usage",
    "UsageUpdate",
    "load_ipython_extension",
    "tool",
    "unload_ipython_extension",
]
