"""aiosqlite connections to a prepared database file, and a small serialized executor.

``Database`` is what the SDK adapters (claude_store, agents_session) use when they are not
given a Store: one lazily opened connection, every operation under one asyncio lock, each
write in its own ``BEGIN IMMEDIATE`` transaction. A Store offers the same methods
(``run_write``/``run_rows``/``run_read``) through its single writer, so the adapters work
with either.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from core.store.schema import BUSY_TIMEOUT_MS, prepare_database

T = TypeVar("T")

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


async def connect(path: Path, *, synchronous: str = "NORMAL") -> aiosqlite.Connection:
    """An autocommit connection (we issue BEGIN/COMMIT ourselves) with our pragmas."""
    if synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    pending = aiosqlite.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    # A forgotten close() must not keep the interpreter alive at exit: the worker thread
    # only runs SQLite calls, and an abrupt end is just a crash that WAL recovers from.
    thread = pending if isinstance(pending, threading.Thread) else getattr(pending, "_thread", None)
    if isinstance(thread, threading.Thread):  # (aiosqlite <0.22: the connection is the thread)
        thread.daemon = True
    conn = await pending
    conn.row_factory = sqlite3.Row
    for pragma in (f"busy_timeout={BUSY_TIMEOUT_MS}", f"synchronous={synchronous.upper()}",
                   "temp_store=MEMORY", "journal_size_limit=67108864", "cache_size=-16000"):
        await conn.execute(f"PRAGMA {pragma}")
    return conn


async def in_transaction(conn: aiosqlite.Connection, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
    """Run ``fn`` inside BEGIN IMMEDIATE ... COMMIT (rolled back if it raises)."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        result = await fn(conn)
        await conn.execute("COMMIT")
    except BaseException:
        try:
            await conn.execute("ROLLBACK")
        except Exception:
            pass
        raise
    return result


async def run_sync(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(raw sqlite3 connection)`` on the connection's own thread in ONE hop.

    A batch of events is a dozen statements; issued one await at a time each costs a
    thread round trip (and a GIL hand-over), which capped the writer at a third of its
    speed. aiosqlite has no public call for this; ``_execute`` is the method all its
    public ones are built on (0.17 through 0.22, pinned <0.23 in pyproject; tests cover it).
    """
    return await conn._execute(lambda: fn(conn._conn))


def transaction_sync(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """BEGIN IMMEDIATE; fn; COMMIT (ROLLBACK if fn raises) on a raw connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class Executor(Protocol):
    """Where the SDK adapters run their SQL: a Store or a standalone Database."""

    async def run_write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...
    async def run_rows(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
    async def run_read(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T: ...


class Database:
    """One connection of our own to ``path`` (prepared synchronously, so a bad file is
    refused at construction), opened on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = prepare_database(Path(path))
        self._conn: aiosqlite.Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    async def _get(self) -> aiosqlite.Connection:
        if self._closed:
            raise RuntimeError(f"database connection to {self.path} is closed")
        if self._conn is None:
            self._conn = await connect(self.path)
        return self._conn

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def run_write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._guard():
            return await in_transaction(await self._get(), fn)

    async def run_rows(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(raw connection)`` in its own write transaction, in one hop to the thread."""
        async with self._guard():
            return await run_sync(await self._get(), lambda raw: transaction_sync(raw, fn))

    async def run_read(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._guard():
            return await fn(await self._get())

    async def close(self) -> None:
        async with self._guard():
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()


def rows_to_dicts(rows: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]
