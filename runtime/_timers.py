"""One timer thread per process: run a callable after a delay, cancellable."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable


class Timers:
    """A heap of deadlines served by one daemon thread (not one thread per timer)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def schedule(self, delay_s: float, fn: Callable[[], None]) -> int:
        """Run `fn` on the timer thread after `delay_s`; returns a handle for `cancel`."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="agentrt-timers", daemon=True
                )
                self._thread.start()
            handle = next(self._seq)
            entry = (time.monotonic() + max(0.0, delay_s), handle, fn)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # sooner than the thread is waiting for: wake it
                self._cond.notify()
            return handle

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._cancelled.add(handle)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, handle, fn = heapq.heappop(self._heap)
                if handle in self._cancelled:
                    self._cancelled.discard(handle)
                    continue
            with contextlib.suppress(Exception):  # a callback must not kill the timer thread
                fn()


class Alarm:
    """One callback on `timers`, kept set for the soonest time it is asked for since it last
    rang (`clock`'s time: time.time or time.monotonic): one timer for a whole table of
    deadlines, not one per entry. `fn` runs on the timer thread; it sets the alarm again for
    whatever is due next."""

    def __init__(self, timers: Timers, fn: Callable[[], None], clock: Callable[[], float]) -> None:
        self._timers = timers
        self._fn = fn
        self._clock = clock
        self._lock = threading.Lock()
        self.at = math.inf  # when it rings; inf: not set
        self._handle: int | None = None

    def ring_by(self, at: float) -> None:
        """Ring at `at` at the latest (a sooner time already set stands)."""
        if at >= self.at:  # the common case, without the lock; checked again under it
            return
        with self._lock:
            if at >= self.at:
                return
            if self._handle is not None:
                self._timers.cancel(self._handle)
            self.at = at
            self._handle = self._timers.schedule(max(0.0, at - self._clock()), self._ring)

    def _ring(self) -> None:
        with self._lock:
            self.at, self._handle = math.inf, None
        self._fn()
