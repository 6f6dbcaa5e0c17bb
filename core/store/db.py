"""The SQLite store: ``Store``, its connections and the single writer.

``Store`` is the SQLite implementation of the CONTRACT, ``core.store.protocol.EventStore``
(what every other module codes against). This module holds the connections and the
single writer task (batched commits, lazy items, subscribers); the read side is
``reads.py`` (``SQLiteReads``, mixed in); the SQL of the reads, leases, commands and
recovery is in ``queries.py``, ``leases.py``, ``commands.py`` and ``recovery.py`` (plain
functions over a connection); the file's creation, checks and migrations in
``schema.py``; the derived tables in ``derive.py``. The errors (``errors.py``) and the
row types (``rows.py``) are re-exported here.

    store = await Store.open(path, *, clock=None, recover=True)   # creates 0600, WAL, migrates, recovers
        # create=False: read-only commands; a missing/empty file raises NoDatabase, nothing made
        # check=True (default): quick_check first, DatabaseDamaged if damaged (runners write)
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shepherd.core.clock import RealClock
from shepherd.core.events import Event
from shepherd.core.records import record
from shepherd.core.store.conn import Checkpointer, connect, in_transaction, run_sync, transaction_sync
from shepherd.core.secrets import Scrubber
from shepherd.core.store import commands, leases, recovery, run_states
from shepherd.core.store.derive import copy_event, prepare, write_events
from shepherd.core.store.derive import field_names
from shepherd.core.store.row_cache import RowCache
from shepherd.core.store.errors import (  # noqa: F401  (re-exported: `from core.store.db import X` still works)
    AmbiguousSession, DatabaseDamaged, LeaseHeld, NoDatabase, NotADatabase, SchemaTooNew, SessionEnded,
    SessionNotFound, StoreError,
)
from shepherd.core.store.rows import CommandRow, SessionRow, SubtaskRow, ToolCallRow  # noqa: F401  (re-exported)
from shepherd.core.store.reads import SQLiteReads
from shepherd.core.store.schema import SCHEMA_VERSION, default_db_path, prepare_database

if TYPE_CHECKING:
    import aiosqlite

    from shepherd.core.clock import Clock
    from shepherd.core.store.agents_session import AgentsSession
    from shepherd.core.store.claude_store import ClaudeSessionStore


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
# one of their own. Within the 50 ms bound: the hold ends early enough for its commit to
# land in time (``hold_s``: twice the writer's running estimate of a commit's duration, and
# at least HOLD_MARGIN_S, are left before MAX_WAIT_S). ``urge()`` and ``flush()`` end it at once.
# (40 ms shared more commits, but then 1 event in 12 waited past the bound in the bench.)
LAZY_S = 0.025
HOLD_MARGIN_S = 0.010
# WAL + NORMAL: a commit is in the OS once COMMIT returns, so SIGKILL loses nothing
# acknowledged; only a power cut / kernel crash can drop the last commits (FULL would fsync
# every commit). Chosen after measuring both, see bench/store_bench.py and the report.
DEFAULT_SYNCHRONOUS = "NORMAL"
# The writer's commits never checkpoint the WAL themselves (see conn.Checkpointer): after
# about this much work (one per commit, one per 16 events; SQLite's own default is 1,000
# WAL pages, ~100 of our commits) the checkpoint thread is asked for one.
CHECKPOINT_EVERY = 100


@record
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


def hold_s(lazy_s: float, max_wait_s: float, commit_s: float) -> float:
    """How long lazy items may wait for an urgent one: lazy_s, less if a commit of the
    measured length (``commit_s``, twice, or HOLD_MARGIN_S) would not fit before max_wait_s."""
    return max(0.0, min(lazy_s, max_wait_s - max(HOLD_MARGIN_S, 2 * commit_s)))


class _Pending:
    __slots__ = ("event", "head", "future", "t0", "with_next", "lazy")

    def __init__(self, event: Event, head: str, future: asyncio.Future[Event | None], t0: float,
                 with_next: bool = False, lazy: bool = False) -> None:
        self.event = event  # the store's own copy, ts set; the writer sets its seq
        self.head = head  # its JSON without seq
        self.future = future
        self.t0 = t0
        self.with_next = with_next  # committed in the same transaction as the next one
        self.lazy = lazy  # may wait (hold_s) for an urgent item to share its commit


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


class Store(SQLiteReads):
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
        self.commit_s = 0.0  # a running estimate of one commit's duration (hold_s)
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
        self.row_cache = RowCache()  # the derived rows the writer wrote last (row_cache.py)

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path | None = None, *, clock: Clock | None = None,
                   recover: bool = True, synchronous: str = DEFAULT_SYNCHRONOUS,
                   max_batch: int = MAX_BATCH, create: bool = True, check: bool = True,
                   prepared: bool = False) -> Store:
        """Create (0600) or check the file, migrate it, start the writer and recover
        sessions whose runner is gone. Raises StoreError subclasses for bad files.

        ``create=False`` (read-only commands): a missing or empty file raises NoDatabase,
        no directory or file is made. ``check`` (default; runners): PRAGMA quick_check
        first, so nothing writes into a damaged file; readers skip it and meet damage
        where they read (DatabaseDamaged, or a damaged event shown as such).
        ``prepared``: this process prepared (and checked) this very file a moment ago, as
        the CLI does before the TUI opens it: not again (in a thread that competes with
        the TUI's first frame, that took ~15 ms)."""
        target = Path(path).expanduser() if path is not None else \
            await asyncio.to_thread(default_db_path)
        if not prepared:
            target = await asyncio.to_thread(prepare_database, target, create=create, check=check)
        store = cls(target, clock, synchronous=synchronous, max_batch=max_batch)
        try:
            # both at once (each its own thread): start-up waits for one round of trips, not two
            wconn, rconn = await asyncio.gather(
                connect(target, synchronous=store.synchronous, autocheckpoint=False),
                connect(target, synchronous=store.synchronous), return_exceptions=True)
            store._wconn = None if isinstance(wconn, BaseException) else wconn
            store._rconn = None if isinstance(rconn, BaseException) else rconn
            for failed in (wconn, rconn):
                if isinstance(failed, BaseException):
                    raise failed
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
        urgent submit, whose commit it may wait for (``hold_s``; see ``urge``)."""
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
        """While only lazy items are queued, wait (up to ``hold_s`` after the oldest) for an
        urgent one to share their commit. True when woken early (look at the queue again)."""
        queue = self._queue
        head = queue[0]
        if not getattr(head, "lazy", False):
            return False
        hold = hold_s(self.lazy_s, self.max_wait_s, self.commit_s)
        left = head.t0 + hold - time.perf_counter()  # type: ignore[union-attr]
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
            results = write_events(c, events, now, heads, self.row_cache)
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
            self._batch_failed(batch, row_jobs, e, str(e))
            return
        t_end = time.perf_counter()
        self._committed(1 + len(batch) // 16)
        self._batch_committed(batch, row_jobs, results, outcomes, t_start, t_end)

    def _batch_failed(self, batch: list[_Pending], row_jobs: list[_RowJob], e: Exception, why: str) -> None:
        """Every waiter of a batch that did not commit hears why (both stores' writers)."""
        log.exception("store: writing %d events failed", len(batch))
        self.stats.failed_batches += 1
        error = e if isinstance(e, StoreError) else StoreError(f"could not write to {self.path}: {why}")
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)
        for job in row_jobs:
            if not job.future.done():
                job.future.set_exception(e)

    def _batch_committed(self, batch: list[_Pending], row_jobs: list[_RowJob], results: list[Event | None],
                         outcomes: list[tuple[bool, Any]], t_start: float, t_end: float) -> None:
        """A committed batch: its waiters get their results, the stats and subscribers hear
        of it (both stores' writers)."""
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
        self.commit_s += 0.25 * ((t_end - t_start) - self.commit_s)
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

    # --- leases (the SQL: leases.py) -----------------------------------------------
    # Taking and refreshing a lease are transactions of their own (writer jobs, each in one
    # hop to the writer's thread); giving it up rides in the writer's next transaction
    # (run_rows), so a runner's session.finished and its release are one commit.

    async def acquire_lease(self, session_id: str, ttl_s: float = 60) -> None:
        await self._run_write_sync(lambda raw: leases.take(raw, session_id, ttl_s, **self._runner()))

    async def refresh_lease(self, session_id: str, ttl_s: float = 60) -> None:
        await self._run_write_sync(lambda raw: leases.refresh(raw, session_id, ttl_s, **self._runner()))

    def _runner(self) -> dict[str, Any]:
        """This store as a lease holder, and its clock (the keywords of leases.take/refresh)."""
        return {"owner": self.owner, "host": self.host, "pid": self.pid, "now": self.clock.now}

    async def release_lease(self, session_id: str) -> None:
        await self.release_lease_soon(session_id)

    def release_lease_soon(self, session_id: str) -> asyncio.Future[None]:
        return self.submit_rows(lambda raw: leases.release(raw, session_id, self.owner))

    async def lease_owner(self, session_id: str) -> str | None:
        return await leases.owner_of(self._reader(), session_id, host=self.host, now=self.clock.now)

    # --- commands (the SQL: commands.py) -------------------------------------------

    async def enqueue_command(self, session_id: str, command: str, subtask_id: str | None = None,
                              text: str = "", source: str = "cli", *, call_id: str | None = None) -> int:
        text = commands.checked_text(command, text)
        return await self.run_write(lambda conn: commands.insert(
            conn, session_id, command, subtask_id, text, source, self.clock.now(), call_id))

    # --- run states (the SQL: run_states.py) -----------------------------------------

    async def save_run_state(self, session_id: str, subtask_id: str, call_ids: list[str], state: str) -> None:
        blob = Scrubber().text(state)
        await self.run_write(lambda conn: run_states.save(conn, session_id, subtask_id, call_ids, blob,
                                                          self.clock.now()))

    async def load_run_state(self, session_id: str, subtask_id: str) -> tuple[list[str], str] | None:
        return await self._read(run_states.load, session_id, subtask_id)

    async def drop_run_state(self, session_id: str, subtask_id: str) -> None:
        await self.run_write(lambda conn: run_states.drop(conn, session_id, subtask_id))

    async def take_commands(self, session_id: str) -> list[CommandRow]:
        if not await self._read(commands.any_untaken, session_id):
            return []
        return await self.run_write(lambda conn: commands.take(conn, session_id, self.clock.now))

    # --- recovery (the SQL: recovery.py) -------------------------------------------

    async def recover(self) -> list[str]:
        if not await self._read(recovery.any_live):
            return []
        dead_runners: set[int] = set()

        async def recover_job(conn: aiosqlite.Connection) -> list[str]:
            dead_runners.clear()
            found, events = await recovery.gone_runners(conn, now=self.clock.now(), owner=self.owner,
                                                        host=self.host, dead_runners=dead_runners)
            if events:
                await self._write_in_job(conn, events)
            return found

        recovered = await self.run_write(recover_job)
        await recovery.kill_left_behind(dead_runners, self.host)
        if recovered:
            log.info("store: marked %d session(s) interrupted: %s", len(recovered), ", ".join(recovered))
        return recovered

    # --- SDK adapters over this store ----------------------------------------------

    def agents_session(self, session_id: str, session_settings: Any = None, *,
                       deferred: bool = False) -> AgentsSession:
        from shepherd.core.store.agents_session import AgentsSession

        return AgentsSession(session_id, self, session_settings=session_settings, deferred=deferred)

    def claude_session_store(self) -> ClaudeSessionStore:
        from shepherd.core.store.claude_store import ClaudeSessionStore

        return ClaudeSessionStore(self)
