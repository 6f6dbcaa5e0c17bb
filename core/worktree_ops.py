"""Keep or drop a worktree session's work: ``merge`` its branch into the branch it came
from, ``discard`` its worktree and branch, ``prune`` worktrees nobody will come back to.

Every git call goes through ``core.worktree.git``. The only command that ever writes to
the user's own checkout is the ``git merge`` at the end of :func:`merge`, after every
check passed (branch, clean checkout, no conflict by ``merge-tree``). While a merge or a
discard works, this process holds the session's lease: a runner cannot start on it
half-way, and one that holds it makes both refuse. Design: docs/next/worktrees.md §2.8.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepherd.core import worktree as wt
from shepherd.core.events import Checkpoint, WorktreeChanged
from shepherd.core.records import record
from shepherd.core.text import clip, safe

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.store.rows import WorktreeRow

LOCK_PREFIX = "shepherd session "
PRUNE_MIN_AGE_S = 600.0  # an unknown session's worktree younger than this may be one being made right now
_LEASE_TTL_S = 300.0


class OpsError(Exception):
    """A merge/discard/prune refused or failed; ``str()`` is one terminal-safe line that says
    what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(safe(" ".join(message.split())))


@record(frozen=True)
class MergeResult:
    commit: str            # the merge commit on base_branch
    into: str              # base_branch
    kept: bool             # the worktree and branch are still there (--keep)
    final_checkpoint: str | None  # the commit of the final checkpoint taken first, if any


@record
class PruneReport:
    removed: list[str] = field(default_factory=list)   # one line each: what went
    kept: list[str] = field(default_factory=list)      # one line each: what stayed, and why


def _git_errors_are_ours(fn: Any) -> Any:
    """A git failure inside an operation surfaces as OpsError (its one safe line)."""
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except wt.GitError as exc:
            raise OpsError(f"git failed: {exc}") from None
    return wrapper


def _identity(row: "WorktreeRow") -> dict[str, object]:
    return dict(path=row.path, branch=row.branch, origin=row.origin, repo=row.repo, workspace=row.workspace,
                base_commit=row.base_commit, base_branch=row.base_branch)


async def _row(store: "EventStore", sid: str) -> "WorktreeRow":
    row = await store.worktree(sid)
    if row is None:
        raise OpsError(f'session {sid} did not run in a worktree (isolation = "worktree"): nothing to merge or discard')
    if row.branch != wt.BRANCH_PREFIX + sid:  # a database from elsewhere could name any branch ("main")
        raise OpsError(f"session {sid}'s record names the branch {row.branch!r}, not {wt.BRANCH_PREFIX}{sid}: "
                       "not touching it")
    return row


class _Held:
    """The session's lease for the length of the operation (LeaseHeld: its runner is live)."""

    def __init__(self, store: "EventStore", sid: str, verb: str) -> None:
        self.store, self.sid, self.verb = store, sid, verb

    async def __aenter__(self) -> "_Held":
        from shepherd.core.store import LeaseHeld

        try:
            await self.store.acquire_lease(self.sid, ttl_s=_LEASE_TTL_S)
        except LeaseHeld:
            raise OpsError(f"session {self.sid} is running (a runner holds it): cannot {self.verb} it now; "
                           f"stop it first (shepherd cancel {self.sid}) or wait for it to end") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.release_lease(self.sid)


def _where(row: "WorktreeRow") -> str:
    """Somewhere git can reach the repository from: the user's checkout, else the folder of
    its git dir (a worktree's own .git points into that git dir: no help when it is gone)."""
    for place in (row.origin, str(Path(row.repo).parent) if row.repo else ""):
        if place and os.path.isdir(place) and os.path.isdir(row.repo or place):
            return place
    raise OpsError(f"session {row.session_id}: its repository {row.origin} is gone or moved; from where it is "
                   f"now: git worktree repair {row.path}")


async def _branch_tip(where: str, branch: str) -> str | None:
    rc, out = await wt.git(where, "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}", check=False)
    return out.decode().strip() if rc == 0 else None


async def _worktree_dirty(path: str) -> bool:
    """Changes in the worktree since its last commit (untracked files too; never .shepherd/)."""
    _, out = await wt.git(path, "status", "--porcelain", "--", ".", ":(exclude).shepherd")
    return bool(out.strip())


def _is_worktree(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ".git"))


