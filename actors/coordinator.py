"""The coordinator: owns a run. A thin shell around the run core (`_run.Run`): it hands the
core each event with the time, and carries out the commands the core returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agentrt.protocols import CancelTask, Envelope, NodeDown, NodeUp
from agentrt.runtime import Actor, Draining, Request, TaskResult, skill
from agentrt.schemas import load

from ._loops import LoopLimits
from ._run import (
    Ask,
    CancelCall,
    Journal,
    Reply,
    Result,
    Resumed,
    Roles,
    Run,
    RunCommand,
    SetTimer,
    Trace,
)
from ._scheduler import Policy

# Config keys that are the coordinator's own; every other key is a scheduling Policy field.
_OWN_KEYS = frozenset({"producer", "critic", "judge", "human", "loops", "gate", "journal"})


class Coordinator(Actor):
    """Schedules a plan as a DAG on the run's workers, has each result critiqued as it arrives,
    and loops the final result through the judge, governed by the loop governor (caps per
    loop, task and run; ping-pong and stall detection; escalation to a human), within one
    budget for every model call of the run.

    Config: `producer`, `critic`, `judge`, `human` (actor names; default: the first actor
    offering plan / critique / judge / escalate, and none if none does), `gate` (true: a
    result reaches its dependents only once the critic passed it), `journal` (true: every
    task transition is journaled, so the job resumes after a restart), `loops` (the
    `LoopLimits` table: `max_iterations`, `run_max_iterations`, `escalate_on`, ...), and any
    field of the scheduling `Policy` (`max_in_flight`, `per_worker`, `per_skill`,
    `max_attempts`, `timeout_s`, `rpm`, `tpm`, `token_budget`, `est_tokens`,
    `retry_after_max_s`, `queue_limit`, ...). A job's input may carry a ready `plan`; then no
    producer is asked.
    """

    description = "Owns a run: plans, schedules the DAG, critiques, judges."

    def on_start(self) -> None:
        self.runs: dict[str, tuple[Request, Run]] = {}
        self.policy = Policy.from_config({k: v for k, v in self.config.items() if k not in _OWN_KEYS})
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
        key = req.envelope.idempotency_key or req.task_id
        roles = Roles(
            producer=self._role("producer", "plan"),
            critic=self._role("critic", "critique"),
            judge=self._role("judge", "judge"),
            human=self._role("human", "escalate"),
        )
        journaling = bool(self.config.get("journal", True))
        core = Run(
            key=key,
            goal=req.data["goal"],
            policy=self.policy,
            limits=self.limits,
            roles=roles,
            cards=self.ctx.cards(),
            gate=bool(self.config.get("gate", True)),
            journal=journaling,
        )
        self.runs[req.task_id] = (req, core)
        resumed = self._journal_of(key) if journaling else None
        self._feed(req.task_id, core.start, req.data, time.monotonic(), resumed)
        return req.defer()

    def _journal_of(self, key: str) -> Resumed | None:
        """The job's journal from an earlier life of this node (or of the run), if any."""
        state = self.ctx.state
        plan = state.get(f"journal/{key}/plan")
        if plan is None:
            return None
        prefix = f"journal/{key}/task/"
        keys = state.keys()
        tasks = {k[len(prefix) :]: state.get(k) for k in keys if k.startswith(prefix)}
        return Resumed(plan=plan, tasks=tasks, run=state.get(f"journal/{key}/run") or {})

    def on_message(self, envelope: Envelope) -> None:
        """Death watch: a worker's node died, or is back."""
        for job in list(self.runs):
            if job not in self.runs:
                continue
            core = self.runs[job][1]
            match envelope.body:
                case NodeDown(node=node, pid=pid, actors=actors):
                    self._feed(job, core.node_down, list(actors), f"node {node} (pid {pid}) died", time.monotonic())
                case NodeUp(actors=actors):
                    self._feed(job, core.node_up, list(actors), time.monotonic())

    def on_drain(self, drain: Draining) -> None:
        """The run is stopping: dispatch nothing more; answer once nothing is in flight."""
        self.draining = drain
        for job in list(self.runs):
            if job in self.runs:
                self._feed(job, self.runs[job][1].drain, drain.reason or "stopping")
        self._drained()

    def on_cancel(self, req: Request, reason: str) -> None:
        """Cancelling the run cancels everything in flight and dispatches nothing more."""
        if req.task_id in self.runs:
            self._feed(req.task_id, self.runs[req.task_id][1].cancel, reason, time.monotonic())

    # -- the shell: events in, commands carried out ----------------------------------------

    def _feed(self, job: str, event: Callable[..., list[RunCommand]], *args: Any) -> None:
        """Hand one event to the job's core (timing its CPU), then carry out its commands."""
        if job not in self.runs:
            return
        core = self.runs[job][1]
        t = time.thread_time()
        commands = event(*args)
        core.cpu_s += time.thread_time() - t
        core.events += 1
        self._apply(job, commands)

    def _apply(self, job: str, commands: list[RunCommand]) -> None:
        """Carry out every command of the batch, even when one fails; each failure goes back
        to the core as an event once the batch is done."""
        if job not in self.runs:
            return
        req, core = self.runs[job]
        failed: list[tuple[RunCommand, BaseException]] = []
        for cmd in commands:
            try:
                self._do(job, req, core, cmd)
            except Exception as exc:
                failed.append((cmd, exc))
        for cmd, exc in failed:
            self._feed(job, core.command_failed, cmd, exc, time.monotonic())
        if self.draining is not None:
            self._drained()

    def _do(self, job: str, req: Request, core: Run, cmd: RunCommand) -> None:
        if isinstance(cmd, Ask):
            self.ctx.ask(
                cmd.actor,
                cmd.skill,
                cmd.data,
                task_id=f"{job}/{cmd.task}" if cmd.task is not None else None,
                plan_task=cmd.task,
                attempt=cmd.attempt,
                idempotency_key=cmd.key,
                token_allowance=cmd.allowance,
                then=lambda r, call=cmd.call: self._feed(job, core.replied, call, _result(r), time.monotonic()),
            )
        elif isinstance(cmd, CancelCall):
            self.ctx.send(cmd.actor, CancelTask(task_id=f"{job}/{cmd.task}", reason=cmd.reason))
        elif isinstance(cmd, SetTimer):
            delay = max(0.0, cmd.at - time.monotonic())
            self.ctx.call_later(delay, self._timer, job, cmd.key)
        elif isinstance(cmd, Journal):
            self.ctx.state.put(f"journal/{core.key}/{cmd.key}", cmd.value)
        elif isinstance(cmd, Trace):
            self.ctx.emit(cmd.event)
        elif isinstance(cmd, Reply):
            self.runs.pop(job, None)
            if cmd.error is not None:
                req.fail(cmd.error)
            else:
                req.complete(cmd.output)

    def _timer(self, job: str, key: tuple[Any, ...]) -> None:
        if job in self.runs:
            self._feed(job, self.runs[job][1].timer, key, time.monotonic())

    def _drained(self) -> None:
        """Once nothing of a draining job is in flight, say so (its journal is complete)."""
        if self.draining is not None and all(core.quiet for _, core in self.runs.values()):
            self.draining.done(f"{len(self.runs)} job(s) stopped with nothing in flight")


def _result(r: TaskResult) -> Result:
    return Result(ok=r.ok, state=r.state, output=r.data or r.text, error=r.error or "", metadata=r.metadata)
