"""The dialect seam: the store's SQL (written for SQLite) run on PostgreSQL unchanged.

The derivation (``core.store.derive``), leases, commands, run states and the read queries
are plain SQL over a connection. Rather than a second copy of each for PostgreSQL, the
connections here speak the sqlite3 / aiosqlite API those modules use and rewrite each
statement once (cached) into PostgreSQL's dialect:

  ``?``                       -> ``%s`` (and a literal ``%`` -> ``%%``)
  ``INSERT OR REPLACE INTO t`` -> ``INSERT ... ON CONFLICT (t's key) DO UPDATE SET ...``
  ``INSERT OR IGNORE INTO t``  -> ``INSERT ... ON CONFLICT DO NOTHING``
  ``LIKE``                    -> ``ILIKE`` (SQLite's LIKE ignores ASCII case)
  ``IFNULL(``                 -> ``COALESCE(``
  ``LIMIT ?``                 -> ``LIMIT NULLIF(?, -1)`` (SQLite's "no limit" is -1)
  ``rowid``                   -> a column of ours (subtasks: re-numbered on every upsert,
                                 as SQLite's REPLACE gives the new row a new rowid)

Rows are ``Row``: a tuple that is also indexed by column name and has ``keys()`` (what
``sqlite3.Row`` offers the callers: ``r["id"]``, ``r[0]``, ``dict(r)``).

``SyncConn`` wraps a ``psycopg.Connection`` (the writer's, used on a worker thread: a whole
batch in one hop, like the SQLite store); ``AsyncConn`` wraps a ``psycopg.AsyncConnection``
(the reads, from the pool). ``SyncAsAsync`` offers the aiosqlite API over a SyncConn for the
writer's jobs written as coroutines (commands, run states): ``drive`` runs such a coroutine
to its end without an event loop, since none of its awaits ever suspends.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg import pq

T = TypeVar("T")

# The primary key of every table an ``INSERT OR REPLACE`` names.
UPSERT_KEYS: dict[str, tuple[str, ...]] = {
    "sessions": ("id",),
    "subtasks": ("session_id", "id"),
    "tool_calls": ("session_id", "call_id"),
    "approvals": ("session_id", "call_id"),
    "worktrees": ("session_id",),
    "attempt_costs": ("session_id", "subtask_id", "attempt"),
    "leases": ("session_id",),
    "run_states": ("session_id", "subtask_id"),
    "notified": ("session_id", "seq", "channel"),
    "claude_keys": ("project_key", "session_id", "subpath"),
    "claude_summaries": ("project_key", "session_id"),
}
# Tables with a rowid SQLite gives a new row on REPLACE (their order depends on it).
RENUMBERED = frozenset({"subtasks"})
# Tables whose INSERT tells the caller the new row's id (cursor.lastrowid): their id column.
ID_TABLES = {"commands": "id", "claude_entries": "id", "agent_items": "position"}

# queries.EVENT_READ's SQLite JSON check: PostgreSQL keeps what we wrote byte for byte and
# has no torn pages to read, so every row it returns is one our writer made (sound).
_SQLITE_SOUND = re.compile(r"CASE WHEN json_valid\(data\) THEN json_extract\(.*?\) = json_array\(.*?\) ELSE 0 END",
                           re.S)
_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO (.*)$", re.S)
_REPLACE = re.compile(r"^\s*INSERT OR REPLACE INTO (\w+) \(([^)]*)\) VALUES (.*)$", re.S)
_INSERT = re.compile(r"^\s*INSERT INTO (\w+)\b", re.S)


@lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """``sql`` (SQLite's dialect, as the store writes it) in PostgreSQL's."""
    sql = _SQLITE_SOUND.sub("TRUE", sql)
    ignore = _IGNORE.match(sql)
    if ignore:
        sql = f"INSERT INTO {ignore.group(1).rstrip().rstrip(';')} ON CONFLICT DO NOTHING"
    m = _REPLACE.match(sql)
    if m:
        table, cols, rest = m.group(1), [c.strip() for c in m.group(2).split(",")], m.group(3)
        keys = UPSERT_KEYS[table]
        sets = [f"{c} = EXCLUDED.{c}" for c in cols if c not in keys]
        if table in RENUMBERED:
            sets.append("rowid = DEFAULT")
        action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES {rest} ON CONFLICT ({', '.join(keys)}) {action}"
    else:
        m = _INSERT.match(sql)
        if m and m.group(1) in ID_TABLES and "RETURNING" not in sql.upper():
            sql = sql.rstrip().rstrip(";") + f" RETURNING {ID_TABLES[m.group(1)]} AS id"
    sql = sql.replace("%", "%%")
    sql = re.sub(r"\bLIMIT \?", "LIMIT NULLIF(?::bigint, -1)", sql)
    sql = re.sub(r"\bIFNULL\(", "COALESCE(", sql)
    sql = re.sub(r"(?<![IN])\bLIKE\b", "ILIKE", sql)
    sql = re.sub(r"\bexcluded\.", "EXCLUDED.", sql)
    return sql.replace("?", "%s")


class Row(tuple):  # type: ignore[type-arg]
    """A tuple also indexed by column name (``sqlite3.Row``'s interface)."""

    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_index": {n: i for i, n in enumerate(names)}})


def row_factory(cursor: Any) -> Any:
    desc = cursor.description
    if desc is None:
        return tuple
    cls = _row_class(tuple(c.name for c in desc))
    return cls


def tuple_factory(cursor: Any) -> Any:
    return tuple


class _Cursor:
    """What a caller of ``execute`` gets back: rows, rowcount, lastrowid."""

    __slots__ = ("rows", "rowcount", "lastrowid")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchall(self) -> list[Any]:
        return self.rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Any:
        return iter(self.rows)


class _AsyncCursor(_Cursor):
    """aiosqlite's cursor: the same, its fetches awaited."""

    __slots__ = ()

    async def fetchall(self) -> list[Any]:  # type: ignore[override]
        return self.rows

    async def fetchone(self) -> Any:  # type: ignore[override]
        return self.rows[0] if self.rows else None


class _Executing:
    """What aiosqlite's ``execute`` returns: awaited, or ``async with`` ... ``as cursor``."""

    __slots__ = ("coro",)

    def __init__(self, coro: Coroutine[Any, Any, _AsyncCursor]) -> None:
        self.coro = coro

    def __await__(self) -> Any:
        return self.coro.__await__()

    async def __aenter__(self) -> _AsyncCursor:
        return await self.coro

    async def __aexit__(self, *exc: object) -> None:
        return None


def _params(params: Iterable[Any] | None) -> Sequence[Any]:
    """Always a sequence: psycopg reads ``%%`` as ``%`` only when parameters are given."""
    if params is None:
        return ()
    return params if isinstance(params, (list, tuple)) else list(params)


def _finish(cur: Any, sql: str) -> _Cursor:
    rows = cur.fetchall() if cur.description is not None else []
    lastrowid = None
    if rows and " AS id" in sql and sql.lstrip().startswith("INSERT"):
        lastrowid = int(rows[-1][0])
    return _Cursor(rows, cur.rowcount, lastrowid)


# UPDATEs whose result nobody reads (their order among themselves is kept; any other
# statement, and the commit, sends them first).
DEFERRED = ("UPDATE sessions SET ",)


class SyncConn:
    """A ``psycopg.Connection`` with the part of sqlite3.Connection's API the store's SQL
    modules use (``execute``, ``executemany``, ``in_transaction``, ``cursor``)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        conn.row_factory = row_factory  # type: ignore[assignment]
        self._deferred: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> _Cursor:
        q = translate(sql)
        if q.startswith(DEFERRED):  # (derive's session rows, one UPDATE each: sent together)
            self._deferred.append((q, _params(params)))
            return _Cursor([], -1, None)
        self.flush()
        cur = self.raw.execute(q, _params(params))  # type: ignore[arg-type]
        return _finish(cur, q)

    def flush(self) -> None:
        """Send the deferred UPDATEs: executemany per statement, which psycopg pipelines
        (one round trip for a batch's sessions, not one per session)."""
        if not self._deferred:
            return
        pending, self._deferred = self._deferred, []
        groups: dict[str, list[Any]] = {}
        for q, p in pending:
            groups.setdefault(q, []).append(p)
        with self.raw.cursor() as cur:
            for q, rows in groups.items():
                if len(rows) == 1:
                    cur.execute(q, rows[0])  # type: ignore[arg-type]
                else:
                    cur.executemany(q, rows)  # type: ignore[arg-type]

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        self.flush()
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql), [_params(p) for p in seq])  # type: ignore[arg-type]

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE


class AsyncConn:
    """A ``psycopg.AsyncConnection`` with the part of aiosqlite.Connection's API the store's
    SQL modules use (``execute_fetchall``, ``execute``, ``executemany``)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.raw = conn
        conn.row_factory = row_factory  # type: ignore[assignment]

    async def execute_fetchall(self, sql: str, params: Iterable[Any] | None = None) -> list[Any]:
        cur = await self.raw.execute(translate(sql), _params(params))  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description is not None else []

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> _Executing:
        return _Executing(self._execute(sql, params))

    async def _execute(self, sql: str, params: Iterable[Any] | None) -> _AsyncCursor:
        q = translate(sql)
        cur = await self.raw.execute(q, _params(params))  # type: ignore[arg-type]
        rows = await cur.fetchall() if cur.description is not None else []
        lastrowid = int(rows[-1][0]) if rows and " AS id" in q and q.lstrip().startswith("INSERT") else None
        return _AsyncCursor(rows, cur.rowcount, lastrowid)

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        async with self.raw.cursor() as cur:
            await cur.executemany(translate(sql), [_params(p) for p in seq])  # type: ignore[arg-type]


class SyncAsAsync:
    """aiosqlite's API over a SyncConn, for coroutines run by ``drive`` on the writer's thread."""

    def __init__(self, conn: SyncConn) -> None:
        self.sync = conn

    async def execute_fetchall(self, sql: str, params: Iterable[Any] | None = None) -> list[Any]:
        return self.sync.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> _Executing:
        return _Executing(self._execute(sql, params))

    async def _execute(self, sql: str, params: Iterable[Any] | None) -> _AsyncCursor:
        c = self.sync.execute(sql, params)
        return _AsyncCursor(c.rows, c.rowcount, c.lastrowid)

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        self.sync.executemany(sql, seq)


def drive(awaitable: Any) -> T:
    """Run a coroutine (any awaitable) that never suspends, because it awaits only
    SyncAsAsync, to its result."""
    it = awaitable.__await__()
    try:
        it.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    if hasattr(it, "close"):
        it.close()
    raise RuntimeError("a writer job awaited something that suspends; it must use only its connection")
