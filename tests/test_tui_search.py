"""The TUI's search (issue 14): the search screen from the home (`s`, every session) and in a
session (`/`, that session only), debounced queries in workers, stale results dropped, a hit
opened at its event (also deep in a big session), hostile stored text shown as data, and
`shepherd attach --at`. Real stores (SQLite files; PostgreSQL where `store_target` is used)
and the real app; the debounce timer is replaced by one the test fires."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from shepherd.core import events as ev
from shepherd.core.clock import FakeClock
from shepherd.core.store import open_store
from shepherd.tui.app import ShepherdApp
from shepherd.tui.screens.search import SearchScreen
from shepherd.tui.screens.session import SessionScreen
from shepherd.tui.screens.session_jump import HIT_CLASS
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.search_results import MATCH_STYLE
from tests import tui_fixtures as fx
from tests.cli_helpers import run
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401 - the fixtures

PAST = ["done", "failed", "cancelled"]  # finished shapes: the same on both stores (no recovery needed)
BIG = "sbig000000001"


@pytest.fixture(autouse=True)
def _frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(Ticker, "animate", False)
    monkeypatch.chdir(tmp_path)  # the database path is shown on screen
    yield
    monkeypatch.undo()
    time.tzset()


async def until(pilot: Any, cond: Any, what: str, rounds: int = 500) -> None:
    for _ in range(rounds):
        if cond():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for: {what}")


async def home_ready(pilot: Any) -> None:
    app = pilot.app
    await until(pilot, lambda: app.home is not None and app.home.loaded, "the home to load")
    await pilot.pause()


async def session_ready(pilot: Any) -> SessionScreen:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(),
                "the session view to load")
    await pilot.pause()
    return app.screen


async def search_for(pilot: Any, text: str) -> SearchScreen:
    """Type ``text`` in the search screen on top and press Enter; wait for its results."""
    screen = pilot.app.screen
    assert isinstance(screen, SearchScreen)
    await pilot.press(*text)
    await pilot.press("enter")
    await until(pilot, lambda: screen.shown_query == text, f"results for {text!r}")
    await pilot.pause()
    return screen


def plain_hits(screen: SearchScreen) -> list[str]:
    return [t.plain for t in screen.results.rendered()]


def on_screen(screen: SessionScreen, widget: Any) -> bool:
    """The widget's rows lie (at least partly) in the stream's visible region."""
    r, view = widget.region, screen.stream.region
    return bool(r.height) and r.y < view.bottom and r.bottom > view.y


def hit_widget(screen: SessionScreen) -> Any:
    marked = [w for w in screen.stream.widgets.values() if w.has_class(HIT_CLASS)]
    assert len(marked) == 1, marked
    return marked[0]


async def big_session(store: Any, n_rounds: int = 620) -> dict[str, int]:
    """A session of ~3,000 events (one subtask): rounds of a call and a message; a few
    words of its own in early, middle and late tool outputs. Returns word -> its seq."""
    ts = fx.T0
    sub = {"subtask_id": "work", "attempt": 1, "session_id": BIG}

    def at() -> float:
        nonlocal ts
        ts += 0.5
        return ts

    store.submit(ev.SessionStarted(session_id=BIG, ts=at(), title="A long session", backend="scripted"))
    store.submit(ev.PlanReady(session_id=BIG, ts=at(), subtasks=[{"id": "work", "title": "Work", "prompt": "p"}]))
    store.submit(ev.SubtaskStarted(ts=at(), title="Work", **sub))
    store.submit(ev.AttemptStarted(ts=at(), **sub))
    words = {i: w for i, w in {5: "aardvark", 250: "bonobo", n_rounds - 3: "caracal"}.items() if i < n_rounds}
    for i in range(n_rounds):
        store.submit(ev.ToolStarted(ts=at(), call_id=f"c{i}", name="read_file", input={"path": f"f{i}.py"}, **sub))
        store.submit(ev.ToolFinished(ts=at(), call_id=f"c{i}", status="ok", output=f"line {i} {words.get(i, 'x')}",
                                     **sub))
        store.submit(ev.TextDelta(ts=at(), message_id=f"m{i}", text=f"step {i}", **sub))
        store.submit(ev.MessageCompleted(ts=at(), message_id=f"m{i}", text=f"step {i}", **sub))
        store.submit(ev.Usage(ts=at(), input_tokens=10, output_tokens=2, **sub))
    store.submit(ev.SubtaskFinished(ts=at(), status="done", **sub))
    store.submit(ev.SessionFinished(session_id=BIG, ts=at(), status="done"))
    await store.flush()
    found = {}
    for w in words.values():
        hits = await store.search(w)
        found[w] = hits[0].seq
    return found


# --- the home's search, on both stores --------------------------------------------------------


async def test_home_search_finds_hits_and_enter_opens_the_session_at_the_hit(store_target) -> None:
    store = await open_store(store_target, clock=FakeClock(fx.T0))
    try:
        ids = await fx.populate(store, PAST)
    finally:
        await store.close()
    app = ShepherdApp(store_target, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 36)) as pilot:
        await home_ready(pilot)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search screen")
        await pilot.press("escape")  # esc closes it (the query field has the focus)
        await until(pilot, lambda: app.screen is app.home, "back home")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search screen")
        assert "all sessions" in str(app.screen.query_one("#search-title").render())
        screen = await search_for(pilot, "wrote")
        hits = screen.results.hits
        assert [(h.session_id, h.type, h.subtask_id) for h in hits] == [(ids["done"], "tool.finished", "fix")]
        line = plain_hits(screen)[0]
        assert "Demo: fix the date parser" in line and ids["done"][:8] in line and "wrote 312 bytes" in line
        match = screen.results.rendered()[0]
        assert [match.plain[s.start:s.end] for s in match.spans if s.style == MATCH_STYLE] == ["wrote"]
        # a word every session has: hits from several, newest first
        await pilot.press(*["backspace"] * 5)
        screen = await search_for(pilot, "auth")
        assert {h.session_id for h in screen.results.hits} == {ids["failed"]}
        await pilot.press(*["backspace"] * 4)
        screen = await search_for(pilot, "nowhere to be found")
        assert screen.results.hits == [] and "no matches" in str(screen.query_one("#search-status").render())
        await pilot.press(*["backspace"] * len("nowhere to be found"))
        screen = await search_for(pilot, "wrote")
        await pilot.press("down", "enter")  # to the hits; Enter opens the first
        view = await session_ready(pilot)
        assert view.at_seq == hits[0].seq, (view.at_seq, view.jumped)
        assert view.session_id == ids["done"] and view.selected == "fix"
        seq, block = view.jumped
        assert seq == hits[0].seq and block.kind == "tool" and block.call_id == "c3"
        widget = hit_widget(view)
        assert widget.block is block and on_screen(view, widget) and app.focused is widget


async def test_a_hit_far_before_the_last_page_opens_with_its_block_on_screen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SessionScreen, "PAGE_SIZE", 200)  # ~15 pages: the early hit is 14 pages back
    db = tmp_path / "big.db"
    store = await open_store(db, clock=FakeClock(fx.T0))
    try:
        await fx.populate(store, PAST)
        words = await big_session(store)
        last = await store.last_seq(BIG)
    finally:
        await store.close()
    assert last > 3000 and last - words["aardvark"] > 10 * SessionScreen.PAGE_SIZE
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 36)) as pilot:
        await home_ready(pilot)
        for word, turn in (("aardvark", 5), ("bonobo", 250), ("caracal", 617)):
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search screen")
            screen = await search_for(pilot, word)
            assert [h.seq for h in screen.results.hits] == [words[word]]
            await pilot.press("down", "enter")
            view = await session_ready(pilot)
            assert view.session_id == BIG and view.selected == "work"
            seq, block = view.jumped
            assert seq == words[word] and block.call_id == f"c{turn}"
            widget = hit_widget(view)
            await pilot.pause()
            assert on_screen(view, widget), word
            assert f"line {turn} {word}" in widget.block.output
            if word == "aardvark":  # the early page was read from the store, not everything before it
                assert view.stream.windowed and view.stream.hidden_after > 0
                n = len(view.stream.widgets)
                view.stream.scroll_end(animate=False, immediate=True)  # scrolling down mounts what follows
                await until(pilot, lambda: len(view.stream.widgets) > n, "later blocks mounted")
                await pilot.press("end")  # End: the tail, following again
                await until(pilot, lambda: not view.stream.windowed and view.stream.following, "the tail")
                assert list(view.stream.widgets.values())[-1].block is view.model.subtasks["work"].blocks[-1]
            elif word == "caracal":
                assert not view.stream.windowed  # near the end: the window reaches the tail
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.home, "back home")


async def test_attach_at_opens_the_app_at_the_event(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    store = await open_store(db, clock=FakeClock(fx.T0))
    try:
        words = await big_session(store, n_rounds=120)
    finally:
        await store.close()
    app = ShepherdApp(db, open_session=BIG, attach=True, at_seq=words["aardvark"], clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await session_ready(pilot)
        assert view.jumped is not None and view.jumped[1].call_id == "c5"
        assert on_screen(view, hit_widget(view))


def test_attach_at_refuses_an_event_the_session_does_not_have(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    fx.build_db(db, ["done"])
    sid = fx.SESSION_IDS["done"]
    for at, says in (("99999", f"session {sid} has"), ("0", "not an event number"), ("x", "not an event number")):
        r = run("--db", str(db), "attach", sid, "--at", at)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (at, r.stderr)


# --- in a session: `/` ---------------------------------------------------------------------------


async def test_slash_searches_only_this_session_and_jumps_within_the_view(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await fx.build_db_async(db, [*PAST, "stuck"])
    done = fx.SESSION_IDS["done"]
    app = ShepherdApp(db, open_session=done, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await session_ready(pilot)
        assert view.selected == "notes"
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search screen")
        title = str(app.screen.query_one("#search-title").render())
        assert "this session" in title and "Demo: fix the date parser" in title
        # "project" is in this session and in the stuck one: only this one's hit is listed
        every = await app.store.search("project")
        assert {h.session_id for h in every} == {done, fx.SESSION_IDS["stuck"]}
        screen = await search_for(pilot, "project")
        assert [h.session_id for h in screen.results.hits] == [done]
        assert "#" in plain_hits(screen)[0] and "Demo: fix" not in plain_hits(screen)[0]  # no session column
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.screen is view and view.jumped is not None, "the jump")
        await pilot.pause()
        assert view.selected == "explore" and view.jumped[0] == every[-1].seq
        assert view.jumped[1].kind == "text" and on_screen(view, hit_widget(view))
        # a second search, in the same view: another subtask's event
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), "the search screen")
        screen = await search_for(pilot, "wrote")
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.screen is view and view.jumped[1].kind == "tool", "the second jump")
        await pilot.pause()
        assert view.selected == "fix" and view.jumped[1].call_id == "c3" and on_screen(view, hit_widget(view))


# --- the screen alone: debounce, stale results, hostile text ----------------------------------------


class Timers:
    """A debounce timer the test fires (no real time passes)."""

    def __init__(self) -> None:
        self.pending: list[list[Any]] = []  # [delay, callback, stopped]

    def __call__(self, delay: float, callback: Any) -> "Timers.Handle":
        entry = [delay, callback, False]
        self.pending.append(entry)
        return Timers.Handle(entry)

    class Handle:
        def __init__(self, entry: list[Any]) -> None:
            self.entry = entry

        def stop(self) -> None:
            self.entry[2] = True

    def live(self) -> list[list[Any]]:
        return [e for e in self.pending if not e[2]]

    def fire(self) -> None:
        for e in self.live():
            e[2] = True
            e[1]()


class GatedStore:
    """A real store whose search for one query waits until the test lets it go."""

    def __init__(self, store: Any, slow: str) -> None:
        self.store = store
        self.slow = slow
        self.gate = asyncio.Event()
        self.asked: list[str] = []

    async def search(self, query: str, **kw: Any) -> Any:
        self.asked.append(query)
        if query == self.slow:
            await self.gate.wait()
        return await self.store.search(query, **kw)

    async def get_session(self, sid: str) -> Any:
        return await self.store.get_session(sid)


class SearchApp(App[None]):

    def __init__(self, screen: SearchScreen) -> None:
        super().__init__()
        self.search_screen = screen

    def on_mount(self) -> None:
        self.push_screen(self.search_screen)


async def test_typing_is_debounced_and_an_older_query_s_results_never_overwrite_newer_ones(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "s.db", clock=FakeClock(fx.T0))
    try:
        ids = await fx.populate(store, PAST)
        gated = GatedStore(store, slow="auth")
        timers = Timers()
        screen = SearchScreen(gated, clock=lambda: fx.NOW, schedule=timers)
        async with SearchApp(screen).run_test(size=(100, 24)) as pilot:
            await pilot.pause()
            await pilot.press(*"aut")
            assert gated.asked == [] and len(timers.live()) == 1  # one timer, restarted per key
            assert [e[0] for e in timers.pending] == [0.15] * 3
            await pilot.press("h")
            timers.fire()  # the person stopped typing: "auth" (slow) goes out
            await until(pilot, lambda: gated.asked == ["auth"], "the first query")
            await pilot.press(*["backspace"] * 4, *"wrote")
            timers.fire()
            await until(pilot, lambda: screen.shown_query == "wrote", "the newer results")
            assert gated.asked == ["auth", "wrote"]
            assert [h.session_id for h in screen.results.hits] == [ids["done"]]
            gated.gate.set()  # the older query answers last...
            for _ in range(20):
                await pilot.pause()
            # ... and is dropped
            assert screen.shown_query == "wrote" and [h.session_id for h in screen.results.hits] == [ids["done"]]
            # a query with no word in it is said so, plainly, without asking the store
            await pilot.press(*["backspace"] * 5, *'"*-')
            timers.fire()
            await pilot.pause()
            assert "nothing to look for" in str(screen.query_one("#search-status").render())
            assert gated.asked == ["auth", "wrote"] and screen.results.hits == []
    finally:
        await store.close()


HOSTILE = "\x1b[2J\x1b]52;c;ZXZpbA==\x07 [bold red]boom[/bold red] \u202eevil\u202c \x9b31m wombat here"


async def test_hostile_text_in_a_hit_is_shown_as_data(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "s.db", clock=FakeClock(fx.T0))
    try:
        sid = "shostile00001"
        common = {"session_id": sid, "subtask_id": "a", "attempt": 1}
        await store.append(ev.SessionStarted(session_id=sid, title="[link=http://x]t[/link] \x1b]0;pwned\x07",
                                             backend="scripted", ts=fx.T0))
        await store.append(ev.ToolFinished(call_id="c1", output=HOSTILE, ts=fx.T0 + 1, **common))
        screen = SearchScreen(store, clock=lambda: fx.NOW, query="wombat")
        async with SearchApp(screen).run_test(size=(160, 24)) as pilot:
            await until(pilot, lambda: screen.shown_query == "wombat", "the results")
            await pilot.pause()
            text = screen.results.rendered()[0]
            shown = text.plain
            for raw in ("\x1b", "\x07", "\u202e", "\u202c", "\x9b"):
                assert raw not in shown, repr(raw)
            assert "[bold red]boom[/bold red]" in shown and "[link=http://x]t[/link]" in shown  # literal text
            assert {str(s.style) for s in text.spans} <= {MATCH_STYLE, "bold", "dim", "cyan", "magenta", ""}
            assert [shown[s.start:s.end] for s in text.spans if s.style == MATCH_STYLE] == ["wombat"]
            lines = screen.app.export_screenshot()
            assert "\x1b]52" not in lines and "\u202e" not in lines and "pwned\x07" not in lines
    finally:
        await store.close()


# --- snapshots (tests/__snapshots__/test_tui_search/) -----------------------------------------------


def _snap_app(open_shape: str | None = None) -> ShepherdApp:
    db = Path("shepherd.db")
    fx.build_db(db, ["done", "failed", "cancelled", "live", "retry", "stuck", "interrupted"])
    return ShepherdApp(db, open_session=fx.SESSION_IDS[open_shape] if open_shape else None, clock=lambda: fx.NOW)


def test_snapshot_home_search(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await home_ready(pilot)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen), "the search screen")
        await search_for(pilot, "project")

    assert snap_compare(_snap_app(), terminal_size=(120, 30), run_before=run_before)


def test_snapshot_in_session_search(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await session_ready(pilot)
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen), "the search screen")
        await search_for(pilot, "dates")

    assert snap_compare(_snap_app("done"), terminal_size=(120, 30), run_before=run_before)


def test_block_at_finds_an_event_by_its_call_its_message_or_its_place() -> None:
    from shepherd.tui import model as m
    from shepherd.tui.model.locate import block_at

    blocks = [m.AttemptBlock(bid=1, subtask_id="a", seq=3, ts=0),
              m.ToolBlock(bid=2, subtask_id="a", seq=4, ts=0, call_id="c1"),
              m.TextBlock(bid=3, subtask_id="a", seq=5, ts=0, message_id="m1"),
              m.NoteBlock(bid=4, subtask_id="a", seq=9, ts=0)]
    assert block_at(blocks, 8, call_id="c1") is blocks[1]  # the call's finish, after the text began
    assert block_at(blocks, 7, message_id="m1") is blocks[2]
    assert block_at(blocks, 9) is blocks[3]  # its own block
    assert block_at(blocks, 8) is blocks[2]  # an event with no block of its own: the one before it
    assert block_at(blocks, 1) is blocks[0] and block_at([], 5) is None
