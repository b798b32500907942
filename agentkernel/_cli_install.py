"""Agent CLIs that no Python wheel ships: where to find them, and how to install them.

The GitHub Copilot CLI comes from npm (``@github/copilot``, whose per-platform package holds
the native ``copilot`` binary). ``github-copilot-sdk`` would download a CLI at first use, which
fails offline and on locked-down machines, so agentkernel finds one itself and always hands the
SDK an explicit path. ``python -m agentkernel install-cli copilot`` runs npm into a folder of
ours (`install_folder`), so no global npm install or root is needed.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "COPILOT_NPM_PACKAGE",
    "COPILOT_VERSION",
    "INSTALL_COMMAND",
    "CLIInstallError",
    "CLINotFoundError",
    "ensure_copilot_cli",
    "find_copilot_cli",
    "install_copilot_cli",
    "install_folder",
]

COPILOT_NPM_PACKAGE = "@github/copilot"
COPILOT_VERSION = "1.0.102"
"""The CLI version agentkernel is tested with (its JSON-RPC protocol must match the SDK's)."""

INSTALL_COMMAND = "python -m agentkernel install-cli copilot"
CLAUDE_ACP_NPM_PACKAGE = "@agentclientprotocol/claude-agent-acp"
CLAUDE_ACP_VERSION = "0.101.0"
"""Claude Code behind ACP (the renamed adapter: the older @zed-industries/claude-agent-acp
0.23.1 ends every prompt after a cancel at once)."""


class CLINotFoundError(FileNotFoundError):
    """No usable agent CLI; the message says how to install one or point at it."""


class CLIInstallError(RuntimeError):
    """Installing an agent CLI failed; the message has npm's exit code and the command."""


def install_folder() -> Path:
    """Where `install_copilot_cli` puts npm packages: ``$XDG_DATA_HOME/agentkernel/cli``
    (``~/.local/share/agentkernel/cli``). Not under the Jupyter data dir, which tests and
    virtual environments move: one CLI serves every environment of the user."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "agentkernel" / "cli"


def install_copilot_cli(folder: Path | None = None, *, quiet: bool = False) -> Path:
    """``npm install`` the pinned Copilot CLI into `folder` and return its native binary
    (at once, without npm, when that version is already there).

    The binary is run once (``--version``): that proves it works here, and lets it unpack its
    runtime into the user's cache now instead of during the first session.
    """
    folder = folder or install_folder()
    ready = _native_binary(folder / "node_modules")
    if ready is not None and _installed_version(folder) == COPILOT_VERSION:
        return ready
    _npm_install(
        folder,
        f"{COPILOT_NPM_PACKAGE}@{COPILOT_VERSION}",
        quiet=quiet,
        hint=f"run `{INSTALL_COMMAND}` again; or point COPILOT_CLI_PATH at an existing "
        "`copilot` binary",
    )
    binary = _native_binary(folder / "node_modules")
    if binary is None:
        raise CLIInstallError(
            f"npm installed {COPILOT_NPM_PACKAGE} into {folder}, but it holds no native binary "
            f"for this platform ({sys.platform}/{platform.machine()})"
        )
    check = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    if check.returncode != 0:
        raise CLIInstallError(
            f"the installed Copilot CLI {binary} does not run here (exit code "
            f"{check.returncode}): {(check.stderr or check.stdout).strip()}"
        )
    return binary


def install_claude_acp(folder: Path | None = None, *, quiet: bool = False) -> Path:
    """``npm install`` the pinned ACP adapter of Claude Code into `folder` (the ACP backend's
    ``claude`` preset) and return its launcher, ``node_modules/.bin/claude-agent-acp``."""
    folder = folder or install_folder()
    launcher = folder / "node_modules" / ".bin" / "claude-agent-acp"
    if not launcher.exists():
        _npm_install(
            folder,
            f"{CLAUDE_ACP_NPM_PACKAGE}@{CLAUDE_ACP_VERSION}",
            quiet=quiet,
            hint="run `python -m agentkernel install-cli claude-acp` again",
        )
    if not launcher.exists():
        raise CLIInstallError(f"npm installed {CLAUDE_ACP_NPM_PACKAGE}, but {launcher} is missing")
    return launcher


def _npm_install(folder: Path, package: str, *, quiet: bool, hint: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise CLIInstallError(
            f"npm was not found on PATH: install Node.js (it brings npm), then {hint}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        npm,
        "install",
        "--prefix",
        str(folder),
        "--no-audit",
        "--no-fund",
        "--save-exact",
        *(["--silent"] if quiet else []),
        package,
    ]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise CLIInstallError(
            f"npm failed (exit code {done.returncode}) installing {package}: {' '.join(command)}"
        )


def find_copilot_cli(cli_path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """The Copilot CLI to run, in this order: `cli_path` (``backend_options["cli_path"]``),
    ``COPILOT_CLI_PATH`` (the session's env, then ours), the one `install_copilot_cli` put in
    `install_folder`, then an npm install found through ``copilot`` on PATH.

    A path that was given but does not exist is an error, never silently replaced by another
    CLI. When nothing is found, the error names the install command.
    """
    if cli_path:
        return _existing(Path(cli_path), "backend_options['cli_path']")
    from_env = env.get("COPILOT_CLI_PATH") or os.environ.get("COPILOT_CLI_PATH")
    if from_env:
        return _existing(Path(from_env), "COPILOT_CLI_PATH")
    installed = _native_binary(install_folder() / "node_modules")
    if installed is not None:
        return installed
    on_path = _from_path()
    if on_path is not None:
        return on_path
    raise CLINotFoundError(
        f"the GitHub Copilot CLI is not installed. Install it with `{INSTALL_COMMAND}` "
        f"(npm {COPILOT_NPM_PACKAGE}@{COPILOT_VERSION} into {install_folder()}), or set "
        "COPILOT_CLI_PATH or backend_options['cli_path'] to a `copilot` binary"
    )


def ensure_copilot_cli() -> Path:
    """The Copilot CLI `find_copilot_cli` finds, installing it first when there is none: what
    a fresh machine's test run calls, so it installs the CLI once instead of skipping."""
    try:
        return find_copilot_cli(None, {})
    except CLINotFoundError:
        _install_once()
        return find_copilot_cli(None, {})


@functools.cache
def _install_once() -> Path:
    """One install attempt per process: an npm that fails (offline) fails fast afterwards."""
    return install_copilot_cli(quiet=True)


def _existing(path: Path, source: str) -> Path:
    if path.is_file():
        return path
    raise CLINotFoundError(
        f"Copilot CLI not found at {path} (from {source}): point it at the native `copilot` "
        f"binary, or leave it unset to use the one `{INSTALL_COMMAND}` installs"
    )


def _installed_version(folder: Path) -> str | None:
    manifest = folder / "node_modules" / "@github" / "copilot" / "package.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("version"))
    except (OSError, ValueError):
        return None


def _from_path() -> Path | None:
    """The native binary behind a ``copilot`` on PATH: an npm install's bin link points at
    ``@github/copilot/npm-loader.js``, a Node wrapper that would run the binary as a child
    process we could not signal; the binary sits in a sibling per-platform package."""
    found = shutil.which("copilot")
    if found is None:
        return None
    target = Path(found).resolve()
    package = target.parent
    if package.name == "copilot" and package.parent.name == "@github":
        return _native_binary(package / "node_modules") or _native_binary(package.parent.parent)
    return target


def _native_binary(node_modules: Path) -> Path | None:
    """``node_modules/@github/copilot-<platform>-<arch>/copilot`` for this machine, if there."""
    name = "copilot.exe" if sys.platform == "win32" else "copilot"
    for package in _platform_packages():
        binary = node_modules / "@github" / package / name
        if binary.is_file():
            return binary
    return None


def _platform_packages() -> list[str]:
    """npm package names for this machine, as the CLI's own loader picks them."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    if sys.platform.startswith("linux"):
        glibc = platform.libc_ver()[0] == "glibc"
        systems = ["linux", "linuxmusl"] if glibc else ["linuxmusl", "linux"]
    else:
        systems = [sys.platform]
    return [f"copilot-{system}-{arch}" for system in systems]
