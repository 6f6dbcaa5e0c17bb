"""Controls on a running session — in-process, through the commands table, and through
the PAUSE file — plus heartbeats, the stall watchdog and the tool ledger's flush."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai

from shepherd.core.clock import FakeClock
from shepherd.core.control import RemoteControl
from shepherd.core.engine import Supervisor
from shepherd.core.store import Store
from tests.engine_helpers import FAST, GateBackend, make_task, stored, wait_for


def _rate_limit() -> openai.RateLimitError:
    import httpx2 as httpx  # the http client openai 3.x ships with

    req = httpx.Request("POST", "http://127.0.0.1/v1/responses")
    return openai.RateLimitError("rate limited", response=httpx.Response(429, request=req), body=None)


async def _setup(tmp_path: Path, attempts: list, *, subtasks: int = 1, clock=FAST, **extra):
    ws = tmp_path / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    subs = [{"id": f"t{i + 1}", "title": f"Task {i + 1}", "prompt": f"do {i + 1}"} for i in range(subtasks)]
    task = make_task(ws, subs, **extra)
    store = await Store.open(tmp_path / "s.db")
    backend = GateBackend(attempts)
    sup = Supervisor(store, task, backend=backend, clock=clock, interactive=True)
    run = asyncio.create_task(sup.run())
    return store, sup, backend, run


async def test_pause_at_safe_point_then_resume_continues_history(tmp_path: Path) -> None:
    gate = asyncio.Event()
    store, sup, backend, run = await _setup(tmp_path, [[("tool", "c1", "read_file"), ("result", "c1", "ok"),
                                                        ("wait", gate)], [("text", "finished")]])
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        await sup.pause()
        await wait_for(lambda: stored(store, sup.session_id, "session.paused"), store=store)
        assert (await store.get_session(sup.session_id)).status == "paused"
        assert len(backend.contexts) == 1  # no new attempt while paused
        await sup.note("please also update the docs")
        await sup.resume()
        assert await run == "done"
        second = backend.contexts[1]
        assert second.reason == "resume" and second.continue_history
        assert "please also update the docs" in second.prompt_extra
        types = [e.type for e in await stored(store, sup.session_id)]
        assert types.index("session.paused") < types.index("session.resumed")
        assert not await store.tool_calls(sup.session_id, status="running")
    finally:
        await store.close()


async def test_a_resume_during_the_paused_commit_is_not_lost(tmp_path: Path) -> None:
    """A resume that lands while session.paused is being committed (here: just as its
    append returns, before the engine goes to sleep) must still wake the engine."""
    gate = asyncio.Event()
    store, sup, backend, run = await _setup(tmp_path, [[("wait", gate)], [("text", "finished")]])
    emit, resumed = sup._emit, []

    async def emit_then_resume(ev, **kw):
        out = await emit(ev, **kw)
        if ev.type == "session.paused" and not resumed:
            resumed.append(True)
            await sup.resume()
        return out

    sup._emit = emit_then_resume  # type: ignore[method-assign]
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        await sup.pause()
        gate.set()  # the attempt ends; the pause is taken between attempts
        assert await asyncio.wait_for(run, 10) == "done"  # before the fix: asleep for good
        assert resumed and len(backend.contexts) == 2
    finally:
        await store.close()


async def test_pause_now_interrupts_open_calls(tmp_path: Path) -> None:
    store, sup, backend, run = await _setup(tmp_path, [[("tool", "c1", "run_command"), ("hang",)],
                                                       [("text", "ok")]])
    try:
        await wait_for(lambda: store.tool_calls(sup.session_id, status="running"), store=store)
        await sup.pause(immediate=True)
        await wait_for(lambda: stored(store, sup.session_id, "session.paused"), store=store)
        calls = await store.tool_calls(sup.session_id)
        assert [c.status for c in calls] == ["interrupted"]
        await sup.resume()
        assert await run == "done"
        assert backend.closed == [1, 2]
    finally:
        await store.close()


async def test_retry_now_skips_the_countdown(tmp_path: Path) -> None:
    slow = FakeClock()  # the 5 s rate-limit wait never passes by itself
    store, sup, backend, run = await _setup(tmp_path, [[("raise", _rate_limit())], [("text", "ok")]],
                                            clock=slow, heartbeat_s=86_400)
    try:
        await wait_for(lambda: stored(store, sup.session_id, "retry.scheduled"), store=store)
        assert len(backend.contexts) == 1
        await sup.retry_now()
        assert await run == "done"
        assert len(backend.contexts) == 2
        controls = await stored(store, sup.session_id, "control")
        assert [c.command for c in controls] == ["retry_now"]
    finally:
        await store.close()


async def test_skip_and_cancel(tmp_path: Path) -> None:
    store, sup, backend, run = await _setup(tmp_path, [[("hang",)], [("hang",)]], subtasks=3)
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        await sup.skip("t1")
        await wait_for(lambda: len(backend.contexts) == 2, store=store)
        await sup.cancel()
        assert await run == "cancelled"
        subs = {s.id: s.status for s in await store.subtasks(sup.session_id)}
        assert subs == {"t1": "skipped", "t2": "cancelled", "t3": "pending"}
        assert (await store.get_session(sup.session_id)).status == "cancelled"
    finally:
        await store.close()


async def test_commands_table_from_another_process_view(tmp_path: Path) -> None:
    gate = asyncio.Event()
    store, sup, backend, run = await _setup(tmp_path, [[("wait", gate)], [("text", "ok")]])
    other = await Store.open(tmp_path / "s.db")  # a second connection, as `shepherd pause` uses
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        remote = RemoteControl(other, sup.session_id, source="cli")
        await remote.pause()
        await wait_for(lambda: stored(store, sup.session_id, "session.paused"), store=store)
        await remote.resume()
        assert await run == "done"
        controls = await stored(store, sup.session_id, "control")
        assert [(c.command, c.source) for c in controls] == [("pause", "cli"), ("resume", "cli")]
    finally:
        await other.close()
        await store.close()


async def test_pause_file_pauses_and_its_text_becomes_a_note(tmp_path: Path) -> None:
    gate = asyncio.Event()
    store, sup, backend, run = await _setup(tmp_path, [[("wait", gate)], [("text", "ok")]])
    pause = tmp_path / "ws" / ".shepherd" / "PAUSE"
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        pause.parent.mkdir()
        pause.write_text("use the new API, not the old one")
        await wait_for(lambda: stored(store, sup.session_id, "session.paused"), store=store)
        pause.unlink()
        assert await run == "done"
        assert "use the new API" in backend.contexts[1].prompt_extra
        controls = await stored(store, sup.session_id, "control")
        assert {c.source for c in controls} == {"pause_file"}
    finally:
        await store.close()


async def test_heartbeats_do_not_cancel_the_pending_read_and_stall_is_flagged(tmp_path: Path) -> None:
    clock = FakeClock()
    gate = asyncio.Event()
    store, sup, backend, run = await _setup(tmp_path, [[("wait", gate), ("text", "late but intact")],
                                                       [("text", "ok")]],
                                            clock=clock, heartbeat_s=15, stall_s=60)
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        for _ in range(2):
            clock.advance(15)
            await wait_for(lambda: clock.pending() > 0, store=store)
        beats = await stored(store, sup.session_id, "heartbeat")
        assert [b.idle_s for b in beats] == [15, 30]
        gate.set()  # the read that was pending through the heartbeats still completes
        await wait_for(lambda: stored(store, sup.session_id, "message.completed"), store=store)
        msgs = await stored(store, sup.session_id, "message.completed")
        assert msgs[0].text == "late but intact"
        assert await run == "done"
    finally:
        await store.close()


async def test_stall_watchdog_restarts_a_silent_attempt(tmp_path: Path) -> None:
    clock = FakeClock()
    store, sup, backend, run = await _setup(tmp_path, [[("hang",)], [("text", "ok")]],
                                            clock=clock, heartbeat_s=15, stall_s=30)
    try:
        await wait_for(lambda: len(backend.contexts) == 1, store=store)
        while len(backend.contexts) < 2 and not run.done():
            await wait_for(lambda: clock.pending() > 0 or len(backend.contexts) >= 2 or run.done(), store=store)
            clock.wake_next()
            await asyncio.sleep(0)
        assert await run == "done"
        beats = await stored(store, sup.session_id, "heartbeat")
        assert beats[-1].stalled
        errors = await stored(store, sup.session_id, "error")
        assert errors[0].kind == "transient" and "stalled" in errors[0].message
    finally:
        await store.close()


async def test_stuck_subtask_waits_for_a_person_then_retry(tmp_path: Path) -> None:
    attempts = [[("raise", RuntimeError("boom"))]] * 3 + [[("text", "ok")]]
    store, sup, backend, run = await _setup(tmp_path, attempts)
    try:
        await wait_for(lambda: stored(store, sup.session_id, "subtask.finished"), store=store)
        sub = (await store.subtasks(sup.session_id))[0]
        assert sub.status == "stuck"
        assert (await store.get_session(sup.session_id)).status == "stuck"
        await sup.retry("t1")
        assert await run == "done"
        assert backend.contexts[-1].reason == "user_retry"
        assert (await store.subtasks(sup.session_id))[0].status == "done"
    finally:
        await store.close()


async def test_cancel_right_after_start_is_not_lost(tmp_path: Path) -> None:
    """A cancel that lands while a subtask is being set up (before its attempt runs)
    must still end the run, not let the attempt start and sit in a long retry wait."""
    for trigger in ("subtask.started", "attempt.started"):
        slow = FakeClock()
        store, sup, backend, run = await _setup(tmp_path / trigger, [[("raise", _rate_limit())]] * 3,
                                                clock=slow, heartbeat_s=86_400)
        fired: list[asyncio.Future] = []

        def on_commit(events: list, trigger: str = trigger) -> None:
            if not fired and any(e.type == trigger for e in events):
                fired.append(asyncio.ensure_future(sup.cancel()))

        store.subscribe(on_commit)
        try:
            assert await asyncio.wait_for(run, timeout=10) == "cancelled"
            assert (await store.get_session(sup.session_id)).status == "cancelled"
        finally:
            await store.close()
