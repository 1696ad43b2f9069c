"""A node: one OS process hosting actors, started by the supervisor (`python -m ...`)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import threading
import traceback
from typing import Any

import msgspec

from agentrt.protocols import (
    Control,
    Envelope,
    Heartbeat,
    NodeOrphaned,
    NodeStarted,
    NodeStartFailed,
    NodeStopped,
)

from ._actor import Actor, Context, host
from ._messenger import Messenger, card_from_dict, card_to_dict
from ._models import model_from_config
from ._spec import ActorSpec, NodeBoot
from ._store import open_store
from ._tracing import configure, emit, get_logger

_packer = msgspec.msgpack.Encoder()


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
        self.refs: list[Any] = []
        # structlog first: loggers bound before `configure` would keep the default setup.
        configure(
            lambda event: self.messenger.transport.ship(_packer.encode(event)),
            run_id=boot.run_id,
            node=self.name,
        )
        self.messenger = Messenger(
            name=self.address,
            endpoint=boot.endpoint,
            limits=boot.limits,
            trace_to=boot.trace_endpoint,
        )
        self.log = get_logger(actor=self.address)
        self.messenger.routes["supervisor"] = boot.supervisor_endpoint
        self.messenger.on_control = self._on_control
        self.store = open_store(boot.store, run_id=boot.run_id)

    def _control(self, op: str, **args: Any) -> None:
        self.messenger.send(
            self.messenger.envelope(
                sender=self.address,
                recipient="supervisor",
                body=Control(op=op, args=args),  # type: ignore[arg-type]
            )
        )

    def _on_control(self, envelope: Envelope) -> None:
        body = envelope.body
        assert isinstance(body, Control)
        if body.op == "directory":
            self.messenger.set_directory(
                body.args.get("routes", {}), [card_from_dict(c) for c in body.args.get("cards", [])]
            )
            self._control("ready", node=self.name)
        elif body.op == "stats":
            stats = dict(self.messenger.stats)
            stats["dropped_traces"] = self.messenger.transport.dropped_traces
            self._control("stats", node=self.name, reply_to=body.args.get("id"), stats=stats)
        elif body.op == "stop":
            self.stopping.set()

    def _start_actors(self) -> list[dict[str, Any]]:
        cards = []
        for spec in self.boot.node.actors:
            cards.append(self._start_actor(spec))
        return cards

    def _start_actor(self, spec: ActorSpec) -> dict[str, Any]:
        cls = load_class(spec.cls)
        card = cls.card(spec.name, url=self.boot.endpoint)
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
        self.refs.append(host(actor, ctx, self.messenger, self.name))
        return card_to_dict(card)

    def run(self) -> int:
        self.messenger.start()
        try:
            cards = self._start_actors()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            emit(self.log, NodeStartFailed(error=error))
            self._control("register", node=self.name, pid=os.getpid(), error=error)
            self._shutdown()
            print(traceback.format_exc(), file=sys.stderr)
            return 1
        self._control(
            "register", node=self.name, pid=os.getpid(), endpoint=self.boot.endpoint, cards=cards
        )
        emit(self.log, NodeStarted(actors=[c["name"] for c in cards]))
        parent = os.getppid()
        beat = 0
        while not self.stopping.wait(self.boot.heartbeat_s):
            if os.getppid() != parent:  # supervisor gone: stop rather than linger as an orphan
                emit(self.log, NodeOrphaned(parent=parent))
                break
            beat += 1  # through the I/O thread, like everything else: a stuck node stops beating
            self.messenger.send_quiet(
                "supervisor", Heartbeat(node=self.name, pid=os.getpid(), seq=beat)
            )
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        for ref in self.refs:
            with contextlib.suppress(Exception):
                ref.stop(timeout=5)
        emit(self.log, NodeStopped(stats=dict(self.messenger.stats)))
        with contextlib.suppress(Exception):
            self._control("stopped", node=self.name)
        self.messenger.stop()
        self.store.close()


def main() -> int:
    _die_with_parent()
    boot = msgspec.json.decode(sys.stdin.buffer.read(), type=NodeBoot)
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
