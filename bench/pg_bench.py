"""Appends/s: the PostgreSQL store against the SQLite store and a naive PostgreSQL writer.

    python bench/pg_bench.py [--events N] [--producers P] [--dsn postgresql://...] [--fsync] [--fleet]

Each contender takes N TextDelta events from P concurrent producers, each awaiting its
append (as a streaming backend does), in one session per producer:
  * Shepherd's SQLite ``Store`` (a file in a temp dir, synchronous=NORMAL),
  * Shepherd's ``PgStore`` (batched by its one writer, derived tables in the transaction),
  * a naive PostgreSQL writer: one connection, one INSERT + session UPDATE and one COMMIT
    per event, under the same per-session advisory lock (what a store without a batching
    writer does).
It prints events/s, p95 and worst append latency, and the ratios; then the tail latency:
a runner in another process appends, a follower here tails the session (LISTEN/NOTIFY). Without ``--dsn`` it
starts a throw-away cluster like the tests (tests/pg_server.py; fsync off unless --fsync,
synchronous_commit on either way). Numbers from a shared 2-core machine: a ratio, not a
promise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shepherd.core.events import SessionStarted, TextDelta  # noqa: E402
from shepherd.core.store import Store  # noqa: E402
from shepherd.core.store.pg import PgStore  # noqa: E402

TEXT = "x" * 40


async def _producers(store: Any, n: int, p: int) -> float:
    for k in range(p):
        await store.append(SessionStarted(session_id=f"b{k}", title="bench"))
    per = n // p
    lat: list[float] = []

    async def one(k: int) -> None:
        for _ in range(per):
            t = time.perf_counter()
            await store.append(TextDelta(session_id=f"b{k}", text=TEXT))
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(p)))
    dt = time.perf_counter() - t0
    lat.sort()
    return per * p / dt, lat[int(len(lat) * 0.95)], lat[-1]


async def bench_sqlite(n: int, p: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        s = await Store.open(Path(d) / "b.db")
        try:
            return await _producers(s, n, p)
        finally:
            await s.close()


async def bench_pg(dsn: str, n: int, p: int) -> tuple[float, float, float]:
    s = await PgStore.open(dsn)
    try:
        return await _producers(s, n, p)
    finally:
        await s.close()


async def bench_naive(dsn: str, n: int, p: int) -> tuple[float, float, float]:
    """One commit per event, on an async connection per producer (no batching)."""
    import psycopg

    async def one(k: int, lat: list[float]) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            sid = f"naive{k}"
            await conn.execute("INSERT INTO sessions (id, started_at, updated_at) VALUES (%s, 0, 0) "
                               "ON CONFLICT DO NOTHING", (sid,))
            for _ in range(n // p):
                t = time.perf_counter()
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (sid,))
                    cur = await conn.execute("UPDATE sessions SET last_seq = last_seq + 1, updated_at = %s "
                                             "WHERE id = %s RETURNING last_seq", (time.time(), sid))
                    seq = (await cur.fetchone())[0]  # type: ignore[index]
                    ev = TextDelta(session_id=sid, seq=seq, ts=time.time(), text=TEXT)
                    await conn.execute("INSERT INTO events (session_id, seq, type, ts, data) VALUES (%s, %s, %s, %s, %s)",
                                       (sid, seq, ev.type, ev.ts, ev.to_json()))
                lat.append(time.perf_counter() - t)

    lat: list[float] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(one(k, lat) for k in range(p)))
    dt = time.perf_counter() - t0
    lat.sort()
    return (n // p) * p / dt, lat[int(len(lat) * 0.95)], lat[-1]


TAIL_WRITER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
from shepherd.core.events import TextDelta
from shepherd.core.store.pg import PgStore

async def main(dsn, n):
    store = await PgStore.open(dsn, host="runner-host", recover=False)
    for i in range(n):
        await store.append(TextDelta(session_id="tailed", text=str(time.time())))
        await asyncio.sleep(0.01)
    await store.close()

asyncio.run(main(sys.argv[2], int(sys.argv[3])))
"""


async def bench_tail(dsn: str, n: int) -> tuple[float, float, float]:
    """A runner in another process appends an event every 10 ms, each carrying its submit
    time; a follower here tails the session (LISTEN/NOTIFY): submit -> seen, p50/p95/max."""
    from shepherd.core.events import SessionStarted as _S

    reader = await PgStore.open(dsn, host="laptop", recover=False)
    await reader.append(_S(session_id="tailed"))
    lat: list[float] = []
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", TAIL_WRITER, str(ROOT), dsn, str(n))
    try:
        async for batch in reader.tail("tailed", after_seq=1):
            now = time.time()
            lat += [now - float(e.text) for e in batch if getattr(e, "text", "")]
            if len(lat) >= n:
                break
    finally:
        await proc.wait()
        await reader.close()
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.95)], lat[-1]


