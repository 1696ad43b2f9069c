"""Secrets never reach a trace."""

from __future__ import annotations

from agentrt.runtime._redact import REDACTED, redact


def test_secret_keys_and_values_are_redacted() -> None:
    key = "sk-ant-api03-abcdefghijklmnop"
    event = {
        "event": "model.call",
        "headers": {"x-api-key": key, "Authorization": "Bearer abc", "accept": "json"},
        "note": f"called with {key} inline",
        "nested": [{"api_key": "zzz"}],
        "custom": "my-own-secret-value",
        "input_tokens": 5,
    }
    out = redact(event, ["my-own-secret-value"])
    text = repr(out)
    assert key not in text and "Bearer abc" not in text and "zzz" not in text
    assert "my-own-secret-value" not in text
    assert out["headers"]["accept"] == "json" and out["input_tokens"] == 5
    assert out["headers"]["x-api-key"] == REDACTED
