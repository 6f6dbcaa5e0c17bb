"""SQLite persistence: schema, migrations, the single writer, queries, recovery, leases.

CONTRACT (other modules code against exactly this; the implementation may add more):

    store = await Store.open(path, *, clock=None, recover=True)   # creates 0600, WAL, migrates, recovers
        # create=False: read-only commands; a missing/empty file raises NoDatabase, nothing made
        # check=True (default): quick_check first, DatabaseDamaged if damaged (runners write)
    await store.close()                                            # flushes pending writes first
    store.path: Path

  Writing (single writer task per process, batched, committed at least every 50 ms):
    ev = await store.append(event)          # returns the committed event with seq and ts set
                                            # (None if dropped: a 2nd tool.finished for a call_id,
                                            #  or a tool.started for a call that already finished)
    fut = store.submit(event)               # same, without waiting: asyncio.Future[Event | None]
    fut = store.submit(event, lazy=True)    #   held up to 25 ms for the next urgent commit (LAZY_S)
    store.urge()                            # commit what is queued now, lazy items too
    await store.flush()                     # wait until everything submitted so far is committed
    unsubscribe = store.subscribe(callback) # callback(list[Event]) called in the event loop after
                                            # each commit, with the committed events in seq order
    await store.run_rows(fn)                # fn(sqlite3 conn) in the next transaction, with the
    fut = store.submit_rows(fn)             #   events around it (tables of its own: history, leases)

  Reading:
    await store.list_sessions(status=None, text=None, limit=50, offset=0) -> list[SessionRow]  newest first
    await store.get_session(session_id) -> SessionRow | None
    await store.resolve_session(id_or_prefix) -> str            # raises SessionNotFound / AmbiguousSession
    await store.latest_session_id(status=None) -> str | None
    await store.events(session_id, after_seq=0, limit=1000, types=None) -> list[Event]   ascending seq
    await store.events_before(session_id, before_seq, limit=500) -> list[Event]           ascending seq
        # (events of a sound row decode their fields from its JSON on the first read of
        #  one: core.events.lazy_event; the values are a full decode's)
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

import asyncio
import collections
import inspect
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.clock import RealClock
from core.events import Event, OpaqueEvent, SessionInterrupted, ToolFinished, lazy_events
from core.store.conn import Checkpointer, connect, in_transaction, run_sync, transaction_sync
from core.secrets import Scrubber
from core.states import COMMANDS
from core.store.derive import FINISHED_SESSION, copy_event, decode_event, prepare, write_events
from core.store.derive import field_names
from core.store.schema import SCHEMA_VERSION, damaged, default_db_path, prepare_database

if TYPE_CHECKING:
    import aiosqlite

    from core.clock import Clock
    from core.store.agents_session import AgentsSession
    from core.store.claude_store import ClaudeSessionStore


class StoreError(Exception):
    """A database problem the user must hear about in one line (exit 2)."""


class SchemaTooNew(StoreError):
    pass


class NotADatabase(StoreError):
    pass


class NoDatabase(StoreError):
    """A read-only open found no database (nothing was created)."""


class DatabaseDamaged(StoreError):
    """SQLite cannot read part of the file (truncated, a corrupted page): nothing writes to it."""


class SessionNotFound(StoreError):
    pass


class AmbiguousSession(StoreError):
    pass


class LeaseHeld(StoreError):
    def __init__(self, session_id: str, owner: str) -> None:
        super().__init__(f"session {session_id} is already being run by {owner}")
        self.session_id = session_id
        self.owner = owner


class SessionEnded(StoreError):
    """A plain resume found the session finished by the time it held the lease (another
    resume ran it to its end first): nothing to resume, and nothing is written."""


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


# --- the store ----------------------------------------------------------------------

log = logging.getLogger("shepherd.store")
T = TypeVar("T")

# The writer never waits on a timer: it commits whatever is queued the moment the previous
# commit ends. So an event waits at most for one commit in flight plus its own; MAX_BATCH
# keeps one commit short (a few ms for 500 events here). That holds the 50 ms bound while
# the offered load is within the writer's capacity; a burst beyond it queues, it is never
# dropped. WriterStats records the worst wait actually seen.
MAX_WAIT_S = 0.05
MAX_BATCH = 500
# A *lazy* item (``submit(..., lazy=True)``: stream text, usage, a tool's end, the history
# rows of a turn) is what nothing acts on before the next urgent one: the writer holds a
# queue of lazy items alone for up to LAZY_S, so they share the commit of the next urgent
# event (the next tool call's start, a lifecycle event, anything awaited) instead of taking
# one of their own. Within the 50 ms bound; ``urge()`` and ``flush()`` end the hold at once.
LAZY_S = 0.025
# WAL + NORMAL: a commit is in the OS once COMMIT returns, so SIGKILL loses nothing
# acknowledged; only a power cut / kernel crash can drop the last commits (FULL would fsync
# every commit). Chosen after measuring both, see bench/store_bench.py and the report.
DEFAULT_SYNCHRONOUS = "NORMAL"
# The writer's commits never checkpoint the WAL themselves (see conn.Checkpointer): after
# about this much work (one per commit, one per 16 events; SQLite's own default is 1,000
# WAL pages, ~100 of our commits) the checkpoint thread is asked for one.
CHECKPOINT_EVERY = 100
INTERRUPTED_OUTPUT = "interrupted: the runner stopped"
# The events a subtask's attempt numbers and retry budget are rebuilt from (subtask_history).
SUBTASK_HISTORY_TYPES = ("subtask.started", "attempt.started", "error", "retry.scheduled", "subtask.finished")


@dataclass
class WriterStats:
    """What the writer did; lets tests and the bench check the latency bound."""

    batches: int = 0
    events: int = 0
    dropped: int = 0
    jobs: int = 0
    failed_batches: int = 0
    max_batch: int = 0
    max_latency_s: float = 0.0  # submit -> commit of the worst event
    max_commit_s: float = 0.0  # the longest single transaction
    over_budget: int = 0  # events that waited longer than max_wait_s


class _Pending:
    __slots__ = ("event", "head", "future", "t0", "with_next", "lazy")

    def __init__(self, event: Event, head: str, future: asyncio.Future[Event | None], t0: float,
                 with_next: bool = False, lazy: bool = False) -> None:
        self.event = event  # the store's own copy, ts set; the writer sets its seq
        self.head = head  # its JSON without seq
        self.future = future
        self.t0 = t0
        self.with_next = with_next  # committed in the same transaction as the next one
        self.lazy = lazy  # may wait up to LAZY_S for an urgent item to share its commit


class _Job:
    __slots__ = ("fn", "future", "sync")

    def __init__(self, fn: Callable[..., Any], future: asyncio.Future[Any], sync: bool = False) -> None:
        self.fn = fn  # async fn(aiosqlite conn); with sync, plain fn(sqlite3 conn), run in one hop
        self.future = future
        self.sync = sync


class _RowJob:
    """``run_rows``' work: plain sqlite3 code that touches no event table, committed in
    the writer's next transaction together with the events queued around it."""

    __slots__ = ("fn", "future", "t0", "lazy", "atomic")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any],
                 lazy: bool = False, atomic: bool = False) -> None:
        self.fn = fn
        self.future = future
        self.t0 = time.perf_counter()
        self.lazy = lazy
        self.atomic = atomic  # changes the database in one statement at most: no savepoint needed


