"""A real browser: JupyterLab on localhost, Debian's chromium driven by Playwright.

One end-to-end run of what a person does: open a notebook, run a ``%%agent`` cell, watch the
text stream in, click Allow on the tool call, see the result; save; then read the saved file
without any kernel (on disk, and as nbconvert's HTML page shown in chromium).

The model is the scripted server; the Claude Code CLI, the kernel, the widgets, JupyterLab
and the browser are real. Screenshots land in the test's tmp_path: ``approval.png`` (the
Allow / Always allow / Deny prompt), ``finished.png`` (the static output in JupyterLab),
``static.png`` (the saved notebook rendered without a kernel); ``failure.png`` when a wait
times out.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import ConsoleMessage, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .browser import CHROMIUM, LabServer, jupyter_lab, launch_chromium
from .conftest import agent_processes, wait_until_gone

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}"),
    pytest.mark.timeout(240),
]

SHARE = Path(__file__).resolve().parent.parent / "share" / "jupyter"
"""The repository's kernel specs (the Agent kernel), as ``pip install`` ships them."""
NOTEBOOK = "agent-in-browser.ipynb"
STREAM = "".join(f"Step {i}: working on it.\n" for i in range(12))  # 8 characters a delta
STORY = STREAM.strip()
LINES = STREAM.count("\n")
COMMAND = "echo browser > made-in-browser.txt"
MADE = "made-in-browser.txt"
DONE = "The file is made."
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
KERNEL_NAME = "Python 3 (ipykernel)"
QUIET_PAGE_CONFIG = {
    # No "get notified about official Jupyter news?" toast (and no feed to fetch).
    "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}
}
EXPECTED_WARNING = "Disabling terminals plugin"  # the server runs without terminals
STREAMED_JS = """cell => Array.from(cell.querySelectorAll('.agentkernel-stream'))
    .map(e => e.textContent).join('')"""
"""The text of the cell's streaming blocks (the elements block.js appends to), in order."""
TYPE_JS = """el => {
    const range = document.createRange();
    range.selectNodeContents(el);
    const rows = Array.from(range.getClientRects()).filter(r => r.width > 0);
    const lines = new Set(rows.map(r => Math.round(r.top))).size;
    return {font: getComputedStyle(el).fontSize, lines};
}"""
"""An element's font size and how many lines its text takes on screen."""


# ---------------------------------------------------------------------------- set-up


def _write_notebook(path: Path) -> None:
    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": KERNEL_NAME, "language": "python"}
        }
    )
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext agentkernel"),
        nbformat.v4.new_code_cell("%%agent\nplease make the file"),
    ]
    nbformat.write(notebook, path)


