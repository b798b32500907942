"""``python -m agentkernel``: the offline demo, kernel installation and agent CLI installation."""

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
    demo.add_argument(
        "--port", type=int, help="Port for JupyterLab (default: 8888 or the next free)."
    )
    demo.add_argument(
        "--no-browser",
        action="store_true",
        help="Do not open a browser; open the printed URL (it opens the notebook) yourself.",
    )
    demo.epilog = "Other options (e.g. --ServerApp.ip=0.0.0.0) are passed on to JupyterLab."
    install = sub.add_parser(
        "install",
        help="Install an Agent kernel spec: a variant with its own name, backend and model "
        "(pip install already ships the 'agent' kernel).",
    )
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="Install for the current user.")
    where.add_argument(
        "--sys-prefix", action="store_true", help="Install into this Python environment."
    )
    where.add_argument("--prefix", help="Install under this prefix (default: system-wide).")
    install.add_argument("--name", default="agent", help="Kernel name (default: agent).")
    install.add_argument(
        "--display-name", help="Name in the launcher (default: Agent, or Agent (Backend, model))."
    )
    install.add_argument("--backend", "-b", help="Backend of the kernel's session.")
    install.add_argument("--model", "-m", help="Model of the kernel's session.")
    install_cli = sub.add_parser(
        "install-cli",
        help="Install an agent CLI that no wheel ships into agentkernel's own folder (from npm: "
        "copilot = @github/copilot, claude-acp = @agentclientprotocol/claude-agent-acp).",
    )
    install_cli.add_argument(
        "agents", nargs="+", choices=["copilot", "claude-acp"], help="Which agents' CLIs."
    )
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "install-cli":
        from ._cli_install import CLIInstallError, install_claude_acp, install_copilot_cli

        installers = {"copilot": install_copilot_cli, "claude-acp": install_claude_acp}
        for agent in args.agents:
            try:
                binary = installers[agent]()
            except CLIInstallError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"Installed {agent}: {binary}")
        return 0
    if args.command == "install":
        from .kernel import install_kernel_spec

        path = install_kernel_spec(
            args.name,
            display_name=args.display_name,
            backend=args.backend,
            model=args.model,
            user=args.user,
            prefix=sys.prefix if args.sys_prefix else args.prefix,
        )
        print(f"Installed kernel spec {args.name!r} in {path}")
        return 0
    if args.command == "demo":
        from ._demo import run_demo

        lab_args = [*([f"--port={args.port}"] if args.port else []), *extra]
        if args.no_browser:
            lab_args.append("--no-browser")
        return run_demo(args.notebook, lab_args=lab_args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
