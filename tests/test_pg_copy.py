"""Sessions copied SQLite -> PostgreSQL -> SQLite keep their ids, seqs, events byte for
byte (as events), derived rows and agent history (core/store/pg/copy.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from shepherd.core.events import (AttemptStarted, PlanReady, SessionFinished, SessionStarted, SubtaskFinished,
                                  SubtaskStarted, TextDelta, ToolFinished, ToolStarted, Usage)
from shepherd.core.store import Store, StoreError, open_store
from shepherd.core.store.pg.copy import copy_sessions
from tests.pg_server import pg_dsn, pg_server  # noqa: F401  (fixtures)


async def _fill(store: Store) -> None:
    for sid in ("old", "new"):
        await store.append(SessionStarted(session_id=sid, title=f"t {sid} é", backend="scripted", task={"k": "✓"}))
        await store.append(PlanReady(session_id=sid, subtasks=[{"id": "a", "title": "A"}, {"id": "b"}]))
        await store.append(SubtaskStarted(session_id=sid, subtask_id="a"))
        await store.append(AttemptStarted(session_id=sid, subtask_id="a", attempt=1))
        await store.append(ToolStarted(session_id=sid, subtask_id="a", attempt=1, call_id="c", name="bash",
                                       input={"command": "ls"}))
        await store.append(ToolFinished(session_id=sid, subtask_id="a", attempt=1, call_id="c", output="x"))
        await store.append(TextDelta(session_id=sid, subtask_id="a", attempt=1, text="done a"))
        await store.append(Usage(session_id=sid, input_tokens=10, output_tokens=3, cost_usd=0.25))
        await store.append(SubtaskFinished(session_id=sid, subtask_id="a", status="done"))
        await store.append(SessionFinished(session_id=sid, status="done"))
        await store.agents_session(f"{sid}:a").add_items([{"role": "user", "content": f"do a of {sid}"}])


async def _snapshot(store: object) -> object:
    out = {}
    for sid in ("old", "new"):
        row = await store.get_session(sid)  # type: ignore[attr-defined]
        out[sid] = (
            [(e.type, e.seq, e.ts, e.to_json()) for e in await store.events(sid, limit=None)],  # type: ignore[attr-defined]
            replace(row, updated_at=0.0),
            await store.subtasks(sid), await store.tool_calls(sid),  # type: ignore[attr-defined]
            await store.agents_session(f"{sid}:a").get_items())  # type: ignore[attr-defined]
    return out


async def test_copy_sqlite_to_postgresql_and_back(tmp_path: Path, pg_dsn: str) -> None:
    src = await Store.open(tmp_path / "src.db")
    pg = await open_store(pg_dsn)
    back = await Store.open(tmp_path / "back.db")
    try:
        await _fill(src)
        want = await _snapshot(src)
        assert await copy_sessions(src, pg) == ["old", "new"]
        assert await _snapshot(pg) == want
        assert await copy_sessions(pg, back) == ["old", "new"]
        assert await _snapshot(back) == want
        with pytest.raises(StoreError, match="in the destination already"):
            await copy_sessions(src, pg, ["new"])
        assert await pg.last_seq("new") == 10  # nothing appended by the refused copy
    finally:
        for s in (src, pg, back):
            await s.close()
