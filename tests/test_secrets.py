"""No secret leaks, end to end: a real kernel runs ``%%agent`` cells against the real Claude
Code CLI, and the scripted model streams secrets in pieces of 1, 3 and 16 characters through
text, thinking, a tool's input and its output. Not one appears in any iopub message (live
widget and headless), the saved notebook, the store's files (db, wal, shm), the exports or the
transcript.

What is checked for each place is the secret whole *and* every 10-character piece of it, on
each message and on all of them joined: the live view sends text as many small ``append``
messages, so a secret let through in pieces would be in none of them whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager, start_new_kernel
from nbclient import NotebookClient

from agentkernel.testing import Reply, ScriptedModelServer, text, thinking, tool_use

from .conftest import agent_processes, wait_until_gone
from .kernel_client import CellRun, KernelDriver

ENV_NAME = "MY_SERVICE_TOKEN"
ENV_SECRET = "svc-7f3a9c1e5b2d4f60a8e1-streamed"
ANTHROPIC = "sk-ant-api03-Zx8fK2mQ9vL4pR7tW1yB6nC3dH5jG0sA"
OPENAI = "sk-proj-4fGh7Jk2Lm9Np3Qr6St8Uv1Wx5Yz0Ab"
GITHUB = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
STREAMED = (ENV_SECRET, ANTHROPIC, OPENAI, GITHUB, GITHUB_PAT)
"""Secrets the model streams (text, thinking, tool input) and the tool prints back."""
AWS_HALVES = ("AKIAIOSF", "ODNN7EXAMPLE")
AWS = "".join(AWS_HALVES)
"""Only the tool's output holds this one whole: the command prints its two halves joined."""
CHUNK_SIZES = (1, 3, 16)
PIECE = 10


def script(tag: str, chunk_size: int) -> list[Reply]:
    """A turn that streams every secret through thinking, text and a tool call's input, whose
    output then holds them (and the AWS key) too, and a follow-up that says one again."""
    command = f"echo {GITHUB_PAT} ${ENV_NAME} {ANTHROPIC}; printf '%s%s\\n' {' '.join(AWS_HALVES)}"
    return [
        Reply(
            match=f"leak {tag}",
            chunk_size=chunk_size,
            blocks=[
                thinking(f"The user wants {ANTHROPIC} and {ENV_SECRET} shown. Fine."),
                text(f"Your keys: {OPENAI}, {GITHUB}.\nAnd the token {ENV_SECRET} - done."),
                tool_use("Bash", {"command": command, "description": f"print {GITHUB}"}),
            ],
        ),
        Reply(
            match="tool_result",
            chunk_size=chunk_size,
            blocks=[text(f"It printed {AWS} and {ENV_SECRET}.")],
        ),
    ]


def leaks(texts: list[str]) -> list[str]:
    """The secrets, or pieces of them, found in any of `texts` or in all of them joined."""
    found = []
    for where in [*texts, "".join(texts)]:
        for secret in STREAMED:
            pieces = {secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)}
            found += [piece for piece in pieces if piece in where]
        if AWS in where:
            found.append(AWS)
    return sorted(set(found))


def message_texts(run: CellRun) -> list[str]:
    """Every iopub message of a cell as JSON, and the live view's appended text in order."""
    messages = [json.dumps(m["content"]) for m in run.iopub]
    appended = [
        str(m["content"]["data"].get("content", {}).get("append", ""))
        for m in run.of_type("comm_msg")
        if m["content"]["data"].get("method") == "custom"
    ]
    streamed = [m["content"]["text"] for m in run.of_type("stream")]
    return [*messages, "".join(appended), "".join(streamed)]


def store_bytes(path: Path) -> str:
    parts = [path, *(Path(f"{path}-{suffix}") for suffix in ("wal", "shm", "journal"))]
    return b"".join(p.read_bytes() for p in parts if p.exists()).decode("latin-1")


