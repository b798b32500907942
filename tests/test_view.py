"""The live view in a real ipykernel (driven through jupyter_client like a front end would):
streaming rate, the static output left behind, and approval / question clicks mid-cell."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from agentkernel.events import (
    Decision,
    PermissionRequest,
    Question,
    Text,
    TextDelta,
    ToolCall,
    TurnEnded,
)
from agentkernel.notebook._widget import TextBox
from agentkernel.notebook.prompts import QuestionPrompt
from agentkernel.notebook.view import TurnView

from .kernel_client import CellRun, KernelDriver

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
KERNEL = "agentkernel-view-test"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec running this interpreter's ipykernel, whatever else is installed."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "test", "language": "python"})
    )
    return KernelSpecManager(kernel_dirs=[str(root)])


@pytest.fixture(scope="module")
def driver(kernel_specs: KernelSpecManager) -> Iterator[KernelDriver]:
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield KernelDriver(kc)
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def _state(msg: dict[str, Any]) -> dict[str, Any]:
    return msg["content"].get("data", {}).get("state", {})


def _opened(run: CellRun) -> list[dict[str, Any]]:
    return run.of_type("comm_open")


def _button(cls: str, label: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def match(msg: dict[str, Any]) -> bool:
        state = _state(msg)
        return (
            msg["msg_type"] == "comm_open"
            and state.get("_model_name") == "ButtonModel"
            and cls in state.get("_dom_classes", ())
            and (label is None or state.get("description") == label)
        )

    return match


def _click(driver: KernelDriver, comm_id: str) -> None:
    driver.send_comm(comm_id, {"method": "custom", "content": {"event": "click"}})


STREAM_CELL = """
import asyncio, time
from agentkernel.events import Text, TextDelta, TurnEnded, TurnStarted, Usage
from agentkernel.notebook.view import TurnView

view = TurnView("s1", "test", "model-x")
view.display()

async def tick():
    while True:
        await asyncio.sleep(0.05)
        view.flush()

ticker = asyncio.ensure_future(tick())
chunks = [f"{i:04d}" + ("\\n" if i % 50 == 49 else " ") for i in range(5000)]
view.handle(TurnStarted(prompt="count"))
start = time.monotonic()
for i, chunk in enumerate(chunks):
    view.handle(TextDelta(text=chunk))
    if i % 50 == 49:
        await asyncio.sleep(0.01)
streamed = time.monotonic() - start
view.handle(Text(text="".join(chunks)))
view.handle(TurnEnded(stop_reason="end_turn", usage=Usage(10, 5000), duration_s=1.0))
ticker.cancel()
bundle = view.finish({"turn": 1})
print("STREAMED", streamed, view.updates_sent)
"""


def test_streaming_is_coalesced_and_leaves_a_static_output(driver: KernelDriver) -> None:
    run = driver.run(STREAM_CELL)
    assert run.status == "ok", run.error
    streamed, batches = (float(x) for x in run.stdout.split()[1:3])
    expected = "".join(f"{i:04d}" + ("\n" if i % 50 == 49 else " ") for i in range(5000))

    opened = {m["content"]["comm_id"]: _state(m) for m in _opened(run)}
    assert any(s.get("_model_name") == "VBoxModel" for s in opened.values())
    blocks = {cid for cid, s in opened.items() if s.get("_model_name") == "AnyModel"}
    assert blocks, "the block widgets were not opened"

    messages = run.of_type("comm_msg")
    rate = len(messages) / max(streamed, 1.0)
    print(f"streamed {streamed:.2f}s: {len(messages)} comm messages, {batches:.0f} batches")
    assert len(messages) <= 25 * max(streamed, 1.0) + 10, f"{rate:.1f} updates/s"
    assert batches <= 25 * max(streamed, 1.0)

    appended = "".join(
        m["content"]["data"]["content"]["append"]
        for m in messages
        if m["content"]["data"].get("method") == "custom"
        and "append" in m["content"]["data"]["content"]
    )
    assert appended and expected.startswith(appended), "the stream lost or reordered text"
    assert len(appended) < 2 * len(expected)

    display = run.of_type("display_data")
    assert len(display) == 1 and WIDGET_MIME in display[0]["content"]["data"]
    display_id = display[0]["content"]["transient"]["display_id"]
    updates = run.of_type("update_display_data")
    assert len(updates) == 1
    final = updates[0]["content"]
    assert final["transient"]["display_id"] == display_id
    assert WIDGET_MIME not in final["data"]
    assert set(final["data"]) == {"text/plain", "text/markdown", "text/html"}
    assert expected.rstrip("\n") in final["data"]["text/plain"]
    assert final["metadata"] == {"agentkernel": {"turn": 1}}
    closed = {m["content"]["comm_id"] for m in run.of_type("comm_close")}
    left = [opened[c]["_model_name"] for c in set(opened) - closed]
    assert not left, f"widgets left open after finish: {left}"


APPROVAL_CELL = """
import asyncio, concurrent.futures
from agentkernel.events import PermissionDecided, PermissionRequest, ToolCall, ToolResult
from agentkernel.notebook.view import TurnView

