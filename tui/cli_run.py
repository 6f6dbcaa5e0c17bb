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
from shepherd.tui.cli_common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, db_target, open_store


def task_from_args(args: argparse.Namespace) -> Any:
    """The one task of ``shepherd demo`` / ``shepherd run`` (see ``tasks_from_args``)."""
    return tasks_from_args(args)[0]


def tasks_from_args(args: argparse.Namespace) -> list[Any]:
    """The tasks to run: the demo's, a prompt's, or one per task file (``run a.toml
    b.toml``). ``--worktree`` sets isolation = "worktree" (refused in one line outside a
    git repository)."""
    from shepherd.core.task import load_task, prompt_task

    if args.command == "demo":
        from shepherd.core.demo import demo_task

        return [demo_task(interactive=not args.headless)]
    files = [f for f in (args.task_file or []) if f is not None]
    worktree = bool(getattr(args, "worktree", False))
    if files and args.prompt is not None:
        raise UsageError("give either a task file or -p PROMPT, not both")
    if args.prompt is not None:
        return [prompt_task(args.prompt, backend=args.backend or "claude", model=args.model,
                            workspace=Path(args.workspace or ".").resolve(),
                            isolation="worktree" if worktree else "none")]
    if not files:
        raise UsageError("give a task file or -p PROMPT")
    if args.workspace:
        raise UsageError("--workspace is for prompt runs; a task file names its own workspace")
    tasks = [load_task(f, backend=args.backend, model=args.model) for f in files]
    if worktree:
        import dataclasses

        from shepherd.core.worktree import isolation_refusal

        for i, t in enumerate(tasks):
            if t.isolation != "worktree":
                refused = isolation_refusal(t.workspace)
                if refused:
                    raise UsageError(f"--worktree: {refused}")
                tasks[i] = dataclasses.replace(t, isolation="worktree")
    return tasks


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
                       retry: str | None = None, clean: bool = False, tasks: list[Any] | None = None) -> int:
    """A run with a readable log on stderr (and JSON lines with --json): a new ``task``
    (or several, ``tasks``: side by side in this process, one Supervisor each, log lines
    prefixed with the session's short id, the exit code the worst of theirs), or
    ``resume`` (a session id) continued / with ``retry`` re-running that subtask
    (``clean``: a worktree session's files restored to its start first)."""
    from shepherd.core.backends.base import BackendUnavailable
    from shepherd.core.engine import resume_run, start_run
    from shepherd.core.events import new_session_id
    from shepherd.core.report import LogFormatter

    todo = list(tasks) if tasks is not None else ([task] if task is not None else [])
    configure_logging()  # SDK and engine logs go to the log file, never over the screen
    backends = [checked_backend(t) for t in todo]  # before any file is made
    config = user_config()  # a bad config file: one line, before any file is made
    store = await open_store(args, create=resume is None)
    try:
        if resume is not None:
            from shepherd.core.task import task_from_stored

            row = await store.get_session(resume)
            backends = [checked_backend(task_from_stored(row.task))]
    except BaseException:
        await store.close()
        raise
    sids = [resume] if resume is not None else [new_session_id() for _ in todo]
    several = len(sids) > 1
    short = short_ids(sids)
    # piped or redirected: one event a line (for grep), never wrapped at 80 columns
    console = _log_console_class()(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
    fmts = {sid: LogFormatter() for sid in sids}
    as_json = getattr(args, "json", False)
    approvals = getattr(args, "approvals", None) or "wait"

    closed = False  # the log's reader went away (`| head`): the run goes on, unlogged

    def show(sid: str, line: Any) -> None:
        if several:  # which run said it: the session's short id first
            from rich.text import Text

            line = Text.assemble((f"{short[sid]} ", "bold cyan"), line)
        console.print(line)

    def on_commit(events: list[Any]) -> None:
        nonlocal closed
        if closed:
            return
        try:
            for ev in events:
                fmt = fmts.get(ev.session_id)
                if fmt is None:
                    continue
                announce()
                if as_json:
                    print(ev.to_json(), flush=True)
                for line in fmt.format(ev):
                    show(ev.session_id, line)
        except BrokenPipeError:
            closed = True

    resumed = f"subtask {retry} again" + (" from clean (files restored to its start)" if clean else "") \
        if retry else "where it stopped"
    banner = [f"▶ resuming session {resume}: {resumed}"] \
        if resume is not None else []  # a new run's log opens with its session.started; a resumed one has none

    def announce() -> None:  # once the run holds the session: a runner that lost the race says only why
        while banner:
            console.print(banner.pop(), markup=False, style="bold")

    from shepherd.core.notify import Notifier, tty_writer  # bell/OSC on stderr if a terminal; notify_command

    notifier = Notifier(store, config, run_commands=True, terminal=tty_writer(sys.stderr)).start()
    unsubscribe = store.subscribe(on_commit)  # before the run writes its first event
    loop = asyncio.get_running_loop()
    interrupted = False
    handles: list[Any] = []

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        for h in handles:
            asyncio.ensure_future(h.supervisor.cancel(source="cli"))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)
    statuses: list[Any] = []
    try:
        try:
            if resume is not None:
                handles.append(await resume_run(store, resume, interactive=False, backend=backends[0],
                                                retry_subtask=retry, clean=clean, approvals=approvals))
            else:
                try:
                    for t, b, sid in zip(todo, backends, sids):
                        handles.append(await start_run(store, t, interactive=False, backend=b, session_id=sid,
                                                       approvals=approvals))
                except BaseException:  # one failed to start: the ones already running end with it
                    for h in handles:
                        await h.supervisor.cancel(source="cli")
                    await asyncio.gather(*(h.task for h in handles), return_exceptions=True)
                    raise
            if any(h.supervisor.leased.is_set() for h in handles):
                announce()
            for note in dict.fromkeys(h.telemetry_note for h in handles if h.telemetry_note):
                console.print(note, markup=False, style="yellow")  # asked for, not possible: the run goes on
            if interrupted:  # a signal came while the runs were being launched
                for h in handles:
                    await h.supervisor.cancel(source="cli")
            statuses = list(await asyncio.gather(*(h.task for h in handles), return_exceptions=several))
        except BackendUnavailable as e:
            raise UsageError(str(e)) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await store.flush()
        await asyncio.gather(*(h.telemetry_done() for h in handles))  # the last spans out (bounded)
        unsubscribe()
        await notifier.close()  # lets a running notify_command end (bounded by its timeout)
        await store.close()
    if interrupted:
        return EXIT_INTERRUPTED
    codes = []
    for sid, status in zip(sids, statuses):
        if isinstance(status, BaseException):  # one of several runs failed to run at all: said, and counted
            from shepherd.core.text import safe

            console.print(safe(f"{short[sid]} could not run: {status}"), markup=False, style="red")
            codes.append(EXIT_FAILED)
        else:
            codes.append(_exit_for(status))
    if several:
        console.print("  ".join(f"{short[sid]} {st if isinstance(st, str) else 'error'}"
                                for sid, st in zip(sids, statuses)), markup=False, style="bold")
    return max(codes, key=_badness) if codes else EXIT_OK


