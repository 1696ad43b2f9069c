"""Identifiers: W3C/OpenTelemetry-sized trace and span ids, and the rule for ids that name files."""

from __future__ import annotations

import os
import re

from ._errors import InvalidId


def new_trace_id() -> str:
    """A 128-bit trace id as 32 lowercase hex characters."""
    return os.urandom(16).hex()


def new_span_id() -> str:
    """A 64-bit span id as 16 lowercase hex characters."""
    return os.urandom(8).hex()


def new_id() -> str:
    """A 128-bit random id for messages, tasks and artifacts."""
    return os.urandom(16).hex()


# Ids that become file or folder names (run ids, ticket ids, plan task ids): one rule, so a
# name built from one always stays in its folder. Letters, digits, `.`, `_`, `:` and `-`;
# 1 to 128 characters; not `.` or `..`.
ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"
_ID = re.compile(ID_PATTERN)
ID_RULE = f"must match {ID_PATTERN} (letters, digits, '.', '_', ':', '-'; 1 to 128 characters; not '.' or '..')"


def id_problem(value: object, field: str) -> str | None:
    """Why `value` cannot be the id `field` (a message naming the field, the value and the
    rule), or None when it can."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return None
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return f"{field} {shown} is not a valid id: it becomes a file name, so it {ID_RULE}"


def check_id(value: object, field: str) -> str:
    """`value` if it is a valid id; otherwise InvalidId naming the field, the value and the rule."""
    problem = id_problem(value, field)
    if problem is not None:
        raise InvalidId(problem)
    return value  # type: ignore[return-value]
