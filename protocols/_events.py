"""Trace events: one tagged Struct per event the runtime and the built-in actors record.

The trace file (`runs/<id>/trace.jsonl`) holds one event per line, tagged by its `event`
field; the trace tools decode each line into these types, so a writer and a reader that
disagree fail a type check instead of printing nothing. Field names are snake_case, as
structlog writes them. Custom actors record their own events as `UserEvent`
(`ctx.event(name, **fields)`).

Every event carries the common fields of `TraceEvent`; the tracing pipeline stamps `ts`,
`run_id`, `node` and `pid`, and `Context.emit` fills the span and task of the request it
runs in.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._model import Envelope


class TraceEvent(msgspec.Struct, tag_field="event", kw_only=True, frozen=True, omit_defaults=True):
    """Fields every event has: when, where, who, and the span and task it belongs to."""

    ts: float = 0.0  # unix seconds
    run_id: str | None = None
    node: str | None = None  # the process: a node's name, or "supervisor"
    pid: int | None = None
    actor: str | None = None  # the actor the event is about
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    task_id: str | None = None  # the A2A task (an ask) the event belongs to
    plan_task: str | None = None  # the plan task (a task id of the plan) the event belongs to


# -- messages ------------------------------------------------------------------------------


class EnvelopeSent(TraceEvent, tag="envelope.sent", kw_only=True):
    """An envelope left this process (the whole envelope, secrets redacted)."""

    message_id: str
    kind: str  # the body's tag
    sender: str
    recipient: str
    bytes: int = 0
    envelope: Envelope | None = None


class EnvelopeReceived(TraceEvent, tag="envelope.received", kw_only=True):
    message_id: str
    kind: str
    sender: str
    recipient: str
    bytes: int = 0


class EnvelopeResent(TraceEvent, tag="envelope.resent", kw_only=True):
    message_id: str
    send: int  # which send this is (2 = the first resend)


class EnvelopeDuplicate(TraceEvent, tag="envelope.duplicate", kw_only=True):
    message_id: str
    kind: str


class MessageDeadLetter(TraceEvent, tag="message.dead-letter", kw_only=True):
    """A message not delivered (the fields of `DeadLetter`; `node` is the one that refused it).
    A process traces a few per reason per second: `count` is the running total of its reason
    there, `suppressed` how many went untraced since the last one traced."""

    reason: str
    detail: str
    at: float
    peer: str | None = None
    message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    kind: str | None = None
    bytes: int = 0
    count: int = 0
    suppressed: int = 0


class MessageDeadLetterCounts(TraceEvent, tag="message.dead-letter-counts", kw_only=True):
    """A process's exact dead-letter counts (`dead.<reason>`), recorded when it stops."""

    counts: dict[str, int] = {}


class NodeError(TraceEvent, tag="node.error", kw_only=True):
    where: str
    error: str


# -- tasks and actors ----------------------------------------------------------------------


class TaskStateChanged(TraceEvent, tag="task.state", kw_only=True):
    """An actor started a task (`working`) or ended it, with what it used."""

    state: str  # an A2A task state
    skill: str
    attempt: int = 1
    sender: str | None = None
    duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


class TaskDuplicate(TraceEvent, tag="task.duplicate", kw_only=True):
    """A request whose idempotency key was seen: answered with, or joined to, the first."""

    skill: str
    attempt: int = 1
    idempotency_key: str
    answer: str


class TaskCancelRequested(TraceEvent, tag="task.cancel-requested", kw_only=True):
    reason: str = ""


class TaskRejected(TraceEvent, tag="task.rejected", kw_only=True):
    sender: str
    error: str


class TaskOverLimit(TraceEvent, tag="task.over-limit", kw_only=True):
    """A skill's result over the frame or depth limit: the task failed at its sender instead."""

    error: str


class TaskReplyFailed(TraceEvent, tag="task.reply-failed", kw_only=True):
    error: str


class ActorError(TraceEvent, tag="actor.error", kw_only=True):
    error: str


