"""The replay driver (tui.model.replay): pure, no Textual.

Its cursor, the virtual clock at each step and while playing (1×, 10×, max, long gaps cut
short), and that the model it shows at any point, forwards or back (through checkpoints),
is the one SessionModel folds from the events up to there: the same fold as live. Events
come from a real store (both stores) written by the fixture shapes, or are built in memory
for the clock's arithmetic and the long sessions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shepherd.core import events as ev
from shepherd.core.store import open_store
from shepherd.tui import model as m
from shepherd.tui.model.replay import ReplayDriver
from tests import tui_fixtures as fx
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401 - the fixtures

SID = "s6b49d200c001"
T0 = 1_800_000_000.0


def make(*items: tuple[float, ev.Event]) -> list[ev.Event]:
    """Events at ``T0 + offset``, seq 1.., of session SID."""
    return [e.with_(session_id=SID, seq=i + 1, ts=T0 + at) for i, (at, e) in enumerate(items)]


def block_dump(b: m.Block) -> dict[str, Any]:
    return {"kind": b.kind, **dataclasses.asdict(b)}


def dump(model: m.SessionModel) -> list[Any]:
    """What the screen is drawn from: the session, each subtask's state and its blocks."""
    s = model.session
    out: list[Any] = [(s.status, s.title, s.started_at, s.ended_at, s.input_tokens, s.output_tokens, s.cost_usd,
                       s.retries, s.approvals_waiting, s.last_event_ts, model.current_subtask_id)]
    for st in model.subtasks.values():
        out.append((st.id, st.title, st.state, st.attempts, st.retries, st.started_at, st.finished_at, st.reason,
                    st.last_error_kind, st.retry.bid if st.retry else None, st.has_earlier,
                    [block_dump(b) for b in st.blocks]))
    return out


def folded(events: list[ev.Event], n: int, max_blocks: int | None = None) -> m.SessionModel:
    model = m.SessionModel(SID)
    if max_blocks is not None:
        model.MAX_BLOCKS = max_blocks
    model.apply(events[:n])
    return model


def long_session(n_tools: int) -> list[ev.Event]:
    """One subtask: text, a tool call, usage, over and over; an error and a retry midway."""
    items: list[tuple[float, ev.Event]] = [
        (0, ev.SessionStarted(title="long", backend="scripted")),
        (0, ev.PlanReady(subtasks=[{"id": "a", "title": "A", "prompt": "p"}])),
        (0, ev.SubtaskStarted(subtask_id="a", title="A")),
        (0, ev.AttemptStarted(subtask_id="a", attempt=1, reason="first")),
    ]
    t, attempt = 0.0, 1
    for i in range(n_tools):
        t += 1
        common = {"subtask_id": "a", "attempt": attempt}
        items += [(t, ev.TextDelta(message_id=f"m{i}", text=f"step {i} ", **common)),
                  (t, ev.MessageCompleted(message_id=f"m{i}", text=f"step {i} done", **common)),
                  (t, ev.ToolStarted(call_id=f"c{i}", name="read_file", input={"path": f"f{i}"}, **common)),
                  (t + 0.5, ev.ToolFinished(call_id=f"c{i}", status="ok", output=f"out {i}", **common)),
                  (t + 0.5, ev.Usage(input_tokens=10, output_tokens=2, **common))]
        if i == n_tools // 2:
            items += [(t + 0.6, ev.Error(kind="transient", message="503", retryable=True, **common)),
                      (t + 0.6, ev.RetryScheduled(kind="transient", retry_no=1, max_retries=5, delay_s=2,
                                                  resume_at=T0 + t + 2.6, **common))]
            attempt += 1
            items.append((t + 2.6, ev.AttemptStarted(subtask_id="a", attempt=attempt, reason="retry")))
            t += 2.6
    items.append((t + 1, ev.SubtaskFinished(subtask_id="a", status="done")))
    items.append((t + 1, ev.SessionFinished(status="done")))
    return make(*items)


async def stored_events(target: Any, shapes: list[str]) -> dict[str, list[ev.Event]]:
    async with await open_store(target) as store:
        ids = await fx.populate(store, shapes)
        return {shape: await store.events(sid, after_seq=0, limit=None) for shape, sid in ids.items()}


# --- the cursor and the clock ------------------------------------------------------------------


