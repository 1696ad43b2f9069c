"""Rate limits and budgets as plain objects: time is an argument, never read from a clock.

`RateLimiter` holds a requests-per-minute and a tokens-per-minute token bucket, the way
model providers meter them. One owner draws from it for every process of a run (the
coordinator at dispatch, and the `Quota` actor for individual model calls), so N workers
together stay within the limit. A 429's Retry-After pauses it.
"""

from __future__ import annotations

import math


class TokenBucket:
    """`rate` units per second, holding at most `capacity`. Over any window of `w` seconds,
    at most `capacity + rate * w` units are taken (plus one draw larger than the capacity,
    which is let through when the bucket is full and leaves it in debt)."""

    def __init__(self, rate: float, capacity: float) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if not capacity > 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self._t: float | None = None

    def _refill(self, now: float) -> None:
        if self._t is not None and now > self._t:
            self.level = min(self.capacity, self.level + (now - self._t) * self.rate)
        if self._t is None or now > self._t:
            self._t = now

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until `amount` can be taken (0 if now)."""
        self._refill(now)
        need = min(amount, self.capacity)
        short = need - self.level
        # A deficit within rounding error is no deficit: waiting for it would never end.
        return 0.0 if short <= 1e-9 * max(1.0, need) else short / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def adjust(self, amount: float) -> None:
        """Correct an earlier draw by `amount` (negative: it used more than estimated)."""
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests and tokens per minute, each a token bucket holding `burst_s` seconds' worth."""

    def __init__(
        self, *, rpm: float | None = None, tpm: float | None = None, burst_s: float = 1.0
    ) -> None:
        if not burst_s > 0:
            raise ValueError(f"burst_s must be > 0, got {burst_s}")
        self.requests = (
            TokenBucket(rpm / 60.0, max(1.0, rpm / 60.0 * burst_s)) if rpm is not None else None
        )
        self.tokens = (
            TokenBucket(tpm / 60.0, max(1.0, tpm / 60.0 * burst_s)) if tpm is not None else None
        )
        self.paused_until = -math.inf

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None or self.paused_until > -math.inf

    def wait_s(self, tokens: float, now: float, requests: float = 1.0) -> float:
        """Seconds until a call of `tokens` tokens may start (0: now)."""
        wait = self.paused_until - now
        wait = wait if wait > 1e-9 else 0.0
        if self.requests is not None:
            wait = max(wait, self.requests.wait_s(requests, now))
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_s(tokens, now))
        return wait

    def take(self, tokens: float, now: float, requests: float = 1.0) -> None:
        if self.requests is not None:
            self.requests.take(requests, now)
        if self.tokens is not None:
            self.tokens.take(tokens, now)

    def settle(self, estimated: float, actual: float) -> None:
        """A call estimated at `estimated` tokens used `actual`: correct the tokens bucket."""
        if self.tokens is not None:
            self.tokens.adjust(estimated - actual)

    def pause(self, until: float) -> None:
        """A 429 said: nothing until `until`."""
        self.paused_until = max(self.paused_until, until)


class Budget:
    """A hard cap on tokens (or cost) for a run. Dispatch reserves the estimate; completion
    replaces the reservation with what was used. Nothing is dispatched that would take
    `spent + reserved` past the cap."""

    def __init__(self, cap: float | None) -> None:
        if cap is not None and cap < 0:
            raise ValueError(f"budget must be >= 0, got {cap}")
        self.cap = cap
        self.spent = 0.0
        self.reserved = 0.0

    def fits(self, amount: float) -> bool:
        return self.cap is None or self.spent + self.reserved + amount <= self.cap

    def reserve(self, amount: float) -> None:
        self.reserved += amount

    def settle(self, reserved: float, used: float) -> None:
        self.reserved -= reserved
        self.spent += used

    @property
    def exhausted(self) -> bool:
        return self.cap is not None and self.spent >= self.cap


