"""The one background event loop that owns every session's backend.

Why a thread of our own: agent SDK clients must stay in the task that connected them, the sync
facade must work from plain code *and* from inside a running loop (a Jupyter cell), and the
kernel's own loop must stay free to process widget clicks while a turn waits for one. So each
session's backend lives in an owner task on this loop; callers on any other loop or thread talk
to it through `call` (await from another loop) or `call_sync` (block from plain code).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_shutdown_hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []


def loop() -> asyncio.AbstractEventLoop:
    """The runtime loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            ready = threading.Event()
            new_loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(new_loop)
                _name_async_library()
                new_loop.call_soon(ready.set)
                new_loop.run_forever()

            _thread = threading.Thread(target=run, name="agentkernel-runtime", daemon=True)
            _thread.start()
            ready.wait()
            _loop = new_loop
        return _loop


def _name_async_library() -> None:
    """Tell sniffio this thread runs asyncio, once.

    The SDKs' anyio asks sniffio which library runs at every checkpoint (several times per
    streamed message); unanswered, sniffio looks for the current asyncio task each time, a
    measurable share of the per-delta cost. This thread only ever runs asyncio.
    """
    with contextlib.suppress(ImportError):
        import sniffio

        sniffio.thread_local.name = "asyncio"


def in_runtime() -> bool:
    """True when called from the runtime loop's own thread."""
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    return asyncio.run_coroutine_threadsafe(coro, loop())


async def call(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the runtime loop from any loop; cancelling the caller cancels it too."""
    if in_runtime():
        return await coro
    return await asyncio.wrap_future(submit(coro))


def call_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on the runtime loop and block this thread for the result: the one bridge
    from synchronous code (scripts, line magics, ``session.sync``) to the async core. Safe
    while the caller's own loop runs (a notebook cell), since `coro` runs on another thread."""
    if in_runtime():
        coro.close()
        raise RuntimeError(
            "a blocking agentkernel call was made from the runtime loop itself; use the async API"
        )
    future = submit(coro)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"no answer within {timeout} s") from None


class Handoff(Generic[T]):
    """Items (a session's events) from the runtime thread to a consumer on another loop,
    with one wake-up per burst: every wake-up of the consumer's thread costs it a turn at the
    GIL, which the busy runtime thread gives up only at the interpreter's switch interval
    (5 ms), so a wake-up per event (thousands a second while text streams) costs more than
    everything else the session does with the event. A consumer may let items gather
    (`take`'s ``gather``), woken early only by an urgent one (the end of a turn, a question
    for the user). It waits on a bare future (no task, no asyncio.wait_for, which on Python
    < 3.12 can swallow the caller's cancellation, e.g. a kernel interrupt, when the awaited
    thing completes at once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._urgent_only = False
        """The waiting consumer lets items gather: only an urgent one wakes it."""
        self._urgent = False
        """An urgent item is queued."""

    def put_many(self, items: Iterable[T], *, urgent: bool = False) -> None:
        """Queue `items` in order, with one wake-up of the consumer at most."""
        # No lock for the items themselves (deque appends are atomic): only a waiting consumer
        # is woken, under the lock. The consumer sets its waiter *before* it looks for items,
        # so items appended after that look always see the waiter.
        self._items.extend(items)
        if urgent:
            self._urgent = True
        if self._waiter is not None and (urgent or not self._urgent_only):
            with self._lock:
                waiter, self._waiter = self._waiter, None
            if waiter is not None:
                self._loop.call_soon_threadsafe(_wake, waiter)

    async def take(self, timeout: float, *, gather: float = 0.0) -> list[T]:
        """Everything queued; waits up to `timeout` for something (may return nothing).
        ``gather``: first wait that long for more to queue up, unless an urgent item is or
        gets queued."""
        if gather > 0:
            await self._wait(gather, urgent_only=True)
        if not self._items:
            await self._wait(timeout, urgent_only=False)
        self._urgent = False  # before taking: an urgent item queued meanwhile is taken too
        items = self._items
        taken = []
        popleft = items.popleft
        for _ in range(len(items)):
            taken.append(popleft())
        return taken

    async def _wait(self, timeout: float, *, urgent_only: bool) -> None:
        waiter = self._loop.create_future()
        with self._lock:
            self._urgent_only = urgent_only
            self._waiter = waiter
        if self._urgent if urgent_only else self._items:  # no need to wait (any more)
            with self._lock:
                self._waiter = None
            return
        timer = self._loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            with self._lock:
                self._waiter = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def on_shutdown(hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Register a coroutine function run on the runtime loop when the interpreter exits."""
    _shutdown_hooks.append(hook)


@atexit.register
def _shutdown() -> None:
    """Close what is still open so no agent CLI outlives the interpreter."""
    if _loop is None or _loop.is_closed() or not _loop.is_running():
        return

    async def run_hooks() -> None:
        await asyncio.gather(*(hook() for hook in _shutdown_hooks), return_exceptions=True)
        # Whatever still runs (a turn's owner task) ends here, not in the garbage collector
        # ("Task was destroyed but it is pending!").
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.wait(others, timeout=2) if others else None

    # Best effort at exit: the SDK's own atexit hook still terminates what is left.
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(run_hooks(), _loop).result(timeout=10)
    _loop.call_soon_threadsafe(_loop.stop)
