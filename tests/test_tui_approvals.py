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


def test_a_claude_reask_marks_the_withdrawn_call() -> None:
    model = m.SessionModel(SID)
    seq = _started(model)
    model.apply([
        _e(ev.ToolStarted(call_id="old", name="Bash", input={"command": "make"}), seq, 101),
        _e(ev.ApprovalRequested(call_id="old", tool="Bash", input={"command": "make"}), seq + 1, 101),
        _e(ev.ToolFinished(call_id="old", status="interrupted", output="withdrawn: rewound before this call"),
           seq + 2, 150),
        _e(ev.ToolStarted(call_id="new", name="Bash", input={"command": "make"}), seq + 3, 151),
        _e(ev.ApprovalRequested(call_id="new", tool="Bash", input={"command": "make"}, reask_of="old"),
           seq + 4, 151),
    ])
    old, new = model._tools["old"], model._tools["new"]
    assert (old.approval, old.approval_reason) == ("unanswered", "asked again as a new call")
    assert new.awaiting and model.pending_approvals() == [new]


def test_the_subtask_waits_for_approval_and_a_same_id_reask_waits_again() -> None:
    model = m.SessionModel(SID)
    seq = _started(model)
    model.apply([_e(ev.ToolStarted(call_id="c1", name="Bash", input={"command": "make"}), seq, 101),
                 _e(ev.ApprovalRequested(call_id="c1", tool="Bash", input={"command": "make"}), seq + 1, 101)])
    st = model.subtask("main")
    assert st.state == "waiting_approval"
    # pause now: the call stays awaiting; the next attempt closes what the last one left open...
    model.apply([_e(ev.SessionPaused(reason="user"), seq + 2, 110, subtask=None)])
    assert st.state == "paused"
    model.apply([_e(ev.SessionResumed(), seq + 3, 120, subtask=None),
                 _e(ev.AttemptStarted(reason="resume"), seq + 4, 120).with_(attempt=2)])
    tb = model.tool_block("c1")
    assert tb.status == "interrupted" and tb.approval == "unanswered" and st.state == "running"
    # ...and asks the same call again (openai/scripted): it waits again, answerable
    model.apply([_e(ev.ToolStarted(call_id="c1", name="Bash", input={"command": "make"}), seq + 5, 121)
                 .with_(attempt=2),
                 _e(ev.ApprovalRequested(call_id="c1", tool="Bash", input={"command": "make"}, reask_of="c1"),
                    seq + 6, 121).with_(attempt=2)])
    assert tb.awaiting and tb.reask_of == "c1" and model.pending_approvals() == [tb]
    assert st.state == "waiting_approval"
    model.apply([_e(ev.ApprovalDecided(call_id="c1", decision="approved", source="tui"), seq + 7, 122)])
    assert st.state == "running" and tb.running and tb.approval == "approved"
    model.apply([_e(ev.ToolFinished(call_id="c1", status="ok", output="ok"), seq + 8, 123)])
    assert tb.status == "ok"


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
    assert lines[1:3] == ["│ a", "│ b"] and lines[-1] == "… 2 more lines (o: all of it)"
    assert m.approval_preview("Edit", {"file_path": "x", "old_string": "o", "new_string": "n"}) == ["x", "- o", "+ n"]
    assert m.approval_preview("Bash", {"command": "make\n  deploy"}) == ["$ make", "    deploy"]
    # a long command wraps: nothing of what a person approves is cut off
    long = "make deploy ENV=production TARGET=eu-west-1 && rm -rf /tmp/cache"
    wrapped = m.approval_preview("Bash", {"command": long}, width=20)
    assert all(len(x) <= 20 for x in wrapped) and "".join(wrapped).replace(" ", "") == ("$" + long).replace(" ", "")


