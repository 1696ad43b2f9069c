"""Plans: rejected before anything runs when they cannot run, with the tasks named."""

from __future__ import annotations

import pytest

from agentrt.protocols import (
    Group,
    InvalidId,
    Plan,
    PlanError,
    PlanTask,
    check_id,
    dependencies,
    resolve,
    validate_plan,
)


def plan(*tasks: PlanTask, final: str | None = None) -> Plan:
    return Plan(goal="g", tasks=list(tasks), final=final)


def test_dangling_dependency_suggests_a_name() -> None:
    p = plan(PlanTask(id="outline", skill="s"), PlanTask(id="draft", skill="s", deps=["outlne"]))
    with pytest.raises(PlanError, match=r"'draft' depends on 'outlne'.*did you mean 'outline'"):
        validate_plan(p)


def test_dangling_reference() -> None:
    p = plan(PlanTask(id="a", skill="s", args={"x": "${b}"}))
    with pytest.raises(PlanError, match=r"'a' refers to '\$\{b\}'"):
        validate_plan(p)


def test_cycle_is_named() -> None:
    p = plan(
        PlanTask(id="a", skill="s", deps=["c"]),
        PlanTask(id="b", skill="s", deps=["a"]),
        PlanTask(id="c", skill="s", args={"in": "${b}"}),
    )
    with pytest.raises(PlanError, match="cycle") as info:
        validate_plan(p)
    assert all(t in str(info.value) for t in ("a", "b", "c"))


def test_duplicate_ids_and_self_dependency_and_bad_final() -> None:
    with pytest.raises(PlanError, match="appears twice"):
        validate_plan(plan(PlanTask(id="a", skill="s"), PlanTask(id="a", skill="s")))
    with pytest.raises(PlanError, match="depends on itself"):
        validate_plan(plan(PlanTask(id="a", skill="s", deps=["a"])))
    with pytest.raises(PlanError, match="final task 'z'"):
        validate_plan(plan(PlanTask(id="a", skill="s"), final="z"))
    with pytest.raises(PlanError, match="no tasks"):
        validate_plan(plan())


def test_references_imply_dependencies() -> None:
    t = PlanTask(id="c", skill="s", args={"xs": ["${a}", {"y": "see ${b}"}]}, deps=["d"])
    assert dependencies(t) == {"a", "b", "d"}


def test_resolve_whole_and_embedded() -> None:
    results = {"a": {"k": 1}, "b": "text"}
    out = resolve({"whole": "${a}", "embedded": "from ${b} and ${a}", "n": 3}, results)
    assert out == {"whole": {"k": 1}, "embedded": 'from text and {"k":1}', "n": 3}


@pytest.mark.parametrize(
    "bad",
    ["../../../../tmp/x", "/tmp/x/absolute", "..", ".", "", "a/b", "a b", "<img src=x onerror=\"document.title='XSS'\">",
     "x\n", "\x1b[31mred", "t" * 129],
)  # fmt: skip
def test_task_ids_that_cannot_be_file_names_are_refused(bad: str) -> None:
    """A task id becomes a file name (an in-doubt ticket's): the plan is refused, naming the
    field, the value (escaped) and the rule."""
    with pytest.raises(PlanError) as info:
        validate_plan(plan(PlanTask(id="ok", skill="s"), PlanTask(id=bad, skill="s")))
    message = str(info.value)
    assert message.startswith(f"tasks[1].id {repr(bad)[:40]}") and "must match" in message
    assert "\x1b" not in message and "\n" not in message


def test_group_names_follow_the_id_rule_and_colons_are_ids() -> None:
    with pytest.raises(PlanError, match=r"group name '\.\./g' is not a valid id"):
        validate_plan(Plan(goal="g", tasks=[PlanTask(id="a", skill="s", group="../g")], groups={"../g": Group()}))
    ok = plan(PlanTask(id="critic:a.1", skill="s"), PlanTask(id="b", skill="s", args={"x": "${critic:a.1}"}))
    validate_plan(ok)
    assert dependencies(ok.tasks[1]) == {"critic:a.1"}


def test_check_id() -> None:
    assert check_id("run-20260101_1:a.b", "run id") == "run-20260101_1:a.b"
    with pytest.raises(InvalidId, match=r"^ticketId '\.\./x' is not a valid id: .*must match") as info:
        check_id("../x", "ticketId")
    assert isinstance(info.value, ValueError)
