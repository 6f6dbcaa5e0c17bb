"""Commands as plain SQL (table ``commands``): what a person asks of a session another
process runs (``shepherd pause ID``, the TUI attached to a run). Queued by anyone, taken
by the session's runner, oldest first, each exactly once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from shepherd.core.secrets import Scrubber
from shepherd.core.states import COMMANDS
from shepherd.core.store.rows import CommandRow, command_row

if TYPE_CHECKING:
    import aiosqlite


def checked_text(command: str, text: str) -> str:
    """ValueError for a command not in the vocabulary; ``text`` scrubbed (a person's
    message may quote a secret too). Every store calls this before it queues one."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    return Scrubber().text(text)


async def insert(conn: aiosqlite.Connection, session_id: str, command: str, subtask_id: str | None, text: str,
                 source: str, now: float, call_id: str | None = None) -> int:
    cursor = await conn.execute(
        "INSERT INTO commands (session_id, command, subtask_id, text, source, created_at, call_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (session_id, command, subtask_id, text, source, now, call_id))
    return int(cursor.lastrowid or 0)


async def any_untaken(conn: aiosqlite.Connection, session_id: str) -> bool:
    """Whether there is anything to take (runners poll often: a read, not a write)."""
    return bool(list(await conn.execute_fetchall(
        "SELECT 1 FROM commands WHERE session_id = ? AND taken_at IS NULL LIMIT 1", (session_id,))))


async def take(conn: aiosqlite.Connection, session_id: str, now: Callable[[], float]) -> list[CommandRow]:
    """Untaken commands, oldest first, marked taken (inside the caller's write transaction)."""
    rows = list(await conn.execute_fetchall(
        "SELECT * FROM commands WHERE session_id = ? AND taken_at IS NULL ORDER BY id", (session_id,)))
    if rows:
        await conn.executemany("UPDATE commands SET taken_at = ? WHERE id = ?", [(now(), r["id"]) for r in rows])
    return [command_row(r) for r in rows]
