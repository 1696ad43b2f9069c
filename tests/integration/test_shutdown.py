"""Ctrl-C / SIGTERM on `agentrt run` leaves no orphan processes and no stale ipc files."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import HERE, alive

pytestmark = pytest.mark.integration

SPEC = """
[run]
entry = "sleeper"
skill = "sleep"
input = { s = 600 }

[[nodes]]
name = "a"
actors = [{ name = "sleeper", class = "custom_actors:Sleeper" }]

[[nodes]]
name = "b"
actors = [{ name = "other", class = "custom_actors:Sleeper" }]
"""


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"agentrt exited early ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_node_and_removes_sockets(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "spec.toml").write_text(SPEC)
    shutil.copy(HERE / "custom_actors.py", tmp_path / "custom_actors.py")
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrt.runtime._cli", "run", str(tmp_path), "--runs-dir", str(runs), "--run-id", "r"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    nodes = wait_for(runs / "r" / "nodes.json", proc)
    pids = [n["pid"] for n in nodes["nodes"].values()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    assert Path(nodes["sock_dir"]).is_dir()

    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, err
    assert "interrupted" in err
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if alive(p)] == []
    assert not Path(nodes["sock_dir"]).exists()
    events = [json.loads(line) for line in (runs / "r" / "trace.jsonl").read_text().splitlines()]
    assert {e["node"] for e in events if e["event"] == "node.stopped"} == {"a", "b"}
    # The entry is no coordinator: it answers the typed Drain through the default on_drain
    # (nothing of its own in flight), so the supervisor does not wait out run.drain_s.
    assert any(e["event"] == "run.drained" and e["actor"] == "sleeper" for e in events)
    assert not any(e["event"] == "run.drain-timed-out" for e in events)
