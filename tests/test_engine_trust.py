"""Records and budgets survive resumes and retries (issue 8 items 4, 5, 6, 13, 16, 17):
attempt numbers and call ids never repeat, the attempt budget and per-kind counters are
rebuilt from the store, a retry of a running subtask restarts it (never a second run),
a permanent failure ends an interactive session, countdowns follow the real wait, a
resume names who resumed, parallel tools get their own durations."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.clock import AutoClock, FakeClock, RealClock
from shepherd.core.control import RemoteControl
from shepherd.core.engine import Supervisor, resume_run
from shepherd.core.events import SessionStarted, ToolFinished, ToolStarted
from shepherd.core.store import Store
from tests.cli_helpers import write_task
from tests.engine_helpers import FAST, GateBackend, done_then_retried, kill_headless_when, make_task, stored, wait_for


# --- helpers ---------------------------------------------------------------------------------


def _task_file(tmp_path: Path, body: str) -> tuple[Path, Path]:
    return write_task(tmp_path, body, title="trust", backend="scripted")


def _boom() -> RuntimeError:
    return RuntimeError("boom")


# --- 4: attempt numbers and call ids never repeat --------------------------------------------


async def test_a_persons_retry_continues_attempt_numbers_and_records_its_check(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [{"id": "a", "prompt": "do a", "check": "true",
                           "steps": [{"text": "did a"}, {"text": "did a again"}]}])
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = await done_then_retried(store, task, "a")
        attempts = await stored(store, sup.session_id, "attempt.started")
        assert [(a.attempt, a.reason) for a in attempts] == [(1, "first"), (2, "user_retry")]
        checks = [c for c in await store.tool_calls(sup.session_id) if c.name == "check"]
        assert [(c.attempt, c.status) for c in checks] == [(1, "ok"), (2, "ok")]
        assert len({c.call_id for c in checks}) == 2
        assert store.stats.dropped == 0
    finally:
        await store.close()


async def test_a_dropped_duplicate_is_logged_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = await Store.open(tmp_path / "s.db")
    try:
        await store.append(SessionStarted(session_id="s1", title="t"))
        await store.append(ToolStarted(session_id="s1", subtask_id="a", attempt=1, call_id="c1", name="check"))
        assert await store.append(ToolFinished(session_id="s1", subtask_id="a", attempt=1, call_id="c1")) is not None
        with caplog.at_level(logging.WARNING, logger="shepherd.store"):
            again = await store.append(ToolStarted(session_id="s1", subtask_id="a", attempt=2, call_id="c1",
                                                   name="check"))
        assert again is None
        assert store.stats.dropped == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("duplicate tool.started" in w and "'c1'" in w for w in warnings), warnings
    finally:
        await store.close()


# --- 5: the budget and per-kind counters survive a crash ----------------------------------------


def _transient_task(tmp_path: Path, *, max_retries: int, delay: float) -> tuple[Path, Path]:
    steps = "".join('  [[subtasks.steps]]\n  fail = "transient"\n' for _ in range(20))
    return _task_file(tmp_path, f'''
[retry.transient]
max_retries = {max_retries}
initial_delay = {delay}
max_delay = {delay}
multiplier = 1
[[subtasks]]
id = "t1"
prompt = "keep failing"
{steps}''')


async def test_resume_after_a_crash_does_not_refill_the_attempt_budget(tmp_path: Path) -> None:
    task, _ = _transient_task(tmp_path, max_retries=20, delay=0.2)  # only the budget (12) can stop it
    db = tmp_path / "s.db"
    kill_headless_when(task, db, "SELECT count(*) FROM subtasks WHERE id = 't1' AND attempts >= 9")
    store = await Store.open(db)  # recovery marks it interrupted
    try:
        sid = (await store.list_sessions())[0].id
        assert (await store.get_session(sid)).status == "interrupted"
        before = len(await stored(store, sid, "attempt.started"))
        assert 9 <= before < 12
        handle = await resume_run(store, sid, interactive=False, clock=FAST)
        assert await handle.task == "failed"
        attempts = await stored(store, sid, "attempt.started")
        assert [a.attempt for a in attempts] == list(range(1, 13))  # 12 in all, numbered on
        sub = (await store.subtasks(sid))[0]
        assert sub.status == "stuck" and "attempt budget exhausted (12/12 attempts)" in sub.reason
    finally:
        await store.close()


async def test_resume_after_a_crash_continues_the_per_kind_count(tmp_path: Path) -> None:
    task, _ = _transient_task(tmp_path, max_retries=5, delay=0.3)
    db = tmp_path / "s.db"
    kill_headless_when(task, db, "SELECT count(*) >= 4 FROM events WHERE type = 'error'")
    store = await Store.open(db)
    try:
        sid = (await store.list_sessions())[0].id
        assert (await store.get_session(sid)).status == "interrupted"
        handle = await resume_run(store, sid, interactive=False, clock=FAST)
        assert await handle.task == "failed"
        retries = await stored(store, sid, "retry.scheduled")
        assert [r.retry_no for r in retries] == [1, 2, 3, 4, 5]  # the count went on, not from 1
        assert len(await stored(store, sid, "attempt.started")) == 6
        sub = (await store.subtasks(sid))[0]
        assert sub.status == "stuck" and "5 retries exhausted" in sub.reason
    finally:
        await store.close()


def _stuck_after_three(tmp_path: Path) -> tuple[GateBackend, Any]:
    """One subtask whose three attempts fail (no retry delay), so it ends stuck; a fourth,
    a person's retry, succeeds."""
    ws = tmp_path / "ws"
    ws.mkdir()
    backend = GateBackend([[("raise", _boom())]] * 3 + [[("text", "fixed")]])
    return backend, make_task(ws, [{"id": "t1", "prompt": "p"}], retry={"unknown": {"initial_delay": 0, "max_delay": 0}})