# --- the session view: the inline block and y / n / a ------------------------------------------

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from shepherd.core.clock import FakeClock  # noqa: E402
from shepherd.core.control import RemoteControl  # noqa: E402
from shepherd.core.store.db import Store  # noqa: E402
from shepherd.tui.screens.session import SessionScreen  # noqa: E402
from shepherd.tui.widgets.anim import Ticker  # noqa: E402
from shepherd.tui.widgets.approval import DenyModal  # noqa: E402
from shepherd.tui.widgets.blocks import ToolCallView  # noqa: E402
from tests.test_tui_session import SID as LIVE_SID, T0, Clock, Harness, Recorder, Writer, loaded, until  # noqa: E402
# the session tests' fixtures: a still ticker, the notices a screen gives, a store on a fake clock
from tests.test_tui_session import _frozen_animation, notified, store  # noqa: E402,F401

class ApprovalRecorder(Recorder):
    """The in-process Controller with the approval methods the engine adds (False: the
    call was not waiting)."""

    waiting = True

    async def approve(self, call_id: str | None = None, *, scope: str = "call", source: str = "tui") -> bool:
        self._rec("approve", call_id, scope=scope, source=source)
        return self.waiting

    async def deny(self, call_id: str | None = None, *, reason: str = "", source: str = "tui") -> bool:
        self._rec("deny", call_id, reason=reason, source=source)
        return self.waiting


async def _waiting_call(w: Writer, call_id: str = "c1", name: str = "Bash",
                        args: dict[str, Any] | None = None) -> None:
    args = args if args is not None else {"command": "make deploy"}
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id=call_id, name=name, input=args)
    await w.add(ev.ApprovalRequested, subtask_id="a", attempt=1, call_id=call_id, tool=name, input=args)


def _actions(screen: SessionScreen) -> set[str]:
    return {b.binding.action for b in screen.active_bindings.values()}


async def test_y_n_a_answer_the_waiting_call_and_the_block_says_so(store: Store, notified: list) -> None:
    w = Writer(store)
    await w.start()
    ctl = ApprovalRecorder()
    clock = Clock(w.ts + 1)
    screen = SessionScreen(store, LIVE_SID, controller=ctl, follow="local", clock=clock)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        assert not {"approve", "deny", "approve_session"} & _actions(screen)  # nothing waits: no keys
        await pilot.press("y")
        assert "approve" not in ctl.names

        await _waiting_call(w)
        asked_at = w.ts
        clock.now = asked_at + 65
        await screen.flush_now()
        await pilot.pause()
        view = next(v for v in screen.stream.widgets.values() if isinstance(v, ToolCallView))
        text = view.render().plain
        assert "waiting for your approval · 1 m 05 s" in text and "$ make deploy" in text
        assert "y approve · n deny · a allow Bash for the session" in text and view.has_class("-awaiting")
        assert {"approve", "deny", "approve_session"} <= _actions(screen)
        assert "retry_now" not in _actions(screen)  # n is "Deny" now
        assert "approval waiting for you" in screen.status_bar.text

        await pilot.press("y")
        assert ctl.calls[-1] == ("approve", ("c1",), {"scope": "call", "source": "tui"})
        await pilot.press("a")
        assert ctl.calls[-1] == ("approve", ("c1",), {"scope": "session", "source": "tui"})
        await pilot.press("n")
        await until(pilot, lambda: isinstance(pilot.app.screen, DenyModal), "the reason dialog")
        await pilot.press(*"not in prod", "enter")
        await until(pilot, lambda: ctl.names[-1] == "deny", "the denial sent")
        assert ctl.calls[-1] == ("deny", ("c1",), {"reason": "not in prod", "source": "tui"})
        # Esc in the dialog keeps it waiting
        await pilot.press("n")
        await until(pilot, lambda: isinstance(pilot.app.screen, DenyModal), "the reason dialog")
        await pilot.press("escape")
        await until(pilot, lambda: pilot.app.screen is screen, "back on the session")
        assert ctl.names.count("deny") == 1

        ctl.waiting = False  # answered meanwhile (the CLI, another TUI): said so
        await pilot.press("y")
        assert any("not waiting for approval any more" in n for n, _ in notified)
        await w.add(ev.ApprovalDecided, subtask_id="a", attempt=1, call_id="c1", decision="denied",
                    source="cli", reason="not in prod")
        await screen.flush_now()
        await pilot.pause()
        text = view.render().plain
        assert "denied (cli): not in prod" in text and "waiting" not in text
        assert not view.has_class("-awaiting")
        assert not {"approve", "deny", "approve_session"} & _actions(screen)


