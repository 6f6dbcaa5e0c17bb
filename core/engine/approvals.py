"""Tool approvals in the engine: one ``ApprovalGate`` per attempt when the task gates
tools (core.approvals has the contract), the calls waiting for a person, and the answers.

The wait is inside the attempt: the backend awaits ``gate.ask``, so no attempt ends, no
retry counter moves and the attempt budget is untouched; the subtask is
``waiting_approval`` meanwhile and the stall watchdog does not count it. An answer (the
in-process Controller, the commands table, headless ``--approvals deny``) is committed as
``approval.decided`` before the backend hears it; the first answer wins, a late or unknown
one is logged and dropped. Nothing is ever approved by default: an attempt that ends with a
call still waiting either closes it (cancel, skip, a person's retry: ``tool.finished``
interrupted, it did not run) or keeps it awaiting (pause now, a failure, a shutdown, a
crash), and the next attempt asks it again (``gate.reask``).
"""

from __future__ import annotations

import json
from typing import Any

from shepherd.core import prompts
from shepherd.core.approvals import ApprovalGate, AwaitingCall, Decision
from shepherd.core.events import ApprovalDecided, ApprovalRequested, ToolFinished
from shepherd.core.ledger import ToolLedger
from shepherd.core.records import record
from shepherd.core.states import SubtaskState

from shepherd.core.engine.base import SubtaskRun, SupervisorBase, log
from shepherd.core.engine.states import Trigger

APPROVALS_MODES = ("wait", "deny")
NOT_RUN_OUTPUT = "not run: it was waiting for approval"


class ApprovalLedger(ToolLedger):
    """The attempt's ledger, which can set a call aside: a call still awaiting an answer
    when the attempt ends is not closed as interrupted (it is asked again)."""

    def set_aside(self, call_id: str) -> None:
        self._open.pop(call_id, None)


@record
class Asked:
    """A call asked in this runner and not answered yet."""

    run: SubtaskRun
    gate: ApprovalGate
    event: ApprovalRequested  # as committed (session, subtask, attempt, seq)


def preview(tool: str, tool_input: Any) -> str:
    text = json.dumps(tool_input, ensure_ascii=False, sort_keys=True, default=str)
    return f"{tool} {text if len(text) <= 200 else text[:199] + '…'}"


