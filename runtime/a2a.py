"""The mapping between agentrt's messages and A2A 1.0's (the `a2a-sdk` protobuf types).

agentrt's `protocols/` still speak the 0.3-era shapes (`kind` tags, lower-case states, one
`FilePart`); this module is the one place that translates them, both ways, for the gateway
(`agentrt serve --a2a`) and for `A2AAgent` (external agents as workers). Skill input/output
JSON Schemas have no field in A2A, so they travel in the card as the extension
`SKILL_SCHEMAS_EXTENSION` (plain clients ignore it; agentrt validates with it).
"""

from __future__ import annotations

import base64
from typing import Any

from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format, struct_pb2

from agentrt.protocols import (
    AgentCard,
    DataPart,
    FileContent,
    FilePart,
    Part,
    TextPart,
)

SKILL_SCHEMAS_EXTENSION = "urn:agentrt:a2a:skill-schemas:v1"
"""Card extension whose params are `{"skills": {id: {"inputSchema", "outputSchema",
"readOnly", "timeoutS"}}}`."""

SKILL_METADATA_KEY = "skill"
"""Key of a message's metadata that names the skill to run (else the actor's only skill)."""

_STATES = {
    "submitted": pb.TASK_STATE_SUBMITTED,
    "working": pb.TASK_STATE_WORKING,
    "input-required": pb.TASK_STATE_INPUT_REQUIRED,
    "completed": pb.TASK_STATE_COMPLETED,
    "canceled": pb.TASK_STATE_CANCELED,
    "failed": pb.TASK_STATE_FAILED,
    "rejected": pb.TASK_STATE_REJECTED,
    "auth-required": pb.TASK_STATE_AUTH_REQUIRED,
    "unknown": pb.TASK_STATE_UNSPECIFIED,
}
_STATES_BACK = {v: k for k, v in _STATES.items()}
TERMINAL = frozenset(
    {pb.TASK_STATE_COMPLETED, pb.TASK_STATE_CANCELED, pb.TASK_STATE_FAILED, pb.TASK_STATE_REJECTED}
)
INTERRUPTED = frozenset({pb.TASK_STATE_INPUT_REQUIRED, pb.TASK_STATE_AUTH_REQUIRED})


def state_to_a2a(state: str) -> int:
    """`"completed"` -> `TASK_STATE_COMPLETED`."""
    return _STATES.get(state, pb.TASK_STATE_UNSPECIFIED)


def state_from_a2a(state: int) -> str:
    """`TASK_STATE_COMPLETED` -> `"completed"`."""
    return _STATES_BACK.get(state, "unknown")


def plain(value: Any) -> Any:
    """JSON from a protobuf Struct/Value, with whole numbers as ints again (protobuf keeps
    every number as a double: `3` arrives as `3.0`, which an `integer` schema or a Python
    index would not take)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    return plain(json_format.MessageToDict(value))  # type: ignore[no-any-return]


def parts_to_a2a(parts: list[Part]) -> list[pb.Part]:
    """agentrt parts -> A2A 1.0 parts (`text | data | url | raw`, with `mediaType`)."""
    out = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append(pb.Part(text=p.text, media_type="text/plain"))
        elif isinstance(p, DataPart):
            value = struct_pb2.Value()
            json_format.ParseDict(p.data, value)
            out.append(pb.Part(data=value, media_type="application/json"))
        elif isinstance(p, FilePart):
            f = p.file
            if f.uri is not None:
                out.append(pb.Part(url=f.uri, filename=f.name or "", media_type=f.mime_type or ""))
            else:
                out.append(
                    pb.Part(
                        raw=base64.b64decode(f.bytes or ""),
                        filename=f.name or "",
                        media_type=f.mime_type or "",
                    )
                )
    return out


def parts_from_a2a(parts: Any) -> list[Part]:
    """A2A 1.0 parts -> agentrt parts. A data part that is not a JSON object (A2A allows any
    JSON value) becomes `{"value": ...}`: agentrt's data parts are objects."""
    out: list[Part] = []
    for p in parts:
        which = p.WhichOneof("content")
        if which == "text":
            out.append(TextPart(text=p.text))
        elif which == "data":
            data = plain(json_format.MessageToDict(p.data))
            out.append(DataPart(data=data if isinstance(data, dict) else {"value": data}))
        elif which == "url":
            out.append(
                FilePart(
                    file=FileContent(
                        uri=p.url, name=p.filename or None, mime_type=p.media_type or None
                    )
                )
            )
        elif which == "raw":
            out.append(
                FilePart(
                    file=FileContent(
                        bytes=base64.b64encode(p.raw).decode(),
                        name=p.filename or None,
                        mime_type=p.media_type or None,
                    )
                )
            )
    return out


