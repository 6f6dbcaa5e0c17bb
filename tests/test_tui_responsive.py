"""The session screen under load: a hidden screen defers its widget work, a subtask
switch and a frame of events take turns. Real Store (SQLite file), real app (pilot),
no sleeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.screen import Screen

from shepherd.core import events as ev
from shepherd.core.clock import FakeClock
from shepherd.core.store.db import Store
from tests.test_tui_session import T0, Clock, Writer, live_screen, loaded, until, views
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.blocks import BlockWidget, TextView, ToolCallView
from shepherd.tui.widgets.stream import StreamView


@pytest.fixture(autouse=True)
def _frozen_animation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ticker, "animate", False)


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "shepherd.db", clock=FakeClock(T0))
    yield s
    await s.close()


async def a_done_b_running(w: Writer) -> None:
    """Subtask a (its blocks written before) ends; b starts: the view follows b."""
    await w.add(ev.SubtaskFinished, subtask_id="a", status="done")
    await w.add(ev.SubtaskStarted, subtask_id="b", title="Subtask b")
    await w.add(ev.AttemptStarted, subtask_id="b", attempt=1)


def mounted_bids(screen) -> list[int]:
    """The blocks whose widgets are in the stream's DOM, in order."""
    return [w.block.bid for w in screen.stream.children if isinstance(w, BlockWidget)]


