"""The session's Python tools as an MCP server, built with the `mcp` package.

Two ways to reach it, one server definition (`mcp_server`):

- in process: Claude's SDK serves an ``mcp.server.Server`` to its CLI itself;
- `LoopbackToolServer`: streamable HTTP on 127.0.0.1, for agents in another process that
  connect to MCP servers by URL (Codex, ACP agents). The URL's path holds a random token, so
  another local user or process cannot find and call the kernel's tools.

Permissions: a backend whose agent already asks us before every tool call (Claude's PreToolUse
hook) serves its tools with a plain `invoke` call. The loopback server cannot count on that
(an agent may call MCP tools unasked), so it is the one gate for the calls it serves: each
call goes through the session's ``decide`` with the tool's kind, exactly once, and the backend
tells its agent to call this server's tools without asking (each backend in its own words).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server import Server

from .events import Decision, PermissionRequest
from .tools import Tool, ToolOutput

log = logging.getLogger("agentkernel.tools")

SERVER_NAME = "agentkernel"
"""The MCP server's name: agents prefix our tools with it (``mcp__agentkernel__add``)."""

CallTool = Callable[[Tool, dict[str, Any], dict[str, Any]], Awaitable[ToolOutput]]
"""``call(tool, arguments, meta)``: ``meta`` is the request's ``_meta`` (the client's own
keys, such as the id of the agent's tool call)."""
Decide = Callable[[PermissionRequest], Awaitable[Decision]]

_START_TIMEOUT_S = 10.0


def mcp_server(
    tools: Sequence[Tool],
    call: CallTool,
    *,
    tool_meta: dict[str, Any] | None = None,
) -> Server[Any]:
    """An MCP server listing `tools` and answering each call with `call`.
    ``tool_meta`` goes in every tool's ``_meta`` (agent-specific hints, given by the backend)."""
    by_name = {t.name: t for t in tools}
    listed = [
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=t.input_schema,
            meta=tool_meta,
        )
        for t in tools
    ]

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        found = by_name.get(params.name)
        if found is None:
            names = ", ".join(by_name) or "none"
            output = ToolOutput.error(f"no tool named {params.name!r}; the tools are: {names}")
        else:
            meta = params.meta if isinstance(params.meta, dict) else {}
            try:
                output = await call(found, dict(params.arguments or {}), meta)
            except Exception as exc:  # the agent hears why, instead of a bare server error
                log.exception("the tool server failed on a call of %s", params.name)
                output = ToolOutput.error(f"agentkernel could not run {params.name}: {exc}")
        return types.CallToolResult.model_validate(
            {"content": output.to_mcp(), "isError": output.is_error}
        )

    return Server(
        SERVER_NAME,
        version="1",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


class LoopbackToolServer:
    """`tools` served over streamable HTTP on 127.0.0.1, every call decided by `decide`
    (``tool_meta``: as for `mcp_server`; ``tool_use_id_key``: the request ``_meta`` key in
    which the agent names its tool call, so the permission request joins that call).

    ``await start()`` returns the URL; ``await stop()`` ends the server. Runs on the caller's
    loop (the session's runtime loop), in a task of its own."""

    def __init__(
        self,
        tools: Sequence[Tool],
        decide: Decide,
        *,
        tool_meta: dict[str, Any] | None = None,
        tool_use_id_key: str | None = None,
    ) -> None:
        self._decide = decide
        self._tool_use_id_key = tool_use_id_key
        self._token = secrets.token_urlsafe(24)
        self._app = mcp_server(tools, self._call, tool_meta=tool_meta).streamable_http_app(
            streamable_http_path=f"/{self._token}/mcp", json_response=True
        )
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url: str | None = None

    async def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not server.started:
            if self._task.done() or asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise ConnectionError(
                    "the tool server for the session's Python tools did not start"
                )
            await asyncio.sleep(0.005)
        self.url = f"http://127.0.0.1:{port}/{self._token}/mcp"
        return self.url

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)
        if not task.done():
            task.cancel()

    def abort(self) -> None:
        """Stop soon, without waiting (for kill paths that cannot await)."""
        if self._server is not None:
            self._server.should_exit = True

    async def _call(
        self, tool: Tool, arguments: dict[str, Any], meta: dict[str, Any]
    ) -> ToolOutput:
        tool_use_id = meta.get(self._tool_use_id_key) if self._tool_use_id_key else None
        request = PermissionRequest(
            request_id=uuid.uuid4().hex,
            tool_name=tool.name,
            input=arguments,
            tool_use_id=str(tool_use_id) if tool_use_id else None,
            **tool.info(arguments),
        )
        decision = await self._decide(request)
        if not decision.allowed:
            return ToolOutput.error(f"{tool.name} was not run: {decision.reason or 'denied'}")
        return await tool.invoke(
            decision.updated_input if decision.updated_input is not None else arguments
        )
