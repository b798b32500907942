"""The words shared by every format: decisions, usage, the status line, plan marks, questions."""

from __future__ import annotations

from agentkernel.events import (
    PermissionDecided,
    Question,
    TurnEnded,
    Usage,
)


def _decision_words(
    d: PermissionDecided, *, with_tool: bool, question: Question | None = None
) -> tuple[bool, str]:
    """(allowed, words) for a decision: "Allowed run (by user)", "Denied (by rule): why", or
    for a question "Answered (by user)" / "Declined (by user)"; ``with_tool`` names the tool,
    or for a question the answers (when no card shows them)."""
    allowed = d.behavior == "allow"
    if question is not None:
        answers = "; ".join(_answers(question).values()) if with_tool else ""
        verb = (f"Answered: {answers}" if answers else "Answered") if allowed else "Declined"
    else:
        verb = ("Always allowed" if d.always else "Allowed") if allowed else "Denied"
        verb = f"{verb} {d.tool_name}" if with_tool else verb
    words = f"{verb} (by {d.by})"
    if not allowed and d.reason:
        words += f": {d.reason}"
    return allowed, words


def _usage_words(usage: Usage) -> str:
    if not usage.total_tokens:
        return ""
    words = f"{usage.total_tokens:,} tokens ({usage.input_tokens:,} in, {usage.output_tokens:,} out"
    cached = usage.cache_read_tokens + usage.cache_creation_tokens
    return words + (f", {cached:,} cached)" if cached else ")")


def _status_words(end: TurnEnded) -> str:
    """The Markdown / HTML footer: stop reason, tokens, cost, duration and model calls. (Plain
    text keeps only the stop reason: token counts follow the prompt, which holds paths and
    dates, so they differ from run to run.)"""
    parts = [end.stop_reason]
    if usage := _usage_words(end.usage):
        parts.append(usage)
    if end.usage.cost_usd:
        parts.append(f"${end.usage.cost_usd:.4f}")
    if end.duration_s:
        parts.append(f"{end.duration_s:.1f}s")
    if end.model_calls:
        parts.append(f"{end.model_calls} model call{'s' if end.model_calls != 1 else ''}")
    return " · ".join(parts)


def _plan_marks(status: str) -> tuple[str, str]:
    """(checkbox for text, Markdown task marker) for a plan item status."""
    if status == "completed":
        return "☑", "[x]"
    if status == "in_progress":
        return "◐", "[ ]"
    return "☐", "[ ]"


def _question_lines(q: Question) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(header, question, [(label, description)]) for each question asked."""
    out = []
    for item in q.questions:
        options = [
            (str(o.get("label", "")), str(o.get("description", "") or ""))
            for o in item.get("options", []) or []
        ]
        out.append((str(item.get("header", "") or ""), str(item.get("question", "")), options))
    return out


def _answers(q: Question) -> dict[str, str]:
    """The answers when this is the live event and it was answered (stored copies lose them)."""
    decision = q.decision
    return dict(decision.answers or {}) if decision is not None else {}
