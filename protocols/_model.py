"""The message model: one Envelope with a tagged-union body; A2A 1.0's objects where A2A has the
concept.

Field names are snake_case in Python and camelCase on the wire (A2A's spelling). Every body of
an envelope carries a `kind` tag (its member of the union); the A2A objects inside carry none.
"""

from __future__ import annotations

from collections.abc import Sequence
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


# -- A2A 1.0 (a2aproject/A2A specification/a2a.proto, in its ProtoJSON form) ----------
#
# These Structs are A2A 1.0's objects field for field: their JSON is what the `a2a-sdk` types
# print and parse (camelCase names, enums by their proto names, repeated fields left out when
# empty). They carry no `kind` tag (A2A 1.0 has none); inside an envelope, the body that holds
# them is tagged instead (`TaskReply`). What A2A has no field for goes in `metadata` or in an
# agentrt extension: `SkillCall` on a request, `SkillContract` in a card.

A2A_VERSION = "1.0"
AGENTRT_BINDING = "urn:agentrt:binding:zmq-msgpack:v1"
"""agentrt's own protocol binding (A2A 1.0 section 12, custom bindings): these objects as msgpack
in an agentrt `Envelope`, over CurveZMQ. Each actor's card names it in `supportedInterfaces`,
with the node's endpoint as the url."""
SKILL_SCHEMAS_EXTENSION = "urn:agentrt:a2a:skill-schemas:v1"
"""Card extension whose params are `{"skills": {skill id: SkillContract}}`: each skill's input
and output JSON Schemas, read-only flag and timeout (A2A has no field for them)."""

Metadata = dict[str, Any]

PART_CONTENTS = ("text", "raw", "url", "data")


class Part(Wire):
    """One piece of content: exactly one of `text`, `raw` (bytes; base64 in JSON), `url` (a
    file by reference) or `data` (any JSON value but null; a skill's input and output are
    objects), with an optional media type and file name. Two or none set is refused, on
    construction and on decode, naming the rule."""

    text: str | None = None
    raw: bytes | None = None
    url: str | None = None
    data: Any = None
    metadata: Metadata | None = None
    filename: str | None = None
    media_type: str | None = None

    def __post_init__(self) -> None:
        # Runs on every decode: the common case in one expression, the message only on failure.
        if (self.text is not None) + (self.raw is not None) + (self.url is not None) + (
            self.data is not None
        ) != 1:
            found = [name for name in PART_CONTENTS if getattr(self, name) is not None]
            what = " and ".join(found) if found else "none"
            raise ValueError(
                f"a part holds exactly one of text, raw, url or data (A2A 1.0 Part.content); "
                f"this one has {what}: make one part per content"
            )


Parts = Annotated[list[Part], msgspec.Meta(max_length=MAX_PARTS)]
Ids = Annotated[list[Id], msgspec.Meta(max_length=MAX_PARTS)]

Role = Literal["ROLE_UNSPECIFIED", "ROLE_USER", "ROLE_AGENT"]

TaskState = Literal[
    "TASK_STATE_UNSPECIFIED",
    "TASK_STATE_SUBMITTED",
    "TASK_STATE_WORKING",
    "TASK_STATE_COMPLETED",
    "TASK_STATE_FAILED",
    "TASK_STATE_CANCELED",
    "TASK_STATE_INPUT_REQUIRED",
    "TASK_STATE_REJECTED",
    "TASK_STATE_AUTH_REQUIRED",
]
TERMINAL_STATES: frozenset[str] = frozenset(
    {"TASK_STATE_COMPLETED", "TASK_STATE_CANCELED", "TASK_STATE_FAILED", "TASK_STATE_REJECTED"}
)


def state_word(state: str) -> str:
    """An A2A task state as the runtime's results and trace events say it:
    `TASK_STATE_INPUT_REQUIRED` -> `input-required`."""
    return state.removeprefix("TASK_STATE_").lower().replace("_", "-")


def task_state(word: str) -> TaskState:
    """The A2A task state of a runtime word: `input-required` -> `TASK_STATE_INPUT_REQUIRED`."""
    return "TASK_STATE_" + word.upper().replace("-", "_")  # type: ignore[return-value]


class Message(Wire):
    """One turn of communication: a role and its parts."""

    message_id: Id
    role: Role
    parts: Parts = []  # A2A requires one at least; ProtoJSON leaves an empty list out
    context_id: Id | None = None
    task_id: Id | None = None
    metadata: Metadata | None = None
    extensions: list[str] = []
    reference_task_ids: Ids = []


class TaskStatus(Wire):
    state: TaskState
    message: Message | None = None
    timestamp: str | None = None  # RFC 3339, as ProtoJSON writes a google.protobuf.Timestamp


