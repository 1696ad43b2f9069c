"""The core's policies, one at a time: retries, fallback, timeouts, groups, resources,
bounds, rate limits, budgets, the queue limit and cancellation. Time is passed in."""

from __future__ import annotations

import pytest

from agentrt.actors._limits import Budget, RateLimiter, TokenBucket, derive_bound
from agentrt.actors._scheduler import (
    Cancel,
    Decision,
    Dispatch,
    Finish,
    Policy,
    Scheduler,
    SetTimer,
    SkillInfo,
)
from agentrt.protocols import Group, Plan, PlanError, PlanTask, QueueFull


def of(kind: type, commands: list) -> list:
    return [c for c in commands if isinstance(c, kind)]


def decisions(commands: list, kind: str) -> list[Decision]:
    return [c for c in of(Decision, commands) if c.decision == kind]


def plan(*tasks: PlanTask, **kw) -> Plan:
    return Plan(goal="g", tasks=list(tasks), **kw)


def test_retry_waits_with_backoff_and_keeps_the_idempotency_key() -> None:
    s = Scheduler(plan(PlanTask(id="a", skill="s")), {"w": ["s"]}, policy=Policy(max_attempts=3, backoff_s=2.0, jitter=0))
    (first,) = of(Dispatch, s.start(now=10.0))
    out = s.task_failed("a", "boom", attempt=1, now=11.0)
    assert decisions(out, "retried")[0].reason.startswith("attempt 1 of 3 failed (boom)")
    (timer,) = of(SetTimer, out)
    assert timer.at == pytest.approx(13.0) and s.phase("a") == "backoff"
    out = s.task_failed("a", "late duplicate", attempt=1, now=12.0)
    assert decisions(out, "stale") and s.phase("a") == "backoff"
    (second,) = of(Dispatch, s.on_timer(timer.key, 13.0))
    assert second.attempt == 2 and second.idempotency_key == first.idempotency_key == "a"
    (timer,) = of(SetTimer, s.task_failed("a", "boom", attempt=2, now=14.0))
    assert timer.at == pytest.approx(18.0)  # doubled
    s.on_timer(timer.key, 18.0)
    (finish,) = of(Finish, s.task_failed("a", "boom again", attempt=3, now=19.0))
    assert finish.state == "failed" and finish.failed == {"a": "boom again"}


def test_fallback_skill_after_the_last_attempt() -> None:
    s = Scheduler(
        plan(PlanTask(id="a", skill="fast", fallback="careful")),
        {"w1": ["fast"], "w2": ["careful"]},
    )
    s.start()
    out = s.task_failed("a", "nope", attempt=1)
    assert decisions(out, "fallback")
    (d,) = of(Dispatch, out)
    assert (d.skill, d.worker, d.attempt) == ("careful", "w2", 2)
    (finish,) = of(Finish, s.task_succeeded("a", "ok", attempt=2))
    assert finish.state == "completed"


def test_timeout_cancels_at_the_worker_and_counts_as_a_failed_attempt() -> None:
    s = Scheduler(
        plan(PlanTask(id="a", skill="s", timeout_s=5)),
        {"w": ["s"]},
        policy=Policy(max_attempts=2, backoff_s=0),
        skills={"s": SkillInfo(read_only=True)},
    )
    out = s.start(now=0.0)
    (d,) = of(Dispatch, out)
    assert d.timeout_s == 5
    (timer,) = of(SetTimer, out)
    out = s.on_timer(timer.key, 5.0)
    assert of(Cancel, out) == [Cancel("a", "w", 1, "timed out after 5s")]
    assert decisions(out, "timed-out") and decisions(out, "retried")
    retry = of(SetTimer, out)[0]
    (d2,) = of(Dispatch, s.on_timer(retry.key, 5.0))
    assert d2.attempt == 2
    assert decisions(s.task_succeeded("a", "late", attempt=1, now=6.0), "stale")
    assert of(Finish, s.task_succeeded("a", "ok", attempt=2, now=7.0))[0].results == {"a": "ok"}


