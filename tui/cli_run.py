"""Running a task from the command line: headless (a readable log on stderr, JSON lines
with --json) or in the TUI; the checks that refuse a run in one line before anything is
made (the task, its backend, its sandbox, the user config)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from shepherd.core.states import SessionStatus as S
from shepherd.tui.cli_common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, db_path, open_store


def task_from_args(args: argparse.Namespace) -> Any:
    from shepherd.core.task import load_task, prompt_task

    if args.command == "demo":
        from shepherd.core.demo import demo_task

        return demo_task(interactive=not args.headless)
    if args.task_file and args.prompt is not None:
        raise UsageError("give either a task file or -p PROMPT, not both")
    if args.prompt is not None:
        return prompt_task(args.prompt, backend=args.backend or "claude", model=args.model,
                           workspace=Path(args.workspace or ".").resolve())
    if not args.task_file:
        raise UsageError("give a task file or -p PROMPT")
    if args.workspace:
        raise UsageError("--workspace is for prompt runs; a task file names its own workspace")
    return load_task(args.task_file, backend=args.backend, model=args.model)


def check_task_sandbox(task: Any) -> None:
    """A task asking for a sandbox this machine cannot give is refused before anything runs."""
    from shepherd.core.tools.spawn import SandboxUnavailable, check_sandbox

    try:
        check_sandbox(task)
    except SandboxUnavailable as e:
        raise UsageError(str(e)) from None


def _exit_for(status: str) -> int:
    return {S.DONE: EXIT_OK, S.CANCELLED: EXIT_INTERRUPTED}.get(status, EXIT_FAILED)


def checked_backend(task: Any) -> Any:
    """The task's backend, after its own check (credentials...): a UsageError if unusable."""
    from shepherd.core.backends.base import BackendUnavailable
    from shepherd.core.engine import make_backend

    try:
        backend = make_backend(task.backend)
        check = getattr(backend, "check_available", None)
        if check is not None:
            check(task)
    except BackendUnavailable as e:
        raise UsageError(str(e)) from None
    return backend


def _log_console_class() -> type:
    from rich.console import Console

    class LogConsole(Console):
        """Rich's default answer to a closed pipe is SystemExit from inside whatever
        callback printed: in a headless run that escaped the event loop and hung the
        process at exit (`shepherd run --headless 2>&1 | head`). Here it just goes quiet."""

        def on_broken_pipe(self) -> None:
            self.quiet = True

    return LogConsole


async def run_headless(args: argparse.Namespace, task: Any = None, *, resume: str | None = None,
                       retry: str | None = None) -> int:
    """A run with a readable log on stderr (and JSON lines with --json): a new ``task``,
    or ``resume`` (a session id) continued / with ``retry`` re-running that subtask."""
    from shepherd.core.backends.base import BackendUnavailable
    from shepherd.core.engine import resume_run, start_run
    from shepherd.core.events import new_session_id
    from shepherd.core.report import LogFormatter

    configure_logging()  # SDK and engine logs go to the log file, never over the screen
    backend = checked_backend(task) if task is not None else None  # before any file is made
    config = user_config()  # a bad config file: one line, before any file is made
    store = await open_store(args, create=resume is None)
    try:
        if resume is not None:
            from shepherd.core.task import task_from_stored

            row = await store.get_session(resume)
            backend = checked_backend(task_from_stored(row.task))
    except BaseException:
        await store.close()
        raise
    sid = resume or new_session_id()
    # piped or redirected: one event a line (for grep), never wrapped at 80 columns
    console = _log_console_class()(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
    fmt = LogFormatter()
    as_json = getattr(args, "json", False)
    approvals = getattr(args, "approvals", None) or "wait"

    closed = False  # the log's reader went away (`| head`): the run goes on, unlogged

    def on_commit(events: list[Any]) -> None:
        nonlocal closed
        if closed:
            return
        try:
            for ev in events:
                if ev.session_id != sid:
                    continue
                announce()
                if as_json:
                    print(ev.to_json(), flush=True)
                for line in fmt.format(ev):
                    console.print(line)
        except BrokenPipeError:
            closed = True

    banner = [f"▶ resuming session {sid}: " + (f"subtask {retry} again" if retry else "where it stopped")] \
        if resume is not None else []  # a new run's log opens with its session.started; a resumed one has none

    def announce() -> None:  # once the run holds the session: a runner that lost the race says only why
        while banner:
            console.print(banner.pop(), markup=False, style="bold")

    from shepherd.core.notify import Notifier, tty_writer  # bell/OSC on stderr if a terminal; notify_command

    notifier = Notifier(store, config, run_commands=True, terminal=tty_writer(sys.stderr)).start()
    unsubscribe = store.subscribe(on_commit)  # before the run writes its first event
    loop = asyncio.get_running_loop()
    interrupted = False
    handle: Any = None

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        if handle is not None:
            asyncio.ensure_future(handle.supervisor.cancel(source="cli"))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)
    try:
        try:
            if resume is not None:
                handle = await resume_run(store, sid, interactive=False, backend=backend, retry_subtask=retry,
                                          approvals=approvals)
            else:
                handle = await start_run(store, task, interactive=False, backend=backend, session_id=sid,
                                         approvals=approvals)
            if handle.supervisor.leased.is_set():
                announce()
            if interrupted:  # a signal came while the run was being launched
                await handle.supervisor.cancel(source="cli")
            status = await handle.task
        except BackendUnavailable as e:
            raise UsageError(str(e)) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await store.flush()
        unsubscribe()
        await notifier.close()  # lets a running notify_command end (bounded by its timeout)
        await store.close()
    if interrupted:
        return EXIT_INTERRUPTED
    return _exit_for(status)


def user_config() -> Any:
    """The user config file (core.config); a bad one is one line and exit 2."""
    from shepherd.core.config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as e:
        raise UsageError(str(e)) from None


def configure_logging() -> Path:
    from shepherd.tui.logging_setup import configure_logging as configure

    return configure()


def run_tui(args: argparse.Namespace, *, task: Any = None, attach: str | None = None,
            resume: tuple[str, str | None] | None = None) -> int:
    import gc

    # Start-up makes objects that live as long as the app (modules, classes, styles): no
    # collection runs over them while they are made (each would find nothing to free);
    # frozen below, they stay out of every later collection too.
    config = user_config()  # a bad config file: one line, not a flash of the TUI
    collecting = gc.isenabled()
    gc.disable()
    try:
        from concurrent.futures import ThreadPoolExecutor

        from shepherd.core.store import Store

        db = db_path(args)

        async def precheck() -> None:  # a bad database is one line here, not a flash of the TUI
            await (await Store.open(db)).close()  # checked and recovered: the app's own open skips both

        with ThreadPoolExecutor(1, thread_name_prefix="shepherd-precheck") as pool:
            checked = pool.submit(asyncio.run, precheck())  # SQLite's work, while the TUI's modules import
            try:
                from shepherd.tui.app import ShepherdApp
            finally:
                checked.result()  # its StoreError first: the one line a bad database gets
        configure_logging()
        app = ShepherdApp(db, open_session=attach, attach=attach is not None,
                          start=(lambda: task) if task is not None else None, resume=resume, checked=True)
        app.user_config = config  # its notifications (ShepherdApp._start_notifier)
        gc.freeze()  # what start-up built lives as long as the app: keep it out of every collection
    finally:
        if collecting:
            gc.enable()
    result = app.run()
    return result if isinstance(result, int) else EXIT_OK
