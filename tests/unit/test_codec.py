"""The codec: round trips, and every kind of bad frame rejected with a typed, named error."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrt.protocols import (
    MAX_PARTS,
    DataPart,
    Envelope,
    FrameTooDeep,
    FrameTooLarge,
    Limits,
    MalformedFrame,
    Message,
    TaskRequest,
    TextPart,
    decode,
    encode,
)


def envelope(parts: list, **kw) -> Envelope:
    return Envelope(
        message_id="m1",
        trace_id="0" * 32,
        span_id="1" * 16,
        sender="a",
        recipient="b",
        sent_at=1.0,
        body=TaskRequest(skill="s", message=Message(message_id="m", role="user", parts=parts)),
        **kw,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    text=st.text(max_size=50),
    attempt=st.integers(1, 100),
)
def test_round_trip(data: dict, text: str, attempt: int) -> None:
    env = envelope([DataPart(data=data), TextPart(text=text)], attempt=attempt)
    assert decode(encode(env)) == env


def test_kind_is_the_body_tag_on_the_wire() -> None:
    env = envelope([TextPart(text="hi")])
    assert env.kind == "task-request"
    assert msgspec.msgpack.decode(encode(env))["body"]["kind"] == "task-request"


def test_camel_case_on_the_wire() -> None:
    raw = msgspec.msgpack.decode(encode(envelope([], idempotency_key="k")))
    assert {"messageId", "traceId", "spanId", "sentAt", "idempotencyKey"} <= set(raw)


def test_too_large() -> None:
    frame = encode(envelope([TextPart(text="x" * 2000)]))
    with pytest.raises(FrameTooLarge, match="limit is 1000"):
        decode(frame, Limits(max_frame_bytes=1000))


def test_not_msgpack() -> None:
    with pytest.raises(MalformedFrame, match="not valid msgpack"):
        decode(b"\xc1garbage")


def test_schema_mismatch_names_the_path() -> None:
    raw = msgspec.msgpack.decode(encode(envelope([TextPart(text="hi")])))
    raw["body"]["message"]["parts"][0]["text"] = 5
    with pytest.raises(MalformedFrame, match=r"parts\[0\]\.text"):
        decode(msgspec.msgpack.encode(raw))


def test_unknown_body_kind() -> None:
    raw = msgspec.msgpack.decode(encode(envelope([])))
    raw["body"]["kind"] = "nonsense"
    with pytest.raises(MalformedFrame, match="nonsense"):
        decode(msgspec.msgpack.encode(raw))


def test_too_deep() -> None:
    nested: dict = {}
    cursor = nested
    for _ in range(40):
        cursor["x"] = {}
        cursor = cursor["x"]
    with pytest.raises(FrameTooDeep, match=r"parts\[0\]\.data nests deeper than 32"):
        decode(encode(envelope([DataPart(data=nested)])))


def test_too_many_parts() -> None:
    frame = encode(envelope([TextPart(text="p")] * (MAX_PARTS + 1)))
    with pytest.raises(MalformedFrame, match=f"length <= {MAX_PARTS}"):
        decode(frame)
