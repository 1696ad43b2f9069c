"""The delivery core in memory: an h11-style pair of cores over a network that drops, duplicates,
reorders and delays frames. Every message is handed on to the application exactly once while
the link eventually delivers; acks cancel resends; memory stays bounded."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrt.runtime._delivery import Acknowledge, Delivery, GiveUp, Policy, Transmit


@dataclass
class Packet:
    to: str  # "a" or "b"
    data: tuple[str, float] | None = None  # (message id, sent at)
    ack: tuple[str, ...] = ()


@dataclass
class World:
    """Two cores, the frames between them, and what each handed on."""

    policy: Policy = field(default_factory=Policy)
    now: float = 1000.0
    net: list[Packet] = field(default_factory=list)
    delivered: dict[str, list[str]] = field(default_factory=lambda: {"a": [], "b": []})
    acked_at_sender: set[str] = field(default_factory=set)
    given_up: set[str] = field(default_factory=set)
    given_up_at: dict[str, float] = field(default_factory=dict)
    handed_on_at: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cores = {"a": Delivery(self.policy), "b": Delivery(self.policy)}

    def other(self, side: str) -> str:
        return "b" if side == "a" else "a"

    def apply(self, side: str, commands: list) -> None:
        for cmd in commands:
            if isinstance(cmd, Transmit):
                assert cmd.message_id not in self.acked_at_sender, "resent after its ack arrived"
                self.net.append(
                    Packet(to=cmd.link, data=(cmd.message_id, self.sent[cmd.message_id]))
                )
            elif isinstance(cmd, Acknowledge):
                self.net.append(Packet(to=cmd.link, ack=cmd.ids))
            elif isinstance(cmd, GiveUp):
                self.given_up.add(cmd.message_id)
                self.given_up_at[cmd.message_id] = self.now

    def send(self, side: str, n: int) -> None:
        """A new message; the acks noted for the other side ride on it (as the shell does)."""
        message_id = f"{side}{n}"
        self.sent[message_id] = self.now
        acks = self.cores[side].take_acks(self.other(side))
        commands = self.cores[side].send(message_id, self.other(side), b"frame", self.now)
        first = commands[0]
        if isinstance(first, Transmit) and acks:
            self.net.append(Packet(to=first.link, data=(message_id, self.now), ack=acks))
            commands = commands[1:]
        elif acks:
            self.net.append(Packet(to=self.other(side), ack=acks))
        self.apply(side, commands)

    def arrive(self, packet: Packet) -> None:
        core = self.cores[packet.to]
        if packet.ack:  # alone, or riding on a message
            core.acked(packet.ack)
            self.acked_at_sender.update(packet.ack)
        if packet.data is not None:
            message_id, sent_at = packet.data
            verdict = core.receive(message_id, self.other(packet.to), sent_at, self.now)
            if verdict == "deliver":
                self.delivered[packet.to].append(message_id)
                self.handed_on_at[message_id] = self.now

    def tick(self, dt: float) -> None:
        self.now += dt
        for side, core in self.cores.items():
            self.apply(side, core.due(self.now))

    def heal(self) -> None:
        """The link now delivers everything, in order, until nothing is left to do."""
        for _ in range(10_000):
            while self.net:
                self.arrive(self.net.pop(0))
            due = [d for d in (c.next_due() for c in self.cores.values()) if d is not None]
            if not due:
                return
            self.tick(max(0.0, min(due) - self.now))
        raise AssertionError("delivery did not settle")


actions = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from("ab")),
        st.tuples(st.just("arrive"), st.integers(0, 50)),
        st.tuples(st.just("drop"), st.integers(0, 50)),
        st.tuples(st.just("duplicate"), st.integers(0, 50)),
        st.tuples(st.just("tick"), st.floats(0.0, 1.0)),
        st.tuples(st.just("jump"), st.floats(1.0, 120.0)),  # long delays: give-ups, stale copies
    ),
    max_size=120,
)


def run(world: World, script: list) -> None:
    counter = 0
    for action, arg in script:
        if action == "send":
            counter += 1
            world.send(arg, counter)
        elif action == "tick" or action == "jump":
            world.tick(arg)
        elif world.net:
            i = arg % len(world.net)
            if action == "arrive":
                world.arrive(world.net.pop(i))  # any order: reordering
            elif action == "drop":
                world.net.pop(i)
            else:
                world.net.append(world.net[i])


@settings(max_examples=300, deadline=None)
@given(actions)
def test_exactly_once_while_the_link_eventually_delivers(script: list) -> None:
    world = World()
    run(world, script)
    world.heal()
    for side in "ab":
        handed_on = world.delivered[side]
        assert len(handed_on) == len(set(handed_on)), "a message was handed on twice"
        expected = {m for m in world.sent if m.startswith(world.other(side))}
        missing = expected - set(handed_on) - world.given_up
        assert not missing, f"never delivered and never given up: {missing}"
    assert all(core.waiting == 0 for core in world.cores.values()), "memory held after every ack"
    # 'undelivered' is the truth as far as the receiver can make it: no copy is handed on
    # after its sender gave up on it (and told its asker, who may retry elsewhere). Only a
    # copy handed on before, whose acks were all lost, is given up and handed on.
    for message_id, at in world.handed_on_at.items():
        assert at < world.given_up_at.get(message_id, float("inf")), "handed on after its give-up"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["send", "tick", "arrive", "drop", "duplicate"]), st.integers(0, 9)
        )
    )
)
def test_no_give_up_and_no_loss_when_faults_last_less_than_the_resends(script: list) -> None:
    world = World()
    run(
        world,
        [(a, "ab"[n % 2] if a == "send" else (n / 10 if a == "tick" else n)) for a, n in script],
    )
    assert world.now - 1000.0 < world.policy.resend_span_s()
    world.heal()
    assert not world.given_up
    for side in "ab":
        expected = {m for m in world.sent if m.startswith(world.other(side))}
        assert sorted(world.delivered[side]) == sorted(expected)


def test_acks_cancel_resends() -> None:
    core = Delivery()
    core.send("m1", "peer", b"f", now=0.0)
    assert [type(c) for c in core.due(0.3)] == [Transmit]  # no ack yet: resent
    assert core.acked(["m1"]) == 1
    assert core.due(100.0) == [] and core.next_due() is None and core.waiting == 0


def test_give_up_after_max_sends_with_growing_waits() -> None:
    policy = Policy(ack_wait_s=0.25, max_wait_s=2.0, max_sends=4)
    core = Delivery(policy)
    core.send("m1", "peer", b"f", now=0.0)
    times = []
    for _ in range(20):
        at = core.next_due()
        if at is None:
            break
        commands = core.due(at)
        times.append((at, type(commands[0]).__name__))
    assert times == [(0.25, "Transmit"), (0.75, "Transmit"), (1.75, "Transmit"), (3.75, "GiveUp")]
    assert core.waiting == 0


def test_a_copy_older_than_the_resends_is_stale_and_neither_handed_on_nor_acknowledged() -> None:
    core = Delivery()
    span = core.policy.resend_span_s()  # 15.75 s: the sender gives up then at the earliest
    assert core.receive("m1", "peer", sent_at=0.0, now=1.0) == "deliver"
    assert core.receive("m1", "peer", sent_at=0.0, now=span - 0.1) == "duplicate"
    assert core.receive("m1", "peer", sent_at=0.0, now=span) == "stale"
    # A first copy that late is not handed on either: its sender says 'undelivered'.
    assert core.receive("m2", "peer", sent_at=0.0, now=span + 1) == "stale"
    assert core.receive("m3", "peer", sent_at=100.0, now=161.0) == "stale"
    assert core.remembered == 0  # forgotten once no copy can be handed on any more


def test_ids_are_remembered_per_sender_so_one_cannot_shadow_anothers_message() -> None:
    core = Delivery()
    assert core.receive("m1", "mallory", sent_at=0.0, now=0.0) == "deliver"
    assert core.receive("m1", "alice", sent_at=0.0, now=0.1) == "deliver"  # not a duplicate
    assert core.receive("m1", "alice", sent_at=0.0, now=0.2) == "duplicate"


def test_unknown_way_back_is_neither_acknowledged_nor_taken_on() -> None:
    core = Delivery()
    assert core.receive("m1", None, sent_at=0.0, now=0.0) == "later"
    assert core.receive("m1", "peer", sent_at=0.0, now=0.5) == "deliver"


@given(st.lists(st.floats(0.0, 200.0), min_size=1, max_size=300))
def test_seen_ids_are_bounded_by_count_and_bytes_without_losing_exactly_once(gaps: list) -> None:
    policy = Policy(max_seen=20, max_seen_bytes=200)
    core = Delivery(policy)
    now, handed_on = 0.0, []
    for i, gap in enumerate(gaps):
        now += gap / 100
        for message_id in (f"m{i}", f"m{max(0, i - 3)}"):  # new ones and recent duplicates
            verdict = core.receive(message_id, "peer", sent_at=now - 0.1, now=now)
            if verdict == "deliver":
                handed_on.append(message_id)
            assert core.remembered <= policy.max_seen
            assert core._seen_bytes <= policy.max_seen_bytes + 16
    assert len(handed_on) == len(set(handed_on))


@given(st.lists(st.tuples(st.sampled_from(["p", "q"]), st.integers(1, 400), st.booleans()), max_size=80))
def test_frames_kept_for_resending_are_bounded_in_bytes_per_link(sends: list) -> None:
    """A peer that never acknowledges (stalled, or hostile: it asks for big results and never
    acks them) holds at most max_link_bytes of this process's memory; what does not fit is
    given up at once, never sent (so 'undelivered' is true), and other links are unaffected."""
    policy = Policy(max_link_bytes=1000)
    core = Delivery(policy)
    for n, (link, size, ack) in enumerate(sends):
        commands = core.send(f"m{n}", link, b"x" * size, now=float(n) / 1000)
        kept = sum(len(o.frame) for o in core._out.values() if o.link == link)
        assert kept <= policy.max_link_bytes
        [command] = commands
        if isinstance(command, GiveUp):
            assert command.sends == 0 and f"m{n}" not in core._out
        else:
            assert isinstance(command, Transmit) and f"m{n}" in core._out
        if ack:
            core.acked([f"m{n}"])
    core.acked(list(core._out))
    assert core.waiting == 0 and not any(core._link_bytes.values())


def test_a_window_shorter_than_the_resends_is_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        Policy(window_s=20.0)
    with pytest.raises(ValueError, match="give_up_s"):
        Policy(give_up_s=5.0)


def test_a_sender_whose_timers_stalled_gives_up_before_its_copies_go_stale() -> None:
    core = Delivery()
    core.send("m1", "peer", b"f", now=0.0)
    assert core.due(45.0) == [GiveUp("m1", "peer", 1)]


# -- the shell's pure parts: dead-letter sampling, the CLI view ----------


def test_dead_letter_samples_are_capped_per_reason_per_second_and_say_what_was_skipped() -> None:
    from agentrt.runtime._deadletters import Sampler

    sampler = Sampler(per_s=3)
    admitted = [sampler.admit("malformed", 10.0 + i / 1000) for i in range(100)]
    assert admitted[:3] == [0, 0, 0] and admitted[3:] == [None] * 97
    assert sampler.admit("invalid", 10.5) == 0  # another reason has its own budget
    assert (
        sampler.admit("malformed", 11.0) == 97
    )  # next second: the sample says how many went untraced


def test_dead_letter_samples_are_capped_in_all_per_reason_however_long_the_flood() -> None:
    """Ten a second is still 36,000 lines an hour per reason: a flood that lasts must not grow
    the trace without end. Before, every second admitted more (20,000 traced here)."""
    from agentrt.runtime._deadletters import Sampler

    sampler = Sampler(per_s=10, per_reason=1000)
    traced = sum(sampler.admit("malformed", float(t)) is not None for t in range(2000) for _ in range(20))
    assert traced == 1000
    assert sampler.admit("invalid", 1e4) == 0  # each reason has its own


def test_dead_letters_view_counts_exactly_and_shows_capped_samples() -> None:
    from agentrt.protocols import MessageDeadLetter, MessageDeadLetterCounts, RunStarted
    from agentrt.runtime._deadletters import render, summarize

    events = [
        RunStarted(ts=0.5, nodes={}),
        MessageDeadLetter(ts=1.0, node="node:n1", reason="malformed", count=1, at=1.0,
                          detail="frame is not valid msgpack", peer="00ab", bytes=9),
        MessageDeadLetter(ts=1.1, node="node:n1", reason="malformed", count=2, at=1.1,
                          detail="frame is not valid msgpack", bytes=9),
        MessageDeadLetter(ts=1.2, node="node:n2", reason="not-allowed", count=1, at=1.2,
                          detail="not allowed: 'x' may not ask", sender="x", recipient="g", kind="task-request"),
        MessageDeadLetterCounts(ts=9.0, node="node:n1", counts={"dead.malformed": 5000}),
    ]
    counts, samples = summarize(events)
    assert len(samples) == 3
    assert counts == {("node:n1", "malformed"): 5000, ("node:n2", "not-allowed"): 1}
    lines = render(events, per_reason=1)
    assert lines[0] == "dead letters: 5001"
    assert any(line.startswith("malformed") and "5000" in line and "node:n1 5000" in line for line in lines)
    assert sum("frame is not valid msgpack" in line for line in lines) == 1  # capped at 1 per reason
    assert any("x -> g task-request" in line for line in lines)
    assert render([]) == ["no dead letters: every message was delivered"]


def test_dead_letter_counts_add_up_over_the_lives_of_a_restarted_node() -> None:
    """Each life of a node counts from zero: before, the view took the largest count per node
    and reason, so a node restarted after 100 dead letters that then refused 5 more showed 100
    (and 5 if its second life's counts came alone), not 105."""
    from agentrt.protocols import MessageDeadLetter, MessageDeadLetterCounts
    from agentrt.runtime._deadletters import render, summarize

    def letter(pid: int, count: int) -> MessageDeadLetter:
        return MessageDeadLetter(ts=1.0, node="node:n1", pid=pid, reason="invalid", count=count, at=1.0, detail="d")

    events = [
        letter(100, 1),
        letter(100, 60),  # the first life died without stopping: its last sample says 60
        letter(200, 1),
        MessageDeadLetterCounts(ts=9.0, node="node:n1", pid=200, counts={"dead.invalid": 5}),
    ]
    counts, _ = summarize(events)
    assert counts == {("node:n1", "invalid"): 65}
    assert render(events)[0] == "dead letters: 65"


def test_acks_wait_to_ride_on_the_next_envelope_and_go_alone_only_after_a_short_silence() -> None:
    core = Delivery(Policy(ack_delay_s=0.02))
    for i, now in enumerate((10.0, 10.005, 10.01)):
        assert core.receive(f"m{i}", "peer", sent_at=now, now=now) == "deliver"
    assert core.receive("m0", "peer", sent_at=10.0, now=10.011) == "duplicate"  # noted once
    assert core.due(10.019) == [] and core.next_due() == 10.02
    assert core.due(10.02) == [Acknowledge("peer", ("m0", "m1", "m2"))]
    assert core.next_due() is None and core.due(11.0) == []
    # What an envelope going that way takes is not sent again alone.
    core.receive("m3", "peer", sent_at=12.0, now=12.0)
    assert core.take_acks("peer") == ("m3",) and core.take_acks("peer") == ()
    assert core.next_due() is None and core.due(13.0) == []


def test_a_duplicate_is_acknowledged_again_and_one_envelope_takes_at_most_max_acks() -> None:
    core = Delivery(Policy(max_acks=2))
    core.receive("m1", "peer", sent_at=0.0, now=0.0)
    assert core.take_acks("peer") == ("m1",)
    assert core.receive("m1", "peer", sent_at=0.0, now=0.1) == "duplicate"  # its ack was lost?
    core.receive("m2", "peer", sent_at=0.1, now=0.1)
    core.receive("m3", "peer", sent_at=0.1, now=0.1)
    assert core.take_acks("peer") == ("m1", "m2") and core.take_acks("peer") == ("m3",)


def test_an_ack_that_arrives_after_the_resend_or_the_give_up_changes_nothing() -> None:
    core = Delivery(Policy(max_sends=2, ack_wait_s=0.25, max_wait_s=0.25, give_up_s=1.0, window_s=2.0))
    core.send("m1", "peer", b"f", now=0.0)
    assert [type(c) for c in core.due(0.25)] == [Transmit]  # resent: the ack is late
    assert core.acked(["m1"]) == 1 and core.due(10.0) == []  # the late ack still stops it
    core.send("m2", "peer", b"f", now=20.0)
    core.due(20.25)
    assert [type(c) for c in core.due(20.5)] == [GiveUp]
    assert core.acked(["m2"]) == 0 and core.waiting == 0  # later than the give-up: nothing to stop


def test_an_ack_delay_as_long_as_the_resends_is_refused() -> None:
    with pytest.raises(ValueError, match="ack_delay_s"):
        Policy(ack_delay_s=0.2)
