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
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, not a usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="database file (default: $SHEPHERD_DB or "
                   "$XDG_DATA_HOME/shepherd/shepherd.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shepherd", description="Supervise AI coding agents: watch, steer, retry, look back.")
    _db_arg(parser)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("demo", help="run the offline demo task (scripted backend)")
    p.add_argument("--headless", action="store_true", help="no TUI: a readable log on stderr")
    _db_arg(p)

    p = sub.add_parser("run", help="run a task file or a prompt")
    p.add_argument("task_file", nargs="?", help="a task file (TOML)")
    p.add_argument("-p", "--prompt", help="a bare prompt: a task with one subtask")
    p.add_argument("--backend", choices=("claude", "openai", "scripted"))
    p.add_argument("--model")
    p.add_argument("--workspace", help="the agent's working directory (prompt runs; default .)")
    p.add_argument("--headless", action="store_true", help="no TUI: a readable log on stderr")
    p.add_argument("--json", action="store_true", help="headless: events as JSON lines on stdout")
    _db_arg(p)

    p = sub.add_parser("attach", help="follow a session another process runs")
    p.add_argument("session", nargs="?", help="session id or prefix (default: the latest live one)")
    _db_arg(p)

    p = sub.add_parser("sessions", help="list sessions")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--status")
    p.add_argument("--search", help="filter by text in title/id/backend/model")
    p.add_argument("--limit", type=int, default=50)
    _db_arg(p)

    p = sub.add_parser("show", help="a session as text")
    p.add_argument("session")
    _db_arg(p)

    p = sub.add_parser("export", help="export a session")
    p.add_argument("session")
    p.add_argument("--format", choices=("jsonl", "md"), required=True)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    _db_arg(p)

    for name, help_text in (("pause", "pause a running session at its next safe point"),
                            ("resume", "resume a paused session"),
                            ("skip", "skip the current (or given) subtask"),
                            ("cancel", "cancel a running session"),
                            ("retry", "retry the current (or given) subtask now")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("session")
        p.add_argument("subtask", nargs="?")
        _db_arg(p)
    return parser


def _db_path(args: argparse.Namespace) -> Path:
    from core.store import default_db_path

    return Path(args.db).expanduser() if args.db else default_db_path()


async def _open_store(args: argparse.Namespace, *, must_exist: bool = True) -> Any:
    from core.store import Store

    path = _db_path(args)
    if must_exist and not path.exists():
        raise UsageError(f"no database at {path} (run something first, or pass --db)")
    return await Store.open(path)


def _err(message: str) -> None:
    print(f"shepherd: {message}", file=sys.stderr)


# ---------------------------------------------------------------- read-only commands


async def cmd_sessions(args: argparse.Namespace) -> int:
    store = await _open_store(args, must_exist=False)
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
            }))
        return EXIT_OK
    if not rows:
        print("No sessions yet. Try `shepherd demo`.", file=sys.stderr if not sys.stdout.isatty() else sys.stdout)
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
    from core.report import clip
    from core.text import safe
    from tui.model import fmt_span

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

    from core.report import STATUS_STYLE

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


async def _all_events(store: Any, sid: str) -> Any:
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

    from core.report import LogFormatter

    store = await _open_store(args)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        console = Console(highlight=False)
        console.print(_show_header(row))
        fmt = LogFormatter()  # makes every event's text terminal-safe (core.text.safe)
        async for ev in _all_events(store, sid):
            for line in fmt.format(ev):
                console.print(line)
    finally:
        await store.close()
    return EXIT_OK


def _show_header(row: Any) -> Any:
    """`show`'s first line, built as Text: a title is data, never markup."""
    from rich.text import Text

    from core.text import safe

    return Text.assemble(
        (safe(row.title), "bold"), "  ", (safe(row.id), "dim"), "  status: ", (safe(row.status), "bold"),
        f"  subtasks {row.subtasks_done}/{row.subtasks_total}  retries {row.retries}  "
        f"tokens {row.input_tokens}/{row.output_tokens}")


async def cmd_export(args: argparse.Namespace) -> int:
    from core.report import export_jsonl, export_markdown

    store = await _open_store(args)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        events = [ev async for ev in _all_events(store, sid)]
        chunks = export_jsonl(events) if args.format == "jsonl" else \
            export_markdown(row, await store.subtasks(sid), events)
        if args.output:
            out = Path(args.output)
            tmp = out.with_name(out.name + ".tmp")
            with tmp.open("w", encoding="utf-8") as f:
                f.writelines(chunks)
            tmp.replace(out)
            print(f"wrote {out}", file=sys.stderr)
        else:
            sys.stdout.writelines(chunks)
    finally:
        await store.close()
    return EXIT_OK


