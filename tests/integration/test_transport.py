"""The transport on real sockets, in one process: who gets in, full queues, a dying or wedged I/O thread."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from agentrt.runtime._keys import issue
from agentrt.runtime._transport import HWM, Transport

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str | None, bytes]] = []
        self.refused: list[tuple[str, str, str | None]] = []
        self.deaths: list[str] = []
        self.got = threading.Condition()

    def on_frame(self, peer: str | None, frame: bytes) -> None:
        with self.got:
            self.frames.append((peer, bytes(frame)))  # the view is valid only during the call
            self.got.notify_all()

    def on_refused(self, reason: str, detail: str, peer: str | None, size: int) -> None:
        with self.got:
            self.refused.append((reason, detail, peer))
            self.got.notify_all()

    def on_death(self, reason: str) -> None:
        with self.got:
            self.deaths.append(reason)
            self.got.notify_all()

    def wait(self, what: Any, timeout: float = 30) -> None:
        with self.got:
            assert self.got.wait_for(what, timeout), "the transport never got there"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agentrt-t-") as d:
        yield Path(d)


TRUST = issue({"a": ["alpha"], "b": ["beta"]})


def transport(name: str, where: Path, rec: Recorder) -> Transport:
    return Transport(
        bind=f"ipc://{where}/{name}.sock",
        trust=TRUST[name],
        on_frame=rec.on_frame,
        on_refused=rec.on_refused,  # type: ignore[arg-type]
        on_death=rec.on_death,
        max_frame_bytes=64 * 1024,
    )


def test_members_talk_and_each_frame_names_its_member(sock_dir: Path) -> None:
    ra, rb = Recorder(), Recorder()
    a, b = transport("a", sock_dir, ra), transport("b", sock_dir, rb)
    a.start(), b.start()
    try:
        a.expect(b.endpoint, "b")
        a.send(b.endpoint, b"hello from a")
        rb.wait(lambda: rb.frames)
        assert rb.frames == [("a", b"hello from a")]
    finally:
        a.stop(), b.stop()


@pytest.mark.parametrize("offer", ["no keys", "keys not of the run"])
def test_a_peer_without_the_runs_keys_never_completes_a_handshake(sock_dir: Path, offer: str) -> None:
    rec = Recorder()
    node = transport("a", sock_dir, rec)
    node.start()
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        if offer == "keys not of the run":  # it even knows the node's public key
            public, secret = zmq.curve_keypair()
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.curve_serverkey = TRUST["a"].keys.public.encode()
        monitor = sock.get_monitor_socket()
        sock.connect(node.endpoint)
        sock.send(b"let me in")
        seen: list[int] = []
        while not any(e & (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH) for e in seen):
            assert monitor.poll(30_000), "no handshake outcome"
            seen.append(recv_monitor_message(monitor)["event"])
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in seen
        rec.wait(lambda: rec.refused)
        assert rec.refused[0][0] == "unauthenticated" and "CurveZMQ handshake" in rec.refused[0][1]
        assert rec.frames == [], "nothing it sent was handed on"
        sock.close(0)
        monitor.close(0)
    finally:
        ctx.destroy(linger=0)
        node.stop()


def test_a_full_send_queue_drops_and_reports_instead_of_blocking(sock_dir: Path) -> None:
    ra, rb = Recorder(), Recorder()
    a = transport("a", sock_dir, ra)
    b = transport("b", sock_dir, rb)  # bound, never started: its handshakes are never answered
    a.start()
    try:
        a.expect(b.endpoint, "b")
        for i in range(HWM + 500):
            a.send(b.endpoint, f"frame {i}".encode())
        ra.wait(lambda: len(ra.refused) >= 1)
        assert {r[0] for r in ra.refused} == {"queue-full"}
        assert "SNDHWM" in ra.refused[0][1]
    finally:
        a.stop()
        b.stop()


def test_sending_to_an_endpoint_of_no_member_is_refused(sock_dir: Path) -> None:
    rec = Recorder()
    a = transport("a", sock_dir, rec)
    a.start()
    try:
        a.send(f"ipc://{sock_dir}/stranger.sock", b"x")
        rec.wait(lambda: rec.refused)
        assert rec.refused[0][0] == "unroutable" and "not an endpoint of a member" in rec.refused[0][1]
    finally:
        a.stop()


class _Die(BaseException):
    """Gets past every `except Exception`: what a guard cannot catch."""


def test_when_the_io_thread_dies_anyway_the_owner_is_told_why_and_stop_returns(sock_dir: Path) -> None:
    ra, rb = Recorder(), Recorder()
    a, b = transport("a", sock_dir, ra), transport("b", sock_dir, rb)

    def boom(peer: str | None, frame: bytes) -> None:
        raise _Die("poisoned frame")

    b._on_frame = boom
    a.start(), b.start()
    try:
        a.expect(b.endpoint, "b")
        a.send(b.endpoint, b"poison")
        rb.wait(lambda: rb.deaths)
        assert "_Die: poisoned frame" in rb.deaths[0] and b.failure is not None
    finally:
        a.stop()
        b.stop()  # returns although the thread it would stop is gone


def test_stop_returns_when_the_io_thread_is_wedged(sock_dir: Path) -> None:
    ra, rb = Recorder(), Recorder()
    a, b = transport("a", sock_dir, ra), transport("b", sock_dir, rb)
    release = threading.Event()
    entered = threading.Event()

    def wedge(peer: str | None, frame: bytes) -> None:
        entered.set()
        release.wait()

    b._on_frame = wedge
    a.start(), b.start()
    try:
        a.expect(b.endpoint, "b")
        a.send(b.endpoint, b"wedge")
        assert entered.wait(30)
        stopper = threading.Thread(target=b.stop, kwargs={"timeout_s": 0.5})
        stopper.start()
        stopper.join(60)
        assert not stopper.is_alive(), "stop() blocked on a wedged I/O thread"
        assert b.errors["stop-timeout"] == 1
    finally:
        release.set()
        a.stop()


def test_frames_one_thread_sends_arrive_in_its_order_whatever_other_threads_send(sock_dir: Path) -> None:
    """Each thread sends on its own socket: its frames to a peer keep their order; frames of
    different threads are not ordered with each other (nor were they through one relay)."""
    ra, rb = Recorder(), Recorder()
    a, b = transport("a", sock_dir, ra), transport("b", sock_dir, rb)
    a.start(), b.start()
    try:
        a.expect(b.endpoint, "b")

        def burst(t: int) -> None:
            for i in range(300):
                a.send(b.endpoint, f"{t}:{i}".encode())

        threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rb.wait(lambda: len(rb.frames) == 1200)
        got = [f.decode().split(":") for _, f in rb.frames]
        for t in range(4):
            assert [int(i) for s, i in got if s == str(t)] == list(range(300))
    finally:
        a.stop(), b.stop()


def test_a_handler_run_in_place_that_blocks_does_not_stop_the_io_loop(sock_dir: Path) -> None:
    """Leader/Followers: the thread that received a frame runs its handler itself; when that
    handler blocks, another thread takes the loop over, and frames keep being dispatched, in
    the order they came."""
    ra, rb = Recorder(), Recorder()
    a, b = transport("a", sock_dir, ra), transport("b", sock_dir, rb)
    release = threading.Event()
    ran_on: list[str] = []

    def block() -> None:
        ran_on.append(threading.current_thread().name)
        release.wait(30)

    def on_frame(peer: str | None, frame: bytes) -> None:
        rb.on_frame(peer, frame)
        if bytes(frame).startswith(b"block"):
            assert b.run_here(block)

    b._on_frame = on_frame
    a.start(), b.start()
    try:
        a.expect(b.endpoint, "b")
        a.send(b.endpoint, b"block-1")
        rb.wait(lambda: ran_on)
        for i in range(50):
            a.send(b.endpoint, f"after-{i}".encode())
        rb.wait(lambda: len(rb.frames) == 51)  # dispatched while the handler still blocks
        assert [f for _, f in rb.frames] == [b"block-1"] + [f"after-{i}".encode() for i in range(50)]
        assert ran_on[0].startswith("agentrt-io") and not release.is_set()
        assert not b.run_here(block)  # not from a thread that is not leading the loop
    finally:
        release.set()
        a.stop(), b.stop()
