"""Who is who in a run: the CurveZMQ keypairs the supervisor issues, one per member per run.

A run's members are the supervisor and its nodes. The supervisor makes every keypair when the
run starts and hands each node its own on standard input with the boot config (never on argv or
in the environment, never in a file under runs/, never in a trace or a log). Each member also
gets every member's public key, so it can check a server it connects to and admit a client that
connects to it; and which node hosts which actor, so it can tell whether the member a frame came
from may speak for the envelope's sender.

On one host the endpoints are ipc:// sockets; across hosts they will be tcp://, with the same
`Trust` read from a file or a mounted secret instead of a pipe: nothing here depends on ipc.
"""

from __future__ import annotations

import msgspec
import zmq

SUPERVISOR = "supervisor"
NODE_PREFIX = "node:"  # a node's own address: "node:<name>"


class KeyPair(msgspec.Struct, frozen=True, kw_only=True):
    """One member's CurveZMQ keypair, Z85-encoded (40 characters each)."""

    public: str
    secret: str

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public=public.decode("ascii"), secret=secret.decode("ascii"))

    def __repr__(self) -> str:  # the secret never reaches a log line by way of a repr
        return f"KeyPair(public={self.public!r}, secret=<hidden>)"

    __str__ = __repr__


class Trust(msgspec.Struct, frozen=True, kw_only=True):
    """What one member of a run holds to authenticate the others: its own keypair, every
    member's public key (`members`: "supervisor" and each node name), and the node hosting
    each actor (`hosts`)."""

    me: str
    keys: KeyPair
    members: dict[str, str]
    hosts: dict[str, str] = {}

    def public_key(self, member: str) -> bytes | None:
        public = self.members.get(member)
        return public.encode("ascii") if public is not None else None

    def host_of(self, address: str) -> str | None:
        """The member that may send as `address` ("supervisor", "node:<name>" or an actor),
        or None if no member may."""
        if address == SUPERVISOR:
            return SUPERVISOR
        if address.startswith(NODE_PREFIX):
            name = address[len(NODE_PREFIX) :]
            return name if name in self.members and name != SUPERVISOR else None
        return self.hosts.get(address)

    def __repr__(self) -> str:
        return f"Trust(me={self.me!r}, members={sorted(self.members)!r})"

    __str__ = __repr__


def member_of_address(address: str) -> str | None:
    """The member whose own address `address` is ("supervisor" or "node:<name>"), else None."""
    if address == SUPERVISOR:
        return SUPERVISOR
    if address.startswith(NODE_PREFIX):
        return address[len(NODE_PREFIX) :]
    return None


def issue(nodes: dict[str, list[str]]) -> dict[str, Trust]:
    """A fresh keypair for the supervisor and for each node of `nodes` (node -> its actors),
    and each member's Trust, by member name."""
    if SUPERVISOR in nodes:
        raise ValueError(f"a node may not be named '{SUPERVISOR}': that name is the supervisor's")
    keys = {name: KeyPair.generate() for name in [SUPERVISOR, *nodes]}
    members = {name: pair.public for name, pair in keys.items()}
    hosts = {actor: node for node, actors in nodes.items() for actor in actors}
    return {
        name: Trust(me=name, keys=pair, members=members, hosts=hosts) for name, pair in keys.items()
    }
