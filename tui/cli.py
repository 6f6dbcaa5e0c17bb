"""The `shepherd` command line. Exit codes: 0 done, 1 failed/stuck, 2 bad input, 130 interrupted.

Textual and the SDKs are imported only by the commands that need them, so listing or
showing sessions stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from shepherd.core.states import SessionStatus as S
from shepherd.core.states import SubtaskState as T

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, not a usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


DB_HELP = "database file (default: $SHEPHERD_DB or $XDG_DATA_HOME/shepherd/shepherd.db)"
DONE_STATUSES = (S.DONE, S.FAILED, S.CANCELLED)  # a session no runner will continue


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000000, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shepherd", description="Supervise AI coding agents: watch, steer, retry, look back.")
    parser.add_argument("--db", metavar="PATH", default=None, help=DB_HELP)
    # Every subcommand takes --db too (before or after it). SUPPRESS: a subcommand that is
    # not given --db leaves the top-level value alone instead of overwriting it with None.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=DB_HELP)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common])

    approvals_help = ("headless: wait for a person to answer a tool approval (shepherd approve/deny, an "
                      "attached TUI; the default) or deny every one at once")
    p = add("demo", "run the offline demo task (scripted backend)")
    p.add_argument("--headless", action="store_true", help="no TUI: a readable log on stderr")
    p.add_argument("--approvals", choices=("wait", "deny"), default=None, help=approvals_help)

    p = add("run", "run a task file or a prompt")
    p.add_argument("task_file", nargs="?", help="a task file (TOML)")
    p.add_argument("-p", "--prompt", help="a bare prompt: a task with one subtask")
    p.add_argument("--backend", choices=("claude", "openai", "scripted"))
    p.add_argument("--model")
    p.add_argument("--workspace", help="the agent's working directory (prompt runs; default .)")
    p.add_argument("--headless", action="store_true", help="no TUI: a readable log on stderr")
    p.add_argument("--json", action="store_true", help="headless: events as JSON lines on stdout")
    p.add_argument("--approvals", choices=("wait", "deny"), default=None, help=approvals_help)

    p = add("attach", "follow a session another process runs")
    p.add_argument("session", nargs="?", help="session id or prefix (default: the latest live one)")

    p = add("sessions", "list sessions")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--status")
    p.add_argument("--search", help="filter by text in title/id/backend/model")
    p.add_argument("--limit", type=_limit, default=50)

    p = add("show", "a session as text")
    p.add_argument("session")

    p = add("export", "export a session")
    p.add_argument("session")
    p.add_argument("--format", choices=("jsonl", "md"), required=True)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")

    p = add("resume", "resume a paused session; or run an interrupted one again (no runner left), "
                      "or with --retry re-run a subtask of a finished one")
    p.add_argument("session")
    p.add_argument("--retry", metavar="SUBTASK", help="run this subtask again (a person's retry)")
    p.add_argument("--headless", action="store_true", help="no TUI: a readable log on stderr")
    p.add_argument("--json", action="store_true", help="headless: events as JSON lines on stdout")
    p.add_argument("--approvals", choices=("wait", "deny"), default=None, help=approvals_help)

    p = add("approve", "approve a tool call waiting for a person (default: the oldest)")
    p.add_argument("session")
    p.add_argument("call_id", nargs="?", help="the call's id or a unique prefix (default: the oldest waiting)")
    p.add_argument("--for-session", action="store_true", help="approve this tool for the rest of the session")

    p = add("deny", "deny a tool call waiting for a person (default: the oldest); the agent gets the reason")
    p.add_argument("session")
    p.add_argument("call_id", nargs="?", help="the call's id or a unique prefix (default: the oldest waiting)")
    p.add_argument("--reason", default="", help="why (the agent gets it as the tool's result)")

    for name, help_text in (("pause", "pause a running session at its next safe point"),
                            ("skip", "skip the current (or given) subtask"),
                            ("cancel", "cancel a running session"),
                            ("retry", "retry the current (or given) subtask now")):
        p = add(name, help_text)
        p.add_argument("session")
        p.add_argument("subtask", nargs="?")
    return parser


def _db_path(args: argparse.Namespace) -> Path:
    """Where the database is (nothing is made here: only a store opened with create does)."""
    from shepherd.core.store import default_db_path

    if args.db is not None and not args.db.strip():  # `--db "$UNSET"`: not the default database
        raise UsageError("--db: the path is empty")
    return Path(args.db).expanduser() if args.db else default_db_path()


async def _open_store(args: argparse.Namespace, *, create: bool = False, check: bool = True) -> EventStore:
    """Only a run creates a database (``create``); commands about existing sessions make
    no directory and no file (a missing one is NoDatabase). ``check``: PRAGMA quick_check
    first, for every command that may write (runs, resumes, control commands); readers
    skip it and meet damage where they read."""
    from shepherd.core.store import Store

    return await Store.open(_db_path(args), create=create, check=check)


def _err(message: str) -> None:
    print(f"shepherd: {message}", file=sys.stderr)


# ---------------------------------------------------------------- read-only commands


async def cmd_sessions(args: argparse.Namespace) -> int:
    from shepherd.core.store import NoDatabase

    try:
        store = await _open_store(args, check=False)
    except NoDatabase:  # nothing stored yet: an empty listing, and nothing created
        rows = []
    else:
        try:
            rows = await store.list_sessions(status=args.status, text=args.search, limit=args.limit)
        finally:
            await store.close()
    if args.json:
        for r in rows:  # json.dumps escapes every control (ensure_ascii): exact and terminal-safe
            print(json.dumps({
                "id": r.id, "title": r.title, "status": r.status, "backend": r.backend, "model": r.model,
                "started_at": r.started_at, "ended_at": r.ended_at, "subtasks_done": r.subtasks_done,
                "subtasks_total": r.subtasks_total, "retries": r.retries, "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens, "cost_usd": r.cost_usd, "workspace": r.workspace,
                "needs": r.needs, "needs_since": r.needs_since, "needs_detail": r.needs_detail,
            }))
        return EXIT_OK
    if not rows:
        filtered = args.status is not None or args.search is not None
        print("No sessions match." if filtered else "No sessions yet. Try `shepherd demo`.",
              file=sys.stderr if not sys.stdout.isatty() else sys.stdout)
        return EXIT_OK
    cells = [_session_cells(r) for r in rows]
    if not sys.stdout.isatty():
        # piped: plain, one row a line, tab-separated, full values (for grep, cut, awk)
        for c in cells:
            print("\t".join(c[k] for k in _SESSION_COLUMNS))
        return EXIT_OK
    _print_sessions_table(cells)
    return EXIT_OK


# Columns of `shepherd sessions`, in order; the table drops the last ones on narrow screens.
_SESSION_COLUMNS = ("id", "status", "title", "backend", "started", "took", "sub", "retries", "tokens")


def _session_cells(r: Any) -> dict[str, str]:
    """One session as plain one-line texts (stored text made terminal-safe)."""
    from shepherd.core.report import clip
    from shepherd.core.text import safe
    from shepherd.tui.fmt import fmt_span

    end = r.ended_at or time.time()
    return {
        "id": safe(r.id), "status": safe(r.status),
        "title": clip(safe(r.title), 10_000) or "(untitled)",
        "backend": clip(safe(r.backend + (f"/{r.model}" if r.model else "")), 10_000),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at)),
        "took": fmt_span(end - r.started_at), "sub": f"{r.subtasks_done}/{r.subtasks_total}",
        "retries": str(r.retries), "tokens": str(r.input_tokens + r.output_tokens),
    }


def _print_sessions_table(cells: list[dict[str, str]]) -> None:
    """The listing on a terminal: ids whole, titles cut to one line with an ellipsis,
    less important columns dropped when the screen is narrow. Cells are Text, never markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from shepherd.core.report import STATUS_STYLE

    console = Console(highlight=False)
    short_date = console.width < 120
    if short_date:
        cells = [{**c, "started": c["started"][5:]} for c in cells]
    shown = list(_SESSION_COLUMNS)
    need = {k: max(len(k), *(len(c[k]) for c in cells)) for k in shown}
    title_min = min(need["title"], 24)
    for k in ("backend", "tokens", "retries", "started", "took", "sub"):  # least needed first
        if sum(need[c] + 2 for c in shown if c != "title") + title_min <= console.width:
            break
        shown.remove(k)
    table = Table(box=None, header_style="bold", pad_edge=False)
    id_width = max(len(c["id"]) for c in cells)
    for k in shown:
        if k == "id":  # never cut: folds onto a second line before it is shortened
            table.add_column(k, min_width=id_width, overflow="fold")
        elif k == "title":  # the one column that gives way
            table.add_column(k, min_width=title_min, overflow="ellipsis")
        else:
            table.add_column(k, no_wrap=True, overflow="ellipsis",
                             justify="right" if k in ("took", "sub", "retries", "tokens") else "left")
    for c in cells:
        row = []
        for k in shown:
            value = c[k]
            style = STATUS_STYLE.get(value, "") if k == "status" else ("dim" if k == "id" else "")
            row.append(Text(value, style=style, no_wrap=k != "id", overflow="fold" if k == "id" else "ellipsis"))
        table.add_row(*row)
    console.print(table)


