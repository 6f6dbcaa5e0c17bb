"""Resuming a worktree session whose runner was SIGKILLed (a real headless runner in a child
process): the same worktree and branch are reused (a stale index.lock / branch lock of
that worktree removed, the dead attempt's uncommitted files kept), a worktree whose
directory went missing is checked out again from its branch, a checkpoint commit whose
event the crash lost is recorded, and a deleted branch is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from shepherd.core import worktree as wt
from shepherd.core.engine import resume_run
from shepherd.core.engine.worktrees import WorktreeRefused
from shepherd.core.store import Store
from tests.cli_helpers import write_task
from tests.engine_helpers import FAST, kill_headless_run_mid_tool, stored
from tests.worktree_helpers import branches, make_repo, sh, user_state

STEP = ("if [ -f wip.txt ]; then echo resumed > res.txt; else echo partial > wip.txt; sleep 60; fi")


@pytest.fixture(autouse=True)
def _worktrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "wt"
    monkeypatch.setenv("SHEPHERD_WORKTREES", str(root))
    return root


def killed(tmp_path: Path) -> tuple[Path, Path, str]:
    """A worktree session SIGKILLed while its shell step runs (wip.txt written). (db, repo, before)"""
    repo = make_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("the user's edit\n")
    before = user_state(repo)
    task, _ = write_task(tmp_path, f'''isolation = "worktree"
[[subtasks]]
id = "one"
prompt = "work"
  [[subtasks.steps]]
  tools = [{{ name = "run_command", args = {{ command = "{STEP}" }} }}]
''', title="killed", backend="scripted")
    task.write_text(task.read_text().replace(f'workspace = "{tmp_path / "ws"}"', f'workspace = "{repo}"'))
    db = tmp_path / "s.db"
    kill_headless_run_mid_tool(task, db, ready=lambda: any((tmp_path / "wt").glob("*/*/wip.txt")))
    return db, repo, before


async def test_a_killed_runner_is_resumed_in_the_same_worktree_with_its_stale_locks_removed(tmp_path: Path) -> None:
    db, repo, before = killed(tmp_path)
    store = await Store.open(db)
    try:
        sid = (await store.list_sessions())[0].id
        row = await store.worktree(sid)
        w = Path(row.path)
        gitdir = Path(wt.git_dir_of(wt.worktree_from_row(row)))
        assert gitdir == Path(row.repo) / "worktrees" / sid
        planted = [gitdir / "index.lock", Path(row.repo) / "refs" / "heads" / "shepherd" / f"{sid}.lock"]
        for p in planted:
            p.write_text("")
        user_lock = Path(row.repo) / "index.lock"  # the user's own: never ours to remove
        user_lock.write_text("")
        handle = await resume_run(store, sid, interactive=False, clock=FAST)
        assert await handle.task == "done"
        user_lock.unlink()
        assert user_state(repo) == before
        assert not any(p.exists() for p in planted)
        assert (w / "wip.txt").read_text() == "partial\n" and (w / "res.txt").read_text() == "resumed\n"
        events = await stored(store, sid, "worktree")
        assert [(e.action, e.path, e.branch) for e in events] == [("created", str(w), f"shepherd/{sid}"),
                                                                  ("reused", str(w), f"shepherd/{sid}")]
        assert "index.lock" in events[1].reason and f"{sid}.lock" in events[1].reason
        cps = [(c.at, c.subtask_id) for c in await stored(store, sid, "checkpoint")]
        assert cps == [("subtask_start", "one"), ("subtask_done", "one")]  # no second start on a resume
        assert branches(repo) == [f"shepherd/{sid}"]
        assert sh(repo, "ls-tree", "--name-only", f"shepherd/{sid}").split().count("wip.txt") == 1
    finally:
        await store.close()


async def test_a_missing_worktree_is_recreated_from_its_branch_and_a_lost_checkpoint_recorded(tmp_path: Path) -> None:
    db, repo, before = killed(tmp_path)
    store = await Store.open(db)
    try:
        sid = (await store.list_sessions())[0].id
        row = await store.worktree(sid)
        tree = wt.worktree_from_row(row)
        # a checkpoint committed whose event the crash lost, then the directory deleted
        lost = await wt.checkpoint(tree, wt.checkpoint_message(sid, "one", "subtask_start", "again"))
        import shutil

        shutil.rmtree(tree.path)
        handle = await resume_run(store, sid, interactive=False, clock=FAST)
        assert await handle.task == "done"
        assert user_state(repo) == before
        ev = (await stored(store, sid, "worktree"))[-1]
        assert ev.action == "recreated" and "lost" in ev.reason and ev.path == tree.path
        assert (Path(tree.path) / "wip.txt").read_text() == "partial\n"  # it was in the lost checkpoint
        found = [c for c in await stored(store, sid, "checkpoint") if c.commit == lost]
        assert len(found) == 1 and found[0].subtask_id == "one" and "lost" in found[0].reason
        assert "shepherd session" in sh(repo, "worktree", "list", "--porcelain")  # born locked again
    finally:
        await store.close()


async def test_a_deleted_branch_is_refused_in_one_line(tmp_path: Path) -> None:
    db, repo, _ = killed(tmp_path)
    store = await Store.open(db)
    try:
        sid = (await store.list_sessions())[0].id
        row = await store.worktree(sid)
        sh(repo, "worktree", "remove", "-f", "-f", row.path)
        sh(repo, "branch", "-D", f"shepherd/{sid}")
        with pytest.raises(WorktreeRefused, match=f"its branch shepherd/{sid} was deleted"):
            await resume_run(store, sid, interactive=False, clock=FAST)
    finally:
        await store.close()


async def test_a_restore_its_runner_did_not_finish_is_redone_on_resume(tmp_path: Path) -> None:
    """The runner died between the restore checkpoint's event and the reset: the resume
    resets again and runs that subtask as the clean retry it was."""
    from shepherd.core.engine import Supervisor
    from shepherd.core.events import Checkpoint
    from tests.engine_helpers import make_task

    repo = make_repo(tmp_path / "repo")
    task = make_task(repo, [
        {"id": "one", "prompt": "p", "steps": [{"tools": [{"name": "write_file", "args": {"path": "one.txt", "content": "1"}}]}]},
        {"id": "two", "prompt": "p", "steps": [
            {"tools": [{"name": "run_command", "args": {"command": "test -f junk.txt && echo again > second.txt; "
                                                                   "echo junk > junk.txt"}}]},
            {"fail": "auth"}]},
    ], isolation="worktree")
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, task, clock=FAST, interactive=False)
        assert await sup.run() == "failed"
        sid = sup.session_id
        w = Path((await store.worktree(sid)).path)
        assert (w / "junk.txt").exists()
        start = [c.commit for c in await stored(store, sid, "checkpoint") if c.subtask_id == "two"][0]
        await store.append(Checkpoint(session_id=sid, subtask_id="two", commit=start, at="restore"))
        handle = await resume_run(store, sid, interactive=False, clock=FAST)
        assert await handle.task == "failed"  # (two fails again, after it ran on the restored files)
        assert not (w / "second.txt").exists() and (w / "one.txt").exists()
        attempts = [(a.subtask_id, a.reason) for a in await stored(store, sid, "attempt.started")]
        assert attempts == [("one", "first"), ("two", "first"), ("two", "user_retry")]
    finally:
        await store.close()
