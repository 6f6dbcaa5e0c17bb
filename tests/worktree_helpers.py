"""Real git repositories for the worktree tests: a repository with a .gitignore, a
sub-directory and a binary file; the user's checkout's whole state as one hash; and a
worktree session made by hand (its worktree, checkpoints and events) for the tests of
what reads it (diff, merge, discard, the TUI) without running the engine."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shepherd.core import worktree as wt
from shepherd.core.events import Checkpoint, PlanReady, SessionFinished, SessionStarted, SubtaskFinished, \
    SubtaskStarted, WorktreeChanged, new_session_id
from shepherd.core.worktree_diff import file_changes_for_event


def sh(cwd: Path | str, *args: str, env: dict | None = None) -> str:
    """git in ``cwd`` as the user would run it (their own identity, no GIT_* inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    clean |= {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "LC_ALL": "C"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True, env=env or clean).stdout


def init(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    sh(path, "init", "-q", "-b", "main")
    sh(path, "config", "user.name", "u")
    sh(path, "config", "user.email", "u@x")
    return path


def make_repo(path: Path) -> Path:
    """A repository on ``main`` with one commit: text files, a sub-directory, a .gitignore."""
    r = init(path)
    (r / "a.txt").write_text("a\n")
    (r / "keep.txt").write_text("one\ntwo\nthree\nfour\n")
    (r / "gone.txt").write_text("bye\n")
    (r / "pkg" / "sub").mkdir(parents=True)
    (r / "pkg" / "sub" / "m.py").write_text("x = 1\n")
    (r / ".gitignore").write_text("*.log\nnode_modules/\n")
    sh(r, "add", "-A")
    sh(r, "commit", "-q", "-m", "base")
    return r


def user_state(r: Path) -> str:
    """HEAD, branch, index, status and every file's bytes of the user's checkout."""
    h = hashlib.sha256()
    for args in (("rev-parse", "HEAD"), ("symbolic-ref", "HEAD"), ("ls-files", "-s"),
                 ("status", "--porcelain", "--ignored"), ("stash", "list")):
        h.update(sh(r, *args).encode())
    for p in sorted(r.rglob("*")):
        if ".git" in p.relative_to(r).parts or not p.is_file():
            continue
        h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def branches(r: Path) -> list[str]:
    return sh(r, "branch", "--list", "shepherd/*", "--format=%(refname:short)").split()


@dataclass
class MadeSession:
    session_id: str
    worktree: wt.Worktree
    info: wt.RepoInfo
    commits: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # subtask -> (start, done)


async def made_session(store: Any, repo: Path, subtasks: dict[str, dict[str, str | None]], *,
                       root: Path, status: str = "done", running: str | None = None,
                       session_id: str | None = None, title: str = "made by hand") -> MadeSession:
    """A finished (or, with ``running``, live) worktree session written as the engine
    writes one: a worktree of ``repo``, then per subtask a start checkpoint, its file
    changes (``{path: text, or None to delete}``) and a done checkpoint with its files.
    The subtask named ``running`` gets its start checkpoint and changes but no end."""
    sid = session_id or new_session_id()
    info = await wt.repo_info(repo)
    tree = await wt.create(info, sid, root)
    base = dict(path=tree.path, branch=tree.branch, origin=info.toplevel, repo=info.common_dir,
                workspace=tree.workspace, base_commit=tree.base_commit, base_branch=tree.base_branch)
    await store.append(SessionStarted(session_id=sid, title=title, backend="scripted",
                                      workspace=tree.workspace, task={"isolation": "worktree"}))
    await store.append(WorktreeChanged(session_id=sid, action="created", **base))
    await store.append(PlanReady(session_id=sid, subtasks=[{"id": s, "title": s, "prompt": "p"} for s in subtasks]))
    made = MadeSession(sid, tree, info)
    for sub, changes in subtasks.items():
        await store.append(SubtaskStarted(session_id=sid, subtask_id=sub, title=sub))
        start = await wt.checkpoint(tree, f"shepherd: subtask_start {sub}")
        await store.append(Checkpoint(session_id=sid, subtask_id=sub, commit=start, at="subtask_start"))
        for rel, text in changes.items():
            p = Path(tree.path) / rel
            if text is None:
                p.unlink()
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
        if sub == running:
            made.commits[sub] = (start, None)
            return made
        done = await wt.checkpoint(tree, f"shepherd: subtask_done {sub}")
        files, more = file_changes_for_event(await wt.diff(tree, start, done))
        await store.append(Checkpoint(session_id=sid, subtask_id=sub, commit=done, at="subtask_done",
                                      files=files, files_more=more))
        await store.append(SubtaskFinished(session_id=sid, subtask_id=sub, attempt=1, status="done"))
        made.commits[sub] = (start, done)
    await store.append(SessionFinished(session_id=sid, status=status))
    return made
