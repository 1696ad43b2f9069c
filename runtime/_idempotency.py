"""Idempotency keys as a sans-I/O state machine: per actor, what each key did.

A key lives in a scope, (sender, skill, key), and is bound to the hash of the payload it was
first used with (Stripe's semantics). `begin` says what to do with a request: `Run` it (the
first with its key), `Join` the attempt still running (the same payload), answer it with the
first result (`Cached`), or refuse it (`Conflict`: the same key with another payload). `end`
records how the running attempt ended and returns the requests that joined it. Completed
results are kept up to `max_entries` or `max_bytes`, oldest dropped first; failed ones are
not kept (a retry runs again). No locks, no clocks: the caller serialises calls.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")  # what the caller answers later: a request, for us
R = TypeVar("R")  # a result


_sorted = msgspec.msgpack.Encoder(order="sorted")
_plain = msgspec.msgpack.Encoder()


def payload_hash(parts: Any) -> str:
    """The hash of what a request asks for (its parts), the same whatever the order of its
    dicts' keys. Defined for every value a frame can carry: a dict nested in a data part may
    have keys that are not strings (msgpack allows it), which the sorted encoder refuses."""
    try:
        packed = _sorted.encode(parts)
    except TypeError:
        packed = b"\x00" + _plain.encode(_canonical(parts))
    return hashlib.sha256(packed).hexdigest()


def _canonical(value: Any) -> Any:
    """`value` with every dict as its items sorted by their packed keys (any key type)."""
    if isinstance(value, msgspec.Struct):
        return [type(value).__name__, [_canonical(getattr(value, f)) for f in value.__struct_fields__]]
    if isinstance(value, dict):
        items = [(_plain.encode(_canonical(k)), _canonical(v)) for k, v in value.items()]
        return ["dict", sorted(items, key=lambda kv: kv[0])]
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


class Key(msgspec.Struct, frozen=True):
    """An idempotency key in its scope, with the hash of the payload it came with."""

    sender: str
    skill: str
    key: str
    payload: str

    @property
    def scope(self) -> tuple[str, str, str]:
        return (self.sender, self.skill, self.key)


@dataclass(frozen=True, slots=True)
class Run:
    """The first request with this key: run it, then call `end`."""


@dataclass(frozen=True, slots=True)
class Join:
    """An attempt with this key and payload is running: this request is answered by its `end`."""


@dataclass(frozen=True, slots=True)
class Cached(Generic[R]):
    """This key and payload completed before: answer with that result."""

    result: R


@dataclass(frozen=True, slots=True)
class Conflict:
    """This key was used with another payload: refuse the request."""

    first: Key


class Idempotency(Generic[T, R]):
    """One actor's idempotency keys: running attempts and completed results."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._running: dict[tuple[str, str, str], tuple[Key, list[T]]] = {}
        self._done: OrderedDict[tuple[str, str, str], tuple[Key, R, int]] = OrderedDict()
        self.bytes = 0  # of the kept results, as the caller measured them

    def begin(self, key: Key, request: T) -> Run | Join | Cached[R] | Conflict:
        done = self._done.get(key.scope)
        if done is not None:
            return Cached(done[1]) if done[0].payload == key.payload else Conflict(done[0])
        running = self._running.get(key.scope)
        if running is None:
            self._running[key.scope] = (key, [])
            return Run()
        if running[0].payload != key.payload:
            return Conflict(running[0])
        running[1].append(request)
        return Join()

    def end(self, key: Key, result: R, *, completed: bool, size: int = 0) -> list[T]:
        """The running attempt with `key` ended with `result` (kept if `completed`, counted as
        `size` bytes). Returns the requests that joined it, to be answered with `result`."""
        _, joined = self._running.pop(key.scope, (key, []))
        if completed:
            old = self._done.pop(key.scope, None)
            if old is not None:
                self.bytes -= old[2]
            self._done[key.scope] = (key, result, size)
            self.bytes += size
            while self._done and (
                len(self._done) > self.max_entries or self.bytes > self.max_bytes
            ):
                _, (_, _, dropped) = self._done.popitem(last=False)
                self.bytes -= dropped
        return joined

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def kept(self) -> int:
        return len(self._done)
