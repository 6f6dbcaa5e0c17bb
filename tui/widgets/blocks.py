"""One widget per model block. Each keeps the block it shows and re-renders only when
the block's version moved (``sync``); spinners and countdowns tick through the
app-level ``Ticker`` and read time from the screen's clock."""

from __future__ import annotations

import time
from typing import Callable

from textual.binding import Binding
from textual.content import Content
from textual.events import Click
from textual.message import Message
from textual.widget import Widget
from textual.geometry import Size

from shepherd.tui import model as m
from shepherd.tui.fmt_cost import attempt_cost
from shepherd.tui.widgets import markdown as md
from shepherd.tui.widgets.markdown import RENDERED
from shepherd.tui.widgets.anim import Ticker

Clock = Callable[[], float]

def _clean(text: str) -> str:
    """Tabs expanded. Controls are already visible: the model made its text safe where it
    entered the view (core.text.safe), and a second, silent strip here would hide them."""
    return text.expandtabs(4)

ATTEMPT_REASONS = {
    "first": "first",
    "retry": "retry after error",
    "restart": "stream restart",
    "user_retry": "retry by user",
    "resume": "resumed",
    "repair": "transcript repaired",
}

NOTE_ICONS = {"note": "✎", "pause": "⏸", "resume": "▶", "session": "■", "stall": "⚠", "opaque": "?",
              "control": "▸"}


class BlockWidget(Widget):
    """Base: a block rendered as Content; ``sync`` re-renders on a version change.

    CSS classes that follow the block's state come from ``state_classes``: given to the
    constructor and updated in one batch when the block moves on, because every class
    change re-applies the stylesheet to the widget (a stream mounts a hundred of them)."""

    DEFAULT_CSS = """
    BlockWidget { height: auto; width: 1fr; }
    """

    def __init__(self, block: m.Block, clock: Clock = time.time) -> None:
        on = [name for name, want in self.state_classes(block).items() if want]
        super().__init__(classes=" ".join(["block", f"-{block.kind}", *on]))
        self.block = block
        self.clock = clock
        self.frame = 0
        self._seen = -1
        self._ticking = False
        self._layout_width: int | None = None  # content width the layout last asked for

    # what subclasses implement
    def render_block(self, width: int) -> Content:  # pragma: no cover - overridden
        return Content("")

    def animated(self) -> bool:
        return False

    @classmethod
    def state_classes(cls, block: m.Block) -> dict[str, bool]:
        """CSS classes that follow the block's state (name -> on)."""
        return {}

    def on_block_changed(self) -> None:
        """The block moved on: its state classes, in one stylesheet pass if any changed."""
        classes = self.state_classes(self.block)
        if classes:
            self.update_classes(classes)

    # machinery
    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._layout_width = width
        return super().get_content_height(container, viewport, width)

    def content_width(self) -> int:
        """The width to render at: the one the layout gave. Not ``content_size``: for a
        block outside the view that asks the compositor for a map of every widget on the
        screen, one more arrangement of the whole stream per frame."""
        if self._layout_width is None:
            return self.content_size.width  # not laid out yet
        return self._layout_width

    def content_height(self) -> int:
        """The content height as of the last layout (without a compositor look-up)."""
        return max(0, self.outer_size.height - self.styles.gutter.height)

    def render(self) -> Content:
        width = max(10, self.content_width() or 80)
        try:
            return self.render_block(width)
        except Exception as exc:  # a rendering bug shows as a line, never a crash
            return Content(f"[{self.block.kind}: {type(exc).__name__}: {exc}]")

    def on_mount(self) -> None:
        self._seen = self.block.version
        self.frame = Ticker.of(self.app).frame
        self.on_block_changed()
        self._update_ticking()

    def on_unmount(self) -> None:
        if self._ticking:
            Ticker.of(self.app).discard(self)
            self._ticking = False

    def sync(self) -> bool:
        """Re-render if the block changed; True when it did."""
        if self.block.version == self._seen:
            return False
        self._seen = self.block.version
        self.on_block_changed()
        self.refresh(layout=True)
        self._update_ticking()
        return True

    def _update_ticking(self) -> None:
        want = self.animated()
        if want == self._ticking or not self.is_attached:
            return
        ticker = Ticker.of(self.app)
        if want:
            ticker.add(self)
        else:
            ticker.discard(self)
        self._ticking = want

    def tick(self, frame: int) -> None:
        self.frame = frame
        self.refresh()
        if not self.animated():
            self._update_ticking()


