"""An openai-agents ``Session`` kept in Shepherd's database (table agent_items).

Behaves like the SDK's own ``agents.SQLiteSession`` (same results for the same calls; a
test runs both side by side), but lives next to the events, so a restart continues from
the committed history (``Runner.run_streamed(agent, [], session=...)``). Duck-typed
against the SDK's ``Session`` protocol; the SDK is imported only when a session is made.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from shepherd.core.secrets import Scrubber
from shepherd.core.store.conn import Database, Executor
from shepherd.core.store.derive import insert_rows


def _default_settings(settings: Any) -> Any:
    from agents.memory.session_settings import SessionSettings, coerce_session_settings

    if settings is None:
        return SessionSettings()
    return coerce_session_settings(settings)


ATOMIC_ROWS = 499  # rows insert_rows writes in one statement (2 values each, 999 at most)


class HistoryWriteFailed(RuntimeError):
    """An earlier deferred history write of this session failed: nothing is written after
    it (the stored history must not skip a turn)."""


class AgentsSession:
    """``session_id``, ``session_settings``, ``get_items``, ``add_items``, ``pop_item``,
    ``clear_session`` over agent_items(session_id, position, item_json).

    ``deferred`` (a Store's session in a run): ``add_items`` queues the turn's rows as lazy
    writes (Store.submit_rows(lazy=True)) and returns without waiting for their commit; they
    share the next urgent commit (the next tool call's start, or the attempt's end). What
    the SDK does next is a model request, which changes nothing a crash could leave half
    done. ``settle()`` waits for them and raises a failed one; every other call settles
    first (a read sees the rows), and once one write failed no later one is written.

    A deferred session is its runner's own (the lease: nothing else writes its rows), so
    it keeps the rows' JSON once read, kept up to date by its own writes: the SDK's second
    read of an attempt (``attempt_input``'s, then the Runner's) takes no trip to SQLite."""

    def __init__(self, session_id: str, executor: Executor, *, session_settings: Any = None,
                 owned: Database | None = None, deferred: bool = False) -> None:
        self.session_id = session_id
        self.session_settings = _default_settings(session_settings)
        self._db = executor
        self._owned = owned
        self._deferred = deferred and hasattr(executor, "submit_rows")
        self._writes: list[asyncio.Future[Any]] = []  # deferred writes not yet settled
        self._failed: BaseException | None = None
        self._broken = False  # (written on the writer's thread) one of our writes failed there
        self._rows: list[str] | None = None  # deferred: every row's item_json, in order, once read
        self._changes = 0  # our writes so far (a read that overlapped one is not kept)

    async def settle(self) -> None:
        """Wait until this session's deferred writes are committed; raise if one failed."""
        if self._writes:
            urge = getattr(self._db, "urge", None)
            if urge is not None:
                urge()
            writes, self._writes = self._writes, []
            for future in writes:
                try:
                    await future
                except Exception as e:  # noqa: BLE001 - kept, raised below and on every later call
                    if self._failed is None:
                        self._failed = e
        if self._failed is not None:
            self._rows = None
            raise HistoryWriteFailed(f"a history write of {self.session_id} failed: {self._failed}") \
                from self._failed

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """All items in order, or the latest ``limit`` of them (still in order)."""
        if limit is None:
            limit = getattr(self.session_settings, "limit", None)

        await self.settle()
        if self._deferred:
            return _last(await self._all_rows(), limit)

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

    async def _all_rows(self) -> list[str]:
        if self._rows is None:
            async def read(conn: aiosqlite.Connection) -> list[str]:
                rows = await conn.execute_fetchall(
                    "SELECT item_json FROM agent_items WHERE session_id = ? ORDER BY position",
                    (self.session_id,))
                return [r["item_json"] for r in rows]

            changes = self._changes
            rows = await self._db.run_read(read)
            if changes != self._changes:
                return rows
            self._rows = rows
        return self._rows

    async def add_items(self, items: list[Any]) -> None:
        if not items:
            return
        scrubber = Scrubber()  # history is stored and sent to the model again: no secrets
        rows = [(self.session_id, _row_json(item, scrubber)) for item in items]

        def write(conn: sqlite3.Connection) -> None:  # (one statement, not one per row: see insert_rows)
            insert_rows(conn, "INSERT INTO agent_items (session_id, item_json) VALUES ", 2, rows)

        if not self._deferred:
            # (the SDK adds a turn's items after the turn: with a Store they share the commit
            # of that turn's events, and the SDK goes on once they are committed)
            await self._db.run_rows(write)
            return
        self._writes = [f for f in self._writes if not _committed(f)]
        if self._failed is not None or any(f.done() for f in self._writes):
            await self.settle()  # raises: a write failed
        earlier = list(self._writes)
        self._changes += 1

        def write_after(conn: sqlite3.Connection) -> None:
            # (on the writer's thread, in order: an earlier write of ours that failed, in this
            # transaction or one before, means this one must not land after the gap)
            if self._broken or any(f.done() and not _committed(f) for f in earlier):
                raise HistoryWriteFailed(f"an earlier history write of {self.session_id} failed")
            try:
                write(conn)
            except BaseException:
                self._broken = True
                raise

        self._writes.append(self._db.submit_rows(  # type: ignore[attr-defined]
            write_after, lazy=True, atomic=len(rows) <= ATOMIC_ROWS))
        if self._rows is not None:
            self._rows.extend(row for _, row in rows)

    async def pop_item(self) -> Any | None:
        """Remove and return the latest item; None when the session is empty."""
        await self.settle()

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

        self._rows = None  # (it may drop unreadable rows too)
        self._changes += 1
        return await self._db.run_rows(pop)

    async def clear_session(self) -> None:
        await self.settle()

        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM agent_items WHERE session_id = ?", (self.session_id,))

        self._rows = None
        self._changes += 1
        await self._db.run_rows(clear)
        if self._deferred:
            self._rows = []

    async def close(self) -> None:
        """Closes the connection if this session opened its own (not a Store's)."""
        await self.settle()
        if self._owned is not None:
            await self._owned.close()


def _row_json(item: Any, scrubber: Scrubber) -> str:
    """``json.dumps`` of the item, scrubbed. The check looks at its ``ensure_ascii=False``
    dump; when that is all ASCII but DEL (which only the ASCII dump escapes), it is the very
    text ``json.dumps`` makes, so the common item is dumped once, not twice."""
    loose = json.dumps(item, ensure_ascii=False)
    if not scrubber.clean_json(loose):
        return json.dumps(scrubber.obj(item))
    return loose if loose.isascii() and "\x7f" not in loose else json.dumps(item)


def _committed(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _last(rows: list[str], limit: int | None) -> list[Any]:
    """The decoded items of ``rows``, the latest ``limit`` of them as SQLite's LIMIT counts
    (0: none, negative: all), like the query ``get_items`` runs without a cache."""
    if limit is not None and int(limit) >= 0:
        rows = rows[len(rows) - int(limit):] if int(limit) else []
    items: list[Any] = []
    for raw in rows:
        try:
            items.append(json.loads(raw))
        except (ValueError, TypeError):
            continue
    return items


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
    from shepherd.core.store.schema import default_db_path

    db = Database(db_path if db_path is not None else default_db_path())
    return AgentsSession(session_id, db, session_settings=session_settings, owned=db)
