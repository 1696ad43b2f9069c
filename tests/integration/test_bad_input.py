"""Bad input never crashes a node and never loses accepted work: frames sent with raw pyzmq."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentrt.protocols import Envelope, Message, Part, SchemaError, SkillCall, TaskRequest, encode
from agentrt.runtime import Runtime, read_trace

from .conftest import as_member

pytestmark = pytest.mark.integration


def raw_request(task_id: str, data: dict, epoch: int) -> bytes:
    """A task request as n2's process sends it (`epoch`: n2's current incarnation, which its
    envelopes carry; anything else is dropped as stale before it is looked at)."""
    return encode(
        Envelope(
            message_id=f"m-{task_id}",
            trace_id="a" * 32,
            span_id="b" * 16,
            sender="relay",  # n2's actor: these frames come from a process holding n2's keys
            recipient="greeter",
            task_id=task_id,
            sent_at=time.time(),
            epoch=epoch,
            body=TaskRequest(
                call=SkillCall(skill="greet"),
                message=Message(message_id="mm", role="ROLE_USER", parts=[Part(data=data)]),
            ),
        )
    )


def test_malformed_oversized_and_deep_frames_are_dropped_counted_traced(greeter_spec, runs_dir: Path) -> None:
    deep: dict = {"name": "x"}
    cursor = deep
    for _ in range(20):
        cursor["d"] = {}
        cursor = cursor["d"]
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        # From another process holding node n2's keys: bad input from inside the run.
        with as_member(rt, "n2", "n1") as sock:
            sock.send(b"\xc1\xc1 this is not msgpack")
            sock.send(b"\x00" * (greeter_spec.limits.max_frame_bytes + 1))
            sock.send_multipart([b"two", b"frames"])
            sock.send(raw_request("deep-1", deep, rt.nodes["n2"].epoch))
            # A map key may be an array (read as a tuple): 900 levels, under msgspec's own bound.
            plain = raw_request("deep-key", {"name": "x", "k": 1}, rt.nodes["n2"].epoch)
            sock.send(plain.replace(b"\xa1k\x01", b"\x91" * 900 + b"\x00\x01"))
            # The same connection still delivers a valid message afterwards.
            sock.send(raw_request("raw-ok", {"name": "after garbage"}, rt.nodes["n2"].epoch))
            time.sleep(0.5)
        assert rt.ask("greeter", "greet", {"name": "still alive"}).data == {"greeting": "hello still alive"}
        stats = rt.node_stats("n1")
        trace = rt.trace_path
        node = rt.nodes["n1"]
    assert stats["dead"] == 5
    assert stats["dead.malformed"] == 2
    assert stats["dead.too-large"] == 1
    assert stats["dead.too-deep"] == 2
    assert node.proc.returncode == 0, "the node exited cleanly, it did not crash"
    events = read_trace(trace)
    rejected = [e for e in events if e["event"] == "message.dead-letter" and e["node"] == "node:n1"]
    assert sorted(e["reason"] for e in rejected) == ["malformed", "malformed", "too-deep", "too-deep", "too-large"]
    # n1's messenger names itself by its address in its dead letters: true, not a forgery.
    assert not [e for e in events if e["event"] == "message.dead-letter" and e["reason"] == "forged-sender"]
    assert all(e["detail"] for e in rejected)
    assert any("max_frame_bytes" in e["detail"] for e in rejected)
    assert any("2 parts" in e["detail"] and e["peer"] == "n2" for e in rejected)
    done = [e for e in events if e["event"] == "task.state" and e.get("task_id") == "raw-ok"]
    assert [e["state"] for e in done] == ["working", "completed"]


def test_schema_invalid_payload_refused_at_sender_and_at_receiver(greeter_spec, runs_dir: Path) -> None:
    with Runtime(greeter_spec, runs_dir=runs_dir) as rt:
        with pytest.raises(SchemaError) as info:
            rt.ask("greeter", "greet", {"name": 42})
        assert info.value.field == "$.name" and info.value.rule == "type"
        assert "input of skill 'greet' on 'greeter': field '$.name'" in str(info.value)

        forced = rt.ask("greeter", "greet", {"nme": "typo"}, validate=False)
        assert forced.state == "rejected"
        assert "field '$.name'" in forced.error and "rule: required" in forced.error

        # Between actors: the sending actor refuses before anything reaches the wire.
        relayed = rt.ask("relay", "relay_invalid", {})
        assert relayed.state == "failed" and "SchemaError" in relayed.error and "'$.name'" in relayed.error

        assert rt.ask("greeter", "greet", {"name": "ok"}).ok
        trace = rt.trace_path
    events = read_trace(trace)
    rejected = [e for e in events if e["event"] == "task.rejected"]
    assert len(rejected) == 1 and "'$.name'" in rejected[0]["error"]
    sent_to_greeter = [
        e["envelope"]["body"]["message"]["parts"][0]["data"]
        for e in events
        if e["event"] == "envelope.sent" and e["kind"] == "task-request" and e["recipient"] == "greeter"
    ]
    assert {"name": 42} not in sent_to_greeter, "invalid data never went on the wire"
    assert {"nme": "typo"} in sent_to_greeter
