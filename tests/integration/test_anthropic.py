"""Every role on Claude through the real `anthropic` client, against the local Messages API
server over real HTTP, in real processes: the research demo, per-role models, usage and
cost, 429 / 529 / 400 handling, the LLM planner's re-ask, and no key in any trace."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentrt.runtime import Runtime, load_spec, read_trace, run, spec_from_dict
from agentrt.runtime._anthropic import price_of
from agentrt.runtime._spec import with_model_kind
from tests.messages_api import Fault, MessagesAPI, default_responder

from .conftest import ROOT, make_spec

pytestmark = pytest.mark.integration

KEY = "sk-ant-api03-PLANTED-SECRET-7f3a9c"


def planner_aware(bad_plans: list[str]) -> Any:
    """A responder that writes plans for the planner's prompt (the first ones from
    `bad_plans`), and answers everything else as the default responder does."""

    def respond(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if str(body.get("system", "")).startswith("You are the planner"):
            if bad_plans:
                return [{"type": "text", "text": bad_plans.pop(0)}], "end_turn"
            tools = re.findall(r"^- (\w+)\(", body["messages"][0]["content"], re.M)
            assert {"lookup", "synthesize"} <= set(tools), tools
            text = (
                "Thought: two sources in parallel, then a synthesis.\n"
                '1. lookup(source="arxiv", query="actor runtimes")\n'
                '2. lookup(source="engineering-blogs", query="actor runtimes")\n'
                '3. synthesize(goal="compare actor runtimes", findings=[$1, $2])\n'
                "4. join()"
            )
            return [{"type": "text", "text": text}], "end_turn"
        return default_responder(body)

    return respond


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesAPI]:
    with MessagesAPI(api_key=KEY, rpm=10_000) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        yield server


def research_on_claude() -> Any:
    """The research demo on Claude; the judge on a stronger model, the workers on a cheaper."""
    data = msgspec.to_builtins(with_model_kind(load_spec(ROOT / "demos" / "research"), "anthropic"))
    for node in data["nodes"]:
        for actor in node["actors"]:
            if actor["name"] == "judge":
                actor["model"] = {"kind": "anthropic", "name": "claude-opus-4-6"}
            if actor["name"].startswith("worker"):
                actor["model"] = {"kind": "anthropic", "name": "claude-haiku-4-5"}
    return spec_from_dict(data, "research on claude", base_dir=str(ROOT / "demos" / "research"))


def test_the_research_demo_runs_on_claude_with_usage_cost_and_no_key_in_the_trace(
    api: MessagesAPI, tmp_path: Path
) -> None:
    api.responder = planner_aware([])
    summary = run(research_on_claude(), run_id="claude", runs_dir=tmp_path)
    assert summary.state == "completed", summary.error
    out = summary.output
    # The model planned: 2 lookups and a synthesis, run as a DAG.
    assert [t["id"] for t in out["plan"]["tasks"]] == ["t1", "t2", "t3"]
    assert [t["state"] for t in out["tasks"]] == ["completed"] * 3
    assert out["verdict"]["decision"] == "accept" and out["verdict"]["score"] == pytest.approx(0.85)
    assert len(out["critiques"]) == 3
    ok = [e for e in api.log if e.status == 200]
    models = {(e.body.get("tool_choice") or {}).get("name", "text"): e.body["model"] for e in ok}
    assert models["record_verdict"] == "claude-opus-4-6"  # per-role model selection
    worker_models = {e.body["model"] for e in ok if str(e.body["messages"][0]["content"]).startswith("Source:")}
    assert worker_models == {"claude-haiku-4-5"}
    # Usage and cost summed over every call of every process equal what the server billed.
    assert summary.input_tokens == sum(e.usage["input_tokens"] for e in ok)
    assert summary.output_tokens == sum(e.usage["output_tokens"] for e in ok)
    billed = sum(
        (e.usage["input_tokens"] * price_of(e.body["model"])[0] + e.usage["output_tokens"] * price_of(e.body["model"])[1]) / 1e6
        for e in ok
    )
    assert summary.cost_usd == pytest.approx(billed, rel=1e-6) and summary.cost_usd > 0
    # The key went over HTTP, and nowhere else: not in the trace, the logs or the summary.
    for path in tmp_path.joinpath("claude").rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".log", ".json"):
            assert KEY not in path.read_text(errors="replace"), path


def quota_spec(max_attempts: int = 3, max_in_flight: int = 8) -> Any:
    return make_spec(
        {
            "coord": [
                {
                    "name": "coordinator",
                    "class": "agentrt.actors:Coordinator",
                    "config": {
                        "max_attempts": max_attempts,
                        "max_in_flight": max_in_flight,
                        "backoff_s": 0.3,
                        "jitter": 0.0,
                        "gate": False,
                    },
                }
            ],
            "quota": [{"name": "quota", "class": "agentrt.actors:Quota", "config": {"rpm": 6000}}],
            "w1": [{"name": "w1", "class": "agentrt.actors:Worker", "model": {"kind": "anthropic", "quota": "quota"}}],
            "w2": [{"name": "w2", "class": "agentrt.actors:Worker", "model": {"kind": "anthropic", "quota": "quota"}}],
        },
        run={"entry": "coordinator", "skill": "run"},
    )


def lookups(n: int) -> dict[str, Any]:
    tasks = [{"id": f"l{i}", "skill": "lookup", "args": {"source": f"s{i}", "query": "q"}} for i in range(n)]
    return {"goal": "g", "plan": {"goal": "g", "tasks": tasks}}


def test_a_429_pauses_the_shared_quota_for_its_retry_after(api: MessagesAPI, tmp_path: Path) -> None:
    # Two calls at a time from two processes: the first gets the 429; the one beside it is
    # already on the wire and is answered after 1 s, so the next task is dispatched then,
    # inside the 1.5 s pause: it, and every call after it, must wait the pause out.
    api.faults.extend([Fault(status=429, retry_after_s=1.5), Fault(delay_s=1.0)])
    with Runtime(quota_spec(max_in_flight=2), runs_dir=tmp_path) as rt:
        result = rt.ask("coordinator", "run", lookups(6), timeout_s=60)
    assert result.ok and result.data["state"] == "completed", result.error
    statuses = [e.status for e in api.log]
    assert statuses[0] == 429 and statuses.count(429) == 1 and len(statuses) == 7
    # No process sent anything until the Retry-After had passed (server-side arrival times).
    t429 = api.log[0].at
    late = [e.at - t429 for e in api.log[1:]]
    early = [d for d in late if d < 1.5]
    assert len(early) <= 1, f"requests inside the pause: {early}"
    events = list(read_trace(rt.trace_path))
    pauses = [e for e in events if e["event"] == "task.state" and e.get("skill") == "pause" and e["state"] == "completed"]
    assert len(pauses) == 1


def test_529_is_backed_off_and_retried_by_the_runtime(api: MessagesAPI, tmp_path: Path) -> None:
    api.faults.extend([Fault(status=529, message="Overloaded"), Fault(status=529, message="Overloaded")])
    with Runtime(quota_spec(), runs_dir=tmp_path) as rt:
        result = rt.ask("coordinator", "run", lookups(1), timeout_s=60)
    assert result.ok and result.data["state"] == "completed", result.error
    assert [e.status for e in api.log] == [529, 529, 200]  # three attempts, no SDK retries
    assert result.data["tasks"][0]["attempt"] == 3
    gaps = [b.at - a.at for a, b in zip(api.log, api.log[1:], strict=False)]
    assert gaps[1] > gaps[0] * 0.9 or gaps[1] >= 0.3  # exponential backoff: not shrinking


def test_a_400_fails_the_task_at_once_with_the_apis_message(api: MessagesAPI, tmp_path: Path) -> None:
    api.faults.append(Fault(status=400, message="messages.0.content: text too long"))
    with Runtime(quota_spec(), runs_dir=tmp_path) as rt:
        result = rt.ask("coordinator", "run", lookups(1), timeout_s=60)
    assert result.ok, result.error
    out = result.data
    assert out["state"] == "failed" and len(api.log) == 1
    assert "messages.0.content: text too long" in out["tasks"][0]["error"]


def test_a_malformed_plan_is_re_asked_once_with_the_error(api: MessagesAPI, tmp_path: Path) -> None:
    api.responder = planner_aware(['1. search(q="x")\n2. join()'])
    summary = run(research_on_claude(), run_id="reask", runs_dir=tmp_path)
    assert summary.state == "completed", summary.error
    plans = [e for e in api.log if str(e.body.get("system", "")).startswith("You are the planner")]
    assert len(plans) == 2
    reask = plans[1].body["messages"]
    assert [m["role"] for m in reask] == ["user", "assistant", "user"]
    assert "unknown tool 'search'" in reask[2]["content"]
    rejected = [e for e in read_trace(tmp_path / "reask" / "trace.jsonl") if e["event"] == "plan.rejected"]
    assert len(rejected) == 1 and "unknown tool 'search'" in rejected[0]["error"]


def test_a_plan_malformed_twice_fails_the_run_naming_the_error(api: MessagesAPI, tmp_path: Path) -> None:
    api.responder = planner_aware(['1. search(q="x")\n2. join()', "1. lookup(source=\"a\", query=\"b\")"])
    summary = run(research_on_claude(), run_id="twice", runs_dir=tmp_path)
    assert summary.state == "failed"
    assert "malformed twice" in summary.error and "does not end with join()" in summary.error


def test_the_cli_needs_the_key_from_the_environment(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentrt.runtime._cli", "run", "demos/hello", "--model", "anthropic", "--runs-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if not k.startswith("ANTHROPIC")},
    )
    assert proc.returncode != 0
    assert "needs ANTHROPIC_API_KEY in the environment" in proc.stdout + proc.stderr
