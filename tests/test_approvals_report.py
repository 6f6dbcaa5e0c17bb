"""Approvals in the text log (`shepherd show`, a headless run's log) and the Markdown export:
what was asked, the answer and who gave it — untrusted input shown as data."""

from __future__ import annotations

from shepherd.core.events import ApprovalDecided, ApprovalRequested, ToolStarted
from shepherd.core.report import LogFormatter, export_markdown
from shepherd.core.store.rows import SessionRow

HOSTILE = "make deploy \x1b]52;c;aGk=\x07[bold red]boom[/]"


def _log(*events) -> list[str]:
    fmt = LogFormatter()
    return [line.plain for ev in events for line in fmt.format(ev)]


def test_the_log_says_what_was_asked_and_who_answered() -> None:
    lines = _log(
        ToolStarted(call_id="c1", name="Bash", input={"command": HOSTILE}, ts=1.0),
        ApprovalRequested(call_id="c1", tool="Bash", input={"command": HOSTILE}, ts=2.0),
        ApprovalDecided(call_id="c1", decision="denied", source="cli", reason="not on a Friday", ts=3.0),
        ApprovalRequested(call_id="c2", tool="Write", input={"file_path": "a.py"}, reask_of="c2", ts=4.0),
        ApprovalDecided(call_id="c2", decision="approved", source="tui", scope="session", ts=5.0),
    )
    asked, denied, again, approved = lines[1:]
    assert "approval asked: Bash" in asked and "call c1" in asked
    assert "denied: Bash (by cli)" in denied and "not on a Friday" in denied
    assert "(asked again)" in again
    assert "approved for the session: Write (by tui)" in approved
    assert not any("\x1b" in line or "\x07" in line for line in lines)
    assert "[bold red]boom[/]" in asked  # markup is text, not style


def test_the_markdown_export_has_the_approval_and_its_answer() -> None:
    row = SessionRow(id="s1", title="t", backend="scripted", model=None, workspace="/w", status="done",
                     started_at=0.0, updated_at=1.0, ended_at=1.0, last_seq=3, subtasks_total=1,
                     subtasks_done=1, retries=0, input_tokens=0, output_tokens=0, cost_usd=0.0, task={})
    text = "".join(export_markdown(row, [], [
        ApprovalRequested(call_id="c1", tool="Bash", input={"command": HOSTILE}, ts=2.0),
        ApprovalDecided(call_id="c1", decision="denied", source="headless", reason="no one to approve", ts=3.0),
    ]))
    assert "approval asked for `Bash`" in text and "denied by headless: no one to approve" in text
    assert "\x1b" not in text and "\x07" not in text
