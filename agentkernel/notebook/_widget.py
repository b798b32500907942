"""The custom widgets of the live view: a block that streams text by appending, and a text box
whose value reaches the kernel while the cell still runs.

Stock widgets would resend a growing text whole on every update (O(n²) bytes for a long
answer), so a streaming block receives only the appended text as custom messages and the
front end appends it (``_static/block.js``). When the block is complete the kernel sets
``html`` once and the block is drawn from it from then on.

The status block also carries the turn's identity (``turn``: the live output's model id and the
cell it runs in), so any page showing the notebook can put a live turn back into its cell after
a reload and replace it with the static output when the turn ends (see ``block.js``).

A stock ``Text`` widget syncs its value as state updates, and a front end sends the next update
only after the kernel reports idle for the previous one, which it never does while a cell
runs: a reason typed key by key arrived as its first letter. `TextBox` sends every edit as a
custom message instead, which is never held back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

_STATIC = Path(__file__).parent / "_static"


class BlockWidget(anywidget.AnyWidget):
    """A block of a turn. ``kind``: ``text`` or ``thinking`` (streams while ``html`` is empty)
    or ``card`` (always drawn from ``html``)."""

    _esm = _STATIC / "block.js"
    _css = _STATIC / "block.css"
    kind = traitlets.Unicode("card").tag(sync=True)
    html = traitlets.Unicode("").tag(sync=True)
    turn = traitlets.Dict().tag(sync=True)
    """On the status block: ``box`` (model id of the live output), ``cell`` (the cell's id, when
    the front end sent one), ``text`` (the live output's text/plain)."""

    def __init__(self, *, on_rendered: Callable[[BlockWidget], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_rendered = on_rendered
        self.on_msg(self._receive)

    def _receive(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # Each front-end view says {"rendered": true} when drawn; a stream block answers with
        # everything flushed so far (the view may have missed earlier appends).
        if isinstance(content, dict) and content.get("rendered"):
            self._on_rendered(self)

    def append(self, text: str) -> None:
        self.send({"append": text})

    def reset(self, text: str) -> None:
        self.send({"reset": text})

    def finished(self, output: dict[str, Any], execution_count: int | None) -> None:
        """Tell every page the turn's static output, for those whose cell still shows the live
        one (a page reloaded or opened while the turn ran)."""
        self.send({"final": output, "execution_count": execution_count})


class TextBox(anywidget.AnyWidget):
    """A one-line text input. ``text`` is the latest value from either path: the front end's
    per-edit custom message, or a plain ``value`` state update (what a test or another client
    may send)."""

    _esm = _STATIC / "textbox.js"
    _css = _STATIC / "block.css"
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = self.value
        self.on_msg(self._receive)
        self.observe(self._changed, names="value")

    def _receive(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and isinstance(content.get("value"), str):
            self.text = content["value"]

    def _changed(self, change: dict[str, Any]) -> None:
        self.text = change["new"]