async def test_a_hidden_session_screen_renders_nothing_until_shown(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m1", text="first ")
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        mounts0, frames0 = screen.stream.mount_count, screen.frames
        await app.push_screen(Screen())  # e.g. another view on top: this one is hidden
        await pilot.pause()
        await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m1", text="and more")
        await w.add(ev.MessageCompleted, subtask_id="a", attempt=1, message_id="m1", text="")
        await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Read", input={"file_path": "x.py"})
        await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m2", text="second message")
        await screen.flush_now()
        await pilot.pause()
        # the model is current, the widgets did nothing
        assert [b.kind for b in screen.model.subtask("a").blocks][-3:] == ["text", "tool", "text"]
        assert screen.stream.mount_count == mounts0 and screen.frames == frames0
        assert [t.settled for t in views(screen, TextView)] == [False]

        app.pop_screen()
        await until(pilot, lambda: len(views(screen, TextView)) == 2 and
                    all(t.settled for t in views(screen, TextView)), "the catch-up frame")
        texts = views(screen, TextView)
        assert [t.source for t in texts] == ["first and more", "second message"]
        assert [v.block.name for v in views(screen, ToolCallView)] == ["Read"]
        assert screen.stream.mount_count - mounts0 == 2  # the new blocks only, once
        assert screen.frames == frames0 + 1



async def test_a_screen_hidden_through_many_blocks_shows_their_tail(store: Store,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Back on screen after a long time: the tail of the stream is mounted, as when the
    subtask is first shown, not every block that came meanwhile."""
    monkeypatch.setattr(StreamView, "SHOW_BLOCKS", 10)
    monkeypatch.setattr(StreamView, "MAX_BLOCKS", 20)
    monkeypatch.setattr(StreamView, "PRUNE_SLACK", 5)
    w = Writer(store)
    await w.start()
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        await app.push_screen(Screen())
        await pilot.pause()
        await w.notes(30)
        await screen.flush_now()
        mounts0 = screen.stream.mount_count
        app.pop_screen()
        blocks = screen.model.subtask("a").blocks

        def tail_shown() -> bool:
            bids = mounted_bids(screen)
            return bool(bids) and bids == [b.bid for b in blocks[-len(bids):]] and screen.frames > 0

        await until(pilot, tail_shown, "the tail shown")
        await pilot.pause()
        # the tail (topped up from the model while the view is not full), never every block
        assert 10 <= len(mounted_bids(screen)) <= StreamView.MAX_BLOCKS < len(blocks)
        assert screen.stream.mount_count - mounts0 <= StreamView.MAX_BLOCKS
        assert screen.stream.hidden_blocks == len(blocks) - len(mounted_bids(screen))
        assert screen.stream.widgets_blocks()[-1].text.endswith("n29")


async def test_a_frame_arriving_during_a_switch_is_shown_once(store: Store) -> None:
    """Events of the subtask being switched to, delivered while its stream is rebuilt,
    end up on screen exactly once (not lost, not a second, stale copy)."""
    w = Writer(store)
    await w.start()
    await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m1", text="in a")
    await w.add(ev.MessageCompleted, subtask_id="a", attempt=1, message_id="m1", text="")
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        # a second subtask with blocks of its own; the person looks at it
        await w.add(ev.SubtaskStarted, subtask_id="b", title="Subtask b")
        await w.add(ev.AttemptStarted, subtask_id="b", attempt=1)
        await w.add(ev.TextDelta, subtask_id="b", attempt=1, message_id="m2", text="in b")
        await screen.flush_now()
        await pilot.pause()
        screen.auto_follow = False
        assert screen.selected == "b"
        # a's agent says more; the frame is buffered when the person switches to a
        await w.add(ev.TextDelta, subtask_id="a", attempt=1, message_id="m3", text="later in a")
        assert screen._pending
        await asyncio.gather(screen._select("a"), screen.flush_now())
        await until(pilot, lambda: not screen._pending and len(views(screen, TextView)) == 2 and
                    all(t.settled for t in views(screen, TextView)), "the switch and the frame")
        blocks = screen.model.subtask("a").blocks
        assert mounted_bids(screen) == [b.bid for b in blocks] == list(screen.stream.widgets)
        assert [t.source for t in views(screen, TextView)] == ["in a", "later in a"]



def test_a_finished_message_is_rendered_once_for_every_widget_and_the_cache_is_bounded() -> None:
    from shepherd.tui import model as m
    from shepherd.tui.widgets.markdown import RENDERED, RenderedText

    done = m.TextBlock(bid=1, subtask_id="a", seq=1, ts=T0, text="**done** and - a list", completed=True)
    first = TextView(done)._content(40)
    assert TextView(done)._content(40) is first  # the widget of a switch back: not parsed again
    streaming = m.TextBlock(bid=2, subtask_id="a", seq=2, ts=T0, text="still typing")
    TextView(streaming)._content(40)
    assert RENDERED.get("still typing", 40) is None  # a new string each frame: never kept

    cache = RenderedText(budget=100)
    for i in range(20):  # 20 x 10 characters through a 100-character budget
        cache.put(f"message {i:2d}", 40, first)
    assert cache.get("message  0", 40) is None and cache.get("message 19", 40) is first
    assert sum(len(text) for text, _ in cache._items) <= 100


async def test_the_sessions_list_under_a_session_view_waits_until_shown(tmp_path: Path) -> None:
    """Commits while a session view covers the list do not re-read it (1,000 sessions
    every quarter second, for nobody); back on the list, it shows what changed."""
    from tests import tui_fixtures as fx
    from tests.test_tui_app import home_ready, wait_until
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["done"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        await app.open_session(fx.SESSION_IDS["done"])
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session view")
        await app.store.append(ev.SessionStarted(session_id="snew0000001", title="New run", backend="scripted"))
        await pilot.pause()
        await home._throttled_reload()  # what the throttle timer does after a commit
        assert home.row_ids() == [fx.SESSION_IDS["done"]]  # not re-read while hidden
        app.pop_screen()
        await wait_until(pilot, lambda: sorted(home.row_ids()) == sorted(["snew0000001", fx.SESSION_IDS["done"]]),
                         what="the new session listed")


async def test_switching_to_a_long_subtask_lays_it_out_at_its_end_at_once(store: Store) -> None:
    """The first layout after the switch already shows the end of the stream: not its
    head, with the end one more layout (and a visible jump) later."""
    w = Writer(store)
    await w.start()
    await w.notes(60)  # more blocks than the stream has rows
    await a_done_b_running(w)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        assert screen.selected == "b"
        seen: list[tuple[float, int]] = []
        stream = screen.stream
        screen.screen_layout_refresh_signal.subscribe(
            stream, lambda _: seen.append((stream.scroll_y, stream.max_scroll_y)), immediate=True)
        await screen._select("a")
        await until(pilot, lambda: seen and seen[-1][1] > 0, "the long stream laid out")
        first = next(s for s in seen if s[1] > 0)
        assert first[0] == first[1]  # the first layout with the long stream is at its end
        assert stream.following


async def test_a_switch_mounts_what_fills_the_view_not_every_block(store: Store) -> None:
    w = Writer(store)
    await w.start()
    await w.notes(80)
    await a_done_b_running(w)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        stream = screen.stream
        rows = stream.scrollable_content_region.height
        first_layout: list[int] = []
        screen.screen_layout_refresh_signal.subscribe(
            stream, lambda _: first_layout.append(len(stream.widgets))
            if not first_layout and stream.widgets and stream.subtask is screen.model.subtask("a") else None,
            immediate=True)
        await screen._select("a")
        blocks = screen.model.subtask("a").blocks
        await until(pilot, lambda: bool(first_layout) and stream.max_scroll_y > 0 and not stream._fill_asked,
                    "a laid out and its view full")
        await pilot.pause()
        assert first_layout[0] <= rows < len(blocks)  # the first frame did not wait for the rest
        assert mounted_bids(screen) == [b.bid for b in blocks[-len(stream.widgets):]]
        assert stream.hidden_blocks == len(blocks) - len(stream.widgets) > 0 and stream._bar.display
        assert stream.scroll_y == stream.max_scroll_y > 0  # still at the end


async def test_a_switch_to_long_messages_mounts_only_the_few_that_fill_the_view(store: Store) -> None:
    """Messages many rows tall: a handful fills the view, so a switch mounts those (each
    widget costs layout time), not SHOW_BLOCKS of them; the view is full and at its end."""
    w = Writer(store)
    await w.start()
    long = " ".join(["word"] * 600)  # ~3,000 characters: well over 10 rows at 120 columns
    for i in range(30):
        await w.add(ev.MessageCompleted, subtask_id="a", attempt=1, message_id=f"m{i}", text=f"{i} {long}")
    await a_done_b_running(w)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        stream = screen.stream
        await screen._select("a")
        await until(pilot, lambda: stream.max_scroll_y > 0 and not stream._fill_asked, "a laid out and full")
        await pilot.pause()
        texts = views(screen, TextView)
        assert 1 <= len(texts) < 10 < StreamView.SHOW_BLOCKS  # a few tall messages, not 20 of them
        assert texts[-1].block.text.startswith("29 ")
        assert stream.scroll_y == stream.max_scroll_y


async def test_a_switch_to_a_tail_taller_than_it_looks_is_laid_out_at_its_end_at_once(store: Store) -> None:
    """Short messages of several paragraphs each: the tail's row count is not known
    before layout (a lower bound says it may fit), yet there is more above it, so the
    first layout with it already shows its end."""
    w = Writer(store)
    await w.start()
    for i in range(40):
        await w.add(ev.MessageCompleted, subtask_id="a", attempt=1, message_id=f"m{i}",
                    text=f"{i} one\n\ntwo\n\nthree\n\nfour")
    await a_done_b_running(w)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        stream = screen.stream
        seen: list[tuple[float, int]] = []
        screen.screen_layout_refresh_signal.subscribe(
            stream, lambda _: seen.append((stream.scroll_y, stream.max_scroll_y)), immediate=True)
        await screen._select("a")
        await until(pilot, lambda: seen and seen[-1][1] > 0, "the stream laid out")
        first = next(s for s in seen if s[1] > 0)
        assert first[0] == first[1]  # at its end in the first layout, not the head first
        assert stream.hidden_blocks > 0 and stream.following


async def test_widgets_a_switch_removes_shed_what_they_rendered(store: Store) -> None:
    """A switch removes the old subtask's widgets as pruning does: each drops its render
    caches at once (a removed widget is a reference cycle, freed only by a full collection)."""
    w = Writer(store)
    await w.start()
    await w.notes(10)
    await a_done_b_running(w)
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        await screen._select("a")
        await until(pilot, lambda: len(views(screen, BlockWidget)) >= 10, "a shown")
        await pilot.pause()
        old = views(screen, BlockWidget)
        assert any(len(v._styles_cache._cache) for v in old)  # they rendered
        await screen._select("b")
        await pilot.pause()
        assert not any(v.is_attached for v in old)
        assert all(not v._styles_cache._cache for v in old)
