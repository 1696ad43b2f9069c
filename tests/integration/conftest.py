"""Fixtures for tests with real processes: specs, a runs folder, and orphan checks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from agentrt.runtime import Runtime, Spec, spec_from_dict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def make_spec(nodes: dict[str, list[dict[str, Any]]], *, run: dict[str, Any] | None = None, **extra: Any) -> Spec:
    """A spec whose custom actors are imported from tests/integration."""
    data = {
        "run": {"start_timeout_s": 60, **(run or {})},
        "nodes": [{"name": n, "actors": actors} for n, actors in nodes.items()],
        **extra,
    }
    return spec_from_dict(data, "test-spec", base_dir=str(HERE))


def alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def as_member(
    rt: Runtime, member: str, to: str, kind: int = zmq.DEALER, linger_ms: int = 2000
) -> Iterator[zmq.Socket]:
    """A raw socket of another process that holds `member`'s keys (a stolen node key, or an
    actor process of the run that misbehaves), connected to the member `to` ("supervisor",
    a node name, or "trace" for the collector). Closing it waits up to `linger_ms` for what it
    has queued to go (libzmq fixes a connection's linger when it connects)."""
    trust = rt._trust[member]
    if to == "trace":
        endpoint, server = rt._ipc("trace"), "supervisor"
    elif to == "supervisor":
        endpoint, server = rt.messenger.endpoint, "supervisor"
    else:
        endpoint, server = rt.nodes[to].endpoint, to
    ctx = zmq.Context()
    sock = ctx.socket(kind)
    sock.curve_secretkey = trust.keys.secret.encode()
    sock.curve_publickey = trust.keys.public.encode()
    sock.curve_serverkey = trust.members[server].encode()
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


@pytest.fixture
def greeter_spec() -> Spec:
    return make_spec(
        {
            "n1": [{"name": "greeter", "class": "custom_actors:Greeter"}],
            "n2": [{"name": "relay", "class": "custom_actors:Relay", "config": {"to": "greeter"}}],
        },
        run={"entry": "relay", "skill": "relay", "input": {"name": "ada"}},
        limits={"max_frame_bytes": 65536, "max_depth": 16},
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("AGENTRT_RUNS_DIR", str(ROOT / "runs"))
