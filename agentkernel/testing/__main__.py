"""``python -m agentkernel.testing``: run the scripted model server in the foreground."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ._script import Reply, Script, ScriptError, load_script, text

DEMO_SCRIPT = Script(
    (
        Reply(
            match="hello", blocks=[text("Hello from the scripted model! I am not a real model.")]
        ),
        Reply(
            blocks=[
                text(
                    "This is the scripted model's demo fallback. Start the server with "
                    "--script your.json to script real answers."
                )
            ],
            times=0,
        ),
    )
)

_EPILOG = """\
script format (JSON):
  {"replies": [
     {"match": "hello", "blocks": [{"text": "Hi there!"}]},
     {"match": "make a file", "blocks": [
        {"thinking": "The user wants a file."},
        {"tool_use": {"name": "Bash", "input": {"command": "touch x"}}}]},
     {"match": "tool_result", "blocks": [{"text": "Done."}]},
     {"blocks": [{"text": "fallback"}], "times": 0}
  ]}

Each request is answered by the first reply with uses left ("times", default 1,
0 = unlimited) whose "match" is null or a substring of the last user message's text.
"tool_result" also matches a tool call's follow-up ("tool_error" a failed one).
More reply fields: chunk_size, delay, status (HTTP error, e.g. 529), cut_after,
usage, model, stop_reason. Reference: pydoc agentkernel.testing
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentkernel.testing",
        description="Serve scripted model answers to agent CLIs (Claude Code, ...) offline.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--script", metavar="FILE", help="JSON script (default: a small demo)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    args = parser.parse_args(argv)

    try:
        script = load_script(args.script) if args.script else DEMO_SCRIPT
    except ScriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Imported late so `--help` and script errors stay fast and independent of the server.
    from ._server import ScriptedModelServer

    server = ScriptedModelServer(script, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1

    # One line per request on stderr; only this package's logger, not the root logger.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    request_log = logging.getLogger("agentkernel.testing")
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    source = args.script or "built-in demo"
    lines = [
        f"Scripted model server on {server.url} ({len(script)} replies from {source})",
        "",
        "Point the Claude Code CLI at it (in the shell that runs `claude`):",
        *(f"  export {k}={shlex.quote(v)}" for k, v in server.claude_env().items()),
        "  export CLAUDE_CONFIG_DIR=$(mktemp -d)   # optional: keep your real login out",
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
