"""A subtask's states, the triggers that move it, and the one table of legal moves.

The states are ``core.states.SubtaskState`` (DESIGN's Supervision section). A trigger is
either something the engine saw (an attempt started, ended, its countdown ran out) or a
person's control that the engine acted on (the ``Command`` of the same name). The engine
changes a run's state only through :func:`advance`, which raises :class:`IllegalMove` for
a pair the table does not hold (h11's ``_state.py`` style): a state nobody planned for is
a bug to see at once, not a subtask that quietly runs on.

A control does not move a state when it arrives: it is a request (a flag the Supervisor
keeps) that the place owning the current state takes, in one order (:data:`PRECEDENCE`).
Which requests each place honours is written below (``AT_*``).

The module is pure: it imports only the vocabulary.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

from shepherd.core.records import record
from shepherd.core.states import Command, SubtaskState

T = SubtaskState


class Trigger(StrEnum):
    """What moves a subtask from one state to another."""

    # seen by the engine
    START = "start"                    # an attempt starts
    SUCCEEDED = "succeeded"            # the attempt, its check and (planning) its plan passed
    FAILED_RETRY = "failed_retry"      # a failure its policy retries, budget left: a countdown
    FAILED_STUCK = "failed_stuck"      # retryable, but its retries or the budget are spent
    FAILED_FINAL = "failed_final"      # a permanent failure (auth, invalid request or plan...)
    BUDGET_SPENT = "budget_spent"      # no attempt may start (e.g. resumed with it used up)
    COUNTDOWN_DONE = "countdown_done"  # the retry delay is over
    APPROVAL_ASKED = "approval_asked"  # a gated tool call waits for a person's yes
    APPROVAL_ANSWERED = "approval_answered"  # no call of the attempt waits any more
    # a person's controls, as the engine acts on them
    PAUSE = Command.PAUSE.value
    PAUSE_NOW = Command.PAUSE_NOW.value
    RESUME = Command.RESUME.value
    RETRY = Command.RETRY.value        # restart the running subtask, answer a stuck one, rerun a finished one
    RETRY_NOW = Command.RETRY_NOW.value
    SKIP = Command.SKIP.value
    CANCEL = Command.CANCEL.value      # a person's, a lost lease's, or a cancellation that reached classify


X = Trigger
# A person's note never moves a state (it goes into the next prompt): not a trigger.
PERSON_TRIGGERS = frozenset({X.PAUSE, X.PAUSE_NOW, X.RESUME, X.RETRY, X.RETRY_NOW, X.SKIP, X.CANCEL})

# Waiting for a person: nothing moves until one answers. Stuck (retry, skip or cancel), or a
# tool call waiting for a yes (approve or deny; or cancel, skip, retry, pause now).
WAITING_FOR_PERSON = frozenset({T.STUCK, T.WAITING_APPROVAL})
# Its end is recorded (or being recorded): a person's retry runs it again instead of
# restarting an attempt.
SETTLED = frozenset({T.DONE, T.FAILED, T.STUCK, T.SKIPPED, T.CANCELLED})

_BETWEEN = {  # pending, or running between two attempts
    X.START: T.RUNNING,
    X.PAUSE: T.PAUSED, X.PAUSE_NOW: T.PAUSED,
    X.RETRY: T.RUNNING,  # a person's retry: the next attempt starts over (counters reset)
    X.SKIP: T.SKIPPED, X.CANCEL: T.CANCELLED,
    X.BUDGET_SPENT: T.STUCK,
}
_ENDED = {X.RETRY: T.PENDING}  # finished: a person's retry runs it again (a new SubtaskRun, pending)

TABLE: dict[tuple[SubtaskState, Trigger], SubtaskState] = {
    **{(T.PENDING, x): s for x, s in _BETWEEN.items()},
    # resumed while it waited for a person (its record ends stuck or failed): it still does
    (T.PENDING, X.FAILED_STUCK): T.STUCK,
    (T.PENDING, X.FAILED_FINAL): T.FAILED,

    **{(T.RUNNING, x): s for x, s in _BETWEEN.items()},  # START: the next attempt
    (T.RUNNING, X.SUCCEEDED): T.DONE,
    (T.RUNNING, X.FAILED_RETRY): T.WAITING_RETRY,
    (T.RUNNING, X.FAILED_STUCK): T.STUCK,
    (T.RUNNING, X.FAILED_FINAL): T.FAILED,

    (T.RUNNING, X.APPROVAL_ASKED): T.WAITING_APPROVAL,

    # a tool call waits for a person's yes, inside the attempt (no attempt ends, no retry)
    (T.WAITING_APPROVAL, X.APPROVAL_ASKED): T.WAITING_APPROVAL,  # a second call of the turn
    (T.WAITING_APPROVAL, X.APPROVAL_ANSWERED): T.RUNNING,
    (T.WAITING_APPROVAL, X.CANCEL): T.CANCELLED,
    (T.WAITING_APPROVAL, X.SKIP): T.SKIPPED,
    (T.WAITING_APPROVAL, X.PAUSE_NOW): T.PAUSED,  # the call stays awaiting: asked again on resume
    (T.WAITING_APPROVAL, X.RETRY): T.RUNNING,     # a person's restart (the call is closed)

    (T.WAITING_RETRY, X.COUNTDOWN_DONE): T.RUNNING,
    (T.WAITING_RETRY, X.RETRY_NOW): T.RUNNING,
    (T.WAITING_RETRY, X.RETRY): T.RUNNING,      # starts over instead of the scheduled retry
    (T.WAITING_RETRY, X.PAUSE): T.PAUSED,       # the wait ends; resume starts the retry at once
    (T.WAITING_RETRY, X.PAUSE_NOW): T.PAUSED,
    (T.WAITING_RETRY, X.SKIP): T.SKIPPED,
    (T.WAITING_RETRY, X.CANCEL): T.CANCELLED,

    (T.PAUSED, X.RESUME): T.RUNNING,
    (T.PAUSED, X.PAUSE): T.PAUSED,              # a pause while paused changes nothing
    (T.PAUSED, X.PAUSE_NOW): T.PAUSED,
    (T.PAUSED, X.SKIP): T.SKIPPED,
    (T.PAUSED, X.CANCEL): T.CANCELLED,

    # waiting for a person, who answers
    (T.STUCK, X.RETRY): T.RUNNING,              # counters reset, the history continued
    (T.STUCK, X.SKIP): T.SKIPPED,
    (T.STUCK, X.CANCEL): T.CANCELLED,           # the session ends cancelled (its record keeps it stuck)

    **{(s, x): t for s in (T.DONE, T.FAILED, T.SKIPPED, T.CANCELLED) for x, t in _ENDED.items()},
    # INTERRUPTED is the store's recovery's (its runner died): no run moves into or out of
    # it; a resume starts a new run of the subtask, pending.
}


class IllegalMove(RuntimeError):
    """A trigger the table has no move for in that state: an engine bug."""

    def __init__(self, state: SubtaskState, trigger: Trigger) -> None:
        super().__init__(f"no move from {state!s} on {trigger!s}")
        self.state, self.trigger = state, trigger


def advance(state: SubtaskState, trigger: Trigger) -> SubtaskState:
    """The state ``trigger`` moves ``state`` to; raises IllegalMove if it may not."""
    try:
        return TABLE[(state, trigger)]
    except KeyError:
        raise IllegalMove(state, trigger) from None


# ---------------------------------------------------------------------- person's requests

ENDING = frozenset({X.CANCEL, X.SKIP})  # a person's requests that end the subtask
PAUSING = frozenset({X.PAUSE, X.PAUSE_NOW})

# When several requests are outstanding, the first of these wins: a cancel ends everything,
# a skip ends the subtask, retry_now and a person's retry start an attempt, a pause waits.
PRECEDENCE: tuple[Trigger, ...] = (X.CANCEL, X.SKIP, X.RETRY_NOW, X.RETRY, X.PAUSE_NOW, X.PAUSE)

# The requests each place takes (every other one waits for the place that takes it):
AT_BETWEEN = (X.CANCEL, X.SKIP, X.PAUSE_NOW, X.PAUSE)    # before an attempt (pending, running, paused);
#                                               a person's retry is taken right after the pause
AT_ATTEMPT = (X.CANCEL, X.SKIP, X.RETRY)                 # a stopped attempt or check (else: pause_now)
AT_COUNTDOWN = (X.CANCEL, X.SKIP, X.RETRY_NOW, X.RETRY, X.PAUSE_NOW, X.PAUSE)  # waiting_retry
AT_PERSON = (X.CANCEL, X.SKIP, X.RETRY)                  # stuck, waiting for a person
AT_APPROVAL = (X.CANCEL, X.SKIP, X.RETRY, X.PAUSE_NOW)   # a call waiting for a yes (a safe pause waits
#                                               for the answer: the turn is not over)


def first_request(asked: Collection[Trigger], applies: Collection[Trigger]) -> Trigger | None:
    """The request that wins among ``asked``, of those the place honours (``applies``)."""
    for trigger in PRECEDENCE:
        if trigger in asked and trigger in applies:
            return trigger
    return None


# ---------------------------------------------------------------------- an attempt's end


@record(frozen=True, slots=True)
class AttemptOutcome:
    """How an attempt (or its check) ended: succeeded, failed with an error, or
    interrupted by a person's request (``why``: the trigger it acted on)."""

    error: BaseException | None = None
    why: Trigger | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.why is None

    @property
    def interrupted(self) -> bool:
        return self.why is not None

    @property
    def ending(self) -> Trigger | None:
        """The person's request that ends the subtask (cancel, skip), if that stopped it."""
        return self.why if self.why in ENDING else None

    @classmethod
    def failed(cls, error: BaseException) -> AttemptOutcome:
        return cls(error=error)

    @classmethod
    def stopped(cls, why: Trigger) -> AttemptOutcome:
        return cls(why=why)


SUCCEEDED = AttemptOutcome()

__all__ = [
    "AT_APPROVAL", "AT_ATTEMPT", "AT_BETWEEN", "AT_COUNTDOWN", "AT_PERSON", "AttemptOutcome", "ENDING", "IllegalMove",
    "PAUSING", "PERSON_TRIGGERS", "PRECEDENCE", "SETTLED", "SUCCEEDED", "TABLE", "Trigger", "WAITING_FOR_PERSON",
    "advance", "first_request",
]
