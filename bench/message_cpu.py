"""Where the CPU of an actor-to-actor ask goes: the message path in one process, by part.

bench/message_path.py measures asks between two node processes, where thread hand-offs, the
scheduler and whatever else runs on the machine move the figures by tens of percent from run
to run. This runs the same path with the sockets taken out: two Messengers (encode, limits,
authentication, fencing, reliable delivery with acks, dead letters) and the actors of
bench/_echo.py on their real hosts (validation at both ends, the read-only skill run in place,
task state), tracing on, and the collector's work (a batch decoded and written as JSON lines)
done as the supervisor does it; each frame a messenger sends is handed straight to the other
one's receive. What is left is the Python work per message, measured as process CPU time.

Each variant runs in a process of its own (a part is taken out by replacing it), best of
`--repeats`:

- full: everything;
- no collector: batches are encoded, scanned for secrets and shipped, not written;
- no shipping: events are recorded, never encoded, scanned or written;
- no tracing: no event is recorded (the events are still built where they are emitted).

    python bench/message_cpu.py [--n 5000] [--repeats 5]

Its last line is `tracing share of round-trip CPU: X.XX` (1 - no tracing / full).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "full": "everything",
    "no-collector": "batches shipped, not written",
    "no-shipping": "events recorded, not shipped",
    "no-tracing": "no event recorded",
}


def measure(variant: str, n: int) -> float:
    """CPU seconds per round trip of `n` asks, with `variant`'s part taken out."""
    import msgspec

    from agentrt.protocols import Limits
    from agentrt.runtime import _actor, _messenger, _tracing
    from agentrt.runtime._keys import issue
    from agentrt.runtime._models import model_from_config
    from agentrt.runtime._spec import ModelConfig
    from agentrt.runtime._store import open_store

    sys.path.insert(0, str(HERE))
    import _echo  # type: ignore[import-not-found]

    tmp = Path(tempfile.mkdtemp(prefix="agentrt-cpu-"))
    writer = _tracing.TraceWriter(tmp / "trace.jsonl")
    unpack = msgspec.msgpack.Decoder()

    def collect(batch: bytes) -> None:  # what the supervisor's collector does with a batch
        writer.write_many(unpack.decode(batch))

    recorder = _tracing.configure(collect if variant != "no-collector" else lambda _batch: None, run_id="r", node="n")
    recorder._max_delay = 1e9  # shipped below, every 512 events, on this thread
    if variant == "no-shipping":
        recorder._ship_ordered = lambda _batch: None  # type: ignore[method-assign]
    if variant == "no-tracing":
        _messenger.emit = _actor.emit = lambda *_a, **_k: None  # type: ignore[assignment]

    trust = issue({"a": ["pinger"], "b": ["echo"]})
    a_at, b_at = f"ipc://{tmp}/a.sock", f"ipc://{tmp}/b.sock"
    a = _messenger.Messenger(name="node:a", endpoint=a_at, limits=Limits(), trust=trust["a"])
    b = _messenger.Messenger(name="node:b", endpoint=b_at, limits=Limits(), trust=trust["b"])
    a.epoch, b.epoch = 11, 22
    to_b: list[bytes] = []
    to_a: list[bytes] = []
    a.transport.send = lambda _endpoint, frame: to_b.append(frame)  # type: ignore[method-assign]
    b.transport.send = lambda _endpoint, frame: to_a.append(frame)  # type: ignore[method-assign]

    def run_here(fn: Any, *args: Any) -> bool:  # a read-only skill runs on the receiving thread
        fn(*args)
        return True

    a.transport.run_here = b.transport.run_here = run_here  # type: ignore[method-assign]
    store = open_store(str(tmp / "store.db"), run_id="r")

    def start(cls: Any, name: str, messenger: _messenger.Messenger, node: str) -> Any:
        messenger.cards[name] = cls.card(name, url=messenger.endpoint)
        ctx = _actor.Context(
            name=name, node=node, run_id="r", messenger=messenger,
            model=model_from_config(ModelConfig()), store=store, config={},
        )  # fmt: skip
        actor = cls()
        actor.ctx, actor.config = ctx, {}
        _actor.host(actor, ctx, messenger, node)
        return ctx

    pinger = start(_echo.Pinger, "pinger", a, "a")
    start(_echo.Echo, "echo", b, "b")
    routes = {"pinger": a_at, "node:a": a_at, "echo": b_at, "node:b": b_at}
    for m in (a, b):
        m.set_directory(routes, [a.cards["pinger"], b.cards["echo"]], {"a": 11, "b": 22})

    def round_trip(i: int) -> None:
        answer = pinger.ask("echo", "echo", {"seq": i})
        while to_b or to_a:
            if to_b:
                b._on_frame("a", memoryview(to_b.pop(0)))
            if to_a:
                a._on_frame("b", memoryview(to_a.pop(0)))
        assert answer.result(5).ok

    for i in range(500):  # warm up
        round_trip(i)
    _tracing.flush()
    cpu = time.process_time()
    for i in range(n):
        round_trip(i)
        if i % 85 == 84:  # about 512 events: a full batch
            _tracing.flush()
    _tracing.flush()
    return (time.process_time() - cpu) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="round trips per measurement")
    ap.add_argument("--repeats", type=int, default=5, help="measurements per variant (the least is kept)")
    ap.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # one, in this process
    args = ap.parse_args()
    if args.variant:
        print(measure(args.variant, args.n), flush=True)
        os._exit(0)  # the actors' threads are daemons of a run that is over
    best: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved: a slow spell of the machine hits every variant
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--n", str(args.n)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            got = float(out.stdout.strip().splitlines()[-1])
            best[variant] = min(best.get(variant, got), got)
    full = best["full"]
    print(f"message path in one process, sockets taken out: {args.n} asks, best of {args.repeats}")
    print(f"{'':<14} {'CPU/round trip':>15} {'of full':>8}")
    for variant, what in VARIANTS.items():
        print(f"{variant:<14} {best[variant] * 1e6:>13.1f}us {best[variant] / full:>8.2f}   {what}")
    print(f"collector share of round-trip CPU: {1 - best['no-collector'] / full:.2f}")
    print(f"tracing share of round-trip CPU: {1 - best['no-tracing'] / full:.2f}")


if __name__ == "__main__":
    main()
