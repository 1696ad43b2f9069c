"""Skill payloads checked against their JSON Schemas, with errors that name the field and the rule."""

from __future__ import annotations

import threading
from typing import Any

import jsonschema
import msgspec

from agentrt.protocols import SchemaError

_cache: dict[bytes, jsonschema.protocols.Validator] = {}
_lock = threading.Lock()


def validator_for(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A cached validator for `schema` (Draft 2020-12 unless the schema says otherwise)."""
    key = msgspec.json.encode(schema, order="sorted")
    with _lock:
        found = _cache.get(key)
        if found is None:
            cls = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft202012Validator
            )
            cls.check_schema(schema)
            found = _cache[key] = cls(schema)
        return found


def _path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validate(schema: dict[str, Any] | None, data: Any, *, what: str) -> None:
    """Raise SchemaError if `data` does not match `schema`. `what` names the payload,
    e.g. "input of skill 'lookup' on 'worker-1'"."""
    if schema is None:
        return
    error = jsonschema.exceptions.best_match(validator_for(schema).iter_errors(data))
    if error is None:
        return
    field = _path(error.absolute_path)
    rule = str(error.validator)
    if rule == "required" and isinstance(error.validator_value, list):
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = [k for k in error.validator_value if k not in instance]
        if missing:
            field = f"{field}.{missing[0]}"
    raise SchemaError(
        f"{what}: field '{field}' is invalid: {error.message} (rule: {rule})",
        field=field,
        rule=rule,
    )