async def test_a_controller_without_approvals_says_so_in_one_line(store: Store, notified: list) -> None:
    w = Writer(store)
    await w.start()
    await _waiting_call(w)
    screen = SessionScreen(store, LIVE_SID, controller=Recorder(), follow="local", clock=Clock(w.ts + 1))
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        await pilot.press("y")
        await until(pilot, lambda: any("could not answer" in n for n, _ in notified), "the notice")
        assert any(s == "warning" and "cannot take approvals" in n for n, s in notified)


async def test_an_attached_view_writes_the_answer_to_the_commands_table(store: Store, notified: list) -> None:
    w = Writer(store)
    await w.start()
    await _waiting_call(w)
    ctl = RemoteControl(store, LIVE_SID)
    screen = SessionScreen(store, LIVE_SID, controller=ctl, follow="tail", clock=Clock(w.ts + 1))
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(pilot.app.screen, DenyModal), "the reason dialog")
        await pilot.press(*"no", "enter")
        await until(pilot, lambda: any("deny sent" in n for n, _ in notified), "the notice")
        await pilot.press("a")
        await until(pilot, lambda: any("for the rest of the session" in n for n, _ in notified), "the notice")
    taken = await store.take_commands(LIVE_SID)
    assert [(c.command, c.text, c.call_id, c.source) for c in taken] == [
        ("deny", "no", "c1", "tui"), ("approve", "session", "c1", "tui")]


# --- the home screen's inbox ----------------------------------------------------------------------

import asyncio  # noqa: E402
import time  # noqa: E402

from tests import tui_fixtures as fx  # noqa: E402
from shepherd.tui.app import ShepherdApp  # noqa: E402
from shepherd.tui.screens.sessions import NeedsTable, SessionsScreen, inbox_rows, needs_text  # noqa: E402

APPROVAL_SID = "s6b49d200b001"
WRITE_SID = "s6b49d200b002"
HOSTILE_COMMAND = "echo \x1b]0;pwned\x07 [bold red]boom[/] \x1b[2J && make deploy"
WRITE_CONTENT = "# Release notes\n\n- parse DD/MM/YYYY dates\n- [link](http://x) \x1b[31mred\x1b[0m\n" + \
    "".join(f"- item {i}\n" for i in range(12))


async def shape_approval(store: Any, sid: str, t0: float) -> None:
    """Live, a Bash call waiting for approval (hostile text in its command)."""
    w = fx.Writer(store, sid, t0)
    await fx._live_prefix(store, w, "Deploy the docs site")
    args = {"command": HOSTILE_COMMAND}
    await w.tool(3.0, "toolu_01deploy", "Bash", args)
    await w.add(3.01, ev.ApprovalRequested(call_id="toolu_01deploy", tool="Bash", input=args))
    await _needs(store, sid, "approval", t0 + 3.01, f"Bash {HOSTILE_COMMAND}")


