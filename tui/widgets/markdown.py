"""Markdown to Textual ``Content``, for assistant text.

Textual's Markdown widget mounts a widget per paragraph and list item; 200 answers of a
rehydrated session took seconds to mount. Here a message is one widget: the text is
parsed once per change (markdown-it, the parser Textual and Rich use) into blocks, and
wrapped at the widget's width with hanging indents for lists and quotes.

markdown-it is imported on first use (~15 ms): a live view with no message yet is drawn
without it, and ``preload()`` imports it in a thread once that view is on the screen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

from textual.content import Content
from shepherd.core.records import record

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

BULLETS = ("•", "◦", "▪")
HEADING_STYLES = {"h1": "bold underline $text-primary", "h2": "bold $text-primary", "h3": "bold"}
CODE_INLINE = "$text-accent"
GUTTER = "$primary 60%"


@lru_cache(maxsize=1)
def _parser() -> "MarkdownIt":
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("strikethrough").enable("table")


def preload() -> None:
    """Import markdown-it and make the parser in a thread of the running loop (never on
    the loop itself), unless that is done already."""
    if _parser.cache_info().currsize:
        return
    import asyncio

    asyncio.get_running_loop().run_in_executor(None, _parser)


@record
class Unit:
    """One block: its content and the prefixes of its first and following lines."""

    content: Content
    first: Content
    rest: Content
    wrap: bool = True
    gap: bool = True  # a blank line before it
    rule: bool = False


@record
class _Container:
    first: Content
    rest: Content
    used: bool = False


@record
class _List:
    ordered: bool
    n: int


@record
class _Builder:
    units: list[Unit] = field(default_factory=list)
    stack: list[_Container] = field(default_factory=list)
    lists: list[_List] = field(default_factory=list)
    force_gap: bool = False

    def emit(self, content: Content, *, wrap: bool = True, gap: bool = True, rule: bool = False) -> None:
        first = Content("").join(c.rest if c.used else c.first for c in self.stack)
        rest = Content("").join(c.rest for c in self.stack)
        for c in self.stack:
            c.used = True
        self.units.append(Unit(content, first, rest, wrap=wrap, gap=gap or self.force_gap, rule=rule))
        self.force_gap = False


def _inline(token: Any) -> Content:
    parts: list[tuple[str, str]] = []
    styles: list[str] = []
    href_stack: list[str] = []
    link_text: list[str] = []

    def add(text: str, extra: str = "") -> None:
        style = " ".join(s for s in (*styles, extra) if s)
        parts.append((text, style))
        if href_stack:
            link_text.append(text)

    for child in token.children or ():
        t = child.type
        if t == "text":
            add(child.content)
        elif t == "softbreak":
            add(" ")
        elif t == "hardbreak":
            add("\n")
        elif t == "code_inline":
            add(child.content, CODE_INLINE)
        elif t == "strong_open":
            styles.append("bold")
        elif t == "em_open":
            styles.append("italic")
        elif t == "s_open":
            styles.append("strike")
        elif t in ("strong_close", "em_close", "s_close"):
            if styles:
                styles.pop()
        elif t == "link_open":
            href_stack.append(str(child.attrs.get("href", "")))
            link_text.clear()
            styles.append("underline $text-accent")
        elif t == "link_close":
            if styles:
                styles.pop()
            href = href_stack.pop() if href_stack else ""
            if href and href != "".join(link_text) and not href.startswith("#"):
                parts.append((f" ({href})", "$foreground-muted"))
        elif t == "image":
            add(f"[image: {child.content or child.attrs.get('src', '')}]", "$foreground-muted")
        elif t == "html_inline":
            add(child.content)
        else:
            add(child.content)
    return Content.assemble(*parts) if parts else Content("")


def _table(tokens: list[Any], start: int) -> tuple[Content, int]:
    """Render a table as aligned columns; returns the content and the index after it."""
    rows: list[tuple[bool, list[Content]]] = []
    i = start + 1
    header = False
    row: list[Content] | None = None
    while i < len(tokens) and tokens[i].type != "table_close":
        t = tokens[i]
        if t.type == "thead_open":
            header = True
        elif t.type == "thead_close":
            header = False
        elif t.type == "tr_open":
            row = []
        elif t.type == "tr_close" and row is not None:
            rows.append((header, row))
            row = None
        elif t.type == "inline" and row is not None:
            row.append(_inline(t))
        i += 1
    ncols = max((len(r) for _, r in rows), default=0)
    widths = [max((r[c].cell_length for _, r in rows if c < len(r)), default=0) for c in range(ncols)]
    lines: list[Content] = []
    sep = Content.styled(" │ ", "$foreground-muted")
    for is_header, cells in rows:
        padded = [(cells[c] if c < len(cells) else Content("")).pad_right(widths[c] - (cells[c].cell_length if c < len(cells) else 0))
                  for c in range(ncols)]
        line = sep.join(padded)
        lines.append(line.stylize("bold") if is_header else line)
        if is_header:
            lines.append(Content.styled("─┼─".join("─" * w for w in widths), "$foreground-muted"))
    return Content("\n").join(lines), i + 1


def parse(text: str) -> list[Unit]:
    tokens = _parser().parse(text)
    b = _Builder()
    i = 0
    hidden_para = False
    while i < len(tokens):
        t = tokens[i]
        kind = t.type
        if kind == "heading_open":
            inline = tokens[i + 1]
            b.emit(_inline(inline).stylize(HEADING_STYLES.get(t.tag, "bold")))
            i += 3
            continue
        if kind == "paragraph_open":
            hidden_para = t.hidden
        elif kind == "inline":
            b.emit(_inline(t), gap=not hidden_para)
        elif kind in ("bullet_list_open", "ordered_list_open"):
            if not b.lists:
                b.force_gap = True
            start = int(t.attrs.get("start", 1) or 1) if kind == "ordered_list_open" else 1
            b.lists.append(_List(ordered=kind == "ordered_list_open", n=start))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            if b.lists:
                b.lists.pop()
        elif kind == "list_item_open":
            lst = b.lists[-1] if b.lists else _List(False, 1)
            if lst.ordered:
                marker = f"{lst.n}. "
                lst.n += 1
                style = "$foreground-muted"
            else:
                marker = BULLETS[(len(b.lists) - 1) % len(BULLETS)] + " "
                style = "$text-accent"
            b.stack.append(_Container(Content.styled(marker, style), Content(" " * len(marker))))
        elif kind == "list_item_close":
            if b.stack:
                b.stack.pop()
        elif kind == "blockquote_open":
            bar = Content.styled("▌ ", GUTTER)
            b.stack.append(_Container(bar, bar))
        elif kind == "blockquote_close":
            if b.stack:
                b.stack.pop()
        elif kind in ("fence", "code_block"):
            code = t.content.rstrip("\n")
            bar = Content.styled("▏ ", GUTTER)
            b.stack.append(_Container(bar, bar))
            b.emit(Content(code.expandtabs(4)), wrap=False)
            b.stack.pop()
        elif kind == "hr":
            b.emit(Content(""), rule=True)
        elif kind == "table_open":
            table, i = _table(tokens, i)
            b.emit(table, wrap=False)
            continue
        elif kind == "html_block":
            b.emit(Content(t.content.rstrip("\n")))
        i += 1
    return b.units


def render(units: list[Unit], width: int) -> Content:
    """Wrap ``units`` at ``width`` cells: one Content with a line per screen row."""
    width = max(8, width)
    lines: list[Content] = []
    for n, unit in enumerate(units):
        if n and unit.gap:
            lines.append(Content(""))
        avail = max(4, width - unit.first.cell_length)
        if unit.rule:
            lines.append(unit.first + Content.styled("─" * avail, "$foreground-muted"))
            continue
        body: list[Content] = []
        for raw in unit.content.split("\n"):
            if not raw:
                body.append(raw)
            elif unit.wrap:
                body.extend(raw.wrap(avail))
            else:
                body.extend(raw.fold(avail) if raw.cell_length > avail else [raw])
        for k, line in enumerate(body or [Content("")]):
            lines.append((unit.first if k == 0 else unit.rest) + line.rstrip())
    return Content("\n").join(lines)


def to_content(text: str, width: int) -> Content:
    return render(parse(text), width)


class RenderedText:
    """Finished messages as rendered Markdown, keyed by (text, width), shared by every
    widget that shows one: a subtask shown again (a switch back) mounts new widgets but
    does not parse its messages again. Bounded by characters held; streaming text (a
    new string each frame) never goes in."""

    def __init__(self, budget: int = 500_000) -> None:
        self.budget = budget
        self._items: OrderedDict[tuple[str, int], Content] = OrderedDict()
        self._chars = 0

    def get(self, text: str, width: int) -> Content | None:
        content = self._items.get((text, width))
        if content is not None:
            self._items.move_to_end((text, width))
        return content

    def render(self, text: str, width: int, units: "Callable[[], list[Unit]] | None" = None) -> Content:
        """``text`` rendered at ``width``: from here, else rendered (from ``units()``, a
        widget's own parse, or parsed now) and kept."""
        content = self.get(text, width)
        if content is None:
            content = render(units() if units is not None else parse(text), width)
            self.put(text, width, content)
        return content

    def keeps(self, text: str) -> bool:
        """Whether ``text`` is small enough to be kept (a huge one would push out the rest)."""
        return len(text) <= self.budget // 4

    def put(self, text: str, width: int, content: Content) -> None:
        if not self.keeps(text) or (text, width) in self._items:
            return
        self._items[(text, width)] = content
        self._chars += len(text)
        while self._chars > self.budget:
            (old, _), _ = self._items.popitem(last=False)
            self._chars -= len(old)


RENDERED = RenderedText()
