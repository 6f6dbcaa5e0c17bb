"""The blocks of a subtask's stream: one dataclass per visual unit, and the retry line's text.

Pure data (no Textual): widgets render a block from its fields and re-render it when its
``version`` changes.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

from shepherd.core.errors import kind_label
from shepherd.core.records import record
from shepherd.core.states import SubtaskState
from shepherd.tui.fmt import fmt_duration, fmt_seconds_left



@record(eq=False)
class Block:
    """One visual unit of a subtask's stream. ``bid`` is unique within a model."""

    kind: ClassVar[str] = "block"
    bid: int
    subtask_id: str
    seq: int
    ts: float
    attempt: int | None = None
    version: int = 0

    @property
    def key(self) -> str:
        return f"b{self.bid}"


@record(eq=False)
class AttemptBlock(Block):
    kind: ClassVar[str] = "attempt"
    number: int = 1
    reason: str = "first"
    prompt_extra: str = ""
    cost: Any = None  # its core.stats.AttemptCost (the model's cost ledger's; None: not known here)


@record(eq=False)
class TextBlock(Block):
    kind: ClassVar[str] = "text"
    message_id: str = ""
    role: str = "assistant"
    text: str = ""
    completed: bool = False
    full: bool = False  # the completion carried the whole text (not only what streamed)


@record(eq=False)
class ThinkingBlock(Block):
    kind: ClassVar[str] = "thinking"
    message_id: str = ""
    text: str = ""
    completed: bool = False
    full: bool = False


@record(eq=False)
class ToolBlock(Block):
    kind: ClassVar[str] = "tool"
    call_id: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    summary: str = ""  # compact one-line input
    status: str = "running"  # running | ok | error | denied | interrupted
    output: str = ""
    duration_s: float | None = None
    started_ts: float | None = None
    finished_ts: float | None = None
    denial: str = ""  # reason from a hook.decision(deny)
    # approval (approve_tools): "" (not gated) | waiting | approved | denied | unanswered
    # (the call ended, or the runner stopped, before anyone answered: never approved)
    approval: str = ""
    approval_ts: float | None = None  # when it was asked
    approval_source: str = ""  # tui | cli | rule | headless
    approval_reason: str = ""
    approval_scope: str = "call"  # call | session
    reask_of: str | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def awaiting(self) -> bool:
        """Asked and not answered yet, while the call is still open."""
        return self.approval == "waiting" and self.running

    def waited(self, now: float) -> float | None:
        """Seconds the approval has waited (while it waits)."""
        if self.approval_ts is None:
            return None
        return max(0.0, now - self.approval_ts)

    def elapsed(self, now: float) -> float | None:
        """Seconds the call has run (final duration once finished)."""
        if self.duration_s is not None:
            return self.duration_s
        if self.started_ts is None:
            return None
        end = self.finished_ts if self.finished_ts is not None else now
        return max(0.0, end - self.started_ts)


@record(eq=False)
class HookBlock(Block):
    kind: ClassVar[str] = "hook"
    call_id: str = ""
    tool: str = ""
    decision: str = "deny"
    reason: str = ""


@record(eq=False)
class RetryBlock(Block):
    kind: ClassVar[str] = "retry"
    err_kind: str = "unknown"
    retry_no: int = 1
    max_retries: int = 0
    delay_s: float = 0.0
    resume_at: float = 0.0
    action: str = "retry"
    active: bool = True  # False once the next attempt started (or the wait ended otherwise)
    outcome: str = ""  # why it stopped waiting: "" | "started" | "retry_now" | "paused" | "user_retry" | ...

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.resume_at - now) if self.active else 0.0

    @property
    def wait_s(self) -> float:
        """The real length of the wait: resume_at is when the engine really resumes (under
        SHEPHERD_TIME_SCALE that is not delay_s, which stays nominal)."""
        if self.ts and self.resume_at > self.ts:
            return self.resume_at - self.ts
        return self.delay_s

    def progress(self, now: float) -> float:
        """0.0 at scheduling, 1.0 when the wait is over."""
        if not self.active or self.wait_s <= 0:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.seconds_left(now) / self.wait_s))

    def text(self, now: float) -> str:
        return retry_text(self.err_kind, self.retry_no, self.max_retries,
                          self.seconds_left(now) if self.active else None, self.action)

    def summary(self) -> str:
        """The line once the wait is over: what really ended it (never a wait it skipped)."""
        head = retry_text(self.err_kind, self.retry_no, self.max_retries, None, self.action)
        if self.outcome == "started":
            return f"{head} after {fmt_duration(self.wait_s)}" if self.wait_s > 0 else head
        tail = RETRY_OUTCOMES.get(self.outcome, f" ({self.outcome})" if self.outcome else "")
        return head + tail


@record(eq=False)
class ErrorBlock(Block):
    kind: ClassVar[str] = "error"
    err_kind: str = "unknown"
    message: str = ""
    exception_type: str = ""
    status_code: int | None = None
    retryable: bool = False


@record(eq=False)
class NoteBlock(Block):
    """Control and lifecycle lines (pause, resume, notes, unknown events)."""

    kind: ClassVar[str] = "note"
    category: str = "control"  # control | note | pause | resume | session | opaque | stall
    text: str = ""
    source: str = ""


@record(eq=False)
class SubtaskEndBlock(Block):
    kind: ClassVar[str] = "end"
    status: str = SubtaskState.DONE
    reason: str = ""


def is_open(b: Block) -> bool:
    """A block later events may still change (kept reachable when pruned)."""
    if isinstance(b, ToolBlock):
        return b.running
    if isinstance(b, (TextBlock, ThinkingBlock)):
        return bool(b.message_id) and not b.completed
    if isinstance(b, RetryBlock):
        return b.active
    return False


def block_key(b: Block) -> tuple[str, str] | None:
    """What identifies a block across pages: its call or its message."""
    if isinstance(b, ToolBlock) and b.call_id:
        return ("tool", b.call_id)
    if isinstance(b, (TextBlock, ThinkingBlock)) and b.message_id:
        return (b.kind, b.message_id)
    return None


# --- the retry line ----------------------------------------------------------------------

ACTION_LABELS = {"retry": "retry", "restart": "restart", "repair": "repair + retry"}
RETRY_OUTCOMES = {"retry_now": " now (wait skipped)", "user_retry": " (restarted by a person)",
                  "paused": " (paused: starts on resume)", "superseded": " (superseded)"}


def retry_text(kind: str, retry_no: int, max_retries: int, seconds_left: float | None,
               action: str = "retry") -> str:
    """'tool concurrency — retry 2/5 in 3 s'. ``seconds_left=None``: the wait is over."""
    verb = ACTION_LABELS.get(action, action or "retry")
    count = f"{retry_no}/{max_retries}" if max_retries else f"{retry_no}"
    head = f"{kind_label(kind)} — {verb} {count}"
    if seconds_left is None:
        return head
    if seconds_left <= 0:
        return f"{head} now"
    return f"{head} in {fmt_seconds_left(seconds_left)}"