def test_a_stateful_attempt_that_times_out_is_in_doubt_not_retried() -> None:
    """Its effect may have happened: a blind retry could repeat it (old code retried it)."""
    s = Scheduler(plan(PlanTask(id="a", skill="s", timeout_s=5)), {"w": ["s"]}, policy=Policy(max_attempts=3, backoff_s=0))
    (timer,) = of(SetTimer, s.start(now=0.0))
    out = s.on_timer(timer.key, 5.0)
    assert of(Cancel, out) and decisions(out, "in-doubt") and not decisions(out, "retried")
    assert not of(Dispatch, out) and not of(SetTimer, out)
    assert s.abandon("a", "in doubt; not run again", 6.0) and s.phase("a") == "failed"


def test_an_attempt_sent_and_never_acknowledged_is_in_doubt_when_stateful_and_retried_when_read_only() -> None:
    s = Scheduler(plan(PlanTask(id="a", skill="s"), PlanTask(id="b", skill="r")), {"w": ["s", "r"]},
                  policy=Policy(max_attempts=3, backoff_s=0), skills={"r": SkillInfo(read_only=True)})  # fmt: skip
    s.start(now=0.0)
    out = s.task_unanswered("a", "was never acknowledged", attempt=1, now=1.0)
    assert decisions(out, "in-doubt") and not decisions(out, "retried") and not of(Dispatch, out)
    assert "attempt 1 on w was never acknowledged" in decisions(out, "in-doubt")[0].reason
    out = s.task_unanswered("b", "was never acknowledged", attempt=1, now=1.0)
    assert decisions(out, "retried") and not decisions(out, "in-doubt")
    assert decisions(s.task_unanswered("b", "late", attempt=1, now=2.0), "stale")  # not current


def test_timeout_defaults_come_from_the_skill_then_the_policy() -> None:
    s = Scheduler(
        plan(PlanTask(id="a", skill="s"), PlanTask(id="b", skill="t")),
        {"w": ["s", "t"]},
        policy=Policy(timeout_s=30),
        skills={"s": SkillInfo(read_only=True, timeout_s=7)},
    )
    assert {d.task_id: d.timeout_s for d in of(Dispatch, s.start())} == {"a": 7, "b": 30}


def fan_out(policy: str, quorum: int | None = None) -> Plan:
    return plan(
        *[PlanTask(id=f"m{i}", skill="s", group="g") for i in range(4)],
        PlanTask(id="after", skill="s", args={"all": "${g}"}),
        groups={"g": Group(policy=policy, quorum=quorum)},  # type: ignore[arg-type]
    )


def test_fail_fast_cancels_the_siblings_and_skips_dependents() -> None:
    s = Scheduler(fan_out("fail-fast"), {"w": ["s"]}, max_in_flight=3)
    s.start()
    out = s.task_failed("m1", "bad source")
    assert sorted((c.task_id, c.attempt) for c in of(Cancel, out)) == [("m0", 1), ("m2", 1)]
    (finish,) = of(Finish, out)
    assert finish.state == "failed"
    assert set(finish.cancelled) == {"m0", "m2", "m3"}
    assert finish.skipped == {"after": "dependency 'g' did not complete"}
    assert "fail-fast" in finish.failed["g"]


def test_quorum_finishes_early_and_passes_on_what_completed() -> None:
    s = Scheduler(fan_out("quorum", 2), {"w": ["s"]}, max_in_flight=4)
    s.start()
    assert not of(Dispatch, s.task_succeeded("m2", "two"))
    out = s.task_succeeded("m0", "zero")
    assert decisions(out, "group-completed")[0].reason == "quorum 2 of 4 reached"
    assert sorted(c.task_id for c in of(Cancel, out)) == ["m1", "m3"]
    (d,) = of(Dispatch, out)
    assert d.task_id == "after" and d.args == {"all": {"m0": "zero", "m2": "two"}}


