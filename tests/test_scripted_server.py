"""Tests for the scripted model server (agentkernel.testing): wire format, matching,
script loading, the command line, and the real Claude Code CLI talking to it."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentkernel.testing import (
    Reply,
    Script,
    ScriptedModelServer,
    ScriptError,
    load_script,
    text,
    thinking,
    tool_use,
)

# -- helpers -----------------------------------------------------------------------------


def user(*content: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(content)}


def tblock(s: str) -> dict[str, Any]:
    return {"type": "text", "text": s}


def messages_body(prompt: str | list[dict[str, Any]], *, stream: bool = True) -> dict[str, Any]:
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return {"model": "claude-test-1", "max_tokens": 100, "stream": stream, "messages": msgs}


def post(
    server: ScriptedModelServer,
    body: Any,
    path: str = "/v1/messages?beta=true",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(
            method, path, body=data, headers={"content-type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def sse(raw: bytes) -> list[tuple[str | None, Any]]:
    """Parse SSE frames into (event name, JSON data or raw string)."""
    events: list[tuple[str | None, Any]] = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        name = None
        data = ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def ask(server: ScriptedModelServer, msgs: list[dict[str, Any]]) -> str:
    """Non-streaming request; returns the reply's concatenated text."""
    status, _, raw = post(server, messages_body(msgs, stream=False))
    assert status == 200
    return "".join(b["text"] for b in json.loads(raw)["content"] if b["type"] == "text")


# -- Anthropic SSE framing ---------------------------------------------------------------


def test_text_stream_event_order_chunking_and_usage() -> None:
    answer = "The quick brown fox jumps over the lazy dog, twice: ünïcödé ✓."
    with ScriptedModelServer([Reply(match="fox", blocks=[text(answer)], chunk_size=7)]) as server:
        status, headers, raw = post(server, messages_body("tell me about the fox"))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse(raw)
    names = [name for name, _ in events]
    n_deltas = -(-len(answer) // 7)
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * n_deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    deltas = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert "".join(deltas) == answer
    assert all(len(d) <= 7 for d in deltas)
    start = events[0][1]["message"]
    assert start["model"] == "claude-test-1"
    assert start["role"] == "assistant" and start["content"] == []
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"]["output_tokens"] > 0
    assert message_delta["usage"]["input_tokens"] > 0


def test_thinking_and_tool_use_blocks_reassemble() -> None:
    tool_input = {"command": "echo 'hi' > /tmp/x", "nested": {"list": [1, 2.5, None, "ß"]}}
    script = [
        Reply(
            match="go",
            blocks=[
                thinking("Let me think about this."),
                text("Running."),
                tool_use("Bash", tool_input),
            ],
            chunk_size=5,
            times=2,
            usage={"input_tokens": 11, "output_tokens": 22, "cache_read_input_tokens": 3},
            model="claude-scripted",
        ),
        Reply(match="fixed", blocks=[tool_use("Read", {"path": "a"}, id="toolu_mine")]),
    ]
    with ScriptedModelServer(script) as server:
        first = sse(post(server, messages_body("go"))[2])
        second = sse(post(server, messages_body("go"))[2])
        fixed = sse(post(server, messages_body("fixed id"))[2])

    starts = [d for n, d in first if n == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["thinking", "text", "tool_use"]
    assert [s["index"] for s in starts] == [0, 1, 2]

    def deltas(events: list[tuple[str | None, Any]], index: int, kind: str, key: str) -> str:
        return "".join(
            d["delta"][key]
            for n, d in events
            if n == "content_block_delta" and d["index"] == index and d["delta"]["type"] == kind
        )

    assert deltas(first, 0, "thinking_delta", "thinking") == "Let me think about this."
    assert deltas(first, 0, "signature_delta", "signature")
    assert deltas(first, 1, "text_delta", "text") == "Running."
    assert json.loads(deltas(first, 2, "input_json_delta", "partial_json")) == tool_input
    assert starts[2]["content_block"]["name"] == "Bash"
    message_delta = next(d for n, d in first if n == "message_delta")
    assert message_delta["delta"]["stop_reason"] == "tool_use"
    assert message_delta["usage"]["output_tokens"] == 22
    assert message_delta["usage"]["cache_read_input_tokens"] == 3
    assert first[0][1]["message"]["model"] == "claude-scripted"
    # Generated tool ids are fresh for every answer; explicit ids are kept.
    ids = [
        d["content_block"]["id"]
        for events in (first, second, fixed)
        for n, d in events
        if n == "content_block_start" and d["content_block"]["type"] == "tool_use"
    ]
    assert ids == ["toolu_scripted_1", "toolu_scripted_2", "toolu_mine"]


def test_delay_streams_each_event_as_it_is_produced() -> None:
    with ScriptedModelServer([Reply(blocks=[text("abcdef")], chunk_size=2, delay=0.15)]) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/v1/messages", body=json.dumps(messages_body("x")))
        resp = conn.getresponse()
        began = time.monotonic()
        arrivals: list[float] = []
        buffer = b""
        while chunk := resp.read1():
            buffer += chunk
            arrivals += [time.monotonic() - began] * chunk.count(b"event: content_block_delta")
        conn.close()
    assert len(arrivals) == 3
    # Buffered output would deliver all three deltas together at the end.
    assert arrivals[1] - arrivals[0] > 0.1
    assert arrivals[2] - arrivals[1] > 0.1


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(529, "overloaded_error"), (429, "rate_limit_error"), (500, "api_error")],
)
def test_error_status_replies(status: int, error_type: str) -> None:
    script = [Reply(match="x", status=status), Reply(match="x", blocks=[text("recovered")])]
    with ScriptedModelServer(script) as server:
        got, headers, raw = post(server, messages_body("x"))
        retry = post(server, messages_body("x"))
    assert got == status
    assert headers["content-type"] == "application/json"
    body = json.loads(raw)
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert ("retry-after" in headers) == (status == 429)
    assert retry[0] == 200 and b"recovered" in retry[2]
    assert [r.status for r in server.requests] == [status, 200]