def short_ids(sids: list[str], least: int = 8) -> dict[str, str]:
    """Each id cut to the shortest length (at least ``least``) at which they all differ:
    ids made in the same second share their first characters."""
    n = least
    while n < max(map(len, sids), default=0) and len({s[:n] for s in sids}) < len(set(sids)):
        n += 1
    return {s: s[:n] for s in sids}


def _badness(code: int) -> int:
    """The worst exit code of several runs: failed beats interrupted beats done."""
    return {EXIT_OK: 0, EXIT_INTERRUPTED: 1, EXIT_FAILED: 2}.get(code, 3)


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
            resume: tuple[str, str | None, bool] | None = None, at_seq: int | None = None) -> int:
    import gc

    # Start-up makes objects that live as long as the app (modules, classes, styles): no
    # collection runs over them while they are made (each would find nothing to free);
    # frozen below, they stay out of every later collection too.
    collecting = gc.isenabled()
    gc.disable()
    try:
        config = user_config()  # a bad config file: one line, not a flash of the TUI
        from concurrent.futures import ThreadPoolExecutor

        from shepherd.core.store import open_store as open_any

        db = db_target(args)

        async def precheck() -> None:  # a bad database is one line here, not a flash of the TUI
            await (await open_any(db)).close()  # checked and recovered: the app's own open skips both

        with ThreadPoolExecutor(1, thread_name_prefix="shepherd-precheck") as pool:
            checked = pool.submit(asyncio.run, precheck())  # SQLite's work, while the TUI's modules import
            try:
                from shepherd.tui.app import ShepherdApp
            finally:
                checked.result()  # its StoreError first: the one line a bad database gets
        configure_logging()
        app = ShepherdApp(db, open_session=attach, attach=attach is not None,
                          start=(lambda: task) if task is not None else None, resume=resume, checked=True,
                          at_seq=at_seq)
        app.user_config = config  # its notifications (ShepherdApp._start_notifier)
        gc.freeze()  # what start-up built lives as long as the app: keep it out of every collection
    finally:
        if collecting:
            gc.enable()
    result = app.run()
    return result if isinstance(result, int) else EXIT_OK