def test_the_cursor_steps_and_the_clock_is_the_event_s_time() -> None:
    events = make((0, ev.SessionStarted(title="t")), (1.5, ev.Heartbeat(idle_s=1.5)),
                  (4, ev.SessionFinished(status="done")))
    d = ReplayDriver(SID, events)
    assert (d.index, d.total, d.now) == (-1, 3, T0)  # nothing shown yet: the clock at the first event
    d.seek(0)
    assert (d.index, d.seq, d.now) == (0, 1, T0)
    d.step()
    assert (d.index, d.seq, d.now) == (1, 2, T0 + 1.5)
    d.step(5)  # clamped
    assert (d.index, d.now, d.at_end) == (2, T0 + 4, True)
    moved = d.step(-1)
    assert moved.rebuilt and (d.index, d.now) == (1, T0 + 1.5)
    d.seek(-7)
    assert (d.index, d.now) == (0, T0)
    assert d.index_of_seq(2) == 1 and d.index_of_seq(99) == 2
    assert d.seek_fraction(1.0) and d.index == 2 and d.seek_fraction(0.5) and d.index == 1


def test_jumps_by_attempt_and_by_tool_call() -> None:
    events = long_session(6)
    d = ReplayDriver(SID, events)
    d.seek(0)
    attempts = [i for i, e in enumerate(events) if e.type == "attempt.started"]
    tools = [i for i, e in enumerate(events) if e.type == "tool.started"]
    assert len(attempts) == 2 and len(tools) == 6
    assert d.jump("attempt") and d.index == attempts[0]
    assert d.jump("attempt") and d.index == attempts[1]
    assert d.jump("attempt") is None and d.index == attempts[1]  # none after: the cursor stays
    assert d.jump("attempt", -1) and d.index == attempts[0]
    d.seek(0)
    for i in tools:
        assert d.jump("tool") and d.index == i
    assert d.jump("tool", -1) and d.index == tools[-2]
    # marks for the timeline: attempts, errors, retries
    assert d.marks["attempt"] == attempts and len(d.marks["error"]) == len(d.marks["retry"]) == 1


def test_scrub_moves_by_a_share_of_the_events() -> None:
    d = ReplayDriver(SID, long_session(40))  # 40*5 + 9 events
    d.seek(0)
    d.scrub(0.1)
    assert d.index == round(0.1 * d.total)
    d.scrub(-0.01)
    assert d.index == round(0.1 * d.total) - round(0.01 * d.total)
    d.scrub(-1)
    assert d.index == 0


def test_playing_at_1x_follows_the_real_gaps_and_cuts_a_long_one() -> None:
    events = make((0, ev.SessionStarted(title="t")), (2, ev.Heartbeat(idle_s=2)),
                  (62, ev.Heartbeat(idle_s=60)), (63, ev.SessionFinished(status="done")))
    d = ReplayDriver(SID, events, speed=1.0)
    d.seek(0)
    d.play()
    d.advance(1.5)
    assert (d.index, d.now) == (0, T0 + 1.5)  # between two events: the clock moves, nothing applied
    assert d.advance(0.5).applied == 1 and (d.index, d.now) == (1, T0 + 2)
    assert d.gap_skipped == 0
    d.advance(4.9)
    assert d.index == 1 and d.now == pytest.approx(T0 + 6.9)  # 60 s idle: only 5 s of it are waited
    d.advance(0.1)
    assert (d.index, d.now) == (2, T0 + 62) and (d.gap_skipped, d.gap_skipped_at) == (55, 2)
    assert d.gap_note == 55  # said for a while (3 s), then no more
    d.advance(0.9)  # (the session's last event is 1 s later)
    assert d.index == 2 and d.gap_note == 55
    d.forget_gap()
    assert d.gap_note == 0
    d.advance(10)
    assert d.at_end and not d.playing  # the end stops it


