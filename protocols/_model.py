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

    message_id: str
    role: Role
    parts: Parts
    context_id: str | None = None
    task_id: str | None = None
    reference_task_ids: list[str] | None = None
    metadata: dict[str, Any] | None = None


class TaskStatus(Wire):
    state: TaskState
    message: Message | None = None
    timestamp: str | None = None  # ISO 8601


class Artifact(Wire):
    """An output of a task."""

    artifact_id: str
    parts: Parts
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class Task(Wire, tag="task", tag_field="kind"):
    """A task's state and outputs; the reply to a TaskRequest."""

    id: str
    context_id: str
    status: TaskStatus
    artifacts: Annotated[list[Artifact], msgspec.Meta(max_length=MAX_ARTIFACTS)] = []
    history: list[Message] | None = None
    metadata: dict[str, Any] | None = None


# -- Agent cards (A2A) -------------------------------------------------------------


class AgentSkill(Wire):
    """A capability of an actor. `input_schema`/`output_schema`/`read_only` extend A2A's skill."""

    id: str
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

    name: str
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

    skill: str
    message: Message
    metadata: dict[str, Any] | None = None


class CancelTask(Wire, tag="cancel-task", tag_field="kind"):
    """Ask the actor running a task to stop it."""

    task_id: str
    reason: str = ""


Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class Critique(Wire, tag="critique", tag_field="kind"):
    """A critic's review of one task's output."""

    task_id: str
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


EscalationReason = Literal["cap", "oscillation", "stall", "in-doubt", "other"]
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


class Heartbeat(Wire, tag="heartbeat", tag_field="kind"):
    """A node's liveness signal."""

    node: str
    pid: int
    seq: int
    in_flight: int = 0


class Drain(Wire, tag="drain", tag_field="kind"):
    """Ask an actor to stop taking on work and to say when what it has in flight has
    finished (the run is stopping: Ctrl-C, SIGTERM). Answered with one `Drained`."""

    reason: str = ""


class Drained(Wire, tag="drained", tag_field="kind"):
    """The answer to a `Drain`: nothing the actor started is in flight any more."""

    actor: str
    detail: str = ""


ControlOp = Literal[
    "register", "directory", "ready", "stats", "stop", "stopped", "node-down", "node-up", "ack"
]


class Control(Wire, tag="control", tag_field="kind"):
    """Control-plane traffic between the supervisor and nodes."""

    op: ControlOp
    args: dict[str, Any] = {}


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
    | Control
    | Drain
    | Drained
)


class Envelope(Wire):
    """Every message on the wire: addressing, tracing, delivery metadata, and a typed body."""

    message_id: str
    trace_id: str
    span_id: str
    sender: str
    recipient: str
    sent_at: float  # unix seconds
    body: Body
    parent_span_id: str | None = None
    context_id: str | None = None
    task_id: str | None = None
    plan_task: str | None = None  # the id, in its plan, of the task a request runs
    attempt: int = 1
    idempotency_key: str | None = None
    deadline: float | None = None  # unix seconds

    @property
    def kind(self) -> str:
        """The body's tag (``task-request``, ``task``, ...)."""
        return type(self.body).__struct_config__.tag  # type: ignore[return-value]
