"""The one custom widget of the live view: a block that streams text by appending.

Stock widgets would resend a growing text whole on every update (O(n²) bytes for a long
answer), so a streaming block receives only the appended text as custom messages and the
front end appends it (``_static/block.js``). When the block is complete the kernel sets
``html`` once and the block is drawn from it from then on.
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
