"""Secret redaction: API keys and tokens become ``[REDACTED]`` before anything is stored or shown.

Two kinds of secret are caught:

- known shapes: Anthropic and OpenAI keys (``sk-ant-...``, ``sk-...``), GitHub tokens
  (``ghp_...``, ``github_pat_...``), Slack tokens (``xoxb-...``), AWS access key ids
  (``AKIA...``), ``Bearer <token>``, JWTs, PEM private key blocks, and the password in
  ``scheme://user:password@host`` URLs;
- the *values* of environment variables whose names contain KEY, TOKEN, SECRET or PASSWORD
  (values of 8 to 16,384 characters), read from `os.environ` at call time, wherever they
  appear.

A whole value (a text block, a tool's input or output) is redacted by `Redactor.text` /
`Redactor.obj`. Streamed text needs more: a secret split across two deltas is in neither, so
redacting each delta alone lets it through. `StreamRedactor` redacts the *stream*: it releases
what is decided and holds back only the tail that could still become a secret (a prefix of a
secret value, or a token that is still open), releasing it as soon as the next piece shows it
is not one. Whatever the pieces, their released output joined is exactly `Redactor.text` of the
whole text, so the live view and the stored block always agree (and the tests check that for
every split).

How it is decided: every secret is one alternative of a single regex, which `Redactor.text`
applies in one pass (leftmost match first, longest env secret first). Each secret also has a
*viable* pattern, which matches, up to the end of the text, the texts on which the secret's own
match attempt runs out of text before deciding: ``sk-ant-api03-abc`` at the end of a delta (the
key may go on), ``ghp`` (it may become ``ghp_...``), the first characters of an env secret.
The stream regex puts these viable patterns first; its first hit in a delta is either a secret
to replace (decided: no alternative there needs more text) or the place where holding back
starts. Every alternative begins with a plain character, so the regex engine skips straight to
the few places where a secret can begin: a delta of ordinary text costs one regex search.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "Redactor",
    "StreamRedactor",
    "env_secrets",
    "redact",
    "redact_obj",
    "redactor",
]

REDACTED = "[REDACTED]"

_SECRET_NAME_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_MIN_SECRET_LEN = 8
"""Shorter environment values are not treated as secrets, and shorter strings are skipped:
no known shape is shorter either."""
_MAX_SECRET_LEN = 16384
"""Longer environment values (documents, certificate bundles) are not looked for: the pattern
for a value's beginnings grows with its length."""

_W = "[A-Za-z0-9_-]"
"""Characters of a key or token."""
_T = r"[A-Za-z0-9._~+/-]"
"""Characters of a bearer token."""


def _guard(first: str) -> str:
    """Placed right after a shape's first character: that character must not continue a word
    ("task-..." is no key)."""
    return f"(?<!{_W}{re.escape(first)})"


def _prefixes(literal: str, then: str = "") -> str:
    """A regex matching every prefix of `literal` (the empty one too), and `literal` followed
    by what `then` matches (which must itself allow the empty string). Nested one group per
    character, in blocks, so a long literal does not nest deeper than Python's regex
    compiler can go."""
    if len(literal) > _BLOCK:
        head = literal[:_BLOCK]
        return f"(?:{re.escape(head)}{_prefixes(literal[_BLOCK:], then)}|{_prefixes(head)})"
    tail = then
    for char in reversed(literal):
        tail = f"(?:{re.escape(char)}{tail})?"
    return tail


_BLOCK = 128


_JWT_TAIL = _prefixes("eyJ", rf"{_W}*(?:\.{_W}*)?")
"""What may follow the first dot of a JWT: its second and third parts, or their beginning."""
_PEM_END = "-----END [A-Z ]*PRIVATE KEY-----"
_BEARER = rf"(?:(?={_T}*[0-9]){_T}{{8,}}|{_T}{{20,}})=*"
"""A bearer token needs a digit or 20+ characters, so prose such as "Bearer authentication"
is left alone."""
_BEARER_OPEN = _prefixes("earer", rf"(?:\s+{_T}*=*)?")