class Ledger:
    """A run's one account of tokens and cost: every model call of the run (the plan, each
    task attempt, each critique and verdict) reserves its worst case here before it is sent
    and settles what it used when it is back. `usd_per_mtok` prices reserved tokens."""

    def __init__(
        self, token_budget: float | None, cost_budget: float | None = None, usd_per_mtok: float = 0.0
    ) -> None:
        self.tokens = Budget(token_budget)
        self.cost = Budget(cost_budget)
        self.price = usd_per_mtok / 1e6

    def fits(self, tokens: float) -> bool:
        return self.tokens.fits(tokens) and self.cost.fits(tokens * self.price)

    def room(self) -> float:
        """Tokens a call could still reserve (inf: no cap)."""
        room = float("inf")
        if self.tokens.cap is not None:
            room = self.tokens.cap - self.tokens.spent - self.tokens.reserved
        if self.cost.cap is not None and self.price > 0:
            room = min(room, (self.cost.cap - self.cost.spent - self.cost.reserved) / self.price)
        return max(0.0, room)

    def grant(self, want: float, least: float) -> float | None:
        """What to reserve for a call whose worst case is `want` and which can still run with
        `least` (its input and one output token): `want` if it fits, else what is left if
        that is at least `least` (the call's max_tokens is clipped to it), else None."""
        room = self.room()
        if want <= room:
            return want
        return room if room >= least else None

    def shortfall(self, tokens: float) -> str | None:
        """Why a call needing `tokens` cannot be sent (None: it can), naming what was spent
        and what was asked."""
        if not self.tokens.fits(tokens):
            b, need, unit = self.tokens, tokens, ""
            which = "token"
        elif not self.cost.fits(tokens * self.price):
            b, need, unit = self.cost, tokens * self.price, " USD"
            which = "cost"
        else:
            return None
        held = f", {b.reserved:g}{unit} reserved by calls in flight" if b.reserved else ""
        return f"{which} budget {b.cap:g}{unit} reached: {b.spent:g}{unit} spent{held}, next call needs {need:g}{unit}"

    def reserve(self, tokens: float) -> None:
        self.tokens.reserve(tokens)
        self.cost.reserve(tokens * self.price)

    def settle(self, reserved: float, used: float, used_cost: float | None = None) -> None:
        """A call that reserved `reserved` tokens used `used` (and cost `used_cost`, if the
        provider priced it; else `used` at the ledger's price)."""
        self.tokens.settle(reserved, used)
        self.cost.settle(reserved * self.price, used_cost if used_cost is not None else used * self.price)

    @property
    def committed(self) -> float:
        """Tokens spent plus reserved: what the run may have spent, at most, right now."""
        return self.tokens.spent + self.tokens.reserved

    @property
    def committed_cost(self) -> float:
        return self.cost.spent + self.cost.reserved

    def restore(self, tokens: float, cost: float) -> None:
        """Start from what an earlier life of the run may have spent (resume)."""
        self.tokens.spent = max(self.tokens.spent, tokens)
        self.cost.spent = max(self.cost.spent, cost)


def derive_bound(
    *,
    token_budget: float | None = None,
    est_tokens_per_task: float = 1000.0,
    rate_limit_rpm: float | None = None,
    est_requests_per_task: float = 1.0,
    task_s: float = 1.0,
    ceiling: int = 64,
) -> int:
    """A sensible max-in-flight: no more tasks at once than the budget can pay for, nor than
    the rate limit can serve while a task runs (`rpm / 60 * task_s / requests per task`).
    `min(token_budget / est_tokens_per_task, rate_limit / est_requests_per_task)`, at
    least 1 and at most `ceiling`."""
    bound = float(ceiling)
    if token_budget is not None:
        bound = min(bound, token_budget / max(est_tokens_per_task, 1e-9))
    if rate_limit_rpm is not None:
        per_task_window = rate_limit_rpm / 60.0 * task_s
        bound = min(bound, per_task_window / max(est_requests_per_task, 1e-9))
    return max(1, int(bound))