async def shape_write(store: Any, sid: str, t0: float) -> None:
    """Live, an earlier call approved by rule and one denied, and a Write waiting."""
    w = fx.Writer(store, sid, t0)
    await fx._live_prefix(store, w, "Write the release notes")
    await w.tool(3.0, "c_ls", "Bash", {"command": "git status"})
    await w.add(3.01, ev.ApprovalRequested(call_id="c_ls", tool="Bash", input={"command": "git status"}))
    await w.add(3.02, ev.ApprovalDecided(call_id="c_ls", decision="approved", source="rule",
                                         reason="auto_approve rule: Bash 'git status'"))
    await w.add(3.3, ev.ToolFinished(call_id="c_ls", status="ok", output="nothing to commit", duration_s=0.2))
    await w.tool(4.0, "c_rm", "Bash", {"command": "rm -rf docs/old"})
    await w.add(4.01, ev.ApprovalRequested(call_id="c_rm", tool="Bash", input={"command": "rm -rf docs/old"}))
    await w.add(9.0, ev.ApprovalDecided(call_id="c_rm", decision="denied", source="tui",
                                        reason="keep the old docs"))
    await w.add(9.01, ev.ToolFinished(call_id="c_rm", status="denied", output="denied: keep the old docs"))
    args = {"file_path": "NOTES.md", "content": WRITE_CONTENT}
    await w.tool(12.0, "c_write", "Write", args)
    await w.add(12.01, ev.ApprovalRequested(call_id="c_write", tool="Write", input=args))
    await _needs(store, sid, "approval", t0 + 12.01, "Write NOTES.md")


async def _needs(store: Any, sid: str, needs: str, since: float, detail: str) -> None:
    """What the store derives for the session (sessions.needs*): the screens show it."""
    await store.flush()
    row = await store.get_session(sid)
    assert row is not None and row.needs == needs, (sid, row and row.needs)


async def shape_stuck_needs(store: Any, sid: str, t0: float) -> None:
    await fx.shape_stuck(store, sid, t0)
    await _needs(store, sid, "stuck", t0 + 20.1, "tool_concurrency: 3 retries used up")


INBOX_SHAPES = {"approval": (shape_approval, APPROVAL_SID, fx.NOW - 75),
                "write": (shape_write, WRITE_SID, fx.NOW - 40),
                "stuck": (shape_stuck_needs, fx.SESSION_IDS["stuck"], fx.NOW - 600)}


async def build_inbox_db(path: Path, shapes: tuple[str, ...] = ("approval", "write", "stuck"),
                         past: tuple[str, ...] = ("done", "failed")) -> None:
    store = await Store.open(path, clock=FakeClock(fx.NOW - 4 * 86400))
    try:
        await fx.populate(store, list(past))
        for name in shapes:
            fn, sid, t0 = INBOX_SHAPES[name]
            await fn(store, sid, t0)
        await store.flush()
    finally:
        await store.close()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    monkeypatch.undo()
    time.tzset()


async def settle(pilot: Any) -> None:
    app: ShepherdApp = pilot.app
    for _ in range(2000):
        loaded = getattr(app.screen, "loaded", None)
        if app.home is not None and app.home.loaded and (
                app.open_session_id is None or (isinstance(loaded, asyncio.Event) and loaded.is_set())):
            break
        await pilot.pause(0.01)
    else:
        raise AssertionError("the app did not settle")
    flush = getattr(app.screen, "flush_now", None)
    if flush is not None:
        await flush()
    await pilot.pause()


def _app(open_sid: str | None = None) -> ShepherdApp:
    db = Path("shepherd.db")
    asyncio.run(build_inbox_db(db))
    return ShepherdApp(db, open_session=open_sid, clock=lambda: fx.NOW)


