"""The Backend protocol: one attempt of one subtask = an async stream of events.

A backend turns its SDK's stream into events from ``core.events`` (TextDelta,
ThinkingDelta, MessageCompleted, ToolStarted, ToolFinished, HookDecision, Usage, and
informational Error events with ``retryable``) with only their own fields set; the
supervisor fills in session_id, subtask_id, attempt and the store gives seq/ts.

A failed attempt *raises*: the SDK's own exception, or ``core.errors.AttemptFailed``
wrapping an error result (claude's AssistantMessage.error / ResultMessage.is_error).
The supervisor classifies it, owns every retry and never lets the backend loop.

The attempt ends when the iterator is exhausted (success) or raises. The supervisor
may close the iterator early (``aclose()``) to cancel at once; it sets
``ctx.stop_after_turn`` to ask for a stop at the next safe point (after the current
turn's tool calls finished and the turn is committed to the SDK session).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shepherd.core.clock import Clock, RealClock
from shepherd.core.errors import MissingCredentials
from shepherd.core.events import Event
from shepherd.core.records import record

if TYPE_CHECKING:
    from shepherd.core.approvals import ApprovalGate
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.task import Subtask, Task


@record
class AttemptContext:
    session_id: str
    task: "Task"
    subtask: "Subtask"
    attempt: int  # 1-based, per subtask
    reason: str  # first | retry | restart | user_retry | resume
    prompt: str  # the subtask prompt (the user turn); sent only on a fresh conversation
    prompt_extra: str  # retry context / notes for this attempt ("" if none)
    continue_history: bool  # True: continue from the committed history, never re-send prompt
    workspace: Path
    db_path: Path | None = None  # the store's file, for SDK sessions/transcripts
    store: EventStore | None = None  # the supervisor's store: SDK sessions write through its single writer
    phase: str = "coding"
    repair: bool = False  # tool_concurrency from the 2nd retry: repair the transcript first
    strip_images: bool = False  # images_rejected: strip images from history first
    clock: Clock = field(default_factory=RealClock)
    stop_after_turn: asyncio.Event = field(default_factory=asyncio.Event)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("shepherd.backend"))
    state: dict[str, Any] = field(default_factory=dict)  # backend-private, kept across attempts of a subtask
    # Tool approvals (core.approvals: the contract): None when the task gates no tool.
    approvals: "ApprovalGate | None" = None


class Backend(Protocol):
    name: str

    def attempt(self, ctx: AttemptContext) -> AsyncIterator[Event]:
        """Run one attempt; yield events; raise on failure."""
        ...


class BackendUnavailable(Exception):
    """The backend cannot start at all (missing credentials, missing CLI): a clear,
    one-line reason for the user; nothing is retried."""


class NoCredentials(BackendUnavailable, MissingCredentials):
    """The backend has no credentials (no API key, no login): classified ``auth``."""
