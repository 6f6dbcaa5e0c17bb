"""Recovery as plain SQL: close the live sessions whose runner is gone.

A session is live while its status is not a finished one; its runner is gone when its
lease is missing, expired, or held by an exited process of this host (``leases.runner_gone``).
Each such session gets ``tool.finished(interrupted)`` for every call still running and
then ``session.interrupted``, dated at its last sign of life; the store writes them in the
same transaction that read them. A call still awaiting a person's approval (status
``awaiting``) is not running: it is left open and never approved, a resume asks it again,
and the session keeps ``needs = "approval"``. Tool processes a dead runner of this host left behind
are killed afterwards (``core.tools.spawn.kill_orphans``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from shepherd.core.events import Event, SessionInterrupted, ToolFinished
from shepherd.core.store.leases import lease_row, pid_alive, runner_gone
from shepherd.core.store.derive import FINISHED_SESSION

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger("shepherd.store")

INTERRUPTED_OUTPUT = "interrupted: the runner stopped"
_FINISHED = tuple(sorted(FINISHED_SESSION))
_MARKS = ", ".join("?" for _ in _FINISHED)


async def any_live(conn: aiosqlite.Connection) -> bool:
    """Whether any session is live (most opens find none: a read, no write transaction)."""
    return bool(list(await conn.execute_fetchall(
        f"SELECT 1 FROM sessions WHERE status NOT IN ({_MARKS}) LIMIT 1", _FINISHED)))


async def gone_runners(conn: aiosqlite.Connection, *, now: float, owner: str, host: str,
                       dead_runners: set[int]) -> tuple[list[str], list[Event]]:
    """Inside a write transaction: the ids of the live sessions whose runner is gone (not
    ours), oldest first, and the events that close them; their leases are deleted. Adds to
    ``dead_runners`` the pids of this host's runners that have exited."""
    candidates = list(await conn.execute_fetchall(
        f"SELECT id, last_event_ts FROM sessions WHERE status NOT IN ({_MARKS}) ORDER BY started_at", _FINISHED))
    events: list[Event] = []
    recovered: list[str] = []
    for cand in candidates:
        sid = cand["id"]
        lease = await lease_row(conn, sid)
        if lease is not None and lease["owner"] == owner:
            continue
        why = runner_gone(lease, now, host)
        if why is None:
            continue
        # the session ended with its last sign of life, not when someone noticed
        at = now if cand["last_event_ts"] is None else min(now, float(cand["last_event_ts"]))
        calls = await conn.execute_fetchall(
            "SELECT call_id, subtask_id, attempt, started_at FROM tool_calls "
            "WHERE session_id = ? AND status = 'running' ORDER BY started_seq", (sid,))
        for c in calls:
            events.append(ToolFinished(
                session_id=sid, ts=at, subtask_id=c["subtask_id"], attempt=c["attempt"],
                call_id=c["call_id"], status="interrupted", output=INTERRUPTED_OUTPUT,
                duration_s=max(0.0, at - float(c["started_at"]))))
        events.append(SessionInterrupted(session_id=sid, ts=at, reason=f"runner gone ({why})"))
        if lease is not None and lease["host"] == host and not pid_alive(int(lease["pid"])):
            dead_runners.add(int(lease["pid"]))
        if lease is not None:
            await conn.execute("DELETE FROM leases WHERE session_id = ?", (sid,))
        recovered.append(sid)
    return recovered, events


async def kill_left_behind(dead_runners: set[int], host: str) -> None:
    """Kill what the tools of dead runners left running (a process that escaped its group,
    or no pdeathsig on this system): only this host's, only marked with a dead runner."""
    if not dead_runners:
        return
    from shepherd.core.tools.spawn import kill_orphans

    killed = sum([await asyncio.to_thread(kill_orphans, pid, host) for pid in sorted(dead_runners)])
    if killed:
        log.info("store: killed %d tool process(es) left by runner(s) %s", killed,
                 ", ".join(map(str, sorted(dead_runners))))
