"""Prompt context from the notebook: ``{name}`` interpolation and attached variable summaries.

Interpolation is deliberately narrow: ``{name}`` and ``{name.attr}`` / ``{name[key]}`` through
`string.Formatter`, never `eval`, so a prompt that mentions braces in code is not executed.
``{{`` and ``}}`` are literal braces. An undefined name is an error that lists the names the
prompt used, instead of a silent blank the agent would then act on.
"""

from __future__ import annotations

import contextlib
import reprlib
import string
from collections.abc import Mapping
from typing import Any

SUMMARY_CHARS = 2000
"""Cap on one variable's summary: enough to orient the agent, small enough for any prompt."""


class PromptContextError(ValueError):
    """A ``{name}`` in the prompt could not be filled in."""


def interpolate(prompt: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{name}`` fields from `namespace`; ``{{``/``}}`` escape braces."""
    formatter = string.Formatter()
    try:
        fields = [f for _, f, _, _ in formatter.parse(prompt) if f is not None]
    except ValueError as exc:
        raise PromptContextError(
            f"the prompt has an unbalanced brace ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    missing = sorted({_root(f) for f in fields if _root(f) not in namespace})
    if "" in missing:
        raise PromptContextError(
            "the prompt has an empty {} field; write {{}} for literal braces, or {name} to "
            "insert a variable"
        )
    if missing:
        raise PromptContextError(
            f"the prompt refers to undefined name(s): {', '.join(missing)}. Define them in the "
            "notebook first, or write {{ and }} for literal braces."
        )
    try:
        return formatter.vformat(prompt, (), dict(namespace))
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise PromptContextError(f"could not fill in the prompt: {exc!r}") from None


def _root(field_name: str) -> str:
    for separator in (".", "["):
        field_name = field_name.split(separator, 1)[0]
    return field_name.split("!", 1)[0].split(":", 1)[0]


def summarize(name: str, value: Any, limit: int = SUMMARY_CHARS) -> str:
    """A compact description of one variable: type, shape and a preview."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    lines = [f"### `{name}`: {kind}"]
    if _is_dataframe(value):
        lines.append(f"shape: {value.shape}")
        lines.append("dtypes:\n" + value.dtypes.to_string())
        lines.append("head:\n" + value.head(5).to_string())
    elif hasattr(value, "shape") and hasattr(value, "dtype"):
        lines.append(f"shape: {tuple(value.shape)}, dtype: {value.dtype}")
        lines.append(_short_repr(value))
    else:
        if hasattr(value, "__len__"):
            with contextlib.suppress(TypeError):
                lines.append(f"len: {len(value)}")
        lines.append(_short_repr(value))
    summary = "\n".join(lines)
    if len(summary) > limit:
        summary = summary[:limit] + f"\n... ({len(summary) - limit} more characters cut)"
    return summary


def _is_dataframe(value: Any) -> bool:
    return all(hasattr(value, a) for a in ("dtypes", "head", "shape", "to_string"))


def _short_repr(value: Any) -> str:
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = 400
    shortener.maxlist = shortener.maxdict = shortener.maxtuple = shortener.maxset = 20
    return shortener.repr(value)


def attach(prompt: str, names: list[str], namespace: Mapping[str, Any]) -> str:
    """Append summaries of the named variables to the prompt."""
    missing = [n for n in names if n not in namespace]
    if missing:
        raise PromptContextError(f"--context names undefined variable(s): {', '.join(missing)}")
    if not names:
        return prompt
    summaries = "\n\n".join(summarize(n, namespace[n]) for n in names)
    return f"{prompt}\n\nVariables from the notebook:\n\n{summaries}"
