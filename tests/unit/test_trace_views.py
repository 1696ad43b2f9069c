"""The trace tools read events that actors write too (`ctx.emit`, `ctx.event` with a built-in
event's name), so no list of valid events may break them: links between spans and plan tasks
that loop, repeat or go deep included."""

from __future__ import annotations

import contextlib
import io
import json
import typing

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from agentrt.protocols import EnvelopeSent, Event, RunError, decode_event, event_to_dict
from agentrt.runtime._deadletters import render
from agentrt.runtime._trace_export import chrome, html_page, otel
from agentrt.runtime._trace_view import diff, render_tree, timeline, why

from .test_events import ENVELOPE, _events

_LINKS = st.sampled_from(["a", "b", "c"]) | st.none()
_TASKS = st.sampled_from(["t1", "t2", "g"]) | st.none()


def sent(span: str, parent: str | None, ts: float) -> EnvelopeSent:
    return EnvelopeSent(
        span_id=span,
        parent_span_id=parent,
        message_id=f"m-{span}",
        kind="task-request",
        sender="a",
        recipient="b",
        ts=ts,
        envelope=ENVELOPE,
    )


def test_the_tree_shows_a_span_recorded_as_its_own_ancestor_once() -> None:
    # Before: RecursionError (an actor can emit these with ctx.emit / ctx.event).
    lines = render_tree([sent("x", None, 1.0), sent("x", "x", 2.0)])
    assert len(lines) == 3 and lines[1].startswith("`- ") and lines[2].startswith("   `- ")


def test_the_tree_shows_a_causal_chain_deeper_than_the_stack() -> None:
    chain = [sent(f"s{i}", f"s{i - 1}" if i else None, float(i)) for i in range(3000)]
    lines = render_tree(chain)  # before: RecursionError past ~1000 levels
    assert len(lines) == 3001 and lines[-1].lstrip().startswith("`- ")


@st.composite
def traces(draw: st.DrawFn) -> list[Event]:
    """Events of every type, whose spans and plan tasks link up (and loop) by chance."""
    kinds = typing.get_args(Event)
    out = []
    for _ in range(draw(st.integers(0, 30))):
        event = draw(st.sampled_from(kinds).flatmap(_events))
        links = {"span_id": draw(_LINKS), "parent_span_id": draw(_LINKS), "plan_task": draw(_TASKS)}
        event = msgspec.structs.replace(event, **links)
        # Through the file, as the tools read it: what does not decode is left out there.
        try:
            out.append(decode_event(msgspec.json.encode(event_to_dict(event))))
        except msgspec.ValidationError:
            continue
    return out


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(a=traces(), b=traces())
def test_no_trace_of_valid_events_breaks_a_trace_tool(a: list[Event], b: list[Event]) -> None:
    render_tree(a)
    render_tree(a, include_control=True, errors=True, task="t1")
    Console(file=io.StringIO(), width=100).print(timeline(a, width=40))
    for task in ("t1", "g"):
        with contextlib.suppress(RunError):  # no such plan task here: the tool says so
            why(a, task)
    diff(a, b)
    json.dumps(chrome(a), allow_nan=False)  # valid JSON: no Infinity or NaN in it
    json.dumps(otel(a), allow_nan=False)
    html_page(a, "run")
    render(a)


def test_otlp_times_are_clamped_to_what_the_field_holds() -> None:
    """A trace event's time is any float a peer sent: one past the year 2554 (or 1e308) made
    the OTLP export raise (found by the property test above); it is shown at the edge."""
    from agentrt.runtime._trace_export import _nanos

    assert _nanos(1.5) == "1500000000"
    assert _nanos(1.7976931348623155e308) == _nanos(float("inf")) == str(2**64 - 1)
    assert _nanos(-4.5e16) == _nanos(float("-inf")) == _nanos(float("nan")) == "0"


def test_chrome_trace_times_stay_finite_so_the_file_is_valid_json() -> None:
    """1e308 s in microseconds is infinity, which json.dumps writes as `Infinity` (not JSON:
    Chrome's and Perfetto's loaders refuse the file)."""
    import sys

    from agentrt.runtime._trace_export import _us

    assert _us(1.5) == 1_500_000.0
    assert _us(1.7976931348623155e308) == sys.float_info.max and _us(-1e308) == -sys.float_info.max
    events = [sent("x", None, 1.7976931348623155e308), sent("y", "x", -1.7976931348623155e308)]
    json.dumps(chrome(events), allow_nan=False)


def test_the_timeline_takes_times_a_float_s_range_apart() -> None:
    """Two plan tasks sent at -1.8e308 and 1.8e308 (any float a peer sends): the chart's span
    overflowed to inf and the last column was inf / inf, so `trace timeline` raised ValueError
    (the OTLP export's clamp, 253ec16, did not cover it)."""
    m = 1.7976931348623157e308
    a = [msgspec.structs.replace(sent("s1", None, -m), plan_task="t1"), msgspec.structs.replace(sent("s2", None, m), plan_task="t2")]
    out = io.StringIO()
    Console(file=out, width=100).print(timeline(a, width=40))
    assert "* t1" in out.getvalue()
