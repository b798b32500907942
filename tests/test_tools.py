"""Python functions as agent tools (`agentkernel.tools`) and the Session's tool API, without
an agent CLI: schemas, docstrings, invocation and errors, registries, the MCP server both
backends kinds share. Every backend's real use of them is in the conformance suite."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Literal

import httpx
import pytest

from agentkernel import Session
from agentkernel._tool_server import LoopbackToolServer
from agentkernel.backends import Image
from agentkernel.events import Decision, PermissionRequest
from agentkernel.testing import FakeBackend, FakeTurn, Say
from agentkernel.tools import ToolBox, ToolOutput, ToolRegistry, shared, tool

PNG = b"\x89PNG\r\n\x1a\nfake"


@dataclasses.dataclass
class Point:
    x: float
    y: float


def test_schema_and_descriptions_come_from_the_signature_and_docstring() -> None:
    @tool(register=False)
    def scale(points: list[Point], factor: float = 2.0, mode: Literal["up", "down"] = "up") -> int:
        """Scale points around the origin.

        Args:
            points: The points to scale.
            factor (float): How much; 2 doubles
                the distance.
        """
        return len(points)

    assert scale.name == "scale" and scale.kind == "execute"
    assert scale.description == "Scale points around the origin."
    props = scale.input_schema["properties"]
    assert props["factor"] == {
        "default": 2.0,
        "description": "How much; 2 doubles the distance.",
        "type": "number",
    }
    assert props["mode"]["enum"] == ["up", "down"]
    assert props["points"]["type"] == "array" and "$defs" in scale.input_schema
    assert scale.input_schema["required"] == ["points"]
    assert "title" not in props["factor"], "pydantic's titles are noise for the model"


@pytest.mark.parametrize(
    "doc",
    [
        "Look up a word.\n\nParameters\n----------\nword : str\n    The word to look up.\n",
        "Look up a word.\n\n:param word: The word to look up.\n:returns: its meaning\n",
        "Look up a word.\n\nArgs:\n    word: The word to look up.\n\nReturns:\n    Meaning.\n",
    ],
    ids=["numpy", "sphinx", "google"],
)
def test_docstring_styles(doc: str) -> None:
    def lookup(word: str) -> str:
        return word

    lookup.__doc__ = doc
    built = tool(kind="read", name="define", register=False)(lookup)
    assert (built.name, built.kind, built.description) == ("define", "read", "Look up a word.")
    assert built.input_schema["properties"]["word"]["description"] == "The word to look up."


async def test_invoke_validates_coerces_and_turns_errors_into_results() -> None:
    @tool(register=False)
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    @tool(register=False)
    async def fetch(key: str) -> dict[str, int]:
        """An async tool."""
        await asyncio.sleep(0)
        if key == "missing":
            raise KeyError(key)
        return {key: 1}

    assert await add.invoke({"a": "2", "b": 3}) == ToolOutput(("5",))
    bad = await add.invoke({"a": "two"})
    assert (
        bad.is_error and "invalid arguments for add" in bad.text and "b: Field required" in bad.text
    )
    assert await fetch.invoke({"key": "k"}) == ToolOutput(('{"k": 1}',))
    failed = await fetch.invoke({"key": "missing"})
    assert failed == ToolOutput(("KeyError: 'missing'",), is_error=True)
    assert add(2, 3) == 5, "the decorated function is still callable"


async def test_results_of_every_shape() -> None:
    image = Image(PNG, "image/png")
    assert ToolOutput.of(None).text == "(no result)"
    assert ToolOutput.of(["a", image]).images == [image]
    assert ToolOutput.of(["North"]).text == '["North"]', "a list of strings is data"
    assert ToolOutput.of(Point(1, 2)).text == '{"x": 1, "y": 2}'
    assert ToolOutput.of({1, 2}).text == "[1, 2]"
    assert ToolOutput.of(object).text.startswith("<class")
    assert ToolOutput(("hi", image)).to_mcp() == [
        {"type": "text", "text": "hi"},
        {"type": "image", "data": image.base64, "mimeType": "image/png"},
    ]


def test_bad_definitions_say_what_to_change() -> None:
    def spread(*values: int) -> int:
        return sum(values)

    with pytest.raises(TypeError, match="needs named parameters"):
        tool(spread, register=False)
    with pytest.raises(ValueError, match="invalid tool name"):
        tool(name="has space", register=False)(lambda: None)
    with pytest.raises(ValueError, match="unknown tool kind"):
        tool(kind="launch", name="ok", register=False)(lambda: None)  # type: ignore[arg-type]


def test_registries_notify_and_boxes_layer_own_over_shared() -> None:
    registry = ToolRegistry()
    heard: list[int] = []

    class Listener:
        def changed(self) -> None:
            heard.append(len(registry))

    def one() -> int:
        """One."""
        return 1

    listener = Listener()
    registry.on_change(listener.changed)
    registry.add(one)
    assert heard == [1] and "one" in registry
    del listener  # held weakly: a dropped session stops listening
    registry.remove("one")
    assert heard == [1]

    @tool
    def shared_one() -> str:
        """Kernel-wide."""
        return "shared"

    try:
        own = tool(name="shared_one", register=False)(lambda: "mine")
        box = ToolBox([own])
        assert box.get("shared_one") is own, "a session's own tool shadows a shared one"
        assert ToolBox(shared_tools=False).get("shared_one") is None
        assert ToolBox().get("shared_one") is shared_one
    finally:
        shared.remove("shared_one")


async def test_session_tool_api_and_reconnect_on_change() -> None:
    def double(n: int) -> int:
        """Double a number."""
        return 2 * n

    script = [FakeTurn("one", [Say("One.")]), FakeTurn("two", [Say("Two.")])]
    session = Session(
        FakeBackend,
        store=False,
        tools=[double],
        shared_tools=False,
        backend_options={"script": script},
    )
    try:
        assert [t.name for t in session.get_tools()] == ["double"]
        assert (await session.invoke_tool("double", {"n": 4})).text == "8"
        with pytest.raises(KeyError, match="this session offers: double"):
            session.get_tool("triple")
        await session.send("one")
        assert session.is_connected
        session.register_tools([tool(name="triple", register=False)(lambda n: 3 * n)])
        await asyncio.sleep(0.05)  # applied on the runtime loop
        assert not session.is_connected, "a running agent learns new tools by reconnecting"
        await session.send("two")
        assert session.is_connected
        session.unregister_tool("triple")
        with pytest.raises(KeyError):
            session.unregister_tool("triple")
        assert session.sync.invoke_tool("double", {"n": 1}).text == "2"
    finally:
        await session.close()


async def test_the_loopback_server_decides_each_call_once_then_runs_it() -> None:
    """Over real MCP (streamable HTTP on 127.0.0.1, the `mcp` package's client): a call is
    decided with the tool's kind, then run; a denial does not run it; the URL's token is
    needed."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    ran: list[int] = []
    asked: list[PermissionRequest] = []

    @tool(kind="read", register=False)
    def count(n: int) -> int:
        """Count."""
        ran.append(n)
        return n

    async def decide(request: PermissionRequest) -> Decision:
        asked.append(request)
        return Decision("allow") if request.input["n"] < 10 else Decision("deny", reason="big")

    server = LoopbackToolServer([count], decide)
    url = await server.start()
    try:
        async with streamable_http_client(url) as streams, ClientSession(*streams[:2]) as mcp:
            await mcp.initialize()
            listed = await mcp.list_tools()
            assert [t.name for t in listed.tools] == ["count"]
            allowed = await mcp.call_tool("count", {"n": 3})
            denied = await mcp.call_tool("count", {"n": 30})
        assert allowed.content[0].text == "3" and not allowed.is_error
        assert denied.is_error and "big" in denied.content[0].text
        assert ran == [3] and [(r.kind, r.title) for r in asked] == [
            ("read", "count(n=3)"),
            ("read", "count(n=30)"),
        ]
        async with httpx.AsyncClient() as client:
            guessed = await client.post(url.rsplit("/", 2)[0] + "/mcp", json={})
        assert guessed.status_code == 404, "without the token there is nothing to call"
    finally:
        await server.stop()
