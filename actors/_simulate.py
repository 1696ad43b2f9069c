"""A discrete-event simulator: drives the real `Scheduler` (`simulate`), or the whole run
core (`simulate_run`: plan, gate, loops, budget, journal, resume, lost workers), in
virtual time.

Each dispatched task takes the simulated duration the workload gives it, and its attempts
can be made to fail or to hit a 429 with Retry-After. Nothing sleeps: a run of 10,000 tasks
takes as long as the core takes to decide. The result records every attempt's interval,
so tests can check the core's invariants and the benchmark can measure makespans.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentrt.protocols import Plan, dependencies

from ._run import Ask, CancelCall, Journal, Reply, Result, Resumed, Trace
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


# -- the whole run: the run core in virtual time -----------------------------------------------


@dataclass(frozen=True)
class TaskOutcome:
    """What one task attempt does at its worker: run `duration`, then answer; `tokens` it
    would spend (the callee clips to its allowance), or `need`: its call needs that many
    tokens (it refuses when its allowance is less)."""

    duration: float
    # "unacked": it runs (and has its effect), but neither its acks nor its reply get back
    # (a one-way cut): its asker's messenger gives up on it, "maybe delivered".
    kind: Literal["ok", "error", "429", "unacked"] = "ok"
    tokens: float = 0.0
    need: float = 0.0
    retry_after_s: float = 1.0


@dataclass
class RunWorld:
    """The simulated processes around a run core."""

    task: Callable[[Any], TaskOutcome]  # an Ask for a plan task -> what the attempt does
    stateful: frozenset[str] = frozenset()  # skills whose effect counts
    critic_passes: Callable[[Any], bool] = lambda ask: True
    judge_says: Callable[[Any], str] = lambda ask: "accept"
    human_says: Callable[[Any], str | None] = lambda ticket: None  # None: no answer (failed)
    ask_fails: Callable[[Any], BaseException | None] = lambda ask: None
    review_tokens: float = 20.0  # a critique's or verdict's usage (clipped to its allowance)
    kills: list[tuple[float, str, float]] = field(default_factory=list)  # (at, worker, down for)
    crash_at: float | None = None  # the coordinator's process dies then, and restarts


@dataclass
class RunSimResult:
    reply: Any  # the run core's Reply (None: it never replied)
    spent: float  # tokens used by every call of every life, as the callees reported them
    effects: dict[tuple[str, str], int]  # (task, idempotency key) -> effects that happened
    continues: dict[str, int]  # task -> `continue` decisions a human gave about it
    max_running: int  # most task attempts running at once (per coordinator life)
    batches: int
    commands: int
    applied: int  # commands carried out (failed ones included: tried, then fed back)
    lives: int
    now: float


def simulate_run(
    make_run: Callable[[], Any],
    data: Mapping[str, Any],
    world: RunWorld,
    *,
    horizon: float = 1e6,
) -> RunSimResult:
    """Drive a run core (`make_run()` builds one; again after a coordinator crash, resuming
    from the journal) to its reply in virtual time, with workers that keep an idempotency
    cache (lost with their process), may be killed, and count stateful effects."""
    queue: list[tuple[float, int, str, Any]] = []
    seq = 0
    now = 0.0
    life = 1
    run = make_run()
    journal: dict[str, Any] = {}
    down: set[str] = set()
    parked: dict[str, list[tuple[int, Any]]] = {}  # asks resent until their worker is back
    epoch: dict[str, int] = {}  # a worker's process: replies of an older one are lost
    cache: dict[tuple[str, str], Any] = {}  # (worker, key) -> result
    effects: dict[tuple[str, str], int] = {}
    continues: dict[str, int] = {}
    running: dict[tuple[int, int], str] = {}  # attempts running at live workers -> worker
    stats = {"max_running": 0, "batches": 0, "commands": 0, "applied": 0, "spent": 0.0}
    reply: Any = None

    def push(at: float, kind: str, payload: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (at, seq, kind, payload))

    def usage(tokens: float) -> dict[str, Any]:
        stats["spent"] += tokens
        return {"usage": {"inputTokens": tokens, "outputTokens": 0}}

    def ask(cmd: Any) -> None:
        if cmd.skill == "critique":
            used = min(world.review_tokens, cmd.allowance or 0)
            good = world.critic_passes(cmd)
            out = {"taskId": cmd.data["taskId"], "score": 0.9 if good else 0.2, "passed": good, "issues": [] if good else ["not good enough"]}
            push(now + 0.1, "reply", (life, cmd.call, Result(ok=True, output=out, metadata=usage(used))))
        elif cmd.skill == "judge":
            used = min(world.review_tokens, cmd.allowance or 0)
            d = world.judge_says(cmd)
            out = {"decision": d, "reason": d, "iteration": cmd.data["iteration"], "feedback": "again", "score": 0.5}
            push(now + 0.1, "reply", (life, cmd.call, Result(ok=True, output=out, metadata=usage(used))))
        elif cmd.skill == "escalate":
            d = world.human_says(cmd.data)
            result = (
                Result(ok=True, output={"ticketId": cmd.data["ticketId"], "decision": d, "by": "sim"})
                if d is not None
                else Result(ok=False, state="failed", error="nobody answered")
            )
            if d == "continue" and cmd.data["reason"] == "in-doubt":
                task = cmd.data["details"]["task"]
                continues[task] = continues.get(task, 0) + 1
            push(now + 0.5, "reply", (life, cmd.call, result))
        else:
            worker, key = cmd.actor, cmd.key or ""
            if worker in down:
                # Sent to a dead process: the messenger resends until it is back (the kills
                # here last less than its ~15 s of resends), and the new process runs it.
                parked.setdefault(worker, []).append((life, cmd))
                return
            cached = cache.get((worker, key))
            if cached is not None:
                push(now + 0.01, "reply", (life, cmd.call, Result(ok=True, output=cached)))
                return
            outcome = world.task(cmd)
            allowance = cmd.allowance if cmd.allowance is not None else float("inf")
            if outcome.need > allowance:
                meta = {"needTokens": outcome.need, "leastTokens": outcome.need / 2, "retryable": False, **usage(0.0)}
                push(now + 0.01, "reply", (life, cmd.call, Result(ok=False, state="failed", error="allowance", metadata=meta)))
                return
            running[(life, cmd.call)] = worker
            stats["max_running"] = max(stats["max_running"], sum(1 for lf, _ in running if lf == life))
            if cmd.skill in world.stateful and outcome.kind in ("ok", "unacked"):
                # Half-way through: a worker lost after this leaves the task in doubt. (A
                # failed answer means no effect: a skill that fails does not half-commit.)
                push(now + outcome.duration / 2, "effect", (worker, epoch.get(worker, 0), cmd.task, key))
            push(now + outcome.duration, "done", (life, cmd, worker, epoch.get(worker, 0), outcome, min(outcome.tokens, allowance)))

    def apply(commands: list[Any]) -> None:
        nonlocal reply
        stats["batches"] += 1
        failures: list[tuple[Any, BaseException]] = []
        for cmd in commands:
            stats["commands"] += 1
            try:
                if isinstance(cmd, Ask):
                    exc = world.ask_fails(cmd)
                    if exc is not None:
                        raise exc
                    ask(cmd)
                elif isinstance(cmd, SetTimer):
                    push(max(cmd.at, now), "timer", (life, cmd.key))
                elif isinstance(cmd, Journal):
                    journal[cmd.key] = cmd.value
                elif isinstance(cmd, Reply):
                    reply = cmd
                elif isinstance(cmd, CancelCall | Trace):
                    pass
            except Exception as exc:
                failures.append((cmd, exc))
            finally:
                stats["applied"] += 1
        for cmd, exc in failures:
            apply(run.command_failed(cmd, exc, now))

    def resumed() -> Any:
        prefix = "task/"
        tasks = {k[len(prefix) :]: v for k, v in journal.items() if k.startswith(prefix)}
        return Resumed(plan=journal["plan"], tasks=tasks, run=journal.get("run", {}))

    for at, worker, down_for in world.kills:
        push(at, "kill", (worker, down_for))
    if world.crash_at is not None:
        push(world.crash_at, "crash", None)
    apply(run.start(data, now))
    while queue and reply is None:
        at, _, kind, payload = heapq.heappop(queue)
        if at > horizon:
            break
        now = at
        if kind == "reply":
            lf, call, result = payload
            if lf == life:
                apply(run.replied(call, result, now))
        elif kind == "done":
            lf, cmd, worker, ep, outcome, tokens = payload
            running.pop((lf, cmd.call), None)
            if epoch.get(worker, 0) != ep:
                continue  # the process that ran it is gone
            meta = usage(tokens)
            if outcome.kind in ("ok", "unacked"):
                out = {"task": cmd.task, "attempt": cmd.attempt}
                cache[(worker, cmd.key or "")] = out
                result = Result(ok=True, output=out, metadata=meta)
                if outcome.kind == "unacked":  # what the asker's messenger says instead
                    result = Result(ok=False, state="failed", error="undelivered: never acknowledged", metadata={"maybeRan": True})
            elif outcome.kind == "429":
                result = Result(ok=False, state="failed", error="429", metadata={**meta, "retryAfterS": outcome.retry_after_s})
            else:
                result = Result(ok=False, state="failed", error="simulated error", metadata=meta)
            if lf == life:
                apply(run.replied(cmd.call, result, now))
        elif kind == "effect":
            worker, ep, task, key = payload
            if epoch.get(worker, 0) == ep:
                effects[(task, key)] = effects.get((task, key), 0) + 1
        elif kind == "timer":
            lf, key = payload
            if lf == life:
                apply(run.timer(key, now))
        elif kind == "kill":
            worker, down_for = payload
            down.add(worker)
            epoch[worker] = epoch.get(worker, 0) + 1
            for k in [k for k in cache if k[0] == worker]:
                del cache[k]
            for k in [k for k, w in running.items() if w == worker]:
                del running[k]
            apply(run.node_down([worker], f"{worker} killed", now))
            push(now + down_for, "up", worker)
        elif kind == "up":
            down.discard(payload)
            for lf, cmd in parked.pop(payload, []):
                sched = run.scheduler
                if lf != life or sched is None or not sched.is_current(cmd.task, cmd.attempt):
                    continue  # given up on meanwhile (lost, re-dispatched): not delivered
                ask(cmd)
            apply(run.node_up([payload], now))
        elif kind == "crash" and "plan" in journal:
            life += 1
            run = make_run()
            apply(run.start(data, now, resumed()))
    return RunSimResult(
        reply,
        stats["spent"],
        effects,
        continues,
        int(stats["max_running"]),
        int(stats["batches"]),
        int(stats["commands"]),
        int(stats["applied"]),
        life,
        now,
    )
