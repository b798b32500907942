"""Static rendering of a turn: plain text, Markdown, HTML."""

from __future__ import annotations

import concurrent.futures
import random
import re

import mistune

from agentkernel import render
from agentkernel.events import (
    Decision,
    Error,
    Event,
    FileChange,
    PermissionDecided,
    PermissionRequest,
    PlanUpdate,
    Question,
    SessionStarted,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnStarted,
    Usage,
    UsageUpdate,
    event_from_dict,
)
from agentkernel.render._style import _md_to_html

LONG = "\n".join(f"line {i}" for i in range(100))
EDIT = {"file_path": "a.py", "old_string": "x = 1\ny = 2", "new_string": "x = 1\ny = 3"}
EDIT_DIFF = "--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n x = 1\n-y = 2\n+y = 3\n"
# Rendering knows tools only by what the backend says of them (kind, title, command, diff):
# these names are nobody's, so nothing here can lean on a tool name.
RUN = {"name": "run", "kind": "execute", "command": "ls -la", "title": "ls -la"}
PATCH = {"name": "patch", "kind": "edit", "title": "Edit a.py", "diff": EDIT_DIFF}


def turn(
    *, stamp: float = 1.0, ids: str = "a", cost: float = 0.0123, tokens: int = 0
) -> list[Event]:
    """A synthetic turn touching every kind of event; ``stamp``, ``ids``, ``cost`` and
    ``tokens`` vary what must not show in plain text."""
    t1, t2, r1, r2 = (f"{ids}-{n}" for n in ("t1", "t2", "r1", "r2"))
    events: list[Event] = [
        SessionStarted(backend="claude", model="m", backend_session_id=f"{ids}-session"),
        TurnStarted(prompt="do it"),
        ThinkingDelta(text="hmm "),
        ThinkingDelta(text="let me think"),
        Thinking(text="hmm let me think"),
        TextDelta(text="I'll **list** "),
        TextDelta(text="files.\n"),
        Text(text="I'll **list** files.\n"),
        PlanUpdate(
            items=[
                {"content": "List files", "status": "in_progress"},
                {"content": "Edit", "status": "pending"},
            ]
        ),
        ToolCall(tool_use_id=t1, input={"command": "ls -la", "description": "x"}, **RUN),
        PermissionRequest(request_id=r1, tool_name="run", input={}, tool_use_id=t1),
        PermissionDecided(request_id=r1, tool_name="run", behavior="allow"),
        ToolResult(tool_use_id=t1, output=LONG),
        ToolCall(tool_use_id=t2, input=EDIT, **PATCH),
        PermissionRequest(request_id=r2, tool_name="patch", input=EDIT, tool_use_id=t2),
        PermissionDecided(request_id=r2, tool_name="patch", behavior="deny", reason="not now"),
        # What the agent was told of the denial: the card says it once, as the decision.
        ToolResult(tool_use_id=t2, output="not now", is_error=True),
        FileChange(path="b.py", diff="--- a/b.py\n+++ b/b.py\n@@ -1 +1 @@\n-a\n+b"),
        PlanUpdate(
            items=[
                {"content": "List files", "status": "completed"},
                {"content": "Edit", "status": "in_progress"},
            ]
        ),
        UsageUpdate(usage=Usage(50, 10, cost_usd=cost / 2)),
        Error(kind="rate_limit", message="slow down", retryable=True),
        TextDelta(text="Done"),
        Text(text="Done."),
        TurnEnded(
            stop_reason="end_turn",
            usage=Usage(100 + tokens, 20, 5, 0, cost),
            duration_s=3.21 * stamp,
            model_calls=2,
        ),
    ]
    return [_stamped(e, stamp) for e in events]


def _stamped(event: Event, stamp: float) -> Event:
    data = event.to_dict()
    data.update(timestamp=1_700_000_000.0 * stamp, session_id=f"s{stamp}", seq=int(stamp * 7))
    return event_from_dict(data)


TEXT = """\
● s1 · claude · m

✻ Thinking…

I'll **list** files.

☰ Plan
  ◐ List files
  ☐ Edit
▶ run: ls -la
? Permission requested: run
✔ Allowed run (by user)
  ⎿ line 0
{lines}
    … 80 more lines (640 characters) cut
▶ patch: Edit a.py
? Permission requested: patch
✖ Denied patch (by user): not now
± b.py
    --- a/b.py
    +++ b/b.py
    @@ -1 +1 @@
    -a
    +b
☰ Plan updated
  ☑ List files
  ◐ Edit
✖ Error (rate_limit): slow down (retryable)

Done.

── end_turn
""".format(lines="\n".join(f"    line {i}" for i in range(1, 20)))


