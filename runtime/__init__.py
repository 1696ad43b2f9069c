"""agentrt's runtime: what a user may import. Everything in `_modules` is private.

from agentrt.runtime import Actor, skill

class Greeter(Actor):
    @skill(input={"type": "object", "required": ["name"],
                  "properties": {"name": {"type": "string"}}}, read_only=True)
    def greet(self, req):
        return {"greeting": f"hello {req.data['name']}"}
"""

from agentrt.protocols import (
    AgentCard,
    AgentRuntimeError,
    AgentSkill,
    ConflictError,
    FrameError,
    OwnershipError,
    PlanError,
    RoutingError,
    RunError,
    SchemaError,
    SpecError,
    TaskFailed,
)

from ._actor import Actor, Context, Draining, Request, current_request, skill
from ._messenger import TaskResult
from ._models import (
    Model,
    ModelConfig,
    ModelError,
    ModelRequestError,
    ModelResponse,
    ModelUnavailable,
    OfflineModel,
    RateLimited,
    ToolCall,
    Usage,
    model_from_config,
)
from ._spec import ActorSpec, NodeSpec, RunSpec, Spec, load_spec, spec_from_dict
from ._supervisor import RunSummary, Runtime, run
from ._tickets import format_ticket
from ._tracing import read_events, read_trace, redact
from ._validation import validate

__all__ = [
    "Actor",
    "ActorSpec",
    "AgentCard",
    "AgentRuntimeError",
    "AgentSkill",
    "ConflictError",
    "Context",
    "Draining",
    "FrameError",
    "Model",
    "ModelConfig",
    "ModelError",
    "ModelRequestError",
    "ModelResponse",
    "ModelUnavailable",
    "NodeSpec",
    "OfflineModel",
    "OwnershipError",
    "PlanError",
    "RateLimited",
    "Request",
    "RoutingError",
    "RunError",
    "RunSpec",
    "RunSummary",
    "Runtime",
    "SchemaError",
    "Spec",
    "SpecError",
    "TaskFailed",
    "TaskResult",
    "ToolCall",
    "Usage",
    "current_request",
    "format_ticket",
    "load_spec",
    "model_from_config",
    "read_events",
    "read_trace",
    "redact",
    "run",
    "skill",
    "spec_from_dict",
    "validate",
]
