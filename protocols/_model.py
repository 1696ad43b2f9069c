"""The message model: one Envelope with a tagged-union body, A2A-shaped where A2A has the concept.

Field names are snake_case in Python and camelCase on the wire (A2A's spelling).
Every body carries a `kind` tag, as A2A's Message, Task and Part objects do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# Protocol limits that are part of the schema (a receiver rejects more on decode).
MAX_PARTS = 256
MAX_ARTIFACTS = 256
MAX_ID = 256  # message, trace, span, task, context, artifact ids and idempotency keys
MAX_NAME = 128  # actor, node and skill names, addresses
MAX_ATTEMPT = 1_000_000

Id = Annotated[str, msgspec.Meta(max_length=MAX_ID)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
# Unix seconds: finite and after 1970 (NaN and infinities are refused on decode).
Timestamp = Annotated[float, msgspec.Meta(ge=0.0, le=1e11)]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPT)]


class Wire(msgspec.Struct, rename="camel", frozen=True, kw_only=True, omit_defaults=True):
    """Base of every wire type: immutable, camelCase on the wire, defaults omitted."""


# -- Parts (A2A) ---------------------------------------------------------------


class TextPart(Wire, tag="text", tag_field="kind"):
    """Plain text content."""

    text: str
    metadata: dict[str, Any] | None = None


class DataPart(Wire, tag="data", tag_field="kind"):
    """Structured JSON content; what skills validate against their schemas."""

    data: dict[str, Any]
    metadata: dict[str, Any] | None = None


class FileContent(Wire):
    """A file by reference (`uri`) or inline (`bytes`, base64), as in A2A."""

    uri: str | None = None
    bytes: str | None = None
    name: str | None = None
    mime_type: str | None = None


class FilePart(Wire, tag="file", tag_field="kind"):
    """A file by reference (uri) or inline (base64 bytes)."""

    file: FileContent
    metadata: dict[str, Any] | None = None


Part = TextPart | DataPart | FilePart
Parts = Annotated[list[Part], msgspec.Meta(max_length=MAX_PARTS)]


# -- Messages, tasks, artifacts (A2A) ---------------------------------------------

Role = Literal["user", "agent"]

TaskState = Literal[
    "submitted",
    "working",
    "input-required",
    "completed",
    "canceled",
    "failed",
    "rejected",
    "auth-required",
    "unknown",
]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "canceled", "failed", "rejected"})


class Message(Wire, tag="message", tag_field="kind"):
    """One turn of communication: a role and its parts."""

    message_id: Id
    role: Role
    parts: Parts
    context_id: Id | None = None
    task_id: Id | None = None
    reference_task_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_PARTS)] | None = None
    metadata: dict[str, Any] | None = None


class TaskStatus(Wire):
    state: TaskState
    message: Message | None = None
    timestamp: str | None = None  # ISO 8601


class Artifact(Wire):
    """An output of a task."""

    artifact_id: Id
    parts: Parts
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class Task(Wire, tag="task", tag_field="kind"):
    """A task's state and outputs; the reply to a TaskRequest."""

    id: Id
    context_id: Id
    status: TaskStatus
    artifacts: Annotated[list[Artifact], msgspec.Meta(max_length=MAX_ARTIFACTS)] = []
    history: Annotated[list[Message], msgspec.Meta(max_length=MAX_PARTS)] | None = None
    metadata: dict[str, Any] | None = None


# -- Agent cards (A2A) -------------------------------------------------------------


class AgentSkill(Wire):
    """A capability of an actor. `input_schema`/`output_schema`/`read_only` extend A2A's skill."""

    id: Name
    name: str
    description: str = ""
    tags: list[str] = []
    examples: list[str] | None = None
    input_modes: list[str] = msgspec.field(default_factory=lambda: ["application/json"])
    output_modes: list[str] = msgspec.field(default_factory=lambda: ["application/json"])
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    read_only: bool = False
    timeout_s: float | None = None


class AgentCard(Wire):
    """What an actor is and which skills it offers."""

    name: Name
    description: str
    version: str = "0.1.0"
    url: str | None = None  # the node endpoint hosting the actor
    skills: list[AgentSkill] = []
    default_input_modes: list[str] = msgspec.field(default_factory=lambda: ["application/json"])
    default_output_modes: list[str] = msgspec.field(default_factory=lambda: ["application/json"])

    def skill(self, skill_id: str) -> AgentSkill | None:
        for s in self.skills:
            if s.id == skill_id:
                return s
        return None


# -- Runtime bodies ------------------------------------------------------------------


class TaskRequest(Wire, tag="task-request", tag_field="kind"):
    """Ask an actor to run one of its skills (A2A's message/send, with the skill named)."""

    skill: Name
    message: Message
    metadata: dict[str, Any] | None = None


class CancelTask(Wire, tag="cancel-task", tag_field="kind"):
    """Ask the actor running a task to stop it."""

    task_id: Id
    reason: str = ""


Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class Critique(Wire, tag="critique", tag_field="kind"):
    """A critic's review of one task's output."""

    task_id: Id
    score: Score
    passed: bool
    issues: list[str] = []


class Verdict(Wire, tag="verdict", tag_field="kind"):
    """A judge's decision for one iteration of a loop. `score` (0..1) is how good the
    iteration's answer is; the coordinator's loop governor uses it to keep the best answer
    and to see a loop that stalls."""

    decision: Literal["accept", "retry", "stop"]
    reason: str
    iteration: int
    feedback: str | None = None
    score: Score | None = None


EscalationReason = Literal["cap", "oscillation", "stall", "in-doubt", "approval", "other"]
EscalationDecision = Literal["accept-best", "abort", "continue"]