def test_quorum_out_of_reach_fails_the_group() -> None:
    s = Scheduler(fan_out("quorum", 3), {"w": ["s"]}, max_in_flight=4)
    s.start()
    s.task_failed("m0", "x")
    out = s.task_failed("m1", "y")
    assert decisions(out, "group-failed") and of(Finish, out)[0].state == "failed"


def test_all_settled_keeps_partial_results() -> None:
    s = Scheduler(fan_out("all-settled"), {"w": ["s"]}, max_in_flight=4)
    s.start()
    s.task_failed("m0", "x")
    s.task_succeeded("m1", 1)
    s.task_failed("m2", "y")
    (d,) = of(Dispatch, s.task_succeeded("m3", 3))
    assert d.args == {"all": {"m1": 1, "m3": 3}}
    (finish,) = of(Finish, s.task_succeeded("after", "done"))
    assert finish.state == "completed" and set(finish.failed) == {"m0", "m2"}


def test_stateful_tasks_on_one_resource_run_one_at_a_time_in_plan_order() -> None:
    p = plan(
        PlanTask(id="prep", skill="read"),
        PlanTask(id="w1", skill="write", resource="db", deps=["prep"]),
        PlanTask(id="w2", skill="write", resource="db"),
        PlanTask(id="other", skill="write", resource="cache"),
        PlanTask(id="r", skill="read", resource="db"),
    )
    s = Scheduler(p, {"w": ["read", "write"]}, skills={"read": SkillInfo(read_only=True)})
    out = s.start()
    # w2 is ready but must wait for w1 (earlier in plan order), still waiting on prep.
    assert sorted(d.task_id for d in of(Dispatch, out)) == ["other", "prep", "r"]
    assert decisions(out, "serialised")[0].reason == "serialised behind 'w1' on resource 'db'"
    assert [d.task_id for d in of(Dispatch, s.task_succeeded("prep", 0))] == ["w1"]
    assert of(Dispatch, s.task_succeeded("other", 0)) == []
    assert [d.task_id for d in of(Dispatch, s.task_succeeded("w1", 0))] == ["w2"]


def test_per_worker_and_per_skill_bounds() -> None:
    p = plan(*[PlanTask(id=f"a{i}", skill="a") for i in range(3)], PlanTask(id="b", skill="b"))
    s = Scheduler(p, {"w1": ["a", "b"], "w2": ["a", "b"]}, policy=Policy(per_worker=1, per_skill={"a": 1}))
    out = s.start()
    assert [(d.task_id, d.worker) for d in of(Dispatch, out)] == [("a0", "w1"), ("b", "w2")]
    assert decisions(out, "held-by-skill-bound")
    out = s.task_succeeded("b", 0)
    assert of(Dispatch, out) == []  # a1 still held by the skill bound
    assert [d.task_id for d in of(Dispatch, s.task_succeeded("a0", 0))] == ["a1"]


def test_rate_limit_holds_dispatch_until_quota_refills() -> None:
    p = plan(*[PlanTask(id=f"t{i}", skill="s") for i in range(3)])
    s = Scheduler(p, {"w": ["s"]}, policy=Policy(rpm=60, burst_s=1))  # 1 request per second
    out = s.start(now=0.0)
    assert [d.task_id for d in of(Dispatch, out)] == ["t0"]
    assert decisions(out, "held-by-rate-limit")
    (wake,) = of(SetTimer, out)
    assert wake.at == pytest.approx(1.0)
    assert [d.task_id for d in of(Dispatch, s.on_timer(wake.key, 1.0))] == ["t1"]


