"""Idempotency keys in memory: scoped by (sender, skill, key), bound to their first payload
(Stripe's semantics), one attempt running per key, bounded by count and bytes."""

from __future__ import annotations

import datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrt.protocols import Part
from agentrt.runtime._idempotency import Cached, Conflict, Idempotency, Join, Key, Run, payload_hash


def key(payload: str = "p", *, sender: str = "a", skill: str = "s", name: str = "k") -> Key:
    return Key(sender, skill, name, payload)


def test_the_same_key_and_payload_runs_once_then_answers_from_the_first_result() -> None:
    keys: Idempotency[str, str] = Idempotency()
    assert keys.begin(key(), "r1") == Run()
    assert keys.begin(key(), "r2") == Join()
    assert keys.end(key(), "hello alice", completed=True) == ["r2"]
    assert keys.begin(key(), "r3") == Cached("hello alice")


def test_the_same_key_with_another_payload_is_a_conflict_running_or_done() -> None:
    keys: Idempotency[str, str] = Idempotency()
    keys.begin(key("alice"), "r1")
    assert keys.begin(key("mallory"), "r2") == Conflict(key("alice"))
    keys.end(key("alice"), "hello alice", completed=True)
    assert keys.begin(key("mallory"), "r3") == Conflict(key("alice"))


def test_keys_are_scoped_by_sender_and_skill() -> None:
    keys: Idempotency[str, str] = Idempotency()
    keys.begin(key("alice"), "r1")
    assert keys.begin(key("mallory", sender="b"), "r2") == Run()
    assert keys.begin(key("mallory", skill="t"), "r3") == Run()


def test_a_failed_attempt_is_not_kept_so_a_retry_runs_again() -> None:
    keys: Idempotency[str, str] = Idempotency()
    keys.begin(key(), "r1")
    assert keys.end(key(), "boom", completed=False) == []
    assert keys.begin(key(), "r2") == Run()


def test_kept_results_are_bounded_by_count_and_bytes() -> None:
    keys: Idempotency[str, str] = Idempotency(max_entries=100, max_bytes=50_000)
    for i in range(40):
        keys.begin(key(name=f"k{i}"), "r")
        keys.end(key(name=f"k{i}"), f"result {i}", completed=True, size=5_000)
        assert keys.bytes <= 50_000 and keys.kept <= 100
    assert keys.begin(key(name="k39"), "r") == Cached("result 39")
    assert keys.begin(key(name="k0"), "r") == Run()  # the oldest went first


ops = st.lists(
    st.tuples(
        st.sampled_from(["begin", "end"]),
        st.sampled_from(["k1", "k2"]),
        st.sampled_from(["p1", "p2"]),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_one_attempt_per_key_every_joiner_answered_once_and_no_payload_swapped(
    script: list,
) -> None:
    keys: Idempotency[int, str] = Idempotency(max_entries=3, max_bytes=10_000)
    running: dict[str, Key] = {}  # what the model says runs, by key name
    first_payload: dict[str, str] = {}  # the payload each key name is bound to while remembered
    answered: list[int] = []
    joined: list[int] = []
    for n, (op, name, payload, completed) in enumerate(script):
        k = key(payload, name=name)
        if op == "begin":
            verdict = keys.begin(k, n)
            if isinstance(verdict, Run):
                assert name not in running, "two attempts ran with one key"
                running[name] = k
                first_payload[name] = payload
            elif isinstance(verdict, Join):
                assert running[name].payload == payload
                joined.append(n)
            elif isinstance(verdict, Cached):
                assert first_payload[name] == payload and verdict.result == f"{name}:{payload}"
            else:
                assert isinstance(verdict, Conflict) and verdict.first.payload != payload
        elif name in running:
            k = running.pop(name)
            answered += keys.end(k, f"{name}:{k.payload}", completed=completed, size=100)
            if not completed:
                first_payload.pop(name, None)
    for k in running.values():
        answered += keys.end(k, "late", completed=False)
    assert sorted(answered) == sorted(joined), "every request that joined was answered, once"
    assert keys.running == 0 and keys.kept <= 3


_keys = st.one_of(st.text(max_size=4), st.integers(-3, 3), st.none(), st.booleans(), st.floats(allow_nan=False))
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.text(max_size=6)
    | st.binary(max_size=4)
    | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=3))
    | st.datetimes(timezones=st.just(datetime.UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


def _reordered(value):
    if isinstance(value, dict):
        return {k: _reordered(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=4), _values, max_size=4))
def test_the_payload_hash_is_defined_for_any_decodable_value_and_blind_to_key_order(data: dict) -> None:
    """A frame may carry a dict with keys that are not strings inside a data part (msgpack
    allows it). Before, hashing such a payload raised TypeError on the actor's thread, and a
    request with an idempotency key was never answered."""
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode([Part(data=data)]), type=list[Part])
    h = payload_hash(wire)
    assert h == payload_hash([Part(data=_reordered(data))])
    assert h != payload_hash([Part(data={**data, "\x00another": 1})])
