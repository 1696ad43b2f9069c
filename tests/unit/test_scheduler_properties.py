"""Properties of the core under random plans, policies, latencies, failures and 429s,
driven through the discrete-event simulator (virtual time)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentrt.actors._scheduler import Policy, Scheduler, SkillInfo
from agentrt.actors._simulate import Attempt, Outcome, simulate
from agentrt.protocols import Group, Plan, PlanTask, dependencies

SKILLS = ["read", "write", "think"]
WORKERS = {"w1": ["read", "write", "think"], "w2": ["read", "think"], "w3": ["write"]}
INFO = {"read": SkillInfo(read_only=True), "think": SkillInfo(read_only=True), "write": SkillInfo()}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Plan, Policy, dict]:
    n = draw(st.integers(1, 30))
    tasks = []
    groups: dict[str, Group] = {}
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        tasks.append(
            PlanTask(
                id=f"t{i}",
                skill=draw(st.sampled_from(SKILLS)),
                deps=[f"t{d}" for d in deps],
                resource=draw(st.sampled_from([None, None, "db", "fs"])),
                est_tokens=draw(st.integers(0, 500)),
                # uneven estimates bring the last-wave balancing into play
                est_s=draw(st.sampled_from([None, 0.5, 1.0, 3.0])),
                timeout_s=draw(st.sampled_from([None, None, 3.0])),
                max_attempts=draw(st.sampled_from([None, 1, 2, 3])),
            )
        )
    # One optional fan-out group over some independent tasks, with a task after it.
    roots = [t for t in tasks if not t.deps]
    if len(roots) >= 2 and draw(st.booleans()):
        members = roots[: draw(st.integers(2, len(roots)))]
        policy = draw(st.sampled_from(["all-settled", "fail-fast", "quorum"]))
        quorum = draw(st.integers(1, len(members))) if policy == "quorum" else None
        groups["g"] = Group(policy=policy, quorum=quorum)  # type: ignore[arg-type]
        ids = {m.id for m in members}
        tasks = [PlanTask(**{**_fields(t), "group": "g"}) if t.id in ids else t for t in tasks]
        tasks.append(PlanTask(id="after", skill="think", deps=["g"]))
    policy = Policy(
        max_in_flight=draw(st.integers(1, 6)),
        per_worker=draw(st.sampled_from([None, 1, 2])),
        per_skill={"think": draw(st.integers(1, 3))} if draw(st.booleans()) else {},
        max_attempts=draw(st.integers(1, 3)),
        backoff_s=0.5,
        rpm=draw(st.sampled_from([None, 30.0, 600.0])),
        tpm=draw(st.sampled_from([None, 6000.0, 60000.0])),
        burst_s=draw(st.sampled_from([1.0, 10.0])),
        token_budget=draw(st.sampled_from([None, 2000, 20000])),
        seed=draw(st.integers(0, 3)),
    )
    behaviour = {
        t.id: [
            draw(
                st.tuples(
                    st.floats(0.1, 5.0),
                    st.sampled_from(["ok", "ok", "ok", "error", "429"]),
                    st.sampled_from([1.0, 10.0]),
                )
            )
            for _ in range(5)
        ]
        for t in tasks
    }
    return Plan(goal="g", tasks=tasks, groups=groups), policy, behaviour


def _fields(t: PlanTask) -> dict:
    return {f: getattr(t, f) for f in t.__struct_fields__}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals [start, end) open at once."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


def windows_ok(points: list[tuple[float, float]], rate_per_s: float, capacity: float) -> bool:
    """Over every window [t, t + w], what was drawn <= capacity + rate * w (+ one draw past
    the capacity, which a full bucket lets through)."""
    points = sorted(points)
    for i, (t0, _) in enumerate(points):
        total = 0.0
        for t1, amount in points[i:]:
            total += amount
            allowed = capacity + rate_per_s * (t1 - t0) + max(0.0, amount - capacity)
            if total > allowed + 1e-6:
                return False
    return True


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_core_invariants_in_simulation(scenario: tuple[Plan, Policy, dict]) -> None:
    plan, policy, behaviour = scenario

    def behave(d):  # the n-th attempt of a task does what the scenario drew for it
        duration, kind, retry_after = behaviour[d.task_id][(d.attempt - 1) % 5]
        return Outcome(duration, kind, retry_after_s=retry_after)

    s = Scheduler(plan, WORKERS, policy=policy, skills=INFO)
    result = simulate(s, behave)
    assert not result.unfinished, "the run never finished"
    attempts: list[Attempt] = result.attempts
    assert all(a.end is not None for a in attempts)
    spans = [(a.start, a.end) for a in attempts]

    # Never more in flight than any bound.
    assert max_overlap(spans) <= policy.max_in_flight
    for w in WORKERS:
        on_w = [(a.start, a.end) for a in attempts if a.worker == w]
        assert max_overlap(on_w) <= (policy.per_worker or policy.max_in_flight)
    for skill, bound in policy.per_skill.items():
        assert max_overlap([(a.start, a.end) for a in attempts if a.skill == skill]) <= bound
    assert all(skill in WORKERS[a.worker] for a in attempts for skill in [a.skill])

    # Never dispatched before its dependencies (tasks, or the group) completed.
    done_at: dict[str, float] = {a.task_id: a.end for a in attempts if a.ended == "completed"}  # type: ignore[misc]
    group_done = {d.task_id for d in result.decisions if d.decision == "group-completed"}
    for a in attempts:
        task = next(t for t in plan.tasks if t.id == a.task_id)
        for dep in dependencies(task):
            if dep in plan.groups:
                assert dep in group_done
            else:
                assert dep in done_at and done_at[dep] <= a.start

    # Every task ends in exactly one terminal state.
    f = result.finish
    ends = [set(f.results) - set(plan.groups), set(f.failed) - set(plan.groups), set(f.skipped), set(f.cancelled)]
    assert sum(len(e) for e in ends) == len(plan.tasks)
    assert set().union(*ends) == {t.id for t in plan.tasks}
    assert all(s.phase(t.id) in ("completed", "failed", "skipped", "cancelled") for t in plan.tasks)

    # Stateful tasks on one resource never overlap, and start in plan order.
    for resource in ("db", "fs"):
        on_r = [a for a in attempts if s.stateful(s.nodes[a.task_id].task) and s.nodes[a.task_id].task.resource == resource]
        assert max_overlap([(a.start, a.end) for a in on_r]) <= 1
        firsts: dict[str, float] = {}
        for a in on_r:
            firsts.setdefault(a.task_id, a.start)
        order = [s.nodes[t].order for t in sorted(firsts, key=lambda t: firsts[t])]
        assert order == sorted(order)

    # Request and token rates within the buckets over every window.
    if policy.rpm:
        rate = policy.rpm / 60
        assert windows_ok([(a.start, 1.0) for a in attempts], rate, max(1.0, rate * policy.burst_s))
    if policy.tpm:
        rate = policy.tpm / 60
        assert windows_ok([(a.start, a.tokens) for a in attempts], rate, max(1.0, rate * policy.burst_s))

    # Budgets never exceeded by dispatched work.
    if policy.token_budget is not None:
        assert sum(a.tokens for a in attempts) <= policy.token_budget
