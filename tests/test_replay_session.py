"""After replayed cells the agent knows exactly the replayed history: no more, no less.

Real kernels (nbclient), the real Claude Code CLI, the scripted model; one store and one CLI
config dir, as on one machine. What the model is sent is read off the scripted server.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from agentkernel.testing import Reply, ScriptedModelServer, text

from .test_replay import _agent_cells, _agent_meta, _env, _run

MARK = "[The conversation so far, restored from a recording:]"
"""How a new agent conversation is told the replayed turns (`session._earlier_conversation`)."""


def _notebook(*prompts: str) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell("%load_ext agentkernel")]
    cells += [nbformat.v4.new_code_cell(f"%%agent\n{p}") for p in prompts]
    return nbformat.v4.new_notebook(cells=cells)


def _sent(server: ScriptedModelServer, since: int, question: str) -> str:
    """What the model was sent for the turn that asked `question` (its first request)."""
    for request in server.requests[since:]:
        if question in request.last_user_text:
            return json.dumps(request.body)
    raise AssertionError(f"no request asked {question!r}")


def test_fresh_turns_after_replayed_ones_see_only_the_replayed_history(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    # Newest question first: a seeded prompt carries the earlier questions as text too.
    script = [
        Reply(match=f"{word} question", blocks=[text(f"ANSWER-{word.upper()}")], times=0)
        for word in ("delta", "gamma", "changed beta", "beta", "alpha")
    ]
    with ScriptedModelServer(script) as server:
        env = _env(server, tmp_path)
        _run(_notebook("alpha question", "beta question"), work, env)

        # A cell added at the end: the replayed turns end the recorded conversation, so the
        # fresh turn continues a fork of it (the CLI's own transcript; no seeded text).
        since = len(server.requests)
        added = _run(_notebook("alpha question", "beta question", "gamma question"), work, env)
        assert ["replayed" in _agent_meta(c) for c in _agent_cells(added)] == [True, True, False]
        sent = _sent(server, since, "gamma question")
        assert MARK not in sent
        for seen in ("alpha question", "ANSWER-ALPHA", "beta question", "ANSWER-BETA"):
            assert seen in sent, seen

        # The middle cell changed: only the first replays; the recorded conversation went on
        # past it (beta, gamma), so the fresh turns start a new one seeded with alpha alone.
        since = len(server.requests)
        changed = ("alpha question", "changed beta question", "gamma question")
        diverged = _run(_notebook(*changed), work, env)
        assert ["replayed" in _agent_meta(c) for c in _agent_cells(diverged)] == [
            True,
            False,
            False,
        ]
        sent = _sent(server, since, "changed beta question")
        assert MARK in sent and "ANSWER-ALPHA" in sent
        assert "ANSWER-BETA" not in sent and "ANSWER-GAMMA" not in sent
        later = _sent(server, since, "gamma question")  # the new conversation goes on
        assert "ANSWER-CHANGED BETA" in later and "ANSWER-BETA" not in later

        # Run again with a cell added: all three replay (from two recordings), the last of
        # them ends its conversation, so the new cell forks it: it holds the seeded alpha.
        since = len(server.requests)
        again = _run(_notebook(*changed, "delta question"), work, env)
        assert ["replayed" in _agent_meta(c) for c in _agent_cells(again)] == [
            True,
            True,
            True,
            False,
        ]
        sent = _sent(server, since, "delta question")
        assert sent.count(MARK) == 1 and "ANSWER-ALPHA" in sent
        assert "ANSWER-CHANGED BETA" in sent and "ANSWER-GAMMA" in sent
        assert "ANSWER-BETA" not in sent
