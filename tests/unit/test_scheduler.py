"""The coordinator's sans-I/O core, driven directly: no processes, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrt.actors._scheduler import Decision, Dispatch, Finish, Policy, Scheduler, balance
from agentrt.actors._simulate import durations_behaviour, simulate
from agentrt.protocols import Plan, PlanError, PlanTask


def dispatched(commands: list) -> list[str]:
    return [c.task_id for c in commands if isinstance(c, Dispatch)]


def test_dispatches_on_dependency_resolution_not_by_level() -> None:
    # a and b are independent; c needs only a. c must start when a is done, while b runs.
    plan = Plan(
        goal="g",
        tasks=[
            PlanTask(id="a", skill="s"),
            PlanTask(id="b", skill="s"),
            PlanTask(id="c", skill="s", deps=["a"]),
            PlanTask(id="d", skill="s", deps=["b", "c"]),
        ],
    )
    s = Scheduler(plan, {"w": ["s"]})
    assert dispatched(s.start()) == ["a", "b"]
    assert dispatched(s.task_succeeded("a", 1)) == ["c"]
    assert s.phase("b") == "running"
    assert dispatched(s.task_succeeded("c", 2)) == []
    out = s.task_succeeded("b", 3)
    assert dispatched(out) == ["d"]
    final = s.task_succeeded("d", 4)
    assert [c for c in final if isinstance(c, Finish)] == [
        Finish("completed", {"a": 1, "b": 3, "c": 2, "d": 4}, {}, {})
    ]


def test_references_are_resolved_at_dispatch() -> None:
    plan = Plan(
        goal="g",
        tasks=[PlanTask(id="a", skill="s"), PlanTask(id="b", skill="s", args={"in": "${a}"})],
    )
    s = Scheduler(plan, {"w": ["s"]})
    s.start()
    (d,) = [c for c in s.task_succeeded("a", {"v": 1}) if isinstance(c, Dispatch)]
    assert d.args == {"in": {"v": 1}}


def test_max_in_flight_holds_the_rest_and_says_so() -> None:
    plan = Plan(goal="g", tasks=[PlanTask(id=f"t{i}", skill="s") for i in range(5)])
    s = Scheduler(plan, {"w": ["s"]}, max_in_flight=2)
    out = s.start()
    assert dispatched(out) == ["t0", "t1"]
    held = [c.task_id for c in out if isinstance(c, Decision) and c.decision == "held-by-bound"]
    assert held == ["t2", "t3", "t4"]
    assert dispatched(s.task_succeeded("t1", None)) == ["t2"]


def test_balance_shares_tasks_so_the_last_slot_frees_earliest() -> None:
    # Longest first alone puts 5 and 4 on the two slots and the three 3s after them: 11
    # and 7. Balanced: {5, 4} and {3, 3, 3}, both 9.
    est = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 3.0}
    shares = balance([0.0, 0.0], est)
    assert sorted(sum(est[t] for t in share) for share in shares) == [9.0, 9.0]
    assert sorted(t for share in shares for t in share) == sorted(est)
    # A slot busy until 5 takes less: the free one gets 4 + 3 (7), the busy one 5 + 3 (8).
    shares = balance([0.0, 5.0], {"x": 4.0, "y": 3.0, "z": 3.0})
    assert [sorted(share) for share in shares] == [["x", "y"], ["z"]] or [
        sorted(share) for share in shares
    ] == [["x", "z"], ["y"]]


def test_last_wave_starts_what_balances_the_slots() -> None:
    est = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 3.0}
    plan = Plan(goal="g", tasks=[PlanTask(id=t, skill="s", est_s=e) for t, e in est.items()])
    s = Scheduler(plan, {"w": ["s"]}, policy=Policy(max_in_flight=2, token_budget=None))
    first = dispatched(s.start())
    assert first[0] == "a" and est[first[1]] == 3.0  # not b: 5 and 4 together end late
    s = Scheduler(plan, {"w": ["s"]}, policy=Policy(max_in_flight=2, token_budget=None))
    result = simulate(s, durations_behaviour(est))
    assert result.finish.state == "completed"
    assert result.makespan == pytest.approx(9.0)  # the lower bound, total 18 on 2 slots


def test_a_batch_before_its_fan_in_is_balanced_too() -> None:
    # The index waits on every document: nothing can start before the batch ends, so the
    # batch is balanced as a wave (9, the bound), and the index runs after it (9 + 1).
    est = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 3.0}
    tasks = [PlanTask(id=t, skill="s", est_s=e) for t, e in est.items()]
    tasks.append(PlanTask(id="index", skill="s", est_s=1.0, deps=list(est)))
    s = Scheduler(Plan(goal="g", tasks=tasks), {"w": ["s"]}, policy=Policy(max_in_flight=2, token_budget=None))
    result = simulate(s, durations_behaviour(est | {"index": 1.0}))
    assert result.finish.state == "completed"
    assert result.makespan == pytest.approx(10.0)


def test_ready_tasks_that_do_not_gate_the_rest_go_longest_path_first() -> None:
    # f waits on b alone, so b's path (4 + 10) is what to start first, with a: balancing
    # the five as a wave would start a and a 3 instead.
    est = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 3.0}
    tasks = [PlanTask(id=t, skill="s", est_s=e) for t, e in est.items()]
    tasks.append(PlanTask(id="f", skill="s", est_s=10.0, deps=["b"]))
    s = Scheduler(Plan(goal="g", tasks=tasks), {"w": ["s"]}, policy=Policy(max_in_flight=2, token_budget=None))
    assert dispatched(s.start()) == ["b", "a"]


def test_tasks_still_waiting_keep_the_longest_path_order() -> None:
    # d still waits on a, so this is not the last wave: the longest path goes first.
    plan = Plan(
        goal="g",
        tasks=[
            PlanTask(id="a", skill="s", est_s=1.0),
            PlanTask(id="b", skill="s", est_s=4.0),
            PlanTask(id="c", skill="s", est_s=3.0),
            PlanTask(id="d", skill="s", est_s=5.0, deps=["a"]),
        ],
    )
    s = Scheduler(plan, {"w": ["s"]}, policy=Policy(max_in_flight=1, token_budget=None))
    assert dispatched(s.start()) == ["a"]  # 1 + 5 is the longest path
    # Once a is done, d is ready too: b, c and d are the last wave, and on one slot its
    # longest task goes first.
    assert dispatched(s.task_succeeded("a", None)) == ["d"]


def test_failure_skips_dependents_transitively_and_fails_the_plan() -> None:
    plan = Plan(
        goal="g",
        tasks=[
            PlanTask(id="a", skill="s"),
            PlanTask(id="b", skill="s", deps=["a"]),
            PlanTask(id="c", skill="s", deps=["b"]),
            PlanTask(id="x", skill="s"),
        ],
        final="c",
    )
    s = Scheduler(plan, {"w": ["s"]})
    s.start()
    s.task_succeeded("x", 0)
    out = s.task_failed("a", "boom")
    (finish,) = [c for c in out if isinstance(c, Finish)]
    assert finish.state == "failed"
    assert finish.failed == {"a": "boom"}
    assert finish.skipped == {
        "b": "dependency 'a' did not complete",
        "c": "dependency 'b' did not complete",
    }


def test_least_loaded_worker_offering_the_skill() -> None:
    plan = Plan(goal="g", tasks=[PlanTask(id=f"t{i}", skill="s") for i in range(4)])
    s = Scheduler(plan, {"w1": ["s"], "w2": ["s"], "other": ["z"]})
    workers = [c.worker for c in s.start() if isinstance(c, Dispatch)]
    assert workers == ["w1", "w2", "w1", "w2"]


def test_no_worker_for_a_skill_fails_that_task() -> None:
    plan = Plan(goal="g", tasks=[PlanTask(id="a", skill="missing")])
    out = Scheduler(plan, {"w": ["s"]}).start()
    assert Decision("a", "failed", "no worker offers skill 'missing'") in out
    assert any(isinstance(c, Finish) and c.state == "failed" for c in out)


def test_invalid_plan_is_rejected_before_anything_runs() -> None:
    plan = Plan(goal="g", tasks=[PlanTask(id="a", skill="s", deps=["zz"])])
    with pytest.raises(PlanError):
        Scheduler(plan, {"w": ["s"]})


def test_events_for_tasks_not_running_are_errors() -> None:
    s = Scheduler(Plan(goal="g", tasks=[PlanTask(id="a", skill="s")]), {"w": ["s"]})
    with pytest.raises(ValueError, match="not running"):
        s.task_succeeded("a", 1)


@st.composite
def dags(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(1, 25))
    tasks = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        tasks.append(PlanTask(id=f"t{i}", skill="s", deps=[f"t{d}" for d in sorted(deps)]))
    return Plan(goal="g", tasks=tasks)


@settings(max_examples=200, deadline=None)
@given(plan=dags(), bound=st.integers(1, 6), data=st.data())
def test_invariants_under_any_completion_order(plan: Plan, bound: int, data: st.DataObject) -> None:
    s = Scheduler(plan, {"w1": ["s"], "w2": ["s"]}, max_in_flight=bound)
    deps = {t.id: set(t.deps) for t in plan.tasks}
    completed: set[str] = set()
    running: list[str] = []
    finishes = []
    ever_dispatched: list[str] = []

    def absorb(commands: list) -> None:
        for c in commands:
            if isinstance(c, Dispatch):
                assert deps[c.task_id] <= completed, "dispatched before its dependencies"
                running.append(c.task_id)
                ever_dispatched.append(c.task_id)
            elif isinstance(c, Finish):
                finishes.append(c)
        assert s.in_flight <= bound
        assert len(running) == s.in_flight

    absorb(s.start())
    while running:
        tid = running.pop(data.draw(st.integers(0, len(running) - 1)))
        if data.draw(st.integers(0, 9), label="fail one in ten") == 0:
            absorb(s.task_failed(tid, "x"))
        else:
            completed.add(tid)
            absorb(s.task_succeeded(tid, tid))
    assert len(finishes) == 1, "exactly one Finish"
    assert len(ever_dispatched) == len(set(ever_dispatched)), "a task dispatched twice"
    terminal = {t.id: s.phase(t.id) for t in plan.tasks}
    assert all(p in ("completed", "failed", "skipped") for p in terminal.values())
    f = finishes[0]
    assert set(f.results) | set(f.failed) | set(f.skipped) == set(terminal)
    assert not (set(f.results) & set(f.failed)) and not (set(f.failed) & set(f.skipped))
