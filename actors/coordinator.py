"""The coordinator: owns a run. A thin shell that turns the core's commands into asks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from agentrt.protocols import (
    AgentRuntimeError,
    CancelTask,
    CriticGate,
    Critique,
    Envelope,
    Escalation,
    EscalationAnswer,
    EscalationDecision,
    EscalationRecord,
    JournalInDoubt,
    JournalResume,
    LoopAnswer,
    LoopEnd,
    LoopEscalated,
    LoopSummary,
    LoopVerdict,
    NodeDown,
    NodeUp,
    Plan,
    PlanAccepted,
    RunReport,
    ScheduleCancel,
    ScheduleDecision,
    ScheduleDispatch,
    ScheduleFigures,
    TaskRecord,
    Verdict,
    dependency_graph,
)
from agentrt.runtime import Actor, Draining, Request, TaskResult, skill
from agentrt.schemas import load

from ._loops import Conclude, Escalate, Governor, Loop, LoopLimits, Redo
from ._scheduler import (
    DEFAULT_TOKEN_BUDGET,
    Cancel,
    Command,
    Decision,
    Dispatch,
    Finish,
    Policy,
    Scheduler,
    SetTimer,
    SkillInfo,
)

# Config keys that are the coordinator's own; every other key is a scheduling Policy field.
_OWN_KEYS = frozenset({"producer", "critic", "judge", "human", "loops", "gate", "journal"})
# Decisions that end a task without a reply of its own (or after its last one).
_TERMINAL = frozenset({"skipped", "cancelled", "failed"})


@dataclass
class _Gate:
    """A task's result held back until the critic passes it (or its critic loop ends)."""

    worker: str
    output: Any = None
    attempt: int = 1
    tokens: int = 0
    cost: float = 0.0
    loop: Loop | None = None


@dataclass
class _Job:
    req: Request
    goal: str
    started: float
    key: str = ""  # the job's journal key: its idempotency key, stable across restarts
    draining: bool = False
    plan: Plan | None = None
    scheduler: Scheduler | None = None
    governor: Governor | None = None
    loop: Loop | None = None
    escalations: list[dict[str, Any]] = field(default_factory=list)
    gates: dict[str, _Gate] = field(default_factory=dict)
    args: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    critiques: list[dict[str, Any]] = field(default_factory=list)
    critiques_pending: int = 0
    finish: Finish | None = None
    final_worker: str = ""
    answer: str = ""
    verdict: dict[str, Any] | None = None
    outcome: Conclude | None = None
    want_judge: bool = False
    dispatched_at: list[float] = field(default_factory=list)
    core_cpu_s: float = 0.0
    core_events: int = 0


def _answer_of(result: Any) -> str:
    if isinstance(result, dict):
        return str(
            result.get("answer") or result.get("text") or msgspec.json.encode(result).decode()
        )
    return str(result)


