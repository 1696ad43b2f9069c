"""demos/a2a end to end: the style desk (an a2a-sdk server in its own process) as a worker of
the plan, and the run served by the gateway, called with the demo's a2a-sdk client."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import msgspec
import pytest

from agentrt.runtime import Gateway, Runtime, load_spec, read_events, read_trace, spec_from_dict

from .conftest import ROOT
from .test_a2a_agent import free_port

pytestmark = pytest.mark.integration

DEMO = ROOT / "demos" / "a2a"


def test_the_demo_served_and_called_with_the_sdk_client(runs_dir: Path) -> None:
    port = free_port()  # not the demo's fixed ports: other runs may hold them
    data = msgspec.to_builtins(load_spec(str(DEMO)))
    data["a2a"]["listen"] = "127.0.0.1:0"
    for node in data["nodes"]:
        for actor in node["actors"]:
            if actor["name"] == "desk":
                actor["config"]["port"] = port
            if actor["name"] == "style":
                actor["config"]["url"] = f"http://127.0.0.1:{port}/.well-known/agent-card.json"
    spec = spec_from_dict(data, "a2a demo (test)", base_dir=str(DEMO))
    loader = importlib.util.spec_from_file_location("a2a_demo_client", DEMO / "client.py")
    assert loader is not None and loader.loader is not None
    client = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(client)
    with Runtime(spec, runs_dir=runs_dir) as rt:
        gateway = Gateway(rt, spec.a2a).start()
        try:
            seen: list = []
            result = asyncio.run(
                client.ask(gateway.url, "Idempotency keys make retries safe. Why.", seen)
            )
        finally:
            gateway.stop()
    assert result["state"] == "completed" and result["answer"]
    ran = {
        (e["actor"], e["skill"])
        for e in read_trace(rt.trace_path)
        if e.get("event") == "task.state" and e.get("state") == "completed"
    }
    assert {("style", "headline"), ("worker", "lookup"), ("worker", "write")} <= ran
    # Every line the gateway, the A2A worker and the rest wrote is a typed event.
    assert len(read_events(rt.trace_path)) == len(read_trace(rt.trace_path))
    assert {"gateway.started", "gateway.task", "a2a.agent", "a2a.sent"} <= {
        e["event"] for e in read_trace(rt.trace_path)
    }
    assert result["results"]["headline"] == {"headline": "Idempotency Keys Make Retries Safe"}
    # The stream: the task, progress as the job's skill runs end, the result, the end. Progress
    # travels with the trace, apart from replies: from other nodes it is best effort.
    kinds = [e.WhichOneof("payload") for e in seen]
    assert kinds[0] == "task" and kinds[-2:] == ["artifact_update", "status_update"]
    progress = {
        " ".join(p.text for p in e.status_update.status.message.parts)
        for e in seen
        if e.WhichOneof("payload") == "status_update" and e.status_update.status.message.parts
    }
    runs = {
        "plan on producer: completed",
        "lookup on worker: completed",
        "headline on style: completed",
        "write on worker: completed",
    }
    assert progress and progress <= runs