def test_cut_after_drops_the_connection_mid_message() -> None:
    script = [
        Reply(match="cut", blocks=[text("x" * 100)], chunk_size=10, cut_after=3),
        Reply(match="short", blocks=[text("tiny")], cut_after=5),
    ]
    with ScriptedModelServer(script) as server:
        partials = []
        for prompt in ("cut", "short"):
            with pytest.raises(http.client.IncompleteRead) as info:
                post(server, messages_body(prompt))
            partials.append(sse(info.value.partial))
    cut, short = ([n for n, _ in events] for events in partials)
    assert cut.count("content_block_delta") == 3
    assert "message_delta" not in cut and "message_stop" not in cut
    # Fewer deltas than cut_after: the message still never completes.
    assert short.count("content_block_delta") == 1
    assert "message_delta" not in short


def test_non_streaming_request_gets_a_whole_message() -> None:
    script = [Reply(blocks=[thinking("hm"), text("Hi"), tool_use("Bash", {"command": "ls"})])]
    with ScriptedModelServer(script) as server:
        status, headers, raw = post(server, messages_body("x", stream=False))
    message = json.loads(raw)
    assert status == 200 and headers["content-type"] == "application/json"
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][2]["input"] == {"command": "ls"}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] > 0


# -- matching ----------------------------------------------------------------------------


def test_matches_only_the_last_user_message_without_reminders() -> None:
    script = [
        Reply(match="commit", blocks=[text("wrong: matched a reminder")]),
        Reply(match="first", blocks=[text("wrong: matched an earlier turn")]),
        Reply(match="second", blocks=[text("right")]),
    ]
    reminder = "<system-reminder>\nEnd git commit messages with ...\n</system-reminder>\n"
    conversation = [
        user(tblock(reminder), tblock("first question")),
        {"role": "system", "content": [tblock("# Environment: second system note")]},
        {"role": "assistant", "content": [tblock("first answer")]},
        user(tblock(reminder), tblock("second question")),
    ]
    with ScriptedModelServer(script) as server:
        assert ask(server, conversation) == "right"
    assert server.requests[0].last_user_text == "second question"
    assert server.requests[0].matched is script[2]


def test_rules_are_tried_in_order_with_times_budgets() -> None:
    script = [
        Reply(match="ping", blocks=[text("one")]),
        Reply(match="ping", blocks=[text("two")], times=2),
        Reply(match="ping", blocks=[text("forever")], times=0),
    ]
    with ScriptedModelServer(script) as server:
        answers = [ask(server, [user(tblock("ping"))]) for _ in range(5)]
        assert server.remaining == []
    assert answers == ["one", "two", "two", "forever", "forever"]


