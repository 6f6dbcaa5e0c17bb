"""The session screen on a real Store (SQLite file), driven with Textual's pilot.

Time is frozen through the screen's clock; animation is off (frame 0) so spinners and
countdowns only move when a test says so. No sleeps: pilot.pause() and store.flush().
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from shepherd.core import events as ev
from shepherd.core.clock import FakeClock
from shepherd.core.store.db import Store
from shepherd.tui import model as m
from shepherd.tui.screens.modals import ConfirmModal, NoteModal
from shepherd.tui.screens.session import SessionScreen
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.blocks import AttemptSeparator, RetryBanner, TextView, ToolCallView
from shepherd.tui.widgets.stream import StreamView
from tests.tui_fixtures import Clock

T0 = 1_800_000_000.0
SID = "s00000001"


@pytest.fixture(autouse=True)
def _frozen_animation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ticker, "animate", False)


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []

    def notify(self: Any, message: str, **kw: Any) -> None:
        seen.append((str(message), kw.get("severity", "information")))

    monkeypatch.setattr(SessionScreen, "notify", notify)
    return seen


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "shepherd.db", clock=FakeClock(T0))
    yield s
    await s.close()


class Recorder:
    """A Controller that records every call (and can be told to fail)."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.fail = fail

    def _rec(self, name: str, *args: Any, **kw: Any) -> None:
        self.calls.append((name, args, kw))
        if self.fail:
            raise RuntimeError(self.fail)

    async def pause(self, *, immediate: bool = False, source: str = "tui") -> None:
        self._rec("pause", immediate=immediate, source=source)

    async def resume(self, *, source: str = "tui") -> None:
        self._rec("resume", source=source)

    async def retry_now(self, *, source: str = "tui") -> None:
        self._rec("retry_now", source=source)

    async def retry(self, subtask_id: str | None = None, *, source: str = "tui") -> None:
        self._rec("retry", subtask_id, source=source)

    async def skip(self, subtask_id: str | None = None, *, source: str = "tui") -> None:
        self._rec("skip", subtask_id, source=source)

    async def cancel(self, *, source: str = "tui") -> None:
        self._rec("cancel", source=source)

    async def note(self, text: str, *, source: str = "tui") -> None:
        self._rec("note", text, source=source)

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


class Harness(App[None]):

    def __init__(self, screen: SessionScreen) -> None:
        super().__init__()
        self.session_screen = screen
        self.resumed: list[str] = []

    def on_mount(self) -> None:
        self.push_screen(self.session_screen)

    def on_session_screen_resume_requested(self, message: SessionScreen.ResumeRequested) -> None:
        sid, sub = message.session_id, message.retry_subtask
        self.resumed.append(sid if sub is None else f"{sid}:{sub}")


class Writer:
    """Appends events for one session with increasing, fixed timestamps."""

    def __init__(self, store: Store, sid: str = SID, t0: float = T0) -> None:
        self.store = store
        self.sid = sid
        self.ts = t0

    def make(self, cls: type[ev.Event], dt: float = 0.5, **kw: Any) -> ev.Event:
        self.ts += dt
        return cls(session_id=self.sid, ts=self.ts, **kw)

    async def add(self, cls: type[ev.Event], dt: float = 0.5, **kw: Any) -> ev.Event:
        out = await self.store.append(self.make(cls, dt, **kw))
        assert out is not None
        return out

    async def start(self, subtasks: tuple[str, ...] = ("a", "b", "c")) -> None:
        await self.add(ev.SessionStarted, title="Fix the date parser", backend="scripted", model="demo")
        await self.add(ev.PlanReady, subtasks=[{"id": i, "title": f"Subtask {i}", "prompt": "p"} for i in subtasks])
        await self.add(ev.SubtaskStarted, subtask_id=subtasks[0], title=f"Subtask {subtasks[0]}")
        await self.add(ev.AttemptStarted, subtask_id=subtasks[0], attempt=1, reason="first")

    async def notes(self, n: int) -> None:
        """``n`` person's notes, n0 to n{n-1}: enough blocks to scroll or page."""
        for i in range(n):
            await self.add(ev.Control, command="note", text=f"n{i}")


