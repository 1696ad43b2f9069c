"""The membership core: incarnations, death by silence, replacement and fencing, in memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrt.runtime._membership import Down, Fence, Membership, Up

NODES = ["a", "b"]


def test_a_silent_node_is_down_then_its_next_incarnation_is_up() -> None:
    m = Membership(timeout_s=2.0)
    e1, out = m.admit("a", now=0.0)
    assert out == [] and m.ready("a", e1, now=0.1) == []
    assert m.heartbeat("a", e1, now=1.0) == [] and m.tick(now=2.5) == []
    assert m.tick(now=3.1) == [Down("a", e1, "silent")]
    assert m.current("a") == 0 and not m.accepts("a", e1)
    assert m.heard_ago("a", now=3.2) is None  # none current: a second process may join
    e2, out = m.admit("a", now=4.0)
    assert e2 > e1 and out == []
    assert m.ready("a", e2, now=4.1) == [Up("a", e2)]
    assert m.accepts("a", e2) and not m.accepts("a", e1)
    assert m.heartbeat("a", e2, now=4.5) == [] and m.heard_ago("a", now=5.0) == pytest.approx(0.5)
    assert m.heard_ago("b", now=5.0) is None


def test_an_incarnation_never_ready_and_silent_no_longer_holds_its_node() -> None:
    """A joined process that dies after its Welcome, before it is ready, is never ticked down
    (only ready ones are): it must not hold its node against the next process for ever."""
    m = Membership(timeout_s=2.0)
    e1, _ = m.admit("a", now=0.0)
    assert m.heard_ago("a", now=1.5) == pytest.approx(1.5)  # booting: it still holds the node
    assert m.heartbeat("a", e1, now=1.8) == [] and m.heard_ago("a", now=3.0) == pytest.approx(1.2)
    assert m.tick(now=10.0) == [] and m.current("a") == e1  # never ready: not ticked down
    assert m.heard_ago("a", now=10.0) is None  # but silent past timeout_s: a new one may join
    e2, out = m.admit("a", now=10.0)
    assert out == [Down("a", e1, "replaced")] and m.current("a") == e2


def test_a_stale_incarnation_heard_again_is_fenced_every_time() -> None:
    m = Membership(timeout_s=1.0)
    e1, _ = m.admit("a", 0.0)
    m.ready("a", e1, 0.0)
    m.tick(5.0)  # cut off: down
    e2, _ = m.admit("a", 6.0)  # replaced
    assert m.heartbeat("a", e1, 7.0) == [Fence("a", e1)]  # its link is back
    assert m.heartbeat("a", e1, 8.0) == [Fence("a", e1)]  # a lost Fence is said again
    assert m.heartbeat("a", e2, 8.0) == []


def test_admitting_a_new_incarnation_while_the_old_is_current_downs_the_old() -> None:
    m = Membership(timeout_s=1.0)
    e1, _ = m.admit("a", 0.0)
    m.ready("a", e1, 0.0)
    e2, out = m.admit("a", 0.5)
    assert out == [Down("a", e1, "replaced")]
    assert m.ready("a", e2, 0.6) == [Up("a", e2)]


def test_an_epoch_never_given_is_not_fenced_nor_accepted() -> None:
    m = Membership(timeout_s=1.0)
    e1, _ = m.admit("a", 0.0)
    assert m.heartbeat("a", e1 + 7, 0.1) == [] and not m.accepts("a", e1 + 7)
    assert m.heartbeat("b", e1, 0.1) == [] and not m.accepts("b", e1)  # a's epoch, not b's


events = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.sampled_from(NODES), st.just(0)),
        st.tuples(st.just("ready"), st.sampled_from(NODES), st.integers(0, 8)),
        st.tuples(st.just("beat"), st.sampled_from(NODES), st.integers(0, 8)),
        st.tuples(st.just("exited"), st.sampled_from(NODES), st.integers(0, 8)),
        st.tuples(st.just("tick"), st.just(""), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events, st.lists(st.floats(0, 3), min_size=60, max_size=60))
def test_never_two_current_incarnations_and_a_fenced_one_is_never_accepted(
    script: list[tuple[str, str, int]], steps: list[float]
) -> None:
    m = Membership(timeout_s=1.0)
    now = 0.0
    given_to: dict[int, str] = {}
    fenced: set[tuple[str, int]] = set()
    down: set[tuple[str, int]] = set()
    for (what, node, epoch), step in zip(script, steps, strict=False):
        now += step
        if what == "admit":
            epoch, out = m.admit(node, now)
            assert epoch not in given_to  # epochs are never given twice
            given_to[epoch] = node
        elif what == "ready":
            out = m.ready(node, epoch, now)
        elif what == "beat":
            out = m.heartbeat(node, epoch, now)
        elif what == "exited":
            out = m.exited(node, epoch)
        else:
            out = m.tick(now)
        for cmd in out:
            if isinstance(cmd, Fence):
                fenced.add((cmd.node, cmd.epoch))
                assert given_to.get(cmd.epoch) == cmd.node
            elif isinstance(cmd, Down):
                down.add((cmd.node, cmd.epoch))
            elif isinstance(cmd, Up):
                assert m.accepts(cmd.node, cmd.epoch)
        for name in NODES:
            current = [e for e, n in given_to.items() if n == name and m.accepts(name, e)]
            assert len(current) <= 1  # never two current incarnations of one node
        for name, e in fenced | down:
            assert not m.accepts(name, e)  # a fenced (or downed) incarnation: nothing accepted


def test_a_later_life_of_the_supervisor_never_gives_an_epoch_an_earlier_life_gave() -> None:
    # The review of issue 16 found epochs restarting at 1 with each supervisor life: an old
    # incarnation that outlived a supervisor restart could share its epoch with a new one of the
    # same node, and its messages would be taken as the new one's.
    first = Membership(5.0, first_epoch=1_000)
    old, _ = first.admit("w1", now=0.0)
    second = Membership(5.0, first_epoch=2_000)  # the shell passes a later wall clock
    new, _ = second.admit("w1", now=0.0)
    assert new != old and new >= 2_000
    assert not second.accepts("w1", old)
    with pytest.raises(ValueError, match="first_epoch"):
        Membership(5.0, first_epoch=0)