def test_tool_result_and_tool_error_markers() -> None:
    script = [
        Reply(match="tool_error", blocks=[text("saw an error")]),
        Reply(match="tool_result", blocks=[text("saw a result")], times=0),
    ]
    ok = user({"type": "tool_result", "tool_use_id": "t1", "content": "file written"})
    listed = user(
        {"type": "tool_result", "tool_use_id": "t2", "content": [tblock("line 1"), tblock("2")]}
    )
    failed = user({"type": "tool_result", "tool_use_id": "t3", "content": "boom", "is_error": True})
    with ScriptedModelServer(script) as server:
        assert ask(server, [ok]) == "saw a result"
        assert ask(server, [listed]) == "saw a result"
        assert ask(server, [failed]) == "saw an error"
        assert ask(server, [user(tblock("no tools here"))]).startswith("[scripted model]")
    texts = [(r.last_user_text, sorted(r.markers)) for r in server.requests]
    assert texts == [
        ("file written", ["tool_result"]),
        ("line 1\n2", ["tool_result"]),
        ("boom", ["tool_error", "tool_result"]),
        ("no tools here", []),
    ]


def test_no_match_answers_with_an_explanation() -> None:
    with ScriptedModelServer([Reply(match="hello", blocks=[text("Hi")])]) as server:
        assert ask(server, [user(tblock("hello"))]) == "Hi"
        again = ask(server, [user(tblock("hello"))])
        other = ask(server, [user(tblock("what is " + "very " * 30 + "long"))])
    assert again.startswith("[scripted model] no reply in the script matches: hello")
    assert "used up" in again
    assert (
        other
        == "[scripted model] no reply in the script matches: " + ("what is " + "very " * 30)[:80]
    )
    assert server.requests[2].matched is None


def test_add_while_running_and_wait_for_requests() -> None:
    with ScriptedModelServer() as server:
        server.add(Reply(match="late", blocks=[text("added later")]))
        assert ask(server, [user(tblock("late rule"))]) == "added later"
        assert len(server.wait_for_requests(1, timeout=1)) == 1
        with pytest.raises(TimeoutError, match="expected 2 request"):
            server.wait_for_requests(2, timeout=0.1)
        with pytest.raises(TypeError):
            server.add("not a reply")  # type: ignore[arg-type]


# -- HTTP behaviour ----------------------------------------------------------------------


def test_credentials_are_never_recorded_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    secrets = {
        "Authorization": "Bearer sk-secret-1",
        "x-api-key": "sk-secret-2",
        "X-Goog-Api-Key": "sk-secret-3",
        "x-auth-token": "sk-secret-4",
        "anthropic-version": "2023-06-01",
    }
    caplog.set_level(logging.DEBUG, logger="agentkernel.testing")
    with ScriptedModelServer([Reply(blocks=[text("ok")])]) as server:
        post(server, messages_body("hello"), headers=secrets)
    recorded = server.requests[0]
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert not {"authorization", "x-api-key", "x-goog-api-key", "x-auth-token"} & set(
        recorded.headers
    )
    assert "sk-secret" not in repr(server.requests) + caplog.text
    assert "POST /v1/messages" in caplog.text


def test_unknown_routes_and_bad_bodies_get_json_errors() -> None:
    with ScriptedModelServer([Reply(blocks=[text("ok")])]) as server:
        status, _, raw = post(server, b"", path="/v1/models", method="GET")
        bad_status, _, bad_raw = post(server, b"{not json", path="/v1/messages")
    assert status == 404
    assert json.loads(raw)["error"]["type"] == "not_found_error"
    assert "/v1/messages" in json.loads(raw)["error"]["message"]
    assert bad_status == 400
    assert json.loads(bad_raw)["error"]["type"] == "invalid_request_error"
    assert [(r.method, r.path, r.status) for r in server.requests] == [
        ("GET", "/v1/models", 404),
        ("POST", "/v1/messages", 400),
    ]


def test_client_disconnect_mid_stream_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    script = [Reply(match="slow", blocks=[text("a" * 200)], chunk_size=1, delay=0.01)]
    with ScriptedModelServer(script) as server:
        body = json.dumps(messages_body("slow")).encode()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while b"content_block_delta" not in received:
            received += sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # linger 0: the server sees a reset
        time.sleep(0.3)
        server.add(Reply(match="after", blocks=[text("still serving")]))
        assert ask(server, [user(tblock("after"))]) == "still serving"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err


def test_start_stop_without_context_manager() -> None:
    server = ScriptedModelServer([Reply(blocks=[text("ok")])])
    assert server.start() is server
    url = server.url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert server.claude_env() == {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "scripted-model-key",
        "ANTHROPIC_MODEL": "scripted-model",  # unpriced: the CLI reports no made-up cost
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    with pytest.raises(RuntimeError):
        server.start()
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1)


# -- scripts -----------------------------------------------------------------------------