class AttemptSeparator(BlockWidget):
    block: m.AttemptBlock

    def render_block(self, width: int) -> Content:
        b = self.block
        reason = ATTEMPT_REASONS.get(b.reason, b.reason)
        label = f" attempt {b.number} · {reason} "
        head = Content.assemble("──", (label, "bold"))
        cost, wasted = attempt_cost(b.cost)
        if cost:  # what this attempt used (and whether that was wasted: it failed or was retried)
            head = head.append(Content.assemble("─ ", (cost + " ", "$foreground-muted"),
                                                ("wasted " if wasted else "", "$warning")))
        head = head.append("─" * max(0, width - head.cell_length))
        if not b.prompt_extra.strip():
            return head
        lines = b.prompt_extra.strip().splitlines()
        extra = " ".join(lines[:1])
        if len(lines) > 1:
            extra += f"  (+{len(lines) - 1} lines)"
        return Content("\n").join([head, Content.styled(m.clip("↳ " + extra, width), "$foreground-muted italic")])


def _rows(content: Content) -> int:
    return content.plain.count("\n") + 1


class TextView(BlockWidget):
    """Assistant (or user) text as Markdown, one widget per message. Deltas of a frame
    arrive as one version bump: the text is re-parsed once and only this widget
    re-renders. Wrapped here at the real width, so its height is exact."""

    DEFAULT_CSS = """
    TextView { height: auto; padding: 0 1; }
    """

    GUTTER = 2  # its padding in stream.tcss: its content is this much narrower than the stream's

    @staticmethod
    def finished_rows(block: m.TextBlock, width: int) -> int:
        """The rows a finished message takes at content ``width``: rendered into the cache
        its widget reads at that width, so a stream can count a tail's rows before it
        mounts it (and mount no more than fill the view) at no cost to the layout."""
        return _rows(RENDERED.render(block.text, max(8, width)))

    def __init__(self, block: m.TextBlock, clock: Clock = time.time) -> None:
        super().__init__(block, clock)
        self._units: list[md.Unit] | None = None
        self._units_version = -1
        self._cache: dict[int, Content] = {}  # width -> content, for the current version
        self._cache_version = -1

    @classmethod
    def state_classes(cls, block: m.Block) -> dict[str, bool]:
        return {f"-role-{block.role}": True, "-streaming": not block.completed}  # type: ignore[attr-defined]

    def _content(self, width: int) -> Content:
        b = self.block
        if self._cache_version != b.version:
            self._cache.clear()
            self._cache_version = b.version
        content = self._cache.get(width)
        if content is None:
            # a finished message is shared (RENDERED: a switch back mounts a new widget);
            # a streaming one changes every frame and is this widget's alone
            content = RENDERED.render(b.text, width, self._parsed) if b.completed else md.render(self._parsed(), width)
            if len(self._cache) >= 4:  # a layout may ask for a couple of widths
                self._cache.clear()
            self._cache[width] = content
        return content

    def _parsed(self) -> list[md.Unit]:
        """The text's Markdown blocks, parsed once per version."""
        if self._units is None or self._units_version != self.block.version:
            self._units = md.parse(self.block.text)
            self._units_version = self.block.version
        return self._units

    def render(self) -> Content:
        return self._content(max(8, self.content_width() or 80))

    def sync(self) -> bool:
        """Like BlockWidget.sync, but a delta that does not add a line repaints this
        widget only, without a layout pass over the whole stream."""
        if self.block.version == self._seen:
            return False
        self._seen = self.block.version
        self.on_block_changed()
        width, height = self.content_width(), self.content_height()
        if width and height:
            lines = _rows(self._content(max(8, width)))
            self.refresh(layout=lines != height)
        else:
            self.refresh(layout=True)
        return True

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._layout_width = width
        return _rows(self._content(max(8, width)))

    @property
    def source(self) -> str:
        """The text this widget shows (as of its last sync)."""
        return self.block.text if self._seen == self.block.version else ""

    @property
    def settled(self) -> bool:
        return self._seen == self.block.version


