"""The coordinator: owns a run. A thin shell that turns the core's commands into asks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from agentrt.protocols import Critique, Plan, PlanError, Verdict
from agentrt.runtime import Actor, Request, TaskResult, skill
from agentrt.schemas import load

from ._scheduler import (
    Command,
    Conclude,
    Decision,
    Dispatch,
    Finish,
    JudgeLoop,
    Redo,
    Scheduler,
)


@dataclass
class _Job:
    req: Request
    goal: str
    started: float
    plan: Plan | None = None
    scheduler: Scheduler | None = None
    loop: JudgeLoop | None = None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    critiques: list[dict[str, Any]] = field(default_factory=list)
    critiques_pending: int = 0
    finish: Finish | None = None
    final_args: dict[str, Any] = field(default_factory=dict)
    final_worker: str = ""
    answer: str = ""
    verdict: dict[str, Any] | None = None
    outcome: Conclude | None = None
    want_judge: bool = False


def _answer_of(result: Any) -> str:
    if isinstance(result, dict):
        return str(
            result.get("answer") or result.get("text") or msgspec.json.encode(result).decode()
        )
    return str(result)


class Coordinator(Actor):
    """Schedules a plan as a DAG on the run's workers, has each result critiqued as it arrives,
    and loops the final result through the judge (capped at `max_iterations`).

    Config: `producer`, `critic`, `judge` (actor names; default: the first actor offering
    plan / critique / judge, and no critic or judge if none does), `max_in_flight` (16),
    `max_iterations` (3).
    """

    description = "Owns a run: plans, schedules the DAG, critiques, judges."

    def on_start(self) -> None:
        self.jobs: dict[str, _Job] = {}

    def _role(self, key: str, skill_id: str) -> str | None:
        if key in self.config:
            return str(self.config[key])
        found = [a for a in self.ctx.actors_with_skill(skill_id) if a != self.ctx.name]
        return found[0] if found else None

    @skill(input=load("skills/run.input"), output=load("skills/run.output"))
    def run(self, req: Request) -> Any:
        """Run one job: plan the goal, schedule the plan, critique and judge the result."""
        job = _Job(req=req, goal=req.data["goal"], started=time.time())
        self.jobs[req.task_id] = job
        producer = self._role("producer", "plan")
        if producer is None:
            req.fail("no actor offers skill 'plan'; add a producer to the spec")
            return req.defer()
        self.ctx.ask(producer, "plan", req.data, then=lambda r: self._on_plan(job, r))
        return req.defer()

    # -- planning ----------------------------------------------------------------------

    def _on_plan(self, job: _Job, result: TaskResult) -> None:
        if not result.ok:
            self._end(job, error=f"planning failed: {result.error}")
            return
        try:
            plan = msgspec.convert(result.data, Plan)
            workers = {
                name: [s.id for s in self.ctx.card(name).skills]
                for name in {a for t in plan.tasks for a in self.ctx.actors_with_skill(t.skill)}
            }
            job.plan = plan
            job.scheduler = Scheduler(
                plan, workers, max_in_flight=int(self.config.get("max_in_flight", 16))
            )
        except (msgspec.ValidationError, PlanError, ValueError) as exc:
            self._end(job, error=f"the plan cannot run: {exc}")
            return
        job.loop = JudgeLoop(int(self.config.get("max_iterations", 3)))
        self.ctx.event("plan.accepted", tasks=len(plan.tasks), final=plan.final_task())
        self._apply(job, job.scheduler.start())

    # -- scheduling --------------------------------------------------------------------

    def _apply(self, job: _Job, commands: list[Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, Dispatch):
                self._dispatch(
                    job, cmd.task_id, cmd.skill, cmd.worker, cmd.args, attempt=cmd.attempt
                )
            elif isinstance(cmd, Decision):
                self.ctx.event(
                    "schedule.decision",
                    plan_task=cmd.task_id,
                    decision=cmd.decision,
                    reason=cmd.reason,
                )
                if cmd.decision == "skipped":
                    job.tasks[cmd.task_id] = {
                        "id": cmd.task_id,
                        "skill": self._skill_of(job, cmd.task_id),
                        "state": "skipped",
                        "error": cmd.reason,
                    }
            elif isinstance(cmd, Finish):
                job.finish = cmd
                self._after_plan(job)

    def _skill_of(self, job: _Job, task_id: str) -> str:
        assert job.plan is not None
        return next(t.skill for t in job.plan.tasks if t.id == task_id)

    def _dispatch(
        self,
        job: _Job,
        task_id: str,
        skill_id: str,
        worker: str,
        args: dict[str, Any],
        attempt: int,
    ) -> None:
        assert job.plan is not None
        if task_id == job.plan.final_task():
            job.final_args, job.final_worker = args, worker
        self.ctx.event(
            "schedule.dispatch", plan_task=task_id, skill=skill_id, worker=worker, attempt=attempt
        )
        self.ctx.ask(
            worker,
            skill_id,
            args,
            task_id=f"{job.req.task_id}/{task_id}",
            attempt=attempt,
            idempotency_key=f"{job.req.task_id}/{task_id}",
            then=lambda r: self._on_task(job, task_id, worker, r),
        )

    def _on_task(self, job: _Job, task_id: str, worker: str, result: TaskResult) -> None:
        meta = result.metadata
        usage = meta.get("usage", {})
        record = {
            "id": task_id,
            "skill": meta.get("skill") or self._skill_of(job, task_id),
            "worker": worker,
            "state": result.state,
            "attempt": job.tasks.get(task_id, {}).get("attempt", 0) + 1,
            "startedAt": meta.get("startedAt", 0.0),
            "finishedAt": meta.get("finishedAt", 0.0),
            "durationS": meta.get("durationS", 0.0),
            "inputTokens": usage.get("inputTokens", 0),
            "outputTokens": usage.get("outputTokens", 0),
        }
        if not result.ok:
            record["error"] = result.error
        job.tasks[task_id] = record
        output: Any = result.data or result.text
        if result.ok:
            self._critique(job, task_id, record["skill"], worker, output)
        if job.finish is not None:  # a judge-requested redo of the final task
            self._on_redo(job, result)
            return
        assert job.scheduler is not None
        if result.ok:
            self._apply(job, job.scheduler.task_succeeded(task_id, output))
        else:
            self._apply(job, job.scheduler.task_failed(task_id, result.error))

    # -- critic and judge ----------------------------------------------------------------

    def _critique(self, job: _Job, task_id: str, skill_id: str, worker: str, output: Any) -> None:
        critic = self._role("critic", "critique")
        if critic is None:
            return
        declared = self.ctx.card(worker).skill(skill_id)
        job.critiques_pending += 1
        self.ctx.ask(
            critic,
            "critique",
            {
                "taskId": task_id,
                "skill": skill_id,
                "output": output,
                "outputSchema": declared.output_schema if declared else None,
            },
            then=lambda r: self._on_critique(job, r),
        )

    def _on_critique(self, job: _Job, result: TaskResult) -> None:
        job.critiques_pending -= 1
        if result.ok:
            job.critiques.append(msgspec.to_builtins(msgspec.convert(result.data, Critique)))
        self._maybe_judge(job)
        self._maybe_done(job)

    def _after_plan(self, job: _Job) -> None:
        finish = job.finish
        assert finish is not None and job.plan is not None
        if finish.state != "completed":
            self._end(
                job, error="; ".join(f"{k}: {v}" for k, v in finish.failed.items()) or "plan failed"
            )
            return
        job.answer = _answer_of(finish.results[job.plan.final_task()])
        job.want_judge = True
        self._maybe_judge(job)

    def _maybe_judge(self, job: _Job) -> None:
        """Judge the current answer once every critique asked so far has come back."""
        if job.want_judge and job.critiques_pending == 0:
            job.want_judge = False
            self._judge(job)

    def _judge(self, job: _Job) -> None:
        judge = self._role("judge", "judge")
        assert job.loop is not None
        if judge is None:
            job.outcome = Conclude("completed", "no judge in the run")
            self._maybe_done(job)
            return
        self.ctx.ask(
            judge,
            "judge",
            {
                "goal": job.goal,
                "answer": job.answer,
                "critiques": list(job.critiques),
                "iteration": job.loop.iteration,
                "maxIterations": job.loop.max_iterations,
            },
            then=lambda r: self._on_verdict(job, r),
        )

    def _on_verdict(self, job: _Job, result: TaskResult) -> None:
        assert job.loop is not None and job.plan is not None
        if not result.ok:
            self._end(job, error=f"judging failed: {result.error}")
            return
        verdict = msgspec.convert(result.data, Verdict)
        job.verdict = msgspec.to_builtins(verdict)
        step = job.loop.on_verdict(verdict)
        self.ctx.event(
            "loop.verdict",
            decision=verdict.decision,
            iteration=verdict.iteration,
            next=type(step).__name__,
        )
        if isinstance(step, Redo):
            final = job.plan.final_task()
            args = dict(job.final_args, feedback=step.feedback)
            job.critiques = [c for c in job.critiques if c.get("taskId") != final]
            self._dispatch(
                job,
                final,
                self._skill_of(job, final),
                job.final_worker,
                args,
                attempt=step.iteration,
            )
        else:
            job.outcome = step
            self._maybe_done(job)

    def _on_redo(self, job: _Job, result: TaskResult) -> None:
        if not result.ok:
            self._end(job, error=f"retry of the final task failed: {result.error}")
            return
        job.answer = _answer_of(result.data or result.text)
        job.want_judge = True
        self._maybe_judge(job)

    def _maybe_done(self, job: _Job) -> None:
        if job.outcome is None or job.critiques_pending > 0:
            return
        self._end(job)

    def _end(self, job: _Job, error: str | None = None) -> None:
        if self.jobs.pop(job.req.task_id, None) is None:
            return
        if error is not None:
            job.req.fail(error)
            return
        assert job.outcome is not None and job.plan is not None and job.loop is not None
        job.req.complete(
            {
                "answer": job.answer,
                "state": job.outcome.state,
                "iterations": job.loop.iteration,
                "verdict": job.verdict,
                "critiques": job.critiques,
                "plan": msgspec.to_builtins(job.plan),
                "tasks": [job.tasks[t.id] for t in job.plan.tasks if t.id in job.tasks],
            }
        )
