"""Skill payload validation: the error names the field and the rule."""

from __future__ import annotations

import pytest

from agentrt.protocols import SchemaError
from agentrt.runtime import validate

SCHEMA = {
    "type": "object",
    "required": ["source", "query"],
    "additionalProperties": False,
    "properties": {
        "source": {"type": "string", "minLength": 1},
        "query": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def test_valid_passes() -> None:
    validate(SCHEMA, {"source": "a", "query": "b", "tags": ["x"]}, what="input")


@pytest.mark.parametrize(
    ("data", "field", "rule"),
    [
        ({"query": "q"}, "$.source", "required"),
        ({"source": 5, "query": "q"}, "$.source", "type"),
        ({"source": "", "query": "q"}, "$.source", "minLength"),
        ({"source": "s", "query": "q", "tags": ["ok", 3]}, "$.tags[1]", "type"),
        ({"source": "s", "query": "q", "extra": 1}, "$", "additionalProperties"),
    ],
)
def test_error_names_field_and_rule(data: dict, field: str, rule: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate(SCHEMA, data, what="input of skill 'lookup' on 'w'")
    err = info.value
    assert (err.field, err.rule) == (field, rule)
    assert f"field '{field}'" in str(err) and f"(rule: {rule})" in str(err)
    assert str(err).startswith("input of skill 'lookup' on 'w'")


def test_no_schema_accepts_anything() -> None:
    validate(None, {"anything": object()}, what="x")


def test_the_validator_cache_is_bounded_by_count_and_bytes(monkeypatch) -> None:
    from agentrt.runtime import _validation

    monkeypatch.setattr(_validation, "_MAX_VALIDATORS", 5)
    monkeypatch.setattr(_validation, "_MAX_SCHEMA_BYTES", 2_000)
    _validation._cache.clear()
    monkeypatch.setattr(_validation, "_cache_bytes", 0)
    for i in range(50):
        _validation.validator_for({"type": "object", "description": str(i) * (i % 7 * 40)})
        assert len(_validation._cache) <= 5 and _validation._cache_bytes <= 2_000 + 400
    _validation._cache.clear()
    monkeypatch.setattr(_validation, "_cache_bytes", 0)
