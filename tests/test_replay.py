"""Reproducible agent notebooks: an unchanged ``%%agent`` cell replays its recorded turn.

Real kernels (nbclient, as papermill runs them), the real Claude Code CLI, the scripted model
server; one store file and one CLI config dir shared by the runs, as on one machine.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from agentkernel import replay
from agentkernel._demo import demo_script
from agentkernel.store import SCHEMA_VERSION, Store
from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .kernel_client import KernelDriver
from .test_magics import kernel  # noqa: F401 (the fixture: a kernel with %load_ext)

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
VOLATILE = re.compile(r"\d+(\.\d+)?\s*(s|ms|tokens?)\b|\$\d+\.\d+|\d[\d,]* tokens")
"""Figures that differ between two runs of the same turn: times, costs, token counts."""


def _env(server: ScriptedModelServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / "claude-config"
    config.mkdir(exist_ok=True)
    return {
        **os.environ,
        **server.claude_env(),
        "CLAUDE_CONFIG_DIR": str(config),
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "AGENTKERNEL_STORE": str(tmp_path / "store.db"),
        **extra,
    }


def _quickstart() -> Any:
    """The quickstart notebook without its saved outputs."""
    notebook = nbformat.read(QUICKSTART, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    return notebook


def _run(notebook: Any, work: Path, env: dict[str, str]) -> Any:
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute(env=env)
    return notebook


def _agent_meta(cell: Any) -> dict[str, Any]:
    found = [
        o.metadata["agentkernel"] for o in cell.outputs if "agentkernel" in o.get("metadata", {})
    ]
    assert found, f"no agent output in {cell.source[:60]!r}"
    return found[-1]


def _shown(cell: Any) -> list[dict[str, str]]:
    """A cell's outputs as a reader sees them, volatile figures masked."""
    shown = []
    for output in cell.outputs:
        data = output.get("data") or {"text/plain": output.get("text", "")}
        shown.append({k: VOLATILE.sub("#", str(v)) for k, v in data.items()})
    return shown


def _agent_cells(notebook: Any) -> list[Any]:
    return [c for c in notebook.cells if c.cell_type == "code" and "%%agent" in c.source]


def test_quickstart_replays_unchanged_cells_and_runs_changed_ones(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with ScriptedModelServer(demo_script()) as server:
        env = _env(server, tmp_path)
        first = _run(_quickstart(), work, env)
        recorded = len(server.requests)
        assert recorded > 0

        # Run 2, a new kernel: nothing reaches the model, and every output is the same.
        second = _run(_quickstart(), work, env)
        assert len(server.requests) == recorded
        for a, b in zip(first.cells, second.cells, strict=True):
            if a.cell_type == "code":
                assert _shown(a) == _shown(b), a.source
        for cell in _agent_cells(second):
            meta = _agent_meta(cell)
            assert meta["replayed"]["from_turn"] == meta["turn"]
            assert meta["cost_usd"] == 0
        # -o VAR gives the same value (the cell after it prints its first line).
        printed = next(c for c in second.cells if c.source.startswith("print(answer"))
        assert "Double 21 is **42**" in printed.outputs[0]["text"]

        # Run 3: one prompt changed in the middle: it and the cells after run, those before
        # replay; the fresh turn carries the replayed history to the model.
        changed = _quickstart()
        cell = next(c for c in changed.cells if "double {x}" in c.source)
        cell.source = cell.source.replace("double {x}?", "double {x}, please?")
        third = _run(changed, work, env)
        fresh = server.requests[recorded:]
        assert fresh, "the changed cell did not reach the model"
        prompts = [_agent_meta(c) for c in _agent_cells(third)]
        replayed = ["replayed" in m for m in prompts]
        assert replayed == [True, True, False, False]
        history = json.dumps(fresh[0].body)
        assert "What can you do in this notebook?" in history
        assert "double 21, please?" in history
        # ...and not the recorded turns after the replayed ones (the old third and fourth).
        assert "double 21?" not in history and "first thing" not in history
        assert "first thing" in fresh[-1].last_user_text

        # Run 4: AGENTKERNEL_REPLAY=always and a new cell: it fails, naming it; no model call.
        before = len(server.requests)
        added = _quickstart()
        at = next(i for i, c in enumerate(added.cells) if "first thing" in c.source)
        added.cells.insert(at, nbformat.v4.new_code_cell("%%agent\nWhat is new in here?"))
        with pytest.raises(CellExecutionError) as failed:
            _run(added, work, {**env, replay.ENV: "always"})
        assert "What is new in here?" in str(failed.value)
        assert "has no recorded turn" in str(failed.value)
        assert len(server.requests) == before
        before_it = _agent_cells(added)[:3]
        assert all("replayed" in _agent_meta(c) for c in before_it)
        assert not _agent_cells(added)[4].outputs  # nothing ran after the failure


def test_replayed_approved_tool_call_does_not_run_again(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    log = work / "log.txt"
    # The newest question first: a turn after replayed ones may carry their prompts as text.
    script = [
        Reply(match="tool_result", blocks=[text("Appended a line.")], times=0),
        Reply(match="what did you do", blocks=[text("I appended a line to the log.")], times=0),
        Reply(
            match="append a line",
            blocks=[tool_use("Bash", {"command": f"echo ran >> {log}"})],
            times=0,
        ),
    ]
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext agentkernel"),
            nbformat.v4.new_code_cell("%%agent -p allow-all -o said\nappend a line to the log"),
            nbformat.v4.new_code_cell("%%agent --fresh\nwhat did you do?"),
        ]
    )
    with ScriptedModelServer(script) as server:
        env = _env(server, tmp_path)
        first = _run(nbformat.from_dict(notebook), work, env)
        assert log.read_text() == "ran\n"
        stamp = log.stat().st_mtime_ns
        approvals = _agent_meta(first.cells[1])["approvals"]
        assert [(a["tool_name"], a["behavior"]) for a in approvals] == [("Bash", "allow")]
        calls = len(server.requests)

        second = _run(nbformat.from_dict(notebook), work, env)
        assert log.read_text() == "ran\n" and log.stat().st_mtime_ns == stamp
        meta = _agent_meta(second.cells[1])
        assert "replayed" in meta and meta["approvals"] == approvals
        assert _shown(second.cells[1]) == _shown(first.cells[1])
        # --fresh ran the next cell, continuing the replayed conversation (a fork of it).
        fresh = server.requests[calls:]
        sent = json.dumps(fresh[0].body)
        assert len(fresh) == 1 and "append a line to the log" in sent
        # The recorded conversation went on past the replayed turn: not carried over.
        assert sent.count("what did you do") == 1 and "I appended a line" not in sent
        assert "replayed" not in _agent_meta(second.cells[2])