def live_screen(store: Store, clock: Any) -> tuple[SessionScreen, Harness]:
    """The screen following session SID live (a Recorder for its controller) in a Harness."""
    screen = SessionScreen(store, SID, controller=Recorder(), follow="local", clock=clock)
    return screen, Harness(screen)


async def until(pilot: Any, cond: Any, what: str, rounds: int = 400) -> None:
    for _ in range(rounds):
        if cond():
            return
        await pilot.pause()
    raise AssertionError(f"timed out waiting for: {what}")


async def loaded(pilot: Any, screen: SessionScreen) -> None:
    await until(pilot, screen.loaded.is_set, "the session screen to load")
    await pilot.pause()


def views(screen: SessionScreen, cls: type) -> list[Any]:
    return [w for w in screen.stream.widgets.values() if isinstance(w, cls)]


def plain(widget: Any) -> str:
    return widget.render().plain


# --- controls ------------------------------------------------------------------------------


async def test_every_binding_calls_the_controller(store: Store, notified: list, tmp_path: Path) -> None:
    w = Writer(store)
    await w.start()
    ctl = Recorder()
    clock = Clock(w.ts + 1)
    screen = SessionScreen(store, SID, controller=ctl, follow="local", clock=clock)
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        assert screen.controllable and screen.selected == "a"

        await pilot.press("p")
        assert ctl.calls[-1] == ("pause", (), {"immediate": False, "source": "tui"})
        # once the pause is on its way (or done), p resumes
        await w.add(ev.Control, command="pause", source="tui")
        await screen.flush_now()
        await pilot.press("p")
        assert ctl.calls[-1] == ("resume", (), {"source": "tui"})
        await w.add(ev.SessionPaused, reason="user")
        await screen.flush_now()
        assert screen.model.session.status == "paused"
        await pilot.press("p")
        assert ctl.calls[-1] == ("resume", (), {"source": "tui"})
        await w.add(ev.SessionResumed)
        await screen.flush_now()

        await pilot.press("P")
        assert ctl.calls[-1] == ("pause", (), {"immediate": True, "source": "tui"})

        await pilot.press("r")
        assert ctl.calls[-1] == ("retry", ("a",), {"source": "tui"})
        await pilot.press("down")  # the subtask list has focus: select b
        await until(pilot, lambda: screen.selected == "b", "subtask b selected")
        await pilot.press("s")
        assert ctl.calls[-1] == ("skip", ("b",), {"source": "tui"})

        n = len(ctl.calls)
        assert "retry_now" not in {b.binding.action for b in screen.active_bindings.values()}
        await pilot.press("n")  # no countdown: nothing to skip, the key is not offered
        assert len(ctl.calls) == n
        await w.add(ev.RetryScheduled, subtask_id="a", attempt=1, kind="tool_concurrency", retry_no=1,
                    max_retries=5, delay_s=2, resume_at=w.ts + 2.5)
        await screen.flush_now()
        await pilot.press("n")
        assert ctl.calls[-1] == ("retry_now", (), {"source": "tui"})

        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the cancel confirmation")
        await pilot.press("n")  # declined: nothing sent
        await until(pilot, lambda: app.screen is screen, "back on the session")
        assert ctl.names[-1] != "cancel"
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the cancel confirmation")
        await pilot.press("y")
        await until(pilot, lambda: ctl.names[-1] == "cancel", "cancel sent")
        assert ctl.calls[-1] == ("cancel", (), {"source": "tui"})

        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, NoteModal), "the note dialog")
        await pilot.press(*"use pytest -x", "enter")
        await until(pilot, lambda: ctl.names[-1] == "note", "note sent")
        assert ctl.calls[-1] == ("note", ("use pytest -x",), {"source": "tui"})

        await pilot.press("e")
        await until(pilot, lambda: any(msg.startswith("exported to") for msg, _ in notified), "export")
        path = Path(getattr(screen, "last_export"))
        assert path.parent == tmp_path and path.exists() and "Fix the date parser" in path.read_text()

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen, "the screen to close")


