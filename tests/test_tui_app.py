"""Pilot tests of the app shell: the real ShepherdApp on a real Store file, sessions built
from real events (tests/tui_fixtures.py), runs started on the real engine."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest

from shepherd.core.store.db import Store
from shepherd.core.task import TaskError, load_task, task_from_dict
from tests import tui_fixtures as fx
from shepherd.tui.app import ShepherdApp
from shepherd.tui.screens.help import HelpScreen
from shepherd.tui.screens.modals import ConfirmModal, RunModal
from shepherd.tui.screens.sessions import SessionsScreen

ALL_SHAPES = ["done", "failed", "cancelled", "live", "retry", "stuck", "interrupted"]
NEWEST_FIRST = [fx.SESSION_IDS[s] for s in ("live", "retry", "stuck", "interrupted", "done", "failed", "cancelled")]


@pytest.fixture
def fast_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEPHERD_TIME_SCALE", "0.01")


@contextmanager
def logging_kept() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back when the block ends."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.lastResort)
    # an earlier test in this process may have left warnings captured (configure_logging's
    # captureWarnings(True) is then a no-op and pytest's recorder keeps them): start clean
    logging.captureWarnings(False)
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in saved[0]:
                root.removeHandler(h)
                h.close()
        for h in saved[0]:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(saved[1])
        logging.lastResort = saved[2]
        logging.captureWarnings(False)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The same, after the test."""
    with logging_kept():
        yield


async def make_db(path: Path, shapes: list[str]) -> dict[str, str]:
    """Write the shapes, then reopen once so recovery marks the dead one interrupted."""
    return await fx.build_db_async(path, shapes)


