"""The reads whose SQLite versions run on the plain sqlite3 connection (``queries.*_rows``):
here async, on a pooled ``psycopg.AsyncConnection``, rows as plain tuples. Every other
read is ``core.store.queries`` itself, through the dialect seam (``dialect.AsyncConn``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from shepherd.core.store.search import SNIPPET_TOKENS, SearchHit, terms

# (seq, type, data, sound): see queries.EVENT_READ. PostgreSQL hands back what our writer
# stored, byte for byte (no torn page can reach a reader), so every row is sound.
EVENT_READ = "seq, type, data, TRUE"


async def _tuples(conn: psycopg.AsyncConnection[Any], sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
    async with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        await cur.execute(sql, list(params))  # type: ignore[arg-type]
        return await cur.fetchall()


def _type_list(types: Iterable[str] | str | None) -> list[str]:
    return [types] if isinstance(types, str) else list(types or ())


async def event_rows(conn: psycopg.AsyncConnection[Any], session_id: str, after_seq: int = 0,
                     limit: int | None = 1000, types: Iterable[str] | None = None) -> list[tuple[Any, ...]]:
    sql = f"SELECT {EVENT_READ} FROM events WHERE session_id = %s AND seq > %s"
    params: list[Any] = [session_id, int(after_seq)]
    type_list = _type_list(types)
    if type_list:
        sql += " AND type = ANY(%s)"
        params.append(type_list)
    sql += " ORDER BY seq LIMIT %s"
    params.append(None if limit is None else int(limit))
    return await _tuples(conn, sql, params)


async def event_rows_before(conn: psycopg.AsyncConnection[Any], session_id: str, before_seq: int,
                            limit: int = 500) -> list[tuple[Any, ...]]:
    rows = await _tuples(conn, f"SELECT {EVENT_READ} FROM events WHERE session_id = %s AND seq < %s "
                               "ORDER BY seq DESC LIMIT %s", (session_id, int(before_seq), int(limit)))
    rows.reverse()
    return rows


async def checkpoint_rows(conn: psycopg.AsyncConnection[Any], session_id: str) -> list[tuple[Any, ...]]:
    return await _tuples(conn, "SELECT data FROM events WHERE session_id = %s AND type = 'checkpoint' ORDER BY seq",
                         (session_id,))


async def subtask_history_rows(conn: psycopg.AsyncConnection[Any], session_id: str, subtask_id: str,
                               types: Iterable[str]) -> tuple[Any, list[tuple[Any, ...]]]:
    top = (await _tuples(conn, "SELECT MAX(attempt) FROM events WHERE session_id = %s AND subtask_id = %s",
                         (session_id, subtask_id)))[0][0]
    rows = await _tuples(conn, "SELECT data FROM events WHERE session_id = %s AND subtask_id = %s "
                               "AND type = ANY(%s) ORDER BY seq", (session_id, subtask_id, _type_list(types)))
    return top, rows


async def server_now(conn: Any) -> float:
    """The server's clock (epoch seconds): leases are dated by it, never by a client's."""
    rows = await conn.execute_fetchall("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now")
    return float(rows[0][0])


# ts_headline's marks are the search module's sentinels; the words are plainto_tsquery's
# (never a syntax error), every term required. Newest first (the index's id order).
_HEADLINE = (f"StartSel=\x02, StopSel=\x03, MaxWords={SNIPPET_TOKENS}, MinWords={SNIPPET_TOKENS // 2}, "
             "ShortWord=1, MaxFragments=1, FragmentDelimiter=…")
_SEARCH = ("SELECT d.session_id, d.seq, e.subtask_id, e.type, ts_headline('simple', d.body, q, %s), e.ts "
           "FROM search_docs d CROSS JOIN plainto_tsquery('simple', %s) q "
           "JOIN events e ON e.session_id = d.session_id AND e.seq = d.seq "
           "WHERE d.tsv @@ q{where} ORDER BY d.id DESC LIMIT %s")


async def search_rows(conn: psycopg.AsyncConnection[Any], query: str, session_id: str | None,
                      limit: int) -> list[SearchHit]:
    words = " ".join(terms(query))
    if not words:
        return []
    params: list[Any] = [_HEADLINE, words]
    where = ""
    if session_id is not None:
        where = " AND d.session_id = %s"
        params.append(session_id)
    rows = await _tuples(conn, _SEARCH.format(where=where), [*params, int(limit)])
    return [SearchHit(r[0], int(r[1]), r[2], r[3], r[4] or "", float(r[5])) for r in rows]
