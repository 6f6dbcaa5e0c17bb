"""aiosqlite connections to a prepared database file, and a small serialized executor.

``Database`` is what the SDK adapters (claude_store, agents_session) use when they are not
given a Store: one lazily opened connection, every operation under one asyncio lock, each
write in its own ``BEGIN IMMEDIATE`` transaction. A Store offers the same methods
(``run_write``/``run_rows``/``run_read``) through its single writer, so the adapters work
with either.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from shepherd.core.store.schema import BUSY_TIMEOUT_MS, prepare_database

T = TypeVar("T")
_log = logging.getLogger("shepherd.store")

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


async def connect(path: Path, *, synchronous: str = "NORMAL", autocheckpoint: bool = True) -> aiosqlite.Connection:
    """An autocommit connection (we issue BEGIN/COMMIT ourselves) with our pragmas.
    ``autocheckpoint=False``: its commits never copy the WAL into the file (a Checkpointer
    does that on a thread of its own)."""
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
    pragmas = (f"busy_timeout={BUSY_TIMEOUT_MS}", f"synchronous={synchronous.upper()}",
               "temp_store=MEMORY", "journal_size_limit=67108864", "cache_size=-16000",
               *(() if autocheckpoint else ("wal_autocheckpoint=0",)))
    # one trip to the connection's thread, not one per pragma: at start-up each trip waits
    # for the event loop, which is busy drawing the first frame
    await conn.executescript("".join(f"PRAGMA {pragma};" for pragma in pragmas))
    return conn


class Checkpointer:
    """WAL checkpoints off the writer's path, on a thread and connection of their own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages: that
    commit copies the pages into the file and fsyncs both (5-10 ms here, 70% of all commit
    time), and an event waiting for it waits that long. With the writer's autocheckpoint
    off, ``kick()`` asks this thread for a PASSIVE checkpoint instead: it copies what no
    reader still needs, never blocks a writer or a reader, and the writer's commits go on
    meanwhile. Nothing about durability changes: a commit is in the WAL either way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs = 0  # checkpoints done (tests)
        self._kick = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        if self._stop:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shepherd-checkpoint", daemon=True)
            self._thread.start()
        self._kick.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            while True:
                self._kick.wait()
                self._kick.clear()
                if self._stop:
                    return
                try:  # (PASSIVE: another process checkpointing, or a reader, is not an error)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except sqlite3.Error as e:
                    _log.debug("store: checkpoint of %s failed: %s", self.path, e)
        except sqlite3.Error as e:
            _log.debug("store: no checkpoint connection to %s: %s", self.path, e)
        finally:
            if conn is not None:
                conn.close()

    def close(self) -> None:
        """Stop the thread (blocking: call it in a thread). Before the store's own
        connections close, so the last of those still checkpoints and removes the WAL."""
        self._stop = True
        self._kick.set()
        if self._thread is not None:
            self._thread.join()


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
