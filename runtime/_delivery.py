"""Reliable delivery as a sans-I/O core: at-least-once sending, exactly-once handing on.

Everything that decides what happens to a work-carrying message lives here (h11's rule): no
sockets, threads or clocks; time is an argument. The messenger is the shell: it encodes, calls
these methods, and carries out the commands they return.

Sender: `send` keeps the frame and returns a `Transmit`; `due(now)` returns a `Transmit` per
message whose ack is late (waits double from `ack_wait_s` up to `max_wait_s`) and, after
`max_sends` (or `give_up_s` after the first send), a `GiveUp`; `acked(ids)` cancels resends. Receiver: `receive` says what to do
with one arriving copy: `deliver` the first copy, `duplicate` for the others (both
acknowledged, later: the ack of the first may have been lost), `later` when there is no way back to
the sender yet (not acknowledged: its resend brings it again), `stale` for a copy older than
the sender's resends (dropped: its sender has given up on it, or will at its next timer, and
said it was undelivered, so handing it on could run it twice).

Memory is bounded: an outgoing message is kept at most until its last resend, and at most
`max_link_bytes` of frames wait for acks per link (a peer that never acknowledges holds no
more; a message that does not fit is given up at once, unsent); a received id
is remembered for `window_s` after it was first sent (longer than any copy is handed on), and when
`max_seen` ids (or `max_seen_bytes`) are remembered, new messages are answered `later`
instead of forgetting ids early, so the bound never costs exactly-once.

Acks are delayed, as TCP's are: `receive` only notes the id; the shell takes what is noted for a
link (`take_acks`) into the next envelope it sends there, and `due` returns one `Acknowledge`
with all of a link's ids once the oldest has waited `ack_delay_s` with nothing going that way
(well under `ack_wait_s`, so no resend is spent on it). Ids are opaque here, so per-link
sequence numbers and cumulative acks can replace them without touching the shell.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send `frame` to `link` (a first send or a resend)."""

    message_id: str
    link: str
    frame: bytes
    send: int  # 1 for the first send


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Tell `link` that these messages arrived."""

    link: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GiveUp:
    """`message_id` was sent `sends` times and never acknowledged (0 times: its link already
    held `max_link_bytes` waiting for acks): it is undelivered. `tag` is what the shell gave
    `send` (e.g. whom to tell)."""

    message_id: str
    link: str
    sends: int
    tag: object = None


Command = Transmit | Acknowledge | GiveUp
Verdict = Literal["deliver", "duplicate", "later", "stale"]


@dataclass(frozen=True, slots=True)
class Policy:
    ack_wait_s: float = 0.25
    max_wait_s: float = 2.0
    max_sends: int = 10
    # A sender gives up on a message this old even before max_sends (its process stalled);
    # a receiver remembers an id, and hands on copies, until it is window_s old. A copy that
    # arrives later is stale: its sender has given up on it, so it is dropped, not run twice.
    give_up_s: float = 30.0
    window_s: float = 60.0
    max_seen: int = 200_000
    max_seen_bytes: int = 64 * 1024 * 1024
    max_link_bytes: int = 128 * 1024 * 1024  # frames kept for resending, per link
    # How long an ack may wait to ride on an envelope going its way before it goes alone
    # (None: 20 ms, or a quarter of ack_wait_s if that is less).
    ack_delay_s: float | None = None
    max_acks: int = 1024  # ids taken into one envelope or one Acknowledge

    def __post_init__(self) -> None:
        if not 0 <= self.ack_delay() < self.ack_wait_s / 2:
            raise ValueError(
                f"delivery: ack_delay_s ({self.ack_delay():g}) must be under half of ack_wait_s "
                f"({self.ack_wait_s:g}), or delayed acks would cost resends"
            )
        if not self.resend_span_s() < self.give_up_s < self.window_s:
            raise ValueError(
                f"delivery: the resends ({self.resend_span_s():g} s) < give_up_s "
                f"({self.give_up_s:g}) < window_s ({self.window_s:g}) is required, or a copy "
                "could be stale before its sender gives up on it"
            )

    def ack_delay(self) -> float:
        """Seconds an ack may wait for an envelope to carry it."""
        return min(0.02, self.ack_wait_s / 4) if self.ack_delay_s is None else self.ack_delay_s

    def wait(self, send: int) -> float:
        """Seconds to wait for an ack after send number `send`."""
        return min(self.ack_wait_s * 2 ** (send - 1), self.max_wait_s)

    def resend_span_s(self) -> float:
        return sum(self.wait(n) for n in range(1, self.max_sends + 1))


class _Outgoing:
    __slots__ = ("due", "first", "frame", "link", "sends", "tag")

    def __init__(self, link: str, frame: bytes, first: float, due: float, tag: object) -> None:
        self.link, self.frame, self.first, self.due, self.sends, self.tag = (
            link,
            frame,
            first,
            due,
            1,
            tag,
        )


class Delivery:
    """One process's reliable-delivery state: what it waits acks for, and what it has seen."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._out: dict[str, _Outgoing] = {}
        self._timers: list[tuple[float, str]] = []  # (due, message id); stale entries skipped
        # (link, id) -> when it may be forgotten: ids are unique per sender, so one sender's
        # id can never shadow another's message.
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []  # the same, as a heap
        self._seen_bytes = 0
        self._link_bytes: dict[str, int] = {}  # link -> bytes of its frames kept in _out
        self._acks: dict[str, dict[str, None]] = {}  # link -> ids to acknowledge (in order, once)
        self._acks_due: dict[str, float] = {}  # link -> when its acks go alone
        self._resend_span = self.policy.resend_span_s()
        self._ack_delay = self.policy.ack_delay()

    # -- sending -------------------------------------------------------------------------

    def send(
        self, message_id: str, link: str, frame: bytes, now: float, tag: object = None
    ) -> list[Command]:
        """Send `frame` reliably: kept, and sent again until `acked`. A GiveUp with no send
        instead when the link's unacknowledged frames already fill `max_link_bytes`."""
        held = self._link_bytes.get(link, 0)
        if held + len(frame) > self.policy.max_link_bytes:
            return [GiveUp(message_id, link, 0, tag)]
        self._link_bytes[link] = held + len(frame)
        out = _Outgoing(link, frame, now, now + self.policy.wait(1), tag)
        self._out[message_id] = out
        heapq.heappush(self._timers, (out.due, message_id))
        return [Transmit(message_id, link, frame, 1)]

    def link_of(self, message_id: str) -> str | None:
        """Where a message still waiting for its ack went (None: nothing waits under that id)."""
        out = self._out.get(message_id)
        return out.link if out is not None else None

    def acked(self, ids: list[str] | tuple[str, ...]) -> int:
        """The receiver has these: no more resends. Returns how many were waiting."""
        n = 0
        for message_id in ids:
            out = self._out.pop(message_id, None)
            if out is not None:
                self._release(out)
                n += 1
        return n

    def _release(self, out: _Outgoing) -> None:
        left = self._link_bytes[out.link] - len(out.frame)
        if left:
            self._link_bytes[out.link] = left
        else:
            del self._link_bytes[out.link]

    def due(self, now: float) -> list[Command]:
        """Resends whose wait is over, and give-ups past `max_sends`."""
        commands: list[Command] = []
        while self._timers and self._timers[0][0] <= now:
            at, message_id = heapq.heappop(self._timers)
            out = self._out.get(message_id)
            if out is None or out.due != at:
                continue  # acknowledged meanwhile
            if out.sends >= self.policy.max_sends or now - out.first >= self.policy.give_up_s:
                del self._out[message_id]
                self._release(out)
                commands.append(GiveUp(message_id, out.link, out.sends, out.tag))
                continue
            out.sends += 1
            out.due = now + self.policy.wait(out.sends)
            heapq.heappush(self._timers, (out.due, message_id))
            commands.append(Transmit(message_id, out.link, out.frame, out.sends))
        if not self._out:
            self._timers.clear()
        for link in [k for k, at in self._acks_due.items() if at <= now]:
            while self._acks.get(link):
                commands.append(Acknowledge(link, self.take_acks(link)))
        return commands

    def next_due(self) -> float | None:
        """When `due` next has something to do (None: nothing waits for an ack, and no ack
        waits to be sent)."""
        acks = min(self._acks_due.values(), default=None)
        while self._timers:
            at, message_id = self._timers[0]
            out = self._out.get(message_id)
            if out is not None and out.due == at:
                return at if acks is None else min(at, acks)
            heapq.heappop(self._timers)
        return acks

    def take_acks(self, link: str) -> tuple[str, ...]:
        """The ids noted for acknowledgement to `link` (at most `max_acks`, oldest first), to go
        in the envelope the shell is about to send there; they are no longer noted."""
        noted = self._acks.get(link)
        if not noted:
            return ()
        if len(noted) <= self.policy.max_acks:
            ids = tuple(noted)
            del self._acks[link]
            self._acks_due.pop(link, None)
            return ids
        ids = tuple(itertools.islice(noted, self.policy.max_acks))
        for message_id in ids:
            del noted[message_id]
        return ids

    def _note_ack(self, link: str, message_id: str, now: float) -> None:
        noted = self._acks.get(link)
        if noted is None:
            noted = self._acks[link] = {}
            self._acks_due[link] = now + self._ack_delay
        noted[message_id] = None

    # -- receiving -----------------------------------------------------------------------

    def receive(self, message_id: str, link: str | None, sent_at: float, now: float) -> Verdict:
        """One arriving copy of a reliable message from `link` (None: no way back yet). The
        first copy and its duplicates are noted for acknowledgement (see `take_acks`, `due`)."""
        self._forget(now)
        # A copy is handed on only while its sender may still wait for it: its sender gives
        # up (and says 'undelivered', and its asker may retry elsewhere) at the end of its
        # resends at the earliest, so an older copy is stale. A clock ahead of ours (or a
        # forged time) cannot make an id be remembered for longer than the window from now.
        # Not acknowledged either: a sender whose timers ran late may still be resending it,
        # and must give up on it (at give_up_s at the latest), not be told it arrived.
        born = min(sent_at, now)
        if now - born >= self._resend_span:
            return "stale"
        forget_at = born + self.policy.window_s
        if link is None:
            return "later"
        seen = (link, message_id)
        if seen in self._seen:
            self._note_ack(link, message_id, now)  # again: the first ack may have been lost
            return "duplicate"
        if (
            len(self._seen) >= self.policy.max_seen
            or self._seen_bytes >= self.policy.max_seen_bytes
        ):
            return "later"  # full: the sender's resend finds room once old ids expire
        self._seen[seen] = forget_at
        heapq.heappush(self._expiry, (forget_at, seen))
        self._seen_bytes += len(message_id) + len(link)
        self._note_ack(link, message_id, now)
        return "deliver"

    def _forget(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, seen = heapq.heappop(self._expiry)
            if self._seen.pop(seen, None) is not None:
                self._seen_bytes -= len(seen[0]) + len(seen[1])

    # -- introspection (tests, stats) -----------------------------------------------------

    @property
    def waiting(self) -> int:
        """Messages sent and not yet acknowledged nor given up."""
        return len(self._out)

    @property
    def remembered(self) -> int:
        """Received ids kept for deduplication."""
        return len(self._seen)