class Coordinator(Actor):
    """Schedules a plan as a DAG on the run's workers, has each result critiqued as it arrives,
    and loops the final result through the judge, governed by the loop governor (caps per
    loop, task and run; ping-pong and stall detection; escalation to a human).

    Config: `producer`, `critic`, `judge`, `human` (actor names; default: the first actor
    offering plan / critique / judge / escalate, and none if none does), `gate` (true: a
    result reaches its dependents only once the critic passed it), `loops` (the
    `LoopLimits` table: `max_iterations`, `run_max_iterations`, `escalate_on`, ...), and any
    field of the scheduling `Policy` (`max_in_flight`, `per_worker`, `per_skill`,
    `max_attempts`, `timeout_s`, `rpm`, `tpm`, `token_budget`, `queue_limit`, ...).
    A job's input may carry a ready `plan`; then no producer is asked.
    """

    description = "Owns a run: plans, schedules the DAG, critiques, judges."

    def on_start(self) -> None:
        self.jobs: dict[str, _Job] = {}
        self.policy = Policy.from_config(
            {k: v for k, v in self.config.items() if k not in _OWN_KEYS}
        )
        self.limits = LoopLimits.from_config(dict(self.config.get("loops", {})))
        self.draining: Draining | None = None

    def _role(self, key: str, skill_id: str) -> str | None:
        if key in self.config:
            return str(self.config[key])
        found = [a for a in self.ctx.actors_with_skill(skill_id) if a != self.ctx.name]
        return found[0] if found else None

    @skill(input=load("skills/run.input"), output=load("skills/run.output"))
    def run(self, req: Request) -> Any:
        """Run one job: plan the goal, schedule the plan, critique and judge the result."""
        job = _Job(
            req=req,
            goal=req.data["goal"],
            started=time.time(),
            key=req.envelope.idempotency_key or req.task_id,
        )
        self.jobs[req.task_id] = job
        journal = self._journal_of(job)
        if journal is not None:  # this job ran before, in an earlier life of this node
            self.ctx.emit(JournalResume(job=job.key, done=len(journal[1]), in_doubt=len(journal[2])))
            self._start_plan(job, journal[0], done=journal[1], in_doubt=journal[2], prefer=journal[3])
            return req.defer()
        if "plan" in req.data:
            self._start_plan(job, req.data["plan"])
            return req.defer()
        producer = self._role("producer", "plan")
        if producer is None:
            req.fail("no actor offers skill 'plan'; add a producer to the spec")
            return req.defer()
        self.ctx.ask(producer, "plan", req.data, then=lambda r: self._on_plan(job, r))
        return req.defer()

    def on_message(self, envelope: Envelope) -> None:
        """Death watch: a worker's node died (its in-flight tasks go to live workers, with the
        same idempotency keys) or is back (it may be given work again)."""
        match envelope.body:
            case NodeDown(node=node, pid=pid, actors=actors):
                why = f"node {node} (pid {pid}) died"
                for actor, job in ((a, j) for a in actors for j in list(self.jobs.values())):
                    if job.scheduler is not None and job.finish is None:
                        self._core(job, job.scheduler.worker_lost, actor, why, time.monotonic())
            case NodeUp(actors=actors):
                for actor, job in ((a, j) for a in actors for j in list(self.jobs.values())):
                    if job.scheduler is not None and job.finish is None:
                        self._core(job, job.scheduler.worker_back, actor, time.monotonic())

    def on_drain(self, drain: Draining) -> None:
        """The run is stopping: dispatch nothing more; answer once nothing is in flight."""
        self.draining = drain
        for job in list(self.jobs.values()):
            job.draining = True
            if job.scheduler is not None and job.finish is None:
                self._core(job, job.scheduler.drain, drain.reason or "stopping")
        self._drained()

    def on_cancel(self, req: Request, reason: str) -> None:
        """Cancelling the run cancels everything in flight and dispatches nothing more."""
        job = self.jobs.get(req.task_id)
        if job is None:
            return
        if job.scheduler is not None and job.finish is None:
            self._core(job, job.scheduler.cancel, reason, time.monotonic())
        else:
            self._end(job, error=f"cancelled: {reason}")

    # -- planning ----------------------------------------------------------------------

    def _on_plan(self, job: _Job, result: TaskResult) -> None:
        if not result.ok:
            self._end(job, error=f"planning failed: {result.error}")
            return
        self._start_plan(job, result.data)

    # -- the journal ---------------------------------------------------------------------
    #
    # Every task transition goes to this actor's namespace in the run's SQLite store, keyed
    # by the job's idempotency key: the plan once, then per task "running" (dispatched, with
    # whether it is stateful) and "completed" (with its result). A job asked again with the
    # same key (the supervisor re-asks after restarting this node; `agentrt run --resume`)
    # resumes: completed tasks are not run again; read-only ones that were running are
    # dispatched again with the same idempotency key; stateful ones that were running are in
    # doubt (their effect may or may not have happened) and are not re-run blindly.

    def _journaling(self) -> bool:
        return bool(self.config.get("journal", True))

    def _journal(self, job: _Job, suffix: str, value: Any) -> None:
        if self._journaling():
            self.ctx.state.put(f"journal/{job.key}/{suffix}", value)

    def _journal_of(
        self, job: _Job
    ) -> tuple[Any, dict[str, Any], dict[str, str], dict[str, str]] | None:
        if not self._journaling():
            return None
        plan = self.ctx.state.get(f"journal/{job.key}/plan")
        if plan is None:
            return None
        prefix = f"journal/{job.key}/task/"
        done: dict[str, Any] = {}
        in_doubt: dict[str, str] = {}
        running: dict[str, str] = {}  # read-only ones: back to the same worker
        keys = self.ctx.state.keys()
        for key in keys:
            if not key.startswith(prefix):
                continue
            entry = self.ctx.state.get(key)
            tid = key[len(prefix) :]
            if entry.get("state") == "completed":
                done[tid] = entry.get("result")
            elif entry.get("state") == "running" and not entry.get("stateful"):
                running[tid] = entry.get("worker", "")
            elif entry.get("state") == "running":
                in_doubt[tid] = (
                    f"in doubt: attempt {entry.get('attempt')} on {entry.get('worker')} was running "
                    "when the coordinator stopped; its effect may or may not have happened, so it "
                    "is not run again blindly"
                )
        return plan, done, in_doubt, running

    def _start_plan(
        self,
        job: _Job,
        data: Any,
        done: dict[str, Any] | None = None,
        in_doubt: dict[str, str] | None = None,
        prefer: dict[str, str] | None = None,
    ) -> None:
        try:
            plan = msgspec.convert(data, Plan)
            wanted = {t.skill for t in plan.tasks} | {t.fallback for t in plan.tasks if t.fallback}
            names = {a for s in wanted for a in self.ctx.actors_with_skill(s)}
            workers: dict[str, list[str]] = {}
            skills: dict[str, SkillInfo] = {}
            for name in sorted(names):
                card = self.ctx.card(name)
                workers[name] = [s.id for s in card.skills]
                for s in card.skills:
                    skills.setdefault(s.id, SkillInfo(read_only=s.read_only, timeout_s=s.timeout_s))
            job.plan = plan
            job.scheduler = Scheduler(plan, workers, policy=self.policy, skills=skills)
        except (msgspec.ValidationError, AgentRuntimeError, ValueError) as exc:
            self._end(job, error=f"the plan cannot run: {exc}")
            return
        job.governor = Governor(
            self.limits,
            token_budget=self.policy.token_budget
            if self.policy.token_budget is not None
            else DEFAULT_TOKEN_BUDGET,
            usd_per_mtok=self.policy.usd_per_mtok,
        )
        job.loop = job.governor.open("judge")
        if done is None:
            self._journal(job, "plan", msgspec.to_builtins(plan))
        self.ctx.emit(
            PlanAccepted(
                tasks=len(plan.tasks),
                final=plan.final_task(),
                deps=dependency_graph(plan),  # tasks and groups: what the trace views draw
            )
        )
        if done is None:
            self._core(job, job.scheduler.start, now=time.monotonic())
            return
        # In-doubt tasks are held (not dispatched) and put to the human: run it again (with the
        # same idempotency key: a worker that still has its result answers with it), or not.
        in_doubt = in_doubt or {}
        self._core(
            job, job.scheduler.resume, done, time.monotonic(), prefer=prefer or {}, held=in_doubt
        )
        for tid, why in in_doubt.items():
            self.ctx.emit(JournalInDoubt(plan_task=tid, reason=why))
            self._ask_in_doubt(job, tid, why)

    # -- scheduling --------------------------------------------------------------------

    def _core(self, job: _Job, event: Any, *args: Any, **kwargs: Any) -> None:
        """Hand one event to the scheduler core (timing its CPU), then act on its commands."""
        t = time.thread_time()
        commands = event(*args, **kwargs)
        job.core_cpu_s += time.thread_time() - t
        job.core_events += 1
        self._apply(job, commands)
        if job.draining:
            self._drained()

    def _drained(self) -> None:
        """Once nothing of a draining job is in flight, say so (its journal is complete)."""
        if any(j.draining and j.scheduler is not None and j.scheduler.in_flight > 0 for j in self.jobs.values()):
            return
        if self.draining is not None:
            self.draining.done(f"{len(self.jobs)} job(s) stopped with nothing in flight")

    def _on_timer(self, job: _Job, key: tuple[Any, ...]) -> None:
        if job.scheduler is not None and job.finish is None and job.req.task_id in self.jobs:
            self._core(job, job.scheduler.on_timer, key, time.monotonic())

    def _apply(self, job: _Job, commands: list[Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, Dispatch):
                self._dispatch(
                    job, cmd.task_id, cmd.skill, cmd.worker, cmd.args, attempt=cmd.attempt
                )
            elif isinstance(cmd, Cancel):
                self.ctx.emit(ScheduleCancel(plan_task=cmd.task_id, worker=cmd.worker, reason=cmd.reason))
                self.ctx.send(
                    cmd.worker,
                    CancelTask(task_id=f"{job.req.task_id}/{cmd.task_id}", reason=cmd.reason),
                )
            elif isinstance(cmd, SetTimer):
                delay = max(0.0, cmd.at - time.monotonic())
                self.ctx.call_later(delay, self._on_timer, job, cmd.key)
            elif isinstance(cmd, Decision):
                self.ctx.emit(ScheduleDecision(plan_task=cmd.task_id, decision=cmd.decision, reason=cmd.reason))
                if cmd.decision == "completed" and cmd.task_id in job.scheduler.results:  # type: ignore[union-attr]
                    self._journal(
                        job, f"task/{cmd.task_id}", {"state": "completed", "result": job.scheduler.results[cmd.task_id]}  # type: ignore[union-attr]
                    )
                if cmd.decision in _TERMINAL and cmd.task_id in job.scheduler.nodes:  # type: ignore[union-attr]
                    # The task's record says how it ended, keeping what its last reply told.
                    record = job.tasks.setdefault(
                        cmd.task_id, {"id": cmd.task_id, "skill": self._skill_of(job, cmd.task_id)}
                    )
                    record.update(state=cmd.decision, error=cmd.reason)
            elif isinstance(cmd, Finish):
                job.finish = cmd
                self._after_plan(job)

    def _skill_of(self, job: _Job, task_id: str) -> str:
        assert job.scheduler is not None
        return job.scheduler.nodes[task_id].skill

    def _dispatch(
        self,
        job: _Job,
        task_id: str,
        skill_id: str,
        worker: str,
        args: dict[str, Any],
        attempt: int,
        round_: int = 1,
    ) -> None:
        """Ask `worker` to run one plan task. Retries of one round share its idempotency key;
        a loop's next round is new work, with a key of its own."""
        assert job.plan is not None
        job.args[task_id] = args
        if task_id == job.plan.final_task():
            job.final_worker = worker
        if job.finish is None and job.scheduler is not None:
            stateful = not job.scheduler.skills.get(skill_id, SkillInfo()).read_only
            self._journal(job, f"task/{task_id}", {"state": "running", "attempt": attempt, "worker": worker, "stateful": stateful})
        self.ctx.emit(ScheduleDispatch(plan_task=task_id, skill=skill_id, worker=worker, attempt=attempt))
        job.dispatched_at.append(time.monotonic())
        self.ctx.ask(
            worker,
            skill_id,
            args,
            task_id=f"{job.req.task_id}/{task_id}",
            plan_task=task_id,
            attempt=attempt,
            idempotency_key=f"{job.key}/{task_id}" + (f"@round{round_}" if round_ > 1 else ""),
            then=lambda r: self._on_task(job, task_id, worker, attempt, r),
        )

    def _on_task(
        self, job: _Job, task_id: str, worker: str, attempt: int, result: TaskResult
    ) -> None:
        if job.req.task_id not in self.jobs:
            return
        scheduler = job.scheduler
        if job.finish is None and scheduler is not None and not scheduler.is_current(task_id, attempt):
            # A late reply (a timed-out or cancelled attempt): the core traces it as stale;
            # it must not overwrite the record of the attempt that counts.
            self._core(job, scheduler.task_failed, task_id, result.error or result.state, attempt=attempt, now=time.monotonic())
            return
        meta = result.metadata
        usage = meta.get("usage", {})
        record = {
            "id": task_id,
            "skill": meta.get("skill") or self._skill_of(job, task_id),
            "worker": worker,
            "state": result.state,
            "attempt": attempt,
            "startedAt": meta.get("startedAt", 0.0),
            "finishedAt": meta.get("finishedAt", 0.0),
            "durationS": meta.get("durationS", 0.0),
            "inputTokens": usage.get("inputTokens", 0),
            "outputTokens": usage.get("outputTokens", 0),
            "costUsd": usage.get("costUsd", 0.0),
        }
        if not result.ok:
            record["error"] = result.error
        job.tasks[task_id] = record
        if job.governor is not None:
            job.governor.charge(record["inputTokens"] + record["outputTokens"])
        output: Any = result.data or result.text
        tokens = record["inputTokens"] + record["outputTokens"]
        if job.finish is not None:  # a judge-requested redo of the final task
            if result.ok:
                self._critique(job, task_id, record["skill"], worker, output)
            self._on_redo(job, result)
            return
        assert job.scheduler is not None
        now = time.monotonic()
        if result.ok and self._gated():
            # Downstream tasks see this result only once the critic has passed it.
            gate = job.gates.setdefault(task_id, _Gate(worker))
            gate.worker, gate.output, gate.attempt = worker, output, attempt
            gate.tokens += tokens
            gate.cost += record["costUsd"]
            self._critique(
                job, task_id, record["skill"], worker, output,
                then=lambda r: self._on_gate(job, task_id, r),
            )
        elif result.ok:
            self._critique(job, task_id, record["skill"], worker, output)
            self._core(
                job,
                job.scheduler.task_succeeded,
                task_id,
                output,
                attempt=attempt,
                now=now,
                tokens=tokens,
                cost=record["costUsd"],
            )
        else:
            retry_after = meta.get("retryAfterS")
            self._core(
                job,
                job.scheduler.task_failed,
                task_id,
                result.error or result.state,
                attempt=attempt,
                now=now,
                retryable=result.state != "rejected" and meta.get("retryable", True),
                retry_after_s=float(retry_after) if retry_after is not None else None,
                tokens=tokens,
            )

    # -- critic and judge ----------------------------------------------------------------

    def _gated(self) -> bool:
        return bool(self.config.get("gate", True)) and self._role("critic", "critique") is not None

    def _critique(
        self,
        job: _Job,
        task_id: str,
        skill_id: str,
        worker: str,
        output: Any,
        then: Any = None,
    ) -> None:
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
            then=lambda r: self._on_critique(job, r, then),
        )

    def _on_critique(self, job: _Job, result: TaskResult, then: Any = None) -> None:
        job.critiques_pending -= 1
        if result.ok:
            job.critiques.append(msgspec.to_builtins(msgspec.convert(result.data, Critique)))
        if then is not None:
            then(result)
        self._maybe_judge(job)
        self._maybe_done(job)

    def _on_gate(self, job: _Job, task_id: str, result: TaskResult) -> None:
        """The critic reviewed a held result: pass it downstream, or go round the task's
        critic loop (redo with the critic's issues as feedback) under the loop governor."""
        gate = job.gates.get(task_id)
        scheduler, governor = job.scheduler, job.governor
        if (
            gate is None
            or scheduler is None
            or governor is None
            or job.finish is not None
            or job.req.task_id not in self.jobs
            or not scheduler.is_current(task_id, gate.attempt)
        ):
            return  # the run ended, or the attempt timed out meanwhile
        if not result.ok:
            # No review is no reason to lose the work: it goes on, and the trace says why.
            self.ctx.emit(CriticGate(plan_task=task_id, decision="passed", reason=f"critic failed: {result.error}"))
            self._release(job, task_id, gate.output)
            return
        critique = msgspec.convert(result.data, Critique)
        if critique.passed:
            self.ctx.emit(CriticGate(plan_task=task_id, decision="passed", score=critique.score))
            self._release(job, task_id, gate.output)
            return
        if gate.loop is None:
            gate.loop = governor.open(f"critic:{task_id}")
        reason = f"critic score {critique.score:.2f} below the pass mark"
        verdict = Verdict(
            decision="retry",
            reason=reason,
            iteration=gate.loop.iteration,
            feedback="; ".join(critique.issues) or reason,
            score=critique.score,
        )
        self.ctx.emit(CriticGate(plan_task=task_id, decision="held", score=critique.score, issues=critique.issues))
        step = governor.on_verdict(
            gate.loop,
            verdict,
            answer=gate.output,
            sender=gate.worker,
            judge=self._role("critic", "critique") or "critic",
            task=task_id,
        )
        self._loop_step(job, gate.loop, step)

    def _release(self, job: _Job, task_id: str, output: Any) -> None:
        gate = job.gates.pop(task_id)
        assert job.scheduler is not None
        self._core(
            job,
            job.scheduler.task_succeeded,
            task_id,
            output,
            attempt=gate.attempt,
            now=time.monotonic(),
            tokens=gate.tokens,
            cost=gate.cost,
        )

    def _with_feedback(self, worker: str, skill_id: str, args: dict[str, Any], feedback: str) -> dict[str, Any]:
        """`args` plus the feedback, if the skill's input schema takes a `feedback` field."""
        declared = self.ctx.card(worker).skill(skill_id)
        schema = declared.input_schema if declared else {}
        takes = "feedback" in schema.get("properties", {}) or schema.get("additionalProperties", True) is not False
        return dict(args, feedback=feedback) if takes else dict(args)

    def _after_plan(self, job: _Job) -> None:
        finish = job.finish
        assert finish is not None and job.plan is not None
        if finish.state != "completed":
            job.outcome = Conclude("failed", finish.reason)
            self._maybe_done(job)
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
                "maxIterations": job.loop.cap,
            },
            then=lambda r: self._on_verdict(job, judge, r),
        )

    def _on_verdict(self, job: _Job, judge: str, result: TaskResult) -> None:
        assert job.loop is not None and job.governor is not None and job.plan is not None
        if not result.ok:
            self._end(job, error=f"judging failed: {result.error}")
            return
        verdict = msgspec.convert(result.data, Verdict)
        if verdict.score is None:
            # The judge gave no score: the critics' mean for the final task stands in.
            final = job.plan.final_task()
            scores = [c["score"] for c in job.critiques if c.get("taskId") == final]
            if scores:
                verdict = msgspec.structs.replace(verdict, score=sum(scores) / len(scores))
        job.verdict = msgspec.to_builtins(verdict)
        step = job.governor.on_verdict(
            job.loop,
            verdict,
            answer=job.answer,
            sender=job.final_worker,
            judge=judge,
            task=job.plan.final_task(),
        )
        self.ctx.emit(
            LoopVerdict(
                loop=job.loop.name,
                decision=verdict.decision,
                iteration=verdict.iteration,
                score=verdict.score,
                next=type(step).__name__,
            )
        )
        self._loop_step(job, job.loop, step)

    def _loop_step(self, job: _Job, loop: Loop, step: Redo | Conclude | Escalate) -> None:
        """Act on the governor's decision for `loop`: the judge loop over the final answer, or
        a task's critic loop (`critic:<task>`)."""
        assert job.plan is not None
        gate_task = None if loop is job.loop else self._loop_task(job, loop)
        if isinstance(step, Escalate):
            self._escalate(job, loop, step.ticket)
            return
        if isinstance(step, Redo):
            task_id = gate_task or job.plan.final_task()
            worker = job.gates[task_id].worker if gate_task else job.final_worker
            skill_id = self._skill_of(job, task_id)
            job.critiques = [c for c in job.critiques if c.get("taskId") != task_id]
            self._dispatch(
                job,
                task_id,
                skill_id,
                worker,
                self._with_feedback(worker, skill_id, job.args[task_id], step.feedback),
                attempt=job.gates[task_id].attempt if gate_task else step.iteration,
                round_=step.iteration,
            )
            return
        self.ctx.emit(
            LoopEnd(loop=loop.name, state=step.state, reason=step.reason, iteration=step.iteration or 0, scope=step.scope)
        )
        if gate_task is not None:
            # The task's loop is over; the plan goes on with its best result (or its failure).
            if step.state == "failed":
                gate = job.gates.pop(gate_task)
                assert job.scheduler is not None
                self._core(
                    job, job.scheduler.task_failed, gate_task, step.reason,
                    attempt=gate.attempt, now=time.monotonic(), retryable=False, tokens=gate.tokens,
                )
            else:
                self._release(job, gate_task, step.answer if step.answer is not None else job.gates[gate_task].output)
            return
        if step.answer is not None:
            job.answer = step.answer
        job.outcome = step
        self._maybe_done(job)

    def _ask_in_doubt(self, job: _Job, task_id: str, why: str) -> None:
        """A stateful task that was running when the coordinator stopped: ask the human
        whether to run it again; with no human (or no valid answer), it is not run again."""
        ticket = Escalation(
            ticket_id=f"in-doubt-{task_id}",
            loop=f"task:{task_id}",
            reason="in-doubt",
            summary=f"task '{task_id}' ({self._skill_of(job, task_id)}) is {why}",
            iteration=1,
            options=["continue", "abort"],
            details={"task": task_id, "continue": "run it again", "abort": "fail it; its dependents are skipped"},
        )

        def decide(answer: EscalationAnswer) -> None:
            if job.scheduler is None or job.finish is not None:
                return
            if answer.decision == "continue":
                self._core(job, job.scheduler.unhold, task_id, time.monotonic())
            else:
                reason = f"{why}; {answer.by} chose not to run it again"
                self._core(job, job.scheduler.abandon, task_id, reason, time.monotonic())

        self._put_to_human(job, ticket, "abort", decide)

    def _escalate(self, job: _Job, loop: Loop, ticket: Escalation) -> None:
        """A loop's ticket: the human's answer (by policy, accept the best) resumes the loop."""
        assert job.governor is not None
        governor = job.governor
        task = self._loop_task(job, loop)
        self._put_to_human(
            job, ticket, "accept-best", lambda answer: self._loop_step(job, loop, governor.resolve(answer, task=task))
        )

    def _put_to_human(
        self,
        job: _Job,
        ticket: Escalation,
        fallback: EscalationDecision,
        then: Callable[[EscalationAnswer], None],
    ) -> None:
        """Hand `ticket` to the run's human and give `then` the answer; with no human, a
        failed one, or an answer that is not one of the ticket's options, the `fallback`
        decision by policy. The ticket and its answer go into the job's output and trace."""
        self.ctx.emit(
            LoopEscalated(
                ticket_id=ticket.ticket_id,
                loop=ticket.loop,
                reason=ticket.reason,
                iteration=ticket.iteration,
                summary=ticket.summary,
            )
        )
        record: dict[str, Any] = {"ticket": msgspec.to_builtins(ticket)}
        job.escalations.append(record)

        def answered(result: TaskResult | None, why_not: str) -> None:
            if job.req.task_id not in self.jobs:
                return
            answer: EscalationAnswer | None = None
            if result is not None and not result.ok:
                why_not = f"the human actor failed: {result.error}"
            elif result is not None:
                try:
                    answer = msgspec.convert(result.data, EscalationAnswer)
                except msgspec.ValidationError as exc:
                    why_not = f"the human's answer is invalid: {exc}"
                if answer is not None and (
                    answer.ticket_id != ticket.ticket_id or answer.decision not in ticket.options
                ):
                    why_not = (
                        f"answer refused: {answer.ticket_id} / {answer.decision} does not answer "
                        f"{ticket.ticket_id} with one of {ticket.options}"
                    )
                    answer = None
            if answer is None:
                answer = EscalationAnswer(ticket_id=ticket.ticket_id, decision=fallback, by=f"policy ({why_not})")
            record["answer"] = msgspec.to_builtins(answer)
            self.ctx.emit(LoopAnswer(ticket_id=ticket.ticket_id, decision=answer.decision, by=answer.by))
            then(answer)

        human = self._role("human", "escalate")
        if human is None:
            answered(None, "no human actor in the run")
            return
        self.ctx.ask(human, "escalate", msgspec.to_builtins(ticket), then=lambda r: answered(r, ""))

    def _loop_task(self, job: _Job, loop: Loop) -> str:
        """The plan task a loop redoes: the final one for the judge loop, else its critic's."""
        assert job.plan is not None
        return job.plan.final_task() if loop is job.loop else loop.name.removeprefix("critic:")

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
        finish = job.finish
        report = RunReport(
            answer=job.answer,
            state=job.outcome.state,
            reason=job.outcome.reason,
            # Partial results too, when the plan failed or a budget stopped it.
            results=finish.results if finish else {},
            schedule=ScheduleFigures(
                core_cpu_s=round(job.core_cpu_s, 6),
                core_events=job.core_events,
                dispatches=len(job.dispatched_at),
                dispatch_span_s=round(job.dispatched_at[-1] - job.dispatched_at[0], 6) if job.dispatched_at else 0.0,
                rpm_limit=self.policy.rpm,
                max_in_flight=self.policy.max_in_flight,
                failed=finish.failed if finish else {},
                skipped=finish.skipped if finish else {},
                cancelled=finish.cancelled if finish else {},
            ),
            iterations=job.loop.iteration,
            loop=LoopSummary(
                name=job.loop.name,
                cap=job.loop.cap,
                ended_by=job.outcome.scope,
                answer_iteration=job.outcome.iteration,
                answer_score=job.outcome.score,
            ),
            escalations=[msgspec.convert(e, EscalationRecord) for e in job.escalations],
            verdict=msgspec.convert(job.verdict, Verdict) if job.verdict else None,
            critiques=[msgspec.convert(c, Critique) for c in job.critiques],
            plan=job.plan,
            tasks=[msgspec.convert(job.tasks[t.id], TaskRecord) for t in job.plan.tasks if t.id in job.tasks],
        )
        job.req.complete(report)