class Artifact(Wire):
    """An output of a task."""

    artifact_id: Id
    parts: Parts = []
    name: str | None = None
    description: str | None = None
    metadata: Metadata | None = None
    extensions: list[str] = []


class Task(Wire):
    """A task's state and outputs; the reply to a TaskRequest."""

    id: Id
    context_id: Id
    status: TaskStatus
    artifacts: Annotated[list[Artifact], msgspec.Meta(max_length=MAX_ARTIFACTS)] = []
    history: Annotated[list[Message], msgspec.Meta(max_length=MAX_PARTS)] = []
    metadata: Metadata | None = None


class SendMessageConfiguration(Wire):
    """How the sender wants the answer (A2A's, without push notifications: agentrt answers on
    its own binding)."""

    accepted_output_modes: list[str] = []
    history_length: int | None = None
    return_immediately: bool = False


# -- Agent cards (A2A) -------------------------------------------------------------


class AgentInterface(Wire):
    """Where and how an agent is reached: a url, a protocol binding (`JSONRPC`, `HTTP+JSON`,
    `GRPC`, or a custom one's URI such as `AGENTRT_BINDING`) and the A2A version."""

    url: str
    protocol_binding: str
    protocol_version: str  # required by A2A (a default would be left out of the JSON)
    tenant: str | None = None


class AgentExtension(Wire):
    uri: str
    description: str | None = None
    required: bool = False
    params: Metadata | None = None


class AgentCapabilities(Wire):
    streaming: bool | None = None
    push_notifications: bool | None = None
    extensions: list[AgentExtension] = []
    extended_agent_card: bool | None = None


class AgentSkill(Wire):
    """A capability of an actor, as A2A describes one (its schemas are in `SkillContract`)."""

    id: Name
    name: str
    description: str
    tags: list[str]
    examples: list[str] = []
    input_modes: list[str] = []
    output_modes: list[str] = []


class SkillContract(Wire):
    """What agentrt declares of a skill beyond A2A's fields (the card extension
    `SKILL_SCHEMAS_EXTENSION`): the JSON Schemas of its input and output data parts, whether
    it is read-only (calls may overlap, and may be retried), and its timeout."""

    input_schema: Metadata | None = None
    output_schema: Metadata | None = None
    read_only: bool = False
    timeout_s: float | None = None


class SkillSchemas(Wire):
    """The params of the `SKILL_SCHEMAS_EXTENSION` card extension."""

    skills: dict[str, SkillContract] = {}


def skill_schemas_extension(contracts: dict[str, SkillContract]) -> AgentExtension:
    """The card extension that publishes `contracts` (skill id -> SkillContract)."""
    return AgentExtension(
        uri=SKILL_SCHEMAS_EXTENSION,
        description="JSON Schemas of each skill's input and output data part",
        params=msgspec.to_builtins(SkillSchemas(skills=contracts)),
    )


def agent_card(
    name: str,
    description: str,
    skills: Sequence[tuple[AgentSkill, SkillContract]],
    *,
    version: str = "0.1.0",
    endpoint: str | None = None,
) -> AgentCard:
    """An actor's card: reached at `endpoint` on agentrt's binding, its skills' contracts in
    the skill-schemas extension. No streaming and no push notifications on that binding."""
    return AgentCard(
        name=name,
        description=description,
        version=version,
        supported_interfaces=[
            AgentInterface(url=endpoint, protocol_binding=AGENTRT_BINDING, protocol_version=A2A_VERSION)
        ]
        if endpoint
        else [],
        capabilities=AgentCapabilities(
            streaming=False,
            push_notifications=False,
            extensions=[skill_schemas_extension({s.id: c for s, c in skills})],
        ),
        skills=[s for s, _ in skills],
    )


_NO_CONTRACT = SkillContract()


class AgentCard(Wire, dict=True):
    """What an actor is, where it is reached and which skills it offers (A2A 1.0's card)."""

    name: Name
    description: str
    version: str  # required by A2A (a default would be left out of the JSON)
    supported_interfaces: list[AgentInterface] = []
    capabilities: AgentCapabilities = msgspec.field(default_factory=AgentCapabilities)
    default_input_modes: list[str] = msgspec.field(
        default_factory=lambda: ["application/json", "text/plain"]
    )
    default_output_modes: list[str] = msgspec.field(
        default_factory=lambda: ["application/json", "text/plain"]
    )
    skills: list[AgentSkill] = []

    def __post_init__(self) -> None:
        # The skill contracts, typed, checked once here (a card whose extension params break
        # the shape is refused on decode, naming the field).
        contracts: dict[str, SkillContract] = {}
        for ext in self.capabilities.extensions:
            if ext.uri == SKILL_SCHEMAS_EXTENSION and ext.params is not None:
                try:
                    contracts = msgspec.convert(ext.params, SkillSchemas).skills
                except msgspec.ValidationError as exc:
                    raise ValueError(
                        f"card '{self.name}': extension {SKILL_SCHEMAS_EXTENSION} params are "
                        f"not {{skills: {{id: contract}}}}: {exc}"
                    ) from None
        self.__dict__["_contracts"] = contracts

    def skill(self, skill_id: str) -> AgentSkill | None:
        for s in self.skills:
            if s.id == skill_id:
                return s
        return None

    def contract(self, skill_id: str) -> SkillContract:
        """The skill's schemas, read-only flag and timeout (none of them when the card
        publishes no contract for it)."""
        return self.__dict__["_contracts"].get(skill_id, _NO_CONTRACT)  # type: ignore[no-any-return]

    @property
    def endpoint(self) -> str | None:
        """The url of the actor on agentrt's own binding (its node's endpoint)."""
        for i in self.supported_interfaces:
            if i.protocol_binding == AGENTRT_BINDING:
                return i.url
        return None


