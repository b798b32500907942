"""Export a stored session: as Markdown, as a new notebook that shows it the way it ran, or as
a plain-text transcript (what ``%agent show`` prints).

All read the store only; no agent is started. Each turn's events are drawn by
`agentkernel.render`, the same code that draws the static output of a live ``%%agent`` cell, so
an exported notebook looks like the one the session ran in. Everything was redacted on the way
in; the export redacts its output once more, because secrets present in the environment now may
not have been then. Text that UTF-8 cannot hold (a lone surrogate from a file name) is shown as
U+FFFD, so every export can be written to a file.
"""

from __future__ import annotations

import datetime
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import render
from ._redact import Redactor, redactor
from .events import Event
from .store import SessionRecord, Store, StoredTurn, utf8_text

__all__ = ["to_markdown", "to_notebook", "transcript"]


def to_markdown(store: Store, session_id: str) -> str:
    """The session as Markdown: title, a metadata header, then each turn's prompt and what
    the agent said and did. `session_id` may be anything `Store.get_session` accepts."""
    record = _session(store, session_id)
    parts = [f"# {_title(record)}", "", _header(record, store.turns(record.id))]
    for number, turn, events in _turns(store, record):
        parts += ["", f"## {_turn_heading(number, turn)}", ""]
        if turn is not None and turn.prompt:
            parts += [_quote(turn.prompt), ""]
        parts.append(render.markdown(events))
    return _clean(redactor(), "\n".join(parts).rstrip() + "\n")


def transcript(store: Store, session_id: str) -> str:
    """The session as plain text: per turn, its prompt and the turn as `render.text` draws it
    (what the agent said and did, no times or costs), and the turn's error if it failed."""
    record = _session(store, session_id)
    parts = [f"# {_title(record)}"]
    for number, turn, events in _turns(store, record):
        if turn is None:
            parts.append(f"## Turn {number}")
        else:
            prompt = "\n".join(f"> {line}" for line in turn.prompt.splitlines())
            parts.append(f"## Turn {number} ({turn.status})\n\n{prompt}")
        parts.append(render.text(events).strip())
        if turn is not None and turn.error:
            parts.append(f"Error: {turn.error}")
    return _clean(redactor(), "\n\n".join(part for part in parts if part) + "\n")


def to_notebook(
    store: Store, session_id: str, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write the session as a new notebook (nbformat 4) and return its path.

    The notebook opens with a Markdown cell (title and metadata) and a ``%load_ext
    agentkernel`` cell; then each turn is one ``%%agent --session <name>`` cell holding the
    prompt, whose output is the turn as rendered when it ran. ``metadata.agentkernel.sessions``
    links the session name to the stored session, so the notebook can continue it. An
    existing file is left alone unless `overwrite` is true.
    """
    try:
        import nbformat
        from nbformat import v4
    except ImportError as exc:  # pragma: no cover - nbformat comes with Jupyter
        raise ImportError("exporting to a notebook needs nbformat: pip install nbformat") from exc

    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    record = _session(store, session_id)
    redact = redactor()
    name = record.name or record.id[:8]
    cells = [
        v4.new_markdown_cell(
            _clean(redact, f"# {_title(record)}\n\n{_header(record, store.turns(record.id))}")
        ),
        v4.new_code_cell("%load_ext agentkernel"),
    ]
    for number, turn, events in _turns(store, record):
        prompt = turn.prompt if turn is not None else ""
        output = v4.new_output(
            "display_data", data=_clean(redact, dict(render.mime_bundle(events))), metadata={}
        )
        cells.append(
            v4.new_code_cell(
                _clean(redact, f"%%agent --session {shlex.quote(name)}\n{prompt}"),
                outputs=[output],
                metadata={
                    "agentkernel": {
                        "session_id": record.id,
                        "turn": number,
                        "status": turn.status if turn is not None else None,
                    }
                },
            )
        )
    notebook = v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.metadata["agentkernel"] = {"sessions": {name: _link(record)}}
    nbformat.validate(notebook)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    return target


def _clean(redact: Redactor, value: Any) -> Any:
    """`value` (a string, or dicts and lists of them) redacted and valid UTF-8."""
    if isinstance(value, str):
        return utf8_text(redact.text(value))
    if isinstance(value, dict):
        return {k: _clean(redact, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(redact, v) for v in value]
    return value


def _session(store: Store, session_id: str) -> SessionRecord:
    record = store.get_session(session_id)
    if record is None:
        raise KeyError(f"no session {session_id!r} in {store.path}")
    return record


def _turns(
    store: Store, record: SessionRecord
) -> list[tuple[int, StoredTurn | None, Sequence[Event]]]:
    """(number, stored turn, events) for every turn, in order. Events outside any turn
    (number 0: connecting, between turns) are left out; a turn with events but no turn row
    (a writer that never called `start_turn`) is kept, without a prompt."""
    events: dict[int, list[Event]] = {}
    for event in store.events(record.id):
        events.setdefault(event.turn, []).append(event)
    turns = {turn.number: turn for turn in store.turns(record.id)}
    numbers = sorted((set(turns) | set(events)) - {0})
    return [(n, turns.get(n), events.get(n, [])) for n in numbers]


def _link(record: SessionRecord) -> dict[str, Any]:
    """What the notebook keeps about a session so it can find and resume it."""
    return {
        "id": record.id,
        "backend": record.backend,
        "backend_session_id": record.backend_session_id,
        "model": record.model,
        "title": record.title,
    }


def _title(record: SessionRecord) -> str:
    return record.title or record.name or f"Session {record.id[:8]}"


def _turn_heading(number: int, turn: StoredTurn | None) -> str:
    if turn is None or turn.status == "completed":
        return f"Turn {number}"
    return f"Turn {number} ({turn.status})"


def _header(record: SessionRecord, turns: Sequence[StoredTurn]) -> str:
    """The session's metadata as a Markdown list; fields without a value are left out."""
    usage = record.usage
    backend = record.backend + (
        f" (session `{record.backend_session_id}`)" if record.backend_session_id else ""
    )
    model = (record.model or "") + (
        f", reasoning effort {record.reasoning_effort}" if record.reasoning_effort else ""
    )
    rows = [
        ("Session", f"`{record.id}`" + (f" ({record.name})" if record.name else "")),
        ("Backend", backend),
        ("Model", model),
        ("Kind", f"{record.kind}, child of `{record.parent_id}`" if record.parent_id else ""),
        ("Created", _when(record.created_at)),
        ("Updated", _when(record.updated_at)),
        ("Turns", str(len(turns))),
        (
            "Tokens",
            f"{usage.total_tokens:,} ({usage.input_tokens:,} in, {usage.output_tokens:,} out, "
            f"{usage.cache_read_tokens:,} cache read, {usage.cache_creation_tokens:,} cache "
            "write)",
        ),
        ("Cost", f"${usage.cost_usd:.4f}" if usage.cost_usd else ""),  # "": no price known
        ("Notebook", f"`{record.notebook_path}`" if record.notebook_path else ""),
        ("Working directory", f"`{record.cwd}`" if record.cwd else ""),
        ("Summary", record.summary or ""),
    ]
    return "\n".join(f"- **{label}:** {value}" for label, value in rows if value)


def _when(timestamp: float) -> str:
    if not timestamp:
        return ""
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