def test_playing_at_10x_and_at_max() -> None:
    events = make((0, ev.SessionStarted(title="t")), (20, ev.Heartbeat(idle_s=20)),
                  (120, ev.Heartbeat(idle_s=100)), (121, ev.SessionFinished(status="done")))
    d = ReplayDriver(SID, events, speed=10.0)
    d.seek(0)
    d.play()
    d.advance(1)
    assert d.now == T0 + 10
    d.advance(1)
    assert (d.index, d.now) == (1, T0 + 20)
    d.advance(5)  # 100 s at 10x is 10 s: cut to 5 s (50 s of the clock)
    assert (d.index, d.gap_skipped) == (2, 50)
    # max: a frame's batch whatever the time, so a whole session plays in MAX_FRAMES frames
    long = ReplayDriver(SID, long_session(300), speed=None)
    long.seek(0)
    long.play()
    frames = 0
    while long.playing:
        long.advance(0.0)
        frames += 1
    assert long.at_end and frames <= ReplayDriver.MAX_FRAMES and long.now == long.end_ts
    assert frames > 1  # not in one go: the screen draws on the way


# --- the model is the fold's ------------------------------------------------------------------


async def test_the_model_at_each_seq_is_the_fold_of_the_events_up_to_there(store_target) -> None:
    by_shape = await stored_events(store_target, ["done", "retry", "stuck"])
    for shape, events in by_shape.items():
        d = ReplayDriver(events[0].session_id, events)
        for n in range(1, len(events) + 1):  # forward, one event at a time
            d.step() if n > 1 else d.seek(0)
            assert dump(d.model) == dump(folded_as(events, n)), (shape, n)
        for n in range(len(events) - 1, 0, -3):  # back, from the end
            d.seek(n - 1)
            assert dump(d.model) == dump(folded_as(events, n)), (shape, "back", n)


def folded_as(events: list[ev.Event], n: int) -> m.SessionModel:
    model = m.SessionModel(events[0].session_id)
    model.apply(events[:n])
    return model


def test_going_back_through_checkpoints_is_the_same_fold() -> None:
    events = long_session(400)  # 2000+ events, a checkpoint every 150
    d = ReplayDriver(SID, events, checkpoint_every=150)
    d.MAX_BLOCKS = None
    d.seek(len(events) - 1)
    assert len(d._checkpoints) == len(events) // 150
    for target in (len(events) - 2, 1234, 901, 900, 899, 150, 149, 10, 0, 777):
        d.seek(target)
        assert dump(d.model) == dump(folded(events, target + 1)), target
    assert d.rebuilds == 9  # every move back rebuilt (777 is forward of 0)
    # the model's window (500 blocks a subtask) is the same as a straight fold's
    assert dump(d.model) == dump(folded(events, 778))
    d.seek(len(events) - 1)
    assert d.model.subtask("a").has_earlier and dump(d.model) == dump(folded(events, len(events)))


def test_a_countdown_shows_its_seconds_left_of_that_moment() -> None:
    events = long_session(4)
    retry_at = next(i for i, e in enumerate(events) if e.type == "retry.scheduled")
    d = ReplayDriver(SID, events, speed=1.0)
    d.seek(retry_at)
    st = d.model.waiting_retry()
    assert st is not None and st.state == "waiting_retry"
    assert st.retry.seconds_left(d.clock()) == pytest.approx(2.0)
    assert st.retry.text(d.clock()) == "transient error — retry 1/5 in 2 s"
    d.play()
    d.advance(1.25)
    assert st.retry.seconds_left(d.clock()) == pytest.approx(0.75)
    d.advance(0.75)  # the next attempt started: the wait is over
    assert d.model.waiting_retry() is None and d.events[d.index].type == "attempt.started"
    d.seek(retry_at)  # and back: counting again
    assert d.model.waiting_retry().retry.seconds_left(d.clock()) == pytest.approx(2.0)


def test_a_running_tool_runs_until_its_finish_is_stepped_past() -> None:
    events = long_session(3)
    start = next(i for i, e in enumerate(events) if e.type == "tool.started")
    d = ReplayDriver(SID, events, speed=1.0)
    d.seek(start)
    tb = d.model.tool_block(events[start].call_id)
    assert tb is not None and tb.running and tb.elapsed(d.clock()) == 0
    d.play()
    d.advance(0.3)
    assert tb.running and tb.elapsed(d.clock()) == pytest.approx(0.3)  # the spinner's time, virtual
    d.pause()
    d.step()  # its tool.finished
    assert events[d.index].type == "tool.finished"
    assert not tb.running and tb.status == "ok" and tb.elapsed(d.clock()) == pytest.approx(0.5)
    d.step(-1)  # back: running again (a new model, folded to there)
    again = d.model.tool_block(events[start].call_id)
    assert again is not tb and again.running
