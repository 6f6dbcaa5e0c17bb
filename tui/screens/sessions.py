"""The home screen: every stored session, newest first, live ones animated.

The list is a DataTable fed from ``store.list_sessions`` in pages of 200; it refreshes
(throttled) when the store commits and on a slow timer for sessions other processes
write. Cells are only rewritten when their text changes, so a busy store costs little.

The table's columns and cells are in tui.widgets.session_list; the "Needs you" inbox is
tui.widgets.inbox (which rows, their cells) and tui.screens.sessions_inbox (the screen's
side: filling it, answering from it); its keys and own actions are tui.screens.sessions_keys.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Label, Static

from shepherd.core.states import FINISHED_STATUSES, LIVE_STATUSES
from shepherd.core.text import safe
from shepherd.tui.fmt import fmt_tokens  # noqa: F401 - the one fmt_tokens (tests check it here)
from shepherd.tui.logging_setup import report_error
from shepherd.tui.screens.sessions_inbox import InboxMixin
from shepherd.tui.screens.sessions_keys import HomeKeysMixin
from shepherd.tui.screens.visibility import on_screen
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.footer import KeyFooter
from shepherd.tui.widgets.inbox import NeedsTable, row_needs
from shepherd.tui.widgets.inbox import inbox_rows, needs_text  # noqa: F401 - tests import them from here
from shepherd.tui.widgets.session_list import (BACKEND_MAX, TITLE_MAX, SessionTable, cell_texts,
                                               column_plan, safe_rows)
from shepherd.tui.widgets.session_list import fmt_usage  # noqa: F401 - tests read it here
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.store.rows import SessionRow

log = logging.getLogger("shepherd.tui.sessions")


class SessionsScreen(CSSSection, InboxMixin, HomeKeysMixin, Screen):
    """Home: the sessions list with a filter. Enter opens a session, r resumes one: the
    screen asks the app (``OpenRequested``, ``ResumeRequested``), which owns runs and views."""

    CSS_SECTION = "home"  # tui/css/home.tcss

    class OpenRequested(Message):
        """Open the session view of ``session_id`` (``at_seq``: at that event, a search hit)."""

        def __init__(self, session_id: str, at_seq: int | None = None) -> None:
            super().__init__()
            self.session_id = session_id
            self.at_seq = at_seq

    class ResumeRequested(Message):
        """Continue the (interrupted, failed or cancelled) session ``session_id`` in this process."""

        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    class ReplayRequested(Message):
        """Open ``session_id`` in replay mode (tui.screens.replay), from its start."""

        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    HELP_TITLE = "the sessions list"
    HELP_EXTRA = [
        ("tab/N", "Jump to the next session that needs you (the \"Needs you\" list on top)"),
        ("y / n", "In that list: approve / deny (with a reason) the call the session waits on"),
        ("r / s", "In that list: retry / skip the subtask it waits on"),
    ]
    HELP_NOTE = ("Type to filter: any other printable key goes to the filter (the keys above keep "
                 "their meaning; `/` first to type them too), `esc` clears it.")
    # the table has focus from the start (not the filter, Textual's first focusable): the
    # key bar's first build already shows the table's keys
    AUTO_FOCUS = "SessionTable"
    PAGE_SIZE = 200
    REFRESH_THROTTLE_S = 0.25
    SLOW_REFRESH_S = 2.0
    TICKS_PER_SECOND = 10  # the shared Ticker's rate: durations of live rows move once a second

    BINDINGS = [
        Binding("d", "app.demo", "Demo"),
        Binding("o", "app.run_file", "Task file"),
        Binding("g", "app.run_prompt", "Prompt"),
        # in the help and the palette (the footer of the home's snapshots stays as it was)
        Binding("n", "app.new_run", "New run", show=False, tooltip="Start a run (a task file or a prompt), in a worktree or not"),
        Binding("r", "resume", "Resume"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("tab,N", "next_needs", "Needs you", show=False,  # the inbox's title says it
                tooltip="Jump to the next session that needs you"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("down", "focus_table", show=False),
        # last: the help's rows above it keep their places (the browser test reads one near the top)
        Binding("R,shift+r", "replay", "Replay", show=False, tooltip="Replay the highlighted session as it happened"),
        Binding("t", "stats", "Stats", show=False, tooltip="Tokens, cost and retry waste per day: a chart"),
        Binding("s", "search", "Search", show=False,
                tooltip="Search every session's text, tool calls, errors and notes; Enter opens the hit"),
    ]

    def __init__(self, store: EventStore, *, clock: Callable[[], float] = time.time,
                 live_ids: Callable[[], set[str]] | None = None, db_label: str | None = None,
                 covered: bool = False) -> None:
        """``covered``: a session view opens over this screen at once (start-up): it is
        built (composed, loaded, its key bar made) by ``build()`` once that view is drawn,
        or when it first shows, not before the view's first frame."""
        super().__init__(classes="-no-needs")  # the inbox shows once a session needs someone
        self.store = store
        self.clock = clock
        self.db_label = safe(db_label if db_label is not None else str(getattr(store, "path", "")))  # (shown)
        self._live_ids = live_ids or (lambda: set())
        self.rows: list[SessionRow] = []
        self.filter_text = ""
        self.has_more = False
        self._cells: dict[str, dict[str, str]] = {}  # row id -> column -> plain text shown
        self._worktree_ids: set[str] = set()  # sessions whose worktree is still there
        self.inbox: list[SessionRow] = []  # sessions waiting for a person, longest wait first
        self._inbox_cells: dict[str, dict[str, str]] = {}
        self._visible_columns: list[tuple[str, str, int]] = []
        self._frame = 0
        self._dirty = False
        self._reload_pending = False
        self._loading_more = False
        self._unsubscribe: Callable[[], None] | None = None
        self._ticking = False
        self._first_built = False
        self.loaded = False  # becomes True after the first load, every row in (tests wait on it)
        self._rest_pending = False  # rows of the first load still to add after the first frame
        self._suspended = False  # another screen has been over this one
        self._built = not covered  # composed with its widgets (else empty until build())
        self._building = False

    # --- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if not self._built:
            return
        yield Static("Shepherd", id="title-bar")
        with Horizontal(id="filter-bar"):
            yield Label("/ filter")
            yield Input(placeholder="just type: title, id, backend…", id="filter", compact=True,
                        select_on_focus=False)
        yield NeedsTable(id="needs", cursor_type="row", zebra_stripes=False, show_header=False)
        yield SessionTable(id="sessions", cursor_type="row", zebra_stripes=False)
        yield Static("", id="empty")
        yield KeyFooter()

    @property
    def table(self) -> SessionTable:
        return self.query_one(SessionTable)

    async def on_mount(self) -> None:
        if self._built:
            await self._set_up()

    async def build(self) -> None:
        """Compose and load a screen made ``covered`` (at once if it is not built yet)."""
        if self._built or self._building or not self.is_attached:
            return
        self._building = True
        try:
            self._built = True
            await self.recompose()
        finally:
            self._building = False
        await self._set_up()

    async def _set_up(self) -> None:
        self._build_columns(self.size.width or self.app.size.width)
        # focused now, not on the next message: the first paint already has the focused
        # look (each cell is drawn once, not again when focus arrives)
        self.set_focus(self.table)
        if hasattr(self.store, "subscribe"):
            self._unsubscribe = self.store.subscribe(self._on_commit)
        self.set_interval(self.SLOW_REFRESH_S, self._slow_refresh, name="slow-refresh")
        await self.reload()
        await self.query_one(KeyFooter).build()  # the first frame has the keys

    def on_unmount(self) -> None:
        self._set_ticking(False)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_screen_suspend(self) -> None:
        self._set_ticking(False)
        self._suspended = True

    def on_screen_resume(self) -> None:
        if not self._built:
            if self._suspended:  # back before its build came: build it now
                self.call_later(self.build)
            return
        if self._suspended:  # back from another screen: the first frame's callback may have
            self._add_rest()  # gone to a screen replaced since (not on the first resume: too early)
        self._set_ticking(any(r.status in LIVE_STATUSES for r in self.rows))
        if self.loaded:
            self.request_reload()

    def on_resize(self) -> None:
        if self._built and not self._building and self._column_plan(self.size.width) != self._visible_columns:
            self._build_columns(self.size.width)
            self._rebuild()

    TITLE_MAX = TITLE_MAX  # (tui.widgets.session_list) beyond this, spare width goes to backend/model first
    BACKEND_MAX = BACKEND_MAX

    def _column_plan(self, width: int) -> list[tuple[str, str, int]]:
        return column_plan(width, self.TITLE_MAX, self.BACKEND_MAX)

    def _build_columns(self, width: int) -> None:
        self._visible_columns = self._column_plan(width)
        table = self.table
        table.clear(columns=True)
        self._cells.clear()
        for key, label, w in self._visible_columns:
            table.add_column(label, width=w, key=key)
        self._build_inbox_columns(width)

    # --- data ------------------------------------------------------------------------------------

    def _on_commit(self, events: list[Any]) -> None:
        # Called by the store after each commit: just mark dirty, reloads are throttled.
        self.request_reload()

    def request_reload(self) -> None:
        self._dirty = True
        if self._reload_pending or not self.is_attached or not on_screen(self):
            return  # hidden under a session view: reloaded when shown again (on_screen_resume)
        self._reload_pending = True
        self.set_timer(self.REFRESH_THROTTLE_S, self._throttled_reload, name="reload")

    async def _throttled_reload(self) -> None:
        self._reload_pending = False
        if self._dirty and on_screen(self):
            await self.reload()

    async def _slow_refresh(self) -> None:
        if on_screen(self):
            await self.reload()

    async def reload(self) -> None:
        """Re-read the loaded window (first page, or as many rows as are loaded)."""
        self._dirty = False
        limit = max(self.PAGE_SIZE, len(self.rows))
        try:
            # one row past the window says whether there is more (a full window alone cannot)
            rows = safe_rows(await self.store.list_sessions(text=self.filter_text or None, limit=limit + 1,
                                                             offset=0))
            # the inbox is every session that needs someone, whatever the filter shows
            unfiltered = safe_rows(await self.store.list_sessions(limit=self.PAGE_SIZE, offset=0)) \
                if self.filter_text else None
            # once per refresh, not per row: which sessions still hold a worktree
            self._worktree_ids = {w.session_id for w in await self.store.worktrees(state="active")}
        except Exception as error:  # noqa: BLE001 - keep the list usable, say what went wrong
            report_error(self.app, error, "Could not list sessions")
            return
        self.has_more = len(rows) > limit
        rows = rows[:limit]
        self._apply(rows, inbox_from=unfiltered)
        self.loaded = self.loaded or not self._rest_pending  # (else once the rest is in)

    async def load_more(self) -> None:
        if not self.has_more or self._loading_more:
            return
        self._loading_more = True
        self._add_rest()  # rows still waiting from the first build go first
        try:
            rows = safe_rows(await self.store.list_sessions(text=self.filter_text or None,
                                                             limit=self.PAGE_SIZE + 1, offset=len(self.rows)))
            self.has_more = len(rows) > self.PAGE_SIZE
            rows = rows[:self.PAGE_SIZE]
            known = {r.id for r in self.rows}
            fresh = [r for r in rows if r.id not in known]
            if fresh:
                self.rows.extend(fresh)
                for row in fresh:
                    self._add_row(row)
            self._update_chrome()
        except Exception as error:  # noqa: BLE001
            report_error(self.app, error, "Could not load more sessions")
        finally:
            self._loading_more = False

    def _apply(self, rows: list["SessionRow"], inbox_from: list["SessionRow"] | None = None) -> None:
        self._update_inbox(rows if inbox_from is None else inbox_from)
        if [r.id for r in rows] == [r.id for r in self.rows]:
            self.rows = rows
            for row in rows:
                self._update_row(row)
        else:
            self.rows = rows
            self._rebuild()
        self._update_chrome()

    def _rebuild(self) -> None:
        table = self.table
        keep = self.highlighted_id()
        table.clear()
        self._cells.clear()
        rows = self.rows
        if not self._first_built:
            # The first frame needs only what fits on the screen: the rest of the page
            # follows right after it is drawn (each row added costs the first paint).
            self._first_built = True
            rows = rows[:max(self.app.size.height, self.size.height, 1)]
            if len(rows) < len(self.rows):
                # through the app: its queue is read once start-up's batch of updates is
                # drawn (the screen's own would run this before the first frame)
                self._rest_pending = True
                self.app.call_after_refresh(self._add_rest)
        for row in rows:
            self._add_row(row)
        if keep is not None and keep in self._cells:
            table.move_cursor(row=table.get_row_index(keep), animate=False)

    def _add_rest(self) -> None:
        """The loaded rows the first build left out, in order after those it put in."""
        if not self._rest_pending:
            return
        self._rest_pending = False
        for row in self.rows:
            if row.id not in self._cells:
                self._add_row(row)
        self.loaded = True

    # --- cells ---------------------------------------------------------------------------------------

    def _cell_texts(self, row: "SessionRow", now: float) -> dict[str, Text]:
        return cell_texts(row, now, frame=self._frame, in_process=row.id in self._live_ids(),
                          awaits_approval=row_needs(row) == "approval",
                          worktree=row.id in self._worktree_ids and row.status in FINISHED_STATUSES)

    def _add_row(self, row: "SessionRow") -> None:
        cells = self._cell_texts(row, self.clock())
        keys = [k for k, _, _ in self._visible_columns]
        self.table.add_row(*(cells[k] for k in keys), key=row.id)
        self._cells[row.id] = {k: cells[k].plain + str(cells[k].style) for k in keys}

    def _update_row(self, row: "SessionRow", only: tuple[str, ...] | None = None) -> None:
        shown = self._cells.get(row.id)
        if shown is None:
            return
        cells = self._cell_texts(row, self.clock())
        for key in only or tuple(shown):
            sig = cells[key].plain + str(cells[key].style)
            if shown.get(key) != sig:
                shown[key] = sig
                self.table.update_cell(row.id, key, cells[key])

    def _set_ticking(self, on: bool) -> None:
        """Spinners and live durations ride the app's one Ticker, only while needed."""
        if on == self._ticking:
            return
        self._ticking = on
        ticker = Ticker.of(self.app)
        ticker.add(self) if on else ticker.discard(self)

    def tick(self, frame: int) -> None:
        if not on_screen(self):
            return
        self._frame = frame
        each_second = frame % self.TICKS_PER_SECOND == 0
        for row in self.rows:
            if row.status in LIVE_STATUSES:
                self._update_row(row, None if each_second else ("status",))
        if each_second and self.inbox:
            now = self.clock()
            for row in self.inbox:
                self._update_inbox_row(row, now)

    def _update_chrome(self) -> None:
        live = sum(1 for r in self.rows if r.status in LIVE_STATUSES)
        self._set_ticking(live > 0 and on_screen(self))
        more = "+" if self.has_more else ""
        db = self.db_label
        one = len(self.rows) == 1 and not more
        counts = f"{len(self.rows)}{more} session{'' if one else 's'}"
        if self.filter_text:  # the rows shown, not what the database holds
            counts += f" {'matches' if one else 'match'} the filter"
        if live:
            counts += f" · {live} live"
        bar = Text.assemble(("Shepherd", "bold"), "  ", counts)
        if db:
            bar.append(f"  {db}", style="dim")
        bar.truncate(max(10, self.size.width - 2), overflow="ellipsis")
        self.query_one("#title-bar", Static).update(bar)
        empty = not self.rows
        self.set_class(empty, "-empty")
        if empty:
            if self.filter_text:
                msg = f"No sessions match “{safe(self.filter_text)}”. Press Esc to clear the filter."
            else:
                msg = ("No sessions yet.\n\n"
                       "Press d to watch the offline demo (no API key needed),\n"
                       "o to run a task file, g to run a prompt, ? for help.")
            self.query_one("#empty", Static).update(Text(msg))  # the filter is text, not markup

    # --- queries used by actions and tests ----------------------------------------------------------

    def highlighted_id(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - cursor outside the rows
            return None
        return key.value if key is not None else None

    def highlighted_row(self) -> "SessionRow | None":
        sid = self.highlighted_id()
        return next((r for r in self.rows if r.id == sid), None)

    def row_ids(self) -> list[str]:
        return [r.id for r in self.rows]

    # --- events (its keys and own actions: tui.screens.sessions_keys) -----------------------------

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.run_worker(self.reload(), group="sessions-load", exclusive=True, exit_on_error=False)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.table.focus()

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value:
            self.post_message(self.OpenRequested(event.row_key.value))

    @on(DataTable.RowHighlighted)
    async def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()
        if event.data_table is not self.table:
            self._inbox_title()  # the inbox: its keys follow the highlighted row
            return
        if self.has_more and event.cursor_row >= self.table.row_count - 5:
            await self.load_more()

    @on(SessionTable.NearEnd)
    async def _near_end(self) -> None:
        await self.load_more()
