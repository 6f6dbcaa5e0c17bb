"""Worktree sessions (``isolation = "worktree"``) in the engine: the worktree made (or, on a
resume, found again) once the lease is held, the checkpoint commits at a subtask's start
and done, and a person's clean retry (the files restored to the subtask's start).

Design: docs/next/worktrees.md §2.2, §2.4, §2.5, §2.7. Git itself is core.worktree's; this
part decides when, and writes the events. Everything the agent touches runs in the
worktree: once it exists, ``self.task`` is the task with the worktree's workspace (the
stored record keeps the original one: ``self._task_record``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from shepherd.core import prompts
from shepherd.core import worktree as wt
from shepherd.core.events import Checkpoint, Control, Error, Event, WorktreeChanged
from shepherd.core.states import Command
from shepherd.core.store.errors import StoreError

from shepherd.core.engine.base import SubtaskRun, SupervisorBase, log
from shepherd.core.engine.next_attempt import NextAttempt, Reason

START, DONE, RESTORE = "subtask_start", "subtask_done", "restore"


class WorktreeRefused(StoreError):
    """A resume or clean retry a worktree session cannot do (one line; the CLI: exit 2)."""


def clean_attempt() -> NextAttempt:
    """A clean retry's first attempt: a fresh conversation, told the files were put back."""
    return NextAttempt(Reason.USER_RETRY, prompts.clean_retry_context(), False)


async def check_resume(store: object, session_id: str, *, retry_subtask: str | None, clean: bool) -> None:
    """What resume_run refuses before it launches anything (WorktreeRefused, one line)."""
    row = await store.worktree(session_id)  # type: ignore[attr-defined]
    if clean and row is None:
        raise WorktreeRefused(f'session {session_id} did not run in a worktree (isolation = "worktree"): '
                              "a clean retry needs one")
    if row is None:
        return
    if row.state != "active":
        raise WorktreeRefused(f"session {session_id}: its worktree was {row.state}; it cannot run again")
    where = _where(row)
    if await wt.branch_commit(where, row.branch) is None:
        raise WorktreeRefused(f"session {session_id}: its branch {row.branch} was deleted; it cannot run again")
    if clean and retry_subtask is not None:
        tip = await wt.branch_commit(where, row.branch)
        if await _start_of(store, session_id, retry_subtask, where, tip) is None:
            raise WorktreeRefused(f"session {session_id}: subtask {retry_subtask} never started in its worktree: "
                                  "nothing to restore")


def _where(row: object) -> str:
    """Where to run git for a stored worktree: the user's checkout, else the shared git dir."""
    origin = getattr(row, "origin", "")
    return origin if origin and os.path.isdir(origin) else getattr(row, "repo")


async def _start_of(store: object, session_id: str, subtask_id: str, where: str, tip: str | None) -> str | None:
    """The subtask's restore point: its earliest start checkpoint still an ancestor of the tip."""
    if tip is None:
        return None
    for cp in await store.checkpoints(session_id):  # type: ignore[attr-defined]
        if cp.subtask_id == subtask_id and cp.at == START and cp.commit \
                and await wt.is_ancestor(where, cp.commit, tip):
            return str(cp.commit)
    return None


