"""A subtask switch: what it mounts, where its first frame is, what a frame repaints.
Real Store (SQLite file), real app (pilot), no sleeps. The figures these shapes buy are
``bench/ui_bench.py``'s (a switch under a flood of events), not asserted here."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from textual.geometry import Offset

from shepherd.core import events as ev
from shepherd.core.store.db import Store
from textual.widgets._footer import FooterKey

from shepherd.tui.widgets.blocks import BlockWidget, TextView
from shepherd.tui.widgets.footer import KeyFooter
from shepherd.tui.widgets.subtasks import SubtaskList, SubtaskPane
from shepherd.tui.screens.session import SessionScreen
from tests.test_tui_session import (  # noqa: F401 - store and _frozen_animation are fixtures
    SID, Clock, Harness, Writer, _frozen_animation, live_screen, loaded, store, until)

PROSE = ("The parser reads the date, then the time; a missing zone means UTC and a bad month "
         "is an error the caller sees. ") * 6  # ~660 characters: several rows at any width here


def list_text(n: int) -> str:
    """Few characters, many rows: a Markdown list of ``n`` one-word items."""
    return "\n".join(f"- item{i}" for i in range(n))


async def messages(w: Writer, subtask: str, texts: list[str], *, complete: bool = True) -> None:
    for i, text in enumerate(texts):
        mid = f"{subtask}-m{i}"
        await w.add(ev.TextDelta, subtask_id=subtask, attempt=1, message_id=mid, text=text)
        if complete:
            await w.add(ev.MessageCompleted, subtask_id=subtask, attempt=1, message_id=mid, text="")


async def start_b(w: Writer) -> None:
    """Subtask a is done; b runs (the view follows it: a switch back to a is the test)."""
    await w.add(ev.SubtaskFinished, subtask_id="a", status="done")
    await w.add(ev.SubtaskStarted, subtask_id="b", title="Subtask b")
    await w.add(ev.AttemptStarted, subtask_id="b", attempt=1)
    await w.add(ev.TextDelta, subtask_id="b", attempt=1, message_id="b1", text="working on b")


def mounted(screen: Any) -> list[BlockWidget]:
    return [c for c in screen.stream.children if isinstance(c, BlockWidget)]


@asynccontextmanager
async def first_frame_of_a(store: Store, texts: list[str], complete: bool = True) -> AsyncIterator[tuple[Any, tuple[float, int]]]:
    """Subtask a holds ``texts``; b runs and is followed; up switches to a. Yields the
    screen and (scroll row, furthest row) of the first frame that showed a's blocks."""
    w = Writer(store)
    await w.start()
    await messages(w, "a", texts, complete=complete)
    await start_b(w)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, screen)
        await until(pilot, lambda: screen.selected == "b", "b followed")
        frames = [(y, top) for y, top, subs in await switch_to_a(pilot, screen) if subs == {"a"}]
        yield screen, frames[0]


async def switch_to_a(pilot: Any, screen: Any) -> list[tuple[float, int, set[str]]]:
    """Press up (b -> a) and record, at every layout until a is shown, the stream's
    scroll position, its furthest position and the subtasks of its mounted blocks."""
    seen: list[tuple[float, int, set[str]]] = []
    stream = screen.stream

    def layout(_: Any) -> None:
        seen.append((stream.scroll_y, stream.max_scroll_y, {b.block.subtask_id for b in mounted(screen)}))

    screen.screen_layout_refresh_signal.subscribe(stream, layout, immediate=True)
    await pilot.press("up")
    await until(pilot, lambda: screen.selected == "a" and any(s == {"a"} for *_, s in seen), "a shown")
    await pilot.pause()
    return seen


def bar(screen: Any) -> list[tuple[Any, ...]]:
    """The key bar as shown: each key's text and state, in order."""
    return [(k.key, k.key_display, k.description, k.action, k.has_class("-disabled"), k.tooltip)
            for k in screen.query_one(KeyFooter).children if isinstance(k, FooterKey)]


def o_enabled(screen: Any) -> bool | None:
    """Whether the bar's "o" is enabled (None: not in the bar)."""
    return next((not disabled for key, *_, disabled, _tip in bar(screen) if key == "o"), None)


