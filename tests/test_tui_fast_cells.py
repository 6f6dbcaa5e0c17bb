"""tui.widgets.fast_cells draws the home's cells with fewer layers: the same lines as
Textual's own DataTable._render_cell, for every kind of cell the home shows (and those it
hands back to Textual), on the cursor row and off it, focused and not. The home's
snapshots (tests/test_snapshots.py) show the same through the whole app."""

from __future__ import annotations

from typing import Any

import pytest
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from shepherd.tui.widgets.fast_cells import FastCells
from shepherd.tui.widgets.session_list import SessionTable


class _App(App[None]):
    def compose(self) -> ComposeResult:
        yield SessionTable(id="t", cursor_type="row", zebra_stripes=False)


CELLS = [
    Text("●", style="bold green"),
    Text("a title long enough to be cut with an ellipsis at the end of it", overflow="ellipsis", no_wrap=True),
    Text("s00ab12cd", style="dim"),
    Text("scripted/scripted-demo-model", overflow="ellipsis", no_wrap=True),
    Text("3.2s", justify="right"),
    Text("全角の題名 wide", justify="center"),  # double-width characters at a cut
    Text.assemble(("12", "bold"), " / ", ("34", "red on blue")),
    "a plain string [b]markup[/b]",  # (DataTable makes a Text of it)
    Text(""),
    # every justify and overflow, a base style under spans, tabs, an odd end (Rich's own path
    # for some: the same lines either way)
    Text.assemble(("left", "italic"), " side", style="on red", justify="left"),
    Text("centred and styled", style="underline", justify="center", overflow="crop"),
    Text("right, folded at the edge", justify="right", overflow="fold"),
    Text("full justify spreads the words", justify="full"),
    Text("tab\there", style="bold"),
    Text("no end", end=""),
    Text("hostile \x1b[31m red \x07 bell \u202e rtl \x9b csi", style="bold"),  # (safe() upstream; the same either way)
]


async def test_fast_cells_draw_what_textual_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _App()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(SessionTable)
        assert isinstance(table, FastCells)
        for i, width in enumerate((1, 2, 3, 7, 9, 14, 20, 30, 40, 5, 11, 16, 25, 4, 8, 33)):
            table.add_column(f"c{i}", width=width, key=f"c{i}")
        for r in range(4):
            table.add_row(*CELLS, key=f"r{r}", height=2 if r == 3 else 1)
        await pilot.pause()
        table.focus()
        await pilot.pause()
        checked = fast_ones = 0
        handed: list[int] = []
        textual_cell = DataTable._render_cell

        def counted(self: Any, *args: Any) -> Any:
            handed.append(1)
            return textual_cell(self, *args)

        for focused in (True, False):
            if not focused:
                table.blur()
                await pilot.pause()
            for row in range(4):
                for col in range(len(CELLS)):
                    width = table.columns[table._column_locations.get_key(col)].get_render_width(table)
                    for cursor in (False, True):
                        base = Style(color="white", bgcolor="black")
                        table._cell_render_cache.clear()
                        handed.clear()
                        with monkeypatch.context() as m:
                            m.setattr(DataTable, "_render_cell", counted)
                            fast = table._render_cell(row, col, base, width, cursor, False)
                        fast_ones += not handed
                        table._cell_render_cache.clear()
                        textual = textual_cell(table, row, col, base, width, cursor, False)
                        assert fast == textual, (row, col, width, cursor, focused)
                        checked += 1
        assert checked == 2 * 4 * len(CELLS) * 2
        # every cell of the one-line rows took the fast way (the string is a Text by then);
        # the two-line row's went to Textual
        assert fast_ones == 2 * 3 * len(CELLS) * 2
