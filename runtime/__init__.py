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
    InvalidId,
    OwnershipError,
    PlanError,
    RoutingError,
    RunError,
    SchemaError,
    SpecError,
    TaskFailed,
    check_id,
)

from ._actor import Actor, Context, Draining, Request, current_request, skill
from ._files import child_path, private_dir, write_private
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
    TokenAllowanceExceeded,
    ToolCall,
    Usage,
    model_from_config,
)
from ._redact import LineRedactor, known_secrets, redact
from ._spec import A2ASpec, ActorSpec, NodeSpec, RunSpec, Spec, load_spec, spec_from_dict
from ._supervisor import RunSummary, Runtime, run
from ._terminal import printable
from ._tickets import format_ticket
from ._tracing import read_events, read_trace
from ._validation import validate

__all__ = [
    "A2ASpec",
    "Actor",
    "ActorSpec",
    "AgentCard",
    "AgentRuntimeError",
    "AgentSkill",
    "ConflictError",
    "Context",
    "Draining",
    "FrameError",
    "Gateway",
    "InvalidId",
    "LineRedactor",
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
    "TokenAllowanceExceeded",
    "ToolCall",
    "Usage",
    "check_id",
    "child_path",
    "current_request",
    "format_ticket",
    "known_secrets",
    "load_spec",
    "model_from_config",
    "printable",
    "private_dir",
    "read_events",
    "read_trace",
    "redact",
    "run",
    "serve",
    "skill",
    "spec_from_dict",
    "validate",
    "write_private",
]


def __getattr__(name: str) -> object:
    # The A2A gateway imports the a2a-sdk server (a second or more): only its users pay, not
    # every node process. `agentrt.runtime.a2a` (the mapping) is imported the same way.
    if name in ("Gateway", "serve"):
        from . import _gateway

        return getattr(_gateway, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