class Expandable(BlockWidget):
    """A block that folds: Enter or a click toggles it. The footer says which way
    (two bindings on Enter, ``check_action`` shows the one that applies)."""

    class Unfolded(Message):
        """A reader unfolded ``block``: its container keeps the block's head in view."""

        def __init__(self, block: "Expandable") -> None:
            super().__init__()
            self.block = block

        @property
        def control(self) -> "Expandable":
            return self.block

    can_focus = True
    BINDINGS = [
        Binding("enter", "expand", "Expand", tooltip="Show this block in full"),
        Binding("enter", "collapse", "Collapse", tooltip="Fold this block to one line"),
    ]

    def __init__(self, block: m.Block, clock: Clock = time.time) -> None:
        super().__init__(block, clock)
        self.expanded = False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "expand":
            return not self.expanded
        if action == "collapse":
            return self.expanded
        return True

    def action_expand(self) -> None:
        if not self.expanded:
            self.action_toggle()

    def action_collapse(self) -> None:
        if self.expanded:
            self.action_toggle()

    def action_toggle(self) -> None:
        self.expanded = not self.expanded
        self.set_class(self.expanded, "-expanded")
        self.refresh(layout=True)
        self.refresh_bindings()
        if self.expanded:  # a reader opened it: keep its head in view, not the stream's end
            self.post_message(self.Unfolded(self))

    def on_click(self, event: Click) -> None:
        event.stop()
        self.focus()
        self.action_toggle()


class ThinkingView(Expandable):
    block: m.ThinkingBlock

    def render_block(self, width: int) -> Content:
        text = self.block.text.strip()
        lines = text.splitlines() or [""]
        marker = "▾" if self.expanded else "▸"
        head = Content.assemble((f"{marker} ∴ thinking", "bold"),
                                f"  {len(lines)} line{'s' if len(lines) != 1 else ''}")
        if self.expanded:
            return Content("\n").join([head, Content.styled(text, "italic")])
        last = m.clip(lines[-1], max(10, width - head.cell_length - 3))
        return head.append(Content.styled("  " + last, "italic"))


class ToolCallView(Expandable):
    """Name, compact input, spinner while open; status and duration when finished;
    output folded until Enter/click (the full input and output: ``o``)."""

    block: m.ToolBlock
    MAX_OUTPUT_LINES = 200
    ANSWER_KEYS = True  # a waiting call says which keys answer it (not in a replay)

    def animated(self) -> bool:
        return self.block.running

    APPROVAL_PREVIEW_LINES = 8

    @classmethod
    def state_classes(cls, block: m.Block) -> dict[str, bool]:
        classes = {f"-{status}": block.status == status for status in m.TOOL_ICONS}  # type: ignore[attr-defined]
        classes["-awaiting"] = block.awaiting  # type: ignore[attr-defined]
        return classes

    def icon(self) -> str:
        if self.block.awaiting:
            return m.APPROVAL_ICONS["waiting"]
        if self.block.running:
            return m.spinner(self.frame)
        return m.TOOL_ICONS.get(self.block.status, "?")

    def render_block(self, width: int) -> Content:
        """The icon, the tail and a failing output's last line take the block's colour (its
        status class in the stylesheet); the rest says its own."""
        b = self.block
        elapsed = b.elapsed(self.clock())
        if b.running:
            tail = f"  {m.fmt_duration(elapsed)}" if elapsed is not None else ""
        else:
            tail = f"  {b.status}" + (f" · {m.fmt_duration(elapsed)}" if elapsed is not None else "")
        has_output = bool(b.output.strip())
        marker = "▾ " if self.expanded else "▸ "  # every call unfolds (output, else its input)
        head = Content.assemble((marker, "$foreground-muted"), (self.icon() + " ", "bold"),
                                (b.name or "tool", "bold $foreground"))
        room = width - head.cell_length - len(tail) - 1
        if b.summary and room > 4:
            head = head.append(Content.styled(" " + m.clip(b.summary, room), "$foreground"))
        head = head.append(Content.styled(tail, "" if not b.running else "$foreground-muted"))
        parts = [head]
        if b.approval:
            parts.extend(approval_lines(b, self.clock(), width, self.APPROVAL_PREVIEW_LINES,
                                        keys=self.ANSWER_KEYS))
        if b.denial:
            parts.append(Content.styled(m.clip(f"    ⛔ {b.denial}", width), "$warning"))
        if has_output and self.expanded:
            shown, more = m.output_preview(b.output, self.MAX_OUTPUT_LINES)
            body = Content(_clean(shown.rstrip("\n")))
            parts.append(body.stylize("$foreground-muted" if b.status == "ok" else "$foreground"))
            if more:
                parts.append(Content.styled(f"… {more} more lines — o: full output", "$foreground-muted italic"))
        elif self.expanded:
            parts.append(Content.styled(_clean(input_text(b.input)) or "(no input, no output yet)",
                                        "$foreground-muted"))
        elif has_output and b.status in ("error", "denied") and b.approval != "denied":
            # the end of a failing output says why (tracebacks, test summaries); a person's
            # denial says it above
            last = b.output.strip().splitlines()[-1]
            parts.append(Content(m.clip("    " + _clean(last), width)))
        return Content("\n").join(parts)


