"""Run states as plain SQL (table ``run_states``): an openai-agents ``RunState`` saved
while its tool calls wait for a person's approval, one per (session, subtask). The next
attempt (after a crash too) restores it and asks the same calls again; it is dropped once
no call of it is left undecided. The text is trusted input to ``RunState.from_string``:
it lives only in the 0600 database, scrubbed of secrets on the way in."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite


async def save(conn: aiosqlite.Connection, session_id: str, subtask_id: str, call_ids: list[str], state: str,
               now: float) -> None:
    await conn.execute(
        "INSERT INTO run_states (session_id, subtask_id, call_ids_json, state_json, saved_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, subtask_id) DO UPDATE SET "
        "call_ids_json = excluded.call_ids_json, state_json = excluded.state_json, saved_at = excluded.saved_at",
        (session_id, subtask_id, json.dumps(list(call_ids)), state, now))


async def load(conn: aiosqlite.Connection, session_id: str, subtask_id: str) -> tuple[list[str], str] | None:
    rows = list(await conn.execute_fetchall(
        "SELECT call_ids_json, state_json FROM run_states WHERE session_id = ? AND subtask_id = ?",
        (session_id, subtask_id)))
    if not rows:
        return None
    try:
        call_ids = json.loads(rows[0]["call_ids_json"])
    except ValueError:
        call_ids = []
    return [str(c) for c in call_ids] if isinstance(call_ids, list) else [], rows[0]["state_json"]


async def drop(conn: aiosqlite.Connection, session_id: str, subtask_id: str) -> None:
    await conn.execute("DELETE FROM run_states WHERE session_id = ? AND subtask_id = ?", (session_id, subtask_id))
