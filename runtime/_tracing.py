"""Trace events: recorded as plain dicts, redacted and shipped to the run's collector in batches."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import ahocorasick_rs
import msgspec
import structlog

from agentrt.protocols import (
    BUILT_IN_EVENTS,
    Event,
    RunError,
    TraceEvent,
    decode_event,
    event_from_dict,
    event_to_dict,
)

from ._files import append_private
from ._redact import HINTS, known_secrets, redact

Sink = Callable[[bytes], None]  # one batch: a msgpack array of events, already redacted
Listener = Callable[[Event], None]
Refused = Callable[[dict[str, Any], Exception], None]  # an event that cannot be encoded, and why

MAX_BATCH = 512  # events shipped in one frame at most
MAX_DELAY_S = 0.005  # how long an event may wait for others to share its frame
MAX_BATCH_BYTES = 1024 * 1024  # a bigger batch is cut in two (one event alone may be bigger)


class Recorder:
    """This process's trace events, recorded as plain dicts (no per-event work beyond that),
    redacted once per batch and handed to `sink` as one msgpack frame of at most `max_batch`
    events, at most `max_delay_s` after the first of them (0: at once, on the recording thread).
    Events keep the order in which they were recorded."""

    def __init__(
        self,
        sink: Sink,
        static: dict[str, Any],
        *,
        secrets: list[str] | None = None,
        max_batch: int = MAX_BATCH,
        max_delay_s: float = MAX_DELAY_S,
        on_refused: Refused | None = None,
    ) -> None:
        self.sink = sink
        self.static = static
        self.on_refused = on_refused
        self._secrets = known_secrets() if secrets is None else secrets
        self._exact = [s.encode().lower() for s in self._secrets]
        self._max_batch = max_batch
        self._max_delay = max_delay_s
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # the buffer's (taken as it is: a Condition's is Python)
        self._cond = threading.Condition(self._lock)
        self._ship_lock = threading.RLock()  # batches leave in order; a sink may record (dead letters)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.shipped = 0  # events handed to the sink
        self.refused = 0  # events that could not be encoded (dropped, reported)
        self.redacted = 0  # batches that went through redact() (the others had nothing to match)

    def record(self, event: dict[str, Any]) -> None:
        """Keep `event` (a dict of builtins, or msgspec.Raw msgpack for a value already encoded)
        for the next batch, stamped with this process's static fields and a `ts`."""
        for k, v in self.static.items():
            event.setdefault(k, v)
        if "ts" not in event:
            event["ts"] = time.time()
        self.append(event)

    def append(self, event: dict[str, Any]) -> None:
        """Keep `event`, already stamped as `record` stamps it, for the next batch (once the
        recorder has stopped, no thread ships it later: shipped now, after what is buffered)."""
        if self._max_delay <= 0:
            self._ship([event])
            return
        with self._lock:
            self._events.append(event)
            n = len(self._events)
            stopped = self._stopped
            if self._thread is None and not stopped:
                self._thread = threading.Thread(target=self._run, name="agentrt-trace", daemon=True)
                self._thread.start()
            if n == 1 or n >= self._max_batch:
                self._cond.notify()
        if stopped:
            self.flush()

    def flush(self) -> None:
        """Ship what is buffered now, on this thread."""
        with self._ship_lock:
            with self._cond:
                batch, self._events = self._events, []
            if batch:
                self._ship_ordered(batch)

    def stop(self) -> None:
        """Ship what is left and stop the shipping thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(2.0)
        self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._events and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return  # stop() flushes the rest
                deadline = time.monotonic() + self._max_delay
                while len(self._events) < self._max_batch and not self._stopped:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            self.flush()

    def _ship(self, batch: list[dict[str, Any]]) -> None:
        with self._ship_lock:
            self._ship_ordered(batch)

    def _ship_ordered(self, batch: list[dict[str, Any]]) -> None:
        for i in range(0, len(batch), self._max_batch):
            self._ship_one(batch[i : i + self._max_batch])

    def _ship_one(self, batch: list[dict[str, Any]]) -> None:
        frame, batch = self._frame(batch)
        if frame is None:
            return
        if len(frame) > MAX_BATCH_BYTES and len(batch) > 1:  # big events: halves, in order
            half = len(batch) // 2
            self._ship_one(batch[:half])
            self._ship_one(batch[half:])
            return
        self.shipped += len(batch)
        with contextlib.suppress(Exception):  # the sink counts what it drops; recording never raises
            self.sink(frame)

    def _frame(self, batch: list[dict[str, Any]]) -> tuple[bytes | None, list[dict[str, Any]]]:
        """The batch as one msgpack array, redacted: one scan of its bytes for anything a rule
        could match; only a batch with such a hint is decoded, redacted and encoded again."""
        try:
            frame = _packer.encode(batch)
        except (TypeError, ValueError, OverflowError):
            batch = [e for e in batch if self._encodable(e)]
            if not batch:
                return None, batch
            frame = _packer.encode(batch)
        if self._clean(frame):
            return frame, batch
        self.redacted += 1
        try:
            return _packer.encode(redact(_unpacker.decode(frame), self._secrets)), batch
        except msgspec.DecodeError:  # a msgspec.Raw value that is not msgpack: it cannot be
            batch = [e for e in batch if self._encodable(e, readable=True)]  # read to redact
            return self._frame(batch) if batch else (None, batch)

    def _encodable(self, event: dict[str, Any], readable: bool = False) -> bool:
        """True if `event` encodes (and, with `readable`, decodes again); else it is reported."""
        try:
            packed = _packer.encode(event)
            if readable:
                _unpacker.decode(packed)
            return True
        except (TypeError, ValueError, OverflowError, msgspec.DecodeError) as exc:
            self.refused += 1
            if self.on_refused is not None:
                with contextlib.suppress(Exception):
                    self.on_refused(event, exc)
            return False

    def _clean(self, frame: bytes) -> bool:
        """True if no redaction rule can match anything in `frame` (a superset check: every
        rule's hint, the separators key names may use, the hints spelled with the two non-ASCII
        letters that lower-case to ASCII ones, and this process's exact secrets)."""
        low = frame.lower()
        if _hinted(low) or _AWS_SCAN.find_matches_as_indexes(frame):
            return False
        return not any(s in low for s in self._exact)


_packer = msgspec.msgpack.Encoder()
_unpacker = msgspec.msgpack.Decoder()
# What a redaction rule could match, in a batch's bytes lower-cased: the hints of the text rules
# (runtime/_redact.py), two of them narrowed to what the rules themselves match so that every
# envelope does not hit them (`sk-` followed by 16 key characters: not `task-request`; `token`
# at the end of a name: not `inputTokens`), key names in any spelling ("Session.Key", "api key"),
# also where they are spelled with U+0130 or U+212A (see _folded). A batch with none of them is
# shipped as it is; one with any goes through `redact` itself. The words are found in one pass
# by an Aho-Corasick automaton (ahocorasick-rs: Rust's aho-corasick crate), about 8x faster
# than the regex it replaces (a trie alternation: 9.5 -> 1.2 us per traced event); the few
# words with a condition on what surrounds them are then checked where they were found.
# AWS key ids are upper case (the rule is case-sensitive): looked for as such, in the bytes as
# they are, since one in lower case ("acca") is all hex digits and turns up in ids.
_AWS = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "APKA", "AROA", "ASCA")
_AWS_SCAN = ahocorasick_rs.BytesAhoCorasick([a.encode() for a in _AWS])
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")
_SK_AFTER = re.compile(rb"[a-z0-9_-]{16}")
_KEY_AFTER = re.compile(rb"[^a-z0-9]*key")  # "api key", "Session.Key", "access-key", ...