async def _final_checkpoint(store: "EventStore", row: "WorktreeRow") -> str | None:
    """A checkpoint of what the agent left after the last one (a failed or cancelled
    subtask's files), so the merge carries the worktree as it is. None: nothing new."""
    if not _is_worktree(row.path) or not await _worktree_dirty(row.path):
        return None
    tree = wt.worktree_from_row(row)
    tip = await _branch_tip(row.path, row.branch)
    msg = (f"shepherd: final checkpoint before merge\n\nShepherd-Session: {row.session_id}\n"
           "Shepherd-At: subtask_done\n")
    try:
        commit = await wt.checkpoint(tree, msg)
        changes = await wt.diff(tree, tip or row.base_commit, commit)
    except wt.GitError as exc:
        raise OpsError(f"cannot take the final checkpoint of {row.path}: {exc}") from None
    from shepherd.core.worktree_diff import file_changes_for_event

    files, more = file_changes_for_event(changes)
    await store.append(Checkpoint(session_id=row.session_id, subtask_id=None, commit=commit, at="subtask_done",
                                  files=files, files_more=more, reason="final, before merge"))
    return commit


@_git_errors_are_ours
async def merge(store: "EventStore", sid: str, *, keep: bool = False) -> MergeResult:
    """Merge ``shepherd/<sid>`` into the branch the session started from, in the user's
    checkout; then (unless ``keep``) remove the worktree and the branch. Every refusal is
    an OpsError with what to do; a refusal leaves the user's checkout as it was."""
    row = await _row(store, sid)
    async with _Held(store, sid, "merge"):
        row = await _row(store, sid)  # as of now that nobody else can change it
        if not row.active:
            raise OpsError(f"session {sid}'s worktree was {row.state}: nothing to merge")
        branch = row.branch
        if row.base_branch is None:
            raise OpsError(f"session {sid} started from a detached HEAD ({row.base_commit[:7]}): there is no branch "
                           f"to merge into; git merge {branch} where you want it")
        origin = row.origin
        if not origin or not os.path.isdir(origin):
            raise OpsError(f"session {sid}: the checkout it came from ({origin}) is gone; "
                           f"git merge {branch} where you want it")
        rc, ref = await wt.git(origin, "symbolic-ref", "-q", "HEAD", check=False)
        on = ref.decode("utf-8", "replace").strip().removeprefix("refs/heads/") if rc == 0 else None
        if on != row.base_branch:
            where = f"on {on}" if on else "on a detached HEAD"
            raise OpsError(f"your checkout {origin} is {where}, not on {row.base_branch} (where session {sid} "
                           f"started): git switch {row.base_branch} first")
        _, dirty = await wt.git(origin, "status", "--porcelain", "--untracked-files=no")
        if dirty.strip():
            raise OpsError(f"your checkout {origin} has uncommitted changes: commit or stash them first, "
                           f"then shepherd merge {sid}")
        if await _branch_tip(origin, branch) is None:
            raise OpsError(f"session {sid}: its branch {branch} was deleted; nothing to merge "
                           f"(shepherd discard {sid} forgets the worktree)")
        final = await _final_checkpoint(store, row)
        tip = await _branch_tip(origin, branch)
        assert tip is not None
        if await wt.is_ancestor(origin, tip, f"refs/heads/{row.base_branch}"):
            raise OpsError(f"{branch} has nothing that {row.base_branch} does not have already: nothing to merge "
                           f"(shepherd discard {sid} removes the worktree)")
        rc, out = await wt.git(origin, "merge-tree", "--write-tree", "--name-only", "--no-messages",
                               f"refs/heads/{row.base_branch}", f"refs/heads/{branch}", check=False)
        if rc == 1:
            paths = [p for p in out.decode("utf-8", "replace").splitlines()[1:] if p]
            shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
            raise OpsError(f"merging {branch} into {row.base_branch} conflicts in {shown or 'some files'}: "
                           f"resolve by hand: git merge {branch}")
        if rc != 0:
            raise OpsError(f"git merge-tree failed (exit {rc}); git merge {branch} by hand")
        row_title = await _title(store, sid)
        msg = f"shepherd: merge session {sid}" + (f" — {clip(wt.commit_text(row_title), 100)}" if row_title else "")
        rc, _ = await wt.git(origin, "merge", "--no-ff", "--no-edit", "-q", "-m", msg, f"refs/heads/{branch}",
                             check=False)
        if rc != 0:
            await wt.git(origin, "merge", "--abort", check=False)
            raise OpsError(f"git merge of {branch} into {row.base_branch} failed and was undone; "
                           f"resolve by hand: git merge {branch}")
        commit = (await wt.git(origin, "rev-parse", "HEAD"))[1].decode().strip()
        if not keep:
            await _remove(row, _where(row))
        await store.append(WorktreeChanged(session_id=sid, action="merged", commit=commit, **_identity(row),
                                           reason="kept the worktree and branch" if keep else ""))
        await store.flush()
    return MergeResult(commit, row.base_branch, keep, final)


