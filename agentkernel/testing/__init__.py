"""A scripted model server: run real agent CLIs offline against canned answers.

:class:`ScriptedModelServer` listens on 127.0.0.1 and speaks the model APIs the agent
CLIs use, streaming the replies of a *script* instead of calling a real model. Point the
real Claude Code CLI (or a notebook's ``%%agent`` cell) at it and everything else - tool
runs, permissions, sessions - is real. Nothing leaves the machine and no key is needed.

Example::

    import os, subprocess, tempfile
    from agentkernel.testing import ScriptedModelServer, Reply, text, tool_use

    script = [
        Reply(match="hello", blocks=[text("Hi there!")]),
        Reply(match="make a file", blocks=[tool_use("Bash", {"command": "touch x"})]),
        Reply(match="tool_result", blocks=[text("Done.")]),
    ]
    with ScriptedModelServer(script) as server:
        env = {**os.environ, **server.claude_env(), "CLAUDE_CONFIG_DIR": tempfile.mkdtemp()}
        subprocess.run(["claude", "-p", "hello"], env=env)        # prints "Hi there!"
        assert server.requests[0].last_user_text == "hello"

From a shell: ``python -m agentkernel.testing --script script.json`` prints the
``export`` lines that point the ``claude`` CLI at the server (``--help`` for details).

Matching
--------
Each request is answered by the first rule, in script order, that (1) has uses left
(``times``; default 1, 0 = unlimited) and (2) has ``match=None`` or a ``match`` that is a
substring of the request's *last user text* or equal to one of its *markers*:

* last user text: the text of the last ``user`` message only (earlier turns never match),
  i.e. its text blocks and the contents of its tool results, joined by newlines, with
  Claude Code's ``<system-reminder>...</system-reminder>`` sections removed. For the
  OpenAI formats: tool outputs plus the newest user message after the model's last output.
* markers: ``"tool_result"`` when that message carries a tool result (a tool call's
  follow-up request), plus ``"tool_error"`` when a tool result is marked ``is_error``.
  So ``Reply(match="tool_result", ...)`` answers "the tool ran, now what?".

If no rule matches, the server still answers (so the CLI never hangs) with the text
``[scripted model] no reply in the script matches: <first 80 chars of the last user text>``.

Replies
-------
``Reply(match=None, blocks=(), times=1, chunk_size=16, delay=0.0, status=None,
cut_after=None, usage=None, model=None, stop_reason=None)``

* ``blocks``: :func:`text`, :func:`thinking`, :func:`tool_use` (tool ids default to
  ``toolu_scripted_N``, fresh for every answer).
* ``chunk_size``: characters per streamed delta (text, thinking and tool-input JSON).
* ``delay``: seconds to wait before each streamed delta (real streaming, flushed at once);
  for an error or non-streaming answer, waited once before answering.
* ``status``: answer with this HTTP error (e.g. 429, 500, 529) and the API's JSON error
  body; 429 also sends ``retry-after: 1``. Agent CLIs retry such errors, and each retry is
  a new request that the next matching rule answers.
* ``cut_after``: drop the connection after that many content deltas, mid-message (before
  the message completes even if it has fewer deltas; a non-streaming request gets no
  answer at all). Claude Code retries a cut stream as a new request.
* ``usage``: token counts in Anthropic names (``input_tokens``, ``output_tokens``,
  ``cache_read_input_tokens``, ``cache_creation_input_tokens``); default: estimates.
* ``model``: the model name to report (default: echo the requested one).
* ``stop_reason``: default ``"tool_use"`` if a tool_use block is present, else ``"end_turn"``.

JSON scripts
------------
:func:`load_script` / :meth:`Script.from_file` read the same fields::

    {"replies": [
      {"match": "hello", "blocks": [{"text": "Hi there!"}]},
      {"match": "make a file", "blocks": [
          {"thinking": "The user wants a file."},
          {"tool_use": {"name": "Bash", "input": {"command": "touch x"}}}]},
      {"match": "tool_result", "blocks": [{"text": "Done."}], "times": 0}
    ]}

Unknown keys are rejected with an error naming the key and the valid ones.

Server
------
``ScriptedModelServer(script=(), *, host="127.0.0.1", port=0)`` (port 0: a free port):
``start()``/``stop()`` or ``with``; ``url``; ``claude_env()`` (``ANTHROPIC_BASE_URL``,
``ANTHROPIC_API_KEY``, ``ANTHROPIC_MODEL`` (``scripted-model``: no price table has it, so
no made-up cost is reported), ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``; choose
``CLAUDE_CONFIG_DIR`` yourself, a fresh directory per test); ``openai_env()``; ``add(*replies)``
while running; ``requests`` (a list of :class:`RecordedRequest`: ``method``, ``path``
without the query, ``query``, ``headers`` with lower-case names, ``body`` (parsed JSON or
None), ``last_user_text``, ``markers``, ``matched`` (the answering Reply or None),
``status``); ``wait_for_requests(n, timeout=5.0)``; ``remaining`` (rules with a finite
``times`` not used up). Headers whose names contain "auth", "key", "token", "secret" or
"cookie" (so ``authorization`` and ``x-api-key``) are never recorded or logged.

Routes: ``POST /v1/messages`` (Anthropic Messages, streaming or not; Claude Code),
``POST /v1/responses`` (OpenAI Responses; Codex) and ``POST /v1/chat/completions``
(OpenAI Chat Completions). The two OpenAI formats follow the published API and are not
yet exercised against the Codex and Copilot CLIs. Anything else gets a JSON 404.
"""

from ._fake import FakeBackend, FakeTurn, Plan, Say, UseTool
from ._script import (
    Block,
    Reply,
    Script,
    ScriptError,
    Text,
    Thinking,
    ToolUse,
    load_script,
    text,
    thinking,
    tool_use,
)
from ._server import API_KEY, RecordedRequest, ScriptedModelServer

__all__ = [
    "API_KEY",
    "Block",
    "FakeBackend",
    "FakeTurn",
    "Plan",
    "RecordedRequest",
    "Reply",
    "Say",
    "Script",
    "ScriptError",
    "ScriptedModelServer",
    "Text",
    "Thinking",
    "ToolUse",
    "UseTool",
    "load_script",
    "text",
    "thinking",
    "tool_use",
]