async def test_controls_on_a_past_session_are_read_only(store: Store, notified: list) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.SubtaskFinished, subtask_id="a", status="done")
    await w.add(ev.SessionFinished, status="done")
    ctl = Recorder()
    screen = SessionScreen(store, SID, controller=ctl, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        for key in ("p", "P", "n", "s", "c", "m"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is screen, key  # no dialog opened
        assert ctl.calls == []
        assert notified == []  # the keys are not offered (nor in the footer): nothing to refuse
        offered = {b.binding.action for b in screen.active_bindings.values()}
        assert not offered & {"pause", "resume", "pause_now", "retry_now", "skip", "cancel", "note"}
        assert "read-only" in screen.status_bar.text and "done" in screen.status_bar.text
        assert app.resumed == []
        assert "retry" in offered  # what a past session can do: run a subtask again here


async def test_resume_on_an_interrupted_session_asks_the_app(store: Store, notified: list) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.SessionInterrupted, reason="runner gone")
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        await pilot.press("p")
        await until(pilot, lambda: app.resumed == [SID], "resume_session called")
        assert "skip" not in {b.binding.action for b in screen.active_bindings.values()}


async def test_retry_on_a_finished_session_reruns_the_selected_subtask(store: Store, notified: list) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.SubtaskFinished, subtask_id="a", status="done")
    await w.add(ev.SessionFinished, status="done")
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        screen.subtask_list.focus()
        await pilot.pause()
        selected = screen._selected_subtask()
        assert selected
        await pilot.press("r")
        await until(pilot, lambda: app.resumed == [f"{SID}:{selected}"], "the app asked to re-run the subtask")


