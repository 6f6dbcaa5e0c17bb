"""The replay screen: a stored session (past, or live so far) as it was at each moment.

The session view's widgets (header, subtask list, stream, status bar) over the model of a
``ReplayDriver`` (tui.model.replay: the same fold as live sessions, up to the cursor), and
a timeline. Every widget here reads the driver's virtual clock, not the app's: countdowns,
spinners and durations are those of the moment shown. The app's clock (``clock``) only
measures how much real time went by between two frames while playing (tests inject it).
Nothing here acts on the session: no pause, retry or approval, and no "press n" hints.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import OptionList

from shepherd.tui import model as m
from shepherd.tui.history import load_earlier_blocks
from shepherd.tui.screens.session_panes import SessionPanes
from shepherd.tui.model.replay import SPEEDS, Moved, ReplayDriver
from shepherd.tui.widgets.blocks import BlockWidget, RetryBanner, ToolCallView, widget_for
from shepherd.tui.widgets.footer import KeyFooter
from shepherd.tui.widgets.status import SessionHeader, StatusBar
from shepherd.tui.widgets.stream import EarlierBar, StreamView
from shepherd.tui.widgets.subtasks import SubtaskList, SubtaskPane
from shepherd.tui.widgets.timeline import Timeline
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore

FRAME_S = 1 / 30
PAGE = 5000  # events read from the store per page


class ReplayToolCall(ToolCallView):
    ANSWER_KEYS = False  # a call waiting at that moment: nobody can answer it here


class ReplayRetryBanner(RetryBanner):
    RETRY_NOW_HINT = ""  # the countdown of that moment: it cannot be skipped here


class ReplayStream(StreamView):
    def make_widget(self, block: m.Block) -> Widget:
        if isinstance(block, m.ToolBlock):
            return ReplayToolCall(block, self.clock)
        if isinstance(block, m.RetryBlock):
            return ReplayRetryBanner(block, self.clock)
        return widget_for(block, self.clock)


class UpTo:
    """The store's reads of a subtask's earlier blocks, with nothing after the cursor (the
    session view's load-earlier folds on past a page to close its blocks: not into the future)."""

    def __init__(self, store: "EventStore", last_seq: int) -> None:
        self.store = store
        self.last_seq = last_seq

    async def subtask_events_before(self, sid: str, subtask_id: str, before: int, limit: int = 500) -> list[Any]:
        return await self.store.subtask_events_before(sid, subtask_id, min(before, self.last_seq + 1), limit=limit)

    async def subtask_events_after(self, sid: str, subtask_id: str, after: int, limit: int = 500) -> list[Any]:
        events = await self.store.subtask_events_after(sid, subtask_id, after, limit=limit)
        return [e for e in events if e.seq <= self.last_seq]

    async def current_subtask_at(self, sid: str, seq: int) -> Any:
        return await self.store.current_subtask_at(sid, seq)


class ReplayScreen(CSSSection, SessionPanes, Screen[None]):
    """``speed``: 1.0, 10.0 or None (max); ``at_seq``: open at that event, paused
    (else from the start, playing). ``clock``: real time, read once a frame."""

    CSS_SECTION = "replay"  # tui/css/replay.tcss

    BINDINGS = [
        Binding("space", "play", "Play", tooltip="Play from the moment shown"),
        Binding("space", "pause", "Pause", tooltip="Pause the replay"),
        Binding("1", "speed('1')", "1×", show=False, tooltip="Play at the real pace (long gaps cut to 5 s)"),
        Binding("2", "speed('10')", "10×", show=False, tooltip="Play ten times as fast"),
        Binding("3", "speed('max')", "Max", show=False, tooltip="Play as fast as the screen draws"),
        Binding("full_stop", "step(1)", "Step", tooltip="One event forward"),
        Binding("comma", "step(-1)", "Step back", tooltip="One event back"),
        Binding("right_square_bracket", "jump('attempt', 1)", "Attempt", tooltip="The next attempt"),
        Binding("left_square_bracket", "jump('attempt', -1)", "Previous attempt", show=False,
                tooltip="The previous attempt"),
        Binding("right_curly_bracket", "jump('tool', 1)", "Tool", tooltip="The next tool call"),
        Binding("left_curly_bracket", "jump('tool', -1)", "Previous tool call", show=False,
                tooltip="The previous tool call"),
        Binding("right", "scrub(0.01)", "Forward 1%", show=False, priority=True, tooltip="Scrub forward 1%"),
        Binding("left", "scrub(-0.01)", "Back 1%", show=False, priority=True, tooltip="Scrub back 1%"),
        Binding("shift+right", "scrub(0.1)", "Forward 10%", show=False, priority=True, tooltip="Scrub forward 10%"),
        Binding("shift+left", "scrub(-0.1)", "Back 10%", show=False, priority=True, tooltip="Scrub back 10%"),
        Binding("home", "edge(0)", "Start", show=False, priority=True, tooltip="The first event"),
        Binding("end", "edge(1)", "End", show=False, priority=True, tooltip="The last event"),
        Binding("u", "load_earlier", "Load earlier", show=False),
        Binding("escape,q", "back", "Back"),
    ]

    HELP_TITLE = "a replay"
    HELP_EXTRA = [("click", "A click on the timeline goes to that point"),
                  ("enter", "Expand or collapse the focused block (as in the session view)")]
    HELP_NOTE = ("A replay shows the session as it was at the moment on the timeline (REPLAY, its "
                 "date and time): countdowns, spinners and durations are those of that moment. "
                 "At 1× a wait longer than 5 s is cut short (\"gap skipped\"). Nothing in a replay "
                 "acts on the session.")

    def __init__(self, store: "EventStore", session_id: str, *, speed: float | None = 1.0,
                 at_seq: int | None = None, clock: Callable[[], float] = time.time,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.store = store
        self.session_id = session_id
        self.clock = clock
        self.at_seq = at_seq
        self.driver = ReplayDriver(session_id, speed=speed)
        self.selected: str | None = None
        self.auto_follow = True
        self.loaded = asyncio.Event()
        self.frames = 0
        self._last_real: float | None = None
        self._lock = asyncio.Lock()

    @property
    def model(self) -> m.SessionModel:
        return self.driver.model

    def compose(self) -> ComposeResult:
        yield SessionHeader(self.model.session, id="session-header")
        yield Timeline(self.driver, id="timeline")
        with Horizontal(id="session-body"):
            with SubtaskPane(id="subtask-pane"):
                yield SubtaskList(self.driver.clock, id="subtasks")
            yield ReplayStream(self.driver.clock, id="stream")
        yield StatusBar(self.model.session, self.driver.clock, id="status")
        yield KeyFooter(compact=True)

    @property
    def timeline(self) -> Timeline:
        return self.query_one(Timeline)

    # --- loading ---------------------------------------------------------------------------

    async def on_mount(self) -> None:
        try:
            await self._load_events()
        except Exception as exc:
            self.notify(f"could not load session {self.session_id}: {exc}", severity="error", markup=False)
        d = self.driver
        if not d.total:
            self.notify(f"no events in session {self.session_id}", severity="warning")
        start = d.index_of_seq(self.at_seq) if self.at_seq is not None else 0
        d.seek(start or 0)
        if self.at_seq is None:
            d.play()
        self.selected = self.model.default_subtask_id()
        await self._render_all()
        self.set_focus(self.subtask_list)
        await self.query_one(KeyFooter).build()
        self._last_real = self.clock()
        self.set_interval(FRAME_S, self.frame, name="replay-frame")
        self.loaded.set()

    async def _load_events(self) -> None:
        """Every event of the session so far, a page at a time."""
        after = 0
        while True:
            page = await self.store.events(self.session_id, after_seq=after, limit=PAGE)
            self.driver.extend(page)
            if len(page) < PAGE:
                return
            after = page[-1].seq

    # --- time --------------------------------------------------------------------------------

    async def frame(self) -> None:
        """One frame: the real time since the last one moves the replay (while playing)."""
        if self._lock.locked():  # a move is being drawn: its time is the next frame's
            return
        now = self.clock()
        dt = 0.0 if self._last_real is None else max(0.0, now - self._last_real)
        self._last_real = now
        if not self.driver.playing:
            return
        async with self._lock:
            self.frames += 1
            await self._show_move(self.driver.advance(dt))
            if not self.driver.playing:
                self.refresh_bindings()  # the end: space says Play again

    async def _move(self, moved: Moved | None, what: str = "") -> None:
        if moved is None:
            self.notify(f"no {what}", timeout=2)
            return
        self.driver.forget_gap()  # a person moved: no gap was skipped on the way here
        async with self._lock:
            await self._show_move(moved)
        self.refresh_bindings()

    async def _show_move(self, moved: Moved) -> None:
        try:
            if moved.rebuilt:  # a new model: everything again
                self.model.take_changes()
                await self._render_all()
            elif moved.changes:
                await self._render_changes(moved.changes)
            self._refresh_time()
        except Exception as exc:  # a display problem must not end the replay
            self.log.error("replay render failed", exc)
            self.notify(f"display error: {exc}", severity="error", markup=False)

    def _refresh_time(self) -> None:
        """The clock moved (with or without events): what reads it is redrawn."""
        self.timeline.refresh()
        self._sync_status()
        self.subtask_list.refresh_subtasks()
        for w in self.stream.widgets.values():
            if isinstance(w, BlockWidget) and w.animated():
                w.refresh()

    # --- drawing (as the session view does) ----------------------------------------------------

    def _sync_status(self) -> None:
        info = self.model.session
        tools = [tb.started_ts for st in self.model.subtasks.values() if st.state in m.ACTIVE_STATES
                 for tb in st.open_tools()] if info.is_live else []
        status = self.query_one(StatusBar)
        status.sync(info, live=info.is_live, read_only=True, waiting=self.model.waiting_retry() is not None,
                    tools=tools)
        self.query_one(SessionHeader).sync(info)

    async def _render_all(self) -> None:
        if self.selected is not None and (self.auto_follow or self.model.subtask(self.selected) is None):
            self.selected = self.model.default_subtask_id()
        elif self.selected is None:
            self.selected = self.model.default_subtask_id()
        self._sync_status()
        self.subtask_list.set_subtasks(self.model.ordered_subtasks(), self.selected)
        await self._show(self.selected)

    async def _render_changes(self, changes: m.Changes) -> None:
        await self._follow_changes(changes)

    async def _show(self, subtask_id: str | None) -> None:
        st = self.model.subtask(subtask_id)
        if st is not None and not st.blocks and st.has_earlier:
            await self._fetch_earlier(st)
            self.model.take_changes()
        await self.stream.show(st, more_events=bool(st and st.has_earlier))

    async def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        sid = self._chosen_subtask(event)
        if sid is None:
            return
        self.auto_follow = sid == self.model.default_subtask_id()
        async with self._lock:
            await self._show_subtask(sid)

    # --- earlier blocks (a subtask longer than the model's window) -------------------------------

    async def _fetch_earlier(self, st: m.SubtaskView) -> list[m.Block]:
        try:
            return await load_earlier_blocks(UpTo(self.store, self.driver.seq), self.model, st.id)  # type: ignore[arg-type]
        except Exception as exc:
            self.notify(f"could not load earlier events: {exc}", severity="error", markup=False)
            return []

    async def action_load_earlier(self) -> None:
        if self.stream.hidden_blocks:
            await self.stream.show_earlier()
            return
        st = self.model.subtask(self.selected)
        if st is None or not st.has_earlier:
            self.notify("this is the beginning of the subtask", timeout=2)
            return
        async with self._lock:
            blocks = await self._fetch_earlier(st)
            self.model.take_changes()
            if self.stream.subtask is st:
                await self.stream.drop_blocks(self.model.replaced)
                if blocks:
                    await self.stream.show_earlier(len(blocks))
                self.stream.set_more_events(st.has_earlier)

    async def on_earlier_bar_pressed(self, _: EarlierBar.Pressed) -> None:
        await self.action_load_earlier()

    async def on_stream_view_need_earlier(self, message: StreamView.NeedEarlier) -> None:
        if self.stream.hidden_blocks:
            await self.stream.show_earlier(fill=message.fill)
        if message.fill:
            self.stream.filled()

    # --- keys ------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "play":
            return not self.driver.playing
        if action == "pause":
            return self.driver.playing
        return True

    async def action_play(self) -> None:
        d = self.driver
        if d.at_end:
            await self._move(d.seek(0))  # from the start again
        d.play()
        self._last_real = self.clock()
        self.timeline.refresh()
        self.refresh_bindings()

    def action_pause(self) -> None:
        self.driver.pause()
        self.timeline.refresh()
        self.refresh_bindings()

    async def action_speed(self, name: str) -> None:
        self.driver.set_speed(SPEEDS.get(name, 1.0))
        if not self.driver.playing:
            await self.action_play()
        self.timeline.refresh()

    async def action_step(self, n: int) -> None:
        self.driver.pause()
        await self._move(self.driver.step(int(n)))

    async def action_jump(self, kind: str, direction: int) -> None:
        what = {"attempt": "attempt", "tool": "tool call"}.get(kind, kind)
        where = "next" if direction > 0 else "previous"
        await self._move(self.driver.jump(kind, int(direction)), f"{where} {what}")

    async def action_scrub(self, fraction: float) -> None:
        await self._move(self.driver.scrub(float(fraction)))

    async def action_edge(self, end: int) -> None:
        d = self.driver
        await self._move(d.seek(d.total - 1 if end else 0))

    async def on_timeline_seek(self, message: Timeline.Seek) -> None:
        message.stop()
        await self._move(self.driver.seek_fraction(message.fraction))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()
