"""The `agentrt` command: run a spec, inspect traces, regenerate schemas."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import msgspec

from agentrt.protocols import (
    AgentRuntimeError,
    Event,
    LoopEscalated,
    Notice,
    PlanAccepted,
    RunReport,
    ScheduleDispatch,
    TaskStateChanged,
    check_id,
)

from ._files import write_named, write_private
from ._redact import redact
from ._spec import load_spec, with_model_kind
from ._supervisor import RunSummary, default_runs_dir, run
from ._terminal import printable, printable_tree
from ._tickets import format_ticket
from ._tracing import read_events


def say(*values: object, file: Any = None, flush: bool = False) -> None:
    """`print`, with control characters in the text escaped: what the CLI prints comes from
    models, tools and other actors, and must not drive the terminal."""
    print(*(printable(v) for v in values), file=file, flush=flush)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(event: Event, quiet: bool = False) -> None:
    """Plain progress lines (stdout is not a terminal, or --quiet): notices always."""
    if isinstance(event, Notice):  # an actor's message for the person at the terminal
        say(f"  [{event.actor or ''}] {event.text}", flush=True)
    elif not quiet and isinstance(event, TaskStateChanged) and event.state != "working":
        line = f"  {event.state:<9} {event.actor or '':<12} {event.skill:<12} {event.duration_s:6.2f}s"
        if event.error:
            line += f"  {event.error}"
        say(line, flush=True)


class _LiveProgress:
    """A live status line at a terminal: plan tasks done / in flight / failed / queued,
    tokens and cost, redrawn as events arrive; notices print above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.total = self.in_flight = self.failed = self.tokens = 0
        self.cost = 0.0
        self.done: set[str] = set()
        self.dispatched: set[str] = set()
        self.started = time.monotonic()
        self.paused = False
        self.console = Console()
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=True)

    def _render(self) -> Any:
        from rich.text import Text

        queued = max(0, self.total - len(self.dispatched))
        return Text(
            f"tasks {len(self.done)}/{self.total} done · {self.in_flight} in flight · "
            f"{self.failed} failed · {queued} queued · {self.tokens} tokens · "
            f"${self.cost:.4f} · {time.monotonic() - self.started:.1f}s",
            style="bold",
        )

    def __call__(self, event: Event) -> None:
        if self.paused:
            return
        if isinstance(event, LoopEscalated):
            # A person may be asked at this terminal now: stop redrawing over the prompt.
            self.paused = True
            self.live.stop()
            return
        if isinstance(event, Notice):
            self.console.print(printable(f"  [{event.actor or ''}] {event.text}"), markup=False, highlight=False)
        elif isinstance(event, PlanAccepted):
            self.total += event.tasks
        elif isinstance(event, ScheduleDispatch):
            self.in_flight += 1
            self.dispatched.add(str(event.plan_task))
        elif isinstance(event, TaskStateChanged) and event.state != "working":
            self.tokens += event.input_tokens + event.output_tokens
            self.cost += event.cost_usd
            if event.plan_task is not None:  # a run of a plan task (not the job, a critique, ...)
                self.in_flight = max(0, self.in_flight - 1)
                if event.state == "completed":
                    self.done.add(event.plan_task)
                else:
                    self.failed += 1
        self.live.update(self._render())

    def __enter__(self) -> _LiveProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()


def _print_plan(report: RunReport) -> None:
    """For a job that ran a plan: when each task started and ended, on which worker."""
    tasks = [t for t in report.tasks if t.started_at]
    if not tasks:
        return
    t0 = min(t.started_at for t in tasks)
    say("timeline (s from the first task):")
    for t in sorted(tasks, key=lambda t: t.started_at):
        start, end = t.started_at - t0, (t.finished_at or t.started_at) - t0
        line = f"  {t.id:<16} {t.skill:<11} {t.worker:<10} {start:6.2f} -> {end:6.2f}  {t.state}"
        if t.attempt > 1:
            line += f" (attempt {t.attempt})"
        say(line)
    sched = report.schedule
    if sched.rpm_limit and sched.dispatches > 1 and sched.dispatch_span_s:
        rate = (sched.dispatches - 1) / sched.dispatch_span_s * 60
        say(f"dispatch rate: {rate:.1f}/min against a limit of {sched.rpm_limit:g}/min")
    for task_id, why in {**sched.skipped, **sched.cancelled}.items():
        say(f"  {task_id}: {why}")


