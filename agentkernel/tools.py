"""Python functions as agent tools: one definition, offered on every backend.

A `Tool` is a name, a description, a JSON schema for its arguments, the Python callable and
the tool's *kind* (the neutral `ToolKind` that the permission policy decides by). ``@tool``
builds one from a typed, documented function: the schema comes from the signature's type hints
(through pydantic, so ``int``, ``list[str]``, ``Literal[...]``, dataclasses and models all
work) and the descriptions from the docstring (Google, NumPy or Sphinx style).

Why the kind defaults to ``execute``: a function can do anything, so unless its author says it
only reads (``@tool(kind="read")``), every permission mode short of ``allow-all`` asks before
the agent runs it. Every call an agent makes passes through the session's permission flow
exactly once, with this kind (see each backend for where).

A decorated function is registered kernel-wide (`shared`): every session in this process
offers it, unless created with ``shared_tools=False``. Sessions add their own with
``Session(tools=[...])`` or ``session.register_tool(fn)``.

Where the function runs: an async function is awaited, a plain one is called, through the
*runner* the process installs (`set_runner`). In a notebook that is the kernel's main thread
(see `agentkernel.notebook.tools`), so a tool sees and changes the user's objects where the
user's own cells do; elsewhere a plain function runs on a worker thread, so a slow tool never
stalls the agents of other sessions. An exception becomes an error result carrying its
message, which the agent reads and the turn goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints, overload

import pydantic

from .backends import Image
from .events import TOOL_KINDS, ToolKind

__all__ = [
    "Tool",
    "ToolBox",
    "ToolOutput",
    "ToolRegistry",
    "as_tool",
    "set_runner",
    "shared",
    "tool",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What every agent accepts as a tool name (Anthropic's and MCP's rule)."""
_TITLE_LIMIT = 120

