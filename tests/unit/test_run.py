"""The run core in memory: one test per defect of issue 12, each driven through events and
commands only (no processes, no clock). `Harness` plays the shell: it records what the core
asks for and answers with scripted replies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from agentrt.actors._loops import LoopLimits
from agentrt.actors._run import (
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
from agentrt.actors._scheduler import Policy
from agentrt.protocols import (
    AgentCard,
    AgentSkill,
    JournalInDoubt,
    ScheduleDecision,
    SchemaError,
    SkillContract,
    agent_card,
)

OPEN = {"type": "object"}


def card(name: str, *skills: tuple[str, bool]) -> AgentCard:
    return agent_card(
        name,
        name,
        [(AgentSkill(id=s, name=s, description=s, tags=[s]), SkillContract(read_only=ro, input_schema=OPEN)) for s, ro in skills],
    )


CARDS = {
    "producer": card("producer", ("plan", True)),
    "w1": card("w1", ("write", True), ("charge", False), ("shout", True)),
    "w2": card("w2", ("write", True), ("charge", False), ("shout", True)),
    "critic": card("critic", ("critique", True)),
    "judge": card("judge", ("judge", True)),
    "human": card("human", ("escalate", False)),
}


def ok(output: Any, tokens: int = 0) -> Result:
    return Result(ok=True, output=output, metadata={"usage": {"inputTokens": tokens, "outputTokens": 0}})


def fail(error: str, **meta: Any) -> Result:
    return Result(ok=False, state="failed", error=error, metadata=meta)


def passed(ask: Ask) -> Result:
    return ok({"taskId": ask.data["taskId"], "score": 0.9, "passed": True, "issues": []})


def accept(ask: Ask) -> Result:
    return ok({"decision": "accept", "reason": "good", "iteration": ask.data["iteration"], "score": 0.9})


class Harness:
    """The shell, in memory: commands recorded, asks answered by `respond` (None: no answer yet)."""

    def __init__(self, run: Run, respond: Callable[[Ask], Result | None]) -> None:
        self.run = run
        self.respond = respond
        self.now = 0.0
        self.asks: list[Ask] = []
        self.waiting: list[Ask] = []
        self.journal: dict[str, Any] = {}
        self.traces: list[Trace] = []
        self.timers: list[SetTimer] = []
        self.cancels: list[CancelCall] = []
        self.reply: Reply | None = None
        self.fail_ask: Callable[[Ask], BaseException | None] = lambda a: None

    def feed(self, commands: list[RunCommand]) -> None:
        failures: list[tuple[RunCommand, BaseException]] = []
        for cmd in commands:
            if isinstance(cmd, Ask):
                exc = self.fail_ask(cmd)
                if exc is not None:
                    failures.append((cmd, exc))
                    continue
                self.asks.append(cmd)
                self.waiting.append(cmd)
            elif isinstance(cmd, Journal):
                self.journal[cmd.key] = cmd.value
            elif isinstance(cmd, Trace):
                self.traces.append(cmd)
            elif isinstance(cmd, SetTimer):
                self.timers.append(cmd)
            elif isinstance(cmd, CancelCall):
                self.cancels.append(cmd)
            elif isinstance(cmd, Reply):
                assert self.reply is None, "replied twice"
                self.reply = cmd
        for cmd, exc in failures:
            self.feed(self.run.command_failed(cmd, exc, self.now))

    def start(self, data: dict[str, Any], resumed: Resumed | None = None) -> Harness:
        self.feed(self.run.start(data, self.now, resumed))
        return self

    def settle(self, limit: int = 1000) -> None:
        """Answer what can be answered, oldest first, until nothing more comes."""
        answers: dict[int, Result | None] = {}
        for _ in range(limit):
            for a in self.waiting:
                if answers.get(a.call) is None:
                    answers[a.call] = self.respond(a)
            ready = [(a, r) for a in self.waiting if (r := answers.get(a.call)) is not None]
            if not ready:
                return
            ask, result = ready[0]
            self.waiting.remove(ask)
            self.now += 1.0
            self.feed(self.run.replied(ask.call, result, self.now))
        raise AssertionError("the run did not settle")

    def fire(self, key: tuple[Any, ...]) -> None:
        self.feed(self.run.timer(key, self.now))

    def resumed(self) -> Resumed:
        prefix = "task/"
        return Resumed(
            plan=self.journal["plan"],
            tasks={k[len(prefix) :]: v for k, v in self.journal.items() if k.startswith(prefix)},
            run=self.journal.get("run", {}),
        )

    def decisions(self, task: str) -> list[str]:
        return [t.event.decision for t in self.traces if isinstance(t.event, ScheduleDecision) and t.event.plan_task == task]

    @property
    def output(self) -> dict[str, Any]:
        """The job's report, as it goes on the wire (camelCase)."""
        assert self.reply is not None and self.reply.output is not None, self.reply
        return msgspec.to_builtins(self.reply.output)


