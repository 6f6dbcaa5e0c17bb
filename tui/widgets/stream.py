"""The stream of the selected subtask: block widgets in a scroll that follows the tail.

Only the selected subtask's blocks are mounted, at most ``MAX_BLOCKS`` of them (the
oldest are pruned as new ones arrive); earlier ones come back on demand: scrolling to
the top (``NeedEarlier``), ``u`` or a click on the bar. New blocks from one frame are
mounted in one ``mount_all``; changed blocks re-render in place. The first mounted
block is the subtask's ``pinned`` one: the model prunes nothing from there on.

``show_at`` opens the stream at one block (a search hit) instead of the tail: a window
around it; when more blocks follow than the window holds, a bar at the bottom says so and
they are mounted as the reader scrolls down (``windowed``: new blocks wait in the model
until the window reaches the end, then following works as usual); End shows the tail."""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

from textual.containers import VerticalScroll
from textual.content import Content
from textual.events import Click
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from shepherd.tui import model as m
from shepherd.tui.widgets.blocks import Clock, Expandable, TextView, widget_for
from shepherd.tui.widgets.markdown import RENDERED
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from textual._arrange import DockArrangeResult
    from textual.geometry import Size


class _PressBar(Static):
    """A one-line bar a click asks something of (its ``Pressed``)."""

    class Pressed(Message):
        pass

    def on_click(self, event: Click) -> None:
        event.stop()
        self.post_message(self.Pressed())


class EarlierBar(_PressBar):
    """The line at the top that says more is hidden; a click asks for it."""

    class Pressed(_PressBar.Pressed):
        pass

    DEFAULT_CSS = """
    EarlierBar { height: auto; width: 1fr; }
    """


class LaterBar(_PressBar):
    """The line at the bottom of a window opened at a block: more below; a click shows them."""

    class Pressed(_PressBar.Pressed):
        pass

    DEFAULT_CSS = """
    LaterBar { height: auto; width: 1fr; }
    """


