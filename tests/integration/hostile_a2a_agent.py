"""An A2A agent (the a2a-sdk server alone, its own process) whose outputs break A2A's rules,
for the tests of `A2AAgent` against a hostile or broken remote.

    python hostile_a2a_agent.py --port PORT [--sloppy-card]

Skills (the message's `metadata.skill`), each stateful unless its name ends in `_ro`:
- `empty_part`, `empty_part_ro`: completes with an artifact whose one part has no content;
- `fail_empty_part`: fails with a status message whose one part has no content;
- `plain`: completes with `{"ok": true}`, as it should.
With `--sloppy-card` its skills have no description and no tags (A2A requires both; the
a2a-sdk serves such a card with a warning, and ProtoJSON leaves the empty fields out).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format, struct_pb2
from starlette.applications import Starlette

SKILLS = {"empty_part": False, "empty_part_ro": True, "fail_empty_part": False, "plain": True}


def card(url: str, sloppy: bool = False) -> pb.AgentCard:
    params = struct_pb2.Struct()
    params.update({"skills": {s: {"readOnly": ro} for s, ro in SKILLS.items()}})
    return pb.AgentCard(
        name="hostile",
        description="An A2A agent whose outputs break the rules.",
        version="1.0.0",
        supported_interfaces=[
            pb.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=pb.AgentCapabilities(
            streaming=False,
            extensions=[pb.AgentExtension(uri="urn:agentrt:a2a:skill-schemas:v1", params=params)],
        ),
        skills=[
            pb.AgentSkill(id=s, name=s)
            if sloppy
            else pb.AgentSkill(id=s, name=s, description=s, tags=["hostile"])
            for s in SKILLS
        ],
    )


class Hostile(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: Any) -> None:
        message = context.message
        assert message is not None
        skill = json_format.MessageToDict(message.metadata).get("skill")
        await event_queue.enqueue_event(new_task_from_user_message(message))
        updater = TaskUpdater(event_queue, str(context.task_id), str(context.context_id))
        await updater.start_work()
        if skill == "fail_empty_part":
            await updater.failed(updater.new_agent_message([pb.Part()]))
            return
        if skill == "plain":
            part = pb.Part(media_type="application/json")
            part.data.struct_value.update({"ok": True})
            await updater.add_artifact([part], name=skill)
            await updater.complete()
            return
        await updater.add_artifact([pb.Part()], name=skill)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: Any) -> None:
        await TaskUpdater(event_queue, str(context.task_id), str(context.context_id)).cancel()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sloppy-card", action="store_true")
    args = p.parse_args()
    url = f"http://127.0.0.1:{args.port}/"
    agent_card = card(url, args.sloppy_card)
    handler = DefaultRequestHandler(
        agent_executor=Hostile(), task_store=InMemoryTaskStore(), agent_card=agent_card
    )
    app = Starlette(
        routes=[*create_agent_card_routes(agent_card), *create_jsonrpc_routes(handler, "/")]
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