async def test_a_switch_keeps_the_footer_keys_and_dims_what_does_not_apply(store: Store) -> None:
    """Subtask a has a tool call (so "o" opens its output), b has none: a switch between
    them dims or lights "o" and leaves every key of the bar in place, the same widgets
    (recomposing the bar, or mounting one key, laid the screen out again on every
    switch), and the bar is the one a rebuild from the bindings would make."""
    w = Writer(store)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Read", input={"file_path": "d.py"})
    await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="ok", output="x", duration_s=0.1)
    await start_b(w)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, screen)
        await until(pilot, lambda: screen.selected == "b" and o_enabled(screen) is False, "b's keys")
        for key, sub, enabled in (("up", "a", True), ("down", "b", False), ("up", "a", True)):
            before = list(screen.query(FooterKey))
            await pilot.press(key)
            await until(pilot, lambda: screen.selected == sub and o_enabled(screen) is enabled, f"{sub}'s keys")
            await pilot.pause()
            assert [id(k) for k in screen.query(FooterKey)] == [id(k) for k in before], "the bar was rebuilt"
            shown = bar(screen)
            await screen.query_one(KeyFooter).build()  # a rebuild from the bindings as they are
            assert bar(screen) == shown


async def test_a_switch_to_an_overflowing_tail_shows_its_end_in_its_first_frame(store: Store) -> None:
    """Streaming messages that are short in characters but long in rows (lists): no
    estimate before the layout sees they overflow. The anchor is decided in the layout
    itself, so the first frame that shows them is at their end, not at their head with
    one or two more layouts to reach it."""
    async with first_frame_of_a(store, [list_text(14) for _ in range(4)], complete=False) as (screen, (y, top)):
        assert top > 0, "the tail must overflow the view for this test to mean anything"
        assert y == top, f"first frame of a at row {y} of {top}: not at its end"
        assert screen.stream.following


async def test_a_switch_mounts_only_the_blocks_that_fill_the_view(store: Store) -> None:
    """Finished messages are counted in rendered rows before they are mounted: the tail
    is the fewest blocks that fill the view (one fewer would not), not twice as many
    by a guess from their length. Every mounted widget costs layout time on a switch."""
    async with first_frame_of_a(store, [PROSE] * 30) as (screen, (y, top)):
        assert y == top > 0  # at the end from the first frame
        widgets = mounted(screen)
        view = screen.stream.scrollable_content_region.height
        heights = [wd.outer_size.height for wd in widgets]
        assert sum(heights) >= view, "the view is full"
        assert sum(heights[1:]) < view, f"{len(widgets)} blocks mounted ({heights}) where {len(widgets) - 1} fill {view} rows"
        # the rows counted before mounting are the rows the layout gave
        for wd in widgets:
            if isinstance(wd, TextView):
                assert TextView.finished_rows(wd.block, wd.content_size.width) == wd.content_size.height


async def test_a_message_keeps_its_width_when_the_stream_starts_to_overflow(store: Store) -> None:
    """The stream keeps room for its scrollbar (scrollbar-gutter): when it starts to
    overflow, no message wraps again in a second layout pass."""
    w = Writer(store)
    await w.start(subtasks=("a",))
    await messages(w, "a", ["a short first message"])
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, screen)
        first = mounted(screen)[0]
        width = first.content_size.width
        assert screen.stream.max_scroll_y == 0 and not screen.stream.show_vertical_scrollbar
        await messages(w, "a", [PROSE] * 6)
        await screen.flush_now()
        await until(pilot, lambda: screen.stream.max_scroll_y > 0, "the stream overflows")
        await pilot.pause()
        assert screen.stream.show_vertical_scrollbar
        assert first.is_attached and first.content_size.width == width


async def test_the_subtask_list_is_as_tall_as_its_lines(store: Store) -> None:
    """A spinner's frame or a switch repaints the list's lines, not the empty rows of its
    column below them; the column still fills the height, and a click there focuses the
    list as a click on it would."""
    w = Writer(store)
    await w.start()
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, screen)
        lst, pane = screen.query_one(SubtaskList), screen.query_one(SubtaskPane)
        assert lst.outer_size.height == len(screen.model.subtasks) == 3
        assert pane.outer_size.height == screen.query_one("#session-body").outer_size.height
        screen.stream.focus()
        await pilot.pause()
        assert not lst.has_focus
        await pilot.click(SubtaskPane, offset=Offset(2, pane.outer_size.height - 2))
        assert lst.has_focus


