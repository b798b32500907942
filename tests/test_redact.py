"""Secret redaction: known key shapes, secret environment values, what must stay intact, and
streamed text: a secret split across deltas at any point is redacted, and text with no secret
near passes straight through."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

import pytest

from agentkernel._redact import (
    REDACTED,
    Redactor,
    StreamRedactor,
    redact,
    redact_obj,
    redactor,
)

ANTHROPIC = "sk-ant-api03-Zx8fK2mQ9vL4pR7tW1yB6nC3dH5jG0sA"
OPENAI = "sk-proj-4fGh7Jk2Lm9Np3Qr6St8Uv1Wx5Yz0Ab"
GITHUB = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
SLACK = "xoxb-2048123456-4096123456-AbCdEfGhIjKlMnOp"
AWS = "AKIAIOSFODNN7EXAMPLE"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


@pytest.mark.parametrize("secret", [ANTHROPIC, OPENAI, GITHUB, GITHUB_PAT, SLACK, AWS, JWT])
def test_known_shapes_are_redacted(secret: str) -> None:
    text = f"config: {secret}\nnext line"
    assert redact(text) == f"config: {REDACTED}\nnext line"


def test_bearer_keeps_the_scheme_and_hides_the_token() -> None:
    assert redact("Authorization: Bearer abc123def456ghi789") == f"Authorization: Bearer {REDACTED}"
    assert redact("curl -H 'authorization: bearer x9y8z7w6v5'") == (
        f"curl -H 'authorization: bearer {REDACTED}'"
    )


def test_private_key_block_and_url_password() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    assert redact(f"key:\n{pem}\ndone") == f"key:\n{REDACTED}\ndone"
    assert redact("git clone https://me:hunter2pass@github.com/x/y.git") == (
        f"git clone https://me:{REDACTED}@github.com/x/y.git"
    )


@pytest.mark.parametrize(
    "text",
    [
        "use scikit-learn and a task-management-board-for-everyone",
        "Bearer authentication is described in RFC 6750",
        "the AKIA prefix marks AWS keys",
        "http://localhost:8888/tree and user@example.com",
        "short",
        "",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact(text) == text


def test_env_values_with_secret_names_are_redacted_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = "q7-not-a-known-shape-9f3e"
    assert redact(f"x {value} y") == f"x {value} y"
    monkeypatch.setenv("MY_SERVICE_TOKEN", value)
    assert redact(f"x {value} y") == f"x {REDACTED} y"
    monkeypatch.delenv("MY_SERVICE_TOKEN")
    assert redact(f"x {value} y") == f"x {value} y"


@pytest.mark.parametrize("name", ["DB_PASSWORD", "my_api_key", "CLIENT_SECRET", "GH_TOKEN"])
def test_every_secret_name_word_counts(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "v4lue-of-the-secret")
    assert redact("got v4lue-of-the-secret back") == f"got {REDACTED} back"


def test_short_or_unrelated_env_values_are_not_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT_TOKEN", "abc123")  # under 8 characters
    monkeypatch.setenv("EDITOR_COLOR_SCHEME", "solarized-dark")  # not a secret name
    text = "abc123 solarized-dark"
    assert redact(text) == text


def test_longest_env_secret_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A_KEY", "abcdefgh")
    monkeypatch.setenv("B_KEY", "abcdefgh-ijklmnop")
    assert redact("abcdefgh-ijklmnop") == REDACTED


def test_redact_obj_walks_nested_values_and_keeps_keys() -> None:
    data = {"cmd": ["echo", ANTHROPIC], "env": {"sk-ant-key-name": (GITHUB,)}, "n": 3, "ok": None}
    assert redact_obj(data) == {
        "cmd": ["echo", REDACTED],
        "env": {"sk-ant-key-name": [REDACTED]},
        "n": 3,
        "ok": None,
    }


def test_redactor_is_cached_per_secret_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_TEST_TOKEN", "first-secret-value")
    first = redactor()
    assert redactor() is first
    monkeypatch.setenv("CACHE_TEST_TOKEN", "second-secret-value")
    second = redactor()
    assert second is not first
    assert second.text("first-secret-value second-secret-value") == (
        f"first-secret-value {REDACTED}"
    )


def test_a_redactor_snapshot_is_fixed() -> None:
    snapshot = Redactor(frozenset({"frozen-secret-1"}))
    assert snapshot.text("a frozen-secret-1 b") == f"a {REDACTED} b"
    assert snapshot.obj(["frozen-secret-1", 1]) == [REDACTED, 1]


# -- streamed text ---------------------------------------------------------------------------

OPENAI_LEGACY = "sk-4fGh7Jk2Lm9Np3Qr6St8Uv1Wx5Yz0AbCdEf"
GITHUB_OAUTH = "gho_16C7e42F292c6912E7710c838347Ae178B4a"
CHUNK_SIZES = (1, 2, 3, 7, 16)

TOKEN_PATTERNS = {
    "anthropic": ANTHROPIC,
    "openai-project": OPENAI,
    "openai": OPENAI_LEGACY,
    "github": GITHUB,
    "github-oauth": GITHUB_OAUTH,
    "github-pat": GITHUB_PAT,
    "aws": AWS,
}
ENV_SECRETS = {
    "MY_SERVICE_TOKEN": "q7-not-a-known-shape-9f3e",
    "my_api_key": "Zq1!not a shape either",
    "CLIENT_SECRET_VALUE": "cs.8812-7765-opaque",
    "DB_PASSWORD": "correct horse battery",
}


def splits(text: str) -> Iterator[tuple[int, int, list[str]]]:
    """`text` cut into chunks of every size in `CHUNK_SIZES`, the first cut at every offset."""
    for size in CHUNK_SIZES:
        for offset in range(1, size + 1):
            cuts = [0, *range(offset, len(text), size), len(text)]
            yield size, offset, [text[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def streamed(redactor_: Redactor, chunks: Sequence[str], key: object = "text") -> str:
    stream = StreamRedactor(redactor_)
    return "".join(stream.feed(key, chunk) for chunk in chunks) + stream.flush(key)


def contexts(secret: str) -> list[str]:
    """The secret where streamed text puts it: mid-sentence, at the start and end of a block,
    glued to punctuation, twice, and split over lines of code."""
    return [
        f"Your key is {secret} - keep it safe.",
        secret,
        f"export KEY={secret}\necho done",
        f"({secret}), then '{secret}'",
        f"line one\n{secret}\n",
    ]


def check_stream(redactor_: Redactor, text: str, secret: str) -> None:
    whole = redactor_.text(text)
    assert secret not in whole and REDACTED in whole
    for size, offset, chunks in splits(text):
        out = streamed(redactor_, chunks)
        assert secret not in out, (size, offset)
        # Stronger: the stream redacts exactly as the whole text is redacted, so not even a
        # fragment of the secret is left, and the live view matches the final block.
        assert out == whole, (size, offset)


@pytest.mark.parametrize("secret", TOKEN_PATTERNS.values(), ids=TOKEN_PATTERNS.keys())
def test_token_patterns_split_across_deltas_are_redacted(secret: str) -> None:
    for text in contexts(secret):
        check_stream(Redactor(), text, secret)


@pytest.mark.parametrize("name", ENV_SECRETS)
def test_env_secrets_split_across_deltas_are_redacted(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    secret = ENV_SECRETS[name]
    monkeypatch.setenv(name, secret)
    for text in contexts(secret):
        check_stream(redactor(), text, secret)


def test_a_longer_secret_that_starts_with_a_shorter_one_wins_when_streamed() -> None:
    both = Redactor(frozenset({"abcdefgh", "abcdefgh-ijklmnop"}))
    for text in ("x abcdefgh-ijklmnop y", "x abcdefgh-ijk y", "abcdefgh"):
        whole = both.text(text)
        for _, _, chunks in splits(text):
            assert streamed(both, chunks) == whole
    assert both.text("x abcdefgh-ijk y") == f"x {REDACTED}-ijk y"


def test_a_long_env_secret_is_caught_when_streamed() -> None:
    """A long value (a key file in an environment variable) must not break the pattern that
    recognises its beginnings."""
    secret = "".join(chr(ord("a") + (i * 7) % 26) for i in range(3000))
    long_one = Redactor(frozenset({secret}))
    text = f"here: {secret} end"
    for size in CHUNK_SIZES:
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert streamed(long_one, chunks) == f"here: {REDACTED} end"


PLAIN = (
    "Hello! I looked at your notebook; the plot works, but the y axis is upside down. "
    "To fix it, call ax.invert_yaxis() after plotting - then run the cell again: done.\n"
)
SECRET_STARTS = (
    "sk-",
    "ghp_",
    "github_pat_",
    "xoxb-",
    "AKIA",
    "eyJ",
    "-----BEGIN ",
    "bearer ",
    "://",
)
"""How secrets begin; the only tails ordinary text may hold back are their beginnings."""


def test_text_with_no_secret_near_is_released_at_once() -> None:
    """Each piece comes out whole, but for a tail that could begin a secret ("b" of
    "bearer", "-" of a PEM block, ":" of "://user:password@"), which the next piece
    releases."""
    plain = Redactor(frozenset({"q7-not-a-known-shape-9f3e"}))
    for size, offset, chunks in splits(PLAIN):
        stream = StreamRedactor(plain)
        held = ""
        for chunk in chunks:
            released = stream.feed("text", chunk)
            fed, held = held + chunk, stream.held("text")
            assert released + held == fed, (size, offset, chunk)
            assert not held or any(
                start.lower().startswith(held.lower()) and len(held) < len(start)
                for start in SECRET_STARTS
            ), (size, offset, held)
        assert stream.flush("text") == held
    whole_chunks = StreamRedactor(plain)
    assert whole_chunks.feed("text", PLAIN) == PLAIN


def test_only_a_possible_secret_is_held_and_only_while_it_could_be_one() -> None:
    stream = StreamRedactor(Redactor(frozenset({"q7-not-a-known-shape-9f3e"})))
    assert stream.feed("t", "The key is sk-") == "The key is "
    assert stream.held("t") == "sk-"
    assert stream.feed("t", "ant-api03") == ""  # still a key in the making
    assert stream.feed("t", " is too short.") == "sk-ant-api03 is too short."
    assert stream.feed("t", "Use ghp") == "Use "
    assert stream.feed("t", "! or ask-") == "ghp! or ask"  # "ask-" is a word, not "sk-"
    assert stream.held("t") == "-"  # but "-" may begin "-----BEGIN RSA PRIVATE KEY-----"
    assert stream.feed("t", "me. ") == "-me. "
    assert stream.feed("t", "The value q7-not") == "The value "
    assert stream.feed("t", "-a-known") == ""
    assert stream.feed("t", "-shape-9f3e, ok") == f"{REDACTED}, ok"
    assert stream.feed("t", " Bearer ") == " "
    assert stream.feed("t", "abc123def456") == ""
    assert stream.feed("t", "\n") == f"Bearer {REDACTED}\n"
    assert stream.feed("t", "an AKIA") == "an "
    assert stream.flush("t") == "AKIA"  # the block ended: no key after all


def test_streams_are_independent_per_key() -> None:
    """Text, thinking and each tool's output are separate streams: a piece of one never
    completes a secret begun in another."""
    stream = StreamRedactor(Redactor())
    assert stream.feed(("text", 1), "key sk-ant-") == "key "
    assert stream.feed(("thinking", 1), "api03-abcdefghijkl ") == "api03-abcdefghijkl "
    assert stream.feed(("tool", "t1"), "AKIAIOSFODNN7EXA") == ""
    assert set(stream.open_keys) == {("text", 1), ("thinking", 1), ("tool", "t1")}
    assert stream.feed(("text", 1), "api03-Zx8fK2mQ9v and") == f"{REDACTED} and"
    assert stream.flush_all() == {("tool", "t1"): "AKIAIOSFODNN7EXA"}
    assert stream.open_keys == ()
    assert stream.feed(("text", 1), "sk-ant-api03-abcdefgh") == ""  # a new block, fresh
    assert stream.flush(("text", 1)) == REDACTED


def test_streaming_matches_whole_redaction_on_random_mixtures() -> None:
    """Pieces of every shape, near misses and env secrets thrown together at random: whatever
    the split, the stream's output is the redaction of the whole text."""
    env = Redactor(frozenset({"q7-not-a-known-shape-9f3e", "abcdefgh", "abcdefgh-ijklmnop"}))
    pieces = [
        *TOKEN_PATTERNS.values(),
        *(JWT, SLACK, "Bearer abc123def456", "https://me:hunter2pass@host/x"),
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpA\n-----END RSA PRIVATE KEY-----",
        *("sk-", "ant-", "ghp_", "github_pat_", "AKIA", "eyJ", "-----BEGIN ", "bearer "),
        *("://", "me:", "q7-not-", "abcdefgh", "-ijk", "0123456789abcdefghij", "@"),
        *(" ", "\n", ".", "-", "_", "=", ":", "a", "s", "e", "B", "x", "é", "\udcff"),
    ]
    rng = random.Random(15)
    for _ in range(150):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
        whole = env.text(text)
        for size, offset, chunks in splits(text):
            assert streamed(env, chunks) == whole, (text, size, offset)


