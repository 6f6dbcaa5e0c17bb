"""Sessions copied from one store to another (SQLite <-> PostgreSQL), ids and seqs kept:
the groundwork of ``shepherd copy --from SRC --to DST`` (issue 13).

Each session's events are read by seq and appended to the destination in order, page by
page; the destination's own writer derives every table from them (sessions, subtasks, tool
calls, approvals, worktrees), so the copy is exactly what a runner would have written. A
seq the destination gives differently (the session exists there already) stops the copy
with one line. The openai-agents history kept beside a session (``agent_items``, keyed
``<session>:<subtask>``) is copied too. Not yet: claude_agent_sdk's transcripts, leases and
commands (a copy is of finished history; a live session should not be copied).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shepherd.core.store.errors import StoreError
from shepherd.core.text import safe

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore

PAGE = 1000


async def _all_session_ids(store: EventStore) -> list[str]:
    ids: list[str] = []
    while True:
        rows = await store.list_sessions(limit=500, offset=len(ids))
        ids += [r.id for r in rows]
        if len(rows) < 500:
            return list(reversed(ids))  # oldest first


async def _history_keys(store: EventStore, session_id: str) -> list[str]:
    """The agent_items keys of a session's subtasks (the same SQL on both stores)."""
    prefix = session_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"

    async def read(conn: Any) -> list[str]:
        rows = await conn.execute_fetchall(
            "SELECT DISTINCT session_id FROM agent_items WHERE session_id LIKE ? ESCAPE '\\' ORDER BY session_id",
            (prefix,))
        return [str(r[0]) for r in rows if str(r[0]).startswith(session_id + ":")]

    return await store.run_read(read)  # type: ignore[attr-defined, no-any-return]


async def copy_sessions(src: EventStore, dst: EventStore, session_ids: list[str] | None = None) -> list[str]:
    """Copy ``session_ids`` (default: every session, oldest first) from ``src`` to ``dst``;
    the ids copied. StoreError if one exists in ``dst`` already (nothing of it is written)."""
    ids = session_ids if session_ids is not None else await _all_session_ids(src)
    for sid in ids:
        if await dst.last_seq(sid) > 0 or await dst.get_session(sid) is not None:
            raise StoreError(f"session {safe(sid)} is in the destination already; nothing of it was copied")
    for sid in ids:
        last = 0
        while True:
            page = await src.events(sid, after_seq=last, limit=PAGE)
            if not page:
                break
            done = await asyncio.gather(*[dst.submit(ev) for ev in page])
            for ev, new in zip(page, done):
                if new is None or new.seq != ev.seq:
                    raise StoreError(f"session {safe(sid)}: event {ev.seq} would become "
                                     f"{'nothing' if new is None else new.seq} in the destination")
            last = page[-1].seq
        for key in await _history_keys(src, sid):
            items = await src.agents_session(key).get_items()
            if items:
                await dst.agents_session(key).add_items(items)
    await dst.flush()
    return ids