class LoopOutput(Wire):
    """One output a loop produced, as an escalation ticket shows it."""

    iteration: int
    sender: str
    kind: str  # "answer" (the loop's result) or "feedback" (what was asked of the next round)
    digest: str  # hash of sender, kind and the normalised text; equal digests = same output
    text: str
    score: float | None = None


class Escalation(Wire, tag="escalation", tag_field="kind"):
    """A ticket for a human: what loop, why, what happened, what it cost, and the options."""

    ticket_id: str
    loop: str
    reason: EscalationReason
    summary: str
    iteration: int
    options: list[EscalationDecision]
    outputs: list[LoopOutput] = []  # the last outputs of the loop, oldest first
    changes: str = ""  # a unified diff between the two outputs that alternate (or the last two)
    best_iteration: int | None = None
    best_score: float | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    details: dict[str, Any] = {}


class EscalationAnswer(Wire, tag="escalation-answer", tag_field="kind"):
    """A human's answer to a ticket; it resumes the run. `continue` runs the loop on (its caps
    still apply), with `feedback` for the next round when given."""

    ticket_id: str
    decision: EscalationDecision
    feedback: str | None = None
    by: str = "human"
    note: str = ""


# -- The control plane -----------------------------------------------------------------
#
# One tagged Struct per operation (msgspec's asyncio-kv example: Get | Put | Del), decoded as
# part of the envelope's body union and dispatched with `match`. Control operations come from
# the supervisor, except what a node reports about itself (register, ready, stats, stopped,
# heartbeat). `Ack` is the delivery layer's own.


class Heartbeat(Wire, tag="heartbeat", tag_field="kind"):
    """A node's liveness signal."""

    node: Name
    pid: int
    seq: int
    in_flight: int = 0


class Register(Wire, tag="register", tag_field="kind"):
    """A node started its actors (each one's `on_start` returned) and offers their cards."""

    node: Name
    pid: int
    endpoint: str
    cards: list[AgentCard] = []


class StartFailed(Wire, tag="start-failed", tag_field="kind"):
    """A node could not start: an actor's class would not load or its `on_start` raised."""

    node: Name
    pid: int
    error: str
    actor: Name | None = None  # None when the failure is the node's, not one actor's


class Directory(Wire, tag="directory", tag_field="kind"):
    """The run's directory: where every address is, and every actor's card."""

    routes: dict[str, str]
    cards: list[AgentCard] = []


class Ready(Wire, tag="ready", tag_field="kind"):
    """A node has the directory and takes work."""

    node: Name


class StatsQuery(Wire, tag="stats-query", tag_field="kind"):
    """Ask a node for its message counters; it answers with `Stats` naming `query_id`."""

    query_id: Id


class Stats(Wire, tag="stats", tag_field="kind"):
    """A node's message counters (sent, received, dead.<reason>, ...)."""

    node: Name
    query_id: Id
    counts: dict[str, int] = {}


class Stop(Wire, tag="stop", tag_field="kind"):
    """Stop the node: its actors' `on_stop` run, then the process exits."""


class Stopped(Wire, tag="stopped", tag_field="kind"):
    """A node is about to exit."""

    node: Name


class NodeDown(Wire, tag="node-down", tag_field="kind"):
    """Death watch: a node died, with the actors it hosted."""

    node: Name
    pid: int
    actors: list[Name] = []


class NodeUp(Wire, tag="node-up", tag_field="kind"):
    """Death watch: a node that died is back, with the actors it hosts."""

    node: Name
    pid: int
    actors: list[Name] = []


class Drain(Wire, tag="drain", tag_field="kind"):
    """Ask an actor to stop taking on work and to say when what it has in flight has
    finished (the run is stopping: Ctrl-C, SIGTERM). Answered with one `Drained`."""

    reason: str = ""


class Drained(Wire, tag="drained", tag_field="kind"):
    """The answer to a `Drain`: nothing the actor started is in flight any more."""

    actor: Name
    detail: str = ""


class Ack(Wire, tag="ack", tag_field="kind"):
    """The receiver has these messages (a list, so one frame can acknowledge many)."""

    ids: Annotated[list[Id], msgspec.Meta(max_length=4096)]


Control = (
    Register
    | StartFailed
    | Directory
    | Ready
    | StatsQuery
    | Stats
    | Stop
    | Stopped
    | NodeDown
    | NodeUp
    | Drain
    | Drained
)
CONTROL_BODIES: tuple[type, ...] = Control.__args__  # type: ignore[attr-defined]
# The `kind` of every control-plane envelope (trace tools leave these out of the data plane).
CONTROL_KINDS: frozenset[str] = frozenset(
    t.__struct_config__.tag for t in (*CONTROL_BODIES, Heartbeat, Ack)  # type: ignore[attr-defined]
)


Body = (
    Message
    | TaskRequest
    | Task
    | CancelTask
    | Critique
    | Verdict
    | Escalation
    | EscalationAnswer
    | Heartbeat
    | Ack
    | Control
)


class Envelope(Wire):
    """Every message on the wire: addressing, tracing, delivery metadata, and a typed body."""

    message_id: Id
    trace_id: Id
    span_id: Id
    sender: Name
    recipient: Name
    sent_at: Timestamp  # unix seconds
    body: Body
    parent_span_id: Id | None = None
    context_id: Id | None = None
    task_id: Id | None = None
    plan_task: Id | None = None  # the id, in its plan, of the task a request runs
    attempt: Attempt = 1
    idempotency_key: Id | None = None
    deadline: Timestamp | None = None  # unix seconds

    @property
    def kind(self) -> str:
        """The body's tag (``task-request``, ``task``, ...)."""
        return type(self.body).__struct_config__.tag  # type: ignore[return-value]