def _lab_env(agent_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The server's env, which its kernels inherit: the scripted model for the CLI, and all
    Jupyter state in tmp_path so nothing of the user's (settings, workspaces) plays a part."""
    config = tmp_path / "jupyter-config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(QUIET_PAGE_CONFIG))
    env = {
        **os.environ,
        **agent_env,
        "AGENTKERNEL_STORE": str(tmp_path / "sessions.db"),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    env.pop("AGENTKERNEL_FRONTEND", None)  # the widget front end must be detected, not forced
    return env


class Diagnostics:
    """What the page and the server said, for failure messages (with a screenshot)."""

    def __init__(self, lab: LabServer, page: Page, screenshot: Path) -> None:
        self.lab = lab
        self.page = page
        self.screenshot = screenshot
        self.phase = "opening"
        self.console: list[str] = []
        self.page_errors: list[str] = []
        self.live_type: list[tuple[int, dict[str, Any]]] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and not message.text.startswith(EXPECTED_WARNING):
            self.console.append(f"[{message.type} while {self.phase}] {message.text}")

    def _on_page_error(self, error: Exception) -> None:
        self.page_errors.append(f"[uncaught while {self.phase}] {error}")

    def __call__(self, what: str) -> str:
        try:
            self.page.screenshot(path=self.screenshot)
            what += f"\n(the page at that moment: {self.screenshot})"
        except Exception as error:
            what += f"\n(no screenshot: {error})"
        console = "\n".join([*self.page_errors, *self.console][-30:]) or "(nothing)"
        return f"{what}\n--- browser console ---\n{console}\n--- server log ---\n" + (
            self.lab.log_tail(3000)
        )


def _wait(
    page: Page, condition: Callable[[], Any], timeout: float, what: str, diag: Diagnostics
) -> Any:
    """Poll ``condition`` until it is true. The pauses go through Playwright: the sync API
    handles the page's events only while the test is inside one of its calls."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(diag(f"timed out after {timeout:.0f} s waiting for {what}"))
        page.wait_for_timeout(100)


# ---------------------------------------------------------------------------- the page


def _kernel_ready(page: Page, lab: LabServer, kernel: str = KERNEL_NAME) -> bool:
    """The notebook has its kernel (by display name), idle, in the page and on the server.
    (The execution indicator says "idle" before any kernel exists, so it alone is not enough.)"""
    name = page.locator(".jp-NotebookPanel .jp-Toolbar-kernelName")
    status = page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator")
    if name.count() == 0 or name.first.inner_text().strip() != kernel:
        return False
    if status.count() == 0 or status.first.get_attribute("data-status") != "idle":
        return False
    sessions = lab.api("GET", "/api/sessions")
    return any((s.get("kernel") or {}).get("execution_state") == "idle" for s in sessions)


def _menu(page: Page, menu: str, command: str) -> None:
    """Click ``menu`` in the menu bar, then its item running ``command``, as a person would."""
    page.locator(".lm-MenuBar-item", has_text=menu).first.click()
    page.locator(f'.lm-Menu-item[data-command="{command}"]').click()


def _watch_stream(page: Page, cell: Locator, until: Locator, diag: Diagnostics) -> list[str]:
    """Sample the cell's streaming text until ``until`` shows; the distinct samples, in order."""
    samples: list[str] = []
    deadline = time.monotonic() + 60
    while until.count() == 0:
        if time.monotonic() > deadline:
            shown = cell.locator(".jp-Cell-outputArea").inner_text()[-2000:]
            raise AssertionError(diag(f"no Allow button within 60 s; the cell shows:\n{shown}"))
        streamed = cell.evaluate(STREAMED_JS)
        if streamed and (not samples or samples[-1] != streamed):
            samples.append(streamed)
            if streamed.count("\n") >= 3 and STREAM.startswith(streamed):
                # The text and its layout read at the same moment.
                # The view may be redrawn (the approval arrives) between the two reads: then
                # this sample is skipped, not waited for.
                sink = cell.locator(".agentkernel-stream").first
                try:
                    measured = sink.evaluate(
                        f"el => [el.textContent, ({TYPE_JS})(el)]", timeout=1000
                    )
                except PlaywrightTimeoutError:
                    measured = [""]
                if measured[0] and STREAM.startswith(measured[0]):
                    diag.live_type.append((measured[0].count("\n"), measured[1]))
        page.wait_for_timeout(20)
    return samples


def _check_type(cell: Locator, diag: Diagnostics) -> None:
    """The live view and the static output of the same reply: one font size, and the same
    line breaks (the static text takes as many lines as it has, like the live text did)."""
    # A sample taken as the view was being replaced (the approval's update redraws it) has no
    # layout: those say nothing.
    drawn = [(breaks, live) for breaks, live in diag.live_type if live["font"] and live["lines"]]
    assert drawn, diag(f"the streaming text was never measured mid-stream: {diag.live_type}")
    for breaks, live in drawn:
        assert live["lines"] in (breaks, breaks + 1), diag(f"{breaks} breaks shown as {live}")
    live = drawn[-1][1]
    static = cell.locator(".jp-RenderedHTMLCommon .agentkernel-turn p", has_text="Step 0:")
    final = static.first.evaluate(TYPE_JS)
    assert final == {"font": live["font"], "lines": LINES}, diag(
        f"the static output ({final}) differs from the live view ({live})"
    )


def _check_stream(samples: list[str], diag: Diagnostics) -> None:
    """The text was seen growing: several partial texts, each a longer start of the reply."""
    prefixes = [s for s in samples if STREAM.startswith(s)]
    partial = [s for s in prefixes if len(s.strip()) < len(STORY)]
    assert len(partial) >= 2, diag(
        f"the text should be seen growing in the page before it is complete; saw {samples!r}"
    )
    lengths = [len(s) for s in prefixes]
    assert lengths == sorted(lengths), diag(f"the streamed text shrank: {lengths}")
    assert samples[-1] in prefixes, diag(f"the stream ended wrong: {samples[-1]!r}")
    fragments = [s for s in samples if s not in prefixes]
    assert not fragments, diag(f"the live view showed streamed text without its start: {fragments}")


def _check_page_errors(diag: Diagnostics, known: tuple[str, ...] = ()) -> None:
    """Nothing went wrong in the page: no uncaught error, no console error or warning (but
    the `known` ones of the front end itself)."""
    problems = [p for p in [*diag.page_errors, *diag.console] if not any(k in p for k in known)]
    assert not problems, diag("the page reported errors:\n" + "\n".join(problems))


# ---------------------------------------------------------------------------- the saved file


def _check_saved(path: Path) -> None:
    """The saved notebook, read from disk: the turn is a static output that needs no kernel."""
    saved = nbformat.read(path, as_version=4)
    nbformat.validate(saved)
    stderr = [o for c in saved.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, f"stray stderr in the saved outputs (a first Run All): {stderr}"
    outputs = saved.cells[1].outputs
    statics = [
        o
        for o in outputs
        if o.output_type == "display_data"
        and "text/html" in o.data
        and DONE in o.data.get("text/plain", "")
    ]
    assert statics, f"no static display_data holding {DONE!r} in the saved cell: {outputs}"
    data = statics[-1].data
    assert DONE in data["text/html"] and html.escape(COMMAND) in data["text/html"], data
    assert DONE in data.get("text/markdown", ""), data
    widget_only = [o for o in outputs if WIDGET_VIEW in o.get("data", {}) and len(o.data) == 1]
    assert not widget_only, f"a widget view without a static alternative was saved: {outputs}"
    approvals = statics[-1].metadata.get("agentkernel", {}).get("approvals", [])
    assert [(a["behavior"], a["by"]) for a in approvals] == [("allow", "user")], approvals
    state = saved.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state")
    assert not state, f"widget models were saved with the notebook: {state}"


def _show_converted(notebook: Path, out: Path, screenshot: Path, env: dict[str, str]) -> None:
    """nbconvert's HTML of ``notebook`` (no kernel anywhere) shows the turn in chromium."""
    command = [sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(out)]
    converted = subprocess.run(
        [*command, str(notebook)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert converted.returncode == 0, converted.stderr
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            # domcontentloaded: the template's CDN scripts fail (no host resolves) and are
            # not needed for HTML outputs.
            page.goto((out / f"{notebook.stem}.html").as_uri(), wait_until="domcontentloaded")
            turn = page.locator(".agentkernel-turn")
            expect(turn).to_have_count(1)
            expect(turn).to_be_visible()
            for shown in (STORY, "Bash", COMMAND, "Allowed", DONE):
                expect(turn).to_contain_text(shown)
            page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()


# ---------------------------------------------------------------------------- the test


def test_agent_cell_in_jupyterlab_streams_asks_and_saves_static_output(
    server: ScriptedModelServer, agent_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    server.add(
        Reply(
            match="please make the file",
            blocks=[text(STREAM), tool_use("Bash", {"command": COMMAND})],
            chunk_size=8,
            delay=0.03,
        ),
        Reply(match="tool_result", blocks=[text(DONE)]),
    )
    root = tmp_path / "lab"
    root.mkdir()
    notebook_path = root / NOTEBOOK
    _write_notebook(notebook_path)
    env = _lab_env(agent_env, tmp_path)
    shots = {name: tmp_path / f"{name}.png" for name in ("approval", "finished", "static")}
    agent_pids: set[int] = set()
    timings: dict[str, float] = {}

    def mark(phase: str) -> None:
        timings[phase] = round(time.monotonic() - started, 1)

    with jupyter_lab(root, env, tmp_path / "lab.log") as lab, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            diag = Diagnostics(lab, page, tmp_path / "failure.png")
            mark("server up")

            # Open the notebook; wait for its kernel.
            page.goto(lab.url(f"/lab/tree/{NOTEBOOK}"))
            cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
            expect(cells).to_have_count(2, timeout=60_000)
            _wait(page, lambda: _kernel_ready(page, lab), 60, "the notebook's idle kernel", diag)

            mark("kernel ready")

            # Run > Run All Cells; watch the text stream in until the approval shows.
            diag.phase = "running"
            _menu(page, "Run", "runmenu:run-all")
            first = cells.nth(0)
            prompt = first.locator(".jp-InputPrompt")
            _wait(page, lambda: prompt.inner_text().strip() == "[1]:", 30, "%load_ext", diag)
            loaded = first.locator(".jp-OutputArea-output")
            assert loaded.count() == 0, diag(f"%load_ext printed: {loaded.first.inner_text()}")
            cell = cells.nth(1)
            output = cell.locator(".jp-Cell-outputArea")
            allow = cell.locator("button.agentkernel-allow")
            samples = _watch_stream(page, cell, allow, diag)
            agent_pids |= {p.pid for p in agent_processes()}
            _check_stream(samples, diag)

            # The approval: the tool's card with the command, and the three buttons.
            diag.phase = "asking"
            mark("approval shown")
            expect(output).to_contain_text(STORY)
            expect(output).to_contain_text(COMMAND)
            expect(allow).to_have_text("Allow")
            expect(cell.locator("button.agentkernel-allow-always")).to_be_visible()
            expect(cell.locator("button.agentkernel-deny")).to_be_visible()
            assert not (root / MADE).exists(), "the tool ran before anyone allowed it"
            page.screenshot(path=shots["approval"])

            # Allow: the tool runs, the turn ends, the widget gives way to the static output.
            diag.phase = "allowed"
            allow.click()
            expect(output).to_contain_text(DONE, timeout=60_000)
            made = root / MADE
            _wait(page, made.exists, 10, f"{MADE} in the notebook's folder", diag)
            assert made.read_text() == "browser\n"
            _wait(page, lambda: _kernel_ready(page, lab), 30, "the cell to finish", diag)
            expect(cell.locator(".jp-InputPrompt")).to_have_text("[2]:")
            agent_pids |= {p.pid for p in agent_processes()}
            widget_views = output.locator(f'.jp-OutputArea-output[data-mime-type="{WIDGET_VIEW}"]')
            expect(widget_views).to_have_count(0)
            expect(output.locator("button")).to_have_count(0)
            static = output.locator(".jp-RenderedHTMLCommon .agentkernel-turn")
            expect(static).to_have_count(1)
            for shown in ("Bash", COMMAND, "Allowed", DONE):
                expect(static).to_contain_text(shown)
            _check_type(cell, diag)
            # The tool card folds: its head is a summary, whose marker turns as it opens.
            card = static.locator("details", has_text=COMMAND).first
            assert card.evaluate("el => el.open"), diag("the tool card should start open")
            card.locator("summary").first.click()
            assert not card.evaluate("el => el.open"), diag("a click on its head folds it")
            card.locator("summary").first.click()
            page.screenshot(path=shots["finished"])
            mark("turn done")

            # File > Save; then shut the kernel down: its agent CLI goes with it.
            diag.phase = "saving"
            _menu(page, "File", "docmanager:save")
            _wait(page, lambda: DONE in notebook_path.read_text(), 20, "the saved file", diag)
            expect(page.locator(".jp-NotebookPanel.jp-mod-dirty")).to_have_count(0)
            assert agent_pids, "no agent CLI process was seen while the turn ran"
            for session in lab.api("GET", "/api/sessions"):
                lab.api("DELETE", f"/api/sessions/{session['id']}")
            alive = wait_until_gone(sorted(agent_pids), timeout=15)
            assert alive == [], f"agent CLI {alive} outlived its kernel"
            mark("saved, kernel gone")
            _check_page_errors(diag)
        finally:
            browser.close()
    # The server is stopped here (and would have stopped any kernel left).

    mark("server stopped")
    _check_saved(notebook_path)
    _show_converted(notebook_path, tmp_path / "html", shots["static"], env)
    mark("static page shown")
    print(f"\nbrowser test timings (s): {timings}")
    print("screenshots:", *shots.values(), sep="\n  ")


# ---------------------------------------------------------------------------- leaving a cell

REASON = "Please not now, the tests are running"
DENIED_COMMAND = "echo no > denied.txt"
RELOAD_COMMAND = "echo yes > reloaded.txt"
HELD_COMMAND = "echo held > held.txt"
AFTER_RELOAD = "Made after the reload."


def _leaving_notebook(path: Path) -> None:
    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": KERNEL_NAME, "language": "python"}
        }
    )
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext agentkernel"),
        nbformat.v4.new_code_cell("%%agent\nfirst, deny this one"),
        nbformat.v4.new_code_cell("%%agent\nsecond, wait for me across a reload"),
        nbformat.v4.new_code_cell("%%agent\nthird, wait while nobody saved"),
    ]
    nbformat.write(notebook, path)


def _run_cell(page: Page, cell: Locator) -> None:
    """Select the cell and run it (Shift+Enter in command mode), as a person would."""
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+Enter")


def _kernel_state(lab: LabServer) -> str:
    sessions = lab.api("GET", "/api/sessions")
    return (sessions[0].get("kernel") or {}).get("execution_state", "") if sessions else ""


def _saved_outputs(path: Path, index: int) -> list[Any]:
    return nbformat.read(path, as_version=4).cells[index].outputs


def _reload(page: Page, lab: LabServer, diag: Diagnostics) -> Locator:
    """Reload the page (accepting "leave without saving?"); the notebook's cells again."""
    page.reload()
    cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    expect(cells).to_have_count(4, timeout=60_000)
    name = page.locator(".jp-NotebookPanel .jp-Toolbar-kernelName")
    _wait(
        page,
        lambda: name.count() and name.first.inner_text().strip() == KERNEL_NAME,
        60,
        "the reloaded page's kernel",
        diag,
    )
    return cells


def test_typed_reasons_reloads_and_interrupts_in_jupyterlab(
    server: ScriptedModelServer, agent_env: dict[str, str], tmp_path: Path
) -> None:
    """A reason typed key by key arrives whole; a reload while an approval waits gives the card
    back (saved or not), a click then ends the cell with its static output, and an interrupt
    ends it within 2 s; the saved file never holds a widget; the page logs no error."""
    server.add(
        Reply(match="deny this one", blocks=[tool_use("Bash", {"command": DENIED_COMMAND})]),
        Reply(match="tool_error", blocks=[text("Understood, not run.")]),
        Reply(match="across a reload", blocks=[tool_use("Bash", {"command": RELOAD_COMMAND})]),
        Reply(match="tool_result", blocks=[text(AFTER_RELOAD)]),
        Reply(match="nobody saved", blocks=[tool_use("Bash", {"command": HELD_COMMAND})]),
    )
    root = tmp_path / "lab"
    root.mkdir()
    path = root / NOTEBOOK
    _leaving_notebook(path)
    env = _lab_env(agent_env, tmp_path)
    with jupyter_lab(root, env, tmp_path / "lab.log") as lab, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(30_000)
            page.on("dialog", lambda dialog: dialog.accept())
            diag = Diagnostics(lab, page, tmp_path / "failure.png")
            page.goto(lab.url(f"/lab/tree/{NOTEBOOK}"))
            cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
            expect(cells).to_have_count(4, timeout=60_000)
            _wait(page, lambda: _kernel_ready(page, lab), 60, "the notebook's idle kernel", diag)
            _run_cell(page, cells.nth(0))
            _wait(page, lambda: _kernel_ready(page, lab), 30, "%load_ext", diag)

            # 1. A reason typed key by key, slowly, while the cell runs: it arrives whole.
            diag.phase = "typing a reason"
            first = cells.nth(1)
            _run_cell(page, first)
            reason = first.locator(".agentkernel-reason input")
            expect(reason).to_be_visible(timeout=60_000)
            reason.press_sequentially(REASON, delay=40)
            first.locator("button.agentkernel-deny").click()
            expect(first.locator(".jp-Cell-outputArea")).to_contain_text(
                "Understood, not run.", timeout=60_000
            )
            _wait(page, lambda: _kernel_ready(page, lab), 30, "the first cell to finish", diag)
            sent = json.dumps(server.requests[-1].body["messages"])
            assert REASON in sent, diag(f"the model did not get the whole reason: {sent[-800:]}")
            expect(first.locator(".jp-Cell-outputArea")).to_contain_text(REASON)
            assert not (root / "denied.txt").exists()

            # 2. Saved while the approval waits, then reloaded: the card is live again.
            diag.phase = "reload after saving"
            second = cells.nth(2)
            _run_cell(page, second)
            expect(second.locator("button.agentkernel-allow")).to_be_visible(timeout=60_000)
            _menu(page, "File", "docmanager:save")
            _wait(
                page,
                lambda: "waiting for your approval" in path.read_text(),
                20,
                "the file saved with the waiting turn",
                diag,
            )
            waiting = _saved_outputs(path, 2)
            assert (
                "waiting for your approval: Bash: " + RELOAD_COMMAND
                in (waiting[-1].data["text/plain"])
            ), waiting
            assert "VBox" not in json.dumps(waiting)
            cells = _reload(page, lab, diag)
            second = cells.nth(2)
            allow = second.locator("button.agentkernel-allow")
            expect(allow).to_be_visible(timeout=60_000)
            allow.click()
            output = second.locator(".jp-Cell-outputArea")
            expect(output).to_contain_text(AFTER_RELOAD, timeout=60_000)
            expect(output.locator(f'[data-mime-type="{WIDGET_VIEW}"]')).to_have_count(0)
            expect(output.locator(".jp-RenderedHTMLCommon .agentkernel-turn")).to_have_count(1)
            _wait(page, lambda: _kernel_state(lab) == "idle", 30, "the kernel idle", diag)
            assert (root / "reloaded.txt").read_text() == "yes\n"
            _menu(page, "File", "docmanager:save")
            _wait(page, lambda: AFTER_RELOAD in path.read_text(), 20, "the saved turn", diag)
            saved = _saved_outputs(path, 2)
            assert [o.output_type for o in saved] == ["display_data"], saved
            assert WIDGET_VIEW not in saved[0].data and AFTER_RELOAD in saved[0].data["text/html"]

            # 3. Reloaded without saving while an approval waits: the card comes back, and an
            # interrupt ends the cell at once.
            diag.phase = "reload without saving"
            third = cells.nth(3)
            _run_cell(page, third)
            expect(third.locator("button.agentkernel-allow")).to_be_visible(timeout=60_000)
            cells = _reload(page, lab, diag)
            third = cells.nth(3)
            expect(third.locator("button.agentkernel-allow")).to_be_visible(timeout=30_000)
            assert _kernel_state(lab) == "busy"
            started = time.monotonic()
            _menu(page, "Kernel", "kernelmenu:interrupt")
            _wait(page, lambda: _kernel_state(lab) == "idle", 10, "the interrupted kernel", diag)
            took = time.monotonic() - started
            assert took < 2.0, diag(f"the interrupt took {took:.1f} s to end the cell")
            output = third.locator(".jp-Cell-outputArea")
            expect(output).to_contain_text("interrupted", timeout=10_000)
            card = output.locator(".agentkernel-turn details", has_text=HELD_COMMAND)
            expect(card).to_contain_text("interrupted")  # the card, not only the note
            expect(output).not_to_contain_text("running")
            expect(output.locator(f'[data-mime-type="{WIDGET_VIEW}"]')).to_have_count(0)
            assert not (root / "held.txt").exists()
            _menu(page, "File", "docmanager:save")
            _wait(
                page,
                lambda: "interrupted" in json.dumps(_saved_outputs(path, 3)),
                20,
                "the saved interrupted turn",
                diag,
            )
            assert WIDGET_VIEW not in json.dumps(_saved_outputs(path, 3))
            state = nbformat.read(path, as_version=4).metadata.get("widgets")
            assert not state, f"widget state was saved: {state}"
            _check_page_errors(diag)
        finally:
            browser.close()


# ---------------------------------------------------------------------------- continuity

WORD = "tulip"


def _agent_notebook(path: Path, prompt: str) -> None:
    """A notebook of two cells, each with a fresh id (as JupyterLab makes a new one)."""
    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": KERNEL_NAME, "language": "python"}
        }
    )
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext agentkernel"),
        nbformat.v4.new_code_cell(f"%%agent\n{prompt}"),
    ]
    nbformat.write(notebook, path)