def _token_at_end(low: bytes, start: int, end: int) -> bool:
    # A name ending in "token" is followed by its value's msgpack header: never a letter or a
    # digit for a string (nor for a number from 0 to 47, or past 122), so "inputTokens" and
    # "tokenAllowance" stay clean. (An integer from 48 to 122 under such a name looks like a
    # name going on: redact() keeps numbers under secret keys, so nothing is missed.)
    return end == len(low) or low[end] not in _WORD


def _sk_then_key(low: bytes, start: int, end: int) -> bool:
    # Not "not after a letter", as the rule says of text: in msgpack the byte before a string
    # is its length, which may be a letter or a digit (an Anthropic key, 108 characters long,
    # follows an "l"); the 16 key characters the rule needs after "sk-" are in the string.
    return _SK_AFTER.match(low, end) is not None


def _then_key(low: bytes, start: int, end: int) -> bool:
    return _KEY_AFTER.match(low, end) is not None


_KEY_WORDS = ("api", "access", "session", "signing", "private")
# The only characters str.lower() turns into ASCII letters (U+0130 -> "i" + U+0307).
_FOLDS = {"\u0130".encode(): b"i", "\u212a".encode(): b"k"}
_CHECKS: dict[bytes, Callable[[bytes, int, int], bool] | None] = {
    **{
        h.encode(): None
        for h in HINTS
        if h not in ("token", "sk-") and h.upper() not in _AWS and not h.startswith(_KEY_WORDS)
    },
    b"token": _token_at_end,
    b"sk-": _sk_then_key,
    **{w.encode(): _then_key for w in _KEY_WORDS},  # covers the hints spelled from them
}
_HINT_WORDS = [*_CHECKS, *_FOLDS]  # the letters to fold come last: found at _FOLD_AT and after
_HINT_CHECKS = list(_CHECKS.values())
_FOLD_AT = len(_CHECKS)
_HINT_SCAN = ahocorasick_rs.BytesAhoCorasick(_HINT_WORDS)


