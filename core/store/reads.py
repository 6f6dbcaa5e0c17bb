"""The read side of the SQLite store: thin methods over ``queries.py`` on the read connection.

``SQLiteReads`` is mixed into ``core.store.db.Store``, which owns the connections: it
gives these methods ``_reader()`` (the read connection, StoreError once closed), ``path``,
``clock`` and ``damaged_events``. Reads see committed data only (other processes' too).
Here a malformed page becomes one line (``schema.damaged``), and an event row that does
not decode a ``damaged`` OpaqueEvent recorded in ``damaged_events``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shepherd.core.events import Event, OpaqueEvent, lazy_events
from shepherd.core.store import queries
from shepherd.core.store.conn import run_sync
from shepherd.core.store.derive import decode_event
from shepherd.core.store.protocol import SUBTASK_HISTORY_TYPES
from shepherd.core.store.rows import ApprovalRow, SessionRow, SubtaskRow, ToolCallRow, WorktreeRow
from shepherd.core.store.schema import damaged
from shepherd.core.store.search import SearchHit, sqlite_search_rows

if TYPE_CHECKING:
    import aiosqlite

    from shepherd.core.cost_ledger import CostLedger

    from shepherd.core.clock import Clock

log = logging.getLogger("shepherd.store")
T = TypeVar("T")


class SQLiteReads:
    """EventReader over one read connection (see the module docstring)."""

    path: Path
    clock: Clock
    damaged_events: set[tuple[str, int]]
    _reader: Callable[[], aiosqlite.Connection]

    async def _read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``query(read connection, *args)``; a malformed page is one line, not a traceback."""
        try:
            return await query(self._reader(), *args)
        except sqlite3.DatabaseError as e:
            raise damaged(self.path, str(e)) from None

    async def _read_raw(self, query: Callable[..., T], *args: Any) -> T:
        """``query(plain sqlite3 read connection, *args)``, in one hop to the reader's thread."""
        try:
            return await run_sync(self._reader(), lambda raw: query(raw, *args))
        except sqlite3.DatabaseError as e:
            raise damaged(self.path, str(e)) from None

    def _decode(self, session_id: str, seq: int, data: Any) -> Event:
        """A stored event, or for a row that does not decode a ``damaged`` OpaqueEvent
        (recorded in ``self.damaged_events``) so the rest of the session still reads."""
        try:
            return decode_event(data)
        except Exception as e:  # noqa: BLE001 - any garbage in a row is that row's damage
            self.damaged_events.add((session_id, int(seq)))
            # info, not warning: the CLI says it in its own line, the TUI shows the row
            log.info("store: event %s of session %s does not decode: %s", seq, session_id, e)
            return OpaqueEvent(type_name="damaged", session_id=session_id, seq=int(seq),
                               data={"note": f"[damaged event seq {seq}]"})

    def _events(self, session_id: str, rows: list[tuple[Any, ...]]) -> list[Event]:
        """Rows of ``queries.EVENT_READ`` as events: lazily decoded where SQLite vouched
        for the JSON, the full decode (with its damage handling) for any other row."""
        return lazy_events(session_id, rows, lambda seq, data: self._decode(session_id, seq, data))

    async def list_sessions(self, status: str | Iterable[str] | None = None, text: str | None = None,
                            limit: int = 50, offset: int = 0) -> list[SessionRow]:
        return await self._read(queries.list_sessions, status, text, limit, offset)

    async def count_sessions(self, status: str | Iterable[str] | None = None) -> int:
        return await self._read(queries.count_sessions, status)

    async def get_session(self, session_id: str) -> SessionRow | None:
        return await self._read(queries.get_session, session_id)

    async def resolve_session(self, id_or_prefix: str) -> str:
        return await self._read(queries.resolve_session, id_or_prefix)

    async def latest_session_id(self, status: str | Iterable[str] | None = None) -> str | None:
        rows = await self.list_sessions(status=status, limit=1)
        return rows[0].id if rows else None

    async def events(self, session_id: str, after_seq: int = 0, limit: int | None = 1000,
                     types: Iterable[str] | None = None) -> list[Event]:
        return self._events(session_id, await self._read_raw(queries.event_rows, session_id, after_seq, limit, types))

    async def events_before(self, session_id: str, before_seq: int, limit: int = 500) -> list[Event]:
        return self._events(session_id, await self._read_raw(queries.event_rows_before, session_id, before_seq, limit))

    async def last_seq(self, session_id: str) -> int:
        return await self._read(queries.last_seq, session_id)

    async def subtasks(self, session_id: str) -> list[SubtaskRow]:
        return await self._read(queries.subtasks, session_id)

    async def cost_ledger(self, session_id: str) -> CostLedger | None:
        return await self._read(queries.cost_ledger, session_id)

    async def tool_calls(self, session_id: str, status: str | None = None) -> list[ToolCallRow]:
        return await self._read(queries.tool_calls, session_id, status)

    async def approvals(self, session_id: str, *, pending: bool = True,
                        subtask_id: str | None = None) -> list[ApprovalRow]:
        return await self._read(lambda c: queries.approvals(c, session_id, pending=pending, subtask_id=subtask_id))

    async def approval(self, session_id: str, call_id: str) -> ApprovalRow | None:
        return await self._read(queries.approval, session_id, call_id)

    async def worktree(self, session_id: str) -> WorktreeRow | None:
        return await self._read(queries.worktree, session_id)

    async def worktrees(self, state: str | None = None, repo: str | None = None) -> list[WorktreeRow]:
        return await self._read(queries.worktrees, state, repo)

    async def checkpoints(self, session_id: str) -> list[Event]:
        rows = await self._read_raw(queries.checkpoint_rows, session_id)
        return [decode_event(r[0]) for r in rows]

    async def search(self, query: str, *, session_id: str | None = None, limit: int = 50) -> list[SearchHit]:
        return await self._read_raw(sqlite_search_rows, query, session_id, limit)

    async def session_tools(self, session_id: str) -> set[str]:
        return await self._read(queries.session_tools, session_id)

    async def subtask_history(self, session_id: str, subtask_id: str,
                              types: Iterable[str] = SUBTASK_HISTORY_TYPES) -> tuple[int, list[Event]]:
        top, rows = await self._read_raw(queries.subtask_history_rows, session_id, subtask_id, types)
        return int(top or 0), [decode_event(r[0]) for r in rows]

    async def last_plan(self, session_id: str) -> list[dict[str, Any]] | None:
        return await self._read(queries.last_plan, session_id)

    async def tail(self, session_id: str, after_seq: int = 0, poll_s: float = 0.1,
                   page: int = 1000) -> AsyncIterator[list[Event]]:
        last = int(after_seq)
        while True:
            batch = await self.events(session_id, after_seq=last, limit=page)
            if batch:
                last = batch[-1].seq
                yield batch
                continue
            await self.clock.sleep(poll_s)

    # --- pages of one subtask (the session view's windowing) ------------------------

    async def subtask_events_before(self, session_id: str, subtask_id: str, before_seq: int,
                                    limit: int = 500) -> list[Event]:
        rows = await self._read(queries.subtask_page_before, session_id, subtask_id, before_seq, limit)
        return [self._decode(session_id, r["seq"], r["data"]) for r in rows]

    async def subtask_events_after(self, session_id: str, subtask_id: str, after_seq: int,
                                   limit: int = 500) -> list[Event]:
        rows = await self._read(queries.subtask_page_after, session_id, subtask_id, after_seq, limit)
        return [self._decode(session_id, r["seq"], r["data"]) for r in rows]

    async def current_subtask_at(self, session_id: str, before_seq: int) -> str | None:
        return await self._read(queries.current_subtask_at, session_id, before_seq)