async def test_a_failing_controller_is_reported_not_fatal(store: Store, notified: list) -> None:
    w = Writer(store)
    await w.start()
    ctl = Recorder(fail="runner went away")
    screen = SessionScreen(store, SID, controller=ctl, follow="local", clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        await pilot.press("p")
        await pilot.press("r")
        assert ctl.names == ["pause", "retry"]
        assert notified == [("pause failed: runner went away", "error"), ("retry failed: runner went away", "error")]
        assert app.screen is screen and app.is_running


# --- what the stream shows -------------------------------------------------------------


async def test_retry_countdown_text_and_bar(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.Error, subtask_id="a", attempt=1, kind="tool_concurrency", status_code=400,
                message="API Error: 400 due to tool use concurrency issues", retryable=True)
    e = await w.add(ev.RetryScheduled, subtask_id="a", attempt=1, kind="tool_concurrency", retry_no=2,
                    max_retries=5, delay_s=4.0, resume_at=w.ts + 0.5 + 4.0)
    clock = Clock(e.ts + 1.0)
    screen, app = live_screen(store, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        [banner] = views(screen, RetryBanner)
        text = plain(banner)
        assert "tool concurrency — retry 2/5 in 3 s" in text
        assert text.splitlines()[1].count("━") > 0  # a quarter of the bar is done
        assert screen.subtask_list.get_option_at_index(0).prompt.plain.startswith("◷ 3s Subtask a")
        # time moves on: one tick redraws the countdown
        clock.now += 2.0
        Ticker.of(app).tick_now()
        await pilot.pause()
        assert "retry 2/5 in 1 s" in plain(banner)
        assert screen.subtask_list.get_option_at_index(0).prompt.plain.startswith("◷ 1s ")
        assert banner in Ticker.of(app)._subs
        # the next attempt ends the wait: the banner stops counting
        await w.add(ev.AttemptStarted, subtask_id="a", attempt=2, reason="retry",
                    prompt_extra="Use one tool at a time.")
        await screen.flush_now()
        await pilot.pause()
        assert "in " not in plain(banner) and not banner.has_class("-active")
        assert banner not in Ticker.of(app)._subs
        seps = views(screen, AttemptSeparator)
        assert "attempt 2 · retry after error" in plain(seps[-1]) and "one tool at a time" in plain(seps[-1])


async def test_tool_call_spinner_then_done_with_duration(store: Store) -> None:
    w = Writer(store)
    await w.start()
    clock = Clock(w.ts)
    screen, app = live_screen(store, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        started = await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash",
                              input={"command": "pytest -q tests/test_dates.py"})
        await screen.flush_now()
        await pilot.pause()
        [tool] = views(screen, ToolCallView)
        clock.now = started.ts + 2.0
        tool.refresh()
        text = plain(tool)
        assert text.startswith("▸ " + m.spinner(0) + " Bash pytest -q tests/test_dates.py")  # it unfolds (its input)
        assert text.rstrip().endswith("2 s")
        assert tool.has_class("-running") and tool in Ticker.of(app)._subs
        await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="ok",
                    output="1 failed, 3 passed\nFAILED test_parse_ddmmyyyy", duration_s=1.3)
        await screen.flush_now()
        await pilot.pause()
        text = plain(tool)
        assert "✓ Bash" in text and text.rstrip().endswith("ok · 1.3 s")
        assert text.startswith("▸")  # folded output
        assert "FAILED" not in text
        assert tool.has_class("-ok") and not tool.has_class("-running")
        assert tool not in Ticker.of(app)._subs


async def test_tool_output_expands_on_enter_and_click(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Read", input={"file_path": "dates.py"})
    out = "\n".join(f"line {i}" for i in range(300))
    await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="ok", output=out, duration_s=0.2)
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        [tool] = views(screen, ToolCallView)
        assert tool.size.height == 1
        tool.focus()
        await pilot.press("enter")
        await pilot.pause()
        text = plain(tool)
        assert tool.expanded and text.startswith("▾") and "line 0" in text and "line 199" in text
        assert "line 200" not in text and "… 100 more lines" in text
        assert tool.size.height == 1 + 200 + 1
        await pilot.click(tool, offset=(2, 0))
        await pilot.pause()
        assert not tool.expanded and tool.size.height == 1


async def test_hook_denial_error_and_notes_render(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Task", input={"run_in_background": True})
    await w.add(ev.HookDecision, subtask_id="a", attempt=1, call_id="c1", tool="Task", decision="deny",
                reason="background sub-agents are not allowed")
    await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="denied", output="denied by hook")
    await w.add(ev.Control, command="note", text="run the tests first", source="tui")
    await w.add(ev.SubtaskFinished, subtask_id="a", status="stuck", reason="retry budget used up")
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        texts = [plain(wd) for wd in screen.stream.widgets.values() if not isinstance(wd, TextView)]
        joined = "\n".join(texts)
        assert "⛔ Task" in joined and "denied" in joined
        assert "⛔ hook denied Task: background sub-agents are not allowed" in joined
        assert "✎ note (tui): run the tests first" in joined
        assert "⚠ subtask stuck — retry budget used up" in joined
        assert screen.subtask_list.get_option_at_index(0).prompt.plain.startswith("⚠")


async def test_small_terminal_80x24(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m1", text="Looking at **dates.py** now.")
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash",
                input={"command": "pytest -q tests/test_dates.py --maxfail=1 -k 'parse and not slow'"})
    e = await w.add(ev.RetryScheduled, subtask_id="a", attempt=1, kind="rate_limit", retry_no=1, max_retries=5,
                    delay_s=30.0, resume_at=w.ts + 0.5 + 30)
    screen, app = live_screen(store, Clock(e.ts + 5))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, screen)
        assert screen.subtask_list.size.width >= 20 and screen.stream.size.width >= 40
        assert screen.status_bar.region.bottom <= 23
        svg = app.export_screenshot()
        assert "retry" in svg and "rate" in svg
        [tool] = views(screen, ToolCallView)
        assert tool.size.height == 1  # the long input is clipped, not wrapped
        assert plain(tool).endswith("…") is False and "…" in plain(tool)
        for wd in screen.stream.widgets.values():
            assert wd.region.right <= 80


