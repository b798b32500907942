"""Every backend in a notebook: a stock python3 kernel with ``%load_ext agentkernel`` and the
backend chosen by ``%config``, headless (the default policy denies, and says so) and with the
user's permission (the command runs). The real CLIs against the scripted model server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from agentkernel.testing import Reply, ScriptedModelServer, text
from agentkernel.testing.backend_conformance import CASES, BackendCase

from .conftest import agent_processes, wait_until_gone
from .kernel_client import KernelDriver

OTHERS = [case for case in CASES if case.name in ("codex", "copilot")]


@pytest.mark.parametrize("case", OTHERS, ids=lambda case: case.name)
def test_a_notebook_on_another_backend(
    case: BackendCase, server: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    if reason := case.missing():
        pytest.skip(reason)
    denied, allowed = workspace / "denied.txt", workspace / "allowed.txt"
    server.add(
        Reply(match="make the first", blocks=[case.shell(f"touch {denied}")], times=0),
        Reply(match="make the second", blocks=[case.shell(f"touch {allowed}")], times=0),
        Reply(match="tool_result", blocks=[text("Handled the file.")], times=0),
    )
    config = tmp_path / "agent-config"
    config.mkdir()
    options = case.session_options(server, config)
    model = options.pop("model", None)
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ), cwd=str(workspace))
    driver = KernelDriver(kc)
    before = {p.pid for p in agent_processes()}
    try:
        assert driver.run("%load_ext agentkernel").status == "ok"
        setup = [
            f"%config AgentMagics.default_backend = {case.name!r}",
            f"%config AgentMagics.session_options = {options!r}",
        ]
        if model:
            setup.append(f"%config AgentMagics.default_model = {model!r}")
        for line in setup:
            assert driver.run(line).status == "ok", line
        first = driver.run("%%agent\nmake the first file")
        assert first.status == "ok", first.error
        shown = first.stdout + "".join(first.outputs())
        assert not denied.exists() and "denied" in shown.lower()
        assert "Handled the file." in shown
        provenance = [
            m["content"]["metadata"]["agentkernel"]
            for m in first.of_type("display_data")
            if "agentkernel" in m["content"]["metadata"]
        ]
        assert provenance[-1]["backend"] == case.name
        second = driver.run("%%agent -p allow-all\nmake the second file")
        assert second.status == "ok", second.error
        assert allowed.exists(), "the allowed command did not run"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    leftover = [p.pid for p in agent_processes() if p.pid not in before]
    assert wait_until_gone(leftover) == [], "an agent outlived the kernel"
