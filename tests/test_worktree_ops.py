"""core.worktree_ops on real repositories: merge (clean, --keep, conflicting, refused on a
dirty checkout, a detached start, another branch, a live runner), discard (twice) and prune."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shepherd.core import worktree as wt
from shepherd.core.store import Store
from shepherd.core.worktree_ops import OpsError, discard, merge, prune
from tests.worktree_helpers import branches, made_session, make_repo, sh, user_state


@pytest.fixture(autouse=True)
def _worktrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "wt"
    monkeypatch.setenv("SHEPHERD_WORKTREES", str(root))
    return root


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "s.db")
    yield s
    await s.close()


def _merge_head(repo: Path) -> bool:
    return (repo / ".git" / "MERGE_HEAD").exists()


async def test_merge_makes_a_merge_commit_and_removes_worktree_and_branch(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "new\n"}, "two": {"a.txt": "a2\n"}},
                              root=tmp_path / "wt")
    res = await merge(store, made.session_id)
    assert sh(repo, "rev-parse", "HEAD").strip() == res.commit and res.into == "main"
    parents = sh(repo, "log", "-1", "--format=%P").split()
    assert len(parents) == 2 and parents[1] == made.commits["two"][1]
    assert sh(repo, "log", "-1", "--format=%s").startswith(f"shepherd: merge session {made.session_id} — made by hand")
    assert (repo / "new.txt").read_text() == "new\n" and (repo / "a.txt").read_text() == "a2\n"
    assert sh(repo, "status", "--porcelain") == ""
    assert not os.path.exists(made.worktree.path) and branches(repo) == []
    row = await store.worktree(made.session_id)
    assert row.state == "merged" and row.commit == res.commit
    assert await store.lease_owner(made.session_id) is None  # the lease taken for the merge is given back
    with pytest.raises(OpsError, match="was merged: nothing to merge"):
        await merge(store, made.session_id)


async def test_merge_keep_leaves_worktree_and_branch(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "new\n"}}, root=tmp_path / "wt")
    await merge(store, made.session_id, keep=True)
    assert (repo / "new.txt").exists()
    assert os.path.isdir(made.worktree.path) and branches(repo) == [made.worktree.branch]
    assert (await store.worktree(made.session_id)).state == "merged"


async def test_merge_takes_a_final_checkpoint_of_uncommitted_work(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "new\n"}}, root=tmp_path / "wt")
    Path(made.worktree.path, "late.txt").write_text("after the last checkpoint\n")
    res = await merge(store, made.session_id)
    assert res.final_checkpoint and (repo / "late.txt").read_text() == "after the last checkpoint\n"
    last = (await store.checkpoints(made.session_id))[-1]
    assert (last.at, last.subtask_id, last.reason, last.commit) == \
        ("subtask_done", None, "final, before merge", res.final_checkpoint)
    assert [f["path"] for f in last.files] == ["late.txt"]


async def test_conflicting_merge_refuses_and_leaves_main_as_it_was(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"a.txt": "theirs\n", "keep.txt": "x\n"}}, root=tmp_path / "wt")
    (repo / "a.txt").write_text("mine\n")
    (repo / "keep.txt").write_text("mine too\n")
    sh(repo, "commit", "-qam", "user's own change")
    before = user_state(repo)
    with pytest.raises(OpsError) as info:
        await merge(store, made.session_id)
    msg = str(info.value)
    assert "\n" not in msg and "conflicts in a.txt, keep.txt" in msg and f"git merge {made.worktree.branch}" in msg
    assert user_state(repo) == before and not _merge_head(repo)
    assert (await store.worktree(made.session_id)).state == "active" and branches(repo) == [made.worktree.branch]


async def test_merge_refuses_a_dirty_checkout(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "n\n"}}, root=tmp_path / "wt")
    (repo / "keep.txt").write_text("edited, not committed\n")
    before = user_state(repo)
    with pytest.raises(OpsError, match="uncommitted changes: commit or stash them first"):
        await merge(store, made.session_id)
    assert user_state(repo) == before
    (repo / "keep.txt").write_text("one\ntwo\nthree\nfour\n")
    (repo / "untracked.txt").write_text("untracked files do not count\n")
    await merge(store, made.session_id)
    assert (repo / "new.txt").exists()


async def test_merge_refuses_another_branch_and_a_detached_start(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "n\n"}}, root=tmp_path / "wt")
    sh(repo, "switch", "-q", "-c", "feature")
    with pytest.raises(OpsError, match="is on feature, not on main .*git switch main first"):
        await merge(store, made.session_id)
    sh(repo, "switch", "-q", "main")
    sh(repo, "checkout", "-q", "--detach")
    detached = await made_session(store, repo, {"one": {"d.txt": "d\n"}}, root=tmp_path / "wt")
    with pytest.raises(OpsError, match=r"detached HEAD \([0-9a-f]{7}\).*git merge shepherd/"):
        await merge(store, detached.session_id)


async def test_merge_and_discard_refuse_while_a_runner_holds_the_lease(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "n\n"}}, root=tmp_path / "wt", running="one")
    runner = await Store.open(tmp_path / "s.db")
    try:
        await runner.acquire_lease(made.session_id)
        before = user_state(repo)
        for op in (merge, discard):
            with pytest.raises(OpsError, match="is running .*shepherd cancel"):
                await op(store, made.session_id)
        assert user_state(repo) == before and os.path.isdir(made.worktree.path)
    finally:
        await runner.close()


async def test_discard_twice(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "n\n"}}, root=tmp_path / "wt")
    Path(made.worktree.path, "dirty.txt").write_text("uncommitted\n")  # dirty and locked: still goes
    before = user_state(repo)
    assert await discard(store, made.session_id) is True
    assert not os.path.exists(made.worktree.path) and branches(repo) == []
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert (await store.worktree(made.session_id)).state == "discarded"
    assert await discard(store, made.session_id) is False
    assert user_state(repo) == before


async def test_a_session_that_is_not_a_worktree_session_is_refused(store, tmp_path: Path):
    from shepherd.core.events import SessionStarted

    await store.append(SessionStarted(session_id="plain1", title="t", backend="scripted", workspace=str(tmp_path)))
    with pytest.raises(OpsError, match="did not run in a worktree"):
        await discard(store, "plain1")


async def test_prune_keeps_active_and_foreign_work_and_removes_the_rest(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    active = await made_session(store, repo, {"one": {"a1.txt": "1\n"}}, root=tmp_path / "wt" / "r")
    kept = await made_session(store, repo, {"one": {"k.txt": "k\n"}}, root=tmp_path / "wt" / "r")
    await merge(store, kept.session_id, keep=True)  # merged, worktree kept: prune takes it
    info = await wt.repo_info(repo)
    empty = await wt.create(info, "foreign-empty", tmp_path / "wt" / "r")     # another db's, nothing in it
    busy = await wt.create(info, "foreign-busy", tmp_path / "wt" / "r")       # another db's, with a commit
    await wt.checkpoint(busy, "shepherd: subtask_start x")
    fresh = await wt.create(info, "foreign-fresh", tmp_path / "wt" / "r")     # maybe being made right now
    old = os.stat(empty.path).st_mtime - 3600
    os.utime(empty.path, (old, old))
    os.utime(busy.path, (old, old))
    report = await prune(store)
    assert not os.path.exists(kept.worktree.path) and not os.path.exists(empty.path)
    for still in (active.worktree.path, busy.path, fresh.path):
        assert os.path.isdir(still)
    assert sorted(branches(repo)) == sorted([active.worktree.branch, busy.branch, fresh.branch])
    assert len(report.removed) == 2 and any("foreign-fresh" in k and "old" in k for k in report.kept)
    assert any("foreign-busy" in k and "commit(s) of its own" in k for k in report.kept)


async def test_discard_after_the_repository_moved_refuses_then_works_after_repair(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "n\n"}}, root=tmp_path / "wt")
    moved = tmp_path / "elsewhere"
    repo.rename(moved)  # the recorded checkout and git dir are gone: git cannot reach the worktree
    with pytest.raises(OpsError, match="gone or moved.*git worktree repair"):
        await discard(store, made.session_id)
    assert Path(made.worktree.path, "new.txt").exists()  # the agent's files were not deleted blindly
    repo_back = moved.rename(repo)  # moved back (or repaired): the discard goes through
    assert await discard(store, made.session_id) is True
    assert not os.path.exists(made.worktree.path) and branches(repo_back) == []


async def test_a_record_naming_another_branch_is_never_acted_on(store, tmp_path: Path):
    from dataclasses import asdict

    from shepherd.core.events import WorktreeChanged

    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"new.txt": "n\n"}}, root=tmp_path / "wt")
    row = await store.worktree(made.session_id)
    ident = {k: v for k, v in asdict(row).items() if k in ("path", "origin", "repo", "workspace", "base_commit",
                                                           "base_branch")}
    await store.append(WorktreeChanged(session_id=made.session_id, action="reused", branch="main", **ident))
    before = user_state(repo)
    for op in (merge, discard):
        with pytest.raises(OpsError, match="names the branch 'main'"):
            await op(store, made.session_id)
    assert user_state(repo) == before and sh(repo, "branch", "--list", "main").strip()


async def test_a_hostile_title_reaches_no_commit_message_raw(store, tmp_path: Path):
    """`git log` pages through `less -R`: a title's escape sequence must not ride along."""
    repo = make_repo(tmp_path / "repo")
    hostile = "Fix \x1b[31mred\x1b[0m \x1b]52;c;aGk=\x07 now\u202e"
    made = await made_session(store, repo, {"one": {"x.txt": "x\n"}}, root=tmp_path / "wt", title=hostile)
    await merge(store, made.session_id)
    log = sh(repo, "log", "--format=%B", "-1")
    assert "Fix" in log and "\x1b" not in log and "\x07" not in log and "\u202e" not in log
    msg = wt.checkpoint_message(made.session_id, "one", "subtask_start", hostile)
    assert "\x1b" not in msg and "\x07" not in msg and "\u202e" not in msg