_SHAPES: tuple[tuple[str, str, str], ...] = (
    # (first character, rest of the secret, rest of its viable pattern).
    #
    # Each alternative starts with a plain character, so the regex engine skips quickly to
    # the few places where a secret can begin. A group "keep" in the rest is kept, with the
    # first character: "Bearer " and "scheme://user:" stay, the token and password go.
    #
    # The viable pattern matches, to the end of the text, every text on which the secret's
    # pattern runs out of characters before it is decided. It may match more (that only holds
    # text back a little longer), never less (that would let a secret through).
    (
        "s",
        rf"{_guard('s')}k-(?:ant-{_W}{{8,}}|{_W}{{20,}})",
        _guard("s") + _prefixes("k-", f"{_W}*"),
    ),
    (
        "g",
        rf"{_guard('g')}h[pousr]_[A-Za-z0-9]{{20,}}",
        _guard("g") + "(?:h(?:[pousr](?:_[A-Za-z0-9]*)?)?)?",
    ),
    (
        "g",
        rf"{_guard('g')}ithub_pat_[A-Za-z0-9_]{{20,}}",
        _guard("g") + _prefixes("ithub_pat_", "[A-Za-z0-9_]*"),
    ),
    (
        "x",
        rf"{_guard('x')}ox[abposr]-[A-Za-z0-9-]{{10,}}",
        _guard("x") + _prefixes("ox", "(?:[abposr](?:-[A-Za-z0-9-]*)?)?"),
    ),
    (
        "A",
        rf"{_guard('A')}[KS]IA[0-9A-Z]{{16}}(?![0-9A-Z])",
        _guard("A") + "(?:[KS](?:I(?:A[0-9A-Z]{0,16})?)?)?",
    ),
    (
        "e",
        rf"{_guard('e')}yJ{_W}{{4,}}\.eyJ{_W}{{4,}}\.{_W}*",
        _guard("e") + _prefixes("yJ", rf"{_W}*(?:\.{_JWT_TAIL})?"),
    ),
    (
        "-",
        rf"----BEGIN [A-Z ]*PRIVATE KEY-----.*?{_PEM_END}",
        _prefixes("----BEGIN ", rf"[A-Z ]*(?:PRIVATE KEY(?:-{{0,4}}|-----(?:(?!{_PEM_END}).)*))?"),
    ),
    *(
        (
            first,
            rf"(?P<keep>(?<!\w{first})(?i:earer)\s+){_BEARER}",
            rf"(?<!\w{first})(?i:{_BEARER_OPEN})",
        )
        for first in "Bb"
    ),
    (
        ":",
        r"(?P<keep>//[^/\s:@\"']+:)[^/\s@\"']{3,}(?=@)",
        r"(?:/(?:/(?:[^/\s:@\"']+(?::[^/\s@\"']*)?)?)?)?",
    ),
)


@functools.lru_cache(maxsize=8)
def _patterns(secrets: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str], dict[str, str]]:
    """(whole, stream, keep groups) for a set of env secrets (longest first).

    ``whole`` has one alternative per secret, each a plain first character then a named
    group: group ``eN`` is env secret N, ``sN`` shape N (``kN`` the part of it kept).
    ``stream`` is ``whole`` with the viable patterns in front, anchored at the end of the
    text and marked by an empty group ``o...``; an env secret's viable pattern is its proper
    prefixes. That every alternative of the top-level branch starts with a plain character
    is what lets the engine skip to the places where a secret can begin."""
    alternatives = []
    viables = []
    for number, secret in enumerate(secrets):
        first = re.escape(secret[0])
        alternatives.append(f"{first}(?P<e{number}>{re.escape(secret[1:])})")
        if len(secret) > 1:
            viables.append(f"{first}{_prefixes(secret[1:-1])}(?P<oe{number}>)\\Z")
    keeps: dict[str, str] = {}
    for number, (first, rest, viable) in enumerate(_SHAPES):
        if "(?P<keep>" in rest:
            keeps[f"s{number}"] = f"k{number}"
            rest = rest.replace("(?P<keep>", f"(?P<k{number}>")
        alternatives.append(f"{re.escape(first)}(?P<s{number}>{rest})")
        viables.append(f"{re.escape(first)}{viable}(?P<os{number}>)\\Z")
    whole = "|".join(alternatives)
    return (
        re.compile(whole, re.DOTALL),
        re.compile("|".join([*viables, whole]), re.DOTALL),
        keeps,
    )