def make(roles: Roles, policy: Policy | None = None, limits: LoopLimits | None = None, gate: bool = True) -> Run:
    return Run(
        key="job",
        goal="g",
        policy=policy or Policy(),
        limits=limits or LoopLimits(),
        roles=roles,
        cards=CARDS,
        gate=gate,
    )


def plan(*tasks: dict[str, Any], final: str | None = None) -> dict[str, Any]:
    return {"goal": "g", "tasks": list(tasks), **({"final": final} if final else {})}


# -- the budget is a cap over every model call of the run ---------------------------------


def test_the_budget_caps_every_model_call_producer_critic_and_judge_included() -> None:
    """Old code: the producer's, critic's and judge's calls were charged to no ledger and a
    worker's usage could pass its reservation: 879 tokens spent of a 700 budget, `completed`."""
    spent: list[int] = []

    def respond(a: Ask) -> Result | None:
        assert a.allowance is not None, f"{a.skill} asked with no allowance"
        used = a.allowance  # every callee spends all it may
        spent.append(used)
        if a.skill == "plan":
            return ok(plan(*[{"id": f"s{i}", "skill": "write", "args": {}} for i in range(5)], {"id": "syn", "skill": "write", "args": {"f": [f"${{s{i}}}" for i in range(5)]}}), used)
        if a.skill == "critique":
            return Result(ok=True, output=passed(a).output, metadata={"usage": {"inputTokens": used}})
        if a.skill == "judge":
            r = accept(a)
            return Result(ok=True, output=r.output, metadata={"usage": {"inputTokens": used}})
        return ok({"text": "x" * 50}, used)

    h = Harness(make(Roles(producer="producer", critic="critic", judge="judge"), Policy(token_budget=700, est_tokens=100)), respond).start({"goal": "g"})
    h.settle()
    out = h.output
    assert sum(spent) <= 700 and out["budget"]["tokensSpent"] == sum(spent)
    assert {a.skill for a in h.asks} >= {"plan", "critique", "write"}
    assert out["state"] == "partial"
    assert out["reason"].startswith("token budget 700 reached: 700 spent") and "next call needs 100" in out["reason"]


def test_a_call_that_needs_more_than_its_allowance_is_asked_again_if_the_budget_has_it() -> None:
    def respond(a: Ask) -> Result | None:
        if a.allowance is not None and a.allowance < 300:
            return fail("model call not sent", needTokens=300, retryable=False)
        return ok({"text": "done"}, 250)

    h = Harness(make(Roles(), Policy(token_budget=1000, est_tokens=100)), respond)
    h.start({"goal": "g", "plan": plan({"id": "a", "skill": "write", "args": {}})}).settle()
    assert [a.allowance for a in h.asks] == [100, 300]
    assert h.output["state"] == "completed" and h.output["budget"]["tokensSpent"] == 250
    h2 = Harness(make(Roles(), Policy(token_budget=200, est_tokens=100)), respond)
    h2.start({"goal": "g", "plan": plan({"id": "a", "skill": "write", "args": {}})}).settle()
    assert [a.allowance for a in h2.asks] == [100]
    assert h2.output["state"] == "failed"
    assert h2.output["reason"] == "token budget 200 reached: 0 spent, next call needs 300"


# -- the loops' redos are new attempts through the scheduler --------------------------------


