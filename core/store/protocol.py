"""The store seam: ``EventStore``, the CONTRACT every other module codes against.

The engine, a backend's ``AttemptContext``, the TUI and the CLI use a store only through
this protocol; ``core.store.db.Store`` is its SQLite implementation (a PostgreSQL one is
next). It is grouped as a store is used:

  EventWriter   append/submit (one writer per process, batched, committed within 50 ms),
                urge/flush, subscribe (after each commit), run_rows/submit_rows
  EventReader   sessions, events (paged both ways), subtasks, tool calls, a subtask's
                history and pages, ``tail`` (follow another process), ``damaged_events``
  Leases        one runner per live session (``owner``: this store's lease owner string)
  Commands      cross-process control (the commands table)
  Recovery      close the live sessions whose runner is gone
  SDKSessions   the openai-agents Session and claude_agent_sdk SessionStore kept beside
                the events, written through this store

and ``path``, ``clock``, ``close`` and ``async with``. Opening is each implementation's
own (``Store.open(path, *, clock=None, recover=True, create=True, check=True)``): only an
open for writing (``create=True``) may make a directory or a file.

Rows are ``core.store.rows``; errors are ``core.store.errors`` (every implementation
raises those: StoreError for a problem the user hears in one line, SessionNotFound /
AmbiguousSession, LeaseHeld, NoDatabase, DatabaseDamaged, ...). The module itself needs
only the standard library, but importing it loads the ``core.store`` package (the SQLite
store, aiosqlite): annotate with it under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from shepherd.core.cost_ledger import CostLedger
    from shepherd.core.clock import Clock
    from shepherd.core.events import Event
    from shepherd.core.store.agents_session import AgentsSession
    from shepherd.core.store.claude_store import ClaudeSessionStore
    from shepherd.core.store.rows import ApprovalRow, CommandRow, SessionRow, SubtaskRow, ToolCallRow, WorktreeRow
    from shepherd.core.store.search import SearchHit

T = TypeVar("T")

# What ``run_rows`` hands its function: the implementation's own plain, synchronous
# connection inside its write transaction (``sqlite3.Connection`` for SQLite). Code that
# uses it speaks that database's SQL, so it lives beside that implementation (the SDK
# adapters: reach them through ``agents_session`` / ``claude_session_store``).
RawConnection = Any

# The events a subtask's attempt numbers and retry budget are rebuilt from (the default
# ``types`` of ``subtask_history``).
SUBTASK_HISTORY_TYPES = ("subtask.started", "attempt.started", "error", "retry.scheduled", "subtask.finished")


@runtime_checkable
class EventWriter(Protocol):
    """Writing: one writer task per process, in submission order, batched; an event is
    committed at most ~50 ms after its submit while the load is within the writer's
    capacity. Every event is scrubbed of secrets on the way in."""

    async def append(self, event: Event) -> Event | None:
        """The committed event, seq and ts set; None if it was dropped (a 2nd tool.finished
        for a call_id, or a tool.started for a call that already finished)."""
        ...

    async def append_together(self, *events: Event) -> list[Event | None]:
        """``events`` in one transaction: a crash keeps all of them or none."""
        ...

    def submit(self, event: Event, *, lazy: bool = False) -> asyncio.Future[Event | None]:
        """``append`` without waiting. ``lazy``: nothing acts on it before the next urgent
        submit, whose commit it may wait for (up to 25 ms; see ``urge``)."""
        ...

    def urge(self) -> None:
        """Commit everything queued so far at once, lazy items too."""
        ...

    async def flush(self) -> None:
        """Wait until everything submitted before this call is committed (or failed)."""
        ...

    def subscribe(self, callback: Callable[[list[Event]], Any]) -> Callable[[], None]:
        """``callback(events)`` runs in the event loop after each commit, with the
        committed events in seq order; returns the function that unsubscribes."""
        ...

    async def run_rows(self, fn: Callable[[RawConnection], T]) -> T:
        """``fn(raw connection)`` in the writer's next transaction, after the events queued
        before it, for tables of its own (history rows, leases); in a savepoint: if it
        raises, only its own changes are undone and the caller gets the error."""
        ...

    def submit_rows(self, fn: Callable[[RawConnection], T], *, lazy: bool = False) -> asyncio.Future[T]:
        """``run_rows`` without waiting (``lazy`` as for ``submit``)."""
        ...


@runtime_checkable
class EventReader(Protocol):
    """Reading committed data (another process's too). Event lists are in ascending seq;
    an event row that does not decode reads as a ``damaged`` OpaqueEvent and its
    (session, seq) is added to ``damaged_events``."""

    damaged_events: set[tuple[str, int]]

    async def list_sessions(self, status: str | Iterable[str] | None = None, text: str | None = None,
                            limit: int = 50, offset: int = 0) -> list[SessionRow]:
        """Newest first; ``status`` one or several; ``text`` matches title, id, backend, model."""
        ...

    async def count_sessions(self, status: str | Iterable[str] | None = None) -> int: ...

    async def get_session(self, session_id: str) -> SessionRow | None: ...

    async def resolve_session(self, id_or_prefix: str) -> str:
        """The full id; SessionNotFound / AmbiguousSession otherwise."""
        ...

    async def latest_session_id(self, status: str | Iterable[str] | None = None) -> str | None: ...

    async def events(self, session_id: str, after_seq: int = 0, limit: int | None = 1000,
                     types: Iterable[str] | None = None) -> list[Event]:
        """Events with seq > after_seq; ``types`` keeps only those types."""
        ...

    async def events_before(self, session_id: str, before_seq: int, limit: int = 500) -> list[Event]:
        """Up to ``limit`` events with seq < before_seq (scrolling back)."""
        ...

    async def last_seq(self, session_id: str) -> int: ...

    async def subtasks(self, session_id: str) -> list[SubtaskRow]:
        """In plan order."""
        ...

    async def cost_ledger(self, session_id: str) -> CostLedger | None:
        """Tokens, cost and retry waste per attempt (core.cost_ledger), at the seq it names;
        None for no such session."""
        ...

    async def tool_calls(self, session_id: str, status: str | None = None) -> list[ToolCallRow]: ...

    async def approvals(self, session_id: str, *, pending: bool = True,
                        subtask_id: str | None = None) -> list[ApprovalRow]:
        """A session's approvals (pending ones only unless ``pending=False``), oldest asked first."""
        ...

    async def approval(self, session_id: str, call_id: str) -> ApprovalRow | None: ...

    async def search(self, query: str, *, session_id: str | None = None, limit: int = 50) -> list[SearchHit]:
        """Full-text search (core.store.search): every term of ``query`` as a word (never
        syntax), over message text, tool inputs/outputs, errors, notes and reasons; newest
        first; the snippet marks each match with MARK_START / MARK_END."""
        ...

    async def session_tools(self, session_id: str) -> set[str]:
        """Tools a person approved for the rest of the session (scope "session")."""
        ...

    async def worktree(self, session_id: str) -> WorktreeRow | None:
        """The session's worktree (isolation = "worktree"), or None for any other session."""
        ...

    async def worktrees(self, state: str | None = None, repo: str | None = None) -> list[WorktreeRow]:
        """Every session's worktree, optionally only in ``state`` / of the git dir ``repo``."""
        ...

    async def checkpoints(self, session_id: str) -> list[Event]:
        """The session's ``checkpoint`` events, ascending by seq."""
        ...

    async def subtask_history(self, session_id: str, subtask_id: str,
                              types: Iterable[str] = SUBTASK_HISTORY_TYPES) -> tuple[int, list[Event]]:
        """The highest attempt number of the subtask's events, and its ``types`` events:
        what a runner rebuilds its attempt numbers and retry budget from."""
        ...

    async def last_plan(self, session_id: str) -> list[dict[str, Any]] | None:
        """The subtasks of the session's latest plan.ready, or None if it has none."""
        ...

    def tail(self, session_id: str, after_seq: int = 0, poll_s: float = 0.1,
             page: int = 1000) -> AsyncIterator[list[Event]]:
        """Follow a session another process writes: each new run of events, polling
        (through the clock) every ``poll_s`` while nothing is new."""
        ...

    async def subtask_events_before(self, session_id: str, subtask_id: str, before_seq: int,
                                    limit: int = 500) -> list[Event]:
        """Up to ``limit`` events a subtask's view is folded from (its own, the session's
        and every start), seq < before_seq."""
        ...

    async def subtask_events_after(self, session_id: str, subtask_id: str, after_seq: int,
                                   limit: int = 500) -> list[Event]:
        """The same selection with seq > after_seq (looking ahead)."""
        ...

    async def current_subtask_at(self, session_id: str, before_seq: int) -> str | None:
        """The subtask the last start before ``before_seq`` made current."""
        ...


@runtime_checkable
class Leases(Protocol):
    """One runner per live session. A runner acquires the lease BEFORE appending
    session.started and refreshes it well within ``ttl_s``; recovery treats a live
    session without a valid lease as one whose runner died."""

    owner: str  # this store's lease owner string (host:pid:random)

    async def acquire_lease(self, session_id: str, ttl_s: float = 60) -> None:
        """LeaseHeld(owner) if a live runner has it; an expired lease, or one of a dead
        process on this host, is taken over."""
        ...

    async def refresh_lease(self, session_id: str, ttl_s: float = 60) -> None:
        """Extend ours; if it was lost meanwhile, take it again or raise LeaseHeld."""
        ...

    async def release_lease(self, session_id: str) -> None: ...

    def release_lease_soon(self, session_id: str) -> asyncio.Future[None]:
        """The release queued now: it shares the commit of what was submitted just before."""
        ...

    async def lease_owner(self, session_id: str) -> str | None:
        """None when free or expired."""
        ...


@runtime_checkable
class Commands(Protocol):
    """Cross-process control: a person's command for a session another process runs."""

    async def enqueue_command(self, session_id: str, command: str, subtask_id: str | None = None,
                              text: str = "", source: str = "cli", *, call_id: str | None = None) -> int:
        """ValueError for a command outside ``core.states.Command``; returns its id.
        ``call_id``: the call an approve/deny answers (None: the oldest pending)."""
        ...

    async def take_commands(self, session_id: str) -> list[CommandRow]:
        """Untaken commands, oldest first, marked taken atomically."""
        ...


@runtime_checkable
class RunStates(Protocol):
    """An SDK's serialised run state, kept while its tool calls await a person (openai-agents
    ``RunState.to_string()``): saved durably before the calls are asked, restored by the
    next attempt, dropped once none of its calls is left undecided."""

    async def save_run_state(self, session_id: str, subtask_id: str, call_ids: list[str], state: str) -> None:
        """Committed when it returns; the text is scrubbed of secrets; replaces an older one."""
        ...

    async def load_run_state(self, session_id: str, subtask_id: str) -> tuple[list[str], str] | None:
        """(call ids, state text) or None."""
        ...

    async def drop_run_state(self, session_id: str, subtask_id: str) -> None: ...


@runtime_checkable
class Recovery(Protocol):
    async def recover(self) -> list[str]:
        """Close sessions whose runner is gone (tool.finished(interrupted) for each running
        call, then session.interrupted) and kill what a dead runner of this host left
        running; the ids. Idempotent: a second call finds nothing."""
        ...


@runtime_checkable
class SDKSessions(Protocol):
    def agents_session(self, session_id: str, session_settings: Any = None, *,
                       deferred: bool = False) -> AgentsSession:
        """An openai-agents Session kept in this store, written through it."""
        ...

    def claude_session_store(self) -> ClaudeSessionStore:
        """A claude_agent_sdk SessionStore kept in this store, written through it."""
        ...


@runtime_checkable
class EventStore(EventWriter, EventReader, Leases, Commands, RunStates, Recovery, SDKSessions, Protocol):
    """A whole store: every group above, plus where it is and the clock it dates with."""

    path: Path
    clock: Clock

    async def close(self) -> None:
        """Commit everything submitted so far, then release the connections."""
        ...

    async def __aenter__(self) -> EventStore: ...

    async def __aexit__(self, *exc: object) -> None: ...


__all__ = ["Commands", "EventReader", "EventStore", "EventWriter", "Leases", "RawConnection", "Recovery",
           "SDKSessions", "SUBTASK_HISTORY_TYPES"]
