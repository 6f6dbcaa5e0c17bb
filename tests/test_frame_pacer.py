"""The live view's frame pace: 30 frames a second at a real agent's pace, down to 10 while
events pour in, and back. Pure logic on a fake clock, then the real session screen (real
Store, pilot) fed a flood, no sleeps. What the slower pace buys under a flood is
``bench/ui_bench.py``'s figure (a subtask switch's p95), not asserted here."""

from __future__ import annotations

from shepherd.core import events as ev
from shepherd.tui.frame_pacer import BUSY_RATE, FRAME_S, SLOW_FRAME_S, FramePacer
from shepherd.tui.widgets.blocks import TextView
from tests.test_tui_session import (  # noqa: F401 - store and _frozen_animation are fixtures
    Clock, Writer, _frozen_animation, live_screen, loaded, store, until)


class Now:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def frames(pacer: FramePacer, now: Now, rate: float, seconds: float, lump_s: float = 0.05) -> list[float]:
    """A source sends ``rate`` events a second for ``seconds``, in lumps every ``lump_s``
    (the writer's commits); each frame waits the interval the last one set, then brings
    the lumps sent meanwhile. The intervals set, frame by frame."""
    out: list[float] = []
    end = now.t + seconds
    sent_until = now.t
    while now.t < end:
        now.t += pacer.interval
        lumps = int((now.t - sent_until) / lump_s)
        sent_until += lumps * lump_s
        out.append(pacer.ran(round(lumps * rate * lump_s)))
    return out


def test_an_agent_at_a_real_pace_keeps_thirty_frames_a_second() -> None:
    now = Now()
    pacer = FramePacer(now)
    # ~120 events a second in commit-sized lumps: none in one frame, a few in the next
    assert set(frames(pacer, now, 120, 5)) == {FRAME_S}


def test_a_flood_slows_the_frames_to_ten_a_second_at_most_and_they_come_back() -> None:
    now = Now()
    pacer = FramePacer(now)
    flood = frames(pacer, now, 3000, 3)
    assert all(FRAME_S <= i <= SLOW_FRAME_S for i in flood)
    assert flood[-10:] == [SLOW_FRAME_S] * 10  # it stays slow while the flood lasts
    # the flood ends: back to 30 a second within a second or so
    after = frames(pacer, now, 60, 2)
    assert after[-1] == FRAME_S and sum(after[:after.index(FRAME_S)]) < 1.0


def test_the_pace_grows_with_the_rate_between_the_two() -> None:
    now = Now()
    pacer = FramePacer(now)
    steady = frames(pacer, now, 2 * BUSY_RATE, 5, lump_s=0.001)[-10:]  # (lumps finer than a frame)
    assert all(abs(i - 2 * FRAME_S) < 0.1 * FRAME_S for i in steady)


async def test_a_flooded_live_view_paces_its_frames_and_shows_every_delta(store) -> None:
    w = Writer(store)
    await w.start()
    screen, app = live_screen(store, Clock(w.ts))
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, screen)
        now = Now()
        screen.pacer = FramePacer(now)
        delays: list[float] = []
        set_timer = screen.set_timer

        def timer(delay: float, callback, **kw):  # type: ignore[no-untyped-def]
            delays.append(delay)
            return set_timer(delay, callback, **kw)

        screen.set_timer = timer  # type: ignore[method-assign]
        sent: list[str] = []
        received = screen.events_received
        for burst in range(8):  # 150 deltas a frame: 4,500 a second
            for i in range(150):
                sent.append(f"w{burst}.{i} ")
                store.submit(w.make(ev.TextDelta, dt=0.001, subtask_id="a", attempt=1, message_id="m1",
                                    text=sent[-1]))
            await store.flush()
            await until(pilot, lambda: screen.events_received >= received + len(sent), "the feed delivers the burst")
            now.t += screen.pacer.interval
            await screen._paced_flush()
        await until(pilot, lambda: delays and delays[-1] == SLOW_FRAME_S, "a frame scheduled at the slow pace")
        assert screen.pacer.interval == SLOW_FRAME_S
        await pilot.pause()
        await screen.flush_now()
        text = "".join(w.block.text for w in screen.stream.widgets.values() if isinstance(w, TextView))
        assert text == "".join(sent)  # a slower pace drops nothing
