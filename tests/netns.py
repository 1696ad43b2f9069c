"""Several "hosts" on one machine: Linux network namespaces joined by veth pairs to a bridge.

Each host has its own network stack and address in 198.18.0.0/24 (a range set aside for
benchmarking network devices, so nothing real is ever addressed); the root namespace holds
the bridge at .1. A link can be cut and restored (`partition`, `heal`) to make a partition.
Needs root and iproute2 (Debian's package; `scripts/dev.py test` installs it when missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

SUBNET = "198.18.0"


def available() -> str | None:
    """None if hosts can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Hosts:
    """The hosts made by `hosts()`: name -> address, and the commands to run inside one."""

    tag: str
    bridge: str
    addresses: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # host -> its veth end in the root ns
    root_address: str = f"{SUBNET}.1"

    def netns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def prefix(self, host: str) -> list[str]:
        """Prepend to a command to run it on `host`."""
        return ["ip", "netns", "exec", self.netns(host)]

    def partition(self, host: str) -> None:
        """Cut `host` off from every other host (its link goes down)."""
        _ip("link", "set", self.links[host], "down")

    def heal(self, host: str) -> None:
        _ip("link", "set", self.links[host], "up")


@contextlib.contextmanager
def hosts(names: list[str]) -> Iterator[Hosts]:
    """Make one namespace per name, each with an address on a shared bridge; remove them all
    afterwards, whatever happened."""
    tag = "agt" + uuid.uuid4().hex[:5]
    made = Hosts(tag=tag, bridge=f"{tag}br")
    try:
        _ip("link", "add", made.bridge, "type", "bridge")
        _ip("addr", "add", f"{made.root_address}/24", "dev", made.bridge)
        _ip("link", "set", made.bridge, "up")
        for i, name in enumerate(names, start=2):
            ns, outside, inside = made.netns(name), f"{tag}v{i}", f"{tag}p{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", made.bridge)
            _ip("link", "set", outside, "up")
            address = f"{SUBNET}.{i}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            made.addresses[name] = address
            made.links[name] = outside
        yield made
    finally:
        for name in names:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                _ip("netns", "del", made.netns(name))
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _ip("link", "del", made.bridge)
