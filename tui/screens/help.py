"""The help screen: keys of the screen it was opened from, keys that work everywhere,
and what the status icons mean. Built from the live bindings, so it never goes stale."""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown

from shepherd.tui.icons import LEGEND, STATE_ICONS
from shepherd.tui.stylesheet import CSSSection

STATUS_LEGEND = [(STATE_ICONS[state], meaning) for state, meaning in LEGEND]

ABOUT = """\
Shepherd runs coding agents, retries them when an API fails (with a bounded budget),
and stores every event in SQLite. Past sessions open exactly as they looked live.

* Every wait for a retry shows a countdown; skip it with the session's *retry now* key.
* A tool call a task gates (`approve_tools`) waits under the call for your `y`/`n`/`a`; the
  home's *Needs you* list gathers every session waiting for you (`tab` jumps there).
* `⎇` before a title: the session still holds its git worktree (`isolation = "worktree"`);
  `d`/`D` in its view show the diff, `shepherd merge` or `shepherd discard` ends it.
* A run you start here stops when you quit Shepherd (you are asked first).
* `shepherd attach` follows a run another process owns; its controls still work.
* `R` (the sessions list, a session view) replays a session as it happened: the screen as it
  was at each moment, read-only (`shepherd replay SESSION` too).
* `s` on the sessions list searches every session, `/` in a session view only that one;
  `Enter` on a hit opens the session at that event (`shepherd attach SESSION --at SEQ` too).
* Logs go to a file, never to the screen: {log}.
"""


def _log_location() -> str:
    from shepherd.tui.logging_setup import current_log_path, default_log_path

    return f"`{current_log_path() or default_log_path()}`"


def _rows(node: object, app: object) -> list[tuple[str, str]]:
    """Every described key Shepherd's own classes give ``node`` (also those that cannot be
    used right now); Textual's inherited ones (focus, copy) are left out."""
    rows: list[tuple[str, str]] = []
    for cls in reversed(type(node).__mro__):
        if not cls.__module__.startswith("shepherd.tui.") or "BINDINGS" not in cls.__dict__:
            continue
        for binding in cls.__dict__["BINDINGS"]:
            if isinstance(binding, Binding) and binding.description:
                keys = [replace(binding, key=k.strip()) for k in binding.key.split(",")]
                shown = list(dict.fromkeys(app.get_key_display(k) for k in keys))  # type: ignore[attr-defined]
                rows.append(("/".join(shown), binding.description))
    return rows


def _merge(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One row per key: 'p' Pause / Resume (the footer shows whichever applies)."""
    merged: dict[str, list[str]] = {}
    for key, desc in rows:
        merged.setdefault(key, []).append(desc)
    return [(key, " / ".join(descs)) for key, descs in merged.items()]


def _key_rows(screen: Screen) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(this screen's keys, app-wide keys) as (key display, description) pairs: Shepherd's
    own keys only, all of them (the footer shows those that apply now). Textual's generic
    widget keys (cursor moves, scrolling) are one line under the tables."""
    app = screen.app
    seen: set[tuple[str, str]] = set()

    def fresh(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = [r for r in rows if r not in seen]
        seen.update(out)
        return out

    local = _merge(fresh(_rows(screen, app) + list(getattr(screen, "HELP_EXTRA", []))))
    everywhere = fresh(_rows(app, app))
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
    note = getattr(screen, "HELP_NOTE", "")
    return (
        f"# Help\n\n## Keys on {name}\n\n{_table(local)}\n" + (f"{note}\n\n" if note else "") +
        f"## Keys everywhere\n\n{_table(everywhere)}\n"
        "`ctrl+p` opens the command palette: every action, searchable. Arrows, `PgUp`/`PgDn`, "
        "`Home`/`End` move in lists and scroll; `Tab` moves between panes.\n\n"
        f"## Status icons\n\n| icon | means |\n|---|---|\n{legend}\n\n"
        f"## About\n\n{ABOUT.format(log=_log_location())}"
    )


class HelpScreen(CSSSection, ModalScreen[None]):
    """Shows help for ``for_screen``; Esc, q or ? closes it."""

    CSS_SECTION = "help"  # tui/css/help.tcss

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
