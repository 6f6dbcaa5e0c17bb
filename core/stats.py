"""Tokens and cost per attempt, per subtask and per session, and the part that was wasted.

Sums are Python over each session's ``usage`` events (plus the few events that say how an
attempt ended), read through the store's own ``events(types=...)`` so both stores give the
same answer with no SQL of our own.

The rules:
  - A usage event counts for the attempt it names (``subtask_id``, ``attempt``). One with no
    subtask (planning before the plan, a session-level call) counts for the session only,
    under the subtask key ``None``; it is never waste.
  - An attempt is *retry waste* when its subtask went on to another attempt (a later
    ``attempt.started`` of the same subtask, whatever the reason: retry, restart, a person's
    retry, a resume), or when it ended in an error: an ``error`` event in that attempt and
    the subtask did not finish ``done`` in that attempt.
  - The last attempt of a subtask that finished ``done`` is never waste, even if it saw a
    recoverable error along the way.
  - ``cost_usd`` is summed where the backend reported it; a usage event without a cost adds
    tokens only (``cost_known`` says whether any cost was reported).
  - A day is the UTC calendar day of the usage event's timestamp; backend and model are the
    session's (``session.started``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, field
from datetime import datetime, timezone
from typing import Any

from shepherd.core.events import AttemptStarted, Error, SessionStarted, SubtaskFinished, Usage
from shepherd.core.records import record

STATS_TYPES = (Usage.type, AttemptStarted.type, Error.type, SubtaskFinished.type, SessionStarted.type)
_PAGE = 5000


@record
class Tally:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = False

    def add(self, other: Tally) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.cost_known = self.cost_known or other.cost_known

    def add_usage(self, ev: Usage) -> None:
        self.input_tokens += max(0, int(ev.input_tokens or 0))
        self.output_tokens += max(0, int(ev.output_tokens or 0))
        if ev.cost_usd is not None:
            self.cost_usd += float(ev.cost_usd)
            self.cost_known = True

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@record
class AttemptCost:
    subtask_id: str | None
    attempt: int | None
    usage: Tally = field(default_factory=Tally)
    errored: bool = False
    superseded: bool = False
    done: bool = False
    started: bool = False  # an attempt.started named it (the highest one started supersedes the rest)
    days: dict[str, Tally] = field(default_factory=dict)  # UTC day -> this attempt's usage that day

    @property
    def wasted(self) -> bool:
        return self.subtask_id is not None and (self.superseded or (self.errored and not self.done))


@record
class SessionCosts:
    session_id: str
    backend: str = ""
    model: str | None = None
    attempts: list[AttemptCost] = field(default_factory=list)

    @property
    def total(self) -> Tally:
        out = Tally()
        for a in self.attempts:
            out.add(a.usage)
        return out

    @property
    def waste(self) -> Tally:
        out = Tally()
        for a in self.attempts:
            if a.wasted:
                out.add(a.usage)
        return out

    def subtasks(self) -> dict[str | None, tuple[Tally, Tally]]:
        """subtask id -> (total, waste), in first-seen order."""
        out: dict[str | None, tuple[Tally, Tally]] = {}
        for a in self.attempts:
            total, waste = out.setdefault(a.subtask_id, (Tally(), Tally()))
            total.add(a.usage)
            if a.wasted:
                waste.add(a.usage)
        return out


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def costs_from_events(session_id: str, events: Iterable[Any]) -> SessionCosts:
    """The rules above over one session's events (any superset of STATS_TYPES, seq order)."""
    out = SessionCosts(session_id)
    attempts: dict[tuple[str | None, int | None], AttemptCost] = {}
    latest: dict[str, int] = {}  # subtask -> highest attempt number started

    def get(sub: str | None, no: int | None) -> AttemptCost:
        key = (sub, no if sub is not None else None)
        a = attempts.get(key)
        if a is None:
            a = attempts[key] = AttemptCost(sub, key[1])
        return a

    for ev in events:
        if isinstance(ev, SessionStarted):
            out.backend, out.model = ev.backend, ev.model
        elif isinstance(ev, AttemptStarted) and ev.subtask_id is not None:
            no = ev.attempt if ev.attempt is not None else latest.get(ev.subtask_id, 0) + 1
            get(ev.subtask_id, no).started = True
            latest[ev.subtask_id] = max(latest.get(ev.subtask_id, 0), no)
        elif isinstance(ev, Usage):
            a = get(ev.subtask_id, ev.attempt if ev.attempt is not None else latest.get(ev.subtask_id or "", None))
            a.usage.add_usage(ev)
            a.days.setdefault(_day(ev.ts), Tally()).add_usage(ev)
        elif isinstance(ev, Error) and ev.subtask_id is not None:
            get(ev.subtask_id, ev.attempt if ev.attempt is not None else latest.get(ev.subtask_id)).errored = True
        elif isinstance(ev, SubtaskFinished) and ev.subtask_id is not None and ev.status == "done":
            get(ev.subtask_id, ev.attempt if ev.attempt is not None else latest.get(ev.subtask_id)).done = True
    for a in attempts.values():
        if a.subtask_id is not None and a.attempt is not None and a.attempt < latest.get(a.subtask_id, 0):
            a.superseded = True
    out.attempts = sorted(attempts.values(), key=lambda a: (a.subtask_id is not None, a.subtask_id or "",
                                                             a.attempt or 0))
    return out


