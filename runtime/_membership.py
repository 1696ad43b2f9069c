"""Who is in the run: each node's current incarnation, as a sans-I/O core (events in, commands out).

A node incarnation (a process, spawned here or joined from another host) gets an epoch when it
is admitted; epochs only grow, across all nodes. At most one incarnation of a node is current.
An incarnation stops being current when its process is seen to exit, when it misses heartbeats
for `timeout_s` (on another host that is the only sign of a death or a partition), or when a new
incarnation of the same node is admitted. What a non-current incarnation sends is stale: the
shells drop it (`accepts`), and a non-current incarnation that is heard from again (its link is
back) is told to stop (`Fence`).

Events: `admit`, `ready`, `heartbeat`, `exited`, `tick` (time passes). Commands: `Down` (an
incarnation is no longer current: tell the run), `Up` (a node is current and ready again after
being down), `Fence` (tell a stale incarnation to stop). Time is an argument; no clock here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Down:
    node: str
    epoch: int
    why: Literal["exited", "silent", "replaced"]


@dataclass(frozen=True)
class Up:
    node: str
    epoch: int


@dataclass(frozen=True)
class Fence:
    node: str
    epoch: int


Command = Down | Up | Fence


@dataclass
class _Node:
    epoch: int = 0  # the current incarnation; 0: none
    ready: bool = False
    last_heard: float = 0.0
    was_down: bool = False  # a Down was said since it was last Up


class Membership:
    """The run's incarnations. `timeout_s`: silence after which a ready incarnation is down.
    `first_epoch`: the first epoch this life of the supervisor gives; a later life must start
    above every epoch an earlier one gave (the shell passes the wall clock in microseconds), so
    an incarnation admitted before a supervisor restart never shares its epoch with a new one."""

    def __init__(self, timeout_s: float, first_epoch: int = 1) -> None:
        if first_epoch < 1:
            raise ValueError(f"first_epoch must be at least 1, not {first_epoch}")
        self.timeout_s = timeout_s
        self._last_epoch = first_epoch - 1
        self._nodes: dict[str, _Node] = {}
        self._admitted: dict[int, str] = {}  # every epoch ever given -> its node

    def current(self, node: str) -> int:
        """The node's current epoch, 0 if none is current."""
        found = self._nodes.get(node)
        return found.epoch if found is not None else 0

    def heard_ago(self, node: str, now: float) -> float | None:
        """How long ago the node's current incarnation was last heard from (admitted, ready, a
        heartbeat), while it still holds the node; None when none does: none is current, or the
        current one is not ready and has been silent for longer than `timeout_s` (`tick` downs
        ready ones only, so one that died before it was ready would hold the node for ever)."""
        found = self._nodes.get(node)
        if found is None or not found.epoch:
            return None
        ago = now - found.last_heard
        return None if not found.ready and ago > self.timeout_s else ago

    def epochs(self) -> dict[str, int]:
        return {name: n.epoch for name, n in self._nodes.items()}

    def accepts(self, node: str, epoch: int) -> bool:
        """May what incarnation `epoch` of `node` sends be taken? Only the current one's."""
        return epoch != 0 and self.current(node) == epoch

    def admit(self, node: str, now: float) -> tuple[int, list[Command]]:
        """A new incarnation of `node` (spawned, or joined): its epoch, and a Down for the one it
        replaces, if that one was still current."""
        self._last_epoch += 1
        epoch = self._last_epoch
        self._admitted[epoch] = node
        state = self._nodes.setdefault(node, _Node())
        out: list[Command] = []
        if state.epoch:
            out.append(Down(node, state.epoch, "replaced"))
            state.was_down = True
        state.epoch, state.ready, state.last_heard = epoch, False, now
        return epoch, out

    def ready(self, node: str, epoch: int, now: float) -> list[Command]:
        """Incarnation `epoch` has the directory and takes work: Up if the node had been down."""
        state = self._nodes.get(node)
        if state is None or state.epoch != epoch or epoch == 0:
            return self._stale(node, epoch)
        state.ready, state.last_heard = True, now
        if state.was_down:
            state.was_down = False
            return [Up(node, epoch)]
        return []

    def heartbeat(self, node: str, epoch: int, now: float) -> list[Command]:
        state = self._nodes.get(node)
        if state is None or state.epoch != epoch or epoch == 0:
            return self._stale(node, epoch)
        state.last_heard = now
        return []

    def exited(self, node: str, epoch: int) -> list[Command]:
        """The process of incarnation `epoch` is gone (its exit was seen)."""
        state = self._nodes.get(node)
        if state is None or state.epoch != epoch or epoch == 0:
            return []
        return self._down(node, state, "exited")

    def tick(self, now: float) -> list[Command]:
        """Time passed: a ready incarnation silent for longer than `timeout_s` is down."""
        out: list[Command] = []
        for name, state in self._nodes.items():
            if state.epoch and state.ready and now - state.last_heard > self.timeout_s:
                out += self._down(name, state, "silent")
        return out

    def _down(self, node: str, state: _Node, why: Literal["exited", "silent"]) -> list[Command]:
        epoch = state.epoch
        state.epoch, state.ready, state.was_down = 0, False, True
        return [Down(node, epoch, why)]

    def _stale(self, node: str, epoch: int) -> list[Command]:
        """Heard from an incarnation that is not current: fence it, if it was ever one of this
        node's (an epoch never given is nobody's). Each time it is heard: a Fence lost on a
        link that failed again is said again at its next heartbeat."""
        if self._admitted.get(epoch) != node:
            return []
        return [Fence(node, epoch)]