async def test_streaming_many_deltas_coalesces(store: Store) -> None:
    """Thousands of deltas become a handful of frames and one widget per block."""
    w = Writer(store)
    await w.start()
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        mounts0, frames0 = screen.stream.mount_count, screen.frames
        futures = []
        expected: dict[str, str] = {}
        for msg in range(3):
            mid = f"m{msg}"
            for i in range(1000):
                piece = f"word{i} " + ("\n\n" if i % 100 == 99 else "")
                expected[mid] = expected.get(mid, "") + piece
                futures.append(store.submit(w.make(ev.TextDelta, dt=0.001, subtask_id="a", attempt=1,
                                                   message_id=mid, text=piece)))
            futures.append(store.submit(w.make(ev.ToolStarted, dt=0.001, subtask_id="a", attempt=1,
                                               call_id=f"c{msg}", name="Read", input={"file_path": f"f{msg}.py"})))
        await asyncio.gather(*futures)
        assert screen.events_received == 3003

        def settled() -> bool:
            texts = views(screen, TextView)
            return (not screen._pending and len(texts) == 3
                    and all(t.settled for t in texts))

        await until(pilot, settled, "all deltas rendered")
        texts = views(screen, TextView)
        assert [t.source for t in texts] == [expected["m0"], expected["m1"], expected["m2"]]
        shown = plain(texts[2])
        assert shown.startswith("word0 word1") and "word999" in shown
        assert screen.stream.mount_count - mounts0 == 6  # 3 text blocks + 3 tool calls: O(blocks)
        assert screen.frames - frames0 < 40  # far fewer updates than the 3003 events


async def test_only_the_selected_subtask_is_mounted_and_auto_follow(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m1", text="in a")
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        assert screen.selected == "a"
        await w.add(ev.SubtaskFinished, subtask_id="a", status="done")
        await w.add(ev.SubtaskStarted, subtask_id="b", title="Subtask b")
        await w.add(ev.AttemptStarted, subtask_id="b", attempt=1)
        await w.add(ev.TextDelta, subtask_id="b", attempt=1, message_id="m2", text="in b")
        await screen.flush_now()
        await pilot.pause()
        assert screen.selected == "b"  # followed the active subtask
        assert {wd.block.subtask_id for wd in screen.stream.widgets.values()} == {"b"}
        # the user looks at a: new events of b no longer move the view
        await pilot.press("up")
        await until(pilot, lambda: screen.selected == "a", "a selected")
        assert not screen.auto_follow
        await w.add(ev.TextDelta, subtask_id="b", attempt=1, message_id="m3", text="more b")
        await screen.flush_now()
        await pilot.pause()
        assert screen.selected == "a"
        assert {wd.block.subtask_id for wd in screen.stream.widgets.values()} == {"a"}
        assert screen.model.subtasks["b"].blocks[-1].text == "more b"


async def test_block_window_is_bounded_and_earlier_blocks_come_back(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StreamView, "MAX_BLOCKS", 10)
    monkeypatch.setattr(StreamView, "PRUNE_SLACK", 5)
    monkeypatch.setattr(StreamView, "SHOW_BLOCKS", 10)
    w = Writer(store)
    await w.start()
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        for i in range(40):
            await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id=f"c{i}", name="Read",
                        input={"file_path": f"f{i}.py"})
            await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id=f"c{i}", status="ok", output="x")
            if i % 7 == 0:
                await screen.flush_now()
        await screen.flush_now()
        await pilot.pause()
        stream = screen.stream
        assert len(stream.widgets) <= 15
        assert len(screen.model.subtasks["a"].blocks) == 41
        assert stream.hidden_blocks == 41 - len(stream.widgets)
        assert "earlier block" in str(stream._bar.render())
        hidden = stream.hidden_blocks
        await pilot.press("u")
        await pilot.pause()
        assert stream.hidden_blocks == max(0, hidden - 10)
        first = next(iter(stream.widgets.values()))
        assert first.block is screen.model.subtasks["a"].blocks[stream.hidden_blocks]


