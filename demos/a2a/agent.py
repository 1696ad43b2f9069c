"""An A2A agent written with the a2a-sdk server alone (no agentrt): a "style desk" that runs
in its own process and that the demo's plan uses as a worker through `agentrt.actors:A2AAgent`.

    python demos/a2a/agent.py --port 8801 [--log DIR]

Skills (the message's `metadata.skill`):
- `headline` {"text"} -> {"headline"}: the text's first sentence in title case;
- `slow` {"s"} -> {"slept"}: works for `s` seconds unless the task is cancelled first;
- `confirm` {"text"} -> {"confirmed"}: asks for input first (TASK_STATE_INPUT_REQUIRED), and
  completes with the answer it is given on the same task.
Its card publishes each skill's JSON Schemas in agentrt's schema extension, which A2A
clients that do not know it ignore. With `--log DIR`, every new task is a line of
DIR/tasks.log ("<skill> <messageId>"), every cancel a line of DIR/cancels.log, and every
JSON-RPC call's method a line of DIR/calls.log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format, struct_pb2
from starlette.applications import Starlette

SCHEMAS = {
    "headline": {
        "inputSchema": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        },
        "outputSchema": {
            "type": "object",
            "required": ["headline"],
            "properties": {"headline": {"type": "string"}},
        },
        "readOnly": True,
    },
    "slow": {
        "inputSchema": {"type": "object", "properties": {"s": {"type": "number"}}},
        "outputSchema": {"type": "object", "required": ["slept"]},
        "readOnly": True,
    },
    "confirm": {
        "inputSchema": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        },
        "readOnly": True,
    },
}


def card(url: str) -> pb.AgentCard:
    params = struct_pb2.Struct()
    params.update({"skills": SCHEMAS})
    return pb.AgentCard(
        name="style-desk",
        description="Writes headlines; an A2A agent built on the a2a-sdk server.",
        version="1.0.0",
        supported_interfaces=[
            pb.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            pb.AgentInterface(url=url, protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=pb.AgentCapabilities(
            streaming=True,
            extensions=[pb.AgentExtension(uri="urn:agentrt:a2a:skill-schemas:v1", params=params)],
        ),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json"],
        skills=[
            pb.AgentSkill(id=s, name=s, description=f"the {s} skill", tags=["style"])
            for s in SCHEMAS
        ],
    )


def data_of(message: pb.Message) -> dict[str, Any]:
    for part in message.parts:
        if part.WhichOneof("content") == "data":
            value = json_format.MessageToDict(part.data)
            return value if isinstance(value, dict) else {}
    return {"text": "\n".join(p.text for p in message.parts if p.text)}


def data_part(value: dict[str, Any]) -> pb.Part:
    part = pb.Part(media_type="application/json")
    part.data.struct_value.update(value)
    return part


class StyleDesk(AgentExecutor):
    def __init__(self, log: Path | None) -> None:
        self.log = log

    def _note(self, name: str, line: str) -> None:
        if self.log is not None:
            with (self.log / name).open("a") as f:
                f.write(line + "\n")

    async def execute(self, context: RequestContext, event_queue: Any) -> None:
        message = context.message
        assert message is not None
        updater = TaskUpdater(event_queue, str(context.task_id), str(context.context_id))
        task = context.current_task
        if task is None:
            skill = json_format.MessageToDict(message.metadata).get("skill", "headline")
            self._note("tasks.log", f"{skill} {message.message_id}")
            task = new_task_from_user_message(message)
            task.metadata.update({"skill": skill})
            await event_queue.enqueue_event(task)
        else:
            skill = json_format.MessageToDict(task.metadata).get("skill", "headline")
        await updater.start_work()
        args = data_of(task.history[0] if task.history else message)
        if skill == "headline":
            first = args["text"].split(".")[0].strip()
            await updater.add_artifact([data_part({"headline": first.title()})], name="headline")
            await updater.complete()
        elif skill == "slow":
            await asyncio.sleep(float(args.get("s", 1)))
            await updater.add_artifact([data_part({"slept": args.get("s", 1)})], name="slow")
            await updater.complete()
        elif skill == "confirm":
            if context.current_task is None:
                await updater.requires_input(
                    updater.new_agent_message([pb.Part(text=f"proceed with '{args['text']}'?")])
                )
                return
            answer = "\n".join(p.text for p in message.parts if p.text)
            await updater.add_artifact([data_part({"confirmed": answer})], name="confirm")
            await updater.complete()
        else:
            await updater.failed(updater.new_agent_message([pb.Part(text=f"no skill '{skill}'")]))

    async def cancel(self, context: RequestContext, event_queue: Any) -> None:
        self._note("cancels.log", str(context.task_id))
        await TaskUpdater(event_queue, str(context.task_id), str(context.context_id)).cancel()


def app(url: str, log: Path | None = None) -> Any:
    agent_card = card(url)
    handler = DefaultRequestHandler(
        agent_executor=StyleDesk(log), task_store=InMemoryTaskStore(), agent_card=agent_card
    )
    served = Starlette(
        routes=[
            *create_agent_card_routes(agent_card),
            *create_jsonrpc_routes(handler, "/"),
            *create_rest_routes(handler),
        ]
    )
    return served if log is None else _CallLog(served, log / "calls.log")


class _CallLog:
    """With --log: each JSON-RPC call's method is a line of calls.log (ASGI middleware)."""

    def __init__(self, app: Any, path: Path) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        with contextlib.suppress(ValueError, AttributeError), self.path.open("a") as f:
            f.write(str(json.loads(body).get("method")) + "\n")
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8801)
    p.add_argument("--log", type=Path, help="record tasks and cancels in this folder")
    p.add_argument("--parent", type=int, help="exit when this process (the launcher) is gone")
    args = p.parse_args()
    if args.parent:
        threading.Thread(target=_exit_with, args=(args.parent,), daemon=True).start()
    if args.log is not None:
        args.log.mkdir(parents=True, exist_ok=True)
    url = f"http://{args.host}:{args.port}/"
    print(f"style-desk: A2A agent at {url} (card: {url}.well-known/agent-card.json)", flush=True)
    uvicorn.run(app(url, args.log), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
