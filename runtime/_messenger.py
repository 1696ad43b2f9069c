"""Sends and receives envelopes for one process: encode, trace, route, and correlate replies."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import msgspec

from agentrt.protocols import (
    TERMINAL_STATES,
    AgentCard,
    Body,
    CancelTask,
    Control,
    DataPart,
    DeadLetter,
    DeadLetterReason,
    Drain,
    Drained,
    Envelope,
    EnvelopeDuplicate,
    EnvelopeReceived,
    EnvelopeResent,
    EnvelopeSent,
    EnvelopeUndeliverable,
    EnvelopeUndelivered,
    FrameError,
    FrameRejected,
    Heartbeat,
    Limits,
    MalformedFrame,
    Message,
    MessageDeadLetter,
    NodeError,
    RoutingError,
    Task,
    TaskFailed,
    TaskRequest,
    TaskStatus,
    TextPart,
    decode,
    encode,
    new_id,
    new_span_id,
    new_trace_id,
)

from ._timers import Timers
from ._tracing import emit, get_logger
from ._transport import Transport
from ._validation import validate


class TaskResult:
    """The outcome of an ask: the A2A Task the other actor replied with."""

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task

    @property
    def state(self) -> str:
        return self.task.status.state

    @property
    def ok(self) -> bool:
        return self.state == "completed"

    @property
    def data(self) -> dict[str, Any]:
        """The first data part of the first artifact ({} if none)."""
        for artifact in self.task.artifacts:
            for part in artifact.parts:
                if isinstance(part, DataPart):
                    return part.data
        return {}

    @property
    def text(self) -> str:
        """All text parts of the artifacts, joined by newlines."""
        return "\n".join(
            p.text for a in self.task.artifacts for p in a.parts if isinstance(p, TextPart)
        )

    @property
    def error(self) -> str:
        """The status message of a task that did not complete ('' if it did)."""
        msg = self.task.status.message
        if msg is None:
            return ""
        return " ".join(p.text for p in msg.parts if isinstance(p, TextPart))

    @property
    def metadata(self) -> dict[str, Any]:
        return self.task.metadata or {}

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
    return Message(message_id=new_id(), role="agent", parts=[TextPart(text=text)])


def failed_task(task_id: str, context_id: str, state: str, text: str) -> Task:
    return Task(
        id=task_id,
        context_id=context_id,
        status=TaskStatus(state=state, message=status_message(text)),  # type: ignore[arg-type]
    )


Deliver = Callable[[Envelope], None]


_RELIABLE = (TaskRequest, Task, CancelTask, Drain, Drained)
_ACK_WAIT_S = 0.25  # first resend if no ack by then; then doubling, up to 2 s
_MAX_SENDS = 10
_SEEN = 200_000  # message ids remembered for deduplication


class _Outgoing:
    __slots__ = ("endpoint", "frame", "sends")

    def __init__(self, endpoint: str, frame: bytes) -> None:
        self.endpoint, self.frame, self.sends = endpoint, frame, 1


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


class Messenger:
    """One process's envelope path. Local actors register a delivery callback by name."""

    def __init__(
        self,
        *,
        name: str,
        endpoint: str,
        limits: Limits,
        trace_to: str | None = None,
        collect_at: str | None = None,
        on_trace: Callable[[bytes], None] | None = None,
        timers: Timers | None = None,
    ) -> None:
        self.name = name
        self.limits = limits
        self.routes: dict[str, str] = {}  # address -> endpoint
        self.cards: dict[str, AgentCard] = {}
        self.local: dict[str, Deliver] = {}
        self.on_control: Callable[[Envelope], None] | None = None
        self.on_heartbeat: Callable[[Heartbeat], None] | None = None
        self.stats: Counter[str] = Counter()
        self.timers = timers or Timers()
        self._pending: dict[tuple[str, int], Future[TaskResult]] = {}
        self._pending_lock = threading.Lock()
        self._unacked: dict[str, _Outgoing] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._unacked_lock = threading.Lock()
        self.faults = Faults.from_env()
        self._log = get_logger()
        self.transport = Transport(
            bind=endpoint,
            on_frames=self._on_frames,
            trace_to=trace_to,
            collect_at=collect_at,
            on_trace=on_trace,
            max_frame_bytes=limits.max_frame_bytes,
        )
        self.endpoint = endpoint

    def start(self) -> None:
        self.transport.start()

    def stop(self) -> None:
        self.timers.stop()
        self.transport.stop()

    # -- directory -----------------------------------------------------------------------

    def set_directory(self, routes: dict[str, str], cards: list[AgentCard]) -> None:
        self.routes.update(routes)
        self.cards.update({c.name: c for c in cards})

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
        """Encode, trace and queue one envelope for its recipient."""
        endpoint = self.routes.get(envelope.recipient)
        if endpoint is None:
            raise RoutingError(
                f"cannot send to '{envelope.recipient}': no such address in the directory"
            )
        frame = encode(envelope)
        self.stats["sent"] += 1
        reliable = isinstance(envelope.body, _RELIABLE)
        if reliable:
            with self._unacked_lock:
                self._unacked[envelope.message_id] = _Outgoing(endpoint, frame)
            self.timers.schedule(_ACK_WAIT_S, lambda mid=envelope.message_id: self._resend(mid))
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
                envelope=envelope,
            ),
        )
        self._emit(endpoint, frame, faulty=reliable)

    # -- at-least-once delivery, exactly-once processing ------------------------------------
    #
    # Work-carrying envelopes (task requests, task replies, cancels) are kept until the
    # receiver acknowledges them, and sent again with growing waits until it does (or up to
    # _MAX_SENDS times; past that the task-level timeouts and retries take over). A receiver
    # acknowledges every copy and hands on only the first of each message id.

    def send_quiet(self, recipient: str, body: Body) -> None:
        """Send without tracing it (heartbeats: they would drown the trace)."""
        endpoint = self.routes.get(recipient)
        if endpoint is not None:
            self.transport.send(endpoint, encode(self.envelope(sender=self.name, recipient=recipient, body=body)))

    def _emit(self, endpoint: str, frame: bytes, *, faulty: bool) -> None:
        faults = self.faults
        if not faulty or faults is None:
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

    def _resend(self, message_id: str) -> None:
        with self._unacked_lock:
            out = self._unacked.get(message_id)
            if out is None:
                return
            out.sends += 1
            if out.sends > _MAX_SENDS:
                del self._unacked[message_id]
        if out.sends > _MAX_SENDS:
            self.stats["undelivered"] += 1
            emit(self._log, EnvelopeUndelivered(message_id=message_id, sends=_MAX_SENDS))
            return
        self.stats["resent"] += 1
        emit(self._log, EnvelopeResent(message_id=message_id, send=out.sends))
        self._emit(out.endpoint, out.frame, faulty=True)
        self.timers.schedule(
            min(_ACK_WAIT_S * 2 ** (out.sends - 1), 2.0), lambda: self._resend(message_id)
        )

    def _ack(self, envelope: Envelope) -> str:
        """Acknowledge a work-carrying envelope: "new" to hand it on, "duplicate" for a copy
        already handed on, "later" if it cannot be acknowledged yet (this node does not know
        the way back to its sender, as while a restarted node waits for the directory): the
        sender sends it again, and nothing is taken on that could not be answered."""
        endpoint = self.routes.get(envelope.sender)
        if endpoint is None:
            return "later"
        ack = self.envelope(
            sender=self.name, recipient=envelope.sender, body=Control(op="ack", args={"id": envelope.message_id})
        )
        self._emit(endpoint, encode(ack), faulty=True)
        with self._unacked_lock:
            if envelope.message_id in self._seen:
                return "duplicate"
            self._seen[envelope.message_id] = None
            while len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
        return "new"

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
    ) -> Future[TaskResult]:
        """Ask `recipient` to run `skill`; the future resolves with its reply (never raises:
        a timeout resolves as a failed TaskResult). Bad input raises here, before sending.
        `plan_task`: the plan task this request runs, when it runs one."""
        card = self.card(recipient)
        declared = card.skill(skill)
        if declared is None:
            offered = ", ".join(s.id for s in card.skills) or "none"
            raise RoutingError(f"actor '{recipient}' has no skill '{skill}' (it offers: {offered})")
        if validate_input:
            validate(
                declared.input_schema,
                data if data is not None else {},
                what=f"input of skill '{skill}' on '{recipient}'",
            )
        parts: list[Any] = []
        if data is not None:
            parts.append(DataPart(data=data))
        if text is not None:
            parts.append(TextPart(text=text))
        task_id = task_id or new_id()
        context_id = context_id or task_id
        timeout = timeout_s if timeout_s is not None else declared.timeout_s
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
                skill=skill,
                message=Message(
                    message_id=new_id(),
                    role="user",
                    parts=parts,
                    context_id=context_id,
                    task_id=task_id,
                ),
                metadata=metadata,
            ),
        )
        future: Future[TaskResult] = Future()
        key = (task_id, attempt)
        with self._pending_lock:
            self._pending[key] = future
        if timeout is not None:
            handle = self.timers.schedule(
                timeout,
                lambda: self._resolve(
                    key,
                    failed_task(
                        task_id,
                        context_id,
                        "failed",
                        f"timed out after {timeout:g}s waiting for "
                        f"'{recipient}' to finish skill '{skill}'",
                    ),
                ),
            )
            future.add_done_callback(lambda _f: self.timers.cancel(handle))
        try:
            self.send(envelope)
        except Exception:
            with self._pending_lock:
                self._pending.pop(key, None)
            raise
        return future

    def _resolve(self, key: tuple[str, int], task: Task) -> bool:
        with self._pending_lock:
            future = self._pending.pop(key, None)
        if future is None:
            return False
        future.set_result(TaskResult(task))
        return True

    # -- dead letters ----------------------------------------------------------------------

    def dead_letter(
        self,
        reason: DeadLetterReason,
        detail: str,
        *,
        envelope: Envelope | None = None,
        peer: str | None = None,
        size: int = 0,
    ) -> DeadLetter:
        """Record one message that was not delivered: counted, and traced as `message.dead-letter`
        (the one place every refusal goes, whatever refused it)."""
        letter = DeadLetter(
            reason=reason,
            detail=detail[:500],
            node=self.name,
            at=time.time(),
            peer=peer,
            message_id=envelope.message_id if envelope is not None else None,
            sender=envelope.sender if envelope is not None else None,
            recipient=envelope.recipient if envelope is not None else None,
            kind=envelope.kind if envelope is not None else None,
            bytes=size,
        )
        self.stats["dead"] += 1
        self.stats[f"dead.{reason}"] += 1
        emit(self._log, MessageDeadLetter(**msgspec.structs.asdict(letter)))
        return letter

    # -- receiving (on the I/O thread) -----------------------------------------------------

    def _on_frames(self, peer: bytes, frames: list[bytes]) -> None:
        try:
            self._receive(peer, frames)
        except Exception as exc:  # nothing a peer sends may kill the I/O thread
            self.stats["errors"] += 1
            emit(self._log, NodeError(where="receive", error=f"{type(exc).__name__}: {exc}"))

    def _receive(self, peer: bytes, frames: list[bytes]) -> None:
        size = sum(len(f) for f in frames)
        try:
            if len(frames) != 1:
                raise MalformedFrame(f"expected 1 frame per message, got {len(frames)}")
            envelope = decode(frames[0], self.limits)
        except FrameError as exc:
            self.stats["rejected"] += 1
            self.stats[f"rejected.{exc.reason}"] += 1
            emit(
                self._log,
                FrameRejected(actor=self.name, reason=exc.reason, error=str(exc), bytes=size, peer=peer.hex()),
            )
            return
        body = envelope.body
        if isinstance(body, Heartbeat):
            if self.on_heartbeat is not None:
                self.on_heartbeat(body)
            return
        if isinstance(body, Control) and body.op == "ack":
            with self._unacked_lock:
                self._unacked.pop(str(body.args.get("id")), None)
            return
        if isinstance(body, _RELIABLE):
            status = self._ack(envelope)
            if status != "new":
                self.stats[status] += 1
                if status == "duplicate":
                    emit(self._log, EnvelopeDuplicate(message_id=envelope.message_id, kind=envelope.kind))
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
        body = envelope.body
        if (
            isinstance(body, Task)
            and body.status.state in TERMINAL_STATES
            and self._resolve((body.id, envelope.attempt), body)
        ):
            return
        if isinstance(body, Control | Drained) and self.on_control is not None and envelope.recipient not in self.local:
            self.on_control(envelope)  # for the node (or the supervisor); an actor's goes on
            return
        deliver = self.local.get(envelope.recipient)
        if deliver is None:
            self.stats["undeliverable"] += 1
            emit(
                self._log,
                EnvelopeUndeliverable(
                    trace_id=envelope.trace_id,
                    span_id=envelope.span_id,
                    actor=self.name,
                    recipient=envelope.recipient,
                    reason="no such actor on this node",
                ),
            )
            return
        deliver(envelope)


def card_to_dict(card: AgentCard) -> dict[str, Any]:
    return msgspec.to_builtins(card)  # type: ignore[no-any-return]


def card_from_dict(data: dict[str, Any]) -> AgentCard:
    return msgspec.convert(data, AgentCard)
