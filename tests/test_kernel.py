"""The Agent kernel in real kernels (jupyter_client), on the real CLI and the scripted model.

The kernels come from the repository's own data-file kernel spec (``share/jupyter``, what
``pip install`` ships), found through ``JUPYTER_PATH``: the user's Jupyter setup is never used.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from IPython.testing.globalipapp import start_ipython
from jupyter_client.manager import KernelManager, start_new_kernel

from agentkernel.__main__ import main as agentkernel_main
from agentkernel.kernel import install_kernel_spec, kernel_spec
from agentkernel.kernel._cells import classify
from agentkernel.kernel._introspect import subcommand_descriptions
from agentkernel.notebook.magics import SUBCOMMANDS, load
from agentkernel.testing import Reply, ScriptedModelServer, text, tool_use

from .conftest import wait_until_gone
from .kernel_client import CellRun, KernelDriver

REPO = Path(__file__).resolve().parent.parent
SHARE = REPO / "share" / "jupyter"
SPEC_DIR = SHARE / "kernels" / "agent"

StartKernel = Callable[..., tuple[KernelManager, KernelDriver]]


def cli_processes(config_dir: str) -> list[psutil.Process]:
    """Claude Code CLI processes anywhere in the process table that use `config_dir`: only
    this test's agents (even orphaned ones, reparented away from the test process)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "_bundled/claude" not in " ".join(process.info["cmdline"] or []):
                continue
            if process.environ().get("CLAUDE_CONFIG_DIR") == config_dir:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def start_kernel(
    agent_env: dict[str, str], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StartKernel]:
    """Start Agent kernels on the scripted server; all are shut down and checked for agents
    left behind."""
    monkeypatch.setenv(
        "JUPYTER_PATH", os.pathsep.join([str(workspace.parent / "jupyter"), str(SHARE)])
    )
    started: list[tuple[KernelManager, Any]] = []

    def start(kernel_name: str = "agent", **env: str) -> tuple[KernelManager, KernelDriver]:
        km, kc = start_new_kernel(
            kernel_name=kernel_name, env={**os.environ, **agent_env, **env}, cwd=str(workspace)
        )
        started.append((km, kc))
        return km, KernelDriver(kc)

    yield start
    for km, kc in started:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel()
    leftover = [p.pid for p in cli_processes(agent_env["CLAUDE_CONFIG_DIR"])]
    assert wait_until_gone(leftover) == [], "an agent CLI outlived its kernel"


def add_kernel_spec(workspace: Path, name: str, **changes: Any) -> None:
    """A variant of the data-file spec, in the first JUPYTER_PATH entry of `start_kernel`."""
    spec = json.loads((SPEC_DIR / "kernel.json").read_text())
    extra_argv = changes.pop("extra_argv", [])
    spec.update(changes)
    spec["argv"] += extra_argv
    target = workspace.parent / "jupyter" / "kernels" / name
    target.mkdir(parents=True)
    (target / "kernel.json").write_text(json.dumps(spec))


def carries_part_of(reply: str, msg: dict[str, Any]) -> bool:
    """Whether a streamed output or live-view update carries a piece of `reply`."""
    if msg["msg_type"] not in ("stream", "comm_msg"):
        return False
    content = json.dumps(msg["content"])
    return any(reply[i : i + 6] in content for i in range(len(reply) - 5))


def shown(run: CellRun) -> str:
    return run.stdout + "".join(run.outputs())


def sent_prompts(server: ScriptedModelServer) -> str:
    """Every user text of the last request the model received (the conversation so far)."""
    return json.dumps(server.requests[-1].body["messages"])


# -- turns and Python cells ------------------------------------------------------------------


