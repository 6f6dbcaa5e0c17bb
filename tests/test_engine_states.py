"""The engine's state table, walked: every subtask state × every trigger gives the next
state written here, or raises IllegalMove for a pair listed as illegal; none is missing.
Plus the pure decisions beside it: the next attempt, the requests' precedence, and the
move a failure makes."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from shepherd.core import prompts
from shepherd.core.engine.countdown import failure_trigger
from shepherd.core.engine.next_attempt import Cause, NextAttempt, Reason, next_attempt
from shepherd.core.engine.states import (
    AT_APPROVAL, AT_ATTEMPT, AT_BETWEEN, AT_COUNTDOWN, AT_PERSON, PERSON_TRIGGERS, PRECEDENCE, SETTLED, TABLE,
    WAITING_FOR_PERSON, AttemptOutcome, IllegalMove, Trigger, advance, first_request,
)
from shepherd.core.retry import RetryDecision
from shepherd.core.states import Command, SubtaskState

T, X = SubtaskState, Trigger

# The documented moves (docs/DEVELOPING.md, "Engine states"), written out again by hand.
_BETWEEN = {X.START: T.RUNNING, X.PAUSE: T.PAUSED, X.PAUSE_NOW: T.PAUSED, X.RETRY: T.RUNNING,
            X.SKIP: T.SKIPPED, X.CANCEL: T.CANCELLED, X.BUDGET_SPENT: T.STUCK}
EXPECTED: dict[SubtaskState, dict[Trigger, SubtaskState]] = {
    T.PENDING: {**_BETWEEN, X.FAILED_STUCK: T.STUCK, X.FAILED_FINAL: T.FAILED},
    T.RUNNING: {**_BETWEEN, X.SUCCEEDED: T.DONE, X.FAILED_RETRY: T.WAITING_RETRY, X.FAILED_STUCK: T.STUCK,
                X.FAILED_FINAL: T.FAILED, X.APPROVAL_ASKED: T.WAITING_APPROVAL},
    T.WAITING_APPROVAL: {X.APPROVAL_ASKED: T.WAITING_APPROVAL, X.APPROVAL_ANSWERED: T.RUNNING,
                         X.CANCEL: T.CANCELLED, X.SKIP: T.SKIPPED, X.PAUSE_NOW: T.PAUSED, X.RETRY: T.RUNNING},
    T.WAITING_RETRY: {X.COUNTDOWN_DONE: T.RUNNING, X.RETRY_NOW: T.RUNNING, X.RETRY: T.RUNNING,
                      X.PAUSE: T.PAUSED, X.PAUSE_NOW: T.PAUSED, X.SKIP: T.SKIPPED, X.CANCEL: T.CANCELLED},
    T.PAUSED: {X.RESUME: T.RUNNING, X.PAUSE: T.PAUSED, X.PAUSE_NOW: T.PAUSED, X.SKIP: T.SKIPPED,
               X.CANCEL: T.CANCELLED},
    T.STUCK: {X.RETRY: T.RUNNING, X.SKIP: T.SKIPPED, X.CANCEL: T.CANCELLED},
    T.DONE: {X.RETRY: T.PENDING},
    T.FAILED: {X.RETRY: T.PENDING},
    T.SKIPPED: {X.RETRY: T.PENDING},
    T.CANCELLED: {X.RETRY: T.PENDING},
    T.INTERRUPTED: {},
}

# Every pair not above, named: an engine that reaches one of these has a bug.
_APPROVAL = {X.APPROVAL_ASKED, X.APPROVAL_ANSWERED}  # only a running attempt asks
ILLEGAL: dict[SubtaskState, set[Trigger]] = {
    T.PENDING: {X.SUCCEEDED, X.FAILED_RETRY, X.COUNTDOWN_DONE, X.RESUME, X.RETRY_NOW, *_APPROVAL},
    T.RUNNING: {X.COUNTDOWN_DONE, X.RESUME, X.RETRY_NOW, X.APPROVAL_ANSWERED},
    T.WAITING_APPROVAL: {X.START, X.SUCCEEDED, X.FAILED_RETRY, X.FAILED_STUCK, X.FAILED_FINAL, X.BUDGET_SPENT,
                         X.COUNTDOWN_DONE, X.PAUSE, X.RESUME, X.RETRY_NOW},
    T.WAITING_RETRY: {X.START, X.SUCCEEDED, X.FAILED_RETRY, X.FAILED_STUCK, X.FAILED_FINAL, X.BUDGET_SPENT,
                      X.RESUME, *_APPROVAL},
    T.PAUSED: {X.START, X.SUCCEEDED, X.FAILED_RETRY, X.FAILED_STUCK, X.FAILED_FINAL, X.BUDGET_SPENT,
               X.COUNTDOWN_DONE, X.RETRY, X.RETRY_NOW, *_APPROVAL},
    T.STUCK: {X.START, X.SUCCEEDED, X.FAILED_RETRY, X.FAILED_STUCK, X.FAILED_FINAL, X.BUDGET_SPENT,
              X.COUNTDOWN_DONE, X.PAUSE, X.PAUSE_NOW, X.RESUME, X.RETRY_NOW, *_APPROVAL},
    **{s: set(Trigger) - {X.RETRY} for s in (T.DONE, T.FAILED, T.SKIPPED, T.CANCELLED)},
    T.INTERRUPTED: set(Trigger),
}


def test_the_expected_moves_and_the_illegal_pairs_cover_every_state_and_trigger_once() -> None:
    for state in SubtaskState:
        legal, illegal = set(EXPECTED[state]), ILLEGAL[state]
        assert not legal & illegal, f"{state}: both legal and illegal: {legal & illegal}"
        assert legal | illegal == set(Trigger), f"{state}: not covered: {set(Trigger) - legal - illegal}"
    assert set(EXPECTED) == set(ILLEGAL) == set(SubtaskState)


def _misses(state: SubtaskState, trigger: Trigger) -> str:
    """What is wrong with ``advance`` for one pair ("" when it is as documented)."""
    if trigger in EXPECTED[state]:
        try:
            got = advance(state, trigger)
        except IllegalMove:
            return f"{state} on {trigger}: illegal, documented {EXPECTED[state][trigger]}"
        return "" if got is EXPECTED[state][trigger] else f"{state} on {trigger}: {got}, documented {EXPECTED[state][trigger]}"
    try:
        got = advance(state, trigger)
    except IllegalMove as e:
        return "" if (e.state, e.trigger) == (state, trigger) else f"{state} on {trigger}: wrong error {e}"
    return f"{state} on {trigger}: moves to {got}, documented illegal"


def _documented() -> dict[tuple[SubtaskState, Trigger], SubtaskState]:
    return {(s, x): n for s, moves in EXPECTED.items() for x, n in moves.items()}


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(SubtaskState, Trigger)),
                         ids=lambda v: str(v))
def test_every_state_and_trigger_gives_its_documented_move(state: SubtaskState, trigger: Trigger) -> None:
    assert trigger in EXPECTED[state] or trigger in ILLEGAL[state]
    assert _misses(state, trigger) == ""


def test_the_table_holds_exactly_the_documented_moves() -> None:
    import shepherd.core.engine.states as states

    assert states.TABLE == _documented()


def test_the_vocabulary_around_the_table() -> None:
    # a person's triggers are the commands of the same name (a note moves nothing; an
    # approve/deny answers one call, and the engine moves when no call is left waiting)
    assert {str(x) for x in PERSON_TRIGGERS} == {str(c) for c in Command} - {
        Command.NOTE, Command.APPROVE, Command.DENY}
    # stuck is settled; a call waiting for approval is inside a live attempt (a retry restarts it)
    assert WAITING_FOR_PERSON == {T.STUCK, T.WAITING_APPROVAL}
    assert WAITING_FOR_PERSON - {T.WAITING_APPROVAL} <= SETTLED and T.WAITING_APPROVAL not in SETTLED
    # a settled subtask has no attempt to restart: a retry of it runs it again, or answers it
    for state in SETTLED:
        assert advance(state, X.RETRY) in (T.PENDING, T.RUNNING)
        assert (state, X.START) not in TABLE
    # a move never leads into a state without a way on, unless a run ends there
    for nxt in TABLE.values():
        assert nxt in SETTLED or any(s == nxt for s, _ in TABLE), nxt


@pytest.mark.parametrize("broken", [
    {**TABLE, (T.RUNNING, X.SUCCEEDED): T.FAILED},                   # a wrong move
    {k: v for k, v in TABLE.items() if k != (T.STUCK, X.RETRY)},     # a missing one
    {**TABLE, (T.DONE, X.START): T.RUNNING},                         # an extra one
], ids=["wrong", "missing", "extra"])
def test_a_broken_table_fails_the_walk(monkeypatch: pytest.MonkeyPatch, broken: dict[Any, Any]) -> None:
    import shepherd.core.engine.states as states

    monkeypatch.setattr(states, "TABLE", broken)
    misses = [m for m in (_misses(s, x) for s, x in itertools.product(SubtaskState, Trigger)) if m]
    assert len(misses) == 1, misses
    assert states.TABLE != _documented()


# ---------------------------------------------------------------------- precedence


@pytest.mark.parametrize(("asked", "applies", "wins"), [
    ({X.CANCEL, X.SKIP, X.RETRY, X.PAUSE}, AT_BETWEEN, X.CANCEL),
    ({X.SKIP, X.PAUSE}, AT_BETWEEN, X.SKIP),
    ({X.RETRY, X.PAUSE}, AT_BETWEEN, X.PAUSE),  # a retry is taken after the pause
    ({X.PAUSE_NOW}, AT_BETWEEN, X.PAUSE_NOW),
    ({X.RETRY_NOW}, AT_BETWEEN, None),  # only a countdown has anything to skip
    (set(), AT_BETWEEN, None),
    ({X.SKIP, X.RETRY}, AT_ATTEMPT, X.SKIP),
    ({X.RETRY, X.PAUSE_NOW}, AT_ATTEMPT, X.RETRY),
    ({X.PAUSE, X.PAUSE_NOW}, AT_ATTEMPT, None),  # (the attempt's own end says which pause)
    ({X.CANCEL, X.RETRY_NOW}, AT_COUNTDOWN, X.CANCEL),
    ({X.RETRY_NOW, X.RETRY, X.PAUSE}, AT_COUNTDOWN, X.RETRY_NOW),
    ({X.RETRY, X.PAUSE}, AT_COUNTDOWN, X.RETRY),
    ({X.PAUSE}, AT_COUNTDOWN, X.PAUSE),
    ({X.PAUSE, X.RETRY}, AT_PERSON, X.RETRY),  # a pause does not keep a stuck subtask waiting longer
    ({X.CANCEL, X.SKIP, X.RETRY}, AT_PERSON, X.CANCEL),
    ({X.SKIP, X.RETRY}, AT_PERSON, X.SKIP),
])
def test_the_one_precedence(asked: set[Trigger], applies: tuple[Trigger, ...], wins: Trigger | None) -> None:
    assert first_request(asked, applies) is wins


def test_precedence_is_cancel_then_skip_then_the_rest_at_every_place() -> None:
    assert PRECEDENCE[:2] == (X.CANCEL, X.SKIP)
    assert set(PRECEDENCE) == PERSON_TRIGGERS - {X.RESUME}
    for applies in (AT_BETWEEN, AT_ATTEMPT, AT_COUNTDOWN, AT_PERSON, AT_APPROVAL):
        assert first_request(set(Trigger), applies) is X.CANCEL
        assert first_request(set(Trigger) - {X.CANCEL}, applies) is X.SKIP


# ---------------------------------------------------------------------- outcomes


def test_attempt_outcome() -> None:
    ok, err, stop = AttemptOutcome(), AttemptOutcome.failed(ValueError("x")), AttemptOutcome.stopped(X.PAUSE)
    assert (ok.succeeded, ok.interrupted) == (True, False)
    assert (err.succeeded, err.interrupted, type(err.error)) == (False, False, ValueError)
    assert (stop.succeeded, stop.interrupted, stop.why) == (False, True, X.PAUSE)
    assert [AttemptOutcome.stopped(x).ending for x in (X.CANCEL, X.SKIP, X.RETRY, X.PAUSE_NOW)] == [
        X.CANCEL, X.SKIP, None, None]
    assert ok.ending is err.ending is None


def _decision(**kw: Any) -> RetryDecision:
    base: dict[str, Any] = dict(retry=True, kind="transient", retry_no=1, max_retries=5, delay_s=2.0,
                                action="retry", phase="coding", prompt_extra="ctx", repair=False,
                                strip_images=False, continue_history=True, final_status=None, reason="r")
    return RetryDecision(**{**base, **kw})


@pytest.mark.parametrize(("decision", "trigger"), [
    (_decision(), X.FAILED_RETRY),
    (_decision(retry=False, action="cancel", final_status="cancelled"), X.CANCEL),
    (_decision(retry=False, action="stuck", final_status="stuck"), X.FAILED_STUCK),
    (_decision(retry=False, action="fail", final_status="failed"), X.FAILED_FINAL),
    (_decision(retry=False, action="fail", final_status=None), X.FAILED_FINAL),
])
def test_the_move_a_failure_makes(decision: RetryDecision, trigger: Trigger) -> None:
    assert failure_trigger(decision) is trigger


# ---------------------------------------------------------------------- the next attempt

UR = prompts.user_retry_context()
PREV = NextAttempt(Reason.RETRY, "retry ctx", False, True, True)


@pytest.mark.parametrize(("cause", "prev", "kw", "expected"), [
    # a run begins
    (Cause.START, None, {}, NextAttempt(Reason.FIRST, "", False)),
    (Cause.START, None, {"started": True}, NextAttempt(Reason.FIRST, "", False)),  # not resuming
    (Cause.START, None, {"resuming": True}, NextAttempt(Reason.FIRST, "", False)),  # not started before
    (Cause.START, None, {"resuming": True, "started": True, "retry_context": "rc"},
     NextAttempt(Reason.RESUME, "rc", True)),
    (Cause.START, None, {"resuming": True, "started": True}, NextAttempt(Reason.RESUME, "", True)),
    (Cause.START, None, {"first_reason": Reason.USER_RETRY}, NextAttempt(Reason.USER_RETRY, UR, False)),
    (Cause.START, None, {"first_reason": Reason.USER_RETRY, "started": True, "resuming": True},
     NextAttempt(Reason.USER_RETRY, UR, True)),
    # a person's retry: counters reset, repairs dropped, history continued once an attempt ran
    (Cause.PERSON_RETRY, PREV, {"attempts": 0}, NextAttempt(Reason.USER_RETRY, UR, False)),
    (Cause.PERSON_RETRY, PREV, {"attempts": 3}, NextAttempt(Reason.USER_RETRY, UR, True)),
    (Cause.PERSON_RETRY, replace(PREV, continue_history=True), {"attempts": 0},
     NextAttempt(Reason.USER_RETRY, UR, True)),
    # resumed after a pause: the same attempt, as a resume
    (Cause.PAUSED, PREV, {"attempts": 0}, NextAttempt(Reason.RESUME, "retry ctx", False, True, True)),
    (Cause.PAUSED, PREV, {"attempts": 2}, NextAttempt(Reason.RESUME, "retry ctx", True, True, True)),
    # a pause stopped the last attempt: continue the conversation, nothing added
    (Cause.INTERRUPTED, PREV, {}, NextAttempt(Reason.RESUME, "", True)),
    # the policy's retry
    (Cause.RETRY, PREV, {"decision": _decision()}, NextAttempt(Reason.RETRY, "ctx", True)),
    (Cause.RETRY, None, {"decision": _decision(action="restart", continue_history=False)},
     NextAttempt(Reason.RESTART, "ctx", False)),
    (Cause.RETRY, None, {"decision": _decision(action="repair", repair=True)},
     NextAttempt(Reason.RETRY, "ctx", True, repair=True)),
    (Cause.RETRY, None, {"decision": _decision(action="strip_images", strip_images=True)},
     NextAttempt(Reason.RETRY, "ctx", True, strip_images=True)),
])
def test_next_attempt(cause: Cause, prev: NextAttempt | None, kw: dict[str, Any], expected: NextAttempt) -> None:
    assert next_attempt(cause, prev, **kw) == expected


def test_a_retry_without_its_decision_is_refused() -> None:
    with pytest.raises(ValueError):
        next_attempt(Cause.RETRY)


def test_next_attempt_is_a_value() -> None:
    na = NextAttempt()
    with pytest.raises(AttributeError):
        na.reason = "x"  # type: ignore[misc]
    assert (na.reason, na.prompt_extra, na.continue_history, na.repair, na.strip_images) == ("first", "", False,
                                                                                               False, False)


# ---------------------------------------------------------------------- the engine goes through it


async def _moves(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, attempts: list[Any], *,
                 pause: bool = False) -> list[tuple[str, str]]:
    """The (state, trigger) pairs a one-subtask run moved through."""
    import asyncio

    import shepherd.core.engine.base as base
    from shepherd.core.engine import Supervisor
    from shepherd.core.store import Store
    from tests.engine_helpers import FAST, GateBackend, make_task, stored, wait_for

    seen: list[tuple[str, str]] = []

    def recording(state: SubtaskState, trigger: Trigger) -> SubtaskState:
        seen.append((str(state), str(trigger)))
        return advance(state, trigger)

    monkeypatch.setattr(base, "advance", recording)
    (tmp_path / "ws").mkdir()
    task = make_task(tmp_path / "ws", [{"id": "t1", "title": "T", "prompt": "p"}])
    store = await Store.open(tmp_path / "s.db")
    backend = GateBackend(attempts)
    sup = Supervisor(store, task, backend=backend, clock=FAST, interactive=not pause)
    try:
        run = asyncio.create_task(sup.run())
        if pause:
            await wait_for(lambda: len(backend.contexts) == 1, store=store)
            await sup.pause()
            await wait_for(lambda: stored(store, sup.session_id, "session.paused"), store=store)
            # resume once the loop waits (a resume during the session.paused commit is lost
            # until the next wake-up: the engine clears its wake after that commit)
            await wait_for(lambda: not sup._wake.is_set())
            await sup.resume()
        assert await run == "done"
    finally:
        await store.close()
    return seen


async def test_a_run_moves_through_the_table(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _moves(tmp_path, monkeypatch, [[("text", "ok")]]) == [("pending", "start"), ("running", "succeeded")]


async def test_a_retried_run_moves_through_the_countdown(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    moves = await _moves(tmp_path, monkeypatch, [[("raise", ConnectionError("reset"))], [("text", "ok")]])
    assert moves == [("pending", "start"), ("running", "failed_retry"), ("waiting_retry", "countdown_done"),
                     ("running", "start"), ("running", "succeeded")]


async def test_a_paused_run_moves_through_paused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    gate = asyncio.Event()
    moves = await _moves(tmp_path, monkeypatch, [[("wait", gate)], [("text", "ok")]], pause=True)
    assert moves == [("pending", "start"), ("running", "pause"), ("paused", "resume"), ("running", "start"),
                     ("running", "succeeded")]
