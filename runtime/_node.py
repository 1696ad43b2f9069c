"""A node: one OS process hosting actors, started by the supervisor (`python -m ...`)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from typing import Any

import msgspec

from agentrt.protocols import (
    ActorStartError,
    AgentCard,
    Body,
    Directory,
    Envelope,
    Fenced,
    Heartbeat,
    Join,
    Lease,
    Limits,
    NodeFenced,
    NodeLeaseExpired,
    NodeOrphaned,
    NodeStarted,
    NodeStartFailed,
    NodeStopped,
    Ready,
    Register,
    StartFailed,
    Stats,
    StatsQuery,
    Stop,
    Stopped,
    Welcome,
    new_id,
)

from ._actor import Actor, Context, _Host, host
from ._cluster import address_towards, public_endpoint
from ._keys import SUPERVISOR, Trust
from ._messenger import Messenger
from ._models import model_from_config
from ._spec import ActorSpec, NodeBoot, refusal
from ._store import open_store
from ._tracing import configure, emit, event_name, get_logger

IO_DIED = 70  # the exit code of a node whose I/O thread died (EX_SOFTWARE)
FENCED = 75  # the exit code of a node told it was replaced (EX_TEMPFAIL: a host agent starts another)


def load_class(path: str) -> type[Actor]:
    """Import `module:Class` and check that it is an Actor subclass."""
    module_name, _, cls_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"cannot import module '{module_name}' for class '{path}': {exc}"
        ) from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ImportError(f"module '{module_name}' has no class '{cls_name}'")
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise TypeError(f"'{path}' is not a subclass of agentrt.runtime.Actor")
    return cls


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the supervisor dies (no orphans)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Node:
    def __init__(self, boot: NodeBoot) -> None:
        self.boot = boot
        self.name = boot.node.name
        self.address = f"node:{self.name}"
        self.stopping = threading.Event()
        self.fenced = False
        self.leased = time.monotonic()  # when the supervisor last renewed a joined node's lease
        self.refs: list[Any] = []
        self.hosts: list[_Host] = []
        # structlog first: loggers bound before `configure` would keep the default setup.
        configure(self._ship, on_refused=self._unencodable, run_id=boot.run_id, node=self.name)
        self.messenger = Messenger(
            name=self.address,
            endpoint=boot.endpoint,
            limits=boot.limits,
            trust=boot.trust,
            trace_to=boot.trace_endpoint,
            on_death=self._io_died,
        )
        self.messenger.epoch = boot.epoch
        self.messenger.endpoint = self.endpoint = public_endpoint(self.messenger.endpoint, boot.advertise)
        self.log = get_logger(actor=self.address)
        self.messenger.route(SUPERVISOR, boot.supervisor_endpoint)
        self.messenger.accepting = False  # until the directory comes: see Messenger._receive
        self.messenger.on_control = self._on_control
        if boot.allow:
            rules = boot.allow
            self.messenger.authorize = lambda env: refusal(
                rules, env.sender, env.recipient, getattr(env.body, "skill", "")
            )
        self.store = open_store(boot.store, run_id=boot.run_id)

    def _ship(self, batch: bytes) -> None:
        """Send one batch of trace events (a msgpack array) to the collector."""
        self.messenger.transport.ship(batch)

    def _unencodable(self, event: dict[str, Any], exc: Exception) -> None:
        """An event that cannot be encoded is dropped with an `unencodable` dead letter, never
        raised into the actor that logged it."""
        self.messenger.dead_letter(
            "unencodable", f"trace event '{event_name(event)}' of '{event.get('actor')}' cannot be encoded: {exc}"
        )

    def _io_died(self, reason: str) -> None:
        """The I/O thread died: nothing can be sent or received any more, so exit loudly (the
        supervisor sees the exit, restarts the node and shows this in its log tail) rather
        than linger as a node that looks alive and does nothing."""
        with contextlib.suppress(Exception):
            print(f"agentrt node '{self.name}': the I/O thread died; exiting. {reason}", file=sys.stderr, flush=True)
        os._exit(IO_DIED)

    def _control(self, body: Body) -> None:
        self.messenger.send(
            self.messenger.envelope(sender=self.address, recipient="supervisor", body=body)
        )

    def _on_control(self, envelope: Envelope) -> None:
        match envelope.body:
            case Directory(routes=routes, cards=cards, epochs=epochs):
                if epochs and epochs.get(self.name) != self.boot.epoch:  # the run moved on without us
                    now = epochs.get(self.name, 0)
                    self._fence(f"the directory's current incarnation is {now}" if now else "the directory has it down")
                    return
                self.messenger.set_directory(routes, cards, epochs)
                self.messenger.accepting = True
                self._control(Ready(node=self.name))
            case Lease(epoch=epoch) if epoch == self.boot.epoch:
                self.leased = time.monotonic()
            case Fenced(epoch=epoch, reason=reason) if epoch == self.boot.epoch:
                self._fence(reason or "the supervisor says it was replaced")
            case StatsQuery(query_id=query_id):
                counts = dict(self.messenger.stats)
                counts["dropped_traces"] = self.messenger.transport.dropped_traces
                counts.update({f"io.{where}": n for where, n in self.messenger.transport.errors.items()})
                self._control(Stats(node=self.name, query_id=query_id, counts=counts))
            case Stop():
                self.stopping.set()
            case _:
                self.messenger.dead_letter(
                    "unroutable", f"a node takes no '{envelope.kind}' control", envelope=envelope
                )

    def _fence(self, why: str) -> None:
        """This incarnation was declared down (a partition, a missed beat) and maybe replaced:
        stop, so nothing it still holds runs twice; a host agent may start a new one."""
        if self.fenced:
            return
        emit(self.log, NodeFenced(node_name=self.name, epoch=self.boot.epoch))
        print(f"agentrt node '{self.name}': incarnation {self.boot.epoch} was fenced ({why}): stopping", file=sys.stderr, flush=True)
        self.fenced = True
        self.stopping.set()

    def _start_actors(self) -> list[AgentCard]:
        cards = []
        for spec in self.boot.node.actors:
            try:
                cards.append(self._start_actor(spec))
            except ActorStartError:
                raise
            except Exception as exc:  # its class would not load, or its card is invalid
                raise ActorStartError(
                    f"actor '{spec.name}' ({spec.cls}) failed to start: {type(exc).__name__}: {exc}",
                    actor=spec.name,
                ) from exc
        return cards

    def _start_actor(self, spec: ActorSpec) -> AgentCard:
        cls = load_class(spec.cls)
        card = cls.card(spec.name, url=self.endpoint)
        self.messenger.cards[spec.name] = card
        model_config = spec.model or self.boot.default_model
        ctx = Context(
            name=spec.name,
            node=self.name,
            run_id=self.boot.run_id,
            messenger=self.messenger,
            model=model_from_config(model_config),
            quota=model_config.quota,
            store=self.store,
            config=dict(spec.config),
            run_dir=self.boot.run_dir,
            terminal=self.boot.terminal,
        )
        actor = cls()
        actor.ctx = ctx
        actor.config = ctx.config
        try:
            self.refs.append(host(actor, ctx, self.messenger, self.name))
        finally:
            if ctx._host is not None:
                self.hosts.append(ctx._host)
        # After on_start: the card now holds any skills the actor declared there.
        return self.messenger.cards[spec.name]

    def run(self) -> int:
        """Start every actor (each one's `on_start` has returned), register, then beat until
        told to stop. A start that fails is reported to the supervisor, which fails the run."""
        self.messenger.start()
        try:
            cards = self._start_actors()
        except ActorStartError as exc:
            actor, error = exc.actor, str(exc)
            emit(self.log, NodeStartFailed(actor=actor, error=error))
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            self._control(StartFailed(node=self.name, pid=os.getpid(), error=error, actor=actor))
            # Wait to be stopped (the supervisor fails the run with our report): exiting at once
            # would race the report with the supervisor seeing a death and restarting us.
            self.stopping.wait(self.boot.heartbeat_s * 10)
            self._shutdown()
            return 1
        self._control(
            Register(node=self.name, pid=os.getpid(), endpoint=self.endpoint, cards=cards)
        )
        emit(self.log, NodeStarted(actors=[c.name for c in cards], endpoint=self.endpoint))
        parent = os.getppid()
        beat = 0
        while not self.stopping.wait(self.boot.heartbeat_s):
            if os.getppid() != parent:  # supervisor gone: stop rather than linger as an orphan
                emit(self.log, NodeOrphaned(parent=parent))
                break
            silent = time.monotonic() - self.leased
            if self.boot.lease_s and silent > self.boot.lease_s:  # joined: its supervisor is gone
                emit(self.log, NodeLeaseExpired(silent_s=round(silent, 3)))
                self._fence(f"no lease from the supervisor for {silent:.1f}s")
                break
            for h in self.hosts:  # death watch inside the node: a dead actor's requests answered
                h.reap()
            beat += 1  # through the I/O thread, like everything else: a stuck node stops beating
            self.messenger.send_via_io(
                "supervisor", Heartbeat(node=self.name, pid=os.getpid(), seq=beat, epoch=self.boot.epoch)
            )
        self._shutdown()
        return FENCED if self.fenced else 0

    def _shutdown(self) -> None:
        for ref in self.refs:
            with contextlib.suppress(Exception):
                ref.stop(timeout=5)
        emit(self.log, NodeStopped(stats=dict(self.messenger.stats)))
        with contextlib.suppress(Exception):
            self._control(Stopped(node=self.name))
        self.messenger.stop()
        self.store.close()


def join(url: str, trust: Trust, *, listen: str = "", advertise: str = "", wait_s: float = 60.0) -> NodeBoot:
    """Ask the supervisor at `url` (tcp://host:port) to admit this node, as the member its key
    file names; its Welcome holds the boot. The node binds `listen` (host:port; default: this
    host's address towards the supervisor, a free port) and is reached at `advertise`."""
    bind = f"tcp://{listen}" if listen else f"tcp://{address_towards(url)}:*"
    welcomed: Future[Welcome] = Future()
    configure(lambda _event: None, node=trust.me)  # no run yet: its collector is not known
    probe = Messenger(name=f"node:{trust.me}", endpoint=bind, limits=Limits(), trust=trust)
    bound = probe.endpoint  # with the port a `*` bind was given: the node binds it again
    public = public_endpoint(bound, advertise)

    def heard(envelope: Envelope) -> None:
        if isinstance(envelope.body, Welcome) and envelope.body.node == trust.me and not welcomed.done():
            welcomed.set_result(envelope.body)

    probe.on_control = heard
    probe.route(SUPERVISOR, url)
    probe.start()
    ask = Join(node=trust.me, endpoint=public, instance=new_id(), pid=os.getpid())
    try:
        deadline = time.monotonic() + wait_s
        while not welcomed.done():
            # Said again now and then: the first may have gone out before the supervisor listened.
            probe.send_via_io(SUPERVISOR, ask)
            try:
                welcomed.result(min(3.0, max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no Welcome from the supervisor at {url} within {wait_s:g}s: is it running with "
                        f"[cluster] listen, does this host reach it, and is '{trust.me}' a node of its spec "
                        "with a host (its key from the same `agentrt keys gen`), and is no other process "
                        f"running as '{trust.me}' (a second one is refused while the first is heard from)?"
                    ) from None
    finally:
        probe.stop()
    welcome = welcomed.result()
    boot = msgspec.json.decode(welcome.boot, type=NodeBoot)
    # The boot names no secret: this node's own key file holds its keypair.
    return msgspec.structs.replace(boot, trust=trust, endpoint=bound, advertise=public, epoch=welcome.epoch)


def _pin(node: str, cpus: list[int]) -> None:
    """Run this process (every thread it will start) on `cpus`, as SCHED_BATCH: its threads
    share those CPUs and hand work to each other, and a woken thread that preempted the one
    holding the GIL would only wait for it (SCHED_BATCH turns off wakeup preemption)."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:  # CPUs taken away since the supervisor looked: run unpinned
        print(f"agentrt node '{node}': not pinned to CPUs {cpus}: {exc}", file=sys.stderr, flush=True)
        return
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def main() -> int:
    _die_with_parent()
    boot = msgspec.json.decode(sys.stdin.buffer.read(), type=NodeBoot)
    return serve(boot)


def serve(boot: NodeBoot) -> int:
    """Host the boot's actors until stopped; the exit code."""
    if boot.cpus:  # before any thread starts: threads inherit the main thread's CPUs
        _pin(boot.node.name, boot.cpus)
    for path in reversed(boot.sys_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    node = Node(boot)
    signal.signal(signal.SIGTERM, lambda *_: node.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: node.stopping.set())
    return node.run()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skill threads still running (a long task being abandoned) must not hold the exit:
    # everything worth keeping was flushed and closed by Node._shutdown.
    os._exit(code)
