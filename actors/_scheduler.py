"""The coordinator's sans-I/O core: events in, commands out. No sockets, threads or clocks.

`Scheduler` runs a plan as a DAG: a task is dispatched the moment its last dependency
completes (not when its "level" does), within a global bound on tasks in flight, to the
least-loaded worker offering its skill. A failed task's dependents are skipped, with the
reason. `JudgeLoop` governs the critic/judge iterations over the final result.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentrt.protocols import Plan, Verdict, dependencies, resolve, validate_plan


@dataclass(frozen=True)
class Dispatch:
    """Send task `task_id` to `worker`, with references in its arguments resolved."""

    task_id: str
    skill: str
    worker: str
    args: dict[str, Any]
    attempt: int = 1


@dataclass(frozen=True)
class Decision:
    """A scheduling decision worth tracing: why a task waits, is held, or is skipped."""

    task_id: str
    decision: Literal["waiting", "held-by-bound", "skipped", "failed", "completed"]
    reason: str


@dataclass(frozen=True)
class Finish:
    """The plan is settled: every task completed, failed or skipped."""

    state: Literal["completed", "failed"]
    results: dict[str, Any]
    failed: dict[str, str]
    skipped: dict[str, str]


Command = Dispatch | Decision | Finish

TaskPhase = Literal["pending", "ready", "running", "completed", "failed", "skipped"]


@dataclass
class _Node:
    index: int
    deps: set[str]
    dependents: list[str] = field(default_factory=list)
    remaining: int = 0
    phase: TaskPhase = "pending"
    worker: str | None = None
    held: bool = False


class Scheduler:
    """Dispatch-on-dependency-resolution for one plan."""

    def __init__(
        self, plan: Plan, workers: Mapping[str, Iterable[str]], *, max_in_flight: int = 16
    ) -> None:
        validate_plan(plan)
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.plan = plan
        self.max_in_flight = max_in_flight
        self.workers = {w: frozenset(skills) for w, skills in sorted(workers.items())}
        self.tasks = {t.id: t for t in plan.tasks}
        self.nodes: dict[str, _Node] = {}
        for i, t in enumerate(plan.tasks):
            deps = dependencies(t)
            self.nodes[t.id] = _Node(index=i, deps=deps, remaining=len(deps))
        for tid, node in self.nodes.items():
            for dep in node.deps:
                self.nodes[dep].dependents.append(tid)
        self.results: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.load: dict[str, int] = dict.fromkeys(self.workers, 0)
        self._ready: list[tuple[int, str]] = []
        self._finished = False

    # -- queries ----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return sum(1 for n in self.nodes.values() if n.phase == "running")

    def phase(self, task_id: str) -> TaskPhase:
        return self.nodes[task_id].phase

    @property
    def finished(self) -> bool:
        return self._finished

    # -- events -----------------------------------------------------------------------

    def start(self) -> list[Command]:
        out: list[Command] = []
        for tid, node in self.nodes.items():
            if node.remaining == 0:
                self._make_ready(tid)
            else:
                out.append(Decision(tid, "waiting", "waiting on " + ", ".join(sorted(node.deps))))
        return out + self._pump()

    def task_succeeded(self, task_id: str, result: Any) -> list[Command]:
        node = self._running(task_id)
        node.phase = "completed"
        self._release(node)
        self.results[task_id] = result
        out: list[Command] = [Decision(task_id, "completed", f"on {node.worker}")]
        for dep_id in node.dependents:
            dependent = self.nodes[dep_id]
            dependent.remaining -= 1
            if dependent.remaining == 0 and dependent.phase == "pending":
                self._make_ready(dep_id)
        return out + self._pump()

    def task_failed(self, task_id: str, error: str) -> list[Command]:
        node = self._running(task_id)
        self._release(node)
        return self._fail(task_id, error) + self._pump()

    # -- internals ----------------------------------------------------------------------

    def _running(self, task_id: str) -> _Node:
        node = self.nodes.get(task_id)
        if node is None or node.phase != "running":
            phase = node.phase if node else "unknown"
            raise ValueError(f"task '{task_id}' is {phase}, not running")
        return node

    def _release(self, node: _Node) -> None:
        if node.worker is not None:
            self.load[node.worker] -= 1

    def _make_ready(self, task_id: str) -> None:
        node = self.nodes[task_id]
        node.phase = "ready"
        heapq.heappush(self._ready, (node.index, task_id))

    def _fail(self, task_id: str, error: str) -> list[Command]:
        self.nodes[task_id].phase = "failed"
        self.failed[task_id] = error
        out: list[Command] = [Decision(task_id, "failed", error)]
        stack = [(d, task_id) for d in self.nodes[task_id].dependents]
        while stack:
            tid, cause = stack.pop()
            node = self.nodes[tid]
            if node.phase in ("pending", "ready"):
                node.phase = "skipped"
                reason = f"dependency '{cause}' did not complete"
                self.skipped[tid] = reason
                out.append(Decision(tid, "skipped", reason))
                stack.extend((d, tid) for d in node.dependents)
        return out

    def _pick_worker(self, skill: str) -> str | None:
        offering = [w for w, skills in self.workers.items() if skill in skills]
        if not offering:
            return None
        return min(offering, key=lambda w: (self.load[w], w))

    def _pump(self) -> list[Command]:
        out: list[Command] = []
        while self._ready and self.in_flight < self.max_in_flight:
            _, tid = heapq.heappop(self._ready)
            node = self.nodes[tid]
            if node.phase != "ready":
                continue
            task = self.tasks[tid]
            worker = self._pick_worker(task.skill)
            if worker is None:
                out.extend(self._fail(tid, f"no worker offers skill '{task.skill}'"))
                continue
            node.phase = "running"
            node.worker = worker
            self.load[worker] += 1
            out.append(Dispatch(tid, task.skill, worker, resolve(task.args, self.results)))
        for _, tid in self._ready:
            node = self.nodes[tid]
            if node.phase == "ready" and not node.held:
                node.held = True
                out.append(
                    Decision(tid, "held-by-bound", f"{self.in_flight} in flight = max_in_flight")
                )
        if not self._finished and not self._ready and self.in_flight == 0:
            self._finished = True
            final = self.plan.final_task()
            state: Literal["completed", "failed"] = (
                "completed" if final in self.results else "failed"
            )
            out.append(Finish(state, dict(self.results), dict(self.failed), dict(self.skipped)))
        return out


@dataclass(frozen=True)
class Redo:
    """Run the final task again, with the judge's feedback."""

    feedback: str
    iteration: int


@dataclass(frozen=True)
class Conclude:
    """End the loop: `state` is completed (accepted) or stopped (judge said stop, or cap)."""

    state: Literal["completed", "stopped"]
    reason: str


class JudgeLoop:
    """Caps the judge's retry loop over the final result at `max_iterations`."""

    def __init__(self, max_iterations: int = 3) -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = max_iterations
        self.iteration = 1

    def on_verdict(self, verdict: Verdict) -> Redo | Conclude:
        if verdict.decision == "accept":
            return Conclude("completed", verdict.reason)
        if verdict.decision == "stop":
            return Conclude("stopped", verdict.reason)
        if self.iteration >= self.max_iterations:
            return Conclude(
                "stopped",
                f"iteration cap reached ({self.max_iterations}); last verdict: {verdict.reason}",
            )
        self.iteration += 1
        return Redo(verdict.feedback or verdict.reason, self.iteration)
