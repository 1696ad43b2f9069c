"""Fuzz a live node: frames of every bad kind against the `back` node of demos/hello, then a normal ask.

The fuzzer holds the keys of the run's other node (`front`): a process without the run's keys
never completes a handshake, so this is the worst a peer can do, an actor process of the run
gone bad. Frames, mixed at random (seeded): random bytes, mutated valid envelopes, envelopes
with spoofed senders and bodies (controls, heartbeats, replies), too deep, over the frame limit,
over the socket's message limit, multi-part, and a few valid requests with invalid input.

    python bench/fuzz.py [--frames 100000] [--seed 1]

Prints the mix, the node's counters, and as its last line
`fuzzed frames: N, node crashes: C, still answering: yes|no, rss growth: X MiB`
(the target node's resident memory after the fuzz minus before, from /proc; the line above
it gives the growth of its peak too).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

from agentrt.protocols import (
    Ack,
    Directory,
    Drain,
    Envelope,
    Event,
    Heartbeat,
    Message,
    NodeDied,
    Part,
    SkillCall,
    Stop,
    Task,
    TaskReply,
    TaskRequest,
    TaskStatus,
    encode,
)
from agentrt.runtime import Runtime, load_spec

HELLO = Path(__file__).resolve().parent.parent / "demos" / "hello"
TARGET, AS = "back", "front"  # fuzz node `back` with the keys of node `front`


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory (VmRSS) or its peak so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Frames:
    """Fuzz frames, one kind at a time, from a seeded random generator."""

    KINDS = (  # kind, weight
        ("random", 30),
        ("mutated", 30),
        ("spoofed", 20),
        ("multipart", 9),
        ("deep", 6),
        ("invalid-input", 3),
        ("huge-id", 1),
    )

    def __init__(self, rng: random.Random, max_frame: int) -> None:
        self.rng = rng
        self.max_frame = max_frame
        self.n = 0
        self.kinds = [k for k, _ in self.KINDS]
        self.weights = [w for _, w in self.KINDS]

    def envelope(self, sender: str, recipient: str, body: Any, **fields: Any) -> bytes:
        self.n += 1
        return encode(
            Envelope(
                message_id=f"fz-{self.n}",
                trace_id="f" * 32,
                span_id="f" * 16,
                sender=sender,
                recipient=recipient,
                sent_at=time.time(),
                body=body,
                **fields,
            )
        )

    def request(self, data: Any, sender: str = "greeter") -> bytes:
        message = Message(message_id=f"fm-{self.n}", role="ROLE_USER", parts=[Part(data=data)])
        request = TaskRequest(message=message, call=SkillCall(skill="shout"))
        return self.envelope(sender, "shouter", request, task_id=f"ft-{self.n}")

    def next(self, i: int) -> tuple[str, list[bytes]]:
        rng = self.rng
        if i % 5000 == 4999:  # now and then: over the frame limit, and over the socket's limit
            size = self.max_frame + 1 if i % 10000 == 4999 else 2 * self.max_frame + 1
            return "oversized", [rng.randbytes(16) * (size // 16 + 1)]
        kind = rng.choices(self.kinds, self.weights)[0]
        if kind == "random":
            return kind, [rng.randbytes(rng.randrange(0, 2048))]
        if kind == "mutated":
            frame = bytearray(self.request({"text": "x" * rng.randrange(0, 64)}))
            for _ in range(rng.randrange(1, 8)):
                op = rng.randrange(3)
                at = rng.randrange(len(frame))
                if op == 0:
                    frame[at] = rng.randrange(256)
                elif op == 1:
                    del frame[at : at + rng.randrange(1, 16)]
                else:
                    frame[at:at] = rng.randbytes(rng.randrange(1, 16))
            return kind, [bytes(frame)]
        if kind == "spoofed":
            sender = rng.choice(["supervisor", "node:back", "shouter", "node:ghost", "mallory", "greeter"])
            body = rng.choice(
                [
                    Stop(),
                    Directory(routes={"shouter": "ipc:///tmp/x.sock"}),
                    Ack(ids=["fz-1"]),
                    Drain(reason="fuzz"),
                    Heartbeat(node=rng.choice(["back", "front"]), pid=1, seq=i),
                    TaskReply(
                        task=Task(id=f"ft-{i}", context_id="c", status=TaskStatus(state="TASK_STATE_COMPLETED"))
                    ),
                ]
            )
            return kind, [self.envelope(sender, rng.choice(["node:back", "shouter", "supervisor"]), body)]
        if kind == "multipart":
            return kind, [rng.randbytes(rng.randrange(0, 256)) for _ in range(rng.randrange(2, 30))]
        if kind == "deep":
            depth = rng.randrange(33, 3000)
            data: Any = {"text": "deep"}
            for _ in range(depth):
                data = {"d": data} if rng.random() < 0.5 else [data]
            try:
                return kind, [self.request({"text": "x", "nest": data})]
            except RecursionError:
                return kind, [b"\x91" * depth + b"\xc0"]  # the same depth, in raw msgpack
        if kind == "invalid-input":
            return kind, [self.request({"text": rng.randrange(100)})]
        return kind, [self.request({"text": "x"}, sender="greeter" + "g" * rng.randrange(1 << 16, 1 << 20))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    spec = load_spec(HELLO)
    deaths: list[NodeDied] = []

    def watch(event: Event) -> None:
        if isinstance(event, NodeDied):
            deaths.append(event)

    mix: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as runs, Runtime(spec, runs_dir=runs, on_event=watch) as rt:
        assert rt.ask("greeter", "greet", {"name": "ada"}).ok  # warm: every path has run once
        pid = rt.nodes[TARGET].pid
        before, peak_before = rss_mib(pid), rss_mib(pid, "VmHWM")
        trust = rt._trust[AS]
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.curve_secretkey = trust.keys.secret.encode()
        sock.curve_publickey = trust.keys.public.encode()
        sock.curve_serverkey = trust.members[TARGET].encode()
        sock.setsockopt(zmq.SNDTIMEO, 30_000)  # the node's queue is full: wait for it to read
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(rt.nodes[TARGET].endpoint)
        frames = Frames(random.Random(args.seed), spec.limits.max_frame_bytes)
        t0 = time.perf_counter()
        unsent = 0
        for i in range(args.frames):
            kind, parts = frames.next(i)
            mix[kind] += 1
            try:
                sock.send_multipart(parts)
            except zmq.Again:
                unsent += 1
        sent_s = time.perf_counter() - t0
        # Let the node work through everything before hanging up (what a node at its mark has
        # not read yet is lost when the peer goes): until its counters stop moving (but `sent`
        # and `received`, which every stats request and reply moves).
        stats: dict[str, Any] = {}
        while True:
            time.sleep(0.5)
            now = rt.node_stats(TARGET, timeout_s=30) if rt.nodes[TARGET].proc.poll() is None else {}
            now.pop("sent", None), now.pop("received", None)
            if now == stats:
                break
            stats = now
        sock.close()
        ctx.term()
        answer = rt.ask("greeter", "greet", {"name": "ada"}, timeout_s=30)
        still = answer.ok and answer.data.get("greeting") == "HELLO ADA!"
        same = rt.nodes[TARGET].pid == pid and rt.nodes[TARGET].proc.poll() is None
        growth = rss_mib(pid) - before if same else float("nan")
        peak_growth = rss_mib(pid, "VmHWM") - peak_before if same else float("nan")
    print(f"fuzz: {args.frames} frames (seed {args.seed}) at node '{TARGET}' as node '{AS}', sent in {sent_s:.1f}s")
    print("mix: " + ", ".join(f"{k} {v}" for k, v in mix.most_common()) + (f"; not sent (queue full 30 s): {unsent}" if unsent else ""))
    print(f"node memory: {before:.1f} MiB before, peak +{peak_growth:.1f} MiB during the fuzz")
    print("node counters: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if v))
    crashes = len([d for d in deaths if d.node_name == TARGET]) + (0 if same else 1 if not deaths else 0)
    print(
        f"fuzzed frames: {args.frames}, node crashes: {crashes}, still answering: "
        f"{'yes' if still else 'no'}, rss growth: {growth:.1f} MiB"
    )


if __name__ == "__main__":
    main()
