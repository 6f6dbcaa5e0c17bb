"""The home screen's keys: which apply now (``check_action``), filter-as-you-type, and
the actions that are the screen's own (search, resume, replay, stats, the filter's focus).

``HomeKeysMixin`` is mixed into ``SessionsScreen`` (tui.screens.sessions), which declares the
bindings and keeps the state read here (``rows``, ``inbox``, ``_built``, ``_building``,
``_first_built``, ``_live_ids``, ``store``, ``clock``) and the messages posted
(``OpenRequested``, ``ResumeRequested``, ``ReplayRequested``).
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.widgets import Input

from shepherd.tui.logging_setup import guarded
from shepherd.tui.widgets.inbox import row_needs
from shepherd.tui.widgets.session_list import RESUMABLE_STATUSES


class HomeKeysMixin:
    """The keys part of ``SessionsScreen`` (see the module's docstring)."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next_needs":
            return bool(self.inbox)  # hidden (tab moves focus as usual) while nobody waits
        if action in ("answer", "inbox_retry", "inbox_skip"):
            row = self.inbox_row() if self._built and not self._building else None
            if row is None:
                return None
            if action == "answer" and row_needs(row) != "approval":
                return None  # shown dimmed: a stuck session has nothing to approve
            return True
        if action == "resume":
            # the table is there once built (in on_mount, where the key bar is first built)
            built = self._built and not self._building and (self.is_mounted or self._first_built)
            row = self.highlighted_row() if built else None
            if row is None or row.status not in RESUMABLE_STATUSES or row.id in self._live_ids():
                return None  # shown dimmed: nothing to resume here
        return True

    def on_key(self, event: events.Key) -> None:
        """Filter as you type: a printable key that is not one of this screen's keys
        (d, o, g, r, q, ?, /...) goes to the filter. A key that is a binding stays the
        binding; ``/`` first, to type anything."""
        field = self.query_one("#filter", Input)
        char = event.character
        if self.focused is field or not char or not char.isprintable() or char.isspace():
            return
        if event.key in self.active_bindings:
            return
        event.stop()
        event.prevent_default()
        field.focus()
        field.value += char
        field.cursor_position = len(field.value)

    def action_search(self) -> None:
        from shepherd.tui.screens.search import SearchScreen

        def done(hit: Any) -> None:
            if hit is not None:
                self.post_message(self.OpenRequested(hit.session_id, at_seq=hit.seq))

        self.app.push_screen(SearchScreen(self.store, clock=self.clock), callback=done)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if field.value:
            field.value = ""  # Input.Changed reloads
        self.table.focus()

    def action_replay(self) -> None:
        row = self.highlighted_row()
        if row is not None:
            self.post_message(self.ReplayRequested(row.id))

    def action_stats(self) -> None:
        from shepherd.tui.screens.stats import StatsScreen  # imported when first asked for

        self.app.push_screen(StatsScreen(self.store, clock=self.clock))

    @guarded("Could not resume the session")
    def action_resume(self) -> None:
        row = self.highlighted_row()
        if row is None:
            return
        if row.status not in RESUMABLE_STATUSES:
            self.app.notify(f"Session {row.id} is {row.status}; only interrupted, failed or cancelled "
                            "sessions can be resumed.", severity="warning")
            return
        self.post_message(self.ResumeRequested(row.id))
