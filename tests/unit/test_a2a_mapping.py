"""agentrt's protocols are A2A 1.0's data model: our Structs' JSON is what the `a2a-sdk` types
print and parse (ProtoJSON), so `agentrt.runtime.a2a` maps one to one."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from a2a.types import a2a_pb2 as pb
from a2a.utils.proto_utils import validate_proto_required_fields
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from agentrt.protocols import (
    AGENTRT_BINDING,
    SKILL_SCHEMAS_EXTENSION,
    AgentCard,
    Artifact,
    Envelope,
    Message,
    Part,
    SendMessageConfiguration,
    SkillCall,
    SkillContract,
    Task,
    TaskReply,
    TaskRequest,
    TaskState,
    TaskStatus,
    decode,
    encode,
    state_word,
    task_state,
)
from agentrt.runtime import Actor, Request, SpecError, skill, spec_from_dict
from agentrt.runtime import a2a as mapping

json_values = st.recursive(
    st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
optional_text = st.none() | st.text(min_size=1, max_size=12)

parts = st.one_of(
    st.builds(Part, text=st.text(max_size=40), media_type=st.none() | st.just("text/plain")),
    st.builds(Part, data=json_values, media_type=st.none() | st.just("application/json")),
    st.builds(Part, url=st.just("https://example.org/f.pdf"), filename=optional_text, media_type=st.just("application/pdf")),
    st.builds(Part, raw=st.binary(max_size=30), filename=optional_text, metadata=st.none() | objects),
)
messages = st.builds(
    Message,
    message_id=ids,
    role=st.sampled_from(["ROLE_USER", "ROLE_AGENT"]),
    parts=st.lists(parts, max_size=4),
    context_id=st.none() | ids,
    task_id=st.none() | ids,
    metadata=st.none() | objects,
    extensions=st.lists(st.just("urn:x:ext:v1"), max_size=1),
    reference_task_ids=st.lists(ids, max_size=2),
)
states = st.sampled_from(
    [n for n in pb.TaskState.keys() if n != "TASK_STATE_UNSPECIFIED"]  # noqa: SIM118
)
artifacts = st.builds(
    Artifact,
    artifact_id=ids,
    parts=st.lists(parts, min_size=1, max_size=3),
    name=optional_text,
    description=optional_text,
    metadata=st.none() | objects,
)
tasks = st.builds(
    Task,
    id=ids,
    context_id=ids,
    status=st.builds(
        TaskStatus,
        state=states,
        message=st.none() | messages,
        timestamp=st.none() | st.just("2026-12-01T18:00:00Z"),
    ),
    artifacts=st.lists(artifacts, max_size=2),
    history=st.lists(messages, max_size=2),
    metadata=st.none() | objects,
)


def sdk_json(obj: msgspec.Struct, cls: type) -> dict[str, Any]:
    """What the SDK prints for the object our Struct describes (parsed into its type first)."""
    return mapping.plain(json_format.MessageToDict(mapping.to_a2a(obj, cls)))


@pytest.mark.parametrize(
    ("strategy", "ours", "sdk"),
    [(parts, Part, pb.Part), (messages, Message, pb.Message), (artifacts, Artifact, pb.Artifact), (tasks, Task, pb.Task)],
)
def test_our_json_is_the_sdks_json_and_round_trips(strategy: Any, ours: type, sdk: type) -> None:
    @given(strategy)
    def check(obj: Any) -> None:
        ours_json = msgspec.to_builtins(obj)
        assert sdk_json(obj, sdk) == ours_json  # field names, enum names, base64, omissions
        assert mapping.from_a2a(mapping.to_a2a(obj, sdk), ours) == obj
        assert msgspec.json.decode(msgspec.json.encode(obj), type=ours) == obj

    check()


def test_no_kind_tags_on_a2a_objects() -> None:
    task = Task(id="t", context_id="c", status=TaskStatus(state="TASK_STATE_COMPLETED"))
    assert "kind" not in msgspec.to_builtins(task)
    assert msgspec.to_builtins(Part(text="hi")) == {"text": "hi"}


@given(st.sets(st.sampled_from(["text", "raw", "url", "data"])))
def test_a_part_holds_exactly_one_content(contents: set[str]) -> None:
    values = {"text": "t", "raw": b"r", "url": "https://x/y", "data": {"k": 1}}
    fields = {name: values[name] for name in contents}
    if len(contents) == 1:
        assert msgspec.to_builtins(Part(**fields)).keys() == {*contents} - {"raw"} | ({"raw"} & contents)
        return
    with pytest.raises(ValueError, match=r"exactly one of text, raw, url or data") as info:
        Part(**fields)
    assert ("none" in str(info.value)) == (not contents)
    # ... and on decode: what a peer or a client sends is held to the same rule
    wire = msgspec.json.encode({k: (v if k != "raw" else "cg==") for k, v in fields.items()})
    with pytest.raises(msgspec.ValidationError, match=r"exactly one of text, raw, url or data"):
        msgspec.json.decode(wire, type=Part)


def test_a_task_request_is_a_send_message_request_plus_our_skill_call() -> None:
    request = TaskRequest(
        message=Message(message_id="m1", role="ROLE_USER", parts=[Part(data={"n": 3})]),
        call=SkillCall(skill="count", token_allowance=500),
        configuration=SendMessageConfiguration(accepted_output_modes=["application/json"], history_length=2),
        metadata={"origin": "test"},
    )
    as_json = msgspec.to_builtins(request)
    assert as_json.pop("kind") == "task-request" and as_json.pop("call") == {"skill": "count", "tokenAllowance": 500}
    sdk = json_format.ParseDict(as_json, pb.SendMessageRequest())
    assert mapping.plain(json_format.MessageToDict(sdk)) == as_json


def test_the_envelope_tags_its_bodies_not_the_a2a_objects_and_decodes_them_typed() -> None:
    task = Task(id="t", context_id="c", status=TaskStatus(state="TASK_STATE_FAILED"))
    envelope = Envelope(
        message_id="e", trace_id="tr", span_id="sp", sender="a", recipient="b", sent_at=1.0, body=TaskReply(task=task)
    )
    assert msgspec.to_builtins(envelope)["body"] == {"kind": "task", "task": msgspec.to_builtins(task)}
    back = decode(encode(envelope))
    assert back.kind == "task" and isinstance(back.body, TaskReply) and back.body.task == task


class _Counter(Actor):
    """Counts things."""

    @skill(
        input={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "maximum": 10}}},
        read_only=True,
        timeout_s=5,
    )
    def count(self, req: Request) -> dict[str, Any]:
        return {"n": req.data["n"]}

    @skill
    def reset(self, req: Request) -> None:
        return None


def test_an_actor_card_is_an_a2a_card_with_our_binding_and_the_schemas_extension() -> None:
    card = _Counter.card("counter", url="ipc:///tmp/n1.sock")
    a2a = mapping.to_a2a(card, pb.AgentCard)  # a strict parse: no field A2A does not have
    validate_proto_required_fields(a2a)  # every field 1.0 requires is there
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in a2a.supported_interfaces] == [
        ("ipc:///tmp/n1.sock", AGENTRT_BINDING, "1.0")
    ]
    assert card.endpoint == "ipc:///tmp/n1.sock"
    assert [(s.id, list(s.tags)) for s in a2a.skills] == [("count", ["count"]), ("reset", ["reset"])]
    (ext,) = a2a.capabilities.extensions
    assert ext.uri == SKILL_SCHEMAS_EXTENSION and not ext.required
    assert mapping.from_struct(ext.params)["skills"]["count"] == {
        "inputSchema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "maximum": 10}}},
        "readOnly": True,
        "timeoutS": 5,
    }
    back = mapping.from_a2a(a2a, AgentCard)
    assert back == card
    assert back.contract("count").read_only and back.contract("count").timeout_s == 5
    assert back.contract("reset") == SkillContract() and back.contract("ghost") == SkillContract()


def test_the_gateway_card_has_http_bindings_its_capabilities_and_no_node_endpoint() -> None:
    card = _Counter.card("counter", url="ipc:///tmp/n1.sock")
    assert card.endpoint == "ipc:///tmp/n1.sock"  # the run's own card names agentrt's binding
    out = mapping.card_to_a2a(card, "http://h/a2a/counter/")
    validate_proto_required_fields(out)
    assert [(i.protocol_binding, i.url) for i in out.supported_interfaces] == [
        ("JSONRPC", "http://h/a2a/counter/"),
        ("HTTP+JSON", "http://h/a2a/counter/"),
    ]
    assert "n1.sock" not in json_format.MessageToJson(out)  # a public card: no internal endpoint
    assert out.capabilities.streaming and not out.capabilities.push_notifications
    assert not out.capabilities.extended_agent_card and not out.security_schemes
    secured = mapping.card_to_a2a(card, "http://h/a2a/counter/", bearer=True)
    assert secured.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert list(secured.security_requirements[0].schemes) == ["bearer"]


def test_a_card_without_the_extension_has_no_contracts_and_a_bad_one_is_named() -> None:
    plain = mapping.from_a2a(pb.AgentCard(name="plain", description="p", version="1"), AgentCard)
    assert plain.contract("any") == SkillContract()
    bad = pb.AgentCard(name="odd", description="o", version="1")
    bad.capabilities.extensions.add(uri=SKILL_SCHEMAS_EXTENSION).params.update({"skills": {"s": {"readOnly": "yes"}}})
    with pytest.raises(msgspec.ValidationError, match=rf"card 'odd': extension {SKILL_SCHEMAS_EXTENSION}"):
        mapping.from_a2a(bad, AgentCard)


@pytest.mark.parametrize("name", pb.TaskState.keys())
def test_task_states_are_the_protojson_names_and_the_runtime_words_map_back(name: str) -> None:
    assert name in TaskState.__args__  # every 1.0 state, by its ProtoJSON name
    word = state_word(name)
    assert word == name.removeprefix("TASK_STATE_").lower().replace("_", "-") and task_state(word) == name
    assert mapping.state_from_a2a(pb.TaskState.Value(name)) == name


def test_whole_numbers_come_back_as_ints() -> None:
    part = pb.Part()
    part.data.list_value.values.add().number_value = 3
    assert mapping.from_a2a(part, Part) == Part(data=[3])


def test_a2a_table_in_a_spec() -> None:
    data = {
        "run": {"entry": "a"},
        "nodes": [{"name": "n1", "actors": [{"name": "a", "class": "m:A"}]}],
        "a2a": {"listen": "127.0.0.1:9000", "expose": ["a"]},
    }
    spec = spec_from_dict(data)
    assert spec.a2a is not None and spec.a2a.listen == "127.0.0.1:9000" and spec.a2a.callers == []
    data["a2a"]["expose"] = ["ghost"]
    with pytest.raises(SpecError, match=r"a2a.expose names 'ghost', which is not an actor"):
        spec_from_dict(data)
    data["a2a"] = {"listen": "x", "token": "secret"}
    with pytest.raises(SpecError, match=r"unknown field `token`"):
        spec_from_dict(data)
