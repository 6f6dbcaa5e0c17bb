"""SQLite persistence: schema, migrations, the single writer, queries, recovery, leases.

CONTRACT (other modules code against exactly this; the implementation may add more):

    store = await Store.open(path, *, clock=None, recover=True)   # creates 0600, WAL, migrates, recovers
    await store.close()                                            # flushes pending writes first
    store.path: Path

  Writing (single writer task per process, batched, committed at least every 50 ms):
    ev = await store.append(event)          # returns the committed event with seq and ts set
                                            # (None if dropped: a 2nd tool.finished for a call_id,
                                            #  or a tool.started for a call that already finished)
    fut = store.submit(event)               # same, without waiting: asyncio.Future[Event | None]
    await store.flush()                     # wait until everything submitted so far is committed
    unsubscribe = store.subscribe(callback) # callback(list[Event]) called in the event loop after
                                            # each commit, with the committed events in seq order

  Reading:
    await store.list_sessions(status=None, text=None, limit=50, offset=0) -> list[SessionRow]  newest first
    await store.get_session(session_id) -> SessionRow | None
    await store.resolve_session(id_or_prefix) -> str            # raises SessionNotFound / AmbiguousSession
    await store.latest_session_id(status=None) -> str | None
    await store.events(session_id, after_seq=0, limit=1000, types=None) -> list[Event]   ascending seq
    await store.events_before(session_id, before_seq, limit=500) -> list[Event]           ascending seq
    await store.last_seq(session_id) -> int
    await store.subtasks(session_id) -> list[SubtaskRow]        in plan order
    await store.tool_calls(session_id, status=None) -> list[ToolCallRow]
    store.tail(session_id, after_seq=0, poll_s=0.1) -> AsyncIterator[list[Event]]  follows another process

  Leases (one runner per live session):
    await store.acquire_lease(session_id, ttl_s=60) -> None     # raises LeaseHeld(owner) if held
    await store.refresh_lease(session_id, ttl_s=60) -> None
    await store.release_lease(session_id) -> None
    await store.lease_owner(session_id) -> str | None            # None when free or expired

  Commands (cross-process control):
    await store.enqueue_command(session_id, command, subtask_id=None, text="", source="cli") -> int
    await store.take_commands(session_id) -> list[CommandRow]    # marks them taken, oldest first

  Recovery:
    await store.recover() -> list[str]   # ids of sessions it marked interrupted (idempotent)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class StoreError(Exception):
    """A database problem the user must hear about in one line (exit 2)."""


class SchemaTooNew(StoreError):
    pass


class NotADatabase(StoreError):
    pass


class SessionNotFound(StoreError):
    pass


class AmbiguousSession(StoreError):
    pass


class LeaseHeld(StoreError):
    def __init__(self, session_id: str, owner: str) -> None:
        super().__init__(f"session {session_id} is already being run by {owner}")
        self.session_id = session_id
        self.owner = owner


@dataclass(frozen=True)
class SessionRow:
    id: str
    title: str
    backend: str
    model: str | None
    workspace: str
    status: str  # running | paused | waiting | stuck | done | failed | cancelled | interrupted
    started_at: float
    updated_at: float
    ended_at: float | None
    last_seq: int
    subtasks_total: int
    subtasks_done: int
    retries: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    task: dict[str, Any]
    last_event_ts: float | None = None


@dataclass(frozen=True)
class SubtaskRow:
    session_id: str
    id: str
    title: str
    position: int
    phase: str
    status: str  # pending | running | waiting_retry | paused | done | failed | stuck | skipped | cancelled
    attempts: int
    retries: int
    started_at: float | None
    finished_at: float | None
    reason: str
    last_error_kind: str | None


@dataclass(frozen=True)
class ToolCallRow:
    session_id: str
    call_id: str
    subtask_id: str | None
    attempt: int | None
    name: str
    input: dict[str, Any]
    status: str  # running | ok | error | denied | interrupted
    output: str
    started_at: float
    finished_at: float | None
    duration_s: float | None
    started_seq: int
    finished_seq: int | None


@dataclass(frozen=True)
class CommandRow:
    id: int
    session_id: str
    command: str
    subtask_id: str | None
    text: str
    source: str
    created_at: float