def _print_escalations(report: RunReport) -> None:
    """Each ticket raised to a human, and the answer that resumed the run."""
    for e in report.escalations:
        say()
        for line in format_ticket(e.ticket):
            say(f"  {line}")
        if e.answer is not None:
            extra = f", feedback: {e.answer.feedback}" if e.answer.feedback else ""
            say(f"  answer: {e.answer.decision} by {e.answer.by}{extra}")
    loop = report.loop
    if loop is not None and (report.escalations or loop.ended_by):
        ended = f"; ended by the {loop.ended_by} cap" if loop.ended_by else ""
        say(
            f"loop '{loop.name}': {report.iterations} iteration(s) of at most "
            f"{loop.cap}{ended}; answer from iteration {loop.answer_iteration}: "
            f"{report.reason}"
        )
    if report.escalations:
        say()


def print_summary(s: RunSummary) -> None:
    out = s.output
    report = s.report
    say()
    say(f"run {s.run_id}: {s.state}" + (f" ({s.error})" if s.error else ""))
    if report is not None and report.answer:
        say(f"answer: {report.answer}")
    elif out:
        lines = out.get("report")  # an entry actor's own printable lines, if it returns some
        rest = {k: v for k, v in out.items() if k != "report"}
        say(f"output: {json.dumps(rest, ensure_ascii=False)[:2000]}")
        if isinstance(lines, list):
            for line in lines:
                say(f"  {line}")
    if report is not None:
        if report.verdict is not None:
            v = report.verdict
            say(f"verdict: {v.decision} after {v.iteration} iteration(s): {v.reason}")
        _print_plan(report)
        _print_escalations(report)
    say(f"processes: {len(s.pids)} (pids {', '.join(str(p) for p in sorted(s.pids.values()))})")
    say(
        f"tokens: {s.input_tokens} in / {s.output_tokens} out over {s.tasks} skill runs; "
        f"cost: ${s.cost_usd:.4f}"
    )
    say(f"wall time: {s.wall_s:.2f}s")
    say(f"sum of task times (a sequential agent): {s.task_time_s:.2f}s")
    say(f"speedup: {s.speedup:.2f}x")
    say(f"trace: {s.run_dir}/trace.jsonl  (agentrt trace show {s.run_id})")


def cmd_run(args: argparse.Namespace) -> int:
    for flag, value in (("--run-id", args.run_id), ("--resume RUN_ID", args.resume)):
        if value is not None:
            check_id(value, flag)  # before it names a folder: a run id is one path component
    spec = with_cluster(load_spec(args.spec), args)
    if args.resume and not (Path(args.runs_dir) / args.resume / "trace.jsonl").is_file():
        say(f"agentrt: no run '{args.resume}' to resume in {args.runs_dir}", file=sys.stderr)
        return 2
    kind = args.model
    if kind == "auto":
        # Claude when a key is set, else the spec's own models (offline in every demo).
        kind = "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else None
    if kind is not None:
        spec = with_model_kind(spec, kind)
    signal.signal(signal.SIGTERM, _interrupt)
    say(f"agentrt: running '{spec.run.name}' ({len(spec.nodes)} nodes + supervisor)", flush=True)

    def started(rt: Any) -> None:
        say(
            f"agentrt: run {rt.run_id} started; nodes: "
            + ", ".join(f"{n}={p}" for n, p in rt.pids.items()),
            flush=True,
        )

    terminal = None if args.non_interactive or not sys.stdin.isatty() else os.ttyname(0)
    # A live status line at a terminal; plain lines when stdout is a pipe or a file.
    live = sys.stdout.isatty() and not args.quiet
    with _LiveProgress() if live else contextlib.nullcontext() as board:
        summary = run(
            spec,
            goal=args.goal,
            run_id=args.resume or args.run_id,
            runs_dir=args.runs_dir,
            on_event=board if board is not None else (lambda event: _progress(event, quiet=args.quiet)),
            on_started=started,
            terminal=terminal,
        )
    print_summary(summary)
    return 0 if summary.state == "completed" else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from ._gateway import serve

    spec = with_cluster(load_spec(args.spec), args)
    if args.model != "auto" or os.environ.get("ANTHROPIC_API_KEY"):
        kind = "anthropic" if args.model == "auto" else args.model
        spec = with_model_kind(spec, kind)
    signal.signal(signal.SIGTERM, _interrupt)

    def ready(gateway: Any) -> None:
        rt = gateway.runtime
        print(f"agentrt: run {rt.run_id} serving A2A at {gateway.url}", flush=True)
        for name in gateway.cards:
            print(f"  {name}: {gateway.url}/a2a/{name}/.well-known/agent-card.json", flush=True)
        print("agentrt: Ctrl-C stops it", flush=True)

    serve(spec, args.a2a, run_id=args.run_id, runs_dir=args.runs_dir, on_ready=ready)
    return 0