def test_prompt_cells_stream_and_python_cells_share_the_namespace(
    server: ScriptedModelServer, start_kernel: StartKernel
) -> None:
    reply = "Hello from the scripted model, streamed in small pieces."
    server.add(
        Reply(match="hello agent", blocks=[text(reply)], chunk_size=4, delay=0.01),
        Reply(match="basket costs 4.55", blocks=[text("The fig is the most expensive.")]),
    )
    _, driver = start_kernel()
    info = driver.client.kernel_info(reply=True)["content"]
    assert info["implementation"] == "agentkernel"
    assert info["language_info"]["name"] == "markdown"

    # A front end that shows widgets (allow_stdin): the live view streams the reply.
    run = driver.run("hello agent, how are you?\n>>> f(1)", allow_stdin=True)
    assert run.status == "ok", run.error
    live = [m for m in run.of_type("stream", "comm_msg") if carries_part_of(reply, m)]
    assert len(live) > 1, "the reply did not stream"
    assert reply in run.outputs("text/markdown")[-1]
    # Sent as typed: IPython's prompt strippers never see a prompt (">>> " stays).
    assert server.requests[-1].last_user_text == "hello agent, how are you?\n>>> f(1)"

    python = driver.run('%%python\nprices = {"fig": 2.5, "pear": 0.8}\ntotal = 4.55\ntotal')
    assert python.status == "ok", python.error
    assert python.outputs() == ["4.55"]
    # A headless run (nbclient): no widgets, the static output.
    prompt = driver.run("My basket costs {total}. Which of {prices} is the most expensive?")
    assert prompt.status == "ok", prompt.error
    assert not prompt.of_type("comm_open")
    assert "basket costs 4.55. Which of {'fig': 2.5" in server.requests[-1].last_user_text
    assert "The fig is the most expensive." in shown(prompt)

    assert "hi from the shell" in driver.run("!echo hi from the shell").stdout
    assert driver.run("%time x = 1").status == "ok"
    listing = driver.run("%agent list")
    assert "default" in listing.stdout and "claude" in listing.stdout
    history = driver.run("%agent history").stdout
    assert "hello agent" in history and "basket costs 4.55" in history
    assert "new" in driver.run("%agent help").stdout
    assert "unknown %agent subcommand" in driver.run("%agent nonsense").error

    # IPython's history holds the cells as typed.
    driver.client.history(hist_access_type="tail", n=20, raw=True)
    typed = [entry[2] for entry in driver.client.get_shell_msg(timeout=10)["content"]["history"]]
    assert "hello agent, how are you?\n>>> f(1)" in typed
    assert any(entry.startswith("%%python\nprices") for entry in typed)


def test_an_approval_click_answers_the_running_prompt(
    server: ScriptedModelServer, start_kernel: StartKernel, workspace: Path
) -> None:
    """The turn is awaited on the kernel's loop, so the widget click (a comm message) reaches
    the cell while it waits for it."""
    server.add(
        Reply(match="make", blocks=[tool_use("Bash", {"command": "echo hi > clicked.txt"})]),
        Reply(match="tool_result", blocks=[text("File made.")]),
    )
    _, driver = start_kernel()
    driver.announce_widget_support()
    run = driver.start("make the file", allow_stdin=True)  # a front end that shows widgets
    driver.wait_for(run, lambda m: widget_state(m).get("description") == "Allow")
    for msg in run.of_type("comm_open"):
        if widget_state(msg).get("_model_name") == "AnyModel":  # each block: "drawn"
            driver.send_comm(
                msg["content"]["comm_id"], {"method": "custom", "content": {"rendered": True}}
            )
    allow = next(
        m for m in run.of_type("comm_open") if widget_state(m).get("description") == "Allow"
    )
    driver.send_comm(
        allow["content"]["comm_id"], {"method": "custom", "content": {"event": "click"}}
    )
    driver.finish(run, timeout=60)
    assert run.status == "ok", run.error
    assert (workspace / "clicked.txt").read_text() == "hi\n"
    assert "File made." in "".join(run.outputs())


def widget_state(msg: dict[str, Any]) -> dict[str, Any]:
    if msg["msg_type"] != "comm_open":
        return {}
    return msg["content"]["data"].get("state", {})


def write_notebook(path: Path, cell_ids: list[str]) -> None:
    """A saved Agent-kernel notebook whose cells have these ids (what Jupyter writes)."""
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "agent", "display_name": "Agent", "language": "markdown"}}
    )
    notebook.cells = [nbformat.v4.new_code_cell(f"prompt of {i}", id=i) for i in cell_ids]
    nbformat.write(notebook, path)