async def _mark_interrupted(store: Store, sid: str) -> None:
    """What a runner that died leaves behind once recovery has run."""
    await store.run_write(lambda c: c.execute("UPDATE sessions SET status = 'interrupted' WHERE id = ?", (sid,)))


async def test_a_stuck_subtask_stays_stuck_on_resume_until_a_person_retries(tmp_path: Path) -> None:
    """A runner that died while a subtask waited for a person: the resumed runner does not
    quietly give it another attempt; a person's retry does, with fresh counters."""
    backend, task = _stuck_after_three(tmp_path)
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, task, backend=backend, clock=FAST, interactive=False)
        assert await sup.run() == "failed"
        sid = sup.session_id
        assert (await store.subtasks(sid))[0].status == "stuck"
        await _mark_interrupted(store, sid)
        handle = await resume_run(store, sid, interactive=False, clock=FAST, backend=backend)
        assert await handle.task == "failed"
        assert len(backend.contexts) == 3  # no attempt beyond the stuck one
        ends = [(e.status, e.reason) for e in await stored(store, sid, "subtask.finished")]
        assert len(ends) == 2 and ends[1] == ends[0] and ends[0][0] == "stuck"  # said again, still stuck
        handle = await resume_run(store, sid, interactive=False, clock=FAST, backend=backend, retry_subtask="t1")
        assert await handle.task == "done"
        attempts = await stored(store, sid, "attempt.started")
        assert [(a.attempt, a.reason) for a in attempts][-1] == (4, "user_retry")
    finally:
        await store.close()


async def test_an_interactive_resume_of_a_stuck_subtask_waits_for_a_person(tmp_path: Path) -> None:
    backend, task = _stuck_after_three(tmp_path)
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, task, backend=backend, clock=FAST, interactive=False)
        assert await sup.run() == "failed"
        sid = sup.session_id
        await _mark_interrupted(store, sid)
        handle = await resume_run(store, sid, interactive=True, clock=FAST, backend=backend)
        await wait_for(lambda: _status_is(store, sid, "stuck"), store=store)
        row = await store.get_session(sid)
        assert row.ended_at is None and len(backend.contexts) == 3
        await handle.supervisor.retry("t1")
        assert await asyncio.wait_for(handle.task, 20) == "done"
        attempts = await stored(store, sid, "attempt.started")
        assert [(a.attempt, a.reason) for a in attempts][-1] == (4, "user_retry")
    finally:
        await store.close()


async def _status_is(store: Store, sid: str, status: str) -> bool:
    row = await store.get_session(sid)
    return row is not None and row.status == status


# --- 6: retry of a running subtask restarts its attempt ----------------------------------------


