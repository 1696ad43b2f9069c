"""Redaction: the one pass that keeps secrets out of everything a run writes or prints.

Three kinds of rule, all in this module:

- KEY rules: a dict key (or a `name: value` / `name=value` pair inside text) whose name looks
  secret has its value replaced. Names are compared normalised: camelCase split, lower case,
  every run of other characters as `_` (`Proxy-Authorization` -> `proxy_authorization`,
  `clientSecret` -> `client_secret`).
- VALUE rules: text that looks like a credential wherever it appears (Bearer tokens, JWTs,
  API keys of known formats, credentials in URLs, private key blocks).
- EXACT values: the values of the environment variables whose names are secret by the key
  rules (`ANTHROPIC_API_KEY`, `GITHUB_TOKEN`, `DB_PASSWORD`, ...), as this process sees them.

To add a rule: a key name goes into `_KEY_RULE`, a value format into `_VALUE_RULES` (a
precompiled regex and what replaces a match); add its hint (a lower-case substring every
match contains) to `_HINTS` so the cheap pre-check lets it through, and a case to
tests/unit/test_redact.py.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

REDACTED = "[redacted]"

# A key is secret when its normalised name matches. `token` only at the end, so that
# `input_tokens`, `max_tokens` and `token_budget` (counts, not credentials) stay readable;
# `auth` only as a word or `authoriz...`/`authent...`, so that `author` stays readable. Not
# `pwd`: PWD is the working directory.
_KEY_RULE = re.compile(
    r"""
    token$
  | secret
  | passw | passphrase
  | (?:^|_)auth(?:_|$) | authoriz | authent
  | cookie
  | (?:^|_)api_?keys?(?:_|$)
  | (?:^|_)access_?key$
  | credential
  | private_?key
  | (?:^|_)(?:bearer|jwt|session_?key|signing_?key)(?:_|$)
    """,
    re.VERBOSE,
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)
def secret_key(name: str) -> bool:
    """True if a field called `name` holds a secret (its value is redacted wherever it is).
    A name with a `:` is an id (a plan task `auth:login`, a dict keyed by task ids), not a
    field's, a header's or a variable's name: never secret."""
    if ":" in name:
        return False
    norm = _NON_WORD.sub("_", _CAMEL.sub(r"\1_\2", name).lower()).strip("_")
    return bool(_KEY_RULE.search(norm))


