"""A hostile process of the same user, with the run's socket paths: without the run's keys it
never gets in; with a stolen node key (an actor process of the run that misbehaves) every spoof
is refused as a dead letter with its reason, and the run's result is unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from agentrt.protocols import (
    Ack,
    Body,
    CancelTask,
    Directory,
    Drain,
    Envelope,
    EnvelopeSent,
    Event,
    Heartbeat,
    Message,
    MessageDeadLetter,
    NodeFenced,
    Part,
    Register,
    SkillCall,
    StartFailed,
    Stop,
    Task,
    TaskReply,
    TaskRequest,
    TaskStatus,
    encode,
    event_to_dict,
    new_id,
)
from agentrt.runtime import Runtime, load_spec, read_trace

from .conftest import HERE, ROOT, alive, as_member, make_spec

pytestmark = pytest.mark.integration

HELLO = ROOT / "demos" / "hello"


def forge(sender: str, recipient: str, body: Body, **fields: Any) -> bytes:
    return encode(
        Envelope(
            message_id=new_id(),
            trace_id="f" * 32,
            span_id="f" * 16,
            sender=sender,
            recipient=recipient,
            sent_at=time.time(),
            body=body,
            **fields,
        )
    )


class DeadLetters:
    """The run's dead letters as they reach the trace, to wait on."""

    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []
        self._cv = threading.Condition()

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageDeadLetter):
            with self._cv:
                self.letters.append(event_to_dict(event))
                self._cv.notify_all()

    def wait_for(self, count: int, **match: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            return [e for e in self.letters if all(e.get(k) == v for k, v in match.items())]

        with self._cv:
            assert self._cv.wait_for(lambda: len(found()) >= count, 60), (
                f"expected {count} dead letters like {match}; got {self.letters}"
            )
            return found()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS), or its peak so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_without_the_runs_keys_no_handshake_completes_and_nothing_is_delivered(runs_dir: Path) -> None:
    letters = DeadLetters()
    with Runtime(load_spec(HELLO), runs_dir=runs_dir, on_event=letters) as rt:
        targets = {
            "front": rt.nodes["front"].endpoint,
            "back": rt.nodes["back"].endpoint,
            "supervisor": rt.messenger.endpoint,
            "trace": rt._ipc("trace"),
        }
        ctx = zmq.Context()
        try:
            for name, endpoint in targets.items():
                # Every way in: no keys at all, and keys of its own with the server's public key.
                for own_keys in (False, True):
                    sock = ctx.socket(zmq.PUSH if name == "trace" else zmq.DEALER)
                    if own_keys:
                        public, secret = zmq.curve_keypair()
                        sock.curve_publickey, sock.curve_secretkey = public, secret
                        server = "supervisor" if name == "trace" else name
                        sock.curve_serverkey = rt._trust[server].members[server].encode()
                    monitor = sock.get_monitor_socket(addr=f"inproc://monitor-{name}-{own_keys}")
                    sock.connect(endpoint)
                    sock.send(
                        forge(
                            "supervisor",
                            "greeter",
                            TaskRequest(
                                call=SkillCall(skill="greet"),
                                message=Message(message_id="x", role="ROLE_USER", parts=[Part(data={"name": "mallory"})]),
                            ),
                            task_id=f"intruder-{name}-{own_keys}",
                        ),
                        zmq.NOBLOCK,
                    )
                    events: list[int] = []
                    failed = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    while not any(e & failed for e in events):
                        assert monitor.poll(30_000), f"no handshake outcome at {name}"
                        events.append(recv_monitor_message(monitor)["event"])
                    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events, f"a stranger got into {name}"
                    sock.close(0)
                    monitor.close(0)
        finally:
            ctx.destroy(linger=0)
        for member in ("front", "back", "supervisor"):
            refused = letters.wait_for(1, reason="unauthenticated", node="supervisor" if member == "supervisor" else f"node:{member}")
            assert "CurveZMQ handshake" in refused[0]["detail"]
        assert rt.ask("greeter", "greet", {"name": "ada"}).data["greeting"] == "HELLO ADA!"
        trace = rt.trace_path
    intruders = [e for e in read_trace(trace) if str(e.get("task_id", "")).startswith("intruder-")]
    assert intruders == [], "nothing a stranger sent was delivered"