def first_data(parts: list[Part]) -> dict[str, Any] | None:
    return next((p.data for p in parts if isinstance(p, DataPart)), None)


def text_of(parts: list[Part]) -> str:
    return "\n".join(p.text for p in parts if isinstance(p, TextPart))


def card_to_a2a(
    card: AgentCard,
    url: str,
    *,
    streaming: bool = True,
    description: str | None = None,
    bearer: bool = False,
) -> pb.AgentCard:
    """An actor's card as an A2A 1.0 agent card served at `url` (JSON-RPC and HTTP+JSON on the
    same base URL). Capabilities are what the gateway does: streaming yes, push notifications
    and the extended card no. Skill schemas go in the `SKILL_SCHEMAS_EXTENSION` extension.
    `bearer`: callers must send an HTTP bearer token (declared as the `bearer` scheme)."""
    schemas = {
        s.id: {
            k: v
            for k, v in {
                "inputSchema": s.input_schema,
                "outputSchema": s.output_schema,
                "readOnly": s.read_only,
                "timeoutS": s.timeout_s,
            }.items()
            if v is not None
        }
        for s in card.skills
    }
    security: dict[str, Any] = {}
    if bearer:
        security = {
            "security_schemes": {
                "bearer": pb.SecurityScheme(
                    http_auth_security_scheme=pb.HTTPAuthSecurityScheme(
                        scheme="Bearer", description="a caller's token (the gateway's a2a.callers)"
                    )
                )
            },
            "security_requirements": [pb.SecurityRequirement(schemes={"bearer": pb.StringList()})],
        }
    return pb.AgentCard(
        **security,
        name=card.name,
        description=description or card.description or card.name,
        version=card.version,
        supported_interfaces=[
            pb.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            pb.AgentInterface(url=url, protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=pb.AgentCapabilities(
            streaming=streaming,
            push_notifications=False,
            extended_agent_card=False,
            extensions=[
                pb.AgentExtension(
                    uri=SKILL_SCHEMAS_EXTENSION,
                    description="JSON Schemas of each skill's input and output data part",
                    required=False,
                    params=struct({"skills": schemas}),
                )
            ],
        ),
        default_input_modes=[*card.default_input_modes, "text/plain"],
        default_output_modes=[*card.default_output_modes, "text/plain"],
        skills=[
            pb.AgentSkill(
                id=s.id,
                name=s.name,
                description=s.description or s.name,
                tags=list(s.tags) or [s.id],
                input_modes=list(s.input_modes),
                output_modes=list(s.output_modes),
            )
            for s in card.skills
        ],
    )


def skill_schemas(card: pb.AgentCard) -> dict[str, dict[str, Any]]:
    """The `SKILL_SCHEMAS_EXTENSION` params of a remote card ({} when it publishes none):
    skill id -> {"inputSchema", "outputSchema", "readOnly", "timeoutS"}."""
    for ext in card.capabilities.extensions:
        if ext.uri == SKILL_SCHEMAS_EXTENSION:
            skills = from_struct(ext.params).get("skills")
            return skills if isinstance(skills, dict) else {}
    return {}
