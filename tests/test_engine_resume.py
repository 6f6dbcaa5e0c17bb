"""Resuming: a session whose runner was SIGKILLed mid-tool continues in a new process
from its stored history; a person re-runs a finished subtask of a finished session."""

from __future__ import annotations

from pathlib import Path

from shepherd.core.engine import resume_run
from shepherd.core.store import open_store
from tests.cli_helpers import write_task
from tests.engine_helpers import FAST, done_then_retried, kill_headless_run_mid_tool, make_task, stored
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)

def _kill_mid_tool(tmp_path: Path, db: str | Path | None = None) -> tuple[str | Path, Path]:
    task, ws = write_task(tmp_path, '''[[subtasks]]
id = "one"
prompt = "make a marker file"
  [[subtasks.steps]]
  text = "working"
  tools = [{ name = "run_command", args = { command = "sleep 2; echo done > marker.txt" } }]
  [[subtasks.steps]]
  text = "Marker written."
''', title="resumable", backend="scripted")
    db = db or tmp_path / "s.db"
    kill_headless_run_mid_tool(task, db)
    return db, ws


async def test_resume_after_sigkill_continues_the_session(tmp_path: Path, store_target: str | Path) -> None:
    """On both stores: a real runner SIGKILLed mid-tool; a new process resumes it."""
    db, ws = _kill_mid_tool(tmp_path, store_target)
    store = await open_store(db)  # recovery marks it interrupted (the runner's pid is gone)
    try:
        sid = (await store.list_sessions())[0].id
        assert (await store.get_session(sid)).status == "interrupted"
        handle = await resume_run(store, sid, interactive=False, clock=FAST)
        assert await handle.task == "done"
        assert (ws / "marker.txt").read_text() == "done\n"
        row = await store.get_session(sid)
        assert row.status == "done" and row.subtasks_done == 1
        attempts = await stored(store, sid, "attempt.started")
        assert [a.reason for a in attempts] == ["first", "resume"]
        calls = await store.tool_calls(sid)
        assert [c.status for c in calls] == ["interrupted", "ok"]
        assert len({c.call_id for c in calls}) == 2
        items = await store.agents_session(f"{sid}:one").get_items()
        assert sum(1 for i in items if i.get("role") == "user" and "marker" in str(i.get("content"))) == 1
        seqs = [e.seq for e in await stored(store, sid)]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        await store.close()


async def test_retry_a_finished_subtask_of_a_finished_session(tmp_path: Path, store_target: str | Path) -> None:
    """On SQLite and on PostgreSQL: the engine does not know which store it writes."""
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [
        {"id": "a", "prompt": "first thing", "steps": [{"text": "did a"}, {"text": "did a again"}]},
        {"id": "b", "prompt": "second thing", "steps": [{"text": "did b"}]},
    ])
    store = await open_store(store_target)
    try:
        sup = await done_then_retried(store, task, "a")
        attempts = await stored(store, sup.session_id, "attempt.started")
        assert [(a.subtask_id, a.reason) for a in attempts] == [("a", "first"), ("b", "first"), ("a", "user_retry")]
        assert "do this subtask again" in attempts[-1].prompt_extra
        subs = {s.id: (s.status, s.attempts) for s in await store.subtasks(sup.session_id)}
        assert subs == {"a": ("done", 2), "b": ("done", 1)}
        finished = await stored(store, sup.session_id, "session.finished")
        assert [f.status for f in finished] == ["done", "done"]
        seqs = [e.seq for e in await stored(store, sup.session_id)]
        assert seqs == list(range(1, len(seqs) + 1))
        history = await store.agents_session(f"{sup.session_id}:a").get_items()
        assert any("first thing" in str(i.get("content")) for i in history)
        assert await store.lease_owner(sup.session_id) is None  # given up at the end
    finally:
        await store.close()


async def test_a_resume_that_finds_the_session_ended_meanwhile_writes_nothing(tmp_path: Path,
                                                                             store_target: str | Path) -> None:
    """A resume that comes after another one ran the session to its end (planned while it
    was interrupted, or simply late) must not run it again or write a second
    session.finished into the finished record."""
    import pytest

    from shepherd.core.store import SessionEnded

    db, _ws = _kill_mid_tool(tmp_path, store_target)
    store = await open_store(db)
    try:
        sid = (await store.list_sessions())[0].id
        first = await resume_run(store, sid, interactive=False, clock=FAST)
        assert await first.task == "done"
        before = await stored(store, sid)
        other = await open_store(db)  # the second `shepherd resume`, its plan made before the first ended
        try:
            with pytest.raises(SessionEnded):
                late = await resume_run(other, sid, interactive=False, clock=FAST)
                await late.task
        finally:
            await other.close()
        after = await stored(store, sid)
        assert [e.seq for e in after] == [e.seq for e in before]
        assert [f.status for f in await stored(store, sid, "session.finished")] == ["done"]
        assert await store.lease_owner(sid) is None
    finally:
        await store.close()
