"""The producer: turns a goal into a plan (a DAG of tasks with explicit dependencies)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from agentrt.protocols import Plan, PlanTask, validate_plan
from agentrt.runtime import Actor, Request, SpecError, skill
from agentrt.schemas import load


def _task_id(source: str, i: int) -> str:
    """The source's name when it can be a task id (`${id}` characters), else `s<i>`."""
    return source if re.fullmatch(r"[A-Za-z0-9_.-]+", source) and source != "synthesis" else f"s{i}"


class Producer(Actor):
    """Plans a goal. Offline it uses rules from its config:

    - ``strategy = "fan-out"``: one `map_skill` task per entry of `sources` (independent,
      so they run in parallel), then one `reduce_skill` task over all their results.
    - ``strategy = "static"``: the `tasks` list as given; "{goal}" in any string argument
      is replaced by the goal.
    """

    description = "Turns a goal into a plan: a DAG of tasks."

    def on_start(self) -> None:
        strategy = self.config.get("strategy", "fan-out")
        if strategy not in ("fan-out", "static"):
            raise SpecError(
                f"producer '{self.ctx.name}': config.strategy '{strategy}' is unknown; "
                "use 'fan-out' or 'static'"
            )
        if strategy == "fan-out" and not self.config.get("sources"):
            raise SpecError(f"producer '{self.ctx.name}': fan-out needs config.sources (a list)")

    @skill(input=load("skills/plan.input"), output=msgspec.json.schema(Plan), read_only=True)
    def plan(self, req: Request) -> Plan:
        """Plan a goal as a DAG of tasks."""
        goal = req.data["goal"]
        if self.config.get("strategy", "fan-out") == "static":
            plan = self._static(goal)
        else:
            plan = self._fan_out(goal)
        validate_plan(plan)
        return plan

    def _fan_out(self, goal: str) -> Plan:
        sources: list[str] = list(self.config["sources"])
        map_skill = self.config.get("map_skill", "lookup")
        reduce_skill = self.config.get("reduce_skill", "synthesize")
        tasks = [
            PlanTask(id=_task_id(src, i), skill=map_skill, args={"source": src, "query": goal})
            for i, src in enumerate(sources, 1)
        ]
        tasks.append(
            PlanTask(
                id="synthesis",
                skill=reduce_skill,
                args={"goal": goal, "findings": [f"${{{t.id}}}" for t in tasks]},
            )
        )
        return Plan(goal=goal, tasks=tasks, final="synthesis")

    def _static(self, goal: str) -> Plan:
        def fill(value: Any) -> Any:
            if isinstance(value, str):
                return value.replace("{goal}", goal)
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value

        raw = {
            "goal": goal,
            "tasks": fill(self.config.get("tasks", [])),
            "final": self.config.get("final"),
        }
        return msgspec.convert(raw, Plan)