def test_a_judge_loop_redo_is_a_new_attempt_with_a_timer_a_reservation_and_retries() -> None:
    """Old code: `_loop_step -> _dispatch -> ctx.ask` sent the redo with no rate draw, no
    reservation, no timer, no retry; one failed redo ended the job."""
    verdicts = iter(["retry", "accept"])
    redo_failures = iter([True])

    def respond(a: Ask) -> Result | None:
        if a.skill == "judge":
            d = next(verdicts)
            return ok({"decision": d, "reason": d, "iteration": a.data["iteration"], "feedback": "deeper", "score": 0.5})
        if a.attempt == 2 and next(redo_failures, False):
            return fail("worker hiccup")
        return ok({"text": f"draft {a.attempt} {a.data.get('feedback', '')}"}, 10)

    h = Harness(make(Roles(judge="judge"), Policy(timeout_s=30, max_attempts=2, backoff_s=0.1, jitter=0)), respond)
    h.start({"goal": "g", "plan": plan({"id": "t", "skill": "write", "args": {}})})
    h.settle()
    assert h.reply is None  # the redo failed once: it is in backoff, not the end of the job
    retry = next(t for t in h.timers if t.key[:2] == ("sched", "retry"))
    h.now = retry.at
    h.fire(retry.key)
    h.settle()
    writes = [a for a in h.asks if a.skill == "write"]
    assert [a.attempt for a in writes] == [1, 2, 3]
    assert writes[1].data["feedback"] == "deeper" and writes[1].key == "job/t@round2" != writes[0].key
    assert all(a.allowance for a in writes)
    assert {t.key for t in h.timers if t.key[1] == "timeout"} == {("sched", "timeout", "t", n) for n in (1, 2, 3)}
    assert h.output["state"] == "completed" and h.output["answer"].startswith("draft 3")


def test_a_critic_loop_redo_runs_under_its_own_attempt_number_and_timer() -> None:
    """Old code sent the critic-loop redo with the first attempt's number, so the core's
    timeout for (task, 1) governed it and that timer's cancel targeted the redo."""
    critiques = iter([False, True])

    def respond(a: Ask) -> Result | None:
        if a.skill == "critique":
            good = next(critiques)
            return ok({"taskId": "t", "score": 0.9 if good else 0.2, "passed": good, "issues": [] if good else ["too short"]})
        if a.attempt == 2:
            return None  # the redo is still running when the first attempt's timer fires
        return ok({"text": "v1"})

    h = Harness(make(Roles(critic="critic"), Policy(timeout_s=5)), respond)
    h.start({"goal": "g", "plan": plan({"id": "t", "skill": "write", "args": {}})})
    h.settle()
    (redo,) = [a for a in h.asks if a.skill == "write" and a.attempt == 2]
    assert redo.data["feedback"] == "too short"
    h.now = 100.0
    h.fire(("sched", "timeout", "t", 1))  # the first attempt's timer: nothing to do now
    assert not h.cancels and h.reply is None
    h.fire(("sched", "timeout", "t", 2))  # the redo's own timer cancels the redo
    assert [(c.actor, c.task) for c in h.cancels] == [(redo.actor, "t")]
    assert "timed-out" in h.decisions("t")


# -- a command that fails is an event, not a hang --------------------------------------------


def test_a_dispatch_that_cannot_be_sent_fails_its_task_at_once_naming_the_field_and_the_ref() -> None:
    """Old code: `ctx.ask` raised SchemaError inside `_dispatch`, the rest of the batch (the
    timer too) was dropped, and the job waited for its timeout."""
    h = Harness(make(Roles(), Policy(timeout_s=600)), lambda a: ok({"text": "A"}))

    def schema_check(a: Ask) -> BaseException | None:
        if a.task == "t2" and not isinstance(a.data["text"], str):
            return SchemaError("input of skill 'shout' on 'w1': field '$.text' is invalid: {'text': 'A'} is not of type 'string' (rule: type)", field="$.text", rule="type")
        return None

    h.fail_ask = schema_check
    h.start({"goal": "g", "plan": plan({"id": "t1", "skill": "shout", "args": {"text": "a"}}, {"id": "t2", "skill": "shout", "args": {"text": "${t1}"}}, {"id": "t3", "skill": "shout", "args": {"text": "${t2}"}})})
    h.settle()
    out = h.output
    assert out["state"] == "failed"
    error = out["schedule"]["failed"]["t2"]
    assert "field '$.text'" in error and "(rule: type)" in error and "${t1}" in error
    assert out["schedule"]["skipped"]["t3"] == "dependency 't2' did not complete"
    assert [a.task for a in h.asks] == ["t1"]  # t2 was never sent, and not retried
    assert h.journal["task/t2"]["state"] == "failed"  # not "dispatched": it never went out


