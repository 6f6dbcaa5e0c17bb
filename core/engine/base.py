"""What every part of the Supervisor shares: its state, one subtask's run, and the
plumbing that writes events (committed one by one, paired, or in bulk)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any

from shepherd.core.backends.base import Backend
from shepherd.core.clock import Clock, RealClock
from shepherd.core.events import AttemptStarted, Event, MessageCompleted, SubtaskFinished, SubtaskStarted, TextDelta, \
    ThinkingDelta, ToolFinished, Usage, new_session_id
from shepherd.core.records import record
from shepherd.core.retry import RetryState, policies_for
from shepherd.core.states import SessionStatus, SubtaskState
from shepherd.core.task import PLAN_ID, Subtask, Task

from shepherd.core.engine.states import SETTLED, Trigger, advance

if TYPE_CHECKING:
    from shepherd.core.store.db import Store

log = logging.getLogger("shepherd.engine")

DELTA_WINDOW_S = 0.025  # real seconds a text delta may wait to be merged with the next ones
COMMAND_POLL_S = 0.25  # real seconds between looks at the commands table and PAUSE file
LEASE_TTL_S = 30.0
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
        from shepherd.core.backends.scripted import ScriptedBackend

        return ScriptedBackend()
    if name == "openai":
        from shepherd.core.backends.openai_agents import OpenAIAgentsBackend

        return OpenAIAgentsBackend()
    if name == "claude":
        from shepherd.core.backends.claude import ClaudeBackend

        return ClaudeBackend()
    raise ValueError(f"unknown backend {name!r}")


@record
class SubtaskRun:
    """One run of a subtask: its state (moved only through the table) and what its
    attempts carry from one to the next."""

    sub: Subtask
    phase: str
    retry: RetryState
    state: SubtaskState = SubtaskState.PENDING
    backend_state: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0  # the last attempt's number: continues the stored record (never restarts at 1)
    last_text: str = ""
    held: tuple[str, str] | None = None  # (status, reason) it was left in waiting for a person
    restart: bool = False  # a person's retry while it runs: restart the attempt now (a request)
    final_error: Event | None = None  # the error it ends on, stored with its subtask.finished
    clean: bool = False  # its next attempt is a clean retry's: a fresh conversation (worktree restored)

    def move(self, trigger: Trigger) -> SubtaskState:
        self.state = advance(self.state, trigger)
        return self.state

    @property
    def settled(self) -> bool:
        """Its end is recorded (or being): a person's retry runs it again instead."""
        return self.state in SETTLED


def held_for_person(history: list[Event]) -> tuple[str, str] | None:
    """(status, reason) when a subtask's record ends stuck or failed (no attempt since):
    a resumed runner must not quietly start it again; only a person's retry does."""
    for ev in reversed(history):
        if isinstance(ev, SubtaskFinished):
            return (ev.status, ev.reason) if ev.status in (SubtaskState.STUCK, SubtaskState.FAILED) else None
        if isinstance(ev, (AttemptStarted, SubtaskStarted)):
            return None
    return None


class SupervisorBase:
    """The Supervisor's state, shared by its parts (controls, attempt, countdown, loop)."""

    def __init__(
        self,
        store: "Store",
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
        approvals: str = "wait",
    ) -> None:
        self.store: Any = store
        self.task = task
        self.backend = backend or make_backend(task.backend)
        self.clock = clock or RealClock()
        self.session_id = session_id or new_session_id()
        self.interactive = interactive
        # headless only: "wait" for a person (CLI, an attached TUI) or "deny" every ask at once
        self.approvals_mode = approvals if approvals in ("wait", "deny") else "wait"
        self._asks: dict[str, Any] = {}  # call id -> core.engine.approvals.Asked (waiting for a person)
        self._kept: set[str] = set()  # asked calls an ended attempt kept awaiting (asked again later)
        self._early: dict[str, Any] = {}  # call id -> Decision given while it was kept: applied when re-asked
        self._resuming = resume
        self._planned_status = planned_status  # a resume's: the status it was decided on
        self._done_subtasks = set(done_subtasks or ())
        self._started_subtasks = set(started_subtasks or ())  # resumed: these continue their history
        self.policies = policies_for(task.retry)
        self.status: str = SessionStatus.PENDING
        self.subtasks: list[Subtask] = list(task.subtasks)
        # control state: a person's requests, taken where the current state is owned
        self._wake = asyncio.Event()  # set whenever a control needs the main loop's attention
        self.leased = asyncio.Event()  # set once this runner holds the session's lease
        self._on_leased: list[Callable[[], None]] = []
        self._pause: str | None = None  # None | "safe" | "now"
        self._paused = False  # session.paused is recorded (and session.resumed is not yet)
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
        self._current: SubtaskRun | None = None
        self._stop_after_turn: asyncio.Event | None = None
        self._attempt_task: asyncio.Task[Any] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._retry_reason = "first"  # "user_retry" when a person re-runs a finished subtask
        self._unacked: list[asyncio.Future[Any]] = []
        self._soon: list[asyncio.Future[Any]] = []  # see _emit_soon
        self._delta_buf: Event | None = None
        self._delta_parts: list[str] = []
        self._delta_timer: asyncio.TimerHandle | None = None
        self._delta_run: SubtaskRun | None = None
        # worktree sessions (core.engine.worktrees)
        self._task_record = task  # what session.started stores: the user's own workspace
        self._wt: Any = None  # core.worktree.Worktree once made or found again
        self._wt_origin = ""
        self._wt_repo = ""
        self._clean_asked: set[str] = set()  # clean retries asked, not yet restored
        self._clean_on_start: str | None = None  # resume_run(..., clean=True): restore this one first
        self._fresh: set[str] = set()  # subtasks whose next run starts a fresh conversation (restored)
        self._rerun: list[str] = []  # subtasks a clean restore made pending again, to queue

    def when_leased(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this runner holds the session's lease (at once if it does)."""
        if self.leased.is_set():
            callback()
        else:
            self._on_leased.append(callback)

    def _lease_taken(self) -> None:
        self.leased.set()
        callbacks, self._on_leased = self._on_leased, []
        for callback in callbacks:
            callback()

    # ------------------------------------------------------------------ writing events

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

    def _sub_event(self, ev: Event, run: SubtaskRun) -> Event:
        return ev.with_(subtask_id=run.sub.id, attempt=run.attempt or None)


__all__ = ["COMMAND_POLL_S", "DELTA_WINDOW_S", "LAZY_EVENTS", "LEASE_TTL_S", "PLAN_ID", "Stalled",
           "SubtaskRun", "SupervisorBase", "held_for_person", "make_backend"]