async def _all_events(store: EventStore, sid: str) -> Any:
    after = 0
    while True:
        page = await store.events(sid, after_seq=after, limit=2000)
        if not page:
            return
        for ev in page:
            yield ev
        after = page[-1].seq


async def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from shepherd.core.report import LogFormatter

    store = await _open_store(args, check=False)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())  # piped: one event a line
        console.print(_show_header(row))
        fmt = LogFormatter()  # makes every event's text terminal-safe (core.text.safe)
        async for ev in _all_events(store, sid):
            for line in fmt.format(ev):
                console.print(line)
        _warn_damaged(store)
    finally:
        await store.close()
    return EXIT_OK


def _show_header(row: Any) -> Any:
    """`show`'s first line, built as Text: a title is data, never markup."""
    from rich.text import Text

    from shepherd.core.text import safe

    return Text.assemble(
        (safe(row.title), "bold"), "  ", (safe(row.id), "dim"), "  status: ", (safe(row.status), "bold"),
        f"  subtasks {row.subtasks_done}/{row.subtasks_total}  retries {row.retries}  "
        f"tokens {row.input_tokens}/{row.output_tokens}")


def _warn_damaged(store: EventStore) -> None:
    """One line naming the events that could not be decoded (shown as damaged)."""
    seqs = sorted(seq for _, seq in store.damaged_events)
    if seqs:
        shown = ", ".join(map(str, seqs[:10])) + (", …" if len(seqs) > 10 else "")
        _err(f"warning: {len(seqs)} damaged event(s) in {store.path} (seq {shown}) are shown as "
             "[damaged event seq N]; the rest is intact")


