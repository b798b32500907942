"""Helpers for the real-browser test: a JupyterLab server on localhost and Debian's chromium.

Nothing here downloads anything: Playwright drives the system chromium, whose host resolver
knows no name but localhost, so a page's requests to other hosts (a CDN, a news feed) fail
at once. (Not a Playwright route: a route is served by the Python client, which in the sync
API only runs while the test is inside a Playwright call, so requests stall meanwhile.)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A running ``python -m jupyterlab`` (see `jupyter_lab`)."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    root: Path
    log: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """A page of the server with the token appended (``path`` starts with ``/``)."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the REST API; returns the parsed JSON answer (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the server to stop (SIGTERM, which shuts its kernels down), then kill it."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextmanager
def jupyter_lab(
    root: Path, env: dict[str, str], log: Path, *, timeout: float = 60.0, app: str = "jupyterlab"
) -> Iterator[LabServer]:
    """Start JupyterLab (or, with ``app="notebook"``, Notebook 7) on 127.0.0.1 serving
    ``root`` with ``env`` (its kernels inherit it); yield once ``/api/status`` answers; stop it
    (and its kernels) on the way out."""
    port = free_port()
    token = secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        app,
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--ServerApp.terminals_enabled=False",
    ]
    if app == "jupyterlab":
        command += [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    lab = LabServer(process, port, token, root, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {process.returncode}:\n{lab.log_tail()}"
                )
            try:
                lab.api("GET", "/api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"JupyterLab did not answer within {timeout:.0f} s:\n{lab.log_tail()}"
                    ) from None
                time.sleep(0.2)
        yield lab
    finally:
        lab.stop()


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
