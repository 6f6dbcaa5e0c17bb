"""One app-level timer drives every spinner and countdown.

Widgets that animate register while they need it (a running call, an active wait) and
get ``tick(frame)`` ~10 times a second; with nobody registered the timer stops, so an
idle screen costs nothing. ``Ticker.animate = False`` freezes everything at frame 0
(snapshot tests); time itself comes from each screen's injectable clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from textual.app import App
    from textual.timer import Timer


class Animated(Protocol):
    is_attached: bool

    def tick(self, frame: int) -> None: ...


class Ticker:
    animate: ClassVar[bool] = True  # class-level switch: False for snapshots
    INTERVAL: ClassVar[float] = 0.1

    def __init__(self, app: "App") -> None:
        self.app = app
        self.frame = 0
        self._subs: set[Animated] = set()
        self._timer: Timer | None = None

    @classmethod
    def of(cls, app: "App") -> "Ticker":
        ticker = getattr(app, "_shepherd_ticker", None)
        if ticker is None:
            ticker = cls(app)
            setattr(app, "_shepherd_ticker", ticker)
        return ticker

    def add(self, widget: Animated) -> None:
        self._subs.add(widget)
        if self.animate and self._timer is None:
            self._timer = self.app.set_interval(self.INTERVAL, self._tick, name="shepherd-ticker")

    def discard(self, widget: Animated) -> None:
        self._subs.discard(widget)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def tick_now(self) -> None:
        """Advance one frame by hand (tests drive countdowns this way)."""
        self._tick()

    def _tick(self) -> None:
        if not self._subs:
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
            return
        if self.animate:
            self.frame += 1
        for widget in list(self._subs):
            if not widget.is_attached:
                self._subs.discard(widget)
                continue
            try:
                widget.tick(self.frame)
            except Exception:  # one broken widget must not stop every spinner
                self._subs.discard(widget)
