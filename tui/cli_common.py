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


DB_HELP = "database file (default: $SHEPHERD_DB or $XDG_DATA_HOME/shepherd/shepherd.db)"
DONE_STATUSES = (S.DONE, S.FAILED, S.CANCELLED)  # a session no runner will continue


def db_path(args: argparse.Namespace) -> Path:
    """Where the database is (nothing is made here: only a store opened with create does)."""
    from shepherd.core.store import default_db_path

    if args.db is not None and not args.db.strip():  # `--db "$UNSET"`: not the default database
        raise UsageError("--db: the path is empty")
    return Path(args.db).expanduser() if args.db else default_db_path()


async def open_store(args: argparse.Namespace, *, create: bool = False, check: bool = True) -> EventStore:
    """Only a run creates a database (``create``); commands about existing sessions make
    no directory and no file (a missing one is NoDatabase). ``check``: PRAGMA quick_check
    first, for every command that may write (runs, resumes, control commands); readers
    skip it and meet damage where they read."""
    from shepherd.core.store import Store

    return await Store.open(db_path(args), create=create, check=check)


def err(message: str) -> None:
    print(f"shepherd: {message}", file=sys.stderr)