def test_text_is_exact_and_stable() -> None:
    assert render.text(turn(), title="s1 · claude · m") == TEXT
    other = render.text(turn(stamp=2.5, ids="zz", cost=9.99, tokens=7), title="s1 · claude · m")
    assert other == TEXT, "times, durations, costs or ids leaked into plain text"
    for volatile in ("3.2", "$", "token", "a-t1", "a-r1", "session", "1700000000"):
        assert volatile not in TEXT


def test_text_printer_streams_deltas_and_adds_up_to_text() -> None:
    printer = render.TextPrinter(title="s1 · claude · m")
    chunks = [printer.feed(event) for event in turn()]
    assert "".join(chunks) == printer.text == TEXT
    first_delta = next(i for i, e in enumerate(turn()) if isinstance(e, TextDelta))
    assert chunks[first_delta].endswith("I'll **list** ")  # printed as it came
    assert chunks[first_delta + 2] == ""  # the whole block adds nothing already printed


def test_markdown_shows_each_part_once() -> None:
    md = render.markdown(turn())
    assert md.count("I'll **list** files.") == 1
    assert md.count("Done.") == 1
    assert "<details><summary>Thinking</summary>\n\nhmm let me think\n\n</details>" in md
    assert "**▶ run**\n\n```bash\nls -la\n```\n\n✔ Allowed (by user)\n\n```text\nline 0\n" in md
    assert "line 39\n```\n\n*… 60 more lines (480 characters) cut*" in md
    assert "line 40" not in md
    assert "**▶ patch** `Edit a.py` — *denied*\n\n```diff\n x = 1\n-y = 2\n+y = 3\n```" in md
    assert md.count("not now") == 1 and "✖ Denied (by user): not now" in md
    assert "**± `b.py`**\n\n```diff\n--- a/b.py\n" in md
    assert "**Plan**\n\n- [x] List files\n- [ ] Edit *(in progress)*" in md
    assert md.count("**Plan**") == 1  # one plan, at its latest state
    assert "**✖ Error** (`rate_limit`): slow down *(retryable)*" in md
    footer = md.strip().splitlines()[-1]
    assert footer == (
        "*✔ end_turn · 125 tokens (100 in, 20 out, 5 cached) · $0.0123 · 3.2s · 2 model calls*"
    )
    assert "do it" not in md  # the prompt is the cell's own source
    assert "do it" in render.markdown(turn(), show_prompt=True)


def test_markdown_fences_survive_backticks_in_output() -> None:
    events = [
        ToolCall(tool_use_id="t", name="open", input={"file_path": "x.md"}, kind="read"),
        ToolResult(tool_use_id="t", output="```\nnot the end\n````"),
    ]
    md = render.markdown(events)
    assert "`````text\n```\nnot the end\n````\n`````" in md


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_html_is_escaped_and_self_contained() -> None:
    events = [
        *turn(),
        Text(text=f"Look: {HOSTILE} [link](javascript:alert(1))"),
        ToolCall(
            tool_use_id="h", name=HOSTILE, input={"x": HOSTILE}, title=HOSTILE, command=HOSTILE
        ),
        ToolCall(tool_use_id="h2", name="run", kind="execute", command=HOSTILE),
        ToolResult(tool_use_id="h", output=HOSTILE),
        FileChange(path=HOSTILE, diff=f"+{HOSTILE}"),
        PlanUpdate(items=[{"content": HOSTILE, "status": "pending"}]),
        Error(kind=HOSTILE, message=HOSTILE),
        TurnEnded(stop_reason=HOSTILE, is_error=True, result=HOSTILE),
    ]
    page = render.html(events, title=HOSTILE)
    assert "<script" not in page and "<img" not in page and "<style" not in page
    assert "javascript:" not in page
    assert "&lt;script&gt;" in page
    assert not re.search(r"\s(src|href)=\"?(https?:)?//", page), "no external resources"
    assert page.count("<details") == page.count("</details>")
    assert page.count("<div") == page.count("</div>")


