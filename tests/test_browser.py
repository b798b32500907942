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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import ConsoleMessage, Locator, Page, expect, sync_playwright

from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .browser import CHROMIUM, LabServer, jupyter_lab, launch_chromium
from .conftest import agent_processes, wait_until_gone

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}"),
    pytest.mark.timeout(240),
]

NOTEBOOK = "agent-in-browser.ipynb"
STREAM = "Working on it... " * 30  # what the model streams, 8 characters a delta
STORY = STREAM.strip()
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
TEARDOWN_RACE = ("reading 'widgets'", "[anywidget] Failed to initialize model")
"""Uncaught errors JupyterLab's widget manager throws when a turn's widget is replaced and
closed while the front end is still creating the views of its newest children (the last block
of a short turn): known, tolerated with a warning; anything else uncaught fails the test."""
STREAMED_JS = """cell => Array.from(cell.querySelectorAll('.agentkernel-stream'))
    .map(e => e.textContent).join('')"""
"""The text of the cell's streaming blocks (the elements block.js appends to), in order."""


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


def _kernel_ready(page: Page, lab: LabServer) -> bool:
    """The notebook has its kernel, idle, in the page and on the server. (The execution
    indicator says "idle" before any kernel exists, so it alone is not enough.)"""
    name = page.locator(".jp-NotebookPanel .jp-Toolbar-kernelName")
    status = page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator")
    if name.count() == 0 or name.first.inner_text().strip() != KERNEL_NAME:
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
        page.wait_for_timeout(20)
    return samples


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
    if fragments:
        # A view drawn after the first appends were sent shows the later ones, without the
        # start, until the kernel's reset arrives. Transient (the next samples are right).
        warnings.warn(
            f"the live view briefly showed streamed text without its start: {fragments!r}",
            stacklevel=2,
        )


def _check_page_errors(diag: Diagnostics) -> None:
    if diag.console:
        print("\nbrowser console:", *diag.console, sep="\n  ")
    unknown = [e for e in diag.page_errors if not any(k in e for k in TEARDOWN_RACE)]
    assert not unknown, diag("uncaught errors in the page")
    if diag.page_errors:
        warnings.warn(
            f"widget views were torn down while being created: {diag.page_errors}", stacklevel=2
        )


# ---------------------------------------------------------------------------- the saved file


def _check_saved(path: Path) -> None:
    """The saved notebook, read from disk: the turn is a static output that needs no kernel."""
    saved = nbformat.read(path, as_version=4)
    nbformat.validate(saved)
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
