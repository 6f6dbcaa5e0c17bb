"""Answering a tool call that waits for approval: the one way the TUI sends a yes or a
no (the session view's ``y``/``n``/``a`` and the home screen's inbox both use it), and
the small dialog that asks a denial's optional reason.

In this process a run's ``Controller`` (the Supervisor) takes ``approve``/``deny``; for a
session another process runs, ``RemoteControl`` writes the commands table. A controller
that cannot answer is said in one line, never a traceback.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from shepherd.core.text import clip, safe
from shepherd.tui.stylesheet import CSSSection


class ApprovalUnsupported(Exception):
    """This engine or store cannot take an approval yet (one line for a notice)."""


async def send_answer(controller: Any, call_id: str | None, decision: str, *, scope: str = "call",
                      reason: str = "", source: str = "tui") -> bool:
    """Approve (``decision="approved"``, ``scope`` call|session) or deny (with ``reason``)
    ``call_id`` (None: the session's oldest pending call; the commands table only) through
    ``controller``. False when nothing was waiting (the Controller says so); raises
    ApprovalUnsupported when it cannot answer at all."""
    if controller is None:
        raise ApprovalUnsupported("no controls for this session here")
    method = getattr(controller, "approve" if decision == "approved" else "deny", None)
    if method is None:  # a Controller of another kind (the protocol has both)
        raise ApprovalUnsupported("this run cannot take approvals")
    if decision == "approved":
        sent = await method(call_id, scope=scope, source=source)
    else:
        sent = await method(call_id, reason=reason, source=source)
    return sent is not False  # (None: a Controller that returns nothing sent it)


def answer_notice(decision: str, tool: str, summary: str, scope: str = "call") -> str:
    """'approve sent: Bash make deploy' (what the person will see happen next)."""
    what = clip(f"{tool} {summary}".strip(), 60)
    if decision == "approved":
        return f"approve sent: {what}" + (f" (and {tool} for the rest of the session)" if scope == "session" else "")
    return f"deny sent: {what}"


class DenyModal(CSSSection, ModalScreen[str | None]):
    """Deny a call, with an optional reason for the agent. Enter denies (an empty reason
    is fine), Esc keeps the call waiting. Dismisses with the reason ("" for none) or None."""

    CSS_SECTION = "dialogs"  # tui/css/dialogs.tcss

    BINDINGS = [Binding("escape", "cancel", "Keep waiting")]

    def __init__(self, tool: str, summary: str) -> None:
        super().__init__()
        self.tool = tool
        self.summary = summary

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Deny this tool call?", classes="dialog-title")
            # the call's text is data (safe already; Content: never markup)
            yield Static(Content(safe(clip(f"{self.tool} {self.summary}".strip(), 200))), id="deny-call")
            yield Label("Reason for the agent (optional)", classes="field-label")
            yield Input(placeholder="e.g. not on the production database", id="reason")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Keep waiting", id="cancel")
                yield Button("Deny", id="deny", variant="error")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    @on(Input.Submitted, "#reason")
    @on(Button.Pressed, "#deny")
    def _deny(self) -> None:
        self.dismiss(self.query_one("#reason", Input).value.strip())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
