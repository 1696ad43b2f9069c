"""Skill payloads checked against their JSON Schemas, with errors that name the field and the rule."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import jsonschema
import jsonschema_rs
import msgspec

from agentrt.protocols import SchemaError

# Validators by schema, least recently used dropped first past either bound (schemas come with
# agent cards, so a run has few; the bounds keep a flood of distinct ones from growing memory).
_MAX_VALIDATORS = 1024
_MAX_SCHEMA_BYTES = 16 * 1024 * 1024
_cache: OrderedDict[bytes, Compiled] = OrderedDict()
_cache_bytes = 0
_lock = threading.Lock()
# The same, by the identity of the schema object a card holds (no re-serialising per call): the
# object is kept with its validator, so its id cannot be reused while the entry lives.
_by_id: dict[int, tuple[dict[str, Any], Compiled]] = {}


class Compiled:
    """One schema's validators: jsonschema-rs (compiled, full Draft 2020-12) says whether an
    instance is valid; jsonschema, the reference, has the last word on an instance the fast one
    refuses and writes the error (its messages name the field and the rule)."""

    __slots__ = ("fast", "full")

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        self.full: jsonschema.protocols.Validator = cls(schema)
        try:
            self.fast: Any = jsonschema_rs.validator_for(schema)
        except Exception:  # a schema it cannot compile (a remote $ref, say): the reference alone
            self.fast = None

    def is_valid(self, data: Any) -> bool:
        if self.fast is not None:
            try:
                if self.fast.is_valid(data):
                    return True
            except Exception:  # a value it cannot take (a tuple, a huge int): ask the reference
                pass
        return bool(self.full.is_valid(data))

    def best_error(self, data: Any) -> jsonschema.ValidationError | None:
        return jsonschema.exceptions.best_match(self.full.iter_errors(data))


def compiled(schema: dict[str, Any]) -> Compiled:
    """The cached validators for `schema` (Draft 2020-12 unless the schema says otherwise)."""
    global _cache_bytes
    hit = _by_id.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    key = msgspec.json.encode(schema, order="sorted")
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
        else:
            found = _cache[key] = Compiled(schema)
            _cache_bytes += len(key)
            while len(_cache) > 1 and (len(_cache) > _MAX_VALIDATORS or _cache_bytes > _MAX_SCHEMA_BYTES):
                dropped, _ = _cache.popitem(last=False)
                _cache_bytes -= len(dropped)
        if len(_by_id) >= _MAX_VALIDATORS:
            _by_id.clear()
        _by_id[id(schema)] = (schema, found)
        return found


def validator_for(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """The reference validator for `schema` (SchemaError-free: raises jsonschema's own error
    for a schema that is not valid)."""
    return compiled(schema).full


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
    check = compiled(schema)
    if check.is_valid(data):
        return
    error = check.best_error(data)
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
