"""Tokens, cost and retry waste as derived tables, in the events' transaction (migration 5).

Table ``attempt_costs`` holds a session's ``CostLedger`` (core.cost_ledger): one row per
attempt with its tally and how it ended; the sessions row holds the totals and the waste
(``input_tokens``, ``output_tokens``, ``cost_usd``, ``cost_known``, ``waste_*``), so the home
lists thousands of sessions with their cost without reading one event. A batch with a
usage, attempt.started, error or subtask.finished event loads the ledger of that session,
folds its events in and writes back the rows it changed and the session's figures
(``derive.write_events``). Existing databases are filled by ``backfill`` from their events
through ``core.stats.costs_from_events``: the same rules, so the same numbers. Plain SQL in
SQLite's dialect: PostgreSQL runs it through the dialect layer (pg/dialect.py).
"""

from __future__ import annotations

from typing import Any

from shepherd.core.events import event_from_dict, loads
from shepherd.core.cost_ledger import COST_TYPES, ROW_COLUMNS, CostLedger, attempt_row, session_columns
from shepherd.core.stats import costs_from_events

COST_SESSION_COLUMNS = ("input_tokens", "output_tokens", "cost_usd", "cost_known", "waste_input_tokens",
                        "waste_output_tokens", "waste_cost_usd")
UPSERT_ATTEMPTS = f"INSERT OR REPLACE INTO attempt_costs ({', '.join(ROW_COLUMNS)}) VALUES "
_TYPES = sorted(COST_TYPES)


def load_ledgers(conn: Any, session_ids: list[str]) -> dict[str, CostLedger]:
    """The stored ledger of each session (an empty one for a session with no rows yet)."""
    out = {sid: CostLedger() for sid in session_ids}
    for i in range(0, len(session_ids), 500):
        chunk = session_ids[i:i + 500]
        rows = conn.execute(f"SELECT * FROM attempt_costs WHERE session_id IN ({', '.join('?' * len(chunk))})",
                            chunk).fetchall()
        by_sid: dict[str, list[Any]] = {}
        for r in rows:
            by_sid.setdefault(r["session_id"], []).append(r)
        for sid, srows in by_sid.items():
            out[sid] = CostLedger.from_rows(srows)
    return out


def write_ledger_rows(conn: Any, rows: list[tuple[Any, ...]], insert_rows: Any) -> None:
    if rows:
        insert_rows(conn, UPSERT_ATTEMPTS, len(ROW_COLUMNS), rows)


def ledger_figures(ledger: CostLedger, session_id: str) -> dict[str, Any]:
    return session_columns(ledger.session_costs(session_id))


def backfill(conn: Any) -> int:
    """Fill attempt_costs and the sessions' figures from the stored events (migration 5,
    an existing database); the sessions filled. ``conn``: sqlite3, or PostgreSQL's SyncConn."""
    marks = ", ".join("?" * len(_TYPES))
    sids = [r[0] for r in conn.execute(
        f"SELECT DISTINCT session_id FROM events WHERE type IN ({marks}) ORDER BY session_id", _TYPES).fetchall()]
    for sid in sids:
        rows = conn.execute(f"SELECT data FROM events WHERE session_id = ? AND type IN ({marks}) ORDER BY seq",
                            (sid, *_TYPES)).fetchall()
        events = []
        for r in rows:
            try:
                events.append(event_from_dict(loads(r[0])))
            except Exception:  # noqa: BLE001 - a damaged row counts for nothing, as in session_costs
                continue
        costs = costs_from_events(sid, events)
        if costs.attempts:
            conn.executemany(UPSERT_ATTEMPTS + "(" + ", ".join("?" * len(ROW_COLUMNS)) + ")",
                             [attempt_row(sid, a) for a in costs.attempts])
        figures = session_columns(costs)
        conn.execute(f"UPDATE sessions SET {', '.join(f'{c} = ?' for c in COST_SESSION_COLUMNS)} WHERE id = ?",
                     [figures[c] for c in COST_SESSION_COLUMNS] + [sid])
    return len(sids)


LEDGER_READ = ("SELECT s.last_seq AS at_seq, a.* FROM sessions s LEFT JOIN attempt_costs a "
               "ON a.session_id = s.id WHERE s.id = ?")


def ledger_from_read(rows: list[Any]) -> CostLedger | None:
    """The rows of LEDGER_READ (one statement: the ledger and the seq it is at, from one
    snapshot) as a ledger; None when there is no such session."""
    if not rows:
        return None
    return CostLedger.from_rows([r for r in rows if r["session_id"] is not None], seq=int(rows[0]["at_seq"] or 0))
