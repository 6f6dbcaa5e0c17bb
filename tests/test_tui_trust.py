"""Issue 8 ("Trust"), the TUI's part: the live view follows the end, no false toasts,
the status bar and the footer say what is true now, tool output is one key away, and
the sessions list filters as you type. Real Store files, the real app via pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shepherd.core import events as ev
from shepherd.core.store.db import Store
from shepherd.tui.screens.session import SessionScreen
from tests.test_tui_session import SID, T0, Clock, Harness, Recorder, Writer, live_screen, loaded, until
from tests.test_tui_session import _frozen_animation, store  # noqa: F401  (fixtures: imported, pytest uses them here)


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
    screen, app = live_screen(store, Clock(w.ts))
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
    await w.notes(30)
    screen, app = live_screen(store, Clock(w.ts))
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
    from shepherd.tui.app import ShepherdApp

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


# --- 17: the status bar never says idle while tools run; p answers at once ---------------


async def test_status_bar_shows_tools_running_not_idle(store: Store) -> None:
    w = Writer(store)
    await w.start()
    a = await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash", input={"command": "sleep 9"})
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c2", name="Bash", input={"command": "sleep 8"})
    clock = Clock(a.ts + 5)
    screen, app = live_screen(store, clock)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, screen)
        text = screen.status_bar.text
        assert "⚙ 2 tools running 5 s" in text and "idle" not in text
        await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="ok", output="")
        await screen.flush_now()
        assert "⚙ 1 tool running 4 s" in screen.status_bar.text  # c2 started 0.5 s later
        await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c2", status="ok", output="")
        await screen.flush_now()
        clock.now = w.ts + 3
        text = screen.status_bar.text
        assert "running" in text.split("│")[0] and "tool" not in text and "idle 3 s" in text


async def test_p_on_an_interrupted_session_answers_at_once_and_imports_off_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming imports the backend's SDK (seconds): the status says "resuming…" at once,
    the import runs in a thread, the screen keeps working meanwhile."""
    import threading

    import shepherd.core.engine as engine
    from tests import tui_fixtures as fx
    from tests.test_tui_app import wait_until
    from shepherd.tui.app import ShepherdApp

    monkeypatch.setenv("SHEPHERD_TIME_SCALE", "0.01")
    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["interrupted"])
    real, imported, gate, where = engine.make_backend, set(), threading.Event(), []

    def slow_first_import(name: str) -> Any:
        if name not in imported:  # the first call is the import: slow, and it must not be the loop's
            where.append(threading.current_thread() is threading.main_thread())
            assert where[-1] is False, "the SDK import ran on the event loop"
            assert gate.wait(20)
            imported.add(name)
        return real(name)

    monkeypatch.setattr(engine, "make_backend", slow_first_import)
    sid = fx.SESSION_IDS["interrupted"]
    app = ShepherdApp(db, open_session=sid, clock=lambda: fx.NOW)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(),
                             what="the interrupted session")
            screen = app.screen
            assert [k.description for k in screen.query("FooterKey") if k.key == "p"] == ["Resume"]
            await pilot.press("p")
            await pilot.pause()
            assert "⟳ resuming…" in screen.status_bar.text
            for _ in range(5):  # the loop is free while the import runs
                await pilot.pause(0.01)
            assert where == [False] and app.screen is screen
            gate.set()
            await wait_until(pilot, lambda: sid in app.runs, what="the run resumed")
            await wait_until(pilot, lambda: app.screen is not screen and isinstance(app.screen, SessionScreen),
                             what="the live view")
            await asyncio.wait_for(asyncio.shield(app.runs[sid].task), 30)
    finally:
        gate.set()


# --- 18: the footer says what the keys do now -------------------------------------------


def footer(screen: Any) -> list[str]:
    return [f"{k.key_display or k.key} {k.description}" for k in screen.query("FooterKey")]


def keys(screen: Any) -> dict[str, str]:
    return {k.key: k.description for k in screen.query("FooterKey")}


