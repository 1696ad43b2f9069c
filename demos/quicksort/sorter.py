"""Tree-based recursive delegation: a sorter partitions its list and delegates both halves
to sorters on other processes, until a depth bound or a small list; then it sorts locally.
Every delegation is an ask over the wire, so the trace shows the tree."""

from __future__ import annotations

import itertools
import random
import time
import zlib
from concurrent.futures import Future
from typing import Any

from agentrt.runtime import Actor, Request, TaskResult, skill

SORT_IN = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"type": "number"}},
        "n": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "seed": {"type": "integer"},
        "depth": {"type": "integer", "minimum": 0},
        "path": {"type": "string"},
    },
    "additionalProperties": False,
}


class Sorter(Actor):
    """Config: `max_depth` (3), `min_size` (200), `work_s_per_1k` (simulated cost, 0.5 s per
    1,000 items handled, so that delegation pays off as it would for model calls)."""

    description = "Sorts numbers by recursive delegation to peer sorters."

    @skill(input=SORT_IN, read_only=True, timeout_s=300)
    def sort(self, req: Request) -> dict[str, Any]:
        depth = int(req.data.get("depth", 0))
        path = req.data.get("path", "root")
        items = req.data.get("items")
        if items is None:
            rng = random.Random(req.data.get("seed", 0))
            items = [rng.randint(0, 1_000_000) for _ in range(int(req.data.get("n", 5000)))]
        max_depth = int(self.config.get("max_depth", 3))
        cost = float(self.config.get("work_s_per_1k", 0.5)) * len(items) / 1000
        time.sleep(cost)  # partitioning (or sorting) this many items
        if depth >= max_depth or len(items) <= int(self.config.get("min_size", 200)):
            out = sorted(items)
            tree = [f"{'  ' * depth}{path}: {len(items)} items sorted by {self.ctx.name} (leaf)"]
        else:
            pivot = sorted([items[0], items[len(items) // 2], items[-1]])[1]
            low = [x for x in items if x < pivot]
            mid = [x for x in items if x == pivot]
            high = [x for x in items if x > pivot]
            peers = self.ctx.actors_with_skill("sort")
            asks: list[Future[TaskResult]] = []
            for i, part in enumerate((low, high)):
                sub = f"{path}.{'LR'[i]}"
                peer = peers[zlib.crc32(sub.encode()) % len(peers)]
                asks.append(self.ctx.ask(peer, "sort", {"items": part, "depth": depth + 1, "path": sub}))
            left, right = (f.result(300).unwrap() for f in asks)
            out = left["sorted"] + mid + right["sorted"]
            tree = [f"{'  ' * depth}{path}: {len(items)} items split by {self.ctx.name} at {pivot}"]
            tree += left["tree"] + right["tree"]
        if depth > 0:
            return {"sorted": out, "tree": tree}
        return {
            "n": len(out),
            "sorted_ok": all(a <= b for a, b in itertools.pairwise(out)),
            "smallest": out[:5],
            "report": tree,
        }
