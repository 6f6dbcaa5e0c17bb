"""A pure projection of events into view state for the session screen.

No Textual here: ``SessionModel.apply(events)`` folds events into a ``SessionInfo``,
subtasks in plan order, and per subtask an ordered list of blocks (attempt separators,
streamed text, tool calls, retries, ...). Every mutated block, subtask and the session
get a fresh ``version`` so widgets re-render only what changed; ``apply`` also returns
a ``Changes`` summary so the screen touches nothing else.

History is loaded as "derived rows + the last page of events": the rows already hold
totals (tokens, cost, retries) up to ``SessionRow.last_seq``, so counters are only
accumulated for events after that (``base_seq``), while states are simply replayed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from core import events as ev
from core.errors import kind_label
from core.report import clip as _clip
from core.report import compact_input
from core.text import safe, safe_fields

# Identifiers the model keys on and sends back in commands: kept exact (shown through ``safe``).
ID_FIELDS = ("session_id", "subtask_id", "call_id", "message_id", "id")
_PLAN_KEEP = (*ID_FIELDS, "subtasks")  # the plan holds ids too: its titles are made safe one by one

# Session statuses that mean "a runner owns this session right now".
LIVE_STATUSES = frozenset({"running", "paused", "waiting", "stuck", "pending", "starting"})
# Subtask states in which nothing will move by itself any more.
FINAL_STATES = frozenset({"done", "failed", "stuck", "skipped", "cancelled", "interrupted"})
ACTIVE_STATES = frozenset({"running", "waiting_retry", "paused"})
SUBTASK_STATES = ("pending", "running", "waiting_retry", "paused", "done", "failed", "stuck",
                  "skipped", "cancelled", "interrupted")

SESSION_PSEUDO_ID = ""  # blocks of session-level events seen before any subtask


# --- blocks ---------------------------------------------------------------------------


@dataclass(eq=False)
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


@dataclass(eq=False)
class AttemptBlock(Block):
    kind: ClassVar[str] = "attempt"
    number: int = 1
    reason: str = "first"
    prompt_extra: str = ""


@dataclass(eq=False)
class TextBlock(Block):
    kind: ClassVar[str] = "text"
    message_id: str = ""
    role: str = "assistant"
    text: str = ""
    completed: bool = False
    full: bool = False  # the completion carried the whole text (not only what streamed)


@dataclass(eq=False)
class ThinkingBlock(Block):
    kind: ClassVar[str] = "thinking"
    message_id: str = ""
    text: str = ""
    completed: bool = False
    full: bool = False


@dataclass(eq=False)
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

    @property
    def running(self) -> bool:
        return self.status == "running"

    def elapsed(self, now: float) -> float | None:
        """Seconds the call has run (final duration once finished)."""
        if self.duration_s is not None:
            return self.duration_s
        if self.started_ts is None:
            return None
        end = self.finished_ts if self.finished_ts is not None else now
        return max(0.0, end - self.started_ts)


@dataclass(eq=False)
class HookBlock(Block):
    kind: ClassVar[str] = "hook"
    call_id: str = ""
    tool: str = ""
    decision: str = "deny"
    reason: str = ""


@dataclass(eq=False)
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


@dataclass(eq=False)
class ErrorBlock(Block):
    kind: ClassVar[str] = "error"
    err_kind: str = "unknown"
    message: str = ""
    exception_type: str = ""
    status_code: int | None = None
    retryable: bool = False


@dataclass(eq=False)
class NoteBlock(Block):
    """Control and lifecycle lines (pause, resume, notes, unknown events)."""

    kind: ClassVar[str] = "note"
    category: str = "control"  # control | note | pause | resume | session | opaque | stall
    text: str = ""
    source: str = ""


@dataclass(eq=False)
class SubtaskEndBlock(Block):
    kind: ClassVar[str] = "end"
    status: str = "done"
    reason: str = ""


# --- subtasks and session -----------------------------------------------------------------


@dataclass(eq=False)
class SubtaskView:
    id: str
    title: str = ""
    position: int = 0
    phase: str = "coding"
    state: str = "pending"
    attempts: int = 0
    retries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    last_error_kind: str | None = None
    planned: bool = False
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


@dataclass(eq=False)
class SessionInfo:
    id: str = ""
    title: str = ""
    backend: str = ""
    model: str | None = None
    workspace: str = ""
    status: str = "pending"
    started_at: float | None = None
    ended_at: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    retries: int = 0
    last_event_ts: float | None = None
    last_activity_ts: float | None = None  # last event that was not a heartbeat (or hb - idle)
    heartbeat_ts: float | None = None
    idle_s: float | None = None
    open_calls: int = 0
    stalled: bool = False
    pause_requested: bool = False
    version: int = 0

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

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


@dataclass
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


# --- the model --------------------------------------------------------------------------


def is_open(b: Block) -> bool:
    """A block later events may still change (kept reachable when pruned)."""
    if isinstance(b, ToolBlock):
        return b.running
    if isinstance(b, (TextBlock, ThinkingBlock)):
        return bool(b.message_id) and not b.completed
    if isinstance(b, RetryBlock):
        return b.active
    return False


def _key(b: Block) -> tuple[str, str] | None:
    """What identifies a block across pages: its call or its message."""
    if isinstance(b, ToolBlock) and b.call_id:
        return ("tool", b.call_id)
    if isinstance(b, (TextBlock, ThinkingBlock)) and b.message_id:
        return (b.kind, b.message_id)
    return None


class SessionModel:
    """Folds events into view state. Never raises on odd input: out-of-order, empty or
    unknown events become something sensible on screen.

    Memory is bounded: a subtask keeps at most ``MAX_BLOCKS`` (+ ``PRUNE_SLACK``) blocks;
    older ones are pruned (``has_earlier``) and re-loaded from the store on demand
    (``prepend``). Everything the screen summarises (states, counts, tokens, cost) is a
    running aggregate on ``SubtaskView``/``SessionInfo``, so pruning never changes it."""

    MAX_BLOCKS = 500
    PRUNE_SLACK = 100

    def __init__(self, session_id: str = "") -> None:
        self.session = SessionInfo(id=session_id)
        self.subtasks: dict[str, SubtaskView] = {}
        self.current_subtask_id: str | None = None
        self.base_seq = 0  # counters in rows already include events up to here
        self.first_seq: int | None = None  # oldest event applied (for load-earlier)
        self.last_seq = 0
        self.events_applied = 0
        self._ver = 0
        self._bid = 0
        self._tools: dict[str, ToolBlock] = {}
        self._texts: dict[tuple[str, str], TextBlock] = {}
        self._thoughts: dict[tuple[str, str], ThinkingBlock] = {}
        self._changes = Changes()
        self.replaced: list[Block] = []  # blocks the last prepend() moved to the front

    # --- construction ---

    @classmethod
    def from_history(cls, session_row: Any | None, subtask_rows: Iterable[Any] = (),
                     events: Iterable[ev.Event] = (), session_id: str = "") -> "SessionModel":
        m = cls(session_id or (getattr(session_row, "id", "") if session_row else ""))
        if session_row is not None:
            m.load_session_row(session_row)
        m.load_subtask_rows(subtask_rows)
        events = list(events)
        m.apply(events)
        if events and events[0].seq > 1:  # a last page: older blocks are in the store
            for st in m.subtasks.values():
                st.has_earlier = st.state != "pending" or bool(st.blocks)
        m.settle()
        m.take_changes()
        return m

    def load_session_row(self, row: Any) -> None:
        row = safe_fields(row, keep=(*ID_FIELDS, "task"))  # stored text enters the view here
        s = self.session
        s.id = row.id
        s.title = row.title
        s.backend = row.backend
        s.model = row.model
        s.workspace = row.workspace
        s.status = row.status
        s.started_at = row.started_at
        s.ended_at = row.ended_at
        s.input_tokens = int(row.input_tokens or 0)
        s.output_tokens = int(row.output_tokens or 0)
        s.cost_usd = float(row.cost_usd or 0.0)
        s.retries = int(getattr(row, "retries", 0) or 0)
        last_ts = getattr(row, "last_event_ts", None) or row.updated_at
        s.last_event_ts = last_ts
        s.last_activity_ts = last_ts
        self.base_seq = max(self.base_seq, int(row.last_seq or 0))
        self._touch_session()

    def load_subtask_rows(self, rows: Iterable[Any]) -> None:
        for row in sorted(rows, key=lambda r: r.position):
            row = safe_fields(row, keep=ID_FIELDS)  # stored text enters the view here
            st = self._subtask(row.id, create=True)
            st.title = row.title or st.title
            st.position = row.position
            st.phase = row.phase or st.phase
            st.state = row.status or st.state
            st.attempts = row.attempts
            st.retries = row.retries
            st.started_at = row.started_at
            st.finished_at = row.finished_at
            st.reason = row.reason or ""
            st.last_error_kind = row.last_error_kind
            if st.state in ("running", "waiting_retry", "paused"):
                self.current_subtask_id = st.id
            self._touch_subtask(st)

    # --- queries ---

    def ordered_subtasks(self) -> list[SubtaskView]:
        """Plan order; the session pseudo-subtask (if any) first."""
        return list(self.subtasks.values())

    def subtask(self, subtask_id: str | None) -> SubtaskView | None:
        return self.subtasks.get(subtask_id or "") if subtask_id is not None else None

    def waiting_retry(self) -> SubtaskView | None:
        for st in self.subtasks.values():
            if st.state == "waiting_retry" and st.retry is not None and st.retry.active:
                return st
        return None

    def default_subtask_id(self) -> str | None:
        """What to show when nobody chose: the active subtask, else the last one touched."""
        if self.current_subtask_id in self.subtasks:
            return self.current_subtask_id
        started = [st for st in self.subtasks.values() if st.state != "pending"]
        if started:
            return started[-1].id
        return next(iter(self.subtasks), None)

    def take_changes(self) -> Changes:
        out, self._changes = self._changes, Changes()
        return out

    # --- folding ---

    def apply(self, events: Iterable[ev.Event]) -> Changes:
        for e in events:
            if e.seq and e.seq <= self.last_seq:
                continue  # already applied (a live batch overlapping the history page)
            try:
                # untrusted text enters the view here: every widget downstream gets safe text
                self._apply_one(safe_fields(e, keep=_PLAN_KEEP if isinstance(e, ev.PlanReady) else ID_FIELDS))
            except Exception as exc:  # never let a strange event take the screen down
                self._note(e, "opaque", safe(f"{e.type}: could not display ({type(exc).__name__}: {exc})"))
            if e.seq:
                self.last_seq = e.seq
                if self.first_seq is None or e.seq < self.first_seq:
                    self.first_seq = e.seq
            self.events_applied += 1
        return self.take_changes()

    def settle(self) -> Changes:
        """For a session nobody runs any more: nothing may look like it still runs."""
        if not self.session.is_live:
            self._interrupt_everything(final_state="interrupted")
        return self.take_changes()

    def _counts(self, e: ev.Event) -> bool:
        """Whether ``e`` is newer than what the rows' totals already include."""
        return not e.seq or e.seq > self.base_seq

    def _apply_one(self, e: ev.Event) -> None:
        s = self.session
        if e.ts:
            s.last_event_ts = e.ts
            if not isinstance(e, ev.Heartbeat):
                s.last_activity_ts = e.ts
                if s.stalled:
                    s.stalled = False
            self._touch_session()
        handler = getattr(self, "_on_" + e.type.replace(".", "_"), None)
        if handler is None or isinstance(e, ev.OpaqueEvent):
            self._on_opaque(e)
        else:
            handler(e)

    # session lifecycle

    def _on_session_started(self, e: ev.SessionStarted) -> None:
        s = self.session
        s.id = s.id or e.session_id
        s.title = e.title or s.title
        s.backend = e.backend or s.backend
        s.model = e.model or s.model
        s.workspace = e.workspace or s.workspace
        if s.started_at is None:
            s.started_at = e.ts or None
        if s.status in ("pending", "starting", "") and self._counts(e):
            s.status = "running"
        self._touch_session()

    def _on_plan_ready(self, e: ev.PlanReady) -> None:
        in_plan: list[str] = []
        for i, item in enumerate(e.subtasks or []):
            if not isinstance(item, dict):
                continue
            sid = str(item.get("id") or f"#{i + 1}")
            if sid in in_plan:
                continue
            in_plan.append(sid)
            st = self._subtask(sid, create=True)
            st.planned = True
            title = item.get("title")
            title = safe(str(title)) if title else ""
            if title and st.title != title:
                st.title = title
                self._touch_subtask(st)
        # A new plan replaces the old one: subtasks of an earlier plan that never
        # started go away (as in the store's rows).
        for sid, st in list(self.subtasks.items()):
            if st.planned and sid not in in_plan and st.state == "pending" and not st.blocks:
                del self.subtasks[sid]
                self._changes.structure = True
        # what is outside the plan (a planning subtask, "session") first, then plan order
        keys = list(self.subtasks)
        ranked = [k for k in keys if k not in in_plan] + [k for k in in_plan if k in self.subtasks]
        if ranked != keys:
            self.subtasks = {k: self.subtasks[k] for k in ranked}
            self._changes.structure = True

    def _set_running(self, e: ev.Event) -> None:
        s = self.session
        if not self._counts(e):
            return  # the rows already say where the session went after this
        if s.status != "running" or s.ended_at is not None:
            s.status = "running"
            s.ended_at = None
            self._touch_session()

    def _on_subtask_started(self, e: ev.SubtaskStarted) -> None:
        self._set_running(e)
        st = self._target(e)
        if e.title:
            st.title = e.title
        st.phase = e.phase or st.phase
        if self._counts(e):  # older events are already in the subtask rows
            if st.state != "paused":
                st.state = "running"
            st.finished_at = None
        if st.started_at is None:
            st.started_at = e.ts or None
        self.current_subtask_id = st.id
        self._touch_subtask(st)

    def _on_attempt_started(self, e: ev.AttemptStarted) -> None:
        self._set_running(e)
        st = self._target(e)
        number = e.attempt or (st.attempts + 1)
        # calls left open by an earlier attempt are over, whatever the engine said
        for tb in st.open_tools():
            if tb.attempt is not None and tb.attempt != number:
                self._finish_tool(tb, "interrupted", ts=e.ts)
        self._end_retry(st, "started")
        st.attempts = max(st.attempts, number)
        if self._counts(e):
            st.state = "running"
            st.finished_at = None
        if st.started_at is None:
            st.started_at = e.ts or None
        self.current_subtask_id = st.id
        self._add(st, AttemptBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=number,
                                   number=number, reason=e.reason or "first",
                                   prompt_extra=e.prompt_extra or ""))
        self._touch_subtask(st)

    # streaming content

    def _on_text_delta(self, e: ev.TextDelta) -> None:
        if not e.text:
            return
        st = self._target(e)
        tb = self._text_block(st, e)
        tb.text += e.text
        self._bump(tb)

    def _text_block(self, st: SubtaskView, e: ev.TextDelta | ev.MessageCompleted,
                    role: str = "assistant") -> TextBlock:
        key = (st.id, e.message_id)
        tb = self._texts.get(key) if e.message_id else None
        if tb is None and not e.message_id:
            last = st.blocks[-1] if st.blocks else None
            if isinstance(last, TextBlock) and not last.message_id and not last.completed and last.role == role:
                tb = last
        if tb is None:
            tb = TextBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                           message_id=e.message_id, role=role)
            self._add(st, tb)
            if e.message_id:
                self._texts[key] = tb
        return tb

    def _on_thinking_delta(self, e: ev.ThinkingDelta) -> None:
        if not e.text:
            return
        st = self._target(e)
        key = (st.id, e.message_id)
        tb = self._thoughts.get(key) if e.message_id else None
        if tb is None and not e.message_id:
            last = st.blocks[-1] if st.blocks else None
            if isinstance(last, ThinkingBlock) and not last.message_id and not last.completed:
                tb = last
        if tb is None:
            tb = ThinkingBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                               message_id=e.message_id)
            self._add(st, tb)
            if e.message_id:
                self._thoughts[key] = tb
        tb.text += e.text
        self._bump(tb)

    def _on_message_completed(self, e: ev.MessageCompleted) -> None:
        st = self._target(e)
        role = e.role or "assistant"
        if role in ("thinking", "reasoning"):
            th = self._thoughts.get((st.id, e.message_id))
            if th is not None:
                th.text = e.text or th.text
                th.full = th.full or bool(e.text)
                th.completed = True
                self._bump(th)
            elif e.text:
                th = ThinkingBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                                   message_id=e.message_id, text=e.text, completed=True, full=True)
                self._add(st, th)
            return
        existing = self._texts.get((st.id, e.message_id)) if e.message_id else None
        if existing is None and not e.text:
            return  # an empty message that never streamed: nothing to show
        tb = existing or self._text_block(st, e, role=role)
        if e.text:  # some backends complete with an empty text: keep what streamed
            tb.text = e.text
            tb.full = True
        tb.role = role
        tb.completed = True
        self._bump(tb)

    # tools

    def _on_tool_started(self, e: ev.ToolStarted) -> None:
        st = self._target(e)
        tb = self._tools.get(e.call_id) if e.call_id else None
        if tb is not None:  # finished arrived first, or a duplicate start: fill in, keep status
            tb.name = e.name or tb.name
            tb.input = dict(e.input or {}) or tb.input
            tb.summary = compact_input(tb.name, tb.input)
            if tb.started_ts is None:
                tb.started_ts = e.ts or None
            self._bump(tb)
            return
        tb = ToolBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                       call_id=e.call_id, name=e.name or "tool", input=dict(e.input or {}),
                       started_ts=e.ts or None)
        tb.summary = compact_input(tb.name, tb.input)
        self._add(st, tb)
        if e.call_id:
            self._tools[e.call_id] = tb

    def _on_tool_finished(self, e: ev.ToolFinished) -> None:
        tb = self._tools.get(e.call_id) if e.call_id else None
        if tb is None:
            st = self._target(e)
            tb = ToolBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                           call_id=e.call_id, name="tool")
            self._add(st, tb)
            if e.call_id:
                self._tools[e.call_id] = tb
        elif not tb.running and tb.finished_ts is not None:
            return  # a finished call never changes again (the store drops duplicates too)
        tb.status = e.status if e.status in ev.TOOL_STATUSES else "error"
        tb.output = e.output or ""
        tb.finished_ts = e.ts or None
        if e.duration_s is not None:
            tb.duration_s = float(e.duration_s)
        elif tb.started_ts is not None and e.ts:
            tb.duration_s = max(0.0, e.ts - tb.started_ts)
        self._bump(tb)

    def _on_hook_decision(self, e: ev.HookDecision) -> None:
        st = self._target(e)
        self._add(st, HookBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                                call_id=e.call_id, tool=e.tool, decision=e.decision or "deny",
                                reason=e.reason or ""))
        tb = self._tools.get(e.call_id) if e.call_id else None
        if tb is not None and e.decision == "deny":
            tb.denial = e.reason or "denied"
            self._bump(tb)

    # accounting and liveness

    def _on_usage(self, e: ev.Usage) -> None:
        if not self._counts(e):
            return
        s = self.session
        s.input_tokens += int(e.input_tokens or 0)
        s.output_tokens += int(e.output_tokens or 0)
        s.cost_usd += float(e.cost_usd or 0.0)
        self._touch_session()

    def _on_heartbeat(self, e: ev.Heartbeat) -> None:
        s = self.session
        s.heartbeat_ts = e.ts or s.heartbeat_ts
        s.idle_s = float(e.idle_s or 0.0)
        s.open_calls = int(e.open_calls or 0)
        if e.ts:
            since = e.ts - s.idle_s
            if s.last_activity_ts is None or since < s.last_activity_ts:
                s.last_activity_ts = since
        if e.stalled and not s.stalled:
            st = self._target(e)
            self._note(e, "stall", f"stalled: nothing from the agent for {fmt_duration(s.idle_s)}",
                       subtask=st)
        s.stalled = bool(e.stalled)
        self._touch_session()

    # errors, retries, control

    def _on_error(self, e: ev.Error) -> None:
        st = self._target(e)
        st.last_error_kind = e.kind or st.last_error_kind
        self._add(st, ErrorBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                                 err_kind=e.kind or "unknown", message=e.message or "",
                                 exception_type=e.exception_type or "", status_code=e.status_code,
                                 retryable=bool(e.retryable)))
        self._touch_subtask(st)

    def _on_retry_scheduled(self, e: ev.RetryScheduled) -> None:
        st = self._target(e)
        self._end_retry(st, "superseded")
        rb = RetryBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                        err_kind=e.kind or "unknown", retry_no=int(e.retry_no or 0),
                        max_retries=int(e.max_retries or 0), delay_s=float(e.delay_s or 0.0),
                        resume_at=float(e.resume_at or ((e.ts or 0.0) + float(e.delay_s or 0.0))),
                        action=e.action or "retry")
        self._add(st, rb)
        st.retry = rb
        if not self._counts(e):
            pass
        elif st.state == "paused":
            st._state_before_pause = "waiting_retry"
        else:
            st.state = "waiting_retry"
            if self.session.status == "running":
                self.session.status = "waiting"  # as the store says of a session in a countdown
        st.last_error_kind = rb.err_kind
        if self._counts(e):
            st.retries += 1
            self.session.retries += 1
            self._touch_session()
        self._touch_subtask(st)

    def _on_control(self, e: ev.Control) -> None:
        cmd = e.command or "?"
        s = self.session
        src = f" ({e.source})" if e.source else ""
        if cmd == "note":
            text = f"note{src}: {e.text}" if e.text else f"note{src}"
            self._note(e, "note", text, source=e.source)
            return
        labels = {"pause": "pause requested", "pause_now": "pause (now) requested",
                  "resume": "resume requested", "retry": "retry requested",
                  "retry_now": "retry now requested", "skip": "skip requested",
                  "cancel": "cancel requested"}
        text = labels.get(cmd, f"{cmd} requested") + src
        if e.text:
            text += f": {e.text}"
        if cmd in ("pause", "pause_now"):
            s.pause_requested = True
            self._touch_session()
        elif cmd == "resume":
            s.pause_requested = False
            self._touch_session()
        elif cmd in ("retry_now", "retry") and not (e.text or "").startswith("refused"):
            self._skip_countdown(e, "retry_now" if cmd == "retry_now" else "user_retry")
        self._note(e, "control", text, source=e.source)

    def _skip_countdown(self, e: ev.Control, outcome: str) -> None:
        """`n` (or a person's retry) ends a countdown at once: the engine starts the retry now."""
        st = self.subtask(e.subtask_id) if e.subtask_id else next(
            (x for x in self.subtasks.values() if x.retry is not None and x.retry.active), None)
        if st is None or st.retry is None or not st.retry.active:
            return
        self._end_retry(st, outcome)
        if st.state == "waiting_retry" and self._counts(e):
            st.state = "running"
        self._touch_subtask(st)

    def _on_subtask_finished(self, e: ev.SubtaskFinished) -> None:
        st = self._target(e)
        status = e.status if e.status in SUBTASK_STATES else "failed"
        for tb in st.open_tools():
            self._finish_tool(tb, "interrupted", ts=e.ts)
        self._end_retry(st, status)
        if self._counts(e):
            st.state = status
            st.reason = e.reason or ""
            st.finished_at = e.ts or None
            st._state_before_pause = None
        self._add(st, SubtaskEndBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts,
                                      attempt=e.attempt, status=status, reason=e.reason or ""))
        self._touch_subtask(st)
        if status == "stuck" and self.session.is_live and self._counts(e):
            self.session.status = "stuck"  # waiting for a person
            self._touch_session()

    def _on_session_paused(self, e: ev.SessionPaused) -> None:
        s = self.session
        if self._counts(e):
            s.status = "paused"
        s.pause_requested = False
        self._touch_session()
        for st in self.subtasks.values() if self._counts(e) else ():
            if st.state in ("running", "waiting_retry"):
                # a pause ends a countdown (the engine stops waiting; resume starts the retry)
                st._state_before_pause = "running" if st.retry is not None and st.retry.active else st.state
                st.state = "paused"
                self._touch_subtask(st)
        for st in self.subtasks.values():
            if st.retry is not None and st.retry.active:
                self._end_retry(st, "paused")
        self._note(e, "pause", "paused" + (f": {e.reason}" if e.reason else ""))

    def _on_session_resumed(self, e: ev.SessionResumed) -> None:
        s = self.session
        if self._counts(e):
            s.status = "running"
            s.ended_at = None
        s.pause_requested = False
        self._touch_session()
        for st in self.subtasks.values() if self._counts(e) else ():
            if st.state == "paused":
                st.state = st._state_before_pause or "running"
                st._state_before_pause = None
                self._touch_subtask(st)
        self._note(e, "resume", "resumed" + (f": {e.reason}" if e.reason else ""))

    def _on_session_finished(self, e: ev.SessionFinished) -> None:
        s = self.session
        status = e.status or "done"
        if self._counts(e):
            s.status = status
            s.ended_at = e.ts or s.ended_at
        s.pause_requested = False
        self._touch_session()
        self._interrupt_everything("cancelled" if status == "cancelled" else "interrupted", ts=e.ts)
        self._note(e, "session", f"session {status}" + (f": {e.reason}" if e.reason else ""))

    def _on_session_interrupted(self, e: ev.SessionInterrupted) -> None:
        s = self.session
        if self._counts(e):
            s.status = "interrupted"
            s.ended_at = e.ts or s.ended_at
        s.pause_requested = False
        self._touch_session()
        self._interrupt_everything("interrupted", ts=e.ts)
        self._note(e, "session", "session interrupted" + (f": {e.reason}" if e.reason else ""))

    def _on_opaque(self, e: ev.Event) -> None:
        data = e.to_dict()
        for k in ("type", *ev.COMMON_FIELDS):
            data.pop(k, None)
        detail = ""
        if data:
            try:
                detail = json.dumps(data, ensure_ascii=False, default=str, sort_keys=True)
            except Exception:
                detail = repr(data)
            detail = " " + _clip(detail, 160)
        self._note(e, "opaque", f"{e.type or 'event'}{detail}")

    # --- helpers ---

    def _interrupt_everything(self, final_state: str, ts: float | None = None) -> None:
        for tb in list(self._tools.values()):
            if tb.running:
                self._finish_tool(tb, "interrupted", ts=ts)
        for st in self.subtasks.values():
            if st.state in ACTIVE_STATES:
                self._end_retry(st, final_state)
                st.state = final_state
                st._state_before_pause = None
                self._touch_subtask(st)
            elif st.retry is not None:
                self._end_retry(st, final_state)

    def _finish_tool(self, tb: ToolBlock, status: str, ts: float | None = None) -> None:
        tb.status = status
        if ts:
            tb.finished_ts = ts
            if tb.duration_s is None and tb.started_ts is not None:
                tb.duration_s = max(0.0, ts - tb.started_ts)
        self._bump(tb)

    def _end_retry(self, st: SubtaskView, outcome: str) -> None:
        rb = st.retry
        if rb is None:
            return
        st.retry = None
        if rb.active:
            rb.active = False
            rb.outcome = outcome
            self._bump(rb)

    def _note(self, e: ev.Event, category: str, text: str, source: str = "",
              subtask: SubtaskView | None = None) -> None:
        st = subtask or self._target(e)
        self._add(st, NoteBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                                category=category, text=text, source=source))

    def _target(self, e: ev.Event) -> SubtaskView:
        """The subtask an event belongs to: its own, else the current one, else 'session'."""
        if e.subtask_id:
            return self._subtask(e.subtask_id, create=True)
        if self.current_subtask_id is not None and self.current_subtask_id in self.subtasks:
            return self.subtasks[self.current_subtask_id]
        st = self._subtask(SESSION_PSEUDO_ID, create=True)
        if not st.title:
            st.title = "session"
        return st

    def _subtask(self, sid: str, create: bool = False) -> SubtaskView:
        st = self.subtasks.get(sid)
        if st is None:
            st = SubtaskView(id=sid, position=len(self.subtasks))
            self.subtasks[sid] = st
            self._changes.structure = True
            self._touch_subtask(st)
        return st

    def _add(self, st: SubtaskView, block: Block) -> None:
        self._bid += 1
        block.bid = self._bid
        block.subtask_id = st.id
        st.blocks.append(block)
        self._ver += 1
        block.version = self._ver
        self._changes.added.append(block)
        self._changes.added_ids.add(block.bid)
        self._touch_subtask(st)  # its block count changed
        if len(st.blocks) > self.MAX_BLOCKS + self.PRUNE_SLACK:
            self._prune(st)

    def _prune(self, st: SubtaskView) -> None:
        """Drop the oldest blocks of ``st`` down to MAX_BLOCKS, never the pinned one (on
        screen) nor any after it. Open blocks stay reachable (detached) so their events
        still land; closed ones are forgotten (the store has them)."""
        extra = len(st.blocks) - self.MAX_BLOCKS
        if st.pinned is not None:
            try:
                extra = min(extra, st.blocks.index(st.pinned))
            except ValueError:
                st.pinned = None
        if extra <= 0:
            return
        gone, st.blocks = st.blocks[:extra], st.blocks[extra:]
        st.has_earlier = True
        still = [b for b in st.detached if is_open(b)]
        for b in [b for b in st.detached if not is_open(b)] + gone:
            if is_open(b):
                still.append(b)
            else:
                self._forget(b)
        st.detached = still

    def _forget(self, b: Block) -> None:
        if isinstance(b, ToolBlock) and self._tools.get(b.call_id) is b:
            del self._tools[b.call_id]
        elif isinstance(b, TextBlock) and self._texts.get((b.subtask_id, b.message_id)) is b:
            del self._texts[(b.subtask_id, b.message_id)]
        elif isinstance(b, ThinkingBlock) and self._thoughts.get((b.subtask_id, b.message_id)) is b:
            del self._thoughts[(b.subtask_id, b.message_id)]

    def prepend(self, subtask_id: str, earlier: "SessionModel", before_seq: int, exhausted: bool) -> list[Block]:
        """Put the blocks ``earlier`` (a model folded from the store's events before
        ``before_seq``, and on until they closed) built for ``subtask_id`` in front of
        this subtask's blocks. An open one that this model still holds (a detached call
        or message) is taken from here, as it is current; a message split at
        ``before_seq`` (its head earlier, its tail here) becomes one block again.
        Returns the blocks now in front, in order, and the blocks here they replaced
        in ``replaced`` (the screen removes their widgets)."""
        st = self.subtasks.get(subtask_id)
        src = earlier.subtasks.get(subtask_id)
        self.replaced = []
        if st is None:
            return []
        st.has_earlier = not exhausted
        if src is None:
            return []
        mine = {id(b) for b in st.blocks}
        front: dict[tuple[str, str], Block] = {}  # a call or message here (its later part)
        for b in st.blocks:
            k = _key(b)
            if k is not None:
                front.setdefault(k, b)
        out: list[Block] = []
        for b in src.blocks:
            if b.seq and b.seq >= before_seq:
                continue
            k = _key(b)
            here: Block | None = front.get(k) if k is not None else None
            if here is None and isinstance(b, ToolBlock) and b.call_id:
                here = self._tools.get(b.call_id)  # detached: pruned while open
            elif here is None and isinstance(b, TextBlock) and b.message_id:
                here = self._texts.get((subtask_id, b.message_id))
            elif here is None and isinstance(b, ThinkingBlock) and b.message_id:
                here = self._thoughts.get((subtask_id, b.message_id))
            if here is not None and id(here) in mine:
                # the tail of a block that started earlier: the earlier fold has it whole
                # up to where it stopped; this model's copy has everything after
                if isinstance(b, (TextBlock, ThinkingBlock)) and isinstance(here, (TextBlock, ThinkingBlock)):
                    if here.full:
                        pass  # its completion carried the whole text
                    elif b.full:
                        here.text, here.full = b.text, True
                    else:  # what streamed before ``before_seq``, then what streamed here
                        here.text = b.text[:getattr(b, "head_len", len(b.text))] + here.text
                    here.seq, here.ts = b.seq, b.ts
                    st.blocks.remove(here)
                    self.replaced.append(here)
                    mine.discard(id(here))
                    self._bump(here)
                    out.append(here)
                    continue
                if isinstance(b, ToolBlock) and isinstance(here, ToolBlock):
                    # its finish was here, its start there: one call, named and timed
                    here.name = b.name if here.name == "tool" else here.name
                    here.input = here.input or b.input
                    here.summary = compact_input(here.name, here.input)
                    here.started_ts = here.started_ts if here.started_ts is not None else b.started_ts
                    if here.duration_s is None and here.started_ts is not None and here.finished_ts:
                        here.duration_s = max(0.0, here.finished_ts - here.started_ts)
                    here.seq, here.ts, here.attempt = b.seq, b.ts, b.attempt
                    st.blocks.remove(here)
                    self.replaced.append(here)
                    mine.discard(id(here))
                    self._bump(here)
                    out.append(here)
                    continue
                here = None
            if here is not None:
                if here in st.detached:
                    st.detached.remove(here)
                out.append(here)
                continue
            self._bid += 1
            b.bid = self._bid
            self._ver += 1
            b.version = self._ver
            out.append(b)
            if is_open(b):  # still open after the look ahead: let its later events land here
                if isinstance(b, ToolBlock) and b.call_id:
                    self._tools.setdefault(b.call_id, b)
                elif isinstance(b, TextBlock) and b.message_id:
                    self._texts.setdefault((subtask_id, b.message_id), b)
        st.blocks[:0] = out
        if out:
            seqs = [b.seq for b in out if b.seq]
            if seqs and (self.first_seq is None or min(seqs) < self.first_seq):
                self.first_seq = min(seqs)
        self._touch_subtask(st)
        return out

    def mark_heads(self) -> None:
        """Remember how much of each open message has streamed so far (``prepend`` keeps
        only that head of a message this model also holds a later part of)."""
        for st in self.subtasks.values():
            for b in st.blocks:
                if isinstance(b, (TextBlock, ThinkingBlock)) and not b.completed:
                    b.head_len = len(b.text)  # type: ignore[attr-defined]

    def open_before(self, seq: int) -> bool:
        """Whether a block that started before ``seq`` is still open (look further ahead)."""
        return any(is_open(b) for st in self.subtasks.values() for b in st.blocks if b.seq and b.seq < seq)

    def _bump(self, block: Block) -> None:
        self._ver += 1
        block.version = self._ver
        if block.bid not in self._changes.added_ids:
            self._changes.updated[block.bid] = block

    def _touch_subtask(self, st: SubtaskView) -> None:
        self._ver += 1
        st.version = self._ver
        self._changes.subtasks.add(st.id)

    def _touch_session(self) -> None:
        self._ver += 1
        self.session.version = self._ver
        self._changes.session = True


