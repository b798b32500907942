"""The notebook tools in a stock python3 kernel: the real Claude Code CLI calls them through
``%%agent`` cells, against the scripted model; plus the kernel runner on its own."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager, start_new_kernel

from agentkernel.notebook.tools import KernelRunner
from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .kernel_client import KernelDriver

P = "mcp__agentkernel__"
"""How Claude Code names the session's Python tools."""
PNG = "iVBORw0KGgo"
"""The start of every base64 PNG."""


@pytest.fixture
def kernel(agent_env: dict[str, str], workspace: Path) -> Iterator[KernelDriver]:
    env = {**os.environ, **agent_env, "AGENTKERNEL_STORE": ":memory:"}
    km: KernelManager
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(workspace))
    try:
        driver = KernelDriver(kc)
        setup = driver.run("%load_ext agentkernel")
        assert setup.status == "ok", setup.error
        yield driver
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _last_text(server: ScriptedModelServer) -> str:
    return server.requests[-1].last_user_text


def test_python_tools_and_run_python_in_a_stock_kernel(
    kernel: KernelDriver, server: ScriptedModelServer
) -> None:
    server.add(
        Reply(match="add 2 and 3", blocks=[tool_use(f"{P}add", {"a": 2, "b": 3})]),
        Reply(match="tool_result", blocks=[text("The sum is 5.")]),
        Reply(match="set x", blocks=[tool_use(f"{P}run_python", {"code": "x = 41\nx += 1\nx"})]),
        Reply(match="tool_result", blocks=[text("x is 42.")]),
        Reply(
            match="plot it",
            blocks=[
                tool_use(
                    f"{P}run_python",
                    {
                        "code": "import matplotlib.pyplot as plt\n"
                        "plt.plot([1, 4, 9])\nprint('drawn')"
                    },
                )
            ],
        ),
        Reply(match="tool_result", blocks=[text("A parabola.")]),
        Reply(match="clobber x", blocks=[tool_use(f"{P}run_python", {"code": "x = -1"})]),
        Reply(match="tool_result", blocks=[text("I was not allowed.")]),
        Reply(match="call broken", blocks=[tool_use(f"{P}broken", {})]),
        Reply(match="tool_result", blocks=[text("It failed; carrying on.")]),
    )
    defined = kernel.run(
        "import agentkernel.tools\n"
        "@agentkernel.tools.tool\n"
        "def add(a: int, b: int) -> int:\n"
        "    '''Add two integers.'''\n"
        "    return a + b\n"
        "@agentkernel.tools.tool(kind='read')\n"
        "def broken() -> str:\n"
        "    '''Always fails.'''\n"
        "    raise ValueError('broken on purpose')\n"
    )
    assert defined.status == "ok", defined.error

    added = kernel.run("%%agent -p allow-all\nadd 2 and 3")
    assert added.status == "ok", added.error
    assert _last_text(server) == "5", "the model receives the function's result"

    changed = kernel.run("%%agent -p allow-all\nset x")
    assert "result:\n42" in _last_text(server)
    assert any("42" in out for out in changed.outputs()), "the cell shows what ran"
    assert kernel.run("x").outputs() == ["42"], "the next cell sees the variable"

    plotted = kernel.run("%%agent -p allow-all\nplot it")
    body = json.dumps(server.requests[-1].body)
    assert PNG in body, "the figure reaches the model as an image"
    assert "drawn" in plotted.stdout
    assert plotted.outputs("image/png"), "the figure is shown in the cell too"

    denied = kernel.run("%%agent\nclobber x")  # headless: nothing can ask, so it is denied
    assert denied.status == "ok", denied.error
    assert "denied" in _last_text(server)
    assert kernel.run("x").outputs() == ["42"], "a denied run_python changed the namespace"

    failed = kernel.run("%%agent -p allow-all\ncall broken")
    assert "ValueError: broken on purpose" in _last_text(server)
    assert "It failed; carrying on." in failed.outputs()[-1], "the turn goes on"


def test_the_read_tools_and_insert_cell(kernel: KernelDriver, server: ScriptedModelServer) -> None:
    server.add(
        Reply(match="look around", blocks=[tool_use(f"{P}list_variables", {})]),
        Reply(
            match="tool_result",
            blocks=[tool_use(f"{P}inspect_variable", {"name": "frame"})],
            times=1,
        ),
        Reply(match="tool_result", blocks=[tool_use(f"{P}notebook_history", {"last": 5})], times=1),
        Reply(
            match="tool_result",
            blocks=[tool_use(f"{P}insert_cell", {"source": "frame.describe()"})],
            times=1,
        ),
        Reply(match="tool_result", blocks=[text("Offered a cell.")]),
    )
    setup = kernel.run(
        "import numpy as np, pandas as pd\n"
        "frame = pd.DataFrame({'price': [1.5, 2.5, None], 'city': ['a', 'b', 'c']})\n"
        "grid = np.arange(12).reshape(3, 4)"
    )
    assert setup.status == "ok", setup.error
    # allow-reads: the three read tools run unasked; insert_cell (an edit) is asked, so allow all
    run = kernel.run("%%agent -p allow-all\nlook around")
    assert run.status == "ok", run.error
    results = [r.last_user_text for r in server.requests if "tool_result" in r.markers]
    listing, frame, history, inserted = results[-4:]
    assert "frame: DataFrame 3 x 2" in listing and "grid: ndarray 3 x 4 (int64)" in listing
    assert "3 rows x 2 columns" in frame and "price: float64" in frame
    assert "missing values: price: 1" in frame and "summary statistics" in frame
    assert "grid = np.arange(12)" in history
    assert "Offered a new code cell" in inserted
    payloads = run.reply["content"]["payload"]  # type: ignore[index]
    assert {"source": "set_next_input", "text": "frame.describe()", "replace": False} in payloads


def test_a_tool_runs_on_a_worker_thread_when_the_kernel_thread_is_blocked() -> None:
    """A cell that blocks (``session.sync.send``) cannot run a tool call on its thread: after
    a grace period the call runs on a worker thread instead of waiting forever."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        runner = KernelRunner(shell=None, loop=loop)
        where: list[str] = []

        def call() -> Any:
            where.append(threading.current_thread().name)
            return "ran"

        assert asyncio.run(runner(call)) == "ran"
        assert where == [thread.name], "a free kernel thread runs the call itself"
        loop.call_soon_threadsafe(time.sleep, 3)  # the kernel thread is now busy
        time.sleep(0.05)
        started = time.monotonic()
        assert asyncio.run(runner(call)) == "ran"
        assert where[-1] != thread.name and time.monotonic() - started < 2.5
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