class Approvals(SupervisorBase):
    """The Supervisor's approvals (mixed in: ``_asked`` by the attempt, ``approve`` and
    ``deny`` by the controls)."""

    def _approval_state(self) -> dict[str, Asked]:
        return self._asks

    async def _make_gate(self, run: SubtaskRun) -> ApprovalGate | None:
        """The attempt's gate, or None when the task gates no tool (nothing changes then)."""
        policy = self.task.approval_policy()
        if not policy.active:
            return None
        tools = await self.store.session_tools(self.session_id)
        pending = await self.store.approvals(self.session_id, subtask_id=run.sub.id)
        reask = tuple(AwaitingCall(call_id=a.call_id, tool=a.tool, input=a.input) for a in pending)
        return ApprovalGate(policy=policy, session_tools=set(tools), reask=reask)

    def waiting_approval(self, run: SubtaskRun | None = None) -> list[str]:
        """Call ids waiting for an answer (of ``run``, or of every run), oldest first."""
        return [cid for cid, a in self._approval_state().items() if run is None or a.run is run]

    async def _asked(self, run: SubtaskRun, ev: ApprovalRequested, gate: ApprovalGate | None) -> None:
        """A backend's ``approval.requested``: committed at once (urgent), then the subtask
        waits for a person, or headless ``--approvals deny`` answers now."""
        ev = self._sub_event(ev, run).with_(session_id=self.session_id)  # type: ignore[assignment]
        if gate is None:  # a backend asking with no gate: never approved, denied for it
            log.warning("approval asked for %r with no approvals configured; dropped", ev.call_id)
            return
        committed = await self._emit(ev)
        if committed is None:
            return
        asks = self._approval_state()
        asks[ev.call_id] = Asked(run=run, gate=gate, event=committed)  # type: ignore[arg-type]
        self._kept.discard(ev.call_id)
        if run.state in (SubtaskState.RUNNING, SubtaskState.WAITING_APPROVAL):
            run.move(Trigger.APPROVAL_ASKED)
        early = self._early.pop(ev.call_id, None)
        if early is None and ev.reask_of:
            early = self._early.pop(ev.reask_of, None)
        if early is not None:  # answered while its attempt was stopped (paused): applied now
            await self._decide(ev.call_id, early)
            return
        if self.approvals_mode == "deny" and not self.interactive:
            await self._decide(ev.call_id, Decision("denied", "headless", prompts.NO_ONE_TO_APPROVE))
            return
        if not self.interactive:
            log.warning("waiting for approval: %s — shepherd approve %s %s | shepherd deny %s %s --reason TEXT",
                        preview(ev.tool, ev.input), self.session_id, ev.call_id, self.session_id, ev.call_id)
            self._say_waiting(ev)

    def _say_waiting(self, ev: ApprovalRequested) -> None:
        """A headless run waiting says so on its log (stderr) with the exact commands."""
        import sys

        from shepherd.core.text import safe

        line = (f"waiting for approval: {safe(preview(ev.tool, ev.input))} — "
                f"shepherd approve {self.session_id} {safe(ev.call_id)} | "
                f"shepherd deny {self.session_id} {safe(ev.call_id)} --reason TEXT")
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    async def _decide(self, call_id: str | None, decision: Decision) -> bool:
        """Answer a waiting call (None: the oldest): commit approval.decided, then tell the
        backend. False when nothing of that id waits (answered already, or unknown)."""
        asks = self._approval_state()
        if call_id is None or call_id == "":
            call_id = next(iter(asks), None)
        asked = asks.pop(call_id, None) if call_id is not None else None
        if asked is None and call_id in self._kept:
            # its attempt stopped with it awaiting (pause now): the answer waits for the re-ask
            self._kept.discard(call_id)
            self._early[call_id] = decision
            log.info("kept a %s of call %r for when it is asked again", decision.decision, call_id)
            return True
        if asked is None:
            log.info("dropped a %s of call %r: it is not waiting for approval (answered already, or unknown)",
                     decision.decision, call_id)
            return False
        req = asked.event
        await self._emit(ApprovalDecided(
            subtask_id=req.subtask_id, attempt=req.attempt, call_id=req.call_id, decision=decision.decision,
            source=decision.source, reason=decision.reason, scope=decision.scope))
        if decision.approved and decision.scope == "session":
            asked.gate.approve_for_session(req.tool)
        asked.gate.answer(req.call_id, decision)
        run = asked.run
        if run.state is SubtaskState.WAITING_APPROVAL and not self.waiting_approval(run):
            run.move(Trigger.APPROVAL_ANSWERED)
        return True

    async def approve(self, call_id: str | None = None, *, scope: str = "call", source: str = "tui") -> bool:
        """A person's yes for ``call_id`` (None: the oldest waiting); ``scope="session"``
        approves its tool for the rest of the session."""
        return await self._decide(call_id, Decision("approved", source if source in ("tui", "cli") else "tui",  # type: ignore[arg-type]
                                                    "", "session" if scope == "session" else "call"))

    async def deny(self, call_id: str | None = None, *, reason: str = "", source: str = "tui") -> bool:
        """A person's no for ``call_id`` (None: the oldest waiting): the tool does not run, the
        agent gets the reason as its result."""
        return await self._decide(call_id, Decision("denied", source if source in ("tui", "cli") else "tui",  # type: ignore[arg-type]
                                                    reason.strip()))

    async def _close_left_awaiting(self, run: SubtaskRun) -> None:
        """The subtask ends (done, skipped, cancelled): calls an earlier attempt left awaiting
        that no one re-asked are closed, unrun (``tool.finished`` interrupted)."""
        if not self.task.approval_policy().active:
            return
        for a in await self.store.approvals(self.session_id, subtask_id=run.sub.id):
            self._kept.discard(a.call_id)
            self._early.pop(a.call_id, None)
            await self._emit(ToolFinished(subtask_id=run.sub.id, attempt=a.attempt, call_id=a.call_id,
                                          status="interrupted", output=NOT_RUN_OUTPUT))

    async def _end_asks(self, run: SubtaskRun, gate: ApprovalGate | None, ledger: ApprovalLedger, *,
                        close: bool) -> None:
        """The attempt ended: its calls still waiting are closed (``close``: cancel, skip, a
        person's retry; they did not run) or kept awaiting (asked again by the next attempt).
        The gate is closed either way: nothing waiting is ever approved by default."""
        asks = self._approval_state()
        mine = [cid for cid, a in asks.items() if a.run is run]
        for cid in mine:
            asked = asks.pop(cid)
            if close:
                fin = ledger.finish(ToolFinished(call_id=cid, status="interrupted", output=NOT_RUN_OUTPUT),
                                    self.clock.monotonic())
                if fin is not None:
                    await self._emit(self._sub_event(fin, run).with_(attempt=asked.event.attempt or run.attempt))
            else:
                ledger.set_aside(cid)
                self._kept.add(cid)
        if gate is not None:
            gate.close()


__all__ = ["APPROVALS_MODES", "Approvals", "ApprovalLedger", "NOT_RUN_OUTPUT"]
