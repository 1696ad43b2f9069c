"""The A2A gateway with the unmodified a2a-sdk client over real HTTP: a real run (node
processes, ZeroMQ) behind `Gateway`, the SDK's client (JSON-RPC and HTTP+JSON), and raw
HTTP where the wire itself is the point (error details, the 0.3 protocol)."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory, create_client
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import (
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from google.protobuf import json_format

from agentrt.protocols import AgentCard, Part
from agentrt.runtime import A2ASpec, Gateway, Runtime, SpecError, read_events, read_trace
from agentrt.runtime import a2a as mapping

from .conftest import make_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    spec = make_spec(
        {
            "n1": [{"name": "shouter", "class": "a2a_actors:Shouter"}],
            "n2": [{"name": "desk", "class": "a2a_actors:Desk"}, {"name": "slow", "class": "a2a_actors:Slow"}],
        },
        run={"entry": "shouter", "skill": "shout"},
        a2a={"listen": "127.0.0.1:0"},
    )
    with Runtime(spec, runs_dir=tmp_path_factory.mktemp("runs")) as rt:
        gw = Gateway(rt, spec.a2a).start()
        try:
            yield gw
        finally:
            gw.stop()


def message(
    *parts: pb.Part, skill: str | None = None, message_id: str | None = None, task_id: str = ""
) -> pb.Message:
    msg = pb.Message(
        message_id=message_id or f"m-{time.monotonic_ns()}",
        role=pb.ROLE_USER,
        parts=list(parts),
        task_id=task_id,
    )
    if skill:
        msg.metadata.update({"skill": skill})
    return msg


def data(value: dict[str, Any]) -> pb.Part:
    return mapping.to_a2a(Part(data=value), pb.Part)


def artifact_data(task: pb.Task) -> dict[str, Any]:
    parts = [mapping.from_a2a(p, Part) for p in task.artifacts[-1].parts]  # the answer: the last
    return mapping.first_data(parts) or {}


async def client_for(gw: Gateway, actor: str, **config: Any) -> Any:
    return await create_client(f"{gw.url}/a2a/{actor}", client_config=ClientConfig(**config))


async def send(client: Any, msg: pb.Message, **configuration: Any) -> list[pb.StreamResponse]:
    request = pb.SendMessageRequest(
        message=msg, configuration=pb.SendMessageConfiguration(**configuration)
    )
    return [event async for event in client.send_message(request)]


async def until_terminal(client: Any, task_id: str) -> pb.Task:
    for _ in range(600):  # polling, as a client of returnImmediately does; bounded, not timed
        task = await client.get_task(pb.GetTaskRequest(id=task_id))
        if task.status.state in mapping.TERMINAL:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not end: {task.status}")


def test_card_per_actor_and_entry_at_root(gateway: Gateway) -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            shouter = await A2ACardResolver(http, f"{gateway.url}/a2a/shouter").get_agent_card()
            desk = await A2ACardResolver(http, f"{gateway.url}/a2a/desk").get_agent_card()
            root = await A2ACardResolver(http, gateway.url).get_agent_card()
        assert shouter.name == "shouter" and [s.id for s in shouter.skills] == ["shout"]
        assert sorted(s.id for s in desk.skills) == ["count", "hold"]
        assert root == shouter  # the entry actor's card is also at the root
        bindings = [i.protocol_binding for i in desk.supported_interfaces]
        assert bindings == ["JSONRPC", "HTTP+JSON"]  # no node endpoint: it is internal
        urls = {i.url for i in desk.supported_interfaces}
        assert urls == {f"{gateway.url}/a2a/desk/"}
        caps = shouter.capabilities
        assert caps.streaming and not caps.push_notifications and not caps.extended_agent_card
        contract = mapping.from_a2a(shouter, AgentCard).contract("shout")
        assert contract.input_schema is not None and contract.input_schema["required"] == ["text"]
        assert contract.input_schema["properties"]["text"]["minLength"] == 1
        assert contract.read_only is True

    asyncio.run(go())


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_send_message_blocking(gateway: Gateway, binding: str) -> None:
    async def go() -> None:
        client = await client_for(
            gateway, "shouter", streaming=False, supported_protocol_bindings=[binding]
        )
        (event,) = await send(client, message(pb.Part(text="hello")))
        task = event.task
        assert task.status.state == pb.TASK_STATE_COMPLETED
        assert artifact_data(task) == {"text": "HELLO!"}
        assert task.history[0].parts[0].text == "hello"
        await client.close()

    asyncio.run(go())


def test_message_id_is_the_idempotency_key(gateway: Gateway, tmp_path: Path) -> None:
    async def go() -> None:
        client = await client_for(gateway, "desk", streaming=False)
        first = await send(
            client, message(data({"dir": str(tmp_path)}), skill="count", message_id="same")
        )
        again = await send(
            client, message(data({"dir": str(tmp_path)}), skill="count", message_id="same")
        )
        other = await send(client, message(data({"dir": str(tmp_path)}), skill="count"))
        assert [artifact_data(e[0].task)["count"] for e in (first, again, other)] == [1, 1, 2]
        assert (tmp_path / "count").read_text() == "x\nx\n"  # the repeated message ran once
        assert again[0].task.id == first[0].task.id != other[0].task.id  # and made no new task
        streamed = await client_for(gateway, "desk", streaming=True)
        (repeat,) = await send(
            streamed, message(data({"dir": str(tmp_path)}), skill="count", message_id="same")
        )
        assert repeat.task.id == first[0].task.id and artifact_data(repeat.task)["count"] == 1
        await streamed.close()
        await client.close()

    asyncio.run(go())


def test_a_message_id_as_long_as_agentrt_takes_is_a_task(gateway: Gateway) -> None:
    """A messageId of 256 characters (the most agentrt takes) becomes a task, and its retry
    gets that task. (Found by review: the runtime's idempotency key, `a2a:<caller>:<id>`, was
    longer than an envelope may carry, so the task failed with -32603 naming
    `idempotencyKey`, a field the client never sent.)"""

    async def go() -> None:
        client = await client_for(gateway, "shouter", streaming=False)
        msg = message(pb.Part(text="long"), message_id="m" * 256)
        (first,) = await send(client, msg)
        assert first.task.status.state == pb.TASK_STATE_COMPLETED, first.task.status
        assert artifact_data(first.task) == {"text": "LONG!"}
        (again,) = await send(client, msg)
        assert again.task.id == first.task.id

    asyncio.run(go())


def test_return_immediately_then_get_task(gateway: Gateway, tmp_path: Path) -> None:
    async def go() -> None:
        client = await client_for(gateway, "desk", streaming=False)
        msg = message(data({"dir": str(tmp_path), "s": 0.3}), skill="hold")
        (event,) = await send(client, msg, return_immediately=True)
        assert event.task.status.state not in mapping.TERMINAL
        # The same message again, blocking this time: it waits for the first one's task.
        (again,) = await send(client, msg)
        assert again.task.id == event.task.id and again.task.status.state == pb.TASK_STATE_COMPLETED
        task = await until_terminal(client, event.task.id)
        assert task.status.state == pb.TASK_STATE_COMPLETED
        assert artifact_data(task) == {"held": "done"}
        await client.close()

    asyncio.run(go())


def test_streaming_order(gateway: Gateway) -> None:
    async def go() -> None:
        client = await client_for(gateway, "shouter", streaming=True)
        events = await send(client, message(pb.Part(text="order")))
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[0] == "task"
        assert kinds[1:] == ["status_update", "artifact_update", "status_update"]
        assert events[1].status_update.status.state == pb.TASK_STATE_WORKING
        assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
        assert mapping.first_data(
            [mapping.from_a2a(p, Part) for p in events[2].artifact_update.artifact.parts]
        ) == {"text": "ORDER!"}
        await client.close()

    asyncio.run(go())


def test_progress_of_the_runs_a_task_caused(tmp_path: Path) -> None:
    """Each skill run a task causes is a WORKING status update on its stream, before the
    result: here the relay asks the greeter on its own node, whose events are ordered."""
    spec = make_spec(
        {
            "n1": [
                {"name": "relay", "class": "custom_actors:Relay", "config": {"to": "greeter"}},
                {"name": "greeter", "class": "custom_actors:Greeter"},
            ]
        },
        run={"entry": "relay", "skill": "relay"},
    )
    with Runtime(spec, runs_dir=tmp_path) as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0", expose=["relay"])).start()
        try:

            async def go() -> list[pb.StreamResponse]:
                client = await client_for(gw, "relay", streaming=True)
                events = await send(client, message(data({"name": "ada"}), skill="relay"))
                await client.close()
                return events

            events = asyncio.run(go())
        finally:
            gw.stop()
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds == ["task", "status_update", "status_update", "artifact_update", "status_update"]
    progress = events[2].status_update
    assert progress.status.state == pb.TASK_STATE_WORKING
    assert progress.status.message.parts[0].text == "greet on greeter: completed"
    assert mapping.from_struct(progress.metadata)["actor"] == "greeter"
    assert artifact_data(pb.Task(artifacts=[events[3].artifact_update.artifact])) == {
        "relayed": "hello ada"
    }


def test_each_result_that_passes_the_critic_streams_as_its_own_artifact(tmp_path: Path) -> None:
    """A plan served over A2A: each plan task's result is an artifact update of its own (its
    id the plan task's, whole: lastChunk) once the critic passed it, a held draft never; the
    run's answer is the last artifact, then the terminal status."""
    from .test_critic_gate import PLAN

    spec = make_spec(
        {
            "coord": [{"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": {"loops": {"max_iterations": 3}}}],
            "w": [{"name": "drafter", "class": "custom_actors:Drafter"}],
            "review": [
                {
                    "name": "critic",
                    "class": "agentrt.actors:Critic",
                    "config": {"guardrails": ["custom_actors:no_todo"], "pass_score": 0.7},
                }
            ],
        },
        run={"entry": "coordinator", "skill": "run"},
    )
    with Runtime(spec, runs_dir=tmp_path) as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0", expose=["coordinator"])).start()
        try:

            async def go() -> list[pb.StreamResponse]:
                client = await client_for(gw, "coordinator", streaming=True)
                events = await send(client, message(data({"goal": "publish", "plan": PLAN})))
                await client.close()
                return events

            events = asyncio.run(go())
        finally:
            gw.stop()
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task" and set(kinds[1:]) == {"status_update", "artifact_update"}
    assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
    assert all(
        e.status_update.status.state == pb.TASK_STATE_WORKING for e in events[1:-1] if e.HasField("status_update")
    ), "no terminal status before the last update"
    updates = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert all(u.last_chunk and not u.append for u in updates)
    assert [u.artifact.artifact_id for u in updates[:-1]] == ["draft", "publish"]  # one per result
    assert [u.artifact.name for u in updates[:-1]] == ["draft", "use"]
    draft = artifact_data(pb.Task(artifacts=[updates[0].artifact]))
    assert "round 2" in draft["text"] and "TODO" not in draft["text"], "the held draft never streams"
    answer = artifact_data(pb.Task(artifacts=[updates[-1].artifact]))
    assert answer["state"] == "completed" and answer["answer"].startswith("published: a careful draft")
    assert events.index(next(e for e in events if e.HasField("artifact_update"))) > 0


