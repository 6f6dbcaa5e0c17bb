"""Supervisor: runs a task's subtasks attempt by attempt, classifies every failure,
retries within bounds, and takes a person's controls — writing every step as an event.

One Supervisor runs one session. It holds the session's lease, polls the commands
table and the workspace's ``.shepherd/PAUSE`` file, and never loops unbounded: every
retry path is capped by the RetryState, and a subtask has a total attempt budget.

This module is the subtask loop: each change of a subtask's state goes through the
table of ``core.engine.states`` (``SubtaskRun.move``), and what the next attempt is comes
from ``core.engine.next_attempt``. Its parts: ``controls`` (a person's requests),
``attempt`` (one attempt and its check), ``countdown`` (a failure and its retry wait).
"""

from __future__ import annotations

import asyncio
import contextlib

from shepherd.core import prompts
from shepherd.core.errors import PlanInvalid
from shepherd.core.events import AttemptStarted, PlanReady, SessionFinished, SessionPaused, SessionResumed, SessionStarted, \
    SubtaskFinished, SubtaskStarted
from shepherd.core.retry import RetryState
from shepherd.core.states import SessionStatus, SubtaskState
from shepherd.core.task import Subtask
from shepherd.core.tools.spawn import protect_runner

from shepherd.core.engine.attempt import Attempts
from shepherd.core.engine.base import LEASE_TTL_S, PLAN_ID, SubtaskRun, held_for_person
from shepherd.core.engine.countdown import Countdown, failure_trigger
from shepherd.core.engine.next_attempt import Cause, NextAttempt, Reason, next_attempt
from shepherd.core.engine.states import AT_BETWEEN, AT_PERSON, ENDING, PAUSING, AttemptOutcome, Trigger
from shepherd.core.engine.worktrees import clean_attempt

S, T = SessionStatus, SubtaskState
BY_PERSON = "by a person"


