"""The subtask list: one line per subtask in plan order with a state icon; a spinner
while running and a countdown while waiting to retry."""

from __future__ import annotations

import time

from rich.cells import cell_len
from textual.containers import Vertical
from textual.content import Content
from textual.events import Click
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from shepherd.core.states import SubtaskState
from shepherd.tui import model as m
from shepherd.tui.fmt_cost import subtask_cost
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.blocks import Clock

STATE_STYLES = {
    SubtaskState.PENDING: "$foreground-muted",
    SubtaskState.RUNNING: "$accent",
    SubtaskState.WAITING_RETRY: "$warning",
    SubtaskState.PAUSED: "$warning",
    SubtaskState.DONE: "$success",
    SubtaskState.FAILED: "$error",
    SubtaskState.STUCK: "$warning",
    SubtaskState.SKIPPED: "$foreground-muted",
    SubtaskState.CANCELLED: "$foreground-muted",
    SubtaskState.INTERRUPTED: "$foreground-muted",
}
ANIMATED_STATES = frozenset({SubtaskState.RUNNING, SubtaskState.WAITING_RETRY})  # a spinner, a countdown


def option_id(subtask_id: str) -> str:
    return "st:" + subtask_id


def subtask_id_of(opt_id: str | None) -> str | None:
    if opt_id is None or not opt_id.startswith("st:"):
        return None
    return opt_id[3:]


def subtask_line(st: m.SubtaskView, frame: int, now: float, width: int | None = None) -> Content:
    """'⠙ Find the failing test' / '◷ 3s Fix it' / '✓ ↻2 Done one      $0.42 −0.10' (its cost,
    and the part wasted on failed attempts, at the right edge of ``width``: the title is cut
    to make room; too narrow for both, the title wins)."""
    state = st.state
    if state == SubtaskState.RUNNING:
        icon = m.spinner(frame)
    else:
        icon = m.STATE_ICONS.get(state, "?")
    parts: list[tuple[str, str] | str] = [(icon + " ", f"bold {STATE_STYLES.get(state, '')}")]
    # counters go before the title: a long title is cut at the right edge, they are not
    if state == SubtaskState.WAITING_RETRY and st.retry is not None and st.retry.active:
        parts.append((f"{m.fmt_seconds_left(st.retry.seconds_left(now)).replace(' ', '')} ", "bold $warning"))
    elif st.retries:
        parts.append((f"↻{st.retries} ", "$foreground-muted"))
    if st.phase == "planning":
        parts.append(("plan: ", "$foreground-muted italic"))
    title_style = "" if state != SubtaskState.PENDING else "$foreground-muted"
    cost, wasted = subtask_cost(st.cost, st.waste)
    tail = f" {cost}" + (f" {wasted}" if wasted else "") if cost else ""
    head = Content.assemble(*parts)
    room = (width or 0) - head.cell_length - len(tail)
    if not tail or room < 6:
        return head.append(Content.styled(st.label, title_style))
    title = m.clip(st.label, room)
    while cell_len(title) > room:  # (wide characters)
        title = title[:-2] + "…"
    return Content.assemble(head, (title, title_style), " " * (room - cell_len(title)),
                            (f" {cost}", "$foreground-muted"),
                            (f" {wasted}" if wasted else "", "$warning"))  # spent on failed attempts


class SubtaskList(OptionList):
    """As tall as its lines (up to its pane's height): a spinner's frame or a switch
    repaints those lines, not the pane's empty rows below them (Textual renders a widget's
    every row again on a refresh; 45 rows of an OptionList took ~7 ms, two take 0.5)."""

    DEFAULT_CSS = """
    SubtaskList { height: auto; max-height: 100%; }
    """

    def __init__(self, clock: Clock = time.time, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.clock = clock
        self.frame = 0
        self._subtasks: list[m.SubtaskView] = []
        self._plain: dict[str, str] = {}  # subtask id -> last rendered plain text
        self._ticking = False

    def set_subtasks(self, subtasks: list[m.SubtaskView], selected: str | None) -> None:
        self._subtasks = list(subtasks)
        now = self.clock()
        options = []
        self._plain.clear()
        width = self._line_width()
        for st in self._subtasks:
            line = subtask_line(st, self.frame, now, width)
            self._plain[st.id] = line.plain
            options.append(Option(line, id=option_id(st.id)))
        self.set_options(options)
        self.select(selected)
        self._update_ticking()

    def select(self, subtask_id: str | None) -> None:
        if subtask_id is None:
            return
        try:
            index = self.get_option_index(option_id(subtask_id))
        except Exception:
            return
        if self.highlighted != index:
            self.highlighted = index

    @property
    def selected_id(self) -> str | None:
        opt = self.highlighted_option
        return subtask_id_of(opt.id) if opt is not None else None

    def _line_width(self) -> int | None:
        width = self.scrollable_content_region.width if self.is_attached else 0
        return width if width > 0 else None

    def on_resize(self) -> None:
        self.refresh_subtasks()  # the costs stay at the right edge

    def refresh_subtasks(self, ids: set[str] | None = None) -> None:
        now = self.clock()
        width = self._line_width()
        for st in self._subtasks:
            if ids is not None and st.id not in ids:
                continue
            line = subtask_line(st, self.frame, now, width)
            if self._plain.get(st.id) != line.plain:
                self._plain[st.id] = line.plain
                try:
                    self.replace_option_prompt(option_id(st.id), line)
                except Exception:
                    pass
        self._update_ticking()

    def _animated(self) -> bool:
        return any(st.state in ANIMATED_STATES for st in self._subtasks)

    def _update_ticking(self) -> None:
        want = self._animated()
        if want == self._ticking or not self.is_attached:
            return
        ticker = Ticker.of(self.app)
        ticker.add(self) if want else ticker.discard(self)
        self._ticking = want

    def on_mount(self) -> None:
        self.frame = Ticker.of(self.app).frame
        self._update_ticking()

    def on_unmount(self) -> None:
        if self._ticking:
            Ticker.of(self.app).discard(self)
            self._ticking = False

    def tick(self, frame: int) -> None:
        self.frame = frame
        self.refresh_subtasks({st.id for st in self._subtasks if st.state in ANIMATED_STATES})


class SubtaskPane(Vertical):
    """The column that holds the subtask list: its background and border fill the
    column, so the list itself can be only as tall as its lines."""

    DEFAULT_CSS = """
    SubtaskPane { height: 1fr; }
    """

    def on_click(self, event: Click) -> None:
        if event.widget is self:  # below the last line: as a click on the list would
            self.query_one(SubtaskList).focus()
