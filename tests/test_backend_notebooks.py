"""Every backend in a notebook: a stock python3 kernel with ``%load_ext agentkernel`` and the
backend chosen by ``%config``, headless (the default policy denies, and says so), with the
user's permission (the command runs), and with a person clicking Allow or Deny on the card in
the running cell. The real CLIs against the scripted model server."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from agentkernel.testing import Reply, ScriptedModelServer, text
from agentkernel.testing.backend_conformance import CASES, BackendCase

from .conftest import agent_kernel, agent_processes, alive, running
from .kernel_client import KernelDriver, has_widget, widget_id

OTHERS = [case for case in CASES if case.name in ("codex", "copilot")]


def _configuration(case: BackendCase, server: ScriptedModelServer, tmp_path: Path) -> list[str]:
    """The lines that make a stock python3 kernel's ``%%agent`` cells run the case's backend
    on the server, configured as a user would (``%config``)."""
    if reason := case.missing():
        pytest.skip(reason)
    config = tmp_path / "agent-config"
    config.mkdir()
    options = case.session_options(server, config)
    model = options.pop("model", None)
    lines = [
        f"%config AgentMagics.default_backend = {case.name!r}",
        f"%config AgentMagics.session_options = {options!r}",
    ]
    if model:
        lines.append(f"%config AgentMagics.default_model = {model!r}")
    return lines


@pytest.fixture
def notebook(
    request: pytest.FixtureRequest,
    server: ScriptedModelServer,
    tmp_path: Path,
    workspace: Path,
) -> Iterator[KernelDriver]:
    """A kernel configured for the case, shut down and checked for agents left behind."""
    setup = _configuration(request.param, server, tmp_path)
    with agent_kernel(dict(os.environ), workspace, *setup) as (_, driver):
        yield driver


@pytest.mark.parametrize("notebook", OTHERS, ids=lambda case: case.name, indirect=True)
def test_a_notebook_on_another_backend(
    notebook: KernelDriver,
    server: ScriptedModelServer,
    workspace: Path,
    request: pytest.FixtureRequest,
) -> None:
    case = request.node.callspec.params["notebook"]
    denied, allowed = workspace / "denied.txt", workspace / "allowed.txt"
    server.add(
        Reply(match="make the first", blocks=[case.shell(f"touch {denied}")], times=0),
        Reply(match="make the second", blocks=[case.shell(f"touch {allowed}")], times=0),
        Reply(match="tool_result", blocks=[text("Handled the file.")], times=0),
    )
    driver = notebook
    first = driver.run("%%agent\nmake the first file")
    assert first.status == "ok", first.error
    shown = first.stdout + "".join(first.outputs())
    assert not denied.exists() and "denied" in shown.lower()
    assert "Handled the file." in shown
    provenance = first.provenance()
    assert provenance[-1]["backend"] == case.name
    second = driver.run("%%agent -p allow-all\nmake the second file")
    assert second.status == "ok", second.error
    assert allowed.exists(), "the allowed command did not run"


@pytest.mark.parametrize("choice", ["allow", "deny"])
@pytest.mark.parametrize("notebook", OTHERS, ids=lambda case: case.name, indirect=True)
def test_an_approval_click_answers_the_running_cell(
    notebook: KernelDriver,
    choice: str,
    server: ScriptedModelServer,
    workspace: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The card's buttons arrive as comm messages while the cell's execute_request is still
    running: Allow runs the command; Deny does not, and the model gets the typed reason."""
    case = request.node.callspec.params["notebook"]
    clicked = workspace / "clicked.txt"
    server.add(
        Reply(match="make the file", blocks=[case.shell(f"touch {clicked}")], times=0),
        Reply(match="tool_result", blocks=[text("Handled the file.")], times=0),
    )
    driver = notebook
    run = driver.start("%%agent\nmake the file", allow_stdin=True)
    driver.draw_until(run, has_widget("agentkernel-deny"))
    assert not clicked.exists(), "the command ran before anyone clicked"
    asked = len(server.requests)
    if choice == "deny":
        driver.type_into(widget_id(run, "agentkernel-reason"), "not today")
    driver.click(widget_id(run, f"agentkernel-{choice}"))
    driver.finish(run, timeout=120)
    assert run.status == "ok", run.error
    final = "".join(run.outputs())
    assert "Handled the file." in final
    after = json.dumps([r.body for r in server.requests[asked:]])
    if choice == "allow":
        assert clicked.exists(), "the allowed command did not run"
    else:
        assert not clicked.exists(), "the denied command ran"
        assert "not today" in after, "the model did not get the reason"
    provenance = run.provenance()
    assert provenance[-1]["backend"] == case.name
    assert [(a["behavior"], a["by"]) for a in provenance[-1]["approvals"]] == [(choice, "user")]


@pytest.mark.parametrize("case", OTHERS, ids=lambda case: case.name)
def test_kill_9_of_the_kernel_during_a_tool_leaves_nothing_after_a_second(
    case: BackendCase, server: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    """SIGKILL gives the kernel no chance to clean up: the agent and the tool it runs must
    still end with it (the launcher's parent-death signal and process-group kill)."""
    tool = "sleep 304.5"
    (workspace / "wait.sh").write_text(f"{tool}\n")
    server.add(
        Reply(match="wait a while", blocks=[case.shell("sh wait.sh")], times=0),
        Reply(match="tool_result", blocks=[text("Waited.")], times=0),
    )
    setup = _configuration(case, server, tmp_path)
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ), cwd=str(workspace))
    driver = KernelDriver(kc)
    try:
        driver.prepare("%load_ext agentkernel", *setup)
        driver.client.execute("%%agent -p allow-all\nwait a while")
        deadline = time.monotonic() + 120
        while not running(tool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running(tool), "the scripted tool never started"
        agents = [p.pid for p in agent_processes()]
        assert agents
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while (running(tool) or alive(agents)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not running(tool), "the agent's tool process outlived the kernel by a second"
        assert not alive(agents), "the agent CLI outlived the kernel by a second"
    finally:
        driver.client.stop_channels()
        km.cleanup_resources()
