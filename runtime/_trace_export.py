"""A run's trace in the formats other tools open: Chrome trace events (Perfetto,
chrome://tracing), OpenTelemetry (OTLP JSON), and one self-contained HTML page."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import sys
import zlib
from typing import Any

import msgspec

from agentrt.protocols import (
    CONTROL_KINDS,
    CriticGate,
    EnvelopeReceived,
    EnvelopeSent,
    LoopEnd,
    LoopEscalated,
    ModelCall,
    ScheduleDecision,
    ScheduleDispatch,
    event_to_dict,
)

from ._trace_model import Events, Span, critical_path, dispatched_at, plan_deps, plan_spans, spans

_DECISIONS = (ScheduleDecision, ScheduleDispatch, LoopEscalated, LoopEnd, CriticGate)
_DECISION_ARGS = ("plan_task", "decision", "reason", "worker", "attempt", "summary", "state")

# -- Chrome trace event format ---------------------------------------------------------


def _tid(actor: str) -> int:
    return zlib.crc32(actor.encode()) % 100_000 + 1


def _us(t: float) -> float:
    """`t` (unix seconds) in microseconds, finite (JSON has no infinity: 1e308 s, any float a
    peer sends, is shown at the edge of what a float holds)."""
    us = t * 1e6
    return round(us, 3) if math.isfinite(us) else math.copysign(sys.float_info.max, us)


def chrome(events: Events) -> dict[str, Any]:
    """Trace events (JSON object format): one process track per node, one thread per actor,
    a complete ("X") event per skill run, flow arrows ("s"/"f") from each message's sender to
    its receiver, and instant ("i") events for scheduling and loop decisions."""
    out: list[dict[str, Any]] = []
    named: set[tuple[int, int]] = set()

    def track(pid: int, node: str, actor: str) -> int:
        tid = _tid(actor)
        if (pid, 0) not in named:
            named.add((pid, 0))
            out.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"{node} (pid {pid})"}})
        if (pid, tid) not in named:
            named.add((pid, tid))
            out.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": actor}})
        return tid

    for s in spans(events):
        if s.pid is None or s.start is None or s.end is None:
            continue
        tid = track(s.pid, s.node or "?", s.actor)
        out.append(
            {
                "name": s.skill + (f" {s.plan_task}" if s.plan_task else ""),
                "cat": "task",
                "ph": "X",
                "ts": _us(s.start),
                "dur": max(0.0, _us(s.end) - _us(s.start)),
                "pid": s.pid,
                "tid": tid,
                "args": {
                    "state": s.state,
                    "attempt": s.attempt,
                    "sender": s.sender,
                    "taskId": s.task_id,
                    "inputTokens": s.input_tokens,
                    "outputTokens": s.output_tokens,
                    **({"error": s.error} if s.error else {}),
                },
            }
        )
    received = {e.message_id: e for e in events if isinstance(e, EnvelopeReceived)}
    flow = 0
    for e in events:
        if not isinstance(e, EnvelopeSent) or e.kind in CONTROL_KINDS:
            continue
        r = received.get(e.message_id)
        if r is None or not e.pid or not r.pid:
            continue
        flow += 1
        src = track(e.pid, e.node or "?", e.sender)
        dst = track(r.pid, r.node or "?", e.recipient)
        name = f"{e.kind} {e.sender} -> {e.recipient}"
        out.append({"name": name, "cat": "message", "ph": "s", "id": flow, "ts": _us(e.ts), "pid": e.pid, "tid": src})
        out.append(
            {"name": name, "cat": "message", "ph": "f", "bp": "e", "id": flow, "ts": _us(max(r.ts, e.ts)), "pid": r.pid, "tid": dst}
        )
    for d in events:
        if isinstance(d, _DECISIONS) and d.pid:
            tid = track(d.pid, d.node or "?", d.actor or "?")
            data = event_to_dict(d)
            args = {k: data[k] for k in _DECISION_ARGS if k in data}
            out.append({"name": data["event"], "cat": "decision", "ph": "i", "s": "t", "ts": _us(d.ts), "pid": d.pid, "tid": tid, "args": args})
    return {"traceEvents": out, "displayTimeUnit": "ms", "otherData": {"producer": "agentrt"}}


# -- OpenTelemetry (OTLP JSON) ----------------------------------------------------------


def _hex_id(value: str, size: int) -> str:
    """An OTel id of `size` bytes in lower hex, from ours (kept as-is when already that shape)."""
    if len(value) == size * 2 and all(c in "0123456789abcdef" for c in value):
        return value
    return hashlib.blake2b(value.encode(), digest_size=size).hexdigest()


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        v: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    elif isinstance(value, list):
        v = {"arrayValue": {"values": [{"stringValue": str(x)} for x in value]}}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


_MAX_NANOS = 2**64 - 1  # OTLP times are fixed64: unsigned nanoseconds since the epoch


def _nanos(t: float) -> str:
    """`t` (unix seconds) as OTLP's nanoseconds, clamped to what the field holds (a clock or
    a trace gone wrong, a time past the year 2554 or before 1970, is shown at the edge, not
    an export that fails)."""
    n = t * 1e9
    return str(int(min(max(n, 0), _MAX_NANOS)) if math.isfinite(n) else (_MAX_NANOS if n > 0 else 0))


def otel(events: Events) -> dict[str, Any]:
    """OTLP JSON (`ExportTraceServiceRequest`): one resource per node process, a span per
    skill run (parented by the span that asked for it), and a child span per model call with
    the GenAI semantic conventions (`gen_ai.*`)."""
    run_id = next((e.run_id for e in events if e.run_id), "run")
    by_node: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    all_spans = spans(events)
    known = {s.span_id for s in all_spans}
    by_id = {s.span_id: s for s in all_spans}

    def add(node: str | None, pid: int | None, span: dict[str, Any]) -> None:
        by_node.setdefault((node or "?", pid), []).append(span)

    for s in all_spans:
        if s.start is None:
            continue
        end = s.end or s.start
        parent = s.parent_span_id if s.parent_span_id in known else None
        attrs = [
            _attr("agentrt.skill", s.skill),
            _attr("agentrt.actor", s.actor),
            _attr("agentrt.sender", s.sender),
            _attr("agentrt.attempt", s.attempt),
            _attr("agentrt.state", s.state),
        ]
        if s.plan_task:
            attrs.append(_attr("agentrt.plan_task", s.plan_task))
        if s.input_tokens or s.output_tokens:
            attrs += [_attr("gen_ai.usage.input_tokens", s.input_tokens), _attr("gen_ai.usage.output_tokens", s.output_tokens)]
        span: dict[str, Any] = {
            "traceId": _hex_id(s.trace_id, 16),
            "spanId": _hex_id(s.span_id, 8),
            "name": f"{s.skill} {s.actor}",
            "kind": 2,  # SPAN_KIND_SERVER: the actor serving a request
            "startTimeUnixNano": _nanos(s.start),
            "endTimeUnixNano": _nanos(end),
            "attributes": attrs,
            "status": {"code": 2, "message": s.error or s.state} if s.failed else {"code": 1},
        }
        if parent:
            span["parentSpanId"] = _hex_id(parent, 8)
        add(s.node, s.pid, span)
    for i, e in enumerate(events):
        if not isinstance(e, ModelCall) or e.span_id not in by_id:
            continue
        owner = by_id[e.span_id]
        end = e.ts
        start = end - e.duration_s
        model = e.model
        provider = "anthropic" if model.startswith("claude") else "agentrt.offline"
        attrs = [
            _attr("gen_ai.operation.name", "chat"),
            _attr("gen_ai.provider.name", provider),
            _attr("gen_ai.request.model", model),
            _attr("gen_ai.response.model", model),
            _attr("gen_ai.usage.input_tokens", e.input_tokens),
            _attr("gen_ai.usage.output_tokens", e.output_tokens),
            _attr("gen_ai.response.finish_reasons", [e.stop_reason or "end_turn"]),
        ]
        add(
            e.node,
            e.pid,
            {
                "traceId": _hex_id(owner.trace_id, 16),
                "spanId": hashlib.blake2b(f"{e.span_id}/{i}".encode(), digest_size=8).hexdigest(),
                "parentSpanId": _hex_id(owner.span_id, 8),
                "name": f"chat {model}",
                "kind": 3,  # SPAN_KIND_CLIENT
                "startTimeUnixNano": _nanos(start),
                "endTimeUnixNano": _nanos(end),
                "attributes": attrs,
                "status": {"code": 1},
            },
        )
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        _attr("service.name", "agentrt"),
                        _attr("service.instance.id", f"{run_id}/{node}"),
                        _attr("agentrt.run_id", run_id),
                        _attr("agentrt.node", node),
                        _attr("process.pid", pid or 0),
                    ]
                },
                "scopeSpans": [{"scope": {"name": "agentrt", "version": "0.1.0"}, "spans": ss}],
            }
            for (node, pid), ss in sorted(by_node.items(), key=lambda kv: kv[0][0])
        ]
    }


# -- one HTML page -----------------------------------------------------------------------


def _span_json(s: Span) -> dict[str, Any]:
    return {
        "task": s.plan_task,
        "skill": s.skill,
        "actor": s.actor,
        "sender": s.sender,
        "attempt": s.attempt,
        "sent": s.sent,
        "start": s.start,
        "end": s.end,
        "state": s.state,
        "error": s.error,
        "tokens": [s.input_tokens, s.output_tokens],
        "message": msgspec.to_builtins(s.message),
        "reply": msgspec.to_builtins(s.reply),
    }


# The page's one script. It builds every element with DOM calls and puts text in with
# `textContent`, never markup: task ids, actors and results are data from plans, models and
# tools. The Content-Security-Policy allows this script (by its hash) and this style sheet and
# nothing else: no inline handlers, no other script, no fetches.
_SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const SVG = 'http://www.w3.org/2000/svg';
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  children.forEach(c => e.append(c));
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, String(v)));
  return e;
}
const spans = D.spans.filter(s => s.task);
const t0 = Math.min(...spans.map(s => s.sent)), t1 = Math.max(...spans.map(s => s.end || s.start || s.sent));
const W = 900, px = t => ((t - t0) / Math.max(t1 - t0, 1e-6)) * W;
document.getElementById('summary').textContent =
  `${Object.keys(D.deps).length} plan tasks, ${spans.length} runs, ${(t1 - t0).toFixed(2)} s; critical path: ${D.critical.join(' -> ')}`;
const byTask = new Map();
spans.forEach(s => { if (!byTask.has(s.task)) byTask.set(s.task, []); byTask.get(s.task).push(s); });
function show(task) {
  document.getElementById('detail').textContent =
    (byTask.get(task) || []).map(s => `${s.task} attempt ${s.attempt} on ${s.actor}: ${s.state}` + (s.error ? ` (${s.error})` : '') +
      `\\nrequest:\\n${JSON.stringify(s.message, null, 2)}\\nreply:\\n${JSON.stringify(s.reply, null, 2)}`).join('\\n\\n');
}
const tl = document.getElementById('timeline');
tl.style.width = W + 'px';
[...byTask.entries()].sort((a, b) => (a[1].at(-1).actor + a[1][0].sent).localeCompare(b[1].at(-1).actor + b[1][0].sent))
  .forEach(([task, ss]) => {
    const row = el('div', {className: 'row' + (D.critical.includes(task) ? ' crit' : '')});
    row.append(el('div', {className: 'label', textContent: `${task} (${ss.at(-1).actor})`}));
    ss.forEach((s, i) => {
      const start = s.start || s.sent, end = s.end || t1, q = D.queued[`${task}/${s.attempt}`] || s.sent;
      const w = el('div', {className: 'wait'});
      w.style.left = px(q) + 'px'; w.style.width = Math.max(0, px(start) - px(q)) + 'px';
      row.append(w);
      const failed = ['failed', 'rejected', 'canceled'].includes(s.state);
      const b = el('div', {className: 'bar ' + (failed ? 'bad' : i === ss.length - 1 ? 'ok' : 'old'),
                           title: `${task}: ${s.state}, ${(end - start).toFixed(3)} s`, textContent: task});
      b.dataset.task = task;
      b.style.left = px(start) + 'px'; b.style.width = Math.max(2, px(end) - px(start)) + 'px';
      b.addEventListener('click', () => show(task));
      row.append(b);
    });
    tl.append(row);
  });
// The plan as layers: each task one column right of its deepest dependency.
const deps = new Map(Object.entries(D.deps)), depth = new Map();
function level(t, seen) {
  if (depth.has(t)) return depth.get(t);
  if (seen.has(t)) return 0;  // a cycle cannot run, but must not hang the page
  seen.add(t);
  const d = 1 + Math.max(-1, ...(deps.get(t) || []).map(x => level(x, seen)));
  depth.set(t, d);
  return d;
}
deps.forEach((_, t) => level(t, new Set()));
const cols = new Map();
deps.forEach((_, t) => { const d = depth.get(t); if (!cols.has(d)) cols.set(d, []); cols.get(d).push(t); });
const pos = new Map();
cols.forEach((ts, d) => ts.forEach((t, i) => pos.set(t, [40 + d * 150, 30 + i * 36])));
const H = 60 + 36 * Math.max(0, ...[...cols.values()].map(c => c.length)), SW = 80 + 150 * cols.size;
const svg = svgEl('svg', {width: SW, height: H});
deps.forEach((ds, t) => ds.forEach(d => {
  if (pos.has(d) && pos.has(t)) svg.append(svgEl('line', {
    x1: pos.get(d)[0], y1: pos.get(d)[1], x2: pos.get(t)[0], y2: pos.get(t)[1], stroke: '#999'}));
}));
pos.forEach(([x, y], t) => {
  const g = svgEl('g', {'class': 'node'});
  g.dataset.node = t;
  g.append(svgEl('circle', {cx: x, cy: y, r: 7, fill: D.critical.includes(t) ? '#8e24aa' : '#1565c0'}));
  const label = svgEl('text', {x: x + 10, y: y + 4});
  label.textContent = t.length > 20 ? t.slice(0, 19) + '\\u2026' : t;  // the full id on hover
  const full = svgEl('title');
  full.textContent = t;
  g.append(full, label);
  g.addEventListener('click', () => show(t));
  svg.append(g);
});
document.getElementById('dag').append(svg);
"""

