"""What a worktree session changed: the one diff the CLI (``shepherd diff``), the TUI's diff
view and the exports all show.

A session's diff runs from its base commit to its head; a subtask's from its start
checkpoint to its done checkpoint. Which start: the *earliest* ``checkpoint(at=
subtask_start)`` of the subtask whose commit is still an ancestor of the session's tip
(a clean retry moves the branch back, so the older generation drops out; after a retry
that kept the files, the first start still holds the subtask's whole change). A subtask
still running, or a session whose worktree is live, ends at a snapshot of the worktree
as it is now (``core.worktree.snapshot_tree``: moves nothing). When the commits are gone
(the worktree and branch were discarded and git collected them), the file list comes
from the subtask_done checkpoints' ``files`` and there is no patch.

Git runs in the user's checkout (``origin``), which shares the worktree's objects; the
worktree's own path when the checkout is gone. Every text is terminal-safe.
"""

from __future__ import annotations

import os
from dataclasses import asdict, field, replace
from typing import TYPE_CHECKING, Any

from shepherd.core import worktree as wt
from shepherd.core.records import record
from shepherd.core.states import LIVE_STATUSES
from shepherd.core.text import safe

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.store.rows import WorktreeRow

MAX_FILES = 2000
MAX_PATCH_BYTES = 1_000_000
DISCARDED = "not available: the session's worktree was discarded and its commits are gone"


class NoWorktree(Exception):
    """The session did not run in a worktree (or is unknown); ``str()`` is one line."""


@record(frozen=True)
class FileDiff:
    path: str
    old_path: str | None
    status: str  # A M D R C T
    added: int | None  # None: binary
    deleted: int | None
    binary: bool
    patch: str | None = None  # loaded on request (``with_patches`` / ``load_patch``)


@record(frozen=True)
class Diff:
    session_id: str
    subtask_id: str | None  # None: the whole session
    base: str | None  # commit ids (or a snapshot tree id for a live head); None when unknown
    head: str | None
    live: bool  # head is the worktree as it is now
    files: list[FileDiff] = field(default_factory=list)
    truncated: bool = False  # more than MAX_FILES files
    note: str = ""  # why there is no patch, or anything unusual, one line

    @property
    def available(self) -> bool:
        """Patches can be loaded (the commits exist)."""
        return self.base is not None and self.head is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _where(row: "WorktreeRow") -> str:
    for place in (row.origin, row.path):
        if place and os.path.isdir(place):
            return place
    raise NoWorktree(safe(f"session {row.session_id}: neither its checkout {row.origin} nor its worktree "
                          f"{row.path} exists any more"))


def _live(row: "WorktreeRow") -> bool:
    return row.active and os.path.isfile(os.path.join(row.path, ".git"))


def _from_events(files: list[dict[str, Any]]) -> list[FileDiff]:
    return [FileDiff(path=str(f.get("path", "")), old_path=f.get("old_path"), status=str(f.get("status", "M")),
                     added=f.get("added"), deleted=f.get("deleted"), binary=bool(f.get("binary")))
            for f in files]


async def _tip(row: "WorktreeRow", where: str, checkpoints: list[Any]) -> str | None:
    """The session's newest commit: its branch's tip, else (merged or discarded) the last
    checkpoint commit that still exists."""
    rc, out = await wt.git(where, "rev-parse", "-q", "--verify", f"refs/heads/{row.branch}^{{commit}}", check=False)
    if rc == 0:
        return out.decode().strip()
    for cp in reversed(checkpoints):
        if cp.at != "restore" and cp.commit and await wt.commit_exists(where, cp.commit):
            return str(cp.commit)
    return None


async def subtask_range(row: "WorktreeRow", where: str, checkpoints: list[Any], subtask_id: str,
                        tip: str | None) -> tuple[str | None, str | None]:
    """(start, done) commits of ``subtask_id`` under the ancestor rule; done is None while
    it has not ended done since that start."""
    if tip is None:
        return None, None
    start: str | None = None
    start_seq = 0
    for cp in checkpoints:
        if cp.subtask_id == subtask_id and cp.at == "subtask_start" and cp.commit \
                and await wt.is_ancestor(where, cp.commit, tip):
            start, start_seq = str(cp.commit), cp.seq
            break
    if start is None:
        return None, None
    done: str | None = None
    for cp in checkpoints:
        if cp.subtask_id == subtask_id and cp.at == "subtask_done" and cp.seq > start_seq and cp.commit \
                and await wt.is_ancestor(where, cp.commit, tip):
            done = str(cp.commit)  # the latest one
    return start, done


