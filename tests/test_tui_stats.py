"""The stats screen (``t`` on the home) on the real app over a real store (both stores):
it opens, its period keys change what it loads, esc goes back; and its snapshots."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.events import (AttemptStarted, Error, RetryScheduled, SessionFinished, SessionStarted,
                                  SubtaskFinished, SubtaskStarted, Usage)
from shepherd.core.store import open_store
from shepherd.tui.app import ShepherdApp
from shepherd.tui.screens.sessions import SessionsScreen
from shepherd.tui.screens.stats import StatsScreen
from tests import tui_fixtures as fx
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)
from tests.test_tui_app import shows, wait_until

DAY = 86400.0


async def write_session(store: Any, sid: str, ts: float, backend: str, model: str, useful: int, waste: int,
                        usd_per_token: float | None) -> None:
    """A session whose one subtask spends ``waste`` tokens on a failed attempt (when
    nonzero) and ``useful`` on the attempt that finished it."""

    def usage(attempt: int, tokens: int, at: float) -> Usage:
        cost = None if usd_per_token is None else tokens * usd_per_token
        return Usage(session_id=sid, subtask_id="s1", attempt=attempt, input_tokens=tokens * 9 // 10,
                     output_tokens=tokens - tokens * 9 // 10, cost_usd=cost, ts=at)

    evs: list[Any] = [SessionStarted(session_id=sid, title=f"work {sid}", backend=backend, model=model, ts=ts),
                      SubtaskStarted(session_id=sid, subtask_id="s1", ts=ts),
                      AttemptStarted(session_id=sid, subtask_id="s1", attempt=1, ts=ts)]
    attempt = 1
    if waste:
        evs += [usage(1, waste, ts + 1),
                Error(session_id=sid, subtask_id="s1", attempt=1, kind="rate_limit", retryable=True, ts=ts + 2),
                RetryScheduled(session_id=sid, subtask_id="s1", attempt=1, kind="rate_limit", ts=ts + 2),
                AttemptStarted(session_id=sid, subtask_id="s1", attempt=2, reason="retry", ts=ts + 3)]
        attempt = 2
    evs += [usage(attempt, useful, ts + 4),
            SubtaskFinished(session_id=sid, subtask_id="s1", attempt=attempt, status="done", ts=ts + 5),
            SessionFinished(session_id=sid, status="done", ts=ts + 6)]
    for ev in evs:
        await store.append(ev)


# (id, days before NOW, backend, model, useful tokens, waste tokens)
SESSIONS = [
    ("st-today", 0, "claude", "claude-sonnet-4-5", 120_000, 40_000),
    ("st-day1", 1, "openai", "gpt-4.1", 60_000, 0),
    ("st-day3", 3, "claude", "claude-sonnet-4-5", 210_000, 150_000),
    ("st-day4", 4, "openai", "gpt-4.1", 90_000, 12_000),
    ("st-day6", 6, "claude", "claude-opus-4-1", 40_000, 0),
    ("st-day20", 20, "claude", "claude-sonnet-4-5", 300_000, 30_000),
    ("st-day100", 100, "openai", "gpt-4.1", 500_000, 0),
]


async def seed(target: Any, *, costs: bool = True) -> None:
    store = await open_store(target)
    try:
        for sid, ago, backend, model, useful, waste in SESSIONS:
            await write_session(store, sid, fx.NOW - ago * DAY - 3600, backend, model, useful, waste,
                                3e-6 if costs else None)
    finally:
        await store.close()


async def stats_opened(pilot: Any) -> StatsScreen:
    app = pilot.app
    await wait_until(pilot, lambda: app.home is not None and app.home.loaded, what="home loaded")
    await pilot.press("t")
    await wait_until(pilot, lambda: isinstance(app.screen, StatsScreen) and app.screen.loaded.is_set(),
                     what="stats loaded")
    return app.screen


async def period(pilot: Any, screen: StatsScreen, key: str) -> None:
    await pilot.press(key)
    await wait_until(pilot, lambda: screen.loaded.is_set(), what=f"period {key}")
    await pilot.pause()


def _tokens(screen: StatsScreen) -> int:
    return sum(r.input_tokens + r.output_tokens for r in screen.rows)


async def test_t_opens_the_chart_periods_change_it_esc_goes_back(store_target: Any) -> None:
    await seed(store_target, costs=False)
    app = ShepherdApp(store_target, clock=lambda: fx.NOW)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await stats_opened(pilot)
        assert screen.period == "7d" and screen.metric == "tokens"
        assert _tokens(screen) == 160_000 + 60_000 + 360_000 + 102_000 + 40_000
        assert shows(app, "the last 7 days", "tokens (no backend reported a cost)", "retry waste")
        assert shows(app, "01-09", "01-15")  # the first and the last day under the bars
        await period(pilot, screen, "3")
        assert screen.period == "30d" and _tokens(screen) == 722_000 + 330_000
        assert shows(app, "the last 30 days")
        await period(pilot, screen, "a")
        assert screen.period == "all" and _tokens(screen) == 1_052_000 + 500_000
        await period(pilot, screen, "w")
        assert screen.period == "7d" and _tokens(screen) == 722_000
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="back home")


async def test_an_empty_store_says_so(tmp_path: Path) -> None:
    app = ShepherdApp(tmp_path / "empty.db", clock=lambda: fx.NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await stats_opened(pilot)
        assert shows(app, "No usage in the last 7 days")
        await period(pilot, screen, "a")
        assert shows(app, "No usage recorded yet")


async def test_cost_is_plotted_when_every_backend_reported_one(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await seed(db)
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await stats_opened(pilot)
        assert screen.metric == "cost"
        assert shows(app, "cost in USD", "cost (USD) per day", "total")


# --- snapshots ---------------------------------------------------------------------------


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    yield from fx.frozen_screen(monkeypatch, tmp_path)


def _snap_app() -> ShepherdApp:
    db = Path("shepherd.db")
    asyncio.run(seed(db))
    return ShepherdApp(db, clock=lambda: fx.NOW)


async def _open_stats(pilot: Any) -> None:
    await stats_opened(pilot)
    await pilot.pause()


async def _open_stats_30d(pilot: Any) -> None:
    screen = await stats_opened(pilot)
    await period(pilot, screen, "3")


def test_stats_chart_7_days(frozen: None, snap_compare: Any) -> None:
    assert snap_compare(_snap_app(), terminal_size=(100, 30), run_before=_open_stats)


def test_stats_chart_30_days_at_80x24(frozen: None, snap_compare: Any) -> None:
    assert snap_compare(_snap_app(), terminal_size=(80, 24), run_before=_open_stats_30d)