def _run_all_and_wait(page: Page, lab: LabServer, diag: Diagnostics, shown: str) -> Locator:
    """Run > Run All Cells in the notebook on screen; its agent cell's output once it shows
    ``shown`` and the kernel is idle."""
    panel = page.locator(".jp-NotebookPanel:visible")
    name = panel.locator(".jp-Toolbar-kernelName")
    _wait(
        page,
        lambda: name.count() and name.first.inner_text().strip() == KERNEL_NAME,
        60,
        "the notebook's kernel",
        diag,
    )
    status = panel.locator(".jp-Notebook-ExecutionIndicator")
    _wait(
        page,
        lambda: status.count() and status.first.get_attribute("data-status") == "idle",
        60,
        "the notebook's idle kernel",
        diag,
    )
    # Click into the notebook first: Run All acts on the notebook that has the focus (after a
    # page load that may be the file browser).
    panel.locator(".jp-Cell").first.locator(".jp-InputPrompt").click()
    _menu(page, "Run", "runmenu:run-all")
    output = panel.locator(".jp-Cell").nth(1).locator(".jp-Cell-outputArea")
    expect(output).to_contain_text(shown, timeout=60_000)
    _wait(
        page,
        lambda: all(
            (s.get("kernel") or {}).get("execution_state") == "idle"
            for s in lab.api("GET", "/api/sessions")
        ),
        30,
        "the cells to finish",
        diag,
    )
    # The static output in place of the live one (what a save then keeps).
    expect(output.locator(".jp-RenderedHTMLCommon .agentkernel-turn")).to_have_count(1)
    expect(output).to_contain_text(shown)
    return output


