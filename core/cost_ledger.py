"""``CostLedger``: core.stats' rules for tokens, cost and retry waste, one event at a time.

``core.stats.costs_from_events`` folds a whole session's events at once; the store cannot:
it derives in every write transaction from that batch's events only (core.store.derive),
and the session view folds live events as they come. Both keep a ledger: per attempt its
tally and how it ended (the rows of table ``attempt_costs``), per subtask the highest
attempt started. An attempt's waste is only known once a later attempt starts or its
subtask ends, so nothing is decided early: ``SessionCosts`` (core.stats) reads the flags
when asked. Fed the same events it gives what ``costs_from_events`` gives (a property
test holds the two together, on both stores).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shepherd.core.events import AttemptStarted, Error, SubtaskFinished, Usage
from shepherd.core.stats import AttemptCost, SessionCosts, Tally

COST_TYPES = frozenset({Usage.type, AttemptStarted.type, Error.type, SubtaskFinished.type})
Key = tuple[str | None, int | None]


class CostLedger:
    """``seq``: the last event folded in (events at or below it are skipped by callers
    that mix a stored ledger with a page of events)."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq
        self.attempts: dict[Key, AttemptCost] = {}
        self.latest: dict[str, int] = {}  # subtask -> highest attempt number started

    # --- folding (the rules of core.stats.costs_from_events, in the same order) ---

    def _get(self, sub: str | None, no: int | None) -> AttemptCost:
        key = (sub, no if sub is not None else None)
        a = self.attempts.get(key)
        if a is None:
            a = self.attempts[key] = AttemptCost(sub, key[1])
            self._mark_superseded(a)
        return a

    def _mark_superseded(self, a: AttemptCost) -> None:
        if a.subtask_id is not None and a.attempt is not None:
            a.superseded = a.attempt < self.latest.get(a.subtask_id, 0)

    def apply(self, ev: Any) -> Key | None:
        """Fold one event; the key of the attempt it changed (None: nothing of costs)."""
        if ev.seq:
            self.seq = max(self.seq, ev.seq)
        if isinstance(ev, AttemptStarted) and ev.subtask_id is not None:
            no = ev.attempt if ev.attempt is not None else self.latest.get(ev.subtask_id, 0) + 1
            a = self._get(ev.subtask_id, no)
            a.started = True
            if no > self.latest.get(ev.subtask_id, 0):
                self.latest[ev.subtask_id] = no
                for other in self.attempts.values():  # the earlier attempts are waste from now on
                    if other.subtask_id == ev.subtask_id:
                        self._mark_superseded(other)
            return (a.subtask_id, a.attempt)
        if isinstance(ev, Usage):
            sub = ev.subtask_id
            a = self._get(sub, ev.attempt if ev.attempt is not None else self.latest.get(sub or "", None))
            a.usage.add_usage(ev)
            return (a.subtask_id, a.attempt)
        if isinstance(ev, Error) and ev.subtask_id is not None:
            a = self._get(ev.subtask_id, ev.attempt if ev.attempt is not None else self.latest.get(ev.subtask_id))
            a.errored = True
            return (a.subtask_id, a.attempt)
        if isinstance(ev, SubtaskFinished) and ev.subtask_id is not None and ev.status == "done":
            a = self._get(ev.subtask_id, ev.attempt if ev.attempt is not None else self.latest.get(ev.subtask_id))
            a.done = True
            return (a.subtask_id, a.attempt)
        return None

    def apply_all(self, events: Iterable[Any]) -> None:
        for ev in events:
            self.apply(ev)

    # --- reading ---

    def session_costs(self, session_id: str) -> SessionCosts:
        """Totals and waste as core.stats computes them (attempts in its order)."""
        out = SessionCosts(session_id)
        out.attempts = sorted(self.attempts.values(), key=lambda a: (a.subtask_id is not None, a.subtask_id or "",
                                                                      a.attempt or 0))
        return out

    def subtask(self, subtask_id: str | None) -> tuple[Tally, Tally]:
        """(total, waste) of one subtask (None: the usage of no subtask)."""
        total, waste = Tally(), Tally()
        for a in sorted((a for a in self.attempts.values() if a.subtask_id == subtask_id),
                        key=lambda a: a.attempt or 0):
            total.add(a.usage)
            if a.wasted:
                waste.add(a.usage)
        return total, waste

    def attempt(self, subtask_id: str | None, attempt: int | None) -> AttemptCost | None:
        return self.attempts.get((subtask_id, attempt if subtask_id is not None else None))

    # --- as rows (table attempt_costs; '' and -1 stand for "no subtask" / "no attempt named") ---

    @classmethod
    def from_rows(cls, rows: Iterable[Any], seq: int = 0) -> CostLedger:
        led = cls(seq)
        for r in rows:
            sub = r["subtask_id"] or None
            no = None if r["attempt"] is None or r["attempt"] < 0 else int(r["attempt"])
            a = AttemptCost(sub, no, Tally(int(r["input_tokens"]), int(r["output_tokens"]), float(r["cost_usd"]),
                                           bool(r["cost_known"])),
                            errored=bool(r["errored"]), done=bool(r["done"]), started=bool(r["started"]))
            led.attempts[(sub, no)] = a
            if a.started and sub is not None and no is not None and no > led.latest.get(sub, 0):
                led.latest[sub] = no
        for a in led.attempts.values():
            led._mark_superseded(a)
        return led


def attempt_row(session_id: str, a: AttemptCost) -> tuple[Any, ...]:
    """One ``attempt_costs`` row (ROW_COLUMNS order)."""
    u = a.usage
    return (session_id, a.subtask_id or "", -1 if a.attempt is None else a.attempt, u.input_tokens, u.output_tokens,
            u.cost_usd, int(u.cost_known), int(a.started), int(a.errored), int(a.done))


ROW_COLUMNS = ("session_id", "subtask_id", "attempt", "input_tokens", "output_tokens", "cost_usd", "cost_known",
               "started", "errored", "done")


def session_columns(costs: SessionCosts) -> dict[str, Any]:
    """The sessions columns derived from a session's costs."""
    total, waste = costs.total, costs.waste
    return {"input_tokens": total.input_tokens, "output_tokens": total.output_tokens, "cost_usd": total.cost_usd,
            "cost_known": int(total.cost_known), "waste_input_tokens": waste.input_tokens,
            "waste_output_tokens": waste.output_tokens, "waste_cost_usd": waste.cost_usd}
