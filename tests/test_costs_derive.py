"""The derived cost tables (core.store.costs: sessions' figures and attempt_costs, written in
the events' transaction) equal core.stats.session_costs over the events, for varied
sessions on both stores; and migration 5 fills them from an old database's events."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from shepherd.core.cost_ledger import CostLedger
from shepherd.core.events import AttemptStarted, Usage
from shepherd.core.stats import costs_from_events, session_costs
from shepherd.core.store import open_store
from shepherd.core.store.schema import SCHEMA_VERSION
from tests.cost_sessions import attempts_of as _attempts, check_costs as _check, random_session
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)


async def _write(store: Any, rng: random.Random, evs: list[Any]) -> None:
    """In batches of random sizes: the derivation must not depend on where a batch ends."""
    i = 0
    while i < len(evs):
        n = rng.choice([1, 1, 2, 3, 7, 20])
        await store.append_together(*evs[i:i + n])
        i += n


async def test_derived_costs_equal_session_costs(store_target: Any) -> None:
    rng = random.Random(14)
    store = await open_store(store_target)
    try:
        sessions = {f"r{i}": random_session(rng, f"r{i}") for i in range(30)}
        for sid, evs in sessions.items():
            await _write(store, rng, evs)
        wasted_some = 0
        for sid in sessions:
            want = await session_costs(store, sid)
            row = await store.get_session(sid)
            ledger = await store.cost_ledger(sid)
            assert ledger is not None and ledger.seq == row.last_seq
            _check(row, ledger, want)
            wasted_some += bool(want.waste.tokens)
    finally:
        await store.close()
    assert 10 < wasted_some < 30  # the sequences were varied: waste and none


def test_ledger_folds_like_costs_from_events() -> None:
    """Pure: folding event by event gives the whole fold's answer (and rows round-trip)."""
    rng = random.Random(7)
    for i in range(200):
        evs = random_session(rng, f"p{i}")
        for seq, e in enumerate(evs, 1):
            object.__setattr__(e, "seq", seq)
        want = costs_from_events("x", evs)
        led = CostLedger()
        cut = rng.randrange(len(evs))
        led.apply_all(evs[:cut])
        from shepherd.core.cost_ledger import ROW_COLUMNS, attempt_row
        rows = [dict(zip(ROW_COLUMNS, attempt_row("x", a))) for a in led.attempts.values()]
        led = CostLedger.from_rows(rows, seq=cut)  # stored and loaded again half-way
        led.apply_all(evs[cut:])
        assert _attempts(led.session_costs("x")) == _attempts(want)


# --- migration 5 on an old database file -----------------------------------------------------


def _old_database(path: Path, sid: str, events: list[Any]) -> None:
    """A schema-4 file as the previous version wrote it: its events and the sessions row
    (no cost ledger, no waste columns)."""
    from shepherd.core.store import schema

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for m in schema.MIGRATIONS[:4]:
        m(conn)
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version=4")
    tokens_in = sum(e.input_tokens for e in events if isinstance(e, Usage))
    conn.execute("INSERT INTO sessions (id, title, started_at, updated_at, last_seq, input_tokens, status) "
                 "VALUES (?, 't', 1, 1, ?, ?, 'done')", (sid, len(events), tokens_in))
    for seq, e in enumerate(events, 1):
        object.__setattr__(e, "seq", seq)
        conn.execute("INSERT INTO events (session_id, seq, type, ts, subtask_id, attempt, data) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", (sid, seq, e.type, e.ts, e.subtask_id, e.attempt, e.to_json()))
    conn.execute("COMMIT")
    conn.close()


async def test_migration_fills_costs_of_an_old_database(tmp_path: Path) -> None:
    rng = random.Random(3)
    events = []
    while not costs_from_events("old", events).waste.tokens:
        events = random_session(rng, "old")
    path = tmp_path / "old.db"
    _old_database(path, "old", events)
    store = await open_store(path)
    try:
        row = await store.get_session("old")
        ledger = await store.cost_ledger("old")
        want = await session_costs(store, "old")
        assert ledger is not None
        _check(row, ledger, want)
        assert row.waste_input_tokens + row.waste_output_tokens > 0
        # and the derivation goes on from the filled ledger: a later retry makes the last attempt waste
        last = max((a for a in want.attempts if a.subtask_id == "s0"), key=lambda a: a.attempt or 0)
        await store.append(AttemptStarted(session_id="old", subtask_id="s0", attempt=(last.attempt or 0) + 1,
                                          reason="user_retry", ts=2.0))
        _check(await store.get_session("old"), await store.cost_ledger("old"), await session_costs(store, "old"))
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_migration_5_fills_costs_on_both_stores(store_target: Any) -> None:
    """A schema-4 database (migration 5's table and columns taken away, the events kept)
    is filled on open, on SQLite and on PostgreSQL (its own migration path)."""
    from tests.pg_server import is_pg, sql

    rng = random.Random(5)
    async with await open_store(store_target) as store:
        for i in range(4):
            await _write(store, rng, random_session(rng, f"m{i}"))
        want = {f"m{i}": await session_costs(store, f"m{i}") for i in range(4)}
    sql(store_target, "DROP TABLE attempt_costs")
    for column in ("cost_known", "waste_input_tokens", "waste_output_tokens", "waste_cost_usd"):
        sql(store_target, f"ALTER TABLE sessions DROP COLUMN {column}")
    sql(store_target, "UPDATE sessions SET input_tokens = 0, output_tokens = 0, cost_usd = 0")
    sql(store_target, "UPDATE shepherd_schema SET version = 4" if is_pg(store_target) else "PRAGMA user_version = 4")
    async with await open_store(store_target) as store:
        for sid, costs in want.items():
            _check(await store.get_session(sid), await store.cost_ledger(sid), costs)
