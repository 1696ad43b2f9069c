"""Moves frames between processes: each thread sends on sockets it owns; I/O threads receive.

Incoming frames arrive on one ROUTER bound at the process's endpoint, read by the I/O thread
that leads (Leader/Followers, as ACE's TP_Reactor): it polls every socket the loop owns and
dispatches what arrives, one frame at a time and in order. A dispatch may ask to run a handler
in place (`run_here`: a read-only skill call), on the thread that received it, with no
hand-off: the leader lets go of the loop, runs the handler, then leads again or waits as a
follower. If the handler takes long, a watchdog promotes another thread to lead after
WATCH_S (2 ms), so the loop, and the heartbeats that prove it runs, never wait on a handler.
The loop's sockets pass between threads only with the leader lock, a full memory barrier, as
ZeroMQ requires.
Outgoing frames go through one DEALER per peer endpoint per sending thread: ZeroMQ's rule is
one socket per thread, not one thread for all sockets, so a thread that sends needs no hand-off
to another (a thread woken on the other CPU costs 30-40 us on a VM). Frames one thread sends to
one peer arrive in the order it sent them; frames of different threads are not ordered (nor
were they when one thread relayed them: it read their queues in turn). What must prove that the
I/O loop runs (heartbeats) is handed to the I/O thread over an inproc PUSH socket and sent on
its own DEALER. Trace batches go on the process's one PUSH to the collector, taken under a lock
by the thread that ships (so they arrive in order). A thread's sockets are closed when the
thread ends (or at `stop`).

Every socket that faces another process is CurveZMQ: the ROUTER and the collector are CURVE
servers behind the ZAP gate (`_auth.Gate`, served on the I/O thread too), every DEALER and the
trace PUSH are CURVE clients that know the public key of the member they connect to. A frame is
handed on with the name of the member it came from (its `User-Id`).

Bounds, and what happens at each (zguide's high-water mark of 1000 messages is the default):

- ROUTER (envelopes in): RCVHWM 1000 per connected peer; when a peer's queue is full libzmq
  stops reading its connection, so the backlog stays in the sender's queue. MAXMSGSIZE is twice
  the frame limit: a frame over the limit but under that is read and refused as `too-large`
  (a dead letter); over it, libzmq drops the connection before allocating the frame. A message
  of several parts is read part by part and every part after the first is discarded unread by
  Python: it is refused as `malformed`. (libzmq hands a message over only once all its parts
  are in, and bounds only the size of each: a member of the run can make it hold parts x
  MAXMSGSIZE for a moment. No libzmq option bounds the number of parts.)
- DEALER (envelopes out, one per peer per sending thread): SNDHWM 1000; sent with NOBLOCK, so a full queue (a peer
  that does not read) drops the frame as a `queue-full` dead letter instead of blocking. Work
  the messenger keeps for acknowledgement is sent again later. LINGER 3 s at close.
- Trace PUSH (node -> collector): SNDHWM 10,000 (events are small and many); NOBLOCK, a full
  queue drops the event and counts it (`dropped_traces`). Collector PULL: RCVHWM 10,000 per node,
  MAXMSGSIZE twice the frame limit, one part per event, only from the run's nodes.
- Inproc PUSH (any thread -> the I/O thread): HWM 1000 each side; a send waits at most 5 s for
  room, then the frame is dropped as `queue-full`: no thread ever blocks forever on the I/O
  thread.

No callback can kill the I/O thread: each one runs under a guard that counts and reports what it
raised. If the thread dies anyway, `on_death` is called with the reason; the node exits loudly
(and the supervisor restarts it) rather than wedging.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import traceback
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from agentrt.protocols import DeadLetterReason

from ._auth import MESSAGES_DOMAIN, TRACE_DOMAIN, Gate
from ._keys import SUPERVISOR, Trust

_OUT, _STOP = b"E", b"X"
_DRAIN = 512  # messages taken from one socket per poll, so no socket starves the others
_counter = itertools.count()

HWM = 1000  # zguide's default: messages queued per socket (per peer for ROUTER/PULL)
TRACE_HWM = 10_000
INPROC_WAIT_MS = 5000  # how long a thread may wait for room in the I/O thread's queue
LINGER_MS = 3000  # how long a closing socket may still try to deliver what it holds
MAX_IO_THREADS = 32  # leader and followers, those running handlers in place included
WATCH_S = 0.002  # how long the I/O loop may go unled while a handler runs in place
# A peer that offers a key not of the run fails AUTH; one that offers no CURVE fails PROTOCOL
# or, when it sees the mismatch first and hangs up, NO_DETAIL (as a peer dying mid-handshake
# would, which is rare: handshakes take milliseconds).
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_HOW = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "it hung up mid-handshake",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "it does not speak CurveZMQ with this socket's key",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "its key is not one of the run's",
}

# A received frame is handed on as a view of libzmq's buffer (no copy); it is valid only
# during the call.
FrameHandler = Callable[[str | None, memoryview], None]  # (the member it came from, the frame)
TraceHandler = Callable[[str, memoryview], None]  # (the node it came from, the packed event)
RefusalHandler = Callable[[DeadLetterReason, str, str | None, int], None]  # reason, detail, peer, bytes
DeathHandler = Callable[[str], None]


class _Owned:
    """The sockets one thread owns: its inproc PUSH to the I/O thread and its DEALERs to peers.
    Closed by the thread itself when it ends (its thread-local dies with it), or by `stop`."""

    def __init__(self) -> None:
        self.push: zmq.Socket[Any] | None = None
        self.dealers: dict[bytes, zmq.Socket[Any]] = {}
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in [self.push, *self.dealers.values()]:
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()  # each with its own linger: DEALERs still deliver what they hold
        self.dealers.clear()

    def __del__(self) -> None:
        self.close()


class Transport:
    """One process's ZeroMQ sockets and the I/O thread that receives on them."""

    def __init__(
        self,
        *,
        bind: str,
        trust: Trust,
        on_frame: FrameHandler,
        on_refused: RefusalHandler,
        trace_to: str | None = None,
        collect_at: str | None = None,
        on_trace: TraceHandler | None = None,
        on_death: DeathHandler | None = None,
        max_frame_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.endpoint = bind
        self.trust = trust
        self._on_frame = on_frame
        self._on_refused = on_refused
        self._on_trace = on_trace
        self._on_death = on_death
        self._max_msg = max(2 * max_frame_bytes, 64 * 1024)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._inproc = f"inproc://agentrt-out-{next(_counter)}"
        self._local = threading.local()
        self._owned: weakref.WeakSet[_Owned] = weakref.WeakSet()  # every thread's, for stop()
        self._owned_lock = threading.Lock()
        self._thread: threading.Thread | None = None  # the first I/O thread
        # Leader/Followers (ACE's TP_Reactor): the I/O thread that holds `_leader` polls and
        # dispatches; one that runs a handler in place (`run_here`) lets go first, and comes
        # back as a follower. `_io_ident` is the leader's, while it leads.
        self._leader = threading.Lock()
        self._io_ident: int | None = None
        self._inline: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._inline_running = 0  # I/O threads running a handler in place
        self._io_threads = 0
        self._let_go_at: float | None = None  # when the leader let go with no one to follow it
        self._done = False  # the I/O loop has stopped for good (asked to, or died)
        self._sockets_closed = threading.Event()
        self._closed = False
        self._server_keys: dict[str, bytes] = {}  # endpoint -> the public key of who binds it
        self.dropped_traces = 0
        self.errors: Counter[str] = Counter()  # what the guards caught, by where
        self.failure: str | None = None  # why the I/O thread died, if it did

        # Created here, then owned by the I/O thread alone (thread start is a full barrier).
        # The ZAP gate binds first: a CURVE server with no ZAP handler would admit any key.
        self._gate = Gate(self._ctx, trust)
        self._gate.start()
        self._router = self._server(zmq.ROUTER, MESSAGES_DOMAIN, HWM)
        self._router.bind(bind)
        # What peers reach: the port a `tcp://host:*` bind was given (an ipc path as is).
        self.endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._monitors = [self._router.get_monitor_socket(_HANDSHAKE_FAILED, self._monitor_address())]
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, HWM)
        self._pull.bind(self._inproc)
        self._collector: zmq.Socket[Any] | None = None
        self.collect_endpoint: str | None = None
        if collect_at is not None:
            self._collector = self._server(zmq.PULL, TRACE_DOMAIN, TRACE_HWM)
            self._collector.bind(collect_at)
            self.collect_endpoint = self._collector.getsockopt_string(zmq.LAST_ENDPOINT)
            self._monitors.append(self._collector.get_monitor_socket(_HANDSHAKE_FAILED, self._monitor_address()))
        self._trace_out: zmq.Socket[Any] | None = None
        self._trace_lock = threading.Lock()  # the trace PUSH is used by any thread, one at a time
        if trace_to is not None:
            # The collector is the supervisor's: its key is the one to expect there.
            self._trace_out = self._client(zmq.PUSH, trust.public_key(SUPERVISOR), TRACE_HWM)
            self._trace_out.connect(trace_to)
        self._dealers: dict[bytes, zmq.Socket[Any]] = {}

    @staticmethod
    def _monitor_address() -> str:
        return f"inproc://agentrt-monitor-{next(_counter)}"

    def _server(self, kind: int, domain: str, hwm: int) -> zmq.Socket[Any]:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.trust.keys.secret.encode("ascii"))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.trust.keys.public.encode("ascii"))
        sock.setsockopt_string(zmq.ZAP_DOMAIN, domain)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler: refuse, never admit
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_msg)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def _client(self, kind: int, server_key: bytes | None, hwm: int) -> zmq.Socket[Any]:
        if server_key is None:
            raise KeyError("no public key for the member that binds this endpoint")
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.trust.keys.secret.encode("ascii"))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.trust.keys.public.encode("ascii"))
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        return sock

    # -- any thread ------------------------------------------------------------------

    def expect(self, endpoint: str, member: str) -> None:
        """Say which member binds `endpoint`: connections to it check that member's key."""
        key = self.trust.public_key(member)
        if key is not None:
            self._server_keys[endpoint] = key

    def start(self) -> None:
        self._thread = self._spawn()
        threading.Thread(target=self._watch, name="agentrt-io-watch", daemon=True).start()

    def _spawn(self) -> threading.Thread:
        self._io_threads += 1
        n = self._io_threads
        thread = threading.Thread(target=self._loop, name="agentrt-io" if n == 1 else f"agentrt-io-{n}", daemon=True)
        thread.start()
        return thread

    def run_here(self, fn: Callable[..., Any], *args: Any) -> bool:
        """From a frame callback on the I/O thread: run `fn(*args)` on this same thread once
        the frame is dispatched (no hand-off), while the I/O loop goes on on another thread
        if it takes long (the watchdog promotes one after WATCH_S). False when called
        elsewhere, or when all but one I/O thread already run handlers: run it another way."""
        if threading.get_ident() != self._io_ident or self._inline_running + len(self._inline) >= MAX_IO_THREADS - 1:
            return False
        self._inline.append((fn, args))
        return True

    def _watch(self) -> None:
        """Promote a follower when the leader let go to run a handler that is taking long and
        no thread leads: the I/O loop (and the heartbeats that prove it) never waits on a
        handler for more than about WATCH_S."""
        while not self._done:
            time.sleep(WATCH_S)
            at = self._let_go_at
            if at is None or self._leader.locked() or time.monotonic() - at < WATCH_S:
                continue
            if self._io_threads < MAX_IO_THREADS and not self._done:
                self._let_go_at = None
                self._spawn()

    def _mine(self) -> _Owned:
        """This thread's sockets (ContextTerminated once the transport has stopped)."""
        owned: _Owned | None = getattr(self._local, "owned", None)
        if owned is None:
            with self._owned_lock:
                if self._closed:
                    raise zmq.ContextTerminated()
                owned = _Owned()
                self._owned.add(owned)
            self._local.owned = owned
        return owned

    def _push(self) -> zmq.Socket[Any]:
        owned = self._mine()
        if owned.push is None:
            with self._owned_lock:
                if self._closed:
                    raise zmq.ContextTerminated()
                sock = self._ctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.SNDHWM, HWM)
                sock.setsockopt(zmq.SNDTIMEO, INPROC_WAIT_MS)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self._inproc)
                owned.push = sock
        return owned.push

    def send(self, endpoint: str, frame: bytes) -> None:
        """Send `frame` to the process bound at `endpoint` on this thread's own DEALER to it.
        Never raises, never blocks: a frame that cannot be queued is refused as a dead letter."""
        if threading.get_ident() == self._io_ident:
            self._out(self._dealers, endpoint.encode(), frame)
            return
        try:
            owned = self._mine()
        except zmq.ZMQError:  # stopping: the context is gone
            self.errors["send"] += 1
            return
        self._out(owned.dealers, endpoint.encode(), frame, owned)

    def send_via_io(self, endpoint: str, frame: bytes) -> None:
        """Queue `frame` for the I/O thread to send (what must prove that its loop runs:
        heartbeats). Never raises; waits at most INPROC_WAIT_MS for room, else refuses it."""
        if threading.get_ident() == self._io_ident:
            self._out(self._dealers, endpoint.encode(), frame)
            return
        try:
            self._push().send_multipart([_OUT, endpoint.encode(), frame], copy=False)
        except zmq.Again:
            self._refuse(
                "queue-full",
                f"the I/O thread's queue stayed full for {INPROC_WAIT_MS / 1000:g}s; a frame for "
                f"{endpoint} was dropped",
                None,
                len(frame),
            )
        except zmq.ZMQError as exc:  # stopping: the context is gone
            self.errors["send"] += 1
            if not self._closed:
                self._refuse("unroutable", f"a frame for {endpoint} could not be queued: {exc}", None, len(frame))

    def ship(self, event: bytes) -> None:
        """Send one packed batch of trace events to the collector, on this thread (dropped and
        counted if it cannot go). One socket for the process, taken under a lock (a full memory
        barrier, as ZeroMQ asks of a socket that moves between threads): a process's batches
        reach the collector in the order they were shipped."""
        if self._trace_out is not None:
            self._trace(event)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the I/O thread (flushing queued frames) and release every socket. Returns
        within about `2 * timeout_s` whatever state the I/O thread is in."""
        if self._thread is None:  # never started: its sockets are this thread's to close
            self._close_sockets()
        elif not self._sockets_closed.is_set():
            try:
                self._push().send_multipart([_STOP])
            except zmq.ZMQError:
                self.errors["stop"] += 1
            self._sockets_closed.wait(timeout_s)
        with self._owned_lock:
            self._closed = True
            owned = list(self._owned)
        for sockets in owned:
            sockets.close()
        if not self._sockets_closed.is_set():
            # Wedged in a callback: its sockets stay open, so term() would wait forever.
            # The process is on its way out; leave the context to it.
            self.errors["stop-timeout"] += 1
            return
        closer = threading.Thread(target=self._ctx.term, name="agentrt-io-term", daemon=True)
        closer.start()
        closer.join(timeout_s)

    # -- the I/O thread ----------------------------------------------------------------

    def _refuse(self, reason: DeadLetterReason, detail: str, peer: str | None, size: int) -> None:
        try:
            self._on_refused(reason, detail, peer, size)
        except Exception:  # the report failed; the frame is dropped all the same
            self.errors["on_refused"] += 1

    def _dealer(self, dealers: dict[bytes, zmq.Socket[Any]], endpoint: bytes, owned: _Owned | None) -> zmq.Socket[Any]:
        sock = dealers.get(endpoint)
        if sock is None:
            where = endpoint.decode()
            with self._owned_lock:  # a thread's sockets are made while stop() cannot close them
                if owned is not None and (self._closed or owned.closed):
                    raise zmq.ContextTerminated()
                sock = self._client(zmq.DEALER, self._server_keys.get(where), HWM)
                try:
                    sock.connect(where)
                except zmq.ZMQError:
                    sock.close(linger=0)
                    raise
                dealers[endpoint] = sock
        return sock

    def _out(
        self, dealers: dict[bytes, zmq.Socket[Any]], endpoint: bytes, frame: Any, owned: _Owned | None = None
    ) -> None:
        """Send `frame` on the DEALER to `endpoint` among `dealers` (the calling thread's)."""
        size = len(frame)
        try:
            self._dealer(dealers, endpoint, owned).send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self._refuse(
                "queue-full",
                f"the send queue to {endpoint.decode()} is full ({HWM} frames, SNDHWM): its node "
                "is not reading; the frame was dropped",
                None,
                size,
            )
        except KeyError:
            self._refuse(
                "unroutable",
                f"{endpoint.decode()} is not an endpoint of a member of the run (no public key "
                "to check it with); the frame was not sent",
                None,
                size,
            )
        except Exception as exc:  # a bad endpoint, a closed socket: refuse the frame, keep going
            self._refuse("unroutable", f"cannot send to {endpoint.decode()}: {type(exc).__name__}: {exc}", None, size)

    def _trace(self, event: Any) -> None:
        with self._trace_lock:
            if self._trace_out is None or self._sockets_closed.is_set():
                self.dropped_traces += 1
                return
            try:
                self._trace_out.send(event, zmq.NOBLOCK)
            except zmq.ZMQError:
                self.dropped_traces += 1

    def _receive(self, sock: zmq.Socket[Any], *, routed: bool) -> tuple[str | None, memoryview | None] | None:
        """One message from `sock`, part by part: (its member, its one frame), or (member, None)
        for a message of several parts, refused here and its other parts discarded unread.
        None when there is nothing to read."""
        try:
            if routed:  # the ROUTER's routing id comes first
                sock.recv(zmq.NOBLOCK)
                if not sock.getsockopt(zmq.RCVMORE):
                    return None, None
            part = sock.recv(zmq.NOBLOCK, copy=False)  # a Frame: it carries the User-Id
        except zmq.Again:
            return None
        frame = part
        peer = _user_id(frame)
        parts, size = 1, len(frame)
        while part.more:
            part = sock.recv(copy=False)  # the rest of the message is already here: no wait
            parts += 1
            size += len(part)
        if parts > 1:
            self._refuse(
                "malformed",
                f"a message of {parts} parts ({size} bytes); one frame per message is the rule",
                peer,
                size,
            )
            return peer, None
        return peer, frame.buffer  # a view of the frame libzmq received: no copy

    def _drain_router(self) -> None:
        for _ in range(_DRAIN):
            got = self._receive(self._router, routed=True)
            if got is None:
                return
            peer, frame = got
            if frame is not None:
                try:
                    self._on_frame(peer, frame)
                except Exception:
                    self.errors["on_frame"] += 1
                if self._inline:  # it runs here next; the next leader reads on, in order
                    return

    def _drain_collector(self, collector: zmq.Socket[Any]) -> None:
        for _ in range(_DRAIN):
            got = self._receive(collector, routed=False)
            if got is None:
                return
            peer, event = got
            if event is None or self._on_trace is None:
                continue
            if peer is None or peer not in self.trust.members or peer == self.trust.me:
                self._refuse("unauthenticated", "a trace event from a peer that is not a node of the run", peer, len(event))
                continue
            try:
                self._on_trace(peer, event)
            except Exception:
                self.errors["on_trace"] += 1

    def _drain_inproc(self) -> bool:
        """Send what other threads queued; False once asked to stop."""
        for _ in range(_DRAIN):
            try:
                msg = self._pull.recv_multipart(zmq.NOBLOCK)  # small frames: copying is cheaper
            except zmq.Again:
                return True
            tag = msg[0]
            if tag == _OUT:
                self._out(self._dealers, msg[1], msg[2])
            elif tag == _STOP:
                return False
        return True

    def _handshake_failed(self, monitor: zmq.Socket[Any]) -> None:
        event = recv_monitor_message(monitor, zmq.NOBLOCK)
        endpoint = event.get("endpoint", b"")
        where = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        self._refuse(
            "unauthenticated",
            f"a peer failed the CurveZMQ handshake at {where}: {_HOW.get(event['event'], 'failed')} "
            f"({zmq.Event(event['event']).name}, code {event['value']}); only the run's members hold "
            "its keys, and nothing it sent was read",
            None,
            0,
        )

    def _guarded(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except zmq.Again:
            return None
        except Exception:
            self.errors[where] += 1
            return None

    def _loop(self) -> None:
        """One I/O thread: lead (poll and dispatch) while it holds `_leader`; let go to run a
        handler in place; lead again or wait as a follower."""
        poller = self._poller()
        holding = False
        try:
            self._leader.acquire()
            holding = True
            while not self._done:
                self._io_ident = threading.get_ident()
                self._let_go_at = None
                if not self._serve(poller):  # asked to stop
                    self._done = True
                    self._close_sockets()
                    return
                if not self._inline:
                    continue
                work, self._inline = self._inline, []
                self._inline_running += 1
                self._io_ident = None
                self._let_go_at = time.monotonic()
                holding = False
                self._leader.release()
                for fn, args in work:
                    try:
                        fn(*args)
                    except Exception:
                        self.errors["run_here"] += 1
                self._leader.acquire()
                holding = True
                self._inline_running -= 1
        except BaseException as exc:
            self.failure = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            if self._on_death is not None:
                try:
                    self._on_death(self.failure)
                except BaseException:
                    self.errors["on_death"] += 1
            if not holding:
                self._leader.acquire()
                holding = True
            if not self._done:
                self._done = True
                self._close_sockets()
        finally:
            if holding:
                self._io_ident = None
                self._leader.release()

    def _close_sockets(self) -> None:
        with self._trace_lock:  # no thread is shipping on it now, and none will
            socks = [self._router, self._pull, self._collector, self._trace_out, *self._dealers.values(), *self._monitors]
            self._trace_out = None
        for sock in socks:
            if sock is not None:
                try:
                    sock.close()
                except Exception:
                    self.errors["close"] += 1
        try:
            self._gate.stop()
        except Exception:
            self.errors["close"] += 1
        self._sockets_closed.set()

    def _poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        for sock in [self._router, self._pull, self._gate.zap_socket, *self._monitors, self._collector]:
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
        return poller

    def _serve(self, poller: zmq.Poller) -> bool:
        """One turn of the I/O loop (the leader's); False once asked to stop."""
        ready = dict(poller.poll(1000))
        if self._gate.zap_socket in ready:
            self._guarded("zap", self._gate.handle)
        collector = self._collector
        if collector is not None and collector in ready:  # first: events before the replies
            self._guarded("collector", self._drain_collector, collector)  # they led to
        if self._router in ready:
            self._guarded("router", self._drain_router)
        for monitor in self._monitors:
            if monitor in ready:
                self._guarded("monitor", self._handshake_failed, monitor)
        return not (self._pull in ready and self._guarded("inproc", self._drain_inproc) is False)


def _user_id(frame: zmq.Frame) -> str | None:
    """The member a frame came from: the User-Id the ZAP gate gave its connection."""
    try:
        return frame.get("User-Id")  # type: ignore[no-any-return]
    except zmq.ZMQError:
        return None


