"""Reading traces back: find a run, and print it as an indented causal tree."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from agentrt.protocols import RunError

from ._tracing import read_trace


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
    out = []
    for trace in sorted(runs_dir.glob("*/trace.jsonl")):
        events = read_trace(trace)
        finished = next((e for e in events if e.get("event") == "run.finished"), None)
        out.append(
            {
                "run_id": trace.parent.name,
                "events": len(events),
                "state": finished.get("state") if finished else "unfinished",
                "wall_s": finished.get("wall_s") if finished else None,
                "tasks": finished.get("tasks") if finished else None,
            }
        )
    return out


def _short(task_id: str) -> str:
    head, _, tail = task_id.rpartition("/")
    return f"{head[:8]}/{tail}" if head else task_id[:12]


def _label(event: dict[str, Any]) -> str:
    env = event.get("envelope") or {}
    body = env.get("body") or {}
    kind = event.get("kind", "?")
    what = kind
    if kind == "task-request":
        what = f"ask {body.get('skill')}"
    elif kind == "task":
        what = f"task {body.get('status', {}).get('state')}"
    elif kind == "control":
        what = f"control {body.get('op')}"
    task = event.get("task_id")
    task_txt = f" [task {_short(task)}]" if task else ""
    return f"{event.get('sender')} -> {event.get('recipient')}: {what}{task_txt}"


def render_tree(events: list[dict[str, Any]], *, include_control: bool = False) -> list[str]:
    """The run's envelopes as a tree: each message under the one that caused it."""
    sent = [e for e in events if e.get("event") == "envelope.sent"]
    if not include_control:
        sent = [e for e in sent if e.get("kind") != "control"]
    t0 = min((e["ts"] for e in events if "ts" in e), default=0.0)
    spans = {e["span_id"]: e for e in sent}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for e in sent:
        parent = e.get("parent_span_id")
        children[parent if parent in spans else None].append(e)
    states: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("event") == "task.state" and e.get("span_id"):
            states[e["span_id"]].append(e)
    pids = {e.get("pid") for e in events if e.get("pid")}
    lines = [f"{len(events)} events, {len(sent)} messages, {len(pids)} processes"]

    def walk(e: dict[str, Any], prefix: str, last: bool) -> None:
        branch = "`- " if last else "|- "
        extra = ""
        done = [s for s in states.get(e["span_id"], []) if s.get("state") != "working"]
        if done:
            s = done[-1]
            extra = f"  => {s.get('state')} in {s.get('duration_s', 0):.3f}s"
            if s.get("input_tokens") or s.get("output_tokens"):
                extra += f" ({s.get('input_tokens')} in / {s.get('output_tokens')} out tokens)"
            if s.get("error"):
                extra += f" error: {s['error']}"
        lines.append(f"{prefix}{branch}+{e['ts'] - t0:7.3f}s {_label(e)}{extra}")
        kids = sorted(children.get(e["span_id"], []), key=lambda k: k["ts"])
        for i, kid in enumerate(kids):
            walk(kid, prefix + ("   " if last else "|  "), i == len(kids) - 1)

    roots = sorted(children.get(None, []), key=lambda k: k["ts"])
    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    rejected = [e for e in events if e.get("event") in ("frame.rejected", "task.rejected")]
    if rejected:
        lines.append(f"rejected: {len(rejected)}")
        for e in rejected:
            lines.append(
                f"  +{e['ts'] - t0:7.3f}s {e.get('event')} on {e.get('node')}: {e.get('error')}"
            )
    return lines