def test_a_429_pauses_the_quota_for_retry_after() -> None:
    p = plan(PlanTask(id="a", skill="s"), PlanTask(id="b", skill="s", deps=["a"]))
    s = Scheduler(p, {"w": ["s"]}, policy=Policy(max_attempts=2, backoff_s=0.1, tpm=1e9))
    s.start(now=0.0)
    out = s.task_failed("a", "429", attempt=1, now=1.0, retry_after_s=20)
    assert decisions(out, "rate-limited")
    (retry,) = of(SetTimer, out)
    assert retry.at >= 21.0  # Retry-After beats the shorter backoff
    out = s.on_timer(retry.key, 21.0)
    assert [d.attempt for d in of(Dispatch, out)] == [2]


def test_token_budget_stops_dispatch_and_returns_partial_results() -> None:
    p = plan(*[PlanTask(id=f"t{i}", skill="s", est_tokens=400) for i in range(4)], final="t3")
    s = Scheduler(p, {"w": ["s"]}, policy=Policy(token_budget=1000, max_in_flight=1))
    assert [d.task_id for d in of(Dispatch, s.start())] == ["t0"]
    assert [d.task_id for d in of(Dispatch, s.task_succeeded("t0", 0, tokens=450))] == ["t1"]
    out = s.task_succeeded("t1", 1, tokens=450)  # 900 spent: 400 more would pass 1000
    (finish,) = of(Finish, out)
    assert finish.state == "failed" and finish.results == {"t0": 0, "t1": 1}
    assert finish.reason == "token budget 1000 reached: 900 spent, next call needs 400" and finish.budget
    assert set(finish.skipped) == {"t2", "t3"}


def test_a_cost_budget_without_a_token_price_is_refused_naming_both_fields() -> None:
    """With no price, reservations cost nothing and the cap could be passed (old code took it)."""
    with pytest.raises(ValueError, match="'cost_budget' needs 'usd_per_mtok' > 0"):
        Policy(cost_budget=1.0)


def test_cost_budget_uses_the_price_of_tokens() -> None:
    p = plan(*[PlanTask(id=f"t{i}", skill="s", est_tokens=1000) for i in range(3)])
    s = Scheduler(p, {"w": ["s"]}, policy=Policy(cost_budget=0.02, usd_per_mtok=10.0))
    assert len(of(Dispatch, s.start())) == 2  # $0.01 each


def test_queue_limit_refuses_what_would_overflow() -> None:
    many = plan(*[PlanTask(id=f"t{i}", skill="s") for i in range(5)])
    with pytest.raises(QueueFull, match="5 tasks; the queue limit is 4"):
        Scheduler(many, {"w": ["s"]}, policy=Policy(queue_limit=4))
    s = Scheduler(many, {"w": ["s"]}, policy=Policy(queue_limit=6, max_in_flight=1))
    s.start()
    with pytest.raises(QueueFull, match="4 tasks are waiting; submitting 3 more would pass the queue limit of 6"):
        s.submit([PlanTask(id=f"x{i}", skill="s") for i in range(3)])
    out = s.submit([PlanTask(id="x", skill="s", deps=["t0"])])
    assert decisions(out, "waiting")


def test_cancelling_the_run_cancels_everything_in_flight() -> None:
    p = plan(*[PlanTask(id=f"t{i}", skill="s") for i in range(3)], PlanTask(id="z", skill="s", deps=["t0"]))
    s = Scheduler(p, {"w": ["s"]}, max_in_flight=2)
    s.start()
    out = s.cancel("user pressed Ctrl-C")
    assert sorted(c.task_id for c in of(Cancel, out)) == ["t0", "t1"]
    (finish,) = of(Finish, out)
    assert finish.state == "cancelled" and finish.reason == "cancelled: user pressed Ctrl-C"
    assert set(finish.cancelled) == {"t0", "t1", "t2"}
    assert finish.skipped == {"z": "dependency 't0' did not complete"}