def test_a_running_task_takes_no_message(gateway: Gateway, tmp_path: Path) -> None:
    """Only a task that asks for input takes a message; a running one answers the spec's
    UnsupportedOperation, and one that ended too."""

    async def go() -> None:
        client = await client_for(gateway, "desk", streaming=False)
        msg = message(data({"dir": str(tmp_path), "s": 60}), skill="hold")
        (event,) = await send(client, msg, return_immediately=True)
        task_id = event.task.id
        with pytest.raises(UnsupportedOperationError, match="takes no message"):
            await send(client, message(pb.Part(text="and also"), task_id=task_id))
        await client.cancel_task(pb.CancelTaskRequest(id=task_id))
        with pytest.raises(UnsupportedOperationError):
            await send(client, message(pb.Part(text="too late"), task_id=task_id))
        await client.close()

    asyncio.run(go())


def test_a_task_that_failed_after_its_request_went_out_says_it_may_have_run(gateway: Gateway, tmp_path: Path) -> None:
    """A skill that outlives its timeout: the ask fails while the skill still runs. The A2A
    client is told it may have run (in the status text and as `maybeRan` in the task's
    metadata): sending it again as a new message may run it twice. Before, it read as a
    plain failure, the kind a client retries."""

    async def go() -> pb.Task:
        client = await client_for(gateway, "slow", streaming=False)
        (event,) = await send(client, message(data({"dir": str(tmp_path)}), skill="slow"))
        task = await until_terminal(client, event.task.id)
        await client.close()
        return task

    task = asyncio.run(go())
    assert task.status.state == pb.TASK_STATE_FAILED
    text = " ".join(p.text for p in task.status.message.parts)
    assert text.startswith("timed out after 0.5s") and "may have run" in text and "twice" in text
    assert mapping.from_struct(task.metadata).get("maybeRan") is True
    assert (tmp_path / "ran").is_file(), "it did run: the warning was true"


