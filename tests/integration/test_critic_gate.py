"""The critic at fan-in, with real processes: a result reaches its dependents only once the
critic passed it; a failing one goes round the task's critic loop with the issues as
feedback; a loop that hits its cap ends with its best result and the plan goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentrt.runtime import Runtime, read_trace

from .conftest import make_spec

pytestmark = pytest.mark.integration

PLAN = {
    "goal": "publish",
    "tasks": [
        {"id": "draft", "skill": "draft", "args": {"topic": "idempotency"}},
        {"id": "publish", "skill": "use", "args": {"draft": "${draft}"}, "deps": ["draft"]},
    ],
}


def run_gate(tmp_path: Path, drafter: dict[str, Any], loops: dict[str, Any]) -> tuple[dict[str, Any], list]:
    spec = make_spec(
        {
            "coord": [
                {"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": {"loops": loops}}
            ],
            "w": [{"name": "drafter", "class": "custom_actors:Drafter", "config": drafter}],
            "review": [
                {
                    "name": "critic",
                    "class": "agentrt.actors:Critic",
                    "config": {"guardrails": ["custom_actors:no_todo"], "pass_score": 0.7},
                }
            ],
        },
        run={"entry": "coordinator", "skill": "run"},
    )
    with Runtime(spec, runs_dir=tmp_path) as rt:
        result = rt.ask("coordinator", "run", {"goal": "publish", "plan": PLAN}, timeout_s=60)
        trace = rt.trace_path
    assert result.ok, result.error
    return result.data, list(read_trace(trace))


def test_a_failing_result_is_redone_with_the_critics_issues_before_dependents_see_it(tmp_path: Path) -> None:
    out, events = run_gate(tmp_path, {}, {"max_iterations": 3})
    assert out["state"] == "completed"
    published = out["results"]["publish"]["text"]
    assert "round 2" in published and "TODO" not in published, published
    gates = [(e["plan_task"], e["decision"]) for e in events if e["event"] == "critic.gate"]
    assert gates == [("draft", "held"), ("draft", "passed"), ("publish", "passed")]
    held = next(e for e in events if e["event"] == "critic.gate" and e["decision"] == "held")
    assert "remove the TODO markers" in held["issues"]
    # The redo carried the critic's issues as feedback, under a key of its own.
    drafts = [
        e["envelope"] for e in events
        if e["event"] == "envelope.sent" and e["envelope"]["body"].get("call", {}).get("skill") == "draft"
    ]
    assert len(drafts) == 2
    assert "feedback" not in drafts[0]["body"]["message"]["parts"][0]["data"]
    assert "remove the TODO markers" in drafts[1]["body"]["message"]["parts"][0]["data"]["feedback"]
    assert drafts[0]["idempotencyKey"] != drafts[1]["idempotencyKey"]
    dispatch_order = [e["plan_task"] for e in events if e["event"] == "schedule.dispatch"]
    assert dispatch_order == ["draft", "draft", "publish"]


def test_a_capped_critic_loop_ends_with_its_best_result_and_the_plan_goes_on(tmp_path: Path) -> None:
    out, events = run_gate(tmp_path, {"stubborn": True}, {"max_iterations": 2, "escalate_on": []})
    assert out["state"] == "completed"
    ends = [e for e in events if e["event"] == "loop.end"]
    critic_end = next(e for e in ends if e["loop"] == "critic:draft")
    assert critic_end["scope"] == "loop" and "iteration cap reached (2)" in critic_end["reason"]
    # The parent (the plan) went on with the best of the two drafts.
    assert out["results"]["publish"]["text"].startswith("published: a careful draft")
    assert [t["state"] for t in out["tasks"]] == ["completed", "completed"]
    assert not out["escalations"]