def test_policy_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="'max_in_flight' must be >= 1"):
        Policy(max_in_flight=0)
    with pytest.raises(ValueError, match="unknown field `max_inflight`"):
        Policy.from_config({"max_inflight": 3})
    with pytest.raises(ValueError, match=r"Expected `int \| null`, got `str` - at `\$.per_worker`"):
        Policy.from_config({"per_worker": "two"})


def test_group_plans_are_validated() -> None:
    with pytest.raises(PlanError, match="group 'g', which the plan does not declare"):
        Scheduler(plan(PlanTask(id="a", skill="s", group="g")), {"w": ["s"]})
    with pytest.raises(PlanError, match="quorum must be between 1 and its 1 tasks, got 2"):
        Scheduler(
            plan(PlanTask(id="a", skill="s", group="g"), groups={"g": Group(policy="quorum", quorum=2)}),
            {"w": ["s"]},
        )


def test_derive_bound() -> None:
    assert derive_bound(token_budget=10_000, est_tokens_per_task=1000) == 10
    assert derive_bound(rate_limit_rpm=120, task_s=2.0) == 4  # 2 per second x 2 s per task
    assert derive_bound(token_budget=10_000, est_tokens_per_task=1000, rate_limit_rpm=60) == 1
    assert derive_bound() == 64


def test_token_bucket_and_budget_arithmetic() -> None:
    b = TokenBucket(rate=2.0, capacity=4.0)
    assert b.wait_s(4, 0.0) == 0
    b.take(4, 0.0)
    assert b.wait_s(1, 0.0) == pytest.approx(0.5)
    assert b.wait_s(1, 0.5) == 0
    assert b.wait_s(10, 0.5) == pytest.approx(1.5)  # larger than capacity: wait for a full bucket
    limiter = RateLimiter(rpm=60)
    limiter.pause(30.0)
    assert limiter.wait_s(0, 10.0) == pytest.approx(20.0)
    budget = Budget(100)
    budget.reserve(60)
    assert not budget.fits(50) and budget.fits(40)
    budget.settle(60, 20)
    assert budget.fits(80) and not budget.exhausted


def test_a_lost_worker_has_its_tasks_redispatched_to_a_live_one_without_using_an_attempt() -> None:
    from agentrt.actors._scheduler import Decision, Dispatch, Policy, Scheduler, SkillInfo
    from agentrt.protocols import Plan, PlanTask

    plan = Plan(goal="g", tasks=[PlanTask(id=f"t{i}", skill="s") for i in range(4)])
    s = Scheduler(
        plan,
        {"w1": ["s"], "w2": ["s"]},
        policy=Policy(max_attempts=1, max_in_flight=4),
        skills={"s": SkillInfo(read_only=True)},  # read-only: safe to run again
    )
    first = [c for c in s.start(0.0) if isinstance(c, Dispatch)]
    on_w1 = sorted(c.task_id for c in first if c.worker == "w1")
    assert len(first) == 4 and on_w1
    out = s.worker_lost("w1", "process died", 1.0)
    again = [c for c in out if isinstance(c, Dispatch)]
    assert sorted(c.task_id for c in again) == on_w1
    assert all(c.worker == "w2" and c.attempt == 2 for c in again)
    assert all(c.idempotency_key == next(f.idempotency_key for f in first if f.task_id == c.task_id) for c in again)
    assert {c.task_id for c in out if isinstance(c, Decision) and c.decision == "redispatched"} == set(on_w1)
    # max_attempts=1 counts only attempts that were not lost: a real failure now fails it.
    tid = on_w1[0]
    failed = s.task_failed(tid, "boom", attempt=2, now=2.0)
    assert any(isinstance(c, Decision) and c.decision == "failed" for c in failed)
    # New work goes to w1 again only once it is back.
    s.submit([PlanTask(id="late", skill="s")], now=2.5)
    assert s.phase("late") == "running"
    assert s.nodes["late"].worker == "w2"
    s.worker_back("w1", 3.0)
    for c in list(s.nodes.values()):
        if c.phase == "running" and c.worker == "w2" and c.task.id != "late":
            s.task_succeeded(c.task.id, "ok", attempt=c.attempt, now=3.2)
    s.submit([PlanTask(id="later", skill="s")], now=3.5)
    assert s.nodes["later"].worker == "w1"  # the least loaded, now that it is back


