"""Reading traces back: find a run, and print it as an indented causal tree."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec

from agentrt.protocols import (
    CONTROL_KINDS,
    CriticGate,
    EnvelopeReceived,
    EnvelopeSent,
    Event,
    LoopEscalated,
    LoopVerdict,
    MessageDeadLetter,
    ModelCall,
    NodeStarted,
    RunError,
    RunFinished,
    ScheduleCancel,
    ScheduleDecision,
    ScheduleDispatch,
    TaskCancelRequested,
    TaskDuplicate,
    TaskRejected,
    TaskReply,
    TaskRequest,
    TaskStateChanged,
    event_to_dict,
    state_word,
)

from ._trace_model import Events, critical_path, dispatched_at, plan_spans
from ._tracing import read_events


def find_trace(run: str, runs_dir: Path) -> Path:
    """A run id, 'last', a run folder or a trace file -> the trace file."""
    p = Path(run)
    if p.is_file():
        return p
    if p.is_dir() and (p / "trace.jsonl").is_file():
        return p / "trace.jsonl"
    if run == "last":
        runs = sorted(d for d in runs_dir.glob("*/trace.jsonl"))
        if not runs:
            raise RunError(f"no runs in {runs_dir}")
        return runs[-1]
    candidate = runs_dir / run / "trace.jsonl"
    if candidate.is_file():
        return candidate
    matches = sorted(runs_dir.glob(f"{run}*/trace.jsonl"))
    if len(matches) == 1:
        return matches[0]
    raise RunError(f"no run '{run}' in {runs_dir} (try `agentrt trace ls`)")


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Each run: start time, state, tasks, failures, tokens, cost, wall time, events. A run
    this agentrt cannot read (an older agentrt wrote it) is listed as `unreadable`."""
    out = []
    for trace in sorted(runs_dir.glob("*/trace.jsonl")):
        try:
            events = read_events(trace)
        except RunError:
            out.append(
                {"run_id": trace.parent.name, "started": None, "events": 0, "state": "unreadable", "wall_s": None,
                 "tasks": 0, "failures": 0, "tokens": 0, "cost_usd": 0.0}
            )
            continue
        finished = next((e for e in events if isinstance(e, RunFinished)), None)
        done = [e for e in events if isinstance(e, TaskStateChanged) and e.state != "working"]
        out.append(
            {
                "run_id": trace.parent.name,
                "started": events[0].ts if events else None,
                "events": len(events),
                "state": finished.state if finished else "unfinished",
                "wall_s": finished.wall_s if finished else None,
                "tasks": len(done),
                "failures": sum(1 for e in done if e.state in ("failed", "rejected")),
                "tokens": sum(e.input_tokens + e.output_tokens for e in done),
                "cost_usd": sum(e.cost_usd for e in done),
            }
        )
    return out


def _label(e: EnvelopeSent) -> str:
    body = e.envelope.body if e.envelope is not None else None
    what = e.kind
    if isinstance(body, TaskRequest):
        what = f"ask {body.skill}"
    elif isinstance(body, TaskReply):
        what = f"task {state_word(body.task.status.state)}"
    elif e.kind in CONTROL_KINDS:
        what = f"control {e.kind}"
    task = ""
    if e.plan_task is not None:
        task = f" [task {(e.task_id or '')[:8]}/{e.plan_task}]"
    elif e.task_id:
        task = f" [task {e.task_id[:12]}]"
    return f"{e.sender} -> {e.recipient}: {what}{task}"


def _failed_reply(e: EnvelopeSent) -> bool:
    body = e.envelope.body if e.envelope is not None else None
    return isinstance(body, TaskReply) and body.task.status.state in (
        "TASK_STATE_FAILED",
        "TASK_STATE_REJECTED",
        "TASK_STATE_CANCELED",
    )


def _matches(
    e: EnvelopeSent,
    failed_spans: set[str],
    actor: str | None,
    task: str | None,
    kind: str | None,
    errors: bool,
) -> bool:
    if actor and actor not in (e.sender, e.recipient):
        return False
    if task and task != e.plan_task and task not in (e.task_id or ""):
        return False
    if kind and e.kind != kind:
        return False
    if errors:
        return e.span_id in failed_spans or _failed_reply(e)
    return True