async def _title(store: "EventStore", sid: str) -> str:
    s = await store.get_session(sid)
    return " ".join(str(getattr(s, "title", "") or "").split())


async def _remove(row: "WorktreeRow", where: str) -> None:
    """The worktree (locked, dirty, with submodules: -f -f), then the branch, then git's own
    records of worktrees that are gone. Missing pieces are fine."""
    if os.path.exists(row.path):
        rc, _ = await wt.git(where, "worktree", "remove", "--force", "--force", row.path, check=False)
        if rc != 0 and _is_worktree(row.path):
            raise OpsError(f"cannot remove the worktree {row.path} (git worktree remove failed); "
                           f"git worktree remove --force --force {row.path}")
    await wt.git(where, "worktree", "prune", check=False)
    if await _branch_tip(where, row.branch) is not None:
        await wt.git(where, "branch", "-D", row.branch)


@_git_errors_are_ours
async def discard(store: "EventStore", sid: str) -> bool:
    """Remove the session's worktree and delete its branch (its commits go with it, unless
    merged). True if something was discarded; False if it already was (nothing left)."""
    row = await _row(store, sid)
    async with _Held(store, sid, "discard"):
        row = await _row(store, sid)
        try:
            where = _where(row)
        except OpsError:
            if os.path.exists(row.path):  # files of the agent's that git cannot account for: not ours to rm -rf
                raise OpsError(
                    f"session {sid}: its repository {row.origin} is gone or moved, so git cannot remove the "
                    f"worktree {row.path}; from the repository's new place: git worktree repair {row.path}, "
                    f"then shepherd discard {sid} again (or delete the folder by hand)") from None
            where = ""
        present = os.path.exists(row.path) or (bool(where) and await _branch_tip(where, row.branch) is not None)
        if row.state == "discarded" and not present:
            return False
        if where:
            await _remove(row, where)
        await store.append(WorktreeChanged(session_id=sid, action="discarded", **_identity(row),
                                           reason="" if present else "nothing was left to remove"))
        await store.flush()
    return True


# --------------------------------------------------------------------------- prune

@record(frozen=True)
class _Entry:
    path: str
    branch: str | None   # "shepherd/<sid>"
    locked: str | None   # the lock reason
    prunable: bool


async def _entries(where: str) -> list[_Entry]:
    _, out = await wt.git(where, "worktree", "list", "--porcelain", "-z")
    found: list[_Entry] = []
    for block in out.decode("utf-8", "surrogateescape").split("\0\0"):
        fields = [f for f in block.split("\0") if f]
        if not fields or not fields[0].startswith("worktree "):
            continue
        path = fields[0].removeprefix("worktree ")
        branch = locked = None
        prunable = False
        for f in fields[1:]:
            if f.startswith("branch "):
                branch = f.removeprefix("branch refs/heads/")
            elif f == "locked" or f.startswith("locked "):
                locked = f.removeprefix("locked").strip()
            elif f.startswith("prunable"):
                prunable = True
        found.append(_Entry(path, branch, locked, prunable))
    return found


def _repos_under_root() -> dict[str, str]:
    """common dir -> a place to run git from, for every worktree folder under worktrees_root()."""
    repos: dict[str, str] = {}
    root = wt.worktrees_root()
    if not root.is_dir():
        return repos
    for repo_dir in sorted(root.iterdir()):
        if not repo_dir.is_dir():
            continue
        for tree in sorted(repo_dir.iterdir()):
            dot_git = tree / ".git"
            try:
                line = dot_git.read_text("utf-8", "surrogateescape").strip()
            except OSError:
                continue
            gitdir = line.removeprefix("gitdir:").strip()
            common = Path(gitdir).parent.parent  # <common>/worktrees/<name>
            if (common / "HEAD").is_file():
                top = common.parent if common.name == ".git" else common
                repos.setdefault(os.path.realpath(common), str(top))
    return repos