def test_a_store_write_that_waits_holds_up_no_other_request(gateway: Gateway) -> None:
    """The gateway writes each status of a task to the run's store. A write that waits (the
    SQLite file locked by another writer, a slow PostgreSQL) used to hold the event loop, and
    with it every other request and stream, for as long as it waited (up to the store's 30 s
    lock timeout). Now it waits on the gateway's writer thread: the card is served meanwhile,
    and the task completes once the store is free, written."""
    db = sqlite3.connect(gateway.runtime.store, isolation_level=None, timeout=10)

    async def go() -> pb.Task:
        client = await client_for(gateway, "shouter", streaming=False)
        sending = asyncio.ensure_future(send(client, message(pb.Part(text="held"))))
        async with httpx.AsyncClient(timeout=10) as http:  # a loop held by the write: ReadTimeout
            for _ in range(5):
                card = await http.get(f"{gateway.url}/.well-known/agent-card.json")
                assert card.status_code == 200 and card.json()["name"] == "shouter"
                await asyncio.sleep(0.2)
        assert not sending.done(), "its first status is still waiting for the store"
        db.execute("ROLLBACK")  # the other writer lets go
        (done,) = await sending
        await client.close()
        return done.task

    db.execute("BEGIN EXCLUSIVE")  # another writer holds the store
    try:
        task = asyncio.run(go())
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
    assert task.status.state == pb.TASK_STATE_COMPLETED
    assert gateway.store.get(f"task/{task.id}")["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


def test_cancel_task_cancels_at_the_worker(gateway: Gateway, tmp_path: Path) -> None:
    async def go() -> None:
        client = await client_for(gateway, "desk", streaming=False)
        msg = message(data({"dir": str(tmp_path), "s": 60}), skill="hold")
        (event,) = await send(client, msg, return_immediately=True)
        task_id = event.task.id
        for _ in range(400):
            if (tmp_path / "started").exists():
                break
            await asyncio.sleep(0.05)
        cancelled = await client.cancel_task(pb.CancelTaskRequest(id=task_id))
        assert cancelled.status.state == pb.TASK_STATE_CANCELED
        for _ in range(400):
            if (tmp_path / "cancelled").exists():
                break
            await asyncio.sleep(0.05)
        assert (tmp_path / "cancelled").read_text() == task_id  # the actor saw the cancel
        assert task_id not in gateway.jobs  # nothing kept for a reply nobody waits for
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(pb.CancelTaskRequest(id=task_id))
        await client.close()

    asyncio.run(go())


def test_list_tasks_pages_with_a_cursor(gateway: Gateway) -> None:
    async def go() -> None:
        client = await client_for(gateway, "shouter", streaming=False)
        context = f"ctx-{time.monotonic_ns()}"
        sent = set()
        for word in ("a", "b", "c"):
            msg = message(pb.Part(text=word))
            msg.context_id = context
            (event,) = await send(client, msg)
            sent.add(event.task.id)
        first = await client.list_tasks(pb.ListTasksRequest(context_id=context, page_size=2))
        assert len(first.tasks) == 2 and first.next_page_token
        second = await client.list_tasks(
            pb.ListTasksRequest(context_id=context, page_size=2, page_token=first.next_page_token)
        )
        assert len(second.tasks) == 1 and not second.next_page_token
        assert {t.id for t in [*first.tasks, *second.tasks]} == sent
        await client.close()

    asyncio.run(go())


def test_schema_error_names_the_field_and_the_rule(gateway: Gateway) -> None:
    async def go() -> None:
        client = await client_for(gateway, "shouter", streaming=False)
        with pytest.raises(InvalidParamsError) as caught:
            await send(client, message(data({"text": 5})))
        assert "field '$.text'" in caught.value.message and "rule: type" in caught.value.message
        await client.close()
        # On the wire: -32602 with a google.rpc.BadRequest field violation.
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": json_format.MessageToDict(message(data({"text": ""})))},
        }
        async with httpx.AsyncClient() as http:
            reply = (
                await http.post(
                    f"{gateway.url}/a2a/shouter/", json=body, headers={"A2A-Version": "1.0"}
                )
            ).json()
        assert reply["error"]["code"] == -32602
        (bad,) = [d for d in reply["error"]["data"] if d["@type"].endswith("google.rpc.BadRequest")]
        (violation,) = bad["fieldViolations"]
        assert violation["field"] == "message.parts[0].data.text"
        assert "rule: minLength" in violation["description"]

    asyncio.run(go())


def test_a_message_for_no_skill_is_refused(gateway: Gateway) -> None:
    async def go() -> None:
        client = await client_for(gateway, "desk", streaming=False)
        with pytest.raises(InvalidParamsError, match=r"metadata.skill"):
            await send(client, message(pb.Part(text="which one?")))
        with pytest.raises(InvalidParamsError, match=r"'nope', which it has not"):
            await send(client, message(pb.Part(text="x"), skill="nope"))
        await client.close()

    asyncio.run(go())


def test_unsupported_operations_answer_the_spec_error(gateway: Gateway) -> None:
    async def go() -> None:
        client = await client_for(gateway, "shouter", streaming=False)
        (event,) = await send(client, message(pb.Part(text="x")))
        with pytest.raises(PushNotificationNotSupportedError):
            await client.create_task_push_notification_config(
                pb.TaskPushNotificationConfig(task_id=event.task.id, url="http://127.0.0.1:9/hook")
            )
        with pytest.raises(PushNotificationNotSupportedError):
            await client.list_task_push_notification_configs(
                pb.ListTaskPushNotificationConfigsRequest(task_id=event.task.id)
            )
        with pytest.raises(TaskNotFoundError):
            await client.get_task(pb.GetTaskRequest(id="no-such-task"))
        await client.close()
        # A protocol version the gateway does not speak: VersionNotSupported (-32009).
        body = {"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": event.task.id}}
        async with httpx.AsyncClient() as http:
            reply = await http.post(
                f"{gateway.url}/a2a/shouter/", json=body, headers={"A2A-Version": "9.0"}
            )
            assert reply.json()["error"]["code"] == -32009
            # No extended card (the SDK's client does not even ask): UnsupportedOperation (-32004).
            body = {"jsonrpc": "2.0", "id": 8, "method": "GetExtendedAgentCard", "params": {}}
            reply = await http.post(
                f"{gateway.url}/a2a/shouter/", json=body, headers={"A2A-Version": "1.0"}
            )
            assert reply.json()["error"]["code"] == -32004

    asyncio.run(go())


def test_a_0_3_client_on_the_same_route(gateway: Gateway) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": "old",
        "method": "message/send",
        "params": {
            "message": {
                "kind": "message",
                "messageId": "m-0.3",
                "role": "user",
                "parts": [{"kind": "text", "text": "legacy"}],
            }
        },
    }
    reply = httpx.post(f"{gateway.url}/a2a/shouter/", json=body, timeout=30).json()
    task = reply["result"]
    assert task["kind"] == "task" and task["status"]["state"] == "completed"
    (part,) = task["artifacts"][0]["parts"]
    assert part["kind"] == "data" and part["data"] == {"text": "LEGACY!"}


