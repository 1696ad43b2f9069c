"""The redaction pass: every listed form of secret, by key name, by value and by exact value,
goes; counts, ids and ordinary prose stay."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrt.runtime import redact
from agentrt.runtime._redact import _HINT, REDACTED, LineRedactor, known_secrets, secret_key

# Secrets recognised by their form, wherever they appear.
VALUE_FORMS = {
    "anthropic": "sk-ant-api03-" + "Ab3_x-" * 8,
    "openai-project": "sk-proj-" + "Zq9" * 12,
    "openai": "sk-" + "T1bLk" * 8,
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "github-classic": "ghp_" + "a1B2c3D4e5" * 4,
    "github-fine-grained": "github_pat_11ABCDEFG0" + "xY9_" * 10,
    "aws-key-id": "AKIAIOSFODNN7EXAMPLE",
    "slack": "xoxb-1234567890-abcdefghij",
    "google": "AIza" + "S" * 35,
    "stripe": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
}


@pytest.mark.parametrize("form", sorted(VALUE_FORMS))
def test_a_secret_of_each_form_goes_from_free_text(form: str) -> None:
    secret = VALUE_FORMS[form]
    text = f"upstream refused request with {secret}; retry later"
    out = redact(text, [])
    assert secret not in out
    assert out.startswith("upstream refused request with ") and out.endswith("; retry later")
    assert REDACTED in out


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("authorization: bearer abcdefgh12345678", "abcdefgh12345678"),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("clone https://ada:hunter2pass@git.example.com/repo.git", "hunter2pass"),
        ("postgres://svc:pw-1234-xyz@db:5432/app", "pw-1234-xyz"),
        ("GET /callback?code=1&access_token=opaque-9876&state=ok", "opaque-9876"),
        ("refresh_token=r3fr3sh-value", "r3fr3sh-value"),
        ("Proxy-Authorization: Token prx-00112233", "prx-00112233"),
        ("client_secret: cs-abcdefgh", "cs-abcdefgh"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
        ("{'password': 'hunter22', 'user': 'ada'}", "hunter22"),
        ('{"api-key": "k-123456"}', "k-123456"),
        ("Cookie: session=s3ss10n; theme=dark", "s3ss10n"),
        ("x-api-key=q1w2e3r4", "q1w2e3r4"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEA7",
        ),
        # A quoted value goes whole: a passphrase has spaces, a dict's repr quotes bytes.
        ("{'client_secret': 'correct horse battery staple'}", "staple"),
        ('password: "two words"', "words"),
        ('{"password": "a\\"b\\" zq9tail"}', "zq9tail"),
        ("{'password': b'raw-bytes-123'}", "raw-bytes-123"),
        # A header pair's repr (a list of headers in a traceback).
        ("[('accept', 'json'), ('x-api-key', 'k 123456')]", "k 123456"),
        ("[(b'cookie', b'sid=s3ss10n')]", "s3ss10n"),
        # A pair after another `name:` (the other's value is not the end of the scan).
        ("login failed: password=hunter22", "hunter22"),
        ("db said: password='opaque with spaces' and gave up", "with spaces"),
    ],
)
def test_credentials_in_text_go_and_their_names_stay(text: str, secret: str) -> None:
    out = redact(text, [])
    assert secret not in out and REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "Basic arithmetic and bearer instruments",
        "Digest everything before the summary",
        "the Bearer Instrument of record",
        "missing fields ['token', 'secret']",
        # Ids of the id rule (':' allowed): a plan's tasks, an address.
        "auth:login",
        "token:refresh after auth:logout",
        "node:auth",
    ],
)
def test_prose_after_an_auth_scheme_word_stays(text: str) -> None:
    """An authorization scheme's name followed by a plain word is prose, not a credential, and
    `name:value` with no space is an id: a model's answer, a plan's task ids, an actor's state
    read back, keep them."""
    assert redact(text, []) == text


def test_ids_keyed_by_a_secret_looking_prefix_do_not_collapse() -> None:
    """Two plan tasks `auth:login` and `auth:logout`, as dict keys (a plan's deps, a journal):
    both stay, distinct."""
    deps = {"auth:login": [], "auth:logout": ["auth:login"]}
    assert redact({"deps": deps}, []) == {"deps": deps}


def test_a_private_key_printed_line_by_line_goes_whole() -> None:
    """A node's output reaches its log a line at a time: the key's body lines go too, and
    the lines after its END line are kept."""
    key = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nMIIEpAIBAAKCAQEAbody1+/=\nbody2line\n-----END RSA PRIVATE KEY-----\n"
    text = "before\n" + key + "after: done\nexpected -----BEGIN PRIVATE KEY----- got garbage\nprose goes on\n"
    clean = LineRedactor([])
    out = "".join(clean(line) for line in text.splitlines(keepends=True))
    assert "body1" not in out and "body2line" not in out and "ENCRYPTED" not in out
    assert out.startswith("before\n[redacted]\n") and "after: done\n" in out
    assert out.endswith("expected [redacted]\nprose goes on\n")
    # A cut-off block: the lines after it that are not a key's body are kept.
    clean = LineRedactor([])
    lines = ["bad key: -----BEGIN PRIVATE KEY-----\n", "MIIEvQIBADAN\n", "ValueError: not a key\n", "Done\n"]
    assert "".join(clean(line) for line in lines) == "bad key: [redacted]\nValueError: not a key\nDone\n"


@pytest.mark.parametrize(
    "key",
    [
        "token", "access_token", "refreshToken", "id_token", "x-auth-token", "csrftoken",
        "secret", "client_secret", "clientSecret", "aws_secret_access_key",
        "password", "passwd", "PASSWORD", "passphrase",
        "auth", "Authorization", "Proxy-Authorization", "authentication",
        "cookie", "Set-Cookie", "api_key", "apikey", "apiKey", "api-key", "x-api-key",
        "X-API-KEY", "ANTHROPIC_API_KEY", "credentials", "private_key", "privateKey", "accessKey",
    ],
)  # fmt: skip
def test_secret_key_names_by_pattern(key: str) -> None:
    assert secret_key(key)
    out = redact({key: "opaque-value-1", "other": "kept"}, [])
    assert out == {key: REDACTED, "other": "kept"}


@pytest.mark.parametrize(
    "key",
    ["input_tokens", "output_tokens", "max_tokens", "tokens", "token_budget", "author",
     "idempotencyKey", "key", "kind", "taskId", "authority", "passing", "PWD", "OLDPWD"],
)  # fmt: skip
def test_ordinary_names_stay(key: str) -> None:
    assert not secret_key(key)
    assert redact({key: 5}, []) == {key: 5}


def test_under_a_secret_name_every_string_goes_and_the_shape_stays() -> None:
    """Dicts keyed by names or ids (a node called `auth`, a plan task called `token`) stay
    valid records: numbers kept, strings masked, lists still lists."""
    value = {
        "nodes": {"auth": 1234, "front": 99},
        "deps": {"token": ["a", "b"], "c": ["token"]},
        "credentials": {"user": "ada", "pass": "hunter2", "tries": 3, "keys": [b"raw"]},
    }
    assert redact(value, []) == {
        "nodes": {"auth": 1234, "front": 99},
        "deps": {"token": [REDACTED, REDACTED], "c": ["token"]},
        "credentials": {"user": REDACTED, "pass": REDACTED, "tries": 3, "keys": [REDACTED.encode()]},
    }


def test_a_secret_used_as_a_dict_key_goes_too() -> None:
    key = VALUE_FORMS["anthropic"]
    out = redact({"keys": {key: 1, "plain": 2}}, [])
    assert key not in json.dumps(out)
    assert out["keys"] == {REDACTED: 1, "plain": 2}


def test_headers_as_name_value_pairs() -> None:
    out = redact({"headers": [["Proxy-Authorization", "opaque"], ("accept", "json")]}, [])
    assert out["headers"] == [["Proxy-Authorization", REDACTED], ["accept", "json"]]
    assert redact({"h": ("x-api-key", b"opaque")}, []) == {"h": ["x-api-key", REDACTED.encode()]}


def test_a_two_item_list_is_not_a_header_pair() -> None:
    """A task's deps on tasks `token` and `fetch`, two words of a model's answer: kept (a 2-list
    is a pair only in a list of pairs, as headers come)."""
    value = {"deps": {"c": ["token", "fetch"]}, "words": ["password", "reset"]}
    assert redact(value, []) == value


def test_exact_values_of_secret_environment_variables() -> None:
    env = {
        "ACME_API_TOKEN": "no-format-at-all-42",
        "DB_PASSWORD": "correct horse",
        "HOME": "/root",  # not a secret's name
        "PIN_SECRET": "1",  # too short to tell from ordinary text
        "AUTH_MODE": "disabled",  # a plain word: masking it would mask prose
        "SSH_AUTH_SOCK": "/tmp/ssh-XXXX/agent.42",  # a path: where a secret is
        "PWD": "/tmp/work/dir",  # the working directory, not a password
    }
    secrets = known_secrets(env)
    assert sorted(secrets) == ["correct horse", "no-format-at-all-42"]
    out = redact({"note": "connected with no-format-at-all-42 as root", "list": [b"correct horse"]}, secrets)
    assert out == {"note": f"connected with {REDACTED} as root", "list": [REDACTED.encode()]}


def test_a_secret_word_anywhere_in_a_variable_name_makes_its_value_secret() -> None:
    """The gateway's caller tokens are AGENTRT_A2A_TOKEN_<NAME>: 'token' is not at the end."""
    env = {
        "AGENTRT_A2A_TOKEN_ALICE": "Zx81kq0pL2mm",
        "SECRET_KEY_BASE_X": "b4se-Secret-99",
        "TOKENIZERS_PARALLELISM": "False123",  # a word that starts with 'token' is not 'token'
        "MAX_TOKENS_LIMIT": "4096x4096",
    }
    assert sorted(known_secrets(env)) == ["Zx81kq0pL2mm", "b4se-Secret-99"]
    assert redact("caller token Zx81kq0pL2mm refused", known_secrets(env)) == f"caller token {REDACTED} refused"


def test_the_default_secrets_are_this_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_CREDENTIAL", "zq9-yyyy-xxxx")
    assert redact("value zq9-yyyy-xxxx here") == f"value {REDACTED} here"


def test_prose_counts_and_ids_stay_as_they_are() -> None:
    event = {
        "event": "task.state",
        "task_id": "run-1/research",
        "idempotency_key": "ask-3f2a",
        "input_tokens": 120,
        "text": "tokens: 52 in / 40 out; token budget 700 reached: 652 spent; the author: Ada",
        "url": "https://example.com/a?b=1",
    }
    assert redact(event, []) == event


SECRET = st.sampled_from(sorted(VALUE_FORMS.values()))
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(before=TEXT, secret=SECRET, after=TEXT)
def test_a_planted_secret_never_survives_whatever_text_is_around_it(before: str, secret: str, after: str) -> None:
    value = {"a": f"{before} {secret} {after}", "b": [before, {f"{secret}": after}]}
    assert secret not in json.dumps(redact(value, []), ensure_ascii=False)


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(TEXT | st.integers(), lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3)))
def test_redaction_is_idempotent(value: object) -> None:
    once = redact(value, [])
    assert redact(once, []) == once


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_text_without_a_hint_is_returned_untouched(text: str) -> None:
    if not _HINT.search(text.lower()):
        assert redact(text, []) == text


def _shape(value: object) -> object:
    """A value's shape: strings as one marker, numbers as themselves, containers kept."""
    if isinstance(value, str):
        return "<str>"
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shape(v) for v in value]
    return value


KEYS = st.sampled_from(["token", "auth", "password", "nodes", "deps", "name", "n", "Proxy-Authorization"])
JSON = st.recursive(
    TEXT | SECRET | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_redaction_keeps_the_shape_and_the_numbers(value: object) -> None:
    """Only strings change: a typed record (a trace event, the summary) stays valid."""
    assert _shape(redact(value, [])) == _shape(value)
