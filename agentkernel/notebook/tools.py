"""The built-in notebook tools: the agent works with the live kernel, not only with files.

``run_python`` runs code in the user's namespace on the kernel's main thread and returns what
a cell would show (stdout, stderr, the result's repr, the traceback, figures as images); the
same output is shown in the running cell, so the user sees what ran. ``list_variables``,
``inspect_variable`` and ``notebook_history`` read the kernel (kind read: ``allow-reads``
allows them). ``insert_cell`` offers a new cell below through the front end's next-input
payload: the user sees it and decides to run it, nothing is written behind their back (kind
edit: it changes the notebook document, so it is asked unless edits are allowed).

`install` (called when the extension loads) makes every tool function of this process run on
the kernel's main thread (`KernelRunner`) and turns the built-in tools on for every session in
the kernel (`agentkernel.tools.shared`); `set_enabled` turns them off and on (``%agent tools``).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import inspect
import io
import itertools
import linecache
import re
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, Literal

from IPython.display import Image as DisplayImage
from IPython.display import display
from IPython.utils.capture import capture_output

from .. import tools
from ..backends import Image
from ..tools import Tool, ToolOutput

__all__ = ["KernelRunner", "enabled", "install", "kernel_tools", "set_enabled"]

START_GRACE_S = 1.0
"""How long a tool call waits for the kernel's main thread to pick it up. A thread that does
not (a cell blocked in ``session.sync.send``, not awaiting) is busy for the whole turn: the call
then runs on a worker thread instead of waiting forever."""
TEXT_LIMIT = 12_000
"""Characters of one tool result's text the agent gets (the rest is cut, and it is told)."""
REPR_LIMIT = 2_000
VARIABLES_LIMIT = 200
HISTORY_LAST = 10

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HIDDEN = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})
_AGENT_KERNEL = "agentkernel"
"""The Agent kernel's ``implementation``: its cells are prompts, so code needs ``%%python``."""
_runs = itertools.count(1)


# -- where tool functions run -----------------------------------------------------------------


