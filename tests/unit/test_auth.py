"""The envelope-level authentication rule and the run's keys: pure, no sockets."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from agentrt.protocols import (
    Ack,
    Directory,
    Drain,
    Drained,
    Envelope,
    Heartbeat,
    Message,
    Part,
    Register,
    SkillCall,
    StartFailed,
    Stop,
    Task,
    TaskReply,
    TaskRequest,
    TaskStatus,
)
from agentrt.runtime._auth import authenticate
from agentrt.runtime._keys import SUPERVISOR, KeyPair, issue

NODES = {"front": ["greeter"], "back": ["shouter", "echo"]}
TRUST = issue(NODES)
MEMBERS = ["supervisor", "front", "back"]


def envelope(sender: str, body: object, recipient: str = "greeter") -> Envelope:
    return Envelope(
        message_id="m",
        trace_id="t" * 32,
        span_id="s" * 16,
        sender=sender,
        recipient=recipient,
        sent_at=time.time(),
        body=body,  # type: ignore[arg-type]
    )


def request() -> TaskRequest:
    return TaskRequest(call=SkillCall(skill="greet"), message=Message(message_id="x", role="ROLE_USER", parts=[Part(data={})]))


def test_keys_are_fresh_per_run_and_the_secret_never_shows_in_a_repr() -> None:
    again = issue(NODES)
    assert set(TRUST) == {"supervisor", "front", "back"}
    assert TRUST["front"].keys != again["front"].keys
    assert TRUST["front"].members == TRUST["back"].members  # everyone knows every public key
    assert TRUST["front"].keys.secret not in TRUST["back"].members.values()
    pair = KeyPair.generate()
    for text in (repr(pair), str(pair), f"{pair}", repr(TRUST["front"]), str(TRUST["front"])):
        assert pair.secret not in text and TRUST["front"].keys.secret not in text


def test_an_actor_speaks_only_through_the_node_hosting_it() -> None:
    front = TRUST["front"]
    assert authenticate("back", envelope("shouter", request()), front) is None
    reason, detail = authenticate("back", envelope("greeter", request()), front) or ("", "")
    assert reason == "forged-sender" and "only 'front' may send as" in detail
    reason, detail = authenticate("back", envelope("mallory", request()), front) or ("", "")
    assert reason == "forged-sender" and "neither a member nor an actor" in detail
    reason, _ = authenticate("back", envelope("supervisor", request()), front) or ("", "")
    assert reason == "forged-sender"
    reason, _ = authenticate(None, envelope("shouter", request()), front) or ("", "")
    assert reason == "unauthenticated"


def test_controls_to_a_node_only_from_the_supervisor() -> None:
    front = TRUST["front"]
    directory = Directory(routes={"greeter": "ipc:///tmp/evil"})
    assert authenticate("supervisor", envelope("supervisor", directory, "node:front"), front) is None
    reason, detail = authenticate("back", envelope("node:back", directory, "node:front"), front) or ("", "")
    assert reason == "not-allowed" and "only from the supervisor" in detail
    drain = Drain(reason="x")
    assert (authenticate("back", envelope("shouter", drain, "coordinator"), front) or ("",))[0] == "not-allowed"
    # Acknowledgements travel between all members; who sends them is still checked.
    ack = Ack(ids=["m1"])
    assert authenticate("back", envelope("node:back", ack), front) is None
    assert (authenticate("back", envelope("node:front", ack), front) or ("",))[0] == "forged-sender"


def test_a_node_reports_and_beats_only_for_itself() -> None:
    sup = TRUST[SUPERVISOR]
    ok = Register(node="back", pid=1, endpoint="ipc:///b")
    assert authenticate("back", envelope("node:back", ok, SUPERVISOR), sup) is None
    other = StartFailed(node="front", pid=1, error="boom")
    assert (authenticate("back", envelope("node:back", other, SUPERVISOR), sup) or ("",))[0] == "forged-sender"
    from_actor = StartFailed(node="back", pid=1, error="boom")
    assert (authenticate("back", envelope("shouter", from_actor, SUPERVISOR), sup) or ("",))[0] == "forged-sender"
    # Drained is checked where drains are handled (the supervisor), not here.
    assert authenticate("back", envelope("shouter", Drained(actor="shouter"), SUPERVISOR), sup) is None
    assert authenticate("back", envelope("node:back", Heartbeat(node="back", pid=1, seq=1), SUPERVISOR), sup) is None
    fake = Heartbeat(node="front", pid=1, seq=1)
    reason, detail = authenticate("back", envelope("node:back", fake, SUPERVISOR), sup) or ("", "")
    assert reason == "forged-sender" and "heartbeat for node 'front'" in detail


addresses = st.sampled_from(["supervisor", "node:front", "node:back", "node:ghost", "greeter", "shouter", "echo", "x"])
bodies = st.sampled_from(
    [
        request(),
        TaskReply(task=Task(id="t", context_id="t", status=TaskStatus(state="TASK_STATE_COMPLETED"))),
        Ack(ids=["m"]),
        Stop(),
        Heartbeat(node="front", pid=1, seq=1),
    ]
)


@given(peer=st.sampled_from([*MEMBERS, None, "ghost"]), sender=addresses, body=bodies, me=st.sampled_from(MEMBERS))
def test_accepted_only_from_the_member_hosting_the_sender(peer: str | None, sender: str, body: object, me: str) -> None:
    trust = TRUST[me]
    verdict = authenticate(peer, envelope(sender, body), trust)
    if verdict is None:
        assert peer is not None and trust.host_of(sender) == peer
        if isinstance(body, Heartbeat):
            assert body.node == peer
        if isinstance(body, Stop) and me != SUPERVISOR:
            assert peer == SUPERVISOR
    if peer is None or peer == "ghost":
        assert verdict is not None and verdict[0] == "unauthenticated"


def test_no_node_may_take_the_supervisors_name() -> None:
    import pytest

    from agentrt.protocols import SpecError
    from agentrt.runtime import spec_from_dict

    with pytest.raises(SpecError, match="'supervisor' is the supervisor's"):
        spec_from_dict({"nodes": [{"name": "supervisor", "actors": [{"name": "a", "class": "m:C"}]}], "run": {"entry": "a"}})


def test_a_boot_config_shows_no_secret_when_printed() -> None:
    from agentrt.protocols import Limits
    from agentrt.runtime._models import ModelConfig
    from agentrt.runtime._spec import NodeBoot, NodeSpec

    boot = NodeBoot(
        run_id="r",
        node=NodeSpec(name="front", actors=[]),
        endpoint="ipc:///x",
        supervisor_endpoint="ipc:///y",
        trace_endpoint="ipc:///z",
        limits=Limits(),
        default_model=ModelConfig(),
        store="s",
        trust=TRUST["front"],
    )
    assert TRUST["front"].keys.secret not in repr(boot) and TRUST["front"].keys.secret not in str(boot)
