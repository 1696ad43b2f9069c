"""The loop governor, driven directly: caps per scope, ping-pong and stall detection,
escalation tickets and the human's answer."""

from __future__ import annotations

import pytest

from agentrt.actors._loops import Conclude, Escalate, Governor, LoopLimits, Redo, digest
from agentrt.protocols import EscalationAnswer, Verdict


def retry(it: int, feedback: str = "more depth", score: float | None = None) -> Verdict:
    return Verdict(decision="retry", reason="not yet", iteration=it, feedback=feedback, score=score)


def governor(**limits: object) -> Governor:
    # Detection off unless a test turns it on, so cap tests see caps only.
    limits.setdefault("escalate_on", [])
    return Governor(LoopLimits(**limits), token_budget=1_000_000)  # type: ignore[arg-type]


def run_rounds(gov: Governor, loop, answers: list[str], feedback=None, scores=None, task=None):
    """Feed one verdict per answer; stop at the first step that is not a Redo."""
    step = None
    for i, answer in enumerate(answers):
        fb = feedback[i] if feedback else f"feedback {i}"
        score = scores[i] if scores else None
        step = gov.on_verdict(
            loop, retry(loop.iteration, fb, score), answer=answer, sender="writer", judge="editor", task=task
        )
        if not isinstance(step, Redo):
            return step, i + 1
    return step, len(answers)


def test_accept_and_stop_end_the_loop() -> None:
    gov = governor()
    loop = gov.open("judge")
    step = gov.on_verdict(
        loop, Verdict(decision="accept", reason="good", iteration=1, score=0.9),
        answer="A", sender="w", judge="j",
    )
    assert step == Conclude("completed", "good", "A", 1, 0.9)
    loop2 = gov.open("other")
    gov.on_verdict(loop2, retry(1, score=0.7), answer="first", sender="w", judge="j")
    stop = gov.on_verdict(
        loop2, Verdict(decision="stop", reason="enough", iteration=2, score=0.2),
        answer="second", sender="w", judge="j",
    )
    # a stop keeps the best answer so far, not the last
    assert isinstance(stop, Conclude) and stop.state == "stopped" and stop.answer == "first"


def test_loop_cap_ends_with_the_best_answer() -> None:
    gov = governor(max_iterations=3)
    loop = gov.open("judge")
    step, rounds = run_rounds(gov, loop, ["a", "b", "c", "d"], scores=[0.4, 0.8, 0.5, 0.9])
    assert rounds == 3
    assert isinstance(step, Conclude) and step.state == "stopped" and step.scope == "loop"
    assert step.answer == "b" and step.iteration == 2 and step.score == 0.8
    assert "iteration cap reached (3)" in step.reason


def test_task_cap_counts_runs_of_one_task_across_loops() -> None:
    gov = governor(max_iterations=10, task_max_iterations=3)
    first = gov.open("first")
    step, _ = run_rounds(gov, first, ["a", "b"], task="draft")  # draft ran twice
    assert isinstance(step, Redo)
    # the next verdict on the same task: its third run is its last
    step, rounds = run_rounds(gov, first, ["c", "d"], task="draft")
    assert rounds == 1 and isinstance(step, Conclude) and step.scope == "task"
    assert "task 'draft' iteration cap reached (3 runs)" in step.reason


def test_run_cap_counts_rounds_over_all_loops() -> None:
    gov = governor(max_iterations=10, run_max_iterations=5)
    a, b = gov.open("a"), gov.open("b")
    step, _ = run_rounds(gov, a, ["1", "2", "3"])
    assert isinstance(step, Redo)
    step, rounds = run_rounds(gov, b, ["4", "5", "6"])
    assert rounds == 2 and isinstance(step, Conclude) and step.scope == "run"


def test_token_budget_caps_the_run() -> None:
    gov = Governor(LoopLimits(escalate_on=[], max_iterations=10), token_budget=100)
    loop = gov.open("judge")
    step, _ = run_rounds(gov, loop, ["a"])
    assert isinstance(step, Redo)
    gov.charge(150)
    step, _ = run_rounds(gov, loop, ["b"])
    assert isinstance(step, Conclude) and step.scope == "budget" and "150 >= 100" in step.reason


def test_on_cap_fail_fails_the_loop() -> None:
    gov = governor(max_iterations=2, on_cap="fail")
    loop = gov.open("judge")
    step, _ = run_rounds(gov, loop, ["a", "b"])
    assert isinstance(step, Conclude) and step.state == "failed"


def test_nested_loop_cap_ends_only_that_loop_and_the_parent_goes_on() -> None:
    gov = governor(max_iterations=5)
    chapter = gov.open("chapter")
    paragraph = gov.open("paragraph", parent=chapter, max_iterations=2)
    step, _ = run_rounds(gov, paragraph, ["p1", "p2", "p3"], scores=[0.6, 0.5, 0.9])
    assert isinstance(step, Conclude) and step.scope == "loop" and step.answer == "p1"
    assert "loop 'chapter/paragraph' iteration cap reached (2)" in step.reason
    assert chapter.ended is None
    # the parent takes the inner loop's best result and goes on
    nxt = gov.on_verdict(chapter, retry(1), answer=step.answer, sender="w", judge="j")
    assert nxt == Redo("more depth", 2)
    with pytest.raises(ValueError, match="has ended"):
        gov.on_verdict(paragraph, retry(3), answer="x", sender="w", judge="j")


