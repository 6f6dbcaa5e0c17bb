"""``PgStore``: the EventStore contract (core.store.protocol) on PostgreSQL.

    store = await PgStore.open("postgresql://user@host:5432/db", clock=None, recover=True, host=None)

It is the SQLite ``Store`` with the database parts replaced, so the writer is the same one:
one writer task per process, submission order, batched commits, lazy items, subscribers.
What differs is below the writer:

- Writes: one ``psycopg.Connection`` on one worker thread; a batch is one transaction in one
  hop to that thread (the derivation is plain synchronous code, core.store.derive, run over
  ``dialect.SyncConn``: the very code SQLite runs, not a copy).
- Gapless seq with writers in other processes and on other hosts: before it reads a
  session's last seq the batch takes ``pg_advisory_xact_lock`` per session (in key order,
  so two batches never deadlock; ``lock_key``), in BEGIN's round trip; the lock ends with
  the transaction. Leases and commands take one per session too ("lease:", "commands:").
- Reads: a ``psycopg_pool.AsyncConnectionPool`` (autocommit), queries.py's SQL through
  ``dialect.AsyncConn``, the hot event reads in ``pg/reads.py``.
- Leases are dated by the server's clock (``clock_timestamp()``), never a client's; the
  pid check applies to this host's runners only, so recovery works across hosts: a lease
  that expired is taken over whoever held it. Recovery runs under one advisory lock, so
  two hosts recovering at once close a session once.

``host`` (or $SHEPHERD_HOST_ID) names this runner's host in leases (tests simulate hosts
with processes). ``path`` is the DSN without its password (for messages).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from shepherd.core.events import Event
from shepherd.core.secrets import Scrubber
from shepherd.core.store import commands, leases, recovery
from shepherd.core.store.db import MAX_BATCH, Store, _Job, _Pending, _RowJob, scrub_event
from shepherd.core.store.search import SearchHit
from shepherd.core.store.derive import FINISHED_SESSION, decode_event, write_events
from shepherd.core.store.errors import StoreError
from shepherd.core.store.pg import notify
from shepherd.core.store.pg import reads as pg_reads
from shepherd.core.store.pg import schema as pg_schema
from shepherd.core.store.pg.dialect import AsyncConn, SyncAsAsync, SyncConn, drive
from shepherd.core.store.protocol import SUBTASK_HISTORY_TYPES
from shepherd.core.store.rows import CommandRow

if TYPE_CHECKING:
    from shepherd.core.clock import Clock

log = logging.getLogger("shepherd.store")
T = TypeVar("T")

RECOVER_LOCK = 0x53485045  # one recovery at a time, whichever host


def is_pg_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def redact(dsn: str) -> str:
    """The DSN without a password, for messages (a URL urllib cannot parse loses everything
    between ``://`` and the last ``@``, where a password would be)."""
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises on a bad port/IPv6 part, as netloc parsing does
    except ValueError:
        scheme, sep, rest = dsn.partition("://")
        return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}" if "@" in rest else dsn
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def lock_key(name: str) -> int:
    """The advisory lock key of ``name`` (a session id, or "lease:"/"commands:" + one): a
    signed 64-bit hash every Shepherd process computes alike (part of the protocol)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "big", signed=True)


def lock_sql(session_ids: Iterable[str], what: str = "") -> str:
    """The statement that serialises this transaction's writes to these sessions (their
    events, or ``what`` of them: "lease:", "commands:") with every other writer's, until it
    ends. SQLite's one write lock gives that to the read-then-write code of derive, leases
    and commands; here it is one advisory lock per session and purpose, taken in key order
    (so two transactions never deadlock). Literal integers, no parameters: it can share a
    round trip with BEGIN."""
    keys = sorted({lock_key(what + sid) for sid in session_ids})
    return "SELECT " + ", ".join(f"pg_advisory_xact_lock({k})" for k in keys) if keys else ""


def _lock_sessions(c: SyncConn, session_ids: Iterable[str], what: str = "") -> None:
    statement = lock_sql(session_ids, what)
    if statement:
        c.raw.execute(statement)  # type: ignore[arg-type]


def _notify_followers(c: SyncConn, results: list[Event | None]) -> None:
    """NOTIFY, delivered when (and if) this transaction commits (pg/notify.py)."""
    sent = notify.payloads(results)
    if sent:
        c.raw.execute(notify.NOTIFY_SQL, (sent,))


def _server_now(c: SyncConn) -> float:
    return float(c.raw.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").fetchone()[0])  # type: ignore[index]


def _once(fn: Callable[[], float]) -> Callable[[], float]:
    """``fn`` asked once: one server time for everything a lease job decides."""
    value: list[float] = []

    def get() -> float:
        if not value:
            value.append(fn())
        return value[0]

    return get


class _LeasesInStoreTime(SyncAsAsync):
    """Recovery's connection: it decides with one ``now`` both whether a lease expired (by
    the server's clock) and when a session ended (its last event, dated by the runner's
    store clock). So the lease rows it reads have ``expires_at`` shifted into the store
    clock's frame: ``expires_at - skew <= store_now`` exactly when ``expires_at <= server_now``."""

    LEASE_ROW = "SELECT * FROM leases WHERE session_id = ?"

    def __init__(self, conn: SyncConn, skew: float) -> None:
        super().__init__(conn)
        self.skew = skew

    async def execute_fetchall(self, sql: str, params: Iterable[Any] | None = None) -> list[Any]:
        if sql == self.LEASE_ROW:
            sql = "SELECT session_id, owner, expires_at - ? AS expires_at, pid, host FROM leases WHERE session_id = ?"
            params = (self.skew, *(params or ()))
        return await super().execute_fetchall(sql, params)