view = TurnView("s1", "test")
view.display()
command = {"command": "rm -rf build"}
view.handle(ToolCall(tool_use_id="t1", name="Bash", input=command, kind="execute",
                    command=command["command"]))
future = concurrent.futures.Future()
request = PermissionRequest(
    request_id="r1", tool_name="Bash", input=command, tool_use_id="t1", _decision=future,
    kind="execute", command=command["command"],
)
view.handle(request)
view.flush(force=True)
decision = await asyncio.wait_for(asyncio.wrap_future(future), 60)
prompt = view._prompts["r1"]
print("DISABLED", [prompt.allow.disabled, prompt.deny.disabled, prompt.reason.disabled])
view.handle(PermissionDecided(
    request_id="r1", tool_name="Bash", behavior=decision.behavior, always=decision.always,
    reason=decision.reason, by=decision.by,
))
view.handle(ToolResult(tool_use_id="t1", output="done"))
view.finish()
print("DECISION", decision.behavior, decision.always, repr(decision.reason))
"""


@pytest.mark.parametrize(
    ("button", "reason", "printed", "shown"),
    [
        ("agentkernel-allow", "", "DECISION allow False ''", "✔ Allowed (by user)"),
        ("agentkernel-allow-always", "", "DECISION allow True ''", "✔ Always allowed (by user)"),
        (
            "agentkernel-deny",
            "too risky",
            "DECISION deny False 'too risky'",
            "✖ Denied (by user): too risky",
        ),
    ],
)
def test_approval_click_while_the_cell_runs(
    driver: KernelDriver, button: str, reason: str, printed: str, shown: str
) -> None:
    run = driver.start(APPROVAL_CELL, allow_stdin=True)
    opened = driver.wait_for(run, _button(button), timeout=60)
    if reason:
        box = driver.wait_for(
            run, lambda m: "agentkernel-reason" in _state(m).get("_dom_classes", ())
        )
        driver.send_comm(
            box["content"]["comm_id"],
            {"method": "update", "state": {"value": reason}, "buffer_paths": []},
        )
    _click(driver, opened["content"]["comm_id"])
    driver.finish(run, timeout=60)
    assert run.status == "ok", run.error
    assert printed in run.stdout
    assert "DISABLED [True, True, True]" in run.stdout
    final = run.of_type("update_display_data")[-1]["content"]["data"]
    assert shown in final["text/markdown"]
    assert "rm -rf build" in final["text/plain"]


QUESTION_CELL = """
import asyncio, concurrent.futures
from agentkernel.events import Question
from agentkernel.notebook.view import TurnView

view = TurnView("s1", "test")
view.display()
future = concurrent.futures.Future()
question = Question(request_id="q1", _decision=future, questions=[{
    "question": "Which database?", "header": "DB", "multi_select": False,
    "options": [{"label": "SQLite", "description": "a file"}, {"label": "Postgres"}],
}])
view.handle(question)
view.flush(force=True)
decision = await asyncio.wait_for(asyncio.wrap_future(future), 60)
bundle = view.finish()
print("ANSWER", decision.answers)
"""


def test_question_option_click_answers(driver: KernelDriver) -> None:
    run = driver.start(QUESTION_CELL, allow_stdin=True)
    option = driver.wait_for(run, _button("agentkernel-option", "Postgres"), timeout=60)
    _click(driver, option["content"]["comm_id"])
    driver.finish(run, timeout=60)
    assert run.status == "ok", run.error
    assert "ANSWER {'Which database?': 'Postgres'}" in run.stdout
    final = run.of_type("update_display_data")[-1]["content"]["data"]
    assert "**Answer:** Postgres" in final["text/markdown"]


HEADLESS_CELL = """
from agentkernel.events import Text, TextDelta, ToolCall, ToolResult, TurnEnded
from agentkernel.notebook.view import TurnView

view = TurnView("s1", "test", headless=True)
view.display()
for event in [
    TextDelta(text="Hello "), TextDelta(text="world."), Text(text="Hello world."),
    ToolCall(
        tool_use_id="t1", name="Bash", input={"command": "echo hi"}, kind="execute",
        command="echo hi",
    ),
    ToolResult(tool_use_id="t1", output="hi"),
    TurnEnded(stop_reason="end_turn", duration_s=2.5),
]:
    view.handle(event)
    view.flush(force=True)
bundle = view.finish({"turn": 1})
"""

HEADLESS_TEXT = """\
● s1 · test

Hello world.

▶ Bash: echo hi
  ⎿ hi

