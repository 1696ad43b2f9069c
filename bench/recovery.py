"""Recovery from a killed worker node: 1,000 read-only tasks fanned out over 3 worker
processes; in one run, kill -9 one worker node a third of the way through. Both runs in the
same process, same spec, same machine.

Prints the fault-free time, the time with the kill, the time from the kill to the
supervisor seeing the death, the tasks re-dispatched, and that every task completed once
(read-only work lost with the node runs again; the runs show how much).

    python bench/recovery.py

Its last line is `kill/fault-free time ratio: X.XX`.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))  # the Effect actor (compute)

from agentrt.runtime import Runtime, read_trace, spec_from_dict  # noqa: E402

N = 1000


def spec() -> Any:
    return spec_from_dict(
        {
            "run": {"name": "recovery", "entry": "coordinator", "skill": "run"},
            "supervision": {"max_restarts": 3, "period_s": 60},
            "nodes": [
                {"name": "coord", "actors": [{"name": "coordinator", "class": "agentrt.actors:Coordinator",
                                              "config": {"max_in_flight": 24, "max_attempts": 3, "gate": False}}]},
                *[{"name": f"w{i}", "actors": [{"name": f"worker-{i}", "class": "custom_actors:Effect"}]} for i in (1, 2, 3)],
            ],
        },
        "bench/recovery",
        base_dir=str(HERE.parent / "tests" / "integration"),
    )


def job(d: Path) -> dict[str, Any]:
    tasks = [{"id": f"e{i}", "skill": "compute", "args": {"dir": str(d), "n": i, "s": 0.02}} for i in range(N)]
    return {"goal": "g", "plan": {"goal": "g", "tasks": tasks}}


def runs(d: Path) -> int:
    log = d / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def run(d: Path, kill: bool) -> dict[str, Any]:
    with Runtime(spec(), runs_dir=d / "runs") as rt:
        t0 = time.perf_counter()
        future = rt.ask_async("coordinator", "run", job(d), timeout_s=600)
        killed_at = None
        if kill:
            while runs(d) < N // 3:
                time.sleep(0.005)
            killed_at = time.time()
            os.kill(rt.nodes["w2"].pid, signal.SIGKILL)
        out = rt.wait(future).unwrap()
        wall = time.perf_counter() - t0
        trace = rt.trace_path
    events = list(read_trace(trace))
    died = next((e["ts"] for e in events if e["event"] == "node.died"), None)
    return {
        "wall": wall,
        "state": out["state"],
        "completed": len(out["results"]),
        "runs": runs(d),
        "detect": (died - killed_at) if died and killed_at else None,
        "redispatched": sum(1 for e in events if e["event"] == "schedule.decision" and e.get("decision") == "redispatched"),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clean, chaos = Path(tmp) / "clean", Path(tmp) / "chaos"
        clean.mkdir()
        chaos.mkdir()
        a = run(clean, kill=False)
        b = run(chaos, kill=True)
    print(f"fault-free: {N} tasks on 3 worker processes in {a['wall']:.2f}s ({a['state']}; completed {a['completed']})")
    print(f"with kill -9 of one worker node: {b['wall']:.2f}s ({b['state']}; completed {b['completed']}, runs {b['runs']})")
    print(f"death seen by the supervisor {b['detect'] * 1000:.0f} ms after the kill; tasks re-dispatched: {b['redispatched']}")
    print(f"every task completed: {'yes' if b['completed'] == N == a['completed'] else 'no'}")
    print(f"kill/fault-free time ratio: {b['wall'] / a['wall']:.2f}")


if __name__ == "__main__":
    main()
