"""Skill payloads checked against their JSON Schemas, with errors that name the field and the rule."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import jsonschema
import msgspec

from agentrt.protocols import SchemaError

# Validators by schema, least recently used dropped first past either bound (schemas come with
# agent cards, so a run has few; the bounds keep a flood of distinct ones from growing memory).
_MAX_VALIDATORS = 1024
_MAX_SCHEMA_BYTES = 16 * 1024 * 1024
_cache: OrderedDict[bytes, jsonschema.protocols.Validator] = OrderedDict()
_cache_bytes = 0
_lock = threading.Lock()


def validator_for(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A cached validator for `schema` (Draft 2020-12 unless the schema says otherwise)."""
    global _cache_bytes
    key = msgspec.json.encode(schema, order="sorted")
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        found = _cache[key] = cls(schema)
        _cache_bytes += len(key)
        while len(_cache) > 1 and (len(_cache) > _MAX_VALIDATORS or _cache_bytes > _MAX_SCHEMA_BYTES):
            dropped, _ = _cache.popitem(last=False)
            _cache_bytes -= len(dropped)
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
