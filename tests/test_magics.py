"""%%agent / %agent in a real ipykernel (jupyter_client), on the real CLI and scripted model."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session

from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .conftest import agent_kernel
from .kernel_client import KernelDriver, has_widget, widget_id


@pytest.fixture
def kernel(
    agent_env: dict[str, str], workspace: Path
) -> Iterator[tuple[KernelManager, KernelDriver]]:
    with agent_kernel({**os.environ, **agent_env}, workspace) as started:
        yield started


def test_headless_turn_prints_text_and_keeps_a_static_output(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver]
) -> None:
    server.add(Reply(match="hello", blocks=[text("Hi **there**, from the model.")]))
    _, driver = kernel
    run = driver.run("%%agent\nhello agent")
    assert run.status == "ok", run.error
    assert not run.stdout, "headless output is the static bundle alone (the turn once)"
    assert "Hi **there**, from the model." in "".join(run.outputs())
    markdown = run.outputs("text/markdown")
    assert markdown and "Hi **there**, from the model." in markdown[-1]
    assert not run.of_type("comm_open"), "a headless run must not open widgets"
    provenance = run.provenance()
    assert provenance and provenance[-1]["backend"] == "claude"
    assert provenance[-1]["status"] == "completed"


def test_headless_tool_request_is_denied_by_default_and_said(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver], workspace: Path
) -> None:
    server.add(
        Reply(match="make", blocks=[tool_use("Bash", {"command": "touch made.txt"})]),
        Reply(match="tool_error", blocks=[text("It was refused.")]),
    )
    _, driver = kernel
    run = driver.run("%%agent\nmake the file")
    assert run.status == "ok", run.error
    assert not (workspace / "made.txt").exists()
    shown = run.stdout + "".join(run.outputs())
    assert "denied" in shown.lower() and "It was refused." in shown


def test_context_output_variable_and_errors(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver]
) -> None:
    server.add(
        Reply(match="value is 21", blocks=[text("Twice that is 42.\n```python\ny = 42\n```")]),
        Reply(match="summarise", blocks=[text("Summarised.")]),
    )
    _, driver = kernel
    assert driver.run("x = 21\ndata = list(range(100))").status == "ok"
    run = driver.run("%%agent -o reply\nthe value is {x}; braces {{stay}}")
    assert run.status == "ok", run.error
    assert "the value is 21; braces {stay}" in server.requests[-1].last_user_text
    check = driver.run("print(repr(reply))")
    assert "Twice that is 42." in check.stdout

    run = driver.run("%%agent --context data\nsummarise it")
    assert run.status == "ok", run.error
    assert "`data`: list" in server.requests[-1].last_user_text

    undefined = driver.run("%%agent\nwhat about {missing_name}?")
    assert undefined.status == "error"
    assert "undefined name(s): missing_name" in undefined.error
    bad_option = driver.run("%%agent --permission-mode yolo\nhi")
    assert bad_option.status == "error" and "invalid choice" in bad_option.error
    assert "allow-all" in bad_option.error
    empty = driver.run("%%agent\n   ")
    assert empty.status == "error" and "empty" in empty.error


def test_line_magics_manage_sessions(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver], tmp_path: Path
) -> None:
    server.add(Reply(blocks=[text("ok")], times=0))
    _, driver = kernel
    assert driver.run("%%agent\nfirst").status == "ok"
    listing = driver.run("%agent list")
    assert "* default" in listing.stdout and "claude" in listing.stdout
    assert "$" not in listing.stdout.splitlines()[-1], "a dollar figure for an unpriced model"
    assert "new session 'side'" in driver.run("%agent new side").stdout.lower()
    assert driver.run("%%agent\nto side").status == "ok"
    history = driver.run("%agent history")
    assert "to side" in history.stdout and "first" not in history.stdout
    assert "Current session: 'default'" in driver.run("%agent use default").stdout
    stats = driver.run("%agent stats").stdout
    assert "turns 1" in stats and "cost unknown" in stats and "$" not in stats
    assert "Forked 'default'" in driver.run("%agent fork").stdout
    assert "always allowed: nothing" in driver.run("%agent permissions").stdout
    exported = tmp_path / "export.md"
    assert driver.run(f"%agent export {exported} --session default").status == "ok"
    assert "first" in exported.read_text()
    as_notebook = tmp_path / "export.ipynb"
    assert driver.run(f"%agent export {as_notebook} -s default").status == "ok"
    notebook = nbformat.read(as_notebook, as_version=4)
    nbformat.validate(notebook)
    assert any("first" in cell.source for cell in notebook.cells)
    unknown = driver.run("%agent frobnicate")
    assert unknown.status == "error" and "valid: new, list, use" in unknown.error
    missing = driver.run("%agent use nope")
    assert missing.status == "error" and "no session named 'nope'" in missing.error
    assert "closed 'side'" in driver.run("%agent close side").stdout.lower()
    assert "%agent" in driver.run("%agent help").stdout


def test_kernel_interrupt_stops_the_turn_and_the_session_continues(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver]
) -> None:
    server.add(
        Reply(match="slow", blocks=[text("y" * 6000)], chunk_size=2, delay=0.01),
        Reply(match="again", blocks=[text("Back again.")]),
    )
    km, driver = kernel
    run = driver.start("%%agent\na slow story", allow_stdin=True)
    driver.wait_for(
        run,
        lambda m: (
            m["msg_type"] == "comm_msg"
            and "yy" in str(m["content"]["data"].get("content", {}).get("append", ""))
        ),
    )
    started = time.monotonic()
    km.interrupt_kernel()
    driver.finish(run, timeout=30)
    took = time.monotonic() - started
    assert run.status == "ok", run.error
    assert "interrupted" in "".join(run.outputs()).lower()
    assert took < 2.0, f"the interrupted cell took {took:.2f} s to end"
    again = driver.run("%%agent\nagain please")
    assert again.status == "ok" and "Back again." in again.stdout + "".join(again.outputs())
    sent = str((server.requests[-1].body or {}).get("messages"))
    assert "a slow story" in sent


# -- approvals inside the running cell (the test plays the front end) -----------------------


@pytest.mark.parametrize("choice", ["allow", "deny"])
def test_approval_click_answers_the_running_cell(
    choice: str,
    server: ScriptedModelServer,
    kernel: tuple[KernelManager, KernelDriver],
    workspace: Path,
) -> None:
    server.add(
        Reply(match="make", blocks=[tool_use("Bash", {"command": "echo hi > clicked.txt"})]),
        Reply(match="tool_error", blocks=[text("You said no.")]),
        Reply(match="tool_result", blocks=[text("File made.")]),
    )
    _, driver = kernel
    run = driver.start("%%agent\nmake the file", allow_stdin=True)
    driver.draw_until(run, has_widget("agentkernel-deny"))
    if choice == "deny":
        driver.type_into(widget_id(run, "agentkernel-reason"), "not today")
    driver.click(widget_id(run, f"agentkernel-{choice}"))
    driver.finish(run, timeout=60)
    assert run.status == "ok", run.error
    final = "".join(run.outputs())
    if choice == "allow":
        assert (workspace / "clicked.txt").read_text() == "hi\n"
        assert "File made." in final
    else:
        assert not (workspace / "clicked.txt").exists()
        assert "You said no." in final
        assert "not today" in server.requests[-1].last_user_text
    provenance = run.provenance()
    assert provenance[-1]["approvals"][0]["behavior"] == choice
    assert provenance[-1]["approvals"][0]["by"] == "user"


def test_question_option_click_reaches_the_model(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver]
) -> None:
    question = {
        "question": "Which format?",
        "header": "Format",
        "options": [{"label": "CSV", "description": ""}, {"label": "Parquet", "description": ""}],
        "multiSelect": False,
    }
    server.add(
        Reply(match="export", blocks=[tool_use("AskUserQuestion", {"questions": [question]})]),
        Reply(match="tool_result", blocks=[text("Parquet it is.")]),
    )
    _, driver = kernel
    run = driver.start("%%agent\nexport the data", allow_stdin=True)
    driver.draw_until(run, has_widget("agentkernel-option", "Parquet"))
    # One single-choice question: the option click itself answers it.
    driver.click(widget_id(run, "agentkernel-option", "Parquet"))
    driver.finish(run, timeout=60)
    assert run.status == "ok", run.error
    assert "Parquet" in server.requests[-1].last_user_text
    assert "Parquet it is." in "".join(run.outputs())


def test_widget_turn_streams_coalesced_updates_and_ends_static(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver]
) -> None:
    story = "".join(f"word{i} " for i in range(1500))
    server.add(Reply(match="stream", blocks=[text(story)], chunk_size=3, delay=0.001))
    _, driver = kernel
    run = driver.start("%%agent\nstream a story", allow_stdin=True)
    driver.draw_until(run, lambda m: m["msg_type"] == "comm_open")
    driver.finish(run, timeout=120)
    assert run.status == "ok", run.error

    opened = run.of_type("comm_open")
    assert any(m["content"]["data"]["state"].get("_model_name") == "AnyModel" for m in opened)
    updates = run.of_type("comm_msg")
    appended = "".join(
        m["content"]["data"].get("content", {}).get("append", "")
        for m in updates
        if m["content"]["data"].get("method") == "custom"
    )
    assert appended and story.startswith(appended), "streamed text arrives in order, unchanged"
    # The tail of a block that completes right as the turn ends goes straight into the static
    # output below (finish replaces the widget): nothing is lost on the way.
    times = sorted(m["header"]["date"].timestamp() for m in updates)
    span = max(times[-1] - times[0], 1e-3)
    batches = len({round(t, 2) for t in times})  # messages sent in one flush share a moment
    assert span > 1.0, "the reply should stream for a while"
    assert batches / span <= 25, f"{batches} update batches in {span:.2f} s"
    final = run.outputs("text/plain")
    assert final and story.strip() in final[-1], "the static output holds the whole text"
    assert run.outputs("text/html"), "the static output has an HTML rendering"


def test_without_a_widget_view_the_approval_falls_back_to_stdin(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver], workspace: Path
) -> None:
    server.add(
        Reply(match="make", blocks=[tool_use("Bash", {"command": "echo typed > typed.txt"})]),
        Reply(match="tool_result", blocks=[text("Made after your answer.")]),
    )
    _, driver = kernel
    # A front end that allows stdin but never draws widgets (e.g. a console).
    run = driver.start("%%agent\nmake the file", allow_stdin=True)
    request = driver.client.get_stdin_msg(timeout=60)
    assert request["msg_type"] == "input_request"
    assert "Allow Bash" in request["content"]["prompt"]
    driver.client.input("y")
    driver.finish(run, timeout=60)
    assert run.status == "ok", run.error
    assert (workspace / "typed.txt").read_text() == "typed\n"
    assert "Made after your answer." in "".join(run.outputs())


def test_insert_code_offers_the_answers_code_block_as_the_next_cell(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver]
) -> None:
    answer = "Here you go:\n```python\nimport math\nprint(math.pi)\n```\nEnjoy."
    server.add(Reply(match="pi", blocks=[text(answer)]))
    _, driver = kernel
    run = driver.run("%%agent --insert-code\nprint pi")
    assert run.status == "ok", run.error
    payload = (run.reply or {})["content"]["payload"]
    offered = [p for p in payload if p.get("source") == "set_next_input"]
    assert offered and offered[0]["text"] == "import math\nprint(math.pi)"


def test_bad_options_are_refused_at_once_and_change_nothing(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver]
) -> None:
    """One validation per option, for new and existing sessions alike; every refusal is one
    clear line that says what is valid, and leaves the sessions as they were."""
    server.add(Reply(blocks=[text("ok")], times=0))
    _, driver = kernel
    assert driver.run("%%agent --max-budget 5\nfirst").status == "ok"
    asked = len(server.requests)
    for line in (
        "%%agent --max-budget -1\nagain",  # an existing session
        "%%agent --new -s fresh --max-budget -1\nagain",  # a new one
        "%%agent --max-budget nan\nagain",
    ):
        run = driver.run(line)
        assert run.status == "error" and "--max-budget: must be 0 or more" in run.error, run.error
    refused = driver.run("%agent new side --max-budget -0.5")
    assert refused.status == "error" and "must be 0 or more" in refused.error
    assert len(server.requests) == asked, "a refused cell reached the model"
    assert "of $5.0000" in driver.run("%agent stats").stdout
    listing = driver.run("%agent list").stdout
    assert "* default" in listing and "side" not in listing and "fresh" not in listing

    frob = driver.run("%%agent --frob\nhi")
    assert frob.status == "error" and "unrecognized arguments: --frob" in frob.error
    assert "valid options: --session/-s NAME" in frob.error and "--max-budget USD" in frob.error

    # A resume of an id that exists nowhere: an error now, not a failing turn later.
    resume = driver.run("%agent resume does-not-exist")
    assert resume.status == "error", resume.stdout
    assert "no session 'does-not-exist' anywhere" in resume.error
    assert "`%agent sessions`" in resume.error
    assert "* default" in driver.run("%agent list").stdout

    # A file that cannot be written: one line saying why.
    export = driver.run("%agent export /proc/nowhere/x.md")
    assert export.status == "error"
    assert "cannot write /proc/nowhere/x.md: No such file or directory" in export.error
    assert "Traceback" not in export.error and len(export.error.splitlines()) == 1

    helped = driver.run("%agent help").stdout
    assert helped.startswith("usage: %agent "), helped[:80]
    assert "::" not in helped and "%%agent resume" not in helped
    assert "A %%agent cell sends a turn." in helped


def test_a_client_without_widgets_does_not_kill_the_approval(
    server: ScriptedModelServer, kernel: tuple[KernelManager, KernelDriver], workspace: Path
) -> None:
    """A second connection to the kernel that cannot show widgets (Notebook 7's file-list tab,
    a console attached with --existing) answers every comm_open with a comm_close. The turn's
    widgets survive it: the click of the page that shows them still answers the cell."""
    server.add(
        Reply(match="make", blocks=[tool_use("Bash", {"command": "echo hi > survived.txt"})]),
        Reply(match="tool_result", blocks=[text("Made despite the other tab.")]),
    )
    km, driver = kernel
    # A client of its own (its own session id: sharing the first's would steal its replies).
    other = km.client(session=Session(key=km.session.key))
    other.start_channels()
    try:
        other.wait_for_ready(timeout=30)
        driver.announce_widget_support()
        run = driver.start("%%agent\nmake the file", allow_stdin=True)
        closed: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # The other client: "Exception opening new comm", then a comm_close for each.
            try:
                msg = other.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                msg = None
            if msg is not None and msg["msg_type"] == "comm_open":
                comm_id = msg["content"]["comm_id"]
                other.shell_channel.send(other.session.msg("comm_close", {"comm_id": comm_id}))
                closed.add(comm_id)
            driver.pump(run, 0.01)
            if any(has_widget("agentkernel-allow")(m) for m in run.iopub) and closed >= {
                m["content"]["comm_id"] for m in run.of_type("comm_open")
            }:
                break
        assert any(has_widget("agentkernel-allow")(m) for m in run.iopub), [
            (m["msg_type"], str(m["content"])[:300]) for m in run.iopub[-8:]
        ]
        allow = widget_id(run, "agentkernel-allow")
        assert allow in closed, "the other client never closed the Allow button"
        driver.report_drawn(run)
        driver.click(allow)
        driver.finish(run, timeout=60)
    finally:
        other.stop_channels()
    assert run.status == "ok", run.error
    assert (workspace / "survived.txt").read_text() == "hi\n"
    assert "Made despite the other tab." in "".join(run.outputs())
