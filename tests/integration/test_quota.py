"""One Quota actor meters the model calls of every worker process."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrt.runtime import Runtime, SpecError, read_trace

from .conftest import make_spec

pytestmark = pytest.mark.integration


def test_workers_in_two_processes_share_one_rate_limit(runs_dir: Path) -> None:
    model = {"kind": "offline", "latency_s": [0.05, 0.1], "quota": "quota"}
    spec = make_spec(
        {
            "limits": [{"name": "quota", "class": "agentrt.actors:Quota", "config": {"rpm": 120, "burst_s": 1}}],
            "w1": [{"name": "worker-1", "class": "agentrt.actors:Worker", "model": model}],
            "w2": [{"name": "worker-2", "class": "agentrt.actors:Worker", "model": model}],
        },
        run={"entry": "worker-1"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        futures = [
            rt.ask_async(f"worker-{1 + i % 2}", "lookup", {"source": f"src{i}", "query": "q"}) for i in range(10)
        ]
        for f in futures:
            assert rt.wait(f, 60).ok
        trace = rt.trace_path
    events = list(read_trace(trace))
    calls = [e for e in events if e["event"] == "model.call"]
    acquired = [e for e in events if e["event"] == "task.state" and e.get("skill") == "acquire" and e["state"] == "completed"]
    assert len(calls) == len(acquired) == 10
    assert len({e["pid"] for e in calls}) == 2
    # 120/min, one second's burst: capacity 2, refilled at 2/s, across both processes. Checked on
    # the quota's own decisions (when each call may start), which no scheduling delay can move...
    grants = sorted(e["at"] for e in events if e["event"] == "quota.granted")
    assert len(grants) == 10
    for i, g in enumerate(grants):
        for j in range(i, len(grants)):
            assert j - i + 1 <= 2 + 2 * (grants[j] - g) + 1e-3, f"grants {i}..{j} too close together"
    # ...and every call waited for its grant: the k-th call to start did not start before the
    # k-th grant (a call starts after its own grant; delays only make it later).
    starts = sorted(e["ts"] - e["duration_s"] for e in calls)
    assert all(s >= g - 0.01 for s, g in zip(starts, grants, strict=True))
    assert any(e["event"] == "model.quota-wait" for e in events)


def test_a_quota_that_is_not_an_actor_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"nodes\[0\]\.actors\[0\]\.model\.quota 'nope' is not an actor"):
        make_spec({"n": [{"name": "w", "class": "agentrt.actors:Worker", "model": {"quota": "nope"}}]}, run={"entry": "w"})


def test_a_retry_after_of_a_day_pauses_the_quota_for_its_cap_and_says_so(runs_dir: Path) -> None:
    spec = make_spec(
        {"limits": [{"name": "quota", "class": "agentrt.actors:Quota", "config": {"rpm": 600, "retry_after_max_s": 2}}]},
        run={"entry": "quota"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        assert rt.ask("quota", "pause", {"retryAfterS": 86400}).unwrap() == {"pausedS": 2.0}
        wait = rt.ask("quota", "acquire", {"tokens": 1}).unwrap()["waitS"]
        trace = rt.trace_path
    assert 0 < wait <= 2.0  # not a day
    (capped,) = [e for e in read_trace(trace) if e["event"] == "quota.retry-after-capped"]
    assert capped["retry_after_s"] == 86400 and capped["paused_s"] == 2.0