class StreamView(CSSSection, VerticalScroll):
    CSS_SECTION = "stream"  # tui/css/stream.tcss

    class NeedEarlier(Message):
        """The reader scrolled to the top and there is more above; or (``fill``) what is
        mounted does not fill the view yet."""

        def __init__(self, fill: bool = False) -> None:
            super().__init__()
            self.fill = fill

    MAX_BLOCKS = 200  # mounted at most (older ones are pruned as new ones arrive)
    SHOW_BLOCKS = 20  # mounted when a subtask is shown (more follow while the view is not full), per "load earlier"
    PRUNE_SLACK = 50  # prune in steps, not on every new block
    JUMP_BEFORE = 10  # blocks mounted above the one ``show_at`` opens at
    # A removed block widget is a reference cycle (Textual's styles, caches, message pump)
    # that only a full collection frees, and the app raises the collector's thresholds
    # (tui.app): in a long stream pruned widgets piled up by the thousand (~100 KB each).
    # A pruned widget sheds its render caches at once (``_shed``), and every
    # COLLECT_EVERY pruned widgets (a dozen windows) one full collection runs: in a flood
    # about one every few seconds, at an agent's pace one every several minutes.
    COLLECT_EVERY = 3000
    gc_pauses: list[float] = []  # seconds each of those took (benchmarks)

    # scrollbar-gutter: one width for the text whether it overflows or not, so the
    # scrollbar's coming does not wrap every message again in a second layout pass
    DEFAULT_CSS = """
    StreamView { height: 1fr; scrollbar-gutter: stable; }
    """

    def __init__(self, clock: Clock = time.time, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.clock = clock
        self.subtask: m.SubtaskView | None = None
        self.widgets: dict[int, Widget] = {}  # bid -> mounted widget, in order
        self.more_events = False  # the store holds events older than the loaded page
        self.mount_count = 0  # block widgets created over this view's life (tests, benchmarks)
        self._bar = EarlierBar("", classes="earlier")
        self._follow_pending = True
        self._fill_asked = False  # a NeedEarlier(fill) is out: not again until it is answered
        self._pruned = 0  # widgets pruned since the last full collection
        self.windowed = False  # opened at a block (show_at) and blocks after the window are not mounted
        self._later: LaterBar | None = None
        self._reveal: Widget | None = None  # the block show_at opened at: kept at the top while the view fills

    def compose(self):
        yield self._bar

    def make_widget(self, block: m.Block) -> Widget:
        """The widget that shows ``block`` (a replay's stream shows some without their keys)."""
        return widget_for(block, self.clock)

    def on_mount(self) -> None:
        self._bar.display = False

    # Textual's anchor pins content to the bottom even when it fits the view; anchor
    # only once it overflows, so a short stream starts at the top. Once anchored, Textual
    # keeps the end in view as content grows, lets go when the user scrolls up and takes
    # hold again when they scroll back to the end. Content grows without a Resize event
    # (a reflow only resizes widgets whose region changed), so watch the virtual size:
    # whatever was appended or grew, the first overflow arms the anchor.
    def on_resize(self) -> None:
        self._maybe_anchor()

    def watch_virtual_size(self) -> None:
        self.call_after_refresh(self._maybe_anchor)  # the container size is set after this
        self.call_after_refresh(self._maybe_fill)

    def arrange(self, size: "Size", optimal: bool = False) -> "DockArrangeResult":
        """Decide the anchor on this layout's own sizes: the compositor reads it right
        after arranging. Deciding after the layout (``_maybe_anchor``) meant a first
        frame at the head of a tail that overflows and one or two more layouts to reach
        its end (a subtask switch took up to three)."""
        result = super().arrange(size, optimal)
        overflows = result.spatial_map.total_region.bottom > size.height - self.scrollbar_size_horizontal
        if self._follow_pending and overflows and not self.windowed:
            self._follow_pending = False
            self._anchored, self._anchor_released = True, False
        elif self._anchored and not self._anchor_released and not overflows:
            # everything fits (a block folded, a short subtask shown): anchored, it
            # would be pinned to the bottom of the view
            self._anchored, self._follow_pending = False, True
            self.set_reactive(StreamView.scroll_y, 0)
            self.set_reactive(StreamView.scroll_target_y, 0)
        return result

    def _maybe_anchor(self) -> None:
        if self._follow_pending and self.max_scroll_y > 0:
            self._follow_pending = False
            self.anchor()
        elif self.is_anchored and self.max_scroll_y <= 0:
            # everything fits again (a block folded, a short subtask shown): an anchor would
            # pin it to the bottom; wait for the next overflow instead
            self.anchor(False)
            self._follow_pending = True
            self.scroll_to(y=0, animate=False, immediate=True)

    def _tail(self, blocks: list[m.Block]) -> list[m.Block]:
        """The fewest last blocks that surely fill the view, by a lower bound of their
        rows (at most SHOW_BLOCKS). Each mounted widget costs layout time on every
        switch; an underestimate only means one more frame (``_maybe_fill``)."""
        limit = min(self.SHOW_BLOCKS, self.MAX_BLOCKS)
        region = self.scrollable_content_region
        if not region.height:  # not laid out yet: no size to fill
            return blocks[-limit:]
        width = region.width  # the same with a scrollbar or without (scrollbar-gutter)
        n = rows = 0
        for b in reversed(blocks):
            if n >= limit or rows >= region.height:
                break
            n += 1
            rows += _rows_at_least(b, width)
        return blocks[len(blocks) - n:]

    def _anchor_if_overflowing(self, rows_at_least: int) -> None:
        """Before mounting blocks that take at least ``rows_at_least`` rows in all: as
        many as the view has rows overflow for sure. Anchored now, the first layout
        already puts the end in view (not the head, then the end one more layout later);
        sizes read here would still be those of what was shown before."""
        rows = self.scrollable_content_region.height
        if self._follow_pending and rows and rows_at_least >= rows:
            self._follow_pending = False
            self.anchor()

    def _maybe_fill(self) -> None:
        """After a layout: a short tail that leaves the view part empty asks for more."""
        if self.windowed and self.max_scroll_y <= 0 and self.widgets:
            if not self._fill_asked:  # a short window: what follows it, first (once a layout)
                self._fill_asked = True
                self.call_later(self.show_later, None, True)
            return
        if (self.max_scroll_y <= 0 and not self._fill_asked and self.subtask is not None
                and len(self.widgets) < self.MAX_BLOCKS and self.hidden_blocks):
            # a short tail: mount what the model holds above until the view is full (the
            # store is only read when the reader asks: scrolling up, u, the bar)
            self._fill_asked = True
            self.post_message(self.NeedEarlier(fill=True))

    def filled(self) -> None:
        """The screen answered a NeedEarlier(fill): ask again if still not full."""
        self._fill_asked = False
        self._keep_revealed()
        self.call_after_refresh(self._maybe_fill)

    def _keep_revealed(self) -> None:
        if self._reveal is not None:
            self.call_after_refresh(self.scroll_to_widget, self._reveal, animate=False, top=True, immediate=True)

    @property
    def following(self) -> bool:
        """Whether new content scrolls into view (at the bottom, or everything fits)."""
        return self._follow_pending or (self.is_anchored and not self._anchor_released)

    # --- what is shown ---

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= 0 < old and not self.following and (self.hidden_blocks or self.more_events):
            self.post_message(self.NeedEarlier())
        elif self.windowed and new > old and new >= self.max_scroll_y:
            self.call_later(self.show_later)

    @property
    def hidden_blocks(self) -> int:
        """Blocks the model holds above the first mounted one."""
        if self.subtask is None:
            return 0
        first = next(iter(self.widgets.values()), None)
        if first is None:
            return len(self.subtask.blocks)
        try:
            return self.subtask.blocks.index(first.block)  # type: ignore[attr-defined]
        except ValueError:
            return 0

    @property
    def hidden_after(self) -> int:
        """Blocks the model holds below the last mounted one (only while ``windowed``)."""
        if self.subtask is None or not self.windowed:
            return 0
        last = next(reversed(self.widgets.values()), None)
        try:
            return len(self.subtask.blocks) - 1 - self.subtask.blocks.index(last.block)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            return 0

    def _pin(self) -> None:
        if self.subtask is not None:
            first = next(iter(self.widgets.values()), None)
            self.subtask.pinned = first.block if first is not None else None  # type: ignore[attr-defined]

    def _update_bar(self) -> None:
        self._pin()
        hidden = self.hidden_blocks
        if self.subtask is not None:
            self.more_events = self.subtask.has_earlier
        if hidden or self.more_events:
            what = f"{hidden} earlier block{'s' if hidden != 1 else ''}" if hidden else "earlier events"
            self._bar.update(Content.styled(f"↑ {what} — press u or click to load", "$foreground-muted italic"))
            self._bar.display = True
        else:
            self._bar.display = False
        if self._later is not None:
            after = self.hidden_after
            what = f"{after} later block{'s' if after != 1 else ''}"
            self._later.update(Content.styled(f"↓ {what} — scroll down or click to show, End for the latest",
                                              "$foreground-muted italic"))

    async def show(self, subtask: m.SubtaskView | None, *, more_events: bool = False) -> None:
        """Replace everything with the tail of ``subtask`` (SHOW_BLOCKS of it; more follow
        while the view is not full, the rest when the reader scrolls up)."""
        await self._clear(subtask, more_events)
        self._fill_asked = False
        self.anchor(False)
        self._follow_pending = True
        self.scroll_to(y=0, animate=False, immediate=True)
        if subtask is None:
            self._update_bar()
            return
        # follow pending: the first layout anchors the tail at its end if it overflows
        # (arrange); a tail too short is topped up from above until it does (_maybe_fill)
        await self._mount_blocks(self._tail(subtask.blocks))
        self._update_bar()
        self.call_after_refresh(self._maybe_fill)

    async def _clear(self, subtask: m.SubtaskView | None, more_events: bool) -> None:
        """Unmount every block (and the later bar): ``subtask`` is shown next."""
        self.more_events = more_events
        old = [w for w in self.children if w is not self._bar]
        self.widgets.clear()
        self.windowed, self._later, self._reveal = False, None, None
        await self._remove(old)
        if self.subtask is not None and self.subtask is not subtask:
            self.subtask.pinned = None  # not on screen any more: the model may prune it
        self.subtask = subtask

    async def show_at(self, subtask: m.SubtaskView, block: m.Block, *, more_events: bool = False) -> Widget | None:
        """Replace everything with a window of ``subtask`` around ``block`` (JUMP_BEFORE
        above it, SHOW_BLOCKS from it; to the end when little more follows), ``block`` at
        the top of the view. Nothing follows the tail: the reader moves from here (scrolling,
        u, End); a view the window does not fill gets what follows it (else what precedes
        it), the block staying at the top. Returns the block's widget."""
        await self._clear(subtask, more_events)
        self.anchor(False)
        self._follow_pending = False
        self._fill_asked = False
        blocks = subtask.blocks
        try:
            i = blocks.index(block)
        except ValueError:
            i = len(blocks) - 1
        start, end = max(0, i - self.JUMP_BEFORE), i + self.SHOW_BLOCKS
        if len(blocks) - end <= self.SHOW_BLOCKS:
            end = len(blocks)
        self.windowed = end < len(blocks)
        await self._mount_blocks(blocks[start:end])
        if self.windowed:
            self._later = LaterBar("", classes="later")
            await self.mount(self._later)
        self._update_bar()
        self._reveal = widget = self.widgets.get(block.bid)
        self._keep_revealed()
        self.call_after_refresh(self._maybe_fill)
        return widget

    async def show_later(self, count: int | None = None, fill: bool = False) -> int:
        """Mount up to ``count`` model blocks below the window; once it reaches the end
        the bar goes and the stream follows again when the reader is at its end.
        ``fill``: the view was not full (the block opened at stays at the top)."""
        if not self.windowed or self.subtask is None or not self.widgets:
            return 0
        blocks = self.subtask.blocks
        j = len(blocks) - self.hidden_after
        end = j + (count or self.SHOW_BLOCKS)
        if end >= len(blocks):
            end = len(blocks)
        more = blocks[j:end]
        widgets = [widget_for(b, self.clock) for b in more]
        for b, w in zip(more, widgets):
            self.widgets[b.bid] = w
        self.mount_count += len(widgets)
        await self.mount_all(widgets, before=self._later)
        if end >= len(blocks):
            later, self._later, self.windowed = self._later, None, False
            if later is not None:
                await self._remove([later])
            self._anchored, self._anchor_released = True, True  # armed: the end takes hold again
            self.resume_following_at_end()
        self._update_bar()
        if fill:
            self._fill_asked = False
            self._keep_revealed()
            self.call_after_refresh(self._maybe_fill)
        return len(widgets)

    async def action_scroll_end(self) -> None:
        """End: in a window opened at a block, to the subtask's tail (following again)."""
        if self.windowed and self.subtask is not None:
            await self.show(self.subtask, more_events=self.subtask.has_earlier)
            return
        super().action_scroll_end()

    def on_later_bar_pressed(self, message: LaterBar.Pressed) -> None:
        message.stop()
        self.call_later(self.show_later)

    async def add_blocks(self, blocks: list[m.Block]) -> None:
        """Blocks appended to the shown subtask since the last frame."""
        fresh = [b for b in blocks if b.bid not in self.widgets]
        if not fresh:
            return
        if self.windowed:  # below the window: they wait in the model (the later bar counts them)
            self._update_bar()
            return
        await self._mount_blocks(fresh)
        # prune only while following the tail: someone reading older blocks keeps them
        if len(self.widgets) > self.MAX_BLOCKS + self.PRUNE_SLACK and self.following:
            await self._prune()

    def update_blocks(self, blocks: list[m.Block]) -> int:
        n = 0
        for b in blocks:
            w = self.widgets.get(b.bid)
            if w is not None and w.sync():  # type: ignore[attr-defined]
                n += 1
        return n

    async def show_earlier(self, count: int | None = None, fill: bool = False) -> int:
        """Mount up to ``count`` model blocks above the first shown one; how many.
        ``fill``: the view was not full, so nothing moves (following goes on)."""
        hidden = self.hidden_blocks
        if self.subtask is None or hidden <= 0:
            return 0
        count = count or self.SHOW_BLOCKS
        start = max(0, hidden - count)
        blocks = self.subtask.blocks[start:hidden]
        widgets = [self.make_widget(b) for b in blocks]
        self.mount_count += len(widgets)
        top = next(iter(self.widgets.values()), None)
        # keep the dict in display order: earlier blocks first
        self.widgets = {**{b.bid: w for b, w in zip(blocks, widgets)}, **self.widgets}
        if not fill:
            self._follow_pending = False
            if self.is_anchored:
                self.release_anchor()
        else:
            self._anchor_if_overflowing(len(self.widgets))
        await self.mount_all(widgets, after=self._bar)
        self._update_bar()
        if top is not None and self.scroll_y <= 0 and not fill:
            # the reader stays where they were (no jump, no cascade of loads at the top)
            self.call_after_refresh(self.scroll_to_widget, top, animate=False, top=True, immediate=True)
        return len(widgets)

    async def drop_blocks(self, blocks: list[m.Block]) -> None:
        """Unmount these blocks' widgets (the model moved them: they come back in order)."""
        gone = [self.widgets.pop(b.bid) for b in blocks if b.bid in self.widgets]
        if gone:
            await self._remove(gone)
            self._update_bar()

    def set_more_events(self, more: bool) -> None:
        self.more_events = more
        self._update_bar()

    async def _mount_blocks(self, blocks: list[m.Block]) -> None:
        widgets = [self.make_widget(b) for b in blocks]
        for b, w in zip(blocks, widgets):
            self.widgets[b.bid] = w
        self.mount_count += len(widgets)
        await self.mount_all(widgets)
        self._pin()

    async def _prune(self) -> None:
        extra = len(self.widgets) - self.MAX_BLOCKS
        if extra <= 0:
            return
        gone = list(self.widgets)[:extra]
        widgets = [self.widgets.pop(bid) for bid in gone]
        self._update_bar()
        await self._remove(widgets)

    async def _remove(self, widgets: list[Widget]) -> None:
        """The one way block widgets leave (pruned, a new show, moved by a page): each
        sheds its render caches, and every COLLECT_EVERY of them one full collection runs
        (they are reference cycles; see COLLECT_EVERY)."""
        if not widgets:
            return
        await self.remove_children(widgets)
        for w in widgets:
            _shed(w)
        self._pruned += len(widgets)
        widgets.clear()  # no reference left here for the collection below
        if self._pruned >= self.COLLECT_EVERY:
            self._pruned = 0
            t = time.perf_counter()
            gc.collect()
            self.gc_pauses.append(time.perf_counter() - t)

    def on_expandable_unfolded(self, message: Expandable.Unfolded) -> None:
        message.stop()
        self.keep_in_view(message.block)

    def keep_in_view(self, widget: Widget) -> None:
        """A block the reader unfolded: once laid out, bring its head (and as much of it
        as fits) into view instead of jumping to the stream's end. Following goes on if
        that is still the end; else it resumes when the reader scrolls back down."""
        was_pending, self._follow_pending = self._follow_pending, False  # this growth is no append

        def reveal() -> None:
            if was_pending and not self.is_anchored:
                if self.max_scroll_y <= 0:  # still fits: wait for the first real overflow
                    self._follow_pending = True
                    return
                self._anchored, self._anchor_released = True, True  # armed; the end takes hold again
            tall = widget.outer_size.height > self.scrollable_content_region.height
            self.scroll_to_widget(widget, animate=False, top=tall, immediate=True)
            self.resume_following_at_end()

        self.call_after_refresh(reveal)

    def resume_following_at_end(self) -> None:
        """After a programmatic scroll (focus, reveal): still at the end means following."""
        if self.is_anchored and self._anchor_released and self.scroll_y >= self.max_scroll_y:
            self._anchor_released = False

    def focusable_blocks(self) -> list[Widget]:
        return [w for w in self.widgets.values() if w.can_focus]

    def block_widget(self, bid: int) -> Widget | None:
        return self.widgets.get(bid)

    def widgets_blocks(self) -> list[m.Block]:
        """The blocks on screen, in order."""
        return [w.block for w in self.widgets.values()]  # type: ignore[attr-defined]

    def scroll_to_seq(self, seq: int) -> None:
        """Bring the block that starts at event ``seq`` to the top (after paging back)."""
        for w in self.widgets.values():
            if w.block.seq >= seq:  # type: ignore[attr-defined]
                self._follow_pending = False
                if self.is_anchored:
                    self.release_anchor()
                self.scroll_to_widget(w, top=True, animate=False)
                return


def _shed(widget: Widget) -> None:
    """Drop what a removed block widget renders from: until a full collection frees its
    reference cycles, only its small skeleton stays (not lines, strips and parsed text)."""
    try:
        widget._styles_cache.clear()
        widget._render_cache = type(widget._render_cache)(widget._render_cache.size, [])
        widget._box_model_cache.clear()
        widget._clear_arrangement_cache()
        for name in ("_cache",):
            cache = getattr(widget, name, None)
            if isinstance(cache, dict):
                cache.clear()
        if hasattr(widget, "_units"):
            widget._units = None  # type: ignore[attr-defined]
    except Exception:  # a Textual without these caches: nothing to shed
        pass


def _rows_at_least(block: m.Block, width: int) -> int:
    """A lower bound of the rows a block's widget takes in a view ``width`` wide: one for
    any block; a finished message, its rendered rows (exact for the assistant's: a user's
    border makes it narrower still); a streaming one wraps at the view's width (Markdown
    joins its lines, drops some characters: half). An estimate too low mounts blocks that
    are never seen, each costing layout time on every switch (2.5 times the view's rows
    under a flood, by the old estimate for every message)."""
    if isinstance(block, m.TextBlock):
        if block.completed and RENDERED.keeps(block.text):  # (a huge one would be rendered twice)
            return TextView.finished_rows(block, width - TextView.GUTTER)
        return 1 + len(block.text) // max(2, 2 * width)
    return 1
