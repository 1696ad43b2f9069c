"""Trace events: structlog configured to stamp, redact and ship every event to the run's collector."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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
from ._redact import known_secrets, redact

Sink = Callable[[dict[str, Any]], None]
Listener = Callable[[Event], None]


def configure(sink: Sink, **static: Any) -> None:
    """Route this process's structlog events to `sink`, stamped with `static` fields (run_id,
    node, pid) and a `ts`, secrets redacted. Events never reach stdout."""
    secrets = known_secrets()
    fields = {"pid": os.getpid(), **static}

    def stamp(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("ts", time.time())
        for k, v in fields.items():
            event.setdefault(k, v)
        return event

    def scrub(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        return redact(event, secrets)  # type: ignore[no-any-return]

    def ship(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        sink(event)
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, stamp, scrub, ship],
        wrapper_class=structlog.BoundLogger,
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )


def get_logger(**bound: Any) -> Any:
    """A structlog logger with `bound` context."""
    return structlog.get_logger().bind(**bound)


def emit(log: Any, event: TraceEvent) -> None:
    """Record one typed event through `log` (a structlog logger, whose bound fields fill what
    the event leaves unset): stamped, redacted and shipped like every event."""
    fields = event_to_dict(event)
    log.info(fields.pop("event"), **fields)


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
        if not self.listeners:
            return
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
    """All events of a trace file as dicts, in file order."""
    decoder = msgspec.json.Decoder()
    with path.open("rb") as f:
        return [decoder.decode(line) for line in f if line.strip()]


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
