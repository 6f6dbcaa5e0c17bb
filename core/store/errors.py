"""The store's errors: what any store (SQLite today) raises for a problem the user must
hear about. Imports nothing of ours, so the schema, the queries and every store use it
without a circle."""

from __future__ import annotations


class StoreError(Exception):
    """A database problem the user must hear about in one line (exit 2)."""


class SchemaTooNew(StoreError):
    pass


class NotADatabase(StoreError):
    pass


class NoDatabase(StoreError):
    """A read-only open found no database (nothing was created)."""


class DatabaseDamaged(StoreError):
    """SQLite cannot read part of the file (truncated, a corrupted page): nothing writes to it."""


class SessionNotFound(StoreError):
    pass


class AmbiguousSession(StoreError):
    pass


class LeaseHeld(StoreError):
    def __init__(self, session_id: str, owner: str) -> None:
        super().__init__(f"session {session_id} is already being run by {owner}")
        self.session_id = session_id
        self.owner = owner


class SessionEnded(StoreError):
    """A plain resume found the session finished by the time it held the lease (another
    resume ran it to its end first): nothing to resume, and nothing is written."""


__all__ = [
    "AmbiguousSession", "DatabaseDamaged", "LeaseHeld", "NoDatabase", "NotADatabase", "SchemaTooNew",
    "SessionEnded", "SessionNotFound", "StoreError",
]
