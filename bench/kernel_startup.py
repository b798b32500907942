"""Agent kernel start-up: kernel start to ready (kernel_info reply) and to the first turn done,
against what the agent CLI itself needs to connect (a bare `ClaudeSDKClient.connect`), and a
plain ``python3`` kernel, all measured in the same run. Target: the Agent kernel is ready
within CLI connect + 0.3 s (it answers kernel_info before it starts the agent).

Runs offline against the scripted model server, with the repository's kernel spec
(``share/jupyter``) ahead of any installed one. ``python bench/kernel_startup.py [RUNS]``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import claude_agent_sdk as sdk
from jupyter_client.manager import KernelManager

from agentkernel.testing import Reply, ScriptedModelServer, text

SHARE = Path(__file__).resolve().parent.parent / "share" / "jupyter"


def agent_env(server: ScriptedModelServer, scratch: Path) -> dict[str, str]:
    """A fresh Claude config dir and session store per run: nothing carries over."""
    run = Path(tempfile.mkdtemp(dir=scratch))
    (run / "claude").mkdir()
    return {
        **server.claude_env(),
        "CLAUDE_CONFIG_DIR": str(run / "claude"),
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "AGENTKERNEL_STORE": str(run / "sessions.db"),
    }


async def cli_connect(env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    client = sdk.ClaudeSDKClient(sdk.ClaudeAgentOptions(env=env, cwd=cwd))
    await client.connect()
    elapsed = time.perf_counter() - started
    await client.disconnect()
    return elapsed


def kernel_run(name: str, env: dict[str, str], cwd: str, prompt: str | None) -> tuple[float, float]:
    """Seconds from start to the kernel_info reply, and to the first cell's reply."""
    km = KernelManager(kernel_name=name)
    started = time.perf_counter()
    km.start_kernel(env={**os.environ, **env}, cwd=cwd)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        ready = time.perf_counter() - started
        turn = float("nan")
        if prompt is not None:
            reply = kc.execute_interactive(prompt, allow_stdin=False, timeout=120, output_hook=len)
            assert reply["content"]["status"] == "ok", reply["content"]
            turn = time.perf_counter() - started
        return ready, turn
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def main(runs: int) -> None:
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(SHARE), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )
    with (
        ScriptedModelServer([Reply(match="hello", blocks=[text("Hi.")], times=0)]) as server,
        tempfile.TemporaryDirectory() as scratch,
    ):
        figures: dict[str, list[float]] = {k: [] for k in ("connect", "python3", "ready", "turn")}
        for _ in range(runs):
            env = agent_env(server, Path(scratch))
            figures["connect"].append(asyncio.run(cli_connect(env, scratch)))
            figures["python3"].append(kernel_run("python3", env, scratch, None)[0])
            ready, turn = kernel_run("agent", agent_env(server, Path(scratch)), scratch, "hello")
            figures["ready"].append(ready)
            figures["turn"].append(turn)

    def median(key: str) -> float:
        return statistics.median(figures[key])

    print(f"runs: {runs} (medians; seconds)")
    print(f"CLI connect (bare ClaudeSDKClient): {median('connect'):.3f}")
    print(f"python3 kernel ready:               {median('python3'):.3f}")
    print(f"Agent kernel ready:                 {median('ready'):.3f}")
    print(f"Agent kernel first turn done:       {median('turn'):.3f}")
    target = median("connect") + 0.3
    verdict = "within" if median("ready") <= target else "over"
    print(f"ready target (connect + 0.3):       {target:.3f} ({verdict})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
