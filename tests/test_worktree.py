"""core/worktree.py against real git repositories in tmp_path (no mocks)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from shepherd.core.worktree import (GitError, Worktree, checkpoint, create, diff, patch, remove,
                                    repo_info, restore)
from tests.worktree_helpers import branches, init, make_repo, sh, user_state


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


async def test_lifecycle_leaves_dirty_user_checkout_untouched(repo: Path, tmp_path: Path):
    (repo / "a.txt").write_text("user edit\n")
    (repo / "staged.txt").write_text("staged\n")
    sh(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("u\n")
    before = user_state(repo)
    assert "A  staged.txt" in sh(repo, "status", "--porcelain")

    info = await repo_info(repo / "pkg" / "sub")
    assert info.toplevel == os.path.realpath(repo)
    assert info.prefix == "pkg/sub/"
    assert info.head_branch == "main"
    assert info.common_dir == os.path.realpath(repo / ".git")
    wt = await create(info, "s1", tmp_path / "wts")
    assert wt.branch == "shepherd/s1" and wt.base_branch == "main"
    assert wt.base_commit == sh(repo, "rev-parse", "HEAD").strip()
    assert wt.workspace == os.path.join(wt.path, "pkg", "sub")  # no trailing slash: compared as a path
    w = Path(wt.path)
    # a clean copy of HEAD: none of the user's dirty/staged/untracked files
    assert (w / "a.txt").read_text() == "a\n"
    assert not (w / "staged.txt").exists() and not (w / "untracked.txt").exists()
    assert sh(w, "status", "--porcelain") == ""
    assert "locked" in sh(repo, "worktree", "list", "--porcelain")

    (w / "new.txt").write_text("n\n")
    c1 = await checkpoint(wt, "shepherd: checkpoint done s1")
    assert sh(w, "log", "-1", "--format=%an <%ae>|%s", c1).strip() == \
        "Shepherd <shepherd@localhost>|shepherd: checkpoint done s1"
    await restore(wt, wt.base_commit)
    assert not (w / "new.txt").exists()
    assert user_state(repo) == before
    await remove(wt)
    assert not w.exists()
    assert branches(repo) == []
    assert user_state(repo) == before


async def test_a_cancelled_git_call_ends_with_what_it_started(repo: Path, tmp_path: Path) -> None:
    """A git call cancelled (the session shut down) does not run on, nor does what git
    started (here an editor that never returns): before, only its timeout killed git."""
    from shepherd.core.worktree import git
    from tests.test_tools import _alive, _wait_for_file, _wait_gone

    editor = tmp_path / "editor.sh"
    editor.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'editor.pid'}\nexec sleep 300\n")
    editor.chmod(0o755)
    call = asyncio.create_task(git(repo, "-c", f"core.editor={editor}", "commit", "--allow-empty"))
    pid = int(await _wait_for_file(tmp_path / "editor.pid"))
    assert _alive(pid)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 10)  # at once: not after the editor's 300 s
    assert await _wait_gone(pid), f"git's editor {pid} survived the cancel"


async def test_env_git_variables_do_not_leak(repo: Path, tmp_path: Path, monkeypatch):
    wt = await create(await repo_info(repo), "env1", tmp_path / "wts")
    before = user_state(repo)
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo / ".git" / "index"))
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    (Path(wt.path) / "leak.txt").write_text("leak\n")
    c = await checkpoint(wt, "cp")
    assert "leak.txt" in sh(wt.path, "ls-tree", "--name-only", c)
    assert sh(repo, "rev-parse", "HEAD").strip() == wt.base_commit
    assert user_state(repo) == before
    assert "leak.txt" not in sh(repo, "ls-files")


async def test_checkpoint_ignores_hooks_and_gpgsign(repo: Path, tmp_path: Path):
    hooks = repo / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    marker = tmp_path / "HOOK-RAN"
    for name in ("pre-commit", "post-commit", "commit-msg"):
        (hooks / name).write_text(f"#!/bin/sh\necho ran > {marker}\nexit 1\n")
        (hooks / name).chmod(0o755)
    sh(repo, "config", "commit.gpgsign", "true")
    sh(repo, "config", "gpg.program", "/bin/false")
    wt = await create(await repo_info(repo), "hk", tmp_path / "wts")
    (Path(wt.path) / "x.txt").write_text("x\n")
    c1 = await checkpoint(wt, "one")
    c2 = await checkpoint(wt, "two")  # nothing changed: still a new commit
    assert c1 != c2
    assert sh(wt.path, "rev-parse", "HEAD").strip() == c2
    assert not marker.exists()


async def test_restore_start_state_keeps_shepherd_and_ignored(repo: Path, tmp_path: Path):
    wt = await create(await repo_info(repo), "rs", tmp_path / "wts")
    w = Path(wt.path)
    (w / ".shepherd").mkdir()
    (w / ".shepherd" / "PAUSE").write_text("p")
    (w / "node_modules").mkdir()
    (w / "node_modules" / "dep.js").write_text("d")
    start = await checkpoint(wt, "start")
    assert ".shepherd" not in sh(w, "ls-tree", "-r", "--name-only", start)
    assert "node_modules/dep.js" not in sh(w, "ls-tree", "-r", "--name-only", start)
    (w / "a.txt").write_text("changed\n")
    (w / "gone.txt").unlink()
    (w / "new.txt").write_text("new\n")
    (w / "newdir").mkdir()
    (w / "newdir" / "f").write_text("f")
    await checkpoint(wt, "done")
    (w / "later.txt").write_text("uncommitted\n")
    await restore(wt, start)
    assert (w / "a.txt").read_text() == "a\n"
    assert (w / "gone.txt").read_text() == "bye\n"
    assert not (w / "new.txt").exists() and not (w / "newdir").exists()
    assert not (w / "later.txt").exists()
    assert (w / ".shepherd" / "PAUSE").read_text() == "p"
    assert (w / "node_modules" / "dep.js").exists()
    assert sh(w, "rev-parse", "HEAD").strip() == start
    assert sh(w, "symbolic-ref", "HEAD").strip() == "refs/heads/shepherd/rs"


async def test_destructive_calls_refuse_a_wrong_worktree(repo: Path, tmp_path: Path):
    wt = await create(await repo_info(repo), "vf", tmp_path / "wts")
    sh(wt.path, "checkout", "-q", "-b", "agent-branch")
    with pytest.raises(GitError, match="not on shepherd/vf"):
        await checkpoint(wt, "x")
    # a Worktree record pointing at the user's checkout (the §1.6 trap) is refused
    fake = Worktree(str(repo / "pkg"), "shepherd/vf", wt.base_commit, "main", str(repo / "pkg"))
    (repo / "a.txt").write_text("precious\n")
    with pytest.raises(GitError):
        await restore(fake, wt.base_commit)
    assert (repo / "a.txt").read_text() == "precious\n"


async def test_diff_rename_binary_delete_space_newline_unicode(repo: Path, tmp_path: Path):
    wt = await create(await repo_info(repo), "df", tmp_path / "wts")
    w = Path(wt.path)
    (w / "keep.txt").rename(w / "kept.txt")
    with (w / "kept.txt").open("a") as f:
        f.write("five\n")
    (w / "blob.bin").write_bytes(bytes(range(256)) * 40)
    (w / "gone.txt").unlink()
    (w / "with space.txt").write_text("s\n")
    (w / "new\nline.txt").write_text("1\n2\n")
    (w / "ünï.txt").write_text("u\n")
    (w / "a.txt").write_text("a\nb\n")
    head = await checkpoint(wt, "done")
    files = {f.path: f for f in await diff(wt, wt.base_commit, head)}
    assert set(files) == {"kept.txt", "blob.bin", "gone.txt", "with space.txt", "new\nline.txt",
                          "ünï.txt", "a.txt"}
    k = files["kept.txt"]
    assert (k.status, k.old_path, k.added, k.deleted, k.binary) == ("R", "keep.txt", 1, 0, False)
    b = files["blob.bin"]
    assert (b.status, b.added, b.deleted, b.binary) == ("A", None, None, True)
    g = files["gone.txt"]
    assert (g.status, g.added, g.deleted, g.old_path) == ("D", 0, 1, None)
    assert (files["new\nline.txt"].status, files["new\nline.txt"].added) == ("A", 2)
    assert files["with space.txt"].added == 1
    assert (files["a.txt"].status, files["a.txt"].added, files["a.txt"].deleted) == ("M", 1, 0)
    # from the user's repository too (commits are shared)
    assert len(await diff(str(repo), wt.base_commit, head)) == 7
    p = await patch(wt, wt.base_commit, head, "kept.txt", "keep.txt")
    assert "rename from keep.txt" in p and "+five" in p
    assert "Binary files" in await patch(wt, wt.base_commit, head, "blob.bin")
    assert "+s" in await patch(wt, wt.base_commit, head, "with space.txt")


async def test_refusals(tmp_path: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match="not in a git repository"):
        await repo_info(plain)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    with pytest.raises(GitError, match="bare"):
        await repo_info(bare)
    empty = init(tmp_path / "empty")
    with pytest.raises(GitError, match="no commit yet"):
        await repo_info(empty)
    with pytest.raises(GitError, match="not a directory"):
        await repo_info(tmp_path / "missing")


async def test_path_exists_leaves_no_branch(repo: Path, tmp_path: Path):
    root = tmp_path / "wts"
    (root / "taken").mkdir(parents=True)
    (root / "taken" / "f").write_text("x")
    with pytest.raises(GitError) as exc:
        await create(await repo_info(repo), "taken", root)
    assert "already exists" in str(exc.value) and "\n" not in str(exc.value)
    assert branches(repo) == []
    assert (root / "taken" / "f").read_text() == "x"


async def test_existing_branch_refused_and_kept(repo: Path, tmp_path: Path):
    sh(repo, "branch", "shepherd/dup")
    with pytest.raises(GitError, match="already exists"):
        await create(await repo_info(repo), "dup", tmp_path / "wts")
    assert branches(repo) == ["shepherd/dup"]


async def test_detached_head(repo: Path, tmp_path: Path):
    sh(repo, "checkout", "-q", "--detach")
    info = await repo_info(repo)
    assert info.head_branch is None
    wt = await create(info, "det", tmp_path / "wts")
    assert wt.base_branch is None and wt.workspace == wt.path


async def test_two_creates_at_once(repo: Path, tmp_path: Path):
    info = await repo_info(repo)
    a, b = await asyncio.gather(create(info, "c1", tmp_path / "wts"),
                                create(info, "c2", tmp_path / "wts"))
    (Path(a.path) / "mine.txt").write_text("1")
    (Path(b.path) / "mine.txt").write_text("2")
    ca, cb = await asyncio.gather(checkpoint(a, "a"), checkpoint(b, "b"))
    assert sh(repo, "show", f"{ca}:mine.txt") == "1"
    assert sh(repo, "show", f"{cb}:mine.txt") == "2"
    assert sorted(branches(repo)) == ["shepherd/c1", "shepherd/c2"]
    await asyncio.gather(remove(a), remove(b))
    assert branches(repo) == []
    assert sh(repo, "status", "--porcelain") == ""