class ActorDrained(TraceEvent, tag="actor.drained", kw_only=True):
    """An actor asked to drain has nothing in flight any more."""

    detail: str = ""


class Notice(TraceEvent, tag="notice", kw_only=True):
    """An actor's message for the person at the terminal (`Context.notice`)."""

    text: str


class UserEvent(TraceEvent, tag="user", kw_only=True):
    """An event of a custom actor: `ctx.event(name, **fields)`."""

    name: str
    fields: dict[str, Any] = {}


# -- models -------------------------------------------------------------------------------


class ModelCall(TraceEvent, tag="model.call", kw_only=True):
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    stop_reason: str | None = None
    tool_calls: int = 0
    duration_s: float = 0.0


class ModelCallFailed(TraceEvent, tag="model.error", kw_only=True):
    error: str
    message: str | None = None
    retry_after_s: float | None = None


class ModelQuotaWait(TraceEvent, tag="model.quota-wait", kw_only=True):
    quota: str
    wait_s: float


class ModelClipped(TraceEvent, tag="model.clipped", kw_only=True):
    """A call's max_tokens was cut to fit what is left of its request's token allowance."""

    max_tokens: int
    clipped_to: int
    allowance: int


class ModelRefused(TraceEvent, tag="model.refused", kw_only=True):
    """A call was not sent: its input alone does not fit its request's token allowance."""

    reason: str
    need_tokens: int
    least_tokens: int = 0


class QuotaGranted(TraceEvent, tag="quota.granted", kw_only=True):
    """A Quota actor counted one call: it may start at `at` (unix seconds; the decision's time
    plus the wait the buckets asked for)."""

    at: float
    wait_s: float
    tokens: float


class QuotaRetryAfterCapped(TraceEvent, tag="quota.retry-after-capped", kw_only=True):
    """A 429's Retry-After was longer than the quota's cap: the quota paused for the cap."""

    retry_after_s: float
    paused_s: float
    cap_s: float


# -- nodes and the supervisor --------------------------------------------------------------


class NodeStarted(TraceEvent, tag="node.started", kw_only=True):
    actors: list[str] = []
    endpoint: str = ""  # where it receives: an ipc path on the supervisor's host, or tcp://host:port


class NodeStartFailed(TraceEvent, tag="node.start-failed", kw_only=True):
    error: str


class NodeOrphaned(TraceEvent, tag="node.orphaned", kw_only=True):
    parent: int


class NodeStopped(TraceEvent, tag="node.stopped", kw_only=True):
    stats: dict[str, int] = {}


class NodeSpawned(TraceEvent, tag="node.spawned", kw_only=True):
    node_name: str
    node_pid: int


class NodeRestarted(TraceEvent, tag="node.restarted", kw_only=True):
    node_name: str
    node_pid: int


class NodeUnresponsive(TraceEvent, tag="node.unresponsive", kw_only=True):
    node_name: str
    node_pid: int
    silent_s: float


class NodeJoined(TraceEvent, tag="node.joined", kw_only=True):
    """A node on another host was admitted (`agentrt node --join`) as incarnation `epoch`."""

    node_name: str
    node_pid: int
    epoch: int
    endpoint: str


class NodeLost(TraceEvent, tag="node.lost", kw_only=True):
    """Incarnation `epoch` of a node on another host is no longer current: it went silent (a
    death or a partition: from afar they look alike), or a new incarnation replaced it."""

    node_name: str
    epoch: int
    why: str


class NodeLeaseExpired(TraceEvent, tag="node.lease-expired", kw_only=True):
    """A joined node heard no lease from its supervisor for `silent_s`: it stops."""

    silent_s: float


class NodeFenced(TraceEvent, tag="node.fenced", kw_only=True):
    """A replaced incarnation was heard from again and told to stop; or (on the node) it heard."""

    node_name: str
    epoch: int


class NodeDied(TraceEvent, tag="node.died", kw_only=True):
    node_name: str
    node_pid: int
    code: int


class NodeNotRestarted(TraceEvent, tag="node.not-restarted", kw_only=True):
    node_name: str
    restart: str


