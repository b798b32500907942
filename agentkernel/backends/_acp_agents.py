"""The ACP agents a user can run by name: the presets, merged with the user's own config.

Apart from `acp` (the backend) so that listing agents (``%agent agents``) needs neither the
protocol library nor a running agent: this module reads a TOML file and looks programs up on
PATH, nothing more.

The config is ``$AGENTKERNEL_AGENTS`` if set, else ``$XDG_CONFIG_HOME/agentkernel/agents.toml``
(``~/.config/agentkernel/agents.toml``)::

    [agents.mine]                   # a new agent: --agent mine
    command = "my-agent"
    args = ["--acp"]
    env = { MY_AGENT_MODE = "strict" }
    install = "pipx install my-agent"   # shown by %agent agents while it is not installed

    [agents.copilot]                # a preset, changed: only the keys given replace its own
    command = "/opt/copilot/bin/copilot"   # its args (--acp) stay unless args is given
    env = { COPILOT_MODEL = "gpt-4.1" }    # added over the preset's env
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._cli_install import install_folder
from .._tool_server import SERVER_NAME

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

__all__ = [
    "CONFIG_ENV",
    "KNOWN_AGENTS",
    "AgentConfigError",
    "AgentPreset",
    "config_path",
    "describe_agents",
    "find_program",
    "load_agents",
]

CONFIG_ENV = "AGENTKERNEL_AGENTS"
"""The environment variable naming the agents file, instead of the default place."""


class AgentConfigError(ValueError):
    """The agents file cannot be used; the message names the file and what is wrong in it."""


@dataclass(frozen=True)
class AgentPreset:
    """An ACP agent known by name: how to start it, how to install it, what it needs told.

    ``session_meta`` goes in the ``_meta`` of `session/new` (and load / fork): the ACP place
    for agent-specific settings. ``env`` is added under the user's own environment.
    """

    command: tuple[str, ...]
    install: str | None = None
    session_meta: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    tool_meta: dict[str, Any] | None = None
    """``_meta`` of each tool our MCP server lists (agent-specific hints)."""
    tool_use_id_key: str | None = None
    """The ``_meta`` key of the agent's MCP calls that holds its tool call id."""
    mode: str | None = None
    """The session mode to start in (``session/set_mode``), when the agent's own default
    would approve tools without asking us."""
    mcp_tool_title: str | None = None
    """How the agent titles a call of one of our MCP server's tools when it announces it
    (``{server}`` and ``{tool}`` filled in), for an agent that asks the client about those calls
    too: our server asks about each call itself, so the agent's own question is answered with
    "allow once" instead of asking the user twice."""
    error_prefix: str | None = None
    """How the agent begins the message with which it reports a failed model request, for an
    agent that ends such a turn as if it succeeded: that message, in a turn whose answer has no
    ``usage`` (no model request succeeded), fails the turn. Such a message is held back from
    the stream until the next chunk or the turn's end shows what it is."""
    retry_prefix: str | None = None
    """How the agent begins a message that says it retries a failed model request: such a
    chunk is reported as a retry (``Error(kind="retrying")``), not as answer text."""
    source: str = "preset"
    """Where the definition comes from: ``preset``, or the config file that defines or
    changes it."""


# Claude Code approves read-only commands and reads by itself, so its ACP adapter would never
# ask us about them; these "ask" rules make it ask about every call, as our policy requires.
_CLAUDE_ASKS_FOR = ["Bash", "Read", "Grep", "Glob", "Edit", "Write", "NotebookEdit", "WebFetch"]
# The session's Python tools come from our MCP server, which decides each call itself: asking
# here too would ask twice.
_CLAUDE_ALLOWS = [f"mcp__{SERVER_NAME}"]

KNOWN_AGENTS: dict[str, AgentPreset] = {
    "claude": AgentPreset(
        ("claude-agent-acp",),
        "python -m agentkernel install-cli claude-acp",
        {
            "claudeCode": {
                "options": {
                    "settings": {"permissions": {"ask": _CLAUDE_ASKS_FOR, "allow": _CLAUDE_ALLOWS}}
                }
            }
        },
        # As root, the adapter refuses to open a session unless told it runs in a sandbox.
        {"IS_SANDBOX": "1"} if hasattr(os, "geteuid") and os.geteuid() == 0 else {},
        # Loaded up front, not deferred behind Claude Code's ToolSearch.
        tool_meta={"anthropic/alwaysLoad": True},
        tool_use_id_key="claudecode/toolUseId",
        # Unless told, the adapter starts in "auto", where Claude Code's classifier approves
        # tool calls by itself; "default" asks, so every call reaches our policy.
        mode="default",
    ),
    # Its session modes run commands in a sandbox without asking; "untrusted" asks first
    # (codex-acp 0.16.0 still runs the commands it deems safe, such as echo, unasked).
    "codex": AgentPreset(
        ("codex-acp", "-c", 'approval_policy="untrusted"'),
        "npm install -g @zed-industries/codex-acp",
    ),
    "copilot": AgentPreset(
        ("copilot", "--acp"),
        "python -m agentkernel install-cli copilot",
        mcp_tool_title="{server}-{tool}",
        # "Error: Could not connect to local model provider at ...", after its retries.
        error_prefix="Error: ",
        retry_prefix="Info: Response was interrupted due to a server error. Retrying",
    ),
    "gemini": AgentPreset(("gemini", "--experimental-acp"), "npm install -g @google/gemini-cli"),
}
"""The presets: ``backend_options={"agent": NAME}`` runs NAME's command line."""

