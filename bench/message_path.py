"""Message path: agentrt actor-to-actor asks between two node processes, against raw pyzmq.

The baseline is the least a ZeroMQ program can do for the same exchange: a DEALER in one
process and a ROUTER in another, msgspec-encoded request and reply frames, no validation,
no tracing, no actor threads; `raw curve` is the same over CurveZMQ, as agentrt's sockets
are (what the encryption alone costs). agentrt adds envelopes, schema checks at sender and
receiver, pykka hand-offs, and a trace event for each send, receive and task state.

    python bench/message_path.py [--n 2000] [--window 32]

Prints p50/p99 round trip and pipelined throughput for both, in one run; its last line
is `agentrt/raw throughput ratio: X.XX`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import zmq

from agentrt.runtime import Runtime, spec_from_dict

HERE = Path(__file__).resolve().parent


def _raw_echo_server(endpoint: str, ready: mp.Event, secret: bytes | None) -> None:  # type: ignore[valid-type]
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
        sock.send_multipart([ident, enc.encode({"seq": msg["seq"]})])
    sock.close(linger=0)
    ctx.term()


def raw(n: int, window: int, curve: bool = False) -> tuple[list[float], float]:
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
    rtts = []
    for i in range(n):
        t = time.perf_counter()
        sock.send(enc.encode({"seq": i}))
        assert dec.decode(sock.recv())["seq"] == i
        rtts.append(time.perf_counter() - t)
    t = time.perf_counter()
    sent = received = 0
    while received < n:
        while sent < n and sent - received < window:
            sock.send(enc.encode({"seq": sent}))
            sent += 1
        dec.decode(sock.recv())
        received += 1
    pipelined = time.perf_counter() - t
    sock.send(enc.encode({"stop": True}))
    server.join(10)
    sock.close(linger=0)
    ctx.term()
    shutil.rmtree(sock_dir, ignore_errors=True)
    return rtts, pipelined


def agentrt(n: int, window: int, runs_dir: str, pin: str = "auto") -> tuple[list[float], float]:
    spec = spec_from_dict(
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
    with Runtime(spec, runs_dir=runs_dir) as rt:
        out = rt.ask("pinger", "ping", {"n": n, "window": window}, timeout_s=600).unwrap()
    return out["rtts"], out["pipelined_s"]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="round trips per phase")
    ap.add_argument("--window", type=int, default=32, help="asks in flight in the pipelined phase")
    ap.add_argument("--pin", choices=["auto", "on", "off"], default="auto", help="the spec's [placement] pin")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        results = {
            "raw pyzmq": raw(args.n, args.window),
            "raw curve": raw(args.n, args.window, curve=True),
            "agentrt": agentrt(args.n, args.window, runs, args.pin),
        }
    print(f"message path: {args.n} round trips between 2 processes, window {args.window}")
    print(f"{'':<10} {'p50 rtt':>10} {'p99 rtt':>10} {'mean rtt':>10} {'msgs/s':>10}")
    tput = {}
    for name, (rtts, pipelined) in results.items():
        tput[name] = args.n / pipelined
        print(
            f"{name:<10} {pct(rtts, 0.5) * 1e6:>8.0f}us {pct(rtts, 0.99) * 1e6:>8.0f}us "
            f"{statistics.fmean(rtts) * 1e6:>8.0f}us {tput[name]:>10.0f}"
        )
    ratio = statistics.median(results["agentrt"][0]) / statistics.median(results["raw pyzmq"][0])
    print(f"agentrt/raw p50 latency ratio: {ratio:.2f}")
    print(f"agentrt/raw throughput ratio: {tput['agentrt'] / tput['raw pyzmq']:.2f}")


if __name__ == "__main__":
    main()
