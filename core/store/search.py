"""Full-text search over every session: what is indexed from each event, the query, the snippet.

The index (table ``search_docs``, migration 4) holds one row per event that carries text a
person may look for: a message's text (message.completed, never the deltas), a tool call's
input (tool.started) and output (tool.finished), an error's message, a control note, an
approval's or hook's reason, a finish/pause reason. It is written by ``derive.write_events``
in the events' own transaction from the events as stored (already scrubbed), so it never
holds a secret the events do not, and a committed event is always found. SQLite: an FTS5
table keyed by (session_id, seq); PostgreSQL: a tsvector column with a GIN index.

A query is words, never syntax: its runs of letters and digits, each quoted (SQLite) or
passed to ``plainto_tsquery`` (PostgreSQL); quotes, ``-``, ``*``, ``:``, ``NEAR(`` and
unbalanced quotes are separators, ``NEAR``/``AND``/``OR`` plain words. Every word must occur
in the event (anywhere in it, not as a phrase). Hits are newest first (by index order).
"""

from __future__ import annotations

import json
import re
from typing import Any
from shepherd.core.records import record

# The snippet's marks around a match: control characters no indexed text contains
# (``body`` strips them), so a reader can split on them without ambiguity.
MARK_START = "\x02"
MARK_END = "\x03"
SNIPPET_TOKENS = 16
MAX_BODY = 20_000  # per event: a huge tool output is indexed by its head
INSERT_DOCS = "INSERT INTO search_docs (session_id, seq, body) VALUES "


@record(frozen=True, slots=True)
class SearchHit:
    session_id: str
    seq: int
    subtask_id: str | None
    type: str
    snippet: str  # the match between MARK_START and MARK_END; untrusted text (use core.text.safe)
    ts: float


def _s(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def body_of(d: Any) -> str:
    """The searchable text of one event (its JSON dict, or anything with its ``get``), or
    "" when it has none."""
    t = d.get("type", "")
    if t == "message.completed":
        parts = [d.get("text")]
    elif t == "tool.started":
        parts = [d.get("name"), d.get("input")]
    elif t == "tool.finished":
        parts = [d.get("output")]
    elif t == "error":
        parts = [d.get("message")]
    elif t == "control":
        parts = [d.get("text")]
    elif t in ("approval.decided", "hook.decision", "subtask.finished", "session.finished",
               "session.paused", "session.interrupted"):
        parts = [d.get("reason")]
    elif t == "approval.requested":
        parts = [d.get("tool"), d.get("input")]
    else:
        return ""
    text = " ".join(p for p in (_s(x) for x in parts) if p)
    text = text.replace(MARK_START, " ").replace(MARK_END, " ").replace("\x00", " ")
    return text[:MAX_BODY].strip()


INDEXED_TYPES = frozenset({"message.completed", "tool.started", "tool.finished", "error", "control",
                           "approval.requested", "approval.decided", "hook.decision", "subtask.finished",
                           "session.finished", "session.paused", "session.interrupted"})


def doc_rows(events: list[tuple[str, int, str, str]]) -> list[tuple[str, int, str]]:
    """(session_id, seq, type, event JSON) -> index rows (session_id, seq, body) for those
    with text. Deltas and the like are skipped by type, before their JSON is read."""
    out = []
    for sid, seq, t, data in events:
        if t not in INDEXED_TYPES:
            continue
        try:
            d = json.loads(data)
        except ValueError:
            continue
        if isinstance(d, dict):
            b = body_of(d)
            if b:
                out.append((sid, int(seq), b))
    return out


class _Fields:
    """An event read like its JSON dict (``body_of``'s ``d.get``): the writer indexes the
    events it holds without decoding the JSON it was handed a moment ago."""

    __slots__ = ("ev",)

    def __init__(self, ev: Any) -> None:
        self.ev = ev

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self.ev, name, default)


def event_docs(events: list[Any]) -> list[tuple[str, int, str]]:
    """``doc_rows`` for stored events (seq set): the same rows, read off the objects. A value
    whose text could differ from its JSON's (a key json.dumps cannot sort) takes the JSON."""
    out = []
    for ev in events:
        if ev.type not in INDEXED_TYPES:
            continue
        try:
            b = body_of(_Fields(ev))
        except (TypeError, ValueError):
            b = body_of(json.loads(ev.to_json()))
        if b:
            out.append((ev.session_id, int(ev.seq), b))
    return out


_WORD = re.compile(r"[^\W_]+")


def terms(query: str) -> list[str]:
    """The words of what a person typed: its runs of letters and digits (the tokenizers'
    idea of a word, on both stores), every other character a separator."""
    return _WORD.findall(query)


def fts5_query(query: str) -> str:
    """Each word as an FTS5 string, all required: never a syntax error (a word has no quote)."""
    return " ".join(f'"{w}"' for w in terms(query))


def backfill(conn: Any, chunk: int = 5000) -> int:
    """Index every stored event (migration 4, an existing database): returns rows indexed.
    ``conn``: a sqlite3 connection, or PostgreSQL's dialect.SyncConn."""
    last, n = 0, 0
    while True:
        rows = conn.execute("SELECT id, session_id, seq, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                            (last, chunk)).fetchall()
        if not rows:
            return n
        last = rows[-1][0]
        docs = doc_rows([(r[1], r[2], r[3], r[4]) for r in rows])
        if docs:
            conn.executemany(INSERT_DOCS + "(?, ?, ?)", docs)
            n += len(docs)


SQLITE_SEARCH = (
    "SELECT d.session_id, d.seq, e.subtask_id, e.type, "
    f"snippet(search_docs, 2, char(2), char(3), '…', {SNIPPET_TOKENS}), e.ts "
    "FROM search_docs d JOIN events e ON e.session_id = d.session_id AND e.seq = d.seq "
    "WHERE search_docs MATCH ?{where} ORDER BY d.rowid DESC LIMIT ?")


def sqlite_search_rows(conn: Any, query: str, session_id: str | None, limit: int) -> list[SearchHit]:
    """The SQLite query, on a plain sqlite3 connection (newest first)."""
    words = fts5_query(query)
    if not words:
        return []
    q = f"body : ({words})"
    where, params = "", []
    if session_id is not None:  # the column filter finds the session's rows, the equality makes it exact
        q = 'session_id : "' + session_id.replace('"', '""') + '" AND ' + q
        where, params = " AND d.session_id = ?", [session_id]
    params.insert(0, q)
    rows = conn.execute(SQLITE_SEARCH.format(where=where), [*params, int(limit)]).fetchall()
    return [SearchHit(r[0], int(r[1]), r[2], r[3], r[4] or "", float(r[5])) for r in rows]
