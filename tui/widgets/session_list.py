"""The home screen's sessions table: its columns, its cells and their formatting.

Pure formatting (``fmt_started``, ``fmt_usage``, ``session_duration``, ``column_plan``,
``cell_texts``) apart from the screen that feeds the table (tui.screens.sessions); also
used by tests and the screenshot script.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from shepherd.core.states import LIVE_STATUSES, SessionStatus
from shepherd.core.text import safe, safe_fields
from shepherd.tui.fmt import fmt_span, fmt_tokens  # noqa: F401 - fmt_tokens: public here for tests
from shepherd.tui.fmt_cost import HOME_WIDTH, home_cost
from shepherd.tui.icons import NEEDS_ICONS, state_icon
from shepherd.tui.widgets.fast_cells import FastCells

if TYPE_CHECKING:
    from shepherd.core.store.rows import SessionRow

# status -> style; the icon comes from the one table (tui.icons), "running" spins.
STATUS_STYLES: dict[str, str] = {
    SessionStatus.RUNNING: "bold cyan",
    SessionStatus.WAITING: "bold yellow",
    SessionStatus.PAUSED: "bold cyan",
    SessionStatus.STUCK: "bold black on yellow",
    SessionStatus.DONE: "bold green",
    SessionStatus.FAILED: "bold red",
    SessionStatus.CANCELLED: "dim",
    SessionStatus.INTERRUPTED: "bold magenta",
}
RESUMABLE_STATUSES = frozenset({SessionStatus.INTERRUPTED, SessionStatus.FAILED, SessionStatus.CANCELLED})


# --- formatting (pure) -------------------------------------------------------------------------------


def fmt_started(ts: float, now: float) -> str:
    """Relative within the hour, HH:MM the same day, else month and day."""
    age = now - ts
    if -60 < age < 60:
        return "just now"
    if 0 < age < 3600:
        return f"{int(age // 60)}m ago"
    when, today = datetime.fromtimestamp(ts), datetime.fromtimestamp(now)
    if when.date() == today.date():
        return when.strftime("%H:%M")
    if when.year == today.year:
        return when.strftime("%b %d")
    return when.strftime("%Y-%m")


def fmt_usage(row: "SessionRow") -> str:
    """The cost column's text: '$0.42 −0.10' (the part wasted on failed attempts after the
    '−'), '12.3k tok −3.1k' when no cost was reported, '–' when no usage was."""
    main, waste = home_cost(row)
    return f"{main} {waste}" if waste else main


def usage_cell(row: "SessionRow") -> Text:
    main, waste = home_cost(row)
    out = Text(main, justify="right", no_wrap=True, overflow="ellipsis")
    if waste:
        out.append(" " + waste, style="dim")
    return out


def session_duration(row: "SessionRow", now: float) -> float:
    end = row.ended_at if row.ended_at is not None else (now if row.status in LIVE_STATUSES
                                                         else (row.last_event_ts or row.updated_at))
    return max(0.0, end - row.started_at)


def safe_rows(rows: list["SessionRow"]) -> list["SessionRow"]:
    """Stored rows enter the home screen here: titles, backends, models made terminal-safe."""
    return [safe_fields(r, keep=("id", "task")) for r in rows]  # the task is not shown here


# --- the table -----------------------------------------------------------------------------------


class SessionTable(FastCells, DataTable):
    """A DataTable that asks for the next page when scrolled to its end (its cells drawn
    as tui.widgets.fast_cells does: the home's first frame is mostly them)."""

    BINDINGS = [
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]

    class NearEnd(Message):
        pass

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if self.max_scroll_y and new >= self.max_scroll_y - 2:
            self.post_message(self.NearEnd())


# columns: key, label, width (None = takes the remaining width), min terminal width to show it
COLUMNS: list[tuple[str, str, int | None, int]] = [
    ("status", " ", 1, 0),
    ("title", "Title", None, 0),
    ("id", "ID", 13, 124),
    ("backend", "Backend/model", 14, 96),
    ("started", "Started", 8, 0),
    ("duration", "Took", 7, 0),
    ("subtasks", "Sub", 5, 0),
    ("retries", "Rtry", 4, 0),
    ("usage", "Cost −waste", HOME_WIDTH, 0),
]
TITLE_MAX = 37  # beyond this, spare width goes to backend/model first (37: the cost column took 3)
BACKEND_MAX = 26


def column_plan(width: int, title_max: int = TITLE_MAX, backend_max: int = BACKEND_MAX) -> list[tuple[str, str, int]]:
    """The columns shown at terminal ``width``: (key, label, width) each."""
    shown = [(k, label, w) for k, label, w, min_w in COLUMNS if width >= min_w]
    fixed = sum(w + 2 for _, _, w in shown if w is not None)
    spare = width - fixed - 2 - 2  # cell padding of the title + scrollbar room
    title_w = max(12, min(spare, title_max))
    extra = max(0, spare - title_w)
    plan = []
    for key, label, w in shown:
        if w is None:
            w = title_w
        elif key == "backend" and extra:
            grow = min(extra, backend_max - w)
            w, extra = w + grow, extra - grow
        plan.append((key, label, w))
    if extra:  # still room: the title takes it
        plan = [(k, lb, w + extra if k == "title" else w) for k, lb, w in plan]
    return plan


WORKTREE_MARK = "⎇ "  # before the title (it survives an ellipsis): a finished session whose worktree is still there


def cell_texts(row: "SessionRow", now: float, *, frame: int, in_process: bool,
               awaits_approval: bool, worktree: bool = False) -> dict[str, Text]:
    """Every column's cell for ``row`` (a spinner at ``frame``; a dot when this process runs
    it; ``worktree``: it still holds a worktree)."""
    icon, style = state_icon(row.status, frame), STATUS_STYLES.get(row.status, "dim")
    if awaits_approval:  # what it waits for, not a spinner: a person
        icon, style = NEEDS_ICONS["approval"], "bold yellow"
    backend = row.backend + (f"/{row.model}" if row.model else "")
    title = Text(overflow="ellipsis", no_wrap=True)
    if worktree:
        title.append(WORKTREE_MARK, style="magenta")
    title.append(row.title or "(untitled)")
    if in_process:
        title.append(" ●", style="cyan")
    sub = f"{row.subtasks_done}/{row.subtasks_total}" if row.subtasks_total else "–"
    return {
        "status": Text(icon, style=style),
        "title": title,
        "id": Text(safe(row.id), style="dim"),  # kept exact in the row: it opens the session
        "backend": Text(backend, overflow="ellipsis", no_wrap=True),
        "started": Text(fmt_started(row.started_at, now)),
        "duration": Text(fmt_span(session_duration(row, now)), justify="right"),
        "subtasks": Text(sub, justify="right"),
        "retries": Text(str(row.retries) if row.retries else "–", justify="right",
                        style="yellow" if row.retries else ""),
        "usage": usage_cell(row),
    }