def test_a_restart_continues_the_notebook_session_and_new_starts_fresh(
    server: ScriptedModelServer,
    start_kernel: StartKernel,
    agent_env: dict[str, str],
    workspace: Path,
) -> None:
    server.add(
        Reply(match="first prompt", blocks=[text("One.")]),
        Reply(match="second prompt", blocks=[text("Two.")]),
        Reply(match="third prompt", blocks=[text("Three.")], times=0),
    )
    notebook = workspace / "analysis.ipynb"
    write_notebook(notebook, ["cell-1", "cell-2"])
    km, driver = start_kernel(JPY_SESSION_NAME=str(notebook))
    assert driver.run("the first prompt", cell_id="cell-1").status == "ok"
    assert driver.run("the second prompt", cell_id="cell-2").status == "ok"
    before = [p.pid for p in cli_processes(agent_env["CLAUDE_CONFIG_DIR"])]
    assert before, "no agent process ran the turns"

    km.restart_kernel()
    driver.client.wait_for_ready(timeout=60)
    assert wait_until_gone(before) == [], "the restart left the old agent running"
    # A new cell (not in the saved file yet): the file's cells say which notebook this is.
    third = driver.run("the third prompt", cell_id="cell-3")
    assert third.status == "ok", third.error
    assert "continuing this notebook's session 'default'" in third.stdout
    assert "2 earlier turn(s)" in third.stdout and "`%agent new`" in third.stdout
    assert "the first prompt" in sent_prompts(server)
    assert "the second prompt" in sent_prompts(server)

    assert driver.run("%agent new").status == "ok"
    assert driver.run("the third prompt, fresh").status == "ok"
    assert "the first prompt" not in sent_prompts(server)

    # Another notebook has its own session.
    other_file = workspace / "other.ipynb"
    write_notebook(other_file, ["other-1"])
    _, other = start_kernel(JPY_SESSION_NAME=str(other_file))
    run = other.run("the third prompt, elsewhere", cell_id="other-1")
    assert run.status == "ok", run.error
    assert "continuing" not in run.stdout
    assert "the first prompt" not in sent_prompts(server)


def test_a_notebook_is_known_by_its_cells_not_its_name(
    server: ScriptedModelServer, start_kernel: StartKernel, workspace: Path
) -> None:
    """Rename Untitled.ipynb and create a new notebook (it takes the freed name): the new one
    starts fresh, the renamed one continues, a copy continues a fork; each says so."""
    server.add(Reply(match="word", blocks=[text("Noted.")], times=0))
    untitled = workspace / "Untitled.ipynb"
    write_notebook(untitled, ["a-1"])
    km, driver = start_kernel(JPY_SESSION_NAME=str(untitled))
    assert driver.run("remember the word tulip", cell_id="a-1").status == "ok"
    driver.client.stop_channels()
    km.shutdown_kernel()

    renamed = workspace / "analysis.ipynb"
    untitled.rename(renamed)
    write_notebook(untitled, ["b-1"])
    km, fresh = start_kernel(JPY_SESSION_NAME=str(untitled))
    run = fresh.run("which word did I say?", cell_id="b-1")
    assert run.status == "ok", run.error
    assert "continuing" not in run.stdout
    assert "belong to a notebook that was renamed, moved or replaced" in run.stdout
    assert "tulip" not in sent_prompts(server)
    fresh.client.stop_channels()
    km.shutdown_kernel()

    km, moved = start_kernel(JPY_SESSION_NAME=str(renamed))
    run = moved.run("which word, after the rename?", cell_id="a-2")
    assert run.status == "ok", run.error
    assert "continuing this notebook's session 'default'" in run.stdout
    assert "last used as Untitled.ipynb" in run.stdout
    assert "tulip" in sent_prompts(server)
    original_id = moved.run("%%python\nprint(__agentkernel__.sessions.get().id)").stdout.strip()
    moved.client.stop_channels()
    km.shutdown_kernel()

    copy = workspace / "analysis-Copy1.ipynb"
    copy.write_bytes(renamed.read_bytes())
    _, copied = start_kernel(JPY_SESSION_NAME=str(copy))
    run = copied.run("which word, in the copy?", cell_id="a-3")
    assert run.status == "ok", run.error
    assert "this notebook is a copy of analysis.ipynb" in run.stdout
    assert "tulip" in sent_prompts(server)
    fork_id = copied.run("%%python\nprint(__agentkernel__.sessions.get().id)").stdout.strip()
    assert fork_id and fork_id != original_id


def test_on_start_new_starts_a_new_session_after_a_restart(
    server: ScriptedModelServer, start_kernel: StartKernel, workspace: Path
) -> None:
    server.add(Reply(match="prompt", blocks=[text("Noted.")], times=0))
    add_kernel_spec(workspace, "agent-fresh", extra_argv=["--AgentKernel.on_start=new"])
    km, driver = start_kernel("agent-fresh")
    assert driver.run("the first prompt").status == "ok"
    km.restart_kernel()
    driver.client.wait_for_ready(timeout=60)
    run = driver.run("the second prompt")
    assert run.status == "ok", run.error
    assert "the first prompt" not in sent_prompts(server)


