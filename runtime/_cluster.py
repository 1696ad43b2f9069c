"""Nodes on several hosts: tcp endpoints as peers reach them, and the run's keys from key files."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

from agentrt.protocols import SpecError

from ._keys import SUPERVISOR, Trust, issue, load_key_file
from ._spec import Spec

WILDCARD = ("0.0.0.0", "::", "*", "")


def split(address: str) -> tuple[str, str]:
    """`host:port` (or `tcp://host:port`) -> (host, port); the port may be '*' or ''."""
    address = address.removeprefix("tcp://")
    host, _, port = address.rpartition(":")
    if not host:
        return address, ""
    return host.strip("[]"), port


def public_endpoint(bound: str, advertise: str = "") -> str:
    """The endpoint peers connect to, for a socket bound at `bound` (its real port, after a
    `*` bind): `advertise` replaces the host (and the port, when it gives one)."""
    if not bound.startswith("tcp://"):
        return bound  # ipc: the path is the address
    host, port = split(bound)
    if advertise:
        a_host, a_port = split(advertise)
        host, port = a_host or host, a_port or port
    if host in WILDCARD:
        raise SpecError(
            f"{bound} listens on every interface, so it does not say where other hosts reach it; "
            "give the address they use (--advertise HOST[:PORT], or [cluster] advertise)"
        )
    return f"tcp://{host}:{port}"


def address_towards(url: str) -> str:
    """This host's address on the route to `url` (tcp://host:port): what a node binds by
    default, so that the supervisor (and its peers on that network) can reach it."""
    parts = urlsplit(url)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # no packet is sent
        probe.connect((parts.hostname or "127.0.0.1", parts.port or 7600))
        return str(probe.getsockname()[0])


def actors_by_node(spec: Spec) -> dict[str, str]:
    return {a.name: n.name for n in spec.nodes for a in n.actors}


def run_trust(spec: Spec) -> dict[str, Trust]:
    """Every member's Trust the supervisor holds, by member: made now for a run on one host
    (handed to each node on stdin), or read from `[cluster] keys` for a run across hosts."""
    cluster = spec.cluster
    joining = [n.name for n in spec.nodes if cluster.joins(n)]
    if joining and not (cluster.listen and cluster.keys):
        raise SpecError(
            f"{spec.run.name}: node(s) {', '.join(joining)} join over TCP (they have a host, or [cluster] "
            "spawn is false): the supervisor needs [cluster] listen (or --listen) and keys (or --keys: the "
            "folder `agentrt keys gen SPEC -o DIR` wrote)"
        )
    if cluster.listen and not cluster.keys:
        raise SpecError(
            f"{spec.run.name}: [cluster] listen is set, so nodes join over TCP with keys from files: "
            "set [cluster] keys (or --keys) to the folder `agentrt keys gen SPEC -o DIR` wrote"
        )
    port = split(cluster.listen)[1]
    # The next port carries traces; libzmq would bind a port past 65535 modulo 65536, silently.
    if cluster.listen and not (port.isdigit() and 1 <= int(port) <= 65534):
        raise SpecError(
            f"{spec.run.name}: [cluster] listen {cluster.listen!r} must be HOST:PORT with a PORT from 1 to "
            "65534 (traces arrive on the next one), e.g. '0.0.0.0:7600'"
        )
    if not cluster.keys:
        return issue({n.name: [a.name for a in n.actors] for n in spec.nodes})
    try:
        own, local = cluster_trust(spec, cluster.keys)
    except ValueError as exc:  # a key file that cannot be read or used
        raise SpecError(str(exc)) from None
    return {SUPERVISOR: own, **local}


def cluster_trust(spec: Spec, keys: str) -> tuple[Trust, dict[str, Trust]]:
    """The supervisor's Trust and the spawned (local) nodes' from `keys`: a folder of
    `agentrt keys gen` (supervisor.key, <node>.key) or the supervisor's key file alone (then every
    node must be on another host). The allow-list is the members the key files list."""
    path = Path(keys)
    folder = path if path.is_dir() else None
    own = load_key_file(
        str(folder / f"{SUPERVISOR}.key" if folder else path), what="the supervisor's key file"
    )
    if own.me != SUPERVISOR:
        raise SpecError(
            f"{keys}: the key file is member '{own.me}''s; the supervisor needs supervisor.key"
        )
    missing = [n.name for n in spec.nodes if n.name not in own.members]
    if missing or own.hosts != actors_by_node(spec):
        raise SpecError(
            f"{keys}: the keys were made for another spec (nodes {', '.join(missing) or 'or actors'} differ); "
            "run `agentrt keys gen SPEC -o DIR` again and hand the new key files out"
        )
    local: dict[str, Trust] = {}
    for node in spec.nodes:
        if spec.cluster.joins(node):
            continue
        if folder is None:
            raise SpecError(
                f"node '{node.name}' has no host, so the supervisor spawns it and needs its key: give "
                f"[cluster] keys (or --keys) the folder of `agentrt keys gen`, not one key file"
            )
        trust = load_key_file(
            str(folder / f"{node.name}.key"), what=f"node '{node.name}''s key file"
        )
        if trust.members != own.members:
            raise SpecError(
                f"{folder}/{node.name}.key is from another `keys gen` than supervisor.key; make them again"
            )
        local[node.name] = trust
    return own, local