async def wait_until(pilot: Any, cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Let the app process messages until ``cond()`` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await pilot.pause(0.02)


async def wait_exit(app: ShepherdApp, timeout: float = 15.0) -> None:
    """Wait for the app to stop running (no pilot.pause: it waits for a screen that is
    being torn down)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while app.is_running or app._exit_renderables is None:
        if loop.time() > deadline:
            raise AssertionError("the app did not exit")
        await asyncio.sleep(0.02)


async def home_ready(pilot: Any) -> SessionsScreen:
    app: ShepherdApp = pilot.app
    await wait_until(pilot, lambda: app.home is not None and app.home.loaded, what="home loaded")
    assert app.home is not None
    return app.home


async def help_opened(pilot: Any) -> HelpScreen:
    """Press ? and wait for the help screen."""
    app: ShepherdApp = pilot.app
    await pilot.press("question_mark")
    await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
    return app.screen


def screen_text(app: ShepherdApp) -> str:
    """What the terminal shows, as plain text (from the SVG screenshot)."""
    import html
    import re

    svg = app.export_screenshot()
    texts = re.findall(r"<text[^>]*>(.*?)</text>", svg)
    return html.unescape("".join(texts)).replace("\xa0", " ")


def shows(app: ShepherdApp, *texts: str) -> bool:
    """Whether the screen shows every text (whitespace-insensitive: the SVG export
    drops whitespace-only segments between differently styled runs)."""
    screen = re.sub(r"\s+", "", screen_text(app))
    return all(re.sub(r"\s+", "", t) in screen for t in texts)


def notifications(app: ShepherdApp) -> list[Any]:
    return list(app._notifications)


# --- home ------------------------------------------------------------------------------------


async def test_home_lists_sessions_newest_first(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await make_db(db, ALL_SHAPES)
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(130, 30)) as pilot:
        home = await home_ready(pilot)
        assert isinstance(app.screen, SessionsScreen)
        assert home.row_ids() == NEWEST_FIRST
        statuses = {r.id: r.status for r in home.rows}
        assert statuses[fx.SESSION_IDS["interrupted"]] == "interrupted"
        assert statuses[fx.SESSION_IDS["stuck"]] == "stuck"
        text = screen_text(app)
        assert "Update the changelog" in text and "claude/claude" in text and "openai/gpt-4.1" in text
        assert fx.SESSION_IDS["stuck"] in text  # the id column, at this width
        assert "7 sessions" in text and "3 live" in text
        # the highlighted row is the newest; the table has focus
        assert home.highlighted_id() == NEWEST_FIRST[0]
        assert app.focused is home.table


async def test_empty_state_says_what_to_press(tmp_path: Path) -> None:
    app = ShepherdApp(tmp_path / "empty.db", clock=lambda: fx.NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        home = await home_ready(pilot)
        assert home.has_class("-empty")
        text = screen_text(app)
        assert "No sessions yet" in text and "Press d" in text


async def test_filter_as_you_type(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await make_db(db, ALL_SHAPES)
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(100, 24)) as pilot:
        home = await home_ready(pilot)
        await pilot.press("slash")
        assert app.focused is home.query_one("#filter")
        await pilot.press(*"parser")
        await wait_until(pilot, lambda: len(home.rows) == 3, what="three parser rows")
        assert home.row_ids() == [fx.SESSION_IDS[s] for s in ("live", "stuck", "done")]
        await pilot.press(*" in")  # narrows as the text grows
        await wait_until(pilot, lambda: len(home.rows) == 2, what="two 'parser in' rows")
        assert home.row_ids() == [fx.SESSION_IDS["live"], fx.SESSION_IDS["done"]]
        filter_input = home.query_one("#filter")
        filter_input.value = "changelog"  # as if pasted
        await wait_until(pilot, lambda: home.row_ids() == [fx.SESSION_IDS["retry"]], what="changelog row")
        await pilot.press(*"zz")
        await wait_until(pilot, lambda: not home.rows, what="no rows")
        assert home.has_class("-empty") and "No sessions match" in screen_text(app)
        await pilot.press("escape")  # clears the filter, back to the table
        await wait_until(pilot, lambda: home.row_ids() == NEWEST_FIRST, what="all rows again")
        assert app.focused is home.table


async def test_pages_of_200_and_more_on_scroll_end(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    store = await Store.open(db)
    ids = await fx.many_sessions(store, 450)
    await store.close()
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        home = await home_ready(pilot)
        assert len(home.rows) == 200 and home.has_more
        assert home.rows[0].id == ids[-1]  # newest first
        await pilot.press("end")  # cursor to the last loaded row: the next pages come
        await wait_until(pilot, lambda: len(home.rows) >= 400, what="second page")
        await pilot.press("end")
        await wait_until(pilot, lambda: len(home.rows) == 450 and not home.has_more, what="last page")
        assert "450 sessions" in screen_text(app)
        assert home.row_ids() == list(reversed(ids))
        await home.reload()  # what the slow refresh timer does: a full window is not "more"
        assert len(home.rows) == 450 and not home.has_more


async def test_exactly_one_page_of_sessions_has_no_more(tmp_path: Path) -> None:
    db = tmp_path / "page.db"
    store = await Store.open(db)
    await fx.many_sessions(store, 200)
    await store.close()
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        home = await home_ready(pilot)
        assert len(home.rows) == 200 and not home.has_more
        assert "200 sessions" in screen_text(app) and "200+" not in screen_text(app)


async def test_home_refreshes_when_another_process_writes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await make_db(db, ["done"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(100, 24)) as pilot:
        home = await home_ready(pilot)
        assert home.row_ids() == [fx.SESSION_IDS["done"]]
        other = await Store.open(db)  # a second writer, as another shepherd process would be
        try:
            await fx.shape_failed(other, fx.SESSION_IDS["failed"], fx.NOW - 10)
            await other.flush()
        finally:
            await other.close()
        home.SLOW_REFRESH_S = 0.05
        await home.reload()  # what the slow timer does
        assert home.row_ids() == [fx.SESSION_IDS["failed"], fx.SESSION_IDS["done"]]


# --- opening sessions ------------------------------------------------------------------------------


async def test_enter_opens_a_past_session_and_escape_goes_back(tmp_path: Path) -> None:
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    await make_db(db, ALL_SHAPES)
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        done_row = home.row_ids().index(fx.SESSION_IDS["done"])
        home.table.move_cursor(row=done_row)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
        screen = app.screen
        assert screen.session_id == fx.SESSION_IDS["done"]
        assert screen.follow is None and screen.controller is None  # a past session: read-only
        await asyncio.wait_for(screen.loaded.wait(), 10)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is home, what="back home")
        assert home.highlighted_id() == fx.SESSION_IDS["done"]  # the cursor stayed where it was


async def test_enter_on_a_session_run_elsewhere_tails_it_with_remote_control(tmp_path: Path) -> None:
    from shepherd.core.control import RemoteControl
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    await make_db(db, ["live", "done"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        assert home.highlighted_id() == fx.SESSION_IDS["live"]
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
        assert app.screen.follow == "tail"
        assert isinstance(app.screen.controller, RemoteControl)
        assert app.screen.controller.session_id == fx.SESSION_IDS["live"]


async def test_attach_opens_the_newest_live_session(tmp_path: Path) -> None:
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    await make_db(db, ["done", "live"])
    app = ShepherdApp(db, attach=True, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="attached screen")
        assert app.screen.session_id == fx.SESSION_IDS["live"] and app.screen.follow == "tail"
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.home, what="home under it")


# --- runs started in this process --------------------------------------------------------------


async def test_d_starts_the_demo_and_its_screen_shows_tool_calls(tmp_path: Path, fast_time: None) -> None:
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    app = ShepherdApp(db)
    async with app.run_test(size=(120, 36)) as pilot:
        await home_ready(pilot)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="demo screen")
        screen = app.screen
        assert screen.follow == "local"
        (handle,) = app.runs.values()
        assert screen.controller is handle.supervisor and screen.session_id == handle.session_id
        tools = ("list_files", "read_file", "run_command", "write_file")
        # the view follows the current subtask, so which call shows depends on timing
        await wait_until(pilot, lambda: any(t in screen_text(app) for t in tools), timeout=20,
                         what="a tool call shown")
        status = await asyncio.wait_for(asyncio.shield(handle.task), 60)
        assert status == "done"
        await wait_until(pilot, lambda: "write_file" in screen_text(app), what="the last subtask's tool call")
        calls = await app.store.tool_calls(handle.session_id)
        assert {"list_files", "read_file", "run_command", "write_file"} <= {c.name for c in calls}
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.home, what="home")
        home = app.home
        await wait_until(pilot, lambda: home.row_ids()[:1] == [handle.session_id]
                         and home.rows[0].status == "done", what="demo row done")


async def test_two_runs_live_at_once_both_on_home(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    app = ShepherdApp(db)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        h1 = await app.start_task(_waiting_task("first"))
        h2 = await app.start_task(_waiting_task("second"))
        for h in (h1, h2):  # both settled in their 10-minute wait
            await wait_for_event(pilot, app.store, h.session_id, "retry.scheduled")
        assert app.live_run_ids() == {h1.session_id, h2.session_id}
        # one session view at a time: the second replaced the first, back goes home
        assert len(app.screen_stack) == 3 and app.screen.session_id == h2.session_id
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is home, what="home")
        await wait_until(pilot, lambda: set(home.row_ids()) == {h1.session_id, h2.session_id},
                         what="both runs listed")
        assert "●" in screen_text(app)  # marked as running in this window
        await app._stop_runs(wait_s=10)
    for h in (h1, h2):
        assert h.task.done()


async def wait_for_event(pilot: Any, store: Store, sid: str, type_: str) -> None:
    """Until the session has an event of ``type_`` (a run settled into a known state)."""
    found: list[bool] = []

    async def check() -> None:
        found[:] = [bool(await store.events(sid, types=[type_], limit=1))]

    await check()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not found[0]:
        assert loop.time() < deadline, f"no {type_} in {sid}"
        await pilot.pause(0.02)
        await check()


def _waiting_task(title: str):
    """A scripted run that sits in a 10-minute rate-limit wait (nothing finishes by itself)."""
    return task_from_dict({
        "title": title, "backend": "scripted",
        "subtasks": [{"id": "main", "title": "Wait", "prompt": "p",
                      "steps": [{"text": "Working on it.", "tools": [{"name": "list_files", "args": {"path": "."}}]},
                                {"fail": "rate_limit", "retry_after": 600}]}],
    }, base_dir=Path("/tmp"))


async def test_quit_with_a_live_run_asks_and_cancels_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    app = ShepherdApp(db)
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        handle = await app.start_task(_waiting_task("Long wait"))
        sid = handle.session_id
        await wait_for_event(pilot, app.store, sid, "retry.scheduled")
        await wait_until(pilot, lambda: app.screen is not app.home, what="session screen")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirmation")
        assert "still running" in str(app.screen.question)
        await pilot.press("n")  # stay: nothing happens to the run
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmModal), what="modal closed")
        assert not handle.task.done() and app.is_running
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirmation again")
        await pilot.press("y")
        await asyncio.wait_for(asyncio.shield(handle.task), 15)
        await wait_exit(app)
    assert app.return_code == 0
    assert handle.task.result() == "cancelled"
    store = await Store.open(db)
    try:
        row = await store.get_session(sid)
        assert row is not None and row.status == "cancelled"
        assert await store.lease_owner(sid) is None
        assert await store.tool_calls(sid, status="running") == []
    finally:
        await store.close()


async def test_quit_without_live_runs_exits_at_once(tmp_path: Path) -> None:
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test() as pilot:
        await home_ready(pilot)
        await pilot.press("q")
        await wait_exit(app)
    assert app.return_code == 0 and app.store._closed


async def test_leaving_run_test_never_leaves_a_run_dangling(tmp_path: Path) -> None:
    """Whatever ends the app (here: the test harness), its runs end cancelled."""
    db = tmp_path / "s.db"
    app = ShepherdApp(db)
    async with app.run_test() as pilot:
        await home_ready(pilot)
        handle = await app.start_task(_waiting_task("Dangling?"))
        await wait_for_event(pilot, app.store, handle.session_id, "retry.scheduled")
    assert handle.task.done()
    store = await Store.open(db)
    try:
        row = await store.get_session(handle.session_id)
        assert row is not None and row.status == "cancelled"
    finally:
        await store.close()


async def test_start_factory_runs_on_open(tmp_path: Path, fast_time: None) -> None:
    from shepherd.core.demo import demo_task
    from shepherd.tui.screens.session import SessionScreen

    app = ShepherdApp(tmp_path / "s.db", start=lambda: demo_task(tmp_path / "ws"))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="run screen")
        assert app.screen.follow == "local"
        (handle,) = app.runs.values()
        assert await asyncio.wait_for(asyncio.shield(handle.task), 60) == "done"


async def test_resume_an_interrupted_session(tmp_path: Path, fast_time: None) -> None:
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    await make_db(db, ["interrupted", "done"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        home.table.move_cursor(row=home.row_ids().index(fx.SESSION_IDS["interrupted"]))
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="resumed screen")
        assert app.screen.follow == "local" and fx.SESSION_IDS["interrupted"] in app.runs
        handle = app.runs[fx.SESSION_IDS["interrupted"]]
        await asyncio.wait_for(asyncio.shield(handle.task), 30)
        row = await app.store.get_session(fx.SESSION_IDS["interrupted"])
        assert row is not None and row.status not in ("interrupted", "running")


# --- modals, help, palette, theme ------------------------------------------------------------------


async def test_run_modal_rejects_a_bad_task_file_with_the_one_line_error(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = Path("bad.toml")
    bad.write_text('title = "x"\nbackend = "scripted"\n[[subtasks]]\nid = "a"\n')  # no prompt
    with pytest.raises(TaskError) as expected:
        load_task(bad)
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, RunModal), what="run modal")
        modal = app.screen
        await pilot.press(*"bad.toml", "enter")
        await wait_until(pilot, lambda: modal.error_text != "", what="inline error")
        assert modal.error_text == str(expected.value)
        assert "\n" not in modal.error_text and "missing prompt" in modal.error_text
        assert app.screen is modal and not app.runs  # still open, nothing started
        # a missing file is one line too
        modal.query_one("#path").value = str(tmp_path / "nope.toml")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "cannot read task file" in modal.error_text, what="missing file error")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.home, what="modal closed")


async def test_run_modal_prompt_starts_a_run(tmp_path: Path, fast_time: None) -> None:
    from shepherd.tui.screens.session import SessionScreen

    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, RunModal), what="run modal")
        modal = app.screen
        modal.query_one("#backend").value = "scripted"
        modal.query_one("#workspace").value = str(tmp_path)
        await pilot.press("enter")  # empty prompt: refused inline
        await wait_until(pilot, lambda: "must not be empty" in modal.error_text, what="empty prompt error")
        await pilot.press(*"say hello", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="run screen")
        (handle,) = app.runs.values()
        assert handle.supervisor.task.title == "say hello" and handle.supervisor.task.backend == "scripted"
        assert await asyncio.wait_for(asyncio.shield(handle.task), 30) == "done"


async def test_help_lists_the_keys_of_the_screen_it_came_from(tmp_path: Path) -> None:
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(100, 40)) as pilot:
        home = await home_ready(pilot)
        text = (await help_opened(pilot)).text
        assert "Keys on the sessions list" in text and "| `d` | Demo |" in text and "Filter" in text
        assert "interrupted" in text  # the status legend
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is home, what="help closed")


async def test_theme_toggle_and_command_palette(tmp_path: Path) -> None:
    from textual.command import CommandPalette

    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"toggle")
        await wait_until(pilot, lambda: shows(app, "Toggle dark/light theme"), what="palette hit")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.theme == "textual-dark", what="theme toggled from the palette")
        # the palette also offers the current screen's own keys
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"filt")
        await wait_until(pilot, lambda: shows(app, "on this screen"), what="screen command")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.focused is not None and app.focused.id == "filter",
                         what="filter focused via palette")


# --- errors and logging ------------------------------------------------------------------------------


async def test_an_exception_in_a_handler_is_a_notification_not_a_crash(tmp_path: Path, restore_logging,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.db"
    log_path = tmp_path / "state" / "shepherd.log"
    await make_db(db, ["done"])
    app = ShepherdApp(db, clock=lambda: fx.NOW, log_path=log_path)
    async with app.run_test(size=(100, 24)) as pilot:
        home = await home_ready(pilot)

        async def broken(session_id: str) -> None:
            raise RuntimeError("the disk caught fire")

        monkeypatch.setattr(app.store, "get_session", broken)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("the disk caught fire" in n.message for n in notifications(app)),
                         what="error notification")
        note = next(n for n in notifications(app) if "disk caught fire" in n.message)
        assert note.severity == "error"
        assert app.is_running and app.screen is home
        monkeypatch.undo()
        await pilot.press("slash", *"demo")  # still answering keys
        await wait_until(pilot, lambda: home.filter_text == "demo", what="app still responsive")
    logged = log_path.read_text()
    assert "RuntimeError: the disk caught fire" in logged and "Traceback" in logged


async def test_sdk_logging_goes_to_the_file_not_the_screen(tmp_path: Path, restore_logging, capfd) -> None:
    log_path = tmp_path / "state" / "shepherd.log"
    app = ShepherdApp(tmp_path / "s.db", log_path=log_path)
    async with app.run_test(size=(100, 24)) as pilot:
        await home_ready(pilot)
        logging.getLogger("openai.agents").warning("model call failed with key sk-proj-abcdefghijklmnop1234 here")
        logging.getLogger("claude_agent_sdk").error("bad key sk-ant-api03-ZYXWVUTSRQ")
        logging.getLogger("some.unconfigured.lib").warning("stray warning")
        import warnings

        warnings.warn("a deprecation nobody asked for", DeprecationWarning, stacklevel=1)
        assert "model call failed" not in screen_text(app)
    out, err = capfd.readouterr()
    assert "model call failed" not in err + out and "stray warning" not in err + out
    logged = log_path.read_text()
    assert "openai.agents" in logged and "model call failed with key sk-proj-[redacted] here" in logged
    assert "sk-ant-[redacted]" in logged and "ZYXWVUTSRQ" not in logged and "abcdefghijklmnop" not in logged
    assert "stray warning" in logged and "a deprecation nobody asked for" in logged
    assert logging.lastResort is None
    assert oct(log_path.stat().st_mode & 0o777) == "0o600"


async def test_an_unopenable_database_is_reported_and_the_app_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    app = ShepherdApp(bad)
    app.STORE_ERROR_EXIT_S = 0.05
    async with app.run_test() as pilot:
        await wait_exit(app)
    assert app.return_code == 2


async def test_a_run_without_credentials_ends_failed_on_screen_at_once(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key: the session ends `failed` (auth, one line) at once; the status bar and
    the database stop saying `running` without anyone quitting."""
    from shepherd.tui.screens.session import SessionScreen

    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "no-login"))
    task = task_from_dict({"title": "needs a key", "backend": "claude", "workspace": str(tmp_path),
                           "subtasks": [{"id": "t1", "prompt": "p"}]}, src="test")
    app = ShepherdApp(tmp_path / "s.db", start=lambda: task)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="run screen")
        (handle,) = app.runs.values()
        assert await asyncio.wait_for(asyncio.shield(handle.task), 20) == "failed"
        screen = app.screen
        await wait_until(pilot, lambda: screen.model.session.status == "failed", what="model says failed")
        bar = screen.status_bar.render().plain
        assert "failed" in bar and "running" not in bar
        row = await app.store.get_session(handle.session_id)
        assert row is not None and row.status == "failed"
        (err,) = [e for e in await app.store.events(handle.session_id) if e.type == "error"]
        assert err.kind == "auth"
        await wait_until(pilot, lambda: shows(app, "auth"), what="auth on screen")
