"""``python -m agentkernel``: the offline demo and kernel installation."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentkernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="Open JupyterLab on the quickstart notebook with a scripted demo model."
    )
    demo.add_argument("notebook", nargs="?", help="Notebook to open (default: quickstart).")
    demo.add_argument("lab_args", nargs=argparse.REMAINDER, help="Extra JupyterLab arguments.")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(args.notebook, lab_args=args.lab_args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
