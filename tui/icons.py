"""One icon per state, for every place that shows one: the sessions list, the session
view (status bar, subtask list, end-of-subtask lines) and the help screen's legend.

Glyphs only (no Textual, no styles: the home table styles with Rich, the session view
with theme variables). ``running`` is animated by whoever shows it (``spinner``).
"""

from __future__ import annotations

from shepherd.core.states import SessionStatus as S
from shepherd.core.states import SubtaskState as T

SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

# Session and subtask states (a session "waiting" and a subtask "waiting_retry" are the same thing).
# A state both may be (pending, running, paused...) is one key: the enums' members are their strings.
STATE_ICONS: dict[str, str] = {
    S.PENDING: "·",
    S.STARTING: "·",
    S.RUNNING: SPINNER_FRAMES[0],
    S.WAITING: "◷",
    T.WAITING_RETRY: "◷",
    S.PAUSED: "⏸",
    S.STUCK: "⚠",
    S.DONE: "✓",
    S.FAILED: "✗",
    T.SKIPPED: "↷",
    S.CANCELLED: "■",
    S.INTERRUPTED: "⊘",
    "waiting_approval": "⧗",  # a subtask whose tool call waits for a person's yes (approve_tools)
}

TOOL_ICONS: dict[str, str] = {"running": SPINNER_FRAMES[0], "ok": "✓", "error": "✗", "denied": "⛔",
                              "interrupted": "⊘"}

# A tool call's approval (approve_tools), inline under the call and in the inbox.
APPROVAL_ICONS: dict[str, str] = {"waiting": "⏳", "approved": "✓", "denied": "⛔", "unanswered": "⊘"}
NEEDS_ICONS: dict[str, str] = {"approval": "⧗", "stuck": "⚠"}  # one cell each (a table column)

# What the help screen says, in this order.
LEGEND: list[tuple[str, str]] = [
    (S.RUNNING, "running (the spinner moves while the agent works)"),
    (S.WAITING, "waiting for a retry (a countdown shows when it starts again)"),
    (S.PAUSED, "paused"),
    (S.STUCK, "stuck: a retry budget ran out; retry, skip or cancel it"),
    ("waiting_approval", "a tool call waits for your approval (y approve, n deny, a approve the tool "
                         "for the session); the home's Needs you list gathers them"),
    (S.DONE, "done"),
    (S.FAILED, "failed"),
    (T.SKIPPED, "skipped by a person"),
    (S.CANCELLED, "cancelled"),
    (S.INTERRUPTED, "interrupted: the process running it died; open it to see where it stopped"),
]


def spinner(frame: int) -> str:
    return SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]


def state_icon(state: str, frame: int | None = None) -> str:
    """The icon of ``state``; ``running`` spins when a ``frame`` is given."""
    if state == S.RUNNING and frame is not None:
        return spinner(frame)
    return STATE_ICONS.get(state, "?")
