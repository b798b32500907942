"""A replayed cell a person runs offers "run fresh": the agent answers again, in its place.

A real kernel driven through jupyter_client as a front end drives it (the click is the
``comm_msg`` a browser sends), the real Claude Code CLI, the scripted model.
"""

from __future__ import annotations

from typing import Any

from jupyter_client import KernelManager

from agentkernel.testing import Reply, ScriptedModelServer, text

from .kernel_client import CellRun, KernelDriver, widget_id
from .test_magics import kernel  # noqa: F401 (the fixture: a kernel with %load_ext)


def _displays(run: CellRun, *types: str) -> list[dict[str, Any]]:
    return [m["content"] for m in run.of_type(*types or ("display_data", "update_display_data"))]


def _agent_output(run: CellRun) -> dict[str, Any]:
    """The last output of `run` that carries a turn's provenance."""
    found = [c for c in _displays(run) if "agentkernel" in c.get("metadata", {})]
    assert found, "no agent output"
    return found[-1]


def test_run_fresh_replaces_the_replayed_turn(
    server: ScriptedModelServer,
    kernel: tuple[KernelManager, KernelDriver],  # noqa: F811 (the fixture)
) -> None:
    server.add(
        Reply(match="name a colour", blocks=[text("Recorded: blue.")]),
        Reply(match="name a colour", blocks=[text("Fresh: green.")]),
    )
    _, driver = kernel
    cell = "%%agent --new -o said\nname a colour"
    recorded = driver.run(cell)  # headless: the agent runs, and the turn is recorded
    assert recorded.status == "ok", recorded.error
    assert len(server.requests) == 1
    assert "replay: on" in driver.run("%agent replay on").stdout

    replayed = driver.run(cell, allow_stdin=True)  # a person's cell, replay on
    assert replayed.status == "ok", replayed.error
    assert len(server.requests) == 1
    output = _agent_output(replayed)
    meta = output["metadata"]["agentkernel"]
    assert "replayed" in meta and "Recorded: blue." in output["data"]["text/plain"]
    offer = [c for c in _displays(replayed, "display_data") if "replayed · recorded" in str(c)]
    assert len(offer) == 1, "no 'replayed · recorded ...' line under the replayed output"
    assert "--fresh" in offer[0]["data"]["text/plain"]  # what a saved notebook keeps

    clicked = CellRun(driver.click(widget_id(replayed, "agentkernel-fresh", "run fresh")))
    replayed_id = output["transient"]["display_id"]
    final = driver.wait_for(
        clicked,
        lambda m: (
            m["msg_type"] == "update_display_data"
            and m["content"]["transient"]["display_id"] == replayed_id
            and "agentkernel" in m["content"]["metadata"]
        ),
    )["content"]
    assert len(server.requests) == 2
    assert "Fresh: green." in final["data"]["text/plain"]
    fresh = final["metadata"]["agentkernel"]
    # In the replay's place: its turn number and replay key, no replay mark.
    assert "replayed" not in fresh
    assert (fresh["turn"], fresh["replay_key"]) == (meta["turn"], meta["replay_key"])
    offer_id = offer[0]["transient"]["display_id"]
    said = driver.wait_for(
        clicked,
        lambda m: (
            m["msg_type"] == "update_display_data"
            and m["content"]["transient"]["display_id"] == offer_id
        ),
    )
    assert "ran fresh at" in said["content"]["data"]["text/plain"]
    assert "Fresh: green." in driver.run("print(said)").stdout

    # The fresh answer is now the cell's recording: the next replay gives it back.
    again = driver.run(cell, allow_stdin=True)
    assert again.status == "ok", again.error
    assert len(server.requests) == 2
    assert "Fresh: green." in _agent_output(again)["data"]["text/plain"]
