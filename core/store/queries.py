"""The store's reads as plain SQL: each function takes a connection and returns rows.

Async ones take the aiosqlite read connection (rows are ``sqlite3.Row``); the ``*_rows``
functions that say ``raw`` take the plain ``sqlite3`` connection and run on its thread
in one hop (``conn.run_sync``): the hot reads, whose rows are plain tuples. A malformed
page raises ``sqlite3.DatabaseError`` here; the store turns it into one line
(``schema.damaged``). Decoding an event row (and recording one that does not decode) is
the store's (``Store._decode``); a second store may share these or mirror them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shepherd.core.store.costs import LEDGER_READ, ledger_from_read
from shepherd.core.store.derive import decode_event
from shepherd.core.store.errors import AmbiguousSession, SessionNotFound
from shepherd.core.store.protocol import SUBTASK_HISTORY_TYPES
from shepherd.core.store.rows import ApprovalRow, approval_row, SessionRow, SubtaskRow, ToolCallRow, WorktreeRow, \
    session_row, subtask_row, tool_call_row, worktree_row

if TYPE_CHECKING:
    import aiosqlite

    from shepherd.core.cost_ledger import CostLedger

# What an event read selects. ``sound``: SQLite found the JSON valid, an object, and of
# the row's type, session and seq, so the row can be decoded lazily (core.events.lazy_event)
# with the very values a full decode gives; any other row (damaged, foreign, NaN, which
# Python's JSON allows and SQLite's does not) takes the full decode. (CASE: json_extract
# raises on invalid JSON.)
EVENT_READ = ("seq, type, data, CASE WHEN json_valid(data) THEN "
              "json_extract(data, '$.type', '$.seq', '$.session_id') = json_array(type, seq, session_id) "
              "ELSE 0 END")
# What a subtask's blocks are folded from: its own events, the session's (no subtask:
# they land in the current one) and every start (which says which one is current).
SUBTASK_PAGE = ("session_id = ? AND (subtask_id = ? OR subtask_id IS NULL "
                "OR type IN ('subtask.started', 'attempt.started'))")


def like(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') that finds ``text`` anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _marks(values: list[Any]) -> str:
    return ", ".join("?" for _ in values)


def _statuses(status: str | Iterable[str]) -> list[str]:
    return [status] if isinstance(status, str) else list(status)


async def _all(conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[Any]:
    return list(await conn.execute_fetchall(sql, tuple(params)))


def _tuples(raw: sqlite3.Connection, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Plain tuples (no Row objects), fetched on the connection's own thread."""
    cursor = raw.cursor()
    cursor.row_factory = None
    try:
        return cursor.execute(sql, tuple(params)).fetchall()
    finally:
        cursor.close()


# --- sessions -----------------------------------------------------------------------


