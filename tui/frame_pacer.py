"""How often a live view applies what arrived: ~30 frames a second, down to 10 while
events pour in faster than anyone reads them.

A frame of a streaming view costs a layout and a repaint of the whole screen (20-60 ms
under the 8-session flood of ``bench/ui_bench.py``), and while the event loop is that
busy, every frame drawn is time a key press or a subtask switch waits behind. At 10
frames a second under the flood, a switch's p95 fell from ~124 to ~93 ms (A/B, 6 child
runs each). The loop's lateness does not show that load (the frame timers were late by
~1 ms at the median), and neither does one frame's count of events (they come in the
writer's commits: 0 in one frame, 250 in the next). The signal is the view's event rate,
smoothed over frames: the interval grows with it past ``BUSY_RATE`` (400 events a
second), to ``SLOW_FRAME_S`` at three times that. An agent at a real pace (~100 deltas a
second) never stretches it. Nothing is dropped: a frame applies everything that arrived
since the last one.

The clock is real time (``time.perf_counter``), not the screen's: this is about the
loop's load, not what the screen shows."""

from __future__ import annotations

import time
from typing import Callable

FRAME_S = 1 / 30  # frames while events come at a pace a person reads
SLOW_FRAME_S = 1 / 10  # at most, while they pour in
BUSY_RATE = 400.0  # events a second a view takes at FRAME_S; the interval grows in proportion past it
SMOOTHING = 0.3  # the weight of the latest frame's rate in the smoothed one


class FramePacer:
    """``ran(events)`` as each frame is applied; ``interval``: how long to wait for the next."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.interval = FRAME_S
        self.rate = 0.0  # events a second, smoothed
        self._last: float | None = None

    def ran(self, events: int) -> float:
        """A frame that brought ``events`` (since the one before) is applied now: the
        interval until the next."""
        now = self.now()
        if self._last is not None and now > self._last:
            rate = events / (now - self._last)
            self.rate += SMOOTHING * (rate - self.rate)
        self._last = now
        self.interval = min(SLOW_FRAME_S, FRAME_S * max(1.0, self.rate / BUSY_RATE))
        return self.interval


__all__ = ["BUSY_RATE", "FRAME_S", "SLOW_FRAME_S", "FramePacer"]
