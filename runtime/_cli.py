"""The `agentrt` command: run a spec, inspect traces, regenerate schemas."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from agentrt.protocols import AgentRuntimeError

from ._spec import load_spec, with_model_kind
from ._supervisor import RunSummary, default_runs_dir, run
from ._tickets import format_ticket


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(event: dict[str, Any], quiet: bool = False) -> None:
    if event.get("event") == "notice":  # an actor's message for the person at the terminal
        print(f"  [{event.get('actor', '')}] {event.get('text', '')}", flush=True)
    elif not quiet and event.get("event") == "task.state" and event.get("state") != "working":
        line = (
            f"  {event.get('state', ''):<9} {event.get('actor', ''):<12} {event.get('skill', ''):<12} "
            f"{event.get('duration_s', 0):6.2f}s"
        )
        if event.get("error"):
            line += f"  {event['error']}"
        print(line, flush=True)


def _print_plan(out: dict[str, Any]) -> None:
    """For a job that ran a plan: when each task started and ended, on which worker."""
    tasks = [t for t in out.get("tasks") or [] if t.get("startedAt")]
    if not tasks:
        return
    t0 = min(t["startedAt"] for t in tasks)
    print("timeline (s from the first task):")
    for t in sorted(tasks, key=lambda t: t["startedAt"]):
        start, end = t["startedAt"] - t0, t.get("finishedAt", t["startedAt"]) - t0
        line = f"  {t['id']:<16} {t.get('skill', ''):<11} {t.get('worker', ''):<10} {start:6.2f} -> {end:6.2f}  {t['state']}"
        if t.get("attempt", 1) > 1:
            line += f" (attempt {t['attempt']})"
        print(line)
    sched = out.get("schedule") or {}
    if sched.get("rpmLimit") and sched.get("dispatches", 0) > 1 and sched.get("dispatchSpanS"):
        rate = (sched["dispatches"] - 1) / sched["dispatchSpanS"] * 60
        print(f"dispatch rate: {rate:.1f}/min against a limit of {sched['rpmLimit']:g}/min")
    skipped = {**sched.get("skipped", {}), **sched.get("cancelled", {})}
    for task_id, why in skipped.items():
        print(f"  {task_id}: {why}")


def _print_escalations(out: dict[str, Any]) -> None:
    """Each ticket raised to a human, and the answer that resumed the run."""
    for e in out.get("escalations") or []:
        print()
        for line in format_ticket(e["ticket"]):
            print(f"  {line}")
        answer = e.get("answer")
        if answer:
            extra = f", feedback: {answer['feedback']}" if answer.get("feedback") else ""
            print(f"  answer: {answer['decision']} by {answer.get('by', 'human')}{extra}")
    loop = out.get("loop") or {}
    if out.get("escalations") or loop.get("endedBy"):
        ended = f"; ended by the {loop['endedBy']} cap" if loop.get("endedBy") else ""
        print(
            f"loop '{loop.get('name')}': {out.get('iterations')} iteration(s) of at most "
            f"{loop.get('cap')}{ended}; answer from iteration {loop.get('answerIteration')}: "
            f"{out.get('reason')}"
        )
    if out.get("escalations"):
        print()


def print_summary(s: RunSummary) -> None:
    out = s.output
    print()
    print(f"run {s.run_id}: {s.state}" + (f" ({s.error})" if s.error else ""))
    if out.get("answer"):
        print(f"answer: {out['answer']}")
    elif out:
        report = out.get("report")
        rest = {k: v for k, v in out.items() if k != "report"}
        print(f"output: {json.dumps(rest, ensure_ascii=False)[:2000]}")
        if isinstance(report, list):
            for line in report:
                print(f"  {line}")
    if out.get("verdict"):
        v = out["verdict"]
        print(
            f"verdict: {v.get('decision')} after {v.get('iteration')} iteration(s): {v.get('reason')}"
        )
    _print_plan(out)
    _print_escalations(out)
    print(f"processes: {len(s.pids)} (pids {', '.join(str(p) for p in sorted(s.pids.values()))})")
    print(
        f"tokens: {s.input_tokens} in / {s.output_tokens} out over {s.tasks} skill runs; "
        f"cost: ${s.cost_usd:.4f}"
    )
    print(f"wall time: {s.wall_s:.2f}s")
    print(f"sum of task times (a sequential agent): {s.task_time_s:.2f}s")
    print(f"speedup: {s.speedup:.2f}x")
    print(f"trace: {s.run_dir}/trace.jsonl  (agentrt trace show {s.run_id})")


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    kind = args.model
    if kind == "auto":
        # Claude when a key is set, else the spec's own models (offline in every demo).
        kind = "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else None
    if kind is not None:
        spec = with_model_kind(spec, kind)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"agentrt: running '{spec.run.name}' ({len(spec.nodes)} nodes + supervisor)", flush=True)

    def started(rt: Any) -> None:
        print(
            f"agentrt: run {rt.run_id} started; nodes: "
            + ", ".join(f"{n}={p}" for n, p in rt.pids.items()),
            flush=True,
        )

    summary = run(
        spec,
        goal=args.goal,
        run_id=args.run_id,
        runs_dir=args.runs_dir,
        on_event=lambda event: _progress(event, quiet=args.quiet),
        on_started=started,
        terminal=None if args.non_interactive or not sys.stdin.isatty() else os.ttyname(0),
    )
    print_summary(summary)
    return 0 if summary.state == "completed" else 1


def cmd_trace_show(args: argparse.Namespace) -> int:
    from ._trace_view import find_trace, render_tree
    from ._tracing import read_trace

    path = find_trace(args.run, Path(args.runs_dir))
    print(f"trace {path}")
    for line in render_tree(read_trace(path), include_control=args.control):
        print(line)
    return 0


def cmd_trace_ls(args: argparse.Namespace) -> int:
    from ._trace_view import list_runs

    runs = list_runs(Path(args.runs_dir))
    print(f"{'run':<28} {'state':<11} {'tasks':>5} {'wall_s':>8} {'events':>7}")
    for r in runs:
        wall = f"{r['wall_s']:.2f}" if r["wall_s"] is not None else "-"
        print(
            f"{r['run_id']:<28} {r['state']:<11} {r['tasks'] or '-':>5} {wall:>8} {r['events']:>7}"
        )
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from . import _schemas

    if args.check:
        stale = _schemas.drift()
        if stale:
            print(
                f"schemas out of date: {', '.join(stale)}; run `agentrt schemas`", file=sys.stderr
            )
            return 1
        print("schemas up to date")
        return 0
    for path in _schemas.write():
        print(f"wrote {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentrt", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    runs_default = str(default_runs_dir())

    r = sub.add_parser("run", help="run a launch spec (a .toml/.py file or a folder holding one)")
    r.add_argument("spec")
    r.add_argument("--goal", help="override the spec's run.goal")
    r.add_argument("--run-id")
    r.add_argument(
        "--runs-dir", default=runs_default, help="where runs/<id>/ go (default: %(default)s)"
    )
    r.add_argument("--quiet", action="store_true", help="no per-task progress lines")
    r.add_argument(
        "--model",
        choices=["auto", "offline", "anthropic"],
        default="auto",
        help="every model of the run on this kind; auto: anthropic if ANTHROPIC_API_KEY is set, "
        "else the spec's (default: %(default)s)",
    )
    r.add_argument(
        "--non-interactive",
        action="store_true",
        help="never ask at the terminal: escalations follow the human actor's fallback policy",
    )
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("trace", help="inspect traces of past runs")
    tsub = t.add_subparsers(dest="trace_command", required=True)
    show = tsub.add_parser("show", help="a run as an indented causal tree")
    show.add_argument("run", help="run id (or a unique prefix), 'last', or a trace file")
    show.add_argument("--runs-dir", default=runs_default)
    show.add_argument("--control", action="store_true", help="include control-plane messages")
    show.set_defaults(fn=cmd_trace_show)
    ls = tsub.add_parser("ls", help="list runs")
    ls.add_argument("--runs-dir", default=runs_default)
    ls.set_defaults(fn=cmd_trace_ls)

    s = sub.add_parser("schemas", help="regenerate schemas/ from the protocol Structs")
    s.add_argument("--check", action="store_true", help="fail if the checked-in files drifted")
    s.set_defaults(fn=cmd_schemas)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except AgentRuntimeError as exc:
        print(f"agentrt: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("agentrt: interrupted; nodes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
