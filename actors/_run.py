"""The run core: a coordinator's whole job as a sans-I/O state machine (h11's rule: all that
affects a run's transitions lives here, with no sockets, threads or clocks).

A `Run` owns the job's `Scheduler` (the DAG, bounds, limits, retries, timeouts), its loop
`Governor` (critic and judge loops, caps, escalations) and its `Ledger` (the one budget every
model call of the run is charged to). Events come in as method calls, with the time passed
in; each returns the commands the shell must carry out:

- events: `start` (a fresh job or one resumed from its journal), `replied` (any ask came
  back: the plan, a task attempt, a critique, a verdict, a human's answer), `timer`,
  `node_down` / `node_up`, `drain`, `cancel`, and `command_failed` (the shell could not
  carry out a command: it comes back as an event, so the rest of its batch still applies);
- commands: `Ask` (with the token allowance reserved for it), `CancelCall`, `SetTimer`,
  `Journal`, `Trace`, `Reply`.

What it guarantees, whatever order events come in:

- every model call of the run reserves its worst case on the ledger before it is asked for
  and settles what it used after: the producer's plan, every task attempt (redos of the
  critic and judge loops are new attempts through the scheduler), every critique and every
  verdict; a call that does not fit is not asked for, and the run ends `partial` (or
  `failed`) with the reason, never `completed`;
- a task's result reaches its dependents only after its review (the critic gate, and the
  judge for the final task): running -> reviewing -> completed;
- a stateful task whose fate is unknown (its worker was lost, or the run stopped while it
  ran) is never run again without a decision (a ticket to the human; no human: not re-run);
- the journal records each dispatch before its ask and, if the ask cannot go out, that it
  was not sent: a task that was never sent is not in doubt, one that may have been is;
  resume restores the ledger, attempts, loop counters and escalations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from agentrt.protocols import (
    AgentCard,
    AgentRuntimeError,
    BudgetFigures,
    BudgetStop,
    BudgetWait,
    CommandFailed,
    CriticGate,
    Critique,
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
    Plan,
    PlanAccepted,
    ResultAccepted,
    RunReport,
    ScheduleCancel,
    ScheduleDecision,
    ScheduleDispatch,
    ScheduleFigures,
    SchemaError,
    TaskRecord,
    TraceEvent,
    Verdict,
    dependency_graph,
)

from ._limits import Ledger
from ._loops import Conclude, Escalate, Governor, Loop, LoopLimits, Redo, _Round
from ._scheduler import (
    DEFAULT_TOKEN_BUDGET,
    Cancel,
    Decision,
    Dispatch,
    Finish,
    Policy,
    Scheduler,
    SetTimer,
    SkillInfo,
)

# -- commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """Ask `actor` to run `skill` with `data`; hand the reply back as `replied(call, ...)`.
    `task`: the plan task this call runs (its task id is `<job>/<task>`); `allowance`: the
    tokens reserved for it, which the callee's model calls may not pass."""

    call: int
    actor: str
    skill: str
    data: dict[str, Any]
    task: str | None = None
    attempt: int = 1
    key: str | None = None
    allowance: int | None = None


@dataclass(frozen=True)
class CancelCall:
    """Tell `actor` to stop its work on plan task `task`."""

    actor: str
    task: str
    reason: str


@dataclass(frozen=True)
class Journal:
    """Write `value` under `key` in the job's journal (the store redacts it)."""

    key: str
    value: Any


@dataclass(frozen=True)
class Trace:
    """Record a typed trace event."""

    event: TraceEvent


@dataclass(frozen=True)
class Reply:
    """Answer the job: its report, or an error."""

    output: RunReport | None = None
    error: str | None = None


RunCommand = Ask | CancelCall | SetTimer | Journal | Trace | Reply


# -- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What an ask came back with (the shell's TaskResult, as data)."""

    ok: bool
    state: str = "completed"
    output: Any = None
    error: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Roles:
    """Who plays the run's roles (actor names; None: nobody in the run does)."""

    producer: str | None = None
    critic: str | None = None
    judge: str | None = None
    human: str | None = None


@dataclass(frozen=True)
class Resumed:
    """A job's journal from an earlier life: its plan, each task's last entry, the run's."""

    plan: Any
    tasks: dict[str, dict[str, Any]]
    run: dict[str, Any] = field(default_factory=dict)


# -- state ---------------------------------------------------------------------------------

CallKind = Literal["plan", "task", "critique", "verdict", "human"]


@dataclass
class _Call:
    kind: CallKind
    actor: str
    reserved: float = 0.0
    task: str | None = None
    attempt: int = 1
    gate: bool = False  # a critique that holds its task
    ticket: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # to ask again with more tokens


@dataclass
class _Review:
    """A task's reply held for review (critic gate; the judge, for the final task)."""

    worker: str
    output: Any
    attempt: int
    rounds: dict[int, Any] = field(default_factory=dict)  # judge-loop iteration -> output


@dataclass
class _Ticket:
    kind: Literal["loop", "in-doubt"]
    ticket: Escalation
    fallback: EscalationDecision
    task: str
    loop: str = ""
    why: str = ""


def answer_of(result: Any) -> str:
    if isinstance(result, dict):
        return str(result.get("answer") or result.get("text") or msgspec.json.encode(result).decode())
    return str(result)


_REF = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
_TERMINAL = frozenset({"skipped", "cancelled", "failed"})


