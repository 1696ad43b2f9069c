"""Nothing in the runtime knows the coordinator by name: the pipeline demo with its
coordinator called `boss` (and no `run.entry`: the job goes to the one actor offering skill
`run`) gets the same live progress line, summary, `trace timeline`, `trace why` and graceful
drain on Ctrl-C, with real processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from agentrt.runtime import read_events, read_trace

from .conftest import ROOT

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "agentrt.runtime._cli"]
TASKS = ["research", "outline", "draft", "examples", "review"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (ROOT / "demos" / "pipeline" / "spec.toml").read_text()
    assert 'entry = "coordinator"\n' in text and 'name = "coordinator"' in text
    text = text.replace('entry = "coordinator"\n', "").replace('name = "coordinator"', 'name = "boss"')
    folder = tmp_path_factory.mktemp("boss")
    (folder / "spec.toml").write_text(text)
    return folder


def agentrt(*args: str, runs: Path) -> str:
    proc = subprocess.run([*CLI, *args, "--runs-dir", str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_progress_summary_timeline_and_why_with_a_coordinator_called_boss(spec: Path, tmp_path: Path) -> None:
    child = pexpect.spawn(
        CLI[0], [*CLI[1:], "run", str(spec), "--runs-dir", str(tmp_path), "--run-id", "b1", "--non-interactive"],
        cwd=str(ROOT), encoding="utf-8", timeout=120, dimensions=(40, 200),
    )
    child.expect(r"tasks \d/5 done · \d+ in flight · 0 failed · \d queued · \d+ tokens")
    child.expect(pexpect.EOF)
    child.close()
    summary = child.before
    assert child.exitstatus == 0, summary
    assert "run b1: completed" in summary
    assert re.search(r"^answer: \S", summary, re.M)
    assert re.search(r"^verdict: accept after 1 iteration\(s\)", summary, re.M)
    for task in TASKS:  # the report's per-task timeline
        assert re.search(rf"^  {task}\s+write|^  {task}\s+lookup", summary, re.M), task
    assert re.search(r"^tokens: [1-9]\d* in / [1-9]\d* out over \d+ skill runs", summary, re.M)

    timeline = agentrt("trace", "timeline", "b1", "--width", "60", runs=tmp_path)
    for task in TASKS:
        assert re.search(rf"^\s*\*?\s*{task}\s+worker-\d", timeline, re.M), task
    assert "critical path: research -> outline -> draft -> review" in re.sub(r"\s+", " ", timeline)

    why = agentrt("trace", "why", "b1", "review", runs=tmp_path).splitlines()[1:]
    waiting = next(i for i, line in enumerate(why) if "waiting on draft, examples" in line)
    dispatched = next(i for i, line in enumerate(why) if "dispatched to worker-" in line)
    completed = next(i for i, line in enumerate(why) if "completed on worker-" in line)
    assert waiting < dispatched < completed
    assert not any("on boss" in line for line in why)  # the job's own run is not a plan task's

    show = agentrt("trace", "show", "b1", "--task", "draft", "--kind", "task-request", runs=tmp_path)
    assert re.search(r"boss -> worker-\d: ask write \[task \w+/draft\]", show)
    # Every line every process wrote is one of the typed events the tools read.
    trace = tmp_path / "b1" / "trace.jsonl"
    assert len(read_events(trace)) == len(read_trace(trace)) > 100


def test_ctrl_c_drains_a_coordinator_called_boss(spec: Path, tmp_path: Path) -> None:
    cli = [*CLI, "run", str(spec), "--runs-dir", str(tmp_path)]
    proc = subprocess.Popen([*cli, "--run-id", "b2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trace = tmp_path / "b2" / "trace.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # stop it once `research` is done, with more in flight
        text = trace.read_text() if trace.exists() else ""
        if any('"plan_task":"research"' in line and '"decision":"completed"' in line for line in text.splitlines()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    events = read_trace(trace)
    # The typed Drain went to the entry (the boss), which answered with Drained once nothing
    # was in flight: the supervisor did not give up waiting.
    assert any(e["event"] == "run.draining" and e["actor"] == "boss" for e in events)
    assert any(e["event"] == "actor.drained" and e["actor"] == "boss" for e in events)
    assert any(e["event"] == "run.drained" and e["actor"] == "boss" for e in events)
    assert not any(e["event"] == "run.drain-timed-out" for e in events)
    dispatched = {e["plan_task"] for e in events if e["event"] == "schedule.dispatch"}
    finished = {e["plan_task"] for e in events if e["event"] == "schedule.decision" and e["decision"] == "completed"}
    assert dispatched - finished == set(), "work left in flight at the stop"
    assert finished < set(TASKS)  # it stopped before the end
    resumed = agentrt("run", str(spec), "--resume", "b2", runs=tmp_path)
    assert "run b2: completed" in resumed
