"""Persistence: the ``EventStore`` protocol (protocol.py, the contract) and its SQLite
implementation ``Store`` (db.py). Importing this never imports an SDK."""

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

__all__ = [
    "AgentsSession", "AmbiguousSession", "ClaudeSessionStore", "CommandRow", "DatabaseDamaged", "EventStore",
    "LeaseHeld", "NoDatabase", "NotADatabase", "SCHEMA_VERSION", "SchemaTooNew", "SessionNotFound",
    "SessionEnded", "SessionRow", "Store", "StoreError", "SubtaskRow", "ToolCallRow", "WriterStats", "default_db_path",
    "open_agents_session", "open_claude_session_store",
]