def test_with_a_stolen_node_key_every_spoof_is_refused_and_the_result_is_unchanged(runs_dir: Path) -> None:
    letters = DeadLetters()
    with Runtime(load_spec(HELLO), runs_dir=runs_dir, on_event=letters) as rt:
        pids = dict(rt.pids)
        # The attacker holds 'back's keys: it is an actor process of the run gone bad.
        with as_member(rt, "back", "front") as to_front, as_member(rt, "back", "supervisor") as to_sup:
            evil = {"shouter": "ipc:///tmp/evil.sock"}
            to_front.send(forge("supervisor", "node:front", Directory(routes=evil)))
            to_front.send(forge("node:back", "node:front", Directory(routes=evil)))
            for _ in range(4):
                to_front.send(forge("supervisor", "node:front", Stop()))
            to_front.send(forge("supervisor", "greeter", Drain(reason="spoofed")))
            to_front.send(forge("shouter", "greeter", Drain(reason="spoofed")))
            to_front.send(forge("supervisor", "node:front", Ack(ids=["any"])))
            to_sup.send(
                forge(
                    "greeter",
                    "supervisor",
                    TaskReply(task=Task(id="job", context_id="job", status=TaskStatus(state="TASK_STATE_COMPLETED"))),
                    task_id="job",
                )
            )
            to_sup.send(forge("node:back", "supervisor", Heartbeat(node="front", pid=pids["front"], seq=99)))
            to_sup.send(forge("node:back", "supervisor", StartFailed(node="front", pid=1, error="x")))
            to_sup.send(forge("node:front", "supervisor", Ack(ids=["any"])))
            at_front = letters.wait_for(9, node="node:front", peer="back")
            at_sup = letters.wait_for(4, node="supervisor", peer="back")
        assert sorted(e["reason"] for e in at_front) == ["forged-sender"] * 7 + ["not-allowed"] * 2
        assert [e["reason"] for e in at_sup] == ["forged-sender"] * 4
        kinds = {(e["kind"], e["sender"]) for e in at_front + at_sup}
        assert {("directory", "supervisor"), ("stop", "supervisor"), ("drain", "shouter"), ("task", "greeter")} <= kinds
        assert {("heartbeat", "node:back"), ("start-failed", "node:back"), ("ack", "node:front")} <= kinds
        # The run is untouched: same processes, the directory not rerouted, the job's answer.
        assert rt.ask("greeter", "greet", {"name": "ada"}).data == {"greeting": "HELLO ADA!", "greeted": 1}
        assert rt.pids == pids and all(alive(p) for p in pids.values())
        assert all(n.ready and n.proc.poll() is None for n in rt.nodes.values())