Runner = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a zero-argument callable (which may return an awaitable) where user code belongs and
returns its result."""


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolOutput:
    """What a tool call gives back to the agent: text and images, and whether it failed."""

    content: tuple[str | Image, ...] = ()
    is_error: bool = False

    @property
    def text(self) -> str:
        """The text parts, joined by newlines."""
        return "\n".join(part for part in self.content if isinstance(part, str))

    @property
    def images(self) -> list[Image]:
        return [part for part in self.content if isinstance(part, Image)]

    @classmethod
    def error(cls, message: str) -> ToolOutput:
        return cls((message,), is_error=True)

    @classmethod
    def of(cls, value: Any) -> ToolOutput:
        """A function's return value as a result: text as is, an `Image` (or a list of texts
        and images, with at least one image) as content, anything else as JSON (or its repr
        when it is not JSON)."""
        if isinstance(value, ToolOutput):
            return value
        if isinstance(value, (str, Image)):
            return cls((value,))
        if (
            isinstance(value, (list, tuple))
            and any(isinstance(part, Image) for part in value)
            and all(isinstance(part, (str, Image)) for part in value)
        ):
            return cls(tuple(value))
        if value is None:
            return cls(("(no result)",))
        try:
            return cls((json.dumps(value, default=_jsonable),))
        except (TypeError, ValueError):
            return cls((repr(value),))

    def to_mcp(self) -> list[dict[str, Any]]:
        """The content as MCP content blocks (what every MCP client and Claude's SDK take)."""
        return [
            {"type": "text", "text": part}
            if isinstance(part, str)
            else {"type": "image", "data": part.base64, "mimeType": part.media_type}
            for part in self.content
        ] or [{"type": "text", "text": ""}]


def _jsonable(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# -- the tool ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Tool:
    """One agent tool. Calling it (``tool(2, 3)``) calls the function itself.

    ``describe`` (optional) turns a call's arguments into `ToolInfo` fields (``title``,
    ``command``, ``locations``) for the permission prompt; by default the title is the call
    written out, ``add(a=2, b=3)``. Equality is identity: a redefined function is a new tool.
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    fn: Callable[..., Any]
    kind: ToolKind = "execute"
    describe: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    _arguments: type[pydantic.BaseModel] | None = field(default=None, repr=False)
    _positional: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: use 1-64 letters, digits, '_' or '-' "
                "(pass name=... to choose another)"
            )
        if self.kind not in TOOL_KINDS:
            raise ValueError(
                f"unknown tool kind {self.kind!r}; valid kinds: {', '.join(TOOL_KINDS)}"
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def info(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The `ToolInfo` fields of one call of this tool: what a permission prompt shows."""
        info: dict[str, Any] = {"kind": self.kind, "title": _call_title(self.name, arguments)}
        if self.describe is not None:
            info.update(self.describe(arguments))
        return info

    async def invoke(self, arguments: dict[str, Any] | None = None) -> ToolOutput:
        """Run the tool on an agent's arguments. Never raises for the tool's own failures: bad
        arguments and exceptions become an error result whose text says what went wrong."""
        try:
            args, kwargs = self._bind(dict(arguments or {}))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return ToolOutput.error(f"invalid arguments for {self.name}: {problems}")
        try:
            value = await _run(self.fn, args, kwargs)
        except Exception as exc:  # the agent reads the error; the turn goes on
            return ToolOutput.error(f"{type(exc).__name__}: {exc}")
        try:
            return ToolOutput.of(value)
        except Exception as exc:  # a result that cannot be shown (a broken __repr__)
            return ToolOutput.error(f"{self.name} returned a result that cannot be sent: {exc}")

    def _bind(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        if self._arguments is None:
            return [], arguments
        parsed = self._arguments.model_validate(arguments)
        values = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        args = [values.pop(name) for name in self._positional]
        return args, values


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    kind: ToolKind = "execute",
    register: bool = True,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    kind: ToolKind = "execute",
    register: bool = True,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a typed, documented function an agent tool: ``@tool`` or ``@tool(kind="read",
    name=...)``. It is registered for every session in this process (`shared`) unless
    ``register=False``; defining it again replaces it."""

    def make(function: Callable[..., Any]) -> Tool:
        built = _from_function(function, name=name, description=description, kind=kind)
        if register:
            shared.add(built)
        return built

    return make(fn) if fn is not None else make


def as_tool(item: Tool | Callable[..., Any]) -> Tool:
    """A `Tool` as is; a function as a tool (kind execute), not registered anywhere."""
    if isinstance(item, Tool):
        return item
    if callable(item):
        return _from_function(item, name=None, description=None, kind="execute")
    raise TypeError(f"a tool is a function or an agentkernel Tool, not {type(item).__name__}")


def _from_function(
    fn: Callable[..., Any], *, name: str | None, description: str | None, kind: ToolKind
) -> Tool:
    summary, params = _parse_docstring(inspect.getdoc(fn) or "")
    model, positional = _arguments_model(fn, params)
    schema = _clean_schema(model.model_json_schema())
    schema.setdefault("properties", {})
    return Tool(
        name=name or getattr(fn, "__name__", ""),
        description=description or summary,
        input_schema=schema,
        fn=fn,
        kind=kind,
        _arguments=model,
        _positional=positional,
    )


def _arguments_model(
    fn: Callable[..., Any], docs: dict[str, str]
) -> tuple[type[pydantic.BaseModel], tuple[str, ...]]:
    """A pydantic model of the function's parameters (it validates and coerces the agent's
    arguments, and gives the JSON schema), and the names that must be passed by position."""
    signature = inspect.signature(fn)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an annotation that does not resolve
        raise TypeError(f"cannot read the type hints of {fn.__qualname__}: {exc}") from None
    fields: dict[str, Any] = {}
    positional: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"{fn.__qualname__} takes *{param.name}: an agent tool needs named parameters "
                "(the agent calls it with a JSON object)"
            )
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(param.name)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            hints.get(param.name, Any),
            pydantic.Field(default, description=docs.get(param.name)),
        )
    model = pydantic.create_model(  # type: ignore[call-overload]
        f"{getattr(fn, '__name__', 'tool')}_arguments",
        __config__=pydantic.ConfigDict(arbitrary_types_allowed=True),
        **fields,
    )
    return model, tuple(positional)


def _clean_schema(schema: Any) -> Any:
    """Drop pydantic's generated ``title`` keywords (noise for the model), leaving properties
    that happen to be called "title" alone."""
    if isinstance(schema, list):
        return [_clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            cleaned[key] = {name: _clean_schema(sub) for name, sub in value.items()}
        else:
            cleaned[key] = _clean_schema(value)
    return cleaned


_PARAM_SECTIONS = frozenset(
    {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
)
_SECTIONS = _PARAM_SECTIONS | {
    "returns", "return", "yields", "raises", "example", "examples", "note", "notes",
    "see also", "attributes", "warning", "warnings",
}  # fmt: skip
_NUMPY_ENTRY = re.compile(r"^(\w+)\s+:\s*.*$")
"""``name : type`` (its description follows, indented)."""
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
"""``name (type): description`` or ``name: description``."""
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (the text before the first section) and each parameter's own
    description, from a Google, NumPy or Sphinx style docstring."""
    lines = doc.expandtabs().splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    entry_indent: int | None = None
    i = 0
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        underlined = bool(stripped) and bool(following) and set(following) == {"-"}
        title = stripped.rstrip(":").strip().lower()
        if title in _SECTIONS and (underlined or stripped.endswith(":")):
            section = "params" if title in _PARAM_SECTIONS else "other"
            current, entry_indent = None, None
            i += 2 if underlined else 1
            continue
        sphinx = _SPHINX_PARAM.match(stripped)
        if sphinx:
            section, current = "sphinx", sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif stripped.startswith(":"):
            section, current = "sphinx", None  # :returns:, :raises: and the like
        elif section is None:
            description.append(line)
        elif stripped and section in ("params", "sphinx"):
            indent = len(line) - len(line.lstrip())
            if section == "params" and entry_indent is None:
                entry_indent = indent
            if section == "params" and indent <= (entry_indent or 0):
                numpy = _NUMPY_ENTRY.match(stripped)
                google = None if numpy else _GOOGLE_ENTRY.match(stripped)
                current = (numpy or google).group(1) if (numpy or google) else None
                if current:
                    params[current] = google.group(2).strip() if google else ""
            elif current:
                params[current] = f"{params[current]} {stripped}".strip()
        i += 1
    return "\n".join(description).strip(), params


def _call_title(name: str, arguments: dict[str, Any]) -> str:
    shown = ", ".join(
        f"{key}={json.dumps(value, default=repr)}" for key, value in arguments.items()
    )
    title = f"{name}({shown})"
    return title if len(title) <= _TITLE_LIMIT else title[: _TITLE_LIMIT - 3] + "..."


# -- where user code runs ---------------------------------------------------------------------

_runner: Runner | None = None


def set_runner(runner: Runner | None) -> Runner | None:
    """Install where tool functions run (the notebook installs the kernel's main thread);
    None restores the default. Returns the previous runner."""
    global _runner
    previous, _runner = _runner, runner
    return previous


async def _run(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    call = functools.partial(fn, *args, **kwargs)
    if _runner is not None:
        return await _runner(call)
    # Default: a coroutine function on the calling loop, a plain one on a worker thread.
    result = call() if inspect.iscoroutinefunction(fn) else await asyncio.to_thread(call)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- sets of tools ----------------------------------------------------------------------------


class ToolRegistry:
    """Tools by name, thread-safe; listeners hear of every change (held weakly, so a session
    that listens can still be garbage-collected)."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._lock = threading.Lock()
        self._tools: dict[str, Tool] = {}
        self._listeners: list[weakref.ref[Any] | Callable[[], None]] = []
        for item in tools:
            self.add(item)

    def add(self, item: Tool | Callable[..., Any]) -> Tool:
        built = as_tool(item)
        with self._lock:
            self._tools[built.name] = built
        self._changed()
        return built

    def remove(self, name: str) -> Tool | None:
        with self._lock:
            removed = self._tools.pop(name, None)
        if removed is not None:
            self._changed()
        return removed

    def get(self, name: str) -> Tool | None:
        with self._lock:
            return self._tools.get(name)

    def tools(self) -> tuple[Tool, ...]:
        with self._lock:
            return tuple(self._tools.values())

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __len__(self) -> int:
        return len(self.tools())

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every change (a bound method is held weakly)."""
        ref: weakref.ref[Any] | Callable[[], None] = (
            weakref.WeakMethod(listener) if inspect.ismethod(listener) else listener
        )
        with self._lock:
            self._listeners.append(ref)

    def _changed(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for ref in listeners:
            listener = ref() if isinstance(ref, weakref.WeakMethod) else ref
            if listener is None:
                with self._lock, contextlib.suppress(ValueError):
                    self._listeners.remove(ref)
                continue
            listener()


shared = ToolRegistry()
"""The kernel-wide tools: every ``@tool`` function, and in a notebook the built-in notebook
tools while they are on. Every session offers them unless created with
``shared_tools=False``."""


class ToolBox:
    """What one session offers: its own tools, then the shared ones it does not shadow."""

    def __init__(
        self, own: Sequence[Tool | Callable[..., Any]] = (), shared_tools: bool = True
    ) -> None:
        self.own = ToolRegistry(own)
        self.shared = shared if shared_tools else None

    def tools(self) -> tuple[Tool, ...]:
        mine = self.own.tools()
        names = {t.name for t in mine}
        theirs = self.shared.tools() if self.shared is not None else ()
        return mine + tuple(t for t in theirs if t.name not in names)

    def get(self, name: str) -> Tool | None:
        return self.own.get(name) or (self.shared.get(name) if self.shared is not None else None)

    def on_change(self, listener: Callable[[], None]) -> None:
        self.own.on_change(listener)
        if self.shared is not None:
            self.shared.on_change(listener)
