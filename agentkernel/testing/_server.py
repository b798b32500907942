"""The HTTP server: routing, matching, recording, streaming, pacing and cutting."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from ._anthropic import AnthropicMessages
from ._dialect import AnswerContext, Dialect, Turn
from ._openai import OpenAIChatCompletions, OpenAIResponses
from ._script import Reply, Script, text

__all__ = ["API_KEY", "ROUTES", "RecordedRequest", "ScriptedModelServer"]

log = logging.getLogger("agentkernel.testing")

#: The placeholder key :meth:`ScriptedModelServer.claude_env` hands to agent CLIs.
API_KEY = "scripted-model-key"

#: The model id :meth:`ScriptedModelServer.claude_env` asks agent CLIs to use: one no price
#: table has, so a CLI knows it cannot price the (free) scripted replies and says so (Claude
#: Code reports its spend figure as a guess, which the Claude backend then leaves out).
MODEL = "scripted-model"

#: ``POST`` paths the server answers, and the wire format spoken on each.
ROUTES: dict[str, Dialect] = {
    "/v1/messages": AnthropicMessages(),
    "/v1/responses": OpenAIResponses(),
    "/v1/chat/completions": OpenAIChatCompletions(),
}

# Header names containing any of these are never recorded (nor logged): they carry keys.
_SECRET_HEADER_PARTS = ("auth", "key", "token", "secret", "cookie")

# A client that goes away mid-answer is normal (Ctrl-C, cancelled turn, test teardown).
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, kept in :attr:`ScriptedModelServer.requests`.

    ``headers`` has lower-case names, without any credential-bearing header.
    ``last_user_text`` and ``markers`` are what rules were matched against; ``matched`` is
    the answering :class:`Reply` (None: no rule matched, or the route was unknown).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    last_user_text: str
    markers: frozenset[str]
    matched: Reply | None
    status: int


@dataclass
class _Rule:
    reply: Reply
    used: int = 0

    @property
    def available(self) -> bool:
        return self.reply.times == 0 or self.used < self.reply.times


@dataclass
class _Choice:
    reply: Reply | None
    index: int | None = None
    exhausted: bool = False
    turn: Turn = field(default_factory=lambda: Turn(""))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: ScriptedModelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hung up; report real bugs through logging."""
        # Socket failures (resets, aborted or timed-out reads of a request line) all mean
        # the client went away: there is nobody left to tell.
        if isinstance(sys.exc_info()[1], OSError):
            return
        log.exception("scripted model server: error while answering %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentkernel-scripted-model"
    # Idle keep-alive connections are dropped after this long.
    timeout = 300
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's stderr access log; requests are logged at INFO instead."""

    def do_POST(self) -> None:
        try:
            self._answer()
        except _DISCONNECTS:
            self.close_connection = True

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # discard trailers
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self) -> None:
        owner = self.server.owner
        path, _, query = self.path.partition("?")
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {
            k.lower(): v
            for k, v in self.headers.items()
            if not any(part in k.lower() for part in _SECRET_HEADER_PARTS)
        }

        def record(choice: _Choice, status: int) -> None:
            owner._record(
                RecordedRequest(
                    method=self.command,
                    path=path,
                    query=query,
                    headers=headers,
                    body=body,
                    last_user_text=choice.turn.text,
                    markers=choice.turn.markers,
                    matched=choice.reply,
                    status=status,
                )
            )

        dialect = ROUTES.get(path.rstrip("/")) if self.command == "POST" else None
        if dialect is None:
            routes = ", ".join(f"POST {p}" for p in ROUTES)
            record(_Choice(None), 404)
            log.info("%s %s -> 404 (unknown route)", self.command, path)
            self._send_json(
                404,
                {
                    "type": "error",
                    "error": {
                        "type": "not_found_error",
                        "message": f"[scripted model] no route for {self.command} {path}; "
                        f"the server answers {routes}",
                    },
                },
            )
            return
        if not isinstance(body, dict):
            record(_Choice(None), 400)
            log.info("%s %s -> 400 (body is not a JSON object)", self.command, path)
            self._send_json(
                400, dialect.error_body(400, "[scripted model] request body must be a JSON object")
            )
            return

        choice = owner._choose(dialect.user_turn(body))
        reply = choice.reply or _no_match_reply(choice)
        status = reply.status or 200
        record(choice, status)
        log.info("%s %s -> %s", self.command, path, _describe(choice, status))
        ctx = AnswerContext(
            model=reply.model or str(body.get("model") or MODEL),
            input_tokens=max(1, len(raw) // 4),
            new_id=owner._new_id,
        )
        if reply.status:
            time.sleep(reply.delay)
            message = f"[scripted model] scripted HTTP {reply.status} reply"
            extra = {"retry-after": "1"} if reply.status == 429 else {}
            self._send_json(reply.status, dialect.error_body(reply.status, message), extra)
        elif dialect.wants_stream(body):
            self._stream(dialect, reply, ctx)
        elif reply.cut_after is not None:
            time.sleep(reply.delay)
            self._cut()
        else:
            time.sleep(reply.delay)
            self._send_json(200, dialect.complete(reply, ctx))

    def _send_json(
        self, status: int, payload: Mapping[str, Any], extra: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", self.server.owner._new_id("req_scripted"))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, dialect: Dialect, reply: Reply, ctx: AnswerContext) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        # Chunked framing lets a cut be told apart from a normal end: the client sees the
        # connection close without the terminating zero-length chunk.
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self.server.owner._new_id("req_scripted"))
        self.end_headers()
        sent = 0
        for event in dialect.stream(reply, ctx):
            cut = reply.cut_after
            if cut is not None and (event.final or (event.delta and sent >= cut)):
                self._cut()
                return
            if event.delta:
                if reply.delay:
                    time.sleep(reply.delay)
                sent += 1
            self._write_chunk(event.encode())
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        # The handler's wfile is unbuffered, so each event reaches the client immediately.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _cut(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _no_match_reply(choice: _Choice) -> Reply:
    snippet = " ".join(choice.turn.text.split())[:80]
    message = f"[scripted model] no reply in the script matches: {snippet}"
    if choice.turn.markers:
        message += f" [{', '.join(sorted(choice.turn.markers))}]"
    if choice.exhausted:
        message += " (a matching reply was already used up: raise its times or add another)"
    return Reply(blocks=[text(message)])


def _describe(choice: _Choice, status: int) -> str:
    if choice.reply is None:
        return f"{status}, no reply matched {choice.turn.text[:60]!r}"
    return f"{status}, reply #{choice.index} (match={choice.reply.match!r})"


class ScriptedModelServer:
    """A local model API server that answers agent CLIs from a script of :class:`Reply` rules.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. It listens on
    ``host:port`` (port 0 picks a free port) in a daemon thread.
    """

    def __init__(
        self,
        script: Script | Iterable[Reply] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._rules: list[_Rule] = []
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._counters: dict[str, itertools.count[int]] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add(*script)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ScriptedModelServer:
        """Bind and serve in a daemon thread; returns self so ``start()`` can be chained."""
        if self._httpd is not None:
            raise RuntimeError("the scripted model server is already running")
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-model-server:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (idempotent)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=5)

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- public API --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the scripted model server is not running; call start()")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash, no ``/v1``)."""
        return f"http://{self._host}:{self.port}"

    def claude_env(self) -> dict[str, str]:
        """Environment variables that point the Claude Code CLI at this server.

        ``CLAUDE_CONFIG_DIR`` is left to the caller: pick a fresh directory per test so no
        real login or settings leak in. The model is `MODEL` unless a session names one: the
        replies cost nothing, and a real model's name would make the CLI price them at that
        model's list price.
        """
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "ANTHROPIC_MODEL": MODEL,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def openai_env(self) -> dict[str, str]:
        """Environment variables for OpenAI-API clients (``OPENAI_BASE_URL`` ends in /v1)."""
        return {"OPENAI_BASE_URL": f"{self.url}/v1", "OPENAI_API_KEY": API_KEY}

    def add(self, *replies: Reply) -> None:
        """Append rules; safe while the server is answering."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"add() takes Reply values, got {reply!r}")
        with self._lock:
            self._rules.extend(_Rule(r) for r in replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def remaining(self) -> list[Reply]:
        """Rules with a finite ``times`` that still have uses left (handy to assert a
        test's script was fully consumed)."""
        with self._lock:
            return [r.reply for r in self._rules if r.reply.times and r.available]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived; return them all.

        Raises :class:`TimeoutError` (listing what did arrive) after ``timeout`` seconds.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= n, timeout):
                seen = [f"{r.method} {r.path} {r.last_user_text[:40]!r}" for r in self._requests]
                raise TimeoutError(
                    f"expected {n} request(s) within {timeout}s, got {len(seen)}: {seen}"
                )
            return list(self._requests)

    # -- used by the handler -----------------------------------------------------------

    def _choose(self, turn: Turn) -> _Choice:
        with self._lock:
            exhausted = False
            for index, rule in enumerate(self._rules):
                if not rule.reply.matches(turn.text, turn.markers):
                    continue
                if not rule.available:
                    exhausted = True
                    continue
                rule.used += 1
                return _Choice(rule.reply, index, turn=turn)
            return _Choice(None, exhausted=exhausted, turn=turn)

    def _record(self, request: RecordedRequest) -> None:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            counter = self._counters.setdefault(prefix, itertools.count(1))
            return f"{prefix}_{next(counter)}"

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