async def test_the_inbox_lists_who_waits_longest_first_and_answers_from_the_row(utc: Path) -> None:
    db = utc / "shepherd.db"
    await build_inbox_db(db)
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    notes: list[str] = []
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        home: SessionsScreen = app.home  # type: ignore[assignment]
        assert [r.id for r in home.inbox] == [fx.SESSION_IDS["stuck"], APPROVAL_SID, WRITE_SID]
        assert home.table.get_cell(APPROVAL_SID, "status").plain == "⧗"  # waits for a person, no spinner
        needs = home.query_one(NeedsTable)
        assert needs.display and needs.row_count == 3 and str(needs.border_title) == "Needs you (3) · tab: go there"
        assert [needs.get_row_at(i)[3].plain for i in range(3)] == ["9m39s", "1m11s", "27s"]
        shown = needs.get_row_at(1)[2].plain
        assert shown.startswith("approve? Bash echo ␛]0;pwned") and "[bold red]boom[/]" in shown
        assert "\x1b" not in shown and "\x07" not in shown

        assert home.table.has_focus and not needs.has_focus
        await pilot.press("tab")  # jump to the first that needs you, then the next
        assert needs.has_focus and home.inbox_row().id == fx.SESSION_IDS["stuck"]
        # the keys that apply to the highlighted row, in the inbox's title
        assert str(needs.border_title) == "Needs you (3) · tab next · r retry · s skip · enter open"
        assert home.check_action("answer", ("approved",)) is None  # stuck: y/n shown dimmed
        await pilot.press("y")  # and nothing is sent
        await pilot.press("tab")
        assert home.inbox_row().id == APPROVAL_SID
        assert "y approve · n deny · r retry" in str(needs.border_title)
        await pilot.press("y")
        await pilot.press("N")
        assert home.inbox_row().id == WRITE_SID
        await pilot.press("n")
        from shepherd.tui.widgets.approval import DenyModal

        for _ in range(200):
            if isinstance(app.screen, DenyModal):
                break
            await pilot.pause()
        await pilot.press(*"not now", "enter")
        await pilot.press("tab")  # round to the stuck one
        assert home.inbox_row().id == fx.SESSION_IDS["stuck"]
        await pilot.press("r", "s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        # a filter narrows the list, not the inbox
        await pilot.press("slash", *"Refactor")
        for _ in range(400):
            if home.row_ids() == [fx.SESSION_IDS["failed"]]:
                break
            await pilot.pause()
        assert home.row_ids() == [fx.SESSION_IDS["failed"]] and len(home.inbox) == 3
        # enter on an inbox row opens its session
        await pilot.press("tab", "enter")
        for _ in range(400):
            if isinstance(app.screen, SessionScreen):
                break
            await pilot.pause()
        assert isinstance(app.screen, SessionScreen) and app.screen.session_id == fx.SESSION_IDS["stuck"]
    store = await Store.open(db, recover=False)
    try:
        cmds = {sid: [(c.command, c.text, c.call_id, c.source) for c in await store.take_commands(sid)]
                for sid in (APPROVAL_SID, WRITE_SID, fx.SESSION_IDS["stuck"])}
    finally:
        await store.close()
    # its oldest pending call: named by the RemoteControl that resolves it, else left to the runner
    assert cmds[APPROVAL_SID] in ([("approve", "", None, "tui")], [("approve", "", "toolu_01deploy", "tui")])
    assert cmds[WRITE_SID] in ([("deny", "not now", None, "tui")], [("deny", "not now", "c_write", "tui")])
    assert cmds[fx.SESSION_IDS["stuck"]] == [("retry", "", None, "tui"), ("skip", "", None, "tui")]
    assert any(n.startswith(f"approve sent to {APPROVAL_SID}: Bash echo") for n in notes)


def test_inbox_rows_need_a_live_or_interrupted_session() -> None:
    from dataclasses import dataclass

    @dataclass
    class Row:
        id: str
        status: str
        needs: str | None = None
        needs_since: float | None = None
        needs_detail: str = ""
        updated_at: float = 0.0

    rows = [Row("a", "running", "approval", 20.0, "Bash ls"), Row("b", "done", "approval", 1.0),
            Row("c", "stuck", "stuck", 10.0), Row("d", "running"), Row("e", "interrupted", "approval", 30.0)]
    assert [r.id for r in inbox_rows(rows)] == ["c", "a", "e"]  # type: ignore[arg-type]
    assert needs_text(rows[2]) == "a retry budget ran out"  # type: ignore[arg-type]
    assert needs_text(rows[4]).endswith("runner stopped: resume asks again")  # type: ignore[arg-type]


# --- snapshots (new ones only: pytest --snapshot-update -k for these) ------------------------------


@pytest.fixture
def snap_env(monkeypatch: pytest.MonkeyPatch, utc: Path):
    monkeypatch.setattr(Ticker, "animate", False)
    yield


def test_snapshot_inbox(snap_compare, snap_env) -> None:
    assert snap_compare(_app(), terminal_size=(120, 26), run_before=settle)


def test_snapshot_inbox_narrow(snap_compare, snap_env) -> None:
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=settle)


