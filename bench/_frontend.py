"""The client side the kernel benches share: a kernel started and ended as a front end does,
and the answers a widget front end gives once it has drawn a block.

Why here: the view behaves differently for a page that draws it (it sends a streaming block's
text so far, a finished turn waits for its blocks to be drawn), so a bench that measures a
``%%agent`` cell for a person's front end must say "rendered" exactly as the page's
``block.js`` does, and every bench must say it the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import psutil
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

CLOSE_AGENTS = """\
if "agent" in get_ipython().magics_manager.magics["line"]:
    get_ipython().run_line_magic("agent", "close")
"""
"""Ends the kernel's agent sessions, if agentkernel is loaded (their CLIs end with them)."""


def announcer(client: BlockingKernelClient) -> Callable[[dict[str, Any]], None]:
    """An iopub hook that does what a widget front end does once it has drawn a block: for
    each anywidget comm opened, send ``{"rendered": true}`` back (the view then knows someone
    watches; a streaming block resends what it sent before)."""

    def on_message(msg: dict[str, Any]) -> None:
        if msg["msg_type"] != "comm_open":
            return
        if msg["content"]["data"].get("state", {}).get("_model_name") != "AnyModel":
            return
        content = {
            "comm_id": msg["content"]["comm_id"],
            "data": {"method": "custom", "content": {"rendered": True}},
        }
        client.shell_channel.send(client.session.msg("comm_msg", content))

    return on_message


@contextlib.contextmanager
def kernel(
    env: dict[str, str], cwd: str, *, stderr: IO[bytes] | None = None
) -> Iterator[tuple[BlockingKernelClient, psutil.Process]]:
    """A fresh ``python3`` kernel (jupyter_client) and its process. At the end its agents are
    closed, the kernel shut down, and any process it started that outlived it is killed (it
    was started for this bench, so it is ours to end)."""
    km: KernelManager
    km, client = start_new_kernel(kernel_name="python3", env=env, cwd=cwd, stderr=stderr)
    process: psutil.Process | None = None
    try:
        reply = client.execute_interactive(
            "import os as _bench_os",
            user_expressions={"pid": "_bench_os.getpid()"},
            output_hook=lambda _msg: None,
        )
        pid = reply["content"]["user_expressions"]["pid"]["data"]["text/plain"]
        process = psutil.Process(int(pid))
        yield client, process
    finally:
        descendants: list[psutil.Process] = []
        if process is not None:
            with contextlib.suppress(psutil.Error):
                descendants = process.children(recursive=True)
        with contextlib.suppress(Exception):
            client.execute_interactive(CLOSE_AGENTS, timeout=60, output_hook=lambda _msg: None)
        client.stop_channels()
        km.shutdown_kernel(now=False)
        _, alive = psutil.wait_procs(descendants, timeout=10)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
