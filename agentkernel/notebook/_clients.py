"""What only the kernel's message stream tells about the front ends connected to it.

A kernel serves any number of clients at once (a notebook page, a second tab of it, a reloaded
page, Notebook 7's file list, a ``jupyter console --existing``), and they differ in what they
can show. Two facts matter for a turn's live view:

- **Who can show widgets.** A front end with a widget manager (JupyterLab, Notebook 7, VS Code)
  asks the kernel for its widgets when it connects: it opens a ``jupyter.widget.control`` comm
  or sends a ``comm_info_request``. A console never does. `shows_widgets` answers for the
  client that sent the cell being run; None means "not seen connecting" (the hooks were
  installed after it connected, as in a stock kernel that loads the extension late; then a
  control comm already open counts for the client loading the extension).
- **Closes that are not theirs to make.** A client without widget support answers every
  ``comm_open`` with a ``comm_close`` (Notebook 7's file-list tab does; so does JupyterLab
  for a comm target it lacks). ipykernel then drops the comm for everyone, so the approval of
  the page that does show it stops working ("No such comm"). A turn closes its own widgets
  when it ends, so while it runs a client's ``comm_close`` for one of them is ignored.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

CONTROL_TARGET = "jupyter.widget.control"
WIDGET_TARGET = "jupyter.widget"


class _Owner(Protocol):
    def owns(self, comm_id: str) -> bool: ...


_widget_clients: set[str] = set()
_owners: weakref.WeakSet[Any] = weakref.WeakSet()
_installed: weakref.WeakSet[Any] = weakref.WeakSet()
_since_start: weakref.WeakSet[Any] = weakref.WeakSet()


def install(kernel: Any, *, at_start: bool = False) -> None:
    """Watch `kernel`'s shell messages (once per kernel). ``at_start``: installed before any
    client connected, so a client never seen asking for widgets cannot show them."""
    if kernel is None or kernel in _installed or not hasattr(kernel, "shell_handlers"):
        return
    handlers = kernel.shell_handlers
    handlers["comm_info_request"] = _watching_info(handlers.get("comm_info_request"))
    handlers["comm_open"] = _watching_open(handlers.get("comm_open"))
    handlers["comm_close"] = _guarding_close(handlers.get("comm_close"))
    _installed.add(kernel)
    if at_start:
        _since_start.add(kernel)
    elif any(
        getattr(comm, "target_name", None) == CONTROL_TARGET
        for comm in getattr(getattr(kernel, "comm_manager", None), "comms", {}).values()
    ):
        # Installed late (a stock kernel loading the extension): a widget front end opened
        # its control comm already; most likely the one running this very cell.
        _widget_clients.add(_client(kernel.get_parent() or {}))


def protect(owner: _Owner) -> None:
    """Ignore clients' ``comm_close`` for the widgets `owner` owns, while it lives."""
    _owners.add(owner)


def release(owner: _Owner) -> None:
    _owners.discard(owner)


def shows_widgets(kernel: Any) -> bool | None:
    """Whether the client that sent the request being handled can show widgets: True (it asked
    for them), False (it connected while we watched and never did), None (unknown)."""
    if kernel is None or kernel not in _installed:
        return None
    session = _client(kernel.get_parent() or {})
    if session in _widget_clients:
        return True
    return False if kernel in _since_start else None


def _client(msg: Any) -> str:
    return str((msg.get("header") or {}).get("session", ""))


Handler = Callable[[Any, Any, Any], Any]


def _watching_info(original: Handler | None) -> Handler:
    def comm_info_request(stream: Any, ident: Any, msg: Any) -> Any:
        target = (msg.get("content") or {}).get("target_name")
        if target in (None, WIDGET_TARGET):
            _widget_clients.add(_client(msg))
        return original(stream, ident, msg) if original else None

    return comm_info_request


def _watching_open(original: Handler | None) -> Handler:
    def comm_open(stream: Any, ident: Any, msg: Any) -> Any:
        if (msg.get("content") or {}).get("target_name") == CONTROL_TARGET:
            _widget_clients.add(_client(msg))
        return original(stream, ident, msg) if original else None

    return comm_open


def _guarding_close(original: Handler | None) -> Handler:
    def comm_close(stream: Any, ident: Any, msg: Any) -> Any:
        comm_id = str((msg.get("content") or {}).get("comm_id", ""))
        if any(owner.owns(comm_id) for owner in list(_owners)):
            return None
        return original(stream, ident, msg) if original else None

    return comm_close
