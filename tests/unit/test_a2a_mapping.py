"""The A2A 1.0 mapping (agentrt.runtime.a2a): pure data, both ways."""

from __future__ import annotations

from typing import Any

import pytest
from a2a.types import a2a_pb2 as pb
from hypothesis import given
from hypothesis import strategies as st

from agentrt.protocols import AgentCard, AgentSkill, DataPart, FileContent, FilePart, TextPart
from agentrt.runtime import SpecError, spec_from_dict
from agentrt.runtime import a2a as mapping

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
parts = st.lists(
    st.one_of(
        st.builds(TextPart, text=st.text(max_size=40)),
        st.builds(DataPart, data=st.dictionaries(st.text(max_size=8), json_values, max_size=5)),
        st.builds(
            FilePart,
            file=st.builds(
                FileContent,
                uri=st.just("https://example.org/f.pdf"),
                name=st.just("f.pdf"),
                mime_type=st.just("application/pdf"),
            ),
        ),
        st.builds(
            FilePart,
            file=st.builds(
                FileContent,
                bytes=st.just("aGVsbG8="),
                name=st.just("h.txt"),
                mime_type=st.just("text/plain"),
            ),
        ),
    ),
    max_size=5,
)


@given(parts)
def test_parts_round_trip(original: list[Any]) -> None:
    """Our parts -> A2A 1.0 -> ours is the identity, whole numbers included (protobuf keeps
    every number as a double; `plain` gives ints back)."""
    assert mapping.parts_from_a2a(mapping.parts_to_a2a(original)) == original


def test_a_data_part_that_is_not_an_object_is_wrapped() -> None:
    part = pb.Part()
    part.data.list_value.values.add().number_value = 3
    assert mapping.parts_from_a2a([part]) == [DataPart(data={"value": [3]})]


@pytest.mark.parametrize(
    "state",
    [
        "submitted",
        "working",
        "input-required",
        "completed",
        "canceled",
        "failed",
        "rejected",
        "auth-required",
    ],
)
def test_states_round_trip(state: str) -> None:
    a2a_state = mapping.state_to_a2a(state)
    assert pb.TaskState.Name(a2a_state) == "TASK_STATE_" + state.upper().replace("-", "_")
    assert mapping.state_from_a2a(a2a_state) == state


def test_card_publishes_bindings_capabilities_and_skill_schemas() -> None:
    schema = {
        "type": "object",
        "required": ["n"],
        "properties": {"n": {"type": "integer", "maximum": 10}},
    }
    card = AgentCard(
        name="counter",
        description="counts",
        skills=[
            AgentSkill(id="count", name="count", input_schema=schema, read_only=True, timeout_s=5)
        ],
    )
    out = mapping.card_to_a2a(card, "http://h/a2a/counter/")
    assert [(i.protocol_binding, i.url) for i in out.supported_interfaces] == [
        ("JSONRPC", "http://h/a2a/counter/"),
        ("HTTP+JSON", "http://h/a2a/counter/"),
    ]
    assert out.capabilities.streaming and not out.capabilities.push_notifications
    assert [s.tags for s in out.skills] == [["count"]]  # A2A requires tags: the id when none
    assert mapping.skill_schemas(out) == {
        "count": {"inputSchema": schema, "readOnly": True, "timeoutS": 5}
    }
    assert not out.security_schemes
    secured = mapping.card_to_a2a(card, "http://h/a2a/counter/", bearer=True)
    assert secured.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert list(secured.security_requirements[0].schemes) == ["bearer"]


def test_a_card_without_the_extension_has_no_schemas() -> None:
    assert mapping.skill_schemas(pb.AgentCard(name="plain")) == {}


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
