"""The supervisor: spawns nodes from a spec, keeps the directory, collects traces, shuts down."""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import zmq

from agentrt.protocols import (
    AgentCard,
    AskAgain,
    Body,
    CancelTask,
    DeadLetterReason,
    Directory,
    Drain,
    Drained,
    Envelope,
    Event,
    Fenced,
    Heartbeat,
    Join,
    Lease,
    NodeDied,
    NodeDown,
    NodeFenced,
    NodeJoined,
    NodeLost,
    NodeNotRestarted,
    NodeRestarted,
    NodeRestarting,
    NodeSpawned,
    NodeUnresponsive,
    NodeUp,
    Ready,
    Register,
    RunDrained,
    RunDraining,
    RunDrainTimedOut,
    RunError,
    RunFinished,
    RunReport,
    RunStarted,
    RunStarting,
    RunStopped,
    SpecError,
    StartFailed,
    Stats,
    StatsQuery,
    Stop,
    Stopped,
    StoreReady,
    StoreReleaseFailed,
    SupervisorGaveUp,
    TaskStateChanged,
    Welcome,
    check_id,
    encode,
    new_id,
    report_from,
)

from ._cluster import WILDCARD, public_endpoint, run_trust, split
from ._files import append_private, child_path, private_dir, write_private
from ._keys import SUPERVISOR, KeyPair, Trust
from ._membership import Down, Fence, Membership
from ._messenger import Messenger, TaskResult
from ._redact import LineRedactor, redact
from ._spec import NodeBoot, Spec, checked, entry_actor, placement
from ._store import PostgresAdmin, describe, is_postgres
from ._tracing import TraceWriter, configure, emit, event_name, get_logger


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + new_id()[:6]


def default_runs_dir() -> Path:
    return Path(os.environ.get("AGENTRT_RUNS_DIR", "runs"))


def _pump_log(stream: Any, path: Path) -> None:
    """Copy a node's stdout and stderr (its tracebacks, and whatever its children print) into
    its log, line by line, secrets redacted."""
    clean = LineRedactor()
    with stream, append_private(path) as log:
        for line in iter(lambda: stream.readline(1 << 20), b""):
            log.write(clean(line.decode(errors="replace")).encode())
            log.flush()


class NodeProcess(msgspec.Struct, kw_only=True):
    name: str
    proc: Any  # subprocess.Popen; None for a node on another host (it joined)
    log_path: Path
    endpoint: str
    spec: Any = None  # its NodeSpec
    registered: bool = False
    ready: bool = False
    pid: int = 0
    restarting: bool = False  # respawned, not yet registered and ready again
    handled: bool = False  # its death has been dealt with
    pump: Any = None  # the thread copying its output into its log
    epoch: int = 0  # this incarnation's (fencing)
    joined: Any = None  # a joined node's Join (the same process repeats it: the same instance)
    welcome: Any = None  # a joined node's Welcome, said again if its Join is repeated

    @property
    def remote(self) -> bool:
        return self.proc is None

    def alive(self) -> bool:
        """Its process runs (spawned here), or it is ready and not declared down (joined)."""
        return self.ready if self.proc is None else self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        if self.proc is None:
            return "(on another host: see its own output there)"
        if self.pump is not None:
            self.pump.join(2.0)  # the process is gone: its last lines are on their way
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"


@dataclass(eq=False)
class _PendingAsk:
    actor: str
    skill: str
    data: dict[str, Any] | None
    text: str | None
    timeout_s: float | None
    key: str
    task_id: str
    attempt: int = 1
    trace_id: str | None = None
    future: Future[Any] = field(default_factory=Future)  # the caller's: kept across re-asks


