"""Scheduling: the coordinator's core against the lower bound, level-by-level and sequential.

Every workload runs through the real `Scheduler` in the discrete-event simulator (virtual
time, seeded), next to three yardsticks computed from the same task durations:

- lower bound: max(critical path, total work / k), which no schedule can beat;
- level-by-level: the `topologicalLevels` approach, each level waiting for the previous;
- sequential: one task at a time.

Then one real multi-process run: 1,000 zero-latency tasks through a coordinator and two
worker processes, reporting the core's CPU time per task.

    python bench/scheduling.py

The last two lines are `worst makespan/lower-bound: X.XXX` and
`level-by-level/ours on uneven DAGs: X.XX`.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agentrt.actors._scheduler import Policy, Scheduler
from agentrt.actors._simulate import (
    durations_behaviour,
    level_by_level,
    list_schedule,
    lower_bound,
    sequential,
    simulate,
)
from agentrt.protocols import Plan, PlanTask
from agentrt.runtime import Runtime, spec_from_dict

HERE = Path(__file__).resolve().parent


@dataclass
class Workload:
    name: str
    plan: Plan
    durations: dict[str, float]
    k: int  # tasks at once (max_in_flight)
    uneven: bool  # branches of different lengths


def random_dag(n: int, seed: int) -> Workload:
    """Each task depends on up to 3 of the 20 before it; durations from 0.5 s to 8 s."""
    r = random.Random(seed)
    tasks, durations = [], {}
    for i in range(n):
        window = list(range(max(0, i - 20), i))
        deps = sorted(r.sample(window, min(len(window), r.randint(0, 3))))
        tasks.append(PlanTask(id=f"t{i}", skill="s", deps=[f"t{d}" for d in deps]))
        durations[f"t{i}"] = r.choice([0.5, 1, 1, 2, 4, 8]) * r.uniform(0.8, 1.2)
    return Workload(f"random DAG, {n} tasks", Plan(goal="g", tasks=tasks), durations, 8, True)


def research(seed: int) -> Workload:
    r = random.Random(seed)
    tasks = [PlanTask(id=f"s{i}", skill="lookup") for i in range(5)]
    tasks.append(PlanTask(id="synthesis", skill="synthesize", deps=[t.id for t in tasks]))
    durations = {f"s{i}": r.uniform(1, 2) for i in range(5)} | {"synthesis": 1.0}
    return Workload("5-source research", Plan(goal="g", tasks=tasks), durations, 16, False)


def batch(seed: int) -> Workload:
    """20 documents; each task carries an estimate from its document's length that is up
    to 20% off the actual duration (so longer documents start first)."""
    r = random.Random(seed)
    durations = {f"doc{i}": r.uniform(1, 3) for i in range(20)}
    tasks = [
        PlanTask(id=t, skill="summarise", est_s=d * r.uniform(0.8, 1.2)) for t, d in durations.items()
    ]
    return Workload("20-document batch, pool of 5", Plan(goal="g", tasks=tasks), durations, 5, False)


def pipeline() -> Workload:
    """research -> outline -> draft, research -> examples, (draft, examples) -> review."""
    spec = {
        "research": ([], 2.0),
        "outline": (["research"], 1.0),
        "draft": (["outline"], 4.0),
        "examples": (["research"], 1.5),
        "review": (["draft", "examples"], 1.0),
    }
    tasks = [PlanTask(id=t, skill=t, deps=d) for t, (d, _) in spec.items()]
    return Workload(
        "pipeline with branches", Plan(goal="g", tasks=tasks), {t: s for t, (_, s) in spec.items()}, 4, True
    )


def quicksort(seed: int, n: int = 4096, leaf: int = 256) -> Workload:
    """Tree quicksort: partition (time ~ size) until `leaf`, sort leaves, merge upwards."""
    r = random.Random(seed)
    tasks: list[PlanTask] = []
    durations: dict[str, float] = {}

    def node(path: str, size: int, parent: str | None) -> str:
        deps = [parent] if parent else []
        if size <= leaf:
            tid = f"sort{path}"
            tasks.append(PlanTask(id=tid, skill="sort", deps=deps))
            durations[tid] = size / leaf * 1.0
            return tid
        tid = f"part{path}"
        tasks.append(PlanTask(id=tid, skill="partition", deps=deps))
        durations[tid] = size / n * 2.0
        left = int(size * r.uniform(0.2, 0.8))
        a = node(path + "L", left, tid)
        b = node(path + "R", size - left, tid)
        merged = f"join{path}"
        tasks.append(PlanTask(id=merged, skill="join", deps=[a, b]))
        durations[merged] = 0.05
        return merged

    final = node("", n, None)
    return Workload("tree quicksort", Plan(goal="g", tasks=tasks, final=final), durations, 8, True)


def run_workload(w: Workload) -> dict[str, float]:
    skills = {t.skill for t in w.plan.tasks}
    workers = {f"w{i}": sorted(skills) for i in range(4)}
    # The core knows only each skill's typical duration, not any task's actual one.
    est = {s: sum(w.durations[t.id] for t in w.plan.tasks if t.skill == s) for s in skills}
    count = {s: sum(1 for t in w.plan.tasks if t.skill == s) for s in skills}
    # No token budget: this measures scheduling, not budgets (runs have one by default).
    policy = Policy(max_in_flight=w.k, est_s={s: est[s] / count[s] for s in skills}, token_budget=None)
    scheduler = Scheduler(w.plan, workers, policy=policy)
    t = time.perf_counter()
    result = simulate(scheduler, durations_behaviour(w.durations))
    wall = time.perf_counter() - t
    assert result.finish.state == "completed", result.finish.reason
    return {
        "ours": result.makespan,
        "lb": lower_bound(w.plan, w.durations, w.k),
        "lbl": level_by_level(w.plan, w.durations, w.k),
        "seq": sequential(w.durations),
        "us_per_event": result.core_cpu_s / result.events * 1e6,
        "sim_s": wall,
    }


def longest_estimate_first(w: Workload) -> float:
    """Makespan of independent tasks started longest estimate first as slots free (the
    core's order before it balanced the last wave)."""
    ordered = sorted(w.plan.tasks, key=lambda t: -(t.est_s or 0.0))
    return list_schedule([w.durations[t.id] for t in ordered], w.k)


def batch_sweep(seeds: range) -> str:
    """The batch workload over other seeds: how the noisy estimates' luck spreads the ratio."""
    ours, lpt = [], []
    for seed in seeds:
        w = batch(seed)
        r = run_workload(w)
        ours.append(r["ours"] / r["lb"])
        lpt.append(longest_estimate_first(w) / r["lb"])

    def summary(xs: list[float]) -> str:
        over = sum(1 for x in xs if x > 1.05)
        return f"mean {sum(xs) / len(xs):.3f}, worst {max(xs):.3f}, over 1.05 in {over}"

    return (f"20-document batch on {len(seeds)} other seeds, makespan/lower-bound: ours "
            f"{summary(ours)}; longest estimate first {summary(lpt)}")


def real_overhead(n: int = 1000) -> tuple[float, float, int]:
    """(core CPU us per task, wall s, tasks) for n zero-latency tasks on 2 worker processes."""
    spec = spec_from_dict(
        {
            "run": {"name": "overhead", "entry": "coordinator", "skill": "run"},
            "nodes": [
                {"name": "coord", "actors": [{"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": {"max_in_flight": 32}}]},
                {"name": "w1", "actors": [{"name": "echo-1", "class": "_echo:Echo"}]},
                {"name": "w2", "actors": [{"name": "echo-2", "class": "_echo:Echo"}]},
            ],
        },
        "bench/scheduling",
        base_dir=str(HERE),
    )
    plan = {"goal": "overhead", "tasks": [{"id": f"t{i}", "skill": "echo", "args": {"seq": i}} for i in range(n)]}
    with tempfile.TemporaryDirectory() as runs, Runtime(spec, runs_dir=runs) as rt:
        t = time.perf_counter()
        out = rt.ask("coordinator", "run", {"goal": "overhead", "plan": plan}, timeout_s=600).unwrap()
        wall = time.perf_counter() - t
    done = sum(1 for task in out["tasks"] if task["state"] == "completed")
    return out["schedule"]["coreCpuS"] / n * 1e6, wall, done


def main() -> None:
    workloads = [random_dag(n, seed=n) for n in (10, 100, 1000, 10_000)]
    workloads += [research(1), batch(2), pipeline(), quicksort(3)]
    print(f"{'workload':<30} {'tasks':>6} {'k':>3} {'ours':>9} {'bound':>9} {'ours/lb':>8} "
          f"{'levels':>9} {'lvl/ours':>8} {'seq/ours':>8} {'core us/evt':>11}")
    worst, uneven = 0.0, []
    for w in workloads:
        r = run_workload(w)
        ratio = r["ours"] / r["lb"]
        worst = max(worst, ratio)
        if w.uneven:
            uneven.append(r["lbl"] / r["ours"])
        print(
            f"{w.name:<30} {len(w.plan.tasks):>6} {w.k:>3} {r['ours']:>8.2f}s {r['lb']:>8.2f}s "
            f"{ratio:>8.3f} {r['lbl']:>8.2f}s {r['lbl'] / r['ours']:>8.2f} {r['seq'] / r['ours']:>8.2f} "
            f"{r['us_per_event']:>11.1f}",
            flush=True,
        )
    print(batch_sweep(range(100, 300)), flush=True)
    us, wall, done = real_overhead()
    print(f"real run: {done} zero-latency tasks on 2 worker processes in {wall:.2f}s "
          f"({done / wall:.0f} tasks/s); core CPU per task: {us:.1f} us")
    print(f"worst makespan/lower-bound: {worst:.3f}")
    print(f"level-by-level/ours on uneven DAGs: {min(uneven):.2f}")


if __name__ == "__main__":
    main()
