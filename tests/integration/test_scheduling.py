"""The coordinator's policies with real processes: retries, timeouts that cancel at the
worker, idempotent redelivery, fail-fast and quorum groups."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrt.runtime import Runtime, read_trace

from .conftest import make_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    spec = make_spec(
        {
            "coord": [
                {
                    "name": "coordinator",
                    "class": "agentrt.actors:Coordinator",
                    "config": {"backoff_s": 0.05, "max_in_flight": 8},
                }
            ],
            "w1": [{"name": "chaos-1", "class": "custom_actors:Chaos"}],
            "w2": [{"name": "chaos-2", "class": "custom_actors:Chaos"}],
        },
        run={"entry": "coordinator", "skill": "run"},
    )
    with Runtime(spec, runs_dir=tmp_path_factory.mktemp("runs")) as runtime:
        yield runtime


def run_plan(rt: Runtime, tasks: list[dict[str, Any]], **plan: Any) -> dict[str, Any]:
    result = rt.ask("coordinator", "run", {"goal": "test", "plan": {"goal": "test", "tasks": tasks, **plan}}, timeout_s=60)
    assert result.ok, result.error
    return result.data


def slow(task_id: str, d: str, s: float, **extra: Any) -> dict[str, Any]:
    """A plan task that works `s` seconds, leaving `cancelled-<task_id>` in `d` if cancelled."""
    return {"id": task_id, "skill": "slow", "args": {"dir": d, "name": task_id, "s": s}, **extra}


def wait_for_file(path: Path, timeout_s: float = 15) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path.name} never appeared")


def test_a_worker_error_is_retried_until_it_succeeds(rt: Runtime, tmp_path: Path) -> None:
    out = run_plan(
        rt,
        [{"id": "a", "skill": "flaky", "args": {"dir": str(tmp_path), "fail_first": 2}, "maxAttempts": 3}],
    )
    assert out["state"] == "completed"
    assert out["results"]["a"] == {"calls": 3}
    (task,) = out["tasks"]
    assert task["attempt"] == 3 and task["state"] == "completed"
    retried = [
        e
        for e in read_trace(rt.trace_path)
        if e["event"] == "schedule.decision" and e.get("decision") == "retried" and e.get("plan_task") == "a"
    ]
    assert len(retried) >= 2


def test_retries_exhausted_fails_the_run_with_the_reason(rt: Runtime, tmp_path: Path) -> None:
    out = run_plan(
        rt,
        [{"id": "a", "skill": "flaky", "args": {"dir": str(tmp_path), "fail_first": 5}, "maxAttempts": 2}],
    )
    assert out["state"] == "failed"
    assert out["schedule"]["failed"] == {"a": "RuntimeError: flaky failure 2"}
    assert "final task 'a' did not complete" in out["reason"]


def test_a_timeout_cancels_the_task_at_the_worker(rt: Runtime, tmp_path: Path) -> None:
    out = run_plan(
        rt,
        [{"id": "a", "skill": "slow", "args": {"dir": str(tmp_path), "name": "t", "s": 60}, "timeoutS": 0.5}],
    )
    assert out["state"] == "failed"
    assert out["schedule"]["failed"] == {"a": "timed out after 0.5s"}
    assert wait_for_file(tmp_path / "cancelled-t") == "1"  # the worker saw attempt 1 cancelled


def test_duplicate_delivery_of_a_stateful_task_does_not_repeat_its_side_effect(rt: Runtime, tmp_path: Path) -> None:
    args = {"dir": str(tmp_path), "line": "credit 100", "s": 0.5}
    # Two deliveries at once: the second joins the first.
    first = rt.ask_async("chaos-1", "append", args, idempotency_key="order-17")
    second = rt.ask_async("chaos-1", "append", args, idempotency_key="order-17")
    assert rt.wait(first, 30).data == rt.wait(second, 30).data == {"appended": "credit 100"}
    # A retry after it finished gets the first result back.
    assert rt.ask("chaos-1", "append", args, idempotency_key="order-17").data == {"appended": "credit 100"}
    # A different key is a different side effect.
    rt.ask("chaos-1", "append", dict(args, line="credit 5"), idempotency_key="order-18")
    assert (tmp_path / "ledger").read_text().splitlines() == ["credit 100", "credit 5"]


def test_fail_fast_cancels_the_siblings(rt: Runtime, tmp_path: Path) -> None:
    d = str(tmp_path)
    out = run_plan(
        rt,
        [
            slow("s1", d, 60, group="g"),
            slow("s2", d, 60, group="g"),
            {"id": "bad", "skill": "fail", "args": {"why": "source down"}, "group": "g"},
            slow("after", d, 0, deps=["g"]),
        ],
        groups={"g": {"policy": "fail-fast"}},
    )
    assert out["state"] == "failed"
    assert set(out["schedule"]["cancelled"]) == {"s1", "s2"}
    assert out["schedule"]["skipped"] == {"after": "dependency 'g' did not complete"}
    assert wait_for_file(tmp_path / "cancelled-s1") == wait_for_file(tmp_path / "cancelled-s2") == "1"


def test_quorum_finishes_without_waiting_for_the_laggard(rt: Runtime, tmp_path: Path) -> None:
    d = str(tmp_path)
    out = run_plan(
        rt,
        [
            slow("f1", d, 0.1, group="g"),
            slow("f2", d, 0.2, group="g"),
            slow("lag", d, 60, group="g"),
            {"id": "after", "skill": "slow", "args": {"dir": d, "name": "after", "s": 0, "seen": "${g}"}, "deps": ["g"]},
        ],
        groups={"g": {"policy": "quorum", "quorum": 2}},
    )
    assert out["state"] == "completed"
    assert out["results"]["g"] == {"f1": {"name": "f1"}, "f2": {"name": "f2"}}
    assert out["schedule"]["cancelled"] == {"lag": "group 'g' settled: quorum 2 of 3 reached"}
    assert wait_for_file(tmp_path / "cancelled-lag") == "1"


def test_a_429_pauses_the_quota_then_the_task_is_retried(rt: Runtime, tmp_path: Path) -> None:
    out = run_plan(rt, [{"id": "a", "skill": "limited", "args": {"dir": str(tmp_path)}, "maxAttempts": 2}])
    assert out["state"] == "completed" and out["results"]["a"] == {"ok": True}
    decisions = [
        e["reason"]
        for e in read_trace(rt.trace_path)
        if e["event"] == "schedule.decision" and e.get("decision") == "rate-limited"
    ]
    assert "429: quota paused for 0.3s" in decisions


def test_cancelling_the_run_cancels_everything_in_flight(rt: Runtime, tmp_path: Path) -> None:
    d = str(tmp_path)
    plan = {
        "goal": "test",
        "tasks": [
            slow("x", d, 60),
            slow("y", d, 60),
            slow("z", d, 0, deps=["x", "y"]),
        ],
    }
    future = rt.ask_async("coordinator", "run", {"goal": "test", "plan": plan}, task_id="run-to-cancel")
    wait_for_dispatch = time.monotonic() + 15
    while time.monotonic() < wait_for_dispatch and not any(
        e["event"] == "task.state" and e.get("task_id") == "run-to-cancel/y" for e in read_trace(rt.trace_path)
    ):
        time.sleep(0.05)
    rt.cancel("coordinator", "run-to-cancel", "user pressed stop")
    result = rt.wait(future, 30)
    assert result.state == "canceled"
    assert result.data["schedule"]["cancelled"] == {"x": "user pressed stop", "y": "user pressed stop"}
    assert result.data["schedule"]["skipped"] == {"z": "dependency 'x' did not complete"}
    assert wait_for_file(tmp_path / "cancelled-x") == wait_for_file(tmp_path / "cancelled-y") == "1"
