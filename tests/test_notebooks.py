"""The notebooks in notebooks/ run headless (nbclient, via nbval) against the scripted model.

nbval re-executes each notebook in a real kernel and compares every output with the one saved
in the notebook. To refresh the saved outputs after a deliberate change:
``AGENTKERNEL_REGENERATE_NOTEBOOKS=1 python -m pytest tests/test_notebooks.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentkernel._demo import demo_script
from agentkernel.kernel._demo_script import agent_kernel_script
from agentkernel.notebook._analysis_script import analysis_script
from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent / "notebooks"
SANITIZE = HERE / "nbval_sanitize.cfg"
SCRIPTS: dict[str, Callable[[], list[Reply]]] = {
    "quickstart.ipynb": demo_script,  # %load_ext agentkernel on the python3 kernel
    "agent-kernel.ipynb": agent_kernel_script,  # the Agent kernel
    "analysis.ipynb": analysis_script,  # the notebook tools on a DataFrame
}


def _env(server: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "claude-config"
    config.mkdir(exist_ok=True)
    return {
        **os.environ,
        **server.claude_env(),
        "CLAUDE_CONFIG_DIR": str(config),
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_notebook_validates_with_nbval(name: str, tmp_path: Path) -> None:
    copy = tmp_path / name
    shutil.copy(NOTEBOOKS / name, copy)
    with ScriptedModelServer(SCRIPTS[name]()) as server:
        env = _env(server, tmp_path)
        if os.environ.get("AGENTKERNEL_REGENERATE_NOTEBOOKS"):
            _regenerate(NOTEBOOKS / name, tmp_path, env)
            shutil.copy(NOTEBOOKS / name, copy)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--nbval",
                str(copy),
                "-p",
                "no:cacheprovider",
                "-q",
                "--nbval-cell-timeout=120",
                "--nbval-sanitize-with",
                str(SANITIZE),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def _regenerate(path: Path, workdir: Path, env: dict[str, str]) -> None:
    notebook = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        client = NotebookClient(
            notebook, timeout=300, resources={"metadata": {"path": str(workdir)}}
        )
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    nbformat.write(notebook, path)


def test_headless_run_denies_even_commands_the_agent_approves_itself(tmp_path: Path) -> None:
    """nbclient, default policy: ``echo`` and ``pwd`` (which Claude Code would run without
    asking) are denied and recorded; with allow-reads a read runs and a write is denied."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("the notes say hello\n")
    script = [
        Reply(match="two commands", blocks=[tool_use("Bash", {"command": "echo hi"})]),
        Reply(match="tool_result", blocks=[tool_use("Bash", {"command": "pwd"})]),
        Reply(match="tool_result", blocks=[text("Both refused.")]),
        Reply(
            match="read then write",
            blocks=[tool_use("Read", {"file_path": str(work / "notes.txt")})],
        ),
        Reply(
            match="tool_result",
            blocks=[tool_use("Write", {"file_path": str(work / "out.txt"), "content": "x"})],
        ),
        Reply(match="tool_result", blocks=[text("Read it; the write was refused.")]),
    ]
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext agentkernel"),
            nbformat.v4.new_code_cell("%%agent\nrun two commands"),
            nbformat.v4.new_code_cell("%%agent -p allow-reads\nread then write"),
        ]
    )
    with ScriptedModelServer(script) as server:
        NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(work)}},
        ).execute(env=_env(server, tmp_path))
    decided = []
    for cell in notebook.cells[1:]:
        meta = [
            o.metadata["agentkernel"]
            for o in cell.outputs
            if "agentkernel" in o.get("metadata", {})
        ]
        decided.append([(d["tool_name"], d["behavior"], d["by"]) for d in meta[-1]["approvals"]])
    assert decided[0] == [("Bash", "deny", "policy"), ("Bash", "deny", "policy")]
    assert decided[1] == [("Read", "allow", "policy"), ("Write", "deny", "policy")]
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in notebook.cells[1].outputs)
    assert "\nhi\n" not in shown and str(work) + "\n" not in shown.replace("Bash: pwd", "")
    assert not (work / "out.txt").exists()