def test_a_conversation_the_agent_lost_is_started_afresh_and_said(
    server: ScriptedModelServer, start_kernel: StartKernel, agent_env: dict[str, str]
) -> None:
    server.add(Reply(match="prompt", blocks=[text("Noted.")], times=0))
    km, driver = start_kernel()
    assert driver.run("the first prompt").status == "ok"
    for transcript in Path(agent_env["CLAUDE_CONFIG_DIR"]).glob("projects/*/*.jsonl"):
        transcript.unlink()
    km.restart_kernel()
    driver.client.wait_for_ready(timeout=60)
    run = driver.run("the second prompt")
    assert run.status == "ok", run.error
    assert "could not continue this notebook's session" in run.stdout
    assert "this is a new session" in run.stdout
    assert "Noted." in shown(run)


# -- processes ---------------------------------------------------------------------------


def test_shutdown_ends_the_agent_process(
    server: ScriptedModelServer, start_kernel: StartKernel, agent_env: dict[str, str]
) -> None:
    server.add(Reply(match="hello", blocks=[text("Hi.")]))
    km, driver = start_kernel()
    assert driver.run("hello").status == "ok"
    assert driver.run("%agent new second").status == "ok"
    agents = [p.pid for p in cli_processes(agent_env["CLAUDE_CONFIG_DIR"])]
    assert agents, "no agent process ran the turn"
    kernel = psutil.Process(km.provisioner.pid)  # type: ignore[union-attr]

    driver.client.stop_channels()
    km.shutdown_kernel()
    assert wait_until_gone([kernel.pid, *agents]) == []
    assert cli_processes(agent_env["CLAUDE_CONFIG_DIR"]) == []


@pytest.mark.parametrize("delay", [0.0, 2.5])
def test_shutdown_while_the_agent_starts_leaves_no_process(
    delay: float, start_kernel: StartKernel, agent_env: dict[str, str]
) -> None:
    """Shut down while the kernel imports the agent's SDK (at once) or, on most machines,
    while the CLI connects (after 2.5 s): the agent is closed, not abandoned."""
    km, driver = start_kernel()
    time.sleep(delay)
    driver.client.stop_channels()
    km.shutdown_kernel()
    assert not km.is_alive()
    time.sleep(0.5)  # anything the kernel started would be running by now
    assert cli_processes(agent_env["CLAUDE_CONFIG_DIR"]) == []


def test_an_interrupt_while_the_agent_starts_ends_the_cell(
    server: ScriptedModelServer, start_kernel: StartKernel
) -> None:
    server.add(Reply(match="hello", blocks=[text("Hi.")], times=0))
    km, driver = start_kernel()
    # The warm-up takes seconds (the SDK import alone); the first cell waits for it.
    run = driver.start("hello")
    time.sleep(0.3)
    km.interrupt_kernel()
    driver.finish(run, timeout=30)
    assert run.status == "error"
    assert "interrupted while the agent was starting" in run.error
    after = driver.run("hello again")
    assert after.status == "ok", after.error
    assert "Hi." in shown(after)


@pytest.mark.parametrize("mode", ["signal", "message"])
def test_interrupt_ends_the_turn_and_the_next_cell_works(
    mode: str, server: ScriptedModelServer, start_kernel: StartKernel, workspace: Path
) -> None:
    server.add(
        Reply(match="slow", blocks=[text("word " * 300)], chunk_size=2, delay=0.02),
        Reply(match="after", blocks=[text("Back to work.")]),
    )
    add_kernel_spec(workspace, f"agent-{mode}", interrupt_mode=mode)
    km, driver = start_kernel(f"agent-{mode}")
    assert km.kernel_spec is not None and km.kernel_spec.interrupt_mode == mode
    run = driver.start("a slow answer please", allow_stdin=True)
    driver.wait_for(run, lambda m: carries_part_of("word word", m))
    started = time.monotonic()
    km.interrupt_kernel()
    driver.finish(run, timeout=30)
    assert time.monotonic() - started < 10
    assert run.status == "ok", run.error
    assert "interrupted" in shown(run).lower()
    assert ("word " * 300).strip() not in shown(run)

    after = driver.run("and after that?")
    assert after.status == "ok", after.error
    assert "Back to work." in shown(after)


# -- kernel specs ------------------------------------------------------------------------