async def _retry_while_running(tmp_path: Path, send: Any) -> None:
    gate = asyncio.Event()
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [{"id": "t1", "prompt": "p"}, {"id": "t2", "prompt": "q"}])
    store = await Store.open(tmp_path / "s.db")
    other = await Store.open(tmp_path / "s.db")
    # attempt 1 fails (retry 1 of "unknown"), attempt 2 runs until the person's retry,
    # attempt 3 (the restart) fails again: its count starts over at 1; attempt 4 succeeds
    backend = GateBackend([[("raise", _boom())], [("tool", "c1", "run_command"), ("wait", gate)],
                           [("raise", _boom())], [("text", "ok")], [("text", "t2 ok")]])
    sup = Supervisor(store, task, backend=backend, clock=FAST, interactive=True)
    run = asyncio.create_task(sup.run())
    try:
        await wait_for(lambda: len(backend.contexts) == 2, store=store)
        await wait_for(lambda: store.tool_calls(sup.session_id, status="running"), store=store)
        await send(sup, other, "t2")  # not run yet: refused, with the reason
        await send(sup, other, "t1")
        await wait_for(lambda: len(backend.contexts) >= 3, store=store)
        gate.set()  # had the first attempt gone on, it would have succeeded now
        assert await asyncio.wait_for(run, 20) == "done"
        sid = sup.session_id
        ends = [(e.subtask_id, e.status) for e in await stored(store, sid, "subtask.finished")]
        assert ends == [("t1", "done"), ("t2", "done")]  # t1 once: no second run after success
        attempts = [(a.subtask_id, a.attempt, a.reason) for a in await stored(store, sid, "attempt.started")]
        assert attempts == [("t1", 1, "first"), ("t1", 2, "retry"), ("t1", 3, "user_retry"), ("t1", 4, "retry"),
                            ("t2", 1, "first")]
        assert [r.retry_no for r in await stored(store, sid, "retry.scheduled")] == [1, 1]  # counters reset
        assert [c.status for c in await store.tool_calls(sid)] == ["interrupted"]
        controls = [(c.subtask_id, c.text) for c in await stored(store, sid, "control")]
        assert controls[0][0] == "t2" and controls[0][1].startswith("refused: subtask t2 has not run yet")
        assert controls[1] == ("t1", "")
    finally:
        if not run.done():
            run.cancel()
        await other.close()
        await store.close()


async def test_retry_of_the_running_subtask_in_process_restarts_it(tmp_path: Path) -> None:
    async def send(sup: Supervisor, other: Store, sid: str) -> None:
        await sup.retry(sid)

    await _retry_while_running(tmp_path, send)


async def test_retry_of_the_running_subtask_from_another_process_restarts_it(tmp_path: Path) -> None:
    async def send(sup: Supervisor, other: Store, sid: str) -> None:
        n = len(await stored(sup.store, sup.session_id, "control"))
        await other.enqueue_command(sup.session_id, "retry", subtask_id=sid, source="cli")
        await wait_for(lambda: _more_controls(sup, n), store=sup.store)

    await _retry_while_running(tmp_path, send)


async def _more_controls(sup: Supervisor, n: int) -> bool:
    return len(await stored(sup.store, sup.session_id, "control")) > n


# --- 13: a permanent failure ends an interactive session ---------------------------------------


@pytest.mark.parametrize("backend", ["claude", "openai"])
async def test_missing_credentials_end_an_interactive_session_failed_as_auth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "no-claude-login"))
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [{"id": "t1", "prompt": "p"}, {"id": "t2", "prompt": "q"}], backend=backend)
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, task, clock=FAST, interactive=True)
        assert await asyncio.wait_for(sup.run(), 20) == "failed"
        sid = sup.session_id
        row = await store.get_session(sid)
        assert row.status == "failed" and row.ended_at is not None
        (err,) = await stored(store, sid, "error")
        assert err.kind == "auth" and "API_KEY" in err.message and "\n" not in err.message
        subs = {s.id: s.status for s in await store.subtasks(sid)}
        assert subs == {"t1": "failed", "t2": "pending"}
        (fin,) = await stored(store, sid, "session.finished")
        assert fin.reason == "subtask t1 failed"
    finally:
        await store.close()


# --- 16: the countdown follows the real wait -----------------------------------------------------


class TickingClock(AutoClock):
    """Every read of the time is a moment after the last (as on a loaded machine)."""

    def now(self) -> float:
        self._now += 0.005
        return self._now


async def test_an_error_and_its_retry_carry_the_instant_the_wait_counts_from(tmp_path: Path) -> None:
    # the log's "retry 1/5 in N s" is resume_at minus the event's ts: stamped by the store a
    # read later, a loaded machine made it say less than the wait (a flaky CLI test showed it)
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [{"id": "t1", "prompt": "p", "steps": [{"fail": "transient"}, {"text": "ok"}]}],
                     retry={"transient": {"initial_delay": 2, "max_delay": 2}})
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, task, clock=TickingClock(), interactive=False)
        assert await sup.run() == "done"
        (r,) = await stored(store, sup.session_id, "retry.scheduled")
        (e,) = await stored(store, sup.session_id, "error")
        assert r.resume_at - r.ts == pytest.approx(r.delay_s, abs=1e-9)  # (time scale 1 in tests)
        assert e.ts == r.ts and e.seq < r.seq
    finally:
        await store.close()