def test_a_renamed_notebook_leaves_no_conversation_to_the_new_one_under_its_name(
    server: ScriptedModelServer, agent_env: dict[str, str], tmp_path: Path
) -> None:
    """Run a turn in Untitled.ipynb, rename it in JupyterLab, then open a new notebook that
    takes the freed name: its first %%agent starts a fresh session (the model never sees the
    other notebook's conversation)."""
    server.add(Reply(match="word", blocks=[text("Noted.")], times=0))
    root = tmp_path / "lab"
    root.mkdir()
    untitled = root / "Untitled.ipynb"
    _agent_notebook(untitled, f"remember the word {WORD}")
    env = _lab_env(agent_env, tmp_path)
    with jupyter_lab(root, env, tmp_path / "lab.log") as lab, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            diag = Diagnostics(lab, page, tmp_path / "failure.png")
            page.goto(lab.url("/lab/tree/Untitled.ipynb"))
            _run_all_and_wait(page, lab, diag, "Noted.")
            _menu(page, "File", "docmanager:save")
            _wait(page, lambda: "Noted." in untitled.read_text(), 20, "the saved turn", diag)

            # File > Rename Notebook…, as a person does.
            diag.phase = "renaming"
            _menu(page, "File", "docmanager:rename")
            page.locator(".jp-Dialog input").fill("renamed.ipynb")
            page.locator(".jp-Dialog .jp-mod-accept").click()
            renamed = root / "renamed.ipynb"
            _wait(page, lambda: renamed.exists() and not untitled.exists(), 20, "the rename", diag)

            # A new notebook under the freed name.
            diag.phase = "the new notebook"
            _agent_notebook(untitled, "which word did I say?")
            asked = len(server.requests)
            page.goto(lab.url("/lab/tree/Untitled.ipynb"))
            output = _run_all_and_wait(page, lab, diag, "Noted.")
            expect(output).not_to_contain_text("continuing")
            sent = json.dumps([r.body for r in server.requests[asked:]])
            assert "which word did I say?" in sent, diag("the new notebook's turn never ran")
            assert WORD not in sent, diag("the new notebook continued the renamed one's session")
            _check_page_errors(diag)
        finally:
            browser.close()


