"""Moves frames between processes: one I/O thread owns every ZeroMQ socket of the process.

Incoming frames arrive on one ROUTER bound at the process's endpoint. Outgoing frames go
through one DEALER per peer endpoint. Other threads never touch those sockets: they hand
frames to the I/O thread over an inproc PUSH socket of their own (ZeroMQ sockets are not
thread-safe). Trace events take the same path to a PUSH socket aimed at the collector.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import zmq

_OUT, _TRACE, _STOP = b"E", b"T", b"X"
_DRAIN = 512  # frames taken from one socket per poll, so no socket starves the others
_counter = itertools.count()

FrameHandler = Callable[[bytes, list[bytes]], None]


class Transport:
    """One process's ZeroMQ sockets and the I/O thread that owns them."""

    def __init__(
        self,
        *,
        bind: str,
        on_frames: FrameHandler,
        trace_to: str | None = None,
        collect_at: str | None = None,
        on_trace: Callable[[bytes], None] | None = None,
        max_frame_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.endpoint = bind
        self._on_frames = on_frames
        self._on_trace = on_trace
        self._ctx = zmq.Context()
        self._inproc = f"inproc://agentrt-out-{next(_counter)}"
        self._local = threading.local()
        self._pushes: list[zmq.Socket] = []
        self._pushes_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._io_ident: int | None = None  # the I/O thread's, once it runs
        self.dropped_traces = 0

        # Created here, then owned by the I/O thread alone (thread start is a full barrier).
        self._router = self._ctx.socket(zmq.ROUTER)
        # Hard ceiling against memory exhaustion; the codec enforces the real, smaller limit
        # so an oversized frame is rejected and traced rather than silently disconnected.
        self._router.setsockopt(zmq.MAXMSGSIZE, max(max_frame_bytes * 4, 1 << 20))
        self._router.setsockopt(zmq.RCVHWM, 0)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.bind(bind)
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, 0)
        self._pull.bind(self._inproc)
        self._collector: zmq.Socket | None = None
        if collect_at is not None:
            self._collector = self._ctx.socket(zmq.PULL)
            self._collector.setsockopt(zmq.RCVHWM, 0)
            self._collector.setsockopt(zmq.LINGER, 0)
            self._collector.bind(collect_at)
        self._trace_out: zmq.Socket | None = None
        if trace_to is not None:
            self._trace_out = self._ctx.socket(zmq.PUSH)
            self._trace_out.setsockopt(zmq.SNDHWM, 0)
            self._trace_out.setsockopt(zmq.LINGER, 3000)
            self._trace_out.connect(trace_to)
        self._dealers: dict[bytes, zmq.Socket] = {}

    # -- any thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="agentrt-io", daemon=True)
        self._thread.start()

    def _push(self) -> zmq.Socket:
        sock: zmq.Socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self._inproc)
            self._local.sock = sock
            with self._pushes_lock:
                self._pushes.append(sock)
        return sock

    def send(self, endpoint: str, frame: bytes) -> None:
        """Queue `frame` for the process bound at `endpoint` (sent at once when called on the
        I/O thread, as acknowledgements are: it owns the sockets)."""
        if threading.get_ident() == self._io_ident:
            self._out(endpoint.encode(), frame)
        else:
            self._push().send_multipart([_OUT, endpoint.encode(), frame], copy=False)

    def ship(self, event: bytes) -> None:
        """Queue one packed trace event for the collector (dropped if there is none)."""
        if self._trace_out is not None:
            if threading.get_ident() == self._io_ident:
                self._trace(event)
            else:
                self._push().send_multipart([_TRACE, event], copy=False)
        elif self._on_trace is not None:
            self._on_trace(event)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the I/O thread (flushing queued frames) and release every socket."""
        if self._thread is not None and self._thread.is_alive():
            self._push().send_multipart([_STOP])
            self._thread.join(timeout_s)
        with self._pushes_lock:
            for sock in self._pushes:
                sock.close(linger=0)
            self._pushes.clear()
        self._ctx.term()

    # -- the I/O thread ----------------------------------------------------------------

    def _dealer(self, endpoint: bytes) -> zmq.Socket:
        sock = self._dealers.get(endpoint)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.LINGER, 3000)
            sock.connect(endpoint.decode())
            self._dealers[endpoint] = sock
        return sock

    def _out(self, endpoint: bytes, frame: Any) -> None:
        self._dealer(endpoint).send(frame, zmq.NOBLOCK)

    def _trace(self, event: Any) -> None:
        assert self._trace_out is not None  # events are shipped only when there is one
        try:
            self._trace_out.send(event, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped_traces += 1

    def _loop(self) -> None:
        self._io_ident = threading.get_ident()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        if self._collector is not None:
            poller.register(self._collector, zmq.POLLIN)
        running = True
        try:
            while running:
                ready = dict(poller.poll(1000))
                if self._router in ready:
                    for _ in range(_DRAIN):
                        try:
                            frames = self._router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_frames(frames[0], frames[1:])
                if self._collector is not None and self._collector in ready:
                    for _ in range(_DRAIN):
                        try:
                            event = self._collector.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if self._on_trace is not None:
                            self._on_trace(event)
                if self._pull in ready:
                    for _ in range(_DRAIN):
                        try:
                            msg = self._pull.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        tag = msg[0]
                        if tag == _OUT:
                            self._out(msg[1], msg[2])
                        elif tag == _TRACE:
                            self._trace(msg[1])
                        elif tag == _STOP:
                            running = False
                            break
        finally:
            self._router.close()
            self._pull.close()
            if self._collector is not None:
                self._collector.close()
            if self._trace_out is not None:
                self._trace_out.close()
            for sock in self._dealers.values():
                sock.close()
