"""Re-loading a subtask's earlier blocks from the store (the session view's windowing).

The model keeps only the last blocks of each subtask (``SessionModel.MAX_BLOCKS``) and
opens on the last page of events; what lies before comes back from here, a page at a
time, when the person scrolls up, presses ``u`` or picks a subtask with nothing loaded.
A page is folded into a scratch model from the events that subtask's view is made of,
then folded on (a few pages at most) until the blocks it started are closed: a call
finished or a message completed after the page's end still reads as it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shepherd.core.states import SubtaskState
from shepherd.tui import model as m

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore

LOOKAHEAD_PAGES = 8  # how far past the page a block left open there is followed


async def load_earlier_blocks(store: "EventStore", model: m.SessionModel, subtask_id: str,
                              page: int = 500) -> list[m.Block]:
    """Put up to one page of ``subtask_id``'s earlier blocks in front of its blocks in
    ``model`` (see ``SessionModel.prepend``); returns them, in order."""
    st = model.subtask(subtask_id)
    if st is None or not st.has_earlier:
        return []
    before = next((b.seq for b in st.blocks if b.seq), None) or (model.first_seq or model.last_seq + 1)
    sid = model.session.id
    events = await store.subtask_events_before(sid, subtask_id, before, limit=page)
    exhausted = len(events) < page
    scratch = m.SessionModel(sid)
    scratch.MAX_BLOCKS = 1 << 62  # a page is bounded already: prune nothing while folding it
    if events:
        current = await store.current_subtask_at(sid, events[0].seq)
        if current is not None:  # where events without a subtask landed then
            scratch._subtask(current, create=True)
            scratch.current_subtask_id = current
        scratch.apply(events)
        scratch.mark_heads()
        after = before - 1
        for _ in range(LOOKAHEAD_PAGES):
            if not scratch.open_before(before):
                break
            more = await store.subtask_events_after(sid, subtask_id, after, limit=page)
            if not more:
                break
            scratch.apply(more)
            after = more[-1].seq
        if not model.session.is_live:  # as settle() did on open: nothing may look running
            scratch._interrupt_everything(SubtaskState.INTERRUPTED)
        if model.first_seq is None or events[0].seq < model.first_seq:
            model.first_seq = events[0].seq
    return model.prepend(subtask_id, scratch, before, exhausted)
