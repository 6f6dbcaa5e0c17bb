"""DataTable cells drawn with fewer layers: the home's first frame draws ~300 of them.

Textual renders every cell as ``render_lines(Styled(Padding(cell, (0, p)), pre, post))``:
three nested renderables, two generators over every segment and a second split-and-crop
of lines the inner render already made exactly as wide. For the cells the home shows (a
one-line row, a ``rich.text.Text``) ``FastCells`` makes the same segments directly: the
text's line at the inner width, a pad segment either side (Padding's "none" style), the
pre and post styles applied as Styled applies them. The cache key and the styles are
Textual's own (``DataTable._render_cell`` of Textual 8); anything else (headers, row
labels, taller rows, other renderables, a column too narrow to pad) goes to Textual.
tests/test_tui_fast_cells.py checks that both ways give the same lines.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.containers import Lines
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

_NULL = Style.null()
_JOIN = Text("\n")
_JUSTIFY = ("default", "left", "center", "right")  # ("full" spreads words: Rich's own path)
_OVERFLOW = ("fold", "crop", "ellipsis")


def _one_line(console: Console, cell: Text, width: int) -> list[Segment] | None:
    """``console.render_lines(cell, <width, no_wrap>, style=null, pad=True)[0]`` for a Text
    on one line, by the same Rich calls without the layers between them (render_lines ->
    render -> __rich_console__ -> wrap -> split_and_crop_lines): Text.wrap's no_wrap branch,
    Text.__rich_console__'s join, render, and the crop/pad to the width. None: Rich's path
    (a newline or tab, an unusual justify, overflow or end)."""
    plain = cell.plain
    justify = cell.justify or "default"
    overflow = cell.overflow or "fold"
    if ("\n" in plain or "\t" in plain or justify not in _JUSTIFY or overflow not in _OVERFLOW
            or cell.end not in ("\n", "")):
        return None
    lines = Lines([cell.copy()])
    lines.justify(console, width, justify=justify, overflow=overflow)
    line = lines[0]
    line.truncate(width, overflow=overflow)
    segments = list(_JOIN.join(lines).render(console))
    return Segment.adjust_line_length(segments, width, style=_NULL, pad=True)


class FastCells:
    """Mixin for a ``DataTable`` subclass (before DataTable in the bases)."""

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> Any:
        table: Any = self
        pad = table.cell_padding
        if row_index < 0 or column_index < 0 or width < 2 * pad + 1:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)  # type: ignore[misc]
        row_key = table._row_locations.get_key(row_index)
        row = table.rows[row_key]
        if row.height != 1:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)  # type: ignore[misc]
        column_key = table._column_locations.get_key(column_index)
        key = (row_key, column_key, base_style, cursor, hover, table._show_hover_cursor, table._update_count,
               table._pseudo_class_state)
        cache = table._cell_render_cache
        if key in cache:
            return cache[key]
        _, row_cells = table._get_row_renderables(row_index)
        cell = row_cells[column_index]
        if type(cell) is not Text:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)  # type: ignore[misc]
        fixed = row_index < table.fixed_rows or column_index < table.fixed_columns
        component_style, post_style = table._get_styles_to_render_cell(
            False, False, fixed, hover, cursor, table.show_cursor, table._show_hover_cursor,
            table.cursor_foreground_priority == "css", table.cursor_background_priority == "css")
        console = table.app.console
        pre = console.get_style(base_style + Style.from_meta({"row": row_index, "column": column_index})
                                + component_style)
        post = console.get_style(post_style)
        line = _one_line(console, cell, width - 2 * pad)
        if line is None:
            options = table.app.console_options.update_dimensions(width - 2 * pad, 1).update(no_wrap=True)
            line = console.render_lines(cell, options, style=_NULL, pad=True)[0]
        if pad:
            space = Segment(" " * pad, _NULL)
            line = [space, *line, space]
        lines = [list(Segment.apply_style(line, style=pre, post_style=post))]
        cache[key] = lines
        return lines
