"""Approvals in the TUI: the inline block of a gated tool call (model, widget, keys) and
the home screen's "Needs you" inbox (rows, keys, snapshots)."""

from __future__ import annotations

from shepherd.core import events as ev
from shepherd.tui import model as m

SID = "s-apr"


def _e(event: ev.Event, seq: int, ts: float, subtask: str = "main") -> ev.Event:
    return event.with_(session_id=SID, seq=seq, ts=ts, subtask_id=subtask, attempt=1)


def _started(model: m.SessionModel) -> int:
    model.apply([
        _e(ev.SessionStarted(title="t", backend="scripted"), 1, 100.0, subtask=None),
        _e(ev.SubtaskStarted(title="Main"), 2, 100.1),
        _e(ev.AttemptStarted(), 3, 100.2),
    ])
    return 4


# --- the view model (pure) -------------------------------------------------------------------


def test_requested_then_approved_shows_on_the_call_block() -> None:
    model = m.SessionModel(SID)
    seq = _started(model)
    model.apply([_e(ev.ToolStarted(call_id="c1", name="Bash", input={"command": "make deploy"}), seq, 101.0)])
    tb = model._tools["c1"]
    changes = model.apply([_e(ev.ApprovalRequested(call_id="c1", tool="Bash", input={"command": "make deploy"}),
                              seq + 1, 102.0)])
    assert tb.bid in changes.updated and changes.session  # the block and the session's count moved
    assert tb.approval == "waiting" and tb.awaiting and tb.waited(112.0) == 10.0
    assert model.session.approvals_waiting == 1
    assert model.pending_approvals() == [tb] and model.pending_approvals("other") == []
    before = tb.version
    model.apply([_e(ev.ApprovalDecided(call_id="c1", decision="approved", source="cli"), seq + 2, 103.0)])
    assert tb.version > before
    assert (tb.approval, tb.approval_source, tb.awaiting) == ("approved", "cli", False)
    assert model.session.approvals_waiting == 0 and model.pending_approvals() == []
    model.apply([_e(ev.ToolFinished(call_id="c1", status="ok", output="done"), seq + 3, 104.0)])
    assert tb.status == "ok" and tb.approval == "approved"  # the answer stays on the block


def test_denied_with_reason_and_scope() -> None:
    model = m.SessionModel(SID)
    seq = _started(model)
    model.apply([
        _e(ev.ToolStarted(call_id="c1", name="Write", input={"file_path": "a.py", "content": "x = 1\n"}), seq, 101),
        _e(ev.ApprovalRequested(call_id="c1", tool="Write", input={"file_path": "a.py", "content": "x = 1\n"}),
           seq + 1, 101.5),
        _e(ev.ApprovalDecided(call_id="c1", decision="denied", source="tui", reason="not that file"), seq + 2, 102),
        _e(ev.ToolFinished(call_id="c1", status="denied", output="denied: not that file"), seq + 3, 102.1),
        _e(ev.ToolStarted(call_id="c2", name="Bash", input={"command": "ls"}), seq + 4, 103),
        _e(ev.ApprovalRequested(call_id="c2", tool="Bash", input={"command": "ls"}), seq + 5, 103.1),
        _e(ev.ApprovalDecided(call_id="c2", decision="approved", source="tui", scope="session"), seq + 6, 104),
    ])
    c1, c2 = model._tools["c1"], model._tools["c2"]
    assert (c1.approval, c1.approval_reason, c1.status) == ("denied", "not that file", "denied")
    assert (c2.approval, c2.approval_scope) == ("approved", "session")


def test_an_ending_never_approves_and_a_missing_start_still_shows() -> None:
    model = m.SessionModel(SID)
    seq = _started(model)
    # no tool.started seen (a page boundary, an odd backend): the request makes the block
    model.apply([_e(ev.ApprovalRequested(call_id="c9", tool="run_command", input={"command": "rm -rf build"}),
                    seq, 101)])
    tb = model._tools["c9"]
    assert tb.name == "run_command" and tb.awaiting and tb.summary
    model.apply([_e(ev.SessionInterrupted(reason="runner died"), seq + 1, 102, subtask=None)])
    assert tb.approval == "unanswered" and not tb.awaiting
    assert model.session.approvals_waiting == 0


def test_reask_after_resume_and_rule_approval() -> None:
    model = m.SessionModel(SID)
    seq = _started(model)
    model.apply([
        _e(ev.ToolStarted(call_id="c1", name="Bash", input={"command": "pytest"}), seq, 101),
        _e(ev.ApprovalRequested(call_id="c1", tool="Bash", input={"command": "pytest"}), seq + 1, 101),
        _e(ev.ApprovalDecided(call_id="c1", decision="approved", source="rule",
                              reason="auto_approve rule: Bash 'pytest'"), seq + 2, 101),
        _e(ev.ToolStarted(call_id="c2", name="Bash", input={"command": "make"}), seq + 3, 102),
        _e(ev.ApprovalRequested(call_id="c2", tool="Bash", input={"command": "make"}, reask_of="c0"), seq + 4, 102),
    ])
    assert model._tools["c1"].approval_source == "rule" and not model._tools["c1"].awaiting
    assert model._tools["c2"].reask_of == "c0" and model.pending_approvals() == [model._tools["c2"]]


def test_hostile_input_is_data_in_the_model() -> None:
    model = m.SessionModel(SID)
    seq = _started(model)
    bad = {"command": "echo \x1b]0;pwned\x07 [bold red]x[/] \x9b2J"}
    model.apply([_e(ev.ToolStarted(call_id="c1", name="Bash", input=bad), seq, 101),
                 _e(ev.ApprovalRequested(call_id="c1", tool="Bash", input=bad), seq + 1, 101)])
    preview = "\n".join(m.approval_preview("Bash", model._tools["c1"].input))
    assert "\x1b" not in preview and "\x07" not in preview and "\x9b" not in preview
    assert "[bold red]x[/]" in preview  # markup stays text


def test_preview_of_a_write_and_an_edit() -> None:
    lines = m.approval_preview("Write", {"file_path": "src/app.py", "content": "a\nb\nc\nd\n"}, max_lines=4)
    assert lines[0].startswith("src/app.py") and "4 lines" in lines[0]
    assert lines[1:3] == ["│ a", "│ b"] and lines[-1] == "… 2 more lines"
    assert m.approval_preview("Edit", {"file_path": "x", "old_string": "o", "new_string": "n"}) == ["x", "- o", "+ n"]
    assert m.approval_preview("Bash", {"command": "make\n  deploy"}) == ["$ make", "    deploy"]