# ---------------------------------------------------------------------------- Notebook 7

NOTEBOOK7_OWN = (
    "is duplicated.",  # its menus, at start
    "[yjs#509] Not same Y.Doc",  # its collaborative document model
    "reading 'schema'",  # a settings plugin at start, before any kernel
)
"""What Notebook 7 (7.6) logs on its own, with or without agentkernel."""
NB7_COMMAND = "echo seven > made-in-notebook7.txt"
NB7_DONE = "Made from Notebook 7."


def test_approval_in_notebook_7_with_the_file_list_tab_still_open(
    server: ScriptedModelServer, agent_env: dict[str, str], tmp_path: Path
) -> None:
    """Notebook 7: New -> Agent in the file list opens the notebook in a new tab while the
    file-list tab keeps a connection of its own to the new kernel, one without widget support
    that closes every widget the kernel opens. The approval still works in the notebook tab."""
    server.add(
        Reply(match="make the file", blocks=[tool_use("Bash", {"command": NB7_COMMAND})]),
        Reply(match="tool_result", blocks=[text(NB7_DONE)]),
    )
    root = tmp_path / "nb7"
    root.mkdir()
    env = {**_lab_env(agent_env, tmp_path), "JUPYTER_PATH": str(SHARE)}
    log = tmp_path / "notebook.log"
    with jupyter_lab(root, env, log, app="notebook") as lab, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            tree = context.new_page()
            tree.set_default_timeout(30_000)
            tree.goto(lab.url("/tree"))
            tree.get_by_text("New", exact=True).first.click()
            with context.expect_page() as opened:
                tree.locator(
                    '.lm-Menu-item[data-command="notebook:create-new"]', has_text="Agent"
                ).click()
            page = opened.value
            page.set_default_timeout(30_000)
            diag = Diagnostics(lab, page, tmp_path / "failure.png")
            cell = page.locator(".jp-Notebook .jp-Cell").first
            expect(cell).to_be_visible(timeout=60_000)
            assert not tree.is_closed(), "the file-list tab should stay open (its connection)"
            # A run before the kernel is up makes Notebook 7 ask which kernel to start.
            _wait(page, lambda: _kernel_ready(page, lab, "Agent"), 60, "the idle kernel", diag)
            diag.phase = "running"
            cell.locator(".cm-content").click()
            page.keyboard.type("please make the file")
            page.keyboard.press("Shift+Enter")
            allow = cell.locator("button.agentkernel-allow")
            expect(allow).to_be_visible(timeout=90_000)
            assert not (root / "made-in-notebook7.txt").exists()
            diag.phase = "allowed"
            allow.click()
            output = cell.locator(".jp-Cell-outputArea")
            expect(output).to_contain_text(NB7_DONE, timeout=60_000)
            expect(output.locator(f'[data-mime-type="{WIDGET_VIEW}"]')).to_have_count(0)
            assert (root / "made-in-notebook7.txt").read_text() == "seven\n"
            _check_page_errors(diag, known=NOTEBOOK7_OWN)
        finally:
            browser.close()