def test_load_script_from_json(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(
        json.dumps(
            {
                "replies": [
                    {"match": "hello", "blocks": [{"text": "Hi"}, {"thinking": "hm"}]},
                    {
                        "match": "tool",
                        "blocks": [{"tool_use": {"name": "Bash", "input": {"command": "ls"}}}],
                        "times": 0,
                        "chunk_size": 3,
                        "delay": 0.5,
                        "cut_after": 2,
                        "usage": {"input_tokens": 5},
                        "model": "m",
                        "stop_reason": "max_tokens",
                    },
                    {"status": 529},
                ]
            }
        )
    )
    script = load_script(path)
    assert isinstance(script, Script) and len(script) == 3
    first, second, third = script
    assert first.match == "hello" and first.blocks == (text("Hi"), thinking("hm"))
    assert second.blocks == (tool_use("Bash", {"command": "ls"}),)
    assert (second.times, second.chunk_size, second.delay, second.cut_after) == (0, 3, 0.5, 2)
    assert (second.usage, second.model, second.stop_reason) == (
        {"input_tokens": 5},
        "m",
        "max_tokens",
    )
    assert third.match is None and third.status == 529
    assert Script.from_file(path).replies[0].blocks == first.blocks


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"replies": [{"match": "x", "reply": []}]},
            r"replies\[0\]: unknown key 'reply'; valid keys are: match, blocks, times",
        ),
        ({"replise": []}, r"script: unknown key 'replise'; valid keys are: replies"),
        (
            {"replies": [{"blocks": [{"txt": "x"}]}]},
            r"replies\[0\]\.blocks\[0\]: unknown key 'txt'; valid keys are: text, thinking",
        ),
        (
            {"replies": [{"blocks": [{"tool_use": {"name": "B", "args": {}}}]}]},
            r"unknown key 'args'; valid keys are: name, input, id",
        ),
        ({"replies": [{"times": -1}]}, r"replies\[0\]: times must be an int >= 0"),
        ({"replies": [{"status": 200}]}, r"replies\[0\]: status must be an HTTP error status"),
        (
            {"replies": [{"blocks": [{"text": 3}]}]},
            r"replies\[0\]\.blocks\[0\]: text\(\) needs a string",
        ),
        ([], r"a script is a JSON object"),
    ],
)
def test_script_errors_name_the_problem(tmp_path: Path, data: Any, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ScriptError, match=message) as info:
        load_script(path)
    assert str(path) in str(info.value)


def test_script_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ScriptError, match="invalid JSON"):
        load_script(broken)
    with pytest.raises(ScriptError, match="cannot read script"):
        load_script(tmp_path / "missing.json")


def test_reply_validation_in_python() -> None:
    with pytest.raises(ScriptError, match="blocks must hold"):
        Reply(blocks=["plain string"])  # type: ignore[list-item]
    with pytest.raises(ScriptError, match="chunk_size"):
        Reply(chunk_size=0)
    with pytest.raises(ScriptError, match="not JSON-serialisable"):
        tool_use("Bash", {"when": object()})
    assert Reply(blocks=[text("a")]).blocks == (text("a"),)


# -- OpenAI formats ----------------------------------------------------------------------


def test_responses_api_streams_text_and_function_calls() -> None:
    script = [
        Reply(
            match="list",
            blocks=[text("Listing."), tool_use("shell", {"cmd": ["ls", "-la"]})],
            chunk_size=4,
        ),
        Reply(match="tool_result", blocks=[text("Two files.")]),
    ]
    first_body = {
        "model": "gpt-test",
        "stream": True,
        "input": [
            {"role": "developer", "content": "be brief"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "AGENTS.md stuff"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "list files"}],
            },
        ],
    }
    with ScriptedModelServer(script) as server:
        status, headers, raw = post(server, first_body, path="/v1/responses")
        events = sse(raw)
        call = next(
            d["item"]
            for n, d in events
            if n == "response.output_item.done" and d["item"]["type"] == "function_call"
        )
        follow_up = {
            **first_body,
            "input": [
                *first_body["input"],
                {
                    "type": "function_call",
                    "call_id": call["call_id"],
                    "name": "shell",
                    "arguments": call["arguments"],
                },
                {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": "a.txt\nb.txt",
                },
            ],
        }
        done = sse(post(server, follow_up, path="/v1/responses")[2])
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    text_deltas = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    arg_deltas = "".join(
        d["delta"] for n, d in events if n == "response.function_call_arguments.delta"
    )
    assert text_deltas == "Listing."
    assert json.loads(arg_deltas) == {"cmd": ["ls", "-la"]}
    assert call["name"] == "shell" and call["call_id"].startswith("call_scripted_")
    completed = events[-1][1]["response"]
    assert [i["type"] for i in completed["output"]] == ["message", "function_call"]
    assert completed["usage"]["output_tokens"] > 0
    assert "Two files." in "".join(d["delta"] for n, d in done if n == "response.output_text.delta")
    first, second = server.requests
    assert first.last_user_text == "list files"
    assert (second.last_user_text, second.markers) == ("a.txt\nb.txt", frozenset({"tool_result"}))


