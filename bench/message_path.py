"""Message path: agentrt actor-to-actor asks between two node processes, against raw pyzmq.

The baseline is the least a ZeroMQ program can do for the same exchange: a DEALER in one
process and a ROUTER in another, msgspec-encoded request and reply frames, no validation,
no tracing, no actor threads. `raw curve` is the same over CurveZMQ, as agentrt's sockets
are (the honest ceiling once authentication is on); `pykka` is an ask to a pykka actor in the
same process (no sockets at all); `ray` is a Ray actor call between two processes, when `ray`
is importable (it is not a dependency). `transport` is agentrt's Transport alone between two
processes pinned as nodes are (CurveZMQ with ZAP, the Leader/Followers I/O loop, the asking
thread handed each reply by the I/O thread): what the I/O structure costs before any
envelope, delivery, validation, actor or trace. agentrt adds envelopes, CurveZMQ with ZAP, schema
checks at sender and receiver, reliable delivery (acks, dedup) and a trace event for each
send, receive and task state, all on.

    python bench/message_path.py [--n 2000] [--pipelined 20000] [--window 32] [--pin auto|on|off]

Each row: p50/p99 round trip over `--n` sequential asks, and throughput over `--pipelined`
asks with `--window` in flight; `1KB`/`64KB` rows pad each request (echoed back). Then the CPU
each agentrt process used per round trip (the supervisor's is its trace collector's), from
/proc. Its last two lines are `agentrt/raw p50 latency ratio: X.XX` and
`agentrt/raw throughput ratio: X.XX` (raw = plain raw pyzmq, same payload).
bench/message_cpu.py breaks the CPU of the same ask down by part, in one process.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pykka
import zmq

from agentrt.runtime import Runtime, spec_from_dict

HERE = Path(__file__).resolve().parent
Result = tuple[list[float], float, int]  # round trips (s), pipelined seconds, pipelined count


def _raw_echo_server(endpoint: str, ready: Any, secret: bytes | None) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    if secret is not None:  # CurveZMQ as agentrt's sockets use it (without ZAP: crypto only)
        sock.curve_server = True
        sock.curve_secretkey = secret
    sock.bind(endpoint)
    ready.set()
    dec = msgspec.msgpack.Decoder()
    enc = msgspec.msgpack.Encoder()
    while True:
        ident, frame = sock.recv_multipart()
        msg = dec.decode(frame)
        if msg.get("stop"):
            break
        sock.send_multipart([ident, enc.encode(msg)])  # the payload back, as agentrt's echo does
    sock.close(linger=0)
    ctx.term()


def raw(n: int, pipelined: int, window: int, pad: int = 0, curve: bool = False) -> Result:
    sock_dir = tempfile.mkdtemp(prefix="agentrt-bench-")
    endpoint = f"ipc://{sock_dir}/echo.sock"
    server_public, server_secret = zmq.curve_keypair()
    ready = mp.get_context("spawn").Event()
    server = mp.get_context("spawn").Process(
        target=_raw_echo_server, args=(endpoint, ready, server_secret if curve else None)
    )
    server.start()
    ready.wait(30)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    if curve:
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.curve_serverkey = server_public
    sock.connect(endpoint)
    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder()
    extra = {"pad": "x" * pad} if pad else {}
    rtts = []
    for i in range(n):
        t = time.perf_counter()
        sock.send(enc.encode({"seq": i, **extra}))
        assert dec.decode(sock.recv())["seq"] == i
        rtts.append(time.perf_counter() - t)
    t = time.perf_counter()
    sent = received = 0
    while received < pipelined:
        while sent < pipelined and sent - received < window:
            sock.send(enc.encode({"seq": sent, **extra}))
            sent += 1
        dec.decode(sock.recv())
        received += 1
    elapsed = time.perf_counter() - t
    sock.send(enc.encode({"stop": True}))
    server.join(10)
    sock.close(linger=0)
    ctx.term()
    shutil.rmtree(sock_dir, ignore_errors=True)
    return rtts, elapsed, pipelined


def _transport_echo(me: str, peer: str, trust: Any, ready: Any, stop: Any, cpus: list[int]) -> None:
    from agentrt.runtime._node import _pin
    from agentrt.runtime._transport import Transport

    if cpus:
        _pin("b", cpus)
    dec = msgspec.msgpack.Decoder()
    enc = msgspec.msgpack.Encoder()
    box: dict[str, Transport] = {}
    echo = Transport(
        bind=me,
        trust=trust,
        on_frame=lambda _peer, frame: box["t"].send(peer, enc.encode(dec.decode(frame))),
        on_refused=lambda *_: None,
    )
    echo.expect(peer, "asker")
    box["t"] = echo
    echo.start()
    ready.set()
    stop.wait()
    echo.stop()


def _transport_asker(
    me: str, peer: str, trust: Any, n: int, pipelined: int, window: int, cpus: list[int], out: Any
) -> None:
    from agentrt.runtime._node import _pin
    from agentrt.runtime._transport import Transport

    if cpus:
        _pin("a", cpus)
    dec = msgspec.msgpack.Decoder()
    enc = msgspec.msgpack.Encoder()
    replies = threading.Semaphore(0)
    asker = Transport(
        bind=me, trust=trust, on_frame=lambda _peer, frame: (dec.decode(frame), replies.release()), on_refused=lambda *_: None
    )
    asker.expect(peer, "echo")
    asker.start()
    for i in range(200):  # warm up (and the CurveZMQ handshake)
        asker.send(peer, enc.encode({"seq": i}))
        replies.acquire()
    rtts = []
    for i in range(n):
        t = time.perf_counter()
        asker.send(peer, enc.encode({"seq": i}))
        replies.acquire()
        rtts.append(time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(pipelined):
        if i >= window:
            replies.acquire()
        asker.send(peer, enc.encode({"seq": i}))
    for _ in range(min(window, pipelined)):
        replies.acquire()
    out.put((rtts, time.perf_counter() - t, pipelined))
    asker.stop()


def transport(n: int, pipelined: int, window: int, pin: str) -> Result:
    """agentrt's Transport alone between two processes pinned as nodes are: CurveZMQ with the
    ZAP gate, one DEALER per sending thread, the Leader/Followers I/O loop, and the asking
    thread waiting for the I/O thread to hand it each reply, as an ask's caller does; no
    envelopes, delivery, validation, actors or trace."""
    from agentrt.runtime._keys import issue
    from agentrt.runtime._spec import placement

    cpus = placement(_spec(pin), sorted(os.sched_getaffinity(0)))  # as the nodes' are: a asks, b echoes
    sock_dir = tempfile.mkdtemp(prefix="agentrt-bench-")
    trust = issue({"asker": [], "echo": []})
    at = {name: f"ipc://{sock_dir}/{name}.sock" for name in trust if name != "supervisor"}
    spawn = mp.get_context("spawn")
    ready, stop, out = spawn.Event(), spawn.Event(), spawn.Queue()
    echo = spawn.Process(target=_transport_echo, args=(at["echo"], at["asker"], trust["echo"], ready, stop, cpus.get("b", [])))
    echo.start()
    ready.wait(30)
    asker = spawn.Process(
        target=_transport_asker, args=(at["asker"], at["echo"], trust["asker"], n, pipelined, window, cpus.get("a", []), out)
    )
    asker.start()
    try:
        return out.get(timeout=600)  # type: ignore[no-any-return]
    finally:
        stop.set()
        asker.join(10)
        echo.join(10)
        shutil.rmtree(sock_dir, ignore_errors=True)


class _PykkaEcho(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def pykka_ask(n: int, pipelined: int, window: int) -> Result:
    """An ask to a pykka actor in this process: the floor of a thread hand-off each way."""
    ref = _PykkaEcho.start()
    try:
        rtts = []
        for i in range(n):
            t = time.perf_counter()
            assert ref.ask({"seq": i})["seq"] == i
            rtts.append(time.perf_counter() - t)
        t = time.perf_counter()
        in_flight: collections.deque[Any] = collections.deque()
        for i in range(pipelined):
            if len(in_flight) >= window:
                in_flight.popleft().get()
            in_flight.append(ref.ask({"seq": i}, block=False))
        while in_flight:
            in_flight.popleft().get()
        return rtts, time.perf_counter() - t, pipelined
    finally:
        ref.stop()


def ray_calls(n: int, pipelined: int, window: int) -> Result | str:
    """Ray actor calls between two processes, or why there is no such row."""
    try:
        import ray  # type: ignore[import-not-found]
    except ImportError:
        return "skipped: ray is not importable here (it is not a dependency of agentrt)"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:

        @ray.remote
        class Echo:
            def echo(self, msg: Any) -> Any:
                return msg

        echo = Echo.remote()
        ray.get(echo.echo.remote({"seq": -1}))
        rtts = []
        for i in range(n):
            t = time.perf_counter()
            ray.get(echo.echo.remote({"seq": i}))
            rtts.append(time.perf_counter() - t)
        t = time.perf_counter()
        in_flight: collections.deque[Any] = collections.deque()
        for i in range(pipelined):
            if len(in_flight) >= window:
                ray.get(in_flight.popleft())
            in_flight.append(echo.echo.remote({"seq": i}))
        ray.get(list(in_flight))
        return rtts, time.perf_counter() - t, pipelined
    finally:
        ray.shutdown()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far (0.0 where /proc is not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _spec(pin: str) -> Any:
    """The two-node run the agentrt rows use (a: the pinger, b: the echo), placed by `pin`."""
    return spec_from_dict(
        {
            "run": {"name": "message-path", "entry": "pinger", "skill": "ping"},
            "placement": {"pin": pin},
            "nodes": [
                {"name": "a", "actors": [{"name": "pinger", "class": "_echo:Pinger"}]},
                {"name": "b", "actors": [{"name": "echo", "class": "_echo:Echo"}]},
            ],
        },
        "bench/message_path",
        base_dir=str(HERE),
    )


def agentrt(
    n: int, pipelined: int, window: int, runs_dir: str, pin: str, pads: list[int], cpu: dict[str, float] | None = None
) -> dict[int, Result]:
    """agentrt asks between two node processes, one run per payload size (same nodes).
    `cpu`: filled with the CPU seconds per round trip of each node and of the supervisor (this
    process: its collector writes the trace), over the first payload's asks."""
    spec = _spec(pin)
    out = {}
    with Runtime(spec, runs_dir=runs_dir) as rt:
        rt.ask("pinger", "ping", {"n": 200, "window": window}, timeout_s=600).unwrap()  # warm up
        pids = {"node a": rt.nodes["a"].pid, "node b": rt.nodes["b"].pid, "supervisor": os.getpid()}
        for pad in pads:
            before = {name: _cpu_s(pid) for name, pid in pids.items()}
            got = rt.ask(
                "pinger", "ping", {"n": pipelined, "sequential": n, "window": window, "bytes": pad}, timeout_s=600
            ).unwrap()
            out[pad] = (got["rtts"], got["pipelined_s"], pipelined)
            if cpu is not None and not cpu:
                cpu.update({name: (_cpu_s(pid) - before[name]) / (n + pipelined) for name, pid in pids.items()})
    return out


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="sequential round trips per row (latency)")
    ap.add_argument("--pipelined", type=int, default=20000, help="asks in the pipelined phase (throughput)")
    ap.add_argument("--window", type=int, default=32, help="asks in flight in the pipelined phase")
    ap.add_argument("--pin", choices=["auto", "on", "off"], default="auto", help="the spec's [placement] pin")
    args = ap.parse_args()
    n, p, w = args.n, args.pipelined, args.window
    small = max(1, n // 4), max(1, p // 10)  # the padded rows: fewer, they are only for scale
    rows: dict[str, Result | str] = {}
    rows["raw pyzmq"] = raw(n, p, w)
    rows["raw curve"] = raw(n, p, w, curve=True)
    rows["raw 1KB"] = raw(*small, w, pad=1024)
    rows["raw 64KB"] = raw(*small, w, pad=65536)
    rows["transport"] = transport(n, p, w, args.pin)
    rows["pykka ask"] = pykka_ask(n, p, w)
    rows["ray"] = ray_calls(n, p, w)
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as runs:
        main_row = agentrt(n, p, w, runs, args.pin, [0], cpu)[0]
        padded = agentrt(*small, w, runs, args.pin, [1024, 65536])
    rows["agentrt"] = main_row
    rows["agentrt 1KB"] = padded[1024]
    rows["agentrt 64KB"] = padded[65536]
    print(f"message path: {n} sequential round trips, then {p} pipelined (window {w}), between 2 processes")
    print(f"{'':<13} {'p50 rtt':>10} {'p99 rtt':>10} {'mean rtt':>10} {'msgs/s':>10}")
    tput = {}
    for name, row in rows.items():
        if isinstance(row, str):
            print(f"{name:<13} {row}")
            continue
        rtts, elapsed, count = row
        tput[name] = count / elapsed
        print(
            f"{name:<13} {pct(rtts, 0.5) * 1e6:>8.0f}us {pct(rtts, 0.99) * 1e6:>8.0f}us "
            f"{statistics.fmean(rtts) * 1e6:>8.0f}us {tput[name]:>10.0f}"
        )
    if cpu:
        print("agentrt CPU per round trip: " + ", ".join(f"{k} {v * 1e6:.0f}us" for k, v in cpu.items()))
    ratio = statistics.median(rows["agentrt"][0]) / statistics.median(rows["raw pyzmq"][0])  # type: ignore[index]
    print(f"agentrt/raw p50 latency ratio: {ratio:.2f}")
    print(f"agentrt/raw throughput ratio: {tput['agentrt'] / tput['raw pyzmq']:.2f}")


if __name__ == "__main__":
    main()
