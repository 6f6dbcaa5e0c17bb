"""core.worktree_diff on real repositories: a session's and a subtask's diff, live and
finished, and after its commits are gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from shepherd.core import worktree as wt
from shepherd.core.store import Store
from shepherd.core.worktree_diff import NoWorktree, load_patch, session_diff, with_patches
from tests.worktree_helpers import made_session, make_repo, sh, user_state


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "s.db")
    yield s
    await s.close()


async def test_diff_per_subtask_and_for_the_session(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    before = user_state(repo)
    made = await made_session(store, repo, {
        "one": {"new.txt": "new\n", "a.txt": "a changed\n"},
        "two": {"gone.txt": None, "pkg/sub/m.py": "x = 2\n"},
    }, root=tmp_path / "wt")
    one = await session_diff(store, made.session_id, "one")
    assert sorted((f.path, f.status) for f in one.files) == [("a.txt", "M"), ("new.txt", "A")]
    assert (one.base, one.head) == made.commits["one"] and not one.live
    two = await session_diff(store, made.session_id, "two")
    assert sorted((f.path, f.status) for f in two.files) == [("gone.txt", "D"), ("pkg/sub/m.py", "M")]
    whole = await with_patches(store, await session_diff(store, made.session_id))
    assert {f.path for f in whole.files} == {"a.txt", "new.txt", "gone.txt", "pkg/sub/m.py"}
    patch = next(f.patch for f in whole.files if f.path == "a.txt")
    assert "-a\n+a changed\n" in patch
    assert user_state(repo) == before  # reading the diff touched nothing of the user's


async def test_a_running_subtask_diffs_against_the_live_worktree(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"x.txt": "x\n"}, "two": {"y.txt": "y\n"}},
                              root=tmp_path / "wt", running="two")
    index_before = sh(made.worktree.path, "ls-files", "-s")
    d = await session_diff(store, made.session_id, "two")
    assert d.live and [f.path for f in d.files] == ["y.txt"]
    assert sh(made.worktree.path, "ls-files", "-s") == index_before  # the snapshot moved no index
    assert "y.txt" in sh(made.worktree.path, "status", "--porcelain")


async def test_a_discarded_session_keeps_its_file_list(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"x.txt": "x\n"}}, root=tmp_path / "wt")
    await wt.remove(made.worktree, str(repo))
    sh(repo, "reflog", "expire", "--expire=now", "--all")
    sh(repo, "gc", "-q", "--prune=now")
    from shepherd.core.events import WorktreeChanged

    row = await store.worktree(made.session_id)
    await store.append(WorktreeChanged(session_id=made.session_id, action="discarded", path=row.path,
                                       branch=row.branch, origin=row.origin, repo=row.repo,
                                       workspace=row.workspace, base_commit=row.base_commit,
                                       base_branch=row.base_branch))
    d = await session_diff(store, made.session_id, "one")
    assert [f.path for f in d.files] == ["x.txt"] and not d.available
    assert "discarded" in (await load_patch(store, d, d.files[0])).patch


async def test_a_session_without_a_worktree_is_refused_in_one_line(store):
    from shepherd.core.events import SessionStarted

    await store.append(SessionStarted(session_id="plain", title="t", backend="scripted"))
    with pytest.raises(NoWorktree) as e:
        await session_diff(store, "plain")
    assert "\n" not in str(e.value) and "worktree" in str(e.value)


async def test_the_worktrees_row_follows_the_latest_event(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"x.txt": "x\n"}}, root=tmp_path / "wt")
    row = await store.worktree(made.session_id)
    assert row.active and row.branch == f"shepherd/{made.session_id}" and row.origin == str(repo.resolve())
    assert [r.session_id for r in await store.worktrees(state="active")] == [made.session_id]
    cps = await store.checkpoints(made.session_id)
    assert [c.at for c in cps] == ["subtask_start", "subtask_done"]
    assert cps[1].files == [{"path": "x.txt", "old_path": None, "status": "A", "added": 1, "deleted": 0,
                             "binary": False}]


async def test_a_finished_sessions_diff_includes_later_changes_but_is_not_live(store, tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"x.txt": "x\n"}}, root=tmp_path / "wt")
    (Path(made.worktree.path) / "after.txt").write_text("made after the end\n")
    d = await session_diff(store, made.session_id)
    assert sorted(f.path for f in d.files) == ["after.txt", "x.txt"]  # what a merge would take
    assert not d.live  # nothing runs it: the screen must not call it live


async def test_the_tuis_export_carries_the_changes(store, tmp_path: Path):
    from shepherd.tui.screens.session_export import export_session

    repo = make_repo(tmp_path / "repo")
    made = await made_session(store, repo, {"one": {"x.txt": "the x line\n"}}, root=tmp_path / "wt")
    text = (await export_session(store, made.session_id, tmp_path)).read_text()
    assert "## Changes" in text and "+the x line" in text
