"""What every `shepherd` subcommand shares: the exit codes, the one-line bad-input error,
where the database is and how a command opens it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shepherd.core.states import SessionStatus as S

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input: one line on stderr, exit 2."""


DB_HELP = ("database: a SQLite file or a postgresql://user@host:port/dbname URL "
           "(default: $SHEPHERD_DB or $XDG_DATA_HOME/shepherd/shepherd.db)")
DONE_STATUSES = (S.DONE, S.FAILED, S.CANCELLED)  # a session no runner will continue


def db_target(args: argparse.Namespace) -> Path | str:
    """Where the database is: a SQLite file (a Path) or a PostgreSQL URL (kept a string:
    Path() would turn "postgresql://" into "postgresql:/"). Nothing is made here."""
    import os

    from shepherd.core.store import default_db_path, is_store_url

    if args.db is not None and not args.db.strip():  # `--db "$UNSET"`: not the default database
        raise UsageError("--db: the path is empty")
    given = args.db.strip() if args.db else os.environ.get("SHEPHERD_DB", "").strip()
    if is_store_url(given):
        return _checked_url(given)
    return Path(args.db).expanduser() if args.db else default_db_path()


def _checked_url(url: str) -> str:
    """A URL urlsplit can read (a bad one is one line, with no password in it)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError as e:
        raise UsageError(f"--db: not a PostgreSQL URL ({e}); expected postgresql://user@host:port/dbname") from None
    return url


def db_path(args: argparse.Namespace) -> Path:
    """The SQLite file, for the uses that need one (a PostgreSQL URL has no file)."""
    target = db_target(args)
    if isinstance(target, str):
        raise UsageError("this needs a SQLite database file, not a PostgreSQL URL")
    return target


def is_pg_target(target: object) -> bool:
    from shepherd.core.store import is_store_url

    return is_store_url(target)


async def open_store(args: argparse.Namespace, *, create: bool = False, check: bool = True) -> EventStore:
    """Only a run creates a database (``create``); commands about existing sessions make
    no directory and no file (a missing one is NoDatabase). ``check``: PRAGMA quick_check
    first, for every command that may write (runs, resumes, control commands); readers
    skip it and meet damage where they read."""
    from shepherd.core.store import open_store as open_any

    return await open_any(db_target(args), create=create, check=check)


def event_seq(text: str) -> int:
    """argparse type of ``--at SEQ`` (replay, attach): an event's number, as `search` prints it."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an event number (a whole number, 1 or more)")
    return n


def check_at(command: str, at: int | None, sid: str, last: int) -> None:
    """``--at`` against the session's last event: one line (exit 2) for one it does not have."""
    if at is not None and at > last:
        raise UsageError(f"{command} --at {at}: session {sid} has events 1 to {last}")


def err(message: str) -> None:
    print(f"shepherd: {message}", file=sys.stderr)
