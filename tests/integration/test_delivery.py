"""Delivery with real processes: limits checked at the sender, failed starts reported, dead
actors answered, idempotency keys scoped, per-message authorization, dead letters (rate-limited)
and the `agentrt trace dead-letters` view."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from agentrt.protocols import AgentSkill, RunError, SkillContract, agent_card
from agentrt.runtime import Runtime, read_trace

from .conftest import as_member, make_spec
from .test_bad_input import raw_request

pytestmark = pytest.mark.integration


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def dead_letters(trace: Path, node: str | None = None) -> list[dict]:
    return [
        e
        for e in read_trace(trace)
        if e["event"] == "message.dead-letter" and (node is None or e["node"] == node)
    ]


def test_a_5_mb_reply_fails_at_once_at_the_sender_and_is_never_resent(runs_dir: Path) -> None:
    spec = make_spec(
        {"n1": [{"name": "big", "class": "custom_actors:Big"}]},
        run={"entry": "big", "skill": "big"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        # A generous timeout: the answer must be the over-limit failure, not a timeout.
        result = rt.ask("big", "big", {"mb": 5}, timeout_s=120)
        assert result.state == "failed"
        assert "max_frame_bytes" in result.error and "big" in result.error
        assert "timed out" not in result.error
        assert result.maybe_ran and result.metadata["retryable"] is False  # it ran: only its answer was too big (a retry gets the same)
        assert rt.ask("big", "big", {"mb": 0.001}).ok  # the actor is fine
        stats = rt.node_stats("n1")
        trace = rt.trace_path
    assert stats["dead.over-limit"] == 1
    assert stats.get("resent", 0) == 0
    events = read_trace(trace)
    assert not [e for e in events if e["event"] == "envelope.resent"]
    [letter] = dead_letters(trace, "node:n1")
    assert (
        letter["reason"] == "over-limit"
        and letter["kind"] == "task"
        and letter["recipient"] == "supervisor"
    )


def test_a_reply_over_the_parts_bound_fails_at_once_at_the_sender(runs_dir: Path) -> None:
    """Not only size and depth: any bound of the schema a receiver checks (here, at most 256
    parts) is checked by the sender, so the reply is never sent to be refused and resent."""
    spec = make_spec(
        {"n1": [{"name": "big", "class": "custom_actors:Big"}]},
        run={"entry": "big", "skill": "parts"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        result = rt.ask("big", "parts", {"n": 300}, timeout_s=30)
        assert result.state == "failed" and "timed out" not in result.error
        assert "parts" in result.error and "length <= 256" in result.error
        assert result.maybe_ran and result.metadata["retryable"] is False
        assert rt.ask("big", "parts", {"n": 3}).ok
        stats = rt.node_stats("n1")
    assert stats["dead.over-limit"] == 1 and stats.get("resent", 0) == 0


def test_a_request_over_the_limit_fails_at_the_sender(runs_dir: Path, greeter_spec) -> None:
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        with pytest.raises(Exception, match="max_frame_bytes"):
            rt.ask("greeter", "count", {"blob": "y" * 100_000})
        assert rt.ask("greeter", "greet", {"name": "after"}).ok


def test_an_actor_whose_on_start_raises_fails_the_run_naming_it(runs_dir: Path) -> None:
    spec = make_spec(
        {
            "ok": [{"name": "greeter", "class": "custom_actors:Greeter"}],
            "bad": [{"name": "picky", "class": "custom_actors:BadConfig", "config": {"mode": "z"}}],
        },
        run={"entry": "greeter", "skill": "greet"},
    )
    rt = Runtime(spec, runs_dir=runs_dir)
    with pytest.raises(RunError) as info, rt:
        pass
    msg = str(info.value)
    assert (
        "node 'bad' could not start: actor 'picky' (custom_actors:BadConfig) failed to start" in msg
    )
    assert "on_start raised ValueError: bad-config.mode must be 'a' or 'b', got 'z'" in msg
    assert str(rt.run_dir / "logs" / "bad.log") in msg
    spawned = [
        e
        for e in read_trace(rt.trace_path)
        if e["event"] == "node.spawned" and e["node_name"] == "bad"
    ]
    assert len(spawned) == 1, "reported, not restarted in a loop"


def test_requests_to_an_actor_that_died_are_answered_failed(runs_dir: Path) -> None:
    spec = make_spec(
        {
            "ok": [{"name": "greeter", "class": "custom_actors:Greeter"}],
            "m": [{"name": "mortal", "class": "custom_actors:Mortal"}],
        },
        run={"entry": "greeter", "skill": "greet"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        first = rt.ask("mortal", "die", {}, timeout_s=60)
        assert first.state == "failed" and "died running this" in first.error
        assert first.maybe_ran, "cut off part way: what it did before is done (stateful: in doubt)"
        later = rt.ask("mortal", "live", {}, timeout_s=60)
        assert later.state == "failed" and "not running" in later.error
        assert not later.maybe_ran, "never started: safe to send again"
        stats = rt.node_stats("m")
        trace = rt.trace_path
    assert stats["dead.actor-dead"] >= 1
    assert any(d["reason"] == "actor-dead" for d in dead_letters(trace, "node:m"))


def test_a_request_running_when_its_actor_dies_is_answered_failed_saying_it_may_have_run(runs_dir: Path, tmp_path: Path) -> None:
    """A read-only call runs on the actor's pool while the actor's own thread dies. The node's
    reaper answers it failed, and `maybe_ran`: it was cut off part way, whatever it did is
    done (an asker of stateful work holds it in doubt rather than run it again)."""
    spec = make_spec({"m": [{"name": "mortal", "class": "custom_actors:Mortal"}]}, run={"entry": "mortal", "skill": "live"})
    with Runtime(spec, runs_dir=runs_dir) as rt:
        lingering = rt.ask_async("mortal", "linger", {"dir": str(tmp_path)}, timeout_s=60)
        deadline = time.monotonic() + 30
        while not (tmp_path / "lingering").exists():  # it runs on the pool now
            assert time.monotonic() < deadline, "linger never started"
            time.sleep(0.02)
        died = rt.ask("mortal", "die", {}, timeout_s=60)
        result = lingering.result(60)
    assert died.maybe_ran and "died running this" in died.error
    assert result.state == "failed" and "died before answering" in result.error
    assert result.maybe_ran


def test_an_idempotency_key_reused_with_another_payload_is_refused(
    runs_dir: Path, greeter_spec
) -> None:
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        alice = rt.ask("greeter", "greet", {"name": "alice"}, idempotency_key="order-42")
        assert alice.data == {"greeting": "hello alice"}
        again = rt.ask("greeter", "greet", {"name": "alice"}, idempotency_key="order-42")
        assert again.data == {"greeting": "hello alice"}  # the same request: the first result
        mallory = rt.ask("greeter", "greet", {"name": "mallory"}, idempotency_key="order-42")
        assert mallory.state == "rejected"
        assert "idempotency key 'order-42' was already used" in mallory.error
        assert "another payload" in mallory.error and "new key" in mallory.error
        assert rt.ask("greeter", "greet", {"name": "mallory"}, idempotency_key="order-43").data == {
            "greeting": "hello mallory"
        }


def test_a_keyed_request_whose_data_has_non_string_keys_is_answered(runs_dir: Path, greeter_spec) -> None:
    """msgpack carries dicts keyed by numbers; hashing such a payload for its idempotency key
    raised TypeError on the actor's thread, and the request was never answered."""
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        data = {"name": "ada", "tags": {1: "one", "b": "two"}}
        first = rt.ask("greeter", "count", data, idempotency_key="k-1", timeout_s=20)
        assert first.ok and first.data == {"count": 1}, first.error
        same = {"tags": {"b": "two", 1: "one"}, "name": "ada"}  # the same payload, reordered
        assert rt.ask("greeter", "count", same, idempotency_key="k-1").data == {"count": 1}