def test_answer_html_is_the_same_whichever_markdown_parser_renders_it() -> None:
    """A text without "://" is rendered without the slow bare-URL rule (`_md_to_html`): the
    HTML must be what the rule would have made, for any text; and bare URLs still link."""
    every_rule = mistune.create_markdown(
        escape=True, hard_wrap=True, plugins=["strikethrough", "table", "task_lists", "url"]
    )
    rng = random.Random(16)
    alphabet = "ahpst:/.<>[]()*_`~\n #-|!\\&;x1 "
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(2000)]
    texts += [
        "**bold** _it_ ~~gone~~ `code` [a](b) ![i](j) <b>raw</b> &amp; h ttp:/x",
        "| a | b |\n|---|---|\n| c | ~~d~~ |\n\n- [ ] task\n- [x] done\n",
        "line one\nline two  \n    indented\n\n```py\nx = 'http:/'\n```",
    ]
    for text in texts:
        assert _md_to_html(text) == every_rule(text), text
    linked = _md_to_html("see https://example.com/a_b?x=1. then")
    assert linked == every_rule("see https://example.com/a_b?x=1. then")
    assert '<a href="https://example.com/a_b?x=1">' in linked


def test_html_has_cards_diffs_plan_and_collapsed_long_output() -> None:
    page = render.html(turn(), title="s1 · claude · m")
    assert "● s1 · claude · m" in page
    assert "<details" in page and "✻ Thinking" in page
    assert "<strong>list</strong>" in page  # completed text rendered as Markdown
    assert "Output · 100 lines</summary>" in page  # long output starts collapsed
    short = render.html(
        [ToolCall(tool_use_id="s", name="run"), ToolResult(tool_use_id="s", output="ok")]
    )
    assert "<details open><summary" in short  # a short one starts open
    # A tool card folds: its head is the summary, whose marker turns as it opens.
    assert '<details open style="border' in page and "<summary" in page
    assert "rgba(46,160,67" in page and "rgba(248,81,73" in page  # colored diff lines
    assert "text-decoration:line-through" in page  # completed plan item
    assert "☰ Plan" in page and "1/2" in page
    assert "✔ Allowed (by user)" in page and "✖ Denied (by user): not now" in page
    assert "end_turn · 125 tokens" in page and "$0.0123" in page and "3.2s" in page


def test_mime_bundle() -> None:
    bundle = render.mime_bundle(turn(), title="s1 · claude · m")
    assert set(bundle) == {"text/plain", "text/markdown", "text/html"}
    assert bundle["text/plain"] == TEXT
    assert bundle["text/markdown"] == render.markdown(turn(), title="s1 · claude · m")


def test_stored_copies_render_like_live_events() -> None:
    stored = [event_from_dict(e.to_dict()) for e in turn()]
    assert render.mime_bundle(stored) == render.mime_bundle(turn())


def test_interrupted_turn_keeps_partial_text_and_open_tools() -> None:
    events = [
        TextDelta(text="Half a "),
        TextDelta(text="sentence"),
        ToolCall(
            tool_use_id="t", name="find", input={"pattern": "TODO"}, kind="search", title="TODO"
        ),
        TurnEnded(stop_reason="interrupted"),
    ]
    assert render.text(events) == ("Half a sentence\n\n▶ find: TODO\n\n── interrupted\n")
    md = render.markdown(events)
    assert "Half a sentence" in md
    assert "**▶ find** `TODO` — *interrupted*" in md
    assert "*⚠ interrupted*" in md


def test_parallel_tool_results_name_their_tool() -> None:
    events = [
        ToolCall(tool_use_id="1", name="open", input={"file_path": "a"}, title="a"),
        ToolCall(tool_use_id="2", name="open", input={"file_path": "b"}, title="b"),
        ToolResult(tool_use_id="1", output="A"),
        ToolResult(tool_use_id="2", output=""),
    ]
    assert render.text(events) == (
        "▶ open: a\n▶ open: b\n◀ open result\n  ⎿ A\n◀ open result\n  ⎿ (no output)\n"
    )
    md = render.markdown(events)
    assert md.index("`a`") < md.index("A") < md.index("`b`") < md.index("*(no output)*")


