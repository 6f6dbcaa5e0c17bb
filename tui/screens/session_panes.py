"""What the session view and the replay share: the subtask list and the stream, and how a
fold's changes reach them. Each screen keeps its own header, status and keys; ``_show``
(how a subtask's blocks are loaded) is each screen's own (a replay reads only up to its
cursor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shepherd.tui.widgets.stream import StreamView
from shepherd.tui.widgets.subtasks import SubtaskList, subtask_id_of

if TYPE_CHECKING:
    from textual.widgets import OptionList

    from shepherd.tui import model as m


class SessionPanes:
    model: "m.SessionModel"
    selected: str | None
    auto_follow: bool

    @property
    def subtask_list(self) -> SubtaskList:
        return self.query_one(SubtaskList)  # type: ignore[attr-defined]

    @property
    def stream(self) -> StreamView:
        return self.query_one(StreamView)  # type: ignore[attr-defined]

    async def _show(self, subtask_id: str | None) -> None:
        raise NotImplementedError

    def _chosen_subtask(self, event: "OptionList.OptionHighlighted") -> str | None:
        """The subtask a highlight in the list asks to show, or None: not the list's,
        already shown, or stale. Keys pressed quickly queue one message per move; showing
        a stale one moved the highlight back (``_show_subtask`` selects in the list),
        which queued another, and two of them ping-ponged for ever."""
        if event.option_list is not self.subtask_list or event.option_list.highlighted != event.option_index:
            return None  # (stale: the list moved on; its newer message follows)
        sid = subtask_id_of(event.option.id)
        return None if sid == self.selected else sid

    async def _show_subtask(self, subtask_id: str | None) -> None:
        self.selected = subtask_id
        self.subtask_list.select(subtask_id)
        await self._show(subtask_id)
        # the keys follow what is on screen now ("o" lights up with a tool call shown):
        # asked before the show, a bar evaluated while the show awaited saw a stream half
        # replaced, and a session with no more frames (a finished one) kept that bar
        self.refresh_bindings()  # type: ignore[attr-defined]

    async def _follow_changes(self, changes: "m.Changes") -> None:
        """The subtask list's order and the shown stream after a fold: following, the
        subtask that became the default is shown; else the selected one's blocks change."""
        if changes.structure:
            self.subtask_list.set_subtasks(self.model.ordered_subtasks(), self.selected)
        elif changes.subtasks:
            self.subtask_list.refresh_subtasks(changes.subtasks)
        if self.auto_follow:
            target = self.model.default_subtask_id()
            if target is not None and target != self.selected:
                await self._show_subtask(target)
                return  # show() mounted the whole (current) tail already
        sel = self.selected
        if sel is None:
            target = self.model.default_subtask_id()
            if target is not None:
                await self._show_subtask(target)
            return
        added = [b for b in changes.added if b.subtask_id == sel]
        if len(added) > self.stream.SHOW_BLOCKS and self.stream.following:
            # many blocks at once (the screen was hidden, a replay's jump): the tail, not all then pruned
            st = self.model.subtask(sel)
            await self.stream.show(st, more_events=bool(st and st.has_earlier))
            return
        if added:
            await self.stream.add_blocks(added)
        updated = [b for b in changes.updated.values() if b.subtask_id == sel]
        if updated:
            self.stream.update_blocks(updated)


__all__ = ["SessionPanes"]
