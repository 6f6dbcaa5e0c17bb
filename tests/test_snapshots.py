"""SVG snapshots of the real app on stored sessions (pytest-textual-snapshot).

Each database is written from real events with fixed ids and timestamps
(tests/tui_fixtures.py); the app's clock is frozen at ``NOW``, the time zone is UTC and
the shared spinner Ticker is frozen at frame 0, so the SVGs are byte-stable.
Update with ``python -m pytest tests/test_snapshots.py --snapshot-update`` and look at
what changed before committing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests import tui_fixtures as fx
from shepherd.tui.app import ShepherdApp

ALL_SHAPES = ["done", "failed", "cancelled", "live", "retry", "stuck", "interrupted"]


@pytest.fixture(autouse=True)
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """UTC, no animation, and a relative db path (it is shown on screen)."""
    yield from fx.frozen_screen(monkeypatch, tmp_path)


def make_app(shapes: list[str], open_shape: str | None = None) -> ShepherdApp:
    db = Path("shepherd.db")
    fx.build_db(db, shapes)
    sid = fx.SESSION_IDS[open_shape] if open_shape else None
    return ShepherdApp(db, open_session=sid, clock=lambda: fx.NOW)


async def settle(pilot: Any) -> None:
    """Wait until the home list (and the opened session, if any) has loaded."""
    app: ShepherdApp = pilot.app
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        home_ok = app.home is not None and app.home.loaded
        screen = app.screen
        loaded = getattr(screen, "loaded", None)
        screen_ok = app.open_session_id is None or (isinstance(loaded, asyncio.Event) and loaded.is_set())
        if home_ok and screen_ok:
            break
        assert loop.time() < deadline, "the app did not settle"
        await pilot.pause(0.02)
    flush = getattr(app.screen, "flush_now", None)
    if flush is not None:
        await flush()
    await pilot.pause()


def test_home_with_live_and_past_sessions(snap_compare) -> None:
    assert snap_compare(make_app(ALL_SHAPES), terminal_size=(120, 24), run_before=settle)


def test_home_at_80x24(snap_compare) -> None:
    assert snap_compare(make_app(ALL_SHAPES), terminal_size=(80, 24), run_before=settle)


def test_home_empty(snap_compare) -> None:
    assert snap_compare(make_app([]), terminal_size=(80, 24), run_before=settle)


def test_live_session_with_parallel_tool_calls(snap_compare) -> None:
    assert snap_compare(make_app(ALL_SHAPES, "live"), terminal_size=(120, 36), run_before=settle)


def test_retry_countdown(snap_compare) -> None:
    assert snap_compare(make_app(ALL_SHAPES, "retry"), terminal_size=(120, 36), run_before=settle)


def test_stuck_subtask(snap_compare) -> None:
    assert snap_compare(make_app(ALL_SHAPES, "stuck"), terminal_size=(120, 36), run_before=settle)


def test_rehydrated_interrupted_session(snap_compare) -> None:
    assert snap_compare(make_app(ALL_SHAPES, "interrupted"), terminal_size=(120, 36), run_before=settle)
