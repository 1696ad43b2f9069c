"""Identifier helpers: W3C/OpenTelemetry-sized trace and span ids."""

from __future__ import annotations

import os


def new_trace_id() -> str:
    """A 128-bit trace id as 32 lowercase hex characters."""
    return os.urandom(16).hex()


def new_span_id() -> str:
    """A 64-bit span id as 16 lowercase hex characters."""
    return os.urandom(8).hex()


def new_id() -> str:
    """A 128-bit random id for messages, tasks and artifacts."""
    return os.urandom(16).hex()
