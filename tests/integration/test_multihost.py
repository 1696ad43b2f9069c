"""Nodes on several hosts: Linux network namespaces as hosts (tests/netns.py), each with its own
network stack and address; the supervisor runs on one (`agentrt run --listen`), nodes join from
the others (`agentrt node --join`), every byte between them over TCP with CurveZMQ. Needs root
(CI runs as root); elsewhere these tests skip and say why."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentrt.runtime import read_trace, run
from agentrt.runtime._keys import KeyPair, key_file, load_key_file
from agentrt.runtime._spec import load_spec

from .. import netns
from .conftest import HERE, ROOT
from .custom_actors import effect_counts

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
PORT = 7600
FAST_BEATS = {"heartbeat_s": 0.2, "heartbeat_timeout_s": 1.0, "max_restarts": 3, "period_s": 30}


@pytest.fixture(scope="module")
def hosts() -> Iterator[netns.Hosts]:
    why = netns.available()
    if why is not None:
        pytest.skip(f"hosts as network namespaces: {why}")
    with netns.hosts(["sup", "b", "c"]) as made:
        yield made


class Cluster:
    """A run across the hosts: its spec and keys in `folder`, the processes it started."""

    def __init__(self, hosts: netns.Hosts, folder: Path) -> None:
        self.hosts, self.folder = hosts, folder
        self.runs = folder / "runs"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sup = f"{hosts.addresses['sup']}:{PORT}"

    def write(self, spec: dict[str, Any], placement: dict[str, str]) -> Path:
        """The spec (a dict of TOML's shape) with nodes placed on hosts, and its keys."""
        spec = dict(spec)
        spec["nodes"] = [dict(n, host=placement[n["name"]]) if n["name"] in placement else n for n in spec["nodes"]]
        spec["cluster"] = {"listen": self.sup, "keys": str(self.folder / "keys")}
        path = self.folder / "spec.json"
        path.write_bytes(msgspec.json.encode(spec))
        py = self.folder / "spec.py"  # a Python spec: SPEC is the dict
        py.write_text(f"import json, pathlib\nSPEC = json.loads(pathlib.Path({str(path)!r}).read_text())\n")
        subprocess.run([BIN / "agentrt", "keys", "gen", py, "-o", self.folder / "keys"], check=True, capture_output=True)
        return py

    def _env(self) -> dict[str, str]:
        # The test actors (custom_actors) are imported from tests/integration on every host.
        return dict(os.environ, PYTHONPATH=str(HERE), AGENTRT_RUNS_DIR=str(self.runs))

    def supervisor(self, spec: Path, run_id: str) -> subprocess.Popen[bytes]:
        cmd = [BIN / "agentrt", "run", spec, "--run-id", run_id, "--runs-dir", self.runs, "--quiet", "--non-interactive", "--model", "offline"]
        return self._start("sup", cmd, "supervisor")

    def node(
        self, host: str, member: str, *extra: str, key: Path | None = None, key_in_env: bool = False, pid_namespace: bool = False
    ) -> subprocess.Popen[bytes]:
        """`agentrt node --join` on `host`, with the member's key file (or its text in
        AGENTRT_NODE_KEY, as a mounted secret would give it); in a pid namespace of its own (pid
        1 there, as in a container) with `pid_namespace`."""
        path = key or self.folder / "keys" / f"{member}.key"
        given = [] if key_in_env else ["--key", path]
        container = ["unshare", "--pid", "--fork", "--kill-child"] if pid_namespace else []
        cmd = [*container, BIN / "agentrt", "node", "--join", f"tcp://{self.sup}", *given, *extra]
        env = {"AGENTRT_NODE_KEY": Path(path).read_text()} if key_in_env else {}
        return self._start(host, cmd, f"{member}-{host}", env)

    def _start(self, host: str, cmd: list[Any], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.folder / f"{log}.{len(self.procs)}.out", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([*self.hosts.prefix(host), *map(str, cmd)], stdout=out, stderr=subprocess.STDOUT, env={**self._env(), **(env or {})}, start_new_session=True)
        self.procs.append(proc)
        return proc

    def summary(self, run_id: str) -> dict[str, Any]:
        return msgspec.json.decode((self.runs / run_id / "summary.json").read_bytes())

    def trace(self, run_id: str) -> list[dict[str, Any]]:
        return read_trace(self.runs / run_id / "trace.jsonl")

    def events(self, run_id: str, name: str) -> list[dict[str, Any]]:
        path = self.runs / run_id / "trace.jsonl"
        return [e for e in read_trace(path) if e["event"] == name] if path.exists() else []

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def cluster(hosts: netns.Hosts, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(hosts, tmp_path)
    try:
        yield made
    finally:
        made.stop()


def until(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.05)


def finished(proc: subprocess.Popen[bytes], timeout_s: float = 90) -> int:
    return proc.wait(timeout_s)


def research() -> dict[str, Any]:
    return tomllib.loads((ROOT / "demos" / "research" / "spec.toml").read_text())


def test_research_with_workers_on_two_other_hosts_gives_the_one_host_answer(cluster: Cluster, tmp_path: Path) -> None:
    one_host = run(load_spec(ROOT / "demos" / "research"), runs_dir=tmp_path / "one")
    spec = cluster.write(research(), {"worker-1": "b", "worker-2": "c"})
    sup = cluster.supervisor(spec, "three-hosts")
    cluster.node("b", "worker-1")
    cluster.node("c", "worker-2", key_in_env=True)
    assert finished(sup) == 0
    summary = cluster.summary("three-hosts")
    assert summary["state"] == one_host.state == "completed"
    assert summary["output"]["answer"] == one_host.output["answer"]
    assert summary["output"]["verdict"] == one_host.output["verdict"]
    joined = {e["node_name"]: e["endpoint"] for e in cluster.events("three-hosts", "node.joined")}
    a = cluster.hosts.addresses
    assert joined["worker-1"].startswith(f"tcp://{a['b']}:") and joined["worker-2"].startswith(f"tcp://{a['c']}:")
    # The workers did the fan-out, each from its own host: their task events reached the collector.
    done = [e for e in cluster.trace("three-hosts") if e["event"] == "task.state" and e["state"] == "completed"]
    assert {e["node"] for e in done} >= {"worker-1", "worker-2", "coord", "planner"}
    # The timeline says where each worker ran, and which nodes each host held.
    shown = subprocess.run(
        [BIN / "agentrt", "trace", "timeline", "three-hosts", "--runs-dir", cluster.runs, "--width", "30"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert f"hosts: {a['sup']}: coord, planner, review; {a['b']}: worker-1; {a['c']}: worker-2" in shown
    assert any("worker-2" in line and a["c"] in line for line in shown.splitlines())


def fan_out(d: Path, n: int, skill: str = "compute", s: float = 0.05) -> dict[str, Any]:
    tasks = [{"id": f"e{i}", "skill": skill, "args": {"dir": str(d), "n": i, "s": s}} for i in range(n)]
    return {
        "run": {"entry": "coordinator", "skill": "run", "input": {"goal": "g", "plan": {"goal": "g", "tasks": tasks}}, "timeout_s": 120},
        "supervision": FAST_BEATS,
        "nodes": [
            {"name": "coord", "actors": [{"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": {"max_in_flight": 8, "backoff_s": 0.05, "gate": False}}]},
            {"name": "w1", "actors": [{"name": "worker-1", "class": "custom_actors:Effect"}]},
            {"name": "w2", "actors": [{"name": "worker-2", "class": "custom_actors:Effect"}]},
        ],
    }


def runs_by(d: Path, actor: str) -> int:
    log = d / "runs.log"
    return sum(1 for line in log.read_text().splitlines() if line.split()[1] == actor) if log.exists() else 0


def child_of(pid: int) -> int:
    """The one child process of `pid` (the node a host agent runs)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(kids) == 1, kids
    return int(kids[0])


def test_kill_9_of_a_remote_node_mid_run_redispatches_its_work_and_its_agent_restarts_it(cluster: Cluster) -> None:
    d = cluster.folder / "fx"
    d.mkdir()
    n = 120  # ~4 s of work: the node's agent restarts it well before the end
    spec = cluster.write(fan_out(d, n, s=0.3), {"w1": "b", "w2": "c"})
    sup = cluster.supervisor(spec, "kill")
    agent = cluster.node("b", "w1", "--restart", "on-failure")
    cluster.node("c", "w2")
    until(lambda: runs_by(d, "worker-1") >= 5, 60, "worker-1 on host b ran some of the fan-out")
    victim = child_of(agent.pid)
    os.kill(victim, signal.SIGKILL)  # no Popen of the supervisor's sees this: heartbeats must
    assert finished(sup) == 0
    out = cluster.summary("kill")["output"]
    assert out["state"] == "completed"
    assert {k: v["value"] for k, v in out["results"].items()} == {f"e{i}": i * i for i in range(n)}
    lost = cluster.events("kill", "node.lost")
    # Silent past the heartbeat timeout, or replaced by its restarted incarnation first.
    assert [e["node_name"] for e in lost] == ["w1"] and lost[0]["why"] in ("silent", "replaced")
    joined = [e for e in cluster.events("kill", "node.joined") if e["node_name"] == "w1"]
    assert len(joined) == 2 and joined[1]["epoch"] > joined[0]["epoch"] and joined[1]["node_pid"] != victim
    assert cluster.events("kill", "node.restarted")  # its new incarnation rejoined: NodeUp
    redispatched = [e for e in cluster.trace("kill") if e["event"] == "schedule.decision" and e["decision"] == "redispatched"]
    assert redispatched and all("worker-1" in e["reason"] for e in redispatched)


def test_a_partitioned_node_is_declared_down_fenced_when_its_link_returns_and_no_effect_runs_twice(cluster: Cluster) -> None:
    d = cluster.folder / "fx"
    d.mkdir()
    n = 40
    data = fan_out(d, n, skill="effect", s=0.15)  # stateful: a repeat would be a second effect
    spec = cluster.write(data, {"w1": "b", "w2": "c"})
    sup = cluster.supervisor(spec, "cut")
    agent = cluster.node("b", "w1", "--restart", "on-failure")
    cluster.node("c", "w2")
    until(lambda: sum(1 for c in effect_counts(d).values() if c) >= 4, 60, "effects under way")
    stale = child_of(agent.pid)
    cluster.hosts.partition("b")
    try:
        until(lambda: bool(cluster.events("cut", "node.lost")), 20, "host b's node declared down")
    finally:
        cluster.hosts.heal("b")
    until(lambda: bool(cluster.events("cut", "node.fenced")), 30, "the stale incarnation fenced once its link returned")
    until(lambda: not Path(f"/proc/{stale}").exists(), 30, "the stale node stopped")
    assert finished(sup) in (0, 1)  # an effect cut off mid-way is in doubt: the run may end failed
    counts = effect_counts(d)
    assert counts and max(counts.values()) == 1, counts  # no effect ran twice
    out = cluster.summary("cut")["output"]
    done = {t for t, r in out["results"].items() if r}
    assert {f"e{i}" for i in counts} >= done  # nothing reported done that did not happen
    fenced = cluster.events("cut", "node.fenced")
    lost = cluster.events("cut", "node.lost")[0]
    assert any(e["node_name"] == "w1" and e["epoch"] == lost["epoch"] for e in fenced)
    stale_letters = [e for e in cluster.trace("cut") if e["event"] == "message.dead-letter" and e["reason"] == "stale"]
    # Stale: what the fenced incarnation sent late, and (at w1) what was meant for another
    # incarnation of it; a resend that reached the restarted one is refused there, not run.
    assert all(e["peer"] == "w1" or e["node"] == "node:w1" for e in stale_letters)


def test_a_peer_whose_key_is_not_on_the_allow_list_is_refused_and_nothing_it_sends_is_delivered(cluster: Cluster) -> None:
    d = cluster.folder / "fx"
    d.mkdir()
    spec = cluster.write(fan_out(d, 6), {"w1": "b", "w2": "c"})
    # The rogue knows the run (the supervisor's public key, the members' names) but holds a key
    # of its own for 'w1', which `keys gen` never made: it is not on the allow-list.
    real = load_key_file(str(cluster.folder / "keys" / "w1.key"))
    pair = KeyPair.generate()
    rogue = msgspec.structs.replace(real, keys=pair, members={**real.members, "w1": pair.public})
    key = cluster.folder / "rogue.key"
    key.write_bytes(key_file(rogue))
    sup = cluster.supervisor(spec, "rogue")
    refused = cluster.node("c", "w1", "--wait", "4", key=key)
    assert finished(refused, 30) == 2  # never welcomed
    letters = [e for e in cluster.events("rogue", "message.dead-letter") if e["reason"] == "unauthenticated"]
    assert letters and "not one of the run's" in letters[0]["detail"]
    assert not cluster.events("rogue", "node.joined")  # nothing it sent got through
    cluster.node("b", "w1")  # the real one is admitted, and the run goes on
    cluster.node("c", "w2")
    assert finished(sup) == 0
    assert sorted(e["node_name"] for e in cluster.events("rogue", "node.joined")) == ["w1", "w2"]


def netem_missing() -> str | None:
    """Why `tc netem` cannot add delay here, or None if it can."""
    if shutil.which("tc") is None:
        return "iproute2's `tc` is not installed"
    probe = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this kernel has no sch_netem (`tc qdisc add ... netem` said: {probe.stderr.strip()})"
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    return None


def test_research_across_hosts_with_10ms_of_netem_delay_gives_the_same_answer(cluster: Cluster, tmp_path: Path) -> None:
    why = netem_missing()
    if why is not None:
        pytest.skip(f"netem delay: {why}")
    one_host = run(load_spec(ROOT / "demos" / "research"), runs_dir=tmp_path / "one")
    links = [cluster.hosts.links[host] for host in ("b", "c")]
    try:
        for link in links:
            subprocess.run(["tc", "qdisc", "add", "dev", link, "root", "netem", "delay", "10ms"], check=True)
        spec = cluster.write(research(), {"worker-1": "b", "worker-2": "c"})
        sup = cluster.supervisor(spec, "delayed")
        cluster.node("b", "worker-1")
        cluster.node("c", "worker-2")
        assert finished(sup) == 0
    finally:
        for link in links:
            subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], capture_output=True)
    assert cluster.summary("delayed")["output"]["answer"] == one_host.output["answer"]


def test_a_joined_node_whose_supervisor_dies_stops_by_itself_when_its_lease_runs_out(cluster: Cluster) -> None:
    """On one host a node dies with its parent; on another nothing tells it the supervisor is
    gone but the leases that stop coming (5 x heartbeat_timeout_s: here 5 s)."""
    d = cluster.folder / "fx"
    d.mkdir()
    spec = cluster.write(fan_out(d, 200, s=0.3), {"w1": "b", "w2": "c"})
    sup = cluster.supervisor(spec, "orphan")
    w1 = cluster.node("b", "w1")
    cluster.node("c", "w2")
    until(lambda: runs_by(d, "worker-1") >= 3, 60, "the run under way")
    sup.kill()  # kill -9: no Stop reaches the nodes on other hosts
    assert w1.wait(30) == 75  # stopped itself (a host agent would start it again, to rejoin)
    said = next((cluster.folder).glob("w1-b.*.out")).read_text()
    assert "no lease from the supervisor" in said


def test_a_node_restarted_in_a_container_with_its_pid_and_address_rejoins_as_a_new_incarnation(cluster: Cluster) -> None:
    """A container restarted in its pod (Kubernetes restarts a crashed or fenced node so) runs
    the node as pid 1 again, at the same pod address and port: the same pid and endpoint as the
    incarnation it replaces. It must still be admitted as a new incarnation, not handed the old
    one's Welcome (an epoch the run may have declared down: fenced forever), and the run's actors
    must hear the old one go."""
    d = cluster.folder / "fx"
    d.mkdir()
    spec = cluster.write(fan_out(d, 120, s=0.3), {"w1": "b", "w2": "c"})
    sup = cluster.supervisor(spec, "pid1")
    listen = f"{cluster.hosts.addresses['b']}:7601"  # as a pod's fixed port and stable name
    # A pid namespace per start, as a container's: the node is pid 1 in it each time.
    first = cluster.node("b", "w1", "--listen", listen, pid_namespace=True)
    cluster.node("c", "w2")
    until(lambda: runs_by(d, "worker-1") >= 5, 60, "worker-1 on host b ran some of the fan-out")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    cluster.node("b", "w1", "--listen", listen, pid_namespace=True)
    assert finished(sup) == 0
    out = cluster.summary("pid1")["output"]
    assert {k: v["value"] for k, v in out["results"].items()} == {f"e{i}": i * i for i in range(120)}
    joined = [e for e in cluster.events("pid1", "node.joined") if e["node_name"] == "w1"]
    assert [e["node_pid"] for e in joined] == [1, 1]  # really the same pid, as in a container
    assert joined[1]["epoch"] > joined[0]["epoch"]
    assert [e["node_name"] for e in cluster.events("pid1", "node.lost")] == ["w1"]


def test_a_second_process_joining_as_a_running_node_is_refused_until_the_first_is_gone(cluster: Cluster) -> None:
    """Two processes as w1 on two hosts (a copy started by hand, two orchestrators) used to
    replace each other: each Join declared the other down, and the one fenced, restarted by its
    agent, joined again. Now the second is refused while the first is heard from (dead-lettered
    `not-allowed`, saying why), and admitted once the first falls silent; the fan-out completes."""
    d = cluster.folder / "fx"
    d.mkdir()
    n = 400  # ~15 s of work: long enough for the first to go and the second to come
    spec = cluster.write(fan_out(d, n, s=0.3), {"w1": "b", "w2": "c"})
    sup = cluster.supervisor(spec, "twice")
    first = cluster.node("b", "w1")
    cluster.node("c", "w2")
    until(lambda: runs_by(d, "worker-1") >= 3, 60, "worker-1 on host b ran some of the fan-out")
    cluster.node("c", "w1")  # w1's own key, on another host

    def refused() -> list[dict[str, Any]]:
        letters = cluster.events("twice", "message.dead-letter")
        return [e for e in letters if e["reason"] == "not-allowed" and "one process per node" in e["detail"]]

    until(lambda: bool(refused()), 30, "the second w1 refused")
    assert f"at tcp://{cluster.hosts.addresses['b']}:" in refused()[0]["detail"]
    assert not cluster.events("twice", "node.lost"), "the first w1 still runs: nothing replaced it"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    until(lambda: len([e for e in cluster.events("twice", "node.joined") if e["node_name"] == "w1"]) == 2, 30, "the second w1 admitted")
    assert finished(sup) == 0
    out = cluster.summary("twice")["output"]
    assert {k: v["value"] for k, v in out["results"].items()} == {f"e{i}": i * i for i in range(n)}
    joined = [e for e in cluster.events("twice", "node.joined") if e["node_name"] == "w1"]
    hosts = [cluster.hosts.addresses[h] for h in "bc"]
    assert [e["endpoint"].split("//")[1].split(":")[0] for e in joined] == hosts
    assert [(e["node_name"], e["why"]) for e in cluster.events("twice", "node.lost")] == [("w1", "silent")]


JOIN_AND_DIE = """
import sys
from agentrt.runtime._keys import load_key_file
from agentrt.runtime._node import join

boot = join(sys.argv[1], load_key_file(sys.argv[2]), wait_s=30)
print("WELCOMED", boot.epoch, flush=True)  # and gone before it was ever ready
"""


def test_a_node_that_joined_and_died_before_it_was_ready_does_not_hold_its_name(cluster: Cluster) -> None:
    """A process admitted as w1 (welcomed) that dies before it is ready is never declared
    silent (only ready incarnations are): the next w1, from another address, used to be
    refused as a second copy for ever. It is admitted once the first has been silent for
    heartbeat_timeout_s, and the run completes."""
    d = cluster.folder / "fx"
    d.mkdir()
    spec = cluster.write(fan_out(d, 40, s=0.3), {"w1": "b", "w2": "c"})
    sup = cluster.supervisor(spec, "half")
    died = subprocess.run(
        [*cluster.hosts.prefix("b"), sys.executable, "-c", JOIN_AND_DIE, f"tcp://{cluster.sup}", str(cluster.folder / "keys" / "w1.key")],
        capture_output=True, text=True, timeout=60, env=cluster._env(),
    )  # fmt: skip
    assert died.stdout.startswith("WELCOMED"), died.stdout + died.stderr
    cluster.node("c", "w2")
    cluster.node("c", "w1")  # a new w1 at a new address: the first one is gone
    until(lambda: len([e for e in cluster.events("half", "node.joined") if e["node_name"] == "w1"]) == 2, 30, "the second w1 admitted")
    assert finished(sup) == 0
    joined = [e for e in cluster.events("half", "node.joined") if e["node_name"] == "w1"]
    assert [e["endpoint"].split("//")[1].split(":")[0] for e in joined] == [cluster.hosts.addresses[h] for h in "bc"]


def test_a_host_agent_gives_up_on_failures_within_its_period_not_over_its_whole_life(tmp_path: Path) -> None:
    """`--restart on-failure` is for nodes that live long: a fence after each partition of a
    week must not add up to giving up. Here the node fails at once every time (its key file is
    not there); the agent waits 0.5 s before each start, so with --period 0.2 no two failures
    fall in one period and it goes on, while with --period 3600 the third failure ends it."""
    agent = [
        BIN / "agentrt", "node", "--join", "tcp://127.0.0.1:9", "--key", tmp_path / "missing.key",
        "--restart", "on-failure", "--max-restarts", "2",
    ]  # fmt: skip
    within = subprocess.run([*map(str, agent), "--period", "3600"], capture_output=True, text=True, timeout=120)
    assert within.returncode == 2, within.stderr
    assert within.stderr.count("; starting it again (") == 2 and "failed 3 times within 3600s" in within.stderr
    spaced = subprocess.Popen([*map(str, agent), "--period", "0.2"], stderr=subprocess.PIPE, text=True)
    try:
        restarts = 0
        assert spaced.stderr is not None
        for line in spaced.stderr:  # ends early (EOF) only if the agent gave up
            restarts += "; starting it again (" in line
            if restarts == 5:
                break
        assert restarts == 5, "the agent gave up although no two failures were within its period"
    finally:
        spaced.send_signal(signal.SIGTERM)
        assert spaced.wait(30) == 0


FORGER = """
import os, sys, time
from concurrent.futures import Future
from agentrt.protocols import Join, Limits, Welcome, encode
from agentrt.runtime._keys import load_key_file
from agentrt.runtime._messenger import Messenger
from agentrt.runtime._tracing import configure

sup, key, claimed = sys.argv[1:4]
trust = load_key_file(key)  # a real member's key, on the allow-list
configure(lambda _event: None, node=trust.me)
m = Messenger(name=f"node:{trust.me}", endpoint="tcp://0.0.0.0:7799", limits=Limits(), trust=trust)
welcomed = Future()
m.on_control = lambda env: isinstance(env.body, Welcome) and not welcomed.done() and welcomed.set_result(env.body)
m.route("supervisor", sup)
m.start()
mine = m.endpoint.replace("0.0.0.0", sys.argv[4])
for sender in (f"node:{trust.me}", f"node:{claimed}"):  # from its own address, and from the claimed one's
    join = Join(node=claimed, endpoint=mine, instance=os.urandom(16).hex(), pid=os.getpid())
    m.transport.send(sup, encode(m.envelope(sender=sender, recipient="supervisor", body=join)))
try:
    print("WELCOMED", welcomed.result(5).epoch, flush=True)
except TimeoutError:
    print("NOT WELCOMED", flush=True)
m.stop()
"""


def test_a_member_that_joins_claiming_another_nodes_name_is_refused(cluster: Cluster) -> None:
    """The allow-list is not enough: a peer holding w2's real key (admitted at the handshake)
    asks to join as w1. The supervisor checks the Join's node against the member its CURVE key
    authenticated as (the frame's User-Id): refused as forged-sender, never welcomed, and the
    real w1 joins and the run completes."""
    d = cluster.folder / "fx"
    d.mkdir()
    spec = cluster.write(fan_out(d, 6), {"w1": "b", "w2": "c"})
    sup = cluster.supervisor(spec, "claim")
    forger = subprocess.run(
        [*cluster.hosts.prefix("c"), sys.executable, "-c", FORGER, f"tcp://{cluster.sup}", str(cluster.folder / "keys" / "w2.key"), "w1", cluster.hosts.addresses["c"]],
        capture_output=True, text=True, timeout=60, env=cluster._env(),
    )  # fmt: skip
    assert forger.stdout.strip() == "NOT WELCOMED", forger.stdout + forger.stderr
    cluster.node("b", "w1")
    cluster.node("c", "w2")
    assert finished(sup) == 0
    letters = [e for e in cluster.events("claim", "message.dead-letter") if e["reason"] == "forged-sender"]
    assert sorted(e["sender"] for e in letters) == ["node:w1", "node:w2"] and {e["peer"] for e in letters} == {"w2"}
    joined = cluster.events("claim", "node.joined")
    assert sorted(e["node_name"] for e in joined) == ["w1", "w2"]
    assert all(e["endpoint"].startswith(f"tcp://{cluster.hosts.addresses[h]}:") for e, h in zip(sorted(joined, key=lambda e: e["node_name"]), "bc", strict=True))