def _events(
    args: argparse.Namespace, run: str | None = None, *, terminal: bool = True
) -> tuple[Path, list[Event]]:
    from ._trace_view import find_trace

    path = find_trace(run or args.run, Path(args.runs_dir))
    # Redacted again here: a trace written before a redaction rule existed is shown without
    # what the rule now matches. For the terminal views, text is made printable too.
    events = read_events(path, clean=lambda data: printable_tree(redact(data)) if terminal else redact(data))
    return path, events


def cmd_trace_show(args: argparse.Namespace) -> int:
    from ._trace_view import render_tree

    path, events = _events(args)
    say(f"trace {path}")
    lines = render_tree(
        events,
        include_control=args.control,
        actor=args.actor,
        task=args.task,
        kind=args.kind,
        errors=args.errors,
    )
    for line in lines:
        say(line)
    return 0


def cmd_trace_ls(args: argparse.Namespace) -> int:
    import time

    from ._trace_view import list_runs

    runs = list_runs(Path(args.runs_dir))
    say(
        f"{'run':<28} {'started':<19} {'state':<11} {'tasks':>5} {'failed':>6} "
        f"{'tokens':>8} {'cost_usd':>9} {'wall_s':>8}"
    )
    for r in runs:
        wall = f"{r['wall_s']:.2f}" if r["wall_s"] is not None else "-"
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"])) if r["started"] else "-"
        )
        say(
            f"{r['run_id']:<28} {started:<19} {r['state']:<11} {r['tasks']:>5} {r['failures']:>6} "
            f"{r['tokens']:>8} {r['cost_usd']:>9.4f} {wall:>8}"
        )
    return 0