def render_tree(
    events: Events,
    *,
    include_control: bool = False,
    actor: str | None = None,
    task: str | None = None,
    kind: str | None = None,
    errors: bool = False,
) -> list[str]:
    """The run's envelopes as a tree: each message under the one that caused it. With a
    filter, the messages that match and the chain of messages that led to each."""
    sent = [e for e in events if isinstance(e, EnvelopeSent) and e.span_id]
    if not include_control:
        sent = [e for e in sent if e.kind not in CONTROL_KINDS]
    if actor or task or kind or errors:
        failed_spans = {
            e.span_id
            for e in events
            if isinstance(e, TaskStateChanged) and e.span_id and e.state in ("failed", "rejected", "canceled")
        }
        by_span = {e.span_id: e for e in sent}
        keep: set[str] = set()
        for e in sent:
            if _matches(e, failed_spans, actor, task, kind, errors):
                cur: EnvelopeSent | None = e
                while cur is not None and cur.span_id not in keep:
                    keep.add(cur.span_id or "")
                    cur = by_span.get(cur.parent_span_id or "")
        sent = [e for e in sent if e.span_id in keep]
    t0 = min((e.ts for e in events), default=0.0)
    spans = {e.span_id: e for e in sent}
    children: dict[str | None, list[EnvelopeSent]] = defaultdict(list)
    for e in sent:
        parent = e.parent_span_id
        children[parent if parent in spans else None].append(e)
    states: dict[str, list[TaskStateChanged]] = defaultdict(list)
    for e in events:
        if isinstance(e, TaskStateChanged) and e.span_id:
            states[e.span_id].append(e)
    pids = {e.pid for e in events if e.pid}
    lines = [f"{len(events)} events, {len(sent)} messages, {len(pids)} processes"]

    def line(e: EnvelopeSent, prefix: str, last: bool) -> None:
        branch = "`- " if last else "|- "
        extra = ""
        done = [s for s in states.get(e.span_id or "", []) if s.state != "working"]
        if done:
            s = done[-1]
            extra = f"  => {s.state} in {s.duration_s:.3f}s"
            if s.input_tokens or s.output_tokens:
                extra += f" ({s.input_tokens} in / {s.output_tokens} out tokens)"
            if s.error:
                extra += f" error: {s.error}"
        lines.append(f"{prefix}{branch}+{e.ts - t0:7.3f}s {_label(e)}{extra}")

    # Depth first with a stack, each span's children listed once: a causal chain of any
    # depth, or a span recorded as its own ancestor (events are written by actors too),
    # cannot exhaust the stack or loop.
    expanded: set[str | None] = set()
    roots = sorted(children.get(None, []), key=lambda k: k.ts)
    stack = [(root, "", i == len(roots) - 1) for i, root in reversed(list(enumerate(roots)))]
    while stack:
        e, prefix, last = stack.pop()
        line(e, prefix, last)
        if e.span_id in expanded:
            continue
        expanded.add(e.span_id)
        kids = sorted(children.get(e.span_id, []), key=lambda k: k.ts)
        inner = prefix + ("   " if last else "|  ")
        stack.extend((kid, inner, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids))))
    rejected = [e for e in events if isinstance(e, MessageDeadLetter | TaskRejected)]
    if rejected:
        lines.append(f"rejected: {len(rejected)}")
        for r in rejected:
            if isinstance(r, MessageDeadLetter):
                what = f"dead letter ({r.reason}) on {r.node}: {r.detail}"
            else:
                what = f"task.rejected on {r.node}: {r.error}"
            lines.append(f"  +{r.ts - t0:7.3f}s {what}")
    return lines


# -- timeline ------------------------------------------------------------------------