class NodeRestarting(TraceEvent, tag="node.restarting", kw_only=True):
    node_name: str
    strategy: str
    nodes: list[str] = []


class StoreReady(TraceEvent, tag="store.ready", kw_only=True):
    """The run's state store is set up (a database with a login per node)."""

    backend: str
    nodes: int = 0


class StoreReleaseFailed(TraceEvent, tag="store.release-failed", kw_only=True):
    """The run's database logins could not be dropped at the stop."""

    error: str


class SupervisorGaveUp(TraceEvent, tag="supervisor.gave-up", kw_only=True):
    node_name: str
    restarts: int


class AskAgain(TraceEvent, tag="ask.again", kw_only=True):
    """The supervisor asked a restarted actor (`actor`) again, with the same key."""

    skill: str
    idempotency_key: str


# -- the run ------------------------------------------------------------------------------


class RunStarting(TraceEvent, tag="run.starting", kw_only=True):
    spec: str
    nodes: int


class RunStarted(TraceEvent, tag="run.started", kw_only=True):
    nodes: dict[str, int] = {}  # node name -> pid


class RunDraining(TraceEvent, tag="run.draining", kw_only=True):
    """The run was asked to stop: its entry actor (`actor`) is asked to drain."""

    timeout_s: float


class RunDrained(TraceEvent, tag="run.drained", kw_only=True):
    """The entry actor (`actor`) answered the drain: nothing is in flight."""

    detail: str = ""


class RunDrainTimedOut(TraceEvent, tag="run.drain-timed-out", kw_only=True):
    timeout_s: float


class RunFinished(TraceEvent, tag="run.finished", kw_only=True):
    state: str
    wall_s: float
    task_time_s: float = 0.0
    tasks: int = 0


class RunStopped(TraceEvent, tag="run.stopped", kw_only=True):
    exit_codes: dict[str, int | None] = {}
    wall_s: float = 0.0


# -- plans, scheduling, loops (an entry actor that runs a plan) ----------------------------


class PlanAccepted(TraceEvent, tag="plan.accepted", kw_only=True):
    """A plan about to run: its size, its final task and its dependency graph (tasks and
    groups), which the trace views draw."""

    tasks: int
    final: str
    deps: dict[str, list[str]] = {}


class PlanRejected(TraceEvent, tag="plan.rejected", kw_only=True):
    attempt: int
    error: str


class ScheduleDispatch(TraceEvent, tag="schedule.dispatch", kw_only=True):
    """`plan_task` sent to `worker` (attempt `attempt`): where its waiting begins. `at` is
    when the scheduling core decided it, on the coordinator's monotonic clock (the bounds
    and rate limits hold on that clock; `ts` adds the time to carry out the decision)."""

    skill: str
    worker: str
    attempt: int = 1
    at: float | None = None


class ScheduleDecision(TraceEvent, tag="schedule.decision", kw_only=True):
    """A scheduling decision about `plan_task` (waiting, held, retried, completed, ...)."""

    decision: str
    reason: str = ""


class ScheduleCancel(TraceEvent, tag="schedule.cancel", kw_only=True):
    worker: str
    reason: str = ""


class CriticGate(TraceEvent, tag="critic.gate", kw_only=True):
    """The critic's review of `plan_task`'s result held it back or let it pass."""

    decision: str  # "passed" or "held"
    score: float | None = None
    reason: str | None = None
    issues: list[str] = []


class ResultAccepted(TraceEvent, tag="result.accepted", kw_only=True):
    """`plan_task`'s result is final: it passed its review (the critic gate, the judge for the
    final task) or had none. The A2A gateway streams each as an artifact."""

    skill: str
    output: Any = None


class LoopVerdict(TraceEvent, tag="loop.verdict", kw_only=True):
    loop: str
    decision: str
    iteration: int
    score: float | None = None
    next: str = ""


class LoopEnd(TraceEvent, tag="loop.end", kw_only=True):
    loop: str
    state: str
    reason: str = ""
    iteration: int = 0
    scope: str | None = None


