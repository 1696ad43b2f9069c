"""The codec: round trips, and every kind of bad frame rejected with a typed, named error."""

from __future__ import annotations

import contextlib
import functools
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrt.protocols import (
    DEFAULT_LIMITS,
    MAX_PARTS,
    Ack,
    AgentCard,
    Artifact,
    Directory,
    Drain,
    Drained,
    Envelope,
    FrameError,
    FrameTooDeep,
    FrameTooLarge,
    InvalidFrame,
    Limits,
    MalformedFrame,
    Message,
    NodeDown,
    NodeUp,
    Part,
    Ready,
    Register,
    SkillCall,
    StartFailed,
    Stats,
    StatsQuery,
    Stop,
    Stopped,
    Task,
    TaskReply,
    TaskRequest,
    TaskStatus,
    check_depth,
    check_limits,
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
        body=TaskRequest(call=SkillCall(skill="s"), message=Message(message_id="m", role="ROLE_USER", parts=parts)),
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
    env = envelope([Part(data=data), Part(text=text)], attempt=attempt)
    assert decode(encode(env)) == env


def test_kind_is_the_body_tag_on_the_wire() -> None:
    env = envelope([Part(text="hi")])
    assert env.kind == "task-request"
    assert msgspec.msgpack.decode(encode(env))["body"]["kind"] == "task-request"


def test_camel_case_on_the_wire() -> None:
    raw = msgspec.msgpack.decode(encode(envelope([], idempotency_key="k")))
    assert {"messageId", "traceId", "spanId", "sentAt", "idempotencyKey"} <= set(raw)


def test_too_large() -> None:
    frame = encode(envelope([Part(text="x" * 2000)]))
    with pytest.raises(FrameTooLarge, match="limit is 1000"):
        decode(frame, Limits(max_frame_bytes=1000))


def test_not_msgpack() -> None:
    with pytest.raises(MalformedFrame, match="not valid msgpack"):
        decode(b"\xc1garbage")


def test_schema_mismatch_names_the_path() -> None:
    raw = msgspec.msgpack.decode(encode(envelope([Part(text="hi")])))
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
        decode(encode(envelope([Part(data=nested)])))


def test_too_many_parts() -> None:
    frame = encode(envelope([Part(text="p")] * (MAX_PARTS + 1)))
    with pytest.raises(MalformedFrame, match=f"length <= {MAX_PARTS}"):
        decode(frame)


# -- bounds: every refusal is a FrameError with the reason a dead letter records ----------------


def raw(**changes) -> dict:
    out = msgspec.msgpack.decode(encode(envelope([Part(text="hi")])))
    out.update(changes)
    return out


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"attempt": -7}, "attempt"),
        ({"attempt": 0}, "attempt"),
        ({"sentAt": float("nan")}, "sentAt"),
        ({"sentAt": float("inf")}, "sentAt"),
        ({"deadline": float("inf")}, "deadline"),
        ({"deadline": -1.0}, "deadline"),
        ({"messageId": "x" * (1024 * 1024)}, "messageId"),
        ({"idempotencyKey": "k" * 257}, "idempotencyKey"),
        ({"sender": "s" * 129}, "sender"),
    ],
)
def test_field_rules_are_refused_as_invalid(changes: dict, field: str) -> None:
    frame = msgspec.msgpack.encode(raw(**changes))
    with pytest.raises(InvalidFrame, match=rf"\$\.{field}") as info:
        decode(frame, Limits(max_frame_bytes=8 * 1024 * 1024))
    assert info.value.reason == "invalid"


def test_four_mib_ids_are_refused_as_invalid() -> None:
    frame = msgspec.msgpack.encode(raw(traceId="t" * (4 * 1024 * 1024)))
    with pytest.raises(InvalidFrame):
        decode(frame, Limits(max_frame_bytes=5 * 1024 * 1024))


def test_invalid_utf8_is_malformed_not_a_unicode_error() -> None:
    frame = encode(envelope([Part(text="hé")]))
    broken = frame.replace("hé".encode(), b"h\xff\xfe"[:3])
    assert broken != frame
    with pytest.raises(MalformedFrame, match="UTF-8") as info:
        decode(broken)
    assert info.value.reason == "malformed"


def nest(levels: int) -> dict:
    top: dict = {}
    cursor = top
    for _ in range(levels):
        cursor["x"] = {}
        cursor = cursor["x"]
    return top


def task_envelope(task: Task) -> Envelope:
    return Envelope(
        message_id="m1",
        trace_id="t",
        span_id="s",
        sender="a",
        recipient="b",
        sent_at=1.0,
        body=TaskReply(task=task),
    )


