"""The public face, locked: a change here is a change users see, so it is made on purpose
(and the README follows)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import agentkernel
import agentkernel.testing
from agentkernel import Session
from agentkernel.events import TextDelta, ThinkingDelta, text_delta, thinking_delta

PUBLIC = {
    "AgentKernelError", "BudgetExceededError", "Compaction", "Decision", "Error", "Event",
    "FileChange", "Task",
    "Other", "PermissionDecided", "PermissionRequest", "PlanUpdate", "Question", "Session",
    "SessionClosedError", "SessionStarted", "Stats", "SyncSession", "Text", "TextDelta",
    "Thinking", "ThinkingDelta", "Tool", "ToolCall", "ToolInfo", "ToolKind", "ToolResult",
    "TurnEnded", "TurnFailedError", "TurnRecord", "TurnStarted", "Usage", "UsageUpdate",
    "load_ipython_extension", "tool", "unload_ipython_extension",
}  # fmt: skip

SESSION = {
    "backend_options", "backend_session_id", "children", "clear", "close", "compact", "connect",
    "cwd",
    "disconnect", "fork", "get_tool", "get_tools", "history", "hooks", "invoke_tool",
    "load_backend", "pending", "record_replay", "register_tool", "register_tools", "set_replay_key",
    "summary", "take_back_replay", "tasks", "unregister_tool", "workspace",
    "interrupt", "is_connected", "is_finished", "is_idle", "is_parked", "kill", "max_budget_usd",
    "max_tokens", "model", "name", "off", "on", "permission_handler", "permission_mode",
    "permissions", "pids", "reasoning_effort", "resume", "send", "send_and_collect",
    "set_model", "stats", "store", "stream", "subscribe", "title", "wait_for_idle",
}  # fmt: skip
"""Class attributes; instances add ``id``, ``backend_name``, ``metadata``, ``parent_id``,
``notebook_path``, ``compact_instructions`` and ``sync``."""


def test_package_exports() -> None:
    assert set(agentkernel.__all__) == PUBLIC
    assert all(hasattr(agentkernel, name) for name in PUBLIC)


def test_the_package_and_the_agent_kernel_import_without_the_session_layer() -> None:
    """The Agent kernel answers kernel_info before it needs a session: importing it (and the
    package) must not pull in the session, the store, the event model or pydantic."""
    heavy = ("agentkernel.session", "agentkernel.store", "agentkernel.events", "pydantic")
    probe = (
        "import sys, agentkernel, agentkernel.kernel.kernel\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(dir(agentkernel)) >= PUBLIC
    with pytest.raises(AttributeError, match="no attribute 'Sesion'"):
        agentkernel.Sesion  # noqa: B018


def test_session_attributes() -> None:
    assert {name for name in dir(Session) if not name.startswith("_")} == SESSION


def test_testing_exports_resolve() -> None:
    assert all(hasattr(agentkernel.testing, name) for name in agentkernel.testing.__all__)
    assert {"ScriptedModelServer", "Reply", "FakeBackend"} <= set(agentkernel.testing.__all__)


def test_the_fast_delta_constructors_make_the_classes_events() -> None:
    """`events.text_delta` / `thinking_delta` (what backends build deltas with) give the very
    events the constructors give: equal, frozen, the same JSON."""
    for make, cls in ((text_delta, TextDelta), (thinking_delta, ThinkingDelta)):
        fast = make("a piece", "toolu_1")
        slow = cls(text="a piece", parent_tool_use_id="toolu_1", timestamp=fast.timestamp)
        assert type(fast) is cls and fast == slow and fast.to_dict() == slow.to_dict()
        assert make("alone").parent_tool_use_id is None
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.text = "changed"  # type: ignore[misc]
