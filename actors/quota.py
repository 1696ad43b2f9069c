"""The quota: one actor that owns a run's provider rate limits, for every process.

Models configured with `quota = "<name>"` ask it before each call. It answers at once with
how long to wait, having already counted the call against its requests- and
tokens-per-minute buckets, so N worker processes together stay within the limit and
callers queue in the order they asked. A 429's Retry-After pauses it for everyone, for at
most `retry_after_max_s` (a provider, or a proxy, that says "a day" does not stop the run
for a day; the cap is traced when it applies).
"""

from __future__ import annotations

import time
from typing import Any

from agentrt.protocols import QuotaGranted, QuotaRetryAfterCapped
from agentrt.runtime import Actor, Request, skill

from ._limits import RateLimiter

_ACQUIRE = {
    "type": "object",
    "properties": {
        "tokens": {"type": "number", "minimum": 0},
        "requests": {"type": "number", "minimum": 0},
    },
    "required": ["tokens"],
    "additionalProperties": False,
}
_PAUSE = {
    "type": "object",
    "properties": {"retryAfterS": {"type": "number", "exclusiveMinimum": 0}},
    "required": ["retryAfterS"],
    "additionalProperties": False,
}
_SETTLE = {
    "type": "object",
    "properties": {"estimated": {"type": "number"}, "actual": {"type": "number"}},
    "required": ["estimated", "actual"],
    "additionalProperties": False,
}


class Quota(Actor):
    """Config: `rpm`, `tpm` (either or both), `burst_s` (1.0: the buckets hold one second's
    worth), `retry_after_max_s` (60: the longest pause a Retry-After may cause)."""

    description = "Owns the run's rate limits; every model call draws from it."

    def on_start(self) -> None:
        self.limiter = RateLimiter(
            rpm=self.config.get("rpm"),
            tpm=self.config.get("tpm"),
            burst_s=float(self.config.get("burst_s", 1.0)),
        )
        self.retry_after_max_s = float(self.config.get("retry_after_max_s", 60.0))
        if not self.retry_after_max_s > 0:
            raise ValueError(f"quota '{self.ctx.name}': config.retry_after_max_s must be > 0, got {self.retry_after_max_s}")

    # Stateful skills run one at a time on the actor's thread: the buckets need no lock.
    @skill(input=_ACQUIRE, output={"type": "object", "required": ["waitS"]})
    def acquire(self, req: Request) -> dict[str, Any]:
        """Count one call now; the caller waits `waitS` seconds before making it."""
        now = time.monotonic()
        tokens, requests = float(req.data["tokens"]), float(req.data.get("requests", 1))
        wait = self.limiter.wait_s(tokens, now, requests)
        self.limiter.take(tokens, now, requests)
        self.ctx.emit(QuotaGranted(at=time.time() + wait, wait_s=round(wait, 6), tokens=tokens))
        return {"waitS": round(wait, 6)}

    @skill(input=_PAUSE)
    def pause(self, req: Request) -> dict[str, Any]:
        """A provider said 429: nobody calls for `retryAfterS` seconds (at most
        `retry_after_max_s`)."""
        asked = float(req.data["retryAfterS"])
        pause = min(asked, self.retry_after_max_s)
        if pause < asked:
            self.ctx.emit(QuotaRetryAfterCapped(retry_after_s=asked, paused_s=pause, cap_s=self.retry_after_max_s))
        self.limiter.pause(time.monotonic() + pause)
        return {"pausedS": pause}

    @skill(input=_SETTLE)
    def settle(self, req: Request) -> dict[str, Any]:
        """A call used `actual` tokens where `estimated` were counted."""
        self.limiter.settle(float(req.data["estimated"]), float(req.data["actual"]))
        return {}
