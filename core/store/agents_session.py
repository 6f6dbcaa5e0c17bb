"""An openai-agents ``Session`` kept in Shepherd's database (table agent_items).

Behaves like the SDK's own ``agents.SQLiteSession`` (same results for the same calls; a
test runs both side by side), but lives next to the events, so a restart continues from
the committed history (``Runner.run_streamed(agent, [], session=...)``). Duck-typed
against the SDK's ``Session`` protocol; the SDK is imported only when a session is made.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from core.secrets import Scrubber
from core.store.conn import Database, Executor


def _default_settings(settings: Any) -> Any:
    from agents.memory.session_settings import SessionSettings, coerce_session_settings

    if settings is None:
        return SessionSettings()
    return coerce_session_settings(settings)


class AgentsSession:
    """``session_id``, ``session_settings``, ``get_items``, ``add_items``, ``pop_item``,
    ``clear_session`` over agent_items(session_id, position, item_json)."""

    def __init__(self, session_id: str, executor: Executor, *, session_settings: Any = None,
                 owned: Database | None = None) -> None:
        self.session_id = session_id
        self.session_settings = _default_settings(session_settings)
        self._db = executor
        self._owned = owned

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """All items in order, or the latest ``limit`` of them (still in order)."""
        if limit is None:
            limit = getattr(self.session_settings, "limit", None)

        async def read(conn: aiosqlite.Connection) -> list[Any]:
            if limit is None:
                rows = await conn.execute_fetchall(
                    "SELECT item_json FROM agent_items WHERE session_id = ? ORDER BY position",
                    (self.session_id,))
                return _decode(rows)
            # SQLite's LIMIT semantics, like SQLiteSession: 0 -> nothing, negative -> all.
            rows = await conn.execute_fetchall(
                "SELECT item_json FROM agent_items WHERE session_id = ? ORDER BY position DESC LIMIT ?",
                (self.session_id, int(limit)))
            return _decode(list(rows)[::-1])

        return await self._db.run_read(read)

    async def add_items(self, items: list[Any]) -> None:
        if not items:
            return
        scrubber = Scrubber()  # history is stored and sent to the model again: no secrets
        rows = [(self.session_id, json.dumps(item if scrubber.clean_json(json.dumps(item, ensure_ascii=False))
                                             else scrubber.obj(item))) for item in items]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO agent_items (session_id, item_json) VALUES (?, ?)", rows)

        # (the SDK adds a turn's items after the turn: with a Store they share the commit
        # of that turn's events, and the SDK goes on only once they are committed)
        await self._db.run_rows(write)

    async def pop_item(self) -> Any | None:
        """Remove and return the latest item; None when the session is empty."""
        def pop(conn: sqlite3.Connection) -> Any | None:
            while True:
                rows = conn.execute(
                    "DELETE FROM agent_items WHERE position = (SELECT position FROM agent_items "
                    "WHERE session_id = ? ORDER BY position DESC LIMIT 1) RETURNING item_json",
                    (self.session_id,)).fetchall()
                if not rows:
                    return None
                try:
                    return json.loads(rows[0][0])
                except (ValueError, TypeError):
                    continue  # an unreadable row is dropped, like SQLiteSession does

        return await self._db.run_rows(pop)

    async def clear_session(self) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM agent_items WHERE session_id = ?", (self.session_id,))

        await self._db.run_rows(clear)

    async def close(self) -> None:
        """Closes the connection if this session opened its own (not a Store's)."""
        if self._owned is not None:
            await self._owned.close()


def _decode(rows: Any) -> list[Any]:
    items: list[Any] = []
    for r in rows:
        try:
            items.append(json.loads(r["item_json"]))
        except (ValueError, TypeError):
            continue
    return items


def open_agents_session(db_path: str | Path | None, session_id: str, *,
                        session_settings: Any = None) -> AgentsSession:
    """An openai-agents Session over ``db_path`` (default: default_db_path()) with its own
    connection; the file is checked (and created/migrated) right here. ``await close()``
    when done."""
    from core.store.schema import default_db_path

    db = Database(db_path if db_path is not None else default_db_path())
    return AgentsSession(session_id, db, session_settings=session_settings, owned=db)
