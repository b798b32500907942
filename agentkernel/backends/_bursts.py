"""An agent CLI's output read in bursts: one wake-up for what it writes in a few milliseconds.

Agent CLIs write one line per streamed delta and flush it, and a reader wakes for every write.
At a real model's pace (tens of deltas a second) that costs nothing; in a flood (a fast model,
thousands of deltas a second) the wake-ups, not the messages, become most of what reading
costs the kernel: a Claude reply paced at 3,000 deltas a second took 180-210 us of our CPU per
delta read as it came, 80-90 us read in bursts (the whole session: SDK, core, no view).

So once the lines keep coming faster than one per `_BUSY_S`, `_BUSY_READS` reads in a row, the
reader leaves the pipe unread for `LINGER_S` before each read: what the CLI writes meanwhile
waits in the pipe and comes in one read. A read that waits longer ends the flood (the next one
follows at once), and so does a long read (a backlog, read on without waiting) or a write of
ours (a prompt, an approval, an interrupt: the CLI's answer to it is read at once).

Every line still arrives whole and in order: only *when* it is read changes, by at most
`LINGER_S` and only inside a flood (far under what a person or a 20-updates-a-second view can
see; a short turn's few reads never wait).
"""

from __future__ import annotations

import asyncio
import time

LINGER_S = 0.005
_BUSY_S = 0.002
_BUSY_READS = 16
_BACKLOG_BYTES = 32 * 1024
"""A read at least this long found a backlog (a pipe holds 64 KiB): read on without waiting."""


def read_pipe(reader: object) -> asyncio.ReadTransport | None:
    """The asyncio pipe transport under a subprocess's stdout (an asyncio `StreamReader`, or
    anyio's stream around one), if the reader has one; None: read as it comes."""
    reader = getattr(reader, "_stream", reader)  # anyio's process stream wraps the reader
    pipe = getattr(reader, "_transport", None)
    return pipe if isinstance(pipe, asyncio.ReadTransport) else None


class Bursts:
    """Paces the reads of one pipe: call `before_read` and `after_read` around each read, and
    `answer_expected` after each write to the process."""

    def __init__(self, pipe: asyncio.ReadTransport) -> None:
        self._pipe = pipe
        self._busy_reads = 0
        """Short reads in a row whose data came within `_BUSY_S` of asking."""
        self._lingering: asyncio.Future[None] | None = None
        self._asked = 0.0

    def answer_expected(self) -> None:
        """We wrote to the process: its answer is read at once, not after a wait the flood
        before it began."""
        self._busy_reads = 0
        lingering = self._lingering
        if lingering is not None and not lingering.done():
            lingering.set_result(None)

    async def before_read(self) -> None:
        if self._busy_reads >= _BUSY_READS:
            # Unread, the pipe does not wake the loop; the process's writes wait in it.
            loop = asyncio.get_running_loop()
            self._lingering = lingering = loop.create_future()
            timer = loop.call_later(LINGER_S, _end, lingering)
            self._pipe.pause_reading()
            try:
                await lingering
            finally:
                timer.cancel()
                self._lingering = None
                self._pipe.resume_reading()
        self._asked = time.monotonic()

    def after_read(self, size: int) -> None:
        if size < _BACKLOG_BYTES and time.monotonic() - self._asked < _BUSY_S:
            self._busy_reads += 1
        else:
            self._busy_reads = 0


def _end(lingering: asyncio.Future[None]) -> None:
    if not lingering.done():
        lingering.set_result(None)