# -- stateful work is never silently repeated ---------------------------------------------


def test_a_stateful_task_lost_with_its_worker_is_put_to_the_human_not_run_again() -> None:
    """Old code re-dispatched it to another worker with the same key: the effect ran twice."""
    answers: list[str] = []

    def respond(a: Ask) -> Result | None:
        if a.skill == "escalate":
            return ok({"ticketId": a.data["ticketId"], "decision": answers.pop(0), "by": "ops"}) if answers else None
        return None if a.attempt == 1 else ok({"charged": True})

    h = Harness(make(Roles(human="human")), respond)
    h.start({"goal": "g", "plan": plan({"id": "pay", "skill": "charge", "args": {}})})
    (first,) = h.asks
    h.feed(h.run.node_down([first.actor], "node died", 1.0))
    assert [(c.actor, c.task) for c in h.cancels] == [(first.actor, "pay")]
    assert [a.skill for a in h.asks] == ["charge", "escalate"]  # not run again: asked about
    ticket = h.asks[-1].data
    assert ticket["reason"] == "in-doubt" and ticket["options"] == ["continue", "abort"]
    answers.append("continue")
    h.settle()
    again = [a for a in h.asks if a.skill == "charge"]
    assert len(again) == 2 and again[1].key == first.key  # the person said so: same key
    assert h.output["state"] == "completed"


def test_with_no_human_an_in_doubt_task_fails_and_is_never_sent_again() -> None:
    h = Harness(make(Roles()), lambda a: None)
    h.start({"goal": "g", "plan": plan({"id": "pay", "skill": "charge", "args": {}}, {"id": "log", "skill": "write", "args": {"x": "${pay}"}})})
    (first,) = h.asks
    h.feed(h.run.node_down([first.actor], "node died", 1.0))
    h.feed(h.run.node_up([first.actor], 2.0))
    assert [a.skill for a in h.asks] == ["charge"]
    out = h.output
    assert out["state"] == "failed" and "in doubt" in out["schedule"]["failed"]["pay"]
    assert out["escalations"][0]["answer"]["decision"] == "abort"


def test_a_stateful_request_sent_and_never_acknowledged_is_in_doubt_not_retried() -> None:
    """Its sender gave up on it (`undelivered`, after every resend) but it may have arrived and
    run, only its acks lost (a one-way cut that heartbeats survive): old code retried it as a
    failure, on whichever worker was free, where it ran a second time."""
    undelivered = "undelivered: 'w1' never acknowledged the request (sent 10 times, never acknowledged)"
    retrying = Policy(max_attempts=2, backoff_s=0.1, jitter=0)
    h = Harness(make(Roles(), retrying), lambda a: fail(undelivered, maybeRan=True) if a.attempt == 1 else ok({"x": 1}))
    h.start({"goal": "g", "plan": plan({"id": "pay", "skill": "charge", "args": {}})})
    h.settle()
    assert [a.skill for a in h.asks] == ["charge"]  # never sent again
    out = h.output
    assert out["state"] == "failed" and "in doubt" in out["schedule"]["failed"]["pay"]
    assert "never acknowledged" in out["schedule"]["failed"]["pay"]
    # A read-only one is simply asked again; so is a request that was never sent at all.
    for task, meta in (("r", {"maybeRan": True}), ("pay", {})):
        skill = "write" if task == "r" else "charge"
        retrying = Policy(max_attempts=2, backoff_s=0.1, jitter=0)
        h = Harness(make(Roles(), retrying), lambda a, meta=meta: fail(undelivered, **meta) if a.attempt == 1 else ok({"text": "x"}))
        h.start({"goal": "g", "plan": plan({"id": task, "skill": skill, "args": {}})})
        h.settle()
        h.fire(h.timers[-1].key)  # its backoff
        h.settle()
        assert [a.attempt for a in h.asks if a.skill == skill] == [1, 2] and h.output["state"] == "completed"


