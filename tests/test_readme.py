"""The README's Python examples run, as written, against the scripted model."""

from __future__ import annotations

import ast
import asyncio
import os
import re
from pathlib import Path

import pytest

from agentkernel import tools
from agentkernel.testing import Reply, ScriptedModelServer, text

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = [
    b
    for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    if not b.lstrip().startswith("%")
]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project").mkdir()
    before = {t.name for t in tools.shared.tools()}
    with ScriptedModelServer([Reply(blocks=[text("ok")], times=0)]) as server:
        # Examples that talk to "the real agent" get the scripted one through the environment.
        for name, value in {**server.claude_env(), "CLAUDE_CONFIG_DIR": str(tmp_path)}.items():
            monkeypatch.setenv(name, value)
        code = compile(
            BLOCKS[index], f"README block {index}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        result = eval(code, {"__name__": "__readme__"})  # our own README, as written
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    for added in {t.name for t in tools.shared.tools()} - before:
        tools.shared.remove(added)  # an example's @agentkernel.tool must not reach later tests
    out = capsys.readouterr().out
    if "Hi there!" in BLOCKS[index]:
        assert "Hi there!" in out and "Done." in out
        assert (tmp_path / "out.txt").exists()
    assert os.getcwd() == str(tmp_path)
