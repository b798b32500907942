"""The Agent kernel on Codex and on Copilot: ``python -m agentkernel install --backend NAME``
writes the variant, jupyter_client starts it from a temp ``JUPYTER_PATH``, and two prompt cells
are two turns of one session (the second's model request carries the first). The agent reaches
the scripted server the way a user points it at a model of their own: Codex through the
``config.toml`` of its ``CODEX_HOME``, Copilot through its provider environment variables;
nothing is passed to the kernel but its environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager, start_new_kernel

from agentkernel.__main__ import main as agentkernel_main
from agentkernel.testing import API_KEY, Reply, ScriptedModelServer, text
from agentkernel.testing.backend_conformance import CODEX, COPILOT, BackendCase

from .conftest import agent_processes, wait_until_gone
from .kernel_client import KernelDriver


def _codex_env(server: ScriptedModelServer, home: Path) -> dict[str, str]:
    """A CODEX_HOME whose config.toml sends model calls to the server, as a user writes it."""
    from agentkernel.backends.codex import config_toml, provider_config

    config = {
        "model": "gpt-5.5",  # a model this Codex knows (`codex debug models`)
        **provider_config(f"{server.url}/v1", env_key="SCRIPTED_MODEL_KEY", retries=0),
    }
    (home / "config.toml").write_text(config_toml(config))
    return {"CODEX_HOME": str(home), "SCRIPTED_MODEL_KEY": API_KEY}


def _copilot_env(server: ScriptedModelServer, home: Path) -> dict[str, str]:
    """The Copilot CLI's own bring-your-own-provider variables, offline, and a COPILOT_HOME
    of its own (its config and session store)."""
    openai = server.openai_env()
    return {
        "COPILOT_HOME": str(home),
        "COPILOT_OFFLINE": "true",
        "COPILOT_PROVIDER_TYPE": "openai",
        "COPILOT_PROVIDER_BASE_URL": openai["OPENAI_BASE_URL"],
        "COPILOT_PROVIDER_API_KEY": openai["OPENAI_API_KEY"],
        "COPILOT_PROVIDER_WIRE_API": "completions",
        "COPILOT_MODEL": "gpt-4.1",
    }


KERNELS: list[tuple[BackendCase, Callable[[ScriptedModelServer, Path], dict[str, str]]]] = [
    (CODEX, _codex_env),
    (COPILOT, _copilot_env),
]


@pytest.fixture
def kernel(
    request: pytest.FixtureRequest,
    server: ScriptedModelServer,
    tmp_path: Path,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[BackendCase, KernelManager, KernelDriver]]:
    """An Agent (NAME) kernel installed under a temp prefix and started from it."""
    case, agent_env = request.param
    if reason := case.missing():
        pytest.skip(reason)
    prefix = tmp_path / "prefix"
    name = f"agent-{case.name}"
    assert (
        agentkernel_main(
            ["install", "--backend", case.name, "--name", name, "--prefix", str(prefix)]
        )
        == 0
    )
    spec_dir = prefix / "share" / "jupyter" / "kernels" / name
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == f"Agent ({case.name.capitalize()})"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    home = tmp_path / "agent-home"
    home.mkdir()
    env = {**os.environ, **agent_env(server, home)}
    before = {p.pid for p in agent_processes()}
    km, kc = start_new_kernel(kernel_name=name, env=env, cwd=str(workspace))
    try:
        yield case, km, KernelDriver(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    leftover = [p.pid for p in agent_processes() if p.pid not in before]
    assert wait_until_gone(leftover) == [], "an agent outlived its kernel"


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k[0].name, indirect=True)
def test_the_variant_kernel_answers_two_turns_of_one_session(
    kernel: tuple[BackendCase, KernelManager, KernelDriver], server: ScriptedModelServer
) -> None:
    case, km, driver = kernel
    server.add(
        Reply(match="favourite colour", blocks=[text("Noted: teal.")], times=0),
        Reply(match="which colour", blocks=[text("You said teal.")], times=0),
    )
    info = driver.client.kernel_info(reply=True)["content"]
    assert info["implementation"] == "agentkernel"
    assert (
        km.kernel_spec is not None
        and km.kernel_spec.argv[-1] == f"--AgentKernel.backend={case.name}"
    )

    first = driver.run("My favourite colour is teal.")
    assert first.status == "ok", first.error
    assert "Noted: teal." in first.stdout + "".join(first.outputs())
    second = driver.run("Now: which colour did I name?")
    assert second.status == "ok", second.error
    assert "You said teal." in second.stdout + "".join(second.outputs())

    request = json.dumps(server.requests[-1].body)
    assert "which colour did I name" in request
    assert "My favourite colour is teal." in request and "Noted: teal." in request, (
        "the second turn's request does not carry the first turn"
    )
    assert second.provenance()[-1]["backend"] == case.name
    listing = driver.run("%agent list").stdout
    assert case.name in listing
