"""The worktree subcommands as real processes on real repositories: `shepherd diff` (raw,
--stat, --json; hostile names and contents), merge, discard, worktrees [--prune], the
refusals of `run --worktree` and `--clean`, `sessions --json`, show and the exports, and
`shepherd run a.toml b.toml` side by side."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from shepherd.core.store import Store
from tests.cli_helpers import run, write_task
from tests.worktree_helpers import branches, made_session, make_repo, sh, user_state

HOSTILE_NAME = "evil\x1b]0;pwned\x07\x1b[31m.txt"
HOSTILE_TEXT = "red \x1b[31mRED\x1b[0m bell\x07 csi\x9b2J cr\rover\n"
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture(autouse=True)
def _worktrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "wt"
    monkeypatch.setenv("SHEPHERD_WORKTREES", str(root))  # the subprocesses inherit it
    return root


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


async def _made(tmp_path: Path, subtasks: dict, **kw):
    db = tmp_path / "s.db"
    store = await Store.open(db)
    try:
        made = await made_session(store, kw.pop("repo", None) or make_repo(tmp_path / "repo"), subtasks,
                                  root=tmp_path / "wt" / "r", **kw)
    finally:
        await store.close()
    return db, made


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


async def test_diff_per_subtask_and_for_the_session(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {"new.txt": "new\n", "a.txt": "a changed\n"},
                                      "two": {"gone.txt": None}})
    sid = made.session_id
    one = _ok(run("diff", sid[:6], "one", "--db", str(db))).stdout
    assert "+++ b/new.txt" in one and "-a\n+a changed" in one and "gone.txt" not in one
    # the output is a patch git itself accepts: applied to the base it gives the subtask's files
    check = tmp_path / "check.patch"
    check.write_text(one)
    sh(made.worktree.path, "apply", "--check", "-R", str(check))
    whole = _ok(run("diff", sid, "--db", str(db))).stdout
    assert "deleted file mode" in whole and "+++ b/new.txt" in whole
    stat = _ok(run("diff", sid, "--stat", "--db", str(db))).stdout.splitlines()
    assert stat[-1] == " 3 files changed, +2 -2" and any(ln.startswith(" D gone.txt") for ln in stat)
    doc = json.loads(_ok(run("diff", sid, "two", "--json", "--db", str(db))).stdout)
    assert doc["subtask_id"] == "two" and [(f["path"], f["status"]) for f in doc["files"]] == [("gone.txt", "D")]
    assert doc["files"][0]["patch"].startswith("diff --git")


async def test_diff_bad_input_is_one_line(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {"x.txt": "x\n"}})
    assert "no subtask 'nope'" in one_line_error(run("diff", made.session_id, "nope", "--db", str(db)))
    assert "no session" in one_line_error(run("diff", "zzzz", "--db", str(db))).lower()
    task, _ = write_task(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "p"\n  [[subtasks.steps]]\n  text = "hi"\n',
                         backend="scripted", name="plain.toml")
    _ok(run("run", str(task), "--headless", "--db", str(db)))
    plain = [json.loads(ln) for ln in run("sessions", "--json", "--db", str(db)).stdout.splitlines()]
    plain_id = next(r["id"] for r in plain if r["worktree"] is None)
    for argv in (["diff", plain_id], ["merge", plain_id], ["discard", plain_id]):
        assert "did not run in a worktree" in one_line_error(run(*argv, "--db", str(db)))
    assert "--clean: session" in one_line_error(run("resume", plain_id, "--retry", "a", "--clean", "--headless",
                                                    "--db", str(db)))
    assert "--clean goes with --retry" in one_line_error(run("resume", made.session_id, "--clean", "--db", str(db)))


async def test_hostile_names_and_contents_never_reach_the_terminal_raw(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {HOSTILE_NAME: HOSTILE_TEXT, "a.txt": HOSTILE_TEXT}})
    sid = made.session_id
    outputs = {
        "diff": _ok(run("diff", sid, "--db", str(db))).stdout,
        "stat": _ok(run("diff", sid, "one", "--stat", "--db", str(db))).stdout,
        "json": _ok(run("diff", sid, "--json", "--db", str(db))).stdout,
        "show": _ok(run("show", sid, "--db", str(db))).stdout,
        "md": _ok(run("export", sid, "--format", "md", "--db", str(db))).stdout,
        "jsonl": _ok(run("export", sid, "--format", "jsonl", "--db", str(db))).stdout,
        "worktrees": _ok(run("worktrees", "--db", str(db))).stdout,
    }
    for name, out in outputs.items():
        assert RAW_CONTROLS.search(out.replace("\n", "").replace("\t", "")) is None, (name, out[:400])
    assert "red ␛[31mRED" not in outputs["diff"] and "+red RED␛[0m" not in outputs["diff"]
    assert "bell␇" in outputs["diff"] and "\\x9b2J" in outputs["diff"]  # shown, not acted on
    doc = json.loads(outputs["json"])
    assert HOSTILE_NAME in {f["path"] for f in doc["files"]}  # exact in JSON, escaped on the way


async def test_merge_clean_via_the_cli(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {"new.txt": "new\n"}})
    repo = tmp_path / "repo"
    proc = _ok(run("merge", made.session_id[:8], "--db", str(db)))
    assert "merged session" in proc.stderr and "into main" in proc.stderr
    assert (repo / "new.txt").exists() and len(sh(repo, "log", "-1", "--format=%P").split()) == 2
    assert branches(repo) == [] and not os.path.exists(made.worktree.path)
    assert "was merged: nothing to merge" in one_line_error(run("merge", made.session_id, "--db", str(db)))
    (row,) = [json.loads(ln) for ln in run("worktrees", "--json", "--db", str(db)).stdout.splitlines()]
    assert row["state"] == "merged" and row["commit"] == sh(repo, "rev-parse", "HEAD").strip()


async def test_merge_refusals_via_the_cli_leave_the_checkout_alone(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {"a.txt": "theirs\n"}})
    repo = tmp_path / "repo"
    (repo / "a.txt").write_text("mine\n")
    sh(repo, "commit", "-qam", "mine")
    before = user_state(repo)
    line = one_line_error(run("merge", made.session_id, "--db", str(db)))
    assert "conflicts in a.txt" in line and f"git merge shepherd/{made.session_id}" in line
    assert user_state(repo) == before and not (repo / ".git" / "MERGE_HEAD").exists()
    (repo / "keep.txt").write_text("dirty\n")
    assert "commit or stash" in one_line_error(run("merge", made.session_id, "--db", str(db)))
    keep_dir = made.worktree.path
    assert os.path.isdir(keep_dir) and branches(repo) == [made.worktree.branch]


async def test_merge_keep_then_discard_twice(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {"new.txt": "new\n"}})
    repo = tmp_path / "repo"
    assert "kept its worktree" in _ok(run("merge", made.session_id, "--keep", "--db", str(db))).stderr
    assert os.path.isdir(made.worktree.path)
    assert "discarded session" in _ok(run("discard", made.session_id, "--db", str(db))).stderr
    assert not os.path.exists(made.worktree.path) and branches(repo) == []
    assert "already discarded" in _ok(run("discard", made.session_id, "--db", str(db))).stderr
    sh(repo, "reflog", "expire", "--expire=now", "--all")
    sh(repo, "gc", "-q", "--prune=now")  # (the merge kept the commits in main: gone only now)
    sh(repo, "reset", "-q", "--hard", "HEAD~1")
    sh(repo, "reflog", "expire", "--expire=now", "--all")
    sh(repo, "gc", "-q", "--prune=now")
    after = run("diff", made.session_id, "--db", str(db))  # the file list outlives the commits
    assert after.returncode == 0 and after.stdout.splitlines()[0].startswith(" A new.txt")
    assert "not available" in after.stderr


async def test_worktrees_list_sessions_json_and_prune(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {"new.txt": "new\n"}})
    repo = tmp_path / "repo"
    listing = _ok(run("worktrees", "--db", str(db))).stdout.splitlines()
    assert listing == [f"{made.session_id}\tactive\tshepherd/{made.session_id}\t{made.worktree.path}"]
    (row,) = [json.loads(ln) for ln in run("sessions", "--json", "--db", str(db)).stdout.splitlines()]
    assert row["worktree"] == {"path": made.worktree.path, "branch": f"shepherd/{made.session_id}",
                               "state": "active"}
    _ok(run("merge", made.session_id, "--keep", "--db", str(db)))
    proc = _ok(run("worktrees", "--prune", "--db", str(db)))
    assert proc.stdout.startswith("removed ") and "1 removed" in proc.stderr
    assert not os.path.exists(made.worktree.path) and branches(repo) == []


def test_run_worktree_outside_a_repository_is_refused_in_one_line(tmp_path: Path):
    db = tmp_path / "s.db"
    plain = tmp_path / "plain"
    plain.mkdir()
    line = one_line_error(run("run", "-p", "hi", "--backend", "scripted", "--workspace", str(plain), "--worktree",
                              "--headless", "--db", str(db)))
    assert "not inside a git repository" in line
    task, _ = write_task(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "p"\n', backend="scripted")
    line = one_line_error(run("run", str(task), "--worktree", "--headless", "--db", str(db)))
    assert line.startswith("shepherd: --worktree:") and "not inside a git repository" in line
    assert not db.exists()  # refused before anything was made


def test_several_task_files_run_side_by_side(tmp_path: Path):
    db = tmp_path / "s.db"
    step = '[[subtasks]]\nid = "a"\nprompt = "p"\n{check}  [[subtasks.steps]]\n  text = "hi from {n}"\n'
    a, _ = write_task(tmp_path, step.format(n="a", check=""), title="first", backend="scripted", name="a.toml")
    b, _ = write_task(tmp_path, 'max_check_retries = 0\n' + step.format(n="b", check='check = "false"\n'),
                      title="second", backend="scripted", name="b.toml")
    proc = run("run", str(a), str(b), "--headless", "--db", str(db))
    assert proc.returncode == 1, proc.stderr[-3000:]  # the worst of the two: b's check failed
    rows = {r["title"]: r for r in map(json.loads, run("sessions", "--json", "--db", str(db)).stdout.splitlines())}
    assert rows["first"]["status"] == "done" and rows["second"]["status"] == "failed"
    from shepherd.tui.cli_run import short_ids

    short = short_ids([r["id"] for r in rows.values()])
    assert len(set(short.values())) == 2  # made in the same second, yet told apart
    for r in rows.values():  # each line says whose it is
        mine = [ln for ln in proc.stderr.splitlines() if ln.startswith(short[r["id"]] + " ")]
        assert any("session " + r["id"] in ln for ln in mine)
        assert any(("■ session done" if r["title"] == "first" else "■ session failed") in ln for ln in mine)
    both = run("run", str(a), str(a), "--headless", "--db", str(db))
    assert both.returncode == 0, both.stderr[-3000:]
    done = re.findall(r"^(\S+) \S+ ■ session done", both.stderr, re.M)
    assert len(set(done)) == 2  # the same file twice: two sessions, told apart


async def test_exports_and_show_contain_the_changes(tmp_path: Path):
    db, made = await _made(tmp_path, {"one": {"new.txt": "new line\n"}, "two": {"a.txt": "a2\n"}})
    sid = made.session_id
    md = _ok(run("export", sid, "--format", "md", "--db", str(db))).stdout
    assert "## Changes: one" in md and "## Changes: two" in md
    one = md[md.index("## Changes: one"):md.index("## Changes: two")]
    assert "| `new.txt` | A | 1 | 0 |" in one and "```diff\n" in one and "+new line" in one and "a2" not in one
    records = [json.loads(ln) for ln in _ok(run("export", sid, "--format", "jsonl", "--db", str(db))).stdout.splitlines()]
    diffs = [r for r in records if r["type"] == "diff"]
    assert [(d["subtask_id"], [f["path"] for f in d["files"]]) for d in diffs] == [("one", ["new.txt"]),
                                                                                 ("two", ["a.txt"])]
    show = _ok(run("show", sid, "--db", str(db))).stdout
    start, done = made.commits["one"]
    assert f"checkpoint {start[:7]} at the start of one" in show
    assert f"checkpoint {done[:7]} at the end of one: 1 file (+1 -0)" in show
    assert f"worktree {made.worktree.path} on shepherd/{sid}, from main@" in show


def test_a_clean_retry_reads_as_one_in_the_log_and_the_export():
    from shepherd.core.events import Checkpoint, Control
    from shepherd.core.report import LogFormatter, export_markdown

    ctl = Control(session_id="s1", subtask_id="one", command="retry", source="cli", clean=True, seq=5, ts=1.0)
    cp = Checkpoint(session_id="s1", subtask_id="one", commit="a" * 40, at="restore", seq=6, ts=1.0)
    fmt = LogFormatter()
    lines = [ln.plain for ev in (ctl, cp) for ln in fmt.format(ev)]
    assert "☛ retry clean: files restored (from cli)" in lines[0]
    assert "↺ files restored to aaaaaaa (the start of one)" in lines[1]
    from types import SimpleNamespace

    row = SimpleNamespace(id="s1", title="t", status="done", backend="scripted", model=None, workspace="/w",
                          started_at=1.0, retries=0, input_tokens=0, output_tokens=0, cost_usd=None)
    md = "".join(export_markdown(row, [], [ctl, cp]))
    assert "☛ retry (files restored) from cli" in md and "files restored to aaaaaaa" in md


async def test_retry_clean_reaches_a_live_runner_as_a_clean_retry(tmp_path: Path):
    import sqlite3

    from shepherd.core.events import new_session_id

    db, sid = tmp_path / "s.db", new_session_id()
    runner = await Store.open(db)  # stands in for the session's live runner: it holds the lease
    try:
        await runner.acquire_lease(sid)
        made = await made_session(runner, make_repo(tmp_path / "repo"), {"one": {"x.txt": "x\n"}, "two": {}},
                                  root=tmp_path / "wt" / "r", running="two", session_id=sid)
        await runner.flush()
        proc = _ok(run("retry", made.session_id, "one", "--clean", "--db", str(db)))
        assert "retry (clean) sent" in proc.stderr
        _ok(run("resume", made.session_id, "--retry", "two", "--clean", "--db", str(db)))
    finally:
        await runner.close()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT command, subtask_id, text FROM commands ORDER BY id").fetchall()
    assert rows == [("retry", "one", "clean"), ("resume", None, ""), ("retry", "two", "clean")]


def test_end_to_end_run_worktree_diff_clean_retry_merge(tmp_path: Path):
    """With the engine's worktree sessions (skipped until core.engine.worktrees exists):
    a prompt run --worktree, its diff, a clean retry from the CLI, then merge."""
    pytest.importorskip("shepherd.core.engine.worktrees")
    repo = make_repo(tmp_path / "repo")
    db = tmp_path / "s.db"
    body = ('[[subtasks]]\nid = "one"\nprompt = "p"\n  [[subtasks.steps]]\n'
            '  tools = [{ name = "write_file", args = { path = "new.txt", content = "hello\\n" } }]\n'
            '[[subtasks]]\nid = "two"\nprompt = "p"\n  [[subtasks.steps]]\n'
            '  tools = [{ name = "write_file", args = { path = "a.txt", content = "changed\\n" } }]\n')
    task = tmp_path / "t.toml"
    task.write_text(f'title = "e2e"\nbackend = "scripted"\nworkspace = "{repo}"\n' + body)
    before = user_state(repo)
    _ok(run("run", str(task), "--worktree", "--headless", "--db", str(db)))
    assert user_state(repo) == before  # the run never touched the user's checkout
    (row,) = [json.loads(ln) for ln in run("worktrees", "--json", "--db", str(db)).stdout.splitlines()]
    sid, path = row["session"], Path(row["path"])
    assert "+hello" in _ok(run("diff", sid, "one", "--db", str(db))).stdout
    (path / "junk.txt").write_text("left by a failed attempt\n")
    _ok(run("resume", sid, "--retry", "one", "--clean", "--headless", "--db", str(db)))
    assert not (path / "junk.txt").exists() and (path / "a.txt").read_text() == "changed\n"
    assert user_state(repo) == before
    _ok(run("merge", sid, "--db", str(db)))
    assert (repo / "new.txt").read_text() == "hello\n" and (repo / "a.txt").read_text() == "changed\n"
    assert branches(repo) == [] and not path.exists()
