"""Dead letters: which ones a process traces (sampled, counts exact), and a run's, read back."""

from __future__ import annotations

from collections import Counter, defaultdict

from agentrt.protocols import DEAD_LETTER_REASONS, Event, MessageDeadLetter, MessageDeadLetterCounts


class Sampler:
    """Which dead letters are traced: at most `per_s` per reason per second, and `per_reason`
    in all per reason (a flood of garbage, however long, cannot fill the disk: a process
    traces at most per_reason samples of each of the closed set of reasons); the others are
    only counted, and the next sample says how many."""

    def __init__(self, per_s: int = 10, per_reason: int = 1000) -> None:
        self.per_s, self.per_reason = per_s, per_reason
        self._second = 0
        self._taken: Counter[str] = Counter()
        self._traced: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()

    def admit(self, reason: str, now: float) -> int | None:
        """None to only count this one; else trace it, with how many went untraced before it."""
        second = int(now)
        if second != self._second:
            self._second, self._taken = second, Counter()
        if self._taken[reason] >= self.per_s or self._traced[reason] >= self.per_reason:
            self.suppressed[reason] += 1
            return None
        self._taken[reason] += 1
        self._traced[reason] += 1
        return self.suppressed.pop(reason, 0)


def summarize(events: list[Event]) -> tuple[dict[tuple[str, str], int], list[MessageDeadLetter]]:
    """(counts by (node, reason), samples in trace order). A process traces a few dead letters
    per reason per second, each with the running count of its reason, and the exact counts
    when it stops; the count of a process that died without stopping is its last sample's.
    Each life of a restarted node (each pid) counts from zero: its lives' counts add up."""
    per_life: dict[tuple[str, int | None, str], int] = defaultdict(int)
    samples = []
    for e in events:
        if isinstance(e, MessageDeadLetter):
            samples.append(e)
            key = (str(e.node), e.pid, e.reason)
            per_life[key] = max(per_life[key], e.count or 1)
        elif isinstance(e, MessageDeadLetterCounts):
            for name, n in e.counts.items():
                reason = name.removeprefix("dead.")
                if reason in DEAD_LETTER_REASONS:
                    key = (str(e.node), e.pid, reason)
                    per_life[key] = max(per_life[key], n)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for (node, _, reason), n in per_life.items():
        counts[(node, reason)] += n
    return dict(counts), samples


def render(events: list[Event], per_reason: int = 5) -> list[str]:
    """Lines for `agentrt trace dead-letters`: counts per reason (and node), then samples."""
    counts, samples = summarize(events)
    if not counts:
        return ["no dead letters: every message was delivered"]
    t0 = min((e.ts for e in events), default=0.0)
    by_reason: dict[str, int] = defaultdict(int)
    for (_, reason), n in counts.items():
        by_reason[reason] += n
    lines = [f"dead letters: {sum(by_reason.values())}", f"{'reason':<16} {'count':>8}  nodes"]
    for reason, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        nodes = ", ".join(f"{node} {c}" for (node, r), c in sorted(counts.items()) if r == reason)
        lines.append(f"{reason:<16} {n:>8}  {nodes}")
    lines.append(
        f"samples (at most {per_reason} per reason; a node traces a few per reason per second):"
    )
    shown: dict[str, int] = defaultdict(int)
    for e in samples:
        if shown[e.reason] >= per_reason:
            continue
        shown[e.reason] += 1
        who = f"{e.sender} -> {e.recipient or '?'}" if e.sender else "(undecoded)"
        kind = f" {e.kind}" if e.kind else ""
        peer = f" peer {e.peer[:16]}" if e.peer else ""
        size = f" {e.bytes} bytes" if e.bytes else ""
        lines.append(f"  +{e.ts - t0:8.3f}s {e.reason:<14} on {e.node}: {who}{kind}{peer}{size}")
        lines.append(f"      {e.detail}")
    return lines
