"""A failed attempt: its error classified and recorded with the retry decision, and the
retry countdown (waiting_retry), which a person may cut short."""

from __future__ import annotations

import asyncio

from shepherd.core.clock import real_seconds
from shepherd.core.errors import ErrorInfo, classify
from shepherd.core.events import Error, RetryScheduled
from shepherd.core.retry import RetryDecision
from shepherd.core.states import SubtaskState

from shepherd.core.engine.base import SubtaskRun, SupervisorBase, log
from shepherd.core.engine.controls import Controls
from shepherd.core.engine.states import AT_COUNTDOWN, ENDING, Trigger


def failure_trigger(decision: RetryDecision) -> Trigger:
    """The move a failed attempt makes, from its retry decision."""
    if decision.retry:
        return Trigger.FAILED_RETRY
    if decision.action == "cancel":  # a cancellation reached classify: not an error
        return Trigger.CANCEL
    return Trigger.FAILED_STUCK if decision.final_status == SubtaskState.STUCK else Trigger.FAILED_FINAL


class Countdown(Controls, SupervisorBase):
    async def _on_error(self, run: SubtaskRun, err: BaseException) -> RetryDecision:
        info: ErrorInfo = classify(err)
        log.info("attempt %s of %s failed: %s: %s", run.attempt, run.sub.id, info.kind, info.message)
        error = self._sub_event(Error(**info.to_event_fields()), run).with_(session_id=self.session_id)
        decision = run.retry.on_error(info, run.phase)
        if not decision.retry:  # the subtask ends on it: written with its subtask.finished
            run.final_error = error
            return decision
        # the error and its retry are stamped with the instant resume_at counts from (the
        # store's own stamp comes a moment later, more under load; "retry in N s" in the log
        # is resume_at minus ts)
        now = self.clock.now()
        error = error.with_(ts=now)
        retry = self._sub_event(RetryScheduled(
            kind=decision.kind, retry_no=decision.retry_no, max_retries=decision.max_retries,
            # delay_s stays nominal; resume_at is when the countdown really ends (time scale)
            delay_s=decision.delay_s, resume_at=now + real_seconds(self.clock, decision.delay_s),
            action=decision.action, ts=now), run).with_(session_id=self.session_id)
        # one transaction: a runner killed in between must not leave an error whose retry
        # (and so its place in the per-kind count) a resume cannot see, or a final error
        # without the end it caused (the resume would run one attempt more)
        # counting down from here: a "retry now" pressed the moment the countdown shows (its
        # retry.scheduled committed, this task not yet resumed) must not be dropped
        self._counting_down = True
        try:
            await self._check_soon()
            await self.store.append_together(error, retry)
        except BaseException:
            self._retry_now = self._counting_down = False
            raise
        return decision

    async def _countdown(self, run: SubtaskRun, decision: RetryDecision) -> Trigger:
        """Wait out a retry delay (waiting_retry). Returns what ended it, the move made:
        countdown_done or retry_now (running), a pause (paused: resume starts the retry at
        once), a person's retry (running: the attempt starts over instead); a cancel or a
        skip is the caller's to end the subtask with."""
        sleeper = asyncio.ensure_future(self.clock.sleep(decision.delay_s))
        self._counting_down = True
        try:
            while True:
                # look at the controls before every wait: one may have come in just before
                taken = self._take_request(run, AT_COUNTDOWN)
                if taken is None and sleeper.done():
                    taken = Trigger.COUNTDOWN_DONE
                if taken is not None and taken not in ENDING:  # (the caller ends the subtask on those)
                    run.move(taken)
                if taken is not None:
                    return taken
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
        finally:
            sleeper.cancel()
            self._retry_now = self._counting_down = False


__all__ = ["Countdown", "failure_trigger"]