_STYLE = """
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px} h2{font-size:15px;margin-top:20px}
#timeline{position:relative;border-left:1px solid #999}
.row{position:relative;height:22px;border-bottom:1px solid #eee}
.label{position:absolute;left:-230px;width:220px;text-align:right;white-space:nowrap;overflow:hidden}
.bar{position:absolute;top:3px;height:16px;border-radius:3px;cursor:pointer;font-size:11px;color:#fff;padding-left:3px;overflow:hidden;white-space:nowrap}
.wait{position:absolute;top:9px;height:4px;background:#ccc}
.ok{background:#2e7d32}.bad{background:#c62828}.old{background:#f9a825}
.crit .label{font-weight:bold;color:#8e24aa}
#wrap{margin-left:240px}
#dag svg{border:1px solid #eee}
.node{cursor:pointer} .node text{font-size:11px}
#detail{white-space:pre-wrap;background:#f6f6f6;padding:8px;border:1px solid #ddd;max-height:420px;overflow:auto}
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_CSP = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
    "base-uri 'none'; form-action 'none'"
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="__CSP__">
<title>agentrt run __TITLE__</title>
<style>__STYLE__</style></head><body>
<h1>agentrt run __TITLE__</h1>
<div id="summary"></div>
<h2>Timeline (per worker; grey: waiting, green: ran, orange: earlier attempt or round, red: failed; purple: critical path)</h2>
<div id="wrap"><div id="timeline"></div></div>
<h2>Plan (click a task)</h2>
<div id="dag"></div>
<h2>Messages of the selected task</h2>
<div id="detail">Click a bar or a task.</div>
<script id="data" type="application/json">__DATA__</script>
<script>__SCRIPT__</script></body></html>
"""


def html_page(events: Events, title: str) -> str:
    """One HTML file with everything inline (no network): the timeline, the plan as a graph,
    and the request and reply of any task, on click."""
    queued = {f"{task}/{attempt}": t for (task, attempt), t in dispatched_at(events).items()}
    deps = plan_deps(events) or {t: [] for t in plan_spans(events)}
    data = {
        "spans": [_span_json(s) for ss in plan_spans(events).values() for s in ss],
        "deps": deps,
        "critical": critical_path(events),
        "queued": queued,
    }
    # No `<`, `>` or `&` inside the data block: nothing in it can end the element or open a
    # comment (JSON's \\u escapes read back the same).
    blob = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    parts = {"CSP": _CSP, "STYLE": _STYLE, "SCRIPT": _SCRIPT, "TITLE": html.escape(title), "DATA": blob}
    return re.sub(r"__(CSP|STYLE|SCRIPT|TITLE|DATA)__", lambda m: parts[m.group(1)], _PAGE)
