"""The app's runs: started and resumed in this process, tracked until they end, stopped on
quit; and what the screens ask of them (their messages bubble up to the app). A part of
``ShepherdApp`` (tui.app) kept apart by concern, as the Supervisor's parts are."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from shepherd.core.states import SessionStatus
from shepherd.tui.logging_setup import guarded, report_error

if TYPE_CHECKING:
    from shepherd.tui.screens.sessions import SessionsScreen
    from shepherd.core.task import Task
    from shepherd.tui.screens.session import SessionScreen

log = logging.getLogger("shepherd.tui")

OPENING_WAIT_S = 0.25  # the longest a new run's view waits for its opening events to be stored
FIRST_FRAMES_WAIT_S = 0.5  # the longest a new run's SDK import waits for its view to be drawn


async def preload_backend(name: str) -> None:
    """Import a backend's SDK in a thread (it takes seconds): the screen keeps drawing and
    the resumed run that follows finds it imported. A backend that cannot load fails later, where
    the run reports it."""
    from shepherd.core.engine import make_backend

    try:
        await asyncio.to_thread(make_backend, name)
    except Exception:  # noqa: BLE001 - reported by the run itself
        log.debug("preloading backend %r failed", name, exc_info=True)


class AppRuns:
    """The runs of a ShepherdApp (its ``runs``: session id -> RunHandle)."""

    runs: dict[str, Any]
    home: Any
    store: Any
    _quitting: bool
    _telemetry_noted: bool

    def live_runs(self) -> list[Any]:
        return [h for h in self.runs.values() if not h.task.done()]

    def live_run_ids(self) -> set[str]:
        return {h.session_id for h in self.live_runs()}

    async def start_task(self, task: "Task") -> Any:
        """Start ``task`` in this process and open its live view. Returns the RunHandle."""
        from shepherd.core.backends.deferred import DeferredBackend
        from shepherd.core.engine import start_run

        self._start_notifier()  # (started after the home's first frame: maybe not yet)

        from shepherd.core.events import new_session_id

        # The backend's SDK takes seconds to import: the run makes it in a thread, once
        # its live view has been drawn (the import's thread slows the drawing down).
        drawn, opened = asyncio.Event(), asyncio.Event()
        sid = new_session_id()

        def on_commit(events: list[Any]) -> None:
            if any(e.session_id == sid and e.type == "plan.ready" for e in events):
                opened.set()

        unsubscribe = self.store.subscribe(on_commit)
        try:
            handle = await start_run(self.store, task, interactive=True, session_id=sid,
                                     backend=DeferredBackend(task.backend, drawn))
            # its view's first frame shows the session and its plan (and the keys for them),
            # not "starting…": the opening events are a few ms away (bounded: never a hang)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(opened.wait(), OPENING_WAIT_S)
        finally:
            unsubscribe()
        try:
            self._track(handle)
            self._say_telemetry_note(handle)
            log.info("started run %s (%s, backend %s)", handle.session_id, task.title, task.backend)
            await self.open_session(handle.session_id)
        finally:
            self._after_two_frames(drawn.set)
        return handle

    def _say_telemetry_note(self, handle: Any) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT set but the otel extra missing: said once, the run goes on."""
        note = getattr(handle, "telemetry_note", None)
        if note and not self._telemetry_noted:
            self._telemetry_noted = True
            self.notify(note, title="OpenTelemetry", severity="warning", markup=False)

    def _after_two_frames(self, callback: Callable[[], Any]) -> None:
        """``callback`` (idempotent) once the screen has been drawn, and drawn again (its
        key bar may fill in one refresh later); at once when the app is not running. A
        screen replaced before that never calls back: the timer makes sure."""
        def second() -> None:
            if not self.call_after_refresh(callback):
                callback()

        if not self.call_after_refresh(second):
            callback()
            return
        self.set_timer(FIRST_FRAMES_WAIT_S, callback)

    async def resume_session(self, session_id: str, *, retry_subtask: str | None = None,
                             clean: bool = False) -> Any:
        """Continue an interrupted session in this process, or run one subtask of a
        finished session again (``core.engine.resume_run``; ``clean``: a worktree
        session's files restored to that subtask's start first)."""
        import shepherd.core.engine as engine

        if session_id in self.live_run_ids():
            await self.open_session(session_id)
            return self.runs[session_id]
        resume_run = getattr(engine, "resume_run", None)
        if resume_run is None:
            self.notify("Resuming sessions is not available in this version.", severity="warning")
            return None
        from shepherd.core.store.db import StoreError

        self._start_notifier()  # (started after the home's first frame: maybe not yet)
        row = await self.store.get_session(session_id)
        if row is not None:
            await preload_backend(row.backend)
        try:
            handle = await resume_run(self.store, session_id, interactive=True, retry_subtask=retry_subtask,
                                      **({"clean": True} if clean else {}))
            if handle.task.done() and isinstance(handle.task.exception(), StoreError):
                raise handle.task.exception()  # type: ignore[misc] - lost the lease to another runner
        except StoreError as error:  # LeaseHeld, SessionNotFound: say it in one line
            self.notify(str(error), title="Cannot resume", severity="error", markup=False)
            return None
        self._track(handle)
        self._say_telemetry_note(handle)
        log.info("resumed run %s", session_id)
        await self.open_session(session_id)
        return handle

    # What screens ask of the app (their messages bubble up to it). The home's requests are
    # awaited here, one after another, as its keys were: a second r waits for the first.

    @guarded("Could not open the session")
    async def on_sessions_screen_open_requested(self, message: SessionsScreen.OpenRequested) -> None:
        await self.open_session(message.session_id, at_seq=message.at_seq)

    @guarded("Could not resume the session")
    async def on_sessions_screen_resume_requested(self, message: SessionsScreen.ResumeRequested) -> None:
        await self.resume_session(message.session_id)

    @guarded("Could not open the replay")
    async def on_sessions_screen_replay_requested(self, message: SessionsScreen.ReplayRequested) -> None:
        await self.open_replay(message.session_id)

    @guarded("Could not open the replay")
    async def on_session_screen_replay_requested(self, message: "SessionScreen.ReplayRequested") -> None:
        await self.open_replay(message.session_id)

    def on_session_screen_resume_requested(self, message: "SessionScreen.ResumeRequested") -> None:
        # A worker of the app's: the resumed run's view replaces the asking screen (which
        # would cancel a worker of its own), and the SDK's import never holds up the keys.
        self.run_worker(self._resume_requested(message), group="resume", exclusive=True, exit_on_error=False)

    async def _resume_requested(self, message: "SessionScreen.ResumeRequested") -> None:
        try:
            handle = await self.resume_session(message.session_id, retry_subtask=message.retry_subtask,
                                               clean=getattr(message, "clean", False))
        except Exception as exc:
            self.notify(f"resume failed: {exc}", severity="error", markup=False)
            handle = None
        if handle is None:  # nothing started: the screen shows what is true again
            message.screen.resume_refused()

    def _track(self, handle: Any) -> None:
        self.runs[handle.session_id] = handle
        handle.task.add_done_callback(partial(self._run_ended, handle.session_id))
        if self.home is not None:
            self.home.request_reload()

    def _run_ended(self, session_id: str, task: asyncio.Task[Any]) -> None:
        if self._quitting or not self.is_running:
            return
        if task.cancelled():
            status = SessionStatus.CANCELLED
        elif task.exception() is not None:
            report_error(self, task.exception(), f"Run {session_id} crashed")  # type: ignore[arg-type]
            return
        else:
            status = task.result()
        severity = "information" if status == SessionStatus.DONE else "warning"
        self.notify(f"Run {session_id} ended: {status}", severity=severity)
        if self.home is not None:
            self.home.request_reload()

    async def _stop_runs(self, wait_s: float) -> None:
        """Cancel every live run and wait for it to end (as cancelled, lease released)."""
        live = self.live_runs()
        if not live:
            return
        for handle in live:
            try:
                await handle.supervisor.cancel(source="tui")
            except Exception:  # noqa: BLE001 - fall back to cancelling the task below
                log.exception("cancel of %s failed", handle.session_id)
        tasks = [h.task for h in live]
        _, pending = await asyncio.wait(tasks, timeout=wait_s)
        for t in pending:  # did not stop at its next safe point: stop it hard
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=wait_s)
        for t in tasks:  # retrieve results so nothing logs "exception never retrieved"
            if t.done() and not t.cancelled():
                t.exception()
        # their last OpenTelemetry spans out before the store closes (bounded; none unless asked for)
        await asyncio.gather(*(h.telemetry_done(wait_s) for h in live if getattr(h, "telemetry", None)))
