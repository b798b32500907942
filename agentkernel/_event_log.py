"""A turn's events in memory, kept so that the garbage collector need not look at them.

A streamed reply is thousands of delta events a turn, and a session keeps every event of
every turn (`TurnRecord.events`). Each object of a Python class is tracked by the cyclic
garbage collector; a kept one is promoted to the oldest generation, and every time that
generation grows by a quarter the collector walks the whole heap: in a kernel that came to
~200 ms per 60,000 kept deltas, about 3 us a delta, as much as the rest of the session's work
on it. The fields of a delta are strings, numbers and None, and a dict of only those is not
tracked at all. So a delta is kept as its field dict (the very dict of the object the stream
yielded, not a copy), and handed out again as a fresh object of its class around that dict:
equal to the one streamed, not the same object. Every other event is kept as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from .events import Event, TextDelta, ThinkingDelta

_DELTAS: tuple[type[Event], ...] = (TextDelta, ThinkingDelta)
_CODE = {cls: code for code, cls in enumerate(_DELTAS, 1)}
"""Delta class -> its code in `EventLog._codes` (0: an event kept as it is)."""
_new, _set = object.__new__, object.__setattr__


def _revive(code: int, fields: dict[str, Any]) -> Event:
    event = _new(_DELTAS[code - 1])
    _set(event, "__dict__", fields)
    return event


class EventLog(Sequence[Event]):
    """The events of one turn, in order: a sequence (index, slice, iterate, compare with a
    list) that grows with `extend` or ``+=``."""

    __slots__ = ("_codes", "_items")

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._items: list[Any] = []
        """Each event, or for a delta its field dict."""
        self._codes = bytearray()
        """Per item: 0, the event itself; else the code of the delta class (`_CODE`)."""
        self.extend(events)

    def extend(self, events: Iterable[Event]) -> None:
        if type(events) is EventLog:  # another log's items as they are, none revived
            self._items += events._items
            self._codes += events._codes
            return
        items, codes, code_of = self._items, self._codes, _CODE.get
        for event in events:
            code = code_of(type(event), 0)
            items.append(event.__dict__ if code else event)
            codes.append(code)

    def append(self, event: Event) -> None:
        self.extend((event,))

    def __iadd__(self, events: Iterable[Event]) -> EventLog:
        self.extend(events)
        return self

    def entries(self) -> Iterator[tuple[type[Event] | None, Any]]:
        """Each item as it is kept, none revived: ``(its class, its field dict)`` for a delta,
        ``(None, the event)`` for any other event. For code that reads the fields of many
        deltas at once (the store's encoder): reviving them would make them tracked objects
        again, all alive together."""
        return (
            (_DELTAS[code - 1] if code else None, item)
            for code, item in zip(self._codes, self._items, strict=True)
        )

    def not_deltas(self) -> Iterator[Event]:
        """The events that are not streamed deltas, in order, without reviving the deltas."""
        return (item for code, item in zip(self._codes, self._items, strict=True) if not code)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            codes = self._codes[index]
            return [
                _revive(code, item) if code else item
                for code, item in zip(codes, self._items[index], strict=True)
            ]
        code = self._codes[index]
        item = self._items[index]
        return _revive(code, item) if code else item

    def __iter__(self) -> Iterator[Event]:
        for code, item in zip(self._codes, self._items, strict=True):
            yield _revive(code, item) if code else item

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventLog):
            return self._codes == other._codes and self._items == other._items
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"EventLog({list(self)!r})"
