"""Claude Code's output read in bursts: one wake-up for what the CLI writes in a few milliseconds.

The CLI writes one line per streamed delta and flushes it, and the SDK's reader wakes for every
write. At a real model's pace (tens of deltas a second) that costs nothing; in a flood (a fast
model, thousands of deltas a second) the wake-ups, not the messages, become most of what the SDK
costs the kernel: a reply paced at 3,000 deltas a second takes 90-115 us of CPU per delta with
the SDK's own transport, 25-28 us read in bursts (the SDK alone, no session). So once the CLI's
lines keep coming faster than one per `_BUSY_S`, `_BUSY_READS` reads in a row, this transport
leaves the pipe unread for `LINGER_S` before each read: what the CLI writes meanwhile waits in
the pipe and comes in one read. A read that waits longer ends the flood (the next one follows at
once), and so does a long read (a backlog, read on without waiting) or a write of ours (a
prompt, an approval, an interrupt: the CLI's answer to it is read at once).

Every message still reaches the SDK whole and in order, each its own message: only *when* a line
is read changes, by at most `LINGER_S` and only inside a flood (far under what a person or a
20-updates-a-second view can see; a short turn's few reads never wait).

It is the SDK's own `SubprocessCLITransport` (the command line, environment and process handling
stay the SDK's), given through `ClaudeSDKClient`'s published `transport=` argument. What it
needs of the SDK's and asyncio's insides is found at connect; where it is missing (another SDK or
event loop), reads happen as the SDK does them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import claude_agent_sdk as sdk
from anyio.abc import ByteReceiveStream
from anyio.streams.text import TextReceiveStream

try:
    from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport
except ImportError:  # another SDK layout: the client builds its own transport
    SubprocessCLITransport = None  # type: ignore[assignment,misc]

LINGER_S = 0.005
_BUSY_S = 0.002
_BUSY_READS = 16
_BACKLOG_BYTES = 32 * 1024
"""A read at least this long found a backlog (the pipe holds 64 KiB): read on without waiting."""


def transport_for(options: sdk.ClaudeAgentOptions) -> sdk.Transport | None:
    """The transport a `ClaudeSDKClient` with these options should use, or None for its own.

    A custom transport gets no CLI flags from the client, so it is built from the options as the
    client would pass them: with `can_use_tool` the CLI is told to ask over the control
    protocol, as the client's own `connect` arranges. Store-backed resume (`session_store`)
    happens only on the client's own transport, so those options keep it."""
    if SubprocessCLITransport is None or getattr(options, "session_store", None) is not None:
        return None
    if options.can_use_tool is not None:
        options = dataclasses.replace(options, permission_prompt_tool_name="stdio")
    return _BurstReadTransport(prompt=_no_prompt(), options=options)


async def _no_prompt() -> AsyncIterator[dict[str, Any]]:
    """The client writes each prompt itself: the transport's own prompt stream stays empty."""
    return
    yield  # an async generator that yields nothing


if SubprocessCLITransport is not None:

    class _BurstReadTransport(SubprocessCLITransport):  # type: ignore[misc,valid-type]
        _bursts: _Bursts | None = None

        async def connect(self) -> None:
            await super().connect()
            stdout = self._process.stdout if self._process is not None else None
            pipe = _read_pipe(stdout)
            if pipe is not None and stdout is not None and self._stdout_stream is not None:
                self._bursts = _Bursts(stdout, pipe)
                self._stdout_stream = TextReceiveStream(self._bursts)

        async def write(self, data: str) -> None:
            await super().write(data)
            if self._bursts is not None:
                self._bursts.answer_expected()


def _read_pipe(stdout: object) -> asyncio.ReadTransport | None:
    """The asyncio pipe transport under anyio's process stdout, if this loop has one."""
    reader = getattr(stdout, "_stream", None)
    pipe = getattr(reader, "_transport", None)
    if isinstance(pipe, asyncio.ReadTransport):
        return pipe
    return None


class _Bursts(ByteReceiveStream):
    """The CLI's stdout, with the pipe left unread for `LINGER_S` after each short read."""

    def __init__(self, stdout: ByteReceiveStream, pipe: asyncio.ReadTransport) -> None:
        self._stdout = stdout
        self._pipe = pipe
        self._busy_reads = 0
        """Short reads in a row whose data came within `_BUSY_S` of asking."""
        self._lingering: anyio.Event | None = None

    def answer_expected(self) -> None:
        """We wrote to the CLI (a prompt, an approval, an interrupt): its answer is read at once,
        not after a wait the flood before it began."""
        self._busy_reads = 0
        if self._lingering is not None:
            self._lingering.set()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._busy_reads >= _BUSY_READS:
            # Unread, the pipe does not wake the loop; the CLI's writes wait in it.
            self._pipe.pause_reading()
            self._lingering = anyio.Event()
            try:
                with anyio.move_on_after(LINGER_S):
                    await self._lingering.wait()
            finally:
                self._lingering = None
                self._pipe.resume_reading()
        asked = time.monotonic()
        data = await self._stdout.receive(max_bytes)
        if len(data) < _BACKLOG_BYTES and time.monotonic() - asked < _BUSY_S:
            self._busy_reads += 1
        else:
            self._busy_reads = 0
        return data

    async def aclose(self) -> None:
        await self._stdout.aclose()
