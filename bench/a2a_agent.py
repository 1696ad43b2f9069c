"""An external A2A agent as a worker: its skill asked through `agentrt.actors:A2AAgent` (a
runtime ask, then SendMessage + GetTask from the proxy's node), against the same skill asked
of the agent directly with the a2a-sdk client (blocking SendMessage), in one run.

    python bench/a2a_agent.py [--n 200]

The agent is demos/a2a/agent.py (an a2a-sdk server) in its own process. Prints p50/p99 round
trip for both; its last line is `proxy/direct p50 ratio: X.XX`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb

from agentrt.runtime import Runtime, spec_from_dict

ROOT = Path(__file__).resolve().parent.parent


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def direct(url: str, n: int) -> list[float]:
    client = await create_client(url, client_config=ClientConfig(streaming=False))
    rtts = []
    for i in range(n):
        msg = pb.Message(message_id=f"d{i}", role=pb.ROLE_USER, parts=[pb.Part(text=f"hello {i}.")])
        msg.metadata.update({"skill": "headline"})
        t0 = time.perf_counter()
        async for event in client.send_message(pb.SendMessageRequest(message=msg)):
            assert event.task.status.state == pb.TASK_STATE_COMPLETED
        rtts.append(time.perf_counter() - t0)
    await client.close()
    return rtts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    agent = subprocess.Popen(
        [sys.executable, str(ROOT / "demos" / "a2a" / "agent.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/.well-known/agent-card.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        d_rtts = asyncio.run(direct(url, args.n))
        spec = spec_from_dict(
            {
                "run": {"entry": "style", "skill": "headline"},
                "nodes": [
                    {
                        "name": "proxy",
                        "actors": [
                            {
                                "name": "style",
                                "class": "agentrt.actors:A2AAgent",
                                "config": {"url": f"{url}/.well-known/agent-card.json"},
                            }
                        ],
                    }
                ],
            },
            "bench",
        )
        p_rtts = []
        with Runtime(spec, runs_dir=tempfile.mkdtemp(prefix="agentrt-bench-")) as rt:
            for i in range(args.n):
                t0 = time.perf_counter()
                assert rt.ask("style", "headline", {"text": f"hello {i}."}).ok
                p_rtts.append(time.perf_counter() - t0)
    finally:
        agent.terminate()
        agent.wait(10)
    for name, rtts in (("agent directly", d_rtts), ("through A2AAgent", p_rtts)):
        print(f"{name:>18}: p50 {pct(rtts, 0.5):6.2f} ms  p99 {pct(rtts, 0.99):6.2f} ms")
    print(f"proxy/direct p50 ratio: {pct(p_rtts, 0.5) / pct(d_rtts, 0.5):.2f}")


if __name__ == "__main__":
    main()
