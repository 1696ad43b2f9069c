"""The coordinator's sans-I/O core: events in, commands out. No sockets, threads or clocks.

`Scheduler` runs a plan as a DAG. A task is dispatched the moment its last dependency
completes (not when its "level" does), tasks on the longest remaining path first, to the
least-loaded worker offering its skill. When the ready tasks are a wave that gates the rest
(the plan's last tasks, or a batch before its fan-in) and there are more of them than free
slots, the order is instead the one that `balance`s when the slots are expected to free, so
no slot is left with a long task at the end. All of it within every bound of the `Policy`:

- at most `max_in_flight` tasks at once, `per_worker` on one worker, `per_skill[s]` of a skill;
- stateful tasks (skill not read-only) on the same `resource` one at a time, in plan order;
- a requests/tokens-per-minute `RateLimiter` drawn from at dispatch; a 429 pauses it (for at
  most `retry_after_max_s`, whatever the worker's Retry-After says);
- token and cost budgets (one `Ledger` per run, shared with every other model call of the run):
  nothing is dispatched that could take the run past the cap, and each attempt's reservation
  is its allowance: the callee's model calls may not spend more;
- a timeout per attempt (task, then skill, then policy), after which the task is
  cancelled at the worker and counts as failed (read-only) or is in doubt (stateful);
- retries with exponential backoff and jitter, then an optional fallback skill; every
  attempt carries the task's idempotency key;
- fan-out groups that settle all-settled, fail-fast or quorum k-of-n;
- a queue limit: submitting past it raises `QueueFull`;
- a review phase: a reply may be held (`reviewing`) until the caller passes it on
  (`review_passed`), redoes it as a new attempt (`review_redo`) or fails it (`review_failed`);
- a stateful task whose worker is lost mid-run is in doubt: cancelled at the old worker and
  held (`in-doubt`) until `unhold` or `abandon`; read-only ones are re-dispatched.

Time comes in with each event (`now`, seconds on any monotonic clock); waiting is a
`SetTimer` command whose key comes back through `on_timer`. Every decision is a
`Decision` command, so the shell can trace it.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from agentrt.protocols import (
    Plan,
    PlanError,
    PlanTask,
    QueueFull,
    dependencies,
    resolve,
    validate_plan,
)

from ._limits import Ledger, RateLimiter

# -- configuration ---------------------------------------------------------------------


# Tokens a run may spend unless its policy says otherwise: a run always has a hard cap.
DEFAULT_TOKEN_BUDGET = 1_000_000


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a run is scheduled. Built from the coordinator's config; unknown keys are errors."""

    max_in_flight: int = 16
    per_worker: int | None = None
    per_skill: dict[str, int] = {}
    max_attempts: int = 1
    backoff_s: float = 0.5  # first retry's delay; doubles each attempt
    backoff_max_s: float = 30.0
    jitter: float = 0.5  # each delay is cut by a random fraction up to this
    timeout_s: float | None = None  # default per-attempt timeout
    rpm: float | None = None  # requests per minute, all workers together
    tpm: float | None = None  # tokens per minute, all workers together
    burst_s: float = 1.0  # the rate buckets hold this many seconds' worth
    est_tokens: int = 1000  # per task, when the task gives no estimate
    est_s: dict[str, float] = {}  # expected duration per skill (default 1.0)
    token_budget: int | None = DEFAULT_TOKEN_BUDGET  # every run has one; None lifts it
    cost_budget: float | None = None  # in USD
    usd_per_mtok: float = 0.0  # to price tokens for the cost budget
    queue_limit: int | None = None  # most tasks waiting to be dispatched
    seed: int = 0  # for backoff jitter
    retry_after_max_s: float = 60.0  # a worker's or provider's Retry-After is capped at this

    def __post_init__(self) -> None:
        def at_least(name: str, value: float | None, low: float) -> None:
            if value is not None and value < low:
                raise ValueError(f"policy field '{name}' must be >= {low}, got {value}")

        at_least("max_in_flight", self.max_in_flight, 1)
        at_least("per_worker", self.per_worker, 1)
        at_least("max_attempts", self.max_attempts, 1)
        at_least("queue_limit", self.queue_limit, 1)
        at_least("est_tokens", self.est_tokens, 0)
        at_least("backoff_s", self.backoff_s, 0)
        at_least("token_budget", self.token_budget, 0)
        at_least("cost_budget", self.cost_budget, 0)
        for skill, bound in self.per_skill.items():
            at_least(f"per_skill.{skill}", bound, 1)
        for name in ("timeout_s", "rpm", "tpm", "burst_s", "retry_after_max_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"policy field '{name}' must be > 0, got {value}")
        if self.cost_budget is not None and not self.usd_per_mtok > 0:
            raise ValueError(
                "policy field 'cost_budget' needs 'usd_per_mtok' > 0: every call reserves its worst "
                "case priced at usd_per_mtok; set it to the highest per-token price of the run's "
                "models (their output price)"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"policy field 'jitter' must be between 0 and 1, got {self.jitter}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        """A policy from a plain dict, with errors that name the field."""
        try:
            return msgspec.convert(dict(config), cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid scheduling policy: {exc}") from None


@dataclass(frozen=True)
class SkillInfo:
    """What the core needs to know of a skill, from the agent cards."""

    read_only: bool = False
    timeout_s: float | None = None


# -- commands --------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatch:
    """Send task `task_id` to `worker`, with references in its arguments resolved. Every
    attempt of a task carries the same `idempotency_key`."""

    task_id: str
    skill: str
    worker: str
    args: dict[str, Any]
    attempt: int = 1
    idempotency_key: str = ""
    timeout_s: float | None = None
    allowance: int = 0  # tokens reserved for this attempt: its model calls may spend no more


@dataclass(frozen=True)
class Cancel:
    """Tell `worker` to stop attempt `attempt` of `task_id`; its result will be ignored."""

    task_id: str
    worker: str
    attempt: int
    reason: str


@dataclass(frozen=True)
class SetTimer:
    """Call `on_timer(key, now)` at time `at` (same clock as the events' `now`)."""

    at: float
    key: tuple[Any, ...]


DecisionKind = Literal[
    "waiting",
    "held-by-bound",
    "held-by-worker-bound",
    "held-by-skill-bound",
    "held-by-rate-limit",
    "held-by-budget",
    "serialised",
    "dispatched",
    "retried",
    "redispatched",
    "fallback",
    "timed-out",
    "rate-limited",
    "cancelled",
    "skipped",
    "failed",
    "completed",
    "stale",
    "group-completed",
    "group-failed",
    "reviewing",
    "redo",
    "in-doubt",
]


@dataclass(frozen=True)
class Decision:
    """A scheduling decision worth tracing: why a task waits, is held, or ended as it did."""

    task_id: str
    decision: DecisionKind
    reason: str


@dataclass(frozen=True)
class Finish:
    """The plan is settled: every task completed, failed, was skipped or cancelled.
    `state` is completed when the final task (or group) completed; `reason` says why not."""

    state: Literal["completed", "failed", "cancelled"]
    results: dict[str, Any]
    failed: dict[str, str]
    skipped: dict[str, str]
    cancelled: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    budget: bool = False  # the run's budget stopped it


Command = Dispatch | Cancel | SetTimer | Decision | Finish

TaskPhase = Literal[
    "pending",
    "ready",
    "running",
    "reviewing",
    "backoff",
    "completed",
    "failed",
    "skipped",
    "cancelled",
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "skipped", "cancelled"})
_WAITING = frozenset({"pending", "ready", "backoff"})


@dataclass
class _Node:
    task: PlanTask
    order: int  # position in a topological order that keeps plan order where it can
    deps: set[str]
    dependents: list[str] = field(default_factory=list)
    remaining: int = 0
    phase: TaskPhase = "pending"
    skill: str = ""
    attempt: int = 0
    lost: int = 0  # attempts lost with their worker's process: they do not count
    prefer: str | None = None  # the worker to give it to if it has room (its key cache)
    on_fallback: bool = False
    worker: str | None = None
    reserved: float = 0.0  # estimated tokens drawn at dispatch
    reserved_last: float = 0.0  # what the last attempt had reserved (its allowance)
    held: str = ""  # the last hold reported, so each is traced once
    priority: float = 0.0  # longest expected path from here to the end
    started: float = 0.0  # when the current attempt was dispatched
    need: float = 0.0  # tokens a callee said one of its calls needs (its worst case)
    need_least: float = 0.0  # ... and the least it can run with (input + one output token)
    round: int = 1  # rounds of review redos; each has an idempotency key of its own
    round_start: int = 0  # attempts before this round (retries are counted per round)
    args: dict[str, Any] | None = None  # a redo's arguments (with the reviewer's feedback)


@dataclass
class _Group:
    name: str
    policy: str
    quorum: int
    members: list[str]
    dependents: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    ended: int = 0
    failures: int = 0
    phase: Literal["pending", "completed", "failed"] = "pending"


# The most tasks a last wave is balanced over; past it, longest-first is as good.
_BALANCE_MAX = 64


def balance(free_at: list[float], est: Mapping[str, float]) -> list[list[str]]:
    """Share tasks (id -> expected seconds) out over slots free at `free_at`, so that the
    last slot is expected to free early: longest task first to the slot that frees soonest
    (LPT), then tasks moved or swapped off the most loaded slot while that lowers it (a
    heuristic, not an exact search; at most 10 moves a task). Slot i's share is
    `result[i]`."""
    loads = list(free_at)
    shares: list[list[str]] = [[] for _ in loads]
    for tid in sorted(est, key=lambda t: (-est[t], t)):
        i = min(range(len(loads)), key=loads.__getitem__)
        loads[i] += est[tid]
        shares[i].append(tid)
    eps = 1e-9

    def size(b: str | None) -> float:
        return est[b] if b is not None else 0.0

    for _ in range(10 * len(est)):
        top = max(range(len(loads)), key=loads.__getitem__)
        move = next(
            (
                (other, a, b)
                for other in range(len(loads))
                if other != top
                for a in shares[top]
                for b in (None, *shares[other])
                if est[a] - size(b) > eps and loads[other] + est[a] - size(b) < loads[top] - eps
            ),
            None,
        )
        if move is None:
            break
        other, a, b = move
        delta = est[a] - size(b)
        shares[top].remove(a)
        shares[other].append(a)
        if b is not None:
            shares[other].remove(b)
            shares[top].append(b)
        loads[top] -= delta
        loads[other] += delta
    return shares


class Scheduler:
    """Dispatch-on-dependency-resolution for one plan, within the bounds of a `Policy`."""

    def __init__(
        self,
        plan: Plan,
        workers: Mapping[str, Iterable[str]],
        *,
        policy: Policy | None = None,
        skills: Mapping[str, SkillInfo] | None = None,
        max_in_flight: int | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        validate_plan(plan)
        policy = policy or Policy()
        if max_in_flight is not None:
            policy = msgspec.structs.replace(policy, max_in_flight=max_in_flight)
        if policy.queue_limit is not None and len(plan.tasks) > policy.queue_limit:
            raise QueueFull(
                f"the plan has {len(plan.tasks)} tasks; the queue limit is {policy.queue_limit}"
            )
        self.plan = plan
        self.policy = policy
        self.max_in_flight = policy.max_in_flight
        self.workers = {w: frozenset(s) for w, s in sorted(workers.items())}
        self.skills = dict(skills or {})
        self.nodes: dict[str, _Node] = {}
        self.groups: dict[str, _Group] = {}
        self.results: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.cancelled: dict[str, str] = {}
        self.load: dict[str, int] = dict.fromkeys(self.workers, 0)
        self.down: set[str] = set()  # workers whose process died
        self.running_by_skill: Counter[str] = Counter()
        self.limiter = RateLimiter(rpm=policy.rpm, tpm=policy.tpm, burst_s=policy.burst_s)
        # The run's one ledger (shared with its other model calls when the caller passes it).
        self.ledger = ledger or Ledger(policy.token_budget, policy.cost_budget, policy.usd_per_mtok)
        self.tokens = self.ledger.tokens
        self.cost = self.ledger.cost
        self.reviewing = 0  # tasks replied to and held for review
        self.queued = 0  # tasks pending, ready or in backoff
        self.in_flight = 0
        self._rng = random.Random(policy.seed)
        self._ready: list[tuple[float, int, str]] = []
        self._running: set[str] = set()
        self._fresh: list[str] = []  # made ready since the last pump
        self._resource_queue: dict[str, list[str]] = {}
        self._resource_head: dict[str, int] = {}
        self._wake_at: float | None = None
        self._started = False
        self._finished = False
        self._finish_reason = ""
        self.draining = False  # dispatch nothing more; what runs may finish
        self._budget_stop = False
        self.held: set[str] = set()  # not to be dispatched until released (see resume)
        for name, group in plan.groups.items():
            self.groups[name] = _Group(
                name, group.policy, group.quorum or 0, [t.id for t in plan.tasks if t.group == name]
            )
        self._add(plan.tasks, existing=set())

    # -- queries ----------------------------------------------------------------------

    def phase(self, task_id: str) -> TaskPhase:
        return self.nodes[task_id].phase

    def is_current(self, task_id: str, attempt: int) -> bool:
        """True if `attempt` of `task_id` is the one running: its result counts."""
        node = self.nodes[task_id]
        return node.phase == "running" and node.attempt == attempt

    @property
    def finished(self) -> bool:
        return self._finished

    def stateful(self, task: PlanTask) -> bool:
        return task.resource is not None and not self.skills.get(task.skill, SkillInfo()).read_only

    # -- events -----------------------------------------------------------------------

    def start(self, now: float = 0.0) -> list[Command]:
        self._started = True
        out: list[Command] = []
        for tid, node in self.nodes.items():
            if node.remaining == 0:
                self._make_ready(tid)
            else:
                out.append(Decision(tid, "waiting", "waiting on " + ", ".join(sorted(node.deps))))
        return out + self._pump(now)

    def resume(
        self,
        done: Mapping[str, Any],
        now: float = 0.0,
        *,
        failed: Mapping[str, str] | None = None,
        prefer: Mapping[str, str] | None = None,
        held: Iterable[str] = (),
        attempts: Mapping[str, tuple[int, int, dict[str, Any] | None]] | None = None,
    ) -> list[Command]:
        """Start a schedule whose tasks in `done` (id -> result, from a journal) completed in
        an earlier life of the run: they are not run again, and their dependents see their
        results. Tasks in `failed` (id -> reason) are failed without running. A task in
        `prefer` (id -> worker; where it was running) goes back to that worker if it can, so
        the worker's idempotency cache answers instead of running it again. Everything else
        runs as after `start`, except tasks `held`: not dispatched until `unhold` (or failed
        with `abandon`), as while a person decides about them. `attempts` (id -> (attempts
        sent, round, the round's arguments)) carries on each task's count where the earlier
        life left it: the attempt that was in flight then does not count against max_attempts,
        and a redo round keeps its arguments and its idempotency key."""
        failed = dict(failed or {})
        self.held.update(held)
        for tid, (sent, round_, args) in (attempts or {}).items():
            node = self.nodes.get(tid)
            if node is not None and sent > 0:
                node.attempt, node.round, node.args = sent, round_, args
                node.lost = 1  # the attempt in flight when the run stopped
                node.round_start = 0 if round_ == 1 else sent - 1
        for tid, worker in (prefer or {}).items():
            if tid in self.nodes:
                self.nodes[tid].prefer = worker
        unknown = sorted((set(done) | set(failed)) - set(self.nodes))
        if unknown:
            raise PlanError(f"the journal has results for tasks not in the plan: {', '.join(unknown)}")
        self._started = True
        out: list[Command] = []
        for tid in sorted(done, key=lambda t: self.nodes[t].order):
            node = self.nodes[tid]
            node.phase = "completed"
            self.queued -= 1
            self.results[tid] = done[tid]
            out.append(Decision(tid, "completed", "completed before the restart (from the journal)"))
            self._ended(node, out)
            self._satisfy(node.dependents, out)
        for tid, reason in failed.items():
            if self.nodes[tid].phase in ("pending", "ready"):
                out.extend(self._fail(tid, reason))
        for tid, node in self.nodes.items():
            if node.phase == "pending" and node.remaining == 0:
                self._make_ready(tid)
            elif node.phase == "pending":
                out.append(Decision(tid, "waiting", "waiting on " + ", ".join(sorted(node.deps))))
        return out + self._pump(now)

    def submit(self, tasks: list[PlanTask], now: float = 0.0) -> list[Command]:
        """Add tasks to a running schedule. They may depend on any task already in it.
        Raises QueueFull past the queue limit, PlanError for a task that cannot run."""
        limit = self.policy.queue_limit
        if limit is not None and self.queued + len(tasks) > limit:
            raise QueueFull(
                f"{self.queued} tasks are waiting; submitting {len(tasks)} more would pass "
                f"the queue limit of {limit}"
            )
        known = set(self.nodes) | set(self.groups)
        combined = Plan(
            goal=self.plan.goal,
            tasks=[n.task for n in self.nodes.values()] + list(tasks),
            groups=self.plan.groups,
            final=self.plan.final_task(),
        )
        validate_plan(combined)
        if any(t.group is not None for t in tasks):
            raise PlanError("tasks submitted to a running schedule cannot join a group")
        self.plan = combined
        out: list[Command] = []
        for tid in self._add(tasks, existing=known):
            node = self.nodes[tid]
            for dep in node.deps:
                if self._settled_ok(dep):
                    node.remaining -= 1
                elif self._settled_bad(dep):
                    out.extend(self._skip(tid, f"dependency '{dep}' did not complete"))
                    break
            if node.phase == "pending" and self._started:
                if node.remaining == 0:
                    self._make_ready(tid)
                else:
                    waits = sorted(d for d in node.deps if not self._settled_ok(d))
                    out.append(Decision(tid, "waiting", "waiting on " + ", ".join(waits)))
        if self._finished:  # reopened by new work
            self._finished = False
        return out + self._pump(now)

    def task_succeeded(
        self,
        task_id: str,
        result: Any,
        *,
        attempt: int | None = None,
        now: float = 0.0,
        tokens: float | None = None,
        cost: float | None = None,
        review: bool = False,
    ) -> list[Command]:
        """The current attempt of `task_id` answered `result`. With `review`, the task is
        held (`reviewing`: its worker's slot is free, its dependents still wait) until
        `review_passed`, `review_redo` or `review_failed`."""
        node = self._current(task_id, attempt)
        if node is None:
            return [self._stale(task_id, attempt)]
        used = node.reserved if tokens is None else tokens
        self._release(node, used_tokens=used, used_cost=cost)
        if review:
            node.phase = "reviewing"
            self.reviewing += 1
            return [Decision(task_id, "reviewing", f"attempt {node.attempt} on {node.worker}: held for review"), *self._pump(now)]
        return self._complete(node, result, f"attempt {node.attempt} on {node.worker}", now)

    def _complete(self, node: _Node, result: Any, why: str, now: float) -> list[Command]:
        task_id = node.task.id
        node.phase = "completed"
        self.results[task_id] = result
        out: list[Command] = [Decision(task_id, "completed", why)]
        self._ended(node, out)
        self._satisfy(node.dependents, out)
        return out + self._pump(now)

    def _reviewed(self, task_id: str) -> _Node:
        node = self.nodes[task_id]
        if node.phase != "reviewing":
            raise ValueError(f"task '{task_id}' is {node.phase}, not reviewing")
        self.reviewing -= 1
        return node

    def review_passed(self, task_id: str, result: Any, reason: str = "", now: float = 0.0) -> list[Command]:
        """The reviewed task completes with `result`; its dependents may start."""
        node = self._reviewed(task_id)
        return self._complete(node, result, reason or f"attempt {node.attempt} on {node.worker}: passed review", now)

    def review_redo(self, task_id: str, args: dict[str, Any], reason: str, now: float = 0.0) -> list[Command]:
        """The review asks for the task again: a new round, run as a new attempt with `args`
        (and an idempotency key of its own), within every bound, limit, budget and timeout
        of any other attempt."""
        node = self._reviewed(task_id)
        node.round += 1
        node.round_start = node.attempt - node.lost
        node.args = args
        self.queued += 1
        self._make_ready(task_id)
        return [Decision(task_id, "redo", f"round {node.round} (attempt {node.attempt + 1}): {reason}"), *self._pump(now)]

    def review_failed(self, task_id: str, reason: str, now: float = 0.0) -> list[Command]:
        """The review fails the task: its dependents are skipped."""
        self._reviewed(task_id)
        return self._fail(task_id, reason) + self._pump(now)

    def task_failed(
        self,
        task_id: str,
        error: str,
        *,
        attempt: int | None = None,
        now: float = 0.0,
        retryable: bool = True,
        retry_after_s: float | None = None,
        tokens: float | None = None,
        need_tokens: float | None = None,
        least_tokens: float | None = None,
    ) -> list[Command]:
        """The current attempt failed. `need_tokens`: the callee refused a model call that
        needs that many tokens (its worst case) where its allowance was less; the task goes
        again as soon as the run's budget can reserve that much (the refused attempt does
        not count), and if it never can, the budget stops the run."""
        node = self._current(task_id, attempt)
        if node is None:
            return [self._stale(task_id, attempt)]
        self._release(node, used_tokens=tokens or 0.0, used_cost=None)
        out: list[Command] = []
        if need_tokens is not None and need_tokens > node.reserved_last:
            node.need = float(need_tokens)
            node.need_least = float(least_tokens if least_tokens is not None else need_tokens)
            node.lost += 1
            self.queued += 1
            self._make_ready(task_id)
            out.append(Decision(task_id, "retried", f"attempt {node.attempt}: {error}; again with {need_tokens:g} tokens reserved"))
            return out + self._pump(now)
        if retry_after_s is not None:
            cap = self.policy.retry_after_max_s
            capped = min(retry_after_s, cap)
            self.limiter.pause(now + capped)
            note = f" (Retry-After {retry_after_s:g}s capped by retry_after_max_s)" if capped < retry_after_s else ""
            out.append(Decision(task_id, "rate-limited", f"429: quota paused for {capped:g}s{note}"))
            retry_after_s = capped
        out.extend(self._attempt_failed(node, error, now, retryable, retry_after_s))
        return out + self._pump(now)

    def task_unanswered(self, task_id: str, reason: str, *, attempt: int | None = None, now: float = 0.0) -> list[Command]:
        """The current attempt went out and its answer will never come, though its request may
        have arrived (it was sent and never acknowledged): handled as a timeout is. Read-only
        work is tried again; stateful work is in doubt, held for a decision, never retried
        blindly (elsewhere it would run a second time)."""
        node = self._current(task_id, attempt)
        if node is None:
            return [self._stale(task_id, attempt)]
        self._release(node, used_tokens=node.reserved, used_cost=None)  # it may have spent it
        return self._unanswered(node, reason, reason, now) + self._pump(now)

    def _unanswered(self, node: _Node, error: str, why: str, now: float) -> list[Command]:
        """`error`: what a read-only attempt failed with; `why`: why a stateful one is in doubt."""
        if self.read_only(node):
            return self._attempt_failed(node, error, now, True, None)
        # A stateful attempt that did not answer may or may not have had its effect.
        tid = node.task.id
        self.held.add(tid)
        self.queued += 1
        self._make_ready(tid)
        return [Decision(tid, "in-doubt", f"in doubt: attempt {node.attempt} on {node.worker} {why}; its effect may or may not have happened, so it is held for a decision")]

    def on_timer(self, key: tuple[Any, ...], now: float) -> list[Command]:
        out: list[Command] = []
        if self._finished:
            return out
        kind = key[0]
        if kind == "timeout":
            _, tid, attempt = key
            node = self.nodes.get(tid)
            if node is None or node.phase != "running" or node.attempt != attempt:
                return out
            timeout = self._timeout(node)
            reason = f"timed out after {timeout:g}s"
            out.append(Cancel(tid, node.worker or "", attempt, reason))
            out.append(Decision(tid, "timed-out", f"attempt {attempt} on {node.worker}: {reason}"))
            self._release(node, used_tokens=node.reserved, used_cost=None)
            out.extend(self._unanswered(node, reason, f"{reason} without an answer", now))
        elif kind == "retry":
            node = self.nodes.get(key[1])
            if node is not None and node.phase == "backoff":
                self._make_ready(key[1])
        elif kind == "wake":
            self._wake_at = None
        return out + self._pump(now)

    def unhold(self, task_id: str, now: float = 0.0) -> list[Command]:
        """A held task may be dispatched now."""
        self.held.discard(task_id)
        return self._pump(now)

    def abandon(self, task_id: str, reason: str, now: float = 0.0) -> list[Command]:
        """Fail a task that has not run (its dependents are skipped)."""
        self.held.discard(task_id)
        node = self.nodes[task_id]
        if node.phase in TERMINAL or node.phase in ("running", "reviewing"):
            return []
        return self._fail(task_id, reason) + self._pump(now)

    def exhaust(self, reason: str, now: float = 0.0) -> list[Command]:
        """The run's budget cannot pay for a call it needs (`reason` names what was spent and
        what was asked): nothing more is dispatched, waiting tasks are skipped, what is in
        flight may finish, and the Finish says the budget stopped the run."""
        if self._finished:
            return []
        out: list[Command] = []
        self._stop_for_budget(reason, out)
        return out + self._pump(now)

    def pump(self, now: float = 0.0) -> list[Command]:
        """Dispatch what can go now (after the caller settled a call on the shared ledger)."""
        return self._pump(now)

    def drain(self, reason: str) -> list[Command]:
        """Dispatch nothing more (tasks in flight finish; retries wait): the run is stopping,
        to be resumed later."""
        self.draining = True
        return [Decision(t, "waiting", f"draining: {reason}") for t, n in self.nodes.items() if n.phase == "ready"]

    def worker_lost(self, worker: str, reason: str, now: float = 0.0) -> list[Command]:
        """`worker` is gone (its process died): nothing more goes to it until `worker_back`.
        Each read-only task running there is dispatched again, to a live worker, as a new
        attempt with the same idempotency key (the lost attempt does not count against
        max_attempts). A stateful one is in doubt (its effect may or may not have happened):
        it is cancelled at the old worker and held until `unhold` (run it again, same key)
        or `abandon` (fail it); it is never re-run without that decision."""
        if self._finished or worker not in self.workers:
            return []
        self.down.add(worker)
        out: list[Command] = []
        for tid, node in self.nodes.items():
            if node.phase == "running" and node.worker == worker:
                self._release(node, used_tokens=node.reserved, used_cost=None)
                node.lost += 1
                self.queued += 1
                lost = f"attempt {node.attempt} lost with {worker} ({reason})"
                if not self.read_only(node):
                    self.held.add(tid)
                    out.append(Cancel(tid, worker, node.attempt, f"in doubt: {lost}"))
                    self._make_ready(tid)
                    out.append(Decision(tid, "in-doubt", f"in doubt: {lost}; its effect may or may not have happened, so it is held for a decision"))
                    continue
                self._make_ready(tid)
                out.append(Decision(tid, "redispatched", lost))
        return out + self._pump(now)

    def read_only(self, node: _Node) -> bool:
        return self.skills.get(node.skill, SkillInfo()).read_only

    def worker_back(self, worker: str, now: float = 0.0) -> list[Command]:
        """`worker` is alive again (its node restarted): it may be given work."""
        if worker not in self.down:
            return []
        self.down.discard(worker)
        return self._pump(now)

    def cancel(self, reason: str, now: float = 0.0) -> list[Command]:
        """Cancel the run: everything in flight is cancelled, nothing more is dispatched."""
        if self._finished:
            return []
        out: list[Command] = []
        for tid, node in self.nodes.items():
            if node.phase in ("running", "reviewing") or node.phase in _WAITING:
                out.extend(self._cancel_task(tid, reason))
        self._finish_reason = f"cancelled: {reason}"
        return out + self._pump(now)

    # -- building the graph ---------------------------------------------------------------

    def _add(self, tasks: list[PlanTask], existing: set[str]) -> list[str]:
        """Add tasks, in a topological order that keeps plan order where it can."""
        new = {t.id: t for t in tasks}
        index = {t.id: i for i, t in enumerate(tasks)}
        indeg: dict[str, int] = {}
        children: dict[str, list[str]] = {t: [] for t in new}
        for t in tasks:
            local = [d for d in dependencies(t) if d in new]
            indeg[t.id] = len(local)
            for d in local:
                children[d].append(t.id)
        heap = [(index[t], t) for t, n in indeg.items() if n == 0]
        heapq.heapify(heap)
        ordered: list[str] = []
        while heap:
            _, tid = heapq.heappop(heap)
            ordered.append(tid)
            for c in children[tid]:
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, (index[c], c))
        base = len(self.nodes)
        for i, tid in enumerate(ordered):
            task = new[tid]
            deps = dependencies(task)
            node = _Node(task=task, order=base + i, deps=deps, remaining=len(deps), skill=task.skill)
            self.nodes[tid] = node
            self.queued += 1
            for dep in deps:
                target = self.groups.get(dep)
                (target.dependents if target else self.nodes[dep].dependents).append(tid)
            if self.stateful(task):
                assert task.resource is not None
                self._resource_queue.setdefault(task.resource, []).append(tid)
                self._resource_head.setdefault(task.resource, 0)
        self._prioritise(ordered)
        return ordered

    def _est_s(self, task: PlanTask) -> float:
        return task.est_s if task.est_s is not None else self.policy.est_s.get(task.skill, 1.0)

    def _prioritise(self, ordered: list[str]) -> None:
        """Priority = the longest expected path from a task to the end of the plan."""
        group_priority: dict[str, float] = {}
        for tid in reversed(ordered):
            node = self.nodes[tid]
            best = 0.0
            for d in node.dependents:
                best = max(best, self.nodes[d].priority)
            if node.task.group is not None:
                group = self.groups[node.task.group]
                if group.name not in group_priority:
                    group_priority[group.name] = max(
                        (self.nodes[d].priority for d in group.dependents if d in self.nodes),
                        default=0.0,
                    )
                best = max(best, group_priority[group.name])
            node.priority = self._est_s(node.task) + best

    # -- state changes --------------------------------------------------------------------

    def _current(self, task_id: str, attempt: int | None) -> _Node | None:
        node = self.nodes.get(task_id)
        if node is None:
            raise ValueError(f"task '{task_id}' is not in the plan")
        if node.phase == "running" and (attempt is None or attempt == node.attempt):
            return node
        if attempt is None:
            raise ValueError(f"task '{task_id}' is {node.phase}, not running")
        return None

    def _stale(self, task_id: str, attempt: int | None) -> Decision:
        node = self.nodes[task_id]
        return Decision(
            task_id,
            "stale",
            f"result of attempt {attempt} ignored: the task is {node.phase}"
            + (f" (attempt {node.attempt})" if node.phase == "running" else ""),
        )

    def _release(self, node: _Node, *, used_tokens: float, used_cost: float | None) -> None:
        self.in_flight -= 1
        self._running.discard(node.task.id)
        if node.worker is not None:
            self.load[node.worker] -= 1
        self.running_by_skill[node.skill] -= 1
        self.ledger.settle(node.reserved, used_tokens, used_cost)
        self.limiter.settle(node.reserved, used_tokens)
        node.reserved = 0.0

    def _make_ready(self, task_id: str) -> None:
        node = self.nodes[task_id]
        node.phase = "ready"
        node.held = ""
        heapq.heappush(self._ready, (-node.priority, node.order, task_id))
        self._fresh.append(task_id)

    def _satisfy(self, dependents: list[str], out: list[Command]) -> None:
        for dep_id in dependents:
            dependent = self.nodes[dep_id]
            dependent.remaining -= 1
            if dependent.remaining == 0 and dependent.phase == "pending":
                self._make_ready(dep_id)

    def _settled_ok(self, name: str) -> bool:
        if name in self.groups:
            return self.groups[name].phase == "completed"
        return self.nodes[name].phase == "completed"

    def _settled_bad(self, name: str) -> bool:
        if name in self.groups:
            return self.groups[name].phase == "failed"
        return self.nodes[name].phase in ("failed", "skipped", "cancelled")

    def _attempt_failed(
        self, node: _Node, error: str, now: float, retryable: bool, retry_after_s: float | None
    ) -> list[Command]:
        tid = node.task.id
        max_attempts = node.task.max_attempts or self.policy.max_attempts
        tries = node.attempt - node.lost - node.round_start  # attempts of this round that count
        if retryable and not node.on_fallback and tries < max_attempts:
            base = min(self.policy.backoff_max_s, self.policy.backoff_s * 2 ** (tries - 1))
            delay = base * (1 - self.policy.jitter * self._rng.random())
            delay = max(delay, retry_after_s or 0.0)
            node.phase = "backoff"
            self.queued += 1
            return [
                Decision(
                    tid,
                    "retried",
                    (
                        f"attempt {node.attempt} of {max_attempts}"
                        if tries == node.attempt
                        else f"attempt {node.attempt} ({tries} of {max_attempts} this round)"
                    )
                    + f" failed ({error}); "
                    f"attempt {node.attempt + 1} in {delay:.3g}s",
                ),
                SetTimer(now + delay, ("retry", tid)),
            ]
        if node.task.fallback is not None and not node.on_fallback:
            node.on_fallback = True
            node.skill = node.task.fallback
            self.queued += 1
            self._make_ready(tid)
            return [
                Decision(
                    tid,
                    "fallback",
                    f"attempt {node.attempt} failed ({error}); falling back to skill "
                    f"'{node.task.fallback}'",
                )
            ]
        return self._fail(tid, error)

    def _fail(self, task_id: str, error: str) -> list[Command]:
        node = self.nodes[task_id]
        if node.phase in _WAITING:
            self.queued -= 1
        node.phase = "failed"
        self.failed[task_id] = error
        out: list[Command] = [Decision(task_id, "failed", error)]
        self._ended(node, out)
        self._skip_dependents(node.dependents, task_id, out)
        return out

    def _skip(self, task_id: str, reason: str) -> list[Command]:
        node = self.nodes[task_id]
        if node.phase in _WAITING:
            self.queued -= 1
        node.phase = "skipped"
        self.skipped[task_id] = reason
        out: list[Command] = [Decision(task_id, "skipped", reason)]
        self._ended(node, out)
        self._skip_dependents(node.dependents, task_id, out)
        return out

    def _skip_dependents(self, dependents: list[str], cause: str, out: list[Command]) -> None:
        for tid in dependents:
            if self.nodes[tid].phase in _WAITING:
                out.extend(self._skip(tid, f"dependency '{cause}' did not complete"))

    def _cancel_task(self, task_id: str, reason: str) -> list[Command]:
        node = self.nodes[task_id]
        out: list[Command] = []
        if node.phase == "running":
            out.append(Cancel(task_id, node.worker or "", node.attempt, reason))
            self._release(node, used_tokens=node.reserved, used_cost=None)
        elif node.phase == "reviewing":
            self.reviewing -= 1
        elif node.phase in _WAITING:
            self.queued -= 1
        else:
            return out
        node.phase = "cancelled"
        self.cancelled[task_id] = reason
        out.append(Decision(task_id, "cancelled", reason))
        self._ended(node, out)
        self._skip_dependents(node.dependents, task_id, out)
        return out

    def _ended(self, node: _Node, out: list[Command]) -> None:
        """A task reached a terminal phase: move its resource queue on, settle its group."""
        task = node.task
        if task.resource is not None and task.resource in self._resource_queue:
            queue = self._resource_queue[task.resource]
            head = self._resource_head[task.resource]
            while head < len(queue) and self.nodes[queue[head]].phase in TERMINAL:
                head += 1
            self._resource_head[task.resource] = head
        if task.group is not None:
            self._member_ended(self.groups[task.group], node, out)

    def _member_ended(self, group: _Group, node: _Node, out: list[Command]) -> None:
        if group.phase != "pending":
            return
        group.ended += 1
        if node.phase == "completed":
            group.done.append(node.task.id)
        elif node.phase == "failed":
            group.failures += 1
        n = len(group.members)
        if group.policy == "all-settled":
            if group.ended == n:
                self._group_completed(group, f"all {n} settled, {len(group.done)} completed", out)
        elif group.policy == "fail-fast":
            if node.phase != "completed":
                self._group_failed(group, f"'{node.task.id}' {node.phase}: fail-fast", out)
            elif len(group.done) == n:
                self._group_completed(group, f"all {n} completed", out)
        else:
            missing = n - group.ended
            if len(group.done) >= group.quorum:
                self._group_completed(group, f"quorum {group.quorum} of {n} reached", out)
            elif len(group.done) + missing < group.quorum:
                self._group_failed(
                    group,
                    f"quorum {group.quorum} of {n} out of reach ({group.ended - len(group.done)} did not complete)",
                    out,
                )

    def _group_completed(self, group: _Group, reason: str, out: list[Command]) -> None:
        group.phase = "completed"
        done = set(group.done)
        self.results[group.name] = {t: self.results[t] for t in group.members if t in done}
        out.append(Decision(group.name, "group-completed", reason))
        self._cancel_rest(group, f"group '{group.name}' settled: {reason}", out)
        self._satisfy(group.dependents, out)

    def _group_failed(self, group: _Group, reason: str, out: list[Command]) -> None:
        group.phase = "failed"
        self.failed[group.name] = reason
        out.append(Decision(group.name, "group-failed", reason))
        self._cancel_rest(group, f"group '{group.name}' failed: {reason}", out)
        self._skip_dependents(group.dependents, group.name, out)

    def _cancel_rest(self, group: _Group, reason: str, out: list[Command]) -> None:
        for tid in group.members:
            if self.nodes[tid].phase not in TERMINAL:
                out.extend(self._cancel_task(tid, reason))

    # -- dispatching -----------------------------------------------------------------------

    def _timeout(self, node: _Node) -> float | None:
        if node.task.timeout_s is not None and not node.on_fallback:
            return node.task.timeout_s
        info = self.skills.get(node.skill)
        if info is not None and info.timeout_s is not None:
            return info.timeout_s
        return self.policy.timeout_s

    def _hold(self, node: _Node, kind: DecisionKind, reason: str, out: list[Command]) -> None:
        if node.held != reason:
            node.held = reason
            out.append(Decision(node.task.id, kind, reason))

    def _blocker(self, node: _Node) -> tuple[DecisionKind, str] | None:
        """Why this ready task cannot go now, apart from the global bound and rate limits."""
        task = node.task
        bound = self.policy.per_skill.get(node.skill)
        if bound is not None and self.running_by_skill[node.skill] >= bound:
            return "held-by-skill-bound", f"{bound} '{node.skill}' tasks in flight = per_skill bound"
        if self.stateful(task):
            assert task.resource is not None
            queue = self._resource_queue[task.resource]
            head = queue[self._resource_head[task.resource]]
            if head != task.id:
                return "serialised", f"serialised behind '{head}' on resource '{task.resource}'"
        return None

    def _pick_worker(self, skill: str, prefer: str | None = None) -> tuple[str | None, bool]:
        """(the preferred worker if it has room, else the least-loaded one with room; whether
        any worker offers the skill at all)."""
        offering = [w for w, s in self.workers.items() if skill in s and w not in self.down]
        if not offering and any(skill in s for s in self.workers.values()):
            return None, True  # every worker of the skill is down: wait for a restart
        cap = self.policy.per_worker
        room = [w for w in offering if cap is None or self.load[w] < cap]
        if not room:
            return None, bool(offering)
        if prefer in room:
            return prefer, True
        return min(room, key=lambda w: (self.load[w], w)), True

    def _pump(self, now: float) -> list[Command]:
        out: list[Command] = []
        if self._finished:
            return out
        deferred: list[tuple[float, int, str]] = []
        budget_held = False
        front = self._last_wave(now)
        while (front or self._ready) and self.in_flight < self.max_in_flight and not self.draining:
            entry = front.pop(0) if front else heapq.heappop(self._ready)
            tid = entry[2]
            node = self.nodes[tid]
            if node.phase != "ready":
                continue
            if tid in self.held:
                self._hold(node, "waiting", "held: waiting for a decision about it", out)
                deferred.append(entry)
                continue
            blocker = self._blocker(node)
            if blocker is not None:
                self._hold(node, blocker[0], blocker[1], out)
                deferred.append(entry)
                continue
            worker, offered = self._pick_worker(node.skill, node.prefer)
            if not offered:
                out.extend(self._fail(tid, f"no worker offers skill '{node.skill}'"))
                continue
            if worker is None:
                self._hold(
                    node,
                    "held-by-worker-bound",
                    f"every worker of '{node.skill}' has {self.policy.per_worker} in flight",
                    out,
                )
                deferred.append(entry)
                continue
            granted, short = self._grant(node)
            if granted is None:
                self._hold(node, "held-by-budget", short or "budget", out)
                deferred.append(entry)
                budget_held = True
                continue
            est = granted
            wait = self.limiter.wait_s(est, now) if self.limiter.active else 0.0
            if wait > 0:
                self._hold(node, "held-by-rate-limit", "rate limit: waiting for quota", out)
                deferred.append(entry)
                at = now + wait
                if self._wake_at is None or at < self._wake_at - 1e-12:
                    self._wake_at = at
                    out.append(SetTimer(at, ("wake",)))
                break
            self.limiter.take(est, now)
            self.ledger.reserve(est)
            node.reserved = node.reserved_last = est
            node.phase = "running"
            node.started = now
            self._running.add(tid)
            node.worker = worker
            node.attempt += 1
            node.held = ""
            self.queued -= 1
            self.in_flight += 1
            self.load[worker] += 1
            self.running_by_skill[node.skill] += 1
            timeout = self._timeout(node)
            out.append(
                Dispatch(
                    tid,
                    node.skill,
                    worker,
                    node.args if node.args is not None else resolve(node.task.args, self.results),
                    attempt=node.attempt,
                    idempotency_key=tid if node.round == 1 else f"{tid}@round{node.round}",
                    timeout_s=timeout,
                    allowance=int(est),
                )
            )
            if timeout is not None:
                out.append(SetTimer(now + timeout, ("timeout", tid, node.attempt)))
        for entry in deferred + front:
            heapq.heappush(self._ready, entry)
        if self.in_flight >= self.max_in_flight:
            for tid in self._fresh:
                node = self.nodes[tid]
                if node.phase == "ready" and not node.held:
                    self._hold(
                        node, "held-by-bound", f"{self.in_flight} in flight = max_in_flight", out
                    )
        self._fresh.clear()
        if budget_held and self.in_flight == 0 and not self.reviewing and not self._pending_timers():
            self._exhaust_budget(out)
        if self.queued == 0 and self.in_flight == 0 and not self.reviewing:
            self._finish(out)
        return out

    def _last_wave(self, now: float) -> list[tuple[float, int, str]]:
        """The ready entries to dispatch first, taken off the ready heap, when the ready tasks
        are a wave that gates the rest of the plan (`_gates_the_rest`: the last tasks, or a
        batch before its fan-in), none is stateful or held, their estimates differ, and there
        are more of them than free slots. Then which task starts now decides when the wave
        ends: the tasks are `balance`d over the slots (free ones now, busy ones when their
        task is expected to end) and each free slot starts the longest task of its share.
        Otherwise nothing: the heap's longest-path order holds."""
        if self.draining or not self.queued or self.queued > _BALANCE_MAX:
            return []
        slots = self.max_in_flight
        if self.policy.per_worker is not None:
            slots = min(slots, self.policy.per_worker * len(set(self.workers) - self.down))
        free = slots - self.in_flight
        if free <= 0:
            return []
        entries = {e[2]: e for e in self._ready if self.nodes[e[2]].phase == "ready"}
        if len(entries) <= free:
            return []
        nodes = [self.nodes[tid] for tid in entries]
        if any(n.task.id in self.held or self.stateful(n.task) for n in nodes):
            return []
        est = {n.task.id: self._est_s(n.task) for n in nodes}
        if len(set(est.values())) == 1:
            return []  # alike as far as the core knows: any order balances the same
        if not self._gates_the_rest(set(entries)):
            return []
        busy = [self.nodes[tid] for tid in sorted(self._running)]
        free_at = [now] * free + [max(now, n.started + self._est_s(n.task)) for n in busy]
        shares = balance(free_at, est)
        first = [
            max(share, key=lambda t: (est[t], -self.nodes[t].order)) for share in shares[:free] if share
        ]
        first.sort(key=lambda t: entries[t])
        chosen = set(first)
        self._ready = [e for e in self._ready if e[2] not in chosen]
        heapq.heapify(self._ready)
        return [entries[t] for t in first]

    def _gates_the_rest(self, ready: set[str]) -> bool:
        """True if no task still to run can start before every `ready` task has ended: all
        others wait on a dependency (none in a retry's backoff), and each waiting task that
        waits on no other waiting task waits on every ready one (a fan-in, such as an index
        over a batch). Found from the ready and running tasks' dependents, so it costs what
        is left, not the plan's size; a task waiting on a group makes it False."""
        waiting: set[str] = set()
        stack = [d for tid in ready | self._running for d in self.nodes[tid].dependents]
        while stack:
            tid = stack.pop()
            node = self.nodes[tid]
            if tid in waiting or node.phase != "pending":
                continue
            waiting.add(tid)
            if len(waiting) + len(ready) > self.queued:
                return False
            stack.extend(node.dependents)
        if len(waiting) + len(ready) != self.queued:
            return False
        for tid in waiting:
            deps = self.nodes[tid].deps
            if any(d in self.groups for d in deps):
                return False
            unfinished = {d for d in deps if self.nodes[d].phase not in TERMINAL}
            if not unfinished & waiting and not ready <= unfinished:
                return False
        return True

    def _pending_timers(self) -> bool:
        return self._wake_at is not None or any(n.phase == "backoff" for n in self.nodes.values())

    def _est_tokens(self, node: _Node) -> float:
        est = node.task.est_tokens
        return max(float(est if est is not None else self.policy.est_tokens), node.need)

    def _grant(self, node: _Node) -> tuple[float | None, str | None]:
        """(tokens to reserve for the node's next attempt, or None and why not). A callee's
        call that needs more than is left gets what is left, if it can run with that."""
        est = self._est_tokens(node)
        short = self.ledger.shortfall(est)
        if short is None:
            return est, None
        if node.need and node.need_least:
            granted = self.ledger.grant(est, max(node.need_least, 1.0))
            if granted is not None:
                return granted, None
            return None, self.ledger.shortfall(node.need_least)
        return None, short

    def _exhaust_budget(self, out: list[Command]) -> None:
        ready = [n for n in self.nodes.values() if n.phase == "ready" and n.task.id not in self.held]
        reason = next((r for n in ready if (r := self._grant(n)[1]) is not None), "the run's budget is spent")
        self._stop_for_budget(reason, out)

    def _stop_for_budget(self, reason: str, out: list[Command]) -> None:
        if not self._budget_stop:
            self._budget_stop = True
            self._finish_reason = reason
        self.draining = True
        for tid, node in self.nodes.items():
            if node.phase in _WAITING:
                out.extend(self._skip(tid, reason))

    def _finish(self, out: list[Command]) -> None:
        self._finished = True
        final = self.plan.final_task()
        if final in self.results:
            state: Literal["completed", "failed", "cancelled"] = "completed"
        elif self._finish_reason.startswith("cancelled"):
            state = "cancelled"
        else:
            state = "failed"
        reason = self._finish_reason
        if state == "completed" and self._budget_stop:
            reason = ""  # the final task made it; what the budget stopped did not matter
        if state == "failed" and not reason:
            why = self.failed.get(final) or self.skipped.get(final) or self.cancelled.get(final)
            reason = f"final task '{final}' did not complete" + (f": {why}" if why else "")
        out.append(
            Finish(
                state,
                dict(self.results),
                dict(self.failed),
                dict(self.skipped),
                dict(self.cancelled),
                reason,
                budget=self._budget_stop and state != "completed",
            )
        )