def _output_path(args: argparse.Namespace) -> Path | None:
    """The -o file, checked before anything is read: a writable place that is not a
    directory and not the database itself."""
    if not args.output:
        return None
    out = Path(args.output).expanduser()
    if out.is_dir():
        raise UsageError(f"cannot write {out}: it is a directory (give a file name)")
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: the directory {out.parent} does not exist")
    db = _db_path(args)
    for name in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if out.resolve() == name.resolve():
            raise UsageError(f"cannot write {out}: it is the database")
    return out


def _write_atomically(out: Path, chunks: Any) -> None:
    """Write through a temporary file beside ``out`` and rename it into place; on any
    failure the temporary file is removed and ``out`` is left as it was."""
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(chunks)
        os.replace(tmp, out)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
        raise


async def cmd_export(args: argparse.Namespace) -> int:
    from shepherd.core.report import export_jsonl, export_markdown

    out = _output_path(args)
    store = await _open_store(args, check=False)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        events = [ev async for ev in _all_events(store, sid)]
        chunks = export_jsonl(events) if args.format == "jsonl" else \
            export_markdown(row, await store.subtasks(sid), events)
        if out is not None:
            _write_atomically(out, chunks)
            print(f"wrote {out}", file=sys.stderr)
        else:
            sys.stdout.writelines(chunks)
        _warn_damaged(store)
    finally:
        await store.close()
    return EXIT_OK


async def cmd_control(args: argparse.Namespace) -> int:
    store = await _open_store(args)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        if row.status in (*DONE_STATUSES, S.INTERRUPTED):
            hint = f"; to run a subtask again: shepherd resume {sid} --retry SUBTASK" \
                if args.command == "retry" else ""
            raise UsageError(f"session {sid} is {row.status}, not running{hint}")
        if await store.lease_owner(sid) is None:
            raise UsageError(f"session {sid} has no live runner (shepherd resume {sid} starts one)")
        if args.subtask is not None:  # a command for a subtask the session does not have is no command
            subs = [s.id for s in await store.subtasks(sid)]
            if args.subtask not in subs:
                known = ", ".join(repr(s) for s in subs) or "none yet"
                raise UsageError(f"session {sid} has no subtask {args.subtask!r} (its subtasks: {known})")
        await store.enqueue_command(sid, args.command, subtask_id=args.subtask, source="cli")
    finally:
        await store.close()
    print(f"{args.command} sent to {sid}", file=sys.stderr)
    return EXIT_OK


