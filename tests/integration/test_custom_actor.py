"""A custom actor named `module:Class` in a spec is loaded, hosted, validated and traced."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import msgspec
import pytest

from agentrt.runtime import RunError, Runtime, read_trace, run

from .conftest import alive, make_spec

pytestmark = pytest.mark.integration


def test_custom_actors_across_processes(greeter_spec, runs_dir: Path) -> None:
    summary = run(greeter_spec, runs_dir=runs_dir)
    assert summary.state == "completed", summary.error
    assert summary.output == {"relayed": "hello ada"}
    events = read_trace(Path(summary.run_dir) / "trace.jsonl")
    pids = {e["pid"] for e in events if e.get("event") == "task.state"}
    assert len(pids) == 2, "relay and greeter ran in different processes"
    assert {e["actor"] for e in events if e.get("event") == "task.state"} == {"relay", "greeter"}
    assert not any(alive(p) for n, p in summary.pids.items() if n != "supervisor")


def test_stateful_skill_state_and_contracts(greeter_spec, runs_dir: Path) -> None:
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        assert [rt.ask("greeter", "count").data["count"] for _ in range(3)] == [1, 2, 3]
        broken = rt.ask("greeter", "break_contract")
        assert broken.state == "failed"
        assert "output of skill 'break_contract'" in broken.error and "rule: required" in broken.error
        trespass = rt.ask("greeter", "trespass")
        assert trespass.state == "failed" and "OwnershipError" in trespass.error
        state_path = rt.run_dir / "state.sqlite"
    rows = sqlite3.connect(state_path).execute("SELECT namespace, key, version FROM state").fetchall()
    assert rows == [("greeter", "calls", 3)]


def test_a_class_that_cannot_load_fails_the_start_clearly(runs_dir: Path) -> None:
    spec = make_spec(
        {"n1": [{"name": "x", "class": "custom_actors:NoSuchActor"}]}, run={"entry": "x"}
    )
    with (
        pytest.raises(RunError, match=r"node 'n1' could not start.*has no class 'NoSuchActor'"),
        Runtime(spec, runs_dir=runs_dir),
    ):
        pass


def test_a_node_dying_mid_run_is_reported(runs_dir: Path) -> None:
    spec = make_spec(
        {"n1": [{"name": "sleeper", "class": "custom_actors:Sleeper"}]}, run={"entry": "sleeper"}
    )
    spec = msgspec.structs.replace(
        spec, nodes=[msgspec.structs.replace(spec.nodes[0], restart="temporary")]
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        future = rt.ask_async("sleeper", "sleep", {"s": 60})
        rt.nodes["n1"].proc.kill()
        with pytest.raises(
            RunError,
            match=r"node 'n1' \(pid \d+\) killed by signal 9; it is not restarted \(restart = temporary\) and runs 'sleeper'",
        ):
            rt.wait(future, timeout_s=30)


def test_nodes_are_pinned_to_the_cpus_placement_gives_them(greeter_spec, runs_dir: Path) -> None:
    """Each node process, and every thread it starts, runs on the CPUs `placement` chose, as
    SCHED_BATCH (no wakeup preemption among threads that share a CPU and the GIL)."""
    # "on": round robin whatever the count of CPUs this machine has
    spec = msgspec.structs.replace(greeter_spec, placement=msgspec.structs.replace(greeter_spec.placement, pin="on"))
    cpus = sorted(os.sched_getaffinity(0))
    with Runtime(spec, runs_dir=runs_dir) as rt:
        assert rt.ask("relay", "relay", {"name": "ada"}).ok
        for k, node in enumerate(spec.nodes):
            pid = rt.nodes[node.name].pid
            want = {cpus[k % len(cpus)]}
            threads = os.listdir(f"/proc/{pid}/task")
            assert len(threads) > 3  # the I/O thread, actors' threads, ...
            assert all(os.sched_getaffinity(int(t)) == want for t in threads), node.name
            assert all(os.sched_getscheduler(int(t)) == os.SCHED_BATCH for t in threads), node.name


def test_no_trace_event_is_lost_and_each_process_ships_them_in_the_order_it_recorded(greeter_spec, runs_dir: Path) -> None:
    """A known exchange, 30 times: the supervisor asks relay, relay asks greeter (another
    process), both answer. Events travel in batches; every one of them reaches the trace, and
    what one process recorded in causal order stays in that order."""
    asks = 30
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        for i in range(asks):
            assert rt.ask("relay", "relay", {"name": f"n{i}"}).ok
        trace = rt.trace_path
    events = read_trace(trace)
    by_trace: dict[str, list[dict]] = {}
    for e in events:
        if e["event"] in ("envelope.sent", "envelope.received", "task.state") and e.get("kind", "task") != "ack":
            by_trace.setdefault(e.get("trace_id") or "", []).append(e)
    chains = [evs for evs in by_trace.values() if any(e["event"] == "task.state" and e.get("skill") == "relay" for e in evs)]
    assert len(chains) == asks
    for evs in chains:
        count = {name: sum(e["event"] == name for e in evs) for name in ("envelope.sent", "envelope.received", "task.state")}
        # supervisor -> relay -> greeter, and the two replies back; working + completed on each
        assert count == {"envelope.sent": 4, "envelope.received": 4, "task.state": 4}, count
        for actor in ("relay", "greeter"):
            mine = [e for e in evs if e.get("actor") == actor]
            steps = [(e["event"], e.get("state")) for e in mine]
            # received, then working, then completed, then the reply sent: one process's order
            received = steps.index(("envelope.received", None))
            working = steps.index(("task.state", "working"))
            completed = steps.index(("task.state", "completed"))
            sent = max(i for i, s in enumerate(steps) if s[0] == "envelope.sent")
            assert received < working < completed < sent, steps
