"""A person's controls: the ``core.control.Controller`` methods (from the TUI in this
process), the commands table and the ``.shepherd/PAUSE`` file (from anywhere else), and
the one place that says which of the outstanding requests a state acts on.

A control changes the Supervisor's requests first and then records its ``control``
event: the change takes effect at once, and the event is queued in the same step, so it
is stored first. Nothing here moves a subtask's state: the place that owns the current
state takes the request (``_take_request``) and moves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from shepherd.core import prompts
from shepherd.core.events import Control
from shepherd.core.control import CLEAN
from shepherd.core.states import Command

from shepherd.core.engine.base import COMMAND_POLL_S, LEASE_TTL_S, PLAN_ID, SubtaskRun, SupervisorBase, log
from shepherd.core.engine.states import Trigger, first_request
from shepherd.core.engine.worktrees import Worktrees


class Controls(Worktrees, SupervisorBase):
    async def _control(self, command: str, source: str, text: str = "", subtask_id: str | None = None,
                       clean: bool = False) -> None:
        await self._emit(Control(command=command, source=source, text=text, subtask_id=subtask_id, clean=clean))

    async def pause(self, *, immediate: bool = False, source: str = "tui") -> None:
        self._pause = "now" if immediate else "safe"
        self._pause_source = source
        if self._stop_after_turn is not None:
            self._stop_after_turn.set()
        if immediate and self._attempt_task is not None:
            self._attempt_task.cancel()
        self._wake.set()
        await self._control(Command.PAUSE, source, "immediate" if immediate else "")

    async def resume(self, *, source: str = "tui") -> None:
        self._pause = None
        self._resume_source = source
        self._wake.set()
        await self._control(Command.RESUME, source)

    async def retry_now(self, *, source: str = "tui") -> None:
        if self._counting_down:  # outside a countdown there is nothing to skip
            self._retry_now = True
            self._wake.set()
        await self._control(Command.RETRY_NOW, source)

    async def retry(self, subtask_id: str | None = None, *, clean: bool = False, source: str = "tui") -> None:
        sid = subtask_id or (self._current.sub.id if self._current else None)
        refused = await self._clean_refusal(sid) if clean else ""
        refused = refused or self._route_retry(sid)
        if clean and not refused and sid is not None:  # restored where the retry is taken, between attempts
            self._clean_asked.add(sid)
        if refused:
            log.info("retry of %s refused: %s", sid, refused)
        self._wake.set()
        await self._control(Command.RETRY, source, f"refused: {refused}" if refused else "", subtask_id=sid,
                            clean=clean and not refused)

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
        await self._control(Command.SKIP, source, subtask_id=sid)

    async def cancel(self, *, source: str = "tui") -> None:
        self._cancel = True
        if self._attempt_task is not None:
            self._attempt_task.cancel()
        self._wake.set()
        await self._control(Command.CANCEL, source)

    async def note(self, text: str, *, source: str = "tui") -> None:
        if text.strip():
            self._notes.append(text.strip())
        await self._control(Command.NOTE, source, text)

    # ------------------------------------------------------------------ taking requests

    def _take_request(self, run: SubtaskRun, applies: Collection[Trigger], *,
                      retry: bool | None = None, peek: bool = False) -> Trigger | None:
        """The request ``run``'s current place acts on (cancel, then skip, ...: the one
        precedence of core.engine.states), of those it honours. A skip is taken (used up);
        the others stay until their place clears them. ``retry``: whether a person's retry
        is outstanding, when it is not the running subtask's restart; ``peek``: only look."""
        asked: set[Trigger] = set()
        if self._cancel:
            asked.add(Trigger.CANCEL)
        if run.sub.id in self._skip:
            asked.add(Trigger.SKIP)
        if self._retry_now:
            asked.add(Trigger.RETRY_NOW)
        if run.restart if retry is None else retry:
            asked.add(Trigger.RETRY)
        if self._pause:
            asked.add(Trigger.PAUSE_NOW if self._pause == "now" else Trigger.PAUSE)
        taken = first_request(asked, applies)
        if taken is Trigger.SKIP and not peek:
            self._skip.discard(run.sub.id)
        return taken

    def _take_restart(self, run: SubtaskRun) -> bool:
        """A person's retry of the running subtask: the next attempt starts over (counters reset)."""
        if not run.restart:
            return False
        run.restart = False
        run.retry.reset()
        run.move(Trigger.RETRY)
        return True

    def _take_notes(self) -> str:
        if not self._notes:
            return ""
        notes, self._notes = self._notes, []
        return prompts.note_context(notes)

    # ------------------------------------------------------------------ other processes

    async def _poll_controls(self) -> None:
        """Cross-process commands and the PAUSE file, polled in real time."""
        pause_file = Path(self.task.workspace) / ".shepherd" / "PAUSE"  # (the worktree's: made before)
        handlers: dict[str, Callable[..., Any]] = {
            Command.PAUSE: lambda c: self.pause(source=c.source),
            Command.PAUSE_NOW: lambda c: self.pause(immediate=True, source=c.source),
            Command.RESUME: lambda c: self.resume(source=c.source),
            Command.RETRY_NOW: lambda c: self.retry_now(source=c.source),
            Command.RETRY: lambda c: self.retry(c.subtask_id, clean=c.text == CLEAN, source=c.source),
            Command.SKIP: lambda c: self.skip(c.subtask_id, source=c.source),
            Command.CANCEL: lambda c: self.cancel(source=c.source),
            Command.NOTE: lambda c: self.note(c.text, source=c.source),
            # (Approvals, mixed into the Supervisor) the first answer wins; a late one is logged
            Command.APPROVE: lambda c: self.approve(  # type: ignore[attr-defined]
                c.call_id, scope="session" if c.text == "session" else "call", source=c.source),
            Command.DENY: lambda c: self.deny(c.call_id, reason=c.text, source=c.source),  # type: ignore[attr-defined]
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
        from shepherd.core.store import LeaseHeld

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


__all__ = ["Controls"]