def _hinted(low: bytes) -> bool:
    """True if a redaction rule could match in `low` (a lower-cased batch), as it is or with
    the two letters folded. Both: a fold can hide a hint as well as show one, since the bytes
    of U+0130 are also msgpack's (C4 B0: bin8 of 176 bytes, right after a name ending in
    "token", reads "tokeni" folded)."""
    fold = False
    for i, start, end in _HINT_SCAN.find_matches_as_indexes(low, overlapping=True):
        if i >= _FOLD_AT:
            fold = True
            continue
        check = _HINT_CHECKS[i]
        if check is None or check(low, start, end):
            return True
    return fold and _hinted(_folded(low))


def _folded(low: bytes) -> bytes:
    """`low` with U+0130 and U+212A as the ASCII letters str.lower() makes of them (the rules
    see those), so that the scan finds the hints they spell ("apİ_key"). They are no hint of
    their own: their bytes turn up in binary numbers (a float's 8 bytes hold C4 B0 about once
    in 9,000), which sent one batch in eight of bench/message_path.py's trace through redact()
    for nothing."""
    for char, letter in _FOLDS.items():
        low = low.replace(char, letter)
    return low


_recorder: Recorder | None = None


def configure(
    sink: Sink, *, batch: bool = True, on_refused: Refused | None = None, **static: Any
) -> Recorder:
    """Route this process's trace events (typed ones from `emit`, and free-form structlog
    calls) to `sink`, in batches (`batch=False`: each at once), stamped with `static` fields
    (run_id, node), the pid and a `ts`, secrets redacted. Events never reach stdout."""
    global _recorder
    recorder = Recorder(
        sink,
        {"pid": os.getpid(), **static},
        max_delay_s=MAX_DELAY_S if batch else 0.0,
        on_refused=on_refused,
    )
    old, _recorder = _recorder, recorder
    if old is not None:  # its loggers still record to it (a process may hold two runs: tests)
        old.flush()

    def record(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        recorder.record(event)
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, record],
        wrapper_class=structlog.BoundLogger,
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    return recorder


