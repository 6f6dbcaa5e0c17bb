"""The Shepherd Textual app: opens the store, shows the sessions list, starts runs,
opens sessions (live here, live elsewhere, or past), and shuts everything down cleanly.

The CLI builds ``ShepherdApp(db_path, ...)`` and calls ``.run()``; the return code is
``app.return_code`` (0, or 2 when the database cannot be opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import ModalScreen

from shepherd.core.states import LIVE_STATUSES, SessionStatus
from shepherd.core.text import safe
from shepherd.tui.app_runs import AppRuns
from shepherd.tui.logging_setup import configure_logging, guarded
from shepherd.tui.screens.sessions import SessionsScreen

# The help screen (Markdown, markdown-it, pygments) and the modals (core.task, tomllib) are
# imported when first opened: none of them is on the first screen.

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.task import Task
    from shepherd.tui.screens.session import SessionScreen

log = logging.getLogger("shepherd.tui")

CANCEL_WAIT_S = 5.0  # how long quitting waits for a run to stop at a safe point before stopping it hard
TERMINATE_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # kill, a closed terminal: end as q does


def _short_path(path: Path) -> str:
    """The path as the user gave it, with the home directory as ``~``."""
    try:
        return "~/" + str(path.relative_to(Path.home())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


class ShepherdCommands(Provider):
    """Command palette: the app's commands plus the current screen's keys."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app: ShepherdApp = self.app  # type: ignore[assignment]
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            ("New demo run", "Start the offline scripted demo (no API key needed)", app.action_demo),
            ("Run task file…", "Start a run from a TOML task file", app.action_run_file),
            ("Run prompt…", "Start a run from a prompt", app.action_run_prompt),
            ("Sessions", "Go back to the sessions list", app.action_home),
            ("Toggle dark/light theme", "Switch between the dark and light theme", app.action_toggle_theme),
            ("Help", "Keys and status icons", app.action_help),
        ]
        seen = {name for name, _, _ in commands}
        screen = self.screen
        for active in screen.active_bindings.values():
            binding = active.binding
            if active.node is app or not active.enabled or not binding.description or binding.description in seen:
                continue
            seen.add(binding.description)
            key = app.get_key_display(binding)
            commands.append((binding.description, f"{key} on this screen",
                             partial(app.run_action, binding.action, active.node)))
        return commands

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class ShepherdApp(AppRuns, App[int]):
    """The Shepherd TUI.

    ``open_session``: a session id (or unique prefix) to open on start.
    ``attach``: open it as a run another process owns (tail + RemoteControl); without
    ``open_session`` it attaches to the newest live session.
    ``start``: a factory for a Task to run in this process on start (``shepherd demo``/``run``).
    ``resume``: (session id, subtask or None[, clean]) to resume in this process on start
    (``shepherd resume``: an interrupted session, or a finished one's subtask run again).
    ``at_seq``: open ``open_session`` at that event (``shepherd attach SESSION --at SEQ``).
    ``clock``: wall clock for everything the UI shows (frozen in snapshot tests).
    ``replay``: (session id, speed, seq or None) to open in replay mode on start (``shepherd replay``).
    ``log_path``: when given, logging is configured to that file (else the caller did it).
    ``checked``: the caller has just opened the database, with its quick_check and its
    recovery (the CLI's precheck): the app's own open skips them and the preparing.
    """

    TITLE = "Shepherd"
    user_config: Any = None  # core.config.UserConfig, set by the CLI (None: read at start-up)
    notifier: Any = None  # core.notify.Notifier, from start-up on
    STORE_ERROR_EXIT_S = 3.0  # time to read the notification before the app exits
    # no CSS_PATH: each screen and widget brings its section of tui/css/ (tui/stylesheet.py)
    COMMANDS = App.COMMANDS | {ShepherdCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self, db_path: Path | str, *, open_session: str | None = None, attach: bool = False,
                 start: Callable[[], "Task"] | None = None, clock: Callable[[], float] = time.time,
                 log_path: Path | str | None = None, resume: tuple[str, str | None] | tuple[str, str | None, bool] | None = None,
                 checked: bool = False, replay: tuple[str, float | None, int | None] | None = None,
                 at_seq: int | None = None) -> None:
        if log_path is not None:
            configure_logging(log_path)
        super().__init__()
        self.db_path = db_path if isinstance(db_path, str) and "://" in db_path else Path(db_path)
        self.open_session_id = open_session
        self.at_seq = at_seq  # open_session at that event (`shepherd attach --at`)
        self.attach = attach
        self.start = start
        self.resume = resume
        self.replay = replay
        self.checked = checked
        self.clock = clock
        self.store: EventStore | None = None
        self.runs: dict[str, Any] = {}  # session id -> core.engine.RunHandle started here
        self._telemetry_noted = False  # the "otel extra missing" line was shown
        self.home: SessionsScreen | None = None
        self._quitting = False
        self._held: Any = None  # the batch _hold_frames holds open
        self._signals: list[tuple[asyncio.AbstractEventLoop, int]] = []
        self._store_closed = False
        self._notifier_asked = False  # _start_notifier has run (once is enough)
        self.theme = "textual-dark"

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every toast (the app's and every widget's) passes here: error texts quote model
        and tool output, so their controls are made visible (core.text.safe), and they are
        never markup (``markup`` is ignored: Widget.notify passes True, and a session id or
        an error may read ``[/src/old]``)."""
        super().notify(safe(message), title=safe(title), severity=severity, timeout=timeout, markup=False)

    # --- lifecycle -----------------------------------------------------------------------------

    async def on_mount(self) -> None:
        # Streaming makes many small objects; with the default thresholds the collector
        # runs often enough to stall the event loop while a flood of deltas comes in.
        gc.set_threshold(20_000, 20, 20)
        # A closed terminal (SIGHUP) or `kill` (SIGTERM) ends the app as `q` does: runs
        # cancelled and recorded, the store flushed, the terminal restored, and the CLI's
        # clean-up (the demo's temporary workspace) still runs. 130: interrupted.
        loop = asyncio.get_running_loop()
        for sig in TERMINATE_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_terminate_signal)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
                continue
            self._signals.append((loop, sig))
        # The rest once on_mount has returned: Textual draws nothing during it (one batch
        # of updates), so a screen pushed here would be rendered for nothing, and reach
        # the terminal only with a later full refresh.
        self.call_later(self._start_up)

    def _hold_frames(self) -> None:
        """Draw nothing until ``_release_frames`` (start-up, while a view over the home is made)."""
        if self._held is None:
            self._held = self.batch_update()
            self._held.__enter__()

    def _release_frames(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.__exit__(None, None, None)

    def _db_label(self) -> str:
        """The database as shown: a file as ``~/...``; a URL without its password; its
        controls made visible (a path or $SHEPHERD_DB may hold an escape sequence)."""
        if isinstance(self.db_path, Path):
            return safe(_short_path(self.db_path))
        import re

        return safe(re.sub(r"(://[^:/@]*):[^@]*@", r"\1@", self.db_path))  # no psycopg needed to hide it

    async def _start_up(self) -> None:
        from shepherd.core.store.db import StoreError

        # A session view that opens at once over the home: the home is neither drawn nor
        # built (composed, loaded) before that view's first frame, only once it is drawn
        covered = not (self.start is None and self.resume is None and self.open_session_id is None
                       and not self.attach and self.replay is None)
        try:
            from shepherd.core.store import open_store

            # The home: no frame while it opens (the empty default screen would be drawn,
            # and the open's thread trips wait behind that drawing, only to be covered at
            # once). Not for a view over the home: the default screen's refresh held back
            # by the batch would, once the home is pushed, draw the home before the view.
            with self.batch_update() if not covered else contextlib.nullcontext():
                self.store = await open_store(self.db_path, check=not self.checked, recover=not self.checked,
                                              prepared=self.checked)
        except (StoreError, OSError) as error:
            log.error("cannot open the database %s", self._db_label(), exc_info=error)
            self.notify(str(error), title="Cannot open the database", severity="error", markup=False)
            self.set_timer(self.STORE_ERROR_EXIT_S, partial(self.exit, 2, return_code=2, message=f"shepherd: {error}"))
            return
        self.sub_title = self._db_label()
        self.home = home = SessionsScreen(self.store, clock=self.clock, live_ids=self.live_run_ids,
                                          db_label=self._db_label(), covered=covered)
        if not covered:
            await self.push_screen(home)
            # nothing on the home's first frame needs it (its import and its first read of
            # every session): after that frame; a run started before then starts it itself
            self.call_after_refresh(self._start_notifier)
            return
        self._start_notifier()  # before the run below writes its first event
        # No frame from here until the view that covers the home is pushed (the run's
        # opening events can take longer than a frame: the home would be drawn, unbuilt)
        self._hold_frames()
        await self.push_screen(home)
        if self.start is not None:
            await self._start_from_factory()
        elif self.resume is not None:
            await self.resume_session(self.resume[0], retry_subtask=self.resume[1],
                                      clean=len(self.resume) > 2 and bool(self.resume[2]))  # type: ignore[misc]
        elif self.replay is not None:
            await self.open_replay(self.replay[0], speed=self.replay[1], at_seq=self.replay[2])
        else:
            await self._open_initial()
        self._release_frames()  # (no view opened over the home: refused, not found)
        if self.screen is home:  # no view opened over it (refused, not found): build and draw it now
            await home.build()
            home.refresh()
        else:
            self._after_two_frames(lambda: home.call_later(home.build))

    @guarded("Could not start the run")
    async def _start_from_factory(self) -> None:
        from shepherd.core.task import TaskError

        try:
            made = self.start()  # type: ignore[misc]
        except TaskError as error:
            self.notify(str(error), title="Cannot start", severity="error", markup=False)
            return
        # `shepherd run a.toml b.toml`: each its own runner here, side by side; the views
        # stack in order (Esc goes back through them to the home)
        for task in (made if isinstance(made, (list, tuple)) else [made]):
            await self.start_task(task)

    @guarded("Could not open the session")
    async def _open_initial(self) -> None:
        from shepherd.core.store.db import StoreError

        sid = self.open_session_id
        try:
            if sid is None:
                sid = await self.store.latest_session_id(status=SessionStatus.RUNNING)
                if sid is None:
                    self.notify("No live session to attach to.", severity="warning")
                    return
            else:
                sid = await self.store.resolve_session(sid)
        except StoreError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        await self.open_session(sid, follow="tail" if self.attach and self.at_seq is None else "auto",
                                at_seq=self.at_seq)

    def _on_terminate_signal(self) -> None:
        if not self._quitting:
            self._quitting = True
            self.exit(130)  # on_unmount cancels the runs and closes the store

    async def on_unmount(self) -> None:
        for loop, sig in self._signals:  # the process outlives the app (tests, pilot): let go
            loop.remove_signal_handler(sig)
        self._signals.clear()
        # Last line of defence (the app exits for any reason): no run dangles, the store flushes.
        await self._stop_runs(wait_s=CANCEL_WAIT_S)
        await self._close_store()

    async def _close_store(self) -> None:
        if self.store is not None and not self._store_closed:
            self._store_closed = True
            if self.notifier is not None:
                await self.notifier.close()
            try:
                await self.store.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the store failed")

    # --- notifications ---------------------------------------------------------------------------

    def _start_notifier(self) -> None:
        """A session starts waiting for a person (core.notify): the bell and a desktop
        notification on this terminal, for the runs of this process (and their
        notify_command) and, from now on, for other processes' runs in this database."""
        if self._notifier_asked or self.store is None or self._store_closed:
            return
        self._notifier_asked = True
        from shepherd.core.config import ConfigError, load_config
        from shepherd.core.notify import Notifier

        config = self.user_config
        if config is None:
            try:
                config = load_config()
            except ConfigError as error:
                self.notify(str(error), title="Notifications are off", severity="warning")
                return
        self.notifier = Notifier(self.store, config, terminal=self._write_terminal, run_commands=True).start()
        self.notifier.follow_others()

    def _write_terminal(self, text: str) -> None:
        """Escape sequences straight to the terminal, as App.bell writes its bell."""
        if not self.is_headless and self._driver is not None:
            self._driver.write(text)

    def _handle_exception(self, error: Exception) -> None:
        # Unhandled errors still end the app (Textual restores the terminal and prints
        # the traceback); the log file keeps the details too.
        log.critical("unhandled exception in the TUI", exc_info=error)
        super()._handle_exception(error)

    # --- screens ---------------------------------------------------------------------------------

    async def open_session(self, session_id: str, *, follow: str | None = "auto", at_seq: int | None = None) -> None:
        """Open the session view (``at_seq``: at that event). ``follow="auto"``: local for runs
        started here, tail for runs another process owns (or that look live), None for past sessions."""
        from shepherd.core.control import RemoteControl

        try:
            from shepherd.tui.screens.session import SessionScreen
        except ImportError as error:
            self.notify(f"The session view is not available: {error}", severity="error", markup=False)
            return
        handle = self.runs.get(session_id)
        controller: Any = None
        if handle is not None and not handle.task.done() and follow in ("auto", "local"):
            follow, controller = "local", handle.supervisor
        elif follow == "tail":
            controller = RemoteControl(self.store, session_id)
        elif follow == "auto":
            row = await self.store.get_session(session_id)
            if row is None:
                self.notify(f"No session {session_id}.", severity="error", markup=False)
                return
            owner = await self.store.lease_owner(session_id)
            if owner is not None or row.status in LIVE_STATUSES:
                follow, controller = "tail", RemoteControl(self.store, session_id)
            else:
                follow = None
        # One session view at a time: a new one replaces the one on top (back still goes
        # home), so hidden live views never keep rendering streams nobody sees.
        while isinstance(self.screen, SessionScreen) and len(self.screen_stack) > 2:
            await self.pop_screen()
        await self._push_view(SessionScreen(self.store, session_id, controller=controller, follow=follow,
                                            clock=self.clock, at_seq=at_seq))

    async def open_replay(self, session_id: str, *, speed: float | None = 1.0, at_seq: int | None = None) -> None:
        """The replay of a session (tui.screens.replay) over the screen shown: its own
        virtual clock for what it shows, this app's clock for how fast it plays."""
        from shepherd.tui.screens.replay import ReplayScreen

        await self._push_view(ReplayScreen(self.store, session_id, speed=speed, at_seq=at_seq, clock=self.clock))

    async def _push_view(self, screen: Any) -> None:
        """Push a session view or a replay. Frames held back at start-up (``_hold_frames``)
        flow again once it is on top, before it mounts: what its mount leaves for after the
        next refresh (markdown-it's import) waits for a real one, not the held batch's end."""
        mounted = self.push_screen(screen)
        self._release_frames()
        await mounted

    def _top_is_modal(self) -> bool:
        return isinstance(self.screen, ModalScreen)

    # --- actions -------------------------------------------------------------------------------

    @guarded("Could not start the demo")
    async def action_demo(self) -> None:
        if self.store is None:
            return
        from shepherd.core.demo import demo_task

        await self.start_task(demo_task())

    def action_run_file(self) -> None:
        if self.store is not None and not self._top_is_modal():
            from shepherd.tui.screens.modals import RunModal

            self.push_screen(RunModal("file"), self._run_modal_done)

    def action_run_prompt(self) -> None:
        if self.store is not None and not self._top_is_modal():
            from shepherd.tui.screens.modals import RunModal

            self.push_screen(RunModal("prompt"), self._run_modal_done)

    def action_new_run(self) -> None:
        """n on the home: a task file or a prompt, in a worktree or not; it starts beside
        any run this process already has (each its own runner)."""
        if self.store is not None and not self._top_is_modal():
            from shepherd.tui.screens.modals import NewRunModal

            self.push_screen(NewRunModal(), self._run_modal_done)

    @guarded("Could not start the run")
    async def _run_modal_done(self, task: "Task | None") -> None:
        if task is not None:
            await self.start_task(task)

    def action_help(self) -> None:
        from shepherd.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        elif not self._top_is_modal():
            self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen: Any) -> Any:
        """Textual's palette entries, with "Keys" opening Shepherd's help (its keys first)
        instead of Textual's generic key panel."""
        from textual.app import SystemCommand

        for command in super().get_system_commands(screen):
            if command.title == "Keys":
                yield SystemCommand("Keys", "Shepherd's keys on this screen, and what the icons mean",
                                    self.action_help)
            else:
                yield command

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    async def action_home(self) -> None:
        while len(self.screen_stack) > 2 and self.screen is not self.home:
            await self.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return self.home is not None and self.screen is not self.home and len(self.screen_stack) > 2
        return True

    def action_back(self) -> None:
        if self.screen is not self.home and len(self.screen_stack) > 2:
            self.pop_screen()

    async def action_quit(self) -> None:
        """Quit; with runs live in this process, ask first and cancel them cleanly."""
        if self._quitting:
            return
        live = self.live_runs()
        if not live:
            self._quitting = True
            await self._close_store()
            self.exit(0)
            return
        from shepherd.tui.screens.modals import ConfirmModal

        if isinstance(self.screen, ConfirmModal):
            return
        n = len(live)
        question = (f"{n} run{'s are' if n > 1 else ' is'} still running in this window.\n"
                    "Quitting cancels {them}; {they} will show as cancelled.".format(
                        them="them" if n > 1 else "it", they="they" if n > 1 else "it"))
        self.push_screen(ConfirmModal(question, title="Quit Shepherd?", yes="Cancel and quit", no="Stay",
                                      danger=True), self._confirm_quit)

    def _confirm_quit(self, yes: bool | None) -> None:
        if not yes or self._quitting:
            return
        self._quitting = True
        self.notify("Cancelling runs…")
        # A worker, so the screen keeps rendering while the runs wind down.
        self.run_worker(self._cancel_and_exit(), name="quit", exclusive=True, exit_on_error=False)

    async def _cancel_and_exit(self) -> None:
        try:
            await self._stop_runs(wait_s=CANCEL_WAIT_S)
        finally:
            await self._close_store()
            self.exit(0)