class Redactor:
    """Replaces secrets in strings and in nested dicts/lists, for one fixed set of env secrets."""

    __slots__ = ("_keeps", "_stream", "_whole")

    def __init__(self, env_secrets: frozenset[str] = frozenset()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        secrets = tuple(sorted(filter(None, env_secrets), key=lambda s: (-len(s), s)))
        self._whole, self._stream, self._keeps = _patterns(secrets)

    def text(self, text: str) -> str:
        """`text` with every secret replaced by ``[REDACTED]``."""
        if len(text) < _MIN_SECRET_LEN:
            return text
        return self._whole.sub(self._replacement, text)

    def obj(self, obj: Any) -> Any:
        """A copy of `obj` with every string inside redacted (dict keys are kept as they are)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.obj(v) for v in obj]
        return obj

    # -- for StreamRedactor --------------------------------------------------------------

    def _replacement(self, match: re.Match[str]) -> str:
        keep = self._keeps.get(match.lastgroup or "")
        if keep is None:
            return REDACTED
        return match.string[match.start() : match.end(keep)] + REDACTED

    def _decided(self, text: str, start: int, match: re.Match[str] | None) -> tuple[str, int]:
        """Redact ``text[start:]`` as far as it is decided whatever text follows; return the
        redacted part and where the undecided rest begins. (``text[:start]`` is context for
        the look-behinds, already released; `match` is the stream regex's first hit from
        `start`.)"""
        parts: list[str] = []
        search = self._stream.search
        at = start
        while True:
            if match is None:
                cut = len(text)
                break
            if match.lastgroup[0] == "o":  # type: ignore[index]  # may still become a secret
                cut = match.start()
                break
            parts += (text[at : match.start()], self._replacement(match))
            at = match.end()
            match = search(text, at)
        if not parts:
            return text[start:cut], cut
        parts.append(text[at:cut])
        return "".join(parts), cut

    def _rest(self, text: str, start: int) -> str:
        """``text[start:]`` redacted, knowing nothing follows it."""
        parts: list[str] = []
        at = start
        for match in self._whole.finditer(text, start):
            parts += (text[at : match.start()], self._replacement(match))
            at = match.end()
        parts.append(text[at:])
        return "".join(parts)


_NOTHING = ("", "")


class StreamRedactor:
    """Redacts text that arrives in pieces, one stream per key (a text block, a thinking
    block, the output of one tool call): `feed` each piece, `flush` when the block ends.

    What `feed` returns can be shown and stored at once: it never holds a secret nor a piece
    of one. It holds back only a tail that could still become a secret and releases it with
    the first piece that shows it is not one, so ordinary text passes straight through. All
    the pieces a key released, joined, equal `Redactor.text` of the whole text (for one
    redactor throughout).
    Not thread-safe: one owner (the session's loop) feeds it.
    """

    __slots__ = ("_streams", "redactor")

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor if redactor is not None else Redactor()
        """The secrets to redact; may be replaced between blocks (e.g. per turn)."""
        self._streams: dict[Hashable, tuple[str, str]] = {}
        """key -> (the last character released, for the look-behinds; the text held back)."""

    def feed(self, key: Hashable, chunk: str) -> str:
        """Take the next piece of stream `key`; return the redacted text that is now decided
        (often all of it, sometimes ""), holding back a possible secret's beginning."""
        context, held = self._streams.get(key, _NOTHING)
        text = context + held + chunk
        start = len(context)
        match = self.redactor._stream.search(text, start)
        if match is None:  # nothing to replace, nothing to hold back: most pieces
            self._streams[key] = (text[-1:], "")
            return text[start:] if held else chunk
        released, cut = self.redactor._decided(text, start, match)
        self._streams[key] = (text[cut - 1 : cut] if cut else "", text[cut:])
        return released

    def feed_run(self, key: Hashable, pieces: list[str]) -> list[str]:
        """`feed` each of `pieces` in turn, returning what each released, with one regex
        search for the lot unless it holds a secret: text that holds nothing to redact is
        released as it came (the same string objects; `pieces` itself when all of it is),
        up to the possible beginning of a secret at its end, which is held back as `feed`
        would."""
        if not pieces:
            return []
        context, held = self._streams.get(key, _NOTHING)
        text = context + held + "".join(pieces)
        start = len(context)
        match = self.redactor._stream.search(text, start)
        if match is None and not held:  # most runs: all of it released as it came
            self._streams[key] = (text[-1:], "")
            return pieces
        if match is None:
            cut = len(text)
        elif match.lastgroup[0] == "o":  # type: ignore[index]  # may still become a secret
            cut = match.start()
        else:  # a secret to replace: piece by piece
            return [self.feed(key, piece) for piece in pieces]
        self._streams[key] = (text[cut - 1 : cut] if cut else "", text[cut:])
        released: list[str] = []
        at = start  # where the text not released yet begins
        end = start + len(held)
        for piece in pieces:
            end += len(piece)
            if end <= cut:
                released.append(piece if at == end - len(piece) else text[at:end])
                at = end
            elif at < cut:
                released.append(text[at:cut])
                at = cut
            else:
                released.append("")
        return released

    def flush(self, key: Hashable) -> str:
        """End stream `key` (its block is complete): return the rest, redacted. The key may
        then start a new stream."""
        context, held = self._streams.pop(key, ("", ""))
        return self.redactor._rest(context + held, len(context)) if held else ""

    def flush_all(self) -> dict[Hashable, str]:
        """End every open stream (the turn is over); returns key -> rest, for the keys that
        still held text, in the order their streams began."""
        rests = {key: self.flush(key) for key in list(self._streams)}
        return {key: rest for key, rest in rests.items() if rest}

    def held(self, key: Hashable) -> str:
        """The unredacted text stream `key` holds back now (for tests and diagnostics)."""
        return self._streams.get(key, ("", ""))[1]

    @property
    def open_keys(self) -> tuple[Hashable, ...]:
        """Keys fed since their last flush."""
        return tuple(self._streams)


def env_secrets(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The values of the environment variables that look like secrets, right now (from
    `os.environ`, or from `env`: e.g. the extra variables a session passes to its agent)."""
    env = os.environ if env is None else env
    return frozenset(
        value
        for name in env
        if _is_secret_name(name) and _MIN_SECRET_LEN <= len(value := env[name]) <= _MAX_SECRET_LEN
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