async def list_sessions(conn: aiosqlite.Connection, status: str | Iterable[str] | None = None,
                        text: str | None = None, limit: int = 50, offset: int = 0) -> list[SessionRow]:
    """Newest first; ``status`` one or several; ``text`` matches title, id, backend, model."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        statuses = _statuses(status)
        where.append(f"status IN ({_marks(statuses)})")
        params += statuses
    if text:
        pattern = like(text)
        where.append("(title LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\' "
                     "OR backend LIKE ? ESCAPE '\\' OR IFNULL(model, '') LIKE ? ESCAPE '\\')")
        params += [pattern] * 4
    sql = "SELECT * FROM sessions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?"
    return [session_row(r) for r in await _all(conn, sql, [*params, int(limit), int(offset)])]


async def count_sessions(conn: aiosqlite.Connection, status: str | Iterable[str] | None = None) -> int:
    if status:
        statuses = _statuses(status)
        rows = await _all(conn, f"SELECT COUNT(*) AS n FROM sessions WHERE status IN ({_marks(statuses)})",
                          statuses)
    else:
        rows = await _all(conn, "SELECT COUNT(*) AS n FROM sessions")
    return int(rows[0]["n"])


async def get_session(conn: aiosqlite.Connection, session_id: str) -> SessionRow | None:
    rows = await _all(conn, "SELECT * FROM sessions WHERE id = ?", (session_id,))
    return session_row(rows[0]) if rows else None


async def resolve_session(conn: aiosqlite.Connection, id_or_prefix: str) -> str:
    """The id itself, or the one session whose id starts with it; SessionNotFound or
    AmbiguousSession (naming up to five) otherwise."""
    key = (id_or_prefix or "").strip()
    if not key:
        raise SessionNotFound("no session id given")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # a command-line byte that is not UTF-8: no id has it
        raise SessionNotFound(f"no session matches {key!r}") from None
    if await _all(conn, "SELECT 1 FROM sessions WHERE id = ?", (key,)):
        return key
    prefix = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await _all(conn, "SELECT id FROM sessions WHERE id LIKE ? ESCAPE '\\' ORDER BY started_at DESC LIMIT 6",
                      (prefix,))
    if not rows:
        raise SessionNotFound(f"no session matches {key!r}")
    if len(rows) > 1:
        ids = [r["id"] for r in rows[:5]]
        more = ", ..." if len(rows) > 5 else ""
        raise AmbiguousSession(f"{key!r} matches several sessions ({', '.join(ids)}{more}); "
                               "type more of the id")
    return str(rows[0]["id"])


async def last_seq(conn: aiosqlite.Connection, session_id: str) -> int:
    rows = await _all(conn, "SELECT last_seq FROM sessions WHERE id = ?", (session_id,))
    if rows:
        return int(rows[0]["last_seq"])
    rows = await _all(conn, "SELECT MAX(seq) AS m FROM events WHERE session_id = ?", (session_id,))
    return int(rows[0]["m"] or 0)


async def cost_ledger(conn: aiosqlite.Connection, session_id: str) -> CostLedger | None:
    """The session's cost ledger (core.store.costs) and the seq it is at, in one statement."""
    return ledger_from_read(await _all(conn, LEDGER_READ, (session_id,)))


async def subtasks(conn: aiosqlite.Connection, session_id: str) -> list[SubtaskRow]:
    rows = await _all(conn, "SELECT * FROM subtasks WHERE session_id = ? ORDER BY position, rowid", (session_id,))
    return [subtask_row(r) for r in rows]


async def tool_calls(conn: aiosqlite.Connection, session_id: str, status: str | None = None) -> list[ToolCallRow]:
    sql = "SELECT * FROM tool_calls WHERE session_id = ?"
    params: list[Any] = [session_id]
    if status:
        sql += " AND status = ?"
        params.append(status)
    return [tool_call_row(r) for r in await _all(conn, sql + " ORDER BY started_seq", params)]


async def approvals(conn: aiosqlite.Connection, session_id: str, *, pending: bool = True,
                    subtask_id: str | None = None) -> list[ApprovalRow]:
    sql = "SELECT * FROM approvals WHERE session_id = ?"
    params: list[Any] = [session_id]
    if pending:
        sql += " AND decided_seq IS NULL AND closed = 0"
    if subtask_id is not None:
        sql += " AND subtask_id = ?"
        params.append(subtask_id)
    return [approval_row(r) for r in await _all(conn, sql + " ORDER BY requested_at, requested_seq", params)]


async def approval(conn: aiosqlite.Connection, session_id: str, call_id: str) -> ApprovalRow | None:
    rows = await _all(conn, "SELECT * FROM approvals WHERE session_id = ? AND call_id = ?", (session_id, call_id))
    return approval_row(rows[0]) if rows else None


async def worktree(conn: aiosqlite.Connection, session_id: str) -> WorktreeRow | None:
    rows = await _all(conn, "SELECT * FROM worktrees WHERE session_id = ?", (session_id,))
    return worktree_row(rows[0]) if rows else None


async def worktrees(conn: aiosqlite.Connection, state: str | None = None, repo: str | None = None) -> list[WorktreeRow]:
    sql, params = "SELECT * FROM worktrees WHERE 1 = 1", []
    if state is not None:
        sql += " AND state = ?"
        params.append(state)
    if repo is not None:
        sql += " AND repo = ?"
        params.append(repo)
    return [worktree_row(r) for r in await _all(conn, sql + " ORDER BY updated_at, session_id", params)]


def checkpoint_rows(raw: sqlite3.Connection, session_id: str) -> list[tuple[Any, ...]]:
    """The data of a session's checkpoint events, ascending."""
    return _tuples(raw, "SELECT data FROM events WHERE session_id = ? AND type = 'checkpoint' ORDER BY seq",
                   (session_id,))