def test_allow_rules_refuse_a_request_naming_the_rule(runs_dir: Path) -> None:
    spec = make_spec(
        {
            "n1": [{"name": "greeter", "class": "custom_actors:Greeter"}],
            "n2": [
                {"name": "friend", "class": "custom_actors:Asker"},
                {"name": "stranger", "class": "custom_actors:Asker"},
            ],
        },
        run={"entry": "friend", "skill": "ask_of"},
        allow=[{"from": ["friend"], "to": ["greeter"], "skills": ["greet"]}],
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        ok = rt.ask(
            "friend", "ask_of", {"to": "greeter", "skill": "greet", "data": {"name": "a"}}
        ).unwrap()
        assert ok["state"] == "completed"
        refused = rt.ask(
            "stranger", "ask_of", {"to": "greeter", "skill": "greet", "data": {"name": "a"}}
        ).unwrap()
        assert refused["state"] == "rejected"
        assert "'stranger' may not ask skill 'greet' of 'greeter'" in refused["error"]
        assert "[[allow]]" in refused["error"] and "from ['friend']" in refused["error"]
        other_skill = rt.ask(
            "friend", "ask_of", {"to": "greeter", "skill": "count", "data": {}}
        ).unwrap()
        assert other_skill["state"] == "rejected"
        trace = rt.trace_path
    letters = dead_letters(trace, "node:n1")
    assert sorted((d["reason"], d["sender"]) for d in letters) == [
        ("not-allowed", "friend"),
        ("not-allowed", "stranger"),
    ]


def test_mib_ids_and_garbage_are_dead_lettered_without_growing_memory_or_the_trace(
    runs_dir: Path, greeter_spec
) -> None:
    spec = msgspec.structs.replace(
        greeter_spec,
        limits=msgspec.structs.replace(greeter_spec.limits, max_frame_bytes=4 * 1024 * 1024),
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        node = rt.nodes["n1"]
        assert rt.ask("greeter", "greet", {"name": "warm"}).ok
        before_rss = rss_kib(node.pid)
        before_trace = rt.trace_path.stat().st_size
        # A process holding n2's keys. It stays connected until the node has read everything:
        # what a node has not read yet (its queue at the high-water mark) is lost if the peer
        # hangs up.
        with as_member(rt, "n2", "n1") as sock:
            raw = msgspec.msgpack.decode(raw_request("big-id", {"name": "x"}, rt.nodes["n2"].epoch))
            for i in range(300):
                raw["messageId"] = f"{i:06d}" + "i" * (1024 * 1024)
                sock.send(msgspec.msgpack.encode(raw))
            for i in range(3000):
                sock.send(b"\xc1garbage" + i.to_bytes(4, "big"))
            deadline = time.time() + 120
            while time.time() < deadline:
                stats = rt.node_stats("n1")
                if stats.get("dead.malformed", 0) >= 3000 and stats.get("dead.invalid", 0) >= 300:
                    break
                time.sleep(0.2)
        assert rt.ask("greeter", "greet", {"name": "still here"}).ok
        growth_mib = (rss_kib(node.pid) - before_rss) / 1024
        time.sleep(0.3)
        trace = rt.trace_path
        trace_growth = trace.stat().st_size - before_trace
        run_id = rt.run_id
    assert stats["dead.invalid"] == 300 and stats["dead.malformed"] == 3000, "counts are exact"
    assert growth_mib < 20, f"node grew {growth_mib:.1f} MiB"
    samples = dead_letters(trace, "node:n1")
    # The cap is per reason per second, so how many samples there are depends on how long
    # the node took; what may not vary is the cap itself, and that each traced line is small
    # (no megabyte id copied into it): the trace grows with the samples, not the frames.
    per_second = Counter((s["reason"], int(s["at"])) for s in samples)
    assert samples and max(per_second.values()) <= 10, "at most 10 per reason per second"
    assert len(samples) < 3300
    assert trace_growth < (len(samples) + 50) * 1500, (
        f"the trace grew {trace_growth} bytes for {len(samples)} samples of 3,300 refused frames"
    )
    assert max(s["count"] for s in samples if s["reason"] == "malformed") <= 3000

    out = subprocess.run(
        [sys.executable, "-m", "agentrt.runtime._cli", "trace", "dead-letters", run_id],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "AGENTRT_RUNS_DIR": str(runs_dir)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "malformed" in out.stdout and "3000" in out.stdout
    assert "invalid" in out.stdout and "300" in out.stdout
    assert "node:n1" in out.stdout


def test_an_actor_whose_class_will_not_load_fails_the_run_naming_it(runs_dir: Path) -> None:
    spec = make_spec(
        {"n1": [{"name": "ghost", "class": "custom_actors:Nope"}]},
        run={"entry": "ghost", "skill": "x"},
    )
    rt = Runtime(spec, runs_dir=runs_dir)
    with (
        pytest.raises(
            RunError, match=r"node 'n1' could not start: actor 'ghost' \(custom_actors:Nope\)"
        ) as info,
        rt,
    ):
        pass
    assert "has no class 'Nope'" in str(info.value)


def test_expired_and_unroutable_requests_are_dead_lettered_with_their_reason(
    runs_dir: Path, greeter_spec
) -> None:
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        with as_member(rt, "n2", "n1") as sock:  # a process holding n2's keys
            late = msgspec.msgpack.decode(raw_request("late-1", {"name": "late"}, rt.nodes["n2"].epoch))
            late["deadline"] = time.time() - 5
            sock.send(msgspec.msgpack.encode(late))
            lost = msgspec.msgpack.decode(raw_request("lost-1", {"name": "lost"}, rt.nodes["n2"].epoch))
            lost["recipient"] = "nobody"
            sock.send(msgspec.msgpack.encode(lost))
        deadline = time.time() + 60
        while time.time() < deadline and rt.node_stats("n1").get("dead", 0) < 2:
            time.sleep(0.1)
        stats = rt.node_stats("n1")
        trace = rt.trace_path
    assert stats["dead.expired"] == 1 and stats["dead.unroutable"] == 1
    letters = {d["reason"]: d for d in dead_letters(trace, "node:n1")}
    assert "after its deadline" in letters["expired"]["detail"]
    assert letters["unroutable"]["recipient"] == "nobody"
    events = read_trace(trace)
    assert not [
        e for e in events if e["event"] == "task.state" and e.get("task_id") in ("late-1", "lost-1")
    ]


@contextlib.contextmanager
def asker_and_silent_peer(tmp_path: Path, policy: Any) -> Iterator[tuple[Any, zmq.Socket]]:
    """The messenger shell over real sockets: an asker's started Messenger whose actor
    'silent' lives behind a member's ROUTER that takes frames and never acks."""
    from agentrt.protocols import Limits
    from agentrt.runtime._keys import issue
    from agentrt.runtime._messenger import Messenger

    trust = issue({"asker": ["asker"], "sink": ["silent"]})
    ctx = zmq.Context()
    sink = ctx.socket(zmq.ROUTER)
    sink.curve_server = True  # a member of the run, as far as the keys go
    sink.curve_secretkey = trust["sink"].keys.secret.encode()
    sink_at = f"ipc://{tmp_path}/sink.sock"
    sink.bind(sink_at)
    messenger = Messenger(
        name="asker",
        endpoint=f"ipc://{tmp_path}/asker.sock",
        limits=Limits(),
        trust=trust["asker"],
        policy=policy,
    )
    messenger.route("node:sink", sink_at)
    messenger.routes["silent"] = sink_at
    messenger.cards["silent"] = agent_card("silent", "never acks", [(AgentSkill(id="s", name="s", description="s", tags=["s"]), SkillContract())])
    messenger.start()
    try:
        yield messenger, sink
    finally:
        messenger.stop()
        sink.close(linger=0)
        ctx.term()


def test_an_ask_never_acknowledged_fails_as_undelivered_after_its_resends(tmp_path: Path) -> None:
    from agentrt.runtime._delivery import Policy

    policy = Policy(ack_wait_s=0.02, max_wait_s=0.05, max_sends=4, give_up_s=2.0, window_s=4.0)
    with asker_and_silent_peer(tmp_path, policy) as (messenger, sink):
        result = messenger.ask(
            sender="asker", recipient="silent", skill="s", data={}, timeout_s=60
        ).result(30)
        copies = 0
        while sink.poll(100):
            sink.recv_multipart()
            copies += 1
    assert (
        result.state == "failed"
        and "undelivered" in result.error
        and "never acknowledged" in result.error
    )
    assert result.metadata == {"maybeRan": True}, "sent: it may have arrived, acks lost"
    assert copies == 4, "sent max_sends times, then given up"
    assert messenger.stats["dead.undelivered"] == 1 and messenger.stats["resent"] == 3
    assert messenger.delivery.waiting == 0


def test_an_ask_that_times_out_says_it_may_have_run(tmp_path: Path) -> None:
    """A timed-out ask went out and may be running, or have run (its model call spent): its
    answer says `maybeRan`, as a give-up's does, so the run core counts a model call's allowance
    as spent and holds a stateful task in doubt (before, a plan, critique or verdict that timed
    out was settled as 0 tokens, and a task whose ask timed out before the scheduler's own timer
    was retried as a plain failure)."""
    from agentrt.runtime._delivery import Policy

    with asker_and_silent_peer(tmp_path, Policy()) as (messenger, _):
        result = messenger.ask(sender="asker", recipient="silent", skill="s", data={}, timeout_s=0.2).result(30)
    assert result.state == "failed" and result.error.startswith("timed out after 0.2s")
    assert result.metadata == {"maybeRan": True} and result.maybe_ran


def test_each_ask_times_out_once_with_its_own_timeout_and_answered_asks_leave_no_deadline_behind(tmp_path: Path) -> None:
    """Asks' timeouts are one heap served by one timer: an ask made later with a sooner
    deadline still times out first, each ask times out once with its own words, an ask
    asked again under the same (task id, attempt) is not answered by the first one's
    timeout, and deadlines of asks no longer waited for do not pile up."""
    from agentrt.runtime._delivery import Policy

    with asker_and_silent_peer(tmp_path, Policy()) as (messenger, _):
        ask = messenger.ask
        late = ask(sender="asker", recipient="silent", skill="s", data={}, timeout_s=60)
        first = ask(sender="asker", recipient="silent", skill="s", data={}, task_id="t", timeout_s=0.2)
        messenger.forget("t", 1)  # sent again as the same (task, attempt): the new ask waits
        again = ask(sender="asker", recipient="silent", skill="s", data={}, task_id="t", timeout_s=60)
        soon = ask(sender="asker", recipient="silent", skill="s", data={}, timeout_s=0.3)
        result = soon.result(30)  # the 0.2 s deadline came off the heap before this one
        assert result.state == "failed" and result.error.startswith("timed out after 0.3s")
        assert result.metadata == {"maybeRan": True}
        assert not first.done(), "forgotten: nothing answers it"
        assert not again.done(), "the first ask's timeout is not the second's"
        assert not late.done()
        for i in range(3000):  # asks given up on (sent again, say) leave their deadlines
            ask(sender="asker", recipient="silent", skill="s", data={}, task_id=f"gone{i}", timeout_s=60)
            messenger.forget(f"gone{i}", 1)
        waiting = len(messenger._pending)
        assert waiting == 2 and len(messenger._deadlines) <= 2 * waiting + 1025


def test_an_ask_to_a_peer_holding_max_link_bytes_unacknowledged_fails_at_once(tmp_path: Path) -> None:
    """A peer that never acknowledges holds at most max_link_bytes of the sender's memory: past
    that, an ask fails at once as undelivered, unsent, while the first ones are still resent."""
    from agentrt.runtime._delivery import Policy

    with asker_and_silent_peer(tmp_path, Policy(max_link_bytes=20_000)) as (messenger, _):
        futures = [
            messenger.ask(sender="asker", recipient="silent", skill="s", data={"x": "y" * 3000}, timeout_s=60)
            for _ in range(10)
        ]
        done = [f for f in futures if f.done()]
        waiting = messenger.delivery.waiting
    assert 0 < waiting < 10 and len(done) == 10 - waiting
    for f in done:
        result = f.result()
        assert result.state == "failed" and "max_link_bytes" in result.error
        assert not result.metadata.get("maybeRan") and not result.maybe_ran  # never sent: safe to send again
    assert messenger.stats["dead.undelivered"] == len(done)


def test_only_who_asked_for_a_task_may_cancel_it(runs_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(
        {
            "w": [{"name": "worker", "class": "custom_actors:Chaos"}],
            "o": [{"name": "stranger", "class": "custom_actors:Asker"}],
        },
        run={"entry": "worker", "skill": "slow"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        future = rt.ask_async(
            "worker",
            "slow",
            {"dir": str(tmp_path), "name": "a", "s": 60},
            task_id="slow-1",
            timeout_s=120,
        )
        assert rt.ask("stranger", "cancel_of", {"to": "worker", "task_id": "slow-1"}).ok
        deadline = time.time() + 60
        while time.time() < deadline and rt.node_stats("w").get("dead.not-allowed", 0) < 1:
            time.sleep(0.05)
        assert not future.done(), "the stranger's cancel did not stop the task"
        rt.cancel("worker", "slow-1")  # who asked may
        result = rt.wait(future, 60)
        trace = rt.trace_path
    assert result.state == "canceled"
    [letter] = dead_letters(trace, "node:w")
    assert letter["reason"] == "not-allowed" and letter["sender"] == "stranger"
    assert "'stranger' may not cancel task 'slow-1'" in letter["detail"]


def test_drain_and_drained_are_acknowledged_and_handed_on_once(tmp_path: Path) -> None:
    """Drain and Drained are sent reliably, so the receiver must acknowledge and deduplicate
    them like task requests: else each is handed on once per resend (on_drain ran up to
    max_sends times) and then dead-lettered `undelivered` at its sender. Two messengers over
    real sockets, with resends quick enough that the old code resent within the test."""
    from agentrt.protocols import Drain, Drained, Limits
    from agentrt.runtime._delivery import Policy
    from agentrt.runtime._keys import issue
    from agentrt.runtime._messenger import Messenger

    policy = Policy(ack_wait_s=0.05, max_wait_s=0.5, max_sends=6, give_up_s=3.0, window_s=4.0)
    a_at, b_at = f"ipc://{tmp_path}/a.sock", f"ipc://{tmp_path}/b.sock"
    trust = issue({"b": ["entry"]})  # `a` is the supervisor: drains come only from it
    a = Messenger(name="supervisor", endpoint=a_at, limits=Limits(), trust=trust["supervisor"], policy=policy)
    b = Messenger(name="node:b", endpoint=b_at, limits=Limits(), trust=trust["b"], policy=policy)
    a.route("node:b", b_at)
    a.routes["entry"] = b_at
    b.route("supervisor", a_at)
    drains: list = []
    drained: list = []
    b.local["entry"] = drains.append
    a.on_control = drained.append  # as the supervisor takes a Drained
    a.start()
    b.start()
    try:
        a.send(a.envelope(sender="supervisor", recipient="entry", body=Drain(reason="stop")))
        deadline = time.time() + 30
        while time.time() < deadline and (not drains or a.delivery.waiting):
            time.sleep(0.01)
        b.send(b.envelope(sender="entry", recipient="supervisor", body=Drained(actor="entry")))
        while time.time() < deadline and b.delivery.waiting:
            time.sleep(0.01)
        time.sleep(0.3)  # longer than every resend of the policy: a copy would be here by now
    finally:
        a.stop()
        b.stop()
    assert len(drains) == 1, "the Drain was handed on once, not once per resend"
    assert len(drained) == 1, "and so was the Drained"
    assert a.delivery.waiting == 0 and b.delivery.waiting == 0, "both were acknowledged"
    for m in (a, b):
        assert m.stats.get("resent", 0) == 0 and m.stats.get("dead.undelivered", 0) == 0


def test_another_askers_task_with_the_same_id_takes_nothing_from_the_first(
    runs_dir: Path, tmp_path: Path
) -> None:
    """Task ids are chosen by whoever asks, so two askers' tasks may share one: each stays its
    own. Before, the actor kept its running tasks by task id alone: the stranger's request
    replaced the first in that table and, when it finished, removed it, so the first asker's
    cancel found nothing (and a death of the actor would not have answered it)."""
    spec = make_spec(
        {
            "w": [{"name": "worker", "class": "custom_actors:Chaos"}],
            "o": [{"name": "stranger", "class": "custom_actors:Asker"}],
        },
        run={"entry": "worker", "skill": "slow"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        future = rt.ask_async(
            "worker", "slow", {"dir": str(tmp_path), "name": "a", "s": 600}, task_id="slow-1", timeout_s=120
        )
        other = {"dir": str(tmp_path), "name": "b", "s": 0.2}
        theirs = rt.ask("stranger", "ask_of", {"to": "worker", "skill": "slow", "data": other, "task_id": "slow-1"})
        assert theirs.ok and theirs.data["state"] == "completed"
        assert not future.done()
        rt.cancel("worker", "slow-1")
        result = rt.wait(future, 60)
    assert result.state == "canceled"
    assert (tmp_path / "cancelled-a").exists() and not (tmp_path / "cancelled-b").exists()


def test_only_the_actor_asked_to_drain_answers_the_drain(runs_dir: Path) -> None:
    """The supervisor took a Drained by the actor its body names: any actor of the run could
    end the entry's drain early (the run then stopped with work in flight) by sending one
    naming the entry. It is now taken by its sender, and another's is a dead letter."""
    spec = make_spec(
        {
            "a": [{"name": "holder", "class": "custom_actors:Holder"}],
            "b": [{"name": "meddler", "class": "custom_actors:Meddler"}],
        },
        run={"entry": "holder", "skill": "hold"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        drained = rt.drain("holder", timeout_s=3)
        trace = rt.trace_path
    assert drained is False, "the meddler's Drained ended the holder's drain"
    [letter] = dead_letters(trace, "supervisor")
    assert letter["reason"] == "not-allowed" and letter["sender"] == "meddler"


def test_control_operations_on_a_node_come_only_from_the_supervisor(runs_dir: Path) -> None:
    """An actor can address any body to any address of the directory, a node's own included:
    a Stop sent by an actor stopped that node, and a NodeDown told an actor a live node had
    died (a coordinator re-dispatches its work). Both are now not-allowed dead letters."""
    spec = make_spec(
        {
            "a": [{"name": "holder", "class": "custom_actors:Holder"}],
            "b": [{"name": "meddler", "class": "custom_actors:Meddler"}],
        },
        run={"entry": "holder", "skill": "hold"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        assert rt.ask("meddler", "control", {"to": "node:a", "kind": "stop"}).ok
        assert rt.ask("meddler", "control", {"to": "holder", "kind": "node-down"}).ok
        deadline = time.time() + 30
        while time.time() < deadline and rt.node_stats("a").get("dead.not-allowed", 0) < 2:
            time.sleep(0.05)
        assert rt.ask("holder", "hold", {}).ok, "node a still runs"
        trace = rt.trace_path
    letters = dead_letters(trace, "node:a")
    assert sorted((d["reason"], d["kind"], d["sender"]) for d in letters) == [
        ("not-allowed", "node-down", "meddler"),
        ("not-allowed", "stop", "meddler"),
    ]


def test_a_resend_that_reaches_a_later_incarnation_of_its_recipient_is_refused_there(tmp_path: Path) -> None:
    """A request whose acks were lost (a partition) is resent as the same frame; if its
    recipient's node is meanwhile replaced (declared down, restarted by its host agent), the
    resend reaches the new incarnation, which knows nothing of the first (its idempotency keys
    died with it) and would run it again, behind the asker's back: the asker holds that attempt
    in doubt. The envelope names the incarnation it was for (`to_epoch`), and the new one
    refuses it as stale, unacknowledged; what is asked of it afterwards it takes. (Seen in
    test_multihost's partition test: an effect ran on both incarnations of 'w1'.)"""
    from agentrt.protocols import Limits
    from agentrt.runtime._delivery import Policy
    from agentrt.runtime._keys import issue
    from agentrt.runtime._messenger import Messenger

    policy = Policy(ack_wait_s=0.02, max_wait_s=0.05, max_sends=40, give_up_s=3.0, window_s=4.0)
    trust = issue({"a": ["asker"], "b": ["w"]})
    card = agent_card("w", "a worker", [(AgentSkill(id="s", name="s", description="s", tags=["s"]), SkillContract())])
    ctx = zmq.Context()
    first = ctx.socket(zmq.ROUTER)  # incarnation 1 of node b: takes the frame, its ack is lost
    first.curve_server = True
    first.curve_secretkey = trust["b"].keys.secret.encode()
    first_at, second_at = f"ipc://{tmp_path}/b1.sock", f"ipc://{tmp_path}/b2.sock"
    first.bind(first_at)
    a = Messenger(name="node:a", endpoint=f"ipc://{tmp_path}/a.sock", limits=Limits(), trust=trust["a"], policy=policy)
    second = Messenger(name="node:b", endpoint=second_at, limits=Limits(), trust=trust["b"], policy=policy)
    second.epoch = 2  # incarnation 2 of node b, at its own endpoint, as a restarted node gets
    second.set_directory({"node:a": a.endpoint, "asker": a.endpoint}, [], {"a": 7})
    ran: list = []
    second.local["w"] = ran.append
    a.epoch = 7
    a.set_directory({"node:b": first_at, "w": first_at}, [card], {"b": 1})
    a.start()
    second.start()
    try:
        lost = a.ask(sender="asker", recipient="w", skill="s", data={"n": 1}, timeout_s=60)
        assert first.poll(10_000), "incarnation 1 got the request"
        # Node b is declared down and replaced: the directory moves 'w' to incarnation 2.
        a.set_directory({"node:b": second_at, "w": second_at}, [card], {"b": 2})
        deadline = time.time() + 30
        while time.time() < deadline and second.stats.get("dead.stale", 0) < 3:
            time.sleep(0.01)
        refused = second.stats.get("dead.stale", 0)
        assert not ran, "a request meant for incarnation 1 ran on incarnation 2"
        assert refused >= 3 and a.stats["resent"] >= 3, "the resends reached incarnation 2 and were refused"
        assert not lost.done() or "undelivered" in lost.result().error, "never acknowledged"
        fresh = a.ask(sender="asker", recipient="w", skill="s", data={"n": 2}, timeout_s=60)
        while time.time() < deadline and not ran:
            time.sleep(0.01)
        assert [e.to_epoch for e in ran] == [2] and ran[0].body.message.parts[0].data == {"n": 2}
        assert not fresh.done()  # nothing answers it here (no actor runs behind `w`)
    finally:
        a.stop()
        second.stop()
        first.close(linger=0)
        ctx.term()
