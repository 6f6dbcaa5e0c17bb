"""One injectable clock for every wait, so tests and demos control time.

``now()`` is wall-clock time for event timestamps; ``monotonic()`` measures durations;
``sleep()`` is the only way the engine waits. ``SHEPHERD_TIME_SCALE`` multiplies every
real wait (0.1 = ten times faster); events keep the nominal delays.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


def time_scale_from_env() -> float:
    raw = os.environ.get("SHEPHERD_TIME_SCALE", "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"SHEPHERD_TIME_SCALE must be a number, got {raw!r}") from None
    if scale < 0:
        raise ValueError(f"SHEPHERD_TIME_SCALE must be >= 0, got {raw!r}")
    return scale


class RealClock:
    """Real time; waits are scaled by ``scale`` (default: SHEPHERD_TIME_SCALE)."""

    def __init__(self, scale: float | None = None) -> None:
        self.scale = time_scale_from_env() if scale is None else scale

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.scale)


class FakeClock:
    """Virtual time for tests: ``sleep`` parks until ``advance``/``run_until_idle`` moves
    time past its deadline. Records every requested sleep in ``sleeps``."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._start = start
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self._now + seconds, next(self._ids), fut))
        await fut

    def pending(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        target = self._now + seconds
        while self._waiters and self._waiters[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._waiters)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
        self._now = target

    def wake_next(self) -> bool:
        """Jump to the earliest pending deadline; False if nobody sleeps."""
        while self._waiters:
            deadline, _, fut = heapq.heappop(self._waiters)
            if fut.done():
                continue
            self._now = max(self._now, deadline)
            fut.set_result(None)
            return True
        return False


class AutoClock(FakeClock):
    """Virtual time that runs itself: whenever every task is blocked on a sleep, time
    jumps to the next deadline. Lets whole runs with minutes of backoff finish at once."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        super().__init__(start)
        self._ticker: asyncio.Task[None] | None = None

    async def sleep(self, seconds: float) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        await super().sleep(seconds)

    async def _tick(self) -> None:
        while self.pending():
            # let every runnable task run until all are blocked again
            for _ in range(20):
                await asyncio.sleep(0)
            self.wake_next()


def real_time(clock: Clock | None) -> Clock:
    """The clock for measuring real processes (a tool's timeout, an agent gone silent):
    SHEPHERD_TIME_SCALE speeds up the engine's own waits, not the programs it watches,
    and an AutoClock would jump past a deadline while the process works. A manually
    driven FakeClock (tests) is kept, so tests still drive these waits."""
    if clock is None or isinstance(clock, (RealClock, AutoClock)):
        return RealClock(scale=1.0)
    return clock


def real_seconds(clock: Clock, nominal: float) -> float:
    """How long ``clock.sleep(nominal)`` really lasts, as ``clock.now()`` will see it: a
    RealClock's time scale (SHEPHERD_TIME_SCALE) applies; virtual clocks wait the nominal time."""
    return max(0.0, nominal) * float(getattr(clock, "scale", 1.0))
