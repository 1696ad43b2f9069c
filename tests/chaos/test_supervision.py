"""Chaos with real processes: kill -9 a worker node mid-run, and a node that crashes on every
start. The supervisor restarts what dies, the coordinator re-dispatches lost read-only work,
and a stateful effect is never repeated without a decision: the test actor counts every
effect (it deduplicates nothing), so "exactly once" is the runtime's doing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from agentrt.protocols import TaskStateChanged
from agentrt.runtime import RunError, Runtime, read_trace

from ..integration.conftest import make_spec
from ..integration.custom_actors import effect_counts

pytestmark = pytest.mark.integration

N = 300


def fan_out_spec(store: str = "", **supervision: Any) -> Any:
    return make_spec(
        {
            "coord": [
                {
                    "name": "coordinator",
                    "class": "agentrt.actors:Coordinator",
                    "config": {"max_in_flight": 12, "max_attempts": 3, "backoff_s": 0.05, "gate": False},
                }
            ],
            **{f"w{i}": [{"name": f"worker-{i}", "class": "custom_actors:Effect"}] for i in (1, 2, 3)},
        },
        run={"entry": "coordinator", "skill": "run", "store": store},
        supervision=supervision or {"max_restarts": 3, "period_s": 30},
    )


def plan(d: Path, skill: str = "compute") -> dict[str, Any]:
    tasks = [{"id": f"e{i}", "skill": skill, "args": {"dir": str(d), "n": i}} for i in range(N)]
    return {"goal": "g", "plan": {"goal": "g", "tasks": tasks}}


def runs_of(d: Path) -> int:
    """Runs of the read-only `compute` so far (each counted, repeats included)."""
    log = d / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def values(out: dict[str, Any]) -> dict[str, int]:
    return {k: v["value"] for k, v in out["results"].items()}


def fault_free_then_kill(tmp_path: Path, node: str, store: str = "") -> tuple[dict[str, Any], dict[str, Any], Path, int, int]:
    """The fan-out without faults, then again with `node` killed (-9) a third of the way in:
    (fault-free output, output with the kill, the chaos run's effect folder, the killed pid,
    the node's pid after), with the chaos run's trace path in the output under "_trace"."""
    clean, chaos = tmp_path / "clean", tmp_path / "chaos"
    clean.mkdir()
    chaos.mkdir()
    with Runtime(fan_out_spec(store), runs_dir=tmp_path / "runs") as rt:
        baseline = rt.ask("coordinator", "run", plan(clean), timeout_s=300).unwrap()
    assert runs_of(clean) == N
    with Runtime(fan_out_spec(store), runs_dir=tmp_path / "runs") as rt:
        future = rt.ask_async("coordinator", "run", plan(chaos), timeout_s=300)
        while runs_of(chaos) < N // 3:
            time.sleep(0.01)
        victim = rt.nodes[node].pid
        os.kill(victim, signal.SIGKILL)
        out = rt.wait(future).unwrap()
        out["_trace"] = rt.trace_path
        now = rt.nodes[node].pid
    assert out["state"] == "completed"
    assert values(out) == values(baseline)  # the same result as without the fault
    assert runs_of(chaos) >= N  # read-only work lost with the node may run again: harmless
    return baseline, out, chaos, victim, now


def test_kill_9_of_a_worker_node_mid_fan_out_loses_nothing(tmp_path: Path) -> None:
    _, out, chaos, victim, now = fault_free_then_kill(tmp_path, "w2")
    assert now != victim  # restarted
    trace = out["_trace"]
    runs = (chaos / "runs.log").read_text().splitlines()
    assert len(runs) >= N
    events = list(read_trace(trace))
    died = [e for e in events if e["event"] == "node.died"]
    assert [e["node_pid"] for e in died] == [victim]
    assert any(e["event"] == "node.restarting" and e["nodes"] == ["w2"] for e in events)  # one-for-one
    redispatched = [e for e in events if e["event"] == "schedule.decision" and e["decision"] == "redispatched"]
    assert redispatched and all("worker-2" in e["reason"] for e in redispatched)


def test_a_node_that_crashes_on_every_start_is_given_up_on_with_a_clear_reason(tmp_path: Path) -> None:
    spec = make_spec(
        {
            "ok": [{"name": "fine", "class": "custom_actors:Effect"}],
            "bad": [{"name": "bad", "class": "custom_actors:CrashOnStart"}],
        },
        run={"entry": "fine", "skill": "effect"},
        supervision={"max_restarts": 2, "period_s": 60},
    )
    rt = Runtime(spec, runs_dir=tmp_path)
    with pytest.raises(RunError) as info, rt:
        pass
    msg = str(info.value)
    assert "node 'bad'" in msg and "exited with code 3" in msg
    assert "2 restarts in the last 60s already (supervision.max_restarts = 2): giving up" in msg
    spawned = [e for e in read_trace(rt.trace_path) if e["event"] == "node.spawned" and e["node_name"] == "bad"]
    assert len(spawned) == 3  # the first start and two restarts: no storm


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_of_the_coordinator_node_resumes_from_its_journal(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue("postgres_url") if backend == "postgres" else ""
    _, out, chaos, victim, now = fault_free_then_kill(tmp_path, "coord", store)
    assert now != victim
    trace = out["_trace"]
    # No task that had completed ran again: one run per task in all.
    runs = (chaos / "runs.log").read_text().splitlines()
    assert len(runs) == N, f"{len(runs) - N} tasks ran twice"
    events = list(read_trace(trace))
    resumed = [e for e in events if e["event"] == "journal.resume"]
    assert len(resumed) == 1 and 0 < resumed[0]["done"] < N  # resumed part-way
    assert any(e["event"] == "ask.again" and e["actor"] == "coordinator" for e in events)
    # The journal lived where the spec said: PostgreSQL, or the run folder's SQLite file.
    on_postgres = any(e["event"] == "store.ready" and e.get("backend") == "postgresql" for e in events)
    assert on_postgres == (backend == "postgres")
    assert (Path(trace).parent / "state.sqlite").exists() == (backend == "sqlite")


def test_a_run_stopped_by_sigterm_finishes_with_resume(tmp_path: Path) -> None:
    import subprocess
    import sys

    from ..integration.conftest import ROOT

    cli = [sys.executable, "-m", "agentrt.runtime._cli", "run", "demos/pipeline", "--runs-dir", str(tmp_path)]
    proc = subprocess.Popen([*cli, "--run-id", "stopped"], cwd=ROOT, stdout=subprocess.DEVNULL)
    trace = tmp_path / "stopped" / "trace.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # stop it once research has completed (and passed review)
        text = trace.read_text() if trace.exists() else ""
        if any('"plan_task":"research"' in line and '"decision":"completed"' in line for line in text.splitlines()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    first = list(read_trace(trace))
    # Drained: what was in flight finished (and was journaled) before the nodes stopped.
    # The entry actor answered the typed Drain (not the supervisor watching for an event).
    assert any(e["event"] == "actor.drained" and e["actor"] == "coordinator" for e in first)
    assert any(e["event"] == "run.drained" and e["actor"] == "coordinator" for e in first)
    in_flight_at_stop = {
        e["plan_task"] for e in first if e["event"] == "schedule.dispatch"
    } - {e["plan_task"] for e in first if e["event"] == "schedule.decision" and e["decision"] == "completed"}
    assert not in_flight_at_stop, f"left in flight: {in_flight_at_stop}"
    again = subprocess.run([*cli, "--resume", "stopped"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "run stopped: completed" in again.stdout
    events = list(read_trace(tmp_path / "stopped" / "trace.jsonl"))
    resumed = [e for e in events if e["event"] == "journal.resume"]
    assert len(resumed) == 1 and resumed[0]["done"] >= 1
    # Every task dispatched before the stop ran exactly once over both lives.
    dispatched_first = {e["plan_task"] for e in first if e["event"] == "schedule.dispatch"}
    for task in dispatched_first:
        runs = [
            e for e in events
            if e["event"] == "task.state" and e["state"] == "completed" and (e.get("task_id") or "").endswith(f"/{task}")
            and e.get("actor", "").startswith("worker")
        ]
        assert len(runs) == 1, (task, len(runs))
    missing = subprocess.run([*cli, "--resume", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no run 'nope' to resume" in missing.stderr


def test_dropped_duplicated_and_delayed_envelopes_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean, chaos = tmp_path / "clean", tmp_path / "chaos"
    clean.mkdir()
    chaos.mkdir()
    with Runtime(fan_out_spec(), runs_dir=tmp_path / "runs") as rt:
        baseline = rt.ask("coordinator", "run", plan(clean, "effect"), timeout_s=300).unwrap()
    # Every process of the next run (the supervisor included) loses, repeats or delays
    # a tenth each of the envelopes that carry work, and of their acks.
    monkeypatch.setenv("AGENTRT_FAULTS", "drop=0.1,duplicate=0.1,delay=0.1,delay_s=0.05,seed=7")
    with Runtime(fan_out_spec(), runs_dir=tmp_path / "runs") as rt:
        out = rt.ask("coordinator", "run", plan(chaos, "effect"), timeout_s=300).unwrap()
        trace = rt.trace_path
    assert out["state"] == "completed"
    assert values(out) == values(baseline)
    counts = effect_counts(chaos)  # every effect counted, none deduplicated by the actor
    assert sorted(counts) == list(range(N)) and set(counts.values()) == {1}, {n: c for n, c in counts.items() if c != 1}
    events = [e["event"] for e in read_trace(trace)]
    assert events.count("envelope.resent") > 0 and events.count("envelope.duplicate") > 0


def test_a_node_that_stops_answering_is_killed_and_replaced(tmp_path: Path) -> None:
    d = tmp_path / "fx"
    d.mkdir()
    spec = fan_out_spec(max_restarts=3, period_s=30, heartbeat_s=0.2, heartbeat_timeout_s=1.0)
    with Runtime(spec, runs_dir=tmp_path / "runs") as rt:
        future = rt.ask_async("coordinator", "run", plan(d), timeout_s=300)
        while runs_of(d) < N // 3:
            time.sleep(0.01)
        frozen = rt.nodes["w3"].pid
        os.kill(frozen, signal.SIGSTOP)  # alive, but silent: no exit for the OS to report
        out = rt.wait(future).unwrap()
        trace = rt.trace_path
    assert out["state"] == "completed" and len(out["results"]) == N
    events = list(read_trace(trace))
    silent = [e for e in events if e["event"] == "node.unresponsive"]
    assert [e["node_pid"] for e in silent] == [frozen] and silent[0]["silent_s"] >= 1.0
    assert any(e["event"] == "node.died" and e["node_pid"] == frozen for e in events)


def ledger_run(tmp_path: Path, human: dict[str, Any] | None, answer: str | None) -> tuple[dict[str, Any], int]:
    """A stateful task running when the coordinator node is killed; after the restart the
    task is in doubt. Returns the run's output and how many ledger entries were written."""
    import json
    import threading

    d = tmp_path / "ledger"
    d.mkdir()
    nodes: dict[str, Any] = {
        "coord": [{"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": {"gate": False}}],
        "books": [{"name": "ledger", "class": "custom_actors:Ledger"}],
    }
    if human is not None:
        nodes["desk"] = [{"name": "human", "class": "agentrt.actors:Human", "config": human}]
    spec = make_spec(nodes, run={"entry": "coordinator", "skill": "run"})
    job = {"goal": "g", "plan": {"goal": "g", "tasks": [{"id": "pay", "skill": "record", "args": {"dir": str(d), "s": 1.0}}]}}
    with Runtime(spec, runs_dir=tmp_path / "runs") as rt:
        # Killed once the ledger runs the task: seen as the event arrives (the trace file is
        # buffered, and the job's own request names the skill too).
        recording = threading.Event()
        rt.writer.listeners.append(
            lambda e: recording.set() if isinstance(e, TaskStateChanged) and (e.skill, e.state) == ("record", "working") else None
        )
        future = rt.ask_async("coordinator", "run", job, timeout_s=120)
        assert recording.wait(30)
        os.kill(rt.nodes["coord"].pid, signal.SIGKILL)
        if answer is not None:
            folder = rt.run_dir / "escalations"

            def reply() -> None:
                while not (folder / "in-doubt-pay.json").exists():
                    time.sleep(0.02)
                (folder / "tmp").write_text(json.dumps({"ticketId": "in-doubt-pay", "decision": answer, "by": "ops"}))
                (folder / "tmp").rename(folder / "in-doubt-pay.answer.json")

            threading.Thread(target=reply, daemon=True).start()
        out = rt.wait(future, timeout_s=60).unwrap()
    return out, len((d / "ledger.txt").read_text().splitlines())


def test_an_in_doubt_stateful_task_is_not_rerun_without_a_person_saying_so(tmp_path: Path) -> None:
    out, entries = ledger_run(tmp_path, human=None, answer=None)
    assert entries == 1  # the first attempt did write; nothing wrote again
    assert out["state"] == "failed"
    ticket, answer = out["escalations"][0]["ticket"], out["escalations"][0]["answer"]
    assert ticket["reason"] == "in-doubt" and ticket["options"] == ["continue", "abort"]
    assert answer["decision"] == "abort" and "no human actor" in answer["by"]
    task = next(t for t in out["tasks"] if t["id"] == "pay")
    assert task["state"] == "failed" and "in doubt" in task["error"]


def test_a_person_can_have_an_in_doubt_task_run_again_and_the_key_keeps_it_single(tmp_path: Path) -> None:
    out, entries = ledger_run(tmp_path, human={"fallback": "wait-file", "wait_s": 60}, answer="continue")
    assert out["state"] == "completed"
    assert out["escalations"][0]["answer"]["decision"] == "continue"
    assert entries == 1  # run again with the same key: the worker answered with its result


@pytest.mark.parametrize(("strategy", "restarted"), [("rest-for-one", ["w2", "w3"]), ("one-for-all", ["coord", "w1", "w2", "w3"])])
def test_restart_strategies_restart_the_nodes_they_name(tmp_path: Path, strategy: str, restarted: list[str]) -> None:
    d = tmp_path / "fx"
    d.mkdir()
    with Runtime(fan_out_spec(strategy=strategy, max_restarts=3, period_s=30), runs_dir=tmp_path / "runs") as rt:
        future = rt.ask_async("coordinator", "run", plan(d), timeout_s=300)
        while runs_of(d) < N // 3:
            time.sleep(0.01)
        before = {n: p.pid for n, p in rt.nodes.items()}
        os.kill(before["w2"], signal.SIGKILL)
        out = rt.wait(future, timeout_s=120).unwrap()
        after = {n: p.pid for n, p in rt.nodes.items()}
        trace = rt.trace_path
    assert out["state"] == "completed" and len(out["results"]) == N
    assert sorted(n for n in before if before[n] != after[n]) == restarted
    events = list(read_trace(trace))
    assert [e["nodes"] for e in events if e["event"] == "node.restarting"] == [restarted]


def test_kill_9_of_a_worker_during_a_stateful_task_puts_it_to_the_human_and_never_repeats_it(tmp_path: Path) -> None:
    """The effect has happened when the worker's node dies, but its reply has not been sent.
    The old coordinator re-dispatched the task to the other worker with the same key, which
    had no record of it: the effect happened twice. Now it is in doubt: a ticket, and with no
    human, not run again."""
    d = tmp_path / "fx"
    d.mkdir()
    nodes: dict[str, Any] = {
        "coord": [{"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": {"gate": False}}],
        **{f"w{i}": [{"name": f"worker-{i}", "class": "custom_actors:Effect"}] for i in (1, 2)},
    }
    spec = make_spec(nodes, run={"entry": "coordinator", "skill": "run"})
    job = {"goal": "g", "plan": {"goal": "g", "tasks": [{"id": "pay", "skill": "effect", "args": {"dir": str(d), "n": 7, "s": 0.0, "after_s": 30.0}}]}}
    with Runtime(spec, runs_dir=tmp_path / "runs") as rt:
        future = rt.ask_async("coordinator", "run", job, timeout_s=120)
        while effect_counts(d).get(7) != 1:
            time.sleep(0.01)
        worker = (d / "effects.log").read_text().split()[1]  # who did it
        os.kill(rt.nodes[f"w{worker[-1]}"].pid, signal.SIGKILL)
        out = rt.wait(future, timeout_s=60).unwrap()
        trace = rt.trace_path
    assert effect_counts(d) == {7: 1}  # exactly once: nobody ran it again
    ticket, answer = out["escalations"][0]["ticket"], out["escalations"][0]["answer"]
    assert ticket["reason"] == "in-doubt" and ticket["ticketId"] == "in-doubt-pay"
    assert answer["decision"] == "abort" and "no human actor" in answer["by"]
    assert out["state"] == "failed" and "in doubt" in out["schedule"]["failed"]["pay"]
    decisions = [e for e in read_trace(trace) if e["event"] == "schedule.decision" and e["plan_task"] == "pay"]
    assert "in-doubt" in [e["decision"] for e in decisions] and "redispatched" not in [e["decision"] for e in decisions]


def test_an_ask_sent_while_its_node_is_down_is_answered_by_the_restarted_node(tmp_path: Path) -> None:
    """The ask goes out stamped for the dead incarnation, so the restarted one refuses it (as
    `stale`: never acknowledged) and the supervisor asks it again when the node is back. The
    first attempt's give-up must not answer the caller: it did (an `undelivered` failure while
    the second attempt was still running), once the job took longer than the resends' span.
    The supervisor's resends are made short here (the default span is 15.75 s) so that the
    job outlives them."""
    from agentrt.runtime._delivery import Policy

    spec = make_spec({"n": [{"name": "sleeper", "class": "custom_actors:Sleeper"}]})
    with Runtime(spec, runs_dir=tmp_path) as rt:
        # About 4 s of resends: longer than a restart takes, shorter than the job below.
        rt.messenger.delivery.policy = Policy(ack_wait_s=0.5, max_wait_s=0.5, max_sends=8, give_up_s=5)
        victim = rt.nodes["n"]
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.proc is not None
        victim.proc.wait(10)  # dead, and not yet seen so by the supervisor
        future = rt.ask_async("sleeper", "sleep", {"s": 7}, timeout_s=60)
        result = rt.wait(future)
        events = list(read_trace(rt.trace_path))
    assert result.state == "completed", result.error
    assert any(e["event"] == "ask.again" and e["actor"] == "sleeper" for e in events)
    stale = [e for e in events if e["event"] == "message.dead-letter" and e["reason"] == "stale"]
    assert stale  # the first attempt was refused by the restarted node, as it must be
