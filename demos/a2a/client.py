"""Call a run served by `agentrt serve demos/a2a` with the a2a-sdk client, streaming.

python demos/a2a/client.py ["a goal"] [--url http://127.0.0.1:8800]
"""

from __future__ import annotations

import argparse
import asyncio

from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format


async def ask(url: str, goal: str, seen: list | None = None) -> dict:
    """Send `goal` to the entry actor (the card at `url`); print each event (and keep it in
    `seen`, when given); return the result."""
    client = await create_client(url, client_config=ClientConfig(streaming=True))
    message = pb.Message(
        message_id=f"goal-{abs(hash(goal))}", role=pb.ROLE_USER, parts=[pb.Part(text=goal)]
    )
    result: dict = {}
    async for event in client.send_message(pb.SendMessageRequest(message=message)):
        kind = event.WhichOneof("payload")
        if seen is not None:
            seen.append(event)
        if kind == "task":
            print(f"task {event.task.id}: {pb.TaskState.Name(event.task.status.state)}")
        elif kind == "status_update":
            status = event.status_update.status
            said = " ".join(p.text for p in status.message.parts if p.text)
            print(f"status: {pb.TaskState.Name(status.state)}" + (f" ({said})" if said else ""))
        elif kind == "artifact_update":
            for part in event.artifact_update.artifact.parts:
                result = json_format.MessageToDict(part.data) if part.HasField("data") else result
            print(f"artifact: {event.artifact_update.artifact.name}")
    await client.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("goal", nargs="?", default="Retries are safe only with idempotency keys.")
    p.add_argument("--url", default="http://127.0.0.1:8800")
    args = p.parse_args()
    result = asyncio.run(ask(args.url, args.goal))
    print(result.get("answer", result))


if __name__ == "__main__":
    main()