── end_turn
"""


def _execute(code: str, specs: KernelSpecManager, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(code))])
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    NotebookClient(nb, km=km, timeout=60, resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def test_headless_notebook_keeps_the_turn_once_as_a_static_output(
    kernel_specs: KernelSpecManager, tmp_path: Path
) -> None:
    nb = _execute(HEADLESS_CELL, kernel_specs, tmp_path)
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    static = outputs[0]
    assert static.data["text/plain"] == HEADLESS_TEXT
    assert "<script" not in static.data["text/html"]
    assert static.metadata == {"agentkernel": {"turn": 1}}
    assert "widgets" not in nb.metadata


def test_saved_widget_output_is_the_static_bundle(
    kernel_specs: KernelSpecManager, tmp_path: Path
) -> None:
    """What a front end that applies update_display_data (nbclient, JupyterLab) saves."""
    nb = _execute(HEADLESS_CELL.replace(", headless=True", ""), kernel_specs, tmp_path)
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    assert WIDGET_MIME not in outputs[0].data
    assert outputs[0].data["text/plain"] == HEADLESS_TEXT
    assert "Hello world." in outputs[0].data["text/html"]


# ------------------------------------------------------------------ without a kernel


def _future() -> concurrent.futures.Future[Decision]:
    return concurrent.futures.Future()


def test_multi_select_question_submits_checked_options_in_order() -> None:
    future = _future()
    question = Question(
        request_id="q",
        _decision=future,
        questions=[
            {
                "question": "Which checks?",
                "header": "CI",
                "multi_select": True,
                "options": [{"label": "lint"}, {"label": "types"}, {"label": "tests"}],
            },
            {"question": "Branch?", "options": [{"label": "main"}, {"label": "dev"}]},
        ],
    )
    prompt = QuestionPrompt(question)
    boxes = _find(prompt, widgets.Checkbox)
    buttons = {b.description: b for b in _find(prompt, widgets.Button)}
    boxes[2].value = True
    boxes[0].value = True
    buttons["dev"].click()  # selects: two questions, so nothing is sent yet
    assert not future.done()
    _find(prompt, TextBox)[1].value = "feature/x"  # free text wins over the selection
    buttons["Submit"].click()
    assert future.result().answers == {"Which checks?": "lint, tests", "Branch?": "feature/x"}
    assert prompt.settled and all(b.disabled for b in buttons.values())


def test_prompt_settles_when_decided_elsewhere_and_a_late_click_changes_nothing() -> None:
    future = _future()
    request = PermissionRequest(request_id="r", tool_name="Bash", input={}, _decision=future)
    view = TurnView("s", "test")
    view.display()
    view.handle(request)
    prompt = view._prompts["r"]
    request.deny("policy says no", by="policy")
    view.flush(force=True)
    assert prompt.settled and prompt.allow.disabled
    assert "Denied: policy says no" in prompt._outcome.value
    prompt.allow.click()  # a click that arrives after the decision
    assert future.result().behavior == "deny"
    assert "Already decided" in prompt._outcome.value
    view.finish()


def test_quiet_view_shows_prompts_but_no_blocks_and_ends_with_the_answer() -> None:
    view = TurnView("s", "test", quiet=True)
    view.display()
    view.handle(ToolCall(tool_use_id="t", name="Bash", input={"command": "ls"}))
    request = PermissionRequest(
        request_id="r", tool_name="Bash", tool_use_id="t", _decision=_future()
    )
    view.handle(request)
    view.handle(Text(text="The answer."))
    view.flush(force=True)
    assert view._box is not None
    shown = [type(w).__name__ for w in view._box.children]
    assert shown == ["ApprovalPrompt", "BlockWidget"]  # the prompt and the status line
    view.handle(TurnEnded(stop_reason="end_turn"))
    bundle = view.finish()
    assert bundle["text/plain"] == "● s · test\n\nThe answer.\n\n── end_turn\n"


def test_interrupted_finish_says_so() -> None:
    view = TurnView("s", "test", headless=True)
    view.handle(TextDelta(text="Partial"))
    bundle = view.finish(interrupted=True)
    assert bundle["text/plain"].endswith(
        "Partial\n\n✖ Error (interrupted): The turn was interrupted.\n"
    )
    assert view.finish() is bundle  # finishing twice changes nothing


def _find(root: widgets.Widget, kind: type[widgets.Widget]) -> list[Any]:
    found = [root] if isinstance(root, kind) else []
    for child in getattr(root, "children", ()):
        found += _find(child, kind)
    return found


def test_stop_during_an_approval_leaves_no_card_running() -> None:
    """A kernel interrupt while an approval waits: at once the card says "interrupted" and
    the prompt's controls are off; the static output says it too."""
    view = TurnView("s", "test")
    view.display()
    view.handle(ToolCall(tool_use_id="t", name="Bash", input={"command": "ls"}))
    request = PermissionRequest(
        request_id="r", tool_name="Bash", tool_use_id="t", _decision=_future()
    )
    view.handle(request)
    view.flush(force=True)
    prompt = view._prompts["r"]
    card = next(w for b, w in view._widgets.items() if getattr(b, "tool_use_id", "") == "t")
    assert "awaiting approval" in card.html
    view.interrupt()
    assert "interrupted" in card.html and "running" not in card.html
    assert prompt.allow.disabled and prompt.deny.disabled and "Stopped" in prompt._outcome.value
    assert "stopping" in view._status_html
    bundle = view.finish(interrupted=True)
    for shown in (bundle["text/markdown"], bundle["text/html"]):
        assert "interrupted" in shown and "running" not in shown and "awaiting" not in shown
