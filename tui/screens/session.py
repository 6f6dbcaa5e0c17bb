"""The session screen: one session, live or past, rendered from its events.

Layout: header / subtask list (left) + stream of the selected subtask (right) /
status bar / footer. Events from the feed are buffered and applied to the model and
the widgets at most once per frame (~30 fps), so a burst of deltas costs one update.
While another screen hides this one, events still go into the model but the widgets
wait: what changed meanwhile is rendered once, when the screen shows again. Switching
subtasks and applying a frame take turns (one lock), so a frame never lands in a
stream that is being replaced.
Controls go through ``core.control.Controller``; a session nobody runs is read-only,
but can be resumed here: the screen posts ``ResumeRequested`` and the app starts the run.
The controls and approvals are in tui.screens.session_controls, the `e` export in
tui.screens.session_export, opening at one event (``at_seq``, a search hit, `/`) in
tui.screens.session_jump.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import OptionList

from shepherd.tui import model as m
from shepherd.tui.feed import FeedEvents, History, StaticFeed, make_feed
from shepherd.tui.history import load_earlier_blocks
from shepherd.tui.screens.session_panes import SessionPanes
from shepherd.tui.screens.session_controls import ControlsMixin
from shepherd.tui.screens.session_controls import NO_CONTROLS, READ_ONLY  # noqa: F401 - the texts: here too
from shepherd.tui.screens.session_export import export_session
from shepherd.tui.screens.session_jump import JumpMixin
from shepherd.tui.screens.visibility import on_screen
from shepherd.tui.widgets import markdown as md
from shepherd.tui.widgets.footer import KeyFooter
from shepherd.tui.widgets.status import SessionHeader, StatusBar
from shepherd.tui.widgets.stream import EarlierBar, StreamView
from shepherd.tui.widgets.subtasks import SubtaskList, SubtaskPane
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from shepherd.core.control import Controller
    from shepherd.core.events import Event
    from shepherd.core.store.protocol import EventStore

FRAME_S = 1 / 30


class SessionScreen(CSSSection, JumpMixin, ControlsMixin, SessionPanes, Screen[None]):
    """``follow``: "local" (the run is in this process: store.subscribe), "tail" (another
    process: store.tail) or None (history only). ``clock`` is read for every countdown,
    spinner duration and elapsed time (snapshot tests freeze it). ``at_seq``: open at that
    event (its subtask selected, its block on screen and marked) instead of the tail."""

    CSS_SECTION = "session"  # tui/css/session.tcss

    # The footer shows what each key does now and hides what cannot be done (check_action);
    # p is "Pause" or "Resume", whichever applies.
    BINDINGS = [
        # a tool call waiting for approval: shown only while one waits (n is "Deny" then;
        # the retry countdown's n otherwise)
        # (short words: with them the bar still fits 80 columns; the block spells them out)
        Binding("y", "approve", "Yes", tooltip="Approve the tool call waiting for you"),
        Binding("n", "deny", "No", tooltip="Deny the tool call waiting for you (with an optional reason)"),
        # the block under the call says "a approve <tool> for this session": the bar fits 80 columns
        Binding("a", "approve_session", "Approve tool", show=False,
                tooltip="Approve this call and its tool for the rest of the session"),
        Binding("p", "pause", "Pause", tooltip="Pause at the next safe point"),
        Binding("p", "resume", "Resume", tooltip="Resume the run"),
        Binding("P,shift+p", "pause_now", "Pause now", show=False, tooltip="Pause at once (interrupts open calls)"),
        # shown by the retry banner itself ("n: retry now"), so the footer fits 80 columns
        Binding("n", "retry_now", "Retry now", show=False, tooltip="Skip the retry countdown"),
        Binding("r", "retry", "Retry", tooltip="Retry the selected subtask"),
        Binding("s", "skip", "Skip", tooltip="Skip the selected subtask"),
        Binding("c", "cancel", "Cancel", tooltip="Cancel the run"),
        Binding("m", "note", "Note", tooltip="Send a note for the agent's next prompt"),
        Binding("j", "next_block", "Next block", show=False, tooltip="Focus the next tool call or thought"),
        Binding("k", "previous_block", "Previous block", show=False,
                tooltip="Focus the previous tool call or thought"),
        Binding("o", "open_output", "Output", tooltip="The focused tool call (else the last one) in full"),
        # a worktree session's changes (in the help and the palette: the footer fits 80 columns)
        Binding("d", "diff", "Diff", show=False, tooltip="What the selected subtask changed (worktree sessions)"),
        Binding("D,shift+d", "diff_session", "Session diff", show=False,
                tooltip="What the whole session changed (worktree sessions)"),
        Binding("e", "export", "Export", show=False,  # in the help and the palette: the footer fits 80 columns
                tooltip="Write the session to a file next to the database"),
        Binding("u", "load_earlier", "Load earlier", show=False),
        Binding("R,shift+r", "replay", "Replay", show=False, tooltip="Replay this session from its start"),
        Binding("slash", "search", "Search", show=False,
                tooltip="Search this session's text, tool calls, errors and notes; Enter jumps there"),
        Binding("escape,q", "back", "Back"),
    ]

    HELP_TITLE = "a session"
    HELP_EXTRA = [("enter", "Expand or collapse the focused block (▸ folded, ▾ open); a click does too"),
                  ("d / D", "A worktree session's diff: of the selected subtask / of the whole session "
                            "(files left, the patch right; r refreshes)"),
                  ("y / n / a", "A tool call waits for your approval: approve it, deny it (with an optional "
                                "reason), or approve it and its tool for the rest of the session")]
    HELP_NOTE = "The footer shows the keys that apply right now; `j`/`k` reach the tool calls."
    PAGE_SIZE = 500  # events loaded on open (a screenful of blocks and more), and per "load earlier"

    class ResumeRequested(Message):
        """Continue this session (nobody runs it) in this process, or (``retry_subtask``)
        run one subtask of a finished session again. The app starts the run and opens its
        view; when nothing started it calls the screen's ``resume_refused``."""

        def __init__(self, screen: "SessionScreen", session_id: str, retry_subtask: str | None = None,
                     *, clean: bool = False) -> None:
            super().__init__()
            self.screen = screen
            self.session_id = session_id
            self.retry_subtask = retry_subtask
            self.clean = clean  # a worktree session's files restored to the subtask's start first

        @property
        def control(self) -> "SessionScreen":
            return self.screen

    class ReplayRequested(Message):
        """Open this session in replay mode from its start (the app pushes the replay)."""

        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    def __init__(self, store: "EventStore", session_id: str, *, controller: "Controller | None" = None,
                 follow: str | None = None, clock: Callable[[], float] = time.time, at_seq: int | None = None,
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        if follow not in ("local", "tail", None):
            raise ValueError(f"follow must be 'local', 'tail' or None, not {follow!r}")
        self.store = store
        self.session_id = session_id
        self.controller = controller
        self.follow = follow
        self.clock = clock
        self.at_seq = at_seq
        self.model = m.SessionModel(session_id)
        self.feed: StaticFeed = make_feed(store, session_id, follow, page_size=self.PAGE_SIZE)
        self.history: History | None = None
        self.selected: str | None = None
        self.auto_follow = True  # show whichever subtask is active until the user picks one
        self.loaded = asyncio.Event()
        self.frames = 0  # widget updates done (one per frame with events, while shown)
        self._deferred = m.Changes()  # applied to the model while hidden, not rendered yet
        self._flush_scheduled = False
        self._lock = asyncio.Lock()
        self._busy = False  # a resume this screen asked for is starting
        self._keys_state: tuple[Any, ...] | None = None
        self._ready = False  # the widgets show the loaded session: the keys follow its state

    # --- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SessionHeader(self.model.session, id="session-header")
        with Horizontal(id="session-body"):
            with SubtaskPane(id="subtask-pane"):
                yield SubtaskList(self.clock, id="subtasks")
            yield StreamView(self.clock, id="stream")
        yield StatusBar(self.model.session, self.clock, follow=self.follow, id="status")
        yield KeyFooter(compact=True)  # every key that applies fits 80 columns

    @property
    def status_bar(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def live(self) -> bool:
        return self.model.session.is_live

    @property
    def controllable(self) -> bool:
        return self.controller is not None and self.live

    # --- loading and live updates -------------------------------------------------------------

    async def on_mount(self) -> None:
        try:
            self.history = await self.feed.open()
        except Exception as exc:
            self.notify(f"could not load session {self.session_id}: {exc}", severity="error", markup=False)
            self.history = History(None)
        h = self.history
        if h.session is None and not h.events and self.follow is None:
            # A followed session may not have committed its first event yet (a run just
            # started here or elsewhere): its feed delivers it, the status says "starting…".
            self.notify(f"no session {self.session_id} in the database", severity="warning")
        self.model = m.SessionModel.from_history(h.session, h.subtasks, h.events, session_id=self.session_id,
                                                 costs=h.costs)
        if getattr(h.session, "needs", None) == "approval" and self.live and not self.model.pending_approvals():
            await self._load_awaiting()
        self.selected = self.model.default_subtask_id()
        # at_seq: the event's subtask is selected from the start, and its tail is never
        # mounted for nothing (the window at the event is shown instead)
        target = await self._jump_target(self.at_seq) if self.at_seq is not None else None
        if target is not None:
            self.selected = target[1].id
        await self._render_all(show=target is None)
        if target is not None and not await self._jump_show(self.at_seq, *target):
            await self._show(self.selected)
        self._ready = True
        # focused now (not on the next message) and the key bar built from that state:
        # the first frame has the keys that apply, not a bar that fills in a frame later
        if self.focused is None:  # (a block opened at takes the focus)
            self.set_focus(self.subtask_list)
        await self.query_one(KeyFooter).build()
        self.feed.start(self)
        self.loaded.set()
        self.call_after_refresh(md.preload)  # its first message finds markdown-it imported

    async def _load_awaiting(self) -> None:
        """The calls waiting for approval whose question is older than the loaded page."""
        try:
            rows = await self.store.tool_calls(self.session_id, status="awaiting")
        except Exception as exc:  # the view still works without them (the home's inbox answers)
            self.log.warning("could not load the calls awaiting approval", exc)
            return
        self.model.load_awaiting_calls(rows)

    @property
    def events_received(self) -> int:
        return self.feed.received

    @property
    def _pending(self) -> list["Event"]:
        """Delivered by the feed, not applied to the model yet."""
        return self.feed.inbox

    def on_feed_events(self, _: FeedEvents) -> None:
        """New events wait in the feed: one flush for the next frame."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.set_timer(FRAME_S, self._flush, name="session-flush")

    async def _flush(self) -> None:
        self._flush_scheduled = False
        async with self._lock:
            if self._pending:
                self._deferred.merge(self.model.apply(self.feed.take()))
            if not self._deferred or not self.shown:
                return  # hidden: the widgets catch up once, when the screen shows again
            changes, self._deferred = self._deferred, m.Changes()
            self.frames += 1
            try:
                await self._render_changes(changes)
            except Exception as exc:  # a display problem must not kill the live view
                self.log.error("session render failed", exc)
                self.notify(f"display error: {exc}", severity="error", markup=False)

    @property
    def shown(self) -> bool:
        """On screen: the top screen, or under one that lets it show through (a modal)."""
        return on_screen(self)

    def on_screen_resume(self) -> None:
        if self._deferred or self._pending:
            self.call_later(self._flush)

    async def flush_now(self) -> None:
        """Apply whatever is buffered at once (tests; shutting down)."""
        await self._flush()

    async def _render_all(self, show: bool = True) -> None:
        info = self.model.session
        self.query_one(SessionHeader).sync(info)
        self._sync_status()
        self.subtask_list.set_subtasks(self.model.ordered_subtasks(), self.selected)
        if show:
            await self._show(self.selected)

    def _sync_status(self) -> None:
        self.status_bar.sync(self.model.session, live=self.live, read_only=not self.controllable,
                             waiting=self.model.waiting_retry() is not None, tools=self._open_tool_starts())
        self._refresh_keys()

    def _refresh_keys(self) -> None:
        """What p, r, s... can do follows the state; the footer is rebuilt only when that
        changes (not on every frame of a stream)."""
        info = self.model.session
        state = (info.status, info.pause_requested, self.controllable, self._busy, self.selected,
                 self.model.waiting_retry() is not None, self._tool_target() is not None,
                 info.approvals_waiting)
        if state != self._keys_state:
            self._keys_state = state
            self.refresh_bindings()

    def _open_tool_starts(self) -> list[float | None]:
        """Start times of the tool calls open now (only active subtasks can have any)."""
        if not self.live:
            return []
        return [tb.started_ts for st in self.model.subtasks.values() if st.state in m.ACTIVE_STATES
                for tb in st.open_tools()]

    async def _render_changes(self, changes: m.Changes) -> None:
        if changes.session or changes.subtasks:
            self.query_one(SessionHeader).sync(self.model.session)
            self._sync_status()
        await self._follow_changes(changes)

    async def _select(self, subtask_id: str | None) -> None:
        """Show another subtask (a person's choice): never while a frame is applied."""
        async with self._lock:
            # what is buffered goes into the model first, so the new stream shows it
            if self._pending:
                self._deferred.merge(self.model.apply(self.feed.take()))
            await self._show_subtask(subtask_id)
            if self._deferred:  # the rest of the frame (status, list) follows at once
                self.call_later(self._flush)

    async def _show(self, subtask_id: str | None) -> None:
        """The tail of a subtask; one with nothing loaded (all of it older than the page
        read on open, or pruned) gets its last page from the store first."""
        st = self.model.subtask(subtask_id)
        if st is not None and not st.blocks and st.has_earlier:
            try:
                await load_earlier_blocks(self.store, self.model, st.id, page=self.PAGE_SIZE)
            except Exception as exc:
                self.notify(f"could not load earlier events: {exc}", severity="error", markup=False)
            self.model.take_changes()  # nothing else is shown yet: show() mounts them
        await self.stream.show(st, more_events=bool(st and st.has_earlier))

    async def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        sid = self._chosen_subtask(event)
        if sid is None:
            return
        self.auto_follow = sid == self.model.default_subtask_id()
        await self._select(sid)

    async def on_earlier_bar_pressed(self, _: EarlierBar.Pressed) -> None:
        await self.action_load_earlier()

    async def on_stream_view_need_earlier(self, message: StreamView.NeedEarlier) -> None:
        if message.fill:
            if await self._load_earlier(fill=True):
                self.stream.filled()
        elif not self._lock.locked():
            await self._load_earlier()

    async def on_unmount(self) -> None:
        try:
            await self.feed.close()
        except Exception:
            pass

    # --- paging back ---------------------------------------------------------------------

    async def action_load_earlier(self) -> None:
        await self._load_earlier()

    async def _load_earlier(self, fill: bool = False) -> bool:
        """Show hidden blocks of this subtask, else re-load its page of blocks before
        (from the store: pruned, or older than the page read on open). ``fill``: the
        view is not full yet (nothing moves). False if that failed."""
        if self.stream.hidden_blocks:
            await self.stream.show_earlier(fill=fill)
            return True
        st = self.model.subtask(self.selected)
        if st is None or not st.has_earlier:
            if not fill:
                self.notify("this is the beginning of the session")
            return True
        async with self._lock:
            try:
                blocks = await load_earlier_blocks(self.store, self.model, st.id, page=self.PAGE_SIZE)
            except Exception as exc:
                self.notify(f"could not load earlier events: {exc}", severity="error", markup=False)
                return False
            changes = self.model.take_changes()  # only what the page touched
            if self.model.first_seq is not None and (self.feed.first_seq is None
                                                     or self.model.first_seq < self.feed.first_seq):
                self.feed.first_seq = self.model.first_seq
            if self.stream.subtask is st:
                await self.stream.drop_blocks(self.model.replaced)
                if blocks:
                    await self.stream.show_earlier(len(blocks), fill=fill)
                self.stream.set_more_events(st.has_earlier)
            if changes.subtasks:
                self.subtask_list.refresh_subtasks(changes.subtasks)
        return True

    # --- moving through the stream ---------------------------------------------------------

    def action_next_block(self) -> None:
        self._move_block(+1)

    def action_previous_block(self) -> None:
        self._move_block(-1)

    def _move_block(self, step: int) -> None:
        """Focus the next/previous tool call or thought (from the list: the first one on
        screen, or the last one). Focus scrolls it into view."""
        stream = self.stream
        blocks = stream.focusable_blocks()
        if not blocks:
            self.notify("no tool calls or thoughts in this subtask", timeout=2)
            return
        focused = self.focused
        if focused in blocks:
            i = max(0, min(len(blocks) - 1, blocks.index(focused) + step))
        elif step > 0:
            top = stream.region.y
            i = next((n for n, w in enumerate(blocks) if w.region.height and w.region.y >= top), len(blocks) - 1)
        else:
            i = len(blocks) - 1
        blocks[i].focus()
        stream.call_after_refresh(stream.resume_following_at_end)

    def _tool_target(self) -> Any:
        from shepherd.tui.widgets.blocks import ToolCallView

        if not self._ready:
            return None
        if isinstance(self.focused, ToolCallView):
            return self.focused
        return next((w for w in reversed(list(self.stream.widgets.values())) if isinstance(w, ToolCallView)), None)

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()  # Enter/o say what they do on the focused block

    async def action_open_output(self) -> None:
        from shepherd.tui.screens.tool_output import ToolOutputScreen, load_call

        target = self._tool_target()
        if target is None:
            self.notify("no tool call in this subtask", timeout=2)
            return
        data, output = await load_call(self.store, self.session_id, target.block)
        await self.app.push_screen(ToolOutputScreen(target.block, data, output))

    async def action_export(self) -> None:
        try:
            path = await export_session(self.store, self.session_id)
        except Exception as exc:
            self.notify(f"export failed: {exc}", severity="error", markup=False)
            return
        self.last_export = path
        self.notify(f"exported to {path}", markup=False)

    def action_replay(self) -> None:
        self.post_message(self.ReplayRequested(self.session_id))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        else:
            self.app.exit()

    def _label(self, sid: str | None) -> str:
        st = self.model.subtask(sid) if sid is not None else self.model.subtask(self.model.current_subtask_id)
        return st.label if st is not None else "current subtask"