def test_snapshot_inline_approval_bash(snap_compare, snap_env) -> None:
    assert snap_compare(_app(APPROVAL_SID), terminal_size=(120, 30), run_before=settle)


def test_snapshot_inline_approval_write(snap_compare, snap_env) -> None:
    assert snap_compare(_app(WRITE_SID), terminal_size=(120, 36), run_before=settle)


def test_snapshot_inline_approval_narrow(snap_compare, snap_env) -> None:
    assert snap_compare(_app(APPROVAL_SID), terminal_size=(80, 24), run_before=settle)


async def test_a_question_older_than_the_loaded_page_still_shows_and_is_answered(
        store: Store, notified: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hours of waiting are pages of heartbeats: the call waiting comes from the store's
    tool_calls rows (status awaiting) when its events are not in the page."""
    w = Writer(store)
    await w.start()
    await _waiting_call(w, "c_old", "Bash", {"command": "make deploy"})
    for _ in range(40):
        await w.add(ev.Heartbeat, subtask_id="a", attempt=1, idle_s=0.0)
    await store.flush()
    # what the store derives: the call awaiting, the session needing approval
    assert [c.call_id for c in await store.tool_calls(LIVE_SID, status="awaiting")] == ["c_old"]
    await _needs(store, LIVE_SID, "approval", T0 + 3, "Bash make deploy")
    monkeypatch.setattr(SessionScreen, "PAGE_SIZE", 20)  # the question is not in the first page
    ctl = ApprovalRecorder()
    screen = SessionScreen(store, LIVE_SID, controller=ctl, follow="local", clock=Clock(w.ts + 1))
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await loaded(pilot, screen)
        assert screen.model.first_seq > 5  # the page starts after the call and its question
        [tb] = screen.model.pending_approvals()
        assert (tb.call_id, tb.name, tb.input) == ("c_old", "Bash", {"command": "make deploy"})
        await pilot.press("y")
        assert ctl.calls[-1] == ("approve", ("c_old",), {"scope": "call", "source": "tui"})


# --- with the real engine (its approvals broker; GateBackend asks the way a backend does) --------


def _engine() -> Any:
    import tests.engine_helpers as helpers

    return helpers


async def _gated_run(tmp_path: Path, script: list[tuple[Any, ...]]) -> tuple[Store, Any, Any, Any]:
    h = _engine()
    from shepherd.core.engine import Supervisor

    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    task = h.make_task(ws, [{"id": "t1", "prompt": "do it"}], approve_tools=["Bash"])
    store = await Store.open(tmp_path / "run.db")
    backend = h.GateBackend([script])
    sup = Supervisor(store, task, backend=backend, clock=h.FAST, interactive=True)
    run = asyncio.create_task(sup.run())
    await h.wait_for(lambda: sup.waiting_approval(), store=store)
    return store, sup, backend, run


async def test_the_session_view_approves_a_real_run(tmp_path: Path, notified: list) -> None:
    store, sup, backend, run = await _gated_run(tmp_path, [("ask", "c1", "Bash", {"command": "make deploy"})])
    try:
        screen = SessionScreen(store, sup.session_id, controller=sup, follow="local")
        async with Harness(screen).run_test(size=(120, 36)) as pilot:
            await loaded(pilot, screen)
            await until(pilot, lambda: bool(screen.model.pending_approvals()), "the question on screen")
            assert backend.ran == []
            await pilot.press("y")
            assert await asyncio.wait_for(run, 10) == "done"
        assert backend.ran == ["c1"]
    finally:
        await store.close()


async def test_an_attached_view_denies_a_real_run_through_the_commands_table(tmp_path: Path, notified: list) -> None:
    store, sup, backend, run = await _gated_run(tmp_path, [("ask", "c1", "Bash", {"command": "make deploy"})])
    viewer = await Store.open(tmp_path / "run.db", recover=False)  # another connection, as `shepherd attach`
    try:
        screen = SessionScreen(viewer, sup.session_id, controller=RemoteControl(viewer, sup.session_id),
                               follow="tail")
        async with Harness(screen).run_test(size=(120, 36)) as pilot:
            await loaded(pilot, screen)
            await until(pilot, lambda: bool(screen.model.pending_approvals()), "the question on screen")
            await pilot.press("n")
            await until(pilot, lambda: isinstance(pilot.app.screen, DenyModal), "the reason dialog")
            await pilot.press(*"not today", "enter")
            assert await asyncio.wait_for(run, 10) == "done"
        assert backend.ran == []
        evs = [e for e in await store.events(sup.session_id, after_seq=0, limit=1000) if e.type == "approval.decided"]
        assert [(e.decision, e.reason, e.source) for e in evs] == [("denied", "not today", "tui")]
    finally:
        await viewer.close()
        await store.close()


async def test_the_inbox_approves_a_real_run_without_opening_it(tmp_path: Path) -> None:
    store, sup, backend, run = await _gated_run(tmp_path, [("ask", "c1", "Bash", {"command": "make deploy"})])
    try:
        app = ShepherdApp(tmp_path / "run.db")
        async with app.run_test(size=(120, 30)) as pilot:
            for _ in range(2000):
                if app.home is not None and app.home.loaded and app.home.inbox:
                    break
                await pilot.pause(0.01)
            home = app.home
            assert [r.id for r in home.inbox] == [sup.session_id]
            assert needs_text(home.inbox[0]) == "Bash make deploy"
            await pilot.press("tab", "y")
            assert await asyncio.wait_for(run, 10) == "done"
        assert backend.ran == ["c1"]
    finally:
        await store.close()


async def test_an_interrupted_session_waiting_for_approval_says_resume_asks_again(utc: Path) -> None:
    db = utc / "dead.db"
    store = await Store.open(db, clock=FakeClock(fx.NOW - 3 * 3600 - 1))
    sid = fx.SESSION_IDS["interrupted"]
    try:
        w = fx.Writer(store, sid, fx.NOW - 3 * 3600)
        await fx.shape_interrupted(store, sid, fx.NOW - 3 * 3600)
        await w.add(2.1, ev.ApprovalRequested(call_id="call_a", tool="run_command",
                                              input={"command": "pytest --durations=5"}))
        await store.flush()
    finally:
        await store.close()
    clock = FakeClock(fx.NOW - 3 * 3600 + 200)  # the lease expired: recovery marks it interrupted
    store = await Store.open(db, clock=clock)
    try:
        await _needs(store, sid, "approval", fx.NOW - 3 * 3600 + 2.1, "run_command pytest --durations=5")
    finally:
        await store.close()
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        home = app.home
        [row] = home.inbox
        assert row.status == "interrupted" and needs_text(row).endswith("runner stopped: resume asks again")
        await pilot.press("tab")
        assert "resume it below (r) to be asked again" in str(home.query_one(NeedsTable).border_title)
        await pilot.press("y")
        await pilot.pause()
        assert any("has no live runner" in n.message for n in app._notifications)
    store = await Store.open(db, recover=False)
    try:
        assert await store.take_commands(sid) == []
    finally:
        await store.close()


async def test_a_new_width_keeps_the_place_in_the_inbox(utc: Path) -> None:
    """The inbox's columns are rebuilt when the width changes (a resize, the list's scrollbar
    coming or going): the highlighted session stays highlighted, so y/n answer the row the
    person is looking at."""
    db = utc / "shepherd.db"
    await build_inbox_db(db)
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        home: SessionsScreen = app.home  # type: ignore[assignment]
        await pilot.press("tab", "tab", "tab")
        assert home.inbox_row().id == WRITE_SID
        await pilot.resize_terminal(96, 30)
        for _ in range(200):
            await pilot.pause()
            if home.query_one(NeedsTable).size.width <= 96:
                break
        await pilot.pause()
        assert home.inbox_row().id == WRITE_SID
