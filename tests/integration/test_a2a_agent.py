"""External A2A agents as workers: `agentrt.actors:A2AAgent` in front of a real a2a-sdk server
(demos/a2a/agent.py, its own process, real HTTP), in real runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrt.protocols import A2ASent, Part
from agentrt.runtime import Runtime, read_trace, run

from .conftest import ROOT, make_spec

pytestmark = pytest.mark.integration

AGENT = ROOT / "demos" / "a2a" / "agent.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Remote:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def lines(self, name: str) -> list[str]:
        path = self.log / name
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def agent_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """The demo's style desk, an a2a-sdk server, in a process of its own (one per module)."""
    port = free_port()
    log = tmp_path_factory.mktemp("remote")
    proc = subprocess.Popen(
        [sys.executable, str(AGENT), "--port", str(port), "--log", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/.well-known/agent-card.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError(
                    f"the agent did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
            time.sleep(0.05)
        yield Remote(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def remote(agent_process: Remote) -> Remote:
    """The style desk with empty logs: each test counts the tasks and cancels it caused."""
    for name in ("tasks.log", "cancels.log"):
        (agent_process.log / name).unlink(missing_ok=True)
    return agent_process


def proxy(remote: Remote, **config: Any) -> dict[str, Any]:
    return {
        "name": "style",
        "class": "agentrt.actors:A2AAgent",
        "config": {"url": f"{remote.url}/.well-known/agent-card.json", **config},
    }


def plan_spec(remote: Remote, tasks: list[dict[str, Any]], final: str, **policy: Any) -> Any:
    return make_spec(
        {
            "planner": [
                {
                    "name": "producer",
                    "class": "agentrt.actors:Producer",
                    "config": {"strategy": "static", "final": final, "tasks": tasks},
                }
            ],
            "coord": [
                {"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": policy}
            ],
            "proxy": [proxy(remote)],
        },
        run={
            "entry": "coordinator",
            "skill": "run",
            "goal": "idempotency keys make retries safe. Always.",
            "timeout_s": 120,
        },
        model={"kind": "offline", "seed": 1, "latency_s": [0.0, 0.01]},
    )


def test_the_remote_skills_are_on_the_proxys_card_with_their_schemas(
    remote: Remote, runs_dir: Path
) -> None:
    spec = make_spec({"proxy": [proxy(remote)]}, run={"entry": "style", "skill": "headline"})
    with Runtime(spec, runs_dir=runs_dir) as rt:
        card = rt.messenger.card("style")
        assert sorted(s.id for s in card.skills) == ["confirm", "headline", "slow"]
        headline = card.contract("headline")
        assert card.skill("headline") is not None and headline.read_only
        assert headline.output_schema == {
            "type": "object",
            "required": ["headline"],
            "properties": {"headline": {"type": "string"}},
        }
        result = rt.ask("style", "headline", {"text": "hello there. more"})
        assert result.ok and result.data == {"headline": "Hello There"}
        with pytest.raises(Exception, match=r"field '\$.text'.*rule: required"):
            rt.ask("style", "headline", {"title": "no text"})  # checked here, never sent


def test_a_plan_with_an_a2a_worker(remote: Remote, runs_dir: Path) -> None:
    spec = plan_spec(remote, [{"id": "hl", "skill": "headline", "args": {"text": "{goal}"}}], "hl")
    summary = run(spec, runs_dir=runs_dir)
    assert summary.state == "completed", summary.error
    assert "Idempotency Keys Make Retries Safe" in str(summary.output)
    (line,) = remote.lines("tasks.log")
    assert line.startswith("headline ")


def test_a_timeout_cancels_the_remote_task(remote: Remote, runs_dir: Path) -> None:
    spec = plan_spec(
        remote,
        [{"id": "nap", "skill": "slow", "args": {"s": 60}, "timeoutS": 1.5, "maxAttempts": 1}],
        "nap",
    )
    summary = run(spec, runs_dir=runs_dir)
    assert summary.state != "completed" or "nap" in str(summary.output)
    for _ in range(200):
        if remote.lines("cancels.log"):
            break
        time.sleep(0.05)
    (cancelled,) = remote.lines("cancels.log")
    events = read_trace(Path(summary.run_dir) / "trace.jsonl")
    sent = [e for e in events if e.get("event") == "a2a.sent"]
    assert [e["remote_task_id"] for e in sent] == [cancelled]
    assert any(e.get("event") == "a2a.cancelled" and e["state"] == "canceled" for e in events)


def test_a_restarted_proxy_follows_the_remote_task_without_sending_it_again(
    remote: Remote, runs_dir: Path
) -> None:
    spec = make_spec({"proxy": [proxy(remote)]}, run={"entry": "style", "skill": "slow"})
    sent = threading.Event()
    with Runtime(spec, runs_dir=runs_dir) as rt:
        rt.writer.listeners.append(lambda e: sent.set() if isinstance(e, A2ASent) else None)
        future = rt.ask_async("style", "slow", {"s": 3}, idempotency_key="nap-1")
        assert sent.wait(30), "the remote task was sent and journaled"
        os.kill(rt.pids["proxy"], signal.SIGKILL)
        result = rt.wait(future, timeout_s=60)
        assert result.ok, result.error
        assert result.data == {"slept": 3}
    events = read_trace(rt.trace_path)
    assert len(remote.lines("tasks.log")) == 1  # sent once, followed again after the restart
    a2a = [e for e in events if e.get("event", "").startswith("a2a.")]
    assert [e["event"] for e in a2a] == ["a2a.agent", "a2a.sent", "a2a.agent", "a2a.resumed"]
    assert a2a[1]["remote_task_id"] == a2a[3]["remote_task_id"]


def test_input_required_becomes_an_escalation_ticket(remote: Remote, runs_dir: Path) -> None:
    spec = make_spec(
        {
            "proxy": [proxy(remote)],
            "desk": [
                {
                    "name": "human",
                    "class": "agentrt.actors:Human",
                    "config": {"fallback": "wait-file", "interactive": False, "wait_s": 60},
                }
            ],
        },
        run={"entry": "style", "skill": "confirm"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        future = rt.ask_async("style", "confirm", {"text": "ship it"})
        folder = rt.run_dir / "escalations"
        tickets: list[Path] = []
        for _ in range(400):
            tickets = (
                [p for p in folder.glob("a2a-*.json") if ".answer" not in p.name]
                if folder.exists()
                else []
            )
            if tickets:
                break
            time.sleep(0.05)
        (ticket_path,) = tickets
        ticket = json.loads(ticket_path.read_text())
        assert "proceed with 'ship it'?" in ticket["summary"] and ticket["options"] == [
            "continue",
            "abort",
        ]
        answer = {"ticketId": ticket["ticketId"], "decision": "continue", "feedback": "yes, ship"}
        ticket_path.with_name(f"{ticket['ticketId']}.answer.json").write_text(json.dumps(answer))
        result = rt.wait(future, timeout_s=60)
    assert result.ok, result.error
    assert result.data == {"confirmed": "yes, ship"}


def test_an_agentrt_run_as_the_remote_of_another(tmp_path: Path, runs_dir: Path) -> None:
    """A2A both ways: run B's A2AAgent in front of run A's gateway. `count` is stateful (the
    card's schema extension says so), so B runs it off the actor's thread; its input schema
    came through the card and is checked in B before anything is sent."""
    from agentrt.runtime import A2ASpec, Gateway

    serving = make_spec(
        {"n1": [{"name": "desk", "class": "a2a_actors:Desk"}]},
        run={"entry": "desk", "skill": "count"},
    )
    with Runtime(serving, runs_dir=runs_dir) as a:
        gateway = Gateway(a, A2ASpec(listen="127.0.0.1:0")).start()
        try:
            url = f"{gateway.url}/a2a/desk/.well-known/agent-card.json"
            calling = make_spec(
                {
                    "proxy": [
                        {
                            "name": "remote-desk",
                            "class": "agentrt.actors:A2AAgent",
                            "config": {"url": url},
                        }
                    ]
                },
                run={"entry": "remote-desk", "skill": "count"},
            )
            with Runtime(calling, runs_dir=runs_dir) as b:
                card = b.messenger.card("remote-desk")
                count = card.contract("count")
                assert card.skill("count") is not None
                assert not count.read_only and count.input_schema is not None
                assert [
                    b.ask("remote-desk", "count", {"dir": str(tmp_path)}).data for _ in range(2)
                ] == [
                    {"count": 1},
                    {"count": 2},
                ]
                with pytest.raises(Exception, match=r"field '\$.dir'.*rule: required"):
                    b.ask("remote-desk", "count", {})
        finally:
            gateway.stop()
    assert (tmp_path / "count").read_text() == "x\nx\n"


def test_a_remote_input_required_reaches_the_gateways_client(
    remote: Remote, runs_dir: Path
) -> None:
    """Input asked for two hops away: an A2A client calls the run's gateway, the run's
    A2AAgent calls the remote, the remote wants input. The ticket goes to the human actor,
    the gateway parks the client's task in INPUT_REQUIRED, and the client's answer travels
    back to the remote on its task."""
    import asyncio

    from a2a.client import ClientConfig, create_client
    from a2a.types import a2a_pb2 as pb

    from agentrt.runtime import A2ASpec, Gateway
    from agentrt.runtime import a2a as mapping

    spec = make_spec(
        {
            "proxy": [proxy(remote)],
            "desk": [
                {
                    "name": "human",
                    "class": "agentrt.actors:Human",
                    "config": {"fallback": "wait-file", "interactive": False, "wait_s": 60},
                }
            ],
        },
        run={"entry": "style", "skill": "confirm"},
    )

    def data(value: dict[str, Any]) -> pb.Part:
        return mapping.to_a2a(Part(data=value), pb.Part)

    async def call(url: str) -> None:
        client = await create_client(f"{url}/a2a/style", client_config=ClientConfig(streaming=True))
        ask = pb.Message(
            message_id="confirm-1", role=pb.ROLE_USER, parts=[data({"text": "ship it"})]
        )
        ask.metadata.update({"skill": "confirm"})
        first = [e async for e in client.send_message(pb.SendMessageRequest(message=ask))]
        status = first[-1].status_update.status
        assert status.state == pb.TASK_STATE_INPUT_REQUIRED
        ticket = mapping.first_data([mapping.from_a2a(p, Part) for p in status.message.parts]) or {}
        assert "proceed with 'ship it'?" in ticket["summary"]
        answer = pb.Message(
            message_id="confirm-1-answer",
            role=pb.ROLE_USER,
            task_id=first[0].task.id,
            parts=[data({"decision": "continue", "feedback": "yes, ship"})],
        )
        rest = [e async for e in client.send_message(pb.SendMessageRequest(message=answer))]
        assert rest[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
        task = await client.get_task(pb.GetTaskRequest(id=first[0].task.id))
        assert mapping.first_data([mapping.from_a2a(p, Part) for p in task.artifacts[0].parts]) == {
            "confirmed": "yes, ship"
        }
        await client.close()

    with Runtime(spec, runs_dir=runs_dir) as rt:
        gateway = Gateway(rt, A2ASpec(listen="127.0.0.1:0")).start()
        try:
            asyncio.run(call(gateway.url))
        finally:
            gateway.stop()
    assert len(remote.lines("tasks.log")) == 1


def test_a_running_remote_task_is_read_when_it_changes_not_on_a_timer(
    remote: Remote, runs_dir: Path
) -> None:
    """The remote streams, so the proxy subscribes to its task and reads it when an update
    comes: a task of 1.5 s costs a few GetTasks, not one every poll (0.1 s)."""
    spec = make_spec({"proxy": [proxy(remote)]}, run={"entry": "style", "skill": "slow"})
    with Runtime(spec, runs_dir=runs_dir) as rt:
        (remote.log / "calls.log").unlink(missing_ok=True)
        result = rt.ask("style", "slow", {"s": 1.5})
    assert result.ok and result.data == {"slept": 1.5}
    calls = remote.lines("calls.log")
    assert calls.count("SendMessage") == 1 and calls.count("SubscribeToTask") == 1
    assert 1 <= calls.count("GetTask") <= 4, calls


def test_a_retry_after_a_failed_remote_task_is_a_new_message(
    tmp_path: Path, runs_dir: Path
) -> None:
    """The remote (here an agentrt gateway) answers a repeated messageId with the task it
    made; so the coordinator's retry of a request whose remote task failed must be another
    message, or it would get the failure again."""
    from agentrt.runtime import A2ASpec, Gateway

    serving = make_spec(
        {"n1": [{"name": "chaos", "class": "custom_actors:Chaos"}]},
        run={"entry": "chaos", "skill": "flaky"},
    )
    with Runtime(serving, runs_dir=runs_dir) as a:
        gateway = Gateway(a, A2ASpec(listen="127.0.0.1:0")).start()
        try:
            url = f"{gateway.url}/a2a/chaos/.well-known/agent-card.json"
            calling = make_spec(
                {
                    "proxy": [
                        {
                            "name": "remote",
                            "class": "agentrt.actors:A2AAgent",
                            "config": {"url": url, "read_only": True},
                        }
                    ]
                },
                run={"entry": "remote", "skill": "flaky"},
            )
            with Runtime(calling, runs_dir=runs_dir) as b:
                args = {"dir": str(tmp_path), "fail_first": 1}
                first = b.ask("remote", "flaky", args, idempotency_key="job-1")
                assert first.state == "failed" and "flaky failure 1" in first.error
                again = b.ask("remote", "flaky", args, idempotency_key="job-1")  # a retry
                assert again.ok and again.data == {"calls": 2}, again.error
        finally:
            gateway.stop()
    tasks = [e for e in read_trace(a.trace_path) if e["event"] == "gateway.task"]
    assert [t["message_id"] for t in tasks] == ["remote:job-1", "remote:job-1:1"]


HOSTILE = Path(__file__).parent / "hostile_a2a_agent.py"


@contextlib.contextmanager
def hostile(*flags: str) -> Iterator[str]:
    """hostile_a2a_agent.py in its own process; yields its card's URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HOSTILE), "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/.well-known/agent-card.json"
    finally:
        proc.terminate()
        proc.wait(5)


def test_a_remote_card_whose_skills_lack_description_and_tags_is_served(
    runs_dir: Path,
) -> None:
    """A card the a2a-sdk serves (with a warning) though its skills have no description and
    no tags: the proxy offers them, with their contracts from the extension, and runs them.
    (Found by review: the proxy decoded the whole remote card into agentrt's AgentCard, whose
    skills must have both, and ProtoJSON leaves empty ones out, so the actor failed to start:
    "Object missing required field `tags` - at `$.skills[0]`", naming no remote.)"""
    with hostile("--sloppy-card") as url:
        spec = make_spec(
            {"proxy": [{"name": "h", "class": "agentrt.actors:A2AAgent", "config": {"url": url}}]},
            run={"entry": "h", "skill": "plain"},
        )
        with Runtime(spec, runs_dir=runs_dir) as rt:
            card = rt.messenger.card("h")
            assert card.contract("plain").read_only and not card.contract("empty_part").read_only
            result = rt.wait(rt.ask_async("h", "plain", {}), timeout_s=60)
        assert result.ok and result.data == {"ok": True}, result.error


@pytest.mark.parametrize("skill", ["empty_part", "empty_part_ro", "fail_empty_part"])
def test_a_remote_output_that_breaks_the_part_rule_fails_the_task(
    skill: str, runs_dir: Path
) -> None:
    """A remote that answers with a part holding no content (hostile_a2a_agent.py, an a2a-sdk
    server in its own process): the request fails at once, naming the remote and the rule, and
    is not retried (the remote did the work). A failure whose status message has such a part
    still fails with the remote's state. (Found by review: a stateful skill's request was never
    answered, its exception lost on the proxy's call thread, until a timeout, if any.)"""
    with hostile() as url:
        spec = make_spec(
            {"proxy": [{"name": "h", "class": "agentrt.actors:A2AAgent", "config": {"url": url}}]},
            run={"entry": "h", "skill": skill},
        )
        with Runtime(spec, runs_dir=runs_dir) as rt:
            result = rt.wait(rt.ask_async("h", skill, {}), timeout_s=60)
        assert result.state == "failed"
        if skill == "fail_empty_part":
            assert "A2A agent hostile: task" in str(result.error) and "ended failed" in str(
                result.error
            )
        else:
            assert "A2A agent hostile" in str(result.error)
            assert "breaks A2A's rules" in str(result.error)
            assert "exactly one of text, raw, url or data" in str(result.error)