async def test_resume_at_is_when_the_scaled_wait_really_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEPHERD_TIME_SCALE", "5")  # every wait five times longer
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [{"id": "t1", "prompt": "p", "steps": [{"fail": "transient"}, {"text": "ok"}]}],
                     retry={"transient": {"initial_delay": 0.04, "max_delay": 0.04}})
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, task, clock=RealClock(), interactive=False)
        assert await sup.run() == "done"
        (r,) = await stored(store, sup.session_id, "retry.scheduled")
        assert r.delay_s == 0.04  # nominal
        assert r.resume_at - r.ts == pytest.approx(0.2, abs=0.02)  # real: 5 x 0.04 s
        second = (await stored(store, sup.session_id, "attempt.started"))[1]
        assert second.ts >= r.resume_at - 0.01
    finally:
        await store.close()


# --- 17: who resumed; each parallel tool's own duration -------------------------------------------


async def test_resume_names_who_resumed_and_pause_who_paused(tmp_path: Path) -> None:
    gate = asyncio.Event()
    ws = tmp_path / "ws"
    ws.mkdir()
    store = await Store.open(tmp_path / "s.db")
    other = await Store.open(tmp_path / "s.db")
    backend = GateBackend([[("wait", gate)], [("text", "ok")]])
    sup = Supervisor(store, make_task(ws, [{"id": "t1", "prompt": "p"}]), backend=backend, clock=FAST)
    run = asyncio.create_task(sup.run())
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        await sup.pause(source="tui")
        await wait_for(lambda: stored(store, sup.session_id, "session.paused"), store=store)
        await RemoteControl(other, sup.session_id, source="cli").resume()
        assert await asyncio.wait_for(run, 20) == "done"
        (paused,) = await stored(store, sup.session_id, "session.paused")
        (resumed,) = await stored(store, sup.session_id, "session.resumed")
        assert paused.reason == "paused by tui"
        assert resumed.reason == "resumed by cli"
    finally:
        await other.close()
        await store.close()


async def test_parallel_tools_each_get_their_own_duration(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    steps = [{"text": "both at once", "tools": [
        {"name": "run_command", "args": {"command": "sleep 0.05; echo short"}},
        {"name": "run_command", "args": {"command": "sleep 0.8; echo long"}}]}, {"text": "done"}]
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, make_task(ws, [{"id": "t1", "prompt": "p", "steps": steps}]), clock=FAST,
                         interactive=False)
        assert await sup.run() == "done"
        calls = {("long" if "0.8" in c.input["command"] else "short"): c for c in await store.tool_calls(sup.session_id)}
        assert calls["long"].duration_s >= 0.75
        assert calls["short"].duration_s < 0.5  # not the longest one's duration
        finished = {e.call_id: e.duration_s for e in await stored(store, sup.session_id, "tool.finished")}
        assert finished[calls["short"].call_id] == calls["short"].duration_s
    finally:
        await store.close()


async def test_interrupted_session_ends_at_its_last_event_not_at_recovery(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "s.db"
    runner = await Store.open(path, clock=clock)
    t0 = clock.now()
    await runner.append(SessionStarted(session_id="s1", title="demo"))
    clock.advance(4)  # the demo ran 4 s, then its runner was killed
    await runner.append(ToolStarted(session_id="s1", subtask_id="a", attempt=1, call_id="c1", name="run_command"))
    await runner.close()
    clock.advance(6)  # reopened 6 s later
    store = await Store.open(path, clock=clock)
    try:
        row = await store.get_session("s1")
        assert row.status == "interrupted"
        assert row.ended_at - row.started_at == 4.0 and row.started_at == t0
        (call,) = await store.tool_calls("s1")
        assert call.status == "interrupted" and call.duration_s == 0.0
    finally:
        await store.close()


async def test_a_runner_stopped_in_a_countdown_resumes_with_that_retrys_context(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    backend = GateBackend([[("raise", _boom())], [("text", "ok")]])
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, make_task(ws, [{"id": "t1", "prompt": "p"}]), backend=backend, clock=FakeClock(),
                         interactive=False)
        run = asyncio.create_task(sup.run())  # the 3 s countdown never ends on this clock
        await wait_for(lambda: stored(store, sup.session_id, "retry.scheduled"), store=store)
        run.cancel()  # the runner goes away mid-countdown
        with pytest.raises(asyncio.CancelledError):
            await run
        handle = await resume_run(store, sup.session_id, interactive=False, clock=FAST, backend=backend)
        assert await handle.task == "done"
        resumed = backend.contexts[1]
        assert resumed.reason == "resume" and resumed.continue_history
        assert "boom" in resumed.prompt_extra and "retry 1 of 2" in resumed.prompt_extra
    finally:
        await store.close()
