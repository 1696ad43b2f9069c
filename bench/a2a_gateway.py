"""The A2A gateway's cost: one skill asked through `agentrt serve`'s gateway with the a2a-sdk
client (JSON-RPC over HTTP, blocking SendMessage), against the same skill asked directly
with `Runtime.ask` (what the gateway does inside), in one run.

    python bench/a2a_gateway.py [--n 300] [--clients 8]

Prints p50/p99 round trip for both (one at a time), then throughput with `--clients`
concurrent callers; its last line is `gateway/direct p50 ratio: X.XX`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb

from agentrt.runtime import A2ASpec, Gateway, Runtime, spec_from_dict

ROOT = Path(__file__).resolve().parent.parent


def spec() -> object:
    return spec_from_dict(
        {
            "run": {"entry": "shouter", "skill": "shout"},
            "nodes": [{"name": "n1", "actors": [{"name": "shouter", "class": "shout:Shouter"}]}],
        },
        "bench",
        base_dir=str(ROOT / "demos" / "hello"),
    )


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def direct(rt: Runtime, n: int, clients: int) -> tuple[list[float], float]:
    rtts = []
    for i in range(n):
        t0 = time.perf_counter()
        assert rt.ask("shouter", "shout", {"text": f"d{i}"}).ok
        rtts.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: rt.ask("shouter", "shout", {"text": f"p{i}"}), range(n)))
    return rtts, n / (time.perf_counter() - t0)


async def through_gateway(url: str, n: int, clients: int) -> tuple[list[float], float]:
    client = await create_client(f"{url}/a2a/shouter", client_config=ClientConfig(streaming=False))

    async def one(tag: str) -> None:
        msg = pb.Message(message_id=tag, role=pb.ROLE_USER, parts=[pb.Part(text=tag)])
        async for event in client.send_message(pb.SendMessageRequest(message=msg)):
            assert event.task.status.state == pb.TASK_STATE_COMPLETED

    rtts = []
    for i in range(n):
        t0 = time.perf_counter()
        await one(f"g{i}")
        rtts.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await one(f"q{i}")

    await asyncio.gather(*(worker() for _ in range(clients)))
    rate = n / (time.perf_counter() - t0)
    await client.close()
    return rtts, rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args()
    with Runtime(spec(), runs_dir=tempfile.mkdtemp(prefix="agentrt-bench-")) as rt:  # type: ignore[arg-type]
        gateway = Gateway(rt, A2ASpec(listen="127.0.0.1:0")).start()
        try:
            d_rtts, d_rate = direct(rt, args.n, args.clients)
            g_rtts, g_rate = asyncio.run(through_gateway(gateway.url, args.n, args.clients))
        finally:
            gateway.stop()
    for name, rtts, rate in (
        ("direct Runtime.ask", d_rtts, d_rate),
        ("A2A gateway", g_rtts, g_rate),
    ):
        print(
            f"{name:>20}: p50 {pct(rtts, 0.5):6.2f} ms  p99 {pct(rtts, 0.99):6.2f} ms  "
            f"mean {statistics.mean(rtts) * 1000:6.2f} ms  {rate:7.1f} tasks/s with {args.clients} callers"
        )
    print(f"gateway/direct p50 ratio: {pct(g_rtts, 0.5) / pct(d_rtts, 0.5):.2f}")


if __name__ == "__main__":
    main()
