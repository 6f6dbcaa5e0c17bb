"""SQLite persistence (see db.py for the contract). Importing this never imports an SDK."""

from core.store.agents_session import AgentsSession, open_agents_session
from core.store.claude_store import ClaudeSessionStore, open_claude_session_store
from core.store.db import (
    AmbiguousSession,
    CommandRow,
    DatabaseDamaged,
    LeaseHeld,
    NoDatabase,
    NotADatabase,
    SchemaTooNew,
    SessionEnded,
    SessionNotFound,
    SessionRow,
    Store,
    StoreError,
    SubtaskRow,
    ToolCallRow,
    WriterStats,
)
from core.store.schema import SCHEMA_VERSION, default_db_path

__all__ = [
    "AgentsSession", "AmbiguousSession", "ClaudeSessionStore", "CommandRow", "DatabaseDamaged",
    "LeaseHeld", "NoDatabase", "NotADatabase", "SCHEMA_VERSION", "SchemaTooNew", "SessionNotFound",
    "SessionEnded", "SessionRow", "Store", "StoreError", "SubtaskRow", "ToolCallRow", "WriterStats", "default_db_path",
    "open_agents_session", "open_claude_session_store",
]