class Logger:
    """A structlog logger (free-form calls: `log.info(...)`) bound to the recorder that was
    current when it was made, which `emit` records its typed events to: loggers made for one
    run keep recording to it when a process starts another (two Runtimes in one test)."""

    __slots__ = ("_log", "_stamp", "recorder")

    def __init__(self, log: Any, recorder: Recorder | None) -> None:
        self._log = log
        self.recorder = recorder
        self._stamp: tuple[Recorder, dict[str, Any]] | None = None

    def stamp(self, recorder: Recorder) -> dict[str, Any]:
        """`recorder`'s static fields, this logger's context over them: what `emit` stamps on
        each event. Made once per recorder (a bound logger's context never changes)."""
        stamp = self._stamp
        if stamp is None or stamp[0] is not recorder:
            stamp = self._stamp = (recorder, {**recorder.static, **self.context})
        return stamp[1]

    def bind(self, **fields: Any) -> Logger:
        return Logger(self._log.bind(**fields), self.recorder)

    @property
    def context(self) -> Any:
        return structlog.get_context(self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def get_logger(**bound: Any) -> Logger:
    """A logger with `bound` context, recording to this process's current recorder."""
    return Logger(structlog.get_logger().bind(**bound), _recorder)


def emit(log: Any, event: TraceEvent, **raw: msgspec.Raw) -> None:
    """Record one typed event; the fields bound to `log` fill what the event leaves unset.
    `raw`: fields already encoded as msgpack (an envelope's wire bytes), embedded as they are.
    No structlog chain on this path: it is every message's."""
    if isinstance(log, Logger):
        recorder = log.recorder or _recorder
        if recorder is None:
            return
        stamp = log.stamp(recorder)
    else:
        recorder = _recorder
        if recorder is None:
            return
        stamp = {**recorder.static, **structlog.get_context(log)}
    # The event's own fields win over the logger's context, which wins over the static ones.
    fields = {**stamp, **event_to_dict(event), **raw}
    if "ts" not in fields:
        fields["ts"] = time.time()
    recorder.append(fields)


def flush() -> None:
    """Ship this process's buffered trace events now."""
    if _recorder is not None:
        _recorder.flush()


def stop() -> None:
    """Ship what is buffered and stop recording (a process on its way out)."""
    global _recorder
    recorder, _recorder = _recorder, None
    if recorder is not None:
        recorder.stop()


def event_name(event: dict[str, Any]) -> str:
    """An event's name as its writer gave it (a custom actor's `ctx.event` name, not 'user')."""
    name = event.get("name") if event.get("event") == "user" else event.get("event")
    return str(name)[:100]


class TraceWriter:
    """Appends events to one JSONL file; thread-safe; used by the supervisor's collector.
    Listeners get each event typed; one that is not a valid event is written (the file keeps
    everything a process recorded) but not handed on, and counted in `invalid`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] = append_private(path)
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()
        self.listeners: list[Listener] = []
        self.invalid = 0
        self.listener_errors = 0

    def write(self, event: dict[str, Any]) -> None:
        """Append `event` and show it to the listeners. Raises TypeError (nothing written) for
        an event JSON cannot hold, e.g. a dict with tuple keys; a listener that raises is
        counted in `listener_errors`, and the others still see the event."""
        line = self._encoder.encode(event) + b"\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
        if self.listeners:
            self._tell(event)

    def write_many(self, events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Exception]]:
        """`write` for a batch: one encode and one append for all of them (a batch a node
        shipped). Returns the events JSON cannot hold, with why (the others are written)."""
        try:
            lines = self._encoder.encode_lines(events)
        except (TypeError, ValueError, OverflowError):
            refused = []
            for event in events:
                try:
                    self.write(event)
                except (TypeError, ValueError, OverflowError) as exc:
                    refused.append((event, exc))
            return refused
        with self._lock:
            if not self._file.closed:
                self._file.write(lines)
        if self.listeners:
            for event in events:
                self._tell(event)
        return []

    def _tell(self, event: dict[str, Any]) -> None:
        try:
            typed = event_from_dict(event)
        except msgspec.ValidationError:
            self.invalid += 1
            return
        for listener in self.listeners:
            try:
                listener(typed)
            except Exception:
                self.listener_errors += 1

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_trace(path: Path) -> list[dict[str, Any]]:
    """All events of a trace file as dicts, in file order. A torn last line (one being
    written as the file is read while its run goes on, or a process killed mid-write) is
    left out, as `read_events` leaves it; a bad line before it raises msgspec.DecodeError."""
    decoder = msgspec.json.Decoder()
    out: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                out.append(decoder.decode(line))
            except msgspec.DecodeError:
                if line.endswith(b"\n"):  # a whole line: not torn, bad
                    raise
    return out


def _names_an_event(line: bytes) -> bool:
    """False only for a JSON object whose `event` is none of agentrt's event names (`user`
    included): a line agentrt never wrote as an event, not one it would misread."""
    value = msgspec.json.decode(line)
    return not isinstance(value, dict) or value.get("event") in _EVENT_NAMES


_EVENT_NAMES = BUILT_IN_EVENTS | {"user"}


def read_events(path: Path, clean: Callable[[Any], Any] | None = None) -> list[Event]:
    """The events of a trace file, typed, in file order (`clean`: applied to each line's JSON
    before it is typed, e.g. redaction). A torn last line (a process killed mid-write) is left
    out, and so is a line named as none of agentrt's events (a log line of the run's own code:
    structlog in a node ships every line to the trace); a line that names one of agentrt's
    events but is not a valid one raises RunError naming the file and the line: the trace was
    written by another (older) agentrt, e.g. one whose messages had A2A 0.3's shapes."""
    out: list[Event] = []
    bad: tuple[int, str] | None = None
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if bad is not None:  # a bad line that was not the last one
                break
            try:
                if clean is None:
                    out.append(decode_event(line))
                else:
                    out.append(event_from_dict(clean(msgspec.json.decode(line))))
            except msgspec.ValidationError as exc:
                if not _names_an_event(line):
                    continue
                bad = (number, str(exc))
            except msgspec.DecodeError as exc:
                bad = (number, str(exc))
        else:
            return out
    assert bad is not None
    raise RunError(
        f"{path} line {bad[0]} is not a trace event this agentrt reads ({bad[1]}): the run was "
        "written by another (older) agentrt, whose messages had other shapes (before A2A 1.0); "
        "read it with the agentrt that wrote it, or run it again"
    )