def test_a_result_over_the_frame_limit_fails_its_task_for_good_with_its_usage() -> None:
    """A node answers a result over the frame limit failed, `maybeRan` (the skill ran to its
    end) and `retryable: false` (its key keeps that result: a retry gets the same answer).
    Old code took it as unanswered: a read-only task was asked again up to max_attempts, each
    attempt charged its whole allowance (3 x 1000 tokens for 3 x 15 used); a stateful one
    was put to a human as "may or may not have happened", with "continue" that cannot help."""
    over = "the result of skill '{}' on 'w1' was 5000000 bytes, over limits.max_frame_bytes"
    for task, skill in (("r", "write"), ("pay", "charge")):
        retrying = Policy(max_attempts=3, backoff_s=0.1, jitter=0)
        answer = fail(over.format(skill), maybeRan=True, retryable=False, usage={"inputTokens": 10, "outputTokens": 5})
        h = Harness(make(Roles(), retrying), lambda a, answer=answer: answer)
        h.start({"goal": "g", "plan": plan({"id": task, "skill": skill, "args": {}})})
        h.settle()
        assert [a.attempt for a in h.asks] == [1] and not h.timers, task  # not asked again
        out = h.output
        assert out["state"] == "failed" and "over limits.max_frame_bytes" in out["schedule"]["failed"][task]
        assert "in doubt" not in out["schedule"]["failed"][task] and not out["escalations"]
        assert h.run.ledger.tokens.spent == 15 and h.run.ledger.tokens.reserved == 0


def test_a_model_call_sent_and_never_acknowledged_counts_its_allowance_as_spent() -> None:
    """A critique (as a plan or a verdict) that its asker's messenger gave up on may have
    arrived and run its model call, as a task attempt may: its allowance is spent. Old code
    settled it as 0 tokens used (no usage came back), so the budget could be overspent."""

    def respond(a: Ask) -> Result | None:
        if a.skill == "critique":
            return fail("undelivered: 'critic' never acknowledged the request (sent 10 times, never acknowledged)", maybeRan=True)
        return ok({"text": "x"}, 10)

    h = Harness(make(Roles(critic="critic"), Policy(token_budget=1000, est_tokens=100)), respond)
    h.start({"goal": "g", "plan": plan({"id": "a", "skill": "write", "args": {}})}).settle()
    out = h.output
    critiques = [a.allowance or 0 for a in h.asks if a.skill == "critique"]
    assert out["state"] == "completed" and critiques  # no review is no reason to lose the work
    assert out["budget"]["tokensSpent"] == 10 + sum(critiques)


def test_a_read_only_task_lost_with_its_worker_goes_to_a_live_one() -> None:
    h = Harness(make(Roles()), lambda a: ok({"text": "x"}) if a.attempt == 2 else None)
    h.start({"goal": "g", "plan": plan({"id": "r", "skill": "write", "args": {}})})
    (first,) = h.asks
    h.feed(h.run.node_down([first.actor], "node died", 1.0))
    h.settle()
    assert [a.actor for a in h.asks] == [first.actor, "w2" if first.actor == "w1" else "w1"]
    assert h.output["state"] == "completed"


# -- resume restores the whole run ----------------------------------------------------------


