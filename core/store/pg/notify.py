"""The live tail without polling: LISTEN/NOTIFY says "session S has events up to seq N".

The writer sends ``pg_notify(CHANNEL, "S<TAB>N")`` inside each batch's transaction, so a
notification is delivered exactly when (and only if) the events commit. A store that
follows sessions keeps one ``Listener``: its own autocommit connection that LISTENs, and a
task that wakes whoever watches S. A notification is only a hint: the follower always
reads by seq after it (notifications sent while the listener was reconnecting are lost),
and with no notification at all it still reads once every ``FALLBACK_S``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

log = logging.getLogger("shepherd.store")

CHANNEL = "shepherd_events"
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', p) FROM unnest(%s::text[]) AS p"
FALLBACK_S = 2.0  # a read even without a notification (one lost while reconnecting)


def payloads(events: list[Any]) -> list[str]:
    """One "session<TAB>last seq" per session of a committed batch."""
    last: dict[str, int] = {}
    for e in events:
        if e is not None:
            last[e.session_id] = max(e.seq, last.get(e.session_id, 0))
    return [f"{sid}\t{seq}" for sid, seq in last.items()]


class Listener:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self.watchers: dict[str, set[asyncio.Event]] = {}
        self.heard = 0  # notifications received (tests, bench)
        self._starting: asyncio.Lock | None = None

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def ensure(self) -> None:
        """Connected and listening (again, after a lost connection)."""
        if self.alive:
            return
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            if self.alive:
                return
            await self._drop()
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=10)
            await conn.execute(f"LISTEN {CHANNEL}")
            self.conn = conn
            self.task = asyncio.get_running_loop().create_task(self._run(conn), name="shepherd-pg-listen")
            self._wake_all()  # anything committed before LISTEN: each follower reads by seq now

    async def _run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for n in conn.notifies():
                self.heard += 1
                sid = n.payload.rpartition("\t")[0]
                for wake in self.watchers.get(sid, ()):
                    wake.set()
        except psycopg.Error as e:  # the connection is gone: followers fall back, ensure() reconnects
            log.info("store: the LISTEN connection was lost: %s", e)
        finally:
            self._wake_all()

    def _wake_all(self) -> None:
        for wakes in self.watchers.values():
            for wake in wakes:
                wake.set()

    def watch(self, session_id: str) -> asyncio.Event:
        wake = asyncio.Event()
        self.watchers.setdefault(session_id, set()).add(wake)
        return wake

    def unwatch(self, session_id: str, wake: asyncio.Event) -> None:
        wakes = self.watchers.get(session_id)
        if wakes is not None:
            wakes.discard(wake)
            if not wakes:
                del self.watchers[session_id]

    async def _drop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - it is being dropped
                pass
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await conn.close()
            except psycopg.Error:
                pass

    async def close(self) -> None:
        await self._drop()
        self._wake_all()