FLEET_RUNNER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
from shepherd.core.events import SessionStarted, TextDelta
from shepherd.core.store.pg import PgStore

async def main(dsn, k, n):
    sid = f"fleet{k}"
    store = await PgStore.open(dsn, host=f"runner-{k}", recover=False)
    await store.acquire_lease(sid)
    await store.append(SessionStarted(session_id=sid, title="fleet"))
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for i in range(n):  # a streaming turn: a burst of lazy deltas, then an urgent event awaited
        for _ in range(4):
            store.submit(TextDelta(session_id=sid, text=str(time.time())), lazy=True)
        await store.append(TextDelta(session_id=sid, text=str(time.time())))
        await asyncio.sleep(0.005)
    await store.release_lease(sid)
    await store.close()
    print(5 * n / (time.perf_counter() - t0), flush=True)

asyncio.run(main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""

FLEET_FOLLOWER = """
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from shepherd.core.store.pg import PgStore

async def main(dsn, runners, total):
    store = await PgStore.open(dsn, host="watcher", recover=False)
    lat = []

    async def follow(sid):
        async for batch in store.tail(sid, after_seq=1):
            now = time.time()
            lat.extend(now - float(e.text) for e in batch)
            if sum(1 for _ in lat) >= total:
                return

    tasks = [asyncio.create_task(follow(f"fleet{k}")) for k in range(runners)]
    print("ready", flush=True)
    done, pending = await asyncio.wait(tasks, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    await store.close()
    lat.sort()
    print(json.dumps([lat[len(lat) // 2], lat[int(len(lat) * 0.95)], lat[-1], len(lat)]), flush=True)

asyncio.run(main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def bench_fleet(dsn: str, runners: int = 8, followers: int = 2, turns: int = 200) -> None:
    """``runners`` runner processes (their own host ids and leases), each streaming turns into
    its session; ``followers`` watcher processes tailing every session. Appends/s over the
    fleet and the followers' submit -> seen latency."""
    import json
    import subprocess

    def spawn(code: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", code, str(ROOT), dsn, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    run = [spawn(FLEET_RUNNER, str(k), str(turns)) for k in range(runners)]
    for p in run:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    watch = [spawn(FLEET_FOLLOWER, str(runners), str(runners * turns * 5)) for _ in range(followers)]
    for p in watch:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for p in run:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    rates = [float(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in run]
    wall = time.perf_counter() - t0
    lats = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in watch]
    total = runners * turns * 5
    print(f"fleet: {runners} runner processes x {turns} turns of 5 events (4 lazy + 1 awaited, 5 ms apart), "
          f"{followers} followers tailing all: {total / wall:,.0f} events/s over the fleet "
          f"(per runner {min(rates):,.0f}-{max(rates):,.0f}/s)")
    for i, (p50, p95, worst, n) in enumerate(lats):
        print(f"  follower {i}: {n} events seen, submit -> seen p50 {p50 * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms, worst {worst * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--producers", type=int, default=8)
    ap.add_argument("--dsn", default="")
    ap.add_argument("--fsync", action="store_true", help="the throw-away cluster with fsync on")
    ap.add_argument("--fleet", action="store_true", help="also 8 runner processes and 2 followers")
    args = ap.parse_args()
    server = None
    dsn = args.dsn
    if not dsn:
        from tests.pg_server import PgServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            sys.exit("no PostgreSQL server binaries found; pass --dsn")
        server = PgServer(bindir)
        server.start()
        if args.fsync:
            import psycopg

            with psycopg.connect(server.dsn(), autocommit=True) as c:
                c.execute("ALTER SYSTEM SET fsync = on")
                c.execute("SELECT pg_reload_conf()")
        dsn = server.new_database()
    try:
        n, p = args.events, args.producers
        results: dict[str, tuple[float, float, float]] = {}
        results["sqlite Store"] = asyncio.run(bench_sqlite(n, p))
        results["PgStore"] = asyncio.run(bench_pg(dsn, n, p))
        results["naive PG (commit/event)"] = asyncio.run(bench_naive(dsn, n, p))
        print(f"{n} appends, {p} producers awaiting each append")
        for name, (rate, p95, worst) in results.items():
            print(f"  {name:<26} {rate:>9,.0f} events/s   p95 {p95 * 1000:6.1f} ms   worst {worst * 1000:6.1f} ms")
        pg, lite, naive = (results[k][0] for k in ("PgStore", "sqlite Store", "naive PG (commit/event)"))
        print(f"  PgStore / SQLite Store: {pg / lite:.2f}   PgStore / naive PG: {pg / naive:.2f}")
        if args.fleet:
            bench_fleet(dsn)
        p50, p95, worst = asyncio.run(bench_tail(dsn, 300))
        print(f"tail (LISTEN/NOTIFY), runner in another process, 300 events 10 ms apart: submit -> seen "
              f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, worst {worst * 1000:.1f} ms")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
