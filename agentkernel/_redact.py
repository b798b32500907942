"""Secret redaction: API keys and tokens become ``[REDACTED]`` before anything is stored or shown.

Two kinds of secret are caught:

- known shapes: Anthropic and OpenAI keys (``sk-ant-...``, ``sk-...``), GitHub tokens
  (``ghp_...``, ``github_pat_...``), Slack tokens (``xoxb-...``), AWS access key ids
  (``AKIA...``), ``Bearer <token>``, JWTs, PEM private key blocks, and the password in
  ``scheme://user:password@host`` URLs;
- the *values* of environment variables whose names contain KEY, TOKEN, SECRET or PASSWORD
  (values of 8+ characters), read from `os.environ` at call time, wherever they appear.

Every stored event passes through here, so it is built for speed: the patterns are compiled at
import, each runs only when a literal it needs occurs in the text (most streamed deltas contain
none and cost a few substring tests), and env secrets are plain substring replacements. Reading
the environment is the slow part (tens of microseconds), so `redactor` snapshots it into a
`Redactor` (cached per distinct set of secrets) that a caller redacting many values at once, such
as the store for each batch, reuses. `redact` and `redact_obj` are the one-shot forms.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "Redactor", "redact", "redact_obj", "redactor"]

REDACTED = "[REDACTED]"

_SECRET_NAME_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_MIN_SECRET_LEN = 8
"""Shorter environment values are not treated as secrets, and shorter strings are skipped:
no known shape is shorter either."""

_TOKEN_CHARS = r"[A-Za-z0-9._~+/-]"


def _prefixed(prefix: str, rest: str) -> str:
    """`prefix` then `rest`, where `prefix` does not continue a word ("task-..." is no key).

    The literal comes first, before the look-behind, so the regex engine can scan for it
    quickly: a long tool output without it costs a fast search, not a match attempt per
    character."""
    literal = re.escape(prefix)
    return rf"{literal}(?<![A-Za-z0-9_-]{literal}){rest}"


_SHAPES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    # (literals that must occur for the pattern to apply, pattern, replacement)
    (("sk-",), _prefixed("sk-", r"(?:ant-[A-Za-z0-9_-]{8,}|[A-Za-z0-9_-]{20,})"), REDACTED),
    (("gh",), r"gh[pousr]_(?<![A-Za-z0-9_-]gh._)[A-Za-z0-9]{20,}", REDACTED),
    (("github_pat_",), _prefixed("github_pat_", r"[A-Za-z0-9_]{20,}"), REDACTED),
    (("xox",), _prefixed("xox", r"[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),
    (("AKIA",), _prefixed("AKIA", r"[0-9A-Z]{16}(?![0-9A-Z])"), REDACTED),
    (("ASIA",), _prefixed("ASIA", r"[0-9A-Z]{16}(?![0-9A-Z])"), REDACTED),
    (("eyJ",), r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", REDACTED),
    (
        ("-----BEGIN ",),
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
        REDACTED,
    ),
    # Keep "Bearer " and redact the token. A token needs a digit or 20+ characters, so prose
    # such as "Bearer authentication" is left alone.
    (
        ("earer", "EARER"),
        r"(?P<keep>(?i:\bbearer)\s+)"
        rf"(?:(?={_TOKEN_CHARS}*[0-9]){_TOKEN_CHARS}{{8,}}|{_TOKEN_CHARS}{{20,}})=*",
        rf"\g<keep>{REDACTED}",
    ),
    # Keep "scheme://user:" and "@host", redact the password.
    (("://",), r"(?P<keep>://[^/\s:@\"']+:)[^/\s@\"']{3,}(?=@)", rf"\g<keep>{REDACTED}"),
)
_COMPILED_SHAPES = tuple(
    (trigger, functools.partial(re.compile(pattern, re.DOTALL).sub, replacement))
    for triggers, pattern, replacement in _SHAPES
    for trigger in triggers
)
"""One (literal, substitution) pair per trigger literal: a flat loop of ``in`` tests is the
cheapest check for the common case of a string that contains none. A pattern with two triggers
may run twice; that is harmless, as its output no longer matches."""


class Redactor:
    """Replaces secrets in strings and in nested dicts/lists, for one fixed set of env secrets."""

    __slots__ = ("_secrets",)

    def __init__(self, env_secrets: frozenset[str] = frozenset()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = tuple(sorted(env_secrets, key=len, reverse=True))

    def text(self, text: str) -> str:
        """`text` with every secret replaced by ``[REDACTED]``."""
        if len(text) < _MIN_SECRET_LEN:
            return text
        # Plain substring tests first: most strings (streamed deltas) contain no trigger at
        # all and never reach a regex.
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for trigger, sub in _COMPILED_SHAPES:
            if trigger in text:
                text = sub(text)
        return text

    def obj(self, obj: Any) -> Any:
        """A copy of `obj` with every string inside redacted (dict keys are kept as they are)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.obj(v) for v in obj]
        return obj


def env_secrets(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The values of the environment variables that look like secrets, right now (from
    `os.environ`, or from `env`: e.g. the extra variables a session passes to its agent)."""
    env = os.environ if env is None else env
    return frozenset(
        value
        for name in env
        if _is_secret_name(name) and len(value := env[name]) >= _MIN_SECRET_LEN
    )


@functools.lru_cache(maxsize=512)
def _is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in _SECRET_NAME_WORDS)


@functools.lru_cache(maxsize=8)
def _redactor_for(secrets: frozenset[str]) -> Redactor:
    return Redactor(secrets)


def redactor(extra_env: Mapping[str, str] | None = None) -> Redactor:
    """A `Redactor` for the environment as it is now, plus the secrets in `extra_env`
    (compiled once per set of secrets)."""
    secrets = env_secrets()
    if extra_env:
        secrets |= env_secrets(extra_env)
    return _redactor_for(secrets)


def redact(text: str) -> str:
    """`text` with API keys, tokens and secret environment values replaced by ``[REDACTED]``."""
    return redactor().text(text)


def redact_obj(obj: Any) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings, nested) with every string redacted."""
    return redactor().obj(obj)
