"""agentkernel: coding agents in Jupyter as real, persistent, multi-turn sessions.

``%load_ext agentkernel`` registers the ``%%agent`` / ``%agent`` magics; `Session` is the
Python API underneath them.
"""

from .errors import AgentKernelError, BudgetExceededError, SessionClosedError, TurnFailedError
from .events import (
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
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnStarted,
    Usage,
    UsageUpdate,
)
from .session import Session, Stats, SyncSession, TurnRecord

__version__ = "0.1.0"

__all__ = [
    "AgentKernelError",
    "BudgetExceededError",
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
    "Text",
    "TextDelta",
    "Thinking",
    "ThinkingDelta",
    "ToolCall",
    "ToolResult",
    "TurnEnded",
    "TurnFailedError",
    "TurnRecord",
    "TurnStarted",
    "Usage",
    "UsageUpdate",
]
