"""The core of a request to a remote A2A agent (actors/_remote_task.py), driven in memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentrt.actors._remote_task import (
    TERMINAL,
    Cancel,
    Escalate,
    Finish,
    Get,
    Journal,
    RemoteCall,
    Reply,
    Send,
)


def test_send_once_then_poll_to_the_end() -> None:
    core = RemoteCall(poll_s=0.5, first_poll_s=0.2)
    assert core.start(None) == [Send()]
    assert core.sent("r1", "submitted") == [Journal("r1"), Get("r1", 0.2)]
    assert core.seen("working") == [Get("r1", 0.4)]  # soon at first, then less often
    assert core.seen("working") == [Get("r1", 0.5)]
    assert core.seen("working") == [Get("r1", 0.5)]
    assert core.seen("completed") == [Finish("completed", "r1")]


def test_a_journaled_task_is_followed_not_sent_again() -> None:
    core = RemoteCall(first_poll_s=0.1)
    assert core.start("r1") == [Get("r1", 0.0)]
    assert core.seen("working") == [Get("r1", 0.1)]
    assert core.seen("completed") == [Finish("completed", "r1")]
    assert core.sends == 0


def test_a_journaled_task_that_failed_is_sent_anew() -> None:
    core = RemoteCall(first_poll_s=0.1)
    assert core.start("r1") == [Get("r1", 0.0)]
    assert core.seen("failed") == [Send()]
    assert core.sent("r2", "working") == [Journal("r2"), Get("r2", 0.1)]


def test_a_journaled_task_that_completed_is_its_result() -> None:
    core = RemoteCall(first_poll_s=0.1)
    core.start("r1")
    assert core.seen("completed") == [Finish("completed", "r1")]


def test_cancelled_before_sending_sends_nothing() -> None:
    assert RemoteCall(first_poll_s=0.1).start(None, cancelled=True) == [
        Finish("canceled", None, "cancelled before it was sent")
    ]


def test_a_cancel_cancels_the_remote_task_once() -> None:
    core = RemoteCall(first_poll_s=0.1)
    core.start(None)
    core.sent("r1", "working")
    assert core.cancel() == [Cancel("r1")]
    assert core.cancel() == []  # already cancelling
    assert core.seen("working") == [Get("r1", 0.1)]  # not confirmed yet: read again
    assert core.seen("canceled") == [Finish("canceled", "r1")]


def test_a_cancel_before_the_task_exists_is_applied_when_it_does() -> None:
    core = RemoteCall(first_poll_s=0.1)
    core.start(None)
    assert core.cancel() == []
    assert core.sent("r1", "working") == [Journal("r1"), Cancel("r1")]


def test_a_cancel_the_remote_never_confirms_ends_after_a_bound() -> None:
    core = RemoteCall(cancel_polls=2, first_poll_s=0.1)
    core.start(None)
    core.sent("r1", "working")
    core.cancel()
    assert core.seen("working") == [Get("r1", 0.1)]
    assert core.seen("working") == [Get("r1", 0.1)]
    (finish,) = core.seen("working")
    assert (
        isinstance(finish, Finish)
        and finish.state == "canceled"
        and "did not confirm" in finish.why
    )


def test_input_required_escalates_and_the_answer_goes_back() -> None:
    core = RemoteCall(first_poll_s=0.1)
    core.start(None)
    assert core.sent("r1", "input-required") == [Journal("r1"), Escalate("r1")]
    assert core.answered("continue", "yes") == [Reply("r1", "yes")]
    assert core.seen("completed") == [Finish("completed", "r1")]


def test_abort_or_no_human_cancels() -> None:
    core = RemoteCall(first_poll_s=0.1)
    core.start(None)
    core.sent("r1", "input-required")
    assert core.answered("abort") == [Cancel("r1")]
    assert core.seen("canceled") == [Finish("canceled", "r1")]
    lonely = RemoteCall(first_poll_s=0.1)
    lonely.start(None)
    lonely.sent("r1", "input-required")
    assert lonely.answered(None) == [Cancel("r1")]
    (finish,) = lonely.seen("canceled")
    assert "no human actor" in finish.why


states = st.sampled_from(
    ["submitted", "working", "input-required", "completed", "failed", "canceled", "rejected"]
)


@given(
    journaled=st.booleans(),
    remote=st.lists(states, min_size=1, max_size=30),
    cancel_at=st.one_of(st.none(), st.integers(0, 30)),
    answers=st.lists(st.sampled_from(["continue", "abort", None]), max_size=30),
)
def test_invariants(
    journaled: bool, remote: list[str], cancel_at: int | None, answers: list[str | None]
) -> None:
    """Whatever the remote reports: one Finish and nothing after it; a journaled task is
    never sent again unless it failed; a cancel is sent at most once; after a cancel the
    core never escalates and never reads more than its bound before it ends."""
    core = RemoteCall(cancel_polls=5)
    commands = core.start("r0" if journaled else None)
    log: list[object] = []
    feed = iter(remote + ["completed"] * 40)  # the remote ends at last
    answer = iter(answers + ["continue"] * 40)
    step = 0
    while True:
        log.extend(commands)
        if any(isinstance(c, Finish) for c in commands):
            assert isinstance(commands[-1], Finish)
            break
        if cancel_at is not None and step == cancel_at:
            extra = core.cancel()
            log.extend(extra)
            if extra:
                commands = extra
        last = commands[-1]
        step += 1
        assert step < 200, "the core ends"
        if isinstance(last, Send):
            commands = core.sent(f"r{step}", next(feed))
        elif isinstance(last, Get | Cancel | Reply):
            commands = core.seen(next(feed))
        elif isinstance(last, Escalate):
            commands = core.answered(next(answer), "ok")
        else:
            raise AssertionError(f"unexpected {last}")
    assert sum(isinstance(c, Finish) for c in log) == 1
    assert sum(isinstance(c, Cancel) for c in log) <= 2  # the cancel, and an abort's
    sends = sum(isinstance(c, Send) for c in log)
    if journaled and remote[0] not in TERMINAL - {"completed"}:
        assert sends == 0
    assert sends <= 1
    first_cancel = next((i for i, c in enumerate(log) if isinstance(c, Cancel)), None)
    if first_cancel is not None:  # cancelling: no question to the human, bounded reads
        after = log[first_cancel:]
        assert not any(isinstance(c, Escalate) for c in after)
        assert sum(isinstance(c, Get) for c in after) <= 6