# --- display helpers (pure) ---------------------------------------------------------------

ACTION_LABELS = {"retry": "retry", "restart": "restart", "repair": "repair + retry"}
RETRY_OUTCOMES = {"retry_now": " now (wait skipped)", "user_retry": " (restarted by a person)",
                  "paused": " (paused: starts on resume)", "superseded": " (superseded)"}


def fmt_seconds_left(seconds: float) -> str:
    """Countdown seconds, rounded up so "0 s" only shows when the wait is over."""
    return fmt_duration(math.ceil(max(0.0, seconds) - 1e-9))


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


def fmt_duration(seconds: float | None) -> str:
    """Short human durations: '420 ms', '1.3 s', '3 s', '2 m 05 s', '1 h 02 m'."""
    if seconds is None:
        return "–"
    seconds = max(0.0, float(seconds))
    if 0 < seconds < 0.95:
        return f"{max(1, round(seconds * 1000))} ms"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    m, s = divmod(total, 60)
    if m < 60:
        return f"{m} m {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} m"


from tui.fmt import fmt_span  # noqa: E402,F401 - the home screen's, kept out of this module's imports


def fmt_clock(seconds: float | None) -> str:
    """Elapsed time as a clock: '0:07', '12:03', '1:02:03'."""
    if seconds is None:
        return "–"
    total = int(max(0.0, seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_tokens(n: int) -> str:
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def fmt_cost(usd: float | None) -> str:
    if not usd:
        return "$0"
    if usd < 0.01:
        return f"${usd:.4f}"
    return f"${usd:.2f}"


# Keys whose value best says what a tool call does, in order of preference.
def output_preview(output: str, max_lines: int = 200) -> tuple[str, int]:
    """The first ``max_lines`` lines of a tool output and how many were left out."""
    lines = output.splitlines()
    if len(lines) <= max_lines:
        return output, 0
    return "\n".join(lines[:max_lines]), len(lines) - max_lines


# Icons: one table for every view (tui.icons).
from tui.icons import STATE_ICONS, SPINNER_FRAMES, TOOL_ICONS, spinner  # noqa: E402,F401
