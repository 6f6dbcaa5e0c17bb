"""The stats screen (``t`` on the home): tokens or cost per day as a stacked bar chart (the
useful part and the retry waste), for the last 7 days, 30 days or everything, and below it
the same period by backend and model with totals and the waste's share.

The numbers are core.stats.stats()'s, the ones ``shepherd stats`` prints; they load in a
worker, so the keys keep working over a large store. Days are UTC calendar days (as the
CLI's). Cost is plotted when every backend in the period reported one; otherwise tokens,
and the title says which.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from shepherd.core.stats import StatsRow, by_day, stats
from shepherd.core.text import safe
from shepherd.tui.fmt import fmt_cost, fmt_tokens
from shepherd.tui.widgets.chart import WASTE_STYLE, DayChart, span_days
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore

PERIODS = {"7d": (7, "the last 7 days"), "30d": (30, "the last 30 days"), "all": (None, "all time")}


def period_start(period: str, now: float) -> str | None:
    """The first UTC day of ``period`` (today counts as one of its days); None for all."""
    days = PERIODS[period][0]
    if days is None:
        return None
    today = datetime.fromtimestamp(now, tz=timezone.utc).date()
    return (today - timedelta(days=days - 1)).isoformat()


def choose_metric(rows: list[StatsRow]) -> tuple[str, str]:
    """("cost" or "tokens", what the title says about it): cost only when every backend
    and model that used tokens in the period reported a cost (a sum missing some would be
    an untrue total)."""
    groups: dict[tuple[str, str | None], list[float]] = {}
    for r in rows:
        if r.input_tokens + r.output_tokens > 0 or r.cost_usd > 0:
            g = groups.setdefault((r.backend, r.model), [0.0, 0.0])
            g[0] += r.input_tokens + r.output_tokens
            g[1] += r.cost_usd
    if groups and all(cost > 0 for _, cost in groups.values()):
        return "cost", "cost in USD"
    if any(cost > 0 for _, cost in groups.values()):
        return "tokens", "tokens (not every backend reported a cost)"
    return "tokens", "tokens (no backend reported a cost)"


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "–"


def breakdown(rows: list[StatsRow], metric: str) -> Table | Text:
    """The period by backend and model, a total line under it; the waste % is of the
    plotted metric."""
    if not rows:
        return Text("")
    groups: dict[tuple[str, str | None], list[float]] = {}
    for r in rows:
        g = groups.setdefault((r.backend, r.model), [0, 0, 0.0, 0.0])
        g[0] += r.input_tokens + r.output_tokens
        g[1] += r.waste_input_tokens + r.waste_output_tokens
        g[2] += r.cost_usd
        g[3] += r.waste_cost_usd
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold", expand=False)
    table.add_column("backend", no_wrap=True, max_width=12, overflow="ellipsis")
    table.add_column("model", no_wrap=True, max_width=24, overflow="ellipsis")
    for name in ("tokens", "waste", "cost", "waste $", "waste %"):
        table.add_column(name, justify="right", no_wrap=True)

    def cells(tok: float, wtok: float, cost: float, wcost: float) -> list[Text]:
        whole, part = (cost, wcost) if metric == "cost" else (tok, wtok)
        return [Text(fmt_tokens(int(tok), 1)), Text(fmt_tokens(int(wtok), 1), style=WASTE_STYLE if wtok else ""),
                Text(fmt_cost(cost) if cost else "–"), Text(fmt_cost(wcost) if cost else "–"),
                Text(_pct(part, whole), style=WASTE_STYLE if part else "")]

    totals = [0.0, 0.0, 0.0, 0.0]
    for (backend, model), g in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        table.add_row(Text(safe(backend) or "?"), Text(safe(model or "–")), *cells(*g))
        totals = [a + b for a, b in zip(totals, g)]
    if len(groups) > 1:
        table.add_row(Text("total", style="bold"), Text(""), *cells(*totals), style="bold")
    return table


class StatsScreen(CSSSection, Screen[None]):
    """Esc or q goes back; 7/w, 3/m and a pick the period."""

    CSS_SECTION = "stats"  # tui/css/stats.tcss

    HELP_TITLE = "the stats chart"
    BINDINGS = [
        Binding("escape,q", "close", "Back"),
        Binding("7,w", "period('7d')", "7 days", tooltip="The last 7 days (today included)"),
        Binding("3,m", "period('30d')", "30 days", tooltip="The last 30 days (today included)"),
        Binding("a", "period('all')", "All", tooltip="Everything in the store"),
    ]

    def __init__(self, store: "EventStore", *, clock: Callable[[], float] = time.time, period: str = "7d") -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self.period = period
        self.rows: list[StatsRow] = []
        self.metric = "tokens"
        self.loaded = asyncio.Event()  # the current period's numbers are on screen (tests)

    def compose(self) -> ComposeResult:
        yield Static(self._title(None), id="stats-title")
        yield DayChart(id="stats-chart")
        yield Static(Text(""), id="stats-breakdown")
        yield Footer()

    def on_mount(self) -> None:
        self._load_period()

    def _title(self, said: str | None) -> Text:
        title = Text.assemble(("Usage and retry waste", "bold"), f" · {PERIODS[self.period][1]}")
        title.append(f" · {said}" if said else " · loading…", style="dim")
        title.append("  (UTC days)", style="dim")
        return title

    def action_period(self, period: str) -> None:
        if period in PERIODS and period != self.period:
            self.period = period
            self._load_period()

    def action_close(self) -> None:
        self.app.pop_screen()

    def _load_period(self) -> None:
        self.loaded.clear()
        self.query_one("#stats-title", Static).update(self._title(None))
        self.run_worker(self._load(self.period), group="stats-load", exclusive=True, exit_on_error=False)

    async def _load(self, period: str) -> None:
        now = self.clock()
        first = period_start(period, now)
        since = None if first is None else datetime.fromisoformat(first).replace(tzinfo=timezone.utc).timestamp()
        try:
            rows = await stats(self.store, since)
        except Exception as exc:  # noqa: BLE001 - the store went away: say it, stay open
            self._show([], Text(safe(f"could not read the stats: {exc}"), style="yellow"))
            return
        if period != self.period:
            return  # a newer period's load is on its way
        self._show(rows, None, first, now)

    def _show(self, rows: list[StatsRow], error: Text | None, first: str | None = None, now: float = 0.0) -> None:
        self.rows = rows
        self.metric, said = choose_metric(rows)
        chart = self.query_one(DayChart)
        if error is not None:
            chart.show([], self.metric, error.plain)
        else:
            today = datetime.fromtimestamp(now, tz=timezone.utc).date().isoformat()
            empty = ("No usage recorded yet: the tokens and cost of every session show here."
                     if self.period == "all" else f"No usage in {PERIODS[self.period][1]} (a shows all time).")
            chart.show(span_days(by_day(rows), first, today) if rows else [], self.metric, empty)
        said = "could not load" if error is not None else said if rows else "nothing yet"
        self.query_one("#stats-title", Static).update(self._title(said))
        self.query_one("#stats-breakdown", Static).update(breakdown(rows, self.metric))
        self.loaded.set()