async def test_opens_with_the_last_page_and_loads_earlier_events(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                                 notified: list) -> None:
    monkeypatch.setattr(SessionScreen, "PAGE_SIZE", 30)
    w = Writer(store)
    await w.start()
    for i in range(60):
        await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id=f"m{i // 10}", text=f"{i} ")
    await w.add(ev.SubtaskFinished, subtask_id="a", status="done")
    await w.add(ev.SessionFinished, status="done")
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        assert screen.model.first_seq == screen.model.last_seq - 29
        assert screen.feed.has_earlier and screen.stream._bar.display
        assert screen.model.session.title == "Fix the date parser"  # from the row, not the page
        assert screen.model.subtasks["a"].state == "done"
        before = len(screen.model.subtasks["a"].blocks)
        await pilot.press("u")  # one more page of 30
        await until(pilot, lambda: screen.model.first_seq == screen.model.last_seq - 59, "a page loaded")
        assert screen.feed.has_earlier
        await pilot.press("u")
        await until(pilot, lambda: screen.model.first_seq == 1, "all events loaded")
        await pilot.pause()
        assert len(screen.model.subtasks["a"].blocks) > before
        assert not screen.feed.has_earlier
        texts = [b.text for b in screen.model.subtasks["a"].blocks if isinstance(b, m.TextBlock)]
        assert texts[0] == "".join(f"{i} " for i in range(10))
        assert screen.model.session.tokens == 0
        await pilot.press("u")
        assert notified[-1][0] == "this is the beginning of the session"


async def test_rehydrated_interrupted_session_shows_no_running_spinner(tmp_path: Path) -> None:
    """A runner died with two calls open; recovery on the next open closes them."""
    path = tmp_path / "shepherd.db"
    runner = await Store.open(path, clock=FakeClock(T0))
    w = Writer(runner)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash", input={"command": "make"})
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c2", name="Read", input={"file_path": "x"})
    await runner.close()  # no lease, no finish: the runner is gone

    store = await Store.open(path, clock=FakeClock(T0 + 600))  # recovery runs here
    try:
        screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(T0 + 700))
        app = Harness(screen)
        async with app.run_test(size=(120, 36)) as pilot:
            await loaded(pilot, screen)
            assert screen.model.session.status == "interrupted"
            tools = views(screen, ToolCallView)
            assert len(tools) == 2
            for tool in tools:
                assert tool.block.status == "interrupted" and not tool.has_class("-running")
                assert plain(tool).lstrip("▸ ").startswith("⊘")
                assert not any(ch in plain(tool) for ch in m.SPINNER_FRAMES)
            assert screen.subtask_list.get_option_at_index(0).prompt.plain.startswith("⊘")
            assert Ticker.of(app).subscribers == 0  # nothing on screen animates
            assert "interrupted" in screen.status_bar.text and "read-only" in screen.status_bar.text
    finally:
        await store.close()


async def test_page_cut_before_the_end_still_shows_no_spinner_for_a_dead_session(store: Store) -> None:
    """The row says failed; the page holds an open call whose close was never written."""
    w = Writer(store)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash", input={})
    await w.add(ev.SessionFinished, status="failed", reason="crashed")
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        [tool] = views(screen, ToolCallView)
        assert tool.block.status == "interrupted"


async def test_tail_follows_another_process(tmp_path: Path) -> None:
    path = tmp_path / "shepherd.db"
    writer_clock = FakeClock(T0)
    writer = await Store.open(path, clock=writer_clock)
    await writer.acquire_lease(SID, ttl_s=3600)
    w = Writer(writer)
    await w.start()
    reader_clock = FakeClock(T0)
    reader = await Store.open(path, clock=reader_clock)
    try:
        screen = SessionScreen(reader, SID, controller=Recorder(), follow="tail", clock=Clock(w.ts))
        app = Harness(screen)
        async with app.run_test(size=(120, 36)) as pilot:
            await loaded(pilot, screen)
            assert screen.model.session.status == "running" and "attached" in screen.status_bar.text
            await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m1", text="from elsewhere")
            await w.add(ev.Usage, subtask_id="a", input_tokens=10, output_tokens=5, cost_usd=0.01)

            def arrived() -> bool:
                reader_clock.advance(0.1)  # lets the tail poll again
                return bool(views(screen, TextView))

            await until(pilot, arrived, "the tailed delta")
            await until(pilot, lambda: screen.model.session.tokens == 15, "usage")
            [text] = views(screen, TextView)
            await until(pilot, lambda: text.settled, "markdown")
            assert text.source == "from elsewhere"
    finally:
        await reader.close()
        await writer.close()


