"""Bounded memory and load-earlier: pruning a subtask's oldest blocks, and joining a page
of earlier blocks (folded from the store) in front of what the model holds.

A mixin of ``SessionModel`` (tui.model.projection), which owns the state it works on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shepherd.core.report import compact_input
from shepherd.tui.model.blocks import AttemptBlock, Block, TextBlock, ThinkingBlock, ToolBlock, block_key, is_open
from shepherd.tui.model.views import SubtaskView

if TYPE_CHECKING:
    from shepherd.tui.model.projection import SessionModel


class Paging:
    MAX_BLOCKS: int
    subtasks: dict[str, SubtaskView]
    first_seq: int | None
    replaced: list[Block]
    _bid: int
    _ver: int
    _tools: dict[str, ToolBlock]
    _texts: dict[tuple[str, str], TextBlock]
    _thoughts: dict[tuple[str, str], ThinkingBlock]

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
            k = block_key(b)
            if k is not None:
                front.setdefault(k, b)
        out: list[Block] = []
        for b in src.blocks:
            if b.seq and b.seq >= before_seq:
                continue
            k = block_key(b)
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
                    self._joined(st, here, mine, out)
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
                    self._joined(st, here, mine, out)
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
        for b in out:
            if isinstance(b, AttemptBlock):
                self._link_attempt(b)  # its figures: this model's ledger's (the page's fold has none)
        if out:
            seqs = [b.seq for b in out if b.seq]
            if seqs and (self.first_seq is None or min(seqs) < self.first_seq):
                self.first_seq = min(seqs)
        self._touch_subtask(st)
        return out

    def _joined(self, st: SubtaskView, here: Block, mine: set[int], out: list[Block]) -> None:
        """``here`` (loaded before) took in its earlier part: it moves to the page's place."""
        st.blocks.remove(here)
        self.replaced.append(here)
        mine.discard(id(here))
        self._bump(here)
        out.append(here)

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
