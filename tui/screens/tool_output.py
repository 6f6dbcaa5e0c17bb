"""A tool call in full: its whole input and output, as stored, scrollable, with sizes.

Opened with ``o`` from the session view (the focused tool call, else the last one).
The text is read from the store's ``tool_calls`` row (the block's copy is the fallback)
and shown as plain text: never markup, never a control sequence (the stored row enters
the view here, so it goes through ``core.text.safe`` here, like the view model's events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from shepherd.core.text import safe
from shepherd.tui import model as m
from shepherd.tui.widgets.blocks import _clean, input_text
from shepherd.tui.stylesheet import CSSSection

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore


def fmt_size(text: str) -> str:
    """'12.3 kB, 480 lines' (bytes as UTF-8)."""
    n = len(text.encode("utf-8", errors="replace"))
    size = f"{n} B" if n < 1000 else (f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1_000_000:.1f} MB")
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return f"{size}, {lines} line{'s' if lines != 1 else ''}"


async def load_call(store: "EventStore | None", session_id: str, block: m.ToolBlock) -> tuple[Any, str]:
    """(input, output) of the call as stored; the block's own copy if the store has none."""
    if store is not None and block.call_id:
        try:
            for row in await store.tool_calls(session_id):
                if row.call_id == block.call_id:
                    return (row.input or block.input), (row.output if row.output is not None else block.output)
        except Exception:  # noqa: BLE001 - the block's copy is still worth showing
            pass
    return block.input, block.output


class ToolOutputScreen(CSSSection, ModalScreen[None]):
    """Esc, q or o closes it; arrows, PgUp/PgDn, Home/End scroll."""

    CSS_SECTION = "tool_output"  # tui/css/tool_output.tcss

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("q,o", "close", "Close", show=False),
    ]

    def __init__(self, block: m.ToolBlock, input_data: Any, output: str) -> None:
        super().__init__()
        self.block = block
        raw_input, raw_output = input_text(input_data), output or ""
        self.sizes = (fmt_size(raw_input), fmt_size(raw_output))  # of the text as stored
        self.input_text, self.output = safe(raw_input), safe(raw_output)

    def compose(self) -> ComposeResult:
        b = self.block
        status = b.status + (f" · {m.fmt_duration(b.duration_s)}" if b.duration_s is not None else "")
        title = Text.assemble((f"{m.TOOL_ICONS.get(b.status, '?')} ", "bold"), (b.name or "tool", "bold"),
                              (f"  {status}", "dim"), (f"  {safe(b.call_id)}" if b.call_id else "", "dim"))
        with VerticalScroll(id="tool-output"):
            yield Static(title, classes="title")
            yield Static(Text(f"input  {self.sizes[0]}"), classes="head", id="input-head")
            yield Static(Text(_clean(self.input_text) or "(none)"), id="input")
            what = f"output  {self.sizes[1]}" if self.output else "output"
            yield Static(Text(what), classes="head", id="output-head")
            body = _clean(self.output) if self.output else ("(still running)" if b.running else "(no output)")
            yield Static(Text(body), id="output")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tool-output", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
