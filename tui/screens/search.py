"""The search screen: full-text search over every session (the home's ``s``) or over one
(the session view's ``/``), on ``store.search`` (core.store.search).

Typing runs the query ~150 ms after the last key (a timer the screen schedules through
``schedule``, which tests replace), Enter at once. Each query runs in a worker (the store's
read is async: the event loop never waits for it) and carries a number: results arrive in
any order, and only those of the newest query asked are shown. Enter (or a click) on a hit
dismisses the screen with that hit: the home opens its session at the hit's event, the
session view jumps there (tui.screens.session_jump)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList, Static

from shepherd.core.store.search import terms
from shepherd.core.text import clip, safe
from shepherd.tui.widgets.search_results import SearchResults
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.store.search import SearchHit

DEBOUNCE_S = 0.15
LIMIT = 50
Schedule = Callable[[float, Callable[[], Any]], Any]  # (delay, callback) -> something with .stop()


class SearchScreen(CSSSection, Screen["SearchHit | None"]):
    """``session_id``: search only that session (its title in the screen's title)."""

    CSS_SECTION = "search"  # tui/css/search.tcss

    HELP_TITLE = "search"
    HELP_NOTE = ("Every word must occur in the event (text, thinking, a tool's input or output, an error, "
                 "a note); quotes, `-` and `*` are plain text. The most recently stored come first.")
    AUTO_FOCUS = "#search-query"
    BINDINGS = [
        Binding("escape", "close", "Back", tooltip="Close the search"),
        Binding("down", "focus_results", "Hits", show=False, tooltip="Move from the query to the hits"),
        Binding("slash", "focus_query", "Query", show=False, tooltip="Back to the query"),
    ]

    def __init__(self, store: "EventStore", *, session_id: str | None = None, session_title: str | None = None,
                 clock: Callable[[], float] = time.time, query: str = "", schedule: Schedule | None = None,
                 debounce_s: float = DEBOUNCE_S, limit: int = LIMIT) -> None:
        super().__init__()
        self.store = store
        self.session_id = session_id
        self.session_title = session_title
        self.clock = clock
        self.query_text = query
        self.debounce_s = debounce_s
        self.limit = limit
        self._schedule: Schedule = schedule or (lambda delay, fn: self.set_timer(delay, fn, name="search-debounce"))
        self._timer: Any = None
        self._asked = 0  # the number of the newest query asked; results of an older one are dropped
        self.shown_query: str | None = None  # whose results (or message) the list shows now
        self.searches = 0  # queries sent to the store (tests)
        self._titles: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="search-title")
        yield Input(value=self.query_text, placeholder="words to look for…", id="search-query", compact=True,
                    select_on_focus=False)
        yield Static(Text("type words to search; Enter opens a hit", style="dim"), id="search-status")
        yield SearchResults(self.clock, id="search-results")
        yield Footer()

    def _title(self) -> Text:
        title = Text("Search ", style="bold")
        if self.session_id is None:
            title.append("all sessions", style="bold")
        else:
            title.append("this session: ", style="bold")
            title.append(clip(safe(self.session_title or ""), 60) or "(untitled)")
            title.append(f"  {safe(self.session_id)}", style="dim")
        return title

    @property
    def results(self) -> SearchResults:
        return self.query_one(SearchResults)

    def on_mount(self) -> None:
        if self.query_text.strip():
            self.run_query(self.query_text)

    # --- queries -----------------------------------------------------------------------

    @on(Input.Changed, "#search-query")
    def _changed(self, event: Input.Changed) -> None:
        if event.value == self.query_text:
            return
        self.query_text = event.value
        self._cancel_timer()
        self._timer = self._schedule(self.debounce_s, self._debounced)

    @on(Input.Submitted, "#search-query")
    def _submitted(self, event: Input.Submitted) -> None:
        self._cancel_timer()
        self.query_text = event.value
        if self.results.hits and self.shown_query == event.value.strip():
            self.results.focus()  # Enter again: to the hits
            return
        self.run_query(event.value)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()

    def _debounced(self) -> None:
        self._timer = None
        self.run_query(self.query_text)

    def run_query(self, text: str) -> None:
        """Ask the store for ``text`` (in a worker); what an older query brings is dropped."""
        self._asked += 1
        number, text = self._asked, text.strip()
        if not text:
            self._show([], "", Text("type words to search; Enter opens a hit", style="dim"))
            return
        if not terms(text):
            self._show([], text, Text.assemble("nothing to look for in ", (clip(safe(text), 40), "bold"),
                                               ": type letters or digits"))
            return
        self._status(Text("searching…", style="dim"))
        self.run_worker(self._search(number, text), group="search", exit_on_error=False)

    async def _search(self, number: int, text: str) -> None:
        self.searches += 1
        try:
            hits = await self.store.search(text, session_id=self.session_id, limit=self.limit)
            await self._load_titles(hits)
        except Exception as exc:  # noqa: BLE001 - the screen says it and stays usable
            if number == self._asked:
                self._show([], text, Text(f"search failed: {clip(safe(str(exc)), 100)}", style="red"))
            return
        if number != self._asked:
            return  # a newer query was asked meanwhile: its results are the ones to show
        if not hits:
            status = Text.assemble("no matches for ", (clip(safe(text), 40), "bold"))
        else:
            n = len(hits)
            status = Text.assemble(f"{n} hit{'s' if n != 1 else ''} for ", (clip(safe(text), 40), "bold"),
                                   " (the limit: more not shown)" if n >= self.limit else "", "; Enter opens one")
        self._show(hits, text, status)

    async def _load_titles(self, hits: list["SearchHit"]) -> None:
        if self.session_id is not None:
            return
        for sid in dict.fromkeys(h.session_id for h in hits):
            if sid not in self._titles:
                row = await self.store.get_session(sid)
                self._titles[sid] = safe(row.title or "") if row is not None else ""

    def _show(self, hits: list["SearchHit"], text: str, status: Text) -> None:
        self.results.set_hits(hits, self._titles, with_session=self.session_id is None)
        self.shown_query = text
        self._status(status)

    def _status(self, text: Text) -> None:
        self.query_one("#search-status", Static).update(text)

    # --- moving and opening --------------------------------------------------------------

    @on(OptionList.OptionSelected, "#search-results")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        hit = self.results.hit_at(event.option_index)
        if hit is not None:
            self.dismiss(hit)

    def action_focus_results(self) -> None:
        if self.results.hits:
            self.results.focus()

    def action_focus_query(self) -> None:
        self.query_one("#search-query", Input).focus()

    def action_close(self) -> None:
        self._cancel_timer()
        self.dismiss(None)