async def session_diff(store: "EventStore", session_id: str, subtask_id: str | None = None) -> Diff:
    """The file list (no patches) of what the session, or one of its subtasks, changed."""
    row = await store.worktree(session_id)
    if row is None:
        raise NoWorktree(safe(f'session {session_id} did not run in a worktree (isolation = "worktree")'))
    checkpoints = await store.checkpoints(session_id)
    done_files = [cp for cp in checkpoints if cp.at == "subtask_done" and
                  (subtask_id is None or cp.subtask_id == subtask_id)]
    try:
        where = _where(row)
        tip = await _tip(row, where, checkpoints)
    except (NoWorktree, wt.GitError) as exc:
        where, tip = "", None
        gone_note = str(exc)
    else:
        gone_note = DISCARDED
    live = _live(row)
    if subtask_id is None:
        base: str | None = row.base_commit if tip is not None else None
        head = tip
    else:
        base, head = await subtask_range(row, where, checkpoints, subtask_id, tip) if tip else (None, None)
        if base is not None and head is None and not live:
            head = tip  # it never ended done: up to the session's last commit
        elif base is not None and head is not None:
            live = False
    if base is not None and live and (head is None or head == tip):
        # the worktree as it is now: what a merge would take (it checkpoints it first); "live"
        # only while a runner may still change it
        head = await wt.snapshot_tree(wt.worktree_from_row(row))
        session = await store.get_session(session_id)
        live = session is not None and session.status in LIVE_STATUSES
    else:
        live = False
    if base is None or head is None:
        files = [f for cp in done_files for f in _from_events(cp.files)]
        note = gone_note if row.state != "active" or not where else \
            (f"subtask {subtask_id} has not started in this worktree" if subtask_id else "")
        return Diff(session_id, subtask_id, None, None, False, files[:MAX_FILES], len(files) > MAX_FILES, note)
    changes = await wt.diff(where, base, head)
    files = [FileDiff(c.path, c.old_path, c.status, c.added, c.deleted, c.binary) for c in changes]
    return Diff(session_id, subtask_id, base, head, live, files[:MAX_FILES], len(files) > MAX_FILES)


async def load_patch(store: "EventStore", d: Diff, f: FileDiff) -> FileDiff:
    """``f`` with its unified diff (capped at MAX_PATCH_BYTES), or a one-line note."""
    if not d.available:
        return replace(f, patch=d.note or DISCARDED)
    row = await store.worktree(d.session_id)
    if row is None:
        return replace(f, patch=DISCARDED)
    text = await wt.patch(_where(row), str(d.base), str(d.head), f.path, f.old_path)
    if len(text.encode("utf-8", "replace")) > MAX_PATCH_BYTES:
        text = text.encode("utf-8", "replace")[:MAX_PATCH_BYTES].decode("utf-8", "ignore")
        text = text[:text.rfind("\n") + 1] + f"… (cut at {MAX_PATCH_BYTES // 1000} kB)\n"
    return replace(f, patch=text)


async def with_patches(store: "EventStore", d: Diff) -> Diff:
    """``d`` with every file's patch loaded (for the CLI and the exports)."""
    return replace(d, files=[await load_patch(store, d, f) for f in d.files])


def file_changes_for_event(changes: list[wt.FileChange]) -> tuple[list[dict[str, Any]], int]:
    """A subtask_done checkpoint's ``files`` and ``files_more`` (core.events.CHECKPOINT_FILES_MAX)."""
    from shepherd.core.events import CHECKPOINT_FILES_MAX

    listed = [asdict(c) for c in changes[:CHECKPOINT_FILES_MAX]]
    return listed, max(0, len(changes) - CHECKPOINT_FILES_MAX)


__all__ = ["DISCARDED", "Diff", "FileDiff", "MAX_FILES", "MAX_PATCH_BYTES", "NoWorktree", "file_changes_for_event",
           "load_patch", "session_diff", "subtask_range", "with_patches"]
