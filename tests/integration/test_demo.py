"""The flagship demo, end to end through the CLI: real processes, real sockets, a real trace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agentrt import schemas
from agentrt.runtime import read_trace

from .conftest import ROOT

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "agentrt.runtime._cli"]


def agentrt_run(spec: str, runs: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "run", spec, "--runs-dir", str(runs), "--run-id", run_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    runs = tmp_path_factory.mktemp("runs")
    return agentrt_run("demos/research", runs, "demo"), runs


def test_demo_completes_and_reports_speedup(demo_run) -> None:
    proc, runs = demo_run
    assert proc.returncode == 0, proc.stderr
    assert "run demo: completed" in proc.stdout
    assert "speedup:" in proc.stdout
    summary = json.loads((runs / "demo" / "summary.json").read_text())
    assert summary["state"] == "completed"
    # Five sources looked up on two workers at once: the sum of task times exceeds the wall time.
    assert summary["task_time_s"] > summary["wall_s"]


def test_demo_runs_actors_in_separate_processes(demo_run) -> None:
    _, runs = demo_run
    events = list(read_trace(runs / "demo" / "trace.jsonl"))
    by_actor = {e["actor"]: e["pid"] for e in events if e["event"] == "task.state"}
    assert {"coordinator", "producer", "worker-1", "worker-2", "critic", "judge"} <= set(by_actor)
    # critic and judge share the review node; every other role has a process of its own.
    assert by_actor["critic"] == by_actor["judge"]
    assert len({by_actor[a] for a in ("coordinator", "producer", "worker-1", "worker-2", "critic")}) == 5
    supervisor = {e["pid"] for e in events if e.get("node") == "supervisor"}
    assert len(supervisor) == 1 and supervisor.isdisjoint(by_actor.values())


def test_every_envelope_on_the_wire_matches_the_checked_in_schema(demo_run) -> None:
    _, runs = demo_run
    validator = jsonschema.Draft202012Validator(schemas.load("envelope.schema"))
    sent = [e for e in read_trace(runs / "demo" / "trace.jsonl") if e["event"] == "envelope.sent"]
    assert len(sent) > 20
    kinds = set()
    for event in sent:
        validator.validate(event["envelope"])
        kinds.add(event["envelope"]["body"]["kind"])
    assert {"task-request", "task", "control"} <= kinds


def test_lookups_overlap_and_synthesis_waits_for_all_of_them(demo_run) -> None:
    _, runs = demo_run
    states = [e for e in read_trace(runs / "demo" / "trace.jsonl") if e["event"] == "task.state"]
    lookups = [e for e in states if e["skill"] == "lookup"]
    started = [e["ts"] for e in lookups if e["state"] == "working"]
    finished = [e["ts"] for e in lookups if e["state"] == "completed"]
    assert len(started) == len(finished) == 5
    # Parallel, not one after another: every lookup started before the first one finished.
    assert max(started) < min(finished)
    synth = [e for e in states if e["skill"] == "synthesize" and e["state"] == "working"]
    assert synth and synth[0]["ts"] > max(finished)
    completed_tasks = {e["task_id"] for e in states if e["state"] == "completed" and e["skill"] in ("lookup", "synthesize")}
    assert len(completed_tasks) == 6


def test_trace_show_prints_the_causal_tree(demo_run) -> None:
    _, runs = demo_run
    proc = subprocess.run(
        [*CLI, "trace", "show", "demo", "--runs-dir", str(runs)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    root = next(i for i, line in enumerate(lines) if "supervisor -> coordinator: ask run" in line)
    lookups = [line for line in lines if "coordinator -> worker-" in line and "ask lookup" in line]
    assert len(lookups) == 5
    # Children are indented under the coordinator's run.
    indent = lambda s: len(s) - len(s.lstrip(" |`-"))  # noqa: E731
    assert all(indent(line) > indent(lines[root]) for line in lookups)


def test_hello_demo_runs_the_readme_custom_actors(tmp_path: Path) -> None:
    proc = agentrt_run("demos/hello", tmp_path, "hello")
    assert proc.returncode == 0, proc.stderr
    assert 'output: {"greeting": "HELLO ADA!", "greeted": 1}' in proc.stdout
    pids = {e["actor"]: e["pid"] for e in read_trace(tmp_path / "hello" / "trace.jsonl") if e["event"] == "task.state"}
    assert pids["greeter"] != pids["shouter"]