_NO_WORD_BEFORE = r"(?<![A-Za-z0-9_])"
# (pattern, replacement): a match is replaced by the replacement (a string or a function).
_VALUE_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # PEM private keys, the whole block (or to the end of the text when it is cut off).
    (
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
        REDACTED,
    ),
    # Credentials in URLs: scheme://user:password@host keeps the scheme and the host.
    (re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@\"'<>]*:[^\s/?#@\"'<>]*@"), rf"\1{REDACTED}@"),
    # HTTP authorization schemes followed by their credential (one that looks like a token:
    # not a plain word, so "Basic arithmetic" and "bearer instruments" stay prose).
    (re.compile(r"\b((?i:bearer)|Basic|Digest)\s+([A-Za-z0-9._~+/=-]{8,})"), lambda m: _scheme(m)),
    # JWTs (header.payload.signature, base64url; the header is JSON, so it starts `eyJ`).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Anthropic (sk-ant-...), OpenAI (sk-..., sk-proj-...) and similar `sk-` keys.
    (re.compile(_NO_WORD_BEFORE + r"sk-[A-Za-z0-9_-]{16,}"), REDACTED),
    # Stripe-style live/test keys.
    (re.compile(_NO_WORD_BEFORE + r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"), REDACTED),
    # GitHub tokens: classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained (github_pat_).
    (re.compile(_NO_WORD_BEFORE + r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), REDACTED),
    # AWS access key ids (the secret access key has no format: it is caught by its name).
    (
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}(?![A-Z0-9])"),
        REDACTED,
    ),
    # Slack tokens and Google API keys.
    (re.compile(_NO_WORD_BEFORE + r"xox[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),
    (re.compile(_NO_WORD_BEFORE + r"AIza[0-9A-Za-z_-]{35}"), REDACTED),
]

# `name: value`, `name=value`, `"name": "value"` inside text (headers in an error message,
# a query string, a dict's repr in a traceback): the value goes when the name is secret. A
# quoted value goes whole, to its closing quote (a passphrase has spaces; a bytes repr starts
# `b'`). A bare `name:value` (no space, no quote) is not a pair: it is an id (`auth:login`,
# `token:refresh` are valid plan task ids; `node:auth` is an address).
_PAIR = re.compile(
    r"""(?<![A-Za-z0-9_.-])
    ([A-Za-z][A-Za-z0-9_.-]*)                       # the name
    ((?:["'][ \t]*[:=]|[ \t]*=|[ \t]*:(?=[ \t"']))[ \t]*)  # separator, maybe after a quote
    (b?"(?:[^"\\\n]|\\.)*"|b?'(?:[^'\\\n]|\\.)*'   # the value: quoted,
    |["']?(?:(?i:bearer|basic|digest|token)[ \t]+)?(?:\[redacted\]|[^\s"',;&)}\]]+))  # or not
    """,
    re.VERBOSE,
)
# A header pair's repr, `('x-api-key', 'value')` or `(b'cookie', b'value')`.
_TUPLE = re.compile(
    r"""(\([ \t]*b?["']([A-Za-z][A-Za-z0-9_.-]*)["'],[ \t]*)(b?"(?:[^"\\\n]|\\.)*"|b?'(?:[^'\\\n]|\\.)*')"""
)
_QUOTED = re.compile(r"(b?)([\"'])(.*)\2", re.S)


def _masked(value: str) -> str:
    """`value` (a quoted or a bare value) with what it holds replaced, its quotes kept."""
    quoted = _QUOTED.fullmatch(value)
    if quoted is not None:
        prefix, inner, close = quoted.group(1) + quoted.group(2), quoted.group(3), quoted.group(2)
    else:  # bare, or an opening quote never closed on this line
        prefix = value[0] if value[0] in "\"'" else ""
        inner, close = value[len(prefix) :], ""
    return value if inner.endswith(REDACTED) else f"{prefix}{REDACTED}{close}"


def _pairs(text: str) -> str:
    """`text` with the value of every secret-named pair masked. A pair whose name is not
    secret gives back all but its name to the scan: its value may be the next pair
    (`login failed: password=...`)."""
    out, pos = [], 0
    while (m := _PAIR.search(text, pos)) is not None:
        name, sep, value = m.groups()
        if secret_key(name):
            out.append(f"{text[pos : m.start()]}{name}{sep}{_masked(value)}")
            pos = m.end()
        else:
            out.append(text[pos : m.end(1)])
            pos = m.end(1)
    out.append(text[pos:])
    return "".join(out)


def _tuple(m: re.Match[str]) -> str:
    return m.group(1) + _masked(m.group(3)) if secret_key(m.group(2)) else m.group(0)


def _scheme(m: re.Match[str]) -> str:
    """`Bearer <credential>` and the like: the credential goes when it looks like one (a
    digit, a symbol, or a capital after its first letter), not when it is a plain word."""
    cred = m.group(2)
    if cred.isalpha() and (cred[1:].islower() or cred.isupper()):
        return m.group(0)
    return f"{m.group(1)} {REDACTED}"


# Every match of a rule above contains one of these (in lower case): text without any of
# them is returned untouched after one scan (a regex built as a trie: one branch per letter).
HINTS = _HINTS = (
    # value rules
    "private key", "://", "bearer", "basic", "digest", "eyj", "sk-", "_live_", "_test_",
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "akia", "asia", "abia", "acca",
    "agpa", "aida", "aipa", "anpa", "anva", "apka", "aroa", "asca", "xox", "aiza",
    # key rules, as names are written in text (api_key, apiKey, api-key, ...)
    "token", "secret", "passw", "passphrase", "auth", "cookie", "credential", "jwt",
    "apikey", "api_key", "api-key", "accesskey", "access_key", "access-key", "privatekey",
    "private_key", "private-key", "sessionkey", "session_key", "session-key", "signingkey",
    "signing_key", "signing-key",
)  # fmt: skip


def _trie(words: tuple[str, ...]) -> str:
    """An alternation of `words` as a trie, which Python's regex engine searches much faster
    than a flat `a|b|c` of many words."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        if "" in node:  # a word ends here: enough for a hint
            return ""
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return build(root)


_HINT = re.compile(_trie(_HINTS))


def _text(value: str, exact: re.Pattern[str] | None) -> str:
    if exact is not None:
        value = exact.sub(REDACTED, value)
    if not _HINT.search(value.lower()):
        return value
    for pattern, replacement in _VALUE_RULES:
        value = pattern.sub(replacement, value)
    if ":" in value or "=" in value:
        value = _pairs(value)
    if "(" in value:
        value = _TUPLE.sub(_tuple, value)
    return value


@functools.lru_cache(maxsize=64)
def _exact(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for the exact secret values, longest first (so a value inside another goes
    with the longer one)."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, values))) if values else None


# Values too plain to be a secret, which would mask ordinary text everywhere: shorter than 8
# characters ("1", "true"), one lower-case word or number (AUTH_MODE=disabled), or an absolute
# path (SSH_AUTH_SOCK, GOOGLE_APPLICATION_CREDENTIALS: where a secret is, not the secret).
_MIN_SECRET_LEN = 8
_PLAIN = re.compile(r"[a-z]+(?:[_-][a-z]+)*|[0-9]+|/\S*")


# A variable's name is secret by the key rule, or when one of its words says so wherever it is
# (AGENTRT_A2A_TOKEN_<NAME>, SECRET_<X>_FILE): variable names are words joined by `_`.
_ENV_WORD = re.compile(r"(?:^|_)(?:token|secret|secrets|password|passwd|passphrase|credentials?)(?:_|$)")


def _secret_variable(name: str) -> bool:
    return secret_key(name) or bool(_ENV_WORD.search(name.lower()))


def known_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of this process's environment variables whose names are secret (the key
    rules, or a secret word anywhere in the name), at least 8 characters, and not a plain
    lower-case word, a number or a path."""
    env = os.environ if environ is None else environ
    return [
        v
        for k, v in env.items()
        if len(v) >= _MIN_SECRET_LEN and not _PLAIN.fullmatch(v) and _secret_variable(k)
    ]


def redact(value: Any, secrets: list[str] | tuple[str, ...] | None = None) -> Any:
    """A copy of `value` with secrets replaced by `[redacted]`: values of secret keys, text
    that looks like a credential, and the exact `secrets` (default: the values of this
    process's secret environment variables). Dicts, lists and tuples are walked; a secret used
    as a dict key is redacted too; bytes are redacted as UTF-8 text; other values are kept. Under
    a secret key every string is replaced and the shape kept (numbers too: they are not
    credentials, and typed records must stay valid)."""
    exact = _exact(tuple(known_secrets() if secrets is None else secrets))
    return _walk(value, exact)


def _walk(value: Any, exact: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return _short(value, exact) if len(value) <= _SHORT else _text(value, exact)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, str):
                out[_short(k, exact)] = _mask(v, exact) if secret_key(k) else _walk(v, exact)
            else:
                out[k] = _walk(v, exact)
        return out
    if isinstance(value, list | tuple):
        # A header as a (name, value) pair: the value goes when the name is secret. A pair is a
        # 2-tuple, or a 2-list in a list of them (headers); a lone 2-list is just a list (a
        # task's deps ["token", "fetch"], two words from a model).
        if isinstance(value, tuple) and _pair_of(value, secret=True):
            return [_walk(value[0], exact), _mask(value[1], exact)]
        if value and all(_pair_of(v) for v in value):
            return [
                [_walk(v[0], exact), _mask(v[1], exact)] if _pair_of(v, secret=True) else _walk(v, exact)
                for v in value
            ]
        return [_walk(v, exact) for v in value]
    if isinstance(value, bytes | bytearray):
        try:
            text = bytes(value).decode()
        except UnicodeDecodeError:
            return value
        cleaned = _text(text, exact)
        return value if cleaned == text else cleaned.encode()
    return value


def _mask(value: Any, exact: re.Pattern[str] | None) -> Any:
    """What a secret-named key holds, masked: every string in it (and bytes) redacted whole,
    its shape and its numbers kept. A typed record stays valid (`{"auth": 1234}`, a node named
    `auth` and its pid; a plan task `token` and its list of dependencies), and no text is left."""
    if isinstance(value, str):
        return REDACTED
    if isinstance(value, bytes | bytearray):
        return REDACTED.encode()
    if isinstance(value, dict):
        return {(_short(k, exact) if isinstance(k, str) else k): _mask(v, exact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, exact) for v in value]
    return value


# Most strings in trace events are short and come again and again (ids, names, kinds, dict
# keys): their redacted form is cached.
_SHORT = 256
_short = functools.lru_cache(maxsize=16384)(_text)


def _pair_of(value: Any, *, secret: bool = False) -> bool:
    """True if `value` is a (name, value) pair (and, with `secret`, its name is secret)."""
    if not (isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], str | bytes)):
        return False
    if not secret:
        return True
    name = value[0].decode(errors="replace") if isinstance(value[0], bytes) else value[0]
    return len(name) <= 64 and secret_key(name)


