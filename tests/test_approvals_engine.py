"""Tool approvals in the engine, with GateBackend asking the way a backend does (no SDK):
approve, deny with a reason, a rule's yes, approve-for-the-session, headless deny, the
commands table (first answer wins), pause-now then resume asks again, cancel and skip close
the call, the stall watchdog ignores the wait, and the derived tables (approvals, needs)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shepherd.core import prompts
from shepherd.core.engine import Supervisor, resume_run
from shepherd.core.engine.approvals import NOT_RUN_OUTPUT
from shepherd.core.states import SubtaskState
from shepherd.core.store import Store
from tests.engine_helpers import FAST, GateBackend, make_task, stored, wait_for

DEPLOY = {"command": "make deploy"}


def gated_task(tmp_path: Path, **extra: Any) -> Any:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    extra.setdefault("approve_tools", ["Bash"])
    return make_task(ws, [{"id": "t1", "prompt": "do it"}], **extra)


async def start(tmp_path: Path, attempts: list[list[tuple[Any, ...]]], *, interactive: bool = True,
                approvals: str = "wait", **extra: Any) -> tuple[Store, Supervisor, GateBackend, asyncio.Task[str]]:
    store = await Store.open(tmp_path / "s.db")
    backend = GateBackend(attempts)
    sup = Supervisor(store, gated_task(tmp_path, **extra), backend=backend, clock=FAST, interactive=interactive,
                     approvals=approvals)
    return store, sup, backend, asyncio.create_task(sup.run())


async def pending(store: Store, sup: Supervisor, n: int = 1) -> list[Any]:
    await wait_for(lambda: len(sup.waiting_approval()) >= n, store=store)
    return await store.approvals(sup.session_id)


def types(evs: list[Any]) -> list[str]:
    return [e.type for e in evs if e.type.startswith(("tool.", "approval."))]


async def test_approve_runs_the_call_after_the_yes_and_the_events_come_in_order(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]])
    try:
        rows = await pending(store, sup)
        assert [(r.call_id, r.tool, r.input) for r in rows] == [("c1", "Bash", DEPLOY)]
        assert sup._current is not None and sup._current.state is SubtaskState.WAITING_APPROVAL
        assert backend.ran == []  # not before the yes
        session = await store.get_session(sup.session_id)
        assert session is not None and session.needs == "approval"
        assert session.needs_detail == "Bash make deploy" and session.needs_since == rows[0].requested_at
        assert [c.status for c in await store.tool_calls(sup.session_id)] == ["awaiting"]
        assert await sup.approve("c1") is True
        assert await run == "done"
        assert backend.ran == ["c1"]
        evs = await stored(store, sup.session_id)
        assert types(evs) == ["tool.started", "approval.requested", "approval.decided", "tool.finished"]
        decided = [e for e in evs if e.type == "approval.decided"][0]
        assert (decided.decision, decided.source, decided.scope) == ("approved", "tui", "call")
        assert [e.status for e in evs if e.type == "tool.finished"] == ["ok"]
        session = await store.get_session(sup.session_id)
        assert session is not None and session.needs is None and session.needs_detail == ""
        assert await store.approvals(sup.session_id) == []
        (row,) = await store.approvals(sup.session_id, pending=False)
        assert (row.decision, row.source, row.closed) == ("approved", "tui", False)
        # waiting used no retry and no attempt of the budget
        (sub,) = await store.subtasks(sup.session_id)
        assert (sub.attempts, sub.retries) == (1, 0)
    finally:
        await store.close()


async def test_deny_with_a_reason_reaches_the_agent_and_the_tool_does_not_run(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]])
    try:
        await pending(store, sup)
        assert await sup.deny("c1", reason="not on a Friday") is True
        assert await sup.deny("c1", reason="again") is False  # the first answer wins
        assert await run == "done"
        assert backend.ran == []
        evs = await stored(store, sup.session_id)
        (fin,) = [e for e in evs if e.type == "tool.finished"]
        assert fin.status == "denied" and fin.output == prompts.approval_denied("not on a Friday")
        (decided,) = [e for e in evs if e.type == "approval.decided"]
        assert (decided.decision, decided.reason) == ("denied", "not on a Friday")
    finally:
        await store.close()


async def test_a_rule_approves_without_a_person_and_an_ungated_tool_is_not_asked(tmp_path: Path) -> None:
    store, sup, backend, run = await start(
        tmp_path, [[("ask", "c1", "Bash", {"command": "pytest -q"}), ("ask", "c2", "Read", {"path": "a"})]],
        auto_approve=[{"tool": "Bash", "prefix": "pytest"}])
    try:
        assert await run == "done"
        assert backend.ran == ["c1", "c2"]
        evs = await stored(store, sup.session_id)
        (decided,) = [e for e in evs if e.type == "approval.decided"]
        assert decided.source == "rule" and decided.call_id == "c1"
        assert not [h for h in evs if h.type == "approval.requested" and h.call_id == "c2"]
        assert await store.approvals(sup.session_id) == []
    finally:
        await store.close()


async def test_approve_for_the_session_answers_the_tools_later_calls(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY),
                                                       ("ask", "c2", "Bash", {"command": "make clean"})]])
    try:
        await pending(store, sup)
        assert await sup.approve("c1", scope="session") is True
        assert await run == "done"
        assert backend.ran == ["c1", "c2"]
        decided = [e for e in await stored(store, sup.session_id) if e.type == "approval.decided"]
        assert [(d.call_id, d.source, d.scope) for d in decided] == [("c1", "tui", "session"), ("c2", "rule", "call")]
        assert await store.session_tools(sup.session_id) == {"Bash"}
    finally:
        await store.close()


async def test_headless_deny_answers_at_once_with_no_one_to_approve(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]], interactive=False,
                                           approvals="deny")
    try:
        assert await run == "done"
        assert backend.ran == []
        (decided,) = [e for e in await stored(store, sup.session_id) if e.type == "approval.decided"]
        assert (decided.decision, decided.source, decided.reason) == ("denied", "headless", prompts.NO_ONE_TO_APPROVE)
        assert backend.answers["c1"].reason == prompts.NO_ONE_TO_APPROVE
    finally:
        await store.close()


async def test_headless_wait_says_so_with_the_exact_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]], interactive=False)
    try:
        await pending(store, sup)
        err = capsys.readouterr().err
        sid = sup.session_id
        assert f"shepherd approve {sid} c1 | shepherd deny {sid} c1 --reason TEXT" in err
        assert 'waiting for approval: Bash {"command": "make deploy"}' in err
        assert await sup.approve("c1", source="cli")
        assert await run == "done"
    finally:
        await store.close()


async def test_answers_through_the_commands_table_first_one_wins(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]])
    try:
        await pending(store, sup)
        await store.enqueue_command(sup.session_id, "deny", text="no", source="cli", call_id="c1")
        await store.enqueue_command(sup.session_id, "approve", source="cli", call_id="c1")  # late: dropped
        await store.enqueue_command(sup.session_id, "approve", source="cli", call_id="nope")  # unknown: dropped
        assert await run == "done"
        assert backend.ran == []
        decided = [e for e in await stored(store, sup.session_id) if e.type == "approval.decided"]
        assert [(d.decision, d.source, d.reason) for d in decided] == [("denied", "cli", "no")]
    finally:
        await store.close()


async def test_pause_now_keeps_the_call_awaiting_and_resume_asks_it_again(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)], [("reask",)]])
    try:
        await pending(store, sup)
        await sup.pause(immediate=True)
        await wait_for(lambda: sup._current is not None and sup._current.state is SubtaskState.PAUSED, store=store)
        # not closed, not approved: still awaiting, asked again later
        assert [c.status for c in await store.tool_calls(sup.session_id)] == ["awaiting"]
        assert [r.call_id for r in await store.approvals(sup.session_id)] == ["c1"]
        assert not [e for e in await stored(store, sup.session_id) if e.type == "tool.finished"]
        await sup.resume()
        await wait_for(lambda: len(backend.contexts) == 2 and sup.waiting_approval() == ["c1"], store=store)
        ctx = backend.contexts[1]
        assert ctx.approvals is not None and [c.call_id for c in ctx.approvals.reask] == ["c1"]
        assert backend.ran == []
        await sup.approve("c1")
        assert await run == "done"
        assert backend.ran == ["c1"]
        asked = [e for e in await stored(store, sup.session_id) if e.type == "approval.requested"]
        assert [(e.call_id, e.reask_of) for e in asked] == [("c1", None), ("c1", "c1")]
    finally:
        await store.close()


@pytest.mark.parametrize("how", ["cancel", "skip"])
async def test_cancel_or_skip_closes_the_waiting_call_unrun(tmp_path: Path, how: str) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]])
    try:
        await pending(store, sup)
        await (sup.cancel() if how == "cancel" else sup.skip("t1"))
        assert await run == ("cancelled" if how == "cancel" else "done")
        assert backend.ran == []
        (fin,) = [e for e in await stored(store, sup.session_id) if e.type == "tool.finished"]
        assert (fin.call_id, fin.status, fin.output) == ("c1", "interrupted", NOT_RUN_OUTPUT)
        assert not [e for e in await stored(store, sup.session_id) if e.type == "approval.decided"]
        (row,) = await store.approvals(sup.session_id, pending=False)
        assert row.closed and row.decision is None
        session = await store.get_session(sup.session_id)
        assert session is not None and session.needs is None
    finally:
        await store.close()


async def test_a_persons_retry_closes_the_waiting_call_and_starts_over(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)], [("text", "again")]])
    try:
        await pending(store, sup)
        await sup.retry("t1")
        assert await run == "done"
        assert backend.ran == []
        (fin,) = [e for e in await stored(store, sup.session_id) if e.type == "tool.finished"]
        assert (fin.status, fin.output) == ("interrupted", NOT_RUN_OUTPUT)
        assert backend.contexts[1].approvals is not None and backend.contexts[1].approvals.reask == ()
    finally:
        await store.close()


async def test_the_stall_watchdog_does_not_count_a_pending_approval(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]], heartbeat_s=0.01,
                                           stall_s=0.02)
    try:
        await pending(store, sup)

        async def beats() -> int:
            return len(await stored(store, sup.session_id, "heartbeat"))

        await wait_for(lambda: _ge(beats(), 12), store=store)  # 0.12 s: over 4x stall_s
        assert not [h for h in await stored(store, sup.session_id, "heartbeat") if h.stalled]
        await sup.approve("c1")
        assert await run == "done"
        (sub,) = await store.subtasks(sup.session_id)
        assert (sub.attempts, sub.retries) == (1, 0)
        assert not await stored(store, sup.session_id, "retry.scheduled")
        assert backend.ran == ["c1"]
    finally:
        await store.close()


async def _ge(count: Any, n: int) -> bool:
    return (await count) >= n


async def test_no_gate_when_the_task_gates_no_tool(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]], approve_tools=[])
    try:
        assert await run == "done"
        assert backend.contexts[0].approvals is None
        assert backend.ran == ["c1"]
        assert not [e for e in await stored(store, sup.session_id) if e.type.startswith("approval.")]
    finally:
        await store.close()


async def test_a_resumed_session_asks_again_and_keeps_session_approvals(tmp_path: Path) -> None:
    """A runner that stopped (shut down) while asking: the call stays awaiting, and a
    resume asks it again; a tool approved for the session before stays approved."""
    store, sup, backend, run = await start(tmp_path, [[("ask", "c0", "Write", {"path": "x"}),
                                                       ("ask", "c1", "Bash", DEPLOY)]],
                                           approve_tools=["Bash", "Write"])
    try:
        await pending(store, sup)
        await sup.approve("c0", scope="session")
        await wait_for(lambda: sup.waiting_approval() == ["c1"], store=store)
        run.cancel()  # the runner shuts down
        with pytest.raises(asyncio.CancelledError):
            await run
        assert [c.status for c in await store.tool_calls(sup.session_id) if c.call_id == "c1"] == ["awaiting"]
        backend2 = GateBackend([[("reask",), ("ask", "c2", "Write", {"path": "y"})]])
        handle = await resume_run(store, sup.session_id, backend=backend2, clock=FAST)
        await wait_for(lambda: handle.supervisor.waiting_approval() == ["c1"], store=store)
        assert backend2.contexts[0].approvals is not None
        assert backend2.contexts[0].approvals.session_tools == {"Write"}
        await handle.supervisor.approve("c1")
        assert await handle.task == "done"
        assert backend2.ran == ["c1", "c2"]
    finally:
        await store.close()


async def test_the_derived_needs_approval_over_stuck_and_cleared_when_answered_or_over(tmp_path: Path) -> None:
    from shepherd.core.events import (ApprovalDecided, ApprovalRequested, AttemptStarted, SessionFinished,
                                      SessionStarted, SubtaskFinished, SubtaskStarted, ToolFinished, ToolStarted)

    store = await Store.open(tmp_path / "s.db")
    try:
        sid = "S1"

        async def needs() -> tuple[Any, ...]:
            row = await store.get_session(sid)
            assert row is not None
            return row.needs, row.needs_detail

        await store.append(SessionStarted(session_id=sid, title="t", backend="gate", workspace=".", task={}))
        assert await needs() == (None, "")
        await store.append(SubtaskStarted(session_id=sid, subtask_id="a"))
        await store.append(SubtaskFinished(session_id=sid, subtask_id="a", status="stuck", reason="3 retries spent"))
        assert await needs() == ("stuck", "3 retries spent")
        long_cmd = "echo " + "x" * 300
        await store.append_together(
            ToolStarted(session_id=sid, subtask_id="b", attempt=1, call_id="k1", name="Bash", input={"command": long_cmd}),
            ApprovalRequested(session_id=sid, subtask_id="b", attempt=1, call_id="k1", tool="Bash",
                              input={"command": long_cmd}))
        kind, detail = await needs()
        assert kind == "approval" and detail.startswith("Bash echo xxx") and len(detail) == 120
        await store.append(ApprovalDecided(session_id=sid, subtask_id="b", attempt=1, call_id="k1",
                                           decision="approved", source="cli"))
        assert await needs() == ("stuck", "3 retries spent")  # the approval answered: stuck shows again
        await store.append(ToolFinished(session_id=sid, subtask_id="b", attempt=1, call_id="k1", status="ok"))
        await store.append(AttemptStarted(session_id=sid, subtask_id="a", attempt=2))  # a person's retry
        assert await needs() == (None, "")
        # a call closed without an answer is not pending any more
        await store.append(ApprovalRequested(session_id=sid, subtask_id="b", attempt=2, call_id="k2", tool="Write",
                                             input={"file_path": "/w/a.py", "content": "x"}))
        assert await needs() == ("approval", "Write /w/a.py")
        await store.append(ToolFinished(session_id=sid, subtask_id="b", attempt=2, call_id="k2", status="interrupted"))
        assert await needs() == (None, "")
        (k2,) = [a for a in await store.approvals(sid, pending=False) if a.call_id == "k2"]
        assert k2.closed and k2.decision is None
        # stuck in a finished session needs no one
        await store.append(SubtaskFinished(session_id=sid, subtask_id="a", status="stuck", reason="again"))
        assert (await needs())[0] == "stuck"
        await store.append(SessionFinished(session_id=sid, status="failed"))
        assert await needs() == (None, "")
    finally:
        await store.close()


async def test_a_run_state_is_dropped_with_the_last_decision_of_its_calls(tmp_path: Path) -> None:
    from shepherd.core.events import ApprovalDecided, ApprovalRequested, SessionStarted

    store = await Store.open(tmp_path / "s.db")
    try:
        sid = "S1"
        await store.append(SessionStarted(session_id=sid, title="t", backend="openai", workspace=".", task={}))
        await store.save_run_state(sid, "t1", ["c2", "c3"], '{"state": 1}')
        for cid in ("c2", "c3"):
            await store.append(ApprovalRequested(session_id=sid, subtask_id="t1", attempt=1, call_id=cid, tool="Bash"))
        await store.append(ApprovalDecided(session_id=sid, subtask_id="t1", attempt=1, call_id="c2",
                                           decision="approved", source="tui"))
        assert await store.load_run_state(sid, "t1") is not None  # c3 still undecided
        await store.append(ApprovalDecided(session_id=sid, subtask_id="t1", attempt=1, call_id="c3",
                                           decision="denied", source="tui", reason="no"))
        assert await store.load_run_state(sid, "t1") is None
    finally:
        await store.close()


async def test_an_answer_while_paused_is_applied_when_the_call_is_asked_again(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)], [("reask",)]])
    try:
        await pending(store, sup)
        await sup.pause(immediate=True)
        await wait_for(lambda: sup._current is not None and sup._current.state is SubtaskState.PAUSED, store=store)
        await store.enqueue_command(sup.session_id, "deny", text="not now", source="cli", call_id="c1")
        await wait_for(lambda: "c1" in sup._early, store=store)
        assert not [e for e in await stored(store, sup.session_id) if e.type == "approval.decided"]
        await sup.resume()
        assert await run == "done"
        assert backend.ran == []
        decided = [e for e in await stored(store, sup.session_id) if e.type == "approval.decided"]
        assert [(d.call_id, d.decision, d.reason) for d in decided] == [("c1", "denied", "not now")]
    finally:
        await store.close()


async def test_an_attached_tuis_remote_control_answers_the_oldest_through_the_commands_table(tmp_path: Path) -> None:
    from shepherd.core.control import RemoteControl

    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)]])
    try:
        await pending(store, sup)
        remote = RemoteControl(store, sup.session_id)  # what `shepherd attach` steers with
        assert await remote.approve(scope="session") is True
        assert await run == "done"
        assert backend.ran == ["c1"]
        (decided,) = [e for e in await stored(store, sup.session_id) if e.type == "approval.decided"]
        assert (decided.call_id, decided.source, decided.scope) == ("c1", "tui", "session")
        assert await remote.deny() is False  # nothing pending: nothing sent
    finally:
        await store.close()


async def test_a_call_left_awaiting_that_is_not_asked_again_is_closed_when_the_subtask_ends(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask", "c1", "Bash", DEPLOY)], [("text", "done anyway")]])
    try:
        await pending(store, sup)
        await sup.pause(immediate=True)
        await wait_for(lambda: sup._current is not None and sup._current.state is SubtaskState.PAUSED, store=store)
        await sup.resume()
        assert await run == "done"
        assert backend.ran == []
        (fin,) = [e for e in await stored(store, sup.session_id) if e.type == "tool.finished"]
        assert (fin.call_id, fin.status, fin.output) == ("c1", "interrupted", NOT_RUN_OUTPUT)
        assert await store.approvals(sup.session_id) == []
        assert [c.status for c in await store.tool_calls(sup.session_id)] == ["interrupted"]
        session = await store.get_session(sup.session_id)
        assert session is not None and session.needs is None
    finally:
        await store.close()


async def test_two_calls_of_one_turn_wait_until_both_are_answered(tmp_path: Path) -> None:
    store, sup, backend, run = await start(tmp_path, [[("ask_all", [("c2", "Bash", DEPLOY),
                                                                    ("c3", "Bash", {"command": "make clean"})])]])
    try:
        rows = await pending(store, sup, 2)
        assert [r.call_id for r in rows] == ["c2", "c3"]
        await sup.approve()  # the oldest: c2
        current = sup._current
        assert current is not None and current.state is SubtaskState.WAITING_APPROVAL  # c3 still waits
        assert sup.waiting_approval() == ["c3"]
        session = await store.get_session(sup.session_id)
        assert session is not None and session.needs == "approval" and session.needs_detail == "Bash make clean"
        await sup.deny("c3", reason="no")
        assert current.state is not SubtaskState.WAITING_APPROVAL
        assert await run == "done"
        assert backend.ran == ["c2"]
    finally:
        await store.close()
