"""Big sessions in the session view: the model keeps a window of blocks, the rest comes
back from the store (a real SQLite file) when the reader scrolls to it or picks it.
Small windows (50 blocks) over ~1,600 events; no sleeps, pilot.pause() only."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from shepherd.core import events as ev
from shepherd.core.clock import FakeClock
from shepherd.core.store.db import Store
from shepherd.tui import model as m
from shepherd.tui.history import load_earlier_blocks
from shepherd.tui.screens.session import SessionScreen
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.stream import StreamView

from tests.test_tui_session import SID, T0, Clock, Harness, Recorder, loaded, until


@pytest.fixture(autouse=True)
def _frozen_animation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ticker, "animate", False)


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m.SessionModel, "MAX_BLOCKS", 50)
    monkeypatch.setattr(m.SessionModel, "PRUNE_SLACK", 10)
    monkeypatch.setattr(StreamView, "MAX_BLOCKS", 40)
    monkeypatch.setattr(StreamView, "PRUNE_SLACK", 5)
    monkeypatch.setattr(StreamView, "SHOW_BLOCKS", 30)  # more than a screen (36 rows)


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "shepherd.db", clock=FakeClock(T0))
    yield s
    await s.close()


def script(rounds: dict[str, int], finish: bool = True) -> list[ev.Event]:
    """Per subtask, rounds of: a call started, a message streamed around its finish
    (so blocks overlap every page and prune boundary), usage."""
    ts = T0
    out: list[ev.Event] = []

    def add(cls: type[ev.Event], **kw: Any) -> None:
        nonlocal ts
        ts += 0.5
        out.append(cls(session_id=SID, ts=ts, **kw))

    add(ev.SessionStarted, title="Big", backend="scripted")
    add(ev.PlanReady, subtasks=[{"id": s, "title": f"Subtask {s}", "prompt": "p"} for s in rounds])
    for sub, n in rounds.items():
        c = {"subtask_id": sub, "attempt": 1}
        add(ev.SubtaskStarted, subtask_id=sub, title=f"Subtask {sub}")
        add(ev.AttemptStarted, **c)
        for i in range(n):
            add(ev.ToolStarted, **c, call_id=f"{sub}c{i}", name="Read", input={"file_path": f"f{i}.py"})
            add(ev.TextDelta, **c, message_id=f"{sub}m{i}", text=f"x{i} ")
            add(ev.TextDelta, **c, message_id=f"{sub}m{i}", text=f"y{i} ")
            add(ev.ToolFinished, **c, call_id=f"{sub}c{i}", status="ok", output=f"out{i}")
            add(ev.TextDelta, **c, message_id=f"{sub}m{i}", text=f"z{i}")
            add(ev.MessageCompleted, **c, message_id=f"{sub}m{i}", text="")
            add(ev.Usage, **c, input_tokens=10, output_tokens=2, cost_usd=0.001)
        if finish:
            add(ev.SubtaskFinished, **c, status="done")
    if finish:
        add(ev.SessionFinished, status="done")
    return out


def sig(b: m.Block) -> tuple[Any, ...]:
    """What a block shows (not its model-local id or version)."""
    d = {f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.name not in ("bid", "version")}
    return (b.kind, sorted(d.items(), key=lambda kv: kv[0], reverse=False).__repr__())


def reference(events: list[ev.Event]) -> m.SessionModel:
    ref = m.SessionModel(SID)
    ref.MAX_BLOCKS = 1 << 40
    ref.apply(events)
    ref.settle()
    return ref


async def write(store: Store, events: list[ev.Event]) -> None:
    for e in events:
        store.submit(dataclasses.replace(e))
    await store.flush()


def test_the_model_keeps_a_window_and_its_totals(small_window: None) -> None:
    events = [dataclasses.replace(e, seq=i + 1) for i, e in enumerate(script({"a": 150, "b": 20}))]
    ref = reference(events)
    model = m.SessionModel(SID)
    for i in range(0, len(events), 37):  # frame by frame, as the screen applies them
        model.apply(events[i:i + 37])
    a, ra = model.subtasks["a"], ref.subtasks["a"]
    assert len(ra.blocks) > 300 and len(a.blocks) <= 60 and a.has_earlier
    assert [sig(b) for b in a.blocks] == [sig(b) for b in ra.blocks[-len(a.blocks):]]
    s, rs = model.session, ref.session
    assert (s.input_tokens, s.output_tokens, round(s.cost_usd, 6), s.status) == \
           (rs.input_tokens, rs.output_tokens, round(rs.cost_usd, 6), rs.status) == (1700, 340, 0.17, "done")
    for sid in ("a", "b"):
        st, rst = model.subtasks[sid], ref.subtasks[sid]
        assert (st.state, st.attempts, st.retries) == (rst.state, rst.attempts, rst.retries)
    assert len(model._tools) <= 120 and len(model._texts) <= 120  # the maps are pruned too


def test_a_call_open_when_pruned_still_finishes(small_window: None) -> None:
    c = {"session_id": SID, "subtask_id": "a", "attempt": 1}
    events: list[ev.Event] = [ev.SubtaskStarted(**c), ev.AttemptStarted(**c),
                              ev.ToolStarted(**c, call_id="long", name="Bash", input={"command": "make"})]
    events += [ev.Control(**c, command="note", text=f"n{i}") for i in range(200)]
    model = m.SessionModel(SID)
    model.apply([dataclasses.replace(e, seq=i + 1) for i, e in enumerate(events)])
    st = model.subtasks["a"]
    assert len(st.blocks) <= 60 and [t.call_id for t in st.open_tools()] == ["long"]
    model.apply([ev.ToolFinished(**c, seq=len(events) + 1, call_id="long", status="ok", output="done")])
    assert st.open_tools() == [] and st.detached[0].status == "ok"
    more = [ev.Control(**c, seq=len(events) + 2 + i, command="note", text="x") for i in range(20)]
    model.apply(more)  # the next prune lets go of it
    assert st.detached == [] and "long" not in model._tools


async def test_pruned_blocks_come_back_from_the_store_as_they_were(store: Store, small_window: None) -> None:
    events = script({"a": 150, "b": 20})
    await write(store, events)
    stored = await store.events(SID, limit=None)
    ref = reference(stored)
    model = m.SessionModel(SID)
    for i in range(0, len(stored), 50):
        model.apply(stored[i:i + 50])
    model.settle()
    assert len(model.subtasks["a"].blocks) <= 60
    for _ in range(100):
        if not model.subtasks["a"].has_earlier:
            break
        await load_earlier_blocks(store, model, "a", page=40)
    assert not model.subtasks["a"].has_earlier
    assert [sig(b) for b in model.subtasks["a"].blocks] == [sig(b) for b in ref.subtasks["a"].blocks]
    assert len({b.bid for b in model.subtasks["a"].blocks}) == len(model.subtasks["a"].blocks)


async def test_opening_reads_a_page_and_scrolling_up_reaches_the_first_block(
        store: Store, small_window: None, monkeypatch: pytest.MonkeyPatch) -> None:
    events = script({"a": 150, "b": 80})  # b alone is more than the page read on open
    await write(store, events)
    ref = reference(await store.events(SID, limit=None))
    decoded = []
    real_decode = Store._decode

    def counting(self: Store, session_id: str, seq: int, data: Any) -> ev.Event:
        decoded.append(seq)
        return real_decode(self, session_id, seq, data)

    monkeypatch.setattr(Store, "_decode", counting)
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(T0 + 10_000))
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        assert len(decoded) <= SessionScreen.PAGE_SIZE < len(events)  # not every event
        assert screen.selected == "b" and not screen.model.subtasks["a"].blocks
        last = list(screen.stream.widgets.values())[-1].block
        # the last screen (the session's end note lands elsewhere when b's start is not in the page)
        assert sig(last) == sig([b for b in ref.subtasks["b"].blocks if b.kind == "end"][-1])
        # a subtask whose events all precede the page: picking it shows its tail
        await pilot.press("up")
        await until(pilot, lambda: screen.selected == "a" and screen.stream.widgets, "a shown")
        shown = [w.block for w in screen.stream.widgets.values()]
        assert sig(shown[-1]) == sig(ref.subtasks["a"].blocks[-1])
        # scrolling to the top loads what is above, page after page, up to the first block
        stream = screen.stream
        for _ in range(300):
            first = next(iter(stream.widgets.values())).block
            if isinstance(first, m.AttemptBlock) and not screen.model.subtasks["a"].has_earlier:
                break
            stream.scroll_to(y=0, animate=False, immediate=True)
            await pilot.pause()
            if stream.scroll_y <= 0:  # already there: scroll away and back, as a reader would
                stream.scroll_to(y=3, animate=False, immediate=True)
                await pilot.pause()
        first = next(iter(stream.widgets.values())).block
        assert isinstance(first, m.AttemptBlock) and first.number == 1 and first.subtask_id == "a"
        assert [sig(b) for b in screen.model.subtasks["a"].blocks] == [sig(b) for b in ref.subtasks["a"].blocks]
        assert "earlier" not in str(stream._bar.render()) or not stream._bar.display


async def test_a_live_stream_keeps_memory_bounded_and_totals_right(store: Store, small_window: None) -> None:
    events = script({"a": 150}, finish=False)
    await write(store, events[:4])
    screen = SessionScreen(store, SID, controller=Recorder(), follow="local", clock=Clock(T0 + 10_000))
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        for i in range(4, len(events), 60):
            await write(store, events[i:i + 60])
            await screen.flush_now()
            await pilot.pause()
        ref = reference(await store.events(SID, limit=None))
        st = screen.model.subtasks["a"]
        assert len(st.blocks) <= 60 and len(screen.stream.widgets) <= 45 and st.has_earlier
        assert screen.model.session.tokens == ref.session.tokens == 1800
        assert "1.5k↑ 300↓" in screen.status_bar.text
        stream = screen.stream
        for _ in range(300):
            first = next(iter(stream.widgets.values())).block
            if isinstance(first, m.AttemptBlock):
                break
            stream.scroll_to(y=0, animate=False, immediate=True)
            await pilot.pause()
            if stream.scroll_y <= 0:
                stream.scroll_to(y=3, animate=False, immediate=True)
                await pilot.pause()
        assert isinstance(next(iter(stream.widgets.values())).block, m.AttemptBlock)
        # while the reader is up there, the stream goes on: nothing they see is pruned
        tail = [ev.Control(session_id=SID, subtask_id="a", attempt=1, command="note", text=f"late{i}")
                for i in range(100)]
        await write(store, tail)
        await screen.flush_now()
        assert isinstance(next(iter(stream.widgets.values())).block, m.AttemptBlock)
        assert st.blocks[0] is next(iter(stream.widgets.values())).block
