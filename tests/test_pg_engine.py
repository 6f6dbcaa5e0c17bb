"""The engine on a PostgreSQL store, not knowing it: a scripted session (the real
openai-agents Runner, real workspace tools, the SDK session kept in the store) runs, is
done, and a person re-runs a finished subtask; the same checks as on SQLite."""

from __future__ import annotations

from pathlib import Path

from shepherd.core.store import open_store
from tests.engine_helpers import done_then_retried, make_task, stored
from tests.pg_server import pg_dsn, pg_server  # noqa: F401  (fixtures)


async def test_retry_a_finished_subtask_of_a_finished_session_on_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [
        {"id": "a", "prompt": "first thing", "steps": [{"text": "did a"}, {"text": "did a again"}]},
        {"id": "b", "prompt": "second thing", "steps": [{"text": "did b"}]},
    ])
    store = await open_store(pg_dsn)
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
