"""Claude Code's output read in bursts (`._bursts`), on the SDK's own transport.

It is the SDK's own `SubprocessCLITransport` (the command line, environment and process handling
stay the SDK's), given through `ClaudeSDKClient`'s published `transport=` argument, with its
stdout paced by `Bursts`. What it needs of the SDK's and asyncio's insides is found at connect;
where it is missing (another SDK or event loop), reads happen as the SDK does them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import claude_agent_sdk as sdk
from anyio.abc import ByteReceiveStream
from anyio.streams.text import TextReceiveStream

from ._bursts import Bursts, read_pipe

try:
    from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport
except ImportError:  # another SDK layout: the client builds its own transport
    SubprocessCLITransport = None  # type: ignore[assignment,misc]


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
        _bursts: Bursts | None = None

        async def connect(self) -> None:
            await super().connect()
            stdout = self._process.stdout if self._process is not None else None
            pipe = read_pipe(stdout)
            if pipe is not None and stdout is not None and self._stdout_stream is not None:
                self._bursts = Bursts(pipe)
                self._stdout_stream = TextReceiveStream(_PacedStdout(stdout, self._bursts))

        async def write(self, data: str) -> None:
            await super().write(data)
            if self._bursts is not None:
                self._bursts.answer_expected()


class _PacedStdout(ByteReceiveStream):
    """The CLI's stdout, each read paced by `Bursts`."""

    def __init__(self, stdout: ByteReceiveStream, bursts: Bursts) -> None:
        self._stdout = stdout
        self.bursts = bursts

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await self.bursts.before_read()
        data = await self._stdout.receive(max_bytes)
        self.bursts.after_read(len(data))
        return data

    async def aclose(self) -> None:
        await self._stdout.aclose()
