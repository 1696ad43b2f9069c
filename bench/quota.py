"""Shared rate limits under load: 200 Claude calls from 3 worker processes against the local
Messages API server enforcing 60 requests per minute.

Time is scaled 10x down (a "minute" is 6 s on both sides: the server's bucket refills at 60
requests per 6 s; the Quota actor is set to the same rate, 600 per real minute). The server
is strict: its bucket holds one second's worth of requests (the real API's holds a minute's),
and the Quota actor's bucket holds the same (`burst_s = 1`). Every call goes through the real
`anthropic` client over HTTP; a 429 pauses the shared quota and the task is retried.

    python bench/quota.py

Its last line is `429 share: X.X% of N calls, all succeeded: yes|no`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.messages_api

from agentrt.runtime import Runtime, spec_from_dict  # noqa: E402
from tests.messages_api import MessagesAPI  # noqa: E402

CALLS = 200
RPM = 60
SCALE = 10  # a minute is 60 / SCALE seconds


def main() -> None:
    minute_s = 60 / SCALE
    with MessagesAPI(rpm=RPM, minute_s=minute_s, capacity=RPM / 60 * SCALE) as api:
        os.environ["ANTHROPIC_API_KEY"] = api.api_key
        os.environ["ANTHROPIC_BASE_URL"] = api.url
        worker_model = {"kind": "anthropic", "name": "claude-haiku-4-5", "quota": "quota"}
        spec = spec_from_dict(
            {
                "run": {"name": "quota-bench", "entry": "coordinator", "skill": "run", "start_timeout_s": 60},
                "nodes": [
                    {"name": "coord", "actors": [
                        {"name": "coordinator", "class": "agentrt.actors:Coordinator",
                         "config": {"max_in_flight": 12, "max_attempts": 8, "backoff_s": 0.2, "gate": False}},
                        {"name": "quota", "class": "agentrt.actors:Quota",
                         "config": {"rpm": RPM * SCALE, "burst_s": 1.0}},
                    ]},
                    *[
                        {"name": f"w{i}", "actors": [{"name": f"worker-{i}", "class": "agentrt.actors:Worker", "model": worker_model}]}
                        for i in (1, 2, 3)
                    ],
                ],
            },
            "bench/quota",
        )
        tasks = [{"id": f"c{i}", "skill": "lookup", "args": {"source": f"s{i}", "query": "limits"}} for i in range(CALLS)]
        with tempfile.TemporaryDirectory() as runs, Runtime(spec, runs_dir=runs) as rt:
            t0 = time.perf_counter()
            out = rt.ask("coordinator", "run", {"goal": "g", "plan": {"goal": "g", "tasks": tasks}}, timeout_s=600).unwrap()
            wall = time.perf_counter() - t0
        log = list(api.log)
    ok = [e for e in log if e.status == 200]
    limited = [e for e in log if e.status == 429]
    done = sum(1 for t in out["tasks"] if t["state"] == "completed")
    burst = int(RPM / 60 * SCALE)  # the first bucketful may go at once
    steady = ok[burst - 1 :]
    span = steady[-1].at - steady[0].at if len(steady) > 1 else 0.0
    rate = (len(steady) - 1) / span * minute_s if span else 0.0
    ideal = (CALLS - RPM / 60 * SCALE) / (RPM / minute_s)  # after the first bucketful, at the limit
    print(f"server: {RPM} requests per minute (a minute = {minute_s:g}s), bucket {RPM / 60 * SCALE:g} requests")
    print(f"calls: {len(log)} requests for {CALLS} tasks on 3 worker processes in {wall:.2f}s")
    print(f"achieved rate after the first bucketful: {rate:.1f} requests per (scaled) minute, limit {RPM}")
    print(f"time at the limit (ideal, same run's limit): {ideal:.2f}s; actual/ideal: {wall / ideal:.2f}")
    print(f"tasks completed: {done}/{CALLS}; retried after a 429: {len(limited)}")
    share = 100 * len(limited) / len(log) if log else 0.0
    print(f"429 share: {share:.1f}% of {len(log)} calls, all succeeded: {'yes' if done == CALLS else 'no'}")


if __name__ == "__main__":
    main()
