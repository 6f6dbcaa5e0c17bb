"""What the next attempt of a subtask is: one value, decided in one place.

``NextAttempt`` is what an ``attempt.started`` and the backend's ``AttemptContext`` are
made from: why it runs (its stored ``reason``), the context added to its prompt, whether it
continues the conversation, and the two one-shot repairs the retry policy may ask for.
:func:`next_attempt` derives it from why the last attempt (or the wait) ended, the retry
state's decision and a person's requests. Pure: the caller passes what it needs.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from shepherd.core import prompts
from shepherd.core.records import record
from shepherd.core.retry import RetryDecision


class Reason(StrEnum):
    """An attempt's ``reason`` (``attempt.started``)."""

    FIRST = "first"            # the subtask's first attempt
    RETRY = "retry"            # the retry policy's, after a countdown
    RESTART = "restart"        # the retry policy's, starting the conversation over
    RESUME = "resume"          # continues after a pause, or after its runner stopped
    USER_RETRY = "user_retry"  # a person asked for it (counters reset)


class Cause(StrEnum):
    """Why a next attempt is being decided."""

    START = "start"              # a run of the subtask begins
    PERSON_RETRY = "person_retry"  # a person's retry: of the running subtask, or the answer to a stuck one
    PAUSED = "paused"            # the session was paused before it (and is resumed now)
    INTERRUPTED = "interrupted"  # a pause stopped the last attempt or its check
    RETRY = "retry"              # the retry policy scheduled it (``decision``)


@record(frozen=True, slots=True)
class NextAttempt:
    reason: str = Reason.FIRST
    prompt_extra: str = ""
    continue_history: bool = False
    repair: bool = False        # repair the transcript first (tool concurrency)
    strip_images: bool = False  # drop images from the history (the request was too large)


def next_attempt(cause: Cause, prev: NextAttempt | None = None, *, attempts: int = 0,
                 decision: RetryDecision | None = None, first_reason: str = Reason.FIRST,
                 resuming: bool = False, started: bool = False, retry_context: str = "") -> NextAttempt:
    """The next attempt, for ``cause``.

    - START: ``first_reason`` (first, or user_retry when a person reruns the subtask);
      ``resuming`` a session whose runner stopped, a subtask it had ``started`` continues
      (reason resume, with the ``retry_context`` of a countdown it stopped in); a person's
      rerun continues the history of a subtask that has one.
    - PERSON_RETRY: reason user_retry with its context; the history continues once an
      attempt (``attempts``: the last attempt's number) ran.
    - PAUSED: as ``prev``, but reason resume, continuing once an attempt ran.
    - INTERRUPTED: reason resume, continuing the conversation, nothing added.
    - RETRY: what ``decision`` says (reason restart when it starts the conversation over).
    """
    prev = prev or NextAttempt()
    if cause is Cause.START:
        reason = Reason.RESUME if resuming and first_reason == Reason.FIRST and started else first_reason
        if reason == Reason.RESUME:  # its runner stopped during a retry countdown: that retry's context
            return NextAttempt(Reason.RESUME, retry_context, True)
        if reason == Reason.USER_RETRY:
            return NextAttempt(Reason.USER_RETRY, prompts.user_retry_context(), started)
        return NextAttempt(reason)
    if cause is Cause.PERSON_RETRY:
        return NextAttempt(Reason.USER_RETRY, prompts.user_retry_context(), prev.continue_history or attempts > 0)
    if cause is Cause.PAUSED:
        return replace(prev, reason=Reason.RESUME, continue_history=prev.continue_history or attempts > 0)
    if cause is Cause.INTERRUPTED:
        return NextAttempt(Reason.RESUME, "", True)
    if cause is Cause.RETRY:
        if decision is None:
            raise ValueError("a retry's next attempt needs its decision")
        return NextAttempt(Reason.RESTART if decision.action == "restart" else Reason.RETRY, decision.prompt_extra,
                           decision.continue_history, decision.repair, decision.strip_images)
    raise ValueError(f"unknown cause {cause!r}")


__all__ = ["Cause", "NextAttempt", "Reason", "next_attempt"]