async def test_two_quick_moves_in_the_list_show_the_last_and_then_rest(store: Store) -> None:
    """Two key presses before the first switch is done queue two highlight messages.
    Showing the first (stale) one moved the highlight back, which queued another: the
    two ping-ponged for ever at full CPU (found in tmux: Up Up, then no key answered)."""
    w = Writer(store)
    await w.start()
    await messages(w, "a", [PROSE] * 3)
    await start_b(w)
    await messages(w, "b", [PROSE] * 3)
    await w.add(ev.SubtaskFinished, subtask_id="b", status="done")
    await w.add(ev.SubtaskStarted, subtask_id="c", title="Subtask c")
    await w.add(ev.AttemptStarted, subtask_id="c", attempt=1)
    await messages(w, "c", [PROSE] * 3)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, screen)
        await until(pilot, lambda: screen.selected == "c", "c followed")
        lst = screen.query_one(SubtaskList)
        lst.highlighted, lst.highlighted = 1, 0  # b, then a: both messages queued at once
        await until(pilot, lambda: screen.selected == "a", "a shown")
        mounts = screen.stream.mount_count
        for _ in range(30):
            await pilot.pause()
        assert screen.selected == "a" and lst.highlighted == 0
        assert {wd.block.subtask_id for wd in mounted(screen)} == {"a"}
        assert screen.stream.mount_count == mounts, "the view is still being switched back and forth"


def test_a_huge_finished_message_is_not_rendered_to_be_counted(monkeypatch: Any) -> None:
    """Counting a tail renders its finished messages into the shared cache, which its
    widgets then read. A message too big for that cache is counted by the cheap bound
    instead: rendered to be counted, it would be rendered again by its widget."""
    from shepherd.tui import model as m
    from shepherd.tui.widgets import markdown as md
    from shepherd.tui.widgets import stream

    rendered: list[int] = []
    real = md.render
    monkeypatch.setattr(md, "render", lambda units, width: rendered.append(width) or real(units, width))
    small = m.TextBlock(bid=1, subtask_id="a", seq=1, ts=0.0, attempt=1, text=PROSE, completed=True)
    huge = m.TextBlock(bid=2, subtask_id="a", seq=2, ts=0.0, attempt=1, text=PROSE * 400, completed=True)
    assert md.RENDERED.keeps(small.text) and not md.RENDERED.keeps(huge.text)
    assert stream._rows_at_least(huge, 80) >= 30  # still more rows than a view: it fills it
    assert rendered == []
    assert stream._rows_at_least(small, 80) == TextView.finished_rows(small, 80 - TextView.GUTTER) > 1


async def test_a_switch_in_a_past_session_lights_the_keys_of_what_it_shows(store: Store) -> None:
    """A finished session gets no frames after it opens, so nothing but the switch itself
    asks for the key bar again: after each switch the bar is the one for the subtask now
    on screen ("o" lit: a has a tool call; dimmed in b). (It fails without the switch's
    own refresh; it does not tell asking before the show from asking after it.)"""
    w = Writer(store)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Read", input={"file_path": "d.py"})
    await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="ok", output="x", duration_s=0.1)
    await start_b(w)
    await w.add(ev.SubtaskFinished, subtask_id="b", status="done")
    await w.add(ev.SessionFinished, status="done")
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    async with Harness(screen).run_test(size=(120, 30)) as pilot:
        await loaded(pilot, screen)
        screen.set_focus(screen.subtask_list)
        assert screen.selected == "b" and o_enabled(screen) is False  # (the list: a, b, c)
        for key, sub, enabled in (("up", "a", True), ("down", "b", False), ("up", "a", True)):
            await pilot.press(key)
            await until(pilot, lambda: screen.selected == sub, f"{sub} shown")
            for _ in range(5):
                await pilot.pause()
            assert o_enabled(screen) is enabled, f"the bar after the switch to {sub} has the old subtask's keys"