class PgStore(Store):
    """See the module docstring. ``dsn``: the connection string; ``pool_size``: read connections."""

    def __init__(self, dsn: str, clock: Clock | None = None, *, max_batch: int = MAX_BATCH,
                 host: str | None = None, pool_size: int = 4) -> None:
        super().__init__(Path("postgresql"), clock, max_batch=max_batch)
        self.dsn = dsn
        self.path = redact(dsn)  # type: ignore[assignment]  (a URL, not a file: shown in messages)
        self.host = host or os.environ.get("SHEPHERD_HOST_ID", "").strip() or self.host
        self.owner = f"{self.host}:{self.pid}:{os.urandom(4).hex()}"
        self.pool_size = max(1, int(pool_size))
        self._wsync: SyncConn | None = None
        self._pool: AsyncConnectionPool | None = None
        self.listener = notify.Listener(dsn)  # started by the first tail()
        self._exec = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shepherd-pg-writer")

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path | None = None, *, clock: Clock | None = None,  # type: ignore[override]
                   recover: bool = True, max_batch: int = MAX_BATCH, create: bool = True, check: bool = True,
                   host: str | None = None, pool_size: int = 4, **_: Any) -> PgStore:
        """Connect, check and migrate the schema, start the writer and recover sessions
        whose runner is gone. ``check`` is SQLite's page check: nothing to do here."""
        dsn = str(path)
        store = cls(dsn, clock, max_batch=max_batch, host=host, pool_size=pool_size)
        try:
            await store._in_thread(lambda: store._connect_writer(create))
            pool = AsyncConnectionPool(dsn, min_size=1, max_size=store.pool_size, open=False,
                                       kwargs={"autocommit": True, "connect_timeout": 10},
                                       name="shepherd-pg-read")
            await pool.open(wait=True, timeout=30)
            store._pool = pool
            store._writer = asyncio.get_running_loop().create_task(store._run_writer(), name="shepherd-store-writer")
            if recover:
                await store.recover()
        except BaseException as e:
            await store.close()
            if isinstance(e, psycopg.Error) or (type(e).__name__ == "PoolTimeout"):
                raise pg_schema.connect_error(store.path, e) from None  # type: ignore[arg-type]
            raise
        return store

    def _connect_writer(self, create: bool) -> None:
        raw = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        try:
            pg_schema.prepare(raw, self.path, create=create)  # type: ignore[arg-type]
        except BaseException:
            raw.close()
            raise
        self._wsync = SyncConn(raw)

    async def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        self._closed = True
        await self.listener.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._wsync is not None:
            conn, self._wsync = self._wsync, None
            await self._in_thread(conn.raw.close)
        self._exec.shutdown(wait=False)

    async def __aenter__(self) -> PgStore:
        return self

    # --- the writer's thread and transactions ----------------------------------------

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn)

    def _tx(self, fn: Callable[[SyncConn], T], locks: str = "") -> T:
        """BEGIN (and ``locks``, in the same round trip); fn; COMMIT (ROLLBACK if it
        raises), on the writer's thread."""
        c = self._wsync
        if c is None:
            raise StoreError(f"the store {self.path} is closed")
        if c.raw.closed or c.raw.broken:  # the server restarted, or the network dropped us
            log.info("store: reconnecting the writer to %s", self.path)
            c.raw.close()
            self._connect_writer(create=True)
            c = self._wsync
            assert c is not None
        c.raw.execute(f"BEGIN; {locks}" if locks else "BEGIN")  # type: ignore[arg-type]
        try:
            result = fn(c)
            c.flush()
            c.raw.execute("COMMIT")
        except BaseException:
            c._deferred.clear()
            if not c.raw.closed and c.in_transaction:
                try:
                    c.raw.execute("ROLLBACK")
                except psycopg.Error:
                    pass
            raise
        return result

    def _committed(self, work: int) -> None:
        return None  # (no WAL of ours to checkpoint)

    async def _commit(self, items: list[_Pending | _RowJob]) -> None:  # type: ignore[override]
        """One transaction: the events of ``items``, then their row jobs (a savepoint each)."""
        batch = [p for p in items if isinstance(p, _Pending)]
        row_jobs = [j for j in items if isinstance(j, _RowJob)]
        events = [p.event for p in batch]
        heads = [p.head for p in batch]
        t_start = time.perf_counter()
        now = self.clock.now()

        locks = lock_sql(e.session_id for e in events)

        def work(c: SyncConn) -> tuple[list[Event | None], list[tuple[bool, Any]]]:
            results = write_events(c, events, now, heads)  # type: ignore[arg-type]
            _notify_followers(c, results)
            outcomes: list[tuple[bool, Any]] = []
            for job in row_jobs:
                c.raw.execute("SAVEPOINT shepherd_rows")
                try:
                    outcomes.append((True, job.fn(c)))
                except Exception as e:  # noqa: BLE001 - handed to that job's caller
                    c.raw.execute("ROLLBACK TO SAVEPOINT shepherd_rows")
                    outcomes.append((False, e))
                c.raw.execute("RELEASE SAVEPOINT shepherd_rows")
            return results, outcomes

        try:
            results, outcomes = await self._in_thread(lambda: self._tx(work, locks))
        except Exception as e:  # the writer must survive a failed batch
            self._batch_failed(batch, row_jobs, e, pg_schema.one_line(e))
            return
        self._batch_committed(batch, row_jobs, results, outcomes, t_start, time.perf_counter())

    async def _run_job(self, job: _Job) -> None:
        """A writer job: plain code over the SyncConn (``sync``), or a coroutine written for
        aiosqlite's API (commands, run states) driven over it, in a transaction of its own."""
        self._job_events = []
        self.stats.jobs += 1
        fn = job.fn
        body: Callable[[SyncConn], Any] = fn if job.sync else (lambda c: drive(fn(SyncAsAsync(c))))
        try:
            result = await self._in_thread(lambda: self._tx(body))
        except BaseException as e:  # noqa: B036 - handed to the caller, writer goes on
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            if not job.future.done():
                job.future.set_exception(e if not isinstance(e, psycopg.Error) else
                                         StoreError(f"could not write to {self.path}: {pg_schema.one_line(e)}"))
            return
        if not job.future.done():
            job.future.set_result(result)
        if self._job_events:
            self._notify(self._job_events)
        self._job_events = []

    # --- reads -----------------------------------------------------------------------

    async def _read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError(f"the store {self.path} is closed")
        try:
            async with pool.connection() as conn:
                return await query(AsyncConn(conn), *args)
        except psycopg.Error as e:
            raise StoreError(f"reading {self.path} failed: {pg_schema.one_line(e)}") from None

    async def _read_pg(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``query(pooled AsyncConnection, *args)`` (pg/reads.py)."""
        return await self._read(lambda c: query(c.raw, *args))

    async def run_read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        return await self._read(fn)

    def _reader(self) -> Any:
        raise StoreError("PgStore reads through its pool (_read), not one connection")

    async def events(self, session_id: str, after_seq: int = 0, limit: int | None = 1000,
                     types: Iterable[str] | None = None) -> list[Event]:
        return self._events(session_id, await self._read_pg(pg_reads.event_rows, session_id, after_seq, limit, types))

    async def events_before(self, session_id: str, before_seq: int, limit: int = 500) -> list[Event]:
        return self._events(session_id, await self._read_pg(pg_reads.event_rows_before, session_id, before_seq, limit))

    async def search(self, query: str, *, session_id: str | None = None, limit: int = 50) -> list[SearchHit]:
        return await self._read_pg(pg_reads.search_rows, query, session_id, limit)

    async def checkpoints(self, session_id: str) -> list[Event]:
        return [decode_event(r[0]) for r in await self._read_pg(pg_reads.checkpoint_rows, session_id)]

    async def subtask_history(self, session_id: str, subtask_id: str,
                              types: Iterable[str] = SUBTASK_HISTORY_TYPES) -> tuple[int, list[Event]]:
        top, rows = await self._read_pg(pg_reads.subtask_history_rows, session_id, subtask_id, list(types))
        return int(top or 0), [decode_event(r[0]) for r in rows]

    async def tail(self, session_id: str, after_seq: int = 0, poll_s: float = 0.1,
                   page: int = 1000) -> AsyncIterator[list[Event]]:
        """Follow a session another process (another host) writes: read by seq whenever a
        NOTIFY says it has new events, and every ``notify.FALLBACK_S`` regardless (a
        notification lost while reconnecting). ``poll_s`` is SQLite's: nothing polls here."""
        await self.listener.ensure()
        wake = self.listener.watch(session_id)
        last = int(after_seq)
        try:
            while not self._closed:  # (closing wakes every follower: it ends here)
                wake.clear()  # (before the read: a commit during it wakes the next wait)
                batch = await self.events(session_id, after_seq=last, limit=page)
                if batch:
                    last = batch[-1].seq
                    yield batch
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), notify.FALLBACK_S)
                except TimeoutError:
                    pass
                if not self.listener.alive and not self._closed:
                    try:
                        await self.listener.ensure()
                    except psycopg.Error as e:  # the server is away: keep reading by the fallback
                        log.info("store: cannot LISTEN again yet: %s", e)
        finally:
            self.listener.unwatch(session_id, wake)

    # --- leases: the server's clock ----------------------------------------------------

    async def acquire_lease(self, session_id: str, ttl_s: float = 60) -> None:
        await self._run_write_sync(lambda c: self._lease_job(c, leases.take, session_id, ttl_s))

    async def refresh_lease(self, session_id: str, ttl_s: float = 60) -> None:
        await self._run_write_sync(lambda c: self._lease_job(c, leases.refresh, session_id, ttl_s))

    def _lease_job(self, c: SyncConn, step: Callable[..., None], session_id: str, ttl_s: float) -> None:
        _lock_sessions(c, [session_id], "lease:")
        step(c, session_id, ttl_s, owner=self.owner, host=self.host, pid=self.pid, now=_once(lambda: _server_now(c)))

    async def take_commands(self, session_id: str) -> list[CommandRow]:
        if not await self._read(commands.any_untaken, session_id):
            return []

        def job(c: SyncConn) -> list[CommandRow]:
            _lock_sessions(c, [session_id], "commands:")  # two takers: each command once
            return drive(commands.take(SyncAsAsync(c), session_id, self.clock.now))  # type: ignore[arg-type]

        return await self._run_write_sync(job)

    async def lease_owner(self, session_id: str) -> str | None:
        async def query(c: AsyncConn) -> str | None:
            now = await pg_reads.server_now(c)
            return await leases.owner_of(c, session_id, host=self.host, now=lambda: now)  # type: ignore[arg-type]

        return await self._read(query)

    # --- recovery: any host's expired lease, once -------------------------------------

    async def recover(self) -> list[str]:
        if not await self._read(recovery.any_live):
            return []
        dead_runners: set[int] = set()
        stamp = self.clock.now()

        def job(c: SyncConn) -> list[str]:
            dead_runners.clear()
            c.raw.execute("SELECT pg_advisory_xact_lock(%s)", (RECOVER_LOCK,))
            # and every live session's lease and events, all before any row lock, in key
            # order like every other writer: no refresh lands between the look at a lease
            # and its removal, and no runner's batch (events, then its lease's release)
            # waits on us while we wait on it
            live = [r[0] for r in c.raw.execute(
                "SELECT id FROM sessions WHERE status <> ALL(%s)", (sorted(FINISHED_SESSION),)).fetchall()]
            _lock_sessions(c, [*live, *(f"lease:{sid}" for sid in live)])
            found, events = drive(recovery.gone_runners(
                _LeasesInStoreTime(c, _server_now(c) - stamp), now=stamp, owner=self.owner,
                host=self.host, dead_runners=dead_runners))  # type: ignore[arg-type]
            if events:
                _lock_sessions(c, (e.session_id for e in events))  # (held already, unless it just went live)
                scrubber = Scrubber()
                results = write_events(c, [scrub_event(e, scrubber) for e in events], stamp)  # type: ignore[arg-type]
                _notify_followers(c, results)
                self._job_events.extend(e for e in results if e is not None)
            return found

        recovered = await self._run_write_sync(job)
        await recovery.kill_left_behind(dead_runners, self.host)
        if recovered:
            log.info("store: marked %d session(s) interrupted: %s", len(recovered), ", ".join(recovered))
        return recovered
