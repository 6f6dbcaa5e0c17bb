"""The replay's timeline: what is shown (REPLAY, the moment, playing or paused, the speed)
and a bar of the session's events with the cursor and marks for attempts, retries and
errors. A click on the bar asks the screen to go there (``Seek``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual.content import Content
from textual.events import Click
from textual.message import Message
from textual.widget import Widget

from shepherd.tui.fmt import fmt_clock, fmt_duration
from shepherd.tui.model.replay import speed_label

if TYPE_CHECKING:
    from shepherd.tui.model.replay import ReplayDriver

COUNT_W = 14  # the room right of the bar: " 12345/67890" and a margin
# a cell's mark, strongest first: (mark kind, glyph, style)
MARKS = (("error", "✗", "bold $error"), ("retry", "↻", "bold $warning"), ("attempt", "┃", "$accent"))


def moment_text(ts: float | None) -> str:
    """The moment shown, as a wall clock (local time, the date too: a replay is of the past)."""
    if ts is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def bar_cells(driver: "ReplayDriver", width: int) -> list[tuple[str, str]]:
    """``width`` cells for the bar: played, not yet, the marks and the cursor (by event index)."""
    n = driver.total
    if n == 0 or width <= 0:
        return [("─", "$foreground-muted")] * max(0, width)

    def cell(i: int) -> int:  # the first event in the first cell, the last in the last
        return 0 if n <= 1 else min(width - 1, round(i * (width - 1) / (n - 1)))

    cursor = cell(max(0, driver.index)) if driver.index >= 0 else -1
    cells: list[tuple[str, str]] = [("━", "$accent") if c <= cursor else ("─", "$foreground-muted")
                                    for c in range(width)]
    for kind, glyph, style in reversed(MARKS):  # the strongest written last
        for i in driver.marks[kind]:
            if kind == "attempt" and i == (driver.marks["attempt"] or [-1])[0]:
                continue  # the first attempt is the start: no mark
            cells[cell(i)] = (glyph, style)
    if cursor >= 0:
        cells[cursor] = ("●", "bold $text")
    return cells


def head_line(driver: "ReplayDriver") -> Content:
    start, now, end = driver.start_ts, driver.now, driver.end_ts
    state = ("▶ playing", "bold $success") if driver.playing else ("⏸ paused", "bold $warning")
    if driver.at_end and not driver.playing and driver.total:
        state = ("■ end", "bold $foreground-muted")
    sep = (" │ ", "$foreground-muted")
    parts: list[tuple[str, str] | str] = [
        (" REPLAY ", "bold reverse $warning"), " ", state, " ", (speed_label(driver.speed), "bold"), sep,
        (moment_text(now if driver.total else None), "bold"),
    ]
    if start is not None and end is not None:
        parts += ["  ", (f"{fmt_clock(max(0.0, now - start))} / {fmt_clock(max(0.0, end - start))}",
                         "$foreground-muted")]
    if driver.gap_note:
        parts += [sep, (f"gap skipped: {fmt_duration(round(driver.gap_note))}", "italic $warning")]
    return Content.assemble(*parts)


class Timeline(Widget):
    """Two lines: the head (REPLAY, state, speed, moment) and the bar with the count."""

    class Seek(Message):
        """A click on the bar: go to ``fraction`` (0..1) of the session's events."""

        def __init__(self, fraction: float) -> None:
            super().__init__()
            self.fraction = fraction

    def __init__(self, driver: "ReplayDriver", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.driver = driver

    def _bar_width(self) -> int:
        return max(4, (self.content_size.width or 80) - COUNT_W)

    def render(self) -> Content:
        d = self.driver
        width = self._bar_width()
        bar = Content.assemble(" ", *bar_cells(d, width - 1))
        count = f" {d.index + 1 if d.total else 0}/{d.total}"
        return Content("\n").join([head_line(d), bar.append(Content.styled(count, "bold"))])

    @property
    def text(self) -> str:
        return self.render().plain

    def on_click(self, event: Click) -> None:
        if event.y != 1:
            return
        event.stop()
        x, width = event.x - 1, self._bar_width() - 1  # (one cell of margin on the left)
        if 0 <= x < width:
            self.post_message(self.Seek(x / max(1, width - 1)))
