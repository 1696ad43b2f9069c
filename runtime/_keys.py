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


# -- key files: nodes on other hosts ------------------------------------------------------------
#
# Across hosts there is no stdin to hand a key on: `agentrt keys gen` writes one file per member
# (mode 0600), which an operator copies to that member's host or mounts as a secret. A file is
# the member's Trust as JSON: its own keypair, every member's public key (the allow-list: the
# supervisor admits those and no others; a node checks whom it connects to) and which node hosts
# which actor.


class KeyFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    member: str
    public: str
    secret: str
    members: dict[str, str]
    hosts: dict[str, str] = {}

    def trust(self) -> Trust:
        return Trust(
            me=self.member,
            keys=KeyPair(public=self.public, secret=self.secret),
            members=self.members,
            hosts=self.hosts,
        )

    def __repr__(self) -> str:
        return f"KeyFile(member={self.member!r}, secret=<hidden>)"

    __str__ = __repr__


def key_file(trust: Trust) -> bytes:
    """One member's key file (JSON; it holds the member's secret key)."""
    return msgspec.json.encode(
        KeyFile(
            member=trust.me,
            public=trust.keys.public,
            secret=trust.keys.secret,
            members=trust.members,
            hosts=trust.hosts,
        )
    )


def load_key_file(path: str, *, what: str = "key file") -> Trust:
    """Read a member's key file (from `agentrt keys gen`), or its JSON text; a clear error if it
    cannot be used."""
    if path.lstrip().startswith("{"):  # the file's content itself (AGENTRT_NODE_KEY from a secret)
        data, path = path.encode(), "(given as text)"
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError(f"{what} {path}: cannot be read ({exc.strerror}); make it with `agentrt keys gen`") from None
    try:
        found = msgspec.json.decode(data, type=KeyFile)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{what} {path}: not a key file of `agentrt keys gen` ({exc})") from None
    if found.members.get(found.member) != found.public:
        raise ValueError(
            f"{what} {path}: its public key is not the one its members list gives '{found.member}'"
        )
    return found.trust()