def timeline(events: Events, width: int = 100) -> Any:
    """A Gantt chart of the plan's tasks per worker (a rich renderable): `.` waiting for its
    worker, `#` running, `x` failed, `~` an earlier attempt or round; the critical path is
    starred and bold."""
    from rich.table import Table
    from rich.text import Text

    by_task = plan_spans(events)
    dispatched = dispatched_at(events)
    all_spans = [s for ss in by_task.values() for s in ss]
    if not all_spans:
        return Text("no plan tasks in this run")
    t0 = min(dispatched.get((s.plan_task or "", s.attempt), s.sent) for s in all_spans)
    t1 = max((s.end or s.start or s.sent) for s in all_spans)
    scale = (t1 - t0) / width if t1 > t0 else 1.0
    critical = critical_path(events)

    def col(t: float) -> int:
        x = (t - t0) / scale
        if math.isnan(x):  # inf / inf: times a float's range apart (any float a peer sent)
            x = width if t > t0 else 0
        return int(min(max(x, 0), width - 1))

    hosts = actor_hosts(events)
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("task", no_wrap=True)
    table.add_column("worker", no_wrap=True)
    if hosts:
        table.add_column("host", no_wrap=True)
    table.add_column(f"0 .. {t1 - t0:.2f}s", no_wrap=True)
    table.add_column("state", no_wrap=True)
    rows = sorted(by_task.items(), key=lambda kv: (kv[1][-1].actor, kv[1][0].sent))
    for task, ss in rows:
        cells: list[tuple[str, str]] = [(" ", "")] * width
        for i, s in enumerate(ss):
            last = i == len(ss) - 1
            queued = dispatched.get((task, s.attempt), s.sent)
            start, end = s.start or s.sent, s.end or t1
            for c in range(col(queued), col(start)):
                cells[c] = (".", "dim")
            mark = ("#", "green") if last and not s.failed else ("x", "red") if s.failed else ("~", "yellow")
            for c in range(col(start), max(col(start) + 1, col(end))):
                cells[c] = mark
        bar = Text()
        for ch, style in cells:
            bar.append(ch, style=style or None)
        on_path = task in critical
        label = Text(("* " if on_path else "  ") + task, style="bold magenta" if on_path else "")
        state = ss[-1].state + (f" ({len(ss)} runs)" if len(ss) > 1 else "")
        where = [hosts.get(ss[-1].actor, "?")] if hosts else []
        table.add_row(label, ss[-1].actor, *where, bar, state)
    from rich.console import Group

    legend = Text("`.` waiting for its worker  `#` running  `x` failed  `~` earlier attempt or round")
    path = Text(f"* critical path: {' -> '.join(critical)}", style="bold magenta")
    if not hosts:
        return Group(table, legend, path)
    nodes: dict[str, set[str]] = {}
    for e in events:
        if isinstance(e, NodeStarted) and e.node and e.endpoint.startswith("tcp://"):
            nodes.setdefault(_host_of(e.endpoint), set()).add(e.node)
    where = Text("hosts: " + "; ".join(f"{h}: {', '.join(sorted(n))}" for h, n in sorted(nodes.items())))
    return Group(table, legend, path, where)


def _host_of(endpoint: str) -> str:
    return endpoint.removeprefix("tcp://").rpartition(":")[0] or endpoint


def actor_hosts(events: Events) -> dict[str, str]:
    """The host of each actor's node (last incarnation), for a run whose nodes are on tcp
    (several hosts); empty for a run on one host (ipc)."""
    hosts: dict[str, str] = {}
    for e in events:
        if isinstance(e, NodeStarted) and e.endpoint.startswith("tcp://"):
            hosts.update(dict.fromkeys(e.actors, _host_of(e.endpoint)))
    return hosts


# -- why -----------------------------------------------------------------------------


def _why_line(e: Event) -> str:
    match e:
        case ScheduleDispatch():
            return f"dispatched to {e.worker} (attempt {e.attempt})"
        case ScheduleDecision():
            return f"{e.decision}: {e.reason}"
        case ScheduleCancel():
            return f"cancel sent to {e.worker}: {e.reason}"
        case CriticGate():
            what = f"critic {e.decision}" + (f" (score {e.score})" if e.score is not None else "")
            return what + (f": {'; '.join(e.issues)}" if e.issues else "")
        case TaskStateChanged():
            what = f"{e.state} on {e.actor} (attempt {e.attempt})"
            if e.state != "working":
                what += f" after {e.duration_s:.3f}s"
            return what + (f": {e.error}" if e.error else "")
        case ModelCall():
            return f"model call {e.model}: {e.input_tokens} in / {e.output_tokens} out tokens"
        case TaskDuplicate():
            return f"duplicate on {e.actor} (attempt {e.attempt}): {e.answer}"
        case TaskCancelRequested():
            return f"cancel received by {e.actor}: {e.reason}"
        case TaskRejected():
            return f"rejected by {e.actor}: {e.error}"
    return str(type(e).__struct_config__.tag)


