"""Replaying a stored session: the events in order, a cursor, and a virtual clock.

Pure (no Textual). The model shown at a moment is ``SessionModel`` folded from the events
up to the cursor, by the very fold live sessions use: moving forward applies the next
events to the current model; moving back rebuilds it from the nearest checkpoint (a copy
of the model taken every ``checkpoint_every`` events) by folding on to the cursor.

The virtual clock is what every countdown, spinner and elapsed time on the replay screen
reads: the ``ts`` of the event at the cursor, moving on between two events at the speed
while playing (1x: the real gaps, 10x, or ``None``: as fast as the screen draws). A gap
that would make a person wait longer than ``gap_cap_s`` real seconds is cut there: the
clock jumps to the next event and ``gap_skipped`` says by how much.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable

from shepherd.core import events as ev
from shepherd.core.records import record
from shepherd.tui.model.projection import SessionModel
from shepherd.tui.model.views import Changes

SPEEDS: dict[str, float | None] = {"1": 1.0, "10": 10.0, "max": None}
MARK_TYPES = {"attempt": "attempt.started", "tool": "tool.started", "error": "error", "retry": "retry.scheduled"}


def speed_label(speed: float | None) -> str:
    return "max" if speed is None else f"{speed:g}×"


@record
class Moved:
    """What a move did: ``changes`` of the model (incremental), or ``rebuilt`` (the model
    is a new object: show everything again). ``applied``: events folded forward."""

    changes: Changes
    rebuilt: bool = False
    applied: int = 0

    def __bool__(self) -> bool:
        return self.rebuilt or self.applied > 0


class ReplayDriver:
    GAP_CAP_S = 5.0  # the longest real wait between two events while playing
    CHECKPOINT_EVERY = 5000  # a copy of the model every this many events (~20 ms each at 100k)
    MAX_FRAMES = 300  # at max speed the whole session takes at most ~this many frames
    MAX_BLOCKS: int | None = None  # the model's block window (None: SessionModel's own)

    def __init__(self, session_id: str, events: Iterable[ev.Event] = (), *, speed: float | None = 1.0,
                 gap_cap_s: float | None = None, checkpoint_every: int | None = None) -> None:
        self.session_id = session_id
        self.events: list[ev.Event] = []
        self.speed = speed
        self.gap_cap_s = self.GAP_CAP_S if gap_cap_s is None else gap_cap_s
        self.checkpoint_every = max(1, checkpoint_every or self.CHECKPOINT_EVERY)
        self.playing = False
        self.index = -1  # the event at the cursor (-1: none applied)
        self.now = 0.0  # the virtual clock
        self.waited = 0.0  # virtual seconds since the event at the cursor (while playing)
        self.gap_skipped = 0.0  # seconds of the last gap cut short (0: none)
        self.gap_skipped_at = -1  # the index that gap led to
        self.rebuilds = 0  # how many times going back rebuilt the model (tests, benchmarks)
        self.marks: dict[str, list[int]] = {k: [] for k in MARK_TYPES}
        self._checkpoints: dict[int, SessionModel] = {}  # index of the last event folded -> copy
        self.model = self._new_model()
        self.extend(events)

    # --- the events ---------------------------------------------------------------------

    def extend(self, events: Iterable[ev.Event]) -> None:
        """Add a page of events (ascending seq, after those held)."""
        last = self.events[-1].seq if self.events else 0
        for e in events:
            if e.seq and e.seq <= last:
                continue
            last = e.seq or last
            i = len(self.events)
            self.events.append(e)
            for kind, etype in MARK_TYPES.items():
                if e.type == etype:
                    self.marks[kind].append(i)
        if self.index < 0 and self.events:
            self.now = self.events[0].ts or 0.0

    @property
    def total(self) -> int:
        return len(self.events)

    @property
    def current(self) -> ev.Event | None:
        return self.events[self.index] if 0 <= self.index < len(self.events) else None

    @property
    def seq(self) -> int:
        e = self.current
        return e.seq if e is not None else 0

    @property
    def at_end(self) -> bool:
        return self.index >= len(self.events) - 1

    def clock(self) -> float:
        """The virtual now (what the replay screen's widgets read)."""
        return self.now

    def index_of_seq(self, seq: int) -> int | None:
        """The index of the event with ``seq`` (or the last one before it)."""
        import bisect

        if not self.events or seq < self.events[0].seq:
            return None
        return bisect.bisect_right([e.seq for e in self.events], seq) - 1

    GAP_NOTE_S = 3.0  # how long (real seconds at the speed) "gap skipped" stays said

    @property
    def gap_note(self) -> float:
        """The seconds of a gap just cut short (while playing), for the screen to say; else 0."""
        at = self.gap_skipped_at
        if not self.gap_skipped or at < 0 or self.index < at or at >= len(self.events):
            return 0.0
        since = (self.now - (self.events[at].ts or 0.0)) / (self.speed or 1.0)
        return self.gap_skipped if since <= self.GAP_NOTE_S else 0.0

    def forget_gap(self) -> None:
        self.gap_skipped, self.gap_skipped_at = 0.0, -1

    @property
    def start_ts(self) -> float | None:
        return self.events[0].ts if self.events else None

    @property
    def end_ts(self) -> float | None:
        return self.events[-1].ts if self.events else None

    # --- moving ---------------------------------------------------------------------------

    def seek(self, index: int) -> Moved:
        """Put the cursor on event ``index`` (clamped): the clock at its ``ts``."""
        if not self.events:
            return Moved(Changes())
        index = max(0, min(len(self.events) - 1, index))
        self.waited = 0.0
        if index >= self.index:
            changes, n = self._fold_to(index)
            moved = Moved(changes, applied=n)
        else:
            self._rebuild(index)
            moved = Moved(Changes(), rebuilt=True)
        self.now = self.events[index].ts or self.now
        return moved

    def step(self, n: int = 1) -> Moved:
        return self.seek(self.index + n)

    def scrub(self, fraction: float) -> Moved:
        """Move by ``fraction`` of the session's events (0.01: 1%), at least one."""
        n = max(1, round(abs(fraction) * len(self.events)))
        return self.step(n if fraction > 0 else -n)

    def seek_fraction(self, fraction: float) -> Moved:
        """The event at ``fraction`` (0..1) of the way (a click on the timeline)."""
        if not self.events:
            return Moved(Changes())
        return self.seek(round(max(0.0, min(1.0, fraction)) * (len(self.events) - 1)))

    def next_mark(self, kind: str, direction: int = 1) -> int | None:
        """The index of the next (``direction`` 1) or previous (-1) event of ``kind``."""
        import bisect

        marks = self.marks[kind]
        if direction > 0:
            i = bisect.bisect_right(marks, self.index)
            return marks[i] if i < len(marks) else None
        i = bisect.bisect_left(marks, self.index) - 1
        return marks[i] if i >= 0 else None

    def jump(self, kind: str, direction: int = 1) -> Moved | None:
        """To the next/previous attempt (``attempt``) or tool call (``tool``); None: none."""
        target = self.next_mark(kind, direction)
        return None if target is None else self.seek(target)

    # --- playing --------------------------------------------------------------------------

    def set_speed(self, speed: float | None) -> None:
        self.speed = speed

    def play(self) -> None:
        """Play from the moment shown (at the end there is nothing left: seek back first)."""
        self.playing = bool(self.events) and not self.at_end

    def pause(self) -> None:
        self.playing = False

    def advance(self, real_dt: float) -> Moved:
        """``real_dt`` seconds went by while playing: move the clock and fold the events
        it passed. At max speed, one frame's batch of events whatever ``real_dt``."""
        moved = Moved(Changes())
        if not self.playing or not self.events:
            return moved
        if self.index < 0:
            moved = self._merge(moved, self.seek(0))
        if self.speed is None:
            batch = max(1, math.ceil(len(self.events) / self.MAX_FRAMES))
            moved = self._merge(moved, self.step(batch))
        else:
            budget = max(0.0, real_dt) * self.speed
            cap = self.gap_cap_s * self.speed  # the longest gap played out, in virtual seconds
            while budget > 0 and not self.at_end:
                here = self.events[self.index].ts or 0.0
                gap = max(0.0, (self.events[self.index + 1].ts or here) - here)
                allowed = min(gap, cap)
                if self.waited + budget < allowed:
                    self.waited += budget
                    self.now = here + self.waited
                    budget = 0.0
                    break
                budget -= allowed - self.waited
                step = self.step(1)  # the clock is now at that event
                moved = self._merge(moved, step)
                if gap > allowed:
                    self.gap_skipped, self.gap_skipped_at = gap - allowed, self.index
        if self.at_end:
            self.playing = False
        return moved

    # --- folding --------------------------------------------------------------------------

    def _new_model(self) -> SessionModel:
        model = SessionModel(self.session_id)
        if self.MAX_BLOCKS is not None:
            model.MAX_BLOCKS = self.MAX_BLOCKS
        return model

    def _fold_to(self, index: int) -> tuple[Changes, int]:
        """Apply events after the cursor up to ``index`` to the current model, keeping a
        checkpoint at every ``checkpoint_every`` events."""
        changes = Changes()
        start = self.index + 1
        k = self.checkpoint_every
        i = start
        while i <= index:
            stop = min(index, (i // k + 1) * k - 1)  # the last index of this checkpoint's stretch
            changes.merge(self.model.apply(self.events[i:stop + 1]))
            if (stop + 1) % k == 0 and stop not in self._checkpoints:
                self._checkpoints[stop] = self._copy(self.model)
            i = stop + 1
        self.index = max(self.index, index)
        return changes, index + 1 - start

    def _rebuild(self, index: int) -> None:
        """Fold from the start (or the last checkpoint before ``index``) to ``index``."""
        self.rebuilds += 1
        held = [i for i in self._checkpoints if i <= index]
        if held:
            base = max(held)
            self.model = self._copy(self._checkpoints[base])
            self.index = base
        else:
            self.model = self._new_model()
            self.index = -1
        self._fold_to(index)
        self.model.take_changes()

    @staticmethod
    def _copy(model: SessionModel) -> SessionModel:
        out = copy.deepcopy(model)
        for st in out.subtasks.values():
            st.pinned = None  # which block a screen showed first is no part of the fold
        out.take_changes()
        return out

    @staticmethod
    def _merge(a: Moved, b: Moved) -> Moved:
        if a.rebuilt or b.rebuilt:  # a new model: everything is shown again anyway
            return Moved(Changes(), rebuilt=True, applied=a.applied + b.applied)
        a.changes.merge(b.changes)
        a.applied += b.applied
        return a
