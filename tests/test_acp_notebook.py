"""The ACP backend in a notebook: a stock ``python3`` kernel (through jupyter_client) runs
``%%agent --backend acp --agent copilot`` cells against the real ``copilot --acp`` and the
scripted model; the test plays the front end (widget clicks are comm messages sent while the
cell's execute_request is still running). And ``%agent agents`` there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentkernel.backends._acp_agents import find_program
from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .conftest import agent_kernel
from .kernel_client import KernelDriver, has_widget, widget_id

COPILOT = find_program("copilot", os.environ)
pytestmark = pytest.mark.skipif(
    COPILOT is None, reason="copilot is not installed: python -m agentkernel install-cli copilot"
)

CELL = "%%agent --backend acp --agent copilot"


@pytest.fixture
def config_home(tmp_path: Path) -> Path:
    """The kernel's XDG_CONFIG_HOME: where its agents file goes (none to begin with)."""
    return tmp_path / "config"


@pytest.fixture
def kernel(
    copilot_env: dict[str, str], config_home: Path, workspace: Path
) -> Iterator[KernelDriver]:
    """A python3 kernel whose Copilot runs on the scripted model. The kernel keeps the
    user's HOME: it finds the installed CLIs below it."""
    copilot = {name: value for name, value in copilot_env.items() if name != "HOME"}
    env = {**os.environ, **copilot, "XDG_CONFIG_HOME": str(config_home)}
    with agent_kernel(env, workspace) as (_, driver):
        yield driver


def test_a_copilot_cell_streams_its_turn(server: ScriptedModelServer, kernel: KernelDriver) -> None:
    story = "".join(f"word{i} " for i in range(300))
    server.add(Reply(match="tell a story", blocks=[text(story)], chunk_size=5, delay=0.005))
    run = kernel.start(f"{CELL}\ntell a story", allow_stdin=True)
    kernel.draw_until(run, lambda m: m["msg_type"] == "comm_open")
    kernel.finish(run, timeout=120)
    assert run.status == "ok", run.error
    appended = [
        m["content"]["data"].get("content", {}).get("append", "")
        for m in run.of_type("comm_msg")
        if m["content"]["data"].get("method") == "custom"
    ]
    streamed = "".join(appended)
    assert len([a for a in appended if a]) >= 2, "the text arrives in pieces while it streams"
    assert streamed and story.startswith(streamed), "streamed text arrives in order, unchanged"
    final = run.outputs("text/plain")
    assert final and story.strip() in final[-1], "the static output holds the whole text"
    provenance = run.provenance()
    assert provenance and provenance[-1]["backend"] == "acp"

    server.add(Reply(match="and again", blocks=[text("Same session.")]))
    again = kernel.run("%%agent\nand again")
    assert again.status == "ok", again.error
    assert "Same session." in "".join(again.outputs())
    sent = str(server.requests[-1].body)
    assert "tell a story" in sent, "the second cell continues the same conversation"

    asked = len(server.requests)
    switched = kernel.run("%%agent --agent claude\nand now you")
    assert switched.status == "error"
    assert "'copilot'" in switched.error and "--new --backend acp --agent claude" in switched.error
    assert len(server.requests) == asked, "a refused cell sends nothing"


@pytest.mark.parametrize("choice", ["allow", "deny"])
def test_approval_click_answers_the_running_cell(
    choice: str, server: ScriptedModelServer, kernel: KernelDriver, workspace: Path
) -> None:
    marker = workspace / "clicked.txt"
    server.add(
        Reply(
            match="make",
            blocks=[tool_use("bash", {"command": f"echo hi > {marker}", "description": "Make"})],
        ),
        Reply(match="tool_result", blocks=[text("File made.")]),
    )
    run = kernel.start(f"{CELL}\nmake the file", allow_stdin=True)
    kernel.draw_until(run, has_widget("agentkernel-deny"))
    kernel.click(widget_id(run, f"agentkernel-{choice}"))
    kernel.finish(run, timeout=120)
    assert run.status == "ok", run.error
    final = "".join(run.outputs())
    if choice == "allow":
        assert marker.read_text() == "hi\n"
        assert "File made." in final
    else:
        # Copilot ends its turn on a denial: the model is not asked again in this turn.
        assert not marker.exists(), "a denied command ran"
        assert not [r for r in server.requests if r.matched and r.matched.match == "tool_result"]
    provenance = run.provenance()
    assert provenance[-1]["approvals"][0]["behavior"] == choice
    assert provenance[-1]["approvals"][0]["by"] == "user"


def test_agent_agents_lists_presets_and_the_agents_file(
    kernel: KernelDriver, config_home: Path
) -> None:
    agents_file = config_home / "agentkernel" / "agents.toml"
    listed = kernel.run("%agent agents")
    assert listed.status == "ok", listed.error
    lines = listed.stdout.splitlines()
    assert str(agents_file) in lines[0] and "(none yet)" in lines[0]
    row = {line.split()[0]: line for line in lines[1:]}
    assert f"installed: {COPILOT}" in row["copilot"]
    assert "not installed: npm install -g @google/gemini-cli" in row["gemini"] or (
        "installed:" in row["gemini"]
    )

    agents_file.parent.mkdir(parents=True)
    agents_file.write_text(
        '[agents.mine]\ncommand = "no-such-agent-here"\ninstall = "pipx install mine"\n'
    )
    listed = kernel.run("%agent agents")
    row = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "not installed: pipx install mine" in row["mine"]
    assert str(agents_file) in row["mine"], "an agent from the file says where it comes from"

    agents_file.write_text("[agents.mine]\ncommand = 3\n")
    broken = kernel.run("%agent agents")
    assert broken.status == "error"
    assert str(agents_file) in broken.error and "command must be a str" in broken.error


def test_agent_needs_the_acp_backend(kernel: KernelDriver, server: ScriptedModelServer) -> None:
    refused = kernel.run("%%agent --agent copilot\nhello")
    assert refused.status == "error"
    assert "--backend acp" in refused.error, refused.error
    assert not server.requests, "a refused cell starts no agent"