async def cmd_answer(args: argparse.Namespace) -> int:
    """``shepherd approve|deny SESSION [CALL_ID]``: through the commands table, like pause."""
    from shepherd.core.store.derive import approval_detail
    from shepherd.core.text import safe

    store = await _open_store(args)
    try:
        sid = await store.resolve_session(args.session)
        pending = await store.approvals(sid)
        if args.call_id is None:
            if not pending:
                raise UsageError(f"session {sid} has nothing waiting for approval")
            call = pending[0]
        else:
            every = await store.approvals(sid, pending=False)
            exact = [a for a in every if a.call_id == args.call_id]
            found = exact or [a for a in every if a.call_id.startswith(args.call_id)]
            if not found:
                raise UsageError(f"session {sid} has no call {safe(args.call_id)!r} waiting for approval"
                                 + ("" if pending else " (nothing is waiting)"))
            if len(found) > 1:
                raise UsageError(f"{safe(args.call_id)!r} matches several calls of {sid} "
                                 f"({', '.join(safe(a.call_id) for a in found[:5])}); type more of the id")
            call = found[0]
            if not call.pending:
                how = f"{call.decision} by {call.source}" if call.decision else "closed: it did not run"
                raise UsageError(f"call {safe(call.call_id)} of {sid} is not waiting for approval ({how})")
        if await store.lease_owner(sid) is None:
            raise UsageError(f"session {sid} has no live runner; shepherd resume {sid} asks again")
        if args.command == "approve":
            text = "session" if args.for_session else ""
        else:
            text = args.reason
        await store.enqueue_command(sid, args.command, text=text, source="cli", call_id=call.call_id)
    finally:
        await store.close()
    detail = approval_detail(call.tool, json.dumps(call.input))
    tool, _, rest = detail.partition(" ")
    scope = " for the rest of the session" if getattr(args, "for_session", False) else ""
    print(f"{args.command} sent to {sid}: {safe(tool)} {json.dumps(safe(rest), ensure_ascii=False)} "
          f"(call {safe(call.call_id)}){scope}", file=sys.stderr)
    return EXIT_OK


async def _plan_resume(args: argparse.Namespace) -> tuple[str, bool]:
    """What ``shepherd resume`` does: (session id, whether a runner must be started here).
    With a live runner the commands go through the commands table and this returns
    (sid, False); otherwise every reason not to start one is one line (UsageError)."""
    from shepherd.core.task import task_from_stored

    store = await _open_store(args)  # opening recovers sessions whose runner died
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        subs = await store.subtasks(sid)
        if args.retry is not None and args.retry not in {s.id for s in subs}:
            known = ", ".join(repr(s.id) for s in subs) or "none"
            raise UsageError(f"session {sid} has no subtask {args.retry!r} (its subtasks: {known})")
        if await store.lease_owner(sid) is not None:
            await store.enqueue_command(sid, "resume", source="cli")
            sent = "resume"
            if args.retry:
                await store.enqueue_command(sid, "retry", subtask_id=args.retry, source="cli")
                sent += f" and retry {args.retry}"
            print(f"{sent} sent to {sid} (its runner is live)", file=sys.stderr)
            return sid, False
        if row.status in DONE_STATUSES and args.retry is None:
            redo = [s.id for s in subs if s.status not in (T.DONE, T.SKIPPED)]
            hint = f" (shepherd resume {sid} --retry {redo[0]} runs one again)" if redo else ""
            raise UsageError(f"session {sid} is {row.status}: nothing to resume{hint}")
        if row.status not in (*DONE_STATUSES, S.INTERRUPTED):
            raise UsageError(f"session {sid} is {row.status} but has no runner; try again in a moment")
        task = task_from_stored(row.task)
        if not task.workspace.is_dir():
            raise UsageError(f"session {sid}: its workspace {str(task.workspace)!r} no longer exists")
        _checked_backend(task)  # credentials missing: one line here, not after the TUI opened
        _check_sandbox(task)  # a confinement that cannot be had: one line, before anything runs
        return sid, True
    finally:
        await store.close()


