"""The diff view: what a worktree session (``D``), or one of its subtasks (``d``), changed.

The file list (status letter, path, +added -deleted or "binary") is on the left, the
highlighted patch of the selected file on the right. The data is core.worktree_diff's,
the one diff the CLI and the exports show too; this screen never calls git itself. The
list and each patch load in workers (git runs as a subprocess, the Text is laid out in a
thread), so the keys keep working while a 1 MB patch or a 2,000-file list loads; a patch
is loaded once, when its file is first selected. ``r`` reloads (a running subtask's diff
is the worktree as it is now).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from shepherd.core.text import safe
from shepherd.core.worktree_diff import MAX_FILES, Diff, NoWorktree, load_patch, session_diff
from shepherd.tui.widgets.diff import file_label, patch_text
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore


class DiffScreen(CSSSection, Screen[None]):
    """Esc or q closes it; up/down pick a file; tab moves to the patch (arrows and PgUp/PgDn
    scroll it); r reloads."""

    CSS_SECTION = "diff"  # tui/css/diff.tcss

    HELP_TITLE = "the diff view"
    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("r", "reload", "Refresh", tooltip="Load the diff again (a running subtask's changes so far)"),
        Binding("tab", "switch_pane", "Files/patch"),
    ]

    def __init__(self, store: "EventStore", session_id: str, subtask_id: str | None = None,
                 label: str | None = None) -> None:
        super().__init__()
        self.store = store
        self.session_id = session_id
        self.subtask_id = subtask_id
        self.label = label or subtask_id or ""
        self.diff: Diff | None = None
        self.patches: dict[int, Text] = {}  # file index -> its laid-out patch
        self.shown: int | None = None  # the file whose patch is on the right
        self.listed = asyncio.Event()  # the file list is in (tests, and the refresh)
        self.patch_shown = asyncio.Event()  # the selected file's patch is on screen

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="diff-title")
        with Horizontal(id="diff-body"):
            yield OptionList(id="diff-files")
            with VerticalScroll(id="diff-patch-scroll"):
                yield Static(Text("loading…", style="dim"), id="diff-patch")
        yield Footer()

    @property
    def files_list(self) -> OptionList:
        return self.query_one("#diff-files", OptionList)

    @property
    def patch_view(self) -> Static:
        return self.query_one("#diff-patch", Static)

    def on_mount(self) -> None:
        self.files_list.focus()
        self.action_reload()

    def _title(self) -> Text:
        what = f"subtask {safe(self.label)}" if self.subtask_id else "the whole session"
        title = Text.assemble(("Diff of ", "bold"), (what, "bold"), (f"  · session {safe(self.session_id)}", "dim"))
        d = self.diff
        if d is None:
            return title
        added = sum(f.added or 0 for f in d.files)
        deleted = sum(f.deleted or 0 for f in d.files)
        n = len(d.files)
        title.append(f"  {n} file{'s' if n != 1 else ''} ")
        title.append(f"+{added}", style="green")
        title.append(f" -{deleted}", style="red")
        if d.truncated:
            title.append(f"  (the first {MAX_FILES:,} files)", style="yellow")
        if d.live:
            title.append("  · live (r refreshes)", style="cyan")
        if d.note:
            title.append(f"  · {safe(d.note)}", style="yellow")
        return title

    # --- loading -----------------------------------------------------------------------

    def action_reload(self) -> None:
        self.listed.clear()
        self.run_worker(self._load_list(), group="diff-list", exclusive=True, exit_on_error=False)

    async def _load_list(self) -> None:
        try:
            d = await session_diff(self.store, self.session_id, self.subtask_id)
        except NoWorktree as exc:
            self._show_message(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - git failed, the store is gone: say it, stay open
            self._show_message(f"could not read the diff: {exc}")
            return
        keep = self.files_list.highlighted
        self.diff, self.patches, self.shown = d, {}, None
        self.query_one("#diff-title", Static).update(self._title())
        files = self.files_list
        files.clear_options()
        files.add_options([Option(file_label(f), id=str(i)) for i, f in enumerate(d.files)])
        self.listed.set()
        if not d.files:
            self._set_patch(Text(safe(d.note) if d.note else "no changes", style="dim"))
            return
        files.highlighted = keep if keep is not None and keep < len(d.files) else 0
        self._select(files.highlighted or 0)

    def _show_message(self, message: str) -> None:
        self.files_list.clear_options()
        self._set_patch(Text(safe(message), style="yellow"))
        self.listed.set()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list is self.files_list and event.option_index is not None:
            self._select(event.option_index)

    def _select(self, index: int) -> None:
        if self.diff is None or index >= len(self.diff.files) or index == self.shown:
            return
        self.shown = index
        self.patch_shown.clear()
        if index in self.patches:
            self._set_patch(self.patches[index])
            return
        self._set_patch(Text("loading…", style="dim"), done=False)
        # exclusive: moving fast through the list drops the loads left behind
        self.run_worker(self._load_patch(self.diff, index), group="diff-patch", exclusive=True,
                        exit_on_error=False)

    async def _load_patch(self, d: Diff, index: int) -> None:
        f = d.files[index]
        try:
            loaded = await load_patch(self.store, d, f)
            text = await asyncio.to_thread(patch_text, loaded.patch or "(no patch: the file did not change)")
        except Exception as exc:  # noqa: BLE001
            text = Text(safe(f"could not load the patch: {exc}"), style="yellow")
        if d is not self.diff:  # reloaded meanwhile
            return
        self.patches[index] = text
        if self.shown == index:
            self._set_patch(text)

    def _set_patch(self, text: Text, done: bool = True) -> None:
        self.patch_view.update(text)
        self.query_one("#diff-patch-scroll", VerticalScroll).scroll_home(animate=False)
        if done:
            self.patch_shown.set()

    # --- keys --------------------------------------------------------------------------

    def action_switch_pane(self) -> None:
        scroll = self.query_one("#diff-patch-scroll", VerticalScroll)
        (self.files_list if scroll.has_focus else scroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
