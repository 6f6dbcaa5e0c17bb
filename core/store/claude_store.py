"""A claude_agent_sdk ``SessionStore`` kept in Shepherd's database.

The SDK mirrors each Claude Code transcript here (``ClaudeAgentOptions(session_store=...)``)
and can resume from it, so a session survives a lost ``CLAUDE_CONFIG_DIR``. Implements the
required ``append``/``load`` and every optional method (``list_sessions``,
``list_session_summaries``, ``delete``, ``list_subkeys``); passes the SDK's conformance
suite. Entries are opaque JSON; an entry's ``uuid`` is its idempotency key (a re-sent batch
is not stored twice). The SDK is imported only inside ``append`` (for the summary fold).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiosqlite

from shepherd.core.secrets import Scrubber
from shepherd.core.store.conn import Database, Executor

_last_mtime_ms = 0


def _now_ms(previous: int = 0) -> int:
    """Storage write time in epoch ms, strictly increasing within this process and per key."""
    global _last_mtime_ms
    now = max(int(time.time() * 1000), _last_mtime_ms + 1, previous + 1)
    _last_mtime_ms = now
    return now


def _key(key: Any) -> tuple[str, str, str]:
    subpath = key.get("subpath") or ""  # omitted (or empty) = the main transcript
    return str(key["project_key"]), str(key["session_id"]), str(subpath)


class ClaudeSessionStore:
    def __init__(self, executor: Executor, *, owned: Database | None = None) -> None:
        self._db = executor
        self._owned = owned

    async def append(self, key: Any, entries: list[Any]) -> None:
        if not entries:
            return
        project_key, session_id, subpath = _key(key)
        scrubber = Scrubber()  # the transcript mirror is stored like events: no secrets
        entries = [scrubber.obj(e) for e in entries]
        fold = None
        if not subpath:  # subagent transcripts never feed the main session's summary
            from claude_agent_sdk import fold_session_summary as fold  # (before taking the lock)

        async def write(conn: aiosqlite.Connection) -> None:
            uuids = [e.get("uuid") for e in entries if isinstance(e.get("uuid"), str)]
            seen: set[str] = set()
            for i in range(0, len(uuids), 500):
                chunk = uuids[i:i + 500]
                rows = await conn.execute_fetchall(
                    "SELECT uuid FROM claude_entries WHERE project_key = ? AND session_id = ? "
                    f"AND subpath = ? AND uuid IN ({', '.join('?' for _ in chunk)})",
                    (project_key, session_id, subpath, *chunk))
                seen.update(r["uuid"] for r in rows)
            fresh: list[Any] = []
            for entry in entries:
                uuid = entry.get("uuid")
                if isinstance(uuid, str):
                    if uuid in seen:
                        continue
                    seen.add(uuid)
                fresh.append(entry)
            prev_rows = list(await conn.execute_fetchall(
                "SELECT mtime_ms FROM claude_keys WHERE project_key = ? AND session_id = ? AND subpath = ?",
                (project_key, session_id, subpath)))
            mtime = _now_ms(prev_rows[0]["mtime_ms"] if prev_rows else 0)
            await conn.executemany(
                "INSERT INTO claude_entries (project_key, session_id, subpath, uuid, entry_json) "
                "VALUES (?, ?, ?, ?, ?)",
                [(project_key, session_id, subpath,
                  e.get("uuid") if isinstance(e.get("uuid"), str) else None,
                  json.dumps(e, ensure_ascii=False, separators=(",", ":"))) for e in fresh])
            await conn.execute(
                "INSERT OR REPLACE INTO claude_keys (project_key, session_id, subpath, mtime_ms) "
                "VALUES (?, ?, ?, ?)", (project_key, session_id, subpath, mtime))
            if fold is not None:
                rows = list(await conn.execute_fetchall(
                    "SELECT mtime_ms, data_json FROM claude_summaries WHERE project_key = ? AND session_id = ?",
                    (project_key, session_id)))
                prev = ({"session_id": session_id, "mtime": rows[0]["mtime_ms"],
                         "data": json.loads(rows[0]["data_json"])} if rows else None)
                summary = fold(prev, {"project_key": project_key, "session_id": session_id}, fresh)
                await conn.execute(
                    "INSERT OR REPLACE INTO claude_summaries (project_key, session_id, mtime_ms, data_json) "
                    "VALUES (?, ?, ?, ?)",
                    (project_key, session_id, mtime, json.dumps(summary["data"], ensure_ascii=False)))

        await self._db.run_write(write)

    async def load(self, key: Any) -> list[Any] | None:
        project_key, session_id, subpath = _key(key)

        async def read(conn: aiosqlite.Connection) -> list[Any] | None:
            exists = await conn.execute_fetchall(
                "SELECT 1 FROM claude_keys WHERE project_key = ? AND session_id = ? AND subpath = ?",
                (project_key, session_id, subpath))
            if not exists:
                return None
            rows = await conn.execute_fetchall(
                "SELECT entry_json FROM claude_entries WHERE project_key = ? AND session_id = ? "
                "AND subpath = ? ORDER BY id", (project_key, session_id, subpath))
            return [json.loads(r["entry_json"]) for r in rows]

        return await self._db.run_read(read)

    async def list_sessions(self, project_key: str) -> list[dict[str, Any]]:
        async def read(conn: aiosqlite.Connection) -> list[dict[str, Any]]:
            rows = await conn.execute_fetchall(
                "SELECT session_id, mtime_ms FROM claude_keys WHERE project_key = ? AND subpath = ''",
                (project_key,))
            return [{"session_id": r["session_id"], "mtime": int(r["mtime_ms"])} for r in rows]

        return await self._db.run_read(read)

    async def list_session_summaries(self, project_key: str) -> list[dict[str, Any]]:
        async def read(conn: aiosqlite.Connection) -> list[dict[str, Any]]:
            rows = await conn.execute_fetchall(
                "SELECT session_id, mtime_ms, data_json FROM claude_summaries WHERE project_key = ?",
                (project_key,))
            return [{"session_id": r["session_id"], "mtime": int(r["mtime_ms"]),
                     "data": json.loads(r["data_json"])} for r in rows]

        return await self._db.run_read(read)

    async def delete(self, key: Any) -> None:
        """A main key takes its subagent transcripts and summary with it; a subpath key
        removes only itself."""
        project_key, session_id, subpath = _key(key)

        async def write(conn: aiosqlite.Connection) -> None:
            where = "project_key = ? AND session_id = ?"
            params: tuple[str, ...] = (project_key, session_id)
            if subpath:
                where += " AND subpath = ?"
                params += (subpath,)
            else:
                await conn.execute(f"DELETE FROM claude_summaries WHERE {where}", params)
            await conn.execute(f"DELETE FROM claude_entries WHERE {where}", params)
            await conn.execute(f"DELETE FROM claude_keys WHERE {where}", params)

        await self._db.run_write(write)

    async def list_subkeys(self, key: Any) -> list[str]:
        project_key, session_id, _ = _key(key)

        async def read(conn: aiosqlite.Connection) -> list[str]:
            rows = await conn.execute_fetchall(
                "SELECT subpath FROM claude_keys WHERE project_key = ? AND session_id = ? "
                "AND subpath != '' ORDER BY subpath", (project_key, session_id))
            return [r["subpath"] for r in rows]

        return await self._db.run_read(read)

    async def close(self) -> None:
        """Closes the connection if this store opened its own (not a Store's)."""
        if self._owned is not None:
            await self._owned.close()


def open_claude_session_store(db_path: str | Path | None = None) -> ClaudeSessionStore:
    """A claude_agent_sdk SessionStore over ``db_path`` (default: default_db_path()) with its
    own connection; the file is checked (and created/migrated) right here, so a bad file
    fails now rather than inside the SDK's mirror. ``await close()`` when done."""
    from shepherd.core.store.schema import default_db_path

    db = Database(db_path if db_path is not None else default_db_path())
    return ClaudeSessionStore(db, owned=db)