async def _stats_events(store: Any, sid: str) -> list[Any]:
    out: list[Any] = []
    after = 0
    while True:
        page = await store.events(sid, after_seq=after, limit=_PAGE, types=STATS_TYPES)
        out += page
        if len(page) < _PAGE:
            return out
        after = page[-1].seq


async def session_costs(store: Any, session_id: str) -> SessionCosts:
    """One session's costs (the session view and the home call this)."""
    return costs_from_events(session_id, await _stats_events(store, session_id))


@record
class StatsRow:
    day: str
    backend: str
    model: str | None
    sessions: int
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    waste_input_tokens: int
    waste_output_tokens: int
    waste_cost_usd: float

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(d["cost_usd"], 6)
        d["waste_cost_usd"] = round(d["waste_cost_usd"], 6)
        return d


async def _session_ids_since(store: Any, since: float | None) -> list[str]:
    """Sessions that may have usage at or after ``since``: newest first by start, every one
    updated since (a session started before but still spending counts for the later days)."""
    ids: list[str] = []
    offset, page = 0, 500
    while True:
        rows = await store.list_sessions(limit=page, offset=offset)
        for r in rows:
            if since is None or (r.updated_at or r.started_at) >= since or (r.ended_at or 0) >= since:
                ids.append(r.id)
        if len(rows) < page:
            return ids
        offset += page


async def stats(store: Any, since: float | None = None) -> list[StatsRow]:
    """Sums by (day, backend, model) of usage at or after ``since`` (None: everything),
    oldest day first."""
    since_day = _day(since) if since is not None else None
    rows: dict[tuple[str, str, str | None], StatsRow] = {}
    seen: dict[tuple[str, str, str | None], set[str]] = {}
    for sid in await _session_ids_since(store, since):
        costs = await session_costs(store, sid)
        for a in costs.attempts:
            for day, t in a.days.items():
                if since_day is not None and day < since_day:
                    continue
                key = (day, costs.backend, costs.model)
                r = rows.get(key)
                if r is None:
                    r = rows[key] = StatsRow(day, costs.backend, costs.model, 0, 0, 0, 0, 0.0, 0, 0, 0.0)
                seen.setdefault(key, set()).add(sid)
                if a.subtask_id is not None:
                    r.attempts += 1
                r.input_tokens += t.input_tokens
                r.output_tokens += t.output_tokens
                r.cost_usd += t.cost_usd
                if a.wasted:
                    r.waste_input_tokens += t.input_tokens
                    r.waste_output_tokens += t.output_tokens
                    r.waste_cost_usd += t.cost_usd
    for key, r in rows.items():
        r.sessions = len(seen[key])
    return sorted(rows.values(), key=lambda r: (r.day, r.backend, r.model or ""))


@record
class DayTotal:
    """One day's sums over every backend and model (the charts' bars)."""
    day: str
    tokens: int = 0
    waste_tokens: int = 0
    cost_usd: float = 0.0
    waste_cost_usd: float = 0.0


def by_day(rows: Iterable[StatsRow]) -> list[DayTotal]:
    """``stats()`` rows summed per day, oldest first (the CLI's bars and the TUI's chart)."""
    days: dict[str, DayTotal] = {}
    for r in rows:
        d = days.setdefault(r.day, DayTotal(r.day))
        d.tokens += r.input_tokens + r.output_tokens
        d.waste_tokens += r.waste_input_tokens + r.waste_output_tokens
        d.cost_usd += r.cost_usd
        d.waste_cost_usd += r.waste_cost_usd
    return [days[k] for k in sorted(days)]


def parse_since(text: str, now: float | None = None) -> float:
    """``7d``, ``24h``, ``90m`` or a date ``2026-11-01`` (UTC midnight) -> a timestamp.
    ValueError with a one-line message otherwise."""
    now = time.time() if now is None else now
    t = text.strip()
    units = {"d": 86400, "h": 3600, "m": 60}
    if len(t) >= 2 and t[-1] in units and t[:-1].isdigit():
        return now - int(t[:-1]) * units[t[-1]]
    try:
        day = datetime.strptime(t, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"--since {text!r}: use a span like 7d, 24h, 90m or a date like 2026-11-01") from None
    return day.timestamp()
