"""Starting a session's run in the background, or resuming one: the entry points the
TUI and the CLI use. Each returns once the run holds its lease (or failed to take it)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from shepherd.core.backends.base import Backend
from shepherd.core.clock import Clock
from shepherd.core.records import record
from shepherd.core.states import SessionStatus, SubtaskState
from shepherd.core.task import Subtask, Task

from shepherd.core.engine.base import PLAN_ID
from shepherd.core.engine.next_attempt import Reason
from shepherd.core.engine.supervisor import Supervisor
from shepherd.core.engine.worktrees import WorktreeRefused, check_resume

if TYPE_CHECKING:
    from shepherd.core.store.db import Store

log = logging.getLogger(__name__)


@record
class RunHandle:
    session_id: str
    supervisor: Supervisor
    task: asyncio.Task[str]
    telemetry: Any = None  # core.otel.LiveExporter, when OTEL_EXPORTER_OTLP_ENDPOINT is set
    telemetry_note: str | None = None  # one line: why it is off although asked for (no otel extra)

    async def telemetry_done(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until the run's spans are out: a runner calls it before it exits.
        A run that never held the lease (another runner has the session) sends nothing."""
        if self.telemetry is not None:
            await self.telemetry.close(timeout, flush=self.supervisor.leased.is_set())


async def start_run(store: "Store", task: Task, *, interactive: bool = True, clock: Clock | None = None,
                    backend: Backend | None = None, session_id: str | None = None,
                    approvals: str = "wait") -> RunHandle:
    """Start a session in the background; the handle's task returns its final status.
    ``approvals`` (headless): "wait" for a person, or "deny" every tool approval at once."""
    return await _launch(Supervisor(store, task, backend=backend, clock=clock, session_id=session_id,
                                    interactive=interactive, approvals=approvals))


async def _launch(sup: Supervisor, *, resumed: bool = False) -> RunHandle:
    # Live OpenTelemetry spans when asked for (core.otel.requested: an endpoint variable),
    # subscribed before the run writes anything; otherwise nothing of it is even imported.
    live, note = None, None
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from shepherd.core import otel

        live, note = await otel.start_live(sup.store, sup.session_id, resumed=resumed)
        if note:
            log.warning("%s", note)
    handle = RunHandle(sup.session_id, sup, asyncio.create_task(sup.run(), name=f"run-{sup.session_id}"),
                       telemetry=live, telemetry_note=note)
    if live is not None:  # the TUI's runs end while the app goes on: their last spans go out then
        handle.task.add_done_callback(lambda _: asyncio.ensure_future(handle.telemetry_done()))
    # return once the run holds its lease (or failed to take it: handle.task is then done
    # and raises LeaseHeld), so a caller never announces a run that is not happening
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(*_: object) -> None:
        if not ready.done():  # (the first of the two; or our caller gave up waiting)
            ready.set_result(None)

    sup.when_leased(settle)
    handle.task.add_done_callback(settle)
    await ready
    return handle


async def resume_run(store: "Store", session_id: str, *, interactive: bool = True, clock: Clock | None = None,
                     backend: Backend | None = None, retry_subtask: str | None = None,
                     clean: bool = False, approvals: str = "wait") -> RunHandle:
    """Continue a session whose runner died (interrupted), or run one subtask of a
    finished session again (``retry_subtask``: a person's retry, counters reset;
    ``clean``: a worktree session's files restored to that subtask's start first, and the
    subtasks after it that had run run again after it)."""
    from shepherd.core.task import task_from_stored

    row = await store.get_session(session_id)
    if row is None:
        from shepherd.core.store import SessionNotFound

        raise SessionNotFound(f"no session {session_id}")
    if retry_subtask is None and row.status == SessionStatus.DONE:
        from shepherd.core.store import SessionEnded

        raise SessionEnded(f"session {session_id} is done: nothing to resume (a subtask can be run again with a retry)")
    task = task_from_stored(row.task)
    if retry_subtask is None and clean:
        raise WorktreeRefused("a clean retry names the subtask to run again (--retry SUBTASK --clean)")
    await check_resume(store, session_id, retry_subtask=retry_subtask, clean=clean)
    rows = await store.subtasks(session_id)
    done = {s.id for s in rows if s.status in (SubtaskState.DONE, SubtaskState.SKIPPED)}
    started = {s.id for s in rows if s.attempts > 0}
    if retry_subtask is not None:
        if retry_subtask not in {s.id for s in rows}:
            from shepherd.core.store import SessionNotFound

            raise SessionNotFound(f"session {session_id} has no subtask {retry_subtask!r}")
        done = {s.id for s in rows} - {retry_subtask}  # only that one runs again
    sup = Supervisor(store, task, backend=backend, clock=clock, session_id=session_id,
                     interactive=interactive, resume=True, done_subtasks=done, started_subtasks=started,
                     planned_status=row.status, approvals=approvals)
    if task.plan and PLAN_ID in done:  # the subtasks are the accepted plan's, not the task file's
        planned = await store.last_plan(session_id) or []
        sup.subtasks = [Subtask(id=str(p["id"]), title=str(p.get("title") or p["id"]), prompt=str(p.get("prompt", "")))
                        for p in planned if p.get("id") != PLAN_ID]
    if retry_subtask is not None:
        sup._retry_reason = Reason.USER_RETRY
        if clean:  # restored (and the later subtasks that had run queued again) once it holds the lease
            sup._clean_on_start = retry_subtask
    return await _launch(sup, resumed=True)


__all__ = ["RunHandle", "resume_run", "start_run"]
