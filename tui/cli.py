"""The `shepherd` command line. Exit codes: 0 done, 1 failed/stuck, 2 bad input, 130 interrupted.

Textual and the SDKs are imported only by the commands that need them, so listing or
showing sessions stays fast. Here: the parser and the dispatch; the commands are in
tui.cli_read (sessions, show, export), tui.cli_control (pause/skip/cancel/retry,
approve/deny, resume's plan, attach's session), tui.cli_run (running a task, headless
or in the TUI; several side by side) and tui.cli_worktree (diff, merge, discard,
worktrees); what they share in tui.cli_common.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import NoReturn

from shepherd.tui.cli_common import DB_HELP, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, UsageError, err
from shepherd.tui.cli_common import EXIT_FAILED  # noqa: F401 - the exit codes: here too, as before

# The commands' modules are imported by the command that runs (below), not here: `shepherd`
# alone (the home) starts without them and without building the parser.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, not a usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000000, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from shepherd.tui import cli_copy, cli_replay, cli_search, cli_stats, cli_worktree

    parser = _Parser(prog="shepherd", description="Supervise AI coding agents: watch, steer, retry, look back.")
    parser.add_argument("--db", metavar="PATH|URL", default=None, help=DB_HELP)
    # Every subcommand takes --db too (before or after it). SUPPRESS: a subcommand that is
    # not given --db leaves the top-level value alone instead of overwriting it with None.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH|URL", default=argparse.SUPPRESS, help=DB_HELP)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common])

    approvals_help = ("headless: wait for a person to answer a tool approval (shepherd approve/deny, an "
                      "attached TUI; the default) or deny every one at once")
    p = add("demo", "run the offline demo task (scripted backend)")
    p.add_argument("--headless", action="store_true", help="no TUI: a readable log on stderr")
    p.add_argument("--approvals", choices=("wait", "deny"), default=None, help=approvals_help)

    p = add("run", "run a task file or a prompt")
    p.add_argument("task_file", nargs="*", help="a task file (TOML); several run side by side (headless)")
    p.add_argument("-p", "--prompt", help="a bare prompt: a task with one subtask")
    p.add_argument("--backend", choices=("claude", "openai", "scripted"))
    p.add_argument("--model")
    p.add_argument("--workspace", help="the agent's working directory (prompt runs; default .)")
    p.add_argument("--worktree", action="store_true",
                   help='run in a git worktree of its own (isolation = "worktree"; overrides a task file)')
    p.add_argument("--headless", action="store_true", help="no TUI: a readable log on stderr")
    p.add_argument("--json", action="store_true", help="headless: events as JSON lines on stdout")
    p.add_argument("--approvals", choices=("wait", "deny"), default=None, help=approvals_help)

    p = add("attach", "follow a session another process runs")
    p.add_argument("session", nargs="?", help="session id or prefix (default: the latest live one)")
    cli_search.add_attach_at(p)

    p = add("sessions", "list sessions")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--status")
    p.add_argument("--search", help="filter by text in title/id/backend/model")
    p.add_argument("--limit", type=_limit, default=50)

    p = add("show", "a session as text")
    p.add_argument("session")

    p = add("export", "export a session")
    p.add_argument("session")
    p.add_argument("--format", choices=("jsonl", "md", "otlp"), required=True)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")

    p = add("resume", "resume a paused session; or run an interrupted one again (no runner left), "
                      "or with --retry re-run a subtask of a finished one")
    p.add_argument("session")
    p.add_argument("--retry", metavar="SUBTASK", help="run this subtask again (a person's retry)")
    p.add_argument("--clean", action="store_true",
                   help="with --retry, a worktree session: restore the files to the start of that subtask first "
                        "(the subtasks after it run again too)")
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
        if name == "retry":
            p.add_argument("--clean", action="store_true",
                           help="a worktree session: restore the files to the start of the subtask first")
    cli_worktree.add_parsers(add)
    from shepherd.tui.cli_serve import add_parser as add_serve_parser
    add_serve_parser(add)
    cli_stats.add_parsers(add)
    cli_search.add_parser(add, _limit)
    cli_copy.add_parser(add)
    cli_replay.add_parser(add)
    return parser


# ---------------------------------------------------------------- main


def _home_args(argv: list[str]) -> argparse.Namespace | None:
    """``shepherd`` or ``shepherd --db X``, the home, without building the parser (what
    argparse would make of it); None for anything else (the parser reads it)."""
    if not argv:
        return argparse.Namespace(db=None, command=None)
    if len(argv) == 1 and argv[0].startswith("--db=") and len(argv[0]) > 5:
        return argparse.Namespace(db=argv[0][5:], command=None)
    if len(argv) == 2 and argv[0] == "--db" and argv[1] and not argv[1].startswith("-"):
        return argparse.Namespace(db=argv[1], command=None)
    return None


def _dispatch(args: argparse.Namespace) -> int:
    from shepherd.tui.cli_run import check_task_sandbox, run_headless, run_tui, tasks_from_args

    if args.command is None:
        return run_tui(args)
    from shepherd.tui import cli_copy, cli_replay, cli_search, cli_stats, cli_worktree
    from shepherd.tui.cli_control import cmd_answer, cmd_control, plan_resume, resolve_live
    from shepherd.tui.cli_read import cmd_export, cmd_sessions, cmd_show

    if getattr(args, "approvals", None) == "deny" and not (args.headless or getattr(args, "json", False)):
        raise UsageError("--approvals deny is for headless runs (--headless); in the TUI a person answers")
    if args.command in ("demo", "run"):
        tasks = tasks_from_args(args)
        for task in tasks:
            check_task_sandbox(task)
        if args.headless or getattr(args, "json", False):
            return asyncio.run(run_headless(args, tasks=tasks))
        return run_tui(args, task=tasks if len(tasks) > 1 else tasks[0])
    if args.command == "attach":
        sid = asyncio.run(resolve_live(args))
        return run_tui(args, attach=sid, at_seq=asyncio.run(cli_search.attach_at(args, sid)))
    if args.command == "resume":
        if args.clean and args.retry is None:
            raise UsageError("--clean goes with --retry SUBTASK (it restores the files to that subtask's start)")
        sid, start_here = asyncio.run(plan_resume(args))
        if not start_here:
            return EXIT_OK
        if args.headless or args.json:
            return asyncio.run(run_headless(args, resume=sid, retry=args.retry, clean=args.clean))
        return run_tui(args, resume=(sid, args.retry, args.clean))
    if args.command == "serve":
        from shepherd.tui.cli_serve import cmd_serve
        return cmd_serve(args)
    if args.command == "export" and args.format == "otlp":
        return asyncio.run(cli_stats.cmd_export_otlp(args))
    handlers = {"sessions": cmd_sessions, "show": cmd_show, "export": cmd_export,
                "approve": cmd_answer, "deny": cmd_answer, "search": cli_search.cmd_search,
                "copy": cli_copy.cmd_copy, **cli_worktree.HANDLERS, **cli_stats.HANDLERS,
                **cli_replay.HANDLERS}
    handler = handlers.get(args.command, cmd_control)
    return asyncio.run(handler(args))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _home_args(argv) or build_parser().parse_args(argv)
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
            err(str(e))
            return EXIT_BAD_INPUT
        if isinstance(e, BrokenPipeError):
            return EXIT_OK
        import sqlite3

        if isinstance(e, sqlite3.OperationalError):  # e.g. locked by another process mid-run
            err(f"database error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