@pytest.fixture
def secret_env(agent_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The kernel's environment: the scripted server, the secret, and a store of its own."""
    return {
        **os.environ,
        **agent_env,
        ENV_NAME: ENV_SECRET,
        "AGENTKERNEL_STORE": str(tmp_path / "secrets.db"),
    }


@pytest.fixture
def kernel(
    secret_env: dict[str, str], workspace: Path
) -> Iterator[tuple[KernelManager, KernelDriver]]:
    km, kc = start_new_kernel(kernel_name="python3", env=secret_env, cwd=str(workspace))
    driver = KernelDriver(kc)
    loaded = driver.run("%load_ext agentkernel")
    assert loaded.status == "ok", loaded.error
    before = {p.pid for p in agent_processes()}
    yield km, driver
    kc.stop_channels()
    if km.is_alive():  # the test may have shut it down to read the store it closed
        km.shutdown_kernel(now=False)
    leftover = [p.pid for p in agent_processes() if p.pid not in before]
    assert wait_until_gone(leftover) == [], "an agent CLI outlived the kernel"


def _state(msg: dict[str, Any]) -> dict[str, Any]:
    return msg["content"]["data"].get("state", {}) if msg["msg_type"] == "comm_open" else {}


def _has_allow_button(msg: dict[str, Any]) -> bool:
    return "agentkernel-allow" in _state(msg).get("_dom_classes", [])


def _show_views_and_allow(driver: KernelDriver, run: CellRun) -> None:
    """What a widget front end does: draw the live view (each block says so), then click
    Allow on the tool's approval card."""
    for msg in run.of_type("comm_open"):
        if _state(msg).get("_model_name") == "AnyModel":
            driver.send_comm(
                msg["content"]["comm_id"], {"method": "custom", "content": {"rendered": True}}
            )
    (allow,) = [
        m["content"]["comm_id"]
        for m in run.of_type("comm_open")
        if _state(m).get("_model_name") == "ButtonModel" and _has_allow_button(m)
    ]
    driver.send_comm(allow, {"method": "custom", "content": {"event": "click"}})


def test_no_secret_reaches_iopub_the_store_exports_or_the_transcript(
    server: ScriptedModelServer,
    kernel: tuple[KernelManager, KernelDriver],
    tmp_path: Path,
    secret_env: dict[str, str],
) -> None:
    km, driver = kernel
    runs: dict[str, CellRun] = {}
    for size in CHUNK_SIZES:
        server.add(*script(f"widget {size}", size))
        run = driver.start(f"%%agent\nleak widget {size}", allow_stdin=True)
        driver.wait_for(run, _has_allow_button)
        _show_views_and_allow(driver, run)
        runs[f"widget {size}"] = driver.finish(run, timeout=120)
        server.add(*script(f"headless {size}", size))
        runs[f"headless {size}"] = driver.run(f"%%agent -p allow-all\nleak headless {size}")

    for name, run in runs.items():
        assert run.status == "ok", (name, run.error)
        shown = "".join(run.outputs())
        # The turn really ran: the tool printed, the follow-up was answered, all redacted.
        assert "It printed [REDACTED] and [REDACTED]." in shown, name
        assert leaks(message_texts(run)) == [], name
    widget = runs[f"widget {CHUNK_SIZES[0]}"]
    assert any(m["msg_type"] == "comm_msg" for m in widget.iopub), "the live view never streamed"
    # The model did see the secrets: the tool output went back to it. Only we hide them.
    assert ENV_SECRET in server.requests[-1].last_user_text

    md, notebook = tmp_path / "export.md", tmp_path / "export.ipynb"
    listing = driver.run("%agent sessions")
    session_id = listing.stdout.splitlines()[1].split()[0]
    shown = driver.run(f"%agent show {session_id}")
    exported = [driver.run(f"%agent export {md}"), driver.run(f"%agent export {notebook}")]
    for run in (shown, *exported):
        assert run.status == "ok", run.error
    assert "[REDACTED]" in shown.stdout and "leak headless 16" in shown.stdout
    for run in (listing, shown, *exported):
        assert leaks(message_texts(run)) == []
    assert leaks([md.read_text(), notebook.read_text()]) == []

    store = Path(secret_env["AGENTKERNEL_STORE"])
    assert leaks([store_bytes(store)]) == []  # while the kernel has it open: db, wal, shm
    km.shutdown_kernel(now=False)
    assert "leak headless 16" in store_bytes(store)
    assert leaks([store_bytes(store)]) == []


def test_a_saved_notebook_holds_no_secret(
    server: ScriptedModelServer,
    secret_env: dict[str, str],
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A headless run (nbclient, as papermill and ``jupyter execute`` do), saved."""
    for size in CHUNK_SIZES:
        server.add(*script(f"saved {size}", size))
    cells = [nbformat.v4.new_code_cell("%load_ext agentkernel")] + [
        nbformat.v4.new_code_cell(f"%%agent -p allow-all\nleak saved {size}")
        for size in CHUNK_SIZES
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    for name, value in secret_env.items():
        monkeypatch.setenv(name, value)  # the kernel nbclient starts inherits them
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=180,
        resources={"metadata": {"path": str(workspace)}},
    ).execute()
    saved = tmp_path / "saved.ipynb"
    nbformat.write(notebook, saved)
    on_disk = saved.read_text()
    assert on_disk.count("It printed [REDACTED] and [REDACTED].") >= len(CHUNK_SIZES)
    assert leaks([on_disk]) == []
    assert wait_until_gone([p.pid for p in agent_processes()]) == []
