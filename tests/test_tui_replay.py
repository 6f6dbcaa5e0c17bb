"""The replay screen (tui.screens.replay) in the real app on a real store, with the pilot.

Time: the app's clock is a value the test moves; each ``frame()`` turns the real time gone
by into the replay's virtual time (at 1×, 10×, max), so nothing sleeps. Spinners are frozen
at frame 0. Snapshots of a moment with a running tool, of one with a countdown, and of the
end; hostile text in a replayed session stays data; ``shepherd replay``'s bad input is one
line and exit 2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shepherd.core import events as ev
from shepherd.core.store import open_store
from shepherd.tui import model as m
from shepherd.tui.app import ShepherdApp
from shepherd.tui.screens.replay import ReplayScreen
from shepherd.tui.screens.session import SessionScreen
from shepherd.tui.widgets.blocks import RetryBanner, ToolCallView
from shepherd.tui.widgets.timeline import Timeline
from tests import tui_fixtures as fx
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401 - the fixtures

REPLAY_SID = "s6b49d200c0de"
T0 = fx.NOW - 600  # the session started ten minutes before the frozen "now"


async def shape_replay(store: Any, sid: str, t0: float) -> None:
    """Two tools side by side (one takes 9 s), a rate limit with a 20 s countdown, then done."""
    w = fx.Writer(store, sid, t0)
    await w.start("Fix the date parser in tinydates",
                  subtasks=[{"id": "explore", "title": "Look around the project", "prompt": "p"},
                            {"id": "fix", "title": "Fix the DD/MM/YYYY branch", "prompt": "p"}])
    await w.subtask_start(1, "explore", "Look around the project")
    await w.say(1.2, "Running the tests and reading the parser, side by side.", mid="m1")
    await w.add(2.0, ev.ToolStarted(call_id="c1", name="read_file", input={"path": "dates.py"}))
    await w.add(2.0, ev.ToolStarted(call_id="c2", name="run_command", input={"command": "pytest -q"}))
    await w.add(2.3, ev.ToolFinished(call_id="c1", status="ok", output="def parse_date(text): ...", duration_s=0.3))
    await w.usage(2.5, 1500, 120, 0.0024)
    await w.add(11.0, ev.ToolFinished(call_id="c2", status="error", output="1 failed, 11 passed", duration_s=9.0))
    await w.finish_subtask(11.5)
    await w.subtask_start(12, "fix", "Fix the DD/MM/YYYY branch")
    await w.say(12.5, "Swapping the day and the month.", mid="m2")
    await w.add(14.0, ev.Error(kind="rate_limit", message="429 rate limit reached for requests",
                               exception_type="RateLimitError", status_code=429, retryable=True))
    await w.add(14.01, ev.RetryScheduled(kind="rate_limit", retry_no=1, max_retries=5, delay_s=20,
                                         resume_at=t0 + 34.01, action="retry"))
    await w.attempt_start(34.01, 2, "retry")
    await w.tool(34.5, "c3", "write_file", {"path": "dates.py"}, output="wrote 312 bytes", took=0.5)
    await w.usage(35.5, 2400, 300, 0.0042)
    await w.finish_subtask(36)
    await w.finish(36.5, "done")


Clock = fx.Clock


@pytest.fixture(autouse=True)
def frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    yield from fx.frozen_screen(monkeypatch, tmp_path)


async def write(target: Any, shapes: list[str]) -> dict[str, str]:
    async with await open_store(target) as store:
        ids = await fx.populate(store, shapes)
        await shape_replay(store, REPLAY_SID, T0)
        await store.flush()
    return {**ids, "replay": REPLAY_SID}


async def abuild(shapes: tuple[str, ...] = ("done",)) -> dict[str, str]:
    return await write(Path("shepherd.db"), list(shapes))


def build(shapes: tuple[str, ...] = ("done",)) -> dict[str, str]:
    return asyncio.run(abuild(shapes))


async def until(pilot: Any, cond: Any, what: str, rounds: int = 500) -> None:
    for _ in range(rounds):
        if cond():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for: {what}")


async def replay_screen(pilot: Any) -> ReplayScreen:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.loaded.is_set(), "the replay")
    await pilot.pause()
    return app.screen


def index_of(screen: ReplayScreen, etype: str, nth: int = 0, **fields: Any) -> int:
    found = [i for i, e in enumerate(screen.driver.events)
             if e.type == etype and all(getattr(e, k) == v for k, v in fields.items())]
    return found[nth]


async def frame(screen: ReplayScreen) -> None:
    """One frame the test draws itself: after any the app's own interval is drawing (a frame
    that finds one being drawn leaves its time to the next)."""
    async with screen._lock:
        pass
    await screen.frame()


async def play_for(screen: ReplayScreen, clock: Clock, seconds: float, step: float = 0.25) -> None:
    """``seconds`` of real time, frame by frame."""
    for _ in range(round(seconds / step)):
        clock.now += step
        await frame(screen)


def tools(screen: ReplayScreen) -> dict[str, ToolCallView]:
    return {w.block.call_id: w for w in screen.stream.widgets.values() if isinstance(w, ToolCallView)}


def banner(screen: ReplayScreen) -> RetryBanner:
    return next(w for w in screen.stream.widgets.values() if isinstance(w, RetryBanner))


CONTROL_ACTIONS = {"retry", "retry_now", "skip", "cancel", "note", "approve", "deny", "approve_session",
                   "pause_now", "resume", "diff", "export", "open_output"}


# --- opening it ----------------------------------------------------------------------------------


async def test_R_on_the_home_opens_the_replay_of_the_highlighted_session_and_keys_move_it() -> None:
    ids = await abuild(("done", "failed"))
    clock = Clock()
    app = ShepherdApp(Path("shepherd.db"), clock=clock)
    async with app.run_test(size=(110, 32)) as pilot:
        await until(pilot, lambda: app.home is not None and app.home.loaded, "the home")
        table = app.home.table
        table.move_cursor(row=table.get_row_index(ids["replay"]))
        await pilot.press("R")
        screen = await replay_screen(pilot)
        assert screen.session_id == ids["replay"] and screen.driver.playing  # from the start, at 1×
        text = screen.timeline.text
        assert "REPLAY" in text and "▶ playing" in text and "2027-01-15 08:05:00" in text and " 1/" in text
        # nothing here acts on the session
        actions = {b.binding.action for b in screen.active_bindings.values()}
        assert not actions & CONTROL_ACTIONS, actions & CONTROL_ACTIONS
        await pilot.press("full_stop")  # a step pauses
        assert not screen.driver.playing and screen.driver.index == 1
        await pilot.press("right_square_bracket")  # the first attempt, then the next
        assert screen.driver.current.type == "attempt.started" and screen.selected == "explore"
        await pilot.press("right_square_bracket")
        assert screen.driver.current.type == "attempt.started" and screen.driver.current.attempt == 1
        assert screen.selected == "fix" and screen.driver.current.subtask_id == "fix"
        await pilot.press("right_square_bracket")
        assert screen.driver.current.attempt == 2
        await pilot.press("right_square_bracket")  # none after: says so, stays
        assert screen.driver.current.attempt == 2
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert screen.driver.current.subtask_id == "explore" and screen.selected == "explore"
        await pilot.press("right_curly_bracket")  # the next tool call: c1, then c2, running both
        await pilot.press("right_curly_bracket")
        await pilot.pause()
        assert screen.driver.current.call_id == "c2"
        assert {k: w.block.running for k, w in tools(screen).items()} == {"c1": True, "c2": True}
        await pilot.press("full_stop")  # c1's finish
        await pilot.pause()
        assert {k: w.block.running for k, w in tools(screen).items()} == {"c1": False, "c2": True}
        await pilot.press("comma", "comma")  # back: both running again (a rebuilt model, new widgets)
        await pilot.pause()
        assert screen.driver.current.call_id == "c1"
        assert {k: w.block.running for k, w in tools(screen).items()} == {"c1": True}
        await pilot.press("left_curly_bracket")  # no tool call before
        assert screen.driver.current.call_id == "c1"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.home, "back home")


async def test_R_in_the_session_view_replays_it_from_its_start_and_back_returns_there() -> None:
    ids = await abuild()
    app = ShepherdApp(Path("shepherd.db"), open_session=ids["done"], clock=Clock())
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(), "view")
        view = app.screen
        await pilot.press("R")
        screen = await replay_screen(pilot)
        assert screen.session_id == ids["done"] and screen.driver.index == 0
        await pilot.press("q")
        await until(pilot, lambda: app.screen is view, "back to the session view")


async def test_play_at_max_to_the_end_then_space_plays_again_from_the_start() -> None:
    await abuild()
    clock = Clock()
    app = ShepherdApp(Path("shepherd.db"), replay=(REPLAY_SID, 1.0, None), clock=clock)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await replay_screen(pilot)
        await pilot.press("3")
        assert screen.driver.speed is None  # (playing: the app's own frames may already have ended it)
        for _ in range(400):
            if not screen.driver.playing:
                break
            clock.now += 1 / 30
            await frame(screen)
        d = screen.driver
        assert d.at_end and not d.playing and d.index == d.total - 1
        await pilot.pause()
        assert "■ end" in screen.timeline.text and f" {d.total}/{d.total}" in screen.timeline.text
        status = screen.query_one("#status").text
        assert "done" in status and "0:36" in status and "3.9k↑" in status  # the session's end as stored
        assert all(not w.block.running for w in tools(screen).values())
        d.set_speed(1.0)  # (the app's clock stands still: nothing moves at 1× by itself)
        await pilot.press("space")  # at the end: from the start again
        assert d.playing and d.index == 0


async def test_a_countdown_and_a_running_tool_as_of_that_moment() -> None:
    await abuild()
    clock = Clock()
    app = ShepherdApp(Path("shepherd.db"), replay=(REPLAY_SID, 1.0, 1), clock=clock)
    async with app.run_test(size=(110, 30)) as pilot:
        screen = await replay_screen(pilot)
        d = screen.driver
        assert not d.playing  # --at opens paused
        await screen._move(d.seek(index_of(screen, "tool.finished", call_id="c1")))  # c2 still runs
        await pilot.press("space")
        await play_for(screen, clock, 3.0)  # 3 s more (it started 0.3 s before): the virtual clock, at 1×
        await pilot.press("space")
        await pilot.pause()
        c2 = tools(screen)["c2"]
        assert c2.block.running and "run_command pytest -q  3.3 s" in c2.render().plain
        assert "⚙ 1 tool running 3 s" in screen.query_one("#status").text
        await screen._move(d.seek(index_of(screen, "retry.scheduled")))
        await pilot.pause()
        assert "rate limit — retry 1/5 in 20 s" in banner(screen).render().plain
        assert "n: retry now" not in banner(screen).render().plain  # no key acts here
        assert "20s" in screen.subtask_list.get_option("st:fix").prompt.plain
        await pilot.press("space")
        await play_for(screen, clock, 4.0)
        await pilot.pause()
        assert "in 16 s" in banner(screen).render().plain
        assert "16s" in screen.subtask_list.get_option("st:fix").prompt.plain
        await play_for(screen, clock, 1.0)  # 20 s of waiting at 1×: cut to 5 s, and said so
        await pilot.pause()
        assert d.current.type == "attempt.started" and "gap skipped: 15 s" in screen.timeline.text
        assert "after" in banner(screen).render().plain  # the wait is over


async def test_a_click_on_the_timeline_goes_there() -> None:
    await abuild()
    app = ShepherdApp(Path("shepherd.db"), replay=(REPLAY_SID, 1.0, 1), clock=Clock())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await replay_screen(pilot)
        bar = screen.timeline
        width = bar._bar_width() - 1
        await pilot.click(Timeline, offset=(1 + width - 1, 1))  # the last cell
        await pilot.pause()
        assert screen.driver.at_end
        await pilot.click(Timeline, offset=(1 + (width - 1) // 2, 1))
        await pilot.pause()
        assert abs(screen.driver.index - (screen.driver.total - 1) / 2) <= screen.driver.total / width + 1


async def test_the_replay_reads_either_store(store_target) -> None:
    ids = await write(store_target, ["done"])
    app = ShepherdApp(store_target, replay=(ids["done"], None, 5), clock=Clock())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await replay_screen(pilot)
        assert screen.driver.seq == 5 and not screen.driver.playing
        await pilot.press("end")
        await pilot.pause()
        assert screen.driver.at_end and screen.model.session.status == "done"
        await pilot.press("home")
        assert screen.driver.index == 0


async def test_hostile_text_in_a_replayed_session_is_data() -> None:
    from tests.test_adversarial_output import raw_controls, rendered, shape_hostile

    async def fill() -> None:
        async with await open_store(Path("shepherd.db")) as store:
            await shape_hostile(store, "s6b49d200b0ad", fx.T0)

    await fill()
    app = ShepherdApp(Path("shepherd.db"), replay=("s6b49d200b0ad", None, 1), clock=Clock())
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await replay_screen(pilot)
        for key in ("end", "left", "left"):  # mid-way through the hostile events, then near the end
            await pilot.press(key)
            await pilot.pause()
            text = rendered(app)
            assert not raw_controls(text), raw_controls(text)
        assert "␛]0;pwned␇" in text and "[@click=app.quit]q[/]" in text  # visible, literal
        assert app.is_running


# --- the command line --------------------------------------------------------------------------------


def test_cli_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from shepherd.tui.cli import main

    build()
    cases = {("replay", "nosuchsession"): "no session",
             ("replay", REPLAY_SID, "--at", "999"): "has events 1 to",
             ("replay", REPLAY_SID, "--at", "0"): "1 or more",
             ("replay", REPLAY_SID, "--at", "x"): "whole number",
             ("replay", REPLAY_SID, "--speed", "5"): "invalid choice",
             ("replay",): "required"}
    for args, says in cases.items():
        assert main([*args, "--db", "shepherd.db"]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, (args, err)
    assert main(["replay", "x", "--db", "missing.db"]) == 2
    assert "no database" in capsys.readouterr().err


async def test_cli_plan_gives_the_app_its_replay() -> None:
    import argparse

    from shepherd.tui.cli_replay import replay_plan

    await abuild()
    args = argparse.Namespace(db="shepherd.db", session=REPLAY_SID[:11], speed="10", at=3)
    assert await replay_plan(args) == (REPLAY_SID, 10.0, 3)
    args.speed, args.at = "max", None
    assert await replay_plan(args) == (REPLAY_SID, None, None)


# --- snapshots --------------------------------------------------------------------------------------


def replay_app(at: str) -> tuple[ShepherdApp, Clock]:
    build()
    clock = Clock()
    return ShepherdApp(Path("shepherd.db"), replay=(REPLAY_SID, 1.0, 1), clock=clock), clock


def _moment(clock: Clock, etype: str, seconds: float, **fields: Any) -> Any:
    async def run_before(pilot: Any) -> None:
        screen = await replay_screen(pilot)
        await screen._move(screen.driver.seek(index_of(screen, etype, **fields)))
        await pilot.press("space")
        await play_for(screen, clock, seconds)
        await pilot.press("space")
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()

    return run_before


def test_snapshot_mid_replay_a_running_tool(snap_compare) -> None:
    app, clock = replay_app("tool")
    assert snap_compare(app, terminal_size=(110, 30),
                        run_before=_moment(clock, "tool.finished", 3.0, call_id="c1"))


def test_snapshot_mid_replay_a_countdown(snap_compare) -> None:
    app, clock = replay_app("retry")
    assert snap_compare(app, terminal_size=(110, 30), run_before=_moment(clock, "retry.scheduled", 4.0))


def test_snapshot_the_end_of_a_replay_at_80x24(snap_compare) -> None:
    app, _ = replay_app("end")

    async def run_before(pilot: Any) -> None:
        await replay_screen(pilot)
        await pilot.press("end")
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


async def test_help_lists_every_replay_key_and_a_long_subtask_loads_earlier_blocks_up_to_the_cursor() -> None:
    from shepherd.tui.screens.help import HelpScreen

    sid = "s6b49d200c1ab"
    async with await open_store(Path("shepherd.db")) as store:
        w = fx.Writer(store, sid, T0)
        await w.start("A long subtask", subtasks=[{"id": "a", "title": "A", "prompt": "p"}])
        await w.subtask_start(1, "a", "A")
        await w.add(1.5, ev.ToolStarted(call_id="c0", name="run_command", input={"command": "make"}))
        for i in range(700):  # more blocks than the model keeps (500 + 100)
            await w.add(2 + i * 0.01, ev.Control(command="note", source="cli", text=f"note {i}"))
        await w.add(19, ev.ToolFinished(call_id="c0", status="ok", output="built", duration_s=17.5))
        await w.finish_subtask(20)
        await w.finish(21)
    app = ShepherdApp(Path("shepherd.db"), replay=(sid, 1.0, 650), clock=Clock())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await replay_screen(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        for words in ("Play", "Pause", "1×", "10×", "Max", "Step back", "Previous attempt", "Previous tool call",
                      "Back 10%", "A click on the timeline"):
            assert words in app.screen.text, words
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "back")
        st = screen.model.subtask("a")
        assert st.has_earlier and len(st.blocks) <= 600  # pruned: the store has the rest
        cursor = screen.driver.seq
        blocks = await screen._fetch_earlier(st)
        assert blocks and all(b.seq <= cursor for b in st.blocks)
        notes = [b.text.split(": ", 1)[1] for b in st.blocks if isinstance(b, m.NoteBlock) and b.category == "note"]
        c0 = next(b for b in st.blocks if isinstance(b, m.ToolBlock))
        assert c0.running and not c0.output  # its end is after the moment shown
        last = cursor - 6  # (5 events before the first note)
        assert notes == [f"note {i}" for i in range(last + 1 - len(notes), last + 1)] and len(notes) > 600