@pytest.mark.parametrize(
    ("where", "make"),
    [
        ("parts[0].metadata", lambda d: envelope([Part(text="t", metadata=d)])),
        (
            "status.message.parts[0].data",
            lambda d: task_envelope(
                Task(
                    id="t",
                    context_id="c",
                    status=TaskStatus(
                        state="TASK_STATE_FAILED",
                        message=Message(message_id="m", role="ROLE_AGENT", parts=[Part(data=d)]),
                    ),
                )
            ),
        ),
        (
            "history[0].metadata",
            lambda d: task_envelope(
                Task(
                    id="t",
                    context_id="c",
                    status=TaskStatus(state="TASK_STATE_WORKING"),
                    history=[Message(message_id="m", role="ROLE_AGENT", parts=[], metadata=d)],
                )
            ),
        ),
        (
            "artifacts[0].metadata",
            lambda d: task_envelope(
                Task(
                    id="t",
                    context_id="c",
                    status=TaskStatus(state="TASK_STATE_COMPLETED"),
                    artifacts=[Artifact(artifact_id="a", parts=[], metadata=d)],
                )
            ),
        ),
    ],
)
def test_depth_is_checked_over_every_nested_field(where: str, make) -> None:
    frame = encode(make(nest(900)))
    with pytest.raises(FrameTooDeep, match=re.escape(where)):
        decode(frame)
    assert decode(encode(make(nest(30))))  # within the limit: accepted


def test_sender_side_check_refuses_what_a_receiver_would() -> None:
    big = envelope([Part(text="x" * 5000)])
    with pytest.raises(FrameTooLarge, match="task-request to 'b' is"):
        check_limits(big, encode(big), Limits(max_frame_bytes=1000))
    deep = envelope([Part(data=nest(40))])
    with pytest.raises(FrameTooDeep):
        check_limits(deep, encode(deep), DEFAULT_LIMITS)
    long_id = envelope([], task_id="job/" + "t" * 300)
    with pytest.raises(InvalidFrame, match=r"length <= 256 - at `\$\.taskId`"):
        check_limits(long_id, encode(long_id), DEFAULT_LIMITS)


# Envelopes a sender can build (encoding checks no bounds) that a receiver refuses: before,
# the sender's check passed every one of them, so each was sent, refused at the receiver
# without an ack, resent 10 times and given up (for a reply: its asker timed out).
_REFUSED_AT_THE_RECEIVER = {
    "plan task over the id bound": lambda: envelope([], plan_task="p" * 300),
    "a deadline past 1e11 (timeout_s=1e12)": lambda: envelope([], deadline=1e12),
    "an infinite deadline (timeout_s=inf)": lambda: envelope([], deadline=float("inf")),
    "attempt 0": lambda: envelope([], attempt=0),
    "a nested message id over the bound": lambda: msgspec.structs.replace(
        envelope([]),
        body=TaskRequest(call=SkillCall(skill="s"), message=Message(message_id="m" * 300, role="ROLE_USER", parts=[])),
    ),
    "a reply of 300 parts": lambda: msgspec.structs.replace(
        envelope([]),
        body=TaskReply(
            task=Task(
                id="t",
                context_id="c",
                status=TaskStatus(state="TASK_STATE_COMPLETED"),
                artifacts=[Artifact(artifact_id="a", parts=[Part(text="p")] * 300)],
            )
        ),
    ),
    "a drained naming a 200-character actor": lambda: msgspec.structs.replace(
        envelope([]), body=Drained(actor="a" * 200)
    ),
    "an ack of 5000 ids": lambda: msgspec.structs.replace(envelope([]), body=Ack(ids=["i"] * 5000)),
}


@pytest.mark.parametrize("make", _REFUSED_AT_THE_RECEIVER.values(), ids=_REFUSED_AT_THE_RECEIVER)
def test_the_sender_refuses_every_envelope_the_receiver_would(make) -> None:
    env = make()
    frame = encode(env)
    with pytest.raises(FrameError) as at_receiver:
        decode(frame)
    with pytest.raises(type(at_receiver.value)):
        check_limits(env, frame, DEFAULT_LIMITS)


