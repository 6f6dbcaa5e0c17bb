"""tui.widgets.chart, the stats screen's day chart, as a pure function: scaling, stacking
(useful below, waste on top), ticks, widths, one day, no rows, too many days."""

from __future__ import annotations

from rich.text import Text

from shepherd.core.stats import DayTotal, StatsRow, by_day
from shepherd.tui.widgets.chart import (EIGHTHS, USEFUL_STYLE, WASTE_STYLE, bars_of, chart_lines, nice_scale,
                                        span_days)


def _style_at(line: Text, x: int) -> str:
    style = str(line.style or "")
    for span in line.spans:
        if span.start <= x < span.end:
            style = str(span.style)
    return style


def _column(lines: list[Text], x: int) -> tuple[int, int]:
    """(useful, waste) eighths of the bar whose left edge is at ``x`` (plot lines only)."""
    useful = waste = 0
    for line in lines[1:-2]:
        char = line.plain[x] if x < len(line.plain) else " "
        n = EIGHTHS.index(char) if char in EIGHTHS else 0
        style = _style_at(line, x)
        if style == f"{USEFUL_STYLE} on {WASTE_STYLE}":
            useful, waste = useful + n, waste + 8 - n
        elif style == USEFUL_STYLE:
            useful += n
        elif style == WASTE_STYLE:
            waste += n
    return useful, waste


def _plot_x(lines: list[Text]) -> int:
    """Where the bars start: after the y labels and the axis."""
    return lines[-2].plain.index("└") + 1


WEEK = [DayTotal(f"2026-11-0{i}", t, w, 0.0, 0.0) for i, t, w in
        [(1, 100_000, 0), (2, 400_000, 100_000), (3, 0, 0), (4, 200_000, 200_000), (5, 50_000, 10_000),
         (6, 0, 0), (7, 300_000, 30_000)]]


def test_nice_scale_steps() -> None:
    assert nice_scale(400_000, 4) == 100_000
    assert nice_scale(410_000, 4) == 200_000
    assert nice_scale(0.9, 2) == 0.5
    assert nice_scale(7, 1) == 10
    assert nice_scale(0, 4) == 1.0


def test_bars_are_scaled_to_the_axis_and_stacked() -> None:
    lines = chart_lines(WEEK, 80, 12, "tokens")  # 9 plot rows: 72 eighths for the axis' 400k
    x0 = _plot_x(lines)
    slot = 7  # 7 days fit: the widest bars (6) and a gap
    cols = [_column(lines, x0 + i * slot) for i in range(7)]
    assert cols[1] == (54, 18)  # 300k useful, 100k waste of 400k
    assert cols[0] == (18, 0) and cols[2] == (0, 0)
    assert cols[3] == (0, 36)  # all of it wasted
    # 30k of 400k is 5.4 eighths; useful (49) and the total (54) end in the same cell: it
    # takes the colour of its larger part, the waste
    assert cols[6] == (48, 6)
    assert cols[4] == (7, 2)  # a small waste stays visible
    # bottom up: useful cells, the one where useful ends (on the waste's colour), waste cells
    bottom_up = [_style_at(line, x0 + slot) for line in reversed(lines[1:-2])]
    assert bottom_up == [USEFUL_STYLE] * 6 + [f"{USEFUL_STYLE} on {WASTE_STYLE}"] + [WASTE_STYLE] * 2


def test_ticks_are_labelled_on_their_rows() -> None:
    lines = chart_lines(WEEK, 80, 11, "tokens")  # 8 plot rows, 4 ticks of 100k
    plot = [line.plain for line in lines[1:-2]]
    assert len(plot) == 8
    labelled = {i: p.split("┤")[0].strip() for i, p in enumerate(plot) if "┤" in p}
    assert labelled == {0: "400k", 2: "300k", 4: "200k", 6: "100k"}
    assert lines[-2].plain.lstrip().startswith("0 └")
    few = chart_lines(WEEK, 80, 6, "tokens")  # 3 plot rows: one tick at the top
    assert [p.split("┤")[0].strip() for p in (t.plain for t in few[1:-2]) if "┤" in p] == ["500k"]


def test_cost_labels() -> None:
    days = [DayTotal("2026-11-01", 10, 5, 1.2, 0.3)]
    lines = chart_lines(days, 60, 12, "cost")
    assert "cost (USD) per day" in lines[0].plain
    labels = [t.plain.split("┤")[0].strip() for t in lines if "┤" in t.plain]
    assert labels == ["$2", "$1.5", "$1", "$0.5"]


def test_widths_80_and_120_fit_and_show_every_day() -> None:
    month = span_days([DayTotal("2026-11-05", 1000, 100), DayTotal("2026-11-30", 5000, 0)], "2026-11-01",
                      "2026-11-30")
    assert len(month) == 30
    for width in (80, 120):
        for days in (WEEK, month):
            lines = chart_lines(days, width, 14, "tokens")
            assert all(line.cell_len <= width for line in lines), width
            assert "per day" in lines[0].plain
            dates = lines[-1].plain
            assert dates.split()[0] == days[0].day[5:]
    narrow, wide = (chart_lines(month, w, 14, "tokens")[-1].plain.split() for w in (80, 120))
    assert len(wide) > len(narrow) >= 8  # more dates where there is room, in order, none cut
    assert wide == sorted(wide) and all(len(d) == 5 for d in wide + narrow)


def test_one_day() -> None:
    lines = chart_lines([DayTotal("2026-11-03", 1234, 0)], 80, 10, "tokens")
    x0 = _plot_x(lines)
    assert _column(lines, x0) == (35, 0)  # 1234 of the axis' 2000, in 7 rows of eighths
    assert lines[-1].plain.split() == ["11-03"]


def test_zero_rows_and_zero_days_say_so() -> None:
    assert [t.plain for t in chart_lines([], 80, 10)] == ["no usage in this period"]
    assert [t.plain for t in chart_lines([DayTotal("2026-11-01")], 80, 10, empty="nothing")] == ["nothing"]


def test_too_many_days_for_the_width_are_grouped() -> None:
    year = span_days([DayTotal("2026-01-01", 10, 1), DayTotal("2026-12-31", 30, 3)], None, "2026-12-31")
    assert len(year) == 365
    lines = chart_lines(year, 80, 10, "tokens")
    assert all(line.cell_len <= 80 for line in lines)
    assert "per 5 days" in lines[0].plain
    bars = bars_of(year, "tokens", 5)
    assert sum(b.total for b in bars) == 40 and sum(b.waste for b in bars) == 4


def test_by_day_sums_backends_and_models() -> None:
    rows = [StatsRow("2026-11-02", "claude", "opus", 1, 1, 100, 10, 0.5, 50, 5, 0.2),
            StatsRow("2026-11-01", "openai", "gpt", 1, 1, 10, 1, 0.0, 0, 0, 0.0),
            StatsRow("2026-11-02", "openai", "gpt", 1, 1, 20, 2, 0.1, 20, 2, 0.1)]
    days = by_day(rows)
    assert [d.day for d in days] == ["2026-11-01", "2026-11-02"]
    assert (days[1].tokens, days[1].waste_tokens) == (132, 77)
    assert abs(days[1].cost_usd - 0.6) < 1e-9 and abs(days[1].waste_cost_usd - 0.3) < 1e-9