async def _footer_settles(pilot: Any, screen: Any, want: dict[str, str | None]) -> None:
    def ok() -> bool:
        shown = keys(screen)
        return all(shown.get(k) == v for k, v in want.items())

    await until(pilot, ok, f"footer {want}")


async def test_footer_in_each_state(store: Store) -> None:
    w = Writer(store)
    await w.start()
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, screen)
        # running
        await _footer_settles(pilot, screen, {"p": "Pause", "r": "Retry", "s": "Skip", "c": "Cancel", "m": "Note"})
        # paused: p resumes, and says so
        await w.add(ev.Control, command="pause", source="tui")
        await w.add(ev.SessionPaused, reason="user")
        await screen.flush_now()
        await _footer_settles(pilot, screen, {"p": "Resume", "r": "Retry", "c": "Cancel"})
        await w.add(ev.SessionResumed)
        await screen.flush_now()
        await _footer_settles(pilot, screen, {"p": "Pause"})
        # stuck: waiting for a person to retry, skip or cancel; pausing means nothing
        await w.add(ev.SubtaskFinished, subtask_id="a", status="stuck", reason="retry budget used up")
        await screen.flush_now()
        await _footer_settles(pilot, screen, {"p": None, "r": "Retry", "s": "Skip", "c": "Cancel"})
        # finished: a past session; r runs the selected subtask again (this app can)
        await w.add(ev.SessionFinished, status="failed", reason="subtask a stuck")
        await screen.flush_now()
        screen.controller = None
        screen.refresh_bindings()
        await _footer_settles(pilot, screen, {"p": None, "r": "Retry", "s": None, "c": None, "m": None})


async def test_a_bindings_change_that_leaves_the_keys_as_they_are_rebuilds_no_key_bar(store: Store) -> None:
    """The key bar is rebuilt (every key removed and mounted again) only when what it shows
    changes: a bindings refresh that ends with the same keys keeps the bar as it is."""
    w = Writer(store)
    await w.start()
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, screen)
        await _footer_settles(pilot, screen, {"p": "Pause", "r": "Retry", "s": "Skip", "c": "Cancel", "m": "Note"})
        bar = list(screen.query("FooterKey"))
        screen.refresh_bindings()  # as a focus change does: the same keys apply
        for _ in range(3):
            await pilot.pause()
        assert [id(k) for k in screen.query("FooterKey")] == [id(k) for k in bar], "the bar was rebuilt"
        await w.add(ev.Control, command="pause", source="tui")
        await w.add(ev.SessionPaused, reason="user")
        await screen.flush_now()
        await _footer_settles(pilot, screen, {"p": "Resume"})  # what applies changed: rebuilt


async def test_footer_of_a_read_only_session_offers_only_what_works(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.SessionFinished, status="done")
    screen = SessionScreen(store, SID, controller=Recorder(), follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, screen)
        await _footer_settles(pilot, screen, {"escape": "Back"})
        shown = list(screen.query("FooterKey"))
        assert {k.key for k in shown if not k.has_class("-disabled")} <= {"r", "escape", "ctrl+p"}, footer(screen)
        # dimmed, as a key that does not apply now: no tool call here to open
        assert {k.key for k in shown if k.has_class("-disabled")} <= {"o"}, footer(screen)
        assert keys(screen)["r"] == "Retry"  # run a subtask of it again, in this process
        assert "read-only" in screen.status_bar.text


async def test_palette_offers_resume_when_paused_and_not_pause(tmp_path: Path) -> None:
    from tests import tui_fixtures as fx
    from tests.test_tui_app import wait_until
    from shepherd.tui.app import ShepherdApp, ShepherdCommands

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["live"])
    sid = fx.SESSION_IDS["live"]
    app = ShepherdApp(db, open_session=sid, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(),
                         what="the live session")
        screen = app.screen
        assert screen.controllable  # another process runs it: attached, with its controls

        def offered() -> list[str]:
            return [name for name, _, _ in ShepherdCommands(screen)._commands()]

        assert "Pause" in offered() and "Resume" not in offered()
        await app.store.append(ev.SessionPaused(session_id=sid, ts=fx.NOW, reason="paused by cli"))
        await wait_until(pilot, lambda: screen.model.session.status == "paused", what="paused")
        await pilot.pause()
        assert "Resume" in offered() and "Pause" not in offered()
        assert keys(screen)["p"] == "Resume"