def approval_lines(b: m.ToolBlock, now: float, width: int, preview_lines: int = 8,
                   keys: bool = True) -> list[Content]:
    """The inline approval under a call: the question with how long it has waited, what
    the call would do, and the keys; once answered, who answered and why."""
    icon = m.APPROVAL_ICONS.get(b.approval, "?")
    room = max(10, width - 4)

    def line(text: str, style: str, indent: str = "    ") -> Content:
        return Content.styled(indent + m.clip(text, room), style)

    if b.approval == "waiting":
        waited = b.waited(now)
        head = f"{icon} waiting for your approval" + (f" · {m.fmt_duration(waited)}" if waited is not None else "")
        if b.reask_of:
            head += " · asked again after a resume"
        lines = [line(head, "bold $warning")]
        for text in m.approval_preview(b.name, b.input, preview_lines, max(10, width - 8)):
            lines.append(Content.styled("       " + _clean(text), "$foreground"))
        if not keys:
            return lines
        answers = ["y approve · n deny", f"a allow {b.name or 'this tool'} for the session"]
        for text in [" · ".join(answers)] if len(" · ".join(answers)) <= room else answers:  # narrow: two lines
            lines.append(line(text, "$foreground-muted"))
        return lines
    if b.approval == "approved":
        by = "by rule" if b.approval_source == "rule" else f"({b.approval_source})" if b.approval_source else ""
        text = f"{icon} approved {by}".rstrip()
        if b.approval_scope == "session" and b.approval_source != "rule":
            text += f" · {b.name} approved for this session"
        if b.approval_reason:
            text += f": {b.approval_reason}"
        return [line(text, "$success")]
    if b.approval == "denied":
        by = f" ({b.approval_source})" if b.approval_source else ""
        return [line(f"{icon} denied{by}" + (f": {b.approval_reason}" if b.approval_reason else ""), "$warning")]
    # unanswered: the call ended (or its runner stopped) first; it did not run on a yes
    why = b.approval_reason or "not run on a yes"
    return [line(f"{icon} was waiting for approval, not answered: {why}", "$foreground-muted")]


def input_text(data: object) -> str:
    """A tool's input as a person reads it: ``key: value`` lines, strings as they are."""
    if data in (None, "", {}):
        return ""
    if isinstance(data, str):
        return data
    if isinstance(data, dict):  # one key a line; a text with lines (file content) as its lines
        out: list[str] = []
        for key, value in data.items():
            if isinstance(value, str) and "\n" in value:
                out.append(f"{key}:")
                out.extend("    " + line for line in value.rstrip("\n").split("\n"))
            else:
                out.append(f"{key}: {value if isinstance(value, str) else _json(value)}")
        return "\n".join(out)
    return _json(data)


def _json(value: object) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class HookView(BlockWidget):
    """Its colour is the stylesheet's (``-deny``)."""

    block: m.HookBlock

    @classmethod
    def state_classes(cls, block: m.Block) -> dict[str, bool]:
        return {"-deny": block.decision == "deny"}  # type: ignore[attr-defined]

    def render_block(self, width: int) -> Content:
        b = self.block
        if b.decision == "deny":
            return Content(m.clip(f"⛔ hook denied {b.tool or 'tool'}: {b.reason}", width))
        return Content(m.clip(f"✓ hook allowed {b.tool or 'tool'}: {b.reason}", width))


