"""The home screen's side of the "Needs you" inbox: filling its table, its title (the keys
that apply), and answering the highlighted session from the list (approve, deny, retry,
skip) through the commands table.

``InboxMixin`` is mixed into ``SessionsScreen`` (tui.screens.sessions), which keeps the state
it reads (``inbox``, ``_inbox_cells``, ``clock``, ``_live_ids``, ``request_reload``); what is
pure (which rows, their cells, the columns) is in tui.widgets.inbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events

from shepherd.core.states import SessionStatus
from shepherd.tui.logging_setup import report_error
from shepherd.tui.widgets.inbox import NeedsTable, inbox_plan, inbox_rows, inbox_texts, row_needs

if TYPE_CHECKING:
    from shepherd.core.control import RemoteControl
    from shepherd.core.store.rows import SessionRow


class InboxMixin:
    """The inbox part of ``SessionsScreen`` (see the module's docstring)."""

    inbox: list["SessionRow"]  # sessions waiting for a person, longest wait first (set by the screen)
    _inbox_cells: dict[str, dict[str, str]]  # row id -> column -> plain text shown

    def _build_inbox_columns(self, width: int) -> None:
        needs = self.query_one(NeedsTable)
        keep = self.inbox_highlighted_id()  # a new width keeps the person's place in the inbox
        needs.clear(columns=True)
        self._inbox_cells.clear()
        for key, label, w in inbox_plan(width):
            needs.add_column(label, width=w, key=key)
        self._fill_inbox(self.inbox, keep=keep)

    def _update_inbox(self, rows: list["SessionRow"]) -> None:
        inbox = inbox_rows(rows)
        if [r.id for r in inbox] == [r.id for r in self.inbox]:
            self.inbox = inbox
            now = self.clock()
            for row in inbox:
                self._update_inbox_row(row, now)
        else:
            self.inbox = inbox
            self._fill_inbox(inbox)
        self.set_class(not inbox, "-no-needs")
        self._inbox_title()

    def _inbox_title(self) -> None:
        """'Needs you (3) · tab next · y approve · n deny · r retry · s skip': the keys that
        apply to the highlighted row once the inbox has focus, else how to get there."""
        needs = self.query_one(NeedsTable)
        if not self.inbox:
            needs.border_title = ""
            return
        title = f"Needs you ({len(self.inbox)})"
        row = self.inbox_row() if needs.has_focus else None
        if row is None:
            title += " · tab: go there"
        else:
            keys = ["tab next"]
            if row.status == SessionStatus.INTERRUPTED and row.id not in self._live_ids():
                keys.append("resume it below (r) to be asked again")
            else:
                if row_needs(row) == "approval":
                    keys += ["y approve", "n deny"]
                keys += ["r retry", "s skip"]
            keys.append("enter open")
            title += " · " + " · ".join(keys)
        needs.border_title = Text(title)  # titles of sessions never reach it: plain text anyway

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if self.inbox:
            self._inbox_title()

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        if self.inbox:
            self._inbox_title()

    def _fill_inbox(self, inbox: list["SessionRow"], keep: str | None = None) -> None:
        needs = self.query_one(NeedsTable)
        if not needs.columns:
            return
        keep = keep or self.inbox_highlighted_id()
        needs.clear()
        self._inbox_cells.clear()
        now = self.clock()
        keys = list(needs.columns)
        for row in inbox:
            cells = inbox_texts(row, now)
            needs.add_row(*(cells[k.value] for k in keys), key=row.id)
            self._inbox_cells[row.id] = {k.value: cells[k.value].plain for k in keys}
        if keep is not None and keep in self._inbox_cells:
            needs.move_cursor(row=needs.get_row_index(keep), animate=False)

    def _update_inbox_row(self, row: "SessionRow", now: float) -> None:
        shown = self._inbox_cells.get(row.id)
        if shown is None:
            return
        cells = inbox_texts(row, now)
        for key in shown:
            if shown[key] != cells[key].plain:
                shown[key] = cells[key].plain
                self.query_one(NeedsTable).update_cell(row.id, key, cells[key])

    def inbox_highlighted_id(self) -> str | None:
        needs = self.query_one(NeedsTable)
        if not needs.row_count:
            return None
        try:
            key = needs.coordinate_to_cell_key(needs.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - cursor outside the rows
            return None
        return key.value if key is not None else None

    def inbox_row(self) -> "SessionRow | None":
        sid = self.inbox_highlighted_id()
        return next((r for r in self.inbox if r.id == sid), None)

    def action_next_needs(self) -> None:
        """Focus the inbox on the next session that needs a person (round the list)."""
        if not self.inbox:
            self.app.notify("No session needs you right now.", timeout=2)
            return
        needs = self.query_one(NeedsTable)
        if self.focused is needs:
            row = (needs.cursor_row + 1) % needs.row_count
        else:
            row = 0
            needs.focus()
        needs.move_cursor(row=row, animate=False)

    def _controller(self, row: "SessionRow") -> "RemoteControl | None":
        """Commands for ``row``'s session go through the commands table: its runner (in
        this process or another) takes them. None, and a notice, when nobody runs it."""
        from shepherd.core.control import RemoteControl

        if row.status == SessionStatus.INTERRUPTED and row.id not in self._live_ids():
            self.app.notify(f"Session {row.id} has no live runner: resume it (r in the list below) "
                            "and it asks again.", severity="warning", markup=False)
            return None
        return RemoteControl(self.store, row.id)

    def action_answer(self, decision: str) -> None:
        row = self.inbox_row()
        if row is None:
            return
        if row_needs(row) != "approval":
            self.app.notify(f"Session {row.id} is stuck, not waiting for an approval: r retries, s skips.",
                            severity="warning", markup=False)
            return
        ctl = self._controller(row)
        if ctl is None:
            return
        detail = getattr(row, "needs_detail", "") or "the waiting call"
        if decision == "approved":
            self.run_worker(self._send(ctl, row, "approved", "", detail), group="inbox", exit_on_error=False)
            return
        from shepherd.tui.widgets.approval import DenyModal

        self.app.push_screen(DenyModal("", detail), lambda reason: self._denied(ctl, row, detail, reason))

    def _denied(self, ctl: Any, row: "SessionRow", detail: str, reason: str | None) -> None:
        if reason is not None:
            self.run_worker(self._send(ctl, row, "denied", reason, detail), group="inbox", exit_on_error=False)

    async def _send(self, ctl: Any, row: "SessionRow", decision: str, reason: str, detail: str) -> None:
        from shepherd.tui.widgets.approval import ApprovalUnsupported, send_answer

        try:
            # no call id: the session's oldest pending call, the one this row shows
            sent = await send_answer(ctl, None, decision, reason=reason)
        except ApprovalUnsupported as exc:
            self.app.notify(f"Could not answer: {exc}", severity="warning", markup=False)
            return
        except Exception as error:  # noqa: BLE001
            report_error(self.app, error, "Could not answer")
            return
        if not sent:
            self.app.notify(f"Session {row.id} has nothing waiting for approval any more.", severity="warning",
                            markup=False)
            self.request_reload()
            return
        verb = "approve" if decision == "approved" else "deny"
        self.app.notify(f"{verb} sent to {row.id}: {detail}", timeout=3, markup=False)
        self.request_reload()

    def action_inbox_retry(self) -> None:
        self._inbox_control("retry")

    def action_inbox_skip(self) -> None:
        self._inbox_control("skip")

    def _inbox_control(self, what: str) -> None:
        row = self.inbox_row()
        ctl = self._controller(row) if row is not None else None
        if row is None or ctl is None:
            return

        async def send() -> None:
            try:
                await (ctl.retry(None, source="tui") if what == "retry" else ctl.skip(None, source="tui"))
            except Exception as error:  # noqa: BLE001
                report_error(self.app, error, f"Could not {what}")
                return
            self.app.notify(f"{what} sent to {row.id}", timeout=3, markup=False)
            self.request_reload()

        self.run_worker(send(), group="inbox", exit_on_error=False)
