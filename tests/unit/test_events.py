"""Trace events as typed Structs: every event round-trips through the trace file's JSON, matches
the generated schema, and comes out of the tracing pipeline as the event that went in."""

from __future__ import annotations

import typing
from typing import Any

import jsonschema
import msgspec
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrt import protocols
from agentrt.protocols import (
    EnvelopeSent,
    Event,
    Notice,
    PlanAccepted,
    ScheduleDispatch,
    TaskRequest,
    TaskStateChanged,
    TraceEvent,
    UserEvent,
    decode_event,
    event_from_dict,
    event_to_dict,
)
from agentrt.runtime._tracing import configure, emit, get_logger
from agentrt.runtime._tracing import stop as stop_tracing
from agentrt.schemas import load

EVENT_TYPES: list[type[TraceEvent]] = list(typing.get_args(Event))
SCHEMA = load("trace-event.schema")
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

ENVELOPE = protocols.Envelope(
    message_id="m1",
    trace_id="t" * 32,
    span_id="s" * 16,
    sender="boss",
    recipient="worker-1",
    sent_at=1.5,
    task_id="job/t1",
    plan_task="t1",
    body=TaskRequest(
        call=protocols.SkillCall(skill="lookup"),
        message=protocols.Message(message_id="x", role="ROLE_USER", parts=[protocols.Part(data={"q": "a"})]),
    ),
)

_text = st.text(max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


def _values(t: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """Values of one field type (as msgspec describes it)."""
    i = msgspec.inspect
    if isinstance(t, i.StrType):
        return _text
    if isinstance(t, i.BoolType):
        return st.booleans()
    if isinstance(t, i.IntType):
        return st.integers(-(2**53), 2**53)
    if isinstance(t, i.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False, width=64)
    if isinstance(t, i.NoneType):
        return st.none()
    if isinstance(t, i.UnionType):
        return st.one_of([_values(x) for x in t.types])
    if isinstance(t, i.ListType):
        return st.lists(_values(t.item_type), max_size=3)
    if isinstance(t, i.DictType):
        return st.dictionaries(_values(t.key_type), _values(t.value_type), max_size=3)
    if isinstance(t, i.StructType) and t.cls is protocols.Envelope:
        return st.just(ENVELOPE)
    if isinstance(t, i.AnyType):
        return _json
    raise AssertionError(f"no strategy for {t}")


def _events(cls: type[TraceEvent]) -> st.SearchStrategy[TraceEvent]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: _values(f.type) for f in info.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: _build(cls, kw))


def _build(cls: type[TraceEvent], kw: dict[str, Any]) -> TraceEvent:
    info = msgspec.inspect.type_info(cls)
    for f in info.fields:  # type: ignore[attr-defined]
        if f.required and f.name not in kw:
            kw[f.name] = _example(f.type)
    return cls(**kw)


def _example(t: msgspec.inspect.Type) -> Any:
    i = msgspec.inspect
    if isinstance(t, i.UnionType):
        return _example(t.types[0])
    return {i.StrType: "x", i.IntType: 1, i.FloatType: 1.0, i.BoolType: True}.get(type(t))


def test_the_union_holds_every_event_type_once() -> None:
    declared = {
        cls for cls in vars(protocols).values() if isinstance(cls, type) and issubclass(cls, TraceEvent) and cls is not TraceEvent
    }
    assert set(EVENT_TYPES) == declared
    tags = [cls.__struct_config__.tag for cls in EVENT_TYPES]
    assert len(tags) == len(set(tags))


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__struct_config__.tag)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_every_event_round_trips_through_json_and_matches_the_schema(cls: type[TraceEvent], data: st.DataObject) -> None:
    event = data.draw(_events(cls))
    line = msgspec.json.encode(event_to_dict(event))
    assert decode_event(line) == event
    assert event_from_dict(msgspec.json.decode(line)) == event
    errors = [e.message for e in VALIDATOR.iter_errors(msgspec.json.decode(line))]
    assert errors == []


def test_unknown_and_invalid_events_are_refused_and_extra_fields_ignored() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"event": "no.such-event", "ts": 1.0}')
    with pytest.raises(msgspec.ValidationError):  # a field of the wrong type
        decode_event(b'{"event": "plan.accepted", "tasks": "five", "final": "t"}')
    assert list(VALIDATOR.iter_errors({"event": "plan.accepted", "tasks": "five", "final": "t"}))
    assert decode_event(b'{"event": "notice", "text": "hi", "later_field": 1}') == Notice(text="hi")


def test_emit_goes_through_the_pipeline_stamped_and_redacted() -> None:
    """What a process records through `emit` is what a reader decodes, plus the stamps."""
    seen: list[dict[str, Any]] = []
    configure(lambda batch: seen.extend(msgspec.msgpack.decode(batch)), run_id="r1", node="n1")
    try:
        log = get_logger(actor="boss")
        emit(log, ScheduleDispatch(plan_task="t1", skill="lookup", worker="w", attempt=2))
        emit(log, UserEvent(name="leak", fields={"api_key": "sk-ant-abcdefghijklmnop"}))
        emit(log, EnvelopeSent(message_id="m1", kind="task-request", sender="boss", recipient="w", envelope=ENVELOPE))
    finally:
        stop_tracing()  # ships what is buffered
        structlog.reset_defaults()
    events = [event_from_dict(e) for e in seen]
    dispatch, user, sent = events
    assert isinstance(dispatch, ScheduleDispatch) and dispatch.plan_task == "t1" and dispatch.attempt == 2
    assert (dispatch.actor, dispatch.run_id, dispatch.node) == ("boss", "r1", "n1") and dispatch.ts > 0
    assert isinstance(user, UserEvent) and user.fields == {"api_key": "[redacted]"}
    assert isinstance(sent, EnvelopeSent) and sent.envelope == ENVELOPE
    assert seen[2]["envelope"]["planTask"] == "t1"  # camelCase inside the envelope, as on the wire


def test_task_state_defaults_keep_the_trace_small() -> None:
    data = event_to_dict(TaskStateChanged(state="working", skill="s"))
    assert data == {"event": "task.state", "state": "working", "skill": "s"}
    assert event_to_dict(PlanAccepted(tasks=2, final="b", deps={"b": ["a"]}))["deps"] == {"b": ["a"]}


def test_ctx_event_records_a_user_event_or_the_built_in_event_its_name_names() -> None:
    from agentrt.runtime import Context, OfflineModel

    seen: list[dict[str, Any]] = []
    configure(lambda batch: seen.extend(msgspec.msgpack.decode(batch)), run_id="r1", node="n1")
    try:
        ctx = Context(name="boss", node="n1", run_id="r1", messenger=None, model=OfflineModel(), store=None, config={})  # type: ignore[arg-type]
        ctx.event("my.thing", x=1)
        ctx.event("schedule.dispatch", plan_task="t1", skill="s", worker="w")
        with pytest.raises(ValueError, match=r"trace event 'schedule.dispatch' is a built-in event .*\$\.attempt"):
            ctx.event("schedule.dispatch", plan_task="t1", skill="s", worker="w", attempt="two")
    finally:
        stop_tracing()  # ships what is buffered
        structlog.reset_defaults()
    mine, dispatch = (event_from_dict(e) for e in seen)
    assert mine == UserEvent(name="my.thing", fields={"x": 1}, actor="boss", run_id="r1", node="n1", pid=mine.pid, ts=mine.ts)
    assert isinstance(dispatch, ScheduleDispatch) and (dispatch.plan_task, dispatch.actor) == ("t1", "boss")
