"""What the session screen shows besides blocks: a subtask row, the session's header, and
``Changes``, the summary of one ``apply`` (so the screen touches only that)."""

from __future__ import annotations

from dataclasses import field

from shepherd.core.records import record
from shepherd.core.stats import Tally
from shepherd.core.text import safe
from shepherd.tui.model.blocks import Block, RetryBlock, ToolBlock
from shepherd.core.states import VIEW_LIVE_STATUSES, SessionStatus, SubtaskState

SESSION_PSEUDO_ID = ""  # blocks of session-level events seen before any subtask


@record(eq=False)
class SubtaskView:
    id: str
    title: str = ""
    position: int = 0
    phase: str = "coding"
    state: str = SubtaskState.PENDING
    attempts: int = 0
    retries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    last_error_kind: str | None = None
    planned: bool = False
    cost: Tally | None = None  # tokens and cost of its attempts (None: not known here)
    waste: Tally | None = None  # the part spent on attempts that failed or were retried
    retry: RetryBlock | None = None  # the wait in progress, if any
    blocks: list[Block] = field(default_factory=list)
    version: int = 0
    _state_before_pause: str | None = None
    # Windowing: the model keeps the last blocks of a subtask; older ones are in the store.
    has_earlier: bool = False  # blocks of this subtask may precede blocks[0] in the store
    pinned: Block | None = None  # the first block on screen: never pruned, nor what follows
    detached: list[Block] = field(default_factory=list)  # open blocks pruned (still updated)

    @property
    def label(self) -> str:
        return self.title or safe(self.id) or "session"

    def open_tools(self) -> list[ToolBlock]:
        return [b for b in (*self.detached, *self.blocks) if isinstance(b, ToolBlock) and b.running]


@record(eq=False)
class SessionInfo:
    id: str = ""
    title: str = ""
    backend: str = ""
    model: str | None = None
    workspace: str = ""
    status: str = SessionStatus.PENDING
    started_at: float | None = None
    ended_at: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = False  # some usage reported a cost (else cost_usd says nothing)
    waste: Tally = field(default_factory=Tally)  # retry waste (core.stats' rules)
    retries: int = 0
    last_event_ts: float | None = None
    last_activity_ts: float | None = None  # last event that was not a heartbeat (or hb - idle)
    heartbeat_ts: float | None = None
    idle_s: float | None = None
    open_calls: int = 0
    stalled: bool = False
    pause_requested: bool = False
    approvals_waiting: int = 0  # tool calls asked and not answered yet
    version: int = 0

    @property
    def is_live(self) -> bool:
        return self.status in VIEW_LIVE_STATUSES

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def elapsed(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if (self.ended_at is not None and not self.is_live) else now
        return max(0.0, end - self.started_at)

    def idle(self, now: float) -> float | None:
        """Seconds since anything but a heartbeat happened (only meaningful while live)."""
        if self.last_activity_ts is None:
            return None
        return max(0.0, now - self.last_activity_ts)


@record
class Changes:
    """What one ``apply`` touched, so the screen updates just that."""

    session: bool = False
    structure: bool = False  # subtasks were added (list must be rebuilt)
    subtasks: set[str] = field(default_factory=set)  # ids whose row changed
    added: list[Block] = field(default_factory=list)
    updated: dict[int, Block] = field(default_factory=dict)  # bid -> block (not in added)
    added_ids: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.session or self.structure or self.subtasks or self.added or self.updated)

    def merge(self, other: "Changes") -> None:
        self.session |= other.session
        self.structure |= other.structure
        self.subtasks |= other.subtasks
        for b in other.added:
            if b.bid not in self.added_ids:
                self.added.append(b)
                self.added_ids.add(b.bid)
                self.updated.pop(b.bid, None)
        for bid, b in other.updated.items():
            if bid not in self.added_ids:
                self.updated[bid] = b

