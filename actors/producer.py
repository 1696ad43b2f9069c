"""The producer: turns a goal into a plan (a DAG of tasks with explicit dependencies)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from agentrt.protocols import Plan, PlanError, PlanRejected, PlanTask, validate_plan
from agentrt.runtime import Actor, Request, SpecError, skill
from agentrt.schemas import load

from . import _planner

# Skills of the runtime's own roles: never tools for a plan.
_ROLE_SKILLS = frozenset({"plan", "run", "critique", "judge", "escalate", "acquire", "pause", "settle"})


def _task_id(source: str, i: int) -> str:
    """The source's name when it can be a task id (`${id}` characters), else `s<i>`."""
    return source if re.fullmatch(r"[A-Za-z0-9_.-]+", source) and source != "synthesis" else f"s{i}"


class Producer(Actor):
    """Plans a goal, by its config's `strategy`:

    - ``"fan-out"``: one `map_skill` task per entry of `sources` (independent, so they run
      in parallel), then one `reduce_skill` task over all their results.
    - ``"static"``: the `tasks` list as given; "{goal}" in any string argument is replaced
      by the goal.
    - ``"llm"``: the model writes the plan in LLMCompiler's format (numbered tool calls with
      `$N` references, then `join()`) over the skills the run's other actors offer; a plan
      that does not parse (unknown tool, bad reference, cycle) is sent back once with the
      error. ``"auto"``: `llm` on a real model, `fan-out` on the offline one.
    """

    description = "Turns a goal into a plan: a DAG of tasks."

    def on_start(self) -> None:
        strategy = self.config.get("strategy", "fan-out")
        if strategy not in ("fan-out", "static", "llm", "auto"):
            raise SpecError(
                f"producer '{self.ctx.name}': config.strategy '{strategy}' is unknown; "
                "use 'fan-out', 'static', 'llm' or 'auto'"
            )
        if strategy == "auto":
            strategy = "fan-out" if self.ctx.model.kind == "offline" else "llm"
        self.strategy = strategy
        if strategy == "fan-out" and not self.config.get("sources"):
            raise SpecError(f"producer '{self.ctx.name}': fan-out needs config.sources (a list)")

    @skill(input=load("skills/plan.input"), output=msgspec.json.schema(Plan), read_only=True)
    def plan(self, req: Request) -> Plan:
        """Plan a goal as a DAG of tasks."""
        goal = req.data["goal"]
        if self.strategy == "static":
            plan = self._static(goal)
        elif self.strategy == "llm":
            plan = self._llm(goal)
        else:
            plan = self._fan_out(goal)
        validate_plan(plan)
        return plan

    def _tools(self) -> dict[str, _planner.Tool]:
        tools: dict[str, _planner.Tool] = {}
        for name, card in sorted(self.ctx.cards().items()):
            if name == self.ctx.name:
                continue
            for s in card.skills:
                if s.id not in _ROLE_SKILLS:
                    tools.setdefault(s.id, (s, card.contract(s.id)))
        return tools

    def _llm(self, goal: str) -> Plan:
        tools = self._tools()
        if not tools:
            raise PlanError("no actor in the run offers a skill to plan with")
        messages: list[dict[str, Any]] = [{"role": "user", "content": _planner.prompt(goal, tools)}]
        max_tokens = int(self.config.get("max_tokens", 1024))
        for attempt in (1, 2):
            text = self.ctx.model.complete(messages, system=_planner.SYSTEM, max_tokens=max_tokens).text
            try:
                plan = _planner.parse(text, goal, tools)
            except PlanError as exc:
                self.ctx.emit(PlanRejected(attempt=attempt, error=str(exc)))
                if attempt == 2:
                    raise PlanError(f"the model's plan was malformed twice; last error: {exc}") from None
                messages += [
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": f"That plan cannot run: {exc}. Write the whole plan again, "
                        "in the same format.",
                    },
                ]
                continue
            return plan
        raise AssertionError("unreachable")

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
