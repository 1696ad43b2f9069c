"""Actors for bench/message_path.py: an echo, and a pinger that measures it from its own node."""

from __future__ import annotations

import threading
import time
from typing import Any

from agentrt.runtime import Actor, Request, skill

PAYLOAD = {
    "type": "object",
    "required": ["seq"],
    "properties": {"seq": {"type": "integer"}, "pad": {"type": "string"}},
}


class Echo(Actor):
    @skill(input=PAYLOAD, read_only=True)
    def echo(self, req: Request) -> dict[str, Any]:
        return req.data  # the payload back, padding and all, as the raw echo does


class Pinger(Actor):
    @skill(
        input={
            "type": "object",
            "required": ["n", "window"],
            "properties": {
                "n": {"type": "integer", "minimum": 1},
                "window": {"type": "integer", "minimum": 1},
                "sequential": {"type": "integer", "minimum": 1},
                "bytes": {"type": "integer", "minimum": 0},
            },
        },
        read_only=True,
        timeout_s=600,
    )
    def ping(self, req: Request) -> dict[str, Any]:
        """Sequential round trips (latency), then `window` asks in flight at once (throughput)."""
        n, window = req.data["n"], req.data["window"]
        pad = {"pad": "x" * req.data["bytes"]} if req.data.get("bytes") else {}
        rtts = []
        for i in range(req.data.get("sequential", n)):
            t = time.perf_counter()
            self.ctx.ask("echo", "echo", {"seq": i, **pad}).result(30).unwrap()
            rtts.append(time.perf_counter() - t)
        # At most `window` asks in flight: each reply (resolved on the I/O thread that receives
        # it) frees a slot, so waiting costs the same whatever the window.
        slots = threading.Semaphore(window)
        failed: list[str] = []
        done = threading.Event()
        left = [n]
        lock = threading.Lock()

        def settle(f: Any) -> None:
            result = f.result()
            if not result.ok:
                failed.append(result.error)
            slots.release()
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

        t = time.perf_counter()
        for i in range(n):
            slots.acquire()
            self.ctx.ask("echo", "echo", {"seq": i, **pad}).add_done_callback(settle)
        if not done.wait(60):
            raise TimeoutError(f"{left[0]} of {n} pipelined asks unanswered after 60 s")
        elapsed = time.perf_counter() - t
        if failed:
            raise RuntimeError(f"{len(failed)} pipelined asks failed, e.g. {failed[0]}")
        return {"rtts": rtts, "pipelined_s": elapsed}
