"""Session header (title, backend/model, id) and the status bar (state, elapsed, idle
time, tokens, cost, retry waste, retries)."""

from __future__ import annotations

import time

from textual.content import Content
from textual.widget import Widget

from shepherd.core.states import SessionStatus
from shepherd.core.text import safe
from shepherd.tui import model as m
from shepherd.tui.fmt_cost import status_cost
from shepherd.tui.icons import state_icon
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.blocks import Clock

SESSION_STYLES = {
    SessionStatus.RUNNING: "$success",
    SessionStatus.PAUSED: "$warning",
    SessionStatus.WAITING: "$warning",
    SessionStatus.STUCK: "$warning",
    SessionStatus.DONE: "$success",
    SessionStatus.FAILED: "$error",
    SessionStatus.CANCELLED: "$foreground-muted",
    SessionStatus.INTERRUPTED: "$foreground-muted",
}
BUSY_STATUSES = (SessionStatus.RUNNING, SessionStatus.WAITING, SessionStatus.STUCK)  # open calls or idle time

def status_line(info: m.SessionInfo, now: float, *, live: bool, read_only: bool = False,
                follow: str | None = None, waiting: bool = False, frame: int = 0,
                tools: list[float | None] | None = None, note: str = "") -> Content:
    """``waiting``: a retry countdown runs (its banner says why nothing happens, so no idle time).
    ``tools``: start times of the tool calls open now (while any runs, nothing is idle).
    ``note``: what a key just started ("resuming…"), shown until the real state arrives."""
    status = info.status
    label = status
    if info.pause_requested and status == SessionStatus.RUNNING:
        label = "pausing…"
    elif status in m.UNSTARTED_STATUSES:  # followed before its first event is committed
        label = "starting…"
    icon = state_icon(status, frame)
    if note:
        icon, label = "⟳", note
    parts: list[tuple[str, str] | str] = [
        (f" {icon} {label} ", f"bold {SESSION_STYLES.get(status, '')}"),
    ]
    sep = (" │ ", "$foreground-muted")
    parts += [sep, (m.fmt_clock(info.elapsed(now)), "")]
    if live and info.approvals_waiting:  # the person is who it waits for: not a running tool, not idle
        n = info.approvals_waiting
        parts += [sep, (f"⏳ {n} approval{'s' if n != 1 else ''} waiting for you", "bold $warning")]
    elif live and status in BUSY_STATUSES:
        n_tools = len(tools) if tools else info.open_calls
        if n_tools:
            starts = [t for t in (tools or []) if t is not None]
            took = f" {m.fmt_duration(int(max(0.0, now - min(starts))))}" if starts else ""
            parts += [sep, (f"⚙ {n_tools} tool{'s' if n_tools != 1 else ''} running{took}", "$accent")]
        else:
            idle = None if waiting else info.idle(now)
            if idle is not None and idle >= 1:
                parts += [sep, (f"idle {m.fmt_duration(int(idle))}",
                                "$warning" if info.stalled else "$foreground-muted")]
    if info.stalled and live:
        parts += [sep, ("⚠ stalled", "bold $warning")]
    parts += [sep, (f"{m.fmt_tokens(info.input_tokens)}↑ {m.fmt_tokens(info.output_tokens)}↓ tok", "")]
    cost, wasted = status_cost(info.cost_usd, info.cost_known, info.waste)
    if cost:  # (no cost reported: the tokens say it all, never a "$0")
        parts += [sep, (cost, "")]
    if wasted:  # spent on attempts that failed or were retried
        parts += [sep, (wasted, "$warning")]
    if info.retries:
        parts += [sep, (f"↻ {info.retries}", "$warning")]
    if (read_only or not live) and not note:
        parts += [sep, ("read-only", "$foreground-muted italic")]
    elif follow == "tail":
        parts += [sep, ("attached", "$foreground-muted italic")]
    return Content.assemble(*parts)


def header_line(info: m.SessionInfo) -> Content:
    who = info.backend + (f"/{info.model}" if info.model else "")
    return Content.assemble((" " + (info.title or "(untitled)"), "bold"),
                            (f"  {who}" if who else "", "$foreground-muted"),
                            (f"  {safe(info.id)}", "$foreground-muted"))  # ids are kept exact in the model


class SessionHeader(Widget):
    DEFAULT_CSS = """
    SessionHeader { height: 1; width: 1fr; }
    """

    def __init__(self, info: m.SessionInfo, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.info = info
        self._seen = -1

    def render(self) -> Content:
        return header_line(self.info)

    def sync(self, info: m.SessionInfo) -> None:
        self.info = info
        self.refresh()


class StatusBar(Widget):
    """Redrawn on session changes and, while live, once a tick if its text changed."""

    DEFAULT_CSS = """
    StatusBar { height: 1; width: 1fr; }
    """

    def __init__(self, info: m.SessionInfo, clock: Clock = time.time, *, follow: str | None = None,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.info = info
        self.clock = clock
        self.follow = follow
        self.live = False
        self.read_only = True
        self.waiting = False
        self.tools: list[float | None] = []
        self.note = ""
        self.frame = 0
        self._text = ""
        self._ticking = False

    def _line(self) -> Content:
        return status_line(self.info, self.clock(), live=self.live, read_only=self.read_only,
                           follow=self.follow, waiting=self.waiting, frame=self.frame, tools=self.tools,
                           note=self.note)

    def render(self) -> Content:
        line = self._line()
        self._text = line.plain
        return line

    @property
    def text(self) -> str:
        return self._line().plain

    def sync(self, info: m.SessionInfo, *, live: bool, read_only: bool, waiting: bool = False,
             tools: list[float | None] | None = None) -> None:
        self.info = info
        self.live = live
        self.read_only = read_only
        self.waiting = waiting
        self.tools = list(tools or [])
        self.note = ""  # the real state has arrived
        self.refresh()
        self._update_ticking()

    def show_note(self, note: str) -> None:
        """Say at once what a key started, before the state it leads to is known."""
        self.note = note
        self.refresh()

    def _update_ticking(self) -> None:
        if not self.is_attached or self.live == self._ticking:
            return
        ticker = Ticker.of(self.app)
        ticker.add(self) if self.live else ticker.discard(self)
        self._ticking = self.live

    def on_mount(self) -> None:
        self._update_ticking()

    def on_unmount(self) -> None:
        if self._ticking:
            Ticker.of(self.app).discard(self)
            self._ticking = False

    def tick(self, frame: int) -> None:
        self.frame = frame
        if self.text != self._text:
            self.refresh()