async def session_tools(conn: aiosqlite.Connection, session_id: str) -> set[str]:
    """Tools a person approved for the rest of the session (``a``; scope "session")."""
    rows = await _all(conn, "SELECT DISTINCT tool FROM approvals WHERE session_id = ? AND decision = 'approved' "
                            "AND scope = 'session' AND tool != ''", (session_id,))
    return {str(r["tool"]) for r in rows}


# --- events ---------------------------------------------------------------------------


def event_rows(raw: sqlite3.Connection, session_id: str, after_seq: int = 0, limit: int | None = 1000,
               types: Iterable[str] | None = None) -> list[tuple[Any, ...]]:
    """Rows of ``EVENT_READ`` with seq > after_seq, ascending; ``types`` keeps only those."""
    sql = f"SELECT {EVENT_READ} FROM events WHERE session_id = ? AND seq > ?"
    params: list[Any] = [session_id, int(after_seq)]
    type_list = [types] if isinstance(types, str) else list(types or ())
    if type_list:
        sql += f" AND type IN ({_marks(type_list)})"
        params += type_list
    sql += " ORDER BY seq LIMIT ?"
    params.append(-1 if limit is None else int(limit))
    return _tuples(raw, sql, params)


def event_rows_before(raw: sqlite3.Connection, session_id: str, before_seq: int,
                      limit: int = 500) -> list[tuple[Any, ...]]:
    """Up to ``limit`` rows of ``EVENT_READ`` with seq < before_seq, ascending."""
    rows = _tuples(raw, f"SELECT {EVENT_READ} FROM events WHERE session_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                   (session_id, int(before_seq), int(limit)))
    rows.reverse()
    return rows


def subtask_history_rows(raw: sqlite3.Connection, session_id: str, subtask_id: str,
                         types: Iterable[str] = SUBTASK_HISTORY_TYPES) -> tuple[Any, list[tuple[Any, ...]]]:
    """The highest attempt number any of the subtask's events carries, and the data of its
    ``types`` events, ascending (both in one hop)."""
    type_list = list(types)
    top = _tuples(raw, "SELECT MAX(attempt) FROM events WHERE session_id = ? AND subtask_id = ?",
                  (session_id, subtask_id))[0][0]
    return top, _tuples(raw, "SELECT data FROM events WHERE session_id = ? AND subtask_id = ? "
                             f"AND type IN ({_marks(type_list)}) ORDER BY seq", (session_id, subtask_id, *type_list))


async def last_plan(conn: aiosqlite.Connection, session_id: str) -> list[dict[str, Any]] | None:
    """The subtasks of the session's latest plan.ready, or None if it has none."""
    rows = await _all(conn, "SELECT data FROM events WHERE session_id = ? AND type = 'plan.ready' "
                            "ORDER BY seq DESC LIMIT 1", (session_id,))
    return list(getattr(decode_event(rows[0]["data"]), "subtasks", None) or []) if rows else None


# --- pages of one subtask (the session view's windowing) -----------------------------


async def subtask_page_before(conn: aiosqlite.Connection, session_id: str, subtask_id: str, before_seq: int,
                              limit: int = 500) -> list[Any]:
    """Rows (seq, data) of up to ``limit`` events a subtask's view is folded from,
    seq < before_seq, ascending."""
    rows = await _all(conn, f"SELECT seq, data FROM events WHERE {SUBTASK_PAGE} AND seq < ? ORDER BY seq DESC LIMIT ?",
                      (session_id, subtask_id, int(before_seq), int(limit)))
    rows.reverse()
    return rows


async def subtask_page_after(conn: aiosqlite.Connection, session_id: str, subtask_id: str, after_seq: int,
                             limit: int = 500) -> list[Any]:
    """The same selection with seq > after_seq, ascending (looking ahead)."""
    return await _all(conn, f"SELECT seq, data FROM events WHERE {SUBTASK_PAGE} AND seq > ? ORDER BY seq LIMIT ?",
                      (session_id, subtask_id, int(after_seq), int(limit)))


async def current_subtask_at(conn: aiosqlite.Connection, session_id: str, before_seq: int) -> str | None:
    """The subtask the last start before ``before_seq`` made current."""
    rows = await _all(conn, "SELECT subtask_id FROM events WHERE session_id = ? AND seq < ? "
                            "AND type IN ('subtask.started', 'attempt.started') ORDER BY seq DESC LIMIT 1",
                      (session_id, int(before_seq)))
    return rows[0]["subtask_id"] if rows else None
