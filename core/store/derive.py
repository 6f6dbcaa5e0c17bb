"""Writing a batch of events and the tables derived from them, inside one transaction.

The caller holds ``BEGIN IMMEDIATE``, so everything read here (last_seq, tool call and
subtask state) is current even when several processes write the same file: seq numbers
are gapless and unique, and a duplicate ``tool.finished`` is seen whoever wrote the first.
The SQLite writer keeps what it wrote for its next batches (``row_cache``): a row read
in the transaction tells whether it is still the file's. The work per batch is a handful of
statements whatever its size (executemany), not a few per event, and it is plain sync
sqlite3 code: the store runs a whole batch in one call on its connection's thread.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlite3

from shepherd.core.states import FINISHED_STATUSES
from shepherd.core.events import LAZY_TYPES, Event, build_event, event_from_dict, field_names, loads
from shepherd.core.cost_ledger import COST_TYPES, CostLedger, attempt_row
from shepherd.core.store.costs import load_ledgers, ledger_figures, write_ledger_rows
from shepherd.core.store.derive_handlers import HANDLERS
from shepherd.core.store.row_cache import Entry, RowCache
from shepherd.core.store.search import INSERT_DOCS, event_docs

log = logging.getLogger("shepherd.store")

SESSION_COLUMNS = ("id", "title", "backend", "model", "workspace", "status", "started_at",
                   "updated_at", "ended_at", "last_seq", "last_event_ts", "subtasks_total",
                   "subtasks_done", "retries", "input_tokens", "output_tokens", "cost_usd",
                   "task_json", "needs", "needs_since", "needs_detail", "cost_known", "waste_input_tokens",
                   "waste_output_tokens", "waste_cost_usd")
SUBTASK_COLUMNS = ("session_id", "id", "title", "position", "planned", "phase", "status",
                   "attempts", "retries", "started_at", "finished_at", "reason", "last_error_kind")
CALL_COLUMNS = ("session_id", "call_id", "subtask_id", "attempt", "name", "input_json", "status",
                "output", "started_at", "finished_at", "duration_s", "started_seq", "finished_seq")

# Events that change subtask rows (so the batch loads that session's subtasks).
SUBTASK_EVENTS = frozenset({
    "plan.ready", "subtask.started", "attempt.started", "retry.scheduled", "error",
    "subtask.finished", "session.paused", "session.resumed", "session.interrupted",
})
TOOL_EVENTS = frozenset({"tool.started", "tool.finished"})
APPROVAL_EVENTS = frozenset({"approval.requested", "approval.decided"})
APPROVAL_COLUMNS = ("session_id", "call_id", "subtask_id", "attempt", "tool", "input_json", "reask_of",
                    "requested_seq", "requested_at", "decision", "source", "reason", "scope", "decided_seq",
                    "closed")
# Events after which what a session needs from a person (sessions.needs*) is derived again.
# (A tool.finished counts only when it closes a pending approval: close_approval.)
NEEDS_EVENTS = APPROVAL_EVENTS | SUBTASK_EVENTS | frozenset({"session.started", "session.finished"})
NEEDS_DETAIL_CHARS = 120
FINISHED_SESSION = FINISHED_STATUSES
ENDED_SESSION = FINISHED_SESSION - {"interrupted"}  # (an interrupted one is resumed: still asks)
# A call not finished: running, or awaiting a person's approval (before it runs).
OPEN_CALL = frozenset({"running", "awaiting"})


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES "


_SESSION_UPSERT = _insert_sql("sessions", SESSION_COLUMNS)
_SUBTASK_UPSERT = _insert_sql("subtasks", SUBTASK_COLUMNS)
_CALL_UPSERT = _insert_sql("tool_calls", CALL_COLUMNS)
_APPROVAL_UPSERT = _insert_sql("approvals", APPROVAL_COLUMNS)
WORKTREE_COLUMNS = ("session_id", "path", "branch", "origin", "repo", "workspace", "base_commit", "base_branch",
                    "state", "commit_id", "updated_seq", "updated_at")
_WORKTREE_UPSERT = _insert_sql("worktrees", WORKTREE_COLUMNS)
# Rows go in as multi-row INSERTs (insert_rows): sqlite3's executemany releases and re-takes
# the GIL around every row, and each re-take can wait a whole switch interval (5 ms) while
# the event loop thread is busy; one statement per chunk keeps a batch to a few hand-overs.
_EVENT_COLUMNS = "INSERT INTO events (session_id, seq, type, ts, subtask_id, attempt, data) VALUES "


def _insert_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    insert_rows(conn, _EVENT_COLUMNS, 7, rows)


_ROWS_SQL: dict[tuple[str, int, int], str] = {}


def insert_rows(conn: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]]) -> None:
    """``executemany(head + "(?, ...)", rows)`` as one multi-row statement per 999 values:
    the writer's thread takes the GIL back once per statement, not once per row, and every
    take-back while the event loop runs costs the loop a hand-over (a turn's commit went
    from ~22 of them to ~12)."""
    per = max(1, 999 // width)  # (SQLite's oldest limit on variables in one statement)
    for i in range(0, len(rows), per):
        chunk = rows[i:i + per]
        key = (head, width, len(chunk))
        sql = _ROWS_SQL.get(key)
        if sql is None:
            one = "(" + ", ".join("?" * width) + ")"
            sql = _ROWS_SQL[key] = head + ", ".join([one] * len(chunk))
        conn.execute(sql, [v for row in chunk for v in row])


def copy_event(ev: Event, **changes: Any) -> Event:
    """``ev.with_(**changes)``, several times cheaper than dataclasses.replace (no
    __init__, no default factories)."""
    cls = type(ev)
    new = object.__new__(cls)
    for name in field_names(cls):
        object.__setattr__(new, name, changes[name] if name in changes else getattr(ev, name))
    return new


# Same options as Event.to_json, one encoder reused.
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
try:  # the C encoder, built once (JSONEncoder.encode builds a new one on every call)
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_basestring

    _C_ENCODE = _c_make_encoder(None, str, _encode_basestring, None, ": ", ", ", True, False, True)
except (ImportError, TypeError):  # pragma: no cover - interpreters without _json
    _C_ENCODE = None


def _encode(obj: dict[str, Any]) -> str:
    """``json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)``, faster.
    (No circular-reference check: event payloads are plain JSON data.)"""
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(obj, 0))
    return _ENCODER.encode(obj)


def decode_event(data: str) -> Event:
    """``event_from_json(data)`` for rows we wrote: when the JSON has every field of a
    known type, build the event directly (reading 100k events is common, and the generic
    path walks dataclasses.fields per row). Anything else takes the generic path."""
    d = loads(data)
    cls = LAZY_TYPES.get(d.get("type", ""))
    if cls is None:
        return event_from_dict(d)
    try:
        return build_event(cls, d)
    except KeyError:  # written by an older version: defaults fill the gaps
        return event_from_dict(d)


def prepare(ev: Event, ts: float) -> tuple[Event, str]:
    """A private copy of ``ev`` with its ts, and its JSON without ``seq`` (the writer
    splices that in). Runs in ``Store.submit`` on the event loop thread, so the writer
    thread does little Python per event and mostly runs SQLite with the GIL released."""
    cls = type(ev)
    if cls.to_dict is not Event.to_dict:  # OpaqueEvent has its own JSON form
        new = copy_event(ev, ts=ts)
        out = new.to_dict()
        out.pop("seq", None)
        return new, _encode(out)
    new = object.__new__(cls)
    out = {"type": cls.type}
    for name in field_names(cls):
        value = getattr(ev, name)
        out[name] = value
        object.__setattr__(new, name, value)
    object.__setattr__(new, "ts", ts)
    out["ts"] = ts
    del out["seq"]
    return new, _encode(out)


def _with_seq(head: str, seq: int) -> str:
    """The event's full JSON (its to_json() content; seq comes last instead of sorted)."""
    return f'{head[:-1]}, "seq": {seq}}}'


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


