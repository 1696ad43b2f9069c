"""Identifiers: W3C/OpenTelemetry-sized trace and span ids, and the rule for ids that name files."""

from __future__ import annotations

import os
import random
import re

from ._errors import InvalidId

# Ids come from a PRNG seeded from the OS once per process (and again in a forked child), not
# from os.urandom each: a syscall per id (about ten per round trip) releases the GIL each time.
# They need to be unique, not secret: a receiver deduplicates by (sender, id), so an id another
# member could guess cannot shadow anyone else's message.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def new_trace_id() -> str:
    """A 128-bit trace id as 32 lowercase hex characters."""
    return f"{_rng.getrandbits(128):032x}"


def new_span_id() -> str:
    """A 64-bit span id as 16 lowercase hex characters."""
    return f"{_rng.getrandbits(64):016x}"


def new_id() -> str:
    """A 128-bit random id for messages, tasks and artifacts."""
    return f"{_rng.getrandbits(128):032x}"


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
