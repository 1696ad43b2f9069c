"""A plan: a DAG of tasks with explicit dependencies and `${task_id}` references (LLMCompiler style)."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

import msgspec

from ._errors import PlanError
from ._ids import id_problem
from ._model import Wire

_REF = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")  # a reference to a task id (the id rule)


class PlanTask(Wire):
    """One node of the DAG. Arguments may hold `${id}` references to earlier tasks' results
    (or to a group's: the dict of its completed members' results)."""

    id: str
    skill: str
    args: dict[str, Any] = {}
    deps: list[str] = []  # task ids or group names
    resource: str | None = None  # stateful tasks on the same resource never overlap
    group: str | None = None  # the fan-out group this task belongs to
    timeout_s: float | None = None  # overrides the skill's and the run's default
    max_attempts: int | None = None  # overrides the run's retry policy
    fallback: str | None = None  # a skill to try once after the last attempt failed
    est_tokens: int | None = None  # for rate limits and budgets; the run's default otherwise
    est_s: float | None = None  # expected duration: tasks on the longest path go first


class Group(Wire):
    """How a fan-out group settles. all-settled: when every member has ended (failures
    reported, partial results kept); fail-fast: the first failure cancels the rest and
    fails the group; quorum: done once `quorum` members completed (the rest cancelled),
    failed once that is out of reach."""

    policy: Literal["all-settled", "fail-fast", "quorum"] = "all-settled"
    quorum: int | None = None


class Plan(Wire):
    """The producer's output: a goal, its tasks, and which task's result is the answer."""

    goal: str
    tasks: list[PlanTask]
    groups: dict[str, Group] = {}
    final: str | None = None  # a task or group; defaults to the last task

    def final_task(self) -> str:
        return self.final if self.final is not None else self.tasks[-1].id


def references(value: Any) -> set[str]:
    """Task ids referenced as `${id}` anywhere inside `value`."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.update(_REF.findall(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def dependencies(task: PlanTask) -> set[str]:
    """Declared dependencies plus those implied by references."""
    return set(task.deps) | references(task.args)


def resolve(value: Any, results: dict[str, Any]) -> Any:
    """Replace references with results: a string that is exactly `${id}` becomes the result
    itself; a reference inside longer text becomes the result's text form."""
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole:
            return results[whole.group(1)]
        return _REF.sub(lambda m: _text(results[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, results) for v in value]
    return value


def _text(result: Any) -> str:
    if isinstance(result, str):
        return result
    return msgspec.json.encode(result).decode()


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validate_plan(plan: Plan) -> None:
    """Reject a plan that cannot run, naming the tasks: empty, ids that break the id rule
    (they become file names, e.g. an in-doubt ticket's), duplicate ids, dangling
    dependencies or references, a cycle, or a `final` that is not a task."""
    if not plan.tasks:
        raise PlanError("the plan has no tasks")
    ids: list[str] = []
    seen: set[str] = set()
    for i, task in enumerate(plan.tasks):
        problem = id_problem(task.id, f"tasks[{i}].id")
        if problem is not None:
            raise PlanError(problem)
        if task.id in seen:
            raise PlanError(f"task id '{task.id}' appears twice in the plan; ids must be unique")
        seen.add(task.id)
        ids.append(task.id)
        for name, value, low in (("max_attempts", task.max_attempts, 1), ("est_tokens", task.est_tokens, 0)):
            if value is not None and value < low:
                raise PlanError(f"task '{task.id}': {name} must be >= {low}, got {value}")
        for name, value in (("timeout_s", task.timeout_s), ("est_s", task.est_s)):
            if value is not None and not value > 0:
                raise PlanError(f"task '{task.id}': {name} must be > 0, got {value}")
    members: dict[str, int] = {}
    for task in plan.tasks:
        if task.group is not None:
            if task.group not in plan.groups:
                raise PlanError(
                    f"task '{task.id}' is in group '{task.group}', which the plan does not declare"
                    + _did_you_mean(task.group, list(plan.groups))
                )
            members[task.group] = members.get(task.group, 0) + 1
    for name, group in plan.groups.items():
        problem = id_problem(name, "group name")
        if problem is not None:
            raise PlanError(problem)
        if name in seen:
            raise PlanError(f"group '{name}' has the same name as a task; names must be unique")
        n = members.get(name, 0)
        if n == 0:
            raise PlanError(f"group '{name}' has no tasks")
        if group.policy == "quorum" and (group.quorum is None or not 1 <= group.quorum <= n):
            raise PlanError(
                f"group '{name}': quorum must be between 1 and its {n} tasks, got {group.quorum}"
            )
        if group.policy != "quorum" and group.quorum is not None:
            raise PlanError(f"group '{name}': quorum is only for policy 'quorum'")
    ids = ids + list(plan.groups)
    seen |= set(plan.groups)
    for task in plan.tasks:
        for dep in sorted(set(task.deps)):
            if dep not in seen:
                raise PlanError(
                    f"task '{task.id}' depends on '{dep}', which is not in the plan"
                    + _did_you_mean(dep, ids)
                )
        for ref in sorted(references(task.args)):
            if ref not in seen:
                raise PlanError(
                    f"task '{task.id}' refers to '${{{ref}}}', which is not in the plan"
                    + _did_you_mean(ref, ids)
                )
        if task.id in dependencies(task):
            raise PlanError(f"task '{task.id}' depends on itself")
        if task.group is not None and task.group in dependencies(task):
            raise PlanError(f"task '{task.id}' depends on its own group '{task.group}'")
    if plan.final is not None and plan.final not in seen:
        raise PlanError(
            f"final task '{plan.final}' is not a task or group of the plan"
            + _did_you_mean(plan.final, ids)
        )
    cycle = find_cycle(plan)
    if cycle:
        raise PlanError("the plan has a cycle: " + " -> ".join(cycle))


def dependency_graph(plan: Plan) -> dict[str, list[str]]:
    """What each task and group waits for: a task its dependencies, a group its members."""
    deps = {t.id: sorted(dependencies(t)) for t in plan.tasks}
    for name in plan.groups:
        deps[name] = [t.id for t in plan.tasks if t.group == name]
    return deps


def find_cycle(plan: Plan) -> list[str] | None:
    """A dependency cycle as a list of task/group ids (first repeated at the end), or None."""
    deps = dependency_graph(plan)
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    for root in deps:
        if color[root] != white:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                color[node] = grey
                path.append(node)
            children = deps.get(node, [])
            if i < len(children):
                stack.append((node, i + 1))
                child = children[i]
                if child not in color:
                    continue
                if color[child] == grey:
                    return [*path[path.index(child) :], child]
                if color[child] == white:
                    stack.append((child, 0))
            else:
                color[node] = black
                path.pop()
    return None
