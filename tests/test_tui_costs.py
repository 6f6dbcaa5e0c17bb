"""Cost and retry waste on screen (the real app on a real Store file): the home's cost
column at 80 and 120 columns, and in the session view the status bar, the subtask list
and each attempt's separator, for a session whose subtask failed once and then was done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shepherd.core import events as ev
from shepherd.core.clock import FakeClock
from shepherd.core.store import open_store
from shepherd.tui.app import ShepherdApp
from shepherd.tui.screens.session import SessionScreen
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.blocks import AttemptSeparator
from shepherd.tui.widgets.status import StatusBar
from shepherd.tui.widgets.subtasks import SubtaskList
from tests import tui_fixtures as fx
from tests.test_tui_app import home_ready, screen_text, wait_until

SID = "scost0000001"
PLAIN = "stok00000001"  # a backend that reports tokens only


@pytest.fixture(autouse=True)
def _frozen_animation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ticker, "animate", False)


async def write_db(path: Path) -> None:
    """``fix`` fails in attempt 1 ($0.30 spent), a person retries it, attempt 2 is done
    ($0.12): $0.42 in all, $0.30 of it wasted. A second session reports no cost at all."""
    store = await open_store(path, clock=FakeClock(fx.T0))
    try:
        w = fx.Writer(store, SID, fx.T0)
        await w.start("Fix the flaky date test", subtasks=[{"id": "fix", "title": "Fix the flaky test",
                                                            "prompt": "Fix it."}])
        await w.subtask_start(1, "fix", "Fix the flaky test")
        await w.usage(2, 1000, 100, 0.30)
        await w.add(3, ev.Error(kind="api", message="500 from the API", retryable=False))
        await w.finish_subtask(3.1, "failed", "api: 500 from the API")
        await w.attempt_start(10, 2, "user_retry")
        await w.usage(11, 2000, 200, 0.12)
        await w.finish_subtask(12)
        await w.finish(12.5, "done")
        t = fx.Writer(store, PLAIN, fx.T0 + 20)
        await t.start("Tokens but no price", backend="openai", model="gpt-4.1",
                      subtasks=[{"id": "a", "title": "Only tokens", "prompt": "Go."}])
        await t.subtask_start(1, "a", "Only tokens")
        await t.usage(2, 12_000, 300, None)
        await t.add(3, ev.Error(kind="rate_limit", message="429", retryable=True))
        await t.attempt_start(5, 2, "retry")
        await t.usage(6, 3000, 100, None)
        await t.finish_subtask(7)
        await t.finish(8, "done")
    finally:
        await store.close()


@pytest.mark.parametrize("width", [80, 120])
async def test_the_home_shows_cost_and_waste(tmp_path: Path, width: int) -> None:
    db = tmp_path / "s.db"
    await write_db(db)
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(width, 24)) as pilot:
        await home_ready(pilot)
        text = screen_text(app)
        assert "Cost −waste" in text
        assert "$0.42 −0.30" in text  # the session's cost and the part its failed attempt wasted
        assert "15.4k tok −12.3k" in text  # no cost reported: tokens, and the tokens wasted
        assert "$0.00" not in text
        assert "Fix the flaky" in text  # the title still shows (it shrinks first)


async def _open_session(app: ShepherdApp, pilot: Any) -> SessionScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(),
                     what="session view")
    screen = app.screen
    assert isinstance(screen, SessionScreen)
    await screen.flush_now()
    await pilot.pause()
    return screen


async def test_the_session_view_shows_cost_and_waste(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await write_db(db)
    app = ShepherdApp(db, open_session=SID, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await _open_session(app, pilot)
        status = screen.query_one(StatusBar).text
        assert "$0.42" in status and "$0.30 wasted" in status
        line = screen.query_one(SubtaskList).get_option_at_index(0).prompt
        plain = str(getattr(line, "plain", line))
        assert plain.startswith("✓ Fix the flaky test ") and plain.endswith(" $0.42 −0.30")  # at the right edge
        seps = {w.block.number: w.render_block(100).plain for w in screen.query(AttemptSeparator)}
        assert "1.1k tok · $0.30 wasted" in seps[1]
        assert "2.2k tok · $0.12" in seps[2] and "wasted" not in seps[2]


async def test_the_session_view_says_tokens_when_no_cost_was_reported(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await write_db(db)
    app = ShepherdApp(db, open_session=PLAIN, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await _open_session(app, pilot)
        status = screen.query_one(StatusBar).text
        assert "$" not in status  # never a "$0" for a cost nobody reported
        assert "12.3k tok wasted" in status
        seps = {w.block.number: w.render_block(100).plain for w in screen.query(AttemptSeparator)}
        assert "12.3k tok wasted" in seps[1] and "$" not in seps[1]


async def test_live_usage_updates_the_figures(tmp_path: Path) -> None:
    """A retry arriving while the view is open makes the earlier attempt's usage waste."""
    from tests.test_tui_session import Harness, loaded

    store = await open_store(tmp_path / "s.db", clock=FakeClock(fx.T0))
    try:
        w = fx.Writer(store, "slive0000001", fx.T0)
        await w.start("Live one", subtasks=[{"id": "a", "title": "Step", "prompt": "Go."}])
        await w.subtask_start(1, "a", "Step")
        await w.usage(2, 1000, 0, 0.2)
        screen = SessionScreen(store, "slive0000001", follow="local", clock=lambda: fx.NOW)
        app = Harness(screen)
        async with app.run_test(size=(120, 30)) as pilot:
            await loaded(pilot, screen)
            bar = screen.query_one(StatusBar)
            assert "$0.20" in bar.text and "wasted" not in bar.text
            await w.attempt_start(3, 2, "retry")
            await w.usage(4, 500, 0, 0.1)
            await store.flush()
            await wait_until(pilot, lambda: "$0.20 wasted" in bar.text, what="the waste")
            assert "$0.30" in bar.text
            line = screen.query_one(SubtaskList).get_option_at_index(0).prompt
            assert str(getattr(line, "plain", line)).endswith(" Step                  $0.30 −0.20")
    finally:
        await store.close()