def test_resume_keeps_what_was_spent_the_attempts_the_loop_counters_and_the_tickets() -> None:
    """Old code journaled neither the budget spent, nor attempts, nor the governor's state:
    each life of the coordinator started with a fresh budget and fresh caps."""
    policy = Policy(token_budget=1000, est_tokens=100, max_attempts=2, backoff_s=0.1, jitter=0)
    roles = Roles(judge="judge")
    verdicts = iter(["retry"])

    def respond(a: Ask) -> Result | None:
        if a.skill == "judge":
            d = next(verdicts, None)
            return ok({"decision": d, "reason": "more", "iteration": a.data["iteration"], "feedback": "more", "score": 0.4}, 100) if d else None
        if a.task == "b":
            return None  # in flight when the coordinator dies
        return ok({"text": f"a{a.attempt}"}, 100)

    h = Harness(make(roles, policy), respond)
    h.start({"goal": "g", "plan": plan({"id": "b", "skill": "write", "args": {}}, {"id": "a", "skill": "write", "args": {}}, final="a")})
    h.settle()
    spent_before = h.run.ledger.tokens.spent
    assert spent_before == 300 and h.run.governor.run_iterations == 1
    # A new life of the coordinator: its journal is all it has.
    life2 = make(roles, policy)
    h2 = Harness(life2, lambda a: ok({"text": "again"}, 10) if a.skill == "write" else accept(a))
    h2.start({"goal": "g"}, resumed=h.resumed())
    assert life2.ledger.tokens.spent >= spent_before  # what the first life may have spent
    assert life2.governor.run_iterations == 1 and life2.judge_loop is not None and life2.judge_loop.iteration == 2
    assert [(r.iteration, r.score, r.answer) for r in life2.judge_loop.rounds] == [(1, 0.4, "a1")]  # its best so far
    sent_b = [a for a in h2.asks if a.task == "b"]
    assert sent_b and sent_b[0].attempt == 2 and sent_b[0].key == "job/b"  # same key, next attempt
    h2.settle()
    assert h2.output["state"] == "completed"


def test_a_task_that_was_never_sent_is_not_in_doubt_after_a_restart() -> None:
    """Old code journaled "running" before the send: a stateful task whose ask failed came
    back from the journal as in doubt."""
    from agentrt.protocols import RoutingError

    h = Harness(make(Roles(), Policy(max_attempts=3, backoff_s=1, jitter=0)), lambda a: None)
    h.fail_ask = lambda a: RoutingError("no route to w1")
    h.start({"goal": "g", "plan": plan({"id": "pay", "skill": "charge", "args": {}})})
    assert h.journal["task/pay"]["state"] == "not-sent"
    h2 = Harness(make(Roles()), lambda a: ok({"charged": True}))
    h2.start({"goal": "g"}, resumed=h.resumed())
    assert not [t for t in h2.traces if isinstance(t.event, JournalInDoubt)]
    h2.settle()
    assert h2.output["state"] == "completed"


@pytest.mark.parametrize("retry_after", [86400.0])
def test_a_workers_retry_after_is_capped_and_the_cap_is_traced(retry_after: float) -> None:
    h = Harness(make(Roles(), Policy(max_attempts=2, retry_after_max_s=60)), lambda a: None)
    h.start({"goal": "g", "plan": plan({"id": "t", "skill": "write", "args": {}})})
    (first,) = h.asks
    h.feed(h.run.replied(first.call, fail("429", retryAfterS=retry_after), 0.0))
    (retry,) = [t for t in h.timers if t.key[:2] == ("sched", "retry")]
    assert retry.at == 60.0
    assert any("capped by retry_after_max_s" in t.event.reason for t in h.traces if isinstance(t.event, ScheduleDecision))


def test_cancelling_a_run_whose_final_task_awaits_its_review_still_replies() -> None:
    critique_back: list[Ask] = []

    def respond(a: Ask) -> Result | None:
        if a.skill == "critique":
            return passed(a) if critique_back else None
        if a.skill == "judge":
            return accept(a)
        return ok({"text": "draft"})

    h = Harness(make(Roles(critic="critic", judge="judge"), gate=False), respond)
    h.start({"goal": "g", "plan": plan({"id": "t", "skill": "write", "args": {}})})
    h.settle()  # the critique has not come back: the judge waits for it
    h.feed(h.run.cancel("user pressed Ctrl-C", h.now))
    assert h.reply is None  # the critique asked for is awaited
    critique_back.append(h.asks[-1])
    h.settle()
    assert h.output["state"] == "failed" and "cancelled" in h.output["reason"]
    assert not [a for a in h.asks if a.skill == "judge"]  # nothing left to judge
