"""One icon per state, for every place that shows one: the sessions list, the session
view (status bar, subtask list, end-of-subtask lines) and the help screen's legend.

Glyphs only (no Textual, no styles: the home table styles with Rich, the session view
with theme variables). ``running`` is animated by whoever shows it (``spinner``).
"""

from __future__ import annotations

SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

# Session and subtask states (a session "waiting" and a subtask "waiting_retry" are the same thing).
STATE_ICONS: dict[str, str] = {
    "pending": "·",
    "starting": "·",
    "running": SPINNER_FRAMES[0],
    "waiting": "◷",
    "waiting_retry": "◷",
    "paused": "⏸",
    "stuck": "⚠",
    "done": "✓",
    "failed": "✗",
    "skipped": "↷",
    "cancelled": "■",
    "interrupted": "⊘",
}

TOOL_ICONS: dict[str, str] = {"running": SPINNER_FRAMES[0], "ok": "✓", "error": "✗", "denied": "⛔",
                              "interrupted": "⊘"}

# What the help screen says, in this order.
LEGEND: list[tuple[str, str]] = [
    ("running", "running (the spinner moves while the agent works)"),
    ("waiting", "waiting for a retry (a countdown shows when it starts again)"),
    ("paused", "paused"),
    ("stuck", "stuck: a retry budget ran out; retry, skip or cancel it"),
    ("done", "done"),
    ("failed", "failed"),
    ("skipped", "skipped by a person"),
    ("cancelled", "cancelled"),
    ("interrupted", "interrupted: the process running it died; open it to see where it stopped"),
]


def spinner(frame: int) -> str:
    return SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]


def state_icon(state: str, frame: int | None = None) -> str:
    """The icon of ``state``; ``running`` spins when a ``frame`` is given."""
    if state == "running" and frame is not None:
        return spinner(frame)
    return STATE_ICONS.get(state, "?")
