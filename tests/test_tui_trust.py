"""Issue 8 ("Trust"), the TUI's part: the live view follows the end, no false toasts,
the status bar and the footer say what is true now, tool output is one key away, and
the sessions list filters as you type. Real Store files, the real app via pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core import events as ev
from core.clock import FakeClock
from core.store.db import Store
from tui.screens.session import SessionScreen
from tui.widgets.anim import Ticker
from tests.test_tui_session import SID, T0, Clock, Harness, Recorder, Writer, loaded, until


@pytest.fixture(autouse=True)
def _frozen_animation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ticker, "animate", False)


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "shepherd.db", clock=FakeClock(T0))
    yield s
    await s.close()


def at_end(screen: SessionScreen) -> bool:
    s = screen.stream
    return s.max_scroll_y > 0 and s.scroll_y == s.max_scroll_y


# --- 14: the live view follows the end -------------------------------------------------


async def _step(pilot: Any, screen: SessionScreen) -> None:
    await screen.flush_now()
    await pilot.pause()
    await pilot.pause()


async def test_the_live_view_follows_every_append_until_stuck(store: Store) -> None:
    w = Writer(store)
    await w.start()
    screen = SessionScreen(store, SID, controller=Recorder(), follow="local", clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(100, 24)) as pilot:
        await loaded(pilot, screen)
        s = screen.stream
        seen = []
        for i in range(4):
            await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id=f"m{i}",
                        text=f"Looking at part {i} of the parser.\n\nA second paragraph.")
            await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id=f"c{i}", name="Bash",
                        input={"command": f"pytest -q -k {i}"})
            await _step(pilot, screen)
            seen.append((s.scroll_y, s.max_scroll_y))
            await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id=f"c{i}", status="error",
                        output="E\n" * 3 + "1 failed", duration_s=0.3)
            await _step(pilot, screen)
            seen.append((s.scroll_y, s.max_scroll_y))
        assert s.max_scroll_y > 0, "the test needs a stream that overflows"
        for n in (1, 2, 3):
            await w.add(ev.Error, subtask_id="a", attempt=n, kind="tool_concurrency", retryable=True,
                        message="API Error: 400 due to tool use concurrency issues.")
            await w.add(ev.RetryScheduled, subtask_id="a", attempt=n, kind="tool_concurrency", retry_no=n,
                        max_retries=3, delay_s=1, resume_at=w.ts + 1.5)
            await _step(pilot, screen)
            seen.append((s.scroll_y, s.max_scroll_y))
            await w.add(ev.AttemptStarted, subtask_id="a", attempt=n + 1, reason="retry",
                        prompt_extra="Use one tool at a time.")
            await _step(pilot, screen)
            seen.append((s.scroll_y, s.max_scroll_y))
        await w.add(ev.SubtaskFinished, subtask_id="a", attempt=4, status="stuck",
                    reason="tool_concurrency: 3 retries used up")
        await _step(pilot, screen)
        seen.append((s.scroll_y, s.max_scroll_y))
        assert all(y == mx for y, mx in seen), seen
        assert at_end(screen)
        last = list(s.widgets.values())[-1]
        assert "subtask stuck" in last.render().plain
        assert last.region.bottom <= s.region.bottom  # on screen, not below the fold


async def test_scrolling_up_stops_following_and_the_end_follows_again(store: Store) -> None:
    w = Writer(store)
    await w.start()
    for i in range(30):
        await w.add(ev.Control, command="note", text=f"n{i}")
    screen = SessionScreen(store, SID, controller=Recorder(), follow="local", clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(100, 24)) as pilot:
        await loaded(pilot, screen)
        s = screen.stream
        assert at_end(screen)
        s.scroll_up(animate=False, immediate=True)  # as the mouse wheel does
        await pilot.pause()
        s.scroll_to(y=s.max_scroll_y - 5, animate=False, immediate=True)
        await pilot.pause()
        y = s.scroll_y
        await w.add(ev.Control, command="note", text="while reading")
        await _step(pilot, screen)
        assert s.scroll_y == y < s.max_scroll_y  # the reader's place is kept
        s.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        await w.add(ev.SubtaskFinished, subtask_id="a", status="stuck", reason="retry budget used up")
        await _step(pilot, screen)
        assert at_end(screen)


# --- 15: no false "no session" toast on runs started here --------------------------------


async def test_runs_started_here_never_toast_no_session_even_before_the_first_commit(tmp_path: Path) -> None:
    """The store's commits are held back until the new session's screen has loaded (the
    race at its worst, every time): the screen knows the run is its own and waits for it."""
    from tests.test_tui_app import home_ready, notifications
    from tui.app import ShepherdApp

    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        store = app.store
        gate = asyncio.Event()
        commit = store._commit

        async def gated(batch: Any) -> None:
            await gate.wait()
            await commit(batch)

        store._commit = gated
        try:
            await _start_ten_runs(pilot, app, gate)
        finally:  # a failure must not leave the writer blocked (closing would wait forever)
            gate.set()
            store._commit = commit
        bad = [n.message for n in notifications(app) if "no session" in n.message]
        assert bad == []


async def _start_ten_runs(pilot: Any, app: Any, gate: asyncio.Event) -> None:
    from tests.test_tui_app import _waiting_task, notifications, wait_until

    store = app.store
    for i in range(10):
        gate.clear()
        handle = await app.start_task(_waiting_task(f"run {i}"))
        screen = app.screen
        assert isinstance(screen, SessionScreen) and screen.session_id == handle.session_id
        await wait_until(pilot, screen.loaded.is_set, what="the session screen loaded")
        assert await store.get_session(handle.session_id) is None  # nothing committed yet
        assert not [n.message for n in notifications(app) if "no session" in n.message]
        assert "starting" in screen.status_bar.text
        gate.set()
        await wait_until(pilot, lambda: screen.model.session.title == f"run {i}", what="the first events")
        await handle.supervisor.cancel(source="test")
        await asyncio.wait_for(asyncio.shield(handle.task), 15)