def test_ping_pong_escalates_before_the_cap_with_both_outputs_in_the_ticket() -> None:
    gov = governor(max_iterations=10, escalate_on=["oscillation", "stall"])
    loop = gov.open("draft")
    casual, formal = "hey, so here's the deal", "Summary: the matter is as follows"
    step, rounds = run_rounds(gov, loop, [casual, casual, casual], feedback=[formal, formal, formal])
    assert rounds == 2, "a repeat within the window escalates on the round it happens"
    assert isinstance(step, Escalate)
    t = step.ticket
    assert t.reason == "oscillation" and t.iteration == 2 and t.iteration < loop.cap
    assert "ping-pong" in t.summary and "repeats the one of iteration 1" in t.summary
    texts = {o.text for o in t.outputs}
    assert {casual, formal} <= texts
    assert "-hey, so here's the deal" in t.changes or "+hey, so here's the deal" in t.changes
    assert t.options == ["accept-best", "continue", "abort"]


def test_normalisation_sees_through_cosmetic_changes() -> None:
    assert digest("w", "answer", "Hello   World.") == digest("w", "answer", "hello world")
    assert digest("w", "answer", "hello") != digest("x", "answer", "hello")
    assert digest("w", "answer", {"b": "X ", "a": 1}) == digest("w", "answer", {"a": 1, "b": "x"})


def test_distinct_outputs_do_not_look_like_a_loop() -> None:
    gov = governor(max_iterations=6, escalate_on=["oscillation"])
    loop = gov.open("judge")
    step, rounds = run_rounds(gov, loop, [f"draft {i}" for i in range(6)])
    assert rounds == 6 and isinstance(step, Conclude) and step.scope == "loop"


def test_stall_escalates_when_scores_stop_improving() -> None:
    gov = governor(max_iterations=10, stall_window=3, escalate_on=["stall"])
    loop = gov.open("judge")
    scores = [0.5, 0.7, 0.69, 0.70, 0.65, 0.9]
    step, rounds = run_rounds(gov, loop, [f"d{i}" for i in range(6)], scores=scores)
    assert rounds == 5 and isinstance(step, Escalate)
    assert step.ticket.reason == "stall" and step.ticket.best_iteration == 2
    assert "best before 0.70" in step.ticket.summary


def test_improving_scores_are_not_a_stall() -> None:
    gov = governor(max_iterations=8, stall_window=2, escalate_on=["stall"])
    loop = gov.open("judge")
    step, rounds = run_rounds(gov, loop, [f"d{i}" for i in range(8)], scores=[0.1 * i for i in range(8)])
    assert rounds == 8 and isinstance(step, Conclude)


def test_cap_can_escalate_instead() -> None:
    gov = governor(max_iterations=2, escalate_on=["cap"])
    loop = gov.open("judge")
    step, _ = run_rounds(gov, loop, ["a", "b"])
    assert isinstance(step, Escalate) and step.ticket.reason == "cap"
    assert step.ticket.options == ["accept-best", "abort"]
    with pytest.raises(ValueError, match="not one of the ticket's options"):
        gov.resolve(EscalationAnswer(ticket_id=step.ticket.ticket_id, decision="continue"))


def escalated(gov: Governor) -> tuple:
    loop = gov.open("draft")
    step, _ = run_rounds(gov, loop, ["A", "A"], feedback=["B", "B"], scores=[0.7, 0.6])
    assert isinstance(step, Escalate)
    return loop, step.ticket


def test_human_accept_best_abort_and_continue() -> None:
    gov = governor(max_iterations=10, escalate_on=["oscillation"])
    loop, ticket = escalated(gov)
    done = gov.resolve(EscalationAnswer(ticket_id=ticket.ticket_id, decision="accept-best", by="ops"))
    assert isinstance(done, Conclude) and done.state == "completed" and done.answer == "A"
    assert done.iteration == 1 and "ops accepted the best answer (iteration 1)" in done.reason
    with pytest.raises(ValueError, match="names no open ticket"):
        gov.resolve(EscalationAnswer(ticket_id=ticket.ticket_id, decision="abort"))

    gov = governor(max_iterations=10, escalate_on=["oscillation"])
    _, ticket = escalated(gov)
    aborted = gov.resolve(EscalationAnswer(ticket_id=ticket.ticket_id, decision="abort"))
    assert isinstance(aborted, Conclude) and aborted.state == "failed" and "aborted" in aborted.reason

    gov = governor(max_iterations=10, escalate_on=["oscillation"])
    loop, ticket = escalated(gov)
    go_on = gov.resolve(
        EscalationAnswer(ticket_id=ticket.ticket_id, decision="continue", feedback="split the difference")
    )
    assert go_on == Redo("split the difference", 3)
    # what was seen before the ticket does not trigger it again at once
    nxt = gov.on_verdict(loop, retry(3, "B"), answer="A", sender="writer", judge="editor")
    assert isinstance(nxt, Redo)


def test_limits_name_the_field_and_the_rule() -> None:
    with pytest.raises(ValueError, match=r"loops.max_iterations must be >= 1, got 0"):
        LoopLimits(max_iterations=0)
    with pytest.raises(ValueError, match=r"loops: Object contains unknown field `max_iteration`"):
        LoopLimits.from_config({"max_iteration": 3})
    with pytest.raises(ValueError, match=r"token_budget must be >= 1"):
        Governor(token_budget=0)
