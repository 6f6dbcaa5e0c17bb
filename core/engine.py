"""Supervisor: runs a task's subtasks attempt by attempt, classifies every failure,
retries within bounds, and takes a person's controls — writing every step as an event.

One Supervisor runs one session. It holds the session's lease, polls the commands
table and the workspace's ``.shepherd/PAUSE`` file, and never loops unbounded: every
retry path is capped by the RetryState, and a subtask has a total attempt budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import prompts
from core.backends.base import AttemptContext, Backend
from core.clock import Clock, RealClock, real_seconds, real_time
from core.errors import CheckFailed, ErrorInfo, PlanInvalid, classify
from core.events import (
    AttemptStarted, Control, Error, Event, Heartbeat, MessageCompleted, PlanReady,
    RetryScheduled, SessionFinished, SessionPaused, SessionResumed, SessionStarted,
    SubtaskFinished, SubtaskStarted, TextDelta, ThinkingDelta, ToolFinished, ToolStarted,
    Usage, new_id, new_session_id,
)
from core.ledger import ToolLedger
from core.retry import RetryDecision, RetryState, policies_for
from core.secrets import held_tail
from core.task import Subtask, Task
from core.tools import READ_ONLY_TOOLS
from core.tools.spawn import protect_runner

log = logging.getLogger("shepherd.engine")

DELTA_WINDOW_S = 0.025  # real seconds a text delta may wait to be merged with the next ones
COMMAND_POLL_S = 0.25  # real seconds between looks at the commands table and PAUSE file
LEASE_TTL_S = 30.0
PLAN_ID = "plan"
# Stream events nothing acts on before the next urgent one (a tool call's start, any
# lifecycle event): the store may hold them briefly to share that one's commit
# (Store.submit(lazy=True)). A tool.started is urgent: a crash while the tool runs must
# find it in the record. Except a read-only tool's (READ_ONLY_TOOLS): it has no effect a
# crash could leave unrecorded, so a turn of reads needs no commit of its own.
LAZY_EVENTS = (TextDelta, ThinkingDelta, MessageCompleted, Usage, ToolFinished)


class Stalled(TimeoutError):
    """The stall watchdog gave up on an attempt that went silent."""


def make_backend(name: str) -> Backend:
    """Backends are imported lazily: importing the SDKs costs seconds."""
    if name == "scripted":
        from core.backends.scripted import ScriptedBackend

        return ScriptedBackend()
    if name == "openai":
        from core.backends.openai_agents import OpenAIAgentsBackend

        return OpenAIAgentsBackend()
    if name == "claude":
        from core.backends.claude import ClaudeBackend

        return ClaudeBackend()
    raise ValueError(f"unknown backend {name!r}")


@dataclass
class _Interrupt:
    """Why the current attempt or wait was cut short by a person."""

    what: str  # pause | pause_now | cancel | skip | retry_now | restart


@dataclass
class _SubtaskRun:
    sub: Subtask
    phase: str
    retry: RetryState
    backend_state: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0  # the last attempt's number: continues the stored record (never restarts at 1)
    last_text: str = ""
    held: tuple[str, str] | None = None  # (status, reason) it was left in waiting for a person
    restart: bool = False  # a person's retry while it runs: restart the attempt now
    settled: bool = False  # its end is recorded (or being): a retry now runs it again instead
    final_error: Event | None = None  # the error it ends on, stored with its subtask.finished


def _held_for_person(history: list[Event]) -> tuple[str, str] | None:
    """(status, reason) when a subtask's record ends stuck or failed (no attempt since):
    a resumed runner must not quietly start it again; only a person's retry does."""
    for ev in reversed(history):
        if isinstance(ev, SubtaskFinished):
            return (ev.status, ev.reason) if ev.status in ("stuck", "failed") else None
        if isinstance(ev, (AttemptStarted, SubtaskStarted)):
            return None
    return None