async def _own_commits(where: str, branch: str) -> int:
    """Commits reachable from ``branch`` and from no other branch: the work deleting it loses."""
    _, out = await wt.git(where, "for-each-ref", "--format=%(refname)", "refs/heads/")
    others = [r for r in out.decode("utf-8", "surrogateescape").split() if r != f"refs/heads/{branch}"]
    _, out = await wt.git(where, "rev-list", "--count", f"refs/heads/{branch}", "--not", *others, "--")
    return int(out.strip() or 0)


@_git_errors_are_ours
async def prune(store: "EventStore", *, min_age_s: float = PRUNE_MIN_AGE_S, now: float | None = None) -> PruneReport:
    """Remove worktrees (under worktrees_root(), locked "shepherd session <sid>") that nobody
    will come back to. The rule, since a lock reason does not say which database made it:

    - the session is in this store and its row says discarded or merged: the worktree goes
      (the person said so; what a merge --keep kept goes here), and its branch too unless
      it holds commits no other branch has (after a merge, the base branch has them);
    - the session is not in this store: it may belong to another database (another
      $SHEPHERD_DB), so it goes only when there is nothing to lose: no uncommitted change,
      no commit of its own on its branch, and older than ``min_age_s`` (one being made
      right now has not written its session.started yet);
    - every other one (an active row, whatever its runner) is never touched.
    Then ``git worktree prune`` in each repository (git's records of deleted folders)."""
    report = PruneReport()
    now = time.time() if now is None else now
    repos = _repos_under_root()
    for row in await store.worktrees():
        if row.repo and os.path.isdir(row.repo):
            top = Path(row.repo).parent if Path(row.repo).name == ".git" else Path(row.repo)
            repos.setdefault(os.path.realpath(row.repo), str(top))
    root = os.path.realpath(wt.worktrees_root())
    for common, where in sorted(repos.items()):
        try:
            entries = await _entries(where)
        except wt.GitError as exc:
            report.kept.append(safe(f"{where}: cannot list worktrees: {exc}"))
            continue
        for e in entries:
            if not (e.locked or "").startswith(LOCK_PREFIX):
                continue
            if not os.path.realpath(e.path).startswith(root + os.sep):
                continue
            words = (e.locked or "").removeprefix(LOCK_PREFIX).split()  # "<sid>" (later maybe "<sid> db <tag>")
            sid = words[0] if words else ""
            if not sid or e.branch != wt.BRANCH_PREFIX + sid:
                report.kept.append(safe(f"{e.path}: its lock names {e.locked!r} but it is on {e.branch}: kept"))
                continue
            line = await _prune_one(store, where, e, sid, now, min_age_s)
            (report.removed if line.startswith("removed") else report.kept).append(safe(line))
        await wt.git(where, "worktree", "prune", check=False)
    return report


async def _prune_one(store: "EventStore", where: str, e: _Entry, sid: str, now: float, min_age_s: float) -> str:
    row = await store.worktree(sid)
    known = row is not None or await store.get_session(sid) is not None
    if known and row is None:
        return f"{sid}: a session of this database without a worktree record: kept ({e.path})"
    if known and row.state == "active":
        return f"{sid}: active in this database: kept ({e.path})"
    if known:
        assert row is not None
        if row.state not in ("discarded", "merged"):
            return f"{sid}: {row.state}: kept ({e.path})"
        lost = await _own_commits(where, e.branch or "")
    else:
        if os.path.isdir(e.path) and await _worktree_dirty(e.path):
            return f"{sid}: not in this database and has uncommitted changes: kept ({e.path})"
        lost = await _own_commits(where, e.branch or "")
        if lost:
            return f"{sid}: not in this database and its branch has {lost} commit(s) of its own: kept ({e.path})"
        try:
            age = now - os.stat(e.path).st_mtime
        except OSError:
            age = min_age_s
        if age < min_age_s:
            return f"{sid}: not in this database but only {age:.0f} s old (maybe being made): kept ({e.path})"
    rc, _ = await wt.git(where, "worktree", "remove", "--force", "--force", e.path, check=False)
    if rc != 0 and os.path.isdir(e.path):
        return f"{sid}: git worktree remove failed: kept ({e.path})"
    if lost:
        return f"removed {e.path} ({sid}); kept its branch {e.branch}: {lost} commit(s) no other branch has"
    await wt.git(where, "branch", "-D", e.branch or "", check=False)
    return f"removed {e.path} and its branch {e.branch} ({sid})"


__all__ = ["MergeResult", "OpsError", "PruneReport", "discard", "merge", "prune"]