def test_the_model_shows_no_figures_it_cannot_know() -> None:
    """Folded from the first event the model knows each attempt's figures; from a later
    page with no stored ledger it shows none (not a partial sum)."""
    from shepherd.tui import model as m

    evs = [ev.SessionStarted(session_id="x", title="t"),
           ev.AttemptStarted(session_id="x", subtask_id="a", attempt=1),
           ev.Usage(session_id="x", subtask_id="a", attempt=1, input_tokens=100, cost_usd=0.5),
           ev.AttemptStarted(session_id="x", subtask_id="a", attempt=2, reason="retry"),
           ev.Usage(session_id="x", subtask_id="a", attempt=2, input_tokens=50, cost_usd=0.25)]
    evs = [e.with_(seq=n, ts=float(n)) for n, e in enumerate(evs, 1)]
    whole = m.SessionModel.from_history(None, (), evs, session_id="x")
    st = whole.subtask("a")
    assert st is not None and st.cost is not None and st.waste is not None
    assert (st.cost.cost_usd, st.waste.cost_usd) == (0.75, 0.5)
    assert whole.session.waste.input_tokens == 100
    blocks = [b for b in st.blocks if isinstance(b, m.AttemptBlock)]
    assert [(b.cost.usage.input_tokens, b.cost.wasted) for b in blocks] == [(100, True), (50, False)]
    tail = m.SessionModel.from_history(None, (), evs[3:], session_id="x")
    st = tail.subtask("a")
    assert tail.costs is None and st is not None and st.cost is None
    assert all(b.cost is None for b in st.blocks if isinstance(b, m.AttemptBlock))