class LoopEscalated(TraceEvent, tag="loop.escalated", kw_only=True):
    """A ticket went to a human (a person may be asked at the terminal now)."""

    ticket_id: str
    loop: str
    reason: str
    iteration: int
    summary: str = ""


class LoopAnswer(TraceEvent, tag="loop.answer", kw_only=True):
    ticket_id: str
    decision: str
    by: str = ""


class JournalResume(TraceEvent, tag="journal.resume", kw_only=True):
    job: str
    done: int = 0
    in_doubt: int = 0


class JournalInDoubt(TraceEvent, tag="journal.in-doubt", kw_only=True):
    reason: str


# -- MCP servers (agentrt.actors:MCPTools) ---------------------------------------------------


class McpConnected(TraceEvent, tag="mcp.connected", kw_only=True):
    """An MCP server is connected (a stdio one started) and its tools listed."""

    server: str
    transport: str  # "stdio" or "http"
    protocol: str | None = None  # the MCP protocol version agreed
    tools: list[str] = []
    server_pid: int | None = None
    restarts: int = 0  # connections opened before this one, after the first


class McpLost(TraceEvent, tag="mcp.lost", kw_only=True):
    server: str
    error: str


class McpGaveUp(TraceEvent, tag="mcp.gave-up", kw_only=True):
    server: str
    reason: str


class McpCall(TraceEvent, tag="mcp.call", kw_only=True):
    """One tool call, as the MCP actor made it (the task's own span)."""

    server: str
    tool: str
    ok: bool
    started_at: float
    finished_at: float
    failure: str | None = None  # tool-error, refused, lost, timeout
    retryable: bool | None = None


class McpCallRepeated(TraceEvent, tag="mcp.call-repeated", kw_only=True):
    tool: str
    answer: str


class McpApprovalAsked(TraceEvent, tag="mcp.approval-asked", kw_only=True):
    tool: str
    ticket_id: str
    human: str


class McpApproval(TraceEvent, tag="mcp.approval", kw_only=True):
    tool: str
    ticket_id: str
    approved: bool
    by: str


class McpToolsChanged(TraceEvent, tag="mcp.tools-changed", kw_only=True):
    server: str
    added: list[str] = []
    removed: list[str] = []


class McpToolClash(TraceEvent, tag="mcp.tool-clash", kw_only=True):
    skill: str
    servers: list[str] = []  # the one kept first
    text: str = ""


class BudgetWait(TraceEvent, tag="budget.wait", kw_only=True):
    """A call of the run (`call`: plan, critique, verdict) waits for calls in flight to settle
    before the budget can pay for it."""

    call: str
    reason: str


class BudgetStop(TraceEvent, tag="budget.stop", kw_only=True):
    """The run's budget cannot pay for a call it needs: nothing more is asked for."""

    call: str
    reason: str


class CommandFailed(TraceEvent, tag="run.command-failed", kw_only=True):
    """An entry actor could not carry out one command of its run core (the rest of the batch
    was carried out; the failure went back to the core as an event)."""

    command: str
    error: str


# -- A2A (the gateway, A2AAgent, and the human's answers they serve) -----------------------


class EscalationWaiting(TraceEvent, tag="escalation.waiting", kw_only=True):
    """A human actor waits for an answer file to a ticket (its `wait-file` policy); whoever
    serves answers (the A2A gateway) finds the ticket and where the answer goes."""

    ticket_id: str
    ticket_path: str
    answer_path: str


class GatewayStarted(TraceEvent, tag="gateway.started", kw_only=True):
    url: str
    actors: list[str] = []


class GatewayTask(TraceEvent, tag="gateway.task", kw_only=True):
    """An A2A SendMessage became an ask of the run (`task_id` is the A2A task's)."""

    skill: str
    to: str
    message_id: str


class GatewayAnswered(TraceEvent, tag="gateway.answered", kw_only=True):
    """An A2A client's reply answered the ticket its task waited on."""

    ticket_id: str
    decision: str