# ---------------------------------------------------------------- running


def _task_from_args(args: argparse.Namespace) -> Any:
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


def _check_sandbox(task: Any) -> None:
    """A task asking for a sandbox this machine cannot give is refused before anything runs."""
    from shepherd.core.tools.spawn import SandboxUnavailable, check_sandbox

    try:
        check_sandbox(task)
    except SandboxUnavailable as e:
        raise UsageError(str(e)) from None


def _exit_for(status: str) -> int:
    return {S.DONE: EXIT_OK, S.CANCELLED: EXIT_INTERRUPTED}.get(status, EXIT_FAILED)


def _checked_backend(task: Any) -> Any:
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
    backend = _checked_backend(task) if task is not None else None  # before any file is made
    config = _user_config()  # a bad config file: one line, before any file is made
    store = await _open_store(args, create=resume is None)
    try:
        if resume is not None:
            from shepherd.core.task import task_from_stored

            row = await store.get_session(resume)
            backend = _checked_backend(task_from_stored(row.task))
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


def _user_config() -> Any:
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
    config = _user_config()  # a bad config file: one line, not a flash of the TUI
    collecting = gc.isenabled()
    gc.disable()
    try:
        from concurrent.futures import ThreadPoolExecutor

        from shepherd.core.store import Store

        db = _db_path(args)

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


# ---------------------------------------------------------------- main


def _dispatch(args: argparse.Namespace) -> int:
    if args.command is None:
        return run_tui(args)
    if getattr(args, "approvals", None) == "deny" and not (args.headless or getattr(args, "json", False)):
        raise UsageError("--approvals deny is for headless runs (--headless); in the TUI a person answers")
    if args.command in ("demo", "run"):
        task = _task_from_args(args)
        _check_sandbox(task)
        if args.headless or getattr(args, "json", False):
            return asyncio.run(run_headless(args, task))
        return run_tui(args, task=task)
    if args.command == "attach":
        sid = asyncio.run(_resolve_live(args))
        return run_tui(args, attach=sid)
    if args.command == "resume":
        sid, start_here = asyncio.run(_plan_resume(args))
        if not start_here:
            return EXIT_OK
        if args.headless or args.json:
            return asyncio.run(run_headless(args, resume=sid, retry=args.retry))
        return run_tui(args, resume=(sid, args.retry))
    handlers = {"sessions": cmd_sessions, "show": cmd_show, "export": cmd_export,
                "approve": cmd_answer, "deny": cmd_answer}
    handler = handlers.get(args.command, cmd_control)
    return asyncio.run(handler(args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_text_args(args)
        try:
            return _dispatch(args)
        finally:
            if args.command == "demo":
                from shepherd.core.demo import cleanup

                cleanup()  # the demo's temporary workspace goes with the process that made it
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - map known failures to one line + exit 2
        from shepherd.core.store import StoreError
        from shepherd.core.task import TaskError

        if isinstance(e, (UsageError, StoreError, TaskError)):
            _err(str(e))
            return EXIT_BAD_INPUT
        if isinstance(e, BrokenPipeError):
            return EXIT_OK
        import sqlite3

        if isinstance(e, sqlite3.OperationalError):  # e.g. locked by another process mid-run
            _err(f"database error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return EXIT_BAD_INPUT
        raise


def _check_text_args(args: argparse.Namespace) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape); stored,
    they fail the database's write half-way through a run. Refused here, once, for every
    argument."""
    for name, value in vars(args).items():
        if isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value):
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
            if len(shown) > 60:
                shown = shown[:60] + "…"
            raise UsageError(f"{name.replace('_', ' ')}: not valid UTF-8 text: '{shown}'")


async def _resolve_live(args: argparse.Namespace) -> str:
    store = await _open_store(args)  # checked like the TUI's own open, so damage is one line here
    try:
        if args.session:
            return await store.resolve_session(args.session)
        sid = await store.latest_session_id(status=S.RUNNING)
        if sid is None:
            raise UsageError("no running session to attach to (give a session id)")
        return sid
    finally:
        await store.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
