"""The derived rows a writer wrote last, kept for its next batches (the SQLite writer's).

Every batch reads the derived rows it is about to change (a session's subtasks, its cost
ledger, the tool calls and approvals its events name) inside its own BEGIN IMMEDIATE,
because another process may have written the same file since. Nearly always nothing has:
they are the rows this writer wrote a moment ago, and reading them again was a third of a
turn's statements (each one a hand-over of the GIL between the writer's thread and the
event loop's). ``RowCache`` keeps them per session, marked with the (last_seq, updated_at)
this writer gave the session's row. A batch still reads that row, in its transaction; only
when the row carries the mark is the rest taken from here. Any other write of the
session's events (another process, a recovery) moves last_seq; a batch that did not commit
leaves the file's older mark; an entry is taken out while a batch uses it and put back only
by a batch that wrote everything. So what is here is never mistaken for the file's.

A session this writer saw begin (no row, no event) is *complete*: every tool call and
approval it has is here, so a call id that is not here has no row, and none is read.
Finished calls keep only their id (enough to drop a repeated event). Ended sessions are
forgotten; so is the least recently written beyond MAX_SESSIONS.
"""

from __future__ import annotations

from typing import Any

MAX_SESSIONS = 256


class Entry:
    __slots__ = ("mark", "subtasks", "ledger", "complete", "open_calls", "finished", "approvals")

    def __init__(self, complete: bool = False) -> None:
        self.mark: tuple[Any, Any] | None = None  # (last_seq, updated_at) of the row this writer wrote
        self.complete = complete
        # a complete session has no subtask and no cost yet; otherwise unknown until read
        self.subtasks: dict[str, dict[str, Any]] | None = {} if complete else None
        self.ledger: Any = None  # core.cost_ledger.CostLedger, once read or begun
        self.open_calls: dict[str, dict[str, Any]] = {}  # complete only: call id -> row
        self.finished: set[str] = set()  # complete only: ids of finished calls
        self.approvals: dict[str, dict[str, Any]] = {}  # complete only: call id -> row


def mark_of(row: dict[str, Any]) -> tuple[Any, Any]:
    return (row["last_seq"], row["updated_at"])


class RowCache:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self.hits = 0  # batches' sessions served from here (tests, bench)
        self.misses = 0

    def take(self, sid: str, stored: dict[str, Any] | None) -> Entry | None:
        """The session's entry, out of the cache, if the row read in this transaction
        (``stored``) is the one this writer wrote; else None (and the entry is gone)."""
        entry = self._entries.pop(sid, None)
        if entry is None or stored is None or entry.mark != mark_of(stored):
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, sid: str, entry: Entry, row: dict[str, Any]) -> None:
        """Keep ``entry`` for the session whose row this batch wrote as ``row``."""
        entry.mark = mark_of(row)
        self._entries[sid] = entry
        if len(self._entries) > MAX_SESSIONS:
            del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