class Worktrees(SupervisorBase):
    # ------------------------------------------------------------------ making and finding it

    def _use_workspace(self, tree: wt.Worktree) -> None:
        tree = dataclasses.replace(tree, workspace=os.path.normpath(tree.workspace))  # ("pkg/" -> "pkg")
        self._wt = tree
        self.task = dataclasses.replace(self.task, workspace=Path(tree.workspace))

    def _worktree_event(self, action: str, reason: str = "") -> WorktreeChanged:
        tree = self._wt
        assert tree is not None
        return WorktreeChanged(action=action, path=tree.path, branch=tree.branch, origin=self._wt_origin,
                               repo=self._wt_repo, workspace=tree.workspace, base_commit=tree.base_commit,
                               base_branch=tree.base_branch, reason=reason)

    async def _open_worktree(self) -> str:
        """A new session's worktree (before session.started): "" when made (or not asked
        for), else git's one line. core.worktree.create leaves no branch behind."""
        if self.task.isolation != "worktree":
            return ""
        try:
            info = await wt.repo_info(self.task.workspace)
            tree = await wt.create(info, self.session_id, wt.worktree_dir(info, self.session_id).parent)
        except wt.GitError as e:
            return f"cannot make the session's worktree: {e}"
        self._wt_origin, self._wt_repo = info.toplevel, info.common_dir
        self._use_workspace(tree)
        return ""

    async def _reopen_worktree(self) -> str:
        """A resumed worktree session: reuse its worktree, or recreate it from its branch;
        clear the dead runner's git locks, record checkpoints a crash kept out of the
        record, and redo a restore it interrupted. "" or why it cannot go on."""
        row = await self.store.worktree(self.session_id)
        if row is None:
            return ('no worktree is recorded for this session (isolation = "worktree")'
                    if self.task.isolation == "worktree" else "")
        if row.state != "active":
            return f"its worktree was {row.state}"
        self._wt_origin, self._wt_repo = row.origin, row.repo
        where = _where(row)
        try:
            tree, action = await wt.reopen(wt.worktree_from_row(row), where, self.session_id)
        except wt.GitError as e:
            return str(e)
        self._use_workspace(tree)
        why = [] if action == "reused" else ["its directory was gone: checked out again from the branch tip; "
                                             "work not in a checkpoint was lost"]
        removed = wt.clear_stale_locks(tree, row.repo)
        if removed:
            why.append("removed stale git locks: " + ", ".join(os.path.basename(p) for p in removed))
        await self._emit(self._worktree_event(action, "; ".join(why)))
        try:
            await self._lost_checkpoints(where, tree)
            await self._redo_restore()
        except wt.GitError as e:
            return str(e)
        return ""

    async def _lost_checkpoints(self, where: str, tree: wt.Worktree) -> None:
        """Checkpoint commits of this session (by their trailers) no stored event names: a
        crash came between the commit and its event. Recorded now."""
        stored = {cp.commit for cp in await self.store.checkpoints(self.session_id)}
        last_start: dict[str, str] = {}
        for c in await wt.session_commits(where, tree.base_commit, tree.branch, self.session_id):
            if c.at == START:
                last_start[c.subtask_id] = c.commit
            if c.commit in stored or c.at not in (START, DONE):
                continue
            files: list[dict[str, object]] = []
            more = 0
            if c.at == DONE and c.subtask_id in last_start:
                from shepherd.core.worktree_diff import file_changes_for_event

                files, more = file_changes_for_event(await wt.diff(where, last_start[c.subtask_id], c.commit))
            await self._emit(Checkpoint(subtask_id=c.subtask_id, commit=c.commit, at=c.at, files=files,
                                        files_more=more, reason="found in git on resume: its event was lost"))

    async def _redo_restore(self) -> None:
        """A clean restore its runner did not finish (a restore checkpoint, no start
        checkpoint of that subtask after it): reset again, and run it (and the later
        subtasks that had run) as the clean retry it was."""
        cps = await self.store.checkpoints(self.session_id)
        last = next((cp for cp in reversed(cps) if cp.at == RESTORE), None)
        if last is None or any(cp.at == START and cp.subtask_id == last.subtask_id and cp.seq > last.seq
                               for cp in cps):
            return
        assert self._wt is not None
        await wt.restore(self._wt, last.commit)
        self._requeue_clean(str(last.subtask_id))

    # ------------------------------------------------------------------ checkpoints

    async def _commit(self, run: SubtaskRun, at: str) -> str:
        assert self._wt is not None
        return await wt.checkpoint(self._wt, wt.checkpoint_message(self.session_id, run.sub.id, at, run.sub.title))

    async def _checkpoint_start(self, run: SubtaskRun) -> str:
        """The subtask's start as a commit (its restore point): "" or git's line."""
        if self._wt is None:
            return ""
        try:
            commit = await self._commit(run, START)
        except wt.GitError as e:
            return f"checkpoint failed: {e}"
        await self._emit(self._sub_event(Checkpoint(commit=commit, at=START), run))
        return ""

    async def _checkpoint_done(self, run: SubtaskRun) -> Event | None:
        """The done subtask's files as a commit, its event committed before subtask.finished.
        A failure is an error event to store with it (the subtask stays done)."""
        if self._wt is None:
            return None
        try:
            commit = await self._commit(run, DONE)
            where = self._wt.path
            start = await _start_of(self.store, self.session_id, run.sub.id, where, commit)
            from shepherd.core.worktree_diff import file_changes_for_event

            files, more = file_changes_for_event(await wt.diff(where, start, commit)) if start else ([], 0)
        except wt.GitError as e:
            log.warning("done checkpoint of %s failed: %s", run.sub.id, e)
            return self._sub_event(Error(session_id=self.session_id, kind="unknown",
                                         message=f"checkpoint failed: {e}"), run)
        await self._emit(self._sub_event(Checkpoint(commit=commit, at=DONE, files=files, files_more=more), run))
        return None

    # ------------------------------------------------------------------ a clean retry

    async def _clean_refusal(self, sid: str | None) -> str:
        """Why a clean retry of ``sid`` is refused ("" when it may go ahead)."""
        if sid is None:
            return ""
        if self._wt is None:
            return 'this session has no worktree (isolation = "worktree"): a clean retry needs one'
        tip = await wt.branch_commit(self._wt.path, self._wt.branch)
        if await _start_of(self.store, self.session_id, sid, self._wt.path, tip) is None:
            return f"subtask {sid} has not started in this worktree: nothing to restore"
        return ""

    async def _restore_clean(self, sid: str) -> list[str]:
        """Restore the worktree to ``sid``'s start (between attempts: nothing streams) and mark
        it and the later subtasks that had run to run again, fresh. Returns those later ones
        (plan order); raises GitError."""
        self._clean_asked.discard(sid)
        assert self._wt is not None
        tip = await wt.branch_commit(self._wt.path, self._wt.branch)
        target = await _start_of(self.store, self.session_id, sid, self._wt.path, tip)
        if target is None:
            raise wt.GitError(f"subtask {sid} has no start checkpoint on {self._wt.branch}")
        await self._emit(Checkpoint(subtask_id=sid, commit=target, at=RESTORE, reason="a person's clean retry"))
        await wt.restore(self._wt, target)
        return self._requeue_clean(sid)

    async def _clean_first(self) -> str:
        """resume_run(retry_subtask=X, clean=True): X's files restored before anything runs
        (and X and the later subtasks that had run taken out of the done ones). "" or why not."""
        if self._clean_on_start is None:
            return ""
        sid, self._clean_on_start = self._clean_on_start, None
        await self._emit(Control(command=Command.RETRY, source="cli", subtask_id=sid, clean=True))
        try:
            await self._restore_clean(sid)
        except wt.GitError as e:
            return f"clean retry of {sid} failed: {e}"
        self._rerun.clear()  # (the run's queue is built from what is not done)
        return ""

    async def _restore_asked(self, sid: str) -> None:
        """A clean retry of a finished subtask, taken between two subtasks."""
        try:
            await self._restore_clean(sid)
        except wt.GitError as e:
            await self._emit(Error(subtask_id=sid, kind="unknown", message=f"clean retry failed: {e}"))

    def _requeue_clean(self, sid: str) -> list[str]:
        ids = [s.id for s in self.subtasks]
        later = [s for s in ids[ids.index(sid) + 1:] if s in self._done_subtasks or s in self._started_subtasks] \
            if sid in ids else []
        for s in [sid, *later]:
            self._done_subtasks.discard(s)
            self._fresh.add(s)
        self._rerun.extend(s for s in [sid, *later] if s not in self._rerun)
        return later

    async def _clean_restart(self, run: SubtaskRun) -> str:
        """A clean retry of the subtask being run (restarted, or answered while stuck): its
        files back to its start, a fresh start checkpoint, a fresh conversation. "" or why not."""
        try:
            await self._restore_clean(run.sub.id)
        except wt.GitError as e:
            await self._emit(self._sub_event(Error(kind="unknown", message=f"clean retry failed: {e}"), run))
            return str(e)
        self._fresh.discard(run.sub.id)
        self._rerun = [s for s in self._rerun if s != run.sub.id]
        run.clean = True
        return await self._checkpoint_start(run)


__all__ = ["WorktreeRefused", "Worktrees", "check_resume", "clean_attempt"]
