"""A run's trace as spans: each task request from the message that asked for it to the reply,
with where it ran, how it ended and what it used. What every trace view is built from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentrt.protocols import (
    Envelope,
    EnvelopeSent,
    Event,
    PlanAccepted,
    ScheduleDispatch,
    TaskDuplicate,
    TaskReply,
    TaskRequest,
    TaskStateChanged,
)

Events = Sequence[Event]


@dataclass
class Span:
    """One skill run: `sent` when asked, `start`/`end` at the actor (None if it never ran)."""

    span_id: str
    parent_span_id: str | None
    trace_id: str
    task_id: str | None
    plan_task: str | None  # the plan task it runs, when a plan's dispatch asked for it
    skill: str
    sender: str
    actor: str
    attempt: int
    sent: float
    message: Envelope | None = None
    pid: int | None = None
    node: str | None = None
    start: float | None = None
    end: float | None = None
    state: str = "unfinished"
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    reply: Envelope | None = None

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "rejected", "canceled")


def spans(events: Events) -> list[Span]:
    """Every task request of the run as a span, in the order they were sent."""
    out: dict[str, Span] = {}
    replies: dict[tuple[str | None, int], Envelope] = {}
    for e in events:
        if not isinstance(e, EnvelopeSent) or e.envelope is None or e.span_id is None:
            continue
        env = e.envelope
        if isinstance(env.body, TaskRequest):
            out[e.span_id] = Span(
                span_id=e.span_id,
                parent_span_id=e.parent_span_id,
                trace_id=e.trace_id or "",
                task_id=e.task_id,
                plan_task=env.plan_task,
                skill=env.body.skill,
                sender=e.sender,
                actor=e.recipient,
                attempt=env.attempt,
                sent=e.ts,
                message=env,
            )
        elif isinstance(env.body, TaskReply):
            replies[(e.task_id, env.attempt)] = env
    for e in events:
        span = out.get(e.span_id or "")
        if span is None:
            continue
        if isinstance(e, TaskStateChanged):
            span.pid, span.node = e.pid, e.node
            if e.state == "working":
                span.start = e.ts
            else:
                span.start = span.start or e.ts - e.duration_s
                span.end = e.ts
                span.state = e.state
                span.error = e.error
                span.input_tokens = e.input_tokens
                span.output_tokens = e.output_tokens
                span.cost_usd = e.cost_usd
        elif isinstance(e, TaskDuplicate):
            span.state, span.pid, span.node = "duplicate", e.pid, e.node
    for span in out.values():
        span.reply = replies.get((span.task_id, span.attempt))
    return sorted(out.values(), key=lambda s: s.sent)


def plan_deps(events: Events) -> dict[str, list[str]]:
    """The plan's dependency graph as its runner recorded it (tasks and groups)."""
    merged: dict[str, list[str]] = {}
    for e in events:
        if isinstance(e, PlanAccepted):
            merged.update(e.deps)
    return merged


def plan_spans(events: Events) -> dict[str, list[Span]]:
    """The spans of each plan task (one per attempt or round), in order."""
    out: dict[str, list[Span]] = {}
    for s in spans(events):
        if s.plan_task is not None:
            out.setdefault(s.plan_task, []).append(s)
    return out


def dispatched_at(events: Events) -> dict[tuple[str, int], float]:
    """When each (plan task, attempt) was dispatched: where waiting begins."""
    out: dict[tuple[str, int], float] = {}
    for e in events:
        if isinstance(e, ScheduleDispatch) and e.plan_task is not None:
            out.setdefault((e.plan_task, e.attempt), e.ts)
    return out


def critical_path(events: Events) -> list[str]:
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
