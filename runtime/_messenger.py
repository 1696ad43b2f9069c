"""Sends and receives envelopes for one process: encode, trace, route, and correlate replies."""

from __future__ import annotations

import contextlib
import heapq
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import msgspec

from agentrt.protocols import (
    CONTROL_BODIES,
    TERMINAL_STATES,
    Ack,
    AgentCard,
    Body,
    CancelTask,
    DeadLetter,
    DeadLetterReason,
    Drain,
    Drained,
    Envelope,
    EnvelopeDuplicate,
    EnvelopeReceived,
    EnvelopeResent,
    EnvelopeSent,
    FrameError,
    Heartbeat,
    Join,
    Limits,
    Message,
    MessageDeadLetter,
    MessageDeadLetterCounts,
    NodeError,
    OverLimit,
    Part,
    RoutingError,
    SkillCall,
    Task,
    TaskFailed,
    TaskReply,
    TaskReplyFailed,
    TaskRequest,
    TaskStatus,
    check_limits,
    decode,
    encode,
    new_id,
    new_span_id,
    new_trace_id,
    state_word,
    task_state,
)

from ._auth import authenticate
from ._deadletters import Sampler
from ._delivery import Acknowledge, Command, Delivery, GiveUp, Policy, Transmit
from ._keys import SUPERVISOR, Trust, member_of_address
from ._timers import Alarm, Timers
from ._tracing import emit, get_logger
from ._tracing import flush as flush_trace
from ._transport import DeathHandler, TraceHandler, Transport
from ._validation import validate


class TaskResult:
    """The outcome of an ask: the A2A Task the other actor replied with. `state` says the
    task's A2A state as the runtime's words do (`TASK_STATE_COMPLETED` -> `completed`)."""

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task

    @property
    def state(self) -> str:
        return state_word(self.task.status.state)

    @property
    def ok(self) -> bool:
        return self.task.status.state == "TASK_STATE_COMPLETED"

    @property
    def data(self) -> dict[str, Any]:
        """The first data part of the artifacts, when it is an object ({} if none)."""
        for artifact in self.task.artifacts:
            for part in artifact.parts:
                if isinstance(part.data, dict):
                    return part.data
        return {}

    @property
    def text(self) -> str:
        """All text parts of the artifacts, joined by newlines."""
        return "\n".join(
            p.text for a in self.task.artifacts for p in a.parts if p.text is not None
        )

    @property
    def error(self) -> str:
        """The status message of a task that did not complete ('' if it did)."""
        msg = self.task.status.message
        if msg is None:
            return ""
        return " ".join(p.text for p in msg.parts if p.text is not None)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.task.metadata or {}

    @property
    def maybe_ran(self) -> bool:
        """A failed ask that may have run at the other end all the same: its request went out
        and then it timed out, or was never acknowledged (`maybeRan` in its metadata). Asking
        again as new work may run it twice; an idempotency key makes that safe."""
        return not self.ok and bool(self.metadata.get("maybeRan"))

    def unwrap(self) -> dict[str, Any]:
        """The data, or TaskFailed if the task did not complete."""
        if not self.ok:
            raise TaskFailed(
                f"task '{self.task.id}' ended {self.state}: {self.error}",
                state=self.state,
                task_id=self.task.id,
            )
        return self.data

    def __repr__(self) -> str:
        return f"TaskResult(id={self.task.id!r}, state={self.state!r})"


def status_message(text: str) -> Message:
    return Message(message_id=new_id(), role="ROLE_AGENT", parts=[Part(text=text)])


def failed_task(
    task_id: str, context_id: str, state: str, text: str, metadata: dict[str, Any] | None = None
) -> Task:
    """A task that ended `state` (`failed`, `rejected`, `canceled`) with `text` as its status."""
    return Task(
        id=task_id,
        context_id=context_id,
        status=TaskStatus(state=task_state(state), message=status_message(text)),
        metadata=metadata,
    )


Deliver = Callable[[Envelope], None]
# Decides whether a task request may be run: the text of the refusal (naming the rule) or None.
Authorize = Callable[[Envelope], str | None]


