"""papermill runs the quickstart notebook twice: the second run replays every agent cell.

Real kernels started by papermill, the real Claude Code CLI, the scripted demo model (which
streams at about a real model's pace); one store and one CLI config dir, as on one machine.
The wall-clock figures are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest

from agentkernel._demo import demo_script
from agentkernel.testing import ScriptedModelServer

from .test_replay import QUICKSTART, _agent_cells, _agent_meta, _env, _shown

papermill = pytest.importorskip("papermill")


def test_second_papermill_run_replays_without_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    source = work / "quickstart.ipynb"
    shutil.copy(QUICKSTART, source)
    with ScriptedModelServer(demo_script()) as server:
        for name, value in _env(server, tmp_path).items():
            monkeypatch.setenv(name, value)  # papermill's kernels inherit this environment
        runs, seconds = [], []
        for n in (1, 2):
            target = work / f"run{n}.ipynb"
            started = time.perf_counter()
            papermill.execute_notebook(
                str(source), str(target), cwd=str(work), kernel_name="python3", progress_bar=False
            )
            seconds.append(time.perf_counter() - started)
            runs.append((nbformat.read(target, as_version=4), len(server.requests)))
    (first, after_first), (second, after_second) = runs
    assert after_first > 0
    assert after_second == after_first, "the second papermill run called the model"
    for a, b in zip(first.cells, second.cells, strict=True):
        if a.cell_type == "code":
            assert _shown(a) == _shown(b), a.source
    assert all("replayed" in _agent_meta(c) for c in _agent_cells(second))
    assert not any("replayed" in _agent_meta(c) for c in _agent_cells(first))
    print(
        f"\npapermill quickstart: run 1 {seconds[0]:.2f} s ({after_first} model requests), "
        f"run 2 {seconds[1]:.2f} s (0 model requests): {seconds[0] / seconds[1]:.1f}x faster"
    )
