"""One attempt: the backend's stream read beside a heartbeat and stall watcher, each
event stamped and submitted (text deltas merged), then the subtask's check. Either ends
as an ``AttemptOutcome``: succeeded, failed with the error, or stopped by a person."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from shepherd.core.backends.base import AttemptContext
from shepherd.core.clock import real_time
from shepherd.core.errors import CheckFailed
from shepherd.core.events import ApprovalRequested, Event, Heartbeat, MessageCompleted, TextDelta, ThinkingDelta, ToolFinished, ToolStarted, \
    new_id
from shepherd.core.approvals import ApprovalGate
from shepherd.core.ledger import ToolLedger
from shepherd.core.secrets import held_tail
from shepherd.core.states import SubtaskState

from shepherd.core.tools import READ_ONLY_TOOLS
from shepherd.core.engine.base import DELTA_WINDOW_S, LAZY_EVENTS, Stalled, SubtaskRun, SupervisorBase, log
from shepherd.core.engine.approvals import ApprovalLedger, Approvals
from shepherd.core.engine.controls import Controls
from shepherd.core.engine.next_attempt import NextAttempt
from shepherd.core.engine.states import AT_ATTEMPT, SUCCEEDED, AttemptOutcome, Trigger


class Attempts(Approvals, Controls, SupervisorBase):
    async def _attempt(self, run: SubtaskRun, nxt: NextAttempt, extra: str) -> AttemptOutcome:
        """Run one attempt (``extra``: its prompt's context, notes included)."""
        self._stop_after_turn = asyncio.Event()
        if self._pause:
            self._stop_after_turn.set()
        ctx = AttemptContext(
            session_id=self.session_id, task=self.task, subtask=run.sub, attempt=run.attempt,
            reason=nxt.reason, prompt=run.sub.prompt, prompt_extra=extra,
            continue_history=nxt.continue_history, workspace=Path(self.task.workspace),
            db_path=getattr(self.store, "path", None), store=self.store, phase=run.phase, repair=nxt.repair,
            strip_images=nxt.strip_images, clock=self.clock, stop_after_turn=self._stop_after_turn,
            state=run.backend_state,
        )
        gate = ctx.approvals = await self._make_gate(run)
        early = self._take_request(run, AT_ATTEMPT)
        if early is not None:  # a control that came in while it was being set up
            self._stop_after_turn = None
            return AttemptOutcome.stopped(early)
        ledger = ApprovalLedger()
        self._attempt_task = asyncio.create_task(self._consume(run, ctx, ledger))
        outcome: AttemptOutcome | None = None
        try:
            await asyncio.wait({self._attempt_task})
            try:
                self._attempt_task.result()
                outcome = SUCCEEDED
            except asyncio.CancelledError:
                outcome = self._why_interrupted(run)
            except Exception as e:  # noqa: BLE001 - every failure is classified
                outcome = AttemptOutcome.failed(e)
        except asyncio.CancelledError:  # the supervisor itself is being shut down
            self._attempt_task.cancel()
            with contextlib.suppress(BaseException):
                await self._attempt_task
            raise
        finally:
            self._attempt_task = None
            # calls still waiting for a person: closed by cancel, skip or a person's retry
            # (they did not run); kept awaiting otherwise (asked again): never approved
            why = outcome.why if outcome is not None else None
            await self._end_asks(run, gate, ledger, close=why in (Trigger.CANCEL, Trigger.SKIP, Trigger.RETRY))
            if outcome is not None and run.state is SubtaskState.WAITING_APPROVAL \
                    and why not in (Trigger.CANCEL, Trigger.PAUSE_NOW):
                run.move(Trigger.APPROVAL_ANSWERED)  # no call of it waits any more
            for fin in ledger.flush(self.clock.monotonic()):
                await self._emit(self._sub_event(fin, run).with_(attempt=fin.attempt or run.attempt), wait=False)
            self._stop_after_turn = None
            await self._ack()
        if outcome.succeeded:
            # a cancel or skip that came in as it ended; else stopped at a safe point for
            # a pause (even one lifted since): not finished
            late = self._take_request(run, (Trigger.CANCEL, Trigger.SKIP))
            if late is not None:
                return AttemptOutcome.stopped(late)
            if ctx.stop_after_turn.is_set():
                return AttemptOutcome.stopped(Trigger.PAUSE)
        return outcome

    def _why_interrupted(self, run: SubtaskRun) -> AttemptOutcome:
        """A stopped attempt or check: the person's request that stopped it."""
        return AttemptOutcome.stopped(self._take_request(run, AT_ATTEMPT) or Trigger.PAUSE_NOW)

    async def _consume(self, run: SubtaskRun, ctx: AttemptContext, ledger: ToolLedger) -> None:
        """Read the backend's stream. Heartbeats and the stall watchdog run beside the
        read and never cancel a pending ``__anext__`` (a timeout around the read corrupts
        SDK streams and drops in-flight tool results); only a real stall ends the attempt."""
        agen: AsyncIterator[Event] = self.backend.attempt(ctx)
        progress = [0]
        stalled: list[str] = []
        watchdog = asyncio.ensure_future(self._watch(run, ledger, progress, stalled, asyncio.current_task()))
        try:
            handle = self._handle
            gate = ctx.approvals
            async for ev in agen:
                progress[0] += 1
                if type(ev) is ApprovalRequested and not self._by_rule(gate, ev):
                    self._flush_deltas()
                    await self._asked(run, ev, gate)  # committed before anything else happens
                    continue
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

    @staticmethod
    def _by_rule(gate: ApprovalGate | None, ev: ApprovalRequested) -> bool:
        """A request a rule answers (its approval.decided(rule) follows at once): stored like
        any stream event, no person waits for it."""
        return gate is not None and gate.rule_decision(ev.tool, ev.input) is not None

    async def _watch(self, run: SubtaskRun, ledger: ToolLedger, progress: list[int], stalled: list[str],
                     consumer: asyncio.Task[Any] | None) -> None:
        """Emit a heartbeat for every heartbeat period without events; flag and end an
        attempt idle longer than stall_s (four times that while a tool call is open)."""
        clock = real_time(self.clock)  # liveness of real processes: not time-scaled
        quiet, stall_quiet, seen = 0, 0, progress[0]
        while True:
            await clock.sleep(self.task.heartbeat_s)
            if progress[0] != seen:
                quiet, stall_quiet, seen = 0, 0, progress[0]
                continue
            quiet += 1
            # waiting for a person's approval is not a stall (the heartbeats go on)
            stall_quiet = 0 if self.waiting_approval(run) else stall_quiet + 1
            idle = quiet * self.task.heartbeat_s
            is_stalled = stall_quiet * self.task.heartbeat_s >= self.task.stall_s * (4 if ledger.has_open() else 1)
            await self._emit(self._sub_event(
                Heartbeat(idle_s=idle, open_calls=len(ledger.open_calls), stalled=is_stalled), run))
            if is_stalled:
                stalled.append(f"stalled: no event for {idle:.0f} s")
                if consumer is not None:
                    consumer.cancel()
                return

    # ------------------------------------------------------------------ the stream's events

    def _buffer_delta(self, ev: Event, run: SubtaskRun) -> None:
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

    def _handle(self, run: SubtaskRun, ev: Event, ledger: ToolLedger) -> None:
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

    # ------------------------------------------------------------------ the check

    async def _check(self, run: SubtaskRun) -> AttemptOutcome:
        """Run the subtask's check. It is part of the attempt: cancel, skip, a person's
        retry and an immediate pause stop it at once (its process group is killed) and it
        is recorded as interrupted, never left running or waited out."""
        if not run.sub.check:
            return SUCCEEDED
        from shepherd.core.tools import run_check

        # unique beyond the attempt number too: a duplicate call id would be dropped by the store
        call_id = new_id(f"check_{run.sub.id}_{run.attempt}")
        await self._emit(self._sub_event(ToolStarted(call_id=call_id, name="check",
                                                     input={"command": run.sub.check}), run))
        t0 = self.clock.monotonic()
        if self._take_request(run, AT_ATTEMPT, peek=True) is not None:  # came in while it was being recorded
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
            return SUCCEEDED
        return AttemptOutcome.failed(CheckFailed(run.sub.check, output, code))

    async def _check_interrupted(self, run: SubtaskRun, call_id: str, t0: float) -> AttemptOutcome:
        await self._emit(self._sub_event(ToolFinished(
            call_id=call_id, status="interrupted", output="interrupted: stopped by a person before it finished",
            duration_s=round(self.clock.monotonic() - t0, 3)), run))
        return self._why_interrupted(run)


__all__ = ["Attempts"]
