"""The "Needs you" inbox of the home screen: which sessions wait for a person, its table
and the formatting of its rows (pure; the screen's side is tui.screens.sessions_inbox)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from shepherd.core.states import LIVE_STATUSES, SessionStatus
from shepherd.tui.fmt import fmt_span
from shepherd.tui.icons import NEEDS_ICONS
from shepherd.tui.widgets.session_list import STATUS_STYLES

if TYPE_CHECKING:
    from shepherd.core.store.rows import SessionRow

# what a session may wait for and still be answered from here (a dead runner's approval
# is asked again by a resume)
INBOX_STATUSES = LIVE_STATUSES | {SessionStatus.INTERRUPTED}
NEEDS_LABELS = {"approval": "approve?", "stuck": "stuck"}


def row_needs(row: "SessionRow") -> str | None:
    """What ``row`` waits for from a person: "approval", "stuck" or None (the store keeps it)."""
    needs = getattr(row, "needs", None)
    return needs if needs and row.status in INBOX_STATUSES else None


def inbox_rows(rows: list["SessionRow"]) -> list["SessionRow"]:
    """The sessions waiting for a person, the longest wait first."""
    waiting = [r for r in rows if row_needs(r)]
    return sorted(waiting, key=lambda r: (getattr(r, "needs_since", None) or r.updated_at, r.id))


def needs_text(row: "SessionRow") -> str:
    """'Bash make deploy', or the stuck reason; what a dead runner's question needs."""
    needs = row_needs(row)
    detail = getattr(row, "needs_detail", "") or ""
    if needs == "stuck":
        detail = detail or "a retry budget ran out"
    elif needs == "approval":
        detail = detail or "a tool call"
    if row.status == SessionStatus.INTERRUPTED:
        detail += " · runner stopped: resume asks again"
    return detail


class NeedsTable(DataTable):
    """The inbox: one row per session waiting for a person. Its keys answer the
    highlighted session without opening it (the screen does the sending). The keys that
    apply are in its title (the key bar keeps to 80 columns)."""

    BINDINGS = [
        Binding("y", "screen.answer('approved')", "Approve", show=False, tooltip="Approve the call this session waits on"),
        Binding("n", "screen.answer('denied')", "Deny", show=False, tooltip="Deny it, with an optional reason"),
        Binding("r", "screen.inbox_retry", "Retry", show=False, tooltip="Retry the waiting subtask"),
        Binding("s", "screen.inbox_skip", "Skip", show=False, tooltip="Skip the waiting subtask"),
    ]


INBOX_COLUMNS: list[tuple[str, str, int | None]] = [
    ("needs", " ", 1),
    ("title", "Needs you", 28),
    ("what", "Waits for", None),
    ("waited", "For", 7),
]


def inbox_plan(width: int) -> list[tuple[str, str, int]]:
    """The inbox's columns at terminal ``width``: (key, label, width) each."""
    fixed = sum(w + 2 for _, _, w in INBOX_COLUMNS if w is not None)
    title_w = 28 if width >= 100 else 20
    what_w = max(12, width - fixed + 28 - title_w - 4)
    return [(k, label, what_w if w is None else (title_w if k == "title" else w))
            for k, label, w in INBOX_COLUMNS]


def inbox_texts(row: "SessionRow", now: float) -> dict[str, Text]:
    """Every inbox column's cell for ``row``."""
    needs = row_needs(row) or ""
    since = getattr(row, "needs_since", None)
    style = "bold yellow" if needs == "approval" else STATUS_STYLES[SessionStatus.STUCK]
    return {
        "needs": Text(NEEDS_ICONS.get(needs, "?"), style=style),
        "title": Text(row.title or "(untitled)", overflow="ellipsis", no_wrap=True),
        "what": Text.assemble((NEEDS_LABELS.get(needs, needs) + " ", "bold yellow" if needs == "approval"
                               else "bold"), needs_text(row), overflow="ellipsis", no_wrap=True),
        "waited": Text(fmt_span(max(0.0, now - since)) if since else "–", justify="right"),
    }
