"""Many sessions in one kernel: memory once they are idle, with parking against without, and
what the first turn of a parked session costs against a live one.

    python bench/many_sessions.py [--sessions 20] [--idle 2] [--runs 3]

Per run, two fresh ``python3`` kernels (jupyter_client, ``%load_ext agentkernel``), each with
a fresh CLAUDE_CONFIG_DIR and session store, the bundled Claude Code CLI and the scripted model
server (in a child process; an instant model):

- live:   ``AgentMagics.idle_timeout = None``: `--sessions` named sessions, one ``%%agent
          --session sNN`` turn each, then idle: every one keeps its CLI;
- parked: ``AgentMagics.idle_timeout = --idle``: the same turns, then idle until every
          session is parked (its CLI ended; the next turn resumes the conversation).

Figures: the kernel's own memory once ``%load_ext`` has imported the SDK (no session yet),
and the total resident memory (RSS, and USS: pages no other process shares) of the kernel
and all its descendant processes once the sessions are idle (parked: once all are parked), and
the wall time of one more turn of the first session (``%%agent --session s01``: a live CLI, or
a parked session that starts a CLI that resumes it), from execute_request to idle, median of
the runs with min-max. ``%agent list`` of the parked kernel is shown (state column) once.
Target: idle sessions cost ~0 MB (parked total close to the bare kernel's).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import psutil
from _frontend import kernel
from _scripted import model_server
from jupyter_client.blocking.client import BlockingKernelClient

MB = 1024 * 1024


def run(client: BlockingKernelClient, code: str, timeout: float = 180) -> tuple[float, str]:
    """Execute `code`; seconds to idle, and its text output (stream and text/plain)."""
    out: list[str] = []

    def keep(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            out.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data"):
            out.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            out.append(f"{content['ename']}: {content['evalue']}")

    started = time.perf_counter()
    reply = client.execute_interactive(code, timeout=timeout, output_hook=keep)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code[:40]!r} failed: {''.join(out)}")
    return time.perf_counter() - started, "".join(out)


def memory(process: psutil.Process) -> tuple[float, float, int]:
    """RSS and USS (MB) of the process and its descendants, and how many processes."""
    rss = uss = 0.0
    family = [process, *process.children(recursive=True)]
    for member in family:
        with contextlib.suppress(psutil.Error):
            info = member.memory_full_info()
            rss += info.rss
            uss += info.uss
    return rss / MB, uss / MB, len(family)


def parked(client: BlockingKernelClient) -> int:
    _, out = run(client, "print(sum(s.is_parked for _, s in __agentkernel__.sessions.items()))")
    return int(out.strip().splitlines()[-1])


def one_kernel(
    server_env: dict[str, str], sessions: int, idle: float | None, show_list: bool
) -> dict[str, float]:
    scratch = tempfile.mkdtemp(prefix="ak-many-")
    env = {
        **os.environ,
        **server_env,
        "CLAUDE_CONFIG_DIR": os.path.join(scratch, "claude"),
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "AGENTKERNEL_STORE": os.path.join(scratch, "sessions.db"),
        "AGENTKERNEL_FRONTEND": "headless",
    }
    os.mkdir(env["CLAUDE_CONFIG_DIR"])
    figures: dict[str, float] = {}
    try:
        with kernel(env, scratch) as (client, process):
            run(client, f"%load_ext agentkernel\n%config AgentMagics.idle_timeout = {idle!r}")
            run(client, "import claude_agent_sdk")  # the background import done
            figures["bare_rss"], figures["bare_uss"], _ = memory(process)
            for number in range(1, sessions + 1):
                run(client, f"%%agent --session s{number:02}\nturn one of s{number:02}: say ok")
            if idle is not None:
                deadline = time.monotonic() + idle + 60
                while parked(client) < sessions:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the sessions were not all parked in time")
                    time.sleep(0.5)
                time.sleep(1.0)  # the last CLIs' processes are gone, not just closing
            else:
                time.sleep(2.0)
            figures["rss"], figures["uss"], figures["processes"] = memory(process)
            if show_list:
                print(run(client, "%agent list")[1])
            figures["next_turn"], _ = run(client, "%%agent --session s01\nturn two: say ok")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return figures


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--idle", type=float, default=2.0, help="idle_timeout of the parked case")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {"live": [], "parked": []}
    with model_server(1) as server_env:
        for number in range(args.runs):
            results["live"].append(one_kernel(server_env, args.sessions, None, False))
            results["parked"].append(
                one_kernel(server_env, args.sessions, args.idle, show_list=number == 0)
            )
    print(
        f"{args.sessions} sessions in one kernel, one turn each, then idle; {args.runs} runs "
        f"(median, min-max); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"  {'':8}{'kernel alone RSS':>22} {'idle RSS':>22} {'idle USS':>22} {'processes':>10} "
        f"{'next turn of s01 (ms)':>24}"
    )
    for case, runs in results.items():

        def column(key: str, runs: list[dict[str, float]] = runs) -> list[float]:
            return [r[key] for r in runs]

        print(
            f"  {case:8}{spread(column('bare_rss')):>22} {spread(column('rss')):>22} "
            f"{spread(column('uss')):>22} {statistics.median(column('processes')):>10.0f} "
            f"{spread([t * 1e3 for t in column('next_turn')]):>24}"
        )
    live = statistics.median(r["rss"] for r in results["live"])
    park = statistics.median(r["rss"] for r in results["parked"])
    bare = statistics.median(r["bare_rss"] for r in results["parked"])
    print(
        f"  idle sessions cost {live - bare:,.0f} MB RSS live, {park - bare:,.0f} MB parked "
        f"(target: ~0 MB parked; {(park - bare) / args.sessions:.1f} MB per parked session)"
    )


if __name__ == "__main__":
    main()