class Supervisor:
    """Runs one session. Implements core.control.Controller for in-process controls."""

    def __init__(
        self,
        store: Any,
        task: Task,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
        session_id: str | None = None,
        interactive: bool = True,
        resume: bool = False,
        done_subtasks: set[str] | None = None,
        started_subtasks: set[str] | None = None,
        planned_status: str | None = None,
    ) -> None:
        self.store = store
        self.task = task
        self.backend = backend or make_backend(task.backend)
        self.clock = clock or RealClock()
        self.session_id = session_id or new_session_id()
        self.interactive = interactive
        self._resuming = resume
        self._planned_status = planned_status  # a resume's: the status it was decided on
        self._done_subtasks = set(done_subtasks or ())
        self._started_subtasks = set(started_subtasks or ())  # resumed: these continue their history
        self.policies = policies_for(task.retry)
        self.status = "pending"
        self.subtasks: list[Subtask] = list(task.subtasks)
        # control state
        self._wake = asyncio.Event()  # set whenever a control needs the main loop's attention
        self.leased = asyncio.Event()  # set once this runner holds the session's lease
        self._pause: str | None = None  # None | "safe" | "now"
        self._paused = False
        self._pause_source = ""
        self._resume_source = ""
        self._pause_file_text: str | None = None
        self._cancel = False
        self._skip: set[str] = set()
        self._retry_now = False
        self._counting_down = False
        self._retry_requests: list[str] = []
        self._ending = False  # the last subtask has ended: nothing more will run
        self._notes: list[str] = []
        self._current: _SubtaskRun | None = None
        self._stop_after_turn: asyncio.Event | None = None
        self._attempt_task: asyncio.Task[Any] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._retry_reason = "first"  # "user_retry" when a person re-runs a finished subtask
        self._unacked: list[asyncio.Future[Any]] = []
        self._soon: list[asyncio.Future[Any]] = []  # see _emit_soon
        self._delta_buf: Event | None = None
        self._delta_parts: list[str] = []
        self._delta_timer: asyncio.TimerHandle | None = None
        self._delta_run: _SubtaskRun | None = None

    # ------------------------------------------------------------------ controls

    async def _control(self, command: str, source: str, text: str = "", subtask_id: str | None = None) -> None:
        await self._emit(Control(command=command, source=source, text=text, subtask_id=subtask_id))

    # Each control changes the state first and then records its event: the change takes
    # effect at once, and the event is queued in the same step, so it is stored first.

    async def pause(self, *, immediate: bool = False, source: str = "tui") -> None:
        self._pause = "now" if immediate else "safe"
        self._pause_source = source
        if self._stop_after_turn is not None:
            self._stop_after_turn.set()
        if immediate and self._attempt_task is not None:
            self._attempt_task.cancel()
        self._wake.set()
        await self._control("pause", source, "immediate" if immediate else "")

    async def resume(self, *, source: str = "tui") -> None:
        self._pause = None
        self._resume_source = source
        self._wake.set()
        await self._control("resume", source)

    async def retry_now(self, *, source: str = "tui") -> None:
        if self._counting_down:  # outside a countdown there is nothing to skip
            self._retry_now = True
            self._wake.set()
        await self._control("retry_now", source)

    async def retry(self, subtask_id: str | None = None, *, source: str = "tui") -> None:
        sid = subtask_id or (self._current.sub.id if self._current else None)
        refused = self._route_retry(sid)
        if refused:
            log.info("retry of %s refused: %s", sid, refused)
        self._wake.set()
        await self._control("retry", source, f"refused: {refused}" if refused else "", subtask_id=sid)

    def _route_retry(self, sid: str | None) -> str:
        """Where a person's retry goes; returns why it is refused ("" when taken).

        The running subtask restarts its current attempt now (the attempt is cancelled, the
        next one has reason user_retry and fresh counters): it never runs a second time
        after it succeeded. A finished one (done, skipped, or stuck waiting for a person)
        runs again. One that has not run yet, or an unknown id, is refused."""
        if sid is None:
            return "no subtask is running"
        if self._ending:
            return "the session has ended"
        run = self._current
        if run is not None and run.sub.id == sid and not run.settled:
            run.restart = True
            self._skip.discard(sid)  # a skip not acted on yet: the later control wins
            if self._attempt_task is not None:
                self._attempt_task.cancel()
            return ""
        if run is not None and run.sub.id == sid:  # stuck, waiting for a person
            self._retry_requests.append(sid)
            return ""
        if sid not in {s.id for s in self.subtasks}:
            return f"no subtask {sid!r} to run again" if sid != PLAN_ID else "the plan cannot be run again"
        if sid not in self._done_subtasks:
            return f"subtask {sid} has not run yet"
        self._retry_requests.append(sid)
        return ""

    async def skip(self, subtask_id: str | None = None, *, source: str = "tui") -> None:
        sid = subtask_id or (self._current.sub.id if self._current else None)
        if sid is not None:
            self._skip.add(sid)
            if self._current and self._current.sub.id == sid:
                self._current.restart = False  # a retry not acted on yet: the later control wins
                if self._attempt_task is not None:
                    self._attempt_task.cancel()
            self._wake.set()
        await self._control("skip", source, subtask_id=sid)

    async def cancel(self, *, source: str = "tui") -> None:
        self._cancel = True
        if self._attempt_task is not None:
            self._attempt_task.cancel()
        self._wake.set()
        await self._control("cancel", source)

    async def note(self, text: str, *, source: str = "tui") -> None:
        if text.strip():
            self._notes.append(text.strip())
        await self._control("note", source, text)

    # ------------------------------------------------------------------ plumbing

    async def _emit(self, ev: Event, *, wait: bool = True) -> Event | None:
        ev = ev.with_(session_id=self.session_id)
        if wait:
            committed = self.store.submit(ev)
            await self._check_soon()
            return await committed
        # stream events are not waited for one by one (the SDK does not wait for us
        # either); the writer commits them within 50 ms and _ack() checks them in bulk
        self._unacked.append(self.store.submit(ev))
        return None

    def _emit_soon(self, ev: Event) -> None:
        """Submit a lifecycle event whose commit the next awaited one confirms (the
        writer commits in order): one wait for two events, and its failure still stops
        the run at the next step. Only for an event that nothing acts on before then (so
        it is lazy: the store holds it for the next one's commit)."""
        self._soon.append(self.store.submit(ev.with_(session_id=self.session_id), lazy=True))

    async def _check_soon(self) -> None:
        soon, self._soon = self._soon, []
        if soon:
            self.store.urge()  # (they are lazy: we wait for them now)
        for future in soon:
            await future

    async def _ack(self) -> None:
        """Wait until every submitted stream event is committed; surface a write failure."""
        pending, self._unacked = self._unacked, []
        if pending:
            self.store.urge()  # lazy ones among them: commit them now, we wait for them
            for result in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    raise result

    def _sub_event(self, ev: Event, run: _SubtaskRun) -> Event:
        return ev.with_(subtask_id=run.sub.id, attempt=run.attempt or None)

    async def _poll_controls(self) -> None:
        """Cross-process commands and the PAUSE file, polled in real time."""
        pause_file = Path(self.task.workspace) / ".shepherd" / "PAUSE"
        handlers: dict[str, Callable[..., Any]] = {
            "pause": lambda c: self.pause(source=c.source),
            "pause_now": lambda c: self.pause(immediate=True, source=c.source),
            "resume": lambda c: self.resume(source=c.source),
            "retry_now": lambda c: self.retry_now(source=c.source),
            "retry": lambda c: self.retry(c.subtask_id, source=c.source),
            "skip": lambda c: self.skip(c.subtask_id, source=c.source),
            "cancel": lambda c: self.cancel(source=c.source),
            "note": lambda c: self.note(c.text, source=c.source),
        }
        while True:
            try:
                for cmd in await self.store.take_commands(self.session_id):
                    handler = handlers.get(cmd.command)
                    if handler is not None:
                        await handler(cmd)
                if pause_file.exists() and self._pause_file_text is None:
                    try:
                        self._pause_file_text = pause_file.read_text(errors="replace").strip()
                    except OSError:
                        self._pause_file_text = ""
                    await self.pause(source="pause_file")
                elif not pause_file.exists() and self._pause_file_text is not None:
                    text, self._pause_file_text = self._pause_file_text, None
                    if text:
                        self._notes.append(text)
                    if self._pause and self._pause_source == "pause_file":
                        await self.resume(source="pause_file")
            except asyncio.CancelledError:
                raise
            except Exception:  # a poll failure must never kill the run
                log.exception("control poll failed")
            await asyncio.sleep(COMMAND_POLL_S)

    async def _keep_lease(self) -> None:
        from core.store import LeaseHeld

        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            try:
                await self.store.refresh_lease(self.session_id, ttl_s=LEASE_TTL_S)
            except LeaseHeld as e:  # another runner took the session over: stop writing it
                log.error("lost the lease of %s to %s; stopping", self.session_id, e.owner)
                await self.cancel(source="lease")
                return
            except Exception:  # a busy database must not kill the run; the next refresh retries
                log.exception("lease refresh failed")

    # ------------------------------------------------------------------ the run

    async def _still_resumable(self) -> None:
        """A plain resume looks again once it holds the lease: a resume that won the race
        may have run the session to its end meanwhile, and ending it twice would write a
        second session.finished into a finished record."""
        if not self._resuming or self._retry_reason == "user_retry" or self._planned_status is None:
            return
        row = await self.store.get_session(self.session_id)
        if row is not None and row.status != self._planned_status and row.status in ("done", "failed", "cancelled"):
            from core.store import SessionEnded

            await self.store.release_lease(self.session_id)
            raise SessionEnded(f"session {self.session_id} has already ended ({row.status}): nothing to resume")

    async def run(self) -> str:
        """Run the session to its end; returns done | failed | cancelled."""
        await self.store.acquire_lease(self.session_id, ttl_s=LEASE_TTL_S)
        await self._still_resumable()
        protect_runner()  # agents and their tools run below us: /proc/<runner> is not theirs to read
        self.status = "running"
        self.leased.set()
        self._background = [
            asyncio.create_task(self._poll_controls(), name=f"controls-{self.session_id}"),
            asyncio.create_task(self._keep_lease(), name=f"lease-{self.session_id}"),
        ]
        final = "failed"
        reason = ""
        try:
            if not self._resuming:
                self._emit_soon(SessionStarted(
                    title=self.task.title, backend=self.task.backend, model=self.task.model,
                    workspace=str(self.task.workspace), task=self.task.to_dict(),
                ))
                plan = [{"id": s.id, "title": s.title, "prompt": s.prompt} for s in self.subtasks]
                if self.task.plan:
                    plan = [{"id": PLAN_ID, "title": "Plan the work", "prompt": self.task.plan_prompt}] + plan
                await self._emit(PlanReady(subtasks=plan))
            final, reason = await self._run_all()
            self._ending = True  # a retry from here on is refused, not taken and lost
        except asyncio.CancelledError:
            final, reason = "cancelled", "shut down"
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
        if self.task.plan and PLAN_ID not in self._done_subtasks:
            status = await self._run_subtask(
                Subtask(id=PLAN_ID, title="Plan the work",
                        prompt=prompts.plan_prompt(self.task.title, self.task.plan_prompt),
                        steps=self.task.plan_steps),
                phase="planning",
            )
            if status != "done":
                return self._final_for(status)
        queue = [s for s in self.subtasks if s.id not in self._done_subtasks]
        while queue or self._retry_requests:
            if self._cancel:
                return "cancelled", "cancelled by a person"
            if self._retry_requests:
                sid = self._retry_requests.pop(0)
                sub = next((s for s in self.subtasks if s.id == sid), None)
                if sub is None or sub in queue:
                    continue
                reason = "user_retry"
            else:
                sub = queue.pop(0)
                reason = self._retry_reason
            status = await self._run_subtask(sub, phase="coding", first_reason=reason)
            if status == "cancelled":
                return "cancelled", "cancelled by a person"
            if status in ("failed", "stuck"):
                # a permanent failure ends the session at once, interactive or not; a stuck
                # subtask only comes back here headless (interactive, it waits for a person)
                return "failed", f"subtask {sub.id} {status}"
        return "done", ""

    def _final_for(self, status: str) -> tuple[str, str]:
        if status == "cancelled":
            return "cancelled", "cancelled by a person"
        return "failed", f"planning {status}"

    # ------------------------------------------------------------------ one subtask

    async def _run_subtask(self, sub: Subtask, *, phase: str, first_reason: str = "first") -> str:
        run = await self._new_run(sub, phase, first_reason)
        self._current = run
        self._skip.discard(sub.id)
        reason = "resume" if (self._resuming and first_reason == "first" and sub.id not in self._done_subtasks
                              and self._was_started(sub.id)) else first_reason
        continue_history = reason == "resume" or (reason == "user_retry" and self._was_started(sub.id))
        prompt_extra = prompts.user_retry_context() if reason == "user_retry" else ""
        if reason == "resume":  # its runner stopped during a retry countdown: that retry's context
            prompt_extra = run.retry.context_for(phase)
        repair = strip_images = False
        try:
            self._emit_soon(SubtaskStarted(subtask_id=sub.id, title=sub.title, phase=phase))
            if run.held is not None and reason == "resume":
                # it was waiting for a person when its runner stopped: it still is
                answer = await self._settle(run, *run.held)
                if answer is not None:
                    return answer
                reason, prompt_extra, continue_history = "user_retry", prompts.user_retry_context(), True
            while True:
                stop = await self._between_attempts(run)
                if stop:
                    return stop
                if self._paused:
                    reason, continue_history = "resume", continue_history or run.attempt > 0
                    self._paused = False
                if self._take_restart(run):
                    reason, prompt_extra = "user_retry", prompts.user_retry_context()
                    continue_history = continue_history or run.attempt > 0
                    repair = strip_images = False
                spent = run.retry.budget_spent()
                if spent:  # e.g. resumed with its budget used up: no attempt beyond it
                    answer = await self._settle(run, "stuck", spent)
                    if answer is not None:
                        return answer
                    reason, prompt_extra, continue_history = "user_retry", prompts.user_retry_context(), True
                    continue
                notes = self._take_notes()
                extra = "\n\n".join(x for x in (prompt_extra, notes) if x)
                run.attempt += 1
                run.retry.on_attempt_started()
                self._started_subtasks.add(sub.id)
                await self._emit(self._sub_event(AttemptStarted(reason=reason, prompt_extra=extra), run))
                outcome = self._later_retry(run, await self._attempt(run, extra, continue_history, repair,
                                                                    strip_images, reason))
                repair = strip_images = False
                if isinstance(outcome, _Interrupt) and outcome.what in ("cancel", "skip"):
                    return await self._finish_subtask(run, "cancelled" if outcome.what == "cancel" else "skipped",
                                                      "by a person")
                if run.restart and not isinstance(outcome, BaseException):
                    continue  # a person restarts it: whatever this attempt did is superseded
                if isinstance(outcome, _Interrupt):
                    # paused: the next attempt continues the conversation
                    prompt_extra, continue_history, reason = "", True, "resume"
                    continue
                if outcome is None:  # the attempt succeeded: run the check, if any
                    outcome = self._later_retry(run, await self._check(run))
                    if run.restart:
                        continue
                    if isinstance(outcome, _Interrupt):  # a person stopped the check
                        if outcome.what in ("cancel", "skip"):
                            return await self._finish_subtask(
                                run, "cancelled" if outcome.what == "cancel" else "skipped", "by a person")
                        prompt_extra, continue_history, reason = "", True, "resume"  # paused at once
                        continue
                    if outcome is None:
                        if phase == "planning":
                            outcome = await self._accept_plan(run)
                        if outcome is None:
                            run.retry.on_success()
                            run.settled = True
                            return await self._finish_subtask(run, "done", "")
                decision = await self._on_error(run, outcome)
                if decision.retry:
                    waited = await self._countdown(run, decision)
                    if waited is not None:
                        if waited.what in ("cancel", "skip"):
                            return await self._finish_subtask(
                                run, "cancelled" if waited.what == "cancel" else "skipped", "by a person")
                        if waited.what == "restart":
                            continue
                    reason = "restart" if decision.action == "restart" else "retry"
                    prompt_extra = decision.prompt_extra
                    continue_history = decision.continue_history
                    repair, strip_images = decision.repair, decision.strip_images
                    continue
                if decision.action == "cancel":  # a cancellation reached classify: not an error
                    return await self._finish_subtask(run, "cancelled", decision.reason)
                answer = await self._settle(run, decision.final_status or "failed", decision.reason)
                if answer is not None:
                    return answer
                reason, prompt_extra, continue_history = "user_retry", prompts.user_retry_context(), run.attempt > 0
        finally:
            self._current = None

    async def _new_run(self, sub: Subtask, phase: str, first_reason: str) -> _SubtaskRun:
        """A subtask's run continues its stored record: attempt numbers go on from the
        highest one stored (so no call id repeats), and the attempt budget and per-kind
        counters are rebuilt from its events. A crash or a resume refills nothing; only a
        person's retry starts them over."""
        run = _SubtaskRun(sub=sub, phase=phase, retry=RetryState(
            self.policies, max_attempts=self.task.max_attempts, max_check_retries=self.task.max_check_retries))
        if self._resuming or sub.id in self._started_subtasks:
            top, history = await self.store.subtask_history(self.session_id, sub.id)
        else:  # a session this runner began, and a subtask it has not started: nothing stored
            top, history = 0, []
        run.attempt = top
        run.retry.restore(history)
        if first_reason == "user_retry":
            run.retry.reset()
        else:
            run.held = _held_for_person(history)
        return run

    @staticmethod
    def _later_retry(run: _SubtaskRun, outcome: Any) -> Any:
        """A skip that stopped the attempt, followed by a person's retry before it was
        acted on: the retry wins (skip() clears a retry it follows)."""
        if isinstance(outcome, _Interrupt) and outcome.what == "skip" and run.restart:
            return _Interrupt("restart")
        return outcome

    def _take_restart(self, run: _SubtaskRun) -> bool:
        """A person's retry of the running subtask: the next attempt starts over (counters reset)."""
        if not run.restart:
            return False
        run.restart = False
        run.retry.reset()
        return True

    async def _settle(self, run: _SubtaskRun, status: str, reason: str) -> str | None:
        """Record that a subtask ended ``status``; returns its final status, or None when a
        person retried it (the caller goes on with a user_retry attempt). Only a stuck
        subtask of an interactive session waits for a person; a permanent failure (auth,
        invalid request...) is final at once, so the session ends instead of hanging."""
        run.settled = True
        await self._finish_subtask(run, status, reason)
        if status != "stuck" or not self.interactive:
            return status
        answer = await self._wait_for_person(run)
        if answer != "retry":
            return answer
        run.settled = False
        run.restart = False
        run.retry.reset()
        await self._emit(SubtaskStarted(subtask_id=run.sub.id, title=run.sub.title, phase=run.phase))
        return None

    def _was_started(self, sid: str) -> bool:
        return sid in self._started_subtasks

    def _take_notes(self) -> str:
        if not self._notes:
            return ""
        notes, self._notes = self._notes, []
        return prompts.note_context(notes)

    async def _finish_subtask(self, run: _SubtaskRun, status: str, reason: str) -> str:
        """Record a subtask's end, committed before anything else happens: a done subtask
        a crash forgot would run (and spend) again on resume."""
        run.settled = True  # from here a retry runs it again: it cannot restart what has ended
        finished = SubtaskFinished(session_id=self.session_id, subtask_id=run.sub.id, attempt=run.attempt or None,
                                   status=status, reason=reason)
        error, run.final_error = run.final_error, None
        await self._check_soon()
        await (self.store.append_together(error, finished) if error is not None else self.store.append(finished))
        if status in ("done", "skipped"):
            self._done_subtasks.add(run.sub.id)
        return status

    async def _between_attempts(self, run: _SubtaskRun) -> str | None:
        """Honour cancel/skip/pause before an attempt starts; returns a final status or None."""
        while True:
            if self._cancel:
                return await self._finish_subtask(run, "cancelled", "by a person")
            if run.sub.id in self._skip:
                self._skip.discard(run.sub.id)
                return await self._finish_subtask(run, "skipped", "by a person")
            if self._pause is None:
                if self._paused:
                    await self._emit(SessionResumed(reason=f"resumed by {self._resume_source or 'a person'}"))
                return None
            if not self._paused:
                self._paused = True
                await self._emit(SessionPaused(reason=f"paused by {self._pause_source or 'a person'}"))
            self._wake.clear()
            await self._wake.wait()

    async def _wait_for_person(self, run: _SubtaskRun) -> str:
        """A stuck/failed subtask in an interactive session waits for retry/skip/cancel."""
        self._retry_requests = [s for s in self._retry_requests if s != run.sub.id]
        while True:
            if self._cancel:
                return "cancelled"
            if run.sub.id in self._skip:
                self._skip.discard(run.sub.id)
                await self._finish_subtask(run, "skipped", "by a person")
                return "skipped"
            if run.sub.id in self._retry_requests:
                self._retry_requests.remove(run.sub.id)
                return "retry"
            self._wake.clear()
            await self._wake.wait()

    # ------------------------------------------------------------------ one attempt

    async def _attempt(self, run: _SubtaskRun, extra: str, continue_history: bool, repair: bool,
                       strip_images: bool, reason: str) -> BaseException | _Interrupt | None:
        """Run one attempt; None on success, the exception on failure, or why a person stopped it."""
        self._stop_after_turn = asyncio.Event()
        if self._pause:
            self._stop_after_turn.set()
        ctx = AttemptContext(
            session_id=self.session_id, task=self.task, subtask=run.sub, attempt=run.attempt,
            reason=reason, prompt=run.sub.prompt, prompt_extra=extra,
            continue_history=continue_history, workspace=Path(self.task.workspace),
            db_path=getattr(self.store, "path", None), store=self.store, phase=run.phase, repair=repair,
            strip_images=strip_images, clock=self.clock, stop_after_turn=self._stop_after_turn,
            state=run.backend_state,
        )
        if self._cancel or run.sub.id in self._skip or run.restart:  # a control that came in while it was being set up
            self._stop_after_turn = None
            return self._why_interrupted(run)
        ledger = ToolLedger()
        self._attempt_task = asyncio.create_task(self._consume(run, ctx, ledger))
        outcome: BaseException | _Interrupt | None
        try:
            await asyncio.wait({self._attempt_task})
            try:
                self._attempt_task.result()
                outcome = None
            except asyncio.CancelledError:
                outcome = self._why_interrupted(run)
            except Exception as e:  # noqa: BLE001 - every failure is classified
                outcome = e
        except asyncio.CancelledError:  # the supervisor itself is being shut down
            self._attempt_task.cancel()
            with contextlib.suppress(BaseException):
                await self._attempt_task
            raise
        finally:
            self._attempt_task = None
            for fin in ledger.flush(self.clock.monotonic()):
                await self._emit(self._sub_event(fin, run).with_(attempt=fin.attempt or run.attempt), wait=False)
            self._stop_after_turn = None
            await self._ack()
        if outcome is None and ctx.stop_after_turn.is_set():
            # stopped at a safe point for a pause (even one lifted since): not finished
            return _Interrupt("pause")
        if outcome is None and (self._cancel or run.sub.id in self._skip):
            return _Interrupt("cancel" if self._cancel else "skip")
        return outcome

    def _why_interrupted(self, run: _SubtaskRun) -> _Interrupt:
        if self._cancel:
            return _Interrupt("cancel")
        if run.sub.id in self._skip:
            self._skip.discard(run.sub.id)
            return _Interrupt("skip")
        if run.restart:
            return _Interrupt("restart")
        return _Interrupt("pause_now")

    async def _consume(self, run: _SubtaskRun, ctx: AttemptContext, ledger: ToolLedger) -> None:
        """Read the backend's stream. Heartbeats and the stall watchdog run beside the
        read and never cancel a pending ``__anext__`` (a timeout around the read corrupts
        SDK streams and drops in-flight tool results); only a real stall ends the attempt."""
        agen: AsyncIterator[Event] = self.backend.attempt(ctx)
        progress = [0]
        stalled: list[str] = []
        watchdog = asyncio.ensure_future(self._watch(run, ledger, progress, stalled, asyncio.current_task()))
        try:
            handle = self._handle
            async for ev in agen:
                progress[0] += 1
                handle(run, ev, ledger)
        except asyncio.CancelledError:
            if stalled:
                raise Stalled(stalled[0]) from None
            raise
        finally:
            watchdog.cancel()
            self._flush_deltas()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(agen.aclose(), timeout=10)  # type: ignore[attr-defined]

    async def _watch(self, run: _SubtaskRun, ledger: ToolLedger, progress: list[int], stalled: list[str],
                     consumer: asyncio.Task[Any] | None) -> None:
        """Emit a heartbeat for every heartbeat period without events; flag and end an
        attempt idle longer than stall_s (four times that while a tool call is open)."""
        clock = real_time(self.clock)  # liveness of real processes: not time-scaled
        quiet, seen = 0, progress[0]
        while True:
            await clock.sleep(self.task.heartbeat_s)
            if progress[0] != seen:
                quiet, seen = 0, progress[0]
                continue
            quiet += 1
            idle = quiet * self.task.heartbeat_s
            is_stalled = idle >= self.task.stall_s * (4 if ledger.has_open() else 1)
            await self._emit(self._sub_event(
                Heartbeat(idle_s=idle, open_calls=len(ledger.open_calls), stalled=is_stalled), run))
            if is_stalled:
                stalled.append(f"stalled: no event for {idle:.0f} s")
                if consumer is not None:
                    consumer.cancel()
                return

    def _buffer_delta(self, ev: Event, run: _SubtaskRun) -> None:
        """Coalesce consecutive deltas of one message for up to DELTA_WINDOW_S: the text
        is the same, the database and every live view get a fraction of the rows."""
        buf = self._delta_buf
        if buf is not None and type(buf) is type(ev) and buf.message_id == ev.message_id:  # type: ignore[attr-defined]
            self._delta_parts.append(ev.text)  # type: ignore[attr-defined]
            if self._delta_timer is None:  # only a held-back tail was waiting
                self._delta_timer = asyncio.get_running_loop().call_later(DELTA_WINDOW_S, self._flush_window)
            return
        self._flush_deltas()
        self._delta_buf, self._delta_parts, self._delta_run = ev, [ev.text], run  # type: ignore[attr-defined]
        self._delta_timer = asyncio.get_running_loop().call_later(DELTA_WINDOW_S, self._flush_window)

    def _flush_window(self) -> None:
        """The window is over but the message goes on: store what streamed, except an
        ending that may be the start of a secret (core.secrets.held_tail). The store scrubs
        each row alone, so a value split over two rows would be stored in pieces."""
        self._delta_timer = None
        text = "".join(self._delta_parts)
        hold = held_tail(text)
        if not hold:
            self._flush_deltas()
        elif hold < len(text):
            buf, run = self._delta_buf, self._delta_run
            self._delta_parts = [text[:-hold]]
            self._flush_deltas()
            self._delta_buf, self._delta_parts, self._delta_run = buf, [text[-hold:]], run
        # else: all of it is held until the next piece or the end of the message

    def _flush_deltas(self) -> None:
        """Store the buffered text, all of it (the message ended or something else came)."""
        if self._delta_timer is not None:
            self._delta_timer.cancel()
            self._delta_timer = None
        if self._delta_buf is not None and self._delta_run is not None:
            run = self._delta_run
            ev = self._delta_buf.with_(text="".join(self._delta_parts), session_id=self.session_id,
                                       subtask_id=run.sub.id, attempt=run.attempt or None)
            self._delta_buf, self._delta_parts, self._delta_run = None, [], None
            self._unacked.append(self.store.submit(ev, lazy=True))

    def _handle(self, run: _SubtaskRun, ev: Event, ledger: ToolLedger) -> None:
        """One backend event: deltas are coalesced, tool events go through the ledger,
        everything is stamped once and submitted without waiting for its commit (a plain
        call: nothing here awaits, and a coroutine per event cost more than the work)."""
        if isinstance(ev, (TextDelta, ThinkingDelta)):
            if ev.text:
                self._buffer_delta(ev, run)
            return
        self._flush_deltas()
        now = self.clock.monotonic()
        ev = ev.with_(session_id=self.session_id, subtask_id=run.sub.id, attempt=run.attempt or None)
        if isinstance(ev, ToolStarted):
            if not ledger.start(ev, now):
                log.info("dropped a repeated tool.started for call %r of %s (attempt %s)",
                         ev.call_id, run.sub.id, run.attempt)
                return
        elif isinstance(ev, ToolFinished):
            fin = ledger.finish(ev, now)
            if fin is None:
                log.info("dropped a repeated tool.finished for call %r of %s (attempt %s)",
                         ev.call_id, run.sub.id, run.attempt)
                return
            ev = fin
        elif isinstance(ev, MessageCompleted) and ev.role == "assistant" and ev.text:
            run.last_text = ev.text
        lazy = isinstance(ev, LAZY_EVENTS) or (isinstance(ev, ToolStarted) and ev.name in READ_ONLY_TOOLS)
        self._unacked.append(self.store.submit(ev, lazy=lazy))

    # ------------------------------------------------------------------ checks, plan, errors

    async def _check(self, run: _SubtaskRun) -> BaseException | _Interrupt | None:
        """Run the subtask's check. It is part of the attempt: cancel, skip, a person's
        retry and an immediate pause stop it at once (its process group is killed) and it
        is recorded as interrupted, never left running or waited out."""
        if not run.sub.check:
            return None
        from core.tools import run_check

        # unique beyond the attempt number too: a duplicate call id would be dropped by the store
        call_id = new_id(f"check_{run.sub.id}_{run.attempt}")
        await self._emit(self._sub_event(ToolStarted(call_id=call_id, name="check",
                                                     input={"command": run.sub.check}), run))
        t0 = self.clock.monotonic()
        if self._cancel or run.sub.id in self._skip or run.restart:  # came in while it was being recorded
            self._attempt_task = None
            return await self._check_interrupted(run, call_id, t0)
        self._attempt_task = checking = asyncio.create_task(
            run_check(run.sub.check, Path(self.task.workspace), run.sub.check_timeout, task=self.task))
        try:
            await asyncio.wait({checking})
        except asyncio.CancelledError:  # the supervisor itself is being shut down
            checking.cancel()
            with contextlib.suppress(BaseException):
                await checking
            await asyncio.shield(self._check_interrupted(run, call_id, t0))
            raise
        finally:
            self._attempt_task = None
        if checking.cancelled():
            return await self._check_interrupted(run, call_id, t0)
        code, output = checking.result()
        await self._emit(self._sub_event(ToolFinished(
            call_id=call_id, status="ok" if code == 0 else "error", output=output,
            duration_s=round(self.clock.monotonic() - t0, 3)), run))
        if code == 0:
            return None
        return CheckFailed(run.sub.check, output, code)

    async def _check_interrupted(self, run: _SubtaskRun, call_id: str, t0: float) -> _Interrupt:
        await self._emit(self._sub_event(ToolFinished(
            call_id=call_id, status="interrupted", output="interrupted: stopped by a person before it finished",
            duration_s=round(self.clock.monotonic() - t0, 3)), run))
        return self._why_interrupted(run)

    async def _accept_plan(self, run: _SubtaskRun) -> BaseException | None:
        try:
            planned = prompts.parse_plan(run.last_text)
        except ValueError as e:
            return PlanInvalid(str(e))
        subs = [Subtask(id=str(p["id"]), title=str(p.get("title") or p["id"]), prompt=str(p["prompt"]))
                for p in planned]
        self.subtasks = subs
        await self._emit(PlanReady(subtasks=[{"id": PLAN_ID, "title": run.sub.title, "prompt": run.sub.prompt}]
                                   + [{"id": s.id, "title": s.title, "prompt": s.prompt} for s in subs]))
        return None

    async def _on_error(self, run: _SubtaskRun, err: BaseException | _Interrupt) -> RetryDecision:
        assert not isinstance(err, _Interrupt)
        info: ErrorInfo = classify(err)
        log.info("attempt %s of %s failed: %s: %s", run.attempt, run.sub.id, info.kind, info.message)
        error = self._sub_event(Error(**info.to_event_fields()), run).with_(session_id=self.session_id)
        decision = run.retry.on_error(info, run.phase)
        if not decision.retry:  # the subtask ends on it: written with its subtask.finished
            run.final_error = error
            return decision
        retry = self._sub_event(RetryScheduled(
            kind=decision.kind, retry_no=decision.retry_no, max_retries=decision.max_retries,
            # delay_s stays nominal; resume_at is when the countdown really ends (time scale)
            delay_s=decision.delay_s, resume_at=self.clock.now() + real_seconds(self.clock, decision.delay_s),
            action=decision.action), run).with_(session_id=self.session_id)
        # one transaction: a runner killed in between must not leave an error whose retry
        # (and so its place in the per-kind count) a resume cannot see, or a final error
        # without the end it caused (the resume would run one attempt more)
        await self._check_soon()
        await self.store.append_together(error, retry)
        return decision

    async def _countdown(self, run: _SubtaskRun, decision: RetryDecision) -> _Interrupt | None:
        """Wait out a retry delay; a person may skip it (retry_now), pause, cancel or skip."""
        sleeper = asyncio.ensure_future(self.clock.sleep(decision.delay_s))
        self._counting_down = True
        try:
            while True:
                # look at the controls before every wait: one may have come in just before
                if self._cancel:
                    return _Interrupt("cancel")
                if run.sub.id in self._skip:
                    self._skip.discard(run.sub.id)
                    return _Interrupt("skip")
                if self._retry_now:
                    return _Interrupt("retry_now")
                if run.restart:
                    return _Interrupt("restart")
                if self._pause:
                    # paused during a countdown: the wait ends; resume starts the retry at once
                    return None
                if sleeper.done():
                    return None
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
        finally:
            sleeper.cancel()
            self._retry_now = self._counting_down = False
        return None