_RELIABLE = (TaskRequest, Task, CancelTask, Drain, Drained)


class ActorGone(Exception):
    """Raised by a delivery callback whose actor is no longer running."""


class Faults:
    """Fault injection for tests, off unless `AGENTRT_FAULTS` is set, e.g.
    `drop=0.05,duplicate=0.05,delay=0.05,delay_s=0.2,seed=1`: each work-carrying envelope
    (and each ack) is dropped, sent twice or sent late with those chances."""

    def __init__(self, drop: float, duplicate: float, delay: float, delay_s: float, seed: int) -> None:
        if drop + duplicate + delay > 1:
            raise ValueError("AGENTRT_FAULTS: drop + duplicate + delay must be <= 1")
        self.drop, self.duplicate, self.delay, self.delay_s = drop, duplicate, delay, delay_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Faults | None:
        text = os.environ.get("AGENTRT_FAULTS", "").strip()
        if not text:
            return None
        known = {"drop": 0.0, "duplicate": 0.0, "delay": 0.0, "delay_s": 0.1, "seed": 0.0}
        for part in text.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in known:
                raise ValueError(f"AGENTRT_FAULTS: unknown fault '{name.strip()}'; known: {', '.join(known)}")
            known[name.strip()] = float(value)
        return cls(known["drop"], known["duplicate"], known["delay"], known["delay_s"], int(known["seed"]) + os.getpid())

    def fate(self) -> str:
        with self._lock:
            r = self._rng.random()
        if r < self.drop:
            return "drop"
        if r < self.drop + self.duplicate:
            return "duplicate"
        if r < self.drop + self.duplicate + self.delay:
            return "delay"
        return "sent"


class _Reliable(msgspec.Struct, frozen=True):
    """What the shell remembers of a reliable send, for when the core gives up on it."""

    kind: str
    sender: str
    recipient: str
    task_id: str | None
    context_id: str | None
    attempt: int