def test_question_shows_options_and_the_live_answer() -> None:
    future: concurrent.futures.Future[Decision] = concurrent.futures.Future()
    question = Question(
        request_id="q",
        _decision=future,
        questions=[
            {
                "question": "Which DB?",
                "header": "DB",
                "multi_select": False,
                "options": [{"label": "SQLite", "description": "a file"}, {"label": "PG"}],
            }
        ],
    )
    assert render.text([question]) == "? DB: Which DB?\n    - SQLite: a file\n    - PG\n"
    question.answer("PG")
    decided = PermissionDecided(request_id="q", tool_name="AskUserQuestion", behavior="allow")
    assert render.text([question, decided]).endswith("    - PG\n✔ Answered: PG (by user)\n")
    md = render.markdown([question, decided])
    assert "**? DB** Which DB?\n- **SQLite** — a file\n- **PG**" in md
    assert "**Answer:** PG\n\n✔ Answered (by user)" in md
    assert "Answer: PG" in render.html([question, decided])
    declined = PermissionDecided(
        request_id="q", tool_name="AskUserQuestion", behavior="deny", reason="later"
    )
    stored = event_from_dict(question.to_dict())  # a stored copy knows no answers
    assert render.text([stored, declined]).endswith("✖ Declined (by user): later\n")


def test_quiet_keeps_the_final_answer_errors_and_status() -> None:
    assert render.text(turn(), quiet=True) == (
        "✖ Error (rate_limit): slow down (retryable)\n\nDone.\n\n── end_turn\n"
    )
    md = render.markdown(turn(), quiet=True)
    assert "Done." in md and "rate_limit" in md and "list" not in md and "Bash" not in md


def test_result_only_turn_shows_the_result() -> None:
    events = [TurnEnded(stop_reason="end_turn", result="The answer is 4.")]
    assert render.text(events) == "The answer is 4.\n\n── end_turn\n"
    assert "The answer is 4." in render.markdown(events)


def test_several_turns_are_separated() -> None:
    events = [
        TurnStarted(prompt="one"),
        Text(text="First."),
        TurnEnded(stop_reason="end_turn"),
        TurnStarted(prompt="two"),
        Text(text="Second."),
        TurnEnded(stop_reason="end_turn"),
    ]
    assert render.text(events) == ("First.\n\n── end_turn\n\n───\n\nSecond.\n\n── end_turn\n")
    md = render.markdown(events, show_prompt=True)
    assert md.index("> one") < md.index("First.") < md.index("> two") < md.index("Second.")


def test_tool_cards_show_what_the_backend_says() -> None:
    """The command of an execute call, an edit's diff lines, the title, and the input only
    where the title does not already say it."""
    from agentkernel.events import ToolInfo
    from agentkernel.render.tool import _input_view

    assert _input_view("run", {}, ToolInfo(kind="execute", command="make\nmake test")) == (
        "",
        ("bash", "make\nmake test"),
    )
    view = _input_view("patch", EDIT, ToolInfo(kind="edit", title="Edit a.py", diff=EDIT_DIFF))
    assert view == ("Edit a.py", ("diff", " x = 1\n-y = 2\n+y = 3"))
    assert _input_view("open", {"path": "a"}, ToolInfo(kind="read", title="Read a")) == (
        "Read a",
        None,
    )
    assert _input_view("open", {"path": "a", "limit": 5}, ToolInfo(title="Read a"))[1] == (
        "json",
        '{"path": "a", "limit": 5}',
    )
    assert render.tool_summary("mcp__x__y", {"q": 1}, ToolInfo()) == '{"q": 1}'


def test_a_decision_made_without_asking_is_told_once_on_its_call() -> None:
    """A rule or the permission mode decides without a request: the decision goes on the
    call's card, and the call's error result (which only repeats it) is not shown again."""
    why = "ls was denied by the permission mode 'deny': nothing could ask a person."
    events = [
        ToolCall(tool_use_id="t", input={"command": "ls"}, **RUN),
        PermissionDecided(
            request_id="p", tool_name="run", behavior="deny", reason=why, by="policy"
        ),
        ToolResult(tool_use_id="t", output=why, is_error=True),
        ToolCall(tool_use_id="u", input={"command": "ls"}, **RUN),
        PermissionDecided(request_id="q", tool_name="run", behavior="allow", by="rule"),
        ToolResult(tool_use_id="u", output="a.txt"),
        TurnEnded(stop_reason="end_turn"),
    ]
    for shown in (render.text(events), render.markdown(events), render.html(events)):
        assert shown.count(why.replace("'", "&#x27;") if "<div" in shown else why) == 1, shown
        assert "(by rule)" in shown
    md = render.markdown(events)
    assert "— *denied*" in md and "*error*" not in md
    page = render.html(events)
    denial = page.index("✖ Denied (by policy)")
    assert denial < page.index("</details>"), "the decision sits on its call's card"
    assert render.text(events).count("Allowed run (by rule)") == 1