def test_key_covers_what_the_agent_is_asked() -> None:
    base = {
        "backend": "claude",
        "model": None,
        "prompt": "hi",
        "context": (),
        "permission_mode": None,
        "previous": None,
    }
    key = replay.replay_key(**base)
    assert key == replay.replay_key(**base)
    for field, other in [
        ("backend", "codex"),
        ("model", "m"),
        ("prompt", "hi!"),
        ("context", ("df",)),
        ("permission_mode", "allow-all"),
        ("previous", key),
    ]:
        assert replay.replay_key(**{**base, field: other}) != key, field


def test_policy_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(replay.ENV, raising=False)
    assert replay.resolve(None, None, headless=True) == "auto"
    assert replay.resolve(None, None, headless=False) == "never"
    assert replay.resolve(None, "auto", headless=False) == "auto"
    monkeypatch.setenv(replay.ENV, "always")
    assert replay.resolve(None, "never", headless=False) == "always"
    assert replay.resolve("never", None, headless=True) == "never"
    monkeypatch.setenv(replay.ENV, "sometimes")
    with pytest.raises(ValueError, match="AGENTKERNEL_REPLAY='sometimes'"):
        replay.resolve(None, None, headless=True)


def test_migration_adds_replay_key_to_an_existing_store(tmp_path: Path) -> None:
    """A version-1 store (turns without replay keys) opens, migrates and keeps its turns."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        from agentkernel.store import MIGRATIONS

        MIGRATIONS[0](conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO sessions (id, created_at, updated_at) VALUES ('s1', 1, 1)",
        )
        conn.execute(
            "INSERT INTO turns (session_id, number, prompt, status, started_at) "
            "VALUES ('s1', 1, 'old', 'completed', 1)"
        )
    store = Store(path)
    try:
        assert [t.replay_key for t in store.turns("s1")] == [None]
        store.set_replay_key("s1", 1, "k")
        found = store.find_replay("k")
        assert found is not None and found.prompt == "old" and found.replayed_from is None
        store.set_replay_key("s1", 1, "k", replayed_from="s0:1")
        assert store.find_replay("k") is None  # a replay is never the source of one
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_replay_settings_in_a_kernel_give_the_same_values(
    server: ScriptedModelServer,
    kernel: tuple[Any, KernelDriver],  # noqa: F811 (the fixture)
) -> None:
    """A headless cell replays by default, a person's cell runs the agent; `%agent replay`
    and ``--replay`` / ``--fresh`` decide otherwise; ``-o VAR`` and ``--insert-code`` give
    what the recorded turn gave."""
    server.add(Reply(match="print pi", blocks=[text("```python\nprint(3.14)\n```")], times=0))
    _, driver = kernel
    cell = "%%agent --new -o said --insert-code\nprint pi"

    def offered(run: Any) -> list[str]:
        payload = (run.reply or {})["content"]["payload"]
        return [p["text"] for p in payload if p.get("source") == "set_next_input"]

    first = driver.run(cell)
    assert first.status == "ok", first.error
    assert len(server.requests) == 1
    driver.run("said = None")
    replayed = driver.run(cell)  # headless (no stdin): auto, so it replays
    assert replayed.status == "ok", replayed.error
    assert len(server.requests) == 1
    assert offered(replayed) == offered(first) == ["print(3.14)"]
    assert "print(3.14)" in driver.run("print(said)").stdout

    person = driver.run(cell, allow_stdin=True)  # a person's cell: never, unless asked
    assert person.status == "ok", person.error
    assert len(server.requests) == 2
    assert "replay: on" in driver.run("%agent replay on").stdout
    assert driver.run(cell, allow_stdin=True).status == "ok" and len(server.requests) == 2

    assert "replay: off" in driver.run("%agent replay off").stdout
    assert driver.run(cell).status == "ok" and len(server.requests) == 3
    assert driver.run(cell.replace("--new", "--new --replay")).status == "ok"
    assert len(server.requests) == 3
    both = driver.run("%%agent --replay --fresh\nprint pi")
    assert both.status == "error" and "contradict" in both.error
    never = driver.run("%%agent --new --replay\nnever asked before")
    assert never.status == "error" and "'never asked before'" in never.error
    assert len(server.requests) == 3