def test_a_stateful_task_lost_with_its_worker_is_in_doubt_not_run_again() -> None:
    """Old code re-dispatched it to w2 with the same key; w2 has no record of that key, so
    the side effect ran twice. Now it is cancelled at the old worker and held for a decision."""
    from agentrt.actors._scheduler import Cancel, Decision, Dispatch, Policy, Scheduler
    from agentrt.protocols import Plan, PlanTask

    plan = Plan(goal="g", tasks=[PlanTask(id="pay", skill="charge")])
    s = Scheduler(plan, {"w1": ["charge"], "w2": ["charge"]}, policy=Policy(max_in_flight=4))
    (first,) = [c for c in s.start(0.0) if isinstance(c, Dispatch)]
    out = s.worker_lost(first.worker, "process died", 1.0)
    assert not [c for c in out if isinstance(c, Dispatch)]
    assert [(c.task_id, c.worker) for c in out if isinstance(c, Cancel)] == [("pay", first.worker)]
    assert next(c.decision for c in out if isinstance(c, Decision)) == "in-doubt"
    assert s.pump(2.0) == [] and s.phase("pay") == "ready" and not s.finished
    (again,) = [c for c in s.unhold("pay", 3.0) if isinstance(c, Dispatch)]  # a person said continue
    assert again.idempotency_key == first.idempotency_key and again.attempt == 2


def test_resume_skips_journaled_tasks_fails_in_doubt_ones_and_prefers_the_old_worker() -> None:
    from agentrt.actors._scheduler import Decision, Dispatch, Policy, Scheduler
    from agentrt.protocols import Plan, PlanTask

    plan = Plan(
        goal="g",
        tasks=[
            PlanTask(id="a", skill="s"),
            PlanTask(id="b", skill="s", args={"x": "${a}"}),
            PlanTask(id="c", skill="s"),
            PlanTask(id="d", skill="s", deps=["c"]),
            PlanTask(id="e", skill="s"),
        ],
    )
    s = Scheduler(plan, {"w1": ["s"], "w2": ["s"]}, policy=Policy(max_in_flight=8))
    out = s.resume({"a": 41}, 0.0, failed={"c": "in doubt: it was running"}, prefer={"e": "w2"})
    sent = {c.task_id: c for c in out if isinstance(c, Dispatch)}
    assert set(sent) == {"b", "e"}  # a is done, c failed, d skipped with it
    assert sent["b"].args == {"x": 41}  # the journaled result reaches the dependent
    assert sent["e"].worker == "w2"
    decisions = {(c.task_id, c.decision) for c in out if isinstance(c, Decision)}
    assert ("a", "completed") in decisions and ("c", "failed") in decisions and ("d", "skipped") in decisions


def test_held_tasks_wait_for_a_decision() -> None:
    from agentrt.actors._scheduler import Dispatch, Policy, Scheduler
    from agentrt.protocols import Plan, PlanTask

    plan = Plan(goal="g", tasks=[PlanTask(id="x", skill="s"), PlanTask(id="y", skill="s"), PlanTask(id="z", skill="s", deps=["y"])])
    s = Scheduler(plan, {"w": ["s"]}, policy=Policy(max_in_flight=4))
    out = s.resume({}, 0.0, held=["x", "y"])
    assert not [c for c in out if isinstance(c, Dispatch)]
    assert [c.task_id for c in s.unhold("x", 1.0) if isinstance(c, Dispatch)] == ["x"]
    s.abandon("y", "in doubt; not run again", 2.0)
    assert s.phase("y") == "failed" and s.phase("z") == "skipped"