def test_a_forged_reply_does_not_resolve_an_ask_of_another_actor(runs_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(
        {
            "a": [{"name": "chaos", "class": "custom_actors:Chaos"}],
            "b": [{"name": "greeter", "class": "custom_actors:Greeter"}],
        },
        run={"entry": "greeter", "skill": "greet", "input": {"name": "x"}},
    )
    letters = DeadLetters()
    with Runtime(spec, runs_dir=runs_dir, on_event=letters) as rt:
        job = rt.ask_async("chaos", "slow", {"dir": str(tmp_path), "name": "j", "s": 600}, task_id="job-1")
        forged = TaskReply(task=Task(id="job-1", context_id="job-1", status=TaskStatus(state="TASK_STATE_COMPLETED")))
        with as_member(rt, "b", "supervisor") as sock:  # 'greeter' is b's: the sender is honest
            sock.send(forge("greeter", "supervisor", forged, task_id="job-1", epoch=rt.nodes["b"].epoch))
            refused = letters.wait_for(1, node="supervisor", reason="forged-sender")
        assert "asked of 'chaos'" in refused[0]["detail"]
        assert not job.done(), "the forged reply resolved the job"
        rt.cancel("chaos", "job-1")
        assert rt.wait(job, 60).data == {"cancelled": True}


def test_only_the_member_a_message_went_to_may_acknowledge_it(runs_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(
        {
            "a": [{"name": "chaos", "class": "custom_actors:Chaos"}],
            "b": [{"name": "greeter", "class": "custom_actors:Greeter"}],
        },
        run={"entry": "greeter", "skill": "greet", "input": {"name": "x"}},
        supervision={"heartbeat_timeout_s": 120},
    )
    letters = DeadLetters()
    acks: list[str] = []

    def watch(event: Event) -> None:
        letters(event)
        if isinstance(event, EnvelopeSent) and event.kind == "task-request":
            acks.append(event.message_id)

    with Runtime(spec, runs_dir=runs_dir, on_event=watch) as rt:
        a = rt.nodes["a"].pid
        os.kill(a, signal.SIGSTOP)  # a cannot acknowledge: the request stays unacknowledged
        try:
            job = rt.ask_async("chaos", "slow", {"dir": str(tmp_path), "name": "j", "s": 600}, task_id="job-2")
            deadline = time.monotonic() + 60
            while not acks and time.monotonic() < deadline:
                time.sleep(0.01)
            # b's member acknowledges, as itself, the request the supervisor sent to a.
            with as_member(rt, "b", "supervisor") as sock:
                sock.send(forge("node:b", "supervisor", Ack(ids=[acks[0]]), epoch=rt.nodes["b"].epoch))
                refused = letters.wait_for(1, node="supervisor", reason="forged-sender")
            assert "acknowledged 1 message(s) sent to a" in refused[0]["detail"]
        finally:
            os.kill(a, signal.SIGCONT)
        # Still resent until a acknowledges it: the job runs, and can be cancelled.
        while not (tmp_path / "cancelled-j").exists() and not job.done():
            rt.cancel("chaos", "job-2")
            time.sleep(0.2)
        assert rt.wait(job, 60).data == {"cancelled": True}


def test_an_unencodable_trace_event_is_a_dead_letter_and_the_run_exits_normally(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(
        '[run]\nentry = "odd"\nskill = "tuple_event"\n\n'
        '[[nodes]]\nname = "a"\nactors = [{ name = "odd", class = "custom_actors:Misbehaving" }]\n'
        '[[nodes]]\nname = "b"\nactors = [{ name = "greeter", class = "custom_actors:Greeter" }]\n'
    )
    shutil.copy(HERE / "custom_actors.py", tmp_path / "custom_actors.py")
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "agentrt.runtime._cli", "run", str(tmp_path), "--runs-dir", str(runs), "--run-id", "r"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert '"ok": true' in done.stdout
    sock_dir = json.loads((runs / "r" / "nodes.json").read_text())["sock_dir"]
    assert not Path(sock_dir).exists(), "the socket folder was left behind"
    events = read_trace(runs / "r" / "trace.jsonl")
    dead = [e for e in events if e["event"] == "message.dead-letter"]
    assert [(e["reason"], e["peer"]) for e in dead] == [("unencodable", "a")]
    assert "pair.stats" in dead[0]["detail"]
    assert {e["node"] for e in events if e["event"] == "node.stopped"} == {"a", "b"}
    assert not any(e["event"] == "node.unresponsive" for e in events)


def test_a_huge_multipart_message_leaves_node_memory_flat(runs_dir: Path) -> None:
    letters = DeadLetters()
    with Runtime(load_spec(HELLO), runs_dir=runs_dir, on_event=letters) as rt:
        pid = rt.nodes["front"].pid
        assert rt.ask("greeter", "greet", {"name": "ada"}).ok  # warmed up
        before = rss_kib(pid, "VmHWM")
        part = os.urandom(15 * 1024 * 1024)
        with as_member(rt, "back", "front") as sock:
            monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            sock.send_multipart([part] * 24, copy=False)
            # Done when the node has hung up on it (a part over its MAXMSGSIZE), or has read
            # the message part by part and refused it.
            deadline = time.monotonic() + 120
            while not (monitor.poll(100) or any("24 parts" in e["detail"] for e in letters.letters)):
                assert time.monotonic() < deadline, "the node neither refused the message nor hung up"
            monitor.close(0)
        grown_mib = (rss_kib(pid, "VmHWM") - before) / 1024  # its peak, not what is left after
        assert grown_mib < 20, f"the node's peak grew by {grown_mib:.1f} MiB for a 360 MiB message"
        assert rt.ask("greeter", "greet", {"name": "ada"}).data["greeting"] == "HELLO ADA!"
        assert rt.nodes["front"].pid == pid and alive(pid)


def test_a_node_whose_io_thread_dies_exits_loudly_and_is_restarted(runs_dir: Path) -> None:
    spec = make_spec(
        {
            "a": [{"name": "odd", "class": "custom_actors:Misbehaving"}],
            "b": [{"name": "greeter", "class": "custom_actors:Greeter"}],
        },
        run={"entry": "greeter", "skill": "greet", "input": {"name": "x"}},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        first = rt.nodes["a"].pid
        assert rt.ask("odd", "poison_io", {}).data == {"poisoned": True}
        # The next frame node a receives (the acknowledgement of that reply, or this ask)
        # kills its I/O thread; the node exits, is restarted, and the ask is answered.
        assert rt.ask("odd", "tuple_event", {}, timeout_s=60).ok
        assert rt.nodes["a"].pid != first
        log = rt.nodes["a"].log_path.read_text()
        trace = rt.trace_path
    assert "the I/O thread died; exiting" in log and "a frame the I/O thread could not survive" in log
    died = [e for e in read_trace(trace) if e["event"] == "node.died"]
    assert [(e["node_name"], e["code"]) for e in died] == [("a", 70)]


def test_when_the_supervisors_io_thread_dies_the_run_fails_and_stops_cleanly(runs_dir: Path) -> None:
    spec = make_spec(
        {"a": [{"name": "greeter", "class": "custom_actors:Greeter"}]},
        run={"entry": "greeter", "skill": "greet", "input": {"name": "x"}},
    )
    rt = Runtime(spec, runs_dir=runs_dir).start()
    try:
        pids = list(rt.pids.values())

        class Poison(BaseException):
            pass

        def die(peer: Any, frame: bytes) -> None:
            raise Poison("the supervisor's transport was poisoned")

        rt.messenger.transport._on_frame = die  # type: ignore[method-assign]
        from agentrt.protocols import RunError

        with pytest.raises(RunError, match="the supervisor's I/O thread died"):
            rt.ask("greeter", "greet", {"name": "ada"}, timeout_s=60)
    finally:
        rt.stop()  # returns: nothing waits on the dead thread
    assert not rt.sock_dir.exists()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_keys_reach_a_node_on_stdin_only_and_never_a_file_of_the_run(runs_dir: Path) -> None:
    with Runtime(load_spec(HELLO), runs_dir=runs_dir) as rt:
        secrets = [t.keys.secret for t in rt._trust.values()]
        assert rt.ask("greeter", "greet", {"name": "ada"}).ok
        for node in rt.nodes.values():
            for what in ("cmdline", "environ"):
                text = Path(f"/proc/{node.pid}/{what}").read_bytes().decode(errors="replace")
                assert not any(s in text for s in secrets), f"a key in the node's {what}"
        run_dir = rt.run_dir
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes().decode(errors="replace")
            assert not any(s in data for s in secrets), f"a secret key in {path}"


def test_a_replaced_incarnations_messages_are_stale_and_its_heartbeat_is_answered_fenced(runs_dir: Path) -> None:
    """Fencing on real processes: envelopes carry their node's incarnation (epoch); once a node
    is restarted, what its old incarnation sends (here with its stolen key, as a late reply
    after a partition would) is dropped as `stale`, and its heartbeat is answered `Fenced`;
    the new incarnation, at the same ipc endpoint, ignores a Fenced that names the old one."""
    spec = make_spec(
        {
            "n1": [{"name": "greeter", "class": "custom_actors:Greeter"}],
            "n2": [{"name": "relay", "class": "custom_actors:Relay", "config": {"to": "greeter"}}],
        },
        supervision={"heartbeat_s": 0.2, "heartbeat_timeout_s": 2.0},
    )
    letters = DeadLetters()
    fenced: list[Event] = []
    with Runtime(spec, runs_dir=runs_dir, on_event=lambda e: (letters(e), isinstance(e, NodeFenced) and fenced.append(e))) as rt:
        old, old_pid = rt.nodes["n2"].epoch, rt.nodes["n2"].pid
        with as_member(rt, "n2", "n1") as sock:  # an epoch n2 never had: not n2's current one
            sock.send(forge("relay", "greeter", CancelTask(task_id="t", reason="x"), epoch=old + 100))
            refused = letters.wait_for(1, node="node:n1", reason="stale")
        assert refused[0]["peer"] == "n2"
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.time() + 60
        while not (rt.nodes["n2"].epoch != old and rt.nodes["n2"].ready):
            assert time.time() < deadline, "n2 was not restarted"
            with contextlib.suppress(TimeoutError):
                rt.wait(Future(), timeout_s=0.1)
        new = rt.nodes["n2"].epoch
        assert new > old
        with as_member(rt, "n2", "n1") as sock:  # n1 has the new directory: epoch `old` is stale
            sock.send(forge("relay", "greeter", CancelTask(task_id="t", reason="late"), epoch=old))
            letters.wait_for(2, node="node:n1", reason="stale")
        with as_member(rt, "n2", "supervisor") as sock:
            sock.send(forge("node:n2", "supervisor", Heartbeat(node="n2", pid=old_pid, seq=7, epoch=old), epoch=old))
            deadline = time.time() + 30
            while not fenced:
                assert time.time() < deadline, "the old incarnation's heartbeat was not answered Fenced"
                time.sleep(0.05)
        assert [(e.node_name, e.epoch) for e in fenced] == [("n2", old)]
        time.sleep(1.0)  # the Fenced reached n2's endpoint: the new incarnation must not stop
        assert rt.nodes["n2"].proc.poll() is None and rt.nodes["n2"].epoch == new


def test_a_node_registers_only_its_own_actors_at_an_endpoint_no_other_node_has(runs_dir: Path) -> None:
    """A node's Register names its endpoint and its actors' cards, and the directory every
    node routes by is built from them. With a stolen key (or a compromised host, across hosts)
    'back' registers a card for front's 'greeter' at its own endpoint (everyone's messages for
    the greeter would come to it) and claims front's endpoint as its own (peers would expect
    back's key there and never reach front). Both are refused; the directory is unchanged."""
    letters = DeadLetters()
    with Runtime(load_spec(HELLO), runs_dir=runs_dir, on_event=letters) as rt:
        front, back = rt.nodes["front"].endpoint, rt.nodes["back"].endpoint
        before = rt._directory().routes
        stolen = msgspec.structs.replace(rt.messenger.cards["greeter"], supported_interfaces=rt.messenger.cards["shouter"].supported_interfaces)
        epoch = rt.nodes["back"].epoch
        with as_member(rt, "back", "supervisor") as sock:
            sock.send(forge("node:back", "supervisor", Register(node="back", pid=rt.pids["back"], endpoint=back, cards=[stolen]), epoch=epoch))
            sock.send(forge("node:back", "supervisor", Register(node="back", pid=rt.pids["back"], endpoint=front), epoch=epoch))
        deadline = time.time() + 30
        while len(refused := [e for e in letters.letters if e["node"] == "supervisor" and e["peer"] == "back"]) < 2:
            assert time.time() < deadline, f"not refused; dead letters: {letters.letters}"
            with contextlib.suppress(TimeoutError):  # the supervisor applies controls as it waits
                rt.wait(Future(), timeout_s=0.1)
        assert sorted(e["reason"] for e in refused) == ["forged-sender", "not-allowed"], refused
        assert rt._directory().routes == before and before["greeter"] == front
        assert rt.nodes["back"].endpoint == back and rt.messenger.routes["node:back"] == back
        assert rt.ask("greeter", "greet", {"name": "ada"}).data == {"greeting": "HELLO ADA!", "greeted": 1}