@given(st.binary(max_size=300))
def test_nothing_but_a_frame_error_leaves_decode(frame: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(frame)


@given(st.binary(min_size=1, max_size=40), st.integers(0, 200))
def test_mutated_valid_frames_fail_only_with_frame_errors(noise: bytes, at: int) -> None:
    frame = bytearray(
        encode(envelope([Part(data={"k": [1, "two", {"x": None}]}), Part(text="hé")]))
    )
    at = at % len(frame)
    frame[at : at + len(noise)] = noise
    with contextlib.suppress(FrameError):
        decode(bytes(frame))


CONTROL_SAMPLES = [
    Register(node="n1", pid=4, endpoint="ipc://x", cards=[AgentCard(name="a", description="d", version="1")]),
    StartFailed(node="n1", pid=4, error="ValueError: no", actor="a"),
    Directory(routes={"a": "ipc://x"}, cards=[AgentCard(name="a", description="d", version="1")]),
    Ready(node="n1"),
    StatsQuery(query_id="q"),
    Stats(node="n1", query_id="q", counts={"sent": 3}),
    Stop(),
    Stopped(node="n1"),
    NodeDown(node="n1", pid=4, actors=["a"]),
    NodeUp(node="n1", pid=5, actors=["a"]),
    Drain(reason="stopping"),
    Ack(ids=["m1", "m2"]),
]


@pytest.mark.parametrize("body", CONTROL_SAMPLES, ids=lambda b: type(b).__name__)
def test_control_operations_round_trip_as_typed_bodies(body) -> None:
    env = Envelope(
        message_id="m", trace_id="t", span_id="s", sender="a", recipient="b", sent_at=1.0, body=body
    )
    back = decode(encode(env))
    assert back == env and type(back.body) is type(body)
    assert back.kind == type(body).__struct_config__.tag



def _levels(value: object) -> int:
    """How many levels of dicts, lists and tuples `value` nests, keys included (the plain
    definition the walk is checked against)."""
    if isinstance(value, dict):
        return 1 + max((max(_levels(k), _levels(v)) for k, v in value.items()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max(map(_levels, value), default=0)
    return 0


def _deep_key(levels: int) -> dict:
    """A map whose one key is an array nested `levels - 1` deep (msgpack allows it; msgspec
    reads it as a tuple): `levels` levels in all, as deep as nest(levels)."""
    return {functools.reduce(lambda inner, _: (inner,), range(levels - 1), 0): 1}


_deep_values = st.integers(min_value=1, max_value=14).flatmap(
    lambda n: st.sampled_from(
        [nest(n), functools.reduce(lambda inner, _: [inner], range(n), 0), _deep_key(n), {"k": _deep_key(n)}]
    )
)


@given(
    data=json_values | _deep_values,
    meta=json_values | _deep_values,
    max_depth=st.integers(min_value=0, max_value=10),
)
def test_a_frame_the_byte_count_passes_as_shallow_has_no_value_too_deep(data, meta, max_depth) -> None:
    """`shallow` (the cheap check: container header bytes counted) may only ever clear a frame
    the exact walk over its decoded values clears too; and `decode` refuses exactly what the
    walk refuses, whichever of the two it used."""
    from agentrt.protocols._codec import shallow

    env = envelope([Part(data={"v": data}, metadata={"m": meta})])
    frame = encode(env)
    limits = Limits(max_depth=max_depth)
    try:
        check_depth(env, max_depth)
        too_deep = False
    except FrameTooDeep:
        too_deep = True
    assert too_deep == (_levels({"v": data}) > max_depth or _levels({"m": meta}) > max_depth)
    if shallow(frame, max_depth):
        assert not too_deep
    if too_deep:
        with pytest.raises(FrameTooDeep):
            decode(frame, limits)
    else:
        assert decode(frame, limits) == env


def test_a_deep_value_in_a_frame_too_big_to_count_is_still_walked() -> None:
    deep = envelope([Part(data=nest(40)), Part(text="x" * 20_000)])
    with pytest.raises(FrameTooDeep, match=r"parts\[0\]\.data nests deeper than 32"):
        decode(encode(deep))


@pytest.mark.parametrize("padding", [0, 20_000], ids=["counted", "walked"])
def test_a_map_key_nested_too_deep_is_refused(padding: int) -> None:
    """A map key may be an array, read as a tuple: one nested past max_depth is a value too
    deep, in a frame small enough for the byte count and in one the walk must clear. Found by
    review: the walk looked at a dict's values only, and passed a key 900 levels deep."""
    for levels in (33, 900):
        parts = [Part(data={"v": _deep_key(levels)})] + ([Part(text="x" * padding)] if padding else [])
        frame = encode(envelope(parts))
        with pytest.raises(FrameTooDeep, match=r"parts\[0\]\.data nests deeper than 32"):
            decode(frame)
    assert decode(encode(envelope([Part(data={"v": _deep_key(31)})]))).body.message.parts[0].data