# --- 19: tool calls unfold visibly; the full text is one key away ------------------------


async def test_blocks_are_reachable_with_j_k_and_say_what_enter_and_o_do(store: Store) -> None:
    from shepherd.tui.screens.tool_output import ToolOutputScreen
    from shepherd.tui.widgets.blocks import ToolCallView

    w = Writer(store)
    await w.start()
    out = "".join(f"line {i} of the output\n" for i in range(480))
    for i in range(3):
        await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id=f"c{i}", name="Bash",
                    input={"command": f"pytest -q tests/test_{i}.py", "timeout": 60})
        await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id=f"c{i}", status="ok",
                    output=out if i == 1 else f"ok {i}", duration_s=0.5)
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, screen)
        tools = [wd for wd in screen.stream.widgets.values() if isinstance(wd, ToolCallView)]
        assert all(wd.render().plain.startswith("▸ ") for wd in tools)  # a fold marker on every call
        assert keys(screen).get("o") == "Output"
        await pilot.press("j")
        assert screen.focused is tools[0]
        await pilot.press("j")
        assert screen.focused is tools[1]
        await _footer_settles(pilot, screen, {"enter": "Expand", "o": "Output"})
        await pilot.press("enter")
        await _footer_settles(pilot, screen, {"enter": "Collapse"})
        assert tools[1].expanded and tools[1].render().plain.startswith("▾ ")
        assert tools[1].region.y >= screen.stream.region.y  # its head stayed in view
        await pilot.press("enter")
        assert not tools[1].expanded
        await pilot.press("k")
        assert screen.focused is tools[0]
        await pilot.press("j", "o")
        await until(pilot, lambda: isinstance(app.screen, ToolOutputScreen), "the full output")
        modal = app.screen
        text = "\n".join(str(st.render()) for st in modal.query("Static"))
        assert "output  10.9 kB, 480 lines" in text
        assert "line 0 of the output" in text and "line 479 of the output" in text  # all of it
        assert "command: pytest -q tests/test_1.py" in text and "timeout: 60" in text
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "back")
        assert screen.focused is tools[1]


def test_one_icon_per_state_on_home_session_view_and_help() -> None:
    from shepherd.tui import icons
    from shepherd.tui.screens import help as help_screen
    from shepherd.tui.widgets.status import status_line
    from shepherd.tui.widgets.subtasks import subtask_line
    from shepherd.tui import model as m

    legend = dict(help_screen.STATUS_LEGEND)
    for state, _ in icons.LEGEND:
        icon = icons.STATE_ICONS[state]
        assert icon in legend
        sub_state = "waiting_retry" if state == "waiting" else state
        if state != "running":
            assert subtask_line(m.SubtaskView(id="a", state=sub_state), 0, T0).plain.startswith(icon)
        assert status_line(m.SessionInfo(status=state), T0, live=True).plain.strip().startswith(icon)
    assert m.STATE_ICONS is icons.STATE_ICONS