def test_chat_completions_streams_text_and_tool_calls() -> None:
    script = [
        Reply(
            match="hi", blocks=[text("Hello!"), tool_use("get_time", {"tz": "UTC"})], chunk_size=3
        )
    ]
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with ScriptedModelServer(script) as server:
        status, _, raw = post(server, body, path="/v1/chat/completions")
        fallback = post(server, {**body, "stream": False}, path="/v1/chat/completions")
    events = sse(raw)
    assert status == 200 and events[-1] == (None, "[DONE]")
    chunks = [d for _, d in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content", "") for d in deltas) == "Hello!"
    args = "".join(
        call["function"]["arguments"] for d in deltas for call in d.get("tool_calls", [])
    )
    assert json.loads(args) == {"tz": "UTC"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    # The only rule is used up: the fallback explains, in the non-streaming format.
    message = json.loads(fallback[2])["choices"][0]["message"]
    assert message["content"].startswith("[scripted model] no reply in the script matches: hi")


# -- command line ------------------------------------------------------------------------


def test_command_line_serves_until_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(
        json.dumps({"replies": [{"match": "hello", "blocks": [{"text": "Hi from file"}]}]})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentkernel.testing", "--script", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = []
        for line in proc.stdout:
            banner.append(line)
            if "Ctrl-C" in line:
                break
        output = "".join(banner)
        url = re.search(r"export ANTHROPIC_BASE_URL=(\S+)", output)
        assert url, output
        assert "export ANTHROPIC_API_KEY=scripted-model-key" in output
        port = int(url.group(1).rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/messages", body=json.dumps(messages_body("hello", stream=False)))
        assert "Hi from file" in conn.getresponse().read().decode()
        conn.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "stopped" in out
    assert "Traceback" not in err
    assert "POST /v1/messages" in err  # the request log


def test_command_line_help_and_bad_script(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "agentkernel.testing"]
    help_text = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True).stdout
    assert '"replies"' in help_text and "tool_result" in help_text and "--script" in help_text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"replies": [{"mtach": "x"}]}))
    result = subprocess.run([*cmd, "--script", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown key 'mtach'" in result.stderr and "Traceback" not in result.stderr


# -- the real Claude Code CLI ------------------------------------------------------------


def claude_binary() -> Path | None:
    try:
        import claude_agent_sdk
    except ImportError:
        return None
    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    return path if path.exists() else None


CLAUDE = claude_binary()
needs_claude = pytest.mark.skipif(CLAUDE is None, reason="bundled Claude Code CLI not found")


def run_claude(server: ScriptedModelServer, tmp_path: Path, prompt: str, *extra: str) -> str:
    config = tmp_path / "claude-config"
    config.mkdir(exist_ok=True)
    env = {**os.environ, **server.claude_env(), "CLAUDE_CONFIG_DIR": str(config), "IS_SANDBOX": "1"}
    result = subprocess.run(
        [str(CLAUDE), "-p", prompt, "--setting-sources", "", *extra],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_claude
def test_real_claude_cli_prints_the_scripted_text(tmp_path: Path) -> None:
    with ScriptedModelServer(
        [Reply(match="hello", blocks=[text("Hi from the script!")])]
    ) as server:
        out = run_claude(server, tmp_path, "hello there")
    assert out.strip() == "Hi from the script!"
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.body["stream"] is True
    assert "hello there" in request.last_user_text


@needs_claude
def test_real_claude_cli_tool_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "made-by-tool.txt"
    script = [
        Reply(
            match="make a file",
            blocks=[
                thinking("A shell command will do."),
                text("Creating it."),
                tool_use("Bash", {"command": f"echo scripted > {target} && echo wrote it"}),
            ],
        ),
        Reply(match="tool_result", blocks=[text("The file is there.")]),
    ]
    with ScriptedModelServer(script) as server:
        out = run_claude(
            server,
            tmp_path,
            "please make a file",
            "--permission-mode",
            "bypassPermissions",
            "--output-format",
            "stream-json",
            "--verbose",
        )
    assert target.read_text() == "scripted\n"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["type"] == "result" and result["result"] == "The file is there."
    first, second = server.requests
    assert first.matched is script[0] and second.matched is script[1]
    assert "tool_result" in second.markers
    assert "wrote it" in second.last_user_text
    tool_result = second.body["messages"][-1]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == "toolu_scripted_1"
