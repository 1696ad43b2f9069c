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
    assert {"task-request", "task", "directory", "register", "ready"} <= kinds


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


def plan_output(runs: Path, run_id: str) -> dict:
    return json.loads((runs / run_id / "summary.json").read_text())["output"]


def test_pipeline_demo_starts_each_step_when_its_own_inputs_are_done(tmp_path: Path) -> None:
    proc = agentrt_run("demos/pipeline", tmp_path, "p")
    assert proc.returncode == 0, proc.stderr
    assert "timeline (s from the first task):" in proc.stdout
    t = {task["id"]: task for task in plan_output(tmp_path, "p")["tasks"]}
    assert t["examples"]["startedAt"] >= t["research"]["finishedAt"]
    # examples overlaps the outline -> draft branch instead of waiting for its level.
    assert t["examples"]["startedAt"] < t["outline"]["finishedAt"]
    assert t["review"]["startedAt"] >= max(t["draft"]["finishedAt"], t["examples"]["finishedAt"])


def test_batch_demo_keeps_the_pool_and_the_rate_limit(tmp_path: Path) -> None:
    proc = agentrt_run("demos/batch", tmp_path, "b")
    assert proc.returncode == 0, proc.stderr
    assert "against a limit of 120/min" in proc.stdout
    docs = [t for t in plan_output(tmp_path, "b")["tasks"] if t["id"].startswith("doc")]
    assert len(docs) == 20 and all(t["state"] == "completed" for t in docs)
    edges = sorted([(t["startedAt"], 1) for t in docs] + [(t["finishedAt"], -1) for t in docs])
    running = peak = 0
    for _, d in edges:
        running += d
        peak = max(peak, running)
    assert peak <= 5
    # 120/min with a one-second bucket (capacity 2, refilled at 2/s): over any window of
    # w seconds, at most 2 + 2w dispatches, counted when the coordinator's core decided them
    # (`at`, its clock; the event's `ts` adds the time it took to carry the batch out).
    starts = sorted(
        e["at"]
        for e in read_trace(tmp_path / "b" / "trace.jsonl")
        if e["event"] == "schedule.dispatch" and e["plan_task"].startswith("doc")
    )
    assert len(starts) == 20
    for i, s in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= 2 + 2 * (starts[j] - s) + 0.01


def test_quicksort_demo_delegates_a_tree_across_processes(tmp_path: Path) -> None:
    proc = agentrt_run("demos/quicksort", tmp_path, "q")
    assert proc.returncode == 0, proc.stderr
    out = plan_output(tmp_path, "q")
    assert out["sorted_ok"] is True and out["n"] == 8000
    leaves = [line for line in out["report"] if "(leaf)" in line]
    assert len(leaves) == 8  # depth bound 3: 2^3 leaves
    pids = {e["pid"] for e in read_trace(tmp_path / "q" / "trace.jsonl") if e["event"] == "task.state"}
    assert len(pids) == 3
