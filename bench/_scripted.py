"""The scripted model the Session benches share, served from a child process.

Why a child process: the server's Python work would otherwise compete for the GIL with the
code being measured. Run as ``python bench/_scripted.py --big-kb N`` it serves the script,
prints the CLI's env as JSON, and stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

from agentkernel.testing import Reply, ScriptedModelServer, text

SMALL_REPLY = "ok " * 50
BIG_MARKER = "BIG-STREAMED-TURN"
CHUNK = 16
# Small token counts on purpose: the growing conversation must never look full to the CLI
# (auto-compaction would add model calls to one side only).
USAGE = {"input_tokens": 100, "output_tokens": 50}


def big_text(kilobytes: int) -> str:
    sentence = "The quick brown fox jumps over the lazy dog. "
    size = kilobytes * 1000
    return (sentence * (size // len(sentence) + 1))[:size]


def script(big_kb: int) -> list[Reply]:
    """A prompt containing BIG_MARKER gets `big_kb` KB of text; any other a short reply."""
    return [
        Reply(
            match=BIG_MARKER,
            blocks=[text(big_text(big_kb))],
            times=0,
            chunk_size=CHUNK,
            usage=USAGE,
        ),
        Reply(blocks=[text(SMALL_REPLY)], times=0, chunk_size=CHUNK, usage=USAGE),
    ]


@contextlib.contextmanager
def model_server(big_kb: int) -> Iterator[dict[str, str]]:
    """Start the server in a child process; yields the env that points the CLI at it."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--big-kb", str(big_kb)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("the scripted model server did not start")
        yield json.loads(line)
    finally:
        assert child.stdin is not None
        with contextlib.suppress(OSError):
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _serve(big_kb: int) -> None:
    with ScriptedModelServer(script(big_kb)) as server:
        print(json.dumps(server.claude_env()), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big-kb", type=int, required=True)
    _serve(parser.parse_args().big_kb)
