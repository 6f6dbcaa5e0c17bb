"""The session view at one event: ``SessionScreen(..., at_seq=N)``, ``shepherd attach
--at N`` and a search hit (``/`` searches this session, the home's ``s`` every session).

The view opens on the last page of events; an event before it is reached the way ``u``
reaches it: the subtask's earlier pages are folded in from the store, one after another,
until the page holding the event is in. The stream then shows a window around the event's
block (``StreamView.show_at``), with the block at the top, marked (``-search-hit``) and
focused when it takes focus. A mixin of ``SessionScreen``, which owns the state it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shepherd.tui.history import load_earlier_blocks
from shepherd.tui.model.locate import block_at

if TYPE_CHECKING:
    from shepherd.core.store.search import SearchHit
    from shepherd.tui import model as m

HIT_CLASS = "-search-hit"
MAX_PAGES = 1_000_000  # a bound on the pages folded in to reach an event
FAR_PAGES = 20  # a far event is reached in pages of up to this many PAGE_SIZEs (fewer reads, same fold)


class JumpMixin:
    jumped: tuple[int, "m.Block"] | None = None  # the event (seq) and the block the last jump showed

    async def jump_to(self: Any, seq: int, subtask_id: str | None = None) -> bool:
        """Show the block of event ``seq`` (``subtask_id``: the hit's, when the event has
        none of its own). False, with a notice, when there is no such event."""
        async with self._lock:
            if self._pending:  # what is buffered first: the block may be among it
                self._deferred.merge(self.model.apply(self.feed.take()))
            shown = await self._jump(seq, subtask_id)
            if self._deferred:
                self.call_later(self._flush)
            return shown

    async def _jump(self: Any, seq: int, subtask_id: str | None = None) -> bool:
        target = await self._jump_target(seq, subtask_id)
        return target is not None and await self._jump_show(seq, *target)

    async def _jump_target(self: Any, seq: int, subtask_id: str | None = None) -> "tuple[Any, m.SubtaskView] | None":
        """Event ``seq`` and the subtask whose stream shows it (None, with a notice: no such event)."""
        try:
            found = await self.store.events(self.session_id, after_seq=seq - 1, limit=1)
        except Exception as exc:  # noqa: BLE001 - the view stays as it is
            self.notify(f"could not read event #{seq}: {exc}", severity="error", markup=False)
            return False
        event = found[0] if found and found[0].seq == seq else None
        if event is None:
            self.notify(f"session {self.session_id} has no event #{seq}", severity="warning", markup=False)
            return None
        sub = event.subtask_id or subtask_id
        if sub is None or self.model.subtask(sub) is None:
            try:
                sub = await self.store.current_subtask_at(self.session_id, seq)
            except Exception:  # noqa: BLE001 - the selected subtask then
                sub = None
        st = self.model.subtask(sub) if sub is not None else None
        if st is None:  # a session-level event before any subtask started
            st = self.model.subtask("") or self.model.subtask(self.selected)
        if st is None:
            self.notify(f"event #{seq} is not shown in any subtask", severity="warning", markup=False)
        return (event, st) if st is not None else None

    async def _jump_show(self: Any, seq: int, event: Any, st: "m.SubtaskView") -> bool:
        """Load ``st`` back to event ``seq`` and show a window at its block, marked."""
        await self._load_through(st, seq)
        block = block_at(st.blocks, seq, call_id=getattr(event, "call_id", None),
                         message_id=getattr(event, "message_id", None))
        self.auto_follow = False  # the reader stays here: a new active subtask does not take the view
        self.selected = st.id
        self.refresh_bindings()
        self.subtask_list.select(st.id)
        if block is None:
            await self.stream.show(st, more_events=st.has_earlier)
            return False
        widget = await self.stream.show_at(st, block, more_events=st.has_earlier)
        self.jumped = (seq, block)
        if widget is not None:
            widget.add_class(HIT_CLASS)
            if widget.can_focus:
                self.set_focus(widget, scroll_visible=False)  # show_at puts it at the top
        return True

    async def _load_through(self: Any, st: "m.SubtaskView", seq: int) -> None:
        """Fold in ``st``'s earlier pages until its first block starts at or before ``seq``."""
        for _ in range(MAX_PAGES):
            first = next((b.seq for b in st.blocks if b.seq), None)
            if not st.has_earlier or (first is not None and first <= seq):
                break
            before = first if first is not None else (self.model.first_seq or seq + 1)
            page = max(self.PAGE_SIZE, min(before - seq + 1, FAR_PAGES * self.PAGE_SIZE))
            try:
                await load_earlier_blocks(self.store, self.model, st.id, page=page)
            except Exception as exc:  # noqa: BLE001 - what is loaded is shown
                self.notify(f"could not load earlier events: {exc}", severity="error", markup=False)
                break
            if next((b.seq for b in st.blocks if b.seq), None) == first and st.has_earlier:
                break  # no progress: never spin
        changes = self.model.take_changes()
        if self.model.first_seq is not None and (self.feed.first_seq is None
                                                 or self.model.first_seq < self.feed.first_seq):
            self.feed.first_seq = self.model.first_seq
        if changes.subtasks:
            self.subtask_list.refresh_subtasks(changes.subtasks)

    # --- searching this session ---------------------------------------------------------

    def action_search(self: Any) -> None:
        from shepherd.tui.screens.search import SearchScreen

        self.app.push_screen(SearchScreen(self.store, session_id=self.session_id,
                                          session_title=self.model.session.title, clock=self.clock),
                             callback=self._search_done)

    def _search_done(self: Any, hit: "SearchHit | None") -> None:
        if hit is not None:
            self.run_worker(self.jump_to(hit.seq, hit.subtask_id), group="session-jump", exclusive=True,
                            exit_on_error=False)
