"""One vocabulary for what a session, a subtask and a person's command can be.

Every layer speaks these names: the store's derivation, the engine, the view model and
the command line. They are ``StrEnum``s, so a member *is* its string: it is stored,
compared and printed as the bare word, and older rows read back without translation.
The module imports nothing of ours, so anything may import it (no circles).
"""

from __future__ import annotations

from enum import StrEnum


class SessionStatus(StrEnum):
    """A session's stored status (``sessions.status``), plus the two a view shows
    before the first event arrives (never stored)."""

    PENDING = "pending"          # view only: nothing recorded yet
    STARTING = "starting"        # view only: a runner is starting
    RUNNING = "running"
    WAITING = "waiting"          # a retry countdown
    PAUSED = "paused"
    STUCK = "stuck"              # waiting for a person (its budget or retries spent)
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its runner died; recovery settled it


class SubtaskState(StrEnum):
    """A subtask's state (``subtasks.status``); DESIGN's Supervision section."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING_RETRY = "waiting_retry"
    WAITING_APPROVAL = "waiting_approval"  # a tool call waits for a person's yes (inside the attempt)
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    STUCK = "stuck"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class Command(StrEnum):
    """What a person can ask of a running session (the commands table, the
    ``Controller`` protocol, ``shepherd pause|resume|...``)."""

    PAUSE = "pause"
    PAUSE_NOW = "pause_now"
    RESUME = "resume"
    RETRY = "retry"
    RETRY_NOW = "retry_now"
    SKIP = "skip"
    CANCEL = "cancel"
    NOTE = "note"
    APPROVE = "approve"  # a tool call awaiting approval (commands.call_id; text: unused)
    DENY = "deny"  # text: the person's reason


S = SessionStatus
T = SubtaskState

# Stored session statuses while a runner owns the session. The store derives only these
# and the finished ones for a session.
LIVE_STATUSES = frozenset({S.RUNNING, S.WAITING, S.PAUSED, S.STUCK})
FINISHED_STATUSES = frozenset({S.DONE, S.FAILED, S.CANCELLED, S.INTERRUPTED})
# What a session view shows before the session's first event has arrived: never stored,
# but live too (nothing may be settled as interrupted while it is starting).
UNSTARTED_STATUSES = frozenset({S.PENDING, S.STARTING})
# A session view is live while a runner owns its session or it is still starting.
VIEW_LIVE_STATUSES = LIVE_STATUSES | UNSTARTED_STATUSES

# Subtask states in which nothing will move by itself any more.
FINAL_STATES = frozenset({T.DONE, T.FAILED, T.STUCK, T.SKIPPED, T.CANCELLED, T.INTERRUPTED})
ACTIVE_STATES = frozenset({T.RUNNING, T.WAITING_RETRY, T.WAITING_APPROVAL, T.PAUSED})
SUBTASK_STATES = tuple(SubtaskState)

COMMANDS = tuple(Command)

__all__ = [
    "ACTIVE_STATES", "COMMANDS", "Command", "FINAL_STATES", "FINISHED_STATUSES", "LIVE_STATUSES",
    "SUBTASK_STATES", "SessionStatus", "SubtaskState", "UNSTARTED_STATUSES", "VIEW_LIVE_STATUSES",
]
