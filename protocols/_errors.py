"""Error classes: each means one thing, all derive from AgentRuntimeError."""

from __future__ import annotations


class AgentRuntimeError(Exception):
    """Base of every error agentrt raises on purpose."""


class FrameError(AgentRuntimeError):
    """A frame from the wire could not be accepted; `reason` is a short machine tag."""

    reason = "bad-frame"


class FrameTooLarge(FrameError):
    """The frame is larger than the receiver's `max_frame_bytes`."""

    reason = "too-large"


class MalformedFrame(FrameError):
    """The frame is not a valid msgpack-encoded Envelope."""

    reason = "malformed"


class InvalidFrame(FrameError):
    """The frame decodes, but a field breaks its rule (an over-long id, attempt < 1, a NaN time)."""

    reason = "invalid"


class OverLimit(FrameError):
    """Refused at the sender: the envelope would break the receiver's frame or depth limit."""

    reason = "over-limit"


class FrameTooDeep(FrameError):
    """A payload in the frame nests deeper than the receiver's `max_depth`."""

    reason = "too-deep"


class SchemaError(AgentRuntimeError):
    """A skill payload does not match the skill's JSON Schema.

    `field` is a JSON path (``$.source``) and `rule` the schema keyword that failed.
    """

    def __init__(self, message: str, *, field: str = "$", rule: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class PlanError(AgentRuntimeError):
    """A plan cannot run: duplicate ids, unknown dependencies, or a cycle."""


class QueueFull(AgentRuntimeError):
    """Submitting these tasks would put more than the run's `queue_limit` in the queue."""


class SpecError(AgentRuntimeError):
    """A launch spec is invalid; the message names the file, the field and the rule."""


class InvalidId(AgentRuntimeError, ValueError):
    """An id that becomes a file name (a run, a ticket, a plan task) breaks the id rule."""


class RoutingError(AgentRuntimeError):
    """No actor by that name, or the actor has no such skill."""


class OwnershipError(AgentRuntimeError):
    """An actor tried to write into a state namespace it does not own."""


class ConflictError(AgentRuntimeError):
    """A compare-and-set write found a different version than expected."""


class TaskFailed(AgentRuntimeError):
    """A task asked of another actor ended failed, rejected or canceled."""

    def __init__(self, message: str, *, state: str, task_id: str) -> None:
        super().__init__(message)
        self.state = state
        self.task_id = task_id


class RunError(AgentRuntimeError):
    """A run could not start or did not finish (a node died, a timeout, a bad spec)."""


class ActorStartError(AgentRuntimeError):
    """An actor's `on_start` raised: the actor never ran. `actor` names it."""

    def __init__(self, message: str, *, actor: str) -> None:
        super().__init__(message)
        self.actor = actor