_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
_KEY_BODY = re.compile(r"[ \t]*(?:[A-Za-z0-9+/=]*|(?:Proc-Type|DEK-Info):.*)[ \t]*\r?\n?")  # base64, or its headers


class LineRedactor:
    """`redact` for text that arrives line by line (a node's output, copied into its log): a
    private key block spans lines, so the lines after its BEGIN line, up to its END line, go
    too (while they look like a key's body: base64 or its `Proc-Type:`/`DEK-Info:` headers)."""

    def __init__(self, secrets: list[str] | tuple[str, ...] | None = None) -> None:
        self._exact = _exact(tuple(known_secrets() if secrets is None else secrets))
        self._in_key = False

    def __call__(self, line: str) -> str:
        if self._in_key:
            end = _KEY_END.search(line)
            if end is not None:
                self._in_key = False
                line = line[end.end() :]
            elif _KEY_BODY.fullmatch(line):
                return ""
            else:  # not a key's body after all (the block was cut off): back to normal
                self._in_key = False
        begins = list(_KEY_BEGIN.finditer(line))
        if begins and not _KEY_END.search(line, begins[-1].end()):
            self._in_key = True
        body = line.rstrip("\r\n")
        return _text(body, self._exact) + line[len(body) :]  # a cut-off key block keeps its newline
