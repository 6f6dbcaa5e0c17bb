"""Search latency over N events (default 1M): `python bench/search_bench.py [--events N]`.

The events are written in bulk in one transaction, through the same index path as the
store's writer (derive.insert_rows into events, search.doc_rows + INSERT_DOCS into the
index), then each query runs REPEAT times through the store's own query
(search.sqlite_search_rows, limit 50): p50/p95, against the floor of one LIKE scan over the
same rows (what a search without the index has to do at least), printed as a ratio."""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shepherd.core.store.derive import insert_rows  # noqa: E402
from shepherd.core.store.schema import prepare_database  # noqa: E402
from shepherd.core.store.search import INSERT_DOCS, doc_rows, sqlite_search_rows  # noqa: E402

EVENTS_HEAD = "INSERT INTO events (session_id, seq, type, ts, subtask_id, attempt, data) VALUES "
REPEAT = 30
TYPES = ("message.completed", "tool.started", "tool.finished", "text.delta", "error")


def generate(conn: sqlite3.Connection, n: int, rng: random.Random) -> None:
    vocab = [f"w{i:05d}" for i in range(20_000)]
    conn.execute("BEGIN IMMEDIATE")
    chunk: list[tuple] = []
    per_session = 10_000
    for i in range(n):
        sid, seq = f"s{i // per_session:04d}", i % per_session + 1
        t = TYPES[i % len(TYPES)]
        words = " ".join(rng.choices(vocab, k=20))
        if i % 100_000 == 7:
            words += " zanzibar"  # rare: 1 in 100k
        if t == "message.completed" or t == "text.delta" or t == "error":
            d = {"type": t, "session_id": sid, "seq": seq, "text": words, "message": words}
        elif t == "tool.started":
            d = {"type": t, "session_id": sid, "seq": seq, "name": "bash", "input": {"cmd": words}}
        else:
            d = {"type": t, "session_id": sid, "seq": seq, "output": words}
        chunk.append((sid, seq, t, 1.0e9 + i, "a", 1, json.dumps(d)))
        if len(chunk) == 20_000:
            _flush(conn, chunk)
            chunk = []
    _flush(conn, chunk)
    conn.execute("COMMIT")


def _flush(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    insert_rows(conn, EVENTS_HEAD, 7, rows)
    docs = doc_rows([(r[0], r[1], r[2], r[6]) for r in rows])
    insert_rows(conn, INSERT_DOCS, 3, docs)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", default=None, help="reuse this file (made when missing)")
    args = ap.parse_args()
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "search_bench.db"
    fresh = not path.exists()
    prepare_database(path)
    conn = sqlite3.connect(str(path), isolation_level=None)
    if fresh:
        t0 = time.perf_counter()
        generate(conn, args.events, random.Random(14))
        print(f"wrote {args.events} events (+ index) in one transaction: {time.perf_counter() - t0:.1f} s")
    n = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    docs = conn.execute("SELECT COUNT(*) FROM search_docs").fetchone()[0]
    print(f"{n} events, {docs} indexed; {path.stat().st_size / 1e6:.0f} MB")
    like = timed(lambda: conn.execute("SELECT COUNT(*) FROM events WHERE data LIKE '%zanzibar%'").fetchone(), 3)
    floor = min(like)
    print(f"LIKE scan floor (min of 3): {floor * 1000:.0f} ms")
    # rare (1 in 100k), 1 in 1000, two words, a word in every tool.started (200k), typed syntax
    for q in ("zanzibar", "w00042", "w00042 w00043", "bash", "zanzibar w00042", '"unbalanced -w00007*'):
        hits = len(sqlite_search_rows(conn, q, None, 50))
        lat = timed(lambda: sqlite_search_rows(conn, q, None, 50), REPEAT)
        p50, p95 = statistics.median(lat), pct(lat, 0.95)
        print(f"{q!r:24} hits {hits:3}  p50 {p50 * 1000:7.2f} ms  p95 {p95 * 1000:7.2f} ms  "
              f"LIKE floor / p50 = {floor / p50:6.0f}x")
    # in one session: the oldest (a common word's newest matches are all in other sessions)
    one = conn.execute("SELECT session_id FROM events ORDER BY id LIMIT 1").fetchone()[0]
    for q in ("w00042", "bash"):
        lat = timed(lambda: sqlite_search_rows(conn, q, one, 50), REPEAT)
        print(f"{q!r} in session {one}: p50 {statistics.median(lat) * 1000:7.2f} ms  "
              f"p95 {pct(lat, 0.95) * 1000:7.2f} ms  LIKE floor / p50 = {floor / statistics.median(lat):6.0f}x")
    conn.close()


if __name__ == "__main__":
    main()
