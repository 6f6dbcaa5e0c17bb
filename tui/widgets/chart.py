"""The stats screen's day chart: one stacked bar per day (the useful part below, the retry
waste on top in another colour), a y axis with a few labelled ticks, dates under the bars.

``chart_lines(days, width, height, metric)`` is pure: core.stats.by_day's rows and a size
in, Rich Text lines out (tests call it directly); ``DayChart`` only calls it with its own
size. Bars are drawn in eighths of a cell with the Unicode lower blocks; a cell where the
useful part ends below the waste's start shows both (the block in the useful colour on the
waste's background).
"""

from __future__ import annotations

import math
from datetime import date, timedelta

from rich.text import Text
from textual.widget import Widget

from shepherd.core.records import record
from shepherd.core.stats import DayTotal
from shepherd.tui.fmt import fmt_tokens

EIGHTHS = " ▁▂▃▄▅▆▇█"
USEFUL_STYLE = "#3fa7d6"  # blue and orange: apart for the common colour blindnesses too
WASTE_STYLE = "#f07f3c"
AXIS_STYLE = "dim"
MAX_BAR_WIDTH = 6
DATE_WIDTH = 5  # "11-03"


@record
class Bar:
    """One bar: the first day it covers and its two stacked values."""
    day: str
    useful: float
    waste: float

    @property
    def total(self) -> float:
        return self.useful + self.waste


def span_days(days: list[DayTotal], first: str | None, last: str) -> list[DayTotal]:
    """Every calendar day from ``first`` (None: the first day with usage) to ``last``, the
    days without usage as zeros: a gap in the plot is a day nothing ran."""
    have = {d.day: d for d in days}
    if first is None:
        if not days:
            return []
        first = min(have)
    start, end = date.fromisoformat(first), date.fromisoformat(max(last, *have) if have else last)
    out = []
    while start <= end:
        key = start.isoformat()
        out.append(have.get(key, DayTotal(key)))
        start += timedelta(days=1)
    return out


def bars_of(days: list[DayTotal], metric: str, per_bar: int = 1) -> list[Bar]:
    """The bars of ``metric`` ("tokens" or "cost"), ``per_bar`` consecutive days each."""
    out: list[Bar] = []
    for i in range(0, len(days), per_bar):
        group = days[i:i + per_bar]
        if metric == "cost":
            total, waste = sum(d.cost_usd for d in group), sum(d.waste_cost_usd for d in group)
        else:
            total, waste = float(sum(d.tokens for d in group)), float(sum(d.waste_tokens for d in group))
        waste = min(max(waste, 0.0), max(total, 0.0))
        out.append(Bar(group[0].day, max(total, 0.0) - waste, waste))
    return out