_KEYS = {"command": str, "args": list, "env": dict, "install": str, "session_meta": dict}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the agents file is (whether or not it exists)."""
    env = os.environ if env is None else env
    if named := env.get(CONFIG_ENV):
        return Path(named).expanduser()
    config_home = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "agentkernel" / "agents.toml"


def load_agents(env: Mapping[str, str] | None = None) -> dict[str, AgentPreset]:
    """The presets with the agents file's entries merged over them (read afresh each call, so
    an edit counts at the next session)."""
    path = config_path(env)
    agents = dict(KNOWN_AGENTS)
    if not path.is_file():
        if CONFIG_ENV in (os.environ if env is None else env):
            raise AgentConfigError(f"{path} (named by ${CONFIG_ENV}) does not exist")
        return agents
    for name, entry in _read(path).items():
        agents[name] = _merged(path, name, entry, agents.get(name))
    return agents


def _read(path: Path) -> dict[str, dict[str, Any]]:
    if tomllib is None:
        raise AgentConfigError(f"reading {path} needs Python 3.11 or `pip install tomli`")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"agents"}
    if unknown:
        raise AgentConfigError(
            f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}; agents go in "
            "[agents.NAME] tables"
        )
    agents = data.get("agents", {})
    if not isinstance(agents, dict) or not all(isinstance(v, dict) for v in agents.values()):
        raise AgentConfigError(f"{path}: 'agents' must hold [agents.NAME] tables")
    return agents


def _merged(path: Path, name: str, entry: dict[str, Any], base: AgentPreset | None) -> AgentPreset:
    where = f"{path}: [agents.{name}]"
    for key, value in entry.items():
        wanted = _KEYS.get(key)
        if wanted is None:
            raise AgentConfigError(f"{where} has an unknown key {key!r}; known: {', '.join(_KEYS)}")
        if not isinstance(value, wanted):
            raise AgentConfigError(f"{where}: {key} must be a {wanted.__name__}, not {value!r}")
    args = entry.get("args")
    if args is not None and not all(isinstance(a, str) for a in args):
        raise AgentConfigError(f"{where}: args must be a list of strings, not {args!r}")
    env = entry.get("env", {})
    if not all(isinstance(v, str) for v in env.values()):
        raise AgentConfigError(f"{where}: env values must be strings (quote numbers): {env!r}")
    command = entry.get("command")
    if command is not None and not command.strip():
        raise AgentConfigError(f"{where}: command is empty")
    if base is None:
        if command is None:
            raise AgentConfigError(f"{where} needs a command (the agent's program)")
        return AgentPreset(
            (command, *(args or [])),
            entry.get("install"),
            dict(entry.get("session_meta", {})),
            dict(env),
            source=str(path),
        )
    program = command if command is not None else base.command[0]
    return dataclasses.replace(
        base,
        command=(program, *(args if args is not None else base.command[1:])),
        install=entry.get("install", base.install),
        session_meta=dict(entry.get("session_meta", base.session_meta)),
        env={**base.env, **env},
        source=f"preset, changed in {path}",
    )


def find_program(program: str, env: Mapping[str, str]) -> str | None:
    """`program` (a path, or a name on the env's PATH, else among the npm packages that
    ``python -m agentkernel install-cli`` put in its install folder: no global npm install
    needed), if it is there and executable."""
    if os.sep in program:
        path = Path(program).expanduser()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    npm_bin = install_folder() / "node_modules" / ".bin"
    search = os.pathsep.join(p for p in (env.get("PATH"), str(npm_bin)) if p)
    return shutil.which(program, path=search)


def describe_agents(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every agent by name, with where its program is installed (None: not found) and the
    command that installs it: what ``%agent agents`` shows. Raises `AgentConfigError` for an
    agents file that cannot be used."""
    env = os.environ if env is None else env
    return [
        {
            "name": name,
            "command": shlex.join(agent.command),
            "installed": find_program(agent.command[0], env),
            "install": agent.install,
            "source": agent.source,
        }
        for name, agent in load_agents(env).items()
    ]