class _Barrier:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


def _pid_stopped(pid: int) -> bool:
    """True for a live process stopped by a signal (Linux's /proc; elsewhere False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("T", "t")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    except OSError:
        return True
    return True


# What an event read selects. ``sound``: SQLite found the JSON valid, an object, and of
# the row's type, session and seq, so the row can be decoded lazily (core.events.lazy_event)
# with the very values a full decode gives; any other row (damaged, foreign, NaN, which
# Python's JSON allows and SQLite's does not) takes the full decode. (CASE: json_extract
# raises on invalid JSON.)
_EVENT_READ = ("seq, type, data, CASE WHEN json_valid(data) THEN "
               "json_extract(data, '$.type', '$.seq', '$.session_id') = json_array(type, seq, session_id) "
               "ELSE 0 END")

_NOT_SCRUBBED = frozenset({"session_id", "seq", "ts", "subtask_id", "attempt"})


def scrub_event(ev: Event, scrubber: Scrubber | None = None) -> Event:
    """``ev`` with secrets scrubbed from every text it carries (nested ones too): the
    store's write path calls this for every event, so no table, export or screen that
    reads the store can show a secret. The same event when there was nothing to scrub."""
    scrubber = scrubber or Scrubber()
    changes: dict[str, Any] = {}
    for name in field_names(type(ev)):
        if name in _NOT_SCRUBBED:
            continue
        value = getattr(ev, name)
        if isinstance(value, (str, dict, list)):
            new = scrubber.obj(value)
            if new is not value:
                changes[name] = new
    return copy_event(ev, **changes) if changes else ev


def _lenient_text(raw: bytes) -> str:
    """TEXT as str; bytes that are not UTF-8 (a damaged page) become U+FFFD, not an error."""
    return raw.decode("utf-8", "replace")


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _session_row(r: Any) -> SessionRow:
    try:
        task = json.loads(r["task_json"] or "{}")
    except ValueError:
        task = {}
    return SessionRow(
        id=r["id"], title=r["title"], backend=r["backend"], model=r["model"],
        workspace=r["workspace"], status=r["status"], started_at=r["started_at"],
        updated_at=r["updated_at"], ended_at=r["ended_at"], last_seq=r["last_seq"],
        subtasks_total=r["subtasks_total"], subtasks_done=r["subtasks_done"],
        retries=r["retries"], input_tokens=r["input_tokens"], output_tokens=r["output_tokens"],
        cost_usd=r["cost_usd"], task=task if isinstance(task, dict) else {},
        last_event_ts=r["last_event_ts"])


def _subtask_row(r: Any) -> SubtaskRow:
    return SubtaskRow(
        session_id=r["session_id"], id=r["id"], title=r["title"], position=r["position"],
        phase=r["phase"], status=r["status"], attempts=r["attempts"], retries=r["retries"],
        started_at=r["started_at"], finished_at=r["finished_at"], reason=r["reason"],
        last_error_kind=r["last_error_kind"])


def _tool_call_row(r: Any) -> ToolCallRow:
    try:
        tool_input = json.loads(r["input_json"] or "{}")
    except ValueError:
        tool_input = {}
    return ToolCallRow(
        session_id=r["session_id"], call_id=r["call_id"], subtask_id=r["subtask_id"],
        attempt=r["attempt"], name=r["name"], input=tool_input, status=r["status"],
        output=r["output"], started_at=r["started_at"], finished_at=r["finished_at"],
        duration_s=r["duration_s"], started_seq=r["started_seq"], finished_seq=r["finished_seq"])


def _command_row(r: Any) -> CommandRow:
    return CommandRow(id=r["id"], session_id=r["session_id"], command=r["command"],
                      subtask_id=r["subtask_id"], text=r["text"], source=r["source"],
                      created_at=r["created_at"])


class Store:
    """The CONTRACT above, plus: ``stats`` (WriterStats), ``owner`` (this store's lease
    owner string), ``run_write(fn)`` / ``run_read(fn)`` (raw SQL through the single
    writer / the read connection, used by the SDK adapters), ``agents_session(id)`` and
    ``claude_session_store()`` (SDK adapters sharing this store's connections), and
    ``async with``. One writer connection + one reader connection; every write of this
    process goes through the writer task, in submission order.

    Runners: ``acquire_lease(session_id)`` BEFORE appending session.started, and
    ``refresh_lease`` well within ``ttl_s`` (e.g. on each heartbeat). Recovery, which runs
    whenever any process opens the store, treats a live session without a valid lease as
    one whose runner died."""

    def __init__(self, path: Path, clock: Clock | None = None, *,
                 synchronous: str = DEFAULT_SYNCHRONOUS, max_batch: int = MAX_BATCH) -> None:
        self.path = path
        self.clock: Clock = clock or RealClock()
        self.synchronous = synchronous.upper()
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = MAX_WAIT_S
        self.lazy_s = LAZY_S
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{os.urandom(4).hex()}"
        self.stats = WriterStats()
        self._wconn: aiosqlite.Connection | None = None
        self._rconn: aiosqlite.Connection | None = None
        self._queue: collections.deque[_Pending | _RowJob | _Job | _Barrier] = collections.deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[list[Event]], Any]] = []
        self._job_events: list[Event] = []
        self._closing = False
        self._closed = False
        self._urged = False  # commit what is queued now, lazy or not (see LAZY_S)
        self._scrubber_now: Scrubber | None = None
        self.checkpointer = Checkpointer(path)
        self._wal_work = 0  # commit work since the last checkpoint was asked for
        self.damaged_events: set[tuple[str, int]] = set()  # (session, seq) of events that did not decode

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path | None = None, *, clock: Clock | None = None,
                   recover: bool = True, synchronous: str = DEFAULT_SYNCHRONOUS,
                   max_batch: int = MAX_BATCH, create: bool = True, check: bool = True) -> Store:
        """Create (0600) or check the file, migrate it, start the writer and recover
        sessions whose runner is gone. Raises StoreError subclasses for bad files.

        ``create=False`` (read-only commands): a missing or empty file raises NoDatabase,
        no directory or file is made. ``check`` (default; runners): PRAGMA quick_check
        first, so nothing writes into a damaged file; readers skip it and meet damage
        where they read (DatabaseDamaged, or a damaged event shown as such)."""
        target = Path(path).expanduser() if path is not None else \
            await asyncio.to_thread(default_db_path, create=create)
        prepared = await asyncio.to_thread(prepare_database, target, create=create, check=check)
        store = cls(prepared, clock, synchronous=synchronous, max_batch=max_batch)
        try:
            store._wconn = await connect(prepared, synchronous=store.synchronous, autocheckpoint=False)
            store._rconn = await connect(prepared, synchronous=store.synchronous)
            store._rconn.text_factory = _lenient_text  # one bad byte must not hide a whole page
            store._writer = asyncio.get_running_loop().create_task(
                store._run_writer(), name="shepherd-store-writer")
            if recover:
                await store.recover()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Commit everything submitted so far, stop the writer, close the connections."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        await asyncio.to_thread(self.checkpointer.close)
        self._closed = True
        for conn in (self._wconn, self._rconn):
            if conn is not None:
                await conn.close()
        self._wconn = self._rconn = None

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    # --- writing -------------------------------------------------------------------

    def submit(self, event: Event, *, lazy: bool = False) -> asyncio.Future[Event | None]:
        """Queue ``event``; the future resolves to the committed event (seq, ts set) or
        None if it was dropped as a duplicate. ``lazy``: nothing acts on it before the next
        urgent submit, whose commit it may wait for (up to LAZY_S; see ``urge``)."""
        if self._closing:
            raise StoreError(f"the store {self.path} is closed")
        if not event.session_id:
            raise ValueError(f"{event.type} event has no session_id")
        future: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        scrubber, ts = self._scrubber(), event.ts or self.clock.now()
        own, head = prepare(event, ts)
        if not scrubber.clean_json(head):  # (most events: nothing to scrub, one look at their JSON)
            own, head = prepare(scrub_event(event, scrubber), ts)
        queue = self._queue
        if not (lazy and queue):  # (a lazy item behind others changes no wait of the writer's)
            self._wake.set()
        queue.append(_Pending(own, head, future, time.perf_counter(), lazy=lazy))
        return future

    def urge(self) -> None:
        """Commit everything queued so far at once, lazy items too (a caller is about to
        wait for them)."""
        if self._queue:
            self._urged = True
            self._wake.set()

    async def append(self, event: Event) -> Event | None:
        return await self.submit(event)

    async def append_together(self, *events: Event) -> list[Event | None]:
        """Commit ``events`` in one transaction: a crash keeps all of them or none (an
        error and the retry decided on it are one step of the record)."""
        futures = [self.submit(ev) for ev in events]
        for p in list(self._queue)[-len(events):-1]:
            p.with_next = True  # type: ignore[union-attr]
        return list(await asyncio.gather(*futures))

    def _scrubber(self) -> Scrubber:
        """One Scrubber for all submits of one event-loop iteration (a burst of events
        checks the environment once); the next iteration sees any change."""
        scrubber = self._scrubber_now
        if scrubber is None:
            scrubber = self._scrubber_now = Scrubber()
            asyncio.get_running_loop().call_soon(self._forget_scrubber)
        return scrubber

    def _forget_scrubber(self) -> None:
        self._scrubber_now = None

    async def flush(self) -> None:
        """Wait until everything submitted before this call is committed (or failed)."""
        if self._closed or (self._writer is not None and self._writer.done()):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Barrier(future))
        self._wake.set()
        await future

    def subscribe(self, callback: Callable[[list[Event]], Any]) -> Callable[[], None]:
        """``callback(events)`` runs in the event loop after each commit (events in seq
        order per session). Returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def run_write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn(conn)`` on the writer connection inside BEGIN IMMEDIATE ... COMMIT,
        in order with the events queued before it."""
        if self._closing:
            raise StoreError(f"the store {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(fn, future))
        self._wake.set()
        return await future

    async def _run_write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run_write`` for plain sqlite3 code: its transaction in one hop to the thread."""
        if self._closing:
            raise StoreError(f"the store {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(fn, future, sync=True))
        self._wake.set()
        return await future

    async def run_rows(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(raw sqlite3 connection)`` in the writer's next transaction, after the
        events queued before it; returns once that transaction has committed. For writes
        to tables of their own (the SDK adapters' history rows) that read no event table:
        they share the commit of the events around them (a streaming turn's tool events
        and the history items of that turn become one commit, not two). ``fn`` runs in a
        savepoint: if it raises, its own changes are undone and the caller gets the error;
        the rest of the transaction commits."""
        return await self.submit_rows(fn)

    def submit_rows(self, fn: Callable[[sqlite3.Connection], T], *, lazy: bool = False,
                    atomic: bool = False) -> asyncio.Future[T]:
        """``run_rows`` without waiting: queued at once, behind everything submitted so far
        (``lazy`` as for ``submit``). ``atomic``: ``fn`` changes the database with one
        statement at most (SQLite undoes a failed statement by itself), so it runs without
        the savepoint, two statements fewer for the writer's thread."""
        if self._closing:
            raise StoreError(f"the store {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if not (lazy and self._queue):
            self._wake.set()
        self._queue.append(_RowJob(fn, future, lazy, atomic))
        return future

    async def run_read(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn(conn)`` on the read connection (sees committed data only)."""
        return await fn(self._reader())

    def _reader(self) -> aiosqlite.Connection:
        if self._rconn is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._rconn

    async def _run_writer(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._urged and not self._closing and await self._hold_lazy():
                continue
            head = queue[0]
            if isinstance(head, _Barrier):
                queue.popleft()
                if not head.future.done():
                    head.future.set_result(None)
                continue
            if isinstance(head, _Job):
                queue.popleft()
                await self._run_job(head)
                continue
            items: list[_Pending | _RowJob] = []
            while queue and isinstance(queue[0], (_Pending, _RowJob)) and (
                    len(items) < self.max_batch or getattr(items[-1], "with_next", False)):
                items.append(queue.popleft())  # type: ignore[arg-type]
            self._urged = False
            await self._commit(items)

    async def _hold_lazy(self) -> bool:
        """While only lazy items are queued, wait (up to lazy_s after the oldest) for an
        urgent one to share their commit. True when woken early (look at the queue again)."""
        queue = self._queue
        head = queue[0]
        if not getattr(head, "lazy", False):
            return False
        left = head.t0 + self.lazy_s - time.perf_counter()  # type: ignore[union-attr]
        if left <= 0 or not all(getattr(item, "lazy", False) for item in queue):
            return False
        # (a timer that sets the wake event, not wait_for: that made a task and a timer per
        # hold, and a turn holds several times)
        self._wake.clear()
        expired: list[bool] = []
        timer = asyncio.get_running_loop().call_later(left, self._expire_hold, expired)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()
        return not expired

    def _expire_hold(self, expired: list[bool]) -> None:
        expired.append(True)
        self._wake.set()

    async def _commit(self, items: list[_Pending | _RowJob]) -> None:
        """One transaction: the events of ``items``, then their row jobs (in a savepoint each)."""
        batch = [p for p in items if isinstance(p, _Pending)]
        row_jobs = [j for j in items if isinstance(j, _RowJob)]
        events = [p.event for p in batch]
        heads = [p.head for p in batch]
        t_start = time.perf_counter()

        def work(c: sqlite3.Connection) -> tuple[list[Event | None], list[tuple[bool, Any]]]:
            results = write_events(c, events, now, heads)
            outcomes: list[tuple[bool, Any]] = []
            for job in row_jobs:
                if job.atomic:
                    try:
                        outcomes.append((True, job.fn(c)))
                    except Exception as e:  # noqa: BLE001 - handed to that job's caller
                        if not c.in_transaction:
                            raise  # (an I/O error or a full disk ends the whole transaction)
                        outcomes.append((False, e))
                    continue
                c.execute("SAVEPOINT shepherd_rows")
                try:
                    outcomes.append((True, job.fn(c)))
                except Exception as e:  # noqa: BLE001 - handed to that job's caller
                    c.execute("ROLLBACK TO shepherd_rows")
                    outcomes.append((False, e))
                c.execute("RELEASE shepherd_rows")
            return results, outcomes

        try:
            assert self._wconn is not None
            now = self.clock.now()
            results, outcomes = await run_sync(self._wconn, lambda raw: transaction_sync(raw, work))
        except Exception as e:  # the writer must survive a failed batch
            log.exception("store: writing %d events failed", len(batch))
            self.stats.failed_batches += 1
            error = e if isinstance(e, StoreError) else StoreError(f"could not write to {self.path}: {e}")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            for job in row_jobs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        t_end = time.perf_counter()
        self._committed(1 + len(batch) // 16)
        for job, (ok, value) in zip(row_jobs, outcomes):
            if not job.future.done():
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
        self.stats.jobs += len(row_jobs)
        if not batch:
            return
        st = self.stats
        st.batches += 1
        st.events += len(batch)
        st.max_batch = max(st.max_batch, len(batch))
        st.max_commit_s = max(st.max_commit_s, t_end - t_start)
        st.max_latency_s = max(st.max_latency_s, t_end - min(p.t0 for p in batch))
        st.over_budget += sum(1 for p in batch if t_end - p.t0 > self.max_wait_s)
        committed: list[Event] = []
        for p, result in zip(batch, results):
            if result is None:
                st.dropped += 1
            else:
                committed.append(result)
            if not p.future.done():
                p.future.set_result(result)
        self._notify(committed)

    async def _run_job(self, job: _Job) -> None:
        self._job_events = []
        self.stats.jobs += 1
        try:
            assert self._wconn is not None
            if job.sync:
                fn = job.fn
                result = await run_sync(self._wconn, lambda raw: transaction_sync(raw, fn))
            else:
                result = await in_transaction(self._wconn, job.fn)
        except BaseException as e:  # noqa: B036 - handed to the caller, writer goes on
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            if not job.future.done():
                job.future.set_exception(e)
            return
        self._committed(1 + len(self._job_events) // 16)
        if not job.future.done():
            job.future.set_result(result)
        if self._job_events:
            self._notify(self._job_events)
        self._job_events = []

    async def _write_in_job(self, conn: aiosqlite.Connection, events: list[Event]) -> list[Event | None]:
        """Write events from inside a job's transaction (recovery); subscribers hear of
        them after the job commits."""
        now = self.clock.now()
        scrubber = Scrubber()
        events = [scrub_event(e, scrubber) for e in events]
        results = await run_sync(conn, lambda raw: write_events(raw, events, now))
        self._job_events.extend(e for e in results if e is not None)
        return results

    def _committed(self, work: int) -> None:
        self._wal_work += work
        if self._wal_work >= CHECKPOINT_EVERY:
            self._wal_work = 0
            self.checkpointer.kick()

    def _notify(self, events: list[Event]) -> None:
        if not events:
            return
        for callback in list(self._subscribers):
            try:
                result = callback(events)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("store subscriber %r failed", callback)

    # --- reading -------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return list(await self._reader().execute_fetchall(sql, tuple(params)))
        except sqlite3.DatabaseError as e:  # a malformed page: one line, not a traceback
            raise damaged(self.path, str(e)) from None

    async def _fetch_tuples(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Plain tuples (no Row objects), fetched in one hop to the reader's thread."""
        args = tuple(params)

        def fetch(raw: sqlite3.Connection) -> list[tuple[Any, ...]]:
            cursor = raw.cursor()
            cursor.row_factory = None
            try:
                return cursor.execute(sql, args).fetchall()
            finally:
                cursor.close()

        try:
            return await run_sync(self._reader(), fetch)
        except sqlite3.DatabaseError as e:  # a malformed page: one line, not a traceback
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

    async def list_sessions(self, status: str | Iterable[str] | None = None, text: str | None = None,
                            limit: int = 50, offset: int = 0) -> list[SessionRow]:
        """Newest first; ``status`` one or several; ``text`` matches title, id, backend, model."""
        where: list[str] = []
        params: list[Any] = []
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params += statuses
        if text:
            pattern = _like(text)
            where.append("(title LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\' "
                         "OR backend LIKE ? ESCAPE '\\' OR IFNULL(model, '') LIKE ? ESCAPE '\\')")
            params += [pattern] * 4
        sql = "SELECT * FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?"
        rows = await self._fetch(sql, [*params, int(limit), int(offset)])
        return [_session_row(r) for r in rows]

    async def count_sessions(self, status: str | Iterable[str] | None = None) -> int:
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            rows = await self._fetch(
                f"SELECT COUNT(*) AS n FROM sessions WHERE status IN ({', '.join('?' for _ in statuses)})",
                statuses)
        else:
            rows = await self._fetch("SELECT COUNT(*) AS n FROM sessions")
        return int(rows[0]["n"])

    async def get_session(self, session_id: str) -> SessionRow | None:
        rows = await self._fetch("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return _session_row(rows[0]) if rows else None

    async def resolve_session(self, id_or_prefix: str) -> str:
        key = (id_or_prefix or "").strip()
        if not key:
            raise SessionNotFound("no session id given")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:  # a command-line byte that is not UTF-8: no id has it
            raise SessionNotFound(f"no session matches {key!r}") from None
        if await self._fetch("SELECT 1 FROM sessions WHERE id = ?", (key,)):
            return key
        prefix = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._fetch(
            "SELECT id FROM sessions WHERE id LIKE ? ESCAPE '\\' ORDER BY started_at DESC LIMIT 6",
            (prefix,))
        if not rows:
            raise SessionNotFound(f"no session matches {key!r}")
        if len(rows) > 1:
            ids = [r["id"] for r in rows[:5]]
            more = ", ..." if len(rows) > 5 else ""
            raise AmbiguousSession(f"{key!r} matches several sessions ({', '.join(ids)}{more}); "
                                   "type more of the id")
        return str(rows[0]["id"])

    async def latest_session_id(self, status: str | Iterable[str] | None = None) -> str | None:
        rows = await self.list_sessions(status=status, limit=1)
        return rows[0].id if rows else None

    async def events(self, session_id: str, after_seq: int = 0, limit: int | None = 1000,
                     types: Iterable[str] | None = None) -> list[Event]:
        """Events with seq > after_seq, ascending; ``types`` keeps only those types."""
        sql = f"SELECT {_EVENT_READ} FROM events WHERE session_id = ? AND seq > ?"
        params: list[Any] = [session_id, int(after_seq)]
        type_list = [types] if isinstance(types, str) else list(types or ())
        if type_list:
            sql += f" AND type IN ({', '.join('?' for _ in type_list)})"
            params += type_list
        sql += " ORDER BY seq LIMIT ?"
        params.append(-1 if limit is None else int(limit))
        return self._events(session_id, await self._fetch_tuples(sql, params))

    async def events_before(self, session_id: str, before_seq: int, limit: int = 500) -> list[Event]:
        """Up to ``limit`` events with seq < before_seq, ascending (scrolling back)."""
        rows = await self._fetch_tuples(
            f"SELECT {_EVENT_READ} FROM events WHERE session_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (session_id, int(before_seq), int(limit)))
        rows.reverse()
        return self._events(session_id, rows)

    def _events(self, session_id: str, rows: list[tuple[Any, ...]]) -> list[Event]:
        """Rows of ``_EVENT_READ`` as events: lazily decoded where SQLite vouched for the
        JSON, the full decode (with its damage handling) for any other row."""
        return lazy_events(session_id, rows, lambda seq, data: self._decode(session_id, seq, data))

    async def last_seq(self, session_id: str) -> int:
        rows = await self._fetch("SELECT last_seq FROM sessions WHERE id = ?", (session_id,))
        if rows:
            return int(rows[0]["last_seq"])
        rows = await self._fetch("SELECT MAX(seq) AS m FROM events WHERE session_id = ?", (session_id,))
        return int(rows[0]["m"] or 0)

    async def subtasks(self, session_id: str) -> list[SubtaskRow]:
        rows = await self._fetch(
            "SELECT * FROM subtasks WHERE session_id = ? ORDER BY position, rowid", (session_id,))
        return [_subtask_row(r) for r in rows]

    async def tool_calls(self, session_id: str, status: str | None = None) -> list[ToolCallRow]:
        sql = "SELECT * FROM tool_calls WHERE session_id = ?"
        params: list[Any] = [session_id]
        if status:
            sql += " AND status = ?"
            params.append(status)
        rows = await self._fetch(sql + " ORDER BY started_seq", params)
        return [_tool_call_row(r) for r in rows]

    async def subtask_history(self, session_id: str, subtask_id: str,
                              types: Iterable[str] = SUBTASK_HISTORY_TYPES) -> tuple[int, list[Event]]:
        """What a runner rebuilds a subtask's attempt numbers and retry budget from: the
        highest attempt number any of its events carries, and its ``types`` events
        (attempts, errors, retries, starts and ends), ascending."""
        type_list = list(types)
        history_sql = ("SELECT data FROM events WHERE session_id = ? AND subtask_id = ? "
                       f"AND type IN ({', '.join('?' for _ in type_list)}) ORDER BY seq")

        def read(raw: sqlite3.Connection) -> tuple[Any, list[Any]]:  # both in one hop
            cursor = raw.cursor()
            cursor.row_factory = None
            try:
                top = cursor.execute("SELECT MAX(attempt) FROM events WHERE session_id = ? AND subtask_id = ?",
                                     (session_id, subtask_id)).fetchone()[0]
                return top, cursor.execute(history_sql, (session_id, subtask_id, *type_list)).fetchall()
            finally:
                cursor.close()

        try:
            top, rows = await run_sync(self._reader(), read)
        except sqlite3.DatabaseError as e:  # a malformed page: one line, not a traceback
            raise damaged(self.path, str(e)) from None
        return int(top or 0), [decode_event(r[0]) for r in rows]

    async def last_plan(self, session_id: str) -> list[dict[str, Any]] | None:
        """The subtasks of the session's latest plan.ready (a planning attempt's plan
        replaces the task file's list), or None if it has none."""
        rows = await self._fetch("SELECT data FROM events WHERE session_id = ? AND type = 'plan.ready' "
                                 "ORDER BY seq DESC LIMIT 1", (session_id,))
        return list(getattr(decode_event(rows[0]["data"]), "subtasks", None) or []) if rows else None

    async def tail(self, session_id: str, after_seq: int = 0, poll_s: float = 0.1,
                   page: int = 1000) -> AsyncIterator[list[Event]]:
        """Follow a session another process writes: yields each new run of events, polling
        (through the clock) every ``poll_s`` while nothing is new."""
        last = int(after_seq)
        while True:
            batch = await self.events(session_id, after_seq=last, limit=page)
            if batch:
                last = batch[-1].seq
                yield batch
                continue
            await self.clock.sleep(poll_s)

    # --- leases --------------------------------------------------------------------

    def _runner_gone(self, lease: Any, now: float) -> str | None:
        """Why the lease's runner is gone, or None if it may still be running."""
        if lease is None:
            return "no lease"
        if lease["expires_at"] <= now:
            if lease["host"] == self.host and _pid_stopped(int(lease["pid"])):
                return None  # stopped (Ctrl-Z), not gone: it goes on, and renews its lease, once continued
            return "lease expired"
        if lease["host"] == self.host and not _pid_alive(int(lease["pid"])):
            return f"process {lease['pid']} has exited"
        return None

    async def _lease_row(self, conn: aiosqlite.Connection, session_id: str) -> Any:
        rows = list(await conn.execute_fetchall("SELECT * FROM leases WHERE session_id = ?", (session_id,)))
        return rows[0] if rows else None

    def _take_lease(self, conn: sqlite3.Connection, session_id: str, ttl_s: float) -> None:
        rows = conn.execute("SELECT * FROM leases WHERE session_id = ?", (session_id,)).fetchall()
        row = rows[0] if rows else None
        if row is not None and row["owner"] != self.owner and self._runner_gone(row, self.clock.now()) is None:
            raise LeaseHeld(session_id, row["owner"])
        conn.execute(
            "INSERT OR REPLACE INTO leases (session_id, owner, expires_at, pid, host) VALUES (?, ?, ?, ?, ?)",
            (session_id, self.owner, self.clock.now() + ttl_s, self.pid, self.host))

    # Taking and refreshing a lease are transactions of their own (writer jobs, each in one
    # hop to the writer's thread); giving it up rides in the writer's next transaction (run_rows), so a runner's
    # session.finished and its release are one commit.

    async def acquire_lease(self, session_id: str, ttl_s: float = 60) -> None:
        """Become the one runner of ``session_id``; LeaseHeld if a live runner has it. An
        expired lease, or one of a dead process on this host, is taken over."""
        await self._run_write_sync(lambda raw: self._take_lease(raw, session_id, ttl_s))

    async def refresh_lease(self, session_id: str, ttl_s: float = 60) -> None:
        """Extend our lease; if it was lost meanwhile, take it again or raise LeaseHeld."""
        def refresh(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE leases SET expires_at = ? WHERE session_id = ? AND owner = ?",
                (self.clock.now() + ttl_s, session_id, self.owner))
            if cursor.rowcount == 0:
                self._take_lease(conn, session_id, ttl_s)

        await self._run_write_sync(refresh)

    async def release_lease(self, session_id: str) -> None:
        await self.release_lease_soon(session_id)

    def release_lease_soon(self, session_id: str) -> asyncio.Future[None]:
        """``release_lease`` queued now (it shares the commit of what was submitted just
        before it); await the future for its commit."""
        def release(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE session_id = ? AND owner = ?", (session_id, self.owner))

        return self.submit_rows(release)

    async def lease_owner(self, session_id: str) -> str | None:
        row = await self._lease_row(self._reader(), session_id)
        if row is None or self._runner_gone(row, self.clock.now()) is not None:
            return None
        return str(row["owner"])

    # --- commands ------------------------------------------------------------------

    async def enqueue_command(self, session_id: str, command: str, subtask_id: str | None = None,
                              text: str = "", source: str = "cli") -> int:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
        text = Scrubber().text(text)  # a person's message may quote a secret too

        async def insert(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(
                "INSERT INTO commands (session_id, command, subtask_id, text, source, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, command, subtask_id, text, source, self.clock.now()))
            return int(cursor.lastrowid or 0)

        return await self.run_write(insert)

    async def take_commands(self, session_id: str) -> list[CommandRow]:
        """Untaken commands for the session, oldest first, marked taken atomically."""
        # Polled often by runners: skip the write transaction when there is nothing.
        if not await self._fetch(
                "SELECT 1 FROM commands WHERE session_id = ? AND taken_at IS NULL LIMIT 1", (session_id,)):
            return []

        async def take(conn: aiosqlite.Connection) -> list[CommandRow]:
            rows = list(await conn.execute_fetchall(
                "SELECT * FROM commands WHERE session_id = ? AND taken_at IS NULL ORDER BY id", (session_id,)))
            if rows:
                await conn.executemany("UPDATE commands SET taken_at = ? WHERE id = ?",
                                       [(self.clock.now(), r["id"]) for r in rows])
            return [_command_row(r) for r in rows]

        return await self.run_write(take)

    # --- recovery ------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Close sessions whose runner is gone: tool.finished(interrupted) for each running
        call, then session.interrupted, in one transaction; then kill the tool processes a
        dead runner of this host left behind (core.tools.spawn.kill_orphans). Returns their
        ids; a second call finds nothing (the sessions are no longer live)."""
        live = tuple(sorted(FINISHED_SESSION))
        marks = ", ".join("?" for _ in live)
        if not await self._fetch(f"SELECT 1 FROM sessions WHERE status NOT IN ({marks}) LIMIT 1", live):
            return []

        async def recover_job(conn: aiosqlite.Connection) -> list[str]:
            now = self.clock.now()
            candidates = list(await conn.execute_fetchall(
                f"SELECT id, last_event_ts FROM sessions WHERE status NOT IN ({marks}) ORDER BY started_at", live))
            events: list[Event] = []
            recovered: list[str] = []
            dead_runners.clear()
            for cand in candidates:
                sid = cand["id"]
                lease = await self._lease_row(conn, sid)
                if lease is not None and lease["owner"] == self.owner:
                    continue
                why = self._runner_gone(lease, now)
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
                if lease is not None and lease["host"] == self.host and not _pid_alive(int(lease["pid"])):
                    dead_runners.add(int(lease["pid"]))
                if lease is not None:
                    await conn.execute("DELETE FROM leases WHERE session_id = ?", (sid,))
                recovered.append(sid)
            if events:
                await self._write_in_job(conn, events)
            return recovered

        dead_runners: set[int] = set()
        recovered = await self.run_write(recover_job)
        if dead_runners:
            # what their tools left running (a process that escaped its group, or no
            # pdeathsig on this system): only this host's, only marked with a dead runner
            from core.tools.spawn import kill_orphans

            killed = sum([await asyncio.to_thread(kill_orphans, pid, self.host) for pid in sorted(dead_runners)])
            if killed:
                log.info("store: killed %d tool process(es) left by runner(s) %s", killed,
                         ", ".join(map(str, sorted(dead_runners))))
        if recovered:
            log.info("store: marked %d session(s) interrupted: %s", len(recovered), ", ".join(recovered))
        return recovered

    # --- SDK adapters over this store ----------------------------------------------

    def agents_session(self, session_id: str, session_settings: Any = None, *,
                       deferred: bool = False) -> AgentsSession:
        """An openai-agents Session kept in this database, written through this store
        (``deferred``: its writes do not wait for their commit; see AgentsSession)."""
        from core.store.agents_session import AgentsSession

        return AgentsSession(session_id, self, session_settings=session_settings, deferred=deferred)

    def claude_session_store(self) -> ClaudeSessionStore:
        """A claude_agent_sdk SessionStore kept in this database, written through this store."""
        from core.store.claude_store import ClaudeSessionStore

        return ClaudeSessionStore(self)

    # --- pages of one subtask (the session view's windowing) ------------------------

    # What a subtask's blocks are folded from: its own events, the session's (no subtask:
    # they land in the current one) and every start (which says which one is current).
    _SUBTASK_PAGE = ("session_id = ? AND (subtask_id = ? OR subtask_id IS NULL "
                     "OR type IN ('subtask.started', 'attempt.started'))")

    async def subtask_events_before(self, session_id: str, subtask_id: str, before_seq: int,
                                    limit: int = 500) -> list[Event]:
        """Up to ``limit`` events a subtask's view is folded from, seq < before_seq, ascending."""
        rows = await self._fetch(
            f"SELECT seq, data FROM events WHERE {self._SUBTASK_PAGE} AND seq < ? ORDER BY seq DESC LIMIT ?",
            (session_id, subtask_id, int(before_seq), int(limit)))
        return [self._decode(session_id, r["seq"], r["data"]) for r in reversed(rows)]

    async def subtask_events_after(self, session_id: str, subtask_id: str, after_seq: int,
                                   limit: int = 500) -> list[Event]:
        """The same selection with seq > after_seq, ascending (looking ahead)."""
        rows = await self._fetch(
            f"SELECT seq, data FROM events WHERE {self._SUBTASK_PAGE} AND seq > ? ORDER BY seq LIMIT ?",
            (session_id, subtask_id, int(after_seq), int(limit)))
        return [self._decode(session_id, r["seq"], r["data"]) for r in rows]

    async def current_subtask_at(self, session_id: str, before_seq: int) -> str | None:
        """The subtask the last start before ``before_seq`` made current (where events
        without a subtask landed then)."""
        rows = await self._fetch(
            "SELECT subtask_id FROM events WHERE session_id = ? AND seq < ? "
            "AND type IN ('subtask.started', 'attempt.started') ORDER BY seq DESC LIMIT 1",
            (session_id, int(before_seq)))
        return rows[0]["subtask_id"] if rows else None