def test_an_escalation_is_input_required_and_the_client_answers_it(tmp_path: Path) -> None:
    """The editor loop escalates (oscillation); through the gateway the ticket parks the A2A
    task in INPUT_REQUIRED, and the client's reply on the same task answers it."""
    from .test_editor_loop import demo_spec

    spec = demo_spec({"fallback": "wait-file", "interactive": False, "wait_s": 120})
    with Runtime(spec, runs_dir=tmp_path) as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0")).start()
        try:

            async def go() -> None:
                client = await client_for(gw, "coordinator", streaming=True)
                first = await send(client, message(pb.Part(text="why idempotency keys matter")))
                assert first[0].WhichOneof("payload") == "task"
                last = first[-1].status_update.status
                assert last.state == pb.TASK_STATE_INPUT_REQUIRED
                ticket = mapping.first_data([mapping.from_a2a(p, Part) for p in last.message.parts]) or {}
                assert ticket["reason"] == "oscillation" and "accept-best" in ticket["options"]
                task_id = first[0].task.id
                with pytest.raises(InvalidParamsError, match=r"decision 'maybe' is not one of"):
                    await send(client, message(data({"decision": "maybe"}), task_id=task_id))
                rest = await send(
                    client, message(data({"decision": "accept-best"}), task_id=task_id)
                )
                assert rest[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
                task = await client.get_task(pb.GetTaskRequest(id=task_id))
                out = artifact_data(task)
                (escalation,) = out["escalations"]
                assert escalation["answer"]["decision"] == "accept-best"
                assert escalation["answer"]["by"] == "A2A client"
                assert out["state"] == "completed" and out["answer"]
                await client.close()

            asyncio.run(go())
        finally:
            gw.stop()
    events = read_trace(rt.trace_path)
    assert len(read_events(rt.trace_path)) == len(events)  # every line a typed event
    (answered,) = [e for e in events if e["event"] == "gateway.answered"]
    assert answered["decision"] == "accept-best"
    assert any(e["event"] == "escalation.waiting" for e in events)


def test_with_callers_each_sees_only_its_own_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRT_A2A_TOKEN_ALICE", "alice-secret")
    monkeypatch.setenv("AGENTRT_A2A_TOKEN_BOB", "bob-secret")
    spec = make_spec(
        {
            "n1": [
                {"name": "shouter", "class": "a2a_actors:Shouter"},
                {"name": "desk", "class": "a2a_actors:Desk"},
            ]
        },
        run={"entry": "shouter", "skill": "shout"},
    )
    with Runtime(spec, runs_dir=tmp_path) as rt:
        with pytest.raises(
            SpecError,
            match=r"a2a.callers names 'carol': set its bearer token in \$AGENTRT_A2A_TOKEN_CAROL",
        ):
            Gateway(rt, A2ASpec(listen="127.0.0.1:0", callers=["carol"]))
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0", callers=["alice", "bob"])).start()
        try:

            async def as_caller(token: str, actor: str = "shouter") -> Any:
                http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"})
                return await create_client(
                    f"{gw.url}/a2a/{actor}",
                    client_config=ClientConfig(streaming=False, httpx_client=http),
                )

            async def go() -> None:
                alice, bob = await as_caller("alice-secret"), await as_caller("bob-secret")
                (event,) = await send(alice, message(pb.Part(text="mine")))
                task_id = event.task.id
                assert (await alice.get_task(pb.GetTaskRequest(id=task_id))).id == task_id
                assert [t.id for t in (await alice.list_tasks(pb.ListTasksRequest())).tasks] == [
                    task_id
                ]
                assert not (await bob.list_tasks(pb.ListTasksRequest())).tasks
                with pytest.raises(TaskNotFoundError):
                    await bob.get_task(pb.GetTaskRequest(id=task_id))
                card = (
                    await httpx.AsyncClient().get(
                        f"{gw.url}/a2a/shouter/.well-known/agent-card.json"
                    )
                ).json()
                assert (
                    card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"]
                    == "Bearer"
                )
                # One messageId from two callers: two tasks, and the skill runs for each.
                counts = []
                for token in ("alice-secret", "bob-secret"):
                    desk = await as_caller(token, "desk")
                    msg = message(data({"dir": str(tmp_path)}), skill="count", message_id="same")
                    (event,) = await send(desk, msg)
                    counts.append(artifact_data(event.task)["count"])
                assert counts == [1, 2]
                # A message on alice's task from bob: as if it did not exist.
                with pytest.raises(TaskNotFoundError):
                    await send(bob, message(pb.Part(text="hijack"), task_id=task_id))
                nobody = await httpx.AsyncClient().post(f"{gw.url}/a2a/shouter/", json={})
                assert nobody.status_code == 401 and "a2a.callers" in nobody.text

            asyncio.run(go())
        finally:
            gw.stop()


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_the_sdks_0_3_client_on_the_same_routes(gateway: Gateway, binding: str) -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            card = await A2ACardResolver(http, f"{gateway.url}/a2a/shouter").get_agent_card()
        for interface in card.supported_interfaces:
            interface.protocol_version = (
                "0.3"  # what a 0.3 agent's card says: the SDK picks its 0.3 transport
            )
        client = ClientFactory(
            ClientConfig(streaming=False, supported_protocol_bindings=[binding])
        ).create(card)
        assert type(client._transport).__name__.startswith("Compat")  # the SDK's 0.3 wire
        (event,) = await send(client, message(pb.Part(text="old")))
        assert event.task.status.state == pb.TASK_STATE_COMPLETED
        assert artifact_data(event.task) == {"text": "OLD!"}
        await client.close()

    asyncio.run(go())


def test_agentrt_serve_until_sigterm_finishing_what_is_in_flight(tmp_path: Path) -> None:
    """The CLI: `agentrt serve SPEC --a2a HOST:PORT` serves until SIGTERM; then it takes no
    new connection, lets the request in flight finish (run.drain_s), and stops its nodes."""
    import json
    import shutil
    import signal
    import subprocess
    import sys
    import threading
    from concurrent.futures import Future

    from .conftest import HERE, alive
    from .test_a2a_agent import free_port

    shutil.copy(HERE / "a2a_actors.py", tmp_path / "a2a_actors.py")
    (tmp_path / "spec.toml").write_text(
        '[run]\nentry = "desk"\nskill = "count"\n\n[[nodes]]\nname = "n1"\n'
        'actors = [{ name = "desk", class = "a2a_actors:Desk" }]\n'
    )
    port = free_port()
    cli = [sys.executable, "-m", "agentrt.runtime._cli", "serve", str(tmp_path)]
    proc = subprocess.Popen(
        [*cli, "--a2a", f"127.0.0.1:{port}", "--runs-dir", str(tmp_path), "--run-id", "served"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert f"serving A2A at http://127.0.0.1:{port}" in "".join(lines), "".join(lines)
        held: Future[dict[str, Any]] = Future()

        async def hold() -> dict[str, Any]:
            client = await create_client(
                f"http://127.0.0.1:{port}", client_config=ClientConfig(streaming=False)
            )
            # 3 s: longer than the 2 s any stop allows, shorter than run.drain_s (10 s)
            msg = message(data({"dir": str(tmp_path), "s": 3}), skill="hold")
            (event,) = await send(client, msg)  # blocking: its answer comes after SIGTERM
            await client.close()
            return artifact_data(event.task)

        def caller() -> None:
            try:
                held.set_result(asyncio.run(hold()))
            except BaseException as exc:
                held.set_exception(exc)

        threading.Thread(target=caller, daemon=True).start()
        for _ in range(400):
            if (tmp_path / "started").exists():
                break
            time.sleep(0.05)
        nodes = json.loads((tmp_path / "served" / "nodes.json").read_text())["nodes"]
        proc.send_signal(signal.SIGTERM)
        assert held.result(30) == {"held": "done"}
        assert proc.wait(30) == 130
        assert not any(alive(n["pid"]) for n in nodes.values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_https_with_a_certificate(tmp_path: Path) -> None:
    """a2a.tls_cert/tls_key: the gateway speaks HTTPS and its cards name https URLs."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    spec = make_spec(
        {"n1": [{"name": "shouter", "class": "a2a_actors:Shouter"}]},
        run={"entry": "shouter", "skill": "shout"},
    )
    with Runtime(spec, runs_dir=tmp_path) as rt:
        gw = Gateway(
            rt, A2ASpec(listen="127.0.0.1:0", tls_cert=str(cert), tls_key=str(key))
        ).start()
        try:
            assert gw.url.startswith("https://127.0.0.1:")

            async def go() -> None:
                http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert)))
                client = await create_client(
                    f"{gw.url}/a2a/shouter",
                    client_config=ClientConfig(streaming=False, httpx_client=http),
                )
                http_urls = {i.url for i in client._card.supported_interfaces}
                assert http_urls == {f"{gw.url}/a2a/shouter/"}
                (event,) = await send(client, message(pb.Part(text="secure")))
                assert artifact_data(event.task) == {"text": "SECURE!"}
                with pytest.raises(httpx.HTTPError):  # plain HTTP gets nothing from it
                    await httpx.AsyncClient().get(
                        gw.url.replace("https", "http") + "/.well-known/agent-card.json"
                    )

            asyncio.run(go())
        finally:
            gw.stop()


def test_a_served_task_survives_the_death_of_its_node(tmp_path: Path) -> None:
    """The gateway asks through the Runtime, so a node that dies mid-task is restarted and
    asked again (as `agentrt serve` supervises in its main thread): the A2A task completes."""
    import os
    import signal
    import threading
    from concurrent.futures import Future

    spec = make_spec(
        {"n1": [{"name": "desk", "class": "a2a_actors:Desk"}]},
        run={"entry": "desk", "skill": "hold"},
    )
    with Runtime(spec, runs_dir=tmp_path / "runs") as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0")).start()
        outcome: Future[pb.Task] = Future()

        async def go() -> pb.Task:
            client = await client_for(gw, "desk", streaming=False)
            msg = message(data({"dir": str(tmp_path), "s": 1}), skill="hold")
            (event,) = await send(client, msg, return_immediately=True)
            for _ in range(400):
                if (tmp_path / "started").exists():
                    break
                await asyncio.sleep(0.05)
            os.kill(rt.pids["n1"], signal.SIGKILL)
            task = await until_terminal(client, event.task.id)
            await client.close()
            return task

        def caller() -> None:
            try:
                outcome.set_result(asyncio.run(go()))
            except BaseException as exc:
                outcome.set_exception(exc)

        threading.Thread(target=caller, daemon=True).start()
        try:
            task = rt.wait(outcome, timeout_s=120)  # supervising meanwhile, as `serve` does
        finally:
            gw.stop()
    assert task.status.state == pb.TASK_STATE_COMPLETED
    assert artifact_data(task) == {"held": "done"}
    assert any(e["event"] == "node.restarted" for e in read_trace(rt.trace_path))


def serve_once(spec: Any, runs: Path, call: Any) -> tuple[Any, Path]:
    """One life of `agentrt serve --run-id kept`: a runtime and its gateway on run 'kept' in
    `runs`, `call(gateway)` run to its end, then both stopped. Returns what it returned and the
    run's trace."""
    with Runtime(spec, run_id="kept", runs_dir=runs) as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0")).start()
        try:
            return asyncio.run(call(gw)), rt.trace_path
        finally:
            gw.stop(grace_s=0.5)


def test_the_gateways_tasks_survive_a_restart_on_the_same_run(tmp_path: Path) -> None:
    """The gateway keeps its A2A tasks in the run's store: `agentrt serve --run-id` again (a new
    runtime and gateway on the same run) still answers GetTask and ListTasks for them; one
    that was running when it stopped is failed, saying why, not left WORKING forever."""
    spec = make_spec(
        {
            "n1": [{"name": "shouter", "class": "a2a_actors:Shouter"}],
            "n2": [{"name": "desk", "class": "a2a_actors:Desk"}],
        },
        run={"entry": "shouter", "skill": "shout"},
    )
    runs = tmp_path / "runs"

    async def first(gw: Gateway) -> tuple[str, str]:
        shouter = await client_for(gw, "shouter", streaming=False)
        (done,) = await send(shouter, message(pb.Part(text="kept")))
        assert done.task.status.state == pb.TASK_STATE_COMPLETED
        desk = await client_for(gw, "desk", streaming=False)
        hold = message(data({"dir": str(tmp_path), "s": 30}), skill="hold")
        (running,) = await send(desk, hold, return_immediately=True)
        while not (tmp_path / "started").exists():  # it runs at the worker when we stop
            await asyncio.sleep(0.02)
        await shouter.close()
        await desk.close()
        return done.task.id, running.task.id

    async def again(gw: Gateway, done_id: str, running_id: str) -> None:
        shouter = await client_for(gw, "shouter", streaming=False)
        task = await shouter.get_task(pb.GetTaskRequest(id=done_id))
        assert task.status.state == pb.TASK_STATE_COMPLETED and artifact_data(task) == {"text": "KEPT!"}
        listed = await shouter.list_tasks(pb.ListTasksRequest())
        assert [t.id for t in listed.tasks] == [done_id]
        desk = await client_for(gw, "desk", streaming=False)
        stopped = await desk.get_task(pb.GetTaskRequest(id=running_id))
        assert stopped.status.state == pb.TASK_STATE_FAILED
        assert "gateway restarted while this task ran" in stopped.status.message.parts[0].text
        # Written back failed: a later gateway finds it ended, at this time, not failed anew
        # (and newest) at each start, outliving newer tasks under keep_tasks.
        assert gw.store.get(f"task/{running_id}")["task"]["status"]["state"] == "TASK_STATE_FAILED"
        await shouter.close()
        await desk.close()

    (done_id, running_id), _ = serve_once(spec, runs, first)
    serve_once(spec, runs, lambda gw: again(gw, done_id, running_id))


def test_a_task_the_store_cannot_give_back_does_not_stop_the_next_gateway(
    tmp_path: Path,
) -> None:
    """What the store keeps is redacted (secrets never reach it), and a redaction can break a
    task's JSON: here a raw part whose base64 starts like a Google API key (`AIza...`), which
    any client may send. The next gateway on the run still starts, serves the tasks it can read
    back, and names the one it cannot in a `gateway.warning`. (Found by review: the gateway
    failed to start, `Application startup failed`, for every later `serve --run-id`.)"""
    spec = make_spec(
        {"n1": [{"name": "shouter", "class": "a2a_actors:Shouter"}]},
        run={"entry": "shouter", "skill": "shout"},
    )
    runs = tmp_path / "runs"

    async def first(gw: Gateway) -> tuple[str, str]:
        shouter = await client_for(gw, "shouter", streaming=False)
        (good,) = await send(shouter, message(pb.Part(text="kept")))
        looks_like_a_key = base64.b64decode("AIza" + "A" * 36)
        (bad,) = await send(shouter, message(pb.Part(text="raw"), pb.Part(raw=looks_like_a_key)))
        assert bad.task.status.state == pb.TASK_STATE_COMPLETED
        await shouter.close()
        return good.task.id, bad.task.id

    async def again(gw: Gateway, good_id: str, bad_id: str) -> None:
        shouter = await client_for(gw, "shouter", streaming=False)
        task = await shouter.get_task(pb.GetTaskRequest(id=good_id))
        assert artifact_data(task) == {"text": "KEPT!"}
        with pytest.raises(TaskNotFoundError):
            await shouter.get_task(pb.GetTaskRequest(id=bad_id))
        (event,) = await send(shouter, message(pb.Part(text="still")))
        assert artifact_data(event.task) == {"text": "STILL!"}
        await shouter.close()

    (good_id, bad_id), _ = serve_once(spec, runs, first)
    _, trace = serve_once(spec, runs, lambda gw: again(gw, good_id, bad_id))
    warnings = [e["text"] for e in read_trace(trace) if e["event"] == "gateway.warning"]
    assert any(f"task/{bad_id}" in w and "could not be read back" in w for w in warnings), warnings


def test_a_request_larger_than_a_frame_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """No client makes the gateway (in the supervisor's process) hold, trace or store more than
    one message to an actor may carry: a body over `limits.max_frame_bytes` is 413, with or
    without a Content-Length, and the gateway goes on serving. (Found by review: a 40 MB raw
    part was taken whole, kept in the task's history and written to the run's store, 214 MB
    on disk, stalling every other client meanwhile.)"""
    spec = make_spec(
        {"n1": [{"name": "shouter", "class": "a2a_actors:Shouter"}]},
        run={"entry": "shouter", "skill": "shout"},
        limits={"max_frame_bytes": 256 * 1024},
    )

    def body(raw_bytes: int) -> bytes:
        msg = message(pb.Part(text="big"), pb.Part(raw=b"x" * raw_bytes))
        request = pb.SendMessageRequest(message=msg)
        return json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": json_format.MessageToDict(request)}
        ).encode()

    with Runtime(spec, runs_dir=tmp_path) as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0")).start()
        try:
            url, headers = f"{gw.url}/a2a/shouter/", {"A2A-Version": "1.0", "Content-Type": "application/json"}
            big = body(300 * 1024)
            declared = httpx.post(url, content=big, headers=headers, timeout=60)
            assert declared.status_code == 413 and "limits.max_frame_bytes" in declared.text
            chunked = httpx.post(url, content=iter([big[:1000], big[1000:]]), headers=headers, timeout=60)
            assert chunked.status_code == 413
            fits = httpx.post(url, content=body(1000), headers=headers, timeout=60)
            assert fits.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
            kept = gw.store.keys()
            assert len([k for k in kept if k.startswith("task/")]) == 1  # only the one that fits
        finally:
            gw.stop()


def test_after_a_restart_each_caller_still_sees_only_its_own_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tasks read back from the run's store keep their caller: after `serve --run-id`
    again, bob's GetTask, ListTasks, SubscribeToTask and CancelTask do not find alice's task,
    and no caller's token reaches the store."""
    monkeypatch.setenv("AGENTRT_A2A_TOKEN_ALICE", "alice-Secret-1")
    monkeypatch.setenv("AGENTRT_A2A_TOKEN_BOB", "bob-Secret-22")
    spec = make_spec(
        {"n1": [{"name": "shouter", "class": "a2a_actors:Shouter"}]},
        run={"entry": "shouter", "skill": "shout"},
    )
    runs = tmp_path / "runs"

    def serving(call: Any) -> Any:
        with Runtime(spec, run_id="kept", runs_dir=runs) as rt:
            gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0", callers=["alice", "bob"])).start()
            try:
                return asyncio.run(call(gw))
            finally:
                gw.stop(grace_s=0.5)

    async def as_caller(gw: Gateway, token: str, streaming: bool = False) -> Any:
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        config = ClientConfig(streaming=streaming, httpx_client=http)
        return await create_client(f"{gw.url}/a2a/shouter", client_config=config)

    async def first(gw: Gateway) -> str:
        alice = await as_caller(gw, "alice-Secret-1")
        (done,) = await send(alice, message(pb.Part(text="mine")))
        return str(done.task.id)

    async def again(gw: Gateway, task_id: str) -> None:
        alice, bob = await as_caller(gw, "alice-Secret-1"), await as_caller(gw, "bob-Secret-22")
        assert artifact_data(await alice.get_task(pb.GetTaskRequest(id=task_id))) == {
            "text": "MINE!"
        }
        assert [t.id for t in (await alice.list_tasks(pb.ListTasksRequest())).tasks] == [task_id]
        assert not (await bob.list_tasks(pb.ListTasksRequest())).tasks
        with pytest.raises(TaskNotFoundError):
            await bob.get_task(pb.GetTaskRequest(id=task_id))
        with pytest.raises(TaskNotFoundError):
            await bob.cancel_task(pb.CancelTaskRequest(id=task_id))
        bob_streams = await as_caller(gw, "bob-Secret-22", streaming=True)
        with pytest.raises(TaskNotFoundError):
            async for _ in bob_streams.subscribe(pb.SubscribeToTaskRequest(id=task_id)):
                pass

    task_id = serving(first)
    serving(lambda gw: again(gw, task_id))
    stored = (runs / "kept" / "state.sqlite").read_bytes()
    assert task_id.encode() in stored and b"Secret-" not in stored


def test_each_callers_latest_ended_tasks_are_kept_and_older_ones_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway kept every A2A task for good, in memory and in the run's store: a caller
    could grow a long-lived `agentrt serve` without bound. Now each caller's `keep_tasks`
    latest ended tasks per actor are kept; older ended ones are forgotten (GetTask: not
    found), in the store too, also across a restart; a running task is never forgotten, and
    another caller's tasks are not the count's. A repeat of a forgotten task's message is
    refused, saying so, and does not run it again."""
    monkeypatch.setenv("AGENTRT_A2A_TOKEN_ALICE", "alice-Secret-1")
    monkeypatch.setenv("AGENTRT_A2A_TOKEN_BOB", "bob-Secret-22")
    spec = make_spec({"n1": [{"name": "desk", "class": "a2a_actors:Desk"}]})
    runs = tmp_path / "runs"

    def serving(keep: int, call: Any) -> Any:
        with Runtime(spec, run_id="kept", runs_dir=runs) as rt:
            config = A2ASpec(listen="127.0.0.1:0", callers=["alice", "bob"], keep_tasks=keep)
            gw = Gateway(rt, config).start()
            try:
                return asyncio.run(call(gw))
            finally:
                gw.stop(grace_s=0.5)

    async def as_caller(gw: Gateway, token: str) -> Any:
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        return await create_client(f"{gw.url}/a2a/desk", client_config=ClientConfig(streaming=False, httpx_client=http))

    def counted() -> int:
        return len((tmp_path / "count").read_text().splitlines())

    async def first(gw: Gateway) -> tuple[str, list[str]]:
        alice, bob = await as_caller(gw, "alice-Secret-1"), await as_caller(gw, "bob-Secret-22")
        hold = message(data({"dir": str(tmp_path), "s": 60}), skill="hold")
        (running,) = await send(alice, hold, return_immediately=True)
        held = running.task.id
        counts = [message(data({"dir": str(tmp_path)}), skill="count") for _ in range(4)]
        ended = [(await send(alice, m))[0].task.id for m in counts]
        (bobs,) = await send(bob, message(data({"dir": str(tmp_path)}), skill="count"))
        assert counted() == 5
        for gone in ended[:2]:
            with pytest.raises(TaskNotFoundError):
                await alice.get_task(pb.GetTaskRequest(id=gone))
        for kept in ended[2:]:
            assert (await alice.get_task(pb.GetTaskRequest(id=kept))).status.state == pb.TASK_STATE_COMPLETED
        assert (await alice.get_task(pb.GetTaskRequest(id=held))).status.state == pb.TASK_STATE_WORKING
        assert (await bob.get_task(pb.GetTaskRequest(id=bobs.task.id))).status.state == pb.TASK_STATE_COMPLETED
        listed = {t.id for t in (await alice.list_tasks(pb.ListTasksRequest())).tasks}
        assert listed == {held, *ended[2:]}
        with pytest.raises(TaskNotFoundError, match=r"forgotten.*keep_tasks"):
            await send(alice, counts[0])  # the same messageId again
        assert counted() == 5  # not run again
        assert sorted(gw.store.keys()) == sorted(f"task/{t}" for t in (held, *ended[2:], bobs.task.id))
        cancelled = await alice.cancel_task(pb.CancelTaskRequest(id=held))  # the newest ended
        assert cancelled.status.state == pb.TASK_STATE_CANCELED
        with pytest.raises(TaskNotFoundError):
            await alice.get_task(pb.GetTaskRequest(id=ended[2]))
        return held, [ended[3], bobs.task.id]

    async def again(gw: Gateway, held: str, older: list[str]) -> None:
        alice, bob = await as_caller(gw, "alice-Secret-1"), await as_caller(gw, "bob-Secret-22")
        assert [t.id for t in (await alice.list_tasks(pb.ListTasksRequest())).tasks] == [held]
        with pytest.raises(TaskNotFoundError):
            await alice.get_task(pb.GetTaskRequest(id=older[0]))
        assert (await bob.get_task(pb.GetTaskRequest(id=older[1]))).status.state == pb.TASK_STATE_COMPLETED
        assert sorted(gw.store.keys()) == sorted(f"task/{t}" for t in (held, older[1]))

    held, older = serving(2, first)
    serving(1, lambda gw: again(gw, held, older))  # started again keeping fewer: the newest stay


def test_a_gateway_config_made_in_code_is_checked_as_a_spec_file_is(gateway: Gateway) -> None:
    """`Gateway(rt, A2ASpec(...))` took its config unchecked: keep_tasks=-1 failed every
    request with InternalError 'dictionary is empty' after its task had run (a client's retry
    ran it again), keep_tasks=0 forgot each task as it ended. Now it is refused before the
    gateway binds, naming the field and the rule, as `[a2a]` of a spec file is."""
    for bad, rule in (
        (A2ASpec(listen="127.0.0.1:0", keep_tasks=-1), r"Expected `int` >= 1 - at `\$\.a2a\.keep_tasks`"),
        (A2ASpec(listen="127.0.0.1:0", keep_tasks=0), r"Expected `int` >= 1 - at `\$\.a2a\.keep_tasks`"),
        (A2ASpec(listen="127.0.0.1:0", expose=["nobody"]), r"a2a\.expose names 'nobody'"),
    ):
        with pytest.raises(SpecError, match=rule):
            Gateway(gateway.runtime, bad)


def test_a_store_write_that_fails_fails_no_request(tmp_path: Path, postgres_url: str) -> None:
    """The gateway writes each status of a task to the run's store. A write that failed (here
    PostgreSQL ends the gateway's session) used to fail the request: the client got an
    InternalError with no task id while the task ran, and sending it again would run it twice.
    Now the client gets its task, the task is still known (from memory), and the trace says
    what was not written; the writes after it reach the store again."""
    import psycopg

    spec = make_spec({"n1": [{"name": "desk", "class": "a2a_actors:Desk"}]}, run={"store": postgres_url})

    async def go(gw: Gateway) -> tuple[str, str]:
        client = await client_for(gw, "desk", streaming=False)
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # the gateway's session ends
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE usename = current_user AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        assert ended == [(True,)]  # the gateway's own, the one session of this role left
        (done,) = await send(client, message(data({"dir": str(tmp_path)}), skill="count"))
        assert done.task.status.state == pb.TASK_STATE_COMPLETED
        got = await client.get_task(pb.GetTaskRequest(id=done.task.id))
        assert artifact_data(got) == {"count": 1}
        (after,) = await send(client, message(data({"dir": str(tmp_path)}), skill="count"))
        await client.close()
        return done.task.id, after.task.id

    with Runtime(spec, runs_dir=tmp_path / "runs") as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0")).start()
        try:
            first, second = asyncio.run(go(gw))
            saved = gw.store.get(f"task/{second}")
        finally:
            gw.stop(grace_s=0.5)
        trace = rt.trace_path
    assert (tmp_path / "count").read_text().count("x") == 2  # each ran once
    assert saved["task"]["status"]["state"] == "TASK_STATE_COMPLETED"  # written again
    warnings = [e["text"] for e in read_trace(trace) if e["event"] == "gateway.warning"]
    assert any(f"task {first} of 'desk' could not be written to the run's store" in w for w in warnings), warnings


def desk_and_forger() -> Any:
    """A run of two nodes: desk (the actor a gateway task asks) on n1, a forger on n2."""
    return make_spec(
        {
            "n1": [{"name": "desk", "class": "a2a_actors:Desk"}],
            "n2": [{"name": "forger", "class": "a2a_actors:Forger"}],
        },
    )


async def holding(gw: Gateway, tmp_path: Path) -> tuple[Any, str, str]:
    """A client, the id of a desk task of its that runs (held) until cancelled, and its trace."""
    client = await client_for(gw, "desk", streaming=False)
    hold = message(data({"dir": str(tmp_path), "s": 60}), skill="hold")
    (running,) = await send(client, hold, return_immediately=True)
    task_id = running.task.id
    while not (tmp_path / "started").exists():
        await asyncio.sleep(0.02)
    return client, task_id, gw.jobs[task_id].trace_id


async def cancelled(client: Any, task_id: str) -> pb.Task:
    """The task once the client has cancelled it (and its client closed)."""
    await client.cancel_task(pb.CancelTaskRequest(id=task_id))
    task = await until_terminal(client, task_id)
    await client.close()
    return task


def serving_desk(spec: Any, tmp_path: Path, go: Any) -> tuple[Any, Path]:
    """`go(gateway, runtime)` run to its end against a gateway exposing desk; what it
    returned, and the run's trace."""
    with Runtime(spec, runs_dir=tmp_path / "runs") as rt:
        gw = Gateway(rt, A2ASpec(listen="127.0.0.1:0", expose=["desk"])).start()
        try:
            return asyncio.run(go(gw, rt)), rt.trace_path
        finally:
            gw.stop(grace_s=0.5)


def test_an_actor_cannot_speak_for_another_nodes_actor_through_the_trace(tmp_path: Path) -> None:
    """The gateway follows a task's trace: results stream as artifacts, the asked actor's end
    settles it, a human actor's escalation is read from its ticket file and answered into
    its answer file. A misbehaving actor on another node used to be able to record those
    events as any actor of any node: stream a forged result to the client, and point the
    gateway at any JSON file to send the client (and at any path to write the answer to).
    Now the collector stamps each event with the node its frame came from, the gateway takes
    an event only from the node that hosts its actor, and ticket files only from the run's
    escalations folder."""
    spec = desk_and_forger()
    secret = tmp_path / "secret.json"
    secret.write_text('{"summary": "the gateway host\'s private file", "options": ["x"]}')
    elsewhere = tmp_path / "elsewhere.answer.json"

    async def go(gw: Gateway, rt: Runtime) -> pb.Task:
        client, task_id, trace_id = await holding(gw, tmp_path)
        forged = await asyncio.to_thread(
            rt.ask, "forger", "forge", {"trace": trace_id, "task": task_id, "read": str(secret), "write": str(elsewhere)}
        )
        assert forged.ok
        for _ in range(500):  # until the gateway has seen all three (bounded, not timed)
            if len([e for e in read_trace(rt.trace_path) if e["event"] == "gateway.warning"]) >= 3:
                break
            await asyncio.sleep(0.02)
        now = await client.get_task(pb.GetTaskRequest(id=task_id))
        assert now.status.state == pb.TASK_STATE_WORKING  # no ticket, not settled
        return await cancelled(client, task_id)

    task, trace = serving_desk(spec, tmp_path, go)
    assert task.status.state == pb.TASK_STATE_CANCELED
    assert not any(a.artifact_id == "t-forged" for a in task.artifacts)
    assert "private file" not in str(task)
    assert not elsewhere.exists()
    events = read_trace(trace)
    warnings = [e["text"] for e in events if e["event"] == "gateway.warning"]
    assert sum("names actor 'desk', which node 'n2' it came from does not host" in w for w in warnings) == 2
    assert any("outside this run's escalations folder" in w for w in warnings)
    forged = [e for e in events if e.get("plan_task") == "t-forged"]
    assert forged and all(e["node"] == "n2" for e in forged)  # stamped with the truth
    assert any(
        e["event"] == "message.dead-letter" and e["reason"] == "forged-sender" and e.get("peer") == "n2" and "['n1']" in e["detail"]
        for e in events
    )


def test_an_actor_of_a_tasks_trace_cannot_stream_a_result_or_settle_it_as_itself(tmp_path: Path) -> None:
    """An actor that names itself (its node hosts it, so the collector's stamp holds) is still
    not the actor the gateway asked: it may not stream a result as an artifact of the task
    (results of a plan are the asked run's own, `result.accepted` of the actor asked) nor end
    the task's trace (the asked actor's end of the task settles it)."""
    spec = desk_and_forger()

    async def go(gw: Gateway, rt: Runtime) -> pb.Task:
        client, task_id, trace_id = await holding(gw, tmp_path)
        forged = await asyncio.to_thread(rt.ask, "forger", "forge_as_self", {"trace": trace_id, "task": task_id})
        assert forged.ok
        for _ in range(500):  # until the gateway has seen both (bounded, not timed)
            if len([e for e in read_trace(rt.trace_path) if e["event"] == "gateway.warning"]) >= 2:
                break
            await asyncio.sleep(0.02)
        settled.append(gw.jobs[task_id].settled)
        return await cancelled(client, task_id)

    settled: list[bool] = []
    task, trace = serving_desk(spec, tmp_path, go)
    assert task.status.state == pb.TASK_STATE_CANCELED
    assert settled == [False]  # only desk's own end of the task settles it
    assert not any(a.artifact_id == "t-forged" for a in task.artifacts), task.artifacts
    warnings = [e["text"] for e in read_trace(trace) if e["event"] == "gateway.warning"]
    assert sum("of 'forger', not of 'desk' the task asked: ignored" in w for w in warnings) == 2, warnings