async def test_home_rows_use_the_same_icons(tmp_path: Path) -> None:
    from tests import tui_fixtures as fx
    from tests.test_tui_app import home_ready
    from shepherd.tui import icons
    from shepherd.tui.app import ShepherdApp

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["done", "failed", "cancelled", "stuck", "interrupted"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        for row in home.rows:
            cell = home.table.get_cell(row.id, "status")
            assert cell.plain == icons.STATE_ICONS[row.status], row.status


# --- 21: the sessions list filters as you type; help shows Shepherd's keys first ---------


async def test_typing_on_the_sessions_list_filters_and_keys_stay_keys(tmp_path: Path) -> None:
    from tests import tui_fixtures as fx
    from tests.test_tui_app import help_opened, home_ready, wait_until
    from textual.widgets import Input
    from shepherd.tui.app import ShepherdApp

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["done", "failed", "cancelled"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        field = home.query_one("#filter", Input)
        assert app.focused is home.table
        await pilot.press("y", "p", "e")  # none of them is a key of this screen (t is: the stats chart)
        assert field.value == "ype" and app.focused is field
        await wait_until(pilot, lambda: home.row_ids() == [fx.SESSION_IDS["cancelled"]], what="filtered")
        await pilot.press("escape")  # clears and goes back to the list
        assert field.value == "" and app.focused is home.table
        await wait_until(pilot, lambda: len(home.row_ids()) == 3, what="all rows again")
        await help_opened(pilot)  # a binding stays the binding
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is home, what="home")
        assert field.value == ""
        await pilot.press("slash", *"dates")  # / first, to type letters that are keys
        assert field.value == "dates"


async def test_help_shows_shepherds_keys_first_and_the_palette_keys_entry_opens_it(tmp_path: Path) -> None:
    from textual.command import CommandPalette
    from tests.test_tui_app import help_opened, home_ready, shows, wait_until
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.help import HelpScreen

    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(100, 40)) as pilot:
        home = await home_ready(pilot)
        text = (await help_opened(pilot)).text
        first = text.split("## Keys on the sessions list")[1].split("##")[0]
        rows = [line for line in first.splitlines() if line.startswith("| `")]
        assert rows[0] == "| `d` | Demo |"
        assert not any(generic in text for generic in ("Focus Next", "Copy selected text", "Cursor up"))
        assert "Type to filter" in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is home, what="home")
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"keys")
        await wait_until(pilot, lambda: shows(app, "Shepherd's keys on this screen"), what="the Keys entry")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help from the palette")


async def test_content_that_fits_again_starts_at_the_top(store: Store) -> None:
    """Unfolding a long output and folding it again, or the view moving on to a short
    subtask, never leaves short content pinned to the bottom of the view."""
    from shepherd.tui.widgets.blocks import ToolCallView

    w = Writer(store)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash", input={"command": "ls"})
    await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="ok",
                output="\n".join(f"f{i}" for i in range(100)))
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(100, 24)) as pilot:
        await loaded(pilot, screen)
        s = screen.stream
        [tool] = [wd for wd in s.widgets.values() if isinstance(wd, ToolCallView)]
        tool.focus()
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert s.max_scroll_y > 0 and tool.region.y >= s.region.y  # its head in view
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        first = next(iter(s.widgets.values()))
        assert s.scroll_y == 0 and first.region.y <= s.scrollable_content_region.y + 1  # (its margin)  # at the top, not pinned down
        await pilot.press("enter")  # open again, then the run moves on to a short subtask
        await pilot.pause()
        await w.add(ev.SubtaskFinished, subtask_id="a", status="done")
        await w.add(ev.SubtaskStarted, subtask_id="b", title="Subtask b")
        await w.add(ev.AttemptStarted, subtask_id="b", attempt=1)
        await _step(pilot, screen)
        await pilot.pause()
        assert screen.selected == "b"
        first = next(iter(s.widgets.values()))
        assert s.scroll_y == 0 and first.region.y <= s.scrollable_content_region.y + 1  # (its margin)


async def test_a_hostile_database_path_reaches_the_screen_as_visible_text(tmp_path: Path) -> None:
    """The home's title bar shows the database path: an escape sequence or a C1 control in
    it (a typed path, $SHEPHERD_DB) is shown, never sent to the terminal."""
    from shepherd.tui.app import ShepherdApp
    from tests.test_tui_app import home_ready

    folder = tmp_path / "evil\x1b]0;pwn\x07[red]x\x9b31m"
    folder.mkdir()
    app = ShepherdApp(folder / "s.db")
    async with app.run_test(size=(160, 20)) as pilot:
        home = await home_ready(pilot)
        shown = str(home.query_one("#title-bar").render())
        assert "[red]x" in shown and "pwn" in shown  # the text itself, not markup
        assert not any(c in shown for c in "\x1b\x07\x9b") and "␛" in shown
        assert not any(c in app.sub_title for c in "\x1b\x07\x9b")