def cmd_trace_timeline(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ._trace_view import timeline

    path, events = _events(args)
    console = Console(width=args.width + 60 if args.width else None)
    width = args.width or max(20, console.width - 60)
    console.print(printable(f"trace {path}"), markup=False, highlight=False)
    console.print(timeline(events, width=width))
    return 0


def cmd_trace_why(args: argparse.Namespace) -> int:
    from ._trace_view import why

    path, events = _events(args)
    say(f"trace {path}: plan task '{args.task}'")
    for line in why(events, args.task):
        say(f"  {line}")
    return 0


def cmd_trace_dead_letters(args: argparse.Namespace) -> int:
    from ._deadletters import render

    path, events = _events(args)
    print(f"trace {path}")
    for line in render(events, per_reason=args.samples):
        print(line)
    return 0


def _write(text: str, out: str | None, what: str, *, run_file: Path | None = None) -> None:
    """`text` to `out` (a path the user named), else to `run_file` (a file of the run's
    folder: private, never through a symlink), else to stdout."""
    if out or run_file is not None:
        target = Path(out) if out else run_file
        try:
            write_named(target, text) if out else write_private(target, text)  # type: ignore[arg-type]
        except OSError as exc:
            raise AgentRuntimeError(
                f"cannot write {what} to {target}: {exc.strerror or exc}; name a file in a folder you can write"
            ) from None
        say(f"wrote {what} to {target}")
    else:
        sys.stdout.write(text)


def cmd_trace_export(args: argparse.Namespace) -> int:
    from ._trace_export import chrome, otel

    _, events = _events(args, terminal=False)
    data = chrome(events) if args.format == "chrome" else otel(events)
    _write(json.dumps(data, indent=1) + "\n", args.output, f"{args.format} trace")
    return 0


def cmd_trace_html(args: argparse.Namespace) -> int:
    from ._trace_export import html_page

    path, events = _events(args, terminal=False)
    _write(html_page(events, path.parent.name), args.output, "the run's page", run_file=path.parent / "trace.html")
    return 0


def cmd_trace_diff(args: argparse.Namespace) -> int:
    from ._trace_view import diff

    path_a, a = _events(args, args.run_a)
    path_b, b = _events(args, args.run_b)
    say(f"A: {path_a}\nB: {path_b}")
    lines = diff(a, b)
    for line in lines:
        say(line)
    return 0 if lines[0].startswith("no divergence") else 1


def cmd_schemas(args: argparse.Namespace) -> int:
    from . import _schemas

    if args.check:
        stale = _schemas.drift()
        if stale:
            say(
                f"schemas out of date: {', '.join(stale)}; run `agentrt schemas`", file=sys.stderr
            )
            return 1
        say("schemas up to date")
        return 0
    for path in _schemas.write():
        say(f"wrote {path}")
    return 0


def cmd_deploy_k8s(args: argparse.Namespace) -> int:
    from ._deploy import k8s_manifests, write_k8s

    spec_path = Path(args.spec)
    if spec_path.is_dir():
        spec_path = spec_path / "spec.toml"
    if spec_path.suffix != ".toml":
        print("agentrt: deploy k8s takes a spec.toml (it goes into a ConfigMap as is)", file=sys.stderr)
        return 2
    spec = load_spec(spec_path)
    resources = k8s_manifests(
        spec,
        spec_text=spec_path.read_text(),
        image=args.image,
        namespace=args.namespace,
        app=args.name,
        store_secret=args.store_secret,
    )
    try:
        written = write_k8s(resources, Path(args.output))
    except OSError as exc:
        say(f"agentrt: cannot write {exc.filename} ({exc.strerror}); the Secret is written only as a plain file", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(
        f"the Secret holds the run's private keys ({args.output}, mode 0600): apply it, then keep "
        "or delete the file as you would any secret"
    )
    return 0


def cmd_keys_gen(args: argparse.Namespace) -> int:
    from ._files import private_dir, write_private
    from ._keys import issue, key_file

    spec = load_spec(args.spec)
    out = private_dir(Path(args.output))
    trust = issue({n.name: [a.name for a in n.actors] for n in spec.nodes})
    for member, t in trust.items():
        path = out / f"{member}.key"
        try:  # 0600 before the secret is in it; never through a symlink planted there
            write_private(path, key_file(t))
        except OSError as exc:
            say(f"agentrt: cannot write {path} ({exc.strerror}); a key file is written only as a plain file", file=sys.stderr)
            return 2
        print(f"wrote {path}")
    print(
        f"the supervisor reads {out} ([cluster] keys or --keys); copy each node's file to its host only "
        "(agentrt node --key FILE): a key file is a secret"
    )
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from ._keys import load_key_file
    from ._node import FENCED, join, serve

    if args.restart == "on-failure":
        return _host_agent(args)
    # Read once and taken out of the environment: the node's children (an MCP server, say)
    # must not inherit a secret key. A host agent keeps it, to start the node again.
    if args.key and args.key.lstrip().startswith("{"):
        say(
            "agentrt node: --key takes the key file's path: a key given in the command line is "
            "visible to every user of this host (ps, /proc/PID/cmdline); give its text in "
            "AGENTRT_NODE_KEY instead",
            file=sys.stderr,
        )
        return 2
    key = args.key or os.environ.pop("AGENTRT_NODE_KEY", None)
    if not key:
        say("agentrt node: give --key FILE (or AGENTRT_NODE_KEY): the key file `agentrt keys gen` wrote for this node", file=sys.stderr)
        return 2
    try:
        trust = load_key_file(key)
        boot = join(args.join, trust, listen=args.listen or "", advertise=args.advertise or "", wait_s=args.wait)
    except (ValueError, RuntimeError, AgentRuntimeError) as exc:
        say(f"agentrt node: {exc}", file=sys.stderr)
        return 2
    say(f"agentrt node: '{trust.me}' joined run {boot.run_id} as incarnation {boot.epoch} at {boot.advertise}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = serve(boot)
    except KeyboardInterrupt:
        code = 0
    if code == FENCED:
        say(f"agentrt node: '{trust.me}' was replaced in the run (fenced): it stopped", file=sys.stderr)
    return code


def _host_agent(args: argparse.Namespace) -> int:
    """`agentrt node --restart on-failure`: run the node as a child process and start it again
    when it fails (a crash, a kill, a fence); more than --max-restarts failures within --period
    seconds end it (a node that cannot start), however many a long life adds up."""
    argv, rest = [], iter(sys.argv[1:])
    for arg in rest:  # the same command, without --restart (the child is the node itself)
        if arg == "--restart":
            next(rest, None)
        elif not arg.startswith("--restart="):
            argv.append(arg)
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: Any) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)
    failed_at: list[float] = []  # when the node failed, within the last --period seconds
    try:
        while True:
            child = subprocess.Popen([sys.executable, "-m", "agentrt.runtime._cli", *argv])
            code = child.wait()
            if code == 0:
                return 0
            now = time.monotonic()
            failed_at = [t for t in failed_at if now - t < args.period] + [now]
            failures = len(failed_at)
            if failures > args.max_restarts:
                say(
                    f"agentrt node: the node failed {failures} times within {args.period:g}s (exit {code}; "
                    f"--max-restarts {args.max_restarts}, --period {args.period:g}); not restarting it again",
                    file=sys.stderr,
                )
                return code if code > 0 else 1
            say(f"agentrt node: the node exited with {code}; starting it again ({failures}/{args.max_restarts} within {args.period:g}s)", file=sys.stderr, flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(15)
            if child.poll() is None:
                child.kill()
        return 0


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", metavar="HOST:PORT", help="[cluster] listen: nodes of other hosts join here over TCP")
    p.add_argument("--advertise", metavar="HOST[:PORT]", help="[cluster] advertise: how other hosts reach --listen")
    p.add_argument("--keys", "--key", dest="keys", metavar="PATH", help="[cluster] keys: the folder of `agentrt keys gen` (or the supervisor's key file)")
    p.add_argument("--no-spawn", dest="spawn", action="store_false", default=None, help="[cluster] spawn = false: every node joins, none is spawned here")


def with_cluster(spec: Any, args: argparse.Namespace) -> Any:
    """The spec with its [cluster] as the command line says."""
    changes = {k: getattr(args, k) for k in ("listen", "advertise", "keys", "spawn") if getattr(args, k, None) is not None}
    return msgspec.structs.replace(spec, cluster=msgspec.structs.replace(spec.cluster, **changes)) if changes else spec


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
        "--resume",
        metavar="RUN_ID",
        help="carry on a run that stopped: tasks it completed are not run again",
    )
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
    _cluster_flags(r)
    r.set_defaults(fn=cmd_run)

    sv = sub.add_parser("serve", help="start a spec's nodes and serve its actors over A2A 1.0")
    sv.add_argument("spec")
    sv.add_argument(
        "--a2a",
        metavar="HOST:PORT",
        help="where the A2A gateway listens (default: the spec's [a2a] listen, or 127.0.0.1:8000)",
    )
    sv.add_argument("--run-id")
    sv.add_argument(
        "--runs-dir", default=runs_default, help="where runs/<id>/ go (default: %(default)s)"
    )
    sv.add_argument("--model", choices=["auto", "offline", "anthropic"], default="auto")
    _cluster_flags(sv)
    sv.set_defaults(fn=cmd_serve)

    t = sub.add_parser("trace", help="inspect traces of past runs")
    tsub = t.add_subparsers(dest="trace_command", required=True)
    run_help = "run id (or a unique prefix), 'last', or a trace file"
    show = tsub.add_parser("show", help="a run as an indented causal tree")
    show.add_argument("run", help=run_help)
    show.add_argument("--runs-dir", default=runs_default)
    show.add_argument("--control", action="store_true", help="include control-plane messages")
    show.add_argument("--actor", help="only messages from or to this actor (and what led to them)")
    show.add_argument("--task", help="only messages of task ids containing this")
    show.add_argument("--kind", help="only messages of this kind (task-request, task, ...)")
    show.add_argument("--errors", action="store_true", help="only failed, rejected or cancelled work")
    show.set_defaults(fn=cmd_trace_show)
    ls = tsub.add_parser("ls", help="list runs")
    ls.add_argument("--runs-dir", default=runs_default)
    ls.set_defaults(fn=cmd_trace_ls)
    tl = tsub.add_parser("timeline", help="a Gantt chart of the plan's tasks per worker")
    tl.add_argument("run", help=run_help)
    tl.add_argument("--runs-dir", default=runs_default)
    tl.add_argument("--width", type=int, default=0, help="columns for the bars (default: fit)")
    tl.set_defaults(fn=cmd_trace_timeline)
    wy = tsub.add_parser("why", help="every scheduling decision about one plan task")
    wy.add_argument("run", help=run_help)
    wy.add_argument("task", help="the plan task's id")
    wy.add_argument("--runs-dir", default=runs_default)
    wy.set_defaults(fn=cmd_trace_why)
    ex = tsub.add_parser("export", help="Chrome trace events (Perfetto) or OpenTelemetry JSON")
    ex.add_argument("run", help=run_help)
    ex.add_argument("--format", choices=["chrome", "otel"], required=True)
    ex.add_argument("-o", "--output", help="file to write (default: stdout)")
    ex.add_argument("--runs-dir", default=runs_default)
    ex.set_defaults(fn=cmd_trace_export)
    ht = tsub.add_parser("html", help="one self-contained HTML page: timeline, plan, messages")
    ht.add_argument("run", help=run_help)
    ht.add_argument("-o", "--output", help="file to write (default: runs/<id>/trace.html)")
    ht.add_argument("--runs-dir", default=runs_default)
    ht.set_defaults(fn=cmd_trace_html)
    df = tsub.add_parser("diff", help="where two runs of one spec first diverge (exit 1 if they do)")
    df.add_argument("run_a")
    df.add_argument("run_b")
    df.add_argument("--runs-dir", default=runs_default)
    df.set_defaults(fn=cmd_trace_diff)

    dl = tsub.add_parser("dead-letters", help="messages not delivered: counts per reason, and samples")
    dl.add_argument("run", help=run_help)
    dl.add_argument("--samples", type=int, default=5, help="samples shown per reason (default 5)")
    dl.add_argument("--runs-dir", default=runs_default)
    dl.set_defaults(fn=cmd_trace_dead_letters)

    d = sub.add_parser("deploy", help="deployment manifests for a spec")
    dsub = d.add_subparsers(dest="deploy_command", required=True)
    k8s = dsub.add_parser("k8s", help="Kubernetes: StatefulSets + headless Services, keys, NetworkPolicy")
    k8s.add_argument("spec", help="a spec.toml, or a folder holding one")
    k8s.add_argument("-o", "--output", required=True, help="folder for the manifests")
    k8s.add_argument("--image", required=True, help="a container image with agentrt and the spec's actor modules")
    k8s.add_argument("--namespace", default="default")
    k8s.add_argument("--name", help="the deployment's name (default: the spec's run.name)")
    k8s.add_argument(
        "--store-secret",
        help="a Secret (key 'url') holding the postgresql:// URL of the state store",
    )
    k8s.set_defaults(fn=cmd_deploy_k8s)

    kg = sub.add_parser("keys", help="CurveZMQ key files for nodes on several hosts")
    ksub = kg.add_subparsers(dest="keys_command", required=True)
    gen = ksub.add_parser("gen", help="one key file per member of a spec (mode 0600)")
    gen.add_argument("spec")
    gen.add_argument("-o", "--output", required=True, help="folder for the key files")
    gen.set_defaults(fn=cmd_keys_gen)

    nd = sub.add_parser("node", help="start a node on this host that joins a run over TCP")
    nd.add_argument("--join", required=True, metavar="tcp://HOST:PORT", help="the supervisor's [cluster] listen address")
    nd.add_argument("--key", help="this node's key file, a path (default: $AGENTRT_NODE_KEY, a path or the file's text)")
    nd.add_argument("--listen", metavar="HOST:PORT", help="where the node receives (default: its address towards the supervisor, a free port)")
    nd.add_argument("--advertise", metavar="HOST[:PORT]", help="how other hosts reach --listen (when it is 0.0.0.0, or behind NAT)")
    nd.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the supervisor's welcome")
    nd.add_argument(
        "--restart",
        choices=["never", "on-failure"],
        default="never",
        help="on-failure: stay as the host's agent and start the node again when it fails or is fenced",
    )
    nd.add_argument("--max-restarts", type=int, default=5, help="with --restart on-failure: give up after more failures than this within --period")
    nd.add_argument("--period", type=float, default=60.0, help="seconds over which --max-restarts counts failures (default: %(default)s)")
    nd.set_defaults(fn=cmd_node)

    s = sub.add_parser("schemas", help="regenerate schemas/ from the protocol Structs")
    s.add_argument("--check", action="store_true", help="fail if the checked-in files drifted")
    s.set_defaults(fn=cmd_schemas)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except AgentRuntimeError as exc:
        say(f"agentrt: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        say("agentrt: interrupted; nodes stopped", file=sys.stderr)
        return 130
    except Exception:  # a bug or an unexpected failure: the traceback, with no secret in it
        say(redact(traceback.format_exc()).rstrip(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