def nice_scale(top: float, ticks: int) -> float:
    """The smallest step of 1, 2, 2.5 or 5 times a power of ten with ``ticks`` steps >= top."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw * (1 - 1e-9):
            return m * power
    return 10 * power  # (not reached)


def fmt_value(value: float, metric: str) -> str:
    if metric == "cost":
        if value == 0:
            return "$0"
        if value >= 100:
            return f"${value:.0f}"
        return f"${value:.2f}".rstrip("0").rstrip(".") if value >= 0.01 else f"${value:.4f}".rstrip("0")
    return fmt_tokens(int(round(value)), 1).replace(".0k", "k").replace(".0M", "M")


def _cell(useful_e: int, total_e: int, row: int) -> tuple[str, str]:
    """The character and style of one cell of a bar (``row`` 0 at the bottom)."""
    lo, hi = row * 8, row * 8 + 8
    if total_e <= lo:
        return " ", ""
    if useful_e >= hi:
        return EIGHTHS[8], USEFUL_STYLE
    if useful_e <= lo:
        return EIGHTHS[min(total_e, hi) - lo], WASTE_STYLE
    u = useful_e - lo
    if total_e >= hi:  # useful at the bottom of the cell, waste over the rest of it
        return EIGHTHS[u], f"{USEFUL_STYLE} on {WASTE_STYLE}"
    t = total_e - lo  # both end inside this cell: one block, in the colour of the larger part
    return EIGHTHS[t], USEFUL_STYLE if u >= t - u else WASTE_STYLE


def _heights(bar: Bar, top: float, rows: int) -> tuple[int, int]:
    """(useful, total) in eighths of a cell; any waste or usage at all stays visible."""
    full = rows * 8
    total_e = min(full, round(bar.total / top * full))
    useful_e = min(total_e, round(bar.useful / top * full))
    if bar.total > 0 and total_e == 0:
        total_e = 1
        useful_e = 0 if bar.waste > 0 else 1
    if bar.waste > 0 and useful_e == total_e:
        if total_e < full:
            total_e += 1
        else:
            useful_e -= 1
    return useful_e, total_e


def chart_lines(days: list[DayTotal], width: int, height: int, metric: str = "tokens",
                empty: str = "no usage in this period") -> list[Text]:
    """The chart in ``width`` x ``height`` cells (fewer lines when there is little room):
    a legend, the plot with its y ticks, the x axis and the dates."""
    if not days or all(d.tokens == 0 and d.cost_usd == 0 for d in days):
        return [Text(empty, style="dim")]
    plot_rows = max(2, height - 3)  # the legend, the axis and the dates take a line each
    ticks = 4 if plot_rows >= 8 else 2 if plot_rows >= 4 else 1
    per_bar = 1
    while True:
        bars = bars_of(days, metric, per_bar)
        step = nice_scale(max(b.total for b in bars), ticks)
        labels = [fmt_value(step * j, metric) for j in range(ticks + 1)]
        label_w = max(map(len, labels))
        plot_w = max(1, width - label_w - 2)
        slot = plot_w // len(bars)
        if slot >= 1:
            break
        per_bar = math.ceil(len(days) / plot_w)  # too many days for the width: k days a bar
    slot = min(slot, MAX_BAR_WIDTH + 1)
    bar_w = slot - 1 if slot >= 2 else 1
    top = step * ticks
    tick_rows = {max(0, round(j / ticks * plot_rows) - 1): labels[j] for j in range(1, ticks + 1)}

    what = "cost (USD)" if metric == "cost" else "tokens"
    unit = "per day" if per_bar == 1 else f"per {per_bar} days"
    lines = [Text.assemble(("█", USEFUL_STYLE), " useful  ", ("█", WASTE_STYLE), " retry waste",
                           (f"   {what} {unit}", "dim"))]
    heights = [_heights(b, top, plot_rows) for b in bars]
    for row in range(plot_rows - 1, -1, -1):
        label = tick_rows.get(row)
        line = Text(f"{label:>{label_w}} ┤" if label else f"{'':>{label_w}} │")
        line.stylize(AXIS_STYLE)  # the axis only: the bars appended below keep their colours
        for useful_e, total_e in heights:
            char, style = _cell(useful_e, total_e, row)
            line.append(char * bar_w, style=style or None)
            line.append(" " * (slot - bar_w))
        lines.append(line)
    lines.append(Text(f"{labels[0]:>{label_w}} └" + "─" * (slot * len(bars)), style=AXIS_STYLE))
    dates = [" "] * (label_w + 2 + slot * len(bars) + DATE_WIDTH)
    every = max(1, math.ceil((DATE_WIDTH + 1) / slot))
    for i in range(0, len(bars), every):
        at = label_w + 2 + i * slot
        if at + DATE_WIDTH <= width:  # a date cut at the edge would be a wrong date
            dates[at:at + DATE_WIDTH] = bars[i].day[5:]
    lines.append(Text("".join(dates).rstrip()[:width], style=AXIS_STYLE))
    return lines


class DayChart(Widget):
    """The chart at the widget's size; ``show`` sets what it plots."""

    DEFAULT_CSS = "DayChart { height: 1fr; min-height: 7; }"

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.days: list[DayTotal] = []
        self.metric = "tokens"
        self.empty = "loading…"

    def show(self, days: list[DayTotal], metric: str, empty: str) -> None:
        self.days, self.metric, self.empty = days, metric, empty
        self.refresh()

    def render(self) -> Text:
        lines = chart_lines(self.days, self.size.width, self.size.height, self.metric, self.empty)
        return Text("\n").join(lines)
