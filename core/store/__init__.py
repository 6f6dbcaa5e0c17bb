"""Persistence: the ``EventStore`` protocol (protocol.py, the contract), its SQLite
implementation ``Store`` (db.py) and its PostgreSQL one (``pg.PgStore``, imported only when
a ``postgresql://`` URL is opened). ``open_store(target)`` picks one. Importing this never
imports an SDK (nor psycopg)."""

import os as _os
from pathlib import Path as _Path
from typing import Any as _Any

from shepherd.core.store.agents_session import AgentsSession, open_agents_session
from shepherd.core.store.claude_store import ClaudeSessionStore, open_claude_session_store
from shepherd.core.store.db import Store, WriterStats
from shepherd.core.store.errors import (
    AmbiguousSession,
    DatabaseDamaged,
    LeaseHeld,
    NoDatabase,
    NotADatabase,
    SchemaTooNew,
    SessionEnded,
    SessionNotFound,
    StoreError,
)
from shepherd.core.store.protocol import EventStore
from shepherd.core.store.rows import CommandRow, SessionRow, SubtaskRow, ToolCallRow
from shepherd.core.store.schema import SCHEMA_VERSION, default_db_path



def is_store_url(target: object) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


async def open_store(target: "str | _Path | None" = None, **kwargs: _Any) -> EventStore:
    """The store ``target`` names: a ``postgresql://`` URL is PostgreSQL (``PgStore``), a
    path (or None: $SHEPHERD_DB, else the default file) SQLite. ``kwargs`` go to ``open``."""
    if target is None:
        env = _os.environ.get("SHEPHERD_DB", "").strip()
        target = env if is_store_url(env) else None
    if is_store_url(target):
        try:
            from shepherd.core.store.pg import PgStore
        except ImportError as e:  # psycopg missing: one line, not a traceback
            raise StoreError(f"PostgreSQL needs the postgres extra (pip install 'shepherd-agents[postgres]'): "
                             f"{e}") from None
        return await PgStore.open(str(target), **kwargs)
    return await Store.open(target, **kwargs)


__all__ = [
    "AgentsSession", "AmbiguousSession", "ClaudeSessionStore", "CommandRow", "DatabaseDamaged", "EventStore",
    "LeaseHeld", "NoDatabase", "NotADatabase", "SCHEMA_VERSION", "SchemaTooNew", "SessionNotFound",
    "SessionEnded", "SessionRow", "Store", "StoreError", "SubtaskRow", "ToolCallRow", "WriterStats", "default_db_path",
    "is_store_url", "open_agents_session", "open_claude_session_store", "open_store",
]
