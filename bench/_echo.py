"""Actors for bench/message_path.py: an echo, and a pinger that measures it from its own node."""

from __future__ import annotations

import time
from concurrent.futures import wait
from typing import Any

from agentrt.runtime import Actor, Request, skill

PAYLOAD = {"type": "object", "required": ["seq"], "properties": {"seq": {"type": "integer"}}}


class Echo(Actor):
    @skill(input=PAYLOAD, read_only=True)
    def echo(self, req: Request) -> dict[str, Any]:
        return {"seq": req.data["seq"]}


class Pinger(Actor):
    @skill(
        input={
            "type": "object",
            "required": ["n", "window"],
            "properties": {"n": {"type": "integer", "minimum": 1}, "window": {"type": "integer", "minimum": 1}},
        },
        read_only=True,
        timeout_s=600,
    )
    def ping(self, req: Request) -> dict[str, Any]:
        """Sequential round trips (latency), then `window` asks in flight at once (throughput)."""
        n, window = req.data["n"], req.data["window"]
        rtts = []
        for i in range(n):
            t = time.perf_counter()
            self.ctx.ask("echo", "echo", {"seq": i}).result(30).unwrap()
            rtts.append(time.perf_counter() - t)
        t = time.perf_counter()
        in_flight: list[Any] = []
        for i in range(n):
            in_flight.append(self.ctx.ask("echo", "echo", {"seq": i}))
            if len(in_flight) >= window:
                done, pending = wait(in_flight, return_when="FIRST_COMPLETED")
                for f in done:
                    f.result().unwrap()
                in_flight = list(pending)
        for f in in_flight:
            f.result(30).unwrap()
        return {"rtts": rtts, "pipelined_s": time.perf_counter() - t}
