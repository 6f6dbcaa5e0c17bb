"""Varied sessions for the cost tests: retries, restarts, resumes, usage with and without
cost (tests/test_costs_derive.py, and the SIGKILL child in tests/store_child.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shepherd.core.cost_ledger import CostLedger
from shepherd.core.stats import SessionCosts
from shepherd.core.events import (AttemptStarted, Error, RetryScheduled, SessionFinished, SessionInterrupted,
                                  SessionResumed, SessionStarted, SubtaskFinished, SubtaskStarted, TextDelta, Usage)


def _usage(rng: random.Random, sid: str, sub: str | None, attempt: int | None) -> Usage:
    cost = None if rng.random() < 0.3 else round(rng.uniform(0.001, 0.4), 6)  # some backends report no cost
    return Usage(session_id=sid, subtask_id=sub, attempt=attempt, input_tokens=rng.randint(0, 5000),
                 output_tokens=rng.randint(0, 900), cost_usd=cost, ts=1.0)


def random_session(rng: random.Random, sid: str) -> list[Any]:
    """Retries after errors, restarts, a person's retry of a failed subtask, a resume after
    an interruption, usage without cost or without an attempt, planning usage of no
    subtask, an error in an attempt that still finished done."""
    evs: list[Any] = [SessionStarted(session_id=sid, title="t", backend="claude", model="m", ts=1.0)]
    if rng.random() < 0.7:
        evs.append(_usage(rng, sid, None, None))  # planning, before any subtask
    for n in range(rng.randint(1, 4)):
        sub = f"s{n}"
        evs.append(SubtaskStarted(session_id=sid, subtask_id=sub, ts=1.0))
        attempt = 0
        for _ in range(rng.randint(1, 4)):
            attempt += 1
            named = rng.random() < 0.85
            reason = rng.choice(["first", "retry", "restart", "user_retry", "resume"]) if attempt > 1 else "first"
            evs.append(AttemptStarted(session_id=sid, subtask_id=sub, attempt=attempt if named else None,
                                      reason=reason, ts=1.0))
            for _ in range(rng.randint(0, 3)):
                evs.append(_usage(rng, sid, sub, attempt if rng.random() < 0.8 else None))
                if rng.random() < 0.2:
                    evs.append(TextDelta(session_id=sid, subtask_id=sub, attempt=attempt, text="x", ts=1.0))
            end = rng.choice(["retry", "error_done", "done", "failed", "interrupt", "next"])
            if end == "retry":
                evs += [Error(session_id=sid, subtask_id=sub, attempt=attempt, kind="rate_limit", retryable=True,
                              ts=1.0),
                        RetryScheduled(session_id=sid, subtask_id=sub, attempt=attempt, kind="rate_limit", ts=1.0)]
            elif end == "error_done":  # a recoverable error, then the attempt finished done
                evs += [Error(session_id=sid, subtask_id=sub, attempt=attempt, kind="tool", ts=1.0),
                        SubtaskFinished(session_id=sid, subtask_id=sub, attempt=attempt, status="done", ts=1.0)]
                break
            elif end == "done":
                evs.append(SubtaskFinished(session_id=sid, subtask_id=sub, attempt=attempt, status="done", ts=1.0))
                break
            elif end == "failed":  # then maybe a person's retry (the next attempt)
                evs += [Error(session_id=sid, subtask_id=sub, attempt=attempt, kind="api", ts=1.0),
                        SubtaskFinished(session_id=sid, subtask_id=sub, attempt=attempt, status="failed", ts=1.0)]
                if rng.random() < 0.4:
                    break
            elif end == "interrupt":  # killed; resumed later in a new attempt
                evs += [SessionInterrupted(session_id=sid, ts=1.0), SessionResumed(session_id=sid, ts=1.0)]
        if rng.random() < 0.2:  # usage with a subtask and no attempt, after it ended
            evs.append(_usage(rng, sid, sub, None))
    if rng.random() < 0.3:
        evs.append(Error(session_id=sid, kind="api", ts=1.0))  # of no subtask: never waste
    evs.append(SessionFinished(session_id=sid, status=rng.choice(["done", "failed"]), ts=1.0))
    return evs


def attempts_of(costs: SessionCosts) -> dict[Any, tuple[Any, ...]]:
    return {(a.subtask_id, a.attempt): (a.usage.input_tokens, a.usage.output_tokens, round(a.usage.cost_usd, 9),
                                        a.usage.cost_known, a.wasted) for a in costs.attempts}


def check_costs(row: Any, ledger: CostLedger, want: SessionCosts) -> None:
    total, waste = want.total, want.waste
    assert (row.input_tokens, row.output_tokens, row.cost_known) == (total.input_tokens, total.output_tokens,
                                                                     total.cost_known)
    assert row.cost_usd == pytest.approx(total.cost_usd, abs=1e-9)
    assert (row.waste_input_tokens, row.waste_output_tokens) == (waste.input_tokens, waste.output_tokens)
    assert row.waste_cost_usd == pytest.approx(waste.cost_usd, abs=1e-9)
    got = ledger.session_costs(row.id)
    assert attempts_of(got) == attempts_of(want)
    for sub, (t, w) in want.subtasks().items():
        gt, gw = ledger.subtask(sub)
        assert (gt.tokens, gw.tokens, gw.cost_known) == (t.tokens, w.tokens, w.cost_known)
        assert gw.cost_usd == pytest.approx(w.cost_usd, abs=1e-9)