class _Batch:
    """In-memory copies of the rows one batch touches; written back at the end."""

    def __init__(self, now: float, cache: RowCache | None = None) -> None:
        self.now = now
        self.cache = cache
        self.entries: dict[str, Entry] = {}  # sessions whose rows came from the cache (row_cache)
        self.finished: set[tuple[str, str]] = set()  # calls a complete entry knows finished
        self.all_subtasks: set[str] = set()  # sessions whose every subtask row is in self.subtasks
        self.sessions: dict[str, dict[str, Any]] = {}
        self.stored_sessions: dict[str, dict[str, Any]] = {}  # the rows as loaded
        self.subtasks: dict[str, dict[str, dict[str, Any]]] = {}  # sid -> id -> row
        self.calls: dict[tuple[str, str], dict[str, Any]] = {}
        self.dirty_subtasks: set[tuple[str, str]] = set()
        self.deleted_subtasks: set[tuple[str, str]] = set()
        self.dirty_calls: set[tuple[str, str]] = set()
        self.approvals: dict[tuple[str, str], dict[str, Any]] = {}
        self.dirty_approvals: set[tuple[str, str]] = set()
        self.needs_sessions: set[str] = set()  # sessions whose needs* are derived again
        self.state_subtasks: set[tuple[str, str]] = set()  # (session, subtask): drop its run state if settled
        self.worktrees: dict[str, dict[str, Any]] = {}  # sid -> its worktrees row (from its latest worktree event)
        self.ledgers: dict[str, CostLedger] = {}  # sessions with cost events in this batch (core.store.costs)
        self.dirty_attempts: dict[str, set[Any]] = {}  # sid -> keys of the ledger's attempts changed

    # --- loading -------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection, events: list[Event]) -> None:
        sids = list(dict.fromkeys(e.session_id for e in events))
        for chunk in _chunks(sids):
            rows = conn.execute(
                f"SELECT * FROM sessions WHERE id IN ({_marks(len(chunk))})", chunk).fetchall()
            for r in rows:
                self.sessions[r["id"]] = dict(r)
                self.stored_sessions[r["id"]] = dict(r)
        cache, entries = self.cache, self.entries
        for sid in sids:
            if sid not in self.sessions:
                # No row yet: continue after whatever events exist (a row deleted by hand,
                # or events written before the first session.started).
                rows = conn.execute(
                    "SELECT MAX(seq) AS m FROM events WHERE session_id = ?", (sid,)).fetchall()
                first_ts = next(e.ts for e in events if e.session_id == sid)
                self.sessions[sid] = _new_session(sid, (rows[0]["m"] or 0), first_ts)
                if cache is not None and not rows[0]["m"]:  # nothing of it anywhere: complete
                    cache.take(sid, None)
                    entries[sid] = Entry(complete=True)
            elif cache is not None:
                entry = cache.take(sid, self.stored_sessions[sid])
                if entry is not None:
                    entries[sid] = entry
        sub_sids = []
        for sid in dict.fromkeys(e.session_id for e in events if e.type in SUBTASK_EVENTS):
            entry = entries.get(sid)
            if entry is not None and entry.subtasks is not None:
                self.subtasks[sid] = entry.subtasks
            else:
                sub_sids.append(sid)
            self.all_subtasks.add(sid)
        for chunk in _chunks(sub_sids):
            rows = conn.execute(
                f"SELECT * FROM subtasks WHERE session_id IN ({_marks(len(chunk))}) "
                "ORDER BY position, rowid", chunk).fetchall()
            for sid in chunk:
                self.subtasks.setdefault(sid, {})
            for r in rows:
                self.subtasks[r["session_id"]][r["id"]] = dict(r)
        cost_sids = list(dict.fromkeys(e.session_id for e in events if e.type in COST_TYPES))
        cached = {sid: entries[sid].ledger for sid in cost_sids if sid in entries and
                  (entries[sid].ledger is not None or entries[sid].complete)}
        self.ledgers = load_ledgers(conn, [sid for sid in cost_sids if sid not in cached])
        for sid, ledger in cached.items():
            self.ledgers[sid] = ledger if ledger is not None else CostLedger()
        keys: dict[str, set[str]] = {}
        approval_sids: set[str] = set()
        for e in events:
            if e.type in TOOL_EVENTS or e.type in APPROVAL_EVENTS:
                keys.setdefault(e.session_id, set()).add(getattr(e, "call_id", ""))
            if e.type in APPROVAL_EVENTS or e.type == "tool.finished" or e.type == "subtask.finished":
                approval_sids.add(e.session_id)
        for sid in list(approval_sids) + list(keys):
            entry = entries.get(sid)
            if entry is not None and entry.complete:  # every row of it is in the entry
                approval_sids.discard(sid)
                for cid, row in entry.approvals.items():
                    self.approvals[(sid, cid)] = row
                for cid in keys.pop(sid, ()):
                    if cid in entry.finished:
                        self.finished.add((sid, cid))
                    elif cid in entry.open_calls:
                        self.calls[(sid, cid)] = entry.open_calls[cid]
        for sid in approval_sids:
            # the session's pending approvals and the ones this batch names (few rows: an index)
            named = sorted(keys.get(sid, ()))
            rows = list(conn.execute(
                "SELECT * FROM approvals WHERE session_id = ? AND decided_seq IS NULL AND closed = 0", (sid,)))
            for chunk in _chunks(named):
                rows += conn.execute(
                    f"SELECT * FROM approvals WHERE session_id = ? AND call_id IN ({_marks(len(chunk))})",
                    (sid, *chunk)).fetchall()
            for r in rows:
                self.approvals[(sid, r["call_id"])] = dict(r)
        for sid, call_ids in keys.items():
            for chunk in _chunks(sorted(call_ids)):
                rows = conn.execute(
                    f"SELECT * FROM tool_calls WHERE session_id = ? AND call_id IN ({_marks(len(chunk))})",
                    (sid, *chunk)).fetchall()
                for r in rows:
                    self.calls[(sid, r["call_id"])] = dict(r)

    def keep(self) -> None:
        """Put what this batch wrote into the cache, for the next batches (row_cache)."""
        cache = self.cache
        if cache is None:
            return
        calls: dict[str, list[str]] = {}
        for sid, cid in self.dirty_calls:
            calls.setdefault(sid, []).append(cid)
        approvals: dict[str, list[str]] = {}
        for sid, cid in self.dirty_approvals:
            approvals.setdefault(sid, []).append(cid)
        for sid, s in self.sessions.items():
            if s["status"] in FINISHED_SESSION:
                continue  # ended (or interrupted: resumed by whichever process): forgotten
            entry = self.entries.get(sid) or Entry()
            if sid in self.all_subtasks:
                entry.subtasks = self.subtasks[sid]
            if sid in self.ledgers:
                entry.ledger = self.ledgers[sid]
            if entry.complete:
                for cid in calls.get(sid, ()):
                    row = self.calls[(sid, cid)]
                    if row["status"] in OPEN_CALL:
                        entry.open_calls[cid] = row
                    else:
                        entry.open_calls.pop(cid, None)
                        entry.finished.add(cid)
                for cid in approvals.get(sid, ()):
                    entry.approvals[cid] = self.approvals[(sid, cid)]
            cache.put(sid, entry, s)

    # --- dedup ---------------------------------------------------------------------

    def is_duplicate(self, ev: Event) -> bool:
        """A second tool.finished for a call, or a tool.started for a finished call."""
        if ev.type not in TOOL_EVENTS:
            return False
        key = (ev.session_id, getattr(ev, "call_id", ""))
        if key in self.finished:
            return True
        row = self.calls.get(key)
        return row is not None and row["status"] not in OPEN_CALL

    # --- applying ------------------------------------------------------------------

    def apply(self, ev: Event) -> None:
        s = self.sessions[ev.session_id]
        s["last_seq"] = ev.seq
        s["last_event_ts"] = ev.ts
        s["updated_at"] = self.now
        handler = HANDLERS.get(ev.type)
        if handler is not None:
            handler(self, s, ev)
        if ev.type in NEEDS_EVENTS:
            self.needs_sessions.add(ev.session_id)
        if ev.type in COST_TYPES:
            key = self.ledgers[ev.session_id].apply(ev)
            if key is not None:  # (superseded attempts need no write: loading a ledger works that out)
                self.dirty_attempts.setdefault(ev.session_id, set()).add(key)

    def subtask(self, sid: str, subtask_id: str, ts: float) -> dict[str, Any]:
        rows = self.subtasks.setdefault(sid, {})
        row = rows.get(subtask_id)
        if row is None:
            # Before a plan exists (a planning subtask) rows sort before the plan's
            # positions 0..n-1; once there is a plan, after everything.
            if any(r["planned"] for r in rows.values()):
                position = max(r["position"] for r in rows.values()) + 1
            else:
                position = -1_000_000 + len(rows)
            row = {"session_id": sid, "id": subtask_id, "title": "", "position": position,
                   "planned": 0, "phase": "coding", "status": "pending", "attempts": 0,
                   "retries": 0, "started_at": None, "finished_at": None, "reason": "",
                   "last_error_kind": None}
            rows[subtask_id] = row
        self.dirty_subtasks.add((sid, subtask_id))
        self.deleted_subtasks.discard((sid, subtask_id))
        return row

    def set_subtasks_where(self, sid: str, from_status: frozenset[str], to_status: str) -> None:
        for sub_id, row in self.subtasks.get(sid, {}).items():
            if row["status"] in from_status:
                row["status"] = to_status
                self.dirty_subtasks.add((sid, sub_id))

    # --- writing back --------------------------------------------------------------

    def write(self, conn: sqlite3.Connection) -> None:
        if self.worktrees:
            insert_rows(conn, _WORKTREE_UPSERT, len(WORKTREE_COLUMNS), [
                tuple(row[c] for c in WORKTREE_COLUMNS) for _, row in sorted(self.worktrees.items())])
        if self.dirty_approvals:
            insert_rows(conn, _APPROVAL_UPSERT, len(APPROVAL_COLUMNS), [
                tuple(self.approvals[k][c] for c in APPROVAL_COLUMNS) for k in sorted(self.dirty_approvals)])
        for sid, sub in sorted(self.state_subtasks):
            _drop_settled_state(conn, sid, sub)
        for sid in self.needs_sessions:
            self._derive_needs(conn, sid)
        for sid, rows in self.subtasks.items():
            s = self.sessions[sid]
            planned = [r for r in rows.values() if r["planned"]]
            s["subtasks_total"] = len(planned)
            s["subtasks_done"] = sum(1 for r in planned if r["status"] == "done")
        ledger_rows = []
        for sid, dirty in sorted(self.dirty_attempts.items()):
            led = self.ledgers[sid]
            ledger_rows += [attempt_row(sid, led.attempts[k]) for k in sorted(dirty, key=_key_order)]
            self.sessions[sid].update(ledger_figures(led, sid))
        write_ledger_rows(conn, ledger_rows, insert_rows)
        new_rows = []
        for sid, s in self.sessions.items():
            stored = self.stored_sessions.get(sid)
            if stored is None:
                new_rows.append(tuple(s[c] for c in SESSION_COLUMNS))
                continue
            # An UPDATE of just the columns that changed: SQLite then leaves the indexes on
            # the others alone and rewrites only the pages whose bytes differ (a session
            # row's task_json is often larger than a page; a REPLACE rewrote it every commit).
            changed = tuple(i for i, c in enumerate(SESSION_COLUMNS)
                            if s[c] != stored.get(c) or type(s[c]) is not type(stored.get(c)))
            if changed:
                conn.execute(_session_update(changed), [s[SESSION_COLUMNS[i]] for i in changed] + [sid])
        if new_rows:
            insert_rows(conn, _SESSION_UPSERT, len(SESSION_COLUMNS), new_rows)
        if self.deleted_subtasks:
            conn.executemany("DELETE FROM subtasks WHERE session_id = ? AND id = ?",
                                   sorted(self.deleted_subtasks))
        if self.dirty_subtasks:
            insert_rows(conn, _SUBTASK_UPSERT, len(SUBTASK_COLUMNS), [
                tuple(self.subtasks[sid][sub][c] for c in SUBTASK_COLUMNS)
                for sid, sub in sorted(self.dirty_subtasks) if (sid, sub) not in self.deleted_subtasks])
        if self.dirty_calls:
            insert_rows(conn, _CALL_UPSERT, len(CALL_COLUMNS), [
                tuple(self.calls[k][c] for c in CALL_COLUMNS) for k in sorted(self.dirty_calls)])


    def _derive_needs(self, conn: sqlite3.Connection, sid: str) -> None:
        """What the session waits for from a person: "approval" (its oldest pending call),
        else "stuck" (a stuck subtask of a live session), else None."""
        s = self.sessions[sid]
        if s["status"] in ENDED_SESSION:  # done, failed, cancelled: no one is asked any more
            s["needs"], s["needs_since"], s["needs_detail"] = None, None, ""
            return
        pending = conn.execute(
            "SELECT tool, input_json, requested_at FROM approvals WHERE session_id = ? "
            "AND decided_seq IS NULL AND closed = 0 ORDER BY requested_at, requested_seq LIMIT 1", (sid,)).fetchall()
        if pending:
            s["needs"], s["needs_since"] = "approval", pending[0]["requested_at"]
            s["needs_detail"] = approval_detail(pending[0]["tool"], pending[0]["input_json"])
            return
        stuck = None
        if s["status"] not in FINISHED_SESSION:
            if sid in self.subtasks:
                rows = [r for r in self.subtasks[sid].values() if r["status"] == "stuck"]
            else:
                rows = [dict(r) for r in conn.execute(
                    "SELECT finished_at, reason FROM subtasks WHERE session_id = ? AND status = 'stuck'", (sid,))]
            if rows:
                stuck = min(rows, key=lambda r: r["finished_at"] or 0.0)
        if stuck is not None:
            s["needs"], s["needs_since"] = "stuck", stuck["finished_at"]
            s["needs_detail"] = _clip(stuck["reason"] or "stuck")
        else:
            s["needs"], s["needs_since"], s["needs_detail"] = None, None, ""

    def approval(self, ev: Any) -> dict[str, Any] | None:
        return self.approvals.get((ev.session_id, ev.call_id))

    def close_approval(self, sid: str, call_id: str) -> None:
        row = self.approvals.get((sid, call_id))
        if row is not None and row["decided_seq"] is None and not row["closed"]:
            row["closed"] = 1
            self.dirty_approvals.add((sid, call_id))
            self.needs_sessions.add(sid)
            if row["subtask_id"]:
                self.state_subtasks.add((sid, row["subtask_id"]))