class Run:
    """One job of a coordinator, from its goal (or plan, or journal) to its reply."""

    def __init__(
        self,
        *,
        key: str,
        goal: str,
        policy: Policy,
        limits: LoopLimits,
        roles: Roles,
        cards: Mapping[str, AgentCard],
        gate: bool = True,
        journal: bool = True,
    ) -> None:
        self.key = key
        self.goal = goal
        self.policy = policy
        self.roles = roles
        self.cards = dict(cards)
        self.gate = gate and roles.critic is not None
        self.journaling = journal
        self.ledger = Ledger(policy.token_budget, policy.cost_budget, policy.usd_per_mtok)
        self.governor = Governor(
            limits,
            token_budget=policy.token_budget if policy.token_budget is not None else DEFAULT_TOKEN_BUDGET,
            usd_per_mtok=policy.usd_per_mtok,
        )
        self.plan: Plan | None = None
        self.scheduler: Scheduler | None = None
        self.judge_loop: Loop | None = None
        self.calls: dict[int, _Call] = {}
        self._calls = 0
        self.deferred: list[dict[str, Any]] = []  # calls of the core's own waiting for the budget
        self.reviews: dict[str, _Review] = {}
        self.args: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.critiques: list[dict[str, Any]] = []
        self.pending_critiques = 0
        self.want_judge = False
        self.tickets: dict[str, _Ticket] = {}
        self.escalations: list[dict[str, Any]] = []
        self.answer = ""
        self.verdict: dict[str, Any] | None = None
        self.outcome: Conclude | None = None
        self.finish: Finish | None = None
        self.budget_reason = ""  # a call of the core's own that the budget could not pay for
        self.done = False
        self.draining = False
        self.final_worker = ""
        self.dispatched_at: list[float] = []
        self.cpu_s = 0.0  # the shell adds the CPU time of each event it hands in
        self.events = 0

    # -- queries ---------------------------------------------------------------------------

    @property
    def quiet(self) -> bool:
        """Nothing of this job is running or under review (a drain may say it is done)."""
        s = self.scheduler
        return s is None or (s.in_flight == 0 and s.reviewing == 0)

    @property
    def final(self) -> str:
        assert self.plan is not None
        return self.plan.final_task()

    # -- events ----------------------------------------------------------------------------

    def start(self, data: Mapping[str, Any], now: float, resumed: Resumed | None = None) -> list[RunCommand]:
        """Begin the job: from its journal, from a plan in its input, or by asking the producer."""
        if resumed is not None:
            return self._plan_ready(resumed.plan, now, resumed)
        if "plan" in data:
            return self._plan_ready(data["plan"], now)
        if self.roles.producer is None:
            return self._end(error="no actor offers skill 'plan'; add a producer to the spec")
        return self._ask_model("plan", self.roles.producer, "plan", dict(data), now)

    def replied(self, call_id: int, result: Result, now: float) -> list[RunCommand]:
        """An ask came back."""
        call = self.calls.pop(call_id, None)
        if call is None or self.done:
            return []
        meta = result.metadata or {}
        usage = meta.get("usage") or {}
        tokens = float(usage.get("inputTokens", 0)) + float(usage.get("outputTokens", 0))
        cost = usage.get("costUsd")
        if call.kind == "task":
            return self._task_replied(call, result, tokens, cost, now) + self._retry_deferred(now)
        if not result.ok and meta.get("maybeRan") and meta.get("retryable", True):
            # Sent and never acknowledged: it may have arrived and made its model call, whose
            # usage never came back; its allowance is spent (as an unanswered task attempt's is).
            tokens, cost = call.reserved, None
        self.ledger.settle(call.reserved, tokens, cost)
        need = meta.get("needTokens")
        if not result.ok and need is not None and float(need) > call.reserved and call.kind != "human":
            # The callee's call needed more than its allowance: ask again with that much
            # reserved, if the budget has it (else the budget stops the run).
            if call.kind == "critique":
                self.pending_critiques -= 1  # asked again below
            skill_id = {"plan": "plan", "critique": "critique", "verdict": "judge"}[call.kind]
            least = meta.get("leastTokens")
            again = self._ask_model(call.kind, call.actor, skill_id, call.data, now, task=call.task, attempt=call.attempt, gate=call.gate, reserve=float(need), least=float(least) if least is not None else None)
            return again + self._pump(now)
        if call.kind == "plan":
            out = self._plan_ready(result.output, now) if result.ok else self._end(error=f"planning failed: {result.error}")
        elif call.kind == "critique":
            out = self._critique_back(call, result, now)
        elif call.kind == "verdict":
            out = self._verdict_back(call, result, now)
        else:
            out = self._answer_back(call, result, now)
        return out + self._journal_run() + self._pump(now) + self._maybe_done()

    def timer(self, key: tuple[Any, ...], now: float) -> list[RunCommand]:
        if self.done or self.scheduler is None or key[0] != "sched":
            return []
        return self._sched(self.scheduler.on_timer(key[1:], now), now) + self._retry_deferred(now)

    def node_down(self, actors: list[str], why: str, now: float) -> list[RunCommand]:
        """The node hosting `actors` died: read-only work there goes to live workers; stateful
        work there is in doubt."""
        if self.done or self.scheduler is None:
            return []
        out: list[RunCommand] = []
        for actor in actors:
            out += self._sched(self.scheduler.worker_lost(actor, why, now), now)
        return out + self._retry_deferred(now)

    def node_up(self, actors: list[str], now: float) -> list[RunCommand]:
        if self.done or self.scheduler is None:
            return []
        out: list[RunCommand] = []
        for actor in actors:
            out += self._sched(self.scheduler.worker_back(actor, now), now)
        return out

    def drain(self, reason: str) -> list[RunCommand]:
        """Dispatch nothing more; what is in flight finishes and is journaled."""
        self.draining = True
        if self.done or self.scheduler is None:
            return []
        return self._sched(self.scheduler.drain(reason), 0.0)

    def cancel(self, reason: str, now: float) -> list[RunCommand]:
        """Cancelling the run cancels everything in flight and dispatches nothing more."""
        if self.done:
            return []
        if self.scheduler is not None and not self.scheduler.finished:
            return self._sched(self.scheduler.cancel(reason, now), now)
        return self._end(error=f"cancelled: {reason}")

    def command_failed(self, cmd: RunCommand, error: BaseException | str, now: float) -> list[RunCommand]:
        """The shell could not carry out `cmd`. An ask that could not be sent is a failed
        reply (a SchemaError is not retried, and names the `${ref}` that gave the value)."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if isinstance(cmd, Ask):
            retryable = not isinstance(error, SchemaError)  # the same input fails the same way
            if isinstance(error, SchemaError) and cmd.task is not None:
                text = f"{error}{self._ref_note(cmd.task, getattr(error, 'field', None))}"
            elif not isinstance(error, str):
                text = str(error)
            meta = {"retryable": retryable}
            out: list[RunCommand] = []
            if cmd.task is not None and self.calls.get(cmd.call, _Call("plan", "")).kind == "task":
                # Never sent, so never in doubt: the journal says so before anything else.
                out += self._journal(f"task/{cmd.task}", {"state": "not-sent", "attempt": cmd.attempt, "committed": self._committed()})
            return out + self.replied(cmd.call, Result(ok=False, state="failed", error=f"not sent: {text}", metadata=meta), now)
        if isinstance(cmd, Reply):
            return []
        return [Trace(CommandFailed(command=type(cmd).__name__, error=text))]

    # -- planning --------------------------------------------------------------------------

    def _plan_ready(self, data: Any, now: float, resumed: Resumed | None = None) -> list[RunCommand]:
        try:
            plan = msgspec.convert(data, Plan)
            wanted = {t.skill for t in plan.tasks} | {t.fallback for t in plan.tasks if t.fallback}
            workers: dict[str, list[str]] = {}
            skills: dict[str, SkillInfo] = {}
            for name, card in sorted(self.cards.items()):
                offered = [s.id for s in card.skills]
                if not wanted & set(offered):
                    continue
                workers[name] = offered
                for s in card.skills:
                    contract = card.contract(s.id)
                    skills.setdefault(s.id, SkillInfo(read_only=contract.read_only, timeout_s=contract.timeout_s))
            scheduler = Scheduler(plan, workers, policy=self.policy, skills=skills, ledger=self.ledger)
        except (msgspec.ValidationError, AgentRuntimeError, ValueError) as exc:
            return self._end(error=f"the plan cannot run: {exc}")
        self.plan, self.scheduler = plan, scheduler
        out: list[RunCommand] = []
        if resumed is None:
            self.judge_loop = self.governor.open("judge")
            out += self._journal("plan", msgspec.to_builtins(plan))
        out.append(Trace(PlanAccepted(tasks=len(plan.tasks), final=plan.final_task(), deps=dependency_graph(plan))))
        if resumed is None:
            return out + self._sched(scheduler.start(now=now), now)
        return out + self._resume(resumed, now)

    # -- the scheduler's commands ------------------------------------------------------------

    def _sched(self, commands: list[Any], now: float) -> list[RunCommand]:
        """The scheduler's commands as the shell's, with what the run keeps of them."""
        out: list[RunCommand] = []
        scheduler = self.scheduler
        assert scheduler is not None
        for cmd in commands:
            if isinstance(cmd, Dispatch):
                out += self._dispatch(cmd, now)
            elif isinstance(cmd, Cancel):
                out.append(Trace(ScheduleCancel(plan_task=cmd.task_id, worker=cmd.worker, reason=cmd.reason)))
                out.append(CancelCall(cmd.worker, cmd.task_id, cmd.reason))
            elif isinstance(cmd, SetTimer):
                out.append(SetTimer(cmd.at, ("sched", *cmd.key)))
            elif isinstance(cmd, Decision):
                out.append(Trace(ScheduleDecision(plan_task=cmd.task_id, decision=cmd.decision, reason=cmd.reason)))
                out += self._decided(cmd, now)
            elif isinstance(cmd, Finish):
                self.finish = cmd
                out += self._maybe_done()
        return out

    def _dispatch(self, cmd: Dispatch, now: float) -> list[RunCommand]:
        assert self.scheduler is not None
        node = self.scheduler.nodes[cmd.task_id]
        self.args[cmd.task_id] = cmd.args
        if cmd.task_id == self.final:
            self.final_worker = cmd.worker
        call = self._new_call(_Call("task", cmd.worker, float(cmd.allowance), task=cmd.task_id, attempt=cmd.attempt))
        self.dispatched_at.append(now)
        entry: dict[str, Any] = {
            "state": "dispatched",
            "attempt": cmd.attempt,
            "worker": cmd.worker,
            "stateful": not self.scheduler.read_only(node),
            "round": node.round,
            "committed": self._committed(),
        }
        if node.round > 1:
            entry["args"] = cmd.args
        # Journaled before the ask: if this process dies right after sending, the task is in
        # doubt, never silently "not sent". An ask that fails to go out is journaled not-sent
        # at once (`command_failed`), so a task that was never sent is never in doubt.
        return [
            *self._journal(f"task/{cmd.task_id}", entry),
            Trace(ScheduleDispatch(plan_task=cmd.task_id, skill=cmd.skill, worker=cmd.worker, attempt=cmd.attempt, at=now)),
            Ask(call, cmd.worker, cmd.skill, cmd.args, task=cmd.task_id, attempt=cmd.attempt, key=f"{self.key}/{cmd.idempotency_key}", allowance=cmd.allowance),
        ]

    def _decided(self, cmd: Decision, now: float) -> list[RunCommand]:
        scheduler = self.scheduler
        assert scheduler is not None
        tid = cmd.task_id
        out: list[RunCommand] = []
        if cmd.decision == "completed" and tid in scheduler.results and tid in scheduler.nodes:
            out += self._journal(f"task/{tid}", {"state": "completed", "result": scheduler.results[tid], "attempt": scheduler.nodes[tid].attempt, "committed": self._committed()})
            out.append(Trace(ResultAccepted(plan_task=tid, skill=scheduler.nodes[tid].skill, output=scheduler.results[tid])))
        elif cmd.decision == "failed" and tid in scheduler.nodes:
            out += self._journal(f"task/{tid}", {"state": "failed", "error": cmd.reason, "attempt": scheduler.nodes[tid].attempt, "committed": self._committed()})
        if cmd.decision in _TERMINAL and tid in scheduler.nodes:
            record = self.records.setdefault(tid, {"id": tid, "skill": scheduler.nodes[tid].skill})
            record.update(state=cmd.decision, error=cmd.reason)
            self.reviews.pop(tid, None)
        if cmd.decision == "in-doubt":
            out += self._in_doubt(tid, cmd.reason, now)
        return out

    def _pump(self, now: float) -> list[RunCommand]:
        """After a settle on the ledger, calls and tasks held by the budget may fit."""
        out = self._retry_deferred(now)
        if self.done or self.scheduler is None or self.scheduler.finished:
            return out
        return out + self._sched(self.scheduler.pump(now), now)

    # -- task replies and reviews ------------------------------------------------------------

    def _task_replied(self, call: _Call, result: Result, tokens: float, cost: Any, now: float) -> list[RunCommand]:
        scheduler = self.scheduler
        assert scheduler is not None and call.task is not None
        tid, attempt = call.task, call.attempt
        if scheduler.finished:
            return []
        if not scheduler.is_current(tid, attempt):
            # A late reply (a timed-out, cancelled or lost attempt): traced as stale, and it
            # must not overwrite the record of the attempt that counts.
            return self._sched(scheduler.task_failed(tid, result.error or result.state, attempt=attempt, now=now), now)
        meta = result.metadata or {}
        usage = meta.get("usage") or {}
        record: dict[str, Any] = {
            "id": tid,
            "skill": meta.get("skill") or scheduler.nodes[tid].skill,
            "worker": call.actor,
            "state": result.state,
            "attempt": attempt,
            "startedAt": meta.get("startedAt", 0.0),
            "finishedAt": meta.get("finishedAt", 0.0),
            "durationS": meta.get("durationS", 0.0),
            "inputTokens": int(usage.get("inputTokens", 0)),
            "outputTokens": int(usage.get("outputTokens", 0)),
            "costUsd": usage.get("costUsd", 0.0),
        }
        if not result.ok:
            record["error"] = result.error
        self.records[tid] = record
        if not result.ok and meta.get("maybeRan") and meta.get("retryable", True):  # sent, never acknowledged
            # (One that ran and answered `retryable: false`, a result over the frame limit, is
            # no doubt: it failed for good, its usage known, as below.)
            return self._sched(scheduler.task_unanswered(tid, result.error, attempt=attempt, now=now), now)
        if not result.ok:
            retry_after = meta.get("retryAfterS")
            need, least = meta.get("needTokens"), meta.get("leastTokens")
            return self._sched(
                scheduler.task_failed(
                    tid,
                    result.error or result.state,
                    attempt=attempt,
                    now=now,
                    retryable=result.state != "rejected" and meta.get("retryable", True),
                    retry_after_s=float(retry_after) if retry_after is not None else None,
                    tokens=tokens,
                    need_tokens=float(need) if need is not None else None,
                    least_tokens=float(least) if least is not None else None,
                ),
                now,
            )
        output = result.output
        review = self.gate or (tid == self.final and self.roles.judge is not None)
        out: list[RunCommand] = []
        if self.roles.critic is not None and not self.gate:  # reviewed as it arrives, not held
            out += self._critique(tid, call.actor, output, gate=False, attempt=attempt, now=now)
        if not review:
            return out + self._sched(scheduler.task_succeeded(tid, output, attempt=attempt, now=now, tokens=tokens, cost=cost), now)
        self.reviews[tid] = _Review(call.actor, output, attempt, dict(self.reviews[tid].rounds) if tid in self.reviews else {})
        out += self._sched(scheduler.task_succeeded(tid, output, attempt=attempt, now=now, tokens=tokens, cost=cost, review=True), now)
        if self.gate:
            return out + self._critique(tid, call.actor, output, gate=True, attempt=attempt, now=now)
        return out + self._reviewed(tid, output, now)

    def _critique(self, tid: str, worker: str, output: Any, *, gate: bool, attempt: int, now: float) -> list[RunCommand]:
        assert self.scheduler is not None and self.roles.critic is not None
        skill_id = self.scheduler.nodes[tid].skill
        card = self.cards.get(worker)
        declared = card.contract(skill_id) if card is not None else None
        data = {"taskId": tid, "skill": skill_id, "output": output, "outputSchema": declared.output_schema if declared else None}
        out = self._ask_model("critique", self.roles.critic, "critique", data, now, task=tid, attempt=attempt, gate=gate)
        return out

    def _critique_back(self, call: _Call, result: Result, now: float) -> list[RunCommand]:
        self.pending_critiques -= 1
        critique: Critique | None = None
        if result.ok:
            critique = msgspec.convert(result.output, Critique)
            self.critiques.append(msgspec.to_builtins(critique))
        out: list[RunCommand] = []
        tid = call.task
        review = self.reviews.get(tid or "")
        current = (
            call.gate
            and tid is not None
            and review is not None
            and review.attempt == call.attempt
            and self.scheduler is not None
            and self.scheduler.phase(tid) == "reviewing"
        )
        if current:
            assert tid is not None and review is not None
            if critique is None:
                # No review is no reason to lose the work: it goes on, and the trace says why.
                out.append(Trace(CriticGate(plan_task=tid, decision="passed", reason=f"critic failed: {result.error}")))
                out += self._reviewed(tid, review.output, now)
            elif critique.passed:
                out.append(Trace(CriticGate(plan_task=tid, decision="passed", score=critique.score)))
                out += self._reviewed(tid, review.output, now)
            else:
                out.append(Trace(CriticGate(plan_task=tid, decision="held", score=critique.score, issues=critique.issues)))
                name = f"critic:{tid}"
                loop = self.governor.loops.get(name) or self.governor.open(name)
                reason = f"critic score {critique.score:.2f} below the pass mark"
                verdict = Verdict(decision="retry", reason=reason, iteration=loop.iteration, feedback="; ".join(critique.issues) or reason, score=critique.score)
                self._sync_governor()
                step = self.governor.on_verdict(loop, verdict, answer=review.output, sender=review.worker, judge=call.actor, task=tid)
                out += self._loop_step(loop, step, now)
        return out + self._maybe_judge(now) + self._maybe_done()

    def _reviewed(self, tid: str, output: Any, now: float) -> list[RunCommand]:
        """The critic passed `tid` (or there is none): the final task goes to the judge; any
        other task completes."""
        assert self.scheduler is not None
        if tid == self.final and self.roles.judge is not None and self.judge_loop is not None:
            self.answer = answer_of(output)
            self.reviews[tid].rounds[self.judge_loop.iteration] = output
            self.want_judge = True
            return self._maybe_judge(now)
        self.reviews.pop(tid, None)
        return self._sched(self.scheduler.review_passed(tid, output, now=now), now)

    def _maybe_judge(self, now: float) -> list[RunCommand]:
        """Judge the current answer once every critique asked so far has come back."""
        if not self.want_judge or self.pending_critiques > 0 or self.done:
            return []
        self.want_judge = False
        if self.scheduler is None or self.scheduler.phase(self.final) != "reviewing":
            return self._maybe_done()  # cancelled or stopped meanwhile: nothing to judge
        loop = self.judge_loop
        assert loop is not None and self.roles.judge is not None
        data = {"goal": self.goal, "answer": self.answer, "critiques": list(self.critiques), "iteration": loop.iteration, "maxIterations": loop.cap}
        return self._ask_model("verdict", self.roles.judge, "judge", data, now, task=self.final)

    def _verdict_back(self, call: _Call, result: Result, now: float) -> list[RunCommand]:
        loop = self.judge_loop
        assert loop is not None and self.scheduler is not None
        final = self.final
        if self.scheduler.phase(final) != "reviewing":
            return []
        if not result.ok:
            self.reviews.pop(final, None)
            return self._sched(self.scheduler.review_failed(final, f"judging failed: {result.error}", now=now), now)
        verdict = msgspec.convert(result.output, Verdict)
        if verdict.score is None:
            # The judge gave no score: the critics' mean for the final task stands in.
            scores = [c["score"] for c in self.critiques if c.get("taskId") == final]
            if scores:
                verdict = msgspec.structs.replace(verdict, score=sum(scores) / len(scores))
        self.verdict = msgspec.to_builtins(verdict)
        self._sync_governor()
        step = self.governor.on_verdict(loop, verdict, answer=self.answer, sender=self.final_worker, judge=call.actor, task=final)
        out: list[RunCommand] = [
            Trace(LoopVerdict(loop=loop.name, decision=verdict.decision, iteration=verdict.iteration, score=verdict.score, next=type(step).__name__))
        ]
        return out + self._loop_step(loop, step, now)

    def _loop_step(self, loop: Loop, step: Redo | Conclude | Escalate, now: float) -> list[RunCommand]:
        """Act on the governor's decision for `loop`: the judge loop over the final task, or a
        task's critic loop (`critic:<task>`)."""
        assert self.scheduler is not None
        tid = self.final if loop is self.judge_loop else loop.name.removeprefix("critic:")
        review = self.reviews.get(tid)
        if review is None or self.scheduler.phase(tid) != "reviewing":
            return []
        if isinstance(step, Escalate):
            self.tickets[step.ticket.ticket_id] = _Ticket("loop", step.ticket, "accept-best", tid, loop=loop.name)
            return self._to_human(step.ticket, now)
        if isinstance(step, Redo):
            skill_id = self.scheduler.nodes[tid].skill
            self.critiques = [c for c in self.critiques if c.get("taskId") != tid]
            args = self._with_feedback(review.worker, skill_id, self.args.get(tid, {}), step.feedback)
            return self._sched(self.scheduler.review_redo(tid, args, f"{loop.name}: {step.feedback}", now=now), now)
        out: list[RunCommand] = [
            Trace(LoopEnd(loop=loop.name, state=step.state, reason=step.reason, iteration=step.iteration or 0, scope=step.scope))
        ]
        if loop is self.judge_loop:
            self.outcome = step
            if step.answer is not None:
                self.answer = step.answer
        self.reviews.pop(tid, None)
        if step.state == "failed":
            return out + self._sched(self.scheduler.review_failed(tid, step.reason, now=now), now)
        if loop is self.judge_loop:
            output = review.rounds.get(step.iteration or 0, review.output)
        else:
            output = step.answer if step.answer is not None else review.output
        return out + self._sched(self.scheduler.review_passed(tid, output, f"{loop.name} ended: {step.reason}", now=now), now)

    def _with_feedback(self, worker: str, skill_id: str, args: dict[str, Any], feedback: str) -> dict[str, Any]:
        """`args` plus the feedback, if the skill's input schema takes a `feedback` field."""
        card = self.cards.get(worker)
        schema = (card.contract(skill_id).input_schema if card is not None else None) or {}
        takes = "feedback" in schema.get("properties", {}) or schema.get("additionalProperties", True) is not False
        return dict(args, feedback=feedback) if takes else dict(args)

    # -- the human ---------------------------------------------------------------------------

    def _in_doubt(self, tid: str, why: str, now: float) -> list[RunCommand]:
        """A stateful task whose effect may or may not have happened: held, and put to the
        human (`continue`: run it again with the same key; `abort`: fail it)."""
        assert self.scheduler is not None
        ticket = Escalation(
            ticket_id=f"in-doubt-{tid}",
            loop=f"task:{tid}",
            reason="in-doubt",
            summary=f"task '{tid}' ({self.scheduler.nodes[tid].skill}) is {why}",
            iteration=1,
            options=["continue", "abort"],
            details={"task": tid, "continue": "run it again", "abort": "fail it; its dependents are skipped"},
        )
        if ticket.ticket_id in self.tickets:  # asked again: a fresh ticket id
            ticket = msgspec.structs.replace(ticket, ticket_id=f"{ticket.ticket_id}-{len(self.escalations) + 1}")
        self.tickets[ticket.ticket_id] = _Ticket("in-doubt", ticket, "abort", tid, why=why)
        return [Trace(JournalInDoubt(plan_task=tid, reason=why)), *self._to_human(ticket, now)]

    def _to_human(self, ticket: Escalation, now: float) -> list[RunCommand]:
        self.escalations.append({"ticket": msgspec.to_builtins(ticket)})
        out: list[RunCommand] = [
            Trace(LoopEscalated(ticket_id=ticket.ticket_id, loop=ticket.loop, reason=ticket.reason, iteration=ticket.iteration, summary=ticket.summary))
        ]
        human = self.roles.human
        if human is None:
            return out + self._decide(ticket.ticket_id, None, "no human actor in the run", now)
        call = self._new_call(_Call("human", human, ticket=ticket.ticket_id))
        return [*out, Ask(call, human, "escalate", msgspec.to_builtins(ticket))]

    def _answer_back(self, call: _Call, result: Result, now: float) -> list[RunCommand]:
        entry = self.tickets.get(call.ticket)
        if entry is None:
            return []
        answer: EscalationAnswer | None = None
        why_not = ""
        if not result.ok:
            why_not = f"the human actor failed: {result.error}"
        else:
            try:
                answer = msgspec.convert(result.output, EscalationAnswer)
            except msgspec.ValidationError as exc:
                why_not = f"the human's answer is invalid: {exc}"
            if answer is not None and (answer.ticket_id != entry.ticket.ticket_id or answer.decision not in entry.ticket.options):
                why_not = f"answer refused: {answer.ticket_id} / {answer.decision} does not answer {entry.ticket.ticket_id} with one of {entry.ticket.options}"
                answer = None
        return self._decide(call.ticket, answer, why_not, now)

    def _decide(self, ticket_id: str, answer: EscalationAnswer | None, why_not: str, now: float) -> list[RunCommand]:
        entry = self.tickets.pop(ticket_id)
        if answer is None:
            answer = EscalationAnswer(ticket_id=ticket_id, decision=entry.fallback, by=f"policy ({why_not})")
        record = next(r for r in reversed(self.escalations) if r["ticket"]["ticketId"] == ticket_id)
        record["answer"] = msgspec.to_builtins(answer)
        out: list[RunCommand] = [Trace(LoopAnswer(ticket_id=ticket_id, decision=answer.decision, by=answer.by))]
        assert self.scheduler is not None
        if self.done or self.scheduler.finished:
            return out
        if entry.kind == "in-doubt":
            if answer.decision == "continue":
                return out + self._sched(self.scheduler.unhold(entry.task, now), now)
            reason = f"{entry.why}; {answer.by} chose not to run it again"
            return out + self._sched(self.scheduler.abandon(entry.task, reason, now), now)
        loop = self.governor.loops[entry.loop]
        return out + self._loop_step(loop, self.governor.resolve(answer, task=entry.task), now)

    # -- model calls of the run's own, on the ledger ----------------------------------------

    def _ask_model(
        self,
        kind: CallKind,
        actor: str,
        skill_id: str,
        data: dict[str, Any],
        now: float,
        *,
        task: str | None = None,
        attempt: int = 1,
        gate: bool = False,
        reserve: float | None = None,
        least: float | None = None,
    ) -> list[RunCommand]:
        """Ask for a call that may use a model (plan, critique, verdict): its worst case is
        reserved first. If the budget cannot pay for it now, it waits for the calls in flight
        to settle; if none is in flight, it is not asked for and the budget stops the run."""
        want = float(reserve if reserve is not None else self.policy.est_tokens)
        if kind == "critique":
            self.pending_critiques += 1  # until it is back (or given up with the run)
        granted = self.ledger.grant(want, float(least) if least is not None else want)
        if granted is None and self.ledger.tokens.reserved > 0:
            short = self.ledger.shortfall(float(least) if least is not None else want)
            self.deferred.append(dict(kind=kind, actor=actor, skill_id=skill_id, data=data, task=task, attempt=attempt, gate=gate, reserve=want, least=least))
            return [Trace(BudgetWait(call=kind, plan_task=task, reason=short or ""))]
        if granted is None:
            if kind == "critique":
                self.pending_critiques -= 1
            short = self.ledger.shortfall(float(least) if least is not None else want) or "the run's budget is spent"
            return self._budget_stop(kind, short, task if gate or kind == "verdict" else None, now)
        est = granted
        self.ledger.reserve(est)
        call = self._new_call(_Call(kind, actor, est, task=task, attempt=attempt, gate=gate, data=data))
        # What the run may have spent, reservation included, is journaled before the ask: a
        # coordinator that dies with this call in flight resumes counting it as spent.
        return [*self._journal_run(), Ask(call, actor, skill_id, data, allowance=int(est))]

    def _retry_deferred(self, now: float) -> list[RunCommand]:
        """Calls that waited for the budget, in order, once there is room (or nothing left in
        flight to make room)."""
        out: list[RunCommand] = []
        while self.deferred and not self.done:
            d = self.deferred[0]
            least = d["least"] if d["least"] is not None else d["reserve"]
            if self.ledger.grant(d["reserve"], least) is None and self.ledger.tokens.reserved > 0:
                break
            self.deferred.pop(0)
            if d["kind"] == "critique":
                self.pending_critiques -= 1
            out += self._ask_model(d.pop("kind"), d.pop("actor"), d.pop("skill_id"), d.pop("data"), now, **d)
        return out

    def _budget_stop(self, kind: CallKind, reason: str, task: str | None, now: float) -> list[RunCommand]:
        """A call the run needs does not fit its budget: nothing more is asked for; the run
        ends partial (or failed), never completed."""
        self.budget_reason = self.budget_reason or reason
        out: list[RunCommand] = [Trace(BudgetStop(call=kind, plan_task=task, reason=reason))]
        if kind == "plan" or self.scheduler is None:
            return out + self._end(error=f"planning not started: {reason}")
        scheduler = self.scheduler
        out += self._sched(scheduler.exhaust(reason, now), now)
        if task is not None and task in scheduler.nodes and scheduler.phase(task) == "reviewing":
            review = self.reviews.pop(task, None)
            if kind == "verdict" and review is not None:
                # The answer stands, unjudged; the run says so (partial).
                out += self._sched(scheduler.review_passed(task, review.output, f"not judged: {reason}", now=now), now)
            else:
                out += self._sched(scheduler.review_failed(task, f"not reviewed: {reason}", now=now), now)
        return out + self._maybe_judge(now) + self._maybe_done()

    def _new_call(self, call: _Call) -> int:
        self._calls += 1
        self.calls[self._calls] = call
        return self._calls

    def _sync_governor(self) -> None:
        # The governor's budget cap sees the run's one ledger.
        self.governor.tokens = int(self.ledger.tokens.spent)

    # -- the journal --------------------------------------------------------------------------

    def _committed(self) -> dict[str, float]:
        return {"tokens": self.ledger.committed, "cost": self.ledger.committed_cost}

    def _journal(self, key: str, value: Any) -> list[RunCommand]:
        # The state store redacts every value it writes (Namespace.put), journal values too.
        return [Journal(key, value)] if self.journaling else []

    def _journal_run(self) -> list[RunCommand]:
        """The run's own record: what it may have spent, its loops' counters, its tickets."""
        if not self.journaling or self.done:
            return []
        g = self.governor
        return self._journal(
                "run",
                {
                    "committed": self._committed(),
                    "governor": {
                        "runIterations": g.run_iterations,
                        "taskRuns": g.task_runs,
                        "issued": g.issued,
                        "loops": {
                            n: {"iteration": lp.iteration, "rounds": [[r.iteration, r.score, r.answer] for r in lp.rounds]}
                            for n, lp in g.loops.items()
                        },
                    },
                    "escalations": self.escalations,
                },
            )

    def _resume(self, resumed: Resumed, now: float) -> list[RunCommand]:
        """Carry on from the journal: completed tasks are not run again; read-only ones that
        were sent go back to the same worker with the same key (its cache answers); stateful
        ones that were sent are in doubt; the ledger, attempts, loops and tickets carry on."""
        scheduler = self.scheduler
        assert scheduler is not None
        done: dict[str, Any] = {}
        failed: dict[str, str] = {}
        in_doubt: dict[str, str] = {}
        prefer: dict[str, str] = {}
        attempts: dict[str, tuple[int, int, dict[str, Any] | None]] = {}
        committed = [resumed.run.get("committed") or {}]
        for tid, entry in resumed.tasks.items():
            committed.append(entry.get("committed") or {})
            if tid not in scheduler.nodes:
                continue
            state = entry.get("state")
            attempts[tid] = (int(entry.get("attempt", 0)), int(entry.get("round", 1)), entry.get("args"))
            if state == "completed":
                done[tid] = entry.get("result")
            elif state == "failed":
                failed[tid] = str(entry.get("error", "failed before the restart"))
            elif state in ("dispatched", "running") and not entry.get("stateful"):
                prefer[tid] = str(entry.get("worker", ""))
            elif state in ("dispatched", "running"):
                in_doubt[tid] = (
                    f"in doubt: attempt {entry.get('attempt')} on {entry.get('worker')} was dispatched "
                    "when the coordinator stopped; its effect may or may not have happened, so it "
                    "is not run again blindly"
                )
        self.ledger.restore(
            max(float(c.get("tokens", 0.0)) for c in committed), max(float(c.get("cost", 0.0)) for c in committed)
        )
        g = resumed.run.get("governor") or {}
        self.governor.run_iterations = int(g.get("runIterations", 0))
        self.governor.task_runs = {str(k): int(v) for k, v in (g.get("taskRuns") or {}).items()}
        self.governor.issued = int(g.get("issued", 0))
        for name, state in (g.get("loops") or {}).items():
            loop = self.governor.open(name)
            loop.iteration = int(state.get("iteration", 1))
            loop.rounds = [_Round(int(i), answer, score) for i, score, answer in state.get("rounds", [])]
        self.judge_loop = self.governor.loops.get("judge") or self.governor.open("judge")
        self.escalations = list(resumed.run.get("escalations") or [])
        out: list[RunCommand] = [
            Trace(JournalResume(job=self.key, done=len(done), in_doubt=len(in_doubt)))
        ]
        out += self._sched(scheduler.resume(done, now, failed=failed, prefer=prefer, held=in_doubt, attempts=attempts), now)
        for tid, why in in_doubt.items():
            out += self._in_doubt(tid, why, now)
        return out

    # -- the end ---------------------------------------------------------------------------

    def _ref_note(self, tid: str, field_path: str | None) -> str:
        """Which `${ref}` of task `tid`'s arguments gave the value at `field_path` ($.a.b)."""
        assert self.plan is not None
        task = next((t for t in self.plan.tasks if t.id == tid), None)
        if task is None:
            return ""
        value: Any = task.args
        for part in (field_path or "$").removeprefix("$").split("."):
            if not part:
                continue
            value = value.get(part) if isinstance(value, dict) else None
        refs = _REF.findall(value) if isinstance(value, str) else []
        if not refs:
            refs = _REF.findall(msgspec.json.encode(task.args).decode())
            return f"; task '{tid}' takes {', '.join('${' + r + '}' for r in refs)} in its arguments" if refs else ""
        return "; the value came from " + ", ".join(f"${{{r}}} (the result of task '{r.split('.')[0]}')" for r in refs)

    def _maybe_done(self) -> list[RunCommand]:
        if self.finish is None or self.pending_critiques > 0 or self.want_judge or self.done:
            return []
        return self._end()

    def state(self) -> tuple[str, str]:
        """The run's end state and reason."""
        finish = self.finish
        assert finish is not None
        budget = self.budget_reason or (finish.reason if finish.budget else "")
        if budget:
            return ("partial" if finish.results else "failed"), budget
        if finish.state != "completed":
            return "failed", finish.reason
        if self.outcome is not None:
            return self.outcome.state, self.outcome.reason
        if self.roles.judge is None:
            return "completed", "no judge in the run"
        return "completed", ""

    def _end(self, error: str | None = None) -> list[RunCommand]:
        if self.done:
            return []
        self.done = True
        if error is not None:
            return [Reply(error=error)]
        return [Reply(output=self.output())]

    def output(self) -> RunReport:
        finish = self.finish
        assert finish is not None and self.plan is not None and self.judge_loop is not None
        state, reason = self.state()
        if not self.answer and self.final in finish.results:
            self.answer = answer_of(finish.results[self.final])
        outcome = self.outcome
        return RunReport(
            answer=self.answer,
            state=state,  # type: ignore[arg-type]
            reason=reason,
            # Partial results too, when the plan failed or a budget stopped it.
            results=finish.results,
            schedule=ScheduleFigures(
                core_cpu_s=round(self.cpu_s, 6),
                core_events=self.events,
                dispatches=len(self.dispatched_at),
                dispatch_span_s=round(self.dispatched_at[-1] - self.dispatched_at[0], 6) if self.dispatched_at else 0.0,
                rpm_limit=self.policy.rpm,
                max_in_flight=self.policy.max_in_flight,
                failed=finish.failed,
                skipped=finish.skipped,
                cancelled=finish.cancelled,
            ),
            budget=BudgetFigures(
                token_budget=self.ledger.tokens.cap,
                tokens_spent=self.ledger.tokens.spent,
                cost_budget=self.ledger.cost.cap,
                cost_spent=round(self.ledger.cost.spent, 8),
            ),
            iterations=self.judge_loop.iteration,
            loop=LoopSummary(
                name=self.judge_loop.name,
                cap=self.judge_loop.cap,
                ended_by=outcome.scope if outcome else None,
                answer_iteration=outcome.iteration if outcome else None,
                answer_score=outcome.score if outcome else None,
            ),
            escalations=[msgspec.convert(e, EscalationRecord) for e in self.escalations],
            verdict=msgspec.convert(self.verdict, Verdict) if self.verdict else None,
            critiques=[msgspec.convert(c, Critique) for c in self.critiques],
            plan=self.plan,
            tasks=[msgspec.convert(self.records[t.id], TaskRecord) for t in self.plan.tasks if t.id in self.records],
        )