class KernelRunner:
    """Runs tool functions on the kernel's main thread, in its loop, between the steps of the
    cell that awaits the turn, so they see and change the user's objects where the user's own
    cells do (pandas, matplotlib and most libraries expect one thread). Their output goes to
    the cell that runs the turn."""

    def __init__(self, shell: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.shell = shell
        self.loop = loop

    async def __call__(self, call: Callable[[], Any]) -> Any:
        if _running_loop() is self.loop:
            result = call()
            return await result if asyncio.iscoroutine(result) else result
        job = _Job(call, self.shell)
        # A fresh context: the caller's is a copy of whichever cell started the agent, whose
        # output parent is stale by now; with none set, ipykernel falls back to the running
        # cell's.
        self.loop.call_soon_threadsafe(job.on_kernel, context=contextvars.Context())
        waited = 0.0
        while not job.started.is_set() and waited < START_GRACE_S:
            await asyncio.sleep(0.005)
            waited += 0.005
        if not job.started.is_set() and job.claim():
            # The main thread is blocked (a synchronous wait for this very turn): it cannot
            # run anything until the turn ends, so run here rather than never.
            return await asyncio.to_thread(job.run_elsewhere)
        return await asyncio.wrap_future(job.future)


class _Job:
    """One call handed to the kernel's thread; whoever claims it first runs it."""

    def __init__(self, call: Callable[[], Any], shell: Any) -> None:
        self.call = call
        self.shell = shell
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.started = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def on_kernel(self) -> None:
        if not self.claim():
            return
        self.started.set()
        _to_running_cell(self.shell)
        try:
            result = self.call()
        except BaseException as exc:  # handed to the waiting tool call
            self.future.set_exception(exc)
            return
        if not asyncio.iscoroutine(result):
            self.future.set_result(result)
            return
        task = asyncio.ensure_future(result)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            self.future.set_exception(asyncio.CancelledError())
        elif task.exception() is not None:
            self.future.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            self.future.set_result(task.result())

    def run_elsewhere(self) -> Any:
        result = self.call()
        return asyncio.run(result) if asyncio.iscoroutine(result) else result


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _to_running_cell(shell: Any) -> None:
    """Send this callback's output to the cell being run (the one awaiting the turn)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is not None and hasattr(shell, "set_parent"):
        shell.set_parent(kernel.get_parent())


# -- switching the tools on and off -----------------------------------------------------------

_installed: list[Tool] = []


def install(shell: Any) -> None:
    """Run tool functions on this kernel's main thread and offer the built-in tools to every
    session (called once the extension loads; again is harmless)."""
    loop = _running_loop()  # the kernel's own: extensions load from a running cell
    if loop is not None:
        tools.set_runner(KernelRunner(shell, loop))
    _installed[:] = kernel_tools(shell)
    set_enabled(True)


def set_enabled(on: bool) -> list[str]:
    """Offer (or stop offering) the built-in tools to every session in this kernel; returns
    their names. Sessions already running learn of it before their next turn."""
    for built in _installed:
        if on:
            tools.shared.add(built)
        elif tools.shared.get(built.name) is built:
            tools.shared.remove(built.name)
    return [t.name for t in _installed]


def enabled() -> bool:
    return bool(_installed) and all(tools.shared.get(t.name) is t for t in _installed)


# -- the tools --------------------------------------------------------------------------------


def kernel_tools(shell: Any) -> list[Tool]:
    """The built-in tools, bound to `shell` (its namespace, history and front end)."""

    async def run_python(code: str) -> ToolOutput:
        """Run Python code in the notebook's live kernel, in the user's namespace (the
        variables the user's cells defined), as a notebook cell would: changes persist for
        later cells. Returns stdout, stderr, the value of the last expression, the traceback
        of an error, and figures drawn as images. The user sees the same output in the cell.

        Args:
            code: The code to run; IPython syntax (magics, top-level await) works.
        """
        return await _run_python(shell, code)

    def list_variables() -> str:
        """List the variables in the notebook's namespace: name, type and a short summary
        (shape of arrays and data frames, length of collections)."""
        return _list_variables(shell.user_ns, set(getattr(shell, "user_ns_hidden", {})))

    def inspect_variable(name: str) -> str:
        """Describe one variable of the notebook: for a pandas DataFrame its shape, dtypes,
        first rows and summary statistics; for a Series or numpy array the same kind of
        summary; for anything else its type, size and repr. Nothing is run.

        Args:
            name: The variable's name, or a dotted attribute path (``model.coef_``).
        """
        return _inspect(shell.user_ns, name)

    def notebook_history(last: int = HISTORY_LAST) -> str:
        """The code of the notebook's most recent cells in this kernel (In) and the values
        they produced (Out), oldest first.

        Args:
            last: How many of the most recent cells to show.
        """
        return _history(shell, max(1, min(int(last), 100)))

    def insert_cell(source: str, cell_type: Literal["code", "markdown"] = "code") -> str:
        """Offer a new cell below the current one, for the user to review and run. Use this
        to add code or notes to the notebook: never write the notebook's .ipynb file.

        Args:
            source: The cell's text.
            cell_type: "code" or "markdown".
        """
        return _insert_cell(shell, source, cell_type)

    def describe_code(arguments: dict[str, Any]) -> dict[str, Any]:
        code = str(arguments.get("code", ""))
        first = next((line for line in code.splitlines() if line.strip()), "")
        shown = first if len(first) <= 100 else first[:97] + "..."
        more = " ..." if code.strip() != first.strip() else ""
        return {"title": f"Run Python: {shown}{more}", "command": code}

    def describe_insert(arguments: dict[str, Any]) -> dict[str, Any]:
        first = next((ln for ln in str(arguments.get("source", "")).splitlines() if ln), "")
        return {"title": f"Insert a {arguments.get('cell_type', 'code')} cell: {first[:80]}"}

    def build(fn: Callable[..., Any], kind: Any, describe: Any = None) -> Tool:
        return dataclasses.replace(tools.tool(fn, kind=kind, register=False), describe=describe)

    return [
        build(run_python, "execute", describe_code),
        build(list_variables, "read"),
        build(inspect_variable, "read"),
        build(notebook_history, "read"),
        build(insert_cell, "edit", describe_insert),
    ]


# -- run_python -------------------------------------------------------------------------------


async def _run_python(shell: Any, code: str) -> ToolOutput:
    source = shell.transform_cell(code) if hasattr(shell, "transform_cell") else code
    filename = f"<run_python {next(_runs)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    result: Any = None
    error: str | None = None
    with capture_output(stdout=True, stderr=True, display=True) as captured:
        try:
            body, last = _split_last_expression(source, filename)
            if body is not None:
                outcome = eval(body, shell.user_ns)
                if asyncio.iscoroutine(outcome):
                    await outcome
            if last is not None:
                result = eval(last, shell.user_ns)
                if asyncio.iscoroutine(result):
                    result = await result
            if result is not None:
                display(result)
            _show_figures()
        except (Exception, KeyboardInterrupt) as exc:
            error = _traceback(exc, filename)
            print(error, file=sys.stderr)
    captured.show()  # the running cell shows what the agent ran, as it ran
    return _run_output(captured, result, error)


def _split_last_expression(source: str, filename: str) -> tuple[Any, Any]:
    """The code compiled as a cell is: everything but a final expression, and that expression
    (evaluated for its value). Top-level await is allowed in both."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(source, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), filename, "eval", flags=flags)
    body = compile(tree, filename, "exec", flags=flags) if tree.body else None
    return body, last


def _traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the agent's code on (our own frames left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)).rstrip()


def _show_figures() -> None:
    """Display the matplotlib figures the code drew, as a cell would at its end (the inline
    backend does that after each cell; a tool call is not a cell, so it is done here)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    if inline is not None and "inline" in str(pyplot.get_backend()):
        inline.flush_figures()
    for number in pyplot.get_fignums():  # other non-GUI backends (Agg): render and close
        figure = pyplot.figure(number)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        display(DisplayImage(data=buffer.getvalue(), format="png"))
        pyplot.close(figure)


def _run_output(captured: Any, result: Any, error: str | None) -> ToolOutput:
    parts: list[str] = []
    if captured.stdout:
        parts.append(f"stdout:\n{captured.stdout.rstrip()}")
    stderr = captured.stderr.replace(error or "\0", "").strip() if captured.stderr else ""
    if stderr:
        parts.append(f"stderr:\n{_ANSI.sub('', stderr)}")
    if result is not None:
        parts.append(f"result:\n{_plain(result)}")
    if error:
        parts.append(f"error:\n{_ANSI.sub('', error)}")
    images = [image for output in captured.outputs for image in _images(output.data)]
    if images:
        parts.append(f"({len(images)} figure(s) attached as image(s))")
    text = _cap("\n\n".join(parts) or "(ran without output)")
    return ToolOutput((text, *images), is_error=error is not None)


def _images(data: dict[str, Any]) -> list[Image]:
    found = []
    for media_type in ("image/png", "image/jpeg"):
        raw = data.get(media_type)
        if isinstance(raw, str):
            found.append(Image(base64.b64decode(raw), media_type))
        elif isinstance(raw, bytes):
            found.append(Image(raw, media_type))
    return found[:1]  # one image per output: PNG when there is one


def _plain(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ says so instead of failing the call
        text = f"<{type(value).__name__}: repr failed: {exc}>"
    return _cap(text, REPR_LIMIT * 4)


def _cap(text: str, limit: int = TEXT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n... ({len(text) - limit} more characters cut)"


# -- the read tools ---------------------------------------------------------------------------


def _list_variables(namespace: dict[str, Any], hidden: set[str]) -> str:
    rows = []
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in hidden or name in _HIDDEN:
            continue
        if type(value).__name__ == "module":
            continue
        rows.append(f"{name}: {_summary(value)}")
    if not rows:
        return "The namespace holds no variables yet."
    shown = rows[:VARIABLES_LIMIT]
    more = len(rows) - len(shown)
    return "\n".join(shown) + (f"\n... and {more} more" if more else "")


def _summary(value: Any) -> str:
    """One line: the type, and the size or a short repr."""
    kind = type(value).__name__
    module = type(value).__module__ or ""
    shape = getattr(value, "shape", None)
    if module.startswith(("pandas", "numpy")) and isinstance(shape, tuple):
        dims = " x ".join(str(n) for n in shape)
        dtype = getattr(value, "dtype", None)
        return f"{kind} {dims}" + (f" ({dtype})" if dtype is not None else "")
    if callable(value) and not isinstance(value, type):
        return f"{kind}{_signature(value)}"
    if isinstance(value, (str, bytes)):
        return f"{kind}, length {len(value)}: {_short_repr(value, 60)}"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"{kind}, {len(value)} item(s): {_short_repr(value, 60)}"
    return f"{kind}: {_short_repr(value, 80)}"


def _signature(fn: Any) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _short_repr(value: Any, limit: int) -> str:
    text = _plain(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve(namespace: dict[str, Any], name: str) -> Any:
    head, *attributes = name.strip().split(".")
    if head not in namespace:
        close = [n for n in namespace if not n.startswith("_") and n.lower() == head.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else " (list_variables lists them)"
        raise KeyError(f"no variable named {head!r} in the notebook{hint}")
    value = namespace[head]
    for attribute in attributes:
        value = getattr(value, attribute)
    return value


def _inspect(namespace: dict[str, Any], name: str) -> str:
    value = _resolve(namespace, name)
    module = type(value).__module__ or ""
    kind = type(value).__name__
    if module.startswith("pandas") and kind == "DataFrame":
        text = _describe_frame(value)
    elif module.startswith("pandas") and kind == "Series":
        text = _describe_series(value)
    elif module.startswith("numpy") and kind == "ndarray":
        text = _describe_array(value)
    else:
        lines = [f"type: {module + '.' if module != 'builtins' else ''}{kind}"]
        with contextlib.suppress(Exception):
            lines.append(f"length: {len(value)}")
        if callable(value):
            lines.append(f"signature: {name}{_signature(value)}")
            doc = getattr(value, "__doc__", None)
            if doc:
                lines.append(f"doc: {doc.strip()[:REPR_LIMIT]}")
        lines.append(f"repr: {_plain(value)[:REPR_LIMIT]}")
        text = "\n".join(lines)
    return _cap(f"{name}\n{text}")


def _describe_frame(frame: Any) -> str:
    rows, columns = frame.shape
    dtypes = "\n".join(f"  {column}: {dtype}" for column, dtype in frame.dtypes.items())
    nulls = frame.isna().sum()
    missing = ", ".join(f"{c}: {n}" for c, n in nulls.items() if n) or "none"
    parts = [
        f"type: pandas.DataFrame, {rows} rows x {columns} columns",
        f"columns and dtypes:\n{dtypes}",
        f"missing values: {missing}",
        f"first rows:\n{frame.head(5).to_string(max_cols=30, max_colwidth=40)}",
    ]
    with contextlib.suppress(Exception):  # describe() fails on some exotic dtypes
        parts.append(f"summary statistics:\n{frame.describe().to_string(max_cols=30)}")
    return "\n".join(parts)


def _describe_series(series: Any) -> str:
    parts = [
        f"type: pandas.Series {series.name!r}, {len(series)} values, dtype {series.dtype}",
        f"missing values: {int(series.isna().sum())}",
        f"first values:\n{series.head(5).to_string()}",
    ]
    with contextlib.suppress(Exception):
        parts.append(f"summary statistics:\n{series.describe().to_string()}")
    return "\n".join(parts)


def _describe_array(array: Any) -> str:
    import numpy

    parts = [f"type: numpy.ndarray, shape {array.shape}, dtype {array.dtype}"]
    if array.size and numpy.issubdtype(array.dtype, numpy.number):
        with numpy.errstate(all="ignore"):
            parts.append(
                f"min {numpy.nanmin(array)!r}, max {numpy.nanmax(array)!r}, "
                f"mean {numpy.nanmean(array)!r}, NaNs {int(numpy.isnan(array).sum())}"
                if numpy.issubdtype(array.dtype, numpy.floating)
                else f"min {array.min()!r}, max {array.max()!r}, mean {array.mean()!r}"
            )
    parts.append(f"values:\n{numpy.array2string(array, threshold=60, edgeitems=3)}")
    return "\n".join(parts)


def _history(shell: Any, last: int) -> str:
    inputs = list(getattr(shell.history_manager, "input_hist_raw", []))
    outputs = shell.user_ns.get("Out", {})
    entries = []
    for number in range(max(1, len(inputs) - last), len(inputs)):
        source = inputs[number].rstrip()
        if not source:
            continue
        entry = f"In [{number}]:\n{_cap(source, REPR_LIMIT)}"
        if number in outputs:
            entry += f"\nOut[{number}]: {_plain(outputs[number])[: REPR_LIMIT // 4]}"
        entries.append(entry)
    return "\n\n".join(entries) or "No cells have run in this kernel yet."


def _insert_cell(shell: Any, source: str, cell_type: str) -> str:
    if cell_type not in ("code", "markdown"):
        raise ValueError(f"cell_type must be 'code' or 'markdown', not {cell_type!r}")
    agent_kernel = getattr(getattr(shell, "kernel", None), "implementation", "") == _AGENT_KERNEL
    text = source
    if cell_type == "markdown":
        text = source if agent_kernel else f"%%markdown\n{source}"
    elif agent_kernel:
        text = f"%%python\n{source}"
    shell.payload_manager.write_payload(
        {"source": "set_next_input", "text": text, "replace": False}, single=False
    )
    return (
        f"Offered a new {cell_type} cell below the current one. The user sees it and decides "
        "whether to keep and run it; it has not run."
    )