async def test_unknown_session_does_not_crash(store: Store, notified: list) -> None:
    screen = SessionScreen(store, "nope", controller=None, follow=None, clock=Clock(T0))
    app = Harness(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, screen)
        assert notified and "no session nope" in notified[0][0]
        await pilot.press("p")
        assert app.screen is screen


def test_bindings_are_described_for_footer_and_palette() -> None:
    described = {b.action: b.description for b in SessionScreen.BINDINGS}  # type: ignore[union-attr]
    for action in ("pause", "resume", "pause_now", "retry_now", "retry", "skip", "cancel", "note", "export", "back",
                   "next_block", "previous_block", "open_output"):
        assert described.get(action), action


def test_markdown_renders_blocks_with_hanging_indents() -> None:
    from shepherd.tui.widgets.markdown import to_content

    text = ("# Plan\n\nI will **fix** `parse_date` now, see [docs](https://example.org).\n\n"
            "- first item that is long enough to wrap onto a second line here\n- second\n  - nested\n\n"
            "1. one\n2. two\n\n> quoted\n\n```py\nx = 1\n```\n\n| a | b |\n|---|---|\n| 1 | 22 |\n\n---\nend")
    lines = to_content(text, 40).plain.splitlines()
    assert lines[0] == "Plan" and lines[1] == ""
    assert lines[2].startswith("I will fix parse_date now, see docs")
    assert "(https://example.org)" in " ".join(lines[2:4])
    i = lines.index("• first item that is long enough to wrap")
    assert lines[i + 1] == "  onto a second line here"
    assert lines[i + 2] == "• second" and lines[i + 3] == "  ◦ nested"
    assert "1. one" in lines and "2. two" in lines
    assert "▌ quoted" in lines and "▏ x = 1" in lines
    assert "a │ b" in lines and "1 │ 22" in lines
    assert "─" * 40 in lines and lines[-1] == "end"
    assert all(len(line) <= 40 for line in lines)
    # half-written markdown while streaming never fails
    for cut in range(0, len(text), 7):
        to_content(text[:cut], 30)


async def test_thinking_folds_and_idle_time_hides_during_a_countdown(store: Store) -> None:
    from shepherd.tui.widgets.blocks import ThinkingView

    w = Writer(store)
    await w.start()
    await w.add(ev.ThinkingDelta, subtask_id="a", attempt=1, message_id="t1", text="First I read the tests.\n")
    await w.add(ev.ThinkingDelta, subtask_id="a", attempt=1, message_id="t1", text="Then the parser.")
    clock = Clock(w.ts + 30)
    screen, app = live_screen(store, clock)
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        [thinking] = views(screen, ThinkingView)
        assert plain(thinking) == "▸ ∴ thinking  2 lines  Then the parser."
        thinking.focus()
        await pilot.press("enter")
        assert "First I read the tests." in plain(thinking) and thinking.size.height >= 3
        assert "idle 30 s" in screen.status_bar.text
        await w.add(ev.RetryScheduled, subtask_id="a", attempt=1, kind="transient", retry_no=1, max_retries=5,
                    delay_s=60, resume_at=w.ts + 60.5)
        await screen.flush_now()
        clock.now = w.ts + 10
        assert "idle" not in screen.status_bar.text  # the banner explains the wait


async def test_clicking_the_earlier_bar_loads_more(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SessionScreen, "PAGE_SIZE", 10)
    w = Writer(store)
    await w.start()
    await w.notes(30)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        first = screen.model.first_seq
        bar = screen.stream._bar
        assert bar.display
        await pilot.click(bar)
        await until(pilot, lambda: (screen.model.first_seq or 0) < first, "an earlier page")
        notes = [b.text for b in screen.model.subtasks["a"].blocks if isinstance(b, m.NoteBlock)]
        assert notes[-1] == "note (tui): n29" and len(notes) == 20