def streamed_in_runs(redactor_: Redactor, chunks: Sequence[str], run: int) -> str:
    """`chunks` fed `run` at a time with `StreamRedactor.feed_run`: one released text per
    chunk, whatever the run holds."""
    stream = StreamRedactor(redactor_)
    out: list[str] = []
    for start in range(0, len(chunks), run):
        pieces = list(chunks[start : start + run])
        released = stream.feed_run("text", pieces)
        assert len(released) == len(pieces)
        out += released
    return "".join(out) + stream.flush("text")


def test_runs_of_pieces_redact_as_the_whole_text() -> None:
    """A run of deltas redacted at once (the session's path) releases, joined, exactly the
    redaction of the whole text, for every split and run length, secrets split across runs
    included; ordinary text comes back as the very pieces fed."""
    env = Redactor(frozenset({"q7-not-a-known-shape-9f3e", "abcdefgh"}))
    texts = [text for secret in TOKEN_PATTERNS.values() for text in contexts(secret)]
    pieces = [*TOKEN_PATTERNS.values(), "sk-", "ghp_", "abcdefgh", "q7-not-", " ", "s", "\n"]
    rng = random.Random(16)
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(60)]
    for text in texts:
        whole = env.text(text)
        for size, offset, chunks in splits(text):
            for run in (1, 2, 5, 64):
                assert streamed_in_runs(env, chunks, run) == whole, (text, size, offset, run)
    plain = ["The quick ", "brown fox ", "jumps."]
    released = StreamRedactor(env).feed_run("text", plain)
    assert all(a is b for a, b in zip(released, plain, strict=True))
