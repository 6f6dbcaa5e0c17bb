"""A TUI's notifier hears another process's run on either store, followed by seq per
session (core/notify.py): a session whose events come in after a later one's is not skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shepherd.core.config import UserConfig
from shepherd.core.events import ApprovalRequested, SessionStarted
from shepherd.core.notify import Notifier
from shepherd.core.store import open_store
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)


async def test_follow_others_hears_every_session_on_either_store(store_target: str | Path) -> None:
    watcher = await open_store(store_target, create=True)
    writer = await open_store(store_target, host="other-host") if isinstance(store_target, str) \
        else await open_store(store_target)
    written: list[str] = []
    notifier = Notifier(watcher, UserConfig(desktop="osc9"), terminal=written.append,
                        env={"TERM": "xterm-256color"}, hold_s=0)
    try:
        await writer.append(SessionStarted(session_id="early", title="Early"))
        await writer.append(SessionStarted(session_id="late", title="Late"))
        notifier.follow_others(poll_s=0.01)
        while notifier.attach_point is None:
            await asyncio.sleep(0.01)
        # "late" gets a later event (a higher id) before "early" does: both are told
        await writer.append(ApprovalRequested(session_id="late", call_id="c2", tool="Bash", input={"command": "b"}))
        await writer.append(ApprovalRequested(session_id="early", call_id="c1", tool="Bash", input={"command": "a"}))
        for _ in range(500):
            if len(written) >= 2:
                break
            await asyncio.sleep(0.01)
        await notifier.drain()
        assert sorted("Early" in w for w in written) == [False, True] and len(written) == 2, written
    finally:
        await notifier.close()
        await writer.close()
        await watcher.close()


async def test_an_event_committed_after_a_later_id_is_not_skipped(pg_dsn: str) -> None:  # noqa: F811
    """PostgreSQL: a writer takes id N, another commits N+1 first; the follower that read
    N+1 still hears N when it commits (an id range read once would skip it)."""
    import dataclasses
    import time

    import psycopg

    watcher = await open_store(pg_dsn, create=True)
    writer = await open_store(pg_dsn, host="other-host")
    written: list[str] = []
    notifier = Notifier(watcher, UserConfig(desktop="osc9"), terminal=written.append,
                        env={"TERM": "xterm-256color"}, hold_s=0)

    async def until(n: int) -> None:
        for _ in range(500):
            if len(written) >= n:
                return
            await asyncio.sleep(0.01)

    held = psycopg.connect(pg_dsn)
    try:
        await writer.append(SessionStarted(session_id="early", title="Early"))
        await writer.append(SessionStarted(session_id="late", title="Late"))
        notifier.follow_others(poll_s=0.01)
        while notifier.attach_point is None:
            await asyncio.sleep(0.01)
        ev = dataclasses.replace(ApprovalRequested(session_id="early", call_id="c1", tool="Bash",
                                                   input={"command": "a"}), seq=2, ts=time.time())
        held.execute("INSERT INTO events (session_id, seq, type, ts, data) VALUES (%s, 2, %s, %s, %s)",
                     ("early", ev.type, ev.ts, ev.to_json()))  # id taken now, committed last
        held.execute("UPDATE sessions SET last_seq = 2 WHERE id = 'early'")
        await writer.append(ApprovalRequested(session_id="late", call_id="c2", tool="Bash", input={"command": "b"}))
        await until(1)
        await asyncio.sleep(0.1)  # several polls past the late id
        held.commit()
        await until(2)
        await notifier.drain()
        assert sorted("Early" in w for w in written) == [False, True] and len(written) == 2, written
    finally:
        held.close()
        await notifier.close()
        await writer.close()
        await watcher.close()
