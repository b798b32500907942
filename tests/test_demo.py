"""The README's main job: `python -m agentkernel demo` serves the quickstart offline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_the_quickstart_with_the_scripted_model(tmp_path: Path) -> None:
    port, token = _free_port(), "demo-test-token"
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY",)}
    env.update(
        CLAUDE_CONFIG_DIR=str(tmp_path / "no-credentials"), JUPYTER_RUNTIME_DIR=str(tmp_path)
    )
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentkernel",
            "demo",
            "--no-browser",  # options first, no notebook named: the quickstart
            "--port",
            str(port),
            f"--ServerApp.token={token}",
            "--ServerApp.ip=127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = demo.stdout.readline() if demo.stdout else ""
        assert "Scripted demo model on http://127.0.0.1:" in banner, banner
        model_url = banner.split(" on ", 1)[1].split(":", 2)
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/contents/quickstart.ipynb"
                    f"?content=0&token={token}",
                    timeout=2,
                ) as reply:
                    status = json.load(reply)
            except OSError:
                time.sleep(0.5)
        assert status is not None and status["type"] == "notebook", "JupyterLab did not serve it"
        assert model_url[0] == "http"
        # The URL it prints opens the notebook, not the launcher.
        printed = ""
        while demo.stdout and "/lab/tree/" not in printed and time.monotonic() < deadline:
            printed = demo.stdout.readline()
        assert f"127.0.0.1:{port}/lab/tree/quickstart.ipynb" in printed, printed
    finally:
        children = psutil.Process(demo.pid).children(recursive=True)
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        psutil.wait_procs(children, timeout=15)
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)


def test_demo_without_the_notebook_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentkernel", "demo", str(tmp_path / "missing.ipynb")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not found" in result.stderr and "python -m agentkernel demo PATH" in result.stderr


def test_demo_help_documents_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentkernel", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--port PORT" in result.stdout and "--no-browser" in result.stdout
