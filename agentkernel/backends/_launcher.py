"""How every agent CLI we start is tied to our life: one small supervisor per agent process.

Why: Jupyter interrupts a kernel by signalling its whole process group, and agent CLIs quit on
SIGINT, so an agent in the kernel's group would die at every interrupt (even of an unrelated
Python cell). In a session of its own it hears only our interrupt requests; but then it would
also outlive a kernel killed with SIGKILL. So the supervisor:

* starts a new session (the agent, and every tool process it starts, share its process group);
* on Linux asks for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``);
* runs the agent as its child, with the agent's stdio untouched (the SDK talks to the agent
  directly) and none of it held open itself;
* on SIGTERM (our ``close``, or the parent's death) passes SIGTERM to the whole group, and
  after `GRACE_S` kills the group: agent and tool processes are gone within about a second;
* when the agent exits, ends what it left in the group and exits with the agent's code.

`kill` kills the group at once. SDKs that spawn the CLI themselves get the supervisor as the
executable (`script`); backends that spawn it get an argv (`argv`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

GRACE_S = 0.5
"""How long the agent may take to end on SIGTERM before its group is killed."""

_SUPERVISOR = """\
import os, signal, sys, time
DESCENDANTS
parent, argv = int(sys.argv[1]), sys.argv[2:]
try:
    os.setsid()
except OSError:  # already a session leader (the spawner made it one)
    pass
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(1)
signal.signal(signal.SIGINT, signal.SIG_IGN)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # if the supervisor itself is killed
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"agentkernel: cannot run {argv[0]}: {exc}", file=sys.stderr)
        os._exit(127)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)

def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tree = descendants(os.getpid())
    signal_all(tree, signal.SIGTERM)
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        try:
            pid, status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            os._exit(0)
        if pid:
            signal_all(tree, signal.SIGKILL)  # what the agent left behind
            os.killpg(0, signal.SIGTERM)  # (we ignore it)
            os._exit(os.waitstatus_to_exitcode(status))
        time.sleep(0.02)
    signal_all(tree, signal.SIGKILL)
    os.killpg(0, signal.SIGKILL)  # the agent did not end in time: all of it, us included

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGHUP, stop)
_, status = os.waitpid(child, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal_all(descendants(os.getpid()), signal.SIGTERM)  # tool processes the agent left behind
try:
    os.killpg(0, signal.SIGTERM)
except OSError:
    pass
sys.exit(os.waitstatus_to_exitcode(status))
"""


def descendants(root: int) -> list[int]:
    """Pids under `root`, found from /proc (none elsewhere): agents put some tool shells in
    sessions of their own, out of reach of a process-group signal."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


# The supervisor runs with -I -S (nothing to import but the stdlib): it gets these two
# functions as source, so they are written once.
_SUPERVISOR = _SUPERVISOR.replace("GRACE_S", repr(GRACE_S)).replace(
    "DESCENDANTS",
    "import contextlib\n" + inspect.getsource(descendants) + inspect.getsource(signal_all),
)


def argv(command: Sequence[str]) -> list[str]:
    """`command` run under the supervisor (for backends that spawn the agent themselves)."""
    if not hasattr(os, "setsid"):
        return list(command)
    # -I -S: no site packages or user paths to scan; the supervisor needs only the stdlib.
    return [sys.executable, "-IS", "-c", _SUPERVISOR, str(os.getpid()), *command]


def script(program: Path, name: str) -> str:
    """An executable that runs `program` (with the arguments it is given) under the
    supervisor, for SDKs that take only a CLI path. Written once per content, atomically."""
    if not hasattr(os, "setsid"):
        return str(program)
    source = (
        f"#!{sys.executable} -IS\n"
        "import os, sys\n"
        f"argv = [{str(program)!r}, *sys.argv[1:]]\n"
        "os.execv(sys.executable, [sys.executable, '-IS', '-c', SUPERVISOR, "
        "str(os.getppid()), *argv])\n"
    ).replace("SUPERVISOR", repr(_SUPERVISOR))
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"agentkernel-{os.getuid()}"
    launcher = folder / f"{name}-{digest}"
    if not launcher.is_file():
        folder.mkdir(mode=0o700, exist_ok=True)
        partial = folder / f".{launcher.name}.{os.getpid()}"
        partial.write_text(source)
        partial.chmod(0o700)
        partial.replace(launcher)
    return str(launcher)


def kill(pid: int) -> None:
    """End the agent started under the supervisor `pid` now: everything under it (found
    first, since a killed parent leaves orphans) and its process group."""
    signal_all(descendants(pid), signal.SIGKILL)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