# -- Runtime bodies ------------------------------------------------------------------


class SkillCall(Wire):
    """agentrt's part of a task request (A2A has no field for it): which skill of the
    recipient runs, and how many tokens its model calls may spend (the caller's reservation;
    None: no allowance)."""

    skill: Name
    token_allowance: int | None = None


class TaskRequest(Wire, tag="task-request", tag_field="kind"):
    """Ask an actor to run one of its skills: A2A's SendMessageRequest (message,
    configuration, metadata), with the skill named in `call`."""

    message: Message
    call: SkillCall
    configuration: SendMessageConfiguration | None = None
    metadata: Metadata | None = None

    @property
    def skill(self) -> str:
        return self.call.skill


class TaskReply(Wire, tag="task", tag_field="kind"):
    """The answer to a TaskRequest: A2A's SendMessageResponse, holding the (untagged) Task."""

    task: Task


class MessageBody(Wire, tag="message", tag_field="kind"):
    """An A2A Message sent to an actor outside any task (`ctx.send`): its `on_message` gets it."""

    message: Message


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
    epoch: int = 0  # the beating incarnation's (see `Join`): a replaced one is answered `Fenced`


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
    """The run's directory: where every address is, every actor's card, and each node's current
    incarnation (`epochs`; 0: none, the node is down). Envelopes from any other are stale."""

    routes: dict[str, str]
    cards: list[AgentCard] = []
    epochs: dict[str, int] = {}


class Join(Wire, tag="join", tag_field="kind"):
    """A node on another host asks to take its place in the run (`agentrt node --join`); the
    supervisor answers `Welcome`. `endpoint` is where the node receives envelopes. `instance`
    is random per process: a node restarted in its container has the same pid (1) and endpoint
    as the incarnation it replaces, so only this tells a repeated Join from a new process's."""

    node: Name
    endpoint: str
    instance: Id
    pid: int = 0


class Welcome(Wire, tag="welcome", tag_field="kind"):
    """The supervisor admits a joining node as incarnation `epoch` and hands it its boot (the
    runtime's NodeBoot as JSON, without secrets: the node holds its own key)."""

    node: Name
    epoch: int
    boot: bytes


class Lease(Wire, tag="lease", tag_field="kind"):
    """The supervisor's answer to a joined node's heartbeat: incarnation `epoch` is still the
    run's. A joined node that hears none for its lease (its supervisor died, or it is cut off)
    stops: on another host nothing else would tell it."""

    node: Name
    epoch: int


class Fenced(Wire, tag="fenced", tag_field="kind"):
    """Incarnation `epoch` of `node` was declared down (and maybe replaced): it must stop."""

    node: Name
    epoch: int
    reason: str = ""


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
    | Join
    | Welcome
    | Lease
    | Fenced
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
    TaskRequest
    | TaskReply
    | MessageBody
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
    # The sending node's incarnation, given at its start or join (0: the supervisor, or a node
    # not yet admitted). A receiver drops, as `stale`, what a replaced incarnation sends.
    epoch: int = 0
    # The recipient node's incarnation the sender meant (0: any: the supervisor, or one the
    # sender does not know; -1: none, the node was down). A resend is the same frame, so a copy
    # that reaches a later incarnation of its recipient (a restarted node at the same address)
    # is refused there as `stale`: work meant for a lost incarnation is in doubt with its
    # asker, never run again behind its back.
    to_epoch: int = 0
    # Ids of messages from the recipient that the sender acknowledges, riding on this envelope
    # (acks are delayed a little to find one going the same way; see runtime/_delivery.py).
    acks: Annotated[list[Id], msgspec.Meta(max_length=4096)] | None = None

    @property
    def kind(self) -> str:
        """The body's tag (``task-request``, ``task``, ...)."""
        return type(self.body).__struct_config__.tag  # type: ignore[return-value]