class Supervisor(Attempts, Countdown):
    """Runs one session. Implements core.control.Controller for in-process controls."""

    # ------------------------------------------------------------------ the run

    async def _still_resumable(self) -> None:
        """A plain resume looks again once it holds the lease: a resume that won the race
        may have run the session to its end meanwhile, and ending it twice would write a
        second session.finished into a finished record."""
        if not self._resuming or self._retry_reason == Reason.USER_RETRY or self._planned_status is None:
            return
        row = await self.store.get_session(self.session_id)
        if row is not None and row.status != self._planned_status and row.status in (S.DONE, S.FAILED, S.CANCELLED):
            from shepherd.core.store import SessionEnded

            await self.store.release_lease(self.session_id)
            raise SessionEnded(f"session {self.session_id} has already ended ({row.status}): nothing to resume")

    async def run(self) -> str:
        """Run the session to its end; returns done | failed | cancelled."""
        await self.store.acquire_lease(self.session_id, ttl_s=LEASE_TTL_S)
        await self._still_resumable()
        protect_runner()  # agents and their tools run below us: /proc/<runner> is not theirs to read
        self.status = S.RUNNING
        self._lease_taken()
        final: str = S.FAILED
        reason = ""
        try:
            self._background = [asyncio.create_task(self._keep_lease(), name=f"lease-{self.session_id}")]
            # a worktree session's worktree before the controls poll, which watches its PAUSE file
            # (the lease is kept meanwhile: a checkout of a huge repository may take a while)
            refused = await (self._reopen_worktree() if self._resuming else self._open_worktree())
            self._background.append(asyncio.create_task(self._poll_controls(), name=f"controls-{self.session_id}"))
            if not self._resuming:
                self._emit_soon(SessionStarted(
                    title=self.task.title, backend=self.task.backend, model=self.task.model,
                    workspace=str(self.task.workspace), task=self._task_record.to_dict(),
                ))
                if refused:
                    reason = refused
                    return S.FAILED
                if self._wt is not None:
                    self._emit_soon(self._worktree_event("created"))
                plan = [{"id": s.id, "title": s.title, "prompt": s.prompt} for s in self.subtasks]
                if self.task.plan:
                    plan = [{"id": PLAN_ID, "title": "Plan the work", "prompt": self.task.plan_prompt}] + plan
                # (confirmed by the first awaited event: nothing acts on the plan before it)
                self._emit_soon(PlanReady(subtasks=plan))
            if refused:
                reason = refused
            else:
                final, reason = await self._run_all()
            self._ending = True  # a retry from here on is refused, not taken and lost
        except asyncio.CancelledError:
            final, reason = S.CANCELLED, "shut down"
            raise
        finally:
            for t in self._background:
                t.cancel()
            for t in self._background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await asyncio.shield(self._end(final, reason))
            self.status = final
        return final

    async def _end(self, final: str, reason: str) -> None:
        """session.finished, then the lease given up, in one commit (the release is queued
        before the writer runs again)."""
        finished = self.store.submit(SessionFinished(session_id=self.session_id, status=final, reason=reason))
        released = self.store.release_lease_soon(self.session_id)
        await self._check_soon()
        await finished
        await released

    async def _run_all(self) -> tuple[str, str]:
        failed = await self._clean_first()  # resume_run(retry_subtask=X, clean=True)
        if failed:
            return S.FAILED, failed
        if self.task.plan and PLAN_ID not in self._done_subtasks:
            status = await self._run_subtask(
                Subtask(id=PLAN_ID, title="Plan the work",
                        prompt=prompts.plan_prompt(self.task.title, self.task.plan_prompt),
                        steps=self.task.plan_steps),
                phase="planning",
            )
            if status != T.DONE:
                return self._final_for(status)
        queue = [s for s in self.subtasks if s.id not in self._done_subtasks]
        while queue or self._retry_requests or self._rerun:
            if self._cancel:
                return S.CANCELLED, "cancelled by a person"
            if self._rerun:  # a clean restore: these run again, in plan order
                again = {q.id for q in queue} | set(self._rerun)
                self._rerun.clear()
                queue = [s for s in self.subtasks if s.id in again]
                continue
            if self._retry_requests:
                sid = self._retry_requests.pop(0)
                sub = next((s for s in self.subtasks if s.id == sid), None)
                if sub is None or sub in queue:
                    continue
                if sid in self._clean_asked:
                    await self._restore_asked(sid)  # queued again (with the later ones) just above
                    continue
                reason = Reason.USER_RETRY
            else:
                sub = queue.pop(0)
                reason = Reason.USER_RETRY if sub.id in self._fresh else self._retry_reason
            status = await self._run_subtask(sub, phase="coding", first_reason=reason)
            if status == T.CANCELLED:
                return S.CANCELLED, "cancelled by a person"
            if status in (T.FAILED, T.STUCK):
                # a permanent failure ends the session at once, interactive or not; a stuck
                # subtask only comes back here headless (interactive, it waits for a person)
                return S.FAILED, f"subtask {sub.id} {status}"
        return S.DONE, ""

    def _final_for(self, status: str) -> tuple[str, str]:
        if status == T.CANCELLED:
            return S.CANCELLED, "cancelled by a person"
        return S.FAILED, f"planning {status}"

    # ------------------------------------------------------------------ one subtask

    async def _run_subtask(self, sub: Subtask, *, phase: str, first_reason: str = Reason.FIRST) -> str:
        run = await self._new_run(sub, phase, first_reason)
        self._current = run
        self._skip.discard(sub.id)
        run.clean = sub.id in self._fresh  # re-run after a clean restore: a fresh conversation
        self._fresh.discard(sub.id)
        nxt = next_attempt(Cause.START, first_reason=first_reason,
                           resuming=self._resuming and sub.id not in self._done_subtasks,
                           started=self._was_started(sub.id), retry_context=run.retry.context_for(phase))
        try:
            self._emit_soon(SubtaskStarted(subtask_id=sub.id, title=sub.title, phase=phase))
            if nxt.reason != Reason.RESUME and self._wt is not None:  # a new run: its restore point
                failed = await self._checkpoint_start(run)
                if failed:
                    answer = await self._settle(run, Trigger.FAILED_STUCK, failed)
                    if answer is not None:
                        return answer
                    nxt = next_attempt(Cause.PERSON_RETRY, nxt, attempts=run.attempt)
            if run.held is not None and nxt.reason == Reason.RESUME:
                # it was waiting for a person when its runner stopped: it still is
                held, why = run.held
                answer = await self._settle(run, Trigger.FAILED_STUCK if held == T.STUCK else Trigger.FAILED_FINAL,
                                            why)
                if answer is not None:
                    return answer
                nxt = next_attempt(Cause.PERSON_RETRY, nxt, attempts=run.attempt)
            while True:
                stop = await self._between_attempts(run)
                if stop:
                    return stop
                if self._paused:
                    nxt = next_attempt(Cause.PAUSED, nxt, attempts=run.attempt)
                    self._paused = False
                if self._take_restart(run):
                    nxt = next_attempt(Cause.PERSON_RETRY, nxt, attempts=run.attempt)
                    if run.sub.id in self._clean_asked:
                        failed = await self._clean_restart(run)
                        if failed:
                            answer = await self._settle(run, Trigger.FAILED_STUCK, failed)
                            if answer is not None:
                                return answer
                if run.clean:
                    nxt, run.clean = clean_attempt(), False
                spent = run.retry.budget_spent()
                if spent:  # e.g. resumed with its budget used up: no attempt beyond it
                    answer = await self._settle(run, Trigger.BUDGET_SPENT, spent)
                    if answer is not None:
                        return answer
                    nxt = next_attempt(Cause.PERSON_RETRY, nxt, attempts=run.attempt)
                    continue
                outcome = await self._one_attempt(run, nxt)
                if outcome.ending is not None:
                    return await self._end_subtask(run, outcome.ending, BY_PERSON)
                if run.restart and outcome.error is None:
                    continue  # a person restarts it: whatever this attempt did is superseded
                if outcome.succeeded:  # the attempt succeeded: run the check, if any
                    outcome = self._later_retry(run, await self._check(run))
                    if run.restart:
                        continue
                    if outcome.ending is not None:  # a person stopped the check
                        return await self._end_subtask(run, outcome.ending, BY_PERSON)
                if outcome.interrupted:  # paused: the next attempt continues the conversation
                    if outcome.why is not None and outcome.why in PAUSING:  # (else a retry a skip undid)
                        run.move(outcome.why)
                    nxt = next_attempt(Cause.INTERRUPTED)
                    continue
                if outcome.succeeded and phase == "planning":
                    outcome = await self._accept_plan(run)
                if outcome.succeeded:
                    run.retry.on_success()
                    return await self._end_subtask(run, Trigger.SUCCEEDED, "")
                assert outcome.error is not None
                decision = await self._on_error(run, outcome.error)
                trigger = failure_trigger(decision)
                if trigger is Trigger.FAILED_RETRY:
                    run.move(trigger)
                    waited = await self._countdown(run, decision)
                    if waited in ENDING:
                        return await self._end_subtask(run, waited, BY_PERSON)
                    if waited is not Trigger.RETRY:  # (a person's retry starts it over instead)
                        nxt = next_attempt(Cause.RETRY, decision=decision)
                    continue
                if trigger is Trigger.CANCEL:
                    return await self._end_subtask(run, trigger, decision.reason)
                answer = await self._settle(run, trigger, decision.reason)
                if answer is not None:
                    return answer
                nxt = next_attempt(Cause.PERSON_RETRY, nxt, attempts=run.attempt)
        finally:
            self._current = None

    async def _one_attempt(self, run: SubtaskRun, nxt: NextAttempt) -> AttemptOutcome:
        """Start the next attempt (recorded with the person's notes) and run it."""
        notes = self._take_notes()
        extra = "\n\n".join(x for x in (nxt.prompt_extra, notes) if x)
        run.attempt += 1
        run.retry.on_attempt_started()
        self._started_subtasks.add(run.sub.id)
        run.move(Trigger.START)
        await self._emit(self._sub_event(AttemptStarted(reason=nxt.reason, prompt_extra=extra), run))
        return self._later_retry(run, await self._attempt(run, nxt, extra))

    async def _new_run(self, sub: Subtask, phase: str, first_reason: str) -> SubtaskRun:
        """A subtask's run continues its stored record: attempt numbers go on from the
        highest one stored (so no call id repeats), and the attempt budget and per-kind
        counters are rebuilt from its events. A crash or a resume refills nothing; only a
        person's retry starts them over."""
        run = SubtaskRun(sub=sub, phase=phase, retry=RetryState(
            self.policies, max_attempts=self.task.max_attempts, max_check_retries=self.task.max_check_retries))
        if self._resuming or sub.id in self._started_subtasks:
            top, history = await self.store.subtask_history(self.session_id, sub.id)
        else:  # a session this runner began, and a subtask it has not started: nothing stored
            top, history = 0, []
        run.attempt = top
        run.retry.restore(history)
        if first_reason == Reason.USER_RETRY:
            run.retry.reset()
        else:
            run.held = held_for_person(history)
        return run

    @staticmethod
    def _later_retry(run: SubtaskRun, outcome: AttemptOutcome) -> AttemptOutcome:
        """A skip that stopped the attempt, followed by a person's retry before it was
        acted on: the retry wins (skip() clears a retry it follows)."""
        if outcome.why is Trigger.SKIP and run.restart:
            return AttemptOutcome.stopped(Trigger.RETRY)
        return outcome

    def _was_started(self, sid: str) -> bool:
        return sid in self._started_subtasks

    # ------------------------------------------------------------------ ends and waits

    async def _end_subtask(self, run: SubtaskRun, trigger: Trigger, reason: str) -> str:
        """Move a subtask to its end and record it, committed before anything else
        happens: a done subtask a crash forgot would run (and spend) again on resume.
        Returns its final status."""
        status = run.move(trigger)  # settled from here: a retry runs it again, it cannot restart it
        if status in (T.DONE, T.SKIPPED, T.CANCELLED):
            await self._close_left_awaiting(run)  # never approved, never asked again
        if status == T.DONE and run.final_error is None:
            run.final_error = await self._checkpoint_done(run)  # committed before subtask.finished
        finished = SubtaskFinished(session_id=self.session_id, subtask_id=run.sub.id, attempt=run.attempt or None,
                                   status=status, reason=reason)
        error, run.final_error = run.final_error, None
        if status is T.DONE and error is None:
            # Committed with, and confirmed by, the next awaited event (the next subtask's
            # attempt.started, or session.finished; lazy until then, so one commit, not
            # two): no agent work runs before either, so a crash cannot spend on it again,
            # and the run does not idle for the round trip.
            self._soon.append(self.store.submit(finished, lazy=True))
        else:
            await self._check_soon()
            await (self.store.append_together(error, finished) if error is not None else self.store.append(finished))
        if status in (T.DONE, T.SKIPPED):
            self._done_subtasks.add(run.sub.id)
        return status

    async def _settle(self, run: SubtaskRun, trigger: Trigger, reason: str) -> str | None:
        """Record that a subtask ended (failed or stuck); returns its final status, or None
        when a person retried it (the caller goes on with a user_retry attempt). Only a stuck
        subtask of an interactive session waits for a person; a permanent failure (auth,
        invalid request...) is final at once, so the session ends instead of hanging."""
        status = await self._end_subtask(run, trigger, reason)
        if status != T.STUCK or not self.interactive:
            return status
        answer = await self._wait_for_person(run)
        if answer is not None:
            return answer
        run.restart = False
        run.retry.reset()
        await self._emit(SubtaskStarted(subtask_id=run.sub.id, title=run.sub.title, phase=run.phase))
        if run.sub.id in self._clean_asked:
            failed = await self._clean_restart(run)
            if failed:
                return await self._settle(run, Trigger.FAILED_STUCK, failed)
        return None

    async def _between_attempts(self, run: SubtaskRun) -> str | None:
        """Honour cancel/skip/pause before an attempt starts; returns a final status or None."""
        while True:
            # Cleared before the requests are read, so one that arrives while this loop
            # writes (session.paused below) finds the event set and is read next time round.
            self._wake.clear()
            taken = self._take_request(run, AT_BETWEEN)
            if taken is not None and taken in ENDING:
                return await self._end_subtask(run, taken, BY_PERSON)
            if taken is None:  # not paused (any more)
                if self._paused:
                    await self._emit(SessionResumed(reason=f"resumed by {self._resume_source or 'a person'}"))
                if run.state is T.PAUSED:
                    run.move(Trigger.RESUME)
                return None
            if run.state is not T.PAUSED:
                run.move(taken)
            if not self._paused:
                self._paused = True
                await self._emit(SessionPaused(reason=f"paused by {self._pause_source or 'a person'}"))
            await self._wake.wait()

    async def _wait_for_person(self, run: SubtaskRun) -> str | None:
        """A stuck subtask in an interactive session waits for retry/skip/cancel; returns
        its final status, or None when a person retried it."""
        self._retry_requests = [s for s in self._retry_requests if s != run.sub.id]
        while True:
            self._wake.clear()  # before reading the requests (see _between_attempts)
            taken = self._take_request(run, AT_PERSON, retry=run.sub.id in self._retry_requests)
            if taken is Trigger.CANCEL:  # the session ends cancelled; nothing more is recorded of it
                return run.move(taken)
            if taken is Trigger.SKIP:
                return await self._end_subtask(run, taken, BY_PERSON)
            if taken is Trigger.RETRY:
                self._retry_requests.remove(run.sub.id)
                run.move(taken)
                return None
            await self._wake.wait()

    async def _accept_plan(self, run: SubtaskRun) -> AttemptOutcome:
        try:
            planned = prompts.parse_plan(run.last_text)
        except ValueError as e:
            return AttemptOutcome.failed(PlanInvalid(str(e)))
        subs = [Subtask(id=str(p["id"]), title=str(p.get("title") or p["id"]), prompt=str(p["prompt"]))
                for p in planned]
        self.subtasks = subs
        await self._emit(PlanReady(subtasks=[{"id": PLAN_ID, "title": run.sub.title, "prompt": run.sub.prompt}]
                                   + [{"id": s.id, "title": s.title, "prompt": s.prompt} for s in subs]))
        return AttemptOutcome()


__all__ = ["Supervisor"]