class Messenger:
    """One process's envelope path, the shell around the delivery core (runtime/_delivery.py):
    it encodes, checks limits, routes, traces, and carries out the core's commands on the
    transport and the timer thread. Local actors register a delivery callback by name."""

    def __init__(
        self,
        *,
        name: str,
        endpoint: str,
        limits: Limits,
        trust: Trust,
        trace_to: str | None = None,
        collect_at: str | None = None,
        on_trace: TraceHandler | None = None,
        on_death: DeathHandler | None = None,
        timers: Timers | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.name = name
        self.trust = trust
        self.limits = limits
        self.routes: dict[str, str] = {}  # address -> endpoint
        self.cards: dict[str, AgentCard] = {}
        self.local: dict[str, Deliver] = {}
        self.on_control: Callable[[Envelope], None] | None = None
        self.on_heartbeat: Callable[[Heartbeat], None] | None = None
        self.authorize: Authorize | None = None
        self.accepting = True  # False: work is not taken yet (a node until it has the directory)
        self.stats: Counter[str] = Counter()
        self.timers = timers or Timers()
        # (task id, attempt) -> (future, who was asked, its number: a timeout finds its own ask)
        self._pending: dict[tuple[str, int], tuple[Future[TaskResult], str, int]] = {}
        self._pending_lock = threading.Lock()
        # Asks' timeouts: one heap of deadlines served by one timer set for the soonest (not a
        # timer per ask, cancelled at its answer); an entry whose ask was answered is skipped.
        # (when, the ask's number, its key, its context id, timeout_s, who was asked, skill)
        self._deadlines: list[tuple[float, int, tuple[str, int], str, float, str, str]] = []
        self._asks = 0  # asks made: each one's number
        self._deadline = Alarm(self.timers, self._on_deadline, time.monotonic)
        self.delivery = Delivery(policy)
        self._lock = threading.Lock()  # the delivery core's: it is not thread-safe
        self._due = Alarm(self.timers, self._on_due, time.time)  # the delivery core's one timer
        self._sampler = Sampler()
        self._dead_lock = threading.Lock()
        self.faults = Faults.from_env()
        self._log = get_logger()
        self.transport = Transport(
            bind=endpoint,
            trust=trust,
            on_frame=self._on_frame,
            on_refused=self._on_refused,
            trace_to=trace_to,
            collect_at=collect_at,
            on_trace=on_trace,
            on_death=on_death,
            max_frame_bytes=limits.max_frame_bytes,
        )
        self.endpoint = self.transport.endpoint  # a `tcp://host:*` bind: with its port
        # Fencing: this process's incarnation (stamped on what it sends) and each node's current
        # one (from the directory): what a replaced incarnation sends is dropped as `stale`.
        self.epoch = 0
        self.epochs: dict[str, int] = {}

    def start(self) -> None:
        self.transport.start()

    def stop(self) -> None:
        with self._dead_lock:
            dead = {k: v for k, v in self.stats.items() if k.startswith("dead.")}
        if dead:  # the exact counts, whatever was sampled
            emit(self._log, MessageDeadLetterCounts(node=self.name, counts=dead))
        self.timers.stop()
        flush_trace()  # what is buffered goes out before the sockets close
        self.transport.stop()

    # -- directory -----------------------------------------------------------------------

    def route(self, address: str, endpoint: str) -> None:
        """Send what is addressed to `address` to `endpoint`. A member's own address (the
        supervisor's, a node's) also tells the transport whose key that endpoint must show."""
        self.routes[address] = endpoint
        member = member_of_address(address)
        if member is not None:
            self.transport.expect(endpoint, member)

    def set_directory(
        self, routes: dict[str, str], cards: list[AgentCard], epochs: dict[str, int] | None = None
    ) -> None:
        if epochs:  # before the routes: a message sent meanwhile names no incarnation gone
            self.epochs.update(epochs)
        for address, endpoint in routes.items():
            self.route(address, endpoint)
        self.cards.update({c.name: c for c in cards})

    def _incarnation_of(self, address: str) -> int:
        """The incarnation of the node hosting `address` that what is sent there now is for (see
        `Envelope.to_epoch`): 0 when no epoch is known for it, -1 when it is down."""
        member = self.trust.host_of(address)
        if member is None or member not in self.epochs:
            return 0
        return self.epochs[member] or -1

    def card(self, actor: str) -> AgentCard:
        card = self.cards.get(actor)
        if card is None:
            known = ", ".join(sorted(self.cards)) or "none yet"
            raise RoutingError(f"no actor named '{actor}' in the directory (known: {known})")
        return card

    def actors_with_skill(self, skill: str) -> list[str]:
        return sorted(n for n, c in self.cards.items() if c.skill(skill) is not None)

    # -- sending ---------------------------------------------------------------------------

    def send(self, envelope: Envelope) -> None:
        """Encode, check, trace and queue one envelope for its recipient. An envelope the
        receiver would refuse (over the frame or depth limit) raises OverLimit here and is
        dead-lettered `over-limit`: it is never sent, so never resent."""
        endpoint = self.routes.get(envelope.recipient)
        if endpoint is None:
            self.dead_letter(
                "unroutable",
                f"no address '{envelope.recipient}' in the directory",
                envelope=envelope,
            )
            raise RoutingError(
                f"cannot send to '{envelope.recipient}': no such address in the directory"
            )
        with self._lock:  # acks noted for the recipient ride on this envelope
            acks = self.delivery.take_acks(envelope.recipient)
        to_epoch = self._incarnation_of(envelope.recipient)
        if acks or to_epoch != envelope.to_epoch:
            envelope = msgspec.structs.replace(envelope, acks=list(acks) or None, to_epoch=to_epoch)
        frame = encode(envelope)
        try:
            check_limits(envelope, frame, self.limits)
        except FrameError as exc:
            if acks:  # they made it too big: they go alone, and the envelope is tried without
                self._acknowledge(envelope.recipient, acks)
                self.send(msgspec.structs.replace(envelope, acks=None))
                return
            self.dead_letter("over-limit", str(exc), envelope=envelope, size=len(frame))
            raise OverLimit(f"not sent: {exc}") from None
        self.stats["sent"] += 1
        if envelope.recipient == SUPERVISOR and self.name != SUPERVISOR:
            # What the supervisor hears from us comes after what we recorded before it: a
            # reply to its ask, say, finds the events that led to it in the trace (the batch
            # leaves first, on the trace socket), as it did when each event left at once.
            flush_trace()
        emit(
            self._log,
            EnvelopeSent(
                trace_id=envelope.trace_id,
                span_id=envelope.span_id,
                parent_span_id=envelope.parent_span_id,
                actor=envelope.sender,
                message_id=envelope.message_id,
                kind=envelope.kind,
                sender=envelope.sender,
                recipient=envelope.recipient,
                task_id=envelope.task_id,
                plan_task=envelope.plan_task,
                bytes=len(frame),
            ),
            envelope=msgspec.Raw(frame),  # its wire bytes, as they are: the same map once decoded
        )
        if not isinstance(envelope.body, _RELIABLE):
            self.transport.send(endpoint, frame)
            return
        tag = _Reliable(
            envelope.kind,
            envelope.sender,
            envelope.recipient,
            envelope.task_id,
            envelope.context_id,
            envelope.attempt,
        )
        with self._lock:
            # Its sent_at is the one clock read of an envelope (a resend's is the timer's).
            commands = self.delivery.send(envelope.message_id, envelope.recipient, frame, envelope.sent_at, tag)
        self._apply(commands)
        self._arm()

    def run_here(self, fn: Callable[..., Any], *args: Any) -> bool:
        """From a delivery callback: run `fn(*args)` on the thread that received the envelope,
        once it is dispatched (see Transport.run_here); False: run it another way."""
        return self.transport.run_here(fn, *args)

    def send_via_io(self, recipient: str, body: Body) -> None:
        """Send through the I/O thread, untraced: heartbeats, which prove that its loop runs
        (and would drown the trace)."""
        endpoint = self.routes.get(recipient)
        if endpoint is not None:
            self.transport.send_via_io(endpoint, encode(self.envelope(sender=self.name, recipient=recipient, body=body)))

    # -- carrying out the delivery core's commands ------------------------------------------

    def _apply(self, commands: list[Command]) -> None:
        """Carry out every command of a batch, even when one fails."""
        for command in commands:
            try:
                self._carry_out(command)
            except Exception as exc:
                self.stats["errors"] += 1
                emit(self._log, NodeError(where="delivery", error=f"{type(exc).__name__}: {exc}"))

    def _carry_out(self, command: Command) -> None:
        match command:
            case Transmit(message_id=message_id, link=link, frame=frame, send=send):
                endpoint = self.routes.get(link)
                if endpoint is None:
                    return  # no way there now; a later resend may find one
                if send > 1:
                    self.stats["resent"] += 1
                    emit(self._log, EnvelopeResent(message_id=message_id, send=send))
                self._emit(endpoint, frame)
            case Acknowledge(link=link, ids=ids):
                self._acknowledge(link, ids)
            case GiveUp(message_id=message_id, sends=sends, tag=tag):
                self._gave_up(message_id, sends, tag)

    def _acknowledge(self, link: str, ids: tuple[str, ...]) -> None:
        """Send acks alone (none went that way in time to carry them)."""
        endpoint = self.routes.get(link)
        if endpoint is not None:
            self.stats["acks-alone"] += 1
            self._emit(endpoint, encode(self.envelope(sender=self.name, recipient=link, body=Ack(ids=list(ids)))))

    def _gave_up(self, message_id: str, sends: int, tag: Any) -> None:
        self.stats["undelivered"] += 1
        detail = (
            f"sent {sends} times, never acknowledged"
            if sends
            else f"not sent: {self.delivery.policy.max_link_bytes} bytes (max_link_bytes) already "
            "wait for its acknowledgements"
        )
        if isinstance(tag, _Reliable):
            self.dead_letter(
                "undelivered",
                f"{tag.kind} to '{tag.recipient}' {detail}",
                message_id=message_id,
                sender=tag.sender,
                recipient=tag.recipient,
                kind=tag.kind,
            )
            if tag.kind == "task-request" and tag.task_id is not None:
                # The asker learns now, not at its timeout. A request that was sent may have
                # arrived (only its acks lost) and run: `maybeRan` says so (as a timeout's
                # answer does), and an asker that must not run it twice (the coordinator, for
                # stateful work) holds it in doubt; one never sent (sends == 0) is safe to retry.
                self._resolve(
                    (tag.task_id, tag.attempt),
                    failed_task(
                        tag.task_id,
                        tag.context_id or tag.task_id,
                        "failed",
                        f"undelivered: '{tag.recipient}' never acknowledged the request ({detail})",
                        {"maybeRan": True} if sends else None,
                    ),
                )
        else:
            self.dead_letter("undelivered", detail, message_id=message_id)

    def _emit(self, endpoint: str, frame: bytes) -> None:
        faults = self.faults
        if faults is None:
            self.transport.send(endpoint, frame)
            return
        fate = faults.fate()
        self.stats[f"faults.{fate}"] += 1
        if fate == "drop":
            return
        if fate == "delay":
            self.timers.schedule(faults.delay_s, lambda: self.transport.send(endpoint, frame))
            return
        self.transport.send(endpoint, frame)
        if fate == "duplicate":
            self.transport.send(endpoint, frame)

    def _arm(self) -> None:
        """Keep the one delivery timer set for the core's next resend (or give-up)."""
        with self._lock:
            at = self.delivery.next_due()
        if at is not None:
            self._due.ring_by(at)

    def _on_due(self) -> None:
        with self._lock:
            commands = self.delivery.due(time.time())
        self._apply(commands)
        self._arm()

    def envelope(
        self,
        *,
        sender: str,
        recipient: str,
        body: Body,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
        context_id: str | None = None,
        task_id: str | None = None,
        plan_task: str | None = None,
        attempt: int = 1,
        idempotency_key: str | None = None,
        deadline: float | None = None,
    ) -> Envelope:
        return Envelope(
            message_id=new_id(),
            trace_id=trace_id or new_trace_id(),
            span_id=new_span_id(),
            parent_span_id=parent_span_id,
            sender=sender,
            recipient=recipient,
            context_id=context_id,
            task_id=task_id,
            plan_task=plan_task,
            attempt=attempt,
            idempotency_key=idempotency_key,
            sent_at=time.time(),
            deadline=deadline,
            body=body,
            epoch=self.epoch,
            to_epoch=self._incarnation_of(recipient),
        )

    def ask(
        self,
        *,
        sender: str,
        recipient: str,
        skill: str,
        data: dict[str, Any] | None = None,
        text: str | None = None,
        task_id: str | None = None,
        plan_task: str | None = None,
        context_id: str | None = None,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
        attempt: int = 1,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        metadata: dict[str, Any] | None = None,
        validate_input: bool = True,
        token_allowance: int | None = None,
    ) -> Future[TaskResult]:
        """Ask `recipient` to run `skill`; the future resolves with its reply (never raises:
        a timeout resolves as a failed TaskResult). Bad input raises here, before sending.
        `plan_task`: the plan task this request runs, when it runs one."""
        card = self.card(recipient)
        if card.skill(skill) is None:
            offered = ", ".join(s.id for s in card.skills) or "none"
            raise RoutingError(f"actor '{recipient}' has no skill '{skill}' (it offers: {offered})")
        if validate_input:
            validate(
                card.contract(skill).input_schema,
                data if data is not None else {},
                what=f"input of skill '{skill}' on '{recipient}'",
            )
        parts: list[Any] = []
        if data is not None or text is None:  # A2A: a message has a part at least
            parts.append(Part(data=data if data is not None else {}, media_type="application/json"))
        if text is not None:
            parts.append(Part(text=text, media_type="text/plain"))
        task_id = task_id or new_id()
        context_id = context_id or task_id
        timeout = timeout_s if timeout_s is not None else card.contract(skill).timeout_s
        deadline = time.time() + timeout if timeout is not None else None
        envelope = self.envelope(
            sender=sender,
            recipient=recipient,
            trace_id=trace_id,
            parent_span_id=parent_span_id,
            context_id=context_id,
            task_id=task_id,
            plan_task=plan_task,
            attempt=attempt,
            idempotency_key=idempotency_key,
            deadline=deadline,
            body=TaskRequest(
                message=Message(
                    message_id=new_id(),
                    role="ROLE_USER",
                    parts=parts,
                    context_id=context_id,
                    task_id=task_id,
                ),
                call=SkillCall(skill=skill, token_allowance=token_allowance),
                metadata=metadata,
            ),
        )
        future: Future[TaskResult] = Future()
        key = (task_id, attempt)
        with self._pending_lock:
            self._asks += 1
            self._pending[key] = (future, recipient, self._asks)
            if timeout is not None:
                at = time.monotonic() + timeout
                heapq.heappush(self._deadlines, (at, self._asks, key, context_id, timeout, recipient, skill))
                if len(self._deadlines) > 2 * len(self._pending) + 1024:  # mostly answered asks:
                    self._deadlines = [e for e in self._deadlines if self._waiting(e)]  # keep it
                    heapq.heapify(self._deadlines)  # as big as what waits (amortised O(1))
                self._deadline.ring_by(at)
        try:
            self.send(envelope)
        except Exception:
            with self._pending_lock:
                self._pending.pop(key, None)
            raise
        return future

    def _waiting(self, entry: tuple[Any, ...]) -> bool:
        """Whether the ask of deadline `entry` still waits for its answer. Under `_pending_lock`."""
        pending = self._pending.get(entry[2])
        return pending is not None and pending[2] == entry[1]

    def _on_deadline(self) -> None:
        """The asks' timer: answer every ask whose timeout has passed (failed, `maybeRan`: it
        was sent, so it may be running or have run), and set the timer for the next one.
        Entries of asks answered meanwhile are dropped as they come to the top."""
        now = time.monotonic()
        expired = []
        with self._pending_lock:
            heap = self._deadlines
            while heap:
                waiting = self._waiting(heap[0])
                if waiting and heap[0][0] > now:
                    self._deadline.ring_by(heap[0][0])
                    break
                entry = heapq.heappop(heap)
                if waiting:
                    expired.append((self._pending.pop(entry[2])[0], entry))
        for future, (_, _, (task_id, _), context_id, timeout, recipient, skill) in expired:
            why = f"timed out after {timeout:g}s waiting for '{recipient}' to finish skill '{skill}'"
            with contextlib.suppress(InvalidStateError):  # the asker cancelled its future
                future.set_result(TaskResult(failed_task(task_id, context_id, "failed", why, {"maybeRan": True})))

    def _resolve(self, key: tuple[str, int], task: Task) -> bool:
        with self._pending_lock:
            pending = self._pending.pop(key, None)
        if pending is None:
            return False
        pending[0].set_result(TaskResult(task))
        return True

    def forget(self, task_id: str, attempt: int) -> None:
        """Stop waiting for the answer to ask (`task_id`, `attempt`): it was sent again as a
        later attempt, which answers its future instead. What would have resolved this one (a
        late reply, its give-up, its timeout) then resolves nothing."""
        with self._pending_lock:
            self._pending.pop((task_id, attempt), None)

    def _asked(self, key: tuple[str, int]) -> str | None:
        """Who the pending ask `key` went to (None if there is no such ask)."""
        with self._pending_lock:
            pending = self._pending.get(key)
        return pending[1] if pending is not None else None

    # -- dead letters ----------------------------------------------------------------------

    def dead_letter(
        self,
        reason: DeadLetterReason,
        detail: str,
        *,
        envelope: Envelope | None = None,
        peer: str | None = None,
        size: int = 0,
        message_id: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        kind: str | None = None,
    ) -> DeadLetter:
        """Record one message that was not delivered: counted exactly (`dead`, `dead.<reason>`),
        and traced as `message.dead-letter` up to a few per reason per second, each sample with
        the running `count` for its reason and how many went `suppressed` since the last (the
        one place every refusal goes, whatever refused it)."""
        letter = DeadLetter(
            reason=reason,
            detail=detail[:500],
            node=self.name,
            at=time.time(),
            peer=peer,
            message_id=envelope.message_id if envelope is not None else message_id,
            sender=envelope.sender if envelope is not None else sender,
            recipient=envelope.recipient if envelope is not None else recipient,
            kind=envelope.kind if envelope is not None else kind,
            bytes=size,
        )
        with self._dead_lock:
            self.stats["dead"] += 1
            self.stats[f"dead.{reason}"] += 1
            count = self.stats[f"dead.{reason}"]
            suppressed = self._sampler.admit(reason, letter.at)
        if suppressed is not None:
            emit(self._log, MessageDeadLetter(count=count, suppressed=suppressed, **msgspec.structs.asdict(letter)))
        return letter

    # -- receiving (on the I/O thread) -----------------------------------------------------

    def _on_refused(self, reason: DeadLetterReason, detail: str, peer: str | None, size: int) -> None:
        """What the transport refused (a multi-part message, a failed handshake, a full queue)."""
        self.dead_letter(reason, detail, peer=peer, size=size)

    def _on_frame(self, peer: str | None, frame: memoryview) -> None:
        try:
            self._receive(peer, frame)
        except Exception as exc:  # nothing a peer sends may kill the I/O thread
            self.stats["errors"] += 1
            emit(self._log, NodeError(where="receive", error=f"{type(exc).__name__}: {exc}"))

    def _receive(self, peer: str | None, frame: memoryview) -> None:
        """One frame from the member `peer` (None: not authenticated)."""
        size = len(frame)
        try:
            envelope = decode(frame, self.limits)
        except FrameError as exc:
            self.dead_letter(exc.reason, str(exc), peer=peer, size=size)  # type: ignore[arg-type]
            return
        # The one place a sender is checked against the member it came from (before anything
        # about the envelope is believed: dedup, acks, routing).
        refusal = authenticate(peer, envelope, self.trust)
        if refusal is not None:
            self.dead_letter(refusal[0], refusal[1], envelope=envelope, peer=peer, size=size)
            return
        if envelope.acks:  # acks riding on the envelope, whatever it carries
            self._acked(peer, envelope, envelope.acks, size)
        body = envelope.body
        if (
            peer in self.epochs
            and envelope.epoch != self.epochs[peer]
            and not isinstance(body, (Heartbeat, Join))
        ):
            self.dead_letter(
                "stale",
                f"from incarnation {envelope.epoch} of node '{peer}', which is not its current one "
                f"({self.epochs[peer] or 'none: the node is down'}); a replaced node's late messages are ignored",
                envelope=envelope,
                peer=peer,
                size=size,
            )
            return
        if envelope.to_epoch and self.epoch and envelope.to_epoch != self.epoch:
            self.dead_letter(
                "stale",
                f"meant for incarnation {envelope.to_epoch} of this node, not this one ({self.epoch}): "
                "work sent to a lost incarnation is in doubt with its sender, never run again here",
                envelope=envelope,
                peer=peer,
                size=size,
            )
            return
        match body:
            case Heartbeat():
                if self.on_heartbeat is not None:
                    self.on_heartbeat(body)
                return
            case Ack(ids=ids):
                self._acked(peer, envelope, ids, size)
                return
        if not self.accepting and isinstance(body, _RELIABLE):
            # Work for a node that has no directory yet (restarted, say: copies a peer queued
            # while it was down arrive as soon as it binds): not taken, not acknowledged, so
            # its sender sends it again once the node knows the run.
            self.stats["early"] += 1
            return
        # What its sender sends reliably (and only that) is acknowledged and deduplicated here.
        now = time.time()  # the one clock read of a received envelope
        if isinstance(body, _RELIABLE) and not self._take(envelope, size, now):
            return
        if envelope.deadline is not None and envelope.deadline < now:
            self.dead_letter(
                "expired",
                f"arrived {now - envelope.deadline:.3f}s after its deadline",
                envelope=envelope,
                size=size,
            )
            return
        self.stats["received"] += 1
        emit(
            self._log,
            EnvelopeReceived(
                trace_id=envelope.trace_id,
                span_id=envelope.span_id,
                parent_span_id=envelope.parent_span_id,
                actor=envelope.recipient,
                message_id=envelope.message_id,
                kind=envelope.kind,
                sender=envelope.sender,
                recipient=envelope.recipient,
                task_id=envelope.task_id,
                plan_task=envelope.plan_task,
                bytes=size,
            ),
        )
        if isinstance(body, TaskReply) and body.task.status.state in TERMINAL_STATES:
            task = body.task
            key = (task.id, envelope.attempt)
            asked = self._asked(key)
            if asked is not None and asked != envelope.sender:
                self.dead_letter(
                    "forged-sender",
                    f"a reply to task '{task.id}' from '{envelope.sender}', but the task was asked of '{asked}'",
                    envelope=envelope,
                    peer=peer,
                    size=size,
                )
                return
            if self._resolve(key, task):
                return
        if (
            isinstance(body, CONTROL_BODIES)
            and self.on_control is not None
            and envelope.recipient not in self.local
        ):
            self.on_control(envelope)  # for the node (or the supervisor); an actor's goes on
            return
        deliver = self.local.get(envelope.recipient)
        if deliver is None:
            self.dead_letter(
                "unroutable",
                f"no actor '{envelope.recipient}' on {self.name}",
                envelope=envelope,
                size=size,
            )
            return
        if isinstance(body, TaskRequest) and self.authorize is not None:
            refusal = self.authorize(envelope)
            if refusal is not None:
                self.dead_letter("not-allowed", refusal, envelope=envelope, size=size)
                self.answer(envelope, "rejected", refusal)
                return
        try:
            deliver(envelope)
        except ActorGone as exc:
            self.dead_letter("actor-dead", str(exc), envelope=envelope, size=size)
            if isinstance(body, TaskRequest):
                self.answer(envelope, "failed", str(exc))

    def _acked(self, peer: str | None, envelope: Envelope, ids: list[str], size: int) -> None:
        """Acknowledgements from `peer`: only the member a message went to may stop its resends."""
        with self._lock:
            links = {i: self.delivery.link_of(i) for i in ids}
            foreign = {i: link for i, link in links.items() if link is not None and self.trust.host_of(link) != peer}
            self.delivery.acked([i for i in ids if i not in foreign])
        if foreign:
            sent_to = sorted({str(self.trust.host_of(link)) for link in foreign.values()})
            self.dead_letter(
                "forged-sender",
                f"member '{peer}' acknowledged {len(foreign)} message(s) sent to {', '.join(sent_to)}",
                envelope=envelope,
                peer=peer,
                size=size,
            )

    def _take(self, envelope: Envelope, size: int, now: float) -> bool:
        """Run a reliable envelope past the delivery core: True to hand it on (its first copy)."""
        link = envelope.sender if envelope.sender in self.routes else None
        with self._lock:
            verdict = self.delivery.receive(envelope.message_id, link, envelope.sent_at, now)
        if verdict in ("deliver", "duplicate"):  # its ack is noted: it goes alone at the
            self._arm()  # delivery timer if no envelope goes that way before
        if verdict == "deliver":
            return True
        self.stats[verdict] += 1
        if verdict == "duplicate":
            emit(self._log, EnvelopeDuplicate(message_id=envelope.message_id, kind=envelope.kind))
        elif verdict == "stale":
            self.dead_letter(
                "expired",
                "older than its sender's resends: its sender gives up on it (undelivered)",
                envelope=envelope,
                size=size,
            )
        return False

    def answer(self, request: Envelope, state: str, text: str, metadata: dict[str, Any] | None = None) -> None:
        """Answer a task request on its actor's behalf: one that will not run (`rejected`,
        `failed`), or one whose actor died running it (`metadata` {"maybeRan": True})."""
        task_id = request.task_id or request.message_id
        task = failed_task(task_id, request.context_id or task_id, state, text, metadata)
        try:
            self.send(
                self.envelope(
                    sender=request.recipient,
                    recipient=request.sender,
                    body=TaskReply(task=task),
                    trace_id=request.trace_id,
                    parent_span_id=request.span_id,
                    context_id=task.context_id,
                    task_id=task_id,
                    plan_task=request.plan_task,
                    attempt=request.attempt,
                    idempotency_key=request.idempotency_key,
                )
            )
        except Exception as exc:
            emit(self._log, TaskReplyFailed(task_id=task_id, error=f"{type(exc).__name__}: {exc}"))