class RetryBanner(BlockWidget):
    """'tool concurrency — retry 2/5 in 3 s' with a live countdown bar."""

    block: m.RetryBlock
    RETRY_NOW_HINT = "  n: retry now"  # (a replay has no keys that act: its banner says none)

    def animated(self) -> bool:
        return self.block.active

    @classmethod
    def state_classes(cls, block: m.Block) -> dict[str, bool]:
        return {"-active": block.active}  # type: ignore[attr-defined]

    def render_block(self, width: int) -> Content:
        b = self.block
        now = self.clock()
        if b.active:
            head = Content.assemble(("⟳ ", "bold"), (b.text(now), "bold"))
            hint = "  starting…" if b.seconds_left(now) <= 0 else self.RETRY_NOW_HINT
            if head.cell_length + len(hint) <= width:
                head = head.append(Content.styled(hint, "$foreground-muted"))
            bar_w = max(4, width)
            done = int(round(b.progress(now) * bar_w))
            bar = Content.assemble("━" * done, ("─" * (bar_w - done), "$foreground-muted"))
            return Content("\n").join([head, bar])
        return Content(m.clip(f"⟳ {b.summary()}", width))


class ErrorView(BlockWidget):
    """Styled span by span, not by a class: the body's indent has the default colour (a
    class's colour would reach it, and change the snapshots' bytes)."""

    block: m.ErrorBlock

    def render_block(self, width: int) -> Content:
        b = self.block
        code = f" {b.status_code}" if b.status_code else ""
        head = Content.assemble(("✗ ", "bold $error"), (f"{m.kind_label(b.err_kind)}{code}", "bold $error"),
                                (f"  {b.exception_type}" if b.exception_type else "", "$foreground-muted"))
        lines = b.message.strip().splitlines()
        if not lines:
            return head
        body = [Content.styled(m.clip(line, width - 2), "$error") for line in lines[:3]]
        if len(lines) > 3:
            body.append(Content.styled(f"… {len(lines) - 3} more lines", "$foreground-muted italic"))
        return Content("\n").join([head, *[Content("  ").append(x) for x in body]])


class NoteView(BlockWidget):
    block: m.NoteBlock

    @classmethod
    def state_classes(cls, block: m.Block) -> dict[str, bool]:
        # "-category-": the kind's class is "-note" already, and so is a person's note's category
        return {f"-category-{block.category}": True}  # type: ignore[attr-defined]

    def render_block(self, width: int) -> Content:
        b = self.block
        icon = NOTE_ICONS.get(b.category, "▸")
        if b.category == "note":
            return Content(f"{icon} {b.text}")
        return Content(m.clip(f"{icon} {b.text}", width))


class SubtaskEndView(BlockWidget):
    """Its colour is the stylesheet's, by the subtask's end state (``-done``, ``-failed``...)."""

    block: m.SubtaskEndBlock

    @classmethod
    def state_classes(cls, block: m.Block) -> dict[str, bool]:
        return {f"-{block.status}": True}  # type: ignore[attr-defined]

    def render_block(self, width: int) -> Content:
        b = self.block
        icon = m.STATE_ICONS.get(b.status, "■")
        text = f"{icon} subtask {b.status}" + (f" — {b.reason}" if b.reason else "")
        return Content(m.clip(text, width))


WIDGETS: dict[type[m.Block], type[Widget]] = {
    m.AttemptBlock: AttemptSeparator,
    m.TextBlock: TextView,
    m.ThinkingBlock: ThinkingView,
    m.ToolBlock: ToolCallView,
    m.HookBlock: HookView,
    m.RetryBlock: RetryBanner,
    m.ErrorBlock: ErrorView,
    m.NoteBlock: NoteView,
    m.SubtaskEndBlock: SubtaskEndView,
}


def widget_for(block: m.Block, clock: Clock = time.time) -> Widget:
    cls = WIDGETS.get(type(block), NoteView)
    if cls is NoteView and not isinstance(block, m.NoteBlock):
        block = m.NoteBlock(bid=block.bid, subtask_id=block.subtask_id, seq=block.seq, ts=block.ts,
                            version=block.version, category="opaque", text=block.kind)
    return cls(block, clock)  # type: ignore[call-arg]
