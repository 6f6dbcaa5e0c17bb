"""Shepherd's event store against openai-agents' own SQLite sessions.

    python bench/store_bench.py [--events N] [--producers P] [--rehydrate N] [--sync MODE]

Appends N items one by one from P concurrent producers, each awaiting its append (as a
streaming backend does), then reads them back, through:
  * Shepherd's Store (``append`` of TextDelta events; synchronous=NORMAL and FULL),
  * ``agents.SQLiteSession`` (``add_items([item])`` per item),
  * ``agents.extensions.memory.AsyncSQLiteSession`` (the same),
and prints items/s and the ratios Shepherd / peer. Like with like: every contender keeps
N items in a file database, each item carrying the same 40-character text; the peers'
item is an assistant message in the SDK's own output form (about the size of Shepherd's
stored event; the bench prints both sizes). Reads: the peers' ``get_items()`` (every
row json-decoded into a dict); Shepherd's ``store.events`` in pages of 1,000, as its
screens read. Shepherd's events decode their JSON on the first read of a field, so the
bench prints two read figures: ``read`` (the pages, seq read) and ``read+decode`` (a field
of every event read as well, which decodes them all: what the peers' json.loads does). The read figures
are the median of several reads, round-robin between the contenders.
Also: the worst submit->commit latency the writer saw, and how long reopening a 100k-event
session takes (open the store, read its session row and the first and last screenful).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from shepherd.core.clock import RealClock  # noqa: E402
from shepherd.core.events import SessionFinished, SessionStarted, TextDelta  # noqa: E402
from shepherd.core.store import Store  # noqa: E402

TEXT = "streaming a few words of assistant text "  # ~40 chars, a typical delta
READS = 7  # reads per contender; the median is reported


def peer_item(i: int) -> dict[str, Any]:
    """An assistant message as openai-agents stores it (its Responses output form)."""
    return {"id": f"msg_{i:024x}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def _producers(n: int, producers: int, one: Any) -> tuple[float, list[float]]:
    """Run ``one(producer, i)`` n times over ``producers`` tasks; each awaits its call."""
    waits: list[float] = []

    async def produce(p: int, count: int) -> None:
        for i in range(count):
            t = time.perf_counter()
            await one(p, i)
            waits.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(produce(p, c) for p, c in enumerate(_split(n, producers))))
    return time.perf_counter() - t0, waits


Reader = Callable[[], Awaitable[float]]


async def bench_shepherd(path: Path, n: int, producers: int, sync: str,
                         keep: list[Any] | None = None) -> dict[str, Any]:
    """Append; with ``keep``, leave the store open (appended to keep) and return its
    readers under "readers" (closed by the caller after the reads)."""
    store = await Store.open(path, clock=RealClock(1.0), synchronous=sync)
    sid = "bench"
    await store.append(SessionStarted(session_id=sid, title="bench", backend="scripted"))

    async def one(p: int, i: int) -> None:
        await store.append(TextDelta(session_id=sid, message_id=f"m{p}", text=TEXT))

    elapsed, waits = await _producers(n, producers, one)
    stats = store.stats
    out: dict[str, Any] = {"append_per_s": n / elapsed, "max_latency_ms": stats.max_latency_s * 1000,
                           "max_commit_ms": stats.max_commit_s * 1000, "over_50ms": stats.over_budget,
                           "p99_append_ms": _p99(waits), "batches": stats.batches, "max_batch": stats.max_batch}
    if keep is None:
        await store.close()
        return out
    keep.append(store)
    rows = await store.run_read(lambda c: c.execute_fetchall(
        "SELECT AVG(LENGTH(CAST(data AS BLOB))) FROM events WHERE type = 'text.delta'"))
    out["item_bytes"] = float(list(rows)[0][0])
    out["readers"] = {"read": lambda: _read_shepherd(store, sid, n + 1, False),
                      "read+decode": lambda: _read_shepherd(store, sid, n + 1, True)}
    return out


async def _read_shepherd(store: Store, sid: str, expect: int, touch: bool) -> float:
    t0 = time.perf_counter()
    got, after = 0, 0
    while True:
        page = await store.events(sid, after_seq=after, limit=1000)
        if not page:
            break
        if touch:
            for ev in page:
                ev.ts  # the first read of a field decodes all of them
        got += len(page)
        after = page[-1].seq
    read_s = time.perf_counter() - t0
    assert got == expect, (got, expect)
    return got / read_s


async def bench_peer(kind: str, path: Path, n: int, producers: int, keep: list[Any]) -> dict[str, Any]:
    if kind == "SQLiteSession":
        from agents import SQLiteSession

        session: Any = SQLiteSession("bench", db_path=path)
    else:
        from agents.extensions.memory import AsyncSQLiteSession

        session = AsyncSQLiteSession("bench", db_path=path)
    keep.append(session)

    async def one(p: int, i: int) -> None:
        await session.add_items([peer_item(p * n + i)])

    elapsed, waits = await _producers(n, producers, one)

    async def read() -> float:
        t0 = time.perf_counter()
        items = await session.get_items()
        read_s = time.perf_counter() - t0
        assert len(items) == n, (len(items), n)
        return len(items) / read_s

    return {"append_per_s": n / elapsed, "p99_append_ms": _p99(waits),
            "item_bytes": float(len(json.dumps(peer_item(0)))), "readers": {kind: read}}


async def read_rounds(readers: dict[str, Reader]) -> dict[str, list[float]]:
    """READS reads per contender, round-robin, so load drifts on a shared machine hit all."""
    rates: dict[str, list[float]] = {k: [] for k in readers}
    for _ in range(READS):
        for k, read in readers.items():
            rates[k].append(await read())
    return rates


async def close_all(keep: list[Any]) -> None:
    for obj in keep:
        result = obj.close()
        if asyncio.iscoroutine(result):
            await result


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    if len(values) < 100:
        return max(values) * 1000
    return statistics.quantiles(values, n=100)[98] * 1000


async def bench_rehydrate(path: Path, n: int) -> dict[str, float]:
    sid = "big"
    store = await Store.open(path)
    await store.append(SessionStarted(session_id=sid, title="a long session", backend="scripted"))
    t0 = time.perf_counter()
    futures = [store.submit(TextDelta(session_id=sid, message_id=f"m{i // 50}", text=TEXT)) for i in range(n)]
    await asyncio.gather(*futures)
    fill_s = time.perf_counter() - t0
    await store.append(SessionFinished(session_id=sid, status="done"))  # (else recovery interrupts it)
    await store.close()
    size_mb = path.stat().st_size / 1e6

    t0 = time.perf_counter()
    store = await Store.open(path)
    row = await store.get_session(sid)
    assert row is not None
    last = await store.events_before(sid, row.last_seq + 1, limit=200)
    first = await store.events(sid, after_seq=0, limit=200)
    total_s = time.perf_counter() - t0
    assert len(last) == 200 and len(first) == 200 and last[-1].seq == n + 2 == row.last_seq
    await store.close()
    return {"events": n + 2, "fill_per_s": n / fill_s, "rehydrate_ms": total_s * 1000, "db_mb": size_mb}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="items appended per contender")
    parser.add_argument("--producers", type=int, default=16, help="concurrent producers, each awaiting its append")
    parser.add_argument("--rehydrate", type=int, default=100_000, help="events in the session reopened (0: skip)")
    parser.add_argument("--sync", default="both", choices=("NORMAL", "FULL", "both"),
                        help="synchronous mode(s) for Shepherd's store")
    args = parser.parse_args()
    n, p = args.events, args.producers
    print(f"{n} items, {p} concurrent producers each awaiting its append; SQLite {__import__('sqlite3').sqlite_version}")
    modes = ["NORMAL", "FULL"] if args.sync == "both" else [args.sync]
    with tempfile.TemporaryDirectory(prefix="shepherd-bench-") as tmp:
        d = Path(tmp)
        keep: list[Any] = []
        ours = {m: await bench_shepherd(d / f"shepherd-{m}.db", n, p, m, keep if m == modes[0] else None)
                for m in modes}
        peers = {k: await bench_peer(k, d / f"{k}.db", n, p, keep) for k in ("SQLiteSession", "AsyncSQLiteSession")}
        reads = await read_rounds({**ours[modes[0]]["readers"], **peers["SQLiteSession"]["readers"],
                                   **peers["AsyncSQLiteSession"]["readers"]})
        await close_all(keep)
        read = {k: statistics.median(v) for k, v in reads.items()}

        print(f"\n{'contender':34} {'append items/s':>15} {'p99 append ms':>14}")
        for m, r in ours.items():
            print(f"{'Shepherd Store (sync=' + m + ')':34} {r['append_per_s']:15,.0f} {r['p99_append_ms']:14.2f}")
        for k, r in peers.items():
            print(f"{'agents.' + k:34} {r['append_per_s']:15,.0f} {r['p99_append_ms']:14.2f}")
        print("\nratios (Shepherd append rate / peer append rate):")
        for m, r in ours.items():
            for k, pr in peers.items():
                print(f"  sync={m:6} vs {k:19} {r['append_per_s'] / pr['append_per_s']:6.1f}x")
        print(f"\nreads of {n:,} items from a file database (median of {READS}, round-robin; "
              f"stored JSON per item: Shepherd {ours[modes[0]]['item_bytes']:.0f} B, "
              f"peers {peers['SQLiteSession']['item_bytes']:.0f} B):")
        labels = {"read": "Shepherd store.events, pages of 1,000",
                  "read+decode": "Shepherd, + a field of each read (decoded)",
                  "SQLiteSession": "agents.SQLiteSession.get_items",
                  "AsyncSQLiteSession": "agents.AsyncSQLiteSession.get_items"}
        for k in ("read", "read+decode", "SQLiteSession", "AsyncSQLiteSession"):
            lo, hi = min(reads[k]), max(reads[k])
            print(f"  {labels[k]:40} {read[k]:10,.0f} items/s  (range {lo:,.0f}-{hi:,.0f})")
        print("ratios (Shepherd read rate / peer read rate):")
        for ours_k in ("read", "read+decode"):
            print(f"  {ours_k:12} " + ", ".join(
                f"vs {k} {read[ours_k] / read[k]:.2f}x" for k in ("SQLiteSession", "AsyncSQLiteSession")))
        print("\nwriter latency (submit -> committed):")
        for m, r in ours.items():
            print(f"  sync={m:6} max {r['max_latency_ms']:.1f} ms, longest transaction {r['max_commit_ms']:.1f} ms, "
                  f"events over 50 ms: {r['over_50ms']}, {r['batches']} commits (largest {r['max_batch']} events)")
        print("\nShepherd append rate by number of concurrent producers (sync=NORMAL; the peers are"
              " flat: every add_items is its own commit):")
        line = []
        for producers in (1, 4, 16, 64):
            r = await bench_shepherd(d / f"scale-{producers}.db", max(n // 2, 500), producers, "NORMAL")
            line.append(f"P={producers}: {r['append_per_s']:,.0f}/s")
        print("  " + ", ".join(line))
        if args.rehydrate:
            r = await bench_rehydrate(d / "rehydrate.db", args.rehydrate)
            print(f"\nrehydrate: {r['events']:,} events ({r['db_mb']:.0f} MB, written at {r['fill_per_s']:,.0f}/s "
                  f"with submit()): open + session row + first and last 200 events = {r['rehydrate_ms']:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
