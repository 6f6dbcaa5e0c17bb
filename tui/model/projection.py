"""``SessionModel``: the fold of a session's events into view state.

It owns the state and the bookkeeping (block ids, versions, ``Changes``); the per-event
handlers are in tui.model.fold, pruning and load-earlier in tui.model.paging.
"""

from __future__ import annotations

from typing import Any, Iterable

from shepherd.core import events as ev
from shepherd.core.cost_ledger import CostLedger
from shepherd.core.stats import Tally
from shepherd.core.states import ACTIVE_STATES, SubtaskState
from shepherd.core.text import safe, safe_fields
from shepherd.tui.model.blocks import AttemptBlock, Block, NoteBlock, TextBlock, ThinkingBlock, ToolBlock
from shepherd.tui.model.fold import Fold
from shepherd.tui.model.paging import Paging
from shepherd.tui.model.views import SESSION_PSEUDO_ID, Changes, SessionInfo, SubtaskView

# Identifiers the model keys on and sends back in commands: kept exact (shown through ``safe``).
ID_FIELDS = ("session_id", "subtask_id", "call_id", "message_id", "id")
_PLAN_KEEP = (*ID_FIELDS, "subtasks")  # the plan holds ids too: its titles are made safe one by one


class SessionModel(Fold, Paging):
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
        # Tokens, cost and waste per attempt (core.cost_ledger): the store's ledger, or one
        # folded here from the first event on; None once events went by that it did not see.
        self.costs: CostLedger | None = CostLedger()
        self._attempt_blocks: dict[tuple[str, int], AttemptBlock] = {}

    # --- construction ---

    @classmethod
    def from_history(cls, session_row: Any | None, subtask_rows: Iterable[Any] = (),
                     events: Iterable[ev.Event] = (), session_id: str = "",
                     costs: CostLedger | None = None) -> "SessionModel":
        """``costs``: the store's cost ledger (``EventStore.cost_ledger``); without it the
        costs are folded from ``events`` if they start at the session's first event."""
        m = cls(session_id or (getattr(session_row, "id", "") if session_row else ""))
        if session_row is not None:
            m.load_session_row(session_row)
        m.load_subtask_rows(subtask_rows)
        if costs is not None:
            m.load_costs(costs)
        events = list(events)
        m.apply(events)
        if events and events[0].seq > 1:  # a last page: older blocks are in the store
            for st in m.subtasks.values():
                st.has_earlier = st.state != SubtaskState.PENDING or bool(st.blocks)
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
        s.cost_known = bool(getattr(row, "cost_known", False))
        waste_usd = float(getattr(row, "waste_cost_usd", 0.0) or 0.0)
        s.waste = Tally(int(getattr(row, "waste_input_tokens", 0) or 0), int(getattr(row, "waste_output_tokens", 0) or 0),
                        waste_usd, bool(s.cost_known and waste_usd))
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
            if st.state in ACTIVE_STATES:
                self.current_subtask_id = st.id
            self._touch_subtask(st)

    def load_awaiting_calls(self, rows: Iterable[Any]) -> Changes:
        """Calls the store says still wait for approval (``tool_calls`` rows with status
        ``awaiting``) whose events are older than the loaded page (a wait of hours is
        pages of heartbeats): shown as waiting, so the keys can answer them."""
        for row in rows:
            if not row.call_id or row.call_id in self._tools:
                continue
            common = dict(session_id=row.session_id, subtask_id=row.subtask_id, attempt=row.attempt,
                          ts=row.started_at)
            self.apply([ev.ToolStarted(call_id=row.call_id, name=row.name, input=dict(row.input or {}), **common),
                        ev.ApprovalRequested(call_id=row.call_id, tool=row.name, input=dict(row.input or {}),
                                             **common)])
        return self.take_changes()

    # --- queries ---

    def ordered_subtasks(self) -> list[SubtaskView]:
        """Plan order; the session pseudo-subtask (if any) first."""
        return list(self.subtasks.values())

    def subtask(self, subtask_id: str | None) -> SubtaskView | None:
        return self.subtasks.get(subtask_id or "") if subtask_id is not None else None

    def waiting_retry(self) -> SubtaskView | None:
        for st in self.subtasks.values():
            if st.state == SubtaskState.WAITING_RETRY and st.retry is not None and st.retry.active:
                return st
        return None

    def tool_block(self, call_id: str) -> ToolBlock | None:
        """The block of call ``call_id`` (while the model holds it)."""
        return self._tools.get(call_id) if call_id else None

    def pending_approvals(self, subtask_id: str | None = None) -> list[ToolBlock]:
        """Calls waiting for a person's yes, oldest question first (of one subtask, if given)."""
        waiting = [b for b in self._tools.values() if b.awaiting
                   and (subtask_id is None or b.subtask_id == subtask_id)]
        return sorted(waiting, key=lambda b: (b.approval_ts or 0.0, b.bid))

    def default_subtask_id(self) -> str | None:
        """What to show when nobody chose: the active subtask, else the last one touched."""
        if self.current_subtask_id in self.subtasks:
            return self.current_subtask_id
        started = [st for st in self.subtasks.values() if st.state != SubtaskState.PENDING]
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
            try:
                self._fold_cost(e)
            except Exception:  # (odd numbers in a usage event: its costs are not known here)
                self._drop_costs()
            if e.seq:
                self.last_seq = e.seq
                if self.first_seq is None or e.seq < self.first_seq:
                    self.first_seq = e.seq
            self.events_applied += 1
        return self.take_changes()

    # --- costs ---

    def load_costs(self, ledger: CostLedger) -> None:
        """The store's ledger (at ``ledger.seq``): events up to there are in it already."""
        self.costs = ledger
        for sub in {a.subtask_id for a in ledger.attempts.values()}:
            self._costs_changed(sub)
        self._costs_changed(None)

    def _fold_cost(self, e: ev.Event) -> None:
        led = self.costs
        if led is None:
            return
        if e.seq:
            if e.seq <= led.seq:
                return  # in the ledger already
            if e.seq > led.seq + 1:  # events went by unseen: what they cost is not known here
                self._drop_costs()
                return
        key = led.apply(e)
        if key is not None:
            self._costs_changed(key[0])

    def _drop_costs(self) -> None:
        """No ledger any more: the per-subtask and per-attempt figures are not shown (the
        session's, from its row, stay as they were)."""
        self.costs = None
        for st in self.subtasks.values():
            if st.cost is not None:
                st.cost = st.waste = None
                self._touch_subtask(st)
        for b in self._attempt_blocks.values():
            self._link_attempt(b)

    def _costs_changed(self, subtask_id: str | None) -> None:
        led = self.costs
        if led is None:
            return
        s = self.session
        s.waste = led.session_costs(s.id).waste
        self._touch_session()
        if subtask_id is None:
            return
        st = self.subtasks.get(subtask_id)
        if st is not None:
            st.cost, st.waste = led.subtask(subtask_id)
            self._touch_subtask(st)
        for (sub, _), b in self._attempt_blocks.items():
            if sub == subtask_id:
                self._link_attempt(b)

    def _link_attempt(self, b: AttemptBlock) -> None:
        """Give an attempt's block its figures (and redraw it if they changed)."""
        self._attempt_blocks[(b.subtask_id, b.number)] = b
        cost = self.costs.attempt(b.subtask_id, b.number) if self.costs is not None else None
        if cost is not None or b.cost is not None:  # (one folded elsewhere, e.g. a page's scratch model, goes)
            b.cost = cost
            self._bump(b)

    def settle(self) -> Changes:
        """For a session nobody runs any more: nothing may look like it still runs."""
        if not self.session.is_live:
            self._interrupt_everything(final_state=SubtaskState.INTERRUPTED)
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