# ---------------------------------------------------------------------- entry points


@dataclass
class RunHandle:
    session_id: str
    supervisor: Supervisor
    task: asyncio.Task[str]


async def start_run(store: Any, task: Task, *, interactive: bool = True, clock: Clock | None = None,
                    backend: Backend | None = None, session_id: str | None = None) -> RunHandle:
    """Start a session in the background; the handle's task returns its final status."""
    return await _launch(Supervisor(store, task, backend=backend, clock=clock, session_id=session_id,
                                    interactive=interactive))


async def _launch(sup: Supervisor) -> RunHandle:
    handle = RunHandle(sup.session_id, sup, asyncio.create_task(sup.run(), name=f"run-{sup.session_id}"))
    # return once the run holds its lease (or failed to take it: handle.task is then done
    # and raises LeaseHeld), so a caller never announces a run that is not happening
    leased = asyncio.ensure_future(sup.leased.wait())
    try:
        await asyncio.wait({handle.task, leased}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leased.cancel()
    return handle


async def resume_run(store: Any, session_id: str, *, interactive: bool = True, clock: Clock | None = None,
                     backend: Backend | None = None, retry_subtask: str | None = None) -> RunHandle:
    """Continue a session whose runner died (interrupted), or run one subtask of a
    finished session again (``retry_subtask``: a person's retry, counters reset)."""
    from core.task import task_from_stored

    row = await store.get_session(session_id)
    if row is None:
        from core.store import SessionNotFound

        raise SessionNotFound(f"no session {session_id}")
    if retry_subtask is None and row.status == "done":
        from core.store import SessionEnded

        raise SessionEnded(f"session {session_id} is done: nothing to resume (a subtask can be run again with a retry)")
    task = task_from_stored(row.task)
    rows = await store.subtasks(session_id)
    done = {s.id for s in rows if s.status in ("done", "skipped")}
    started = {s.id for s in rows if s.attempts > 0}
    if retry_subtask is not None:
        if retry_subtask not in {s.id for s in rows}:
            from core.store import SessionNotFound

            raise SessionNotFound(f"session {session_id} has no subtask {retry_subtask!r}")
        done = {s.id for s in rows} - {retry_subtask}  # only that one runs again
    sup = Supervisor(store, task, backend=backend, clock=clock, session_id=session_id,
                     interactive=interactive, resume=True, done_subtasks=done, started_subtasks=started,
                     planned_status=row.status)
    if task.plan and PLAN_ID in done:  # the subtasks are the accepted plan's, not the task file's
        planned = await store.last_plan(session_id) or []
        sup.subtasks = [Subtask(id=str(p["id"]), title=str(p.get("title") or p["id"]), prompt=str(p.get("prompt", "")))
                        for p in planned if p.get("id") != PLAN_ID]
    if retry_subtask is not None:
        sup._retry_reason = "user_retry"
    return await _launch(sup)


__all__ = ["Supervisor", "RunHandle", "start_run", "resume_run", "make_backend", "Stalled"]
