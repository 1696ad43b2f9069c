"""A run's trace as spans: each task request from the message that asked for it to the reply,
with where it ran, how it ended and what it used. What every trace view is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Span:
    """One skill run: `sent` when asked, `start`/`end` at the actor (None if it never ran)."""

    span_id: str
    parent_span_id: str | None
    trace_id: str
    task_id: str | None
    skill: str
    sender: str
    actor: str
    attempt: int
    sent: float
    pid: int | None = None
    node: str | None = None
    start: float | None = None
    end: float | None = None
    state: str = "unfinished"
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    message: dict[str, Any] = field(default_factory=dict)
    reply: dict[str, Any] | None = None

    @property
    def plan_task(self) -> str | None:
        """The plan task this span runs, for a coordinator's dispatch (`<run task>/<id>`)."""
        if self.task_id and "/" in self.task_id:
            return self.task_id.rpartition("/")[2]
        return None

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "rejected", "canceled")


def spans(events: list[dict[str, Any]]) -> list[Span]:
    """Every task request of the run as a span, in the order they were sent."""
    out: dict[str, Span] = {}
    for e in events:
        if e.get("event") != "envelope.sent" or e.get("kind") != "task-request":
            continue
        env = e.get("envelope") or {}
        body = env.get("body") or {}
        out[e["span_id"]] = Span(
            span_id=e["span_id"],
            parent_span_id=e.get("parent_span_id"),
            trace_id=e.get("trace_id") or "",
            task_id=e.get("task_id"),
            skill=body.get("skill", "?"),
            sender=e.get("sender", "?"),
            actor=e.get("recipient", "?"),
            attempt=int(env.get("attempt", 1)),
            sent=float(e["ts"]),
            message=env,
        )
    for e in events:
        span = out.get(e.get("span_id") or "")
        if span is None:
            continue
        if e.get("event") == "task.state":
            span.pid, span.node = e.get("pid"), e.get("node")
            if e.get("state") == "working":
                span.start = float(e["ts"])
            else:
                span.start = span.start or float(e["ts"]) - float(e.get("duration_s") or 0.0)
                span.end = float(e["ts"])
                span.state = e.get("state", "?")
                span.error = e.get("error")
                span.input_tokens = int(e.get("input_tokens") or 0)
                span.output_tokens = int(e.get("output_tokens") or 0)
                span.cost_usd = float(e.get("cost_usd") or 0.0)
        elif e.get("event") == "task.duplicate":
            span.state, span.pid, span.node = "duplicate", e.get("pid"), e.get("node")
    replies = {
        (e.get("task_id"), (e.get("envelope") or {}).get("attempt", 1)): e.get("envelope")
        for e in events
        if e.get("event") == "envelope.sent" and e.get("kind") == "task"
    }
    for span in out.values():
        span.reply = replies.get((span.task_id, span.attempt))
    return sorted(out.values(), key=lambda s: s.sent)


def plan_deps(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The plan's dependency graph as the coordinator recorded it (tasks and groups)."""
    merged: dict[str, list[str]] = {}
    for e in events:
        if e.get("event") == "plan.accepted" and isinstance(e.get("deps"), dict):
            merged.update(e["deps"])
    return merged


def plan_spans(events: list[dict[str, Any]]) -> dict[str, list[Span]]:
    """The spans of each plan task (one per attempt or round), in order."""
    out: dict[str, list[Span]] = {}
    for s in spans(events):
        if s.plan_task is not None:
            out.setdefault(s.plan_task, []).append(s)
    return out


def dispatched_at(events: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """When the coordinator dispatched each (plan task, attempt): where waiting begins."""
    out: dict[tuple[str, int], float] = {}
    for e in events:
        if e.get("event") == "schedule.dispatch":
            out.setdefault((str(e.get("plan_task", "")), int(e.get("attempt") or 1)), float(e["ts"]))
    return out


def critical_path(events: list[dict[str, Any]]) -> list[str]:
    """The chain of plan tasks that decided the run's length: from the task that finished
    last, back through the dependency that finished last at each step."""
    by_task = plan_spans(events)
    finish = {t: max((s.end or s.sent) for s in ss) for t, ss in by_task.items()}
    if not finish:
        return []
    deps = plan_deps(events)

    def tasks_of(dep: str) -> list[str]:  # a group stands for its members
        return [dep] if dep in finish else [m for m in deps.get(dep, []) if m in finish]

    path = [max(finish, key=lambda t: finish[t])]
    seen = set(path)
    while True:
        before = [t for d in deps.get(path[-1], []) for t in tasks_of(d) if t not in seen]
        if not before:
            break
        nxt = max(before, key=lambda t: finish[t])
        path.append(nxt)
        seen.add(nxt)
    return list(reversed(path))
