"""The base of every block a turn is drawn as."""

from __future__ import annotations

from typing import ClassVar


class Block:
    """One unit of a rendered turn. ``kind`` tells a live view how to draw it while it changes:
    ``text`` and ``thinking`` blocks stream, every other block is redrawn from `html`."""

    kind: ClassVar[str] = "card"

    def markdown(self) -> str:
        raise NotImplementedError

    def html(self) -> str:
        raise NotImplementedError
