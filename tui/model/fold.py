"""How each event type folds into the view: the ``_on_<type>`` handlers of ``SessionModel``.

A mixin: the state (``session``, ``subtasks``, the open calls and messages) and the
bookkeeping (``_add``, ``_bump``, ``_touch_*``, ``_target``, ``_note``, ``_counts``) are
``SessionModel``'s (tui.model.projection), which dispatches each event here by its type.
"""

from __future__ import annotations

import json

from shepherd.core import events as ev
from shepherd.core.report import compact_input
from shepherd.core.text import safe
from shepherd.tui.fmt import clip, fmt_duration
from shepherd.tui.model.blocks import (
    AttemptBlock, ErrorBlock, HookBlock, RetryBlock, SubtaskEndBlock, TextBlock, ThinkingBlock,
    ToolBlock,
)
from shepherd.tui.model.views import SessionInfo, SubtaskView
from shepherd.core.states import ACTIVE_STATES, SUBTASK_STATES, Command, SessionStatus, SubtaskState

# a subtask whose tool call waits for a person's yes (the engine's state)
WAITING_APPROVAL = SubtaskState.WAITING_APPROVAL


class Fold:
    session: SessionInfo
    subtasks: dict[str, SubtaskView]
    current_subtask_id: str | None
    _tools: dict[str, ToolBlock]
    _texts: dict[tuple[str, str], TextBlock]
    _thoughts: dict[tuple[str, str], ThinkingBlock]

    # session lifecycle

    def _on_session_started(self, e: ev.SessionStarted) -> None:
        s = self.session
        s.id = s.id or e.session_id
        s.title = e.title or s.title
        s.backend = e.backend or s.backend
        s.model = e.model or s.model
        s.workspace = e.workspace or s.workspace
        if s.started_at is None:
            s.started_at = e.ts or None
        if s.status in (SessionStatus.PENDING, SessionStatus.STARTING, "") and self._counts(e):
            s.status = SessionStatus.RUNNING
        self._touch_session()

    def _on_plan_ready(self, e: ev.PlanReady) -> None:
        in_plan: list[str] = []
        for i, item in enumerate(e.subtasks or []):
            if not isinstance(item, dict):
                continue
            sid = str(item.get("id") or f"#{i + 1}")
            if sid in in_plan:
                continue
            in_plan.append(sid)
            st = self._subtask(sid, create=True)
            st.planned = True
            title = item.get("title")
            title = safe(str(title)) if title else ""
            if title and st.title != title:
                st.title = title
                self._touch_subtask(st)
        # A new plan replaces the old one: subtasks of an earlier plan that never
        # started go away (as in the store's rows).
        for sid, st in list(self.subtasks.items()):
            if st.planned and sid not in in_plan and st.state == SubtaskState.PENDING and not st.blocks:
                del self.subtasks[sid]
                self._changes.structure = True
        # what is outside the plan (a planning subtask, "session") first, then plan order
        keys = list(self.subtasks)
        ranked = [k for k in keys if k not in in_plan] + [k for k in in_plan if k in self.subtasks]
        if ranked != keys:
            self.subtasks = {k: self.subtasks[k] for k in ranked}
            self._changes.structure = True

    def _set_running(self, e: ev.Event) -> None:
        s = self.session
        if not self._counts(e):
            return  # the rows already say where the session went after this
        if s.status != SessionStatus.RUNNING or s.ended_at is not None:
            s.status = SessionStatus.RUNNING
            s.ended_at = None
            self._touch_session()

    def _on_subtask_started(self, e: ev.SubtaskStarted) -> None:
        self._set_running(e)
        st = self._target(e)
        if e.title:
            st.title = e.title
        st.phase = e.phase or st.phase
        if self._counts(e):  # older events are already in the subtask rows
            if st.state != SubtaskState.PAUSED:
                st.state = SubtaskState.RUNNING
            st.finished_at = None
        if st.started_at is None:
            st.started_at = e.ts or None
        self.current_subtask_id = st.id
        self._touch_subtask(st)

    def _on_attempt_started(self, e: ev.AttemptStarted) -> None:
        self._set_running(e)
        st = self._target(e)
        number = e.attempt or (st.attempts + 1)
        # calls left open by an earlier attempt are over, whatever the engine said
        for tb in st.open_tools():
            if tb.attempt is not None and tb.attempt != number:
                self._finish_tool(tb, "interrupted", ts=e.ts)
        self._end_retry(st, "started")
        st.attempts = max(st.attempts, number)
        if self._counts(e):
            st.state = SubtaskState.RUNNING
            st.finished_at = None
        if st.started_at is None:
            st.started_at = e.ts or None
        self.current_subtask_id = st.id
        block = AttemptBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=number, number=number,
                             reason=e.reason or "first", prompt_extra=e.prompt_extra or "")
        self._add(st, block)
        self._link_attempt(block)
        self._touch_subtask(st)

    # streaming content

    def _on_text_delta(self, e: ev.TextDelta) -> None:
        if not e.text:
            return
        st = self._target(e)
        tb = self._text_block(st, e)
        tb.text += e.text
        self._bump(tb)

    def _text_block(self, st: SubtaskView, e: ev.TextDelta | ev.MessageCompleted,
                    role: str = "assistant") -> TextBlock:
        key = (st.id, e.message_id)
        tb = self._texts.get(key) if e.message_id else None
        if tb is None and not e.message_id:
            last = st.blocks[-1] if st.blocks else None
            if isinstance(last, TextBlock) and not last.message_id and not last.completed and last.role == role:
                tb = last
        if tb is None:
            tb = TextBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                           message_id=e.message_id, role=role)
            self._add(st, tb)
            if e.message_id:
                self._texts[key] = tb
        return tb

    def _on_thinking_delta(self, e: ev.ThinkingDelta) -> None:
        if not e.text:
            return
        st = self._target(e)
        key = (st.id, e.message_id)
        tb = self._thoughts.get(key) if e.message_id else None
        if tb is None and not e.message_id:
            last = st.blocks[-1] if st.blocks else None
            if isinstance(last, ThinkingBlock) and not last.message_id and not last.completed:
                tb = last
        if tb is None:
            tb = ThinkingBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                               message_id=e.message_id)
            self._add(st, tb)
            if e.message_id:
                self._thoughts[key] = tb
        tb.text += e.text
        self._bump(tb)

    def _on_message_completed(self, e: ev.MessageCompleted) -> None:
        st = self._target(e)
        role = e.role or "assistant"
        if role in ("thinking", "reasoning"):
            th = self._thoughts.get((st.id, e.message_id))
            if th is not None:
                th.text = e.text or th.text
                th.full = th.full or bool(e.text)
                th.completed = True
                self._bump(th)
            elif e.text:
                th = ThinkingBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                                   message_id=e.message_id, text=e.text, completed=True, full=True)
                self._add(st, th)
            return
        existing = self._texts.get((st.id, e.message_id)) if e.message_id else None
        if existing is None and not e.text:
            return  # an empty message that never streamed: nothing to show
        tb = existing or self._text_block(st, e, role=role)
        if e.text:  # some backends complete with an empty text: keep what streamed
            tb.text = e.text
            tb.full = True
        tb.role = role
        tb.completed = True
        self._bump(tb)

    # tools

    def _on_tool_started(self, e: ev.ToolStarted) -> None:
        st = self._target(e)
        tb = self._tools.get(e.call_id) if e.call_id else None
        if tb is not None:  # finished arrived first, or a duplicate start: fill in, keep status
            tb.name = e.name or tb.name
            tb.input = dict(e.input or {}) or tb.input
            tb.summary = compact_input(tb.name, tb.input)
            if tb.started_ts is None:
                tb.started_ts = e.ts or None
            self._bump(tb)
            return
        tb = ToolBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                       call_id=e.call_id, name=e.name or "tool", input=dict(e.input or {}),
                       started_ts=e.ts or None)
        tb.summary = compact_input(tb.name, tb.input)
        self._add(st, tb)
        if e.call_id:
            self._tools[e.call_id] = tb

    def _on_tool_finished(self, e: ev.ToolFinished) -> None:
        tb = self._tools.get(e.call_id) if e.call_id else None
        if tb is None:
            st = self._target(e)
            tb = ToolBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                           call_id=e.call_id, name="tool")
            self._add(st, tb)
            if e.call_id:
                self._tools[e.call_id] = tb
        elif not tb.running and tb.finished_ts is not None:
            return  # a finished call never changes again (the store drops duplicates too)
        tb.status = e.status if e.status in ev.TOOL_STATUSES else "error"
        tb.output = e.output or ""
        if tb.approval == "waiting":
            tb.approval = "unanswered"
            self._touch_approvals(tb)
        tb.finished_ts = e.ts or None
        if e.duration_s is not None:
            tb.duration_s = float(e.duration_s)
        elif tb.started_ts is not None and e.ts:
            tb.duration_s = max(0.0, e.ts - tb.started_ts)
        self._bump(tb)

    # approvals (approve_tools): the call's block shows the question and its answer

    def _approval_block(self, e: ev.Event, tool: str = "", tool_input: dict | None = None) -> ToolBlock:
        """The call an approval event is about (made, if its tool.started is missing)."""
        call_id = getattr(e, "call_id", "")
        tb = self._tools.get(call_id) if call_id else None
        if tb is None:
            st = self._target(e)
            tb = ToolBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                           call_id=call_id, name=tool or "tool", input=dict(tool_input or {}),
                           started_ts=e.ts or None)
            tb.summary = compact_input(tb.name, tb.input)
            self._add(st, tb)
            if call_id:
                self._tools[call_id] = tb
        return tb

    def _on_approval_requested(self, e: ev.ApprovalRequested) -> None:
        tb = self._approval_block(e, e.tool, e.input)
        if tb.approval in ("approved", "denied"):
            return  # answered already (a duplicate request): the answer stands
        if not tb.input and e.input:
            tb.input = dict(e.input)
            tb.summary = compact_input(tb.name, tb.input)
        if not tb.running and e.reask_of == e.call_id:
            # the same call asked again after a resume (openai/scripted): the earlier attempt's
            # end closed it here, but it waits again (it never ran)
            tb.status, tb.finished_ts, tb.duration_s, tb.output = "running", None, None, ""
            tb.attempt = e.attempt or tb.attempt
        tb.approval = "waiting" if tb.running else "unanswered"
        tb.approval_ts = e.ts or tb.approval_ts
        tb.reask_of = e.reask_of
        self._bump(tb)
        old = self._tools.get(e.reask_of) if e.reask_of and e.reask_of != e.call_id else None
        if old is not None and old.approval in ("waiting", "unanswered"):
            # the call asked before a resume, withdrawn (claude rewinds): asked again as this one
            old.approval = "unanswered"
            old.approval_reason = "asked again as a new call"
            self._bump(old)
        self._touch_approvals(tb)

    def _on_approval_decided(self, e: ev.ApprovalDecided) -> None:
        tb = self._approval_block(e)
        tb.approval = "approved" if e.decision == "approved" else "denied"
        tb.approval_source = e.source or ""
        tb.approval_reason = e.reason or ""
        tb.approval_scope = e.scope or "call"
        if tb.approval_ts is None:
            tb.approval_ts = e.ts or None
        self._bump(tb)
        self._touch_approvals(tb)

    def _touch_approvals(self, tb: ToolBlock) -> None:
        """The session's count of waiting approvals (the keys and the status bar follow it),
        and the subtask's state: waiting for approval while one of its calls is."""
        waiting = sum(1 for b in self._tools.values() if b.awaiting)
        if waiting != self.session.approvals_waiting:
            self.session.approvals_waiting = waiting
            self._touch_session()
        st = self.subtasks.get(tb.subtask_id)
        if st is None:
            return
        if self.session.is_live:
            asked = any(b.awaiting for b in self._tools.values() if b.subtask_id == st.id)
            if asked and st.state == SubtaskState.RUNNING:
                st.state = WAITING_APPROVAL
            elif not asked and st.state == WAITING_APPROVAL:
                st.state = SubtaskState.RUNNING
        self._touch_subtask(st)

    def _on_hook_decision(self, e: ev.HookDecision) -> None:
        st = self._target(e)
        self._add(st, HookBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                                call_id=e.call_id, tool=e.tool, decision=e.decision or "deny",
                                reason=e.reason or ""))
        tb = self._tools.get(e.call_id) if e.call_id else None
        if tb is not None and e.decision == "deny":
            tb.denial = e.reason or "denied"
            self._bump(tb)

    # accounting and liveness

    def _on_usage(self, e: ev.Usage) -> None:
        if not self._counts(e):
            return
        s = self.session
        s.input_tokens += int(e.input_tokens or 0)
        s.output_tokens += int(e.output_tokens or 0)
        s.cost_usd += float(e.cost_usd or 0.0)
        s.cost_known = s.cost_known or e.cost_usd is not None
        self._touch_session()

    def _on_heartbeat(self, e: ev.Heartbeat) -> None:
        s = self.session
        s.heartbeat_ts = e.ts or s.heartbeat_ts
        s.idle_s = float(e.idle_s or 0.0)
        s.open_calls = int(e.open_calls or 0)
        if e.ts:
            since = e.ts - s.idle_s
            if s.last_activity_ts is None or since < s.last_activity_ts:
                s.last_activity_ts = since
        if e.stalled and not s.stalled:
            st = self._target(e)
            self._note(e, "stall", f"stalled: nothing from the agent for {fmt_duration(s.idle_s)}",
                       subtask=st)
        s.stalled = bool(e.stalled)
        self._touch_session()

    # errors, retries, control

    def _on_error(self, e: ev.Error) -> None:
        st = self._target(e)
        st.last_error_kind = e.kind or st.last_error_kind
        self._add(st, ErrorBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                                 err_kind=e.kind or "unknown", message=e.message or "",
                                 exception_type=e.exception_type or "", status_code=e.status_code,
                                 retryable=bool(e.retryable)))
        self._touch_subtask(st)

    def _on_retry_scheduled(self, e: ev.RetryScheduled) -> None:
        st = self._target(e)
        self._end_retry(st, "superseded")
        rb = RetryBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts, attempt=e.attempt,
                        err_kind=e.kind or "unknown", retry_no=int(e.retry_no or 0),
                        max_retries=int(e.max_retries or 0), delay_s=float(e.delay_s or 0.0),
                        resume_at=float(e.resume_at or ((e.ts or 0.0) + float(e.delay_s or 0.0))),
                        action=e.action or "retry")
        self._add(st, rb)
        st.retry = rb
        if not self._counts(e):
            pass
        elif st.state == SubtaskState.PAUSED:
            st._state_before_pause = SubtaskState.WAITING_RETRY
        else:
            st.state = SubtaskState.WAITING_RETRY
            if self.session.status == SessionStatus.RUNNING:
                self.session.status = SessionStatus.WAITING  # as the store says of a session in a countdown
        st.last_error_kind = rb.err_kind
        if self._counts(e):
            st.retries += 1
            self.session.retries += 1
            self._touch_session()
        self._touch_subtask(st)

    def _on_control(self, e: ev.Control) -> None:
        cmd = e.command or "?"
        s = self.session
        src = f" ({e.source})" if e.source else ""
        if cmd == Command.NOTE:
            text = f"note{src}: {e.text}" if e.text else f"note{src}"
            self._note(e, "note", text, source=e.source)
            return
        labels = {Command.PAUSE: "pause requested", Command.PAUSE_NOW: "pause (now) requested",
                  Command.RESUME: "resume requested", Command.RETRY: "retry requested",
                  Command.RETRY_NOW: "retry now requested", Command.SKIP: "skip requested",
                  Command.CANCEL: "cancel requested"}
        text = labels.get(cmd, f"{cmd} requested") + src
        if e.text:
            text += f": {e.text}"
        if cmd in (Command.PAUSE, Command.PAUSE_NOW):
            s.pause_requested = True
            self._touch_session()
        elif cmd == Command.RESUME:
            s.pause_requested = False
            self._touch_session()
        elif cmd in (Command.RETRY_NOW, Command.RETRY) and not (e.text or "").startswith("refused"):
            self._skip_countdown(e, "retry_now" if cmd == Command.RETRY_NOW else "user_retry")
        self._note(e, "control", text, source=e.source)

    def _skip_countdown(self, e: ev.Control, outcome: str) -> None:
        """`n` (or a person's retry) ends a countdown at once: the engine starts the retry now."""
        st = self.subtask(e.subtask_id) if e.subtask_id else next(
            (x for x in self.subtasks.values() if x.retry is not None and x.retry.active), None)
        if st is None or st.retry is None or not st.retry.active:
            return
        self._end_retry(st, outcome)
        if st.state == SubtaskState.WAITING_RETRY and self._counts(e):
            st.state = SubtaskState.RUNNING
        self._touch_subtask(st)

    def _on_subtask_finished(self, e: ev.SubtaskFinished) -> None:
        st = self._target(e)
        status = e.status if e.status in SUBTASK_STATES else SubtaskState.FAILED
        for tb in st.open_tools():
            self._finish_tool(tb, "interrupted", ts=e.ts)
        self._end_retry(st, status)
        if self._counts(e):
            st.state = status
            st.reason = e.reason or ""
            st.finished_at = e.ts or None
            st._state_before_pause = None
        self._add(st, SubtaskEndBlock(bid=0, subtask_id=st.id, seq=e.seq, ts=e.ts,
                                      attempt=e.attempt, status=status, reason=e.reason or ""))
        self._touch_subtask(st)
        if status == SubtaskState.STUCK and self.session.is_live and self._counts(e):
            self.session.status = SessionStatus.STUCK  # waiting for a person
            self._touch_session()

    def _on_session_paused(self, e: ev.SessionPaused) -> None:
        s = self.session
        if self._counts(e):
            s.status = SessionStatus.PAUSED
        s.pause_requested = False
        self._touch_session()
        for st in self.subtasks.values() if self._counts(e) else ():
            if st.state in (SubtaskState.RUNNING, SubtaskState.WAITING_RETRY, WAITING_APPROVAL):
                # a pause ends a countdown (the engine stops waiting; resume starts the retry)
                running = st.retry is not None and st.retry.active
                st._state_before_pause = SubtaskState.RUNNING if running else st.state
                st.state = SubtaskState.PAUSED
                self._touch_subtask(st)
        for st in self.subtasks.values():
            if st.retry is not None and st.retry.active:
                self._end_retry(st, "paused")
        self._note(e, "pause", "paused" + (f": {e.reason}" if e.reason else ""))

    def _on_session_resumed(self, e: ev.SessionResumed) -> None:
        s = self.session
        if self._counts(e):
            s.status = SessionStatus.RUNNING
            s.ended_at = None
        s.pause_requested = False
        self._touch_session()
        for st in self.subtasks.values() if self._counts(e) else ():
            if st.state == SubtaskState.PAUSED:
                st.state = st._state_before_pause or SubtaskState.RUNNING
                st._state_before_pause = None
                self._touch_subtask(st)
        self._note(e, "resume", "resumed" + (f": {e.reason}" if e.reason else ""))

    def _on_session_finished(self, e: ev.SessionFinished) -> None:
        s = self.session
        status = e.status or SessionStatus.DONE
        if self._counts(e):
            s.status = status
            s.ended_at = e.ts or s.ended_at
        s.pause_requested = False
        self._touch_session()
        cancelled = status == SessionStatus.CANCELLED
        self._interrupt_everything(SubtaskState.CANCELLED if cancelled else SubtaskState.INTERRUPTED, ts=e.ts)
        self._note(e, "session", f"session {status}" + (f": {e.reason}" if e.reason else ""))

    def _on_session_interrupted(self, e: ev.SessionInterrupted) -> None:
        s = self.session
        if self._counts(e):
            s.status = SessionStatus.INTERRUPTED
            s.ended_at = e.ts or s.ended_at
        s.pause_requested = False
        self._touch_session()
        self._interrupt_everything(SubtaskState.INTERRUPTED, ts=e.ts)
        self._note(e, "session", "session interrupted" + (f": {e.reason}" if e.reason else ""))

    # a worktree session's checkpoints and worktree (issue 12): one dim line each

    def _on_checkpoint(self, e: ev.Checkpoint) -> None:
        commit = safe(str(e.commit or ""))[:7] or "?"
        if e.at == "subtask_done":
            n = len(e.files or []) + int(e.files_more or 0)
            text = f"checkpoint {commit}: done, {n} file{'s' if n != 1 else ''} changed (d: the diff)"
        elif e.at == "restore":
            text = f"files restored to checkpoint {commit}" + (f": {safe(e.reason)}" if e.reason else "")
        else:
            text = f"checkpoint {commit}: start of this subtask"
        self._note(e, "worktree", text)

    def _on_worktree(self, e: ev.WorktreeChanged) -> None:
        where = {"created": f"on branch {e.branch} at {e.path}", "reused": f"at {e.path}",
                 "recreated": f"at {e.path}", "merged": f"into {e.base_branch or 'its branch'}",
                 "discarded": f"(branch {e.branch} deleted)", "missing": f"at {e.path}"}.get(e.action or "", "")
        text = f"worktree {e.action or 'changed'} {where}".rstrip() + (f": {e.reason}" if e.reason else "")
        self._note(e, "worktree", safe(text))

    def _on_opaque(self, e: ev.Event) -> None:
        data = e.to_dict()
        for k in ("type", *ev.COMMON_FIELDS):
            data.pop(k, None)
        detail = ""
        if data:
            try:
                detail = json.dumps(data, ensure_ascii=False, default=str, sort_keys=True)
            except Exception:
                detail = repr(data)
            detail = " " + clip(detail, 160)
        self._note(e, "opaque", f"{e.type or 'event'}{detail}")

    # ending what was open

    def _interrupt_everything(self, final_state: str, ts: float | None = None) -> None:
        for tb in list(self._tools.values()):
            if tb.running:
                self._finish_tool(tb, "interrupted", ts=ts)
        for st in self.subtasks.values():
            if st.state in ACTIVE_STATES or st.state == WAITING_APPROVAL:
                self._end_retry(st, final_state)
                st.state = final_state
                st._state_before_pause = None
                self._touch_subtask(st)
            elif st.retry is not None:
                self._end_retry(st, final_state)

    def _finish_tool(self, tb: ToolBlock, status: str, ts: float | None = None) -> None:
        tb.status = status
        if tb.approval == "waiting":
            tb.approval = "unanswered"  # never approved by an ending
            self._touch_approvals(tb)
        if ts:
            tb.finished_ts = ts
            if tb.duration_s is None and tb.started_ts is not None:
                tb.duration_s = max(0.0, ts - tb.started_ts)
        self._bump(tb)

    def _end_retry(self, st: SubtaskView, outcome: str) -> None:
        rb = st.retry
        if rb is None:
            return
        st.retry = None
        if rb.active:
            rb.active = False
            rb.outcome = outcome
            self._bump(rb)