class GatewayWarning(TraceEvent, tag="gateway.warning", kw_only=True):
    text: str


class A2AAgentReady(TraceEvent, tag="a2a.agent", kw_only=True):
    """An A2AAgent read its remote's card and offers its skills."""

    url: str
    remote: str
    skills: list[str] = []


class A2ASent(TraceEvent, tag="a2a.sent", kw_only=True):
    """A request went to the remote agent as a new task (journaled under its key)."""

    remote_task_id: str
    skill: str


class A2AResumed(TraceEvent, tag="a2a.resumed", kw_only=True):
    """A request that came again follows the remote task journaled for it."""

    remote_task_id: str
    state: str


class A2ACancelled(TraceEvent, tag="a2a.cancelled", kw_only=True):
    remote_task_id: str
    state: str


class A2ACancelFailed(TraceEvent, tag="a2a.cancel-failed", kw_only=True):
    remote_task_id: str
    error: str


Event = (
    EnvelopeSent
    | EnvelopeReceived
    | EnvelopeResent
    | EnvelopeDuplicate
    | MessageDeadLetter
    | MessageDeadLetterCounts
    | NodeError
    | TaskStateChanged
    | TaskDuplicate
    | TaskCancelRequested
    | TaskRejected
    | TaskReplyFailed
    | TaskOverLimit
    | ActorError
    | ActorDrained
    | Notice
    | UserEvent
    | ModelCall
    | ModelCallFailed
    | ModelQuotaWait
    | ModelClipped
    | ModelRefused
    | QuotaGranted
    | QuotaRetryAfterCapped
    | NodeStarted
    | NodeStartFailed
    | NodeOrphaned
    | NodeStopped
    | NodeSpawned
    | NodeRestarted
    | NodeUnresponsive
    | NodeJoined
    | NodeLost
    | NodeFenced
    | NodeLeaseExpired
    | NodeDied
    | NodeNotRestarted
    | NodeRestarting
    | StoreReady
    | StoreReleaseFailed
    | SupervisorGaveUp
    | AskAgain
    | RunStarting
    | RunStarted
    | RunDraining
    | RunDrained
    | RunDrainTimedOut
    | RunFinished
    | RunStopped
    | PlanAccepted
    | PlanRejected
    | ScheduleDispatch
    | ScheduleDecision
    | ScheduleCancel
    | CriticGate
    | ResultAccepted
    | LoopVerdict
    | LoopEnd
    | LoopEscalated
    | LoopAnswer
    | JournalResume
    | JournalInDoubt
    | McpConnected
    | McpLost
    | McpGaveUp
    | McpCall
    | McpCallRepeated
    | McpApprovalAsked
    | McpApproval
    | McpToolsChanged
    | McpToolClash
    | EscalationWaiting
    | GatewayStarted
    | GatewayTask
    | GatewayAnswered
    | GatewayWarning
    | A2AAgentReady
    | A2ASent
    | A2AResumed
    | A2ACancelled
    | A2ACancelFailed
    | BudgetWait
    | BudgetStop
    | CommandFailed
)

_json_decoder = msgspec.json.Decoder(Event)

# The names of the built-in events (every tag but `user`'s): `ctx.event(name, ...)` with one
# of them records that typed event, its fields checked.
BUILT_IN_EVENTS: frozenset[str] = frozenset(
    str(cls.__struct_config__.tag) for cls in Event.__args__ if cls is not UserEvent  # type: ignore[attr-defined]
)


def event_to_dict(event: TraceEvent) -> dict[str, Any]:
    """The event as JSON-ready builtins, tagged by `event` (unset fields left out)."""
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


def event_from_dict(data: dict[str, Any]) -> Event:
    """One event from its dict form (msgspec.ValidationError if it is not a known, valid event)."""
    return msgspec.convert(data, Event)  # type: ignore[return-value]


def decode_event(line: bytes | str) -> Event:
    """One event from one JSON line of a trace file (msgspec.DecodeError / ValidationError)."""
    return _json_decoder.decode(line)  # type: ignore[no-any-return]