def test_the_data_file_spec_is_the_spec_and_its_logos_are_pngs() -> None:
    assert json.loads((SPEC_DIR / "kernel.json").read_text()) == kernel_spec()
    for size in (32, 64):
        data = (SPEC_DIR / f"logo-{size}x{size}.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert struct.unpack(">II", data[16:24]) == (size, size)


def test_install_writes_a_variant_that_passes_backend_and_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(SHARE))
    prefix = tmp_path / "prefix"
    written = Path(
        install_kernel_spec("agent-codex", backend="codex", model="gpt-5", prefix=str(prefix))
    )
    assert written == prefix / "share" / "jupyter" / "kernels" / "agent-codex"
    spec = json.loads((written / "kernel.json").read_text())
    assert spec["display_name"] == "Agent (Codex, gpt-5)"
    assert spec["argv"][:3] == [sys.executable, "-m", "agentkernel.kernel"]
    assert "--AgentKernel.backend=codex" in spec["argv"]
    assert "--AgentKernel.model=gpt-5" in spec["argv"]
    assert {p.name for p in written.iterdir()} == {
        "kernel.json",
        "logo-32x32.png",
        "logo-64x64.png",
    }

    assert (
        agentkernel_main(["install", "--prefix", str(prefix), "--name", "agent-opus", "-m", "opus"])
        == 0
    )
    assert "agent-opus" in capsys.readouterr().out
    spec = json.loads((prefix / "share/jupyter/kernels/agent-opus/kernel.json").read_text())
    assert spec["display_name"] == "Agent (opus)"


def test_a_variant_kernel_uses_its_model(
    server: ScriptedModelServer, start_kernel: StartKernel, workspace: Path
) -> None:
    server.add(Reply(match="which model", blocks=[text("This one.")]))
    add_kernel_spec(workspace, "agent-model", extra_argv=["--AgentKernel.model=claude-scripted-1"])
    _, driver = start_kernel("agent-model")
    run = driver.run("which model are you?")
    assert run.status == "ok", run.error
    assert server.requests[-1].body["model"] == "claude-scripted-1"


def test_pip_install_into_a_fresh_venv_ships_the_kernel_spec(tmp_path: Path) -> None:
    """A real (non-editable) install: the data files land in the venv and Jupyter finds them.
    The venv borrows this environment's packages through a .pth file (no downloads, ~2 s),
    and --ignore-installed keeps pip from touching them."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    here = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "pip").is_dir())
    Path(site, "_borrowed.pth").write_text(here + "\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    install = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",
            "--no-cache-dir",
            str(REPO),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    listing = subprocess.run(
        [python, "-m", "jupyter_client.kernelspecapp", "list", "--json"],  # jupyter kernelspec
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    specs = json.loads(listing.stdout)["kernelspecs"]
    assert "agent" in specs, "the wheel has no share/jupyter/kernels/agent data files"
    spec = specs["agent"]
    assert Path(spec["resource_dir"]).is_relative_to(venv)
    assert spec["spec"]["display_name"] == "Agent"
    assert {p.name for p in Path(spec["resource_dir"]).iterdir()} >= {
        "kernel.json",
        "logo-32x32.png",
        "logo-64x64.png",
    }
    imported = subprocess.run(
        [python, "-c", "import agentkernel.kernel as k; print(k.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(imported.stdout.strip()).is_relative_to(venv)


# -- cells and help ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "source"),
    [
        ("explain this", "prompt", "explain this"),
        ("\n\n  indented prompt\nmore", "prompt", "  indented prompt\nmore"),
        ("%%python\nx = 1\n", "python", "x = 1\n"),
        ("\n%%python  \nx = 1", "python", "x = 1"),
        ("%%python", "python", ""),
        ("%agent list", "python", "%agent list"),
        ("%%bash\necho hi", "python", "%%bash\necho hi"),
        ("!ls", "python", "!ls"),
        ("", "python", ""),
        ("what does %%python do?", "prompt", "what does %%python do?"),
    ],
)
def test_cells_are_prompts_unless_they_start_python(code: str, kind: str, source: str) -> None:
    cell = classify(code)
    assert (cell.kind, cell.source) == (kind, source)
    assert code[cell.offset :] == cell.source or not cell.source


def test_every_subcommand_has_a_description_in_the_help() -> None:
    shell = start_ipython()
    assert shell is not None
    magics = load(shell)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        magics.line("help")
    described = subcommand_descriptions(out.getvalue(), [*SUBCOMMANDS, "help"])
    assert set(described) == {*SUBCOMMANDS, "help"}
    assert all(described.values())
    assert described["new"] == "Start a new session and make it current."
