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


# -- the compiled validator agrees with the reference ------------------------------------

from pathlib import Path  # noqa: E402

import jsonschema_rs  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agentrt.runtime._validation import Compiled  # noqa: E402
from agentrt.schemas import DIR, load  # noqa: E402

PROJECT = sorted(str(p.relative_to(DIR).with_suffix("")) for p in Path(DIR).rglob("*.json"))
SCHEMAS = {name: load(name) for name in PROJECT}

_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12
)


def _shaped(schema: dict) -> st.SearchStrategy:
    """Instances near `schema`'s shape (its property names, with values of any kind), which
    reach more of its rules than arbitrary JSON does."""
    props = schema.get("properties") or {}
    if not props:
        return _json
    names = sorted(props)
    return st.fixed_dictionaries({}, optional={n: _json | st.text(min_size=1, max_size=20) for n in names})


COMPILED = {name: Compiled(schema) for name, schema in SCHEMAS.items()}
FAST = {name: jsonschema_rs.validator_for(schema) for name, schema in SCHEMAS.items()}


def test_the_compiled_validator_compiles_every_project_schema() -> None:
    assert len(SCHEMAS) >= 10
    assert all(c.fast is not None for c in COMPILED.values())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PROJECT), st.data())
def test_the_compiled_validator_agrees_with_jsonschema(name: str, data: st.DataObject) -> None:
    check = COMPILED[name]
    instance = data.draw(_json | _shaped(SCHEMAS[name]))
    assert FAST[name].is_valid(instance) == check.full.is_valid(instance)
