"""A discrete-event simulator: drives the real `Scheduler` in virtual time.

Each dispatched task takes the simulated duration the workload gives it, and its attempts
can be made to fail or to hit a 429 with Retry-After. Nothing sleeps: a run of 10,000 tasks
takes as long as the core takes to decide. The result records every attempt's interval,
so tests can check the core's invariants and the benchmark can measure makespans.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agentrt.protocols import Plan, dependencies

from ._scheduler import Cancel, Command, Decision, Dispatch, Finish, Scheduler, SetTimer


@dataclass(frozen=True)
class Outcome:
    """What one attempt does: run for `duration`, then succeed, fail, or answer 429."""

    duration: float
    kind: Literal["ok", "error", "429"] = "ok"
    retry_after_s: float = 0.0
    tokens: float | None = None  # used tokens (default: the estimate)


@dataclass
class Attempt:
    task_id: str
    attempt: int
    skill: str
    worker: str
    start: float
    tokens: float
    end: float | None = None
    ended: str = ""  # completed / failed / 429 / cancelled


@dataclass
class SimResult:
    makespan: float
    finish: Finish
    attempts: list[Attempt]
    decisions: list[Decision]
    core_cpu_s: float  # CPU time spent inside the scheduler's event handlers
    events: int  # events handed to the scheduler
    unfinished: bool = False


Behaviour = Callable[[Dispatch], Outcome]


def durations_behaviour(durations: Mapping[str, float]) -> Behaviour:
    """Every attempt succeeds after the task's duration."""
    return lambda d: Outcome(durations[d.task_id])


def simulate(scheduler: Scheduler, behaviour: Behaviour, *, horizon: float = 1e9) -> SimResult:
    """Run `scheduler` to its Finish (or the horizon) with `behaviour` deciding each attempt."""
    queue: list[tuple[float, int, str, Any]] = []
    seq = 0
    now = 0.0
    running: dict[tuple[str, int], Attempt] = {}
    attempts: list[Attempt] = []
    decisions: list[Decision] = []
    finish: Finish | None = None
    cpu = 0.0
    events = 0

    def push(at: float, kind: str, payload: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (at, seq, kind, payload))

    def apply(commands: list[Command]) -> None:
        nonlocal finish
        for cmd in commands:
            if isinstance(cmd, Dispatch):
                outcome = behaviour(cmd)
                node = scheduler.nodes[cmd.task_id]
                a = Attempt(
                    cmd.task_id,
                    cmd.attempt,
                    cmd.skill,
                    cmd.worker,
                    now,
                    outcome.tokens if outcome.tokens is not None else node.reserved,
                )
                attempts.append(a)
                running[(cmd.task_id, cmd.attempt)] = a
                push(now + outcome.duration, "done", (cmd.task_id, cmd.attempt, outcome))
            elif isinstance(cmd, Cancel):
                a = running.pop((cmd.task_id, cmd.attempt), None)
                if a is not None:
                    a.end, a.ended = now, "cancelled"
            elif isinstance(cmd, SetTimer):
                push(max(cmd.at, now), "timer", cmd.key)
            elif isinstance(cmd, Decision):
                decisions.append(cmd)
                if cmd.decision == "in-doubt":  # no human here: by policy, not run again
                    push(now, "abandon", (cmd.task_id, cmd.reason))
            elif isinstance(cmd, Finish):
                finish = cmd

    def call(fn: Callable[..., list[Command]], *args: Any, **kwargs: Any) -> None:
        nonlocal cpu, events
        t = time.process_time()
        commands = fn(*args, **kwargs)
        cpu += time.process_time() - t
        events += 1
        apply(commands)

    call(scheduler.start, now)
    while queue and finish is None:
        at, _, kind, payload = heapq.heappop(queue)
        if at > horizon:
            break
        now = at
        if kind == "timer":
            call(scheduler.on_timer, payload, now)
            continue
        if kind == "abandon":
            call(scheduler.abandon, payload[0], f"{payload[1]}; not run again (no decision)", now)
            continue
        task_id, attempt, outcome = payload
        a = running.pop((task_id, attempt), None)
        if a is None:  # cancelled meanwhile: the worker's late answer is not delivered
            continue
        a.end = now
        if outcome.kind == "ok":
            a.ended = "completed"
            call(
                scheduler.task_succeeded,
                task_id,
                {"task": task_id},
                attempt=attempt,
                now=now,
                tokens=a.tokens,
            )
        else:
            a.ended = "failed" if outcome.kind == "error" else "429"
            call(
                scheduler.task_failed,
                task_id,
                "simulated error" if outcome.kind == "error" else "429 rate limited",
                attempt=attempt,
                now=now,
                retry_after_s=outcome.retry_after_s if outcome.kind == "429" else None,
                tokens=a.tokens,
            )
    unfinished = finish is None
    if finish is None:
        finish = Finish("failed", dict(scheduler.results), {}, {}, {}, "simulation horizon reached")
    return SimResult(now, finish, attempts, decisions, cpu, events, unfinished)


# -- yardsticks ------------------------------------------------------------------------------


def critical_path(plan: Plan, durations: Mapping[str, float]) -> float:
    """The longest chain of durations through the DAG: no schedule can beat it."""
    tasks = {t.id: t for t in plan.tasks}
    finish: dict[str, float] = {}
    for tid in topological(plan):
        deps = dependencies(tasks[tid])
        finish[tid] = durations[tid] + max((finish[d] for d in deps), default=0.0)
    return max(finish.values())


def lower_bound(plan: Plan, durations: Mapping[str, float], k: int) -> float:
    """max(critical path, total work / k): k tasks at once can do no better."""
    return max(critical_path(plan, durations), sum(durations.values()) / k)


def level_by_level(plan: Plan, durations: Mapping[str, float], k: int) -> float:
    """Makespan of the `topologicalLevels` approach: a level starts when the previous one
    has finished entirely; within a level, k at a time, in plan order."""
    tasks = {t.id: t for t in plan.tasks}
    level: dict[str, int] = {}
    for tid in topological(plan):
        deps = dependencies(tasks[tid])
        level[tid] = 1 + max((level[d] for d in deps), default=-1)
    return sum(
        list_schedule([durations[t.id] for t in plan.tasks if level[t.id] == lv], k)
        for lv in range(max(level.values()) + 1)
    )


def list_schedule(durations: list[float], k: int) -> float:
    """Makespan of independent tasks started in the given order, each on the first of k
    slots to free."""
    slots = [0.0] * k
    for d in durations:
        i = min(range(k), key=slots.__getitem__)
        slots[i] += d
    return max(slots)


def sequential(durations: Mapping[str, float]) -> float:
    return sum(durations.values())


def topological(plan: Plan) -> list[str]:
    """Task ids, each after its dependencies (plan order where free)."""
    deps = {t.id: dependencies(t) for t in plan.tasks}
    children: dict[str, list[str]] = {t.id: [] for t in plan.tasks}
    indeg = {}
    for tid, ds in deps.items():
        indeg[tid] = len(ds)
        for d in ds:
            children[d].append(tid)
    order = [t.id for t in plan.tasks if indeg[t.id] == 0]
    i = 0
    while i < len(order):
        for c in children[order[i]]:
            indeg[c] -= 1
            if indeg[c] == 0:
                order.append(c)
        i += 1
    return order