class Runtime:
    """A running set of nodes for one run. Use as a context manager; `stop()` always cleans up:
    nodes stopped (then terminated, then killed), sockets and their folder removed."""

    def __init__(
        self,
        spec: Spec,
        *,
        run_id: str | None = None,
        runs_dir: Path | str | None = None,
        on_event: Callable[[Event], None] | None = None,
        terminal: str | None = None,
    ) -> None:
        """`terminal` is the path of the user's terminal device (e.g. `os.ttyname(0)`), for
        actors that talk to a person (`Context.terminal`); None when the run has none."""
        spec = checked(spec, f"spec of run '{spec.run.name}'")
        models = [spec.model] + [a.model for n in spec.nodes for a in n.actors if a.model]
        if any(m.kind == "anthropic" for m in models) and not os.environ.get("ANTHROPIC_API_KEY"):
            raise SpecError(
                f"{spec.run.name}: a model of kind 'anthropic' needs ANTHROPIC_API_KEY in "
                "the environment (keys are never read from a spec); or run with --model offline"
            )
        self._trust = run_trust(spec)  # before anything is made: a bad [cluster] is the user's
        self.listen, advertise = spec.cluster.listen, spec.cluster.advertise
        self.spec = spec
        self.terminal = terminal
        self._cpus = placement(spec, sorted(os.sched_getaffinity(0)))  # node -> the CPUs it is pinned to
        self.run_id = check_id(run_id or new_run_id(), "run id")
        self.run_dir = private_dir(Path(runs_dir or default_runs_dir()) / self.run_id)
        self.trace_path = self.run_dir / "trace.jsonl"
        self.writer = TraceWriter(self.trace_path)
        if on_event is not None:
            self.writer.listeners.append(on_event)
        # Epochs start at this life's wall clock in microseconds: a restarted supervisor never
        # gives a new incarnation an epoch an incarnation of its earlier life still holds.
        self.membership = Membership(spec.supervision.heartbeat_timeout_s, first_epoch=time.time_ns() // 1000)
        self._members_lock = threading.Lock()  # membership is fed from the I/O thread too
        self._stale_at: dict[int, str] = {}  # epoch -> the endpoint of that incarnation
        self._fenced_at: dict[int, float] = {}  # epoch -> when it was last told it is fenced
        self.nodes: dict[str, NodeProcess] = {}
        self._controls: queue.Queue[Envelope] = queue.Queue()
        self._stats_waiters: dict[str, Future[dict[str, int]]] = {}
        self._drained: dict[str, Future[Drained]] = {}  # actor -> its answer to our Drain
        self._stopped = False
        self._failure: RunError | None = None
        self._started = False
        self._restarts: list[float] = []  # when nodes were restarted (for the intensity)
        self._asks: list[_PendingAsk] = []  # our asks still waiting for a reply
        self.started_at = time.time()
        self._unpack = msgspec.msgpack.Decoder()
        self._io_failure: str | None = None
        # The supervisor's own events are written at once (batch=False): they are few, and
        # what reads them (progress, the summary) should not wait.
        configure(
            self._record,
            batch=False,
            on_refused=lambda event, exc: self._unencodable(event, SUPERVISOR, exc),
            run_id=self.run_id,
            node=SUPERVISOR,
        )
        self.log = get_logger(actor=SUPERVISOR)
        # ipc paths are limited to ~100 bytes, so sockets live in a short temp folder, which
        # stop() removes (and this, if the messenger cannot even be made).
        self.sock_dir = Path(tempfile.mkdtemp(prefix="agentrt-"))
        try:
            if self.listen:  # across hosts: messages on the port, traces on the next one
                host, port = split(self.listen)
                where, trace_at = (
                    f"tcp://{host or '0.0.0.0'}:{port}",
                    f"tcp://{host or '0.0.0.0'}:{int(port) + 1}",
                )
            else:
                where, trace_at = self._ipc(SUPERVISOR), self._ipc("trace")
            try:
                self.messenger = Messenger(
                    name=SUPERVISOR,
                    endpoint=where,
                    limits=spec.limits,
                    trust=self._trust[SUPERVISOR],
                    collect_at=trace_at,
                    on_trace=self._collect,
                    on_death=self._io_died,
                )
            except zmq.ZMQError as exc:
                if not self.listen:
                    raise
                raise RunError(
                    f"cannot listen on {where} and {trace_at} ([cluster] listen: messages on its port, traces "
                    f"on the next): {exc}; is another run or program using them? choose another port"
                ) from None
            if self.listen:
                self.messenger.endpoint = public_endpoint(self.messenger.endpoint, advertise or "")
                a_host = split(self.messenger.endpoint)[0]
                self.trace_endpoint = f"tcp://{a_host}:{int(port) + 1}"
                self._node_bind = f"tcp://{host if host not in WILDCARD else '0.0.0.0'}:*"
                self._node_advertise = a_host
            else:
                self.trace_endpoint = trace_at
        except BaseException:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
            self.writer.close()
            raise
        self.messenger.on_control = self._on_control
        self.messenger.on_heartbeat = self._on_heartbeat
        # The state store: a SQLite file in the run's folder, or PostgreSQL with a login role
        # per node (set up in start(), dropped in stop()).
        location = os.environ.get("AGENTRT_STORE") or spec.run.store
        self.store = location or str(self.run_dir / "state.sqlite")
        self._pg = PostgresAdmin(location, self.run_id) if is_postgres(location) else None
        self._store_urls: dict[str, str] = {}

    def _ipc(self, name: str) -> str:
        return f"ipc://{self.sock_dir}/{name}.sock"

    # -- trace events and the I/O thread ---------------------------------------------

    def _record(self, batch: bytes) -> None:
        """Write a batch of the supervisor's own events (its recorder's sink)."""
        self._collect(SUPERVISOR, memoryview(batch))

    def _collect(self, node: str, frame: memoryview) -> None:
        """Write the events of one frame shipped by `node` (the run's node its frame
        authenticated as; no other process gets into the collector): a batch (an array of
        events) or one event. On the I/O thread: nothing here may raise."""
        try:
            got = self._unpack.decode(frame)
        except msgspec.DecodeError as exc:
            self.messenger.dead_letter("malformed", f"a trace event that is not msgpack: {exc}", peer=node, size=len(frame))
            return
        events = got if isinstance(got, list) else [got]
        if not all(isinstance(e, dict) for e in events):
            self.messenger.dead_letter(
                "malformed", "a trace event that is not a map (a frame holds a map, or an array of maps)", peer=node, size=len(frame)
            )
            events = [e for e in events if isinstance(e, dict)]
        # Each event names the node it came from, as its frame authenticated: a node cannot
        # pass its events off as another's (whose actors listeners, the A2A gateway, trust).
        # (A node's messenger names itself `node:<name>` in the events it records.)
        own = (node, f"node:{node}")
        forged: set[str] = set()
        for e in events:
            named = e.get("node")
            if named not in own:
                if named is not None:
                    forged.add(str(named))
                e["node"] = node
        if forged and hasattr(self, "messenger"):
            self.messenger.dead_letter(
                "forged-sender",
                f"trace events from node '{node}' named node(s) {sorted(forged)}: written as '{node}''s",
                peer=node,
            )
        for event, exc in self.writer.write_many(events):
            self._unencodable(event, node, exc)

    def _unencodable(self, event: dict[str, Any], node: str, exc: Exception) -> None:
        if not hasattr(self, "messenger"):  # an event of __init__'s, before there is one
            return
        self.messenger.dead_letter(
            "unencodable",
            f"trace event '{event_name(event)}' of '{event.get('actor')}' on '{node}' cannot be "
            f"written as JSON ({exc}); it was dropped",
            peer=node,
        )

    def _io_died(self, reason: str) -> None:
        """The supervisor's I/O thread died: the run cannot go on; the next check fails it."""
        self._io_failure = reason
        with contextlib.suppress(Exception):
            print(f"agentrt: the supervisor's I/O thread died: {reason}", file=sys.stderr, flush=True)

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Runtime:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Runtime:
        """Spawn every node, wait until all registered, then hand out the directory."""
        self.messenger.start()
        emit(self.log, RunStarting(spec=self.spec.run.name, nodes=len(self.spec.nodes)))
        private_dir(self.run_dir / "logs")
        if self._pg is not None:
            try:
                self._store_urls = self._pg.prepare((n.name, [a.name for a in n.actors]) for n in self.spec.nodes)
            except Exception as exc:
                raise RunError(
                    redact(f"cannot set up the state store at {describe(self.store)}: {type(exc).__name__}: {exc}")
                ) from None
            emit(self.log, StoreReady(backend="postgresql", nodes=len(self._store_urls)))
        for node in self.spec.nodes:
            if not self.spec.cluster.joins(node):  # one with a host joins (`agentrt node --join`)
                self._spawn(node)
        deadline = time.time() + self.spec.run.start_timeout_s
        everyone = [n.name for n in self.spec.nodes]
        self._await(
            lambda: all(n in self.nodes and self.nodes[n].registered for n in everyone),
            deadline,
            "register",
        )
        directory = self._directory()
        for address, endpoint in directory.routes.items():
            self.messenger.route(address, endpoint)
        for name in self.nodes:
            self._control(f"node:{name}", directory)
        self._await(lambda: all(n.ready for n in self.nodes.values()), deadline, "ready")
        write_private(
            self.run_dir / "nodes.json",
            msgspec.json.encode(
                {
                    "run_id": self.run_id,
                    "supervisor_pid": os.getpid(),
                    "sock_dir": str(self.sock_dir),
                    "nodes": {
                        n: {"pid": p.pid, "endpoint": p.endpoint} for n, p in self.nodes.items()
                    },
                }
            ),
        )
        emit(self.log, RunStarted(nodes={n: p.pid for n, p in self.nodes.items()}))
        self._started = True
        return self

    def _boot(self, node: Any, endpoint: str, epoch: int, *, joined: bool = False) -> NodeBoot:
        sup = self.spec.supervision
        return NodeBoot(
            run_id=self.run_id,
            node=node,
            endpoint=endpoint,
            supervisor_endpoint=self.messenger.endpoint,
            trace_endpoint=self.trace_endpoint,
            limits=self.spec.limits,
            default_model=self.spec.model,
            store=self._store_urls.get(node.name, self.store),
            run_dir=str(self.run_dir),
            heartbeat_s=self.spec.supervision.heartbeat_s,
            allow=self.spec.allow,
            sys_path=[self.spec.base_dir] if self.spec.base_dir else [],
            terminal=self.terminal,
            trust=self._trust[node.name]
            if node.name in self._trust
            else self._public_trust(node.name),
            epoch=epoch,
            advertise=self._node_advertise if self.listen else "",
            # Longer than the supervisor takes to declare it down: a short cut is healed by
            # fencing, a long one (or a dead supervisor) ends with the node stopping itself.
            lease_s=5 * sup.heartbeat_timeout_s if joined else 0.0,
            cpus=self._cpus.get(node.name, []),
        )

    def _public_trust(self, node: str) -> Trust:
        """What a joined node is told of the run's keys: public ones only (it has its own)."""
        own = self._trust[SUPERVISOR]
        return msgspec.structs.replace(
            own, me=node, keys=KeyPair(public=own.members[node], secret="")
        )

    def _spawn(self, node: Any) -> NodeProcess:
        """Start one node's process (again, on a restart: same endpoint, new pid)."""
        endpoint = self._node_bind if self.listen else self._ipc(f"node-{node.name}")
        with self._members_lock:
            epoch, _ = self.membership.admit(node.name, time.monotonic())
            self.messenger.epochs[node.name] = epoch
        boot = self._boot(node, endpoint, epoch)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log_path = child_path(self.run_dir / "logs", f"{node.name}.log", "node name")
        proc = subprocess.Popen(
            # -P: the working directory is not put on sys.path (files there must not shadow
            # modules); user modules come from the spec's folder only (sys_path).
            [sys.executable, "-P", "-m", "agentrt.runtime._node"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # copied into the log, redacted, by a pump thread
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops nodes
            env=env,
        )
        pump = threading.Thread(
            target=_pump_log, args=(proc.stdout, log_path), name=f"log-{node.name}", daemon=True
        )
        pump.start()
        assert proc.stdin is not None
        proc.stdin.write(msgspec.json.encode(boot))
        proc.stdin.close()
        entry = NodeProcess(
            name=node.name,
            proc=proc,
            log_path=log_path,
            endpoint=endpoint,
            pid=proc.pid,
            spec=node,
            pump=pump,
            epoch=epoch,
        )
        self.nodes[node.name] = entry
        if not self.listen:  # a tcp node's port is known when it registers
            self.messenger.route(f"node:{node.name}", endpoint)
        emit(self.log, NodeSpawned(node_name=node.name, node_pid=proc.pid))
        return entry

    def _await(self, done: Callable[[], bool], deadline: float, what: str) -> None:
        while not done():
            self._check_nodes()
            remaining = deadline - time.time()
            if remaining <= 0:
                absent = [n for n in self.spec.nodes if n.name not in self.nodes]
                waiting = [
                    n
                    for n, p in self.nodes.items()
                    if not (p.ready if what == "ready" else p.registered)
                ]
                if absent:  # nodes of other hosts that never joined
                    hint = "; ".join(
                        f"'{n.name}': run `agentrt node --join {self.messenger.endpoint} --key {n.name}.key` "
                        f"on {n.host or 'its host'}"
                        for n in absent
                    )
                    raise RunError(
                        f"nodes {', '.join(n.name for n in absent)} did not join within "
                        f"{self.spec.run.start_timeout_s:g}s (run.start_timeout_s): {hint}"
                    )
                raise RunError(
                    f"nodes {', '.join(waiting)} did not {what} within "
                    f"{self.spec.run.start_timeout_s:g}s (run.start_timeout_s); see {self.run_dir}/logs"
                )
            try:
                envelope = self._controls.get(timeout=min(0.2, remaining))
            except queue.Empty:
                continue
            self._apply_control(envelope)

    def _apply_control(self, envelope: Envelope) -> None:
        body = envelope.body
        if isinstance(body, Join):
            self._join(envelope, body)
            return
        node = self.nodes.get(getattr(body, "node", ""))
        if node is None:
            self.messenger.dead_letter(
                "unroutable", f"'{envelope.kind}' names no node of the run", envelope=envelope
            )
            return
        match body:
            case Register(cards=cards, endpoint=endpoint):
                refusal = self._claims(node.name, endpoint, node.spec, cards)
                if refusal is not None:  # (authenticated: the peer is the node it names)
                    self.messenger.dead_letter(*refusal, envelope=envelope, peer=node.name)
                    return
                for card in cards:
                    self.messenger.cards[card.name] = card
                node.registered = True
                if node.endpoint != endpoint:  # a tcp node's port is known now
                    node.endpoint = endpoint
                    self.messenger.route(f"node:{node.name}", endpoint)
                self._stale_at[node.epoch] = endpoint
                if node.restarting:  # it rejoins the run: everyone gets the new directory
                    self._publish()
            case StartFailed(error=error):
                self._failure = RunError(
                    redact(
                        f"node '{node.name}' could not start: {error}; the node's log is {node.log_path}; "
                        f"its last lines:\n{node.tail()}"
                    )
                )
                raise self._failure
            case Ready():
                node.ready = True
                with self._members_lock:
                    self.membership.ready(node.name, node.epoch, time.monotonic())
                if node.restarting:
                    node.restarting = False
                    emit(self.log, NodeRestarted(node_name=node.name, node_pid=node.pid))
                    self._tell_actors(NodeUp, node)
                    self._ask_again(node)
            case Stopped():
                pass
            case _:
                self.messenger.dead_letter(
                    "unroutable",
                    f"the supervisor takes no '{envelope.kind}' control",
                    envelope=envelope,
                )

    def _claims(
        self, name: str, endpoint: str, spec: Any, cards: list[AgentCard]
    ) -> tuple[DeadLetterReason, str] | None:
        """Why a node's Register (or Join) may not go into the directory everyone routes by:
        a card of an actor the spec places elsewhere, a card reached elsewhere than the node,
        or an endpoint another live node has (peers would expect the wrong key there)."""
        own = {a.name for a in spec.actors}
        for card in cards:
            if card.name not in own:
                return (
                    "forged-sender",
                    f"node '{name}' registered a card for '{card.name}', which is not one of its actors "
                    f"({', '.join(sorted(own))}); a node offers only its own",
                )
            if card.endpoint not in (None, endpoint):
                return (
                    "forged-sender",
                    f"node '{name}' registered '{card.name}' at {card.endpoint}, not at its own endpoint {endpoint}",
                )
        other = next(
            (n for n in self.nodes.values() if n.name != name and n.endpoint == endpoint and n.alive()),
            None,
        )
        if other is not None:
            return (
                "not-allowed",
                f"node '{name}' claims endpoint {endpoint}, which is node '{other.name}''s; each node "
                "has its own (give it another --listen / --advertise)",
            )
        return None

    def _on_heartbeat(self, beat: Heartbeat) -> None:
        """On the I/O thread: a beat of the current incarnation keeps it alive; one of a replaced
        incarnation (a partition healed, say) is answered `Fenced`, at its own endpoint."""
        with self._members_lock:
            commands = self.membership.heartbeat(beat.node, beat.epoch, time.monotonic())
        for command in commands:
            if isinstance(command, Fence):
                self._fence(command.node, command.epoch)
        node = self.nodes.get(beat.node)
        if not commands and node is not None and node.remote and node.epoch == beat.epoch:
            self.messenger.send_via_io(f"node:{beat.node}", Lease(node=beat.node, epoch=beat.epoch))

    def _fence(self, node: str, epoch: int) -> None:
        endpoint = self._stale_at.get(epoch)
        now = time.monotonic()
        # Beats queued through a partition arrive together: one Fenced per beat interval.
        if endpoint is None or now - self._fenced_at.get(epoch, -math.inf) < self.spec.supervision.heartbeat_s:
            return
        self._fenced_at[epoch] = now
        emit(self.log, NodeFenced(node_name=node, epoch=epoch))
        fenced = Fenced(
            node=node, epoch=epoch, reason="declared down, or replaced by a newer incarnation"
        )
        envelope = self.messenger.envelope(sender=SUPERVISOR, recipient=f"node:{node}", body=fenced)
        # For the fenced incarnation itself (the directory's is the next one, or none).
        envelope = msgspec.structs.replace(envelope, to_epoch=epoch)
        self.messenger.transport.send(endpoint, encode(envelope))

    def _join(self, envelope: Envelope, join: Join) -> None:
        """A node on another host asks in: admit it as a new incarnation (the one it replaces is
        down), and welcome it with its boot. A repeated Join of the same process gets the same
        Welcome again."""
        spec = next((n for n in self.spec.nodes if n.name == join.node), None)
        if spec is None or not self.spec.cluster.joins(spec):
            why = (
                "is not a node of the spec"
                if spec is None
                else "has no host in the spec: the supervisor spawns it"
            )
            self.messenger.dead_letter(
                "not-allowed", f"node '{join.node}' asked to join, but it {why}", envelope=envelope
            )
            return
        refusal = self._claims(join.node, join.endpoint, spec, [])
        if refusal is not None:
            self.messenger.dead_letter(*refusal, envelope=envelope, peer=join.node)
            return
        old = self.nodes.get(join.node)
        if old is not None and old.welcome is not None and old.joined == join:
            self._control(f"node:{join.node}", old.welcome)
            return
        with self._members_lock:
            heard = self.membership.heard_ago(join.node, time.monotonic())
        if old is not None and heard is not None and join.endpoint != old.endpoint:
            # A second process as the same node, elsewhere, while the first one runs: two
            # would replace each other for good. (A restart in place has the old endpoint: the
            # one it replaces is gone, as the address is its.) It asks again; once the first
            # stops or falls silent, it is admitted.
            self.messenger.dead_letter(
                "not-allowed",
                f"node '{join.node}' asked to join from {join.endpoint}, but its incarnation "
                f"{old.epoch} at {old.endpoint} runs (heard from {heard:.1f}s ago): one process "
                f"per node; this one is refused until that one stops or is silent for "
                f"{self.membership.timeout_s:g}s (supervision.heartbeat_timeout_s)",
                envelope=envelope,
                peer=join.node,
            )
            return
        with self._members_lock:
            epoch, commands = self.membership.admit(join.node, time.monotonic())
            self.messenger.epochs[join.node] = epoch
        if old is not None and any(isinstance(c, Down) for c in commands):
            self._lost(old, "replaced")
        boot = self._boot(spec, join.endpoint, epoch, joined=True)
        welcome = Welcome(node=join.node, epoch=epoch, boot=msgspec.json.encode(boot))
        self.nodes[join.node] = NodeProcess(
            name=join.node,
            proc=None,
            log_path=self.run_dir / "logs" / f"{join.node}.log",
            endpoint=join.endpoint,
            pid=join.pid,
            spec=spec,
            epoch=epoch,
            joined=join,
            welcome=welcome,
            restarting=self._started or old is not None,
        )
        self._stale_at[epoch] = join.endpoint
        self.messenger.route(f"node:{join.node}", join.endpoint)
        emit(
            self.log,
            NodeJoined(node_name=join.node, node_pid=join.pid, epoch=epoch, endpoint=join.endpoint),
        )
        self._control(f"node:{join.node}", welcome)

    def _lost(self, node: NodeProcess, why: str) -> None:
        """A joined node's incarnation is no longer current (silent, or replaced): the run's
        actors are told (read-only work goes elsewhere, stateful work is in doubt) and everyone
        gets the directory without it; its host's agent or its orchestrator starts another."""
        if node.handled:
            return
        node.handled = True
        emit(self.log, NodeLost(node_name=node.name, epoch=node.epoch, why=why))
        self.messenger.epochs[node.name] = self.membership.current(node.name)
        was_ready = node.ready
        node.ready = node.registered = False
        self._publish()  # first: late messages of the lost incarnation are stale everywhere
        if was_ready:
            self._tell_actors(NodeDown, node)

    def _on_control(self, envelope: Envelope) -> None:
        """On the I/O thread: answers (stats, drained) are handed to their waiter, the rest
        queued for the thread that supervises."""
        match envelope.body:
            case Stats(query_id=query_id, counts=counts):
                waiter = self._stats_waiters.pop(query_id, None)
                if waiter is not None:
                    waiter.set_result(dict(counts))
            case Drained(actor=actor) as drained:
                if actor != envelope.sender:  # only the actor asked to drain answers for itself
                    self.messenger.dead_letter(
                        "not-allowed",
                        f"'{envelope.sender}' answered a drain for '{actor}'; an actor answers "
                        "only its own",
                        envelope=envelope,
                    )
                    return
                found = self._drained.get(actor)
                if found is not None and not found.done():
                    found.set_result(drained)
            case _:
                self._controls.put(envelope)

    def _control(self, recipient: str, body: Body) -> None:
        self.messenger.send(
            self.messenger.envelope(sender=SUPERVISOR, recipient=recipient, body=body)
        )

    def _directory(self) -> Directory:
        routes = {f"node:{n}": p.endpoint for n, p in self.nodes.items()}
        routes.update({c.name: c.endpoint or "" for c in self.messenger.cards.values()})
        routes[SUPERVISOR] = self.messenger.endpoint
        cards: list[AgentCard] = list(self.messenger.cards.values())
        with self._members_lock:
            epochs = self.membership.epochs()
        return Directory(routes=routes, cards=cards, epochs=epochs)

    def _publish(self) -> None:
        """The directory to every registered node (a node came back, or one was lost)."""
        directory = self._directory()
        for name, node in self.nodes.items():
            if node.registered and (node.alive() or node.restarting):
                self._control(f"node:{name}", directory)

    def _ask_again(self, node: NodeProcess) -> None:
        """Asks of ours that were waiting on an actor of a node that died go to its restarted
        actor again, with the same idempotency key (a journaling actor resumes the work)."""
        here = {a.name for a in node.spec.actors}
        for pending in list(self._asks):
            if pending.actor not in here or pending.future.done():
                continue
            emit(self.log, AskAgain(actor=pending.actor, skill=pending.skill, idempotency_key=pending.key))
            # The attempt sent before is not answered by the restarted node (it was meant for
            # the one that died: refused there as stale), so its give-up, "undelivered", would
            # answer the caller while the new attempt runs: the new attempt answers instead.
            self.messenger.forget(pending.task_id, pending.attempt)
            pending.attempt += 1
            again = self._send_ask(pending, validate=False)
            original = pending.future
            again.add_done_callback(
                lambda f, original=original: None if original.done() else original.set_result(f.result())
            )

    def _tell_actors(self, news: type[NodeDown] | type[NodeUp], node: NodeProcess) -> None:
        """Death watch: every actor on the other live nodes hears of `node` going or coming."""
        body = news(node=node.name, pid=node.pid, actors=[a.name for a in node.spec.actors])
        for other in self.nodes.values():
            if other is node or not other.alive() or not other.ready:
                continue
            for actor in other.spec.actors:
                with contextlib.suppress(Exception):
                    self._control(actor.name, body)

    def _check_nodes(self) -> None:
        """Deal with nodes that died: restart them under the supervision strategy, or, past
        the restart intensity (or for the node running the job, which cannot resume yet),
        fail the run with the reason."""
        if self._stopped:
            return
        if self._failure is None and self._io_failure is not None:
            self._failure = RunError(
                f"the supervisor's I/O thread died, so the run cannot go on: {self._io_failure.splitlines()[0]}"
            )
        if self._failure is not None:
            raise self._failure
        # Death watch from heartbeats alone: a node on another host has no process to poll.
        with self._members_lock:
            silent = self.membership.tick(time.monotonic())
        for down in silent:
            node = self.nodes.get(down.node)
            if node is None or node.epoch != down.epoch or node.handled:
                continue
            emit(
                self.log,
                NodeUnresponsive(
                    node_name=node.name,
                    node_pid=node.pid,
                    silent_s=self.spec.supervision.heartbeat_timeout_s,
                ),
            )
            if node.remote:
                self._lost(node, "silent")
            else:
                node.proc.kill()  # hung or stopped: dealt with as dead (and restarted)
                node.proc.wait(5)
        for node in list(self.nodes.values()):
            code = None if node.remote else node.proc.poll()
            if code is None or node.handled:
                continue
            node.handled = True
            with self._members_lock:
                self.membership.exited(node.name, node.epoch)
            self._on_death(node, code)

    def _on_death(self, node: NodeProcess, code: int) -> None:
        sup = self.spec.supervision
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        emit(self.log, NodeDied(node_name=node.name, node_pid=node.pid, code=code))
        self._tell_actors(NodeDown, node)
        tail = f"last lines of {node.log_path}:\n{node.tail()}"
        restart = node.spec.restart
        if restart == "temporary" or (restart == "transient" and code == 0):
            emit(self.log, NodeNotRestarted(node_name=node.name, restart=restart))
            waiting = sorted({a.actor for a in self._asks if a.actor in {x.name for x in node.spec.actors}})
            if waiting:
                self._failure = RunError(
                    redact(
                        f"node '{node.name}' (pid {node.pid}) {how}; it is not restarted (restart = "
                        f"{restart}) and runs '{', '.join(waiting)}', which the run is waiting on; {tail}"
                    )
                )
                raise self._failure
            return
        now = time.time()
        self._restarts = [t for t in self._restarts if now - t < sup.period_s]
        if len(self._restarts) >= sup.max_restarts:
            self._failure = RunError(
                redact(
                    f"node '{node.name}' (pid {node.pid}) {how}; {len(self._restarts)} restarts in the "
                    f"last {sup.period_s:g}s already (supervision.max_restarts = {sup.max_restarts}): "
                    f"giving up instead of restarting again; {tail}"
                )
            )
            emit(self.log, SupervisorGaveUp(node_name=node.name, restarts=len(self._restarts)))
            raise self._failure
        self._restarts.append(now)
        order = [n.name for n in self.spec.nodes]
        if sup.strategy == "one-for-one":
            again = [node.name]
        elif sup.strategy == "one-for-all":
            again = order
        else:  # rest-for-one: it and every node started after it
            again = order[order.index(node.name) :]
        for name in again:
            old = self.nodes[name]
            if old.remote:  # its host's agent (or the orchestrator) restarts a joined node
                continue
            if old is not node and old.proc.poll() is None:
                old.handled = True  # stopped on purpose, not a death to deal with
                old.proc.kill()
                old.proc.wait(5)
                self._tell_actors(NodeDown, old)
            fresh = self._spawn(old.spec)
            # Once the run is up, a restarted node rejoins on its own; before, with the rest.
            fresh.restarting = self._started
        emit(self.log, NodeRestarting(node_name=node.name, strategy=sup.strategy, nodes=again))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every node in order (ask, then SIGTERM, then SIGKILL) and remove the sockets."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._stop_nodes(timeout_s)
            time.sleep(0.2)  # let the last trace events from the nodes arrive
            if self._pg is not None:
                try:
                    self._pg.release()
                except Exception as exc:  # the run is over either way; say what was left behind
                    emit(self.log, StoreReleaseFailed(error=f"{type(exc).__name__}: {exc}"))
            for node in self.nodes.values():
                if node.pump is not None:
                    node.pump.join(2.0)
        finally:
            try:
                self.messenger.stop()  # bounded, whatever state its I/O thread is in
            finally:
                self.writer.close()
                shutil.rmtree(self.sock_dir, ignore_errors=True)

    def _stop_nodes(self, timeout_s: float) -> None:
        for node in self.nodes.values():
            if node.remote and node.ready:  # on another host: asked to stop, not waited for
                with contextlib.suppress(Exception):
                    self._control(f"node:{node.name}", Stop())
        live = [n for n in self.nodes.values() if not n.remote and n.proc.poll() is None]
        if self._io_failure is not None:
            timeout_s = 0  # no Stop can reach them: go straight to SIGTERM
        else:
            for node in live:
                with contextlib.suppress(Exception):
                    self._control(f"node:{node.name}", Stop())
        deadline = time.time() + timeout_s
        for node in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(max(0.1, deadline - time.time()))
        for node in live:
            if node.proc.poll() is None:
                node.proc.terminate()
                try:
                    node.proc.wait(3)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        node.proc.wait(3)
        codes = {n.name: n.proc.returncode for n in self.nodes.values() if not n.remote}
        emit(self.log, RunStopped(exit_codes=codes, wall_s=round(time.time() - self.started_at, 3)))

    # -- talking to actors ----------------------------------------------------------------

    def ask_async(
        self,
        actor: str,
        skill: str,
        data: dict[str, Any] | None = None,
        *,
        text: str | None = None,
        timeout_s: float | None = None,
        validate: bool = True,
        idempotency_key: str | None = None,
        task_id: str | None = None,
        trace_id: str | None = None,
    ) -> Future[TaskResult]:
        """Ask an actor of the run to run a skill; the future resolves with its reply.
        Asks with the same `idempotency_key` run the skill once and share its result (one is
        made up when none is given); `task_id` names the task, so that `cancel` can reach it;
        `trace_id` is the trace every message and event the ask causes carries (a new one
        when not given). If the actor's node dies and is restarted meanwhile, the ask is sent
        again."""
        pending = _PendingAsk(
            actor,
            skill,
            data,
            text,
            timeout_s,
            idempotency_key or f"ask-{new_id()}",
            task_id or new_id(),
            trace_id=trace_id,
        )
        pending.future = future = self._send_ask(pending, validate=validate)
        self._asks.append(pending)
        future.add_done_callback(lambda _f: self._asks.remove(pending) if pending in self._asks else None)
        return future

    def _send_ask(self, pending: _PendingAsk, *, validate: bool) -> Future[TaskResult]:
        return self.messenger.ask(
            sender=SUPERVISOR,
            task_id=pending.task_id,
            recipient=pending.actor,
            skill=pending.skill,
            data=pending.data,
            text=pending.text,
            timeout_s=pending.timeout_s,
            validate_input=validate,
            idempotency_key=pending.key,
            attempt=pending.attempt,
            trace_id=pending.trace_id,
        )

    def cancel(self, actor: str, task_id: str, reason: str = "cancelled by the user") -> None:
        """Ask `actor` to cancel its running task `task_id` (the reply still arrives)."""
        self.messenger.send(
            self.messenger.envelope(
                sender=SUPERVISOR,
                recipient=actor,
                body=CancelTask(task_id=task_id, reason=reason),
                task_id=task_id,
            )
        )

    def ask(
        self,
        actor: str,
        skill: str,
        data: dict[str, Any] | None = None,
        *,
        text: str | None = None,
        timeout_s: float | None = None,
        validate: bool = True,
        idempotency_key: str | None = None,
    ) -> TaskResult:
        """`ask_async` and wait; fails with RunError if a node dies meanwhile."""
        future = self.ask_async(
            actor,
            skill,
            data,
            text=text,
            timeout_s=timeout_s,
            validate=validate,
            idempotency_key=idempotency_key,
        )
        return self.wait(future)

    def wait(self, future: Future[Any], timeout_s: float | None = None) -> Any:
        """Wait for `future`, supervising meanwhile: a node that dies is seen within 0.1 s
        (the OS reports the exit of a child; no heartbeat needed on one host) and restarted,
        and the other actors are told."""
        deadline = None if timeout_s is None else time.time() + timeout_s
        while True:
            self._check_nodes()
            while True:
                try:
                    self._apply_control(self._controls.get_nowait())
                except queue.Empty:
                    break
            try:
                return future.result(timeout=0.1)
            except TimeoutError:
                if deadline is not None and time.time() > deadline:
                    raise

    def drain(self, actor: str, timeout_s: float = 10.0) -> bool:
        """Ask `actor` (the run's entry) to take on no more work and wait, at most `timeout_s`,
        for its `Drained` answer: what it had in flight has finished (and is recorded). True if
        it drained in time. A later `--resume` carries on."""
        answer: Future[Drained] = Future()
        self._drained[actor] = answer
        emit(self.log, RunDraining(actor=actor, timeout_s=timeout_s))
        self.messenger.send(
            self.messenger.envelope(
                sender=SUPERVISOR, recipient=actor, body=Drain(reason="the run was asked to stop")
            )
        )
        try:
            drained = answer.result(timeout_s)
        except TimeoutError:
            emit(self.log, RunDrainTimedOut(actor=actor, timeout_s=timeout_s))
            return False
        finally:
            self._drained.pop(actor, None)
        emit(self.log, RunDrained(actor=actor, detail=drained.detail))
        return True

    def entry(self) -> str:
        """The actor that receives the job: the spec's `run.entry`, or else the one actor of
        the run whose card offers the run's skill (SpecError if none or several do)."""
        return entry_actor(self.spec.run, self.messenger.actors_with_skill(self.spec.run.skill))

    def node_stats(self, node: str, timeout_s: float = 5.0) -> dict[str, int]:
        """A node's message counters (sent, received, dead, dead.<reason>, resent, ...)."""
        query_id = new_id()
        future: Future[dict[str, int]] = Future()
        self._stats_waiters[query_id] = future
        self._control(f"node:{node}", StatsQuery(query_id=query_id))
        return self.wait(future, timeout_s)  # type: ignore[no-any-return]

    @property
    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.nodes.items()}


class RunSummary(msgspec.Struct, kw_only=True):
    """What `run` returns and `agentrt run` prints. `output` is what the entry actor
    returned; `report` is the same read as a `RunReport`, when it is one."""

    run_id: str
    run_dir: str
    state: str
    error: str
    output: dict[str, Any]
    wall_s: float
    task_time_s: float
    tasks: int
    input_tokens: int
    output_tokens: int
    pids: dict[str, int]
    cost_usd: float = 0.0

    @property
    def speedup(self) -> float:
        return self.task_time_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def report(self) -> RunReport | None:
        return report_from(self.output)


class _Tally:
    """Sums the skill runs of a run from its trace events, as they arrive."""

    def __init__(self, skill: str) -> None:
        self.entry: tuple[str | None, str] = (None, skill)  # the job's own task: not counted
        self.task_time = 0.0
        self.tasks = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if not isinstance(event, TaskStateChanged) or event.state == "working":
            return
        with self._lock:
            self.input_tokens += event.input_tokens
            self.output_tokens += event.output_tokens
            self.cost_usd += event.cost_usd
            if (event.actor, event.skill) == self.entry:
                return
            self.tasks += 1
            self.task_time += event.duration_s


def run(
    spec: Spec,
    *,
    goal: str | None = None,
    run_id: str | None = None,
    runs_dir: Path | str | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_started: Callable[[Runtime], None] | None = None,
    terminal: str | None = None,
) -> RunSummary:
    """Start the spec's nodes, send the job to its entry actor, wait, stop, and summarise.

    The wall time is the job's (from sending it to the reply); the task time is the sum of
    every skill run the job caused, which is what one sequential agent would have spent.
    """
    tally = _Tally(spec.run.skill)

    def listen(event: Event) -> None:
        tally(event)
        if on_event is not None:
            on_event(event)

    with Runtime(
        spec, run_id=run_id, runs_dir=runs_dir, on_event=listen, terminal=terminal
    ) as rt:
        entry = rt.entry()
        tally.entry = (entry, spec.run.skill)
        if on_started is not None:
            on_started(rt)
        t0 = time.time()
        # The job's key is the run's: `--resume` asks again with it, and a journaling entry
        # actor carries on where the run stopped.
        try:
            result = rt.ask(
                entry,
                spec.run.skill,
                spec.run.job_input(goal),
                timeout_s=spec.run.timeout_s,
                idempotency_key=f"run-{rt.run_id}",
            )
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: let the work in flight finish, then stop
            rt.drain(entry, timeout_s=spec.run.drain_s)
            raise
        wall = time.time() - t0
        state, error = result.state, result.error
        output = result.data or {}
        report = report_from(output) if result.ok else None
        if report is not None and report.state in ("failed", "partial"):  # a job's own failure,
            # or a budget that stopped it part-way: never reported as completed
            state, error = report.state, report.reason or "the job failed"
        time.sleep(0.1)  # the last task events may trail the reply by a few milliseconds
        summary = RunSummary(
            run_id=rt.run_id,
            run_dir=str(rt.run_dir),
            state=state,
            error=error,
            output=output,
            wall_s=wall,
            task_time_s=tally.task_time,
            tasks=tally.tasks,
            input_tokens=tally.input_tokens,
            output_tokens=tally.output_tokens,
            cost_usd=round(tally.cost_usd, 8),
            pids=dict(rt.pids, supervisor=os.getpid()),
        )
        emit(
            rt.log,
            RunFinished(
                state=summary.state,
                wall_s=round(wall, 3),
                task_time_s=round(tally.task_time, 3),
                tasks=tally.tasks,
            ),
        )
    # What the job returned and its error may quote secrets: they are redacted before the
    # summary is written, returned or printed (the rest is ours: ids, counts, paths).
    summary = msgspec.structs.replace(summary, error=redact(summary.error), output=redact(summary.output))
    write_private(rt.run_dir / "summary.json", msgspec.json.encode(summary))
    return summary