def why(events: Events, task: str) -> list[str]:
    """Every scheduling decision about one plan task, and each of its runs, in order of
    time (events of different processes reach the trace file in their own order)."""
    t0 = min((e.ts for e in events), default=0.0)
    mine = [e for e in events if e.plan_task == task and not isinstance(e, EnvelopeSent | EnvelopeReceived)]
    lines = [f"+{e.ts - t0:7.3f}s  {_why_line(e)}" for e in sorted(mine, key=lambda e: e.ts)]
    if not lines:
        known = sorted(plan_spans(events))
        raise RunError(f"no plan task '{task}' in this run; its tasks: {', '.join(known) or 'none'}")
    return lines


# -- diff ----------------------------------------------------------------------------

_VOLATILE = frozenset(
    {"messageId", "traceId", "spanId", "parentSpanId", "sentAt", "deadline", "contextId", "taskId",
     "id", "artifactId", "startedAt", "finishedAt", "durationS", "usage", "idempotencyKey", "ts",
     "coreCpuS", "dispatchSpanS", "retryAfterS", "acks", "epoch", "epochs", "toEpoch"}
)


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first place two JSON values differ: (path, value in a, value in b)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}", a.get(k, "(absent)"), b.get(k, "(absent)")
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path} (length)", len(a), len(b)
        return None
    return None if a == b else (path or "(value)", a, b)


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


_DECISIONS = (ScheduleDecision, ScheduleDispatch, LoopVerdict, LoopEscalated, CriticGate)
_DECISION_FIELDS = ("plan_task", "decision", "reason", "worker", "attempt", "next", "iteration")


def _steps(events: Events) -> dict[str, list[tuple[float, str, Any]]]:
    """Per actor, what it did in order: the messages it sent and the decisions it made,
    without ids, clocks or timings (which differ in every run)."""
    out: dict[str, list[tuple[float, str, Any]]] = defaultdict(list)
    for e in events:
        if isinstance(e, EnvelopeSent) and e.kind not in CONTROL_KINDS:
            env = _stable(msgspec.to_builtins(e.envelope) if e.envelope is not None else {})
            out[e.sender].append((e.ts, f"message to {e.recipient}", env))
        elif isinstance(e, _DECISIONS):
            data = event_to_dict(e)
            fields = {k: data[k] for k in _DECISION_FIELDS if k in data}
            out[e.actor or "?"].append((e.ts, data["event"], fields))
    return out


def diff(a: Events, b: Events) -> list[str]:
    """Where two runs of one spec first diverge: for each actor, the first message or
    decision that differs; the earliest of those (in run A's time) first."""
    sa, sb = _steps(a), _steps(b)
    t0a = min((e.ts for e in a), default=0.0)
    t0b = min((e.ts for e in b), default=0.0)
    found = []
    for actor in sorted(set(sa) | set(sb)):
        xa, xb = sa.get(actor, []), sb.get(actor, [])
        for i in range(max(len(xa), len(xb))):
            ea = xa[i] if i < len(xa) else None
            eb = xb[i] if i < len(xb) else None
            if ea is None or eb is None or ea[1:] != eb[1:]:
                found.append((ea[0] - t0a if ea else float("inf"), actor, i, ea, eb, t0b))
                break
    if not found:
        return ["no divergence: every actor sent the same messages and made the same decisions in the same order"]
    found.sort(key=lambda f: f[0])
    lines = []
    for n, (_, actor, i, ea, eb, _t) in enumerate(found):
        head = "first divergence" if n == 0 else "also diverges"
        lines.append(f"{head}: {actor}, step {i + 1}")
        for side, step, t0 in (("A", ea, t0a), ("B", eb, t0b)):
            if step is None:
                lines.append(f"  {side}: (nothing: the run ended here for {actor})")
            else:
                lines.append(f"  {side}: +{step[0] - t0:.3f}s {step[1]}")
        if ea is not None and eb is not None:
            where = _first_difference([ea[1], ea[2]], [eb[1], eb[2]])
            if where:
                path, va, vb = where
                show = lambda v: msgspec.json.encode(v).decode()[:300]  # noqa: E731
                lines.append(f"  differs at {path}:\n    A: {show(va)}\n    B: {show(vb)}")
    return lines
