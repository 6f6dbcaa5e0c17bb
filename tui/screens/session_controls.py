"""The session view's controls: what its keys send to the session's runner (pause,
resume, retry, skip, cancel, a note; approve or deny a tool call) and which of them apply
now (``check_action``: the footer, the palette and the keys agree).

``ControlsMixin`` is mixed into ``SessionScreen`` (tui.screens.session), which holds the
state it reads (``model``, ``controller``, ``controllable``, ``_ready``, ``_busy``...).
Commands go through ``core.control.Controller``; a session nobody runs is read-only, but an
interrupted one can be resumed (and a finished one's subtask run again) in this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from shepherd.core.states import FINAL_STATES, FINISHED_STATUSES, SessionStatus
from shepherd.tui import model as m

if TYPE_CHECKING:
    from shepherd.core.control import Controller

READ_ONLY = "read-only: this session is not running"
NO_CONTROLS = "read-only: no controls for this session here"
NO_DIFF = 'no diff: this session did not run in its own worktree (isolation = "worktree")'


class ControlsMixin:
    """The controls and approvals part of ``SessionScreen`` (see the module's docstring)."""

    model: "m.SessionModel"
    controller: "Controller | None"


    def _refuse(self) -> None:
        self.notify(READ_ONLY if not self.live else NO_CONTROLS, severity="warning")

    # what can be done now (footer, palette and keys agree: a False hides the key)

    def _resumable(self) -> bool:
        """An interrupted session nobody runs: p continues it in this process."""
        info = self.model.session
        return not info.is_live and info.status == SessionStatus.INTERRUPTED

    def _rerunnable(self) -> bool:
        """A past session: r runs the selected subtask again in this process."""
        info = self.model.session
        return not info.is_live and info.status in FINISHED_STATUSES and bool(self._selected_subtask())

    def _pausing(self) -> bool:
        info = self.model.session
        return info.status == SessionStatus.PAUSED or info.pause_requested

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self._ready or self._busy:
            return action in ("export", "back", "load_earlier", "next_block", "previous_block", "open_output",
                              "diff", "diff_session", "search")
        ctl = self.controllable
        status = self.model.session.status
        if action == "pause":
            return ctl and not self._pausing() and status != SessionStatus.STUCK
        if action == "resume":
            return (ctl and self._pausing()) or self._resumable()
        if action == "pause_now":
            return ctl and status not in (SessionStatus.PAUSED, SessionStatus.STUCK)
        if action in ("approve", "deny", "approve_session"):
            return ctl and self._approval_target() is not None
        if action == "retry_now":
            return ctl and self.model.waiting_retry() is not None
        if action == "retry":
            return ctl or self._rerunnable()
        if action in ("skip", "cancel", "note"):
            return ctl
        if action == "open_output":
            # dimmed, not hidden, while the subtask on screen has no tool call: the bar keeps
            # its keys in place from one subtask to the next, so a switch restyles one key
            # instead of mounting it or removing it (and laying the screen out again)
            return True if self._tool_target() is not None else None
        return True

    def _selected_subtask(self) -> str | None:
        sid = self.subtask_list.selected_id if self._ready else None
        sid = sid if sid is not None else self.selected
        return sid or None  # the session pseudo-subtask means "the current one"

    async def _control(self, what: str, call: Callable[[], Awaitable[Any]], done: str | None = None) -> bool:
        if not self.controllable:
            self._refuse()
            return False
        try:
            await call()
        except Exception as exc:
            self.notify(f"{what} failed: {exc}", severity="error", markup=False)
            return False
        if done:
            self.notify(done, timeout=2)
        return True

    async def action_pause(self) -> None:
        ctl = self.controller
        await self._control("pause", lambda: ctl.pause(immediate=False, source="tui"),  # type: ignore[union-attr]
                            "pause requested: at the next safe point")

    async def action_resume(self) -> None:
        if self._resumable():
            self._resume_interrupted()
            return
        ctl = self.controller
        await self._control("resume", lambda: ctl.resume(source="tui"), "resume requested")  # type: ignore[union-attr]

    async def action_pause_resume(self) -> None:
        """p as one key: resume when paused (or interrupted), else pause."""
        if self._resumable() or self._pausing():
            await self.action_resume()
        else:
            await self.action_pause()

    async def action_pause_now(self) -> None:
        ctl = self.controller
        await self._control("pause", lambda: ctl.pause(immediate=True, source="tui"),  # type: ignore[union-attr]
                            "pausing now")

    def _resume_interrupted(self, retry_subtask: str | None = None, clean: bool = False) -> None:
        """Continue (or re-run a subtask of) a session nobody runs. Starting a run imports
        the backend's SDK (seconds): say so at once, and never wait for it on this key."""
        self._busy = True
        self.refresh_bindings()
        what = f"re-running {self._label(retry_subtask)}…" if retry_subtask else "resuming…"
        if clean:
            what = f"restoring the files and re-running {self._label(retry_subtask)}…"
        self.status_bar.show_note(what)
        self.post_message(self.ResumeRequested(self, self.session_id, retry_subtask, clean=clean))

    def resume_refused(self) -> None:
        """The app started nothing for this screen's request: back to what is true."""
        if self.is_attached:
            self._busy = False
            self._sync_status()

    async def action_retry_now(self) -> None:
        if self.controllable and self.model.waiting_retry() is None:
            self.notify("no retry is waiting", severity="warning")
            return
        ctl = self.controller
        await self._control("retry now", lambda: ctl.retry_now(source="tui"), "retrying now")  # type: ignore[union-attr]

    async def action_retry(self) -> None:
        sid = self._selected_subtask()
        if await self._asks_how_to_retry(sid):
            # a worktree session's finished subtask: keep its files, or restore them first
            from shepherd.tui.screens.modals import RetryModal

            self.app.push_screen(RetryModal(self._label(sid)), lambda how: self._retry_chosen(sid, how))
            return
        await self._retry(sid, clean=False)

    async def _asks_how_to_retry(self, sid: str | None) -> bool:
        """r on a subtask that has ended, in a session that runs in a worktree."""
        st = self.model.subtask(sid) if sid is not None else None
        if st is None or st.state not in FINAL_STATES or not (self._rerunnable() or self.controllable):
            return False
        return await self.worktree_row() is not None

    async def _retry_chosen(self, sid: str | None, how: str | None) -> None:
        if how in ("keep", "clean"):
            await self._retry(sid, clean=how == "clean")

    async def _retry(self, sid: str | None, *, clean: bool) -> None:
        if self._rerunnable():
            # a past session: a person's retry runs that subtask again in this process
            self._resume_interrupted(retry_subtask=sid, clean=clean)
            return
        ctl = self.controller
        if clean:
            await self._control("retry", lambda: ctl.retry(sid, clean=True, source="tui"),  # type: ignore[union-attr]
                                f"retry requested: {self._label(sid)}, files restored to its start")
            return
        await self._control("retry", lambda: ctl.retry(sid, source="tui"),  # type: ignore[union-attr]
                            f"retry requested: {self._label(sid)}")

    async def action_skip(self) -> None:
        sid = self._selected_subtask()
        ctl = self.controller
        await self._control("skip", lambda: ctl.skip(sid, source="tui"),  # type: ignore[union-attr]
                            f"skip requested: {self._label(sid)}")

    def action_cancel(self) -> None:
        if not self.controllable:
            self._refuse()
            return
        from shepherd.tui.screens.modals import ConfirmModal

        self.app.push_screen(ConfirmModal("Cancel this run? Open tool calls are interrupted and the session "
                                          "ends as cancelled.", title="Cancel the run?", yes="Cancel run",
                                          no="Keep running", danger=True), self._cancel_confirmed)

    async def _cancel_confirmed(self, yes: bool | None) -> None:
        if yes:
            ctl = self.controller
            await self._control("cancel", lambda: ctl.cancel(source="tui"), "cancel requested")  # type: ignore[union-attr]

    def action_note(self) -> None:
        if not self.controllable:
            self._refuse()
            return
        from shepherd.tui.screens.modals import NoteModal

        self.app.push_screen(NoteModal(), self._note_entered)

    async def _note_entered(self, text: str | None) -> None:
        if text:
            ctl = self.controller
            await self._control("note", lambda: ctl.note(text, source="tui"), "note queued for the next prompt")  # type: ignore[union-attr]

    # --- a worktree session's diff (d / D) --------------------------------------------------

    async def worktree_row(self) -> Any:
        """The session's worktree (core.store: the latest worktree event), None without one.
        Read when asked: a run started a moment ago writes its worktree event after its view opens."""
        try:
            return await self.store.worktree(self.session_id)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a store without worktrees (or closing): no diff, no modal
            return None

    async def action_diff(self) -> None:
        await self._open_diff(self._selected_subtask())

    async def action_diff_session(self) -> None:
        await self._open_diff(None)

    async def _open_diff(self, subtask_id: str | None) -> None:
        if await self.worktree_row() is None:
            self.notify(NO_DIFF, severity="warning")
            return
        from shepherd.tui.screens.diff import DiffScreen

        label = self._label(subtask_id) if subtask_id else None
        await self.app.push_screen(DiffScreen(self.store, self.session_id, subtask_id, label))  # type: ignore[attr-defined]

    # --- approvals ------------------------------------------------------------------------

    def _approval_target(self) -> "m.ToolBlock | None":
        """The call y/n/a answer: the focused one if it waits, else the oldest waiting in
        the subtask on screen, else the oldest waiting in the session."""
        from shepherd.tui.widgets.blocks import ToolCallView

        if not self.model.session.approvals_waiting:
            return None
        focused = self.focused if self._ready else None
        if isinstance(focused, ToolCallView) and focused.block.awaiting:
            return focused.block
        pending = self.model.pending_approvals(self.selected) or self.model.pending_approvals()
        return pending[0] if pending else None

    async def action_approve(self) -> None:
        await self._answer("approved")

    async def action_approve_session(self) -> None:
        await self._answer("approved", scope="session")

    def action_deny(self) -> None:
        if not self.controllable:
            self._refuse()
            return
        target = self._approval_target()
        if target is None:
            self.notify("nothing is waiting for approval", severity="warning")
            return
        from shepherd.tui.widgets.approval import DenyModal

        call_id = target.call_id
        self.app.push_screen(DenyModal(target.name, target.summary),
                             lambda reason: self._deny_entered(call_id, reason))

    async def _deny_entered(self, call_id: str, reason: str | None) -> None:
        if reason is not None:
            await self._answer("denied", reason=reason, call_id=call_id)

    async def _answer(self, decision: str, *, scope: str = "call", reason: str = "",
                      call_id: str | None = None) -> None:
        from shepherd.tui.widgets.approval import ApprovalUnsupported, answer_notice, send_answer

        if not self.controllable:
            self._refuse()
            return
        target = self.model.tool_block(call_id) if call_id else self._approval_target()
        if target is None or not target.awaiting:
            self.notify("nothing is waiting for approval" if target is None
                        else f"{target.name} is not waiting for approval any more", severity="warning")
            return
        try:
            sent = await send_answer(self.controller, target.call_id, decision, scope=scope, reason=reason)
        except ApprovalUnsupported as exc:
            self.notify(f"could not answer: {exc}", severity="warning", markup=False)
            return
        except Exception as exc:
            self.notify(f"answer failed: {exc}", severity="error", markup=False)
            return
        if not sent:
            self.notify(f"{target.name} is not waiting for approval any more", severity="warning", markup=False)
            return
        self.notify(answer_notice(decision, target.name, target.summary, scope), timeout=2, markup=False)
