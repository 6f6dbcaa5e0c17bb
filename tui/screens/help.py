"""The help screen: keys of the screen it was opened from, keys that work everywhere,
and what the status icons mean. Built from the live bindings, so it never goes stale."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown

from tui.icons import LEGEND, STATE_ICONS

STATUS_LEGEND = [(STATE_ICONS[state], meaning) for state, meaning in LEGEND]

ABOUT = """\
Shepherd runs coding agents, retries them when an API fails (with a bounded budget),
and stores every event in SQLite. Past sessions open exactly as they looked live.

* Every wait for a retry shows a countdown; skip it with the session's *retry now* key.
* A run you start here stops when you quit Shepherd (you are asked first).
* `shepherd attach` follows a run another process owns; its controls still work.
* Logs go to a file, never to the screen: {log}.
"""


def _log_location() -> str:
    from tui.logging_setup import current_log_path, default_log_path

    return f"`{current_log_path() or default_log_path()}`"


def _key_rows(screen: Screen) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(this screen's keys, app-wide keys) as (key display, description) pairs."""
    app = screen.app
    local: list[tuple[str, str]] = []
    everywhere: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for active in screen.active_bindings.values():
        binding: Binding = active.binding
        if not binding.description:
            continue
        row = (app.get_key_display(binding), binding.description)
        if row in seen:
            continue
        seen.add(row)
        (everywhere if active.node is app else local).append(row)
    return local, everywhere


def _table(rows: list[tuple[str, str]]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| key | does |", "|---|---|"]
    lines += [f"| `{key}` | {desc} |" for key, desc in rows]
    return "\n".join(lines) + "\n"


def help_markdown(screen: Screen) -> str:
    local, everywhere = _key_rows(screen)
    name = getattr(screen, "HELP_TITLE", None) or type(screen).__name__.removesuffix("Screen") or "this screen"
    legend = "\n".join(f"| `{icon}` | {meaning} |" for icon, meaning in STATUS_LEGEND)
    return (
        f"# Help\n\n## Keys on {name}\n\n{_table(local)}\n"
        f"## Keys everywhere\n\n{_table(everywhere)}\n"
        "`ctrl+p` opens the command palette: every action, searchable.\n\n"
        f"## Status icons\n\n| icon | means |\n|---|---|\n{legend}\n\n"
        f"## About\n\n{ABOUT.format(log=_log_location())}"
    )


class HelpScreen(ModalScreen[None]):
    """Shows help for ``for_screen``; Esc, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll {
        width: 90; max-width: 96%; height: 90%;
        border: thick $primary 70%; background: $surface; padding: 0 1;
    }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
    ]

    def __init__(self, for_screen: Screen) -> None:
        super().__init__()
        self.text = help_markdown(for_screen)

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(self.text, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
