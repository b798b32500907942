"""Secret redaction: known key shapes, secret environment values, and what must stay intact."""

from __future__ import annotations

import pytest

from agentkernel._redact import REDACTED, Redactor, redact, redact_obj, redactor

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