async def cmd_control(args: argparse.Namespace) -> int:
    store = await _open_store(args)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        if row.status in ("done", "failed", "cancelled", "interrupted"):
            raise UsageError(f"session {sid} is {row.status}, not running")
        if await store.lease_owner(sid) is None:
            raise UsageError(f"session {sid} has no live runner")
        await store.enqueue_command(sid, args.command, subtask_id=args.subtask, source="cli")
    finally:
        await store.close()
    print(f"{args.command} sent to {sid}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------- running


def _task_from_args(args: argparse.Namespace) -> Any:
    from core.task import load_task, prompt_task

    if args.command == "demo":
        from core.demo import demo_task

        return demo_task()
    if bool(args.task_file) == bool(args.prompt):
        raise UsageError("give either a task file or -p PROMPT")
    if args.prompt:
        return prompt_task(args.prompt, backend=args.backend or "claude", model=args.model,
                           workspace=Path(args.workspace or ".").resolve())
    return load_task(args.task_file, backend=args.backend, model=args.model)


def _check_sandbox(task: Any) -> None:
    """A task asking for a sandbox this machine cannot give is refused before anything runs."""
    from core.tools.spawn import SandboxUnavailable, check_sandbox

    try:
        check_sandbox(task)
    except SandboxUnavailable as e:
        raise UsageError(str(e)) from None


def _exit_for(status: str) -> int:
    return {"done": EXIT_OK, "cancelled": EXIT_INTERRUPTED}.get(status, EXIT_FAILED)


async def run_headless(args: argparse.Namespace, task: Any) -> int:
    from rich.console import Console

    from core.backends.base import BackendUnavailable
    from core.engine import Supervisor, make_backend
    from core.report import LogFormatter

    configure_logging()  # SDK and engine logs go to the log file, never over the screen
    try:
        backend = make_backend(task.backend)
        check = getattr(backend, "check_available", None)
        if check is not None:
            check(task)
    except BackendUnavailable as e:
        raise UsageError(str(e)) from None
    store = await _open_store(args, must_exist=False)
    console = Console(stderr=True, highlight=False)
    fmt = LogFormatter()
    as_json = getattr(args, "json", False)

    def on_commit(events: list[Any]) -> None:
        for ev in events:
            if ev.session_id != sup.session_id:
                continue
            if as_json:
                print(ev.to_json(), flush=True)
            for line in fmt.format(ev):
                console.print(line)

    sup = Supervisor(store, task, backend=backend, interactive=False)
    unsubscribe = store.subscribe(on_commit)
    loop = asyncio.get_running_loop()
    run = asyncio.ensure_future(sup.run())
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        asyncio.ensure_future(sup.cancel(source="cli"))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        try:
            status = await run
        except BackendUnavailable as e:
            raise UsageError(str(e)) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await store.flush()
        unsubscribe()
        await store.close()
    if interrupted:
        return EXIT_INTERRUPTED
    return _exit_for(status)


def configure_logging() -> Path:
    from tui.logging_setup import configure_logging as configure

    return configure()


def run_tui(args: argparse.Namespace, *, task: Any = None, attach: str | None = None) -> int:
    from tui.app import ShepherdApp

    db = _db_path(args)
    configure_logging()
    app = ShepherdApp(db, open_session=attach, attach=attach is not None,
                      start=(lambda: task) if task is not None else None)
    import gc

    gc.freeze()  # what start-up built lives as long as the app: keep it out of every collection
    result = app.run()
    return result if isinstance(result, int) else EXIT_OK


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in (None,):
            return run_tui(args)
        if args.command in ("demo", "run"):
            task = _task_from_args(args)
            _check_sandbox(task)
            if args.headless or getattr(args, "json", False):
                return asyncio.run(run_headless(args, task))
            return run_tui(args, task=task)
        if args.command == "attach":
            sid = asyncio.run(_resolve_live(args))
            return run_tui(args, attach=sid)
        handlers = {"sessions": cmd_sessions, "show": cmd_show, "export": cmd_export}
        handler = handlers.get(args.command, cmd_control)
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - map known failures to one line + exit 2
        from core.store import StoreError
        from core.task import TaskError

        if isinstance(e, (UsageError, StoreError, TaskError)):
            _err(str(e))
            return EXIT_BAD_INPUT
        if isinstance(e, BrokenPipeError):
            return EXIT_OK
        raise


async def _resolve_live(args: argparse.Namespace) -> str:
    store = await _open_store(args)
    try:
        if args.session:
            return await store.resolve_session(args.session)
        sid = await store.latest_session_id(status="running")
        if sid is None:
            raise UsageError("no running session to attach to (give a session id)")
        return sid
    finally:
        await store.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
