"""Replays from a notebook alone: a CI machine without the store replays from a replay file.

Machine A runs the quickstart notebook (real kernels through nbclient, the real Claude Code
CLI, the scripted model) and saves it; a kernel that knows the saved notebook finds its turns
in the store from the outputs' provenance and writes ``quickstart.agentreplay.json`` beside
it. Machine B is a fresh directory, store, HOME and CLI config dir holding only the notebook and
that file: its runs make no model request.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from agentkernel import replay
from agentkernel._demo import demo_script
from agentkernel.testing import ScriptedModelServer

from .test_replay import _agent_cells, _agent_meta, _env, _quickstart, _run, _shown

SECRET = "scripted stand-in for a real model"
"""Words of a demo reply, posing as the value of a secret variable on the exporting machine."""


def _machine(
    tmp_path: Path, name: str, server: ScriptedModelServer, **extra: str
) -> dict[str, str]:
    """The environment of a machine of its own: its store, HOME and CLI config dir."""
    root = tmp_path / name
    (root / "home").mkdir(parents=True)
    return _env(server, root, HOME=str(root / "home"), **extra)


def test_a_machine_without_the_store_replays_from_the_exported_file(tmp_path: Path) -> None:
    a_work, b_work = tmp_path / "a-work", tmp_path / "b-work"
    a_work.mkdir()
    b_work.mkdir()
    with ScriptedModelServer(demo_script()) as server:
        env_a = _machine(tmp_path, "a", server)
        first = _run(_quickstart(), a_work, env_a)
        recorded = len(server.requests)
        assert recorded > 0
        saved = a_work / "quickstart.ipynb"
        nbformat.write(first, saved)

        # A new kernel told the notebook's path (as Jupyter Server tells it) exports from the
        # saved outputs' provenance and the store alone: it has run no cell of the notebook.
        exporter = nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell("%load_ext agentkernel"),
                nbformat.v4.new_code_cell("%agent export-replay"),
            ]
        )
        done = _run(exporter, a_work, {**env_a, "JPY_SESSION_NAME": str(saved)})
        assert "4 recorded turn(s)" in done.cells[1].outputs[0]["text"]
        exported = a_work / "quickstart.agentreplay.json"
        data = json.loads(exported.read_text())
        keys = [_agent_meta(c)["replay_key"] for c in _agent_cells(first)]
        assert [t["key"] for t in data["turns"]] == keys
        assert len(server.requests) == recorded

        # Machine B: the notebook (no outputs) and the file beside it; an empty store.
        shutil.copy(exported, b_work)
        env_b = _machine(tmp_path, "b", server)
        assert not Path(env_b["AGENTKERNEL_STORE"]).exists()
        second = _run(_quickstart(), b_work, env_b)
        assert len(server.requests) == recorded, "machine B called the model"
        for a, b in zip(first.cells, second.cells, strict=True):
            if a.cell_type == "code":
                assert _shown(a) == _shown(b), a.source
        for cell, key in zip(_agent_cells(second), keys, strict=True):
            meta = _agent_meta(cell)
            assert meta["replay_key"] == key and "replayed" in meta
        assert not (b_work / "hello.txt").exists(), "a replayed tool call ran"

        # Machine C: AGENTKERNEL_REPLAY=always, the file named by AGENTKERNEL_REPLAY_FILE from
        # elsewhere; it exports what it replayed, redacting a secret of its own environment.
        c_work = tmp_path / "c-work"
        c_work.mkdir()
        env_c = _machine(
            tmp_path,
            "c",
            server,
            **{replay.ENV: "always", replay.FILE_ENV: str(exported), "DEMO_API_KEY": SECRET},
        )
        notebook = _quickstart()
        notebook.cells.append(nbformat.v4.new_code_cell("%agent export-replay again.json"))
        third = _run(notebook, c_work, env_c)
        assert len(server.requests) == recorded
        assert all("replayed" in _agent_meta(c) for c in _agent_cells(third))
        again = json.loads((c_work / "again.json").read_text())
        assert [t["key"] for t in again["turns"]] == keys
        assert [t["session_id"] for t in again["turns"]] == [t["session_id"] for t in data["turns"]]
        assert SECRET not in json.dumps(again) and SECRET in json.dumps(data)
        assert "[REDACTED]" in json.dumps(again)


def test_a_missing_or_broken_replay_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(replay.FILE_ENV, str(tmp_path / "nowhere.json"))
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json.*export-replay"):
        replay.replay_files(None, tmp_path)
    broken = tmp_path / "x.agentreplay.json"
    broken.write_text('{"format": "something else"}')
    monkeypatch.delenv(replay.FILE_ENV)
    assert replay.replay_files(None, tmp_path) == [broken.resolve()]
    with pytest.raises(ValueError, match=r"x\.agentreplay\.json is not a replay file"):
        replay.find(None, "k", [broken])
