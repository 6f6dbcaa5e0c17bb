"""Leases as plain SQL: one runner per live session (table ``leases``).

A lease names its runner (``owner``: host:pid:random, plus ``host`` and ``pid``) and when
it ends. Another process may take it over once it has expired, or at once when its runner
is a process of this host that has exited; a runner stopped by a signal (Ctrl-Z) keeps it.
Taking and refreshing run on the writer's plain ``sqlite3`` connection inside its
transaction; reads take the aiosqlite connection.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepherd.core.store.errors import LeaseHeld

if TYPE_CHECKING:
    import aiosqlite


def pid_stopped(pid: int) -> bool:
    """True for a live process stopped by a signal (Linux's /proc; elsewhere False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("T", "t")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    except OSError:
        return True
    return True


def runner_gone(lease: Any, now: float, host: str) -> str | None:
    """Why the lease's runner is gone (seen from ``host``), or None if it may still be running."""
    if lease is None:
        return "no lease"
    if lease["expires_at"] <= now:
        if lease["host"] == host and pid_stopped(int(lease["pid"])):
            return None  # stopped (Ctrl-Z), not gone: it goes on, and renews its lease, once continued
        return "lease expired"
    if lease["host"] == host and not pid_alive(int(lease["pid"])):
        return f"process {lease['pid']} has exited"
    return None


async def lease_row(conn: aiosqlite.Connection, session_id: str) -> Any:
    rows = list(await conn.execute_fetchall("SELECT * FROM leases WHERE session_id = ?", (session_id,)))
    return rows[0] if rows else None


def take(conn: sqlite3.Connection, session_id: str, ttl_s: float, *, owner: str, host: str, pid: int,
         now: Callable[[], float]) -> None:
    """Become the lease's owner; LeaseHeld if a live runner has it."""
    rows = conn.execute("SELECT * FROM leases WHERE session_id = ?", (session_id,)).fetchall()
    row = rows[0] if rows else None
    if row is not None and row["owner"] != owner and runner_gone(row, now(), host) is None:
        raise LeaseHeld(session_id, row["owner"])
    conn.execute(
        "INSERT OR REPLACE INTO leases (session_id, owner, expires_at, pid, host) VALUES (?, ?, ?, ?, ?)",
        (session_id, owner, now() + ttl_s, pid, host))


def refresh(conn: sqlite3.Connection, session_id: str, ttl_s: float, *, owner: str, host: str, pid: int,
            now: Callable[[], float]) -> None:
    """Extend our lease; if it was lost meanwhile, take it again (or LeaseHeld)."""
    cursor = conn.execute("UPDATE leases SET expires_at = ? WHERE session_id = ? AND owner = ?",
                          (now() + ttl_s, session_id, owner))
    if cursor.rowcount == 0:
        take(conn, session_id, ttl_s, owner=owner, host=host, pid=pid, now=now)


def release(conn: sqlite3.Connection, session_id: str, owner: str) -> None:
    conn.execute("DELETE FROM leases WHERE session_id = ? AND owner = ?", (session_id, owner))


async def owner_of(conn: aiosqlite.Connection, session_id: str, *, host: str, now: Callable[[], float]) -> str | None:
    """The live runner's owner string; None when the lease is free, expired or its runner gone."""
    row = await lease_row(conn, session_id)
    if row is None or runner_gone(row, now(), host) is not None:
        return None
    return str(row["owner"])