def _clip(text: str, n: int = NEEDS_DETAIL_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


def approval_detail(tool: str, input_json: str) -> str:
    """The tool and a preview of its main input (the command, the path, or its JSON)."""
    from shepherd.core.approvals import main_input

    try:
        value = json.loads(input_json or "{}")
    except ValueError:
        value = {}
    _, text = main_input(tool, value if isinstance(value, dict) else {})
    return _clip(f"{tool} {text}")


def _drop_settled_state(conn: sqlite3.Connection, sid: str, subtask_id: str) -> None:
    """Delete a subtask's saved run state once none of its calls waits for an answer."""
    row = conn.execute("SELECT call_ids_json FROM run_states WHERE session_id = ? AND subtask_id = ?",
                       (sid, subtask_id)).fetchone()
    if row is None:
        return
    try:
        ids = [str(c) for c in json.loads(row["call_ids_json"])]
    except (ValueError, TypeError):
        ids = []
    for chunk in _chunks(ids):
        settled = conn.execute(
            f"SELECT count(*) FROM approvals WHERE session_id = ? AND call_id IN ({_marks(len(chunk))}) "
            "AND (decided_seq IS NOT NULL OR closed = 1)", (sid, *chunk)).fetchone()[0]
        if settled < len(chunk):  # one undecided (or not even asked yet): the state is still needed
            return
    conn.execute("DELETE FROM run_states WHERE session_id = ? AND subtask_id = ?", (sid, subtask_id))


_UPDATES: dict[tuple[int, ...], str] = {}


def _session_update(columns: tuple[int, ...]) -> str:
    sql = _UPDATES.get(columns)
    if sql is None:
        sets = ", ".join(f"{SESSION_COLUMNS[i]} = ?" for i in columns)
        sql = _UPDATES[columns] = f"UPDATE sessions SET {sets} WHERE id = ?"
    return sql


def _key_order(key: tuple[str | None, int | None]) -> tuple[str, int]:
    return (key[0] or "", -1 if key[1] is None else key[1])


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _new_session(sid: str, last_seq: int, ts: float) -> dict[str, Any]:
    return {"id": sid, "title": "", "backend": "", "model": None, "workspace": "",
            "status": "running", "started_at": ts, "updated_at": ts, "ended_at": None,
            "last_seq": last_seq, "last_event_ts": None, "subtasks_total": 0,
            "subtasks_done": 0, "retries": 0, "input_tokens": 0, "output_tokens": 0,
            "cost_usd": 0.0, "task_json": "{}", "needs": None, "needs_since": None, "needs_detail": "",
            "cost_known": 0, "waste_input_tokens": 0, "waste_output_tokens": 0, "waste_cost_usd": 0.0}


def _log_duplicate(ev: Event) -> None:
    """A dropped event is never silent: two calls sharing an id would lose a record."""
    log.warning("store: dropped a duplicate %s for call %r of session %s (subtask %s, attempt %s): "
                "that call already finished", ev.type, getattr(ev, "call_id", ""), ev.session_id,
                ev.subtask_id, ev.attempt)


def write_events(conn: sqlite3.Connection, events: list[Event], now: float,
                 heads: list[str] | None = None, cache: RowCache | None = None) -> list[Event | None]:
    """Store ``events`` with gapless seq numbers and update the derived tables, inside the
    caller's write transaction. With ``heads`` (from ``prepare``) the events are the
    store's private copies and get their seq set in place; without, they are prepared
    here (their own ts kept). Returns, per event, the stored event or None if it was
    dropped as a duplicate."""
    if not events:
        return []
    if heads is None:
        prepared = [prepare(e, e.ts) for e in events]
        events = [p[0] for p in prepared]
        heads = [p[1] for p in prepared]
    batch = _Batch(now, cache)
    batch.load(conn, events)
    out: list[Event | None] = []
    rows: list[tuple[Any, ...]] = []
    for ev, head in zip(events, heads):
        if batch.is_duplicate(ev):
            _log_duplicate(ev)
            out.append(None)
            continue
        seq = batch.sessions[ev.session_id]["last_seq"] + 1
        object.__setattr__(ev, "seq", seq)  # our own copy, not yet seen by anyone
        batch.apply(ev)
        rows.append((ev.session_id, seq, ev.type, ev.ts, ev.subtask_id, ev.attempt, _with_seq(head, seq)))
        out.append(ev)
    if rows:
        _insert_events(conn, rows)
        docs = event_docs([ev for ev in out if ev is not None])
        if docs:  # the search index, in the same transaction as its events
            insert_rows(conn, INSERT_DOCS, 3, docs)
        batch.write(conn)
    batch.keep()
    return out
