"""The mapping between agentrt's messages and the `a2a-sdk`'s protobuf types: one to one.

agentrt's `protocols/` are A2A 1.0's objects (Part, Message, Task, Artifact, AgentCard) in
their ProtoJSON form, so a conversion is a ProtoJSON round trip: `to_a2a` parses our JSON into
the SDK's type, `from_a2a` prints the SDK's and decodes it into ours (checking every bound of
ours on the way). The gateway (`agentrt serve --a2a`) and `A2AAgent` (external agents as
workers) use it; skill input/output JSON Schemas travel in the card as the extension
`SKILL_SCHEMAS_EXTENSION` (plain clients ignore it; agentrt validates with it).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message as Proto

from agentrt.protocols import (
    A2A_VERSION,
    SKILL_SCHEMAS_EXTENSION,
    AgentCard,
    AgentInterface,
    Part,
    TaskState,
)

__all__ = [
    "INTERRUPTED",
    "SKILL_METADATA_KEY",
    "SKILL_SCHEMAS_EXTENSION",
    "TERMINAL",
    "card_to_a2a",
    "first_data",
    "from_a2a",
    "from_struct",
    "plain",
    "state_from_a2a",
    "text_of",
    "to_a2a",
]

T = TypeVar("T", bound=msgspec.Struct)
P = TypeVar("P", bound=Proto)

SKILL_METADATA_KEY = "skill"
"""Key of a message's metadata that names the skill to run (else the actor's only skill)."""

TERMINAL = frozenset(
    {pb.TASK_STATE_COMPLETED, pb.TASK_STATE_CANCELED, pb.TASK_STATE_FAILED, pb.TASK_STATE_REJECTED}
)
INTERRUPTED = frozenset({pb.TASK_STATE_INPUT_REQUIRED, pb.TASK_STATE_AUTH_REQUIRED})


def to_a2a(obj: msgspec.Struct, cls: type[P]) -> P:
    """One of our Structs as the SDK's message of the same name (a ProtoJSON parse of its
    JSON)."""
    return json_format.ParseDict(msgspec.to_builtins(obj), cls())


def from_a2a(message: Proto, cls: type[T]) -> T:
    """An SDK message as our Struct of the same name (msgspec.ValidationError naming the field
    when it breaks one of our bounds or rules, e.g. a part with no content)."""
    return msgspec.convert(plain(json_format.MessageToDict(message)), cls)


def state_from_a2a(state: int) -> TaskState:
    """`pb.TASK_STATE_COMPLETED` -> `"TASK_STATE_COMPLETED"`."""
    return pb.TaskState.Name(state)  # type: ignore[return-value]


def plain(value: Any) -> Any:
    """JSON from ProtoJSON, with whole numbers as ints again (protobuf keeps every number of a
    Struct/Value as a double: `3` arrives as `3.0`, which an `integer` schema or a Python index
    would not take)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    return plain(json_format.MessageToDict(value))  # type: ignore[no-any-return]


def first_data(parts: list[Part]) -> Any:
    """The first data part's value (None if there is none)."""
    return next((p.data for p in parts if p.data is not None), None)


def text_of(parts: list[Part]) -> str:
    return "\n".join(p.text for p in parts if p.text is not None)


def card_to_a2a(card: AgentCard, url: str, *, streaming: bool = True, bearer: bool = False) -> pb.AgentCard:
    """An actor's card as the gateway serves it at `url`: JSON-RPC and HTTP+JSON on that URL,
    and capabilities as the gateway has them: streaming yes, push notifications and the
    extended card no. Not agentrt's own binding: its url is a node's endpoint (an ipc path, a
    private address), internal to the run and of no use to an HTTP client, and a public card
    must not show it. `bearer`: callers must send an HTTP bearer token (declared as the
    `bearer` scheme)."""
    served = msgspec.structs.replace(
        card,
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=A2A_VERSION),
            AgentInterface(url=url, protocol_binding="HTTP+JSON", protocol_version=A2A_VERSION),
        ],
        capabilities=msgspec.structs.replace(
            card.capabilities, streaming=streaming, push_notifications=False, extended_agent_card=False
        ),
    )
    out = to_a2a(served, pb.AgentCard)
    if bearer:
        out.security_schemes["bearer"].CopyFrom(
            pb.SecurityScheme(
                http_auth_security_scheme=pb.HTTPAuthSecurityScheme(
                    scheme="Bearer", description="a caller's token (the gateway's a2a.callers)"
                )
            )
        )
        out.security_requirements.append(pb.SecurityRequirement(schemes={"bearer": pb.StringList()}))
    return out
