"""Tool approvals across processes: a real headless runner in a child process (the
Supervisor and GateBackend asking, a real database), answered by ``shepherd approve`` /
``shepherd deny`` through the commands table; ``sessions --json`` shows ``needs``; the
one-line refusals (exit 2); a SIGKILL while a call waits keeps it awaiting (never
approved), and a resume asks it again. Plus the task file's approval keys."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import ROOT, reap, run, write_task
from tests.engine_helpers import ASK_CHILD
from tests.pg_server import pg_dsn, pg_server, sql, store_target  # noqa: F401  (fixtures)

DEPLOY = {"command": "make deploy"}


def start_child(tmp_path: Path, calls: list[list[Any]], *, resume: str | None = None,
                db: str | Path | None = None) -> subprocess.Popen[str]:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if resume:
        env["ASK_CHILD_RESUME"] = resume
    return subprocess.Popen([*ASK_CHILD, str(db or tmp_path / "s.db"), str(ws), json.dumps(calls)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def session_of(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("session "), line + (proc.stderr.read() if proc.stderr else "")
    return line.split()[1]


def finish(proc: subprocess.Popen[str]) -> dict[str, str]:
    out, _ = proc.communicate(timeout=60)
    return {k: v for k, _, v in (line.partition(" ") for line in out.splitlines())}


def wait_pending(db: str | Path, n: int = 1, timeout: float = 60, first: str | None = None) -> list[str]:
    """Poll another process's database (there is no event to await across processes) until
    ``n`` calls wait for approval (the oldest being ``first``, if given); their ids, oldest first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if isinstance(db, Path) and not db.exists():  # (sqlite3.connect would make an empty file)
                raise FileNotFoundError(db)
            ids = [str(r[0]) for r in sql(db, "SELECT call_id FROM approvals WHERE decided_seq IS NULL "
                                              "AND closed = 0 ORDER BY requested_at")]
        except Exception:  # noqa: BLE001 - not made yet (a new file or database)
            ids = []
        if len(ids) >= n and (first is None or ids[0] == first):
            return ids
        assert time.monotonic() < deadline, "no call came to wait for approval"
        time.sleep(0.02)


def wait_count(db: Path, sql: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            if con.execute(sql).fetchone()[0] >= n:
                return
        assert time.monotonic() < deadline, f"never {n}: {sql}"
        time.sleep(0.02)


def sessions_json(db: str | Path) -> dict[str, dict[str, Any]]:
    r = run("sessions", "--json", "--db", str(db))
    assert r.returncode == 0, r.stderr
    return {d["id"]: d for d in map(json.loads, r.stdout.splitlines())}


def test_approve_and_deny_from_the_command_line(tmp_path: Path, store_target: str | Path) -> None:
    """On both stores: the runner and the CLI are different processes; the answers go
    through the store's commands table."""
    db = store_target
    proc = start_child(tmp_path, [["call_alpha", "Bash", DEPLOY], ["call_beta", "Bash", {"command": "rm -rf build"}]],
                       db=db)
    try:
        sid = session_of(proc)
        wait_pending(db)
        info = sessions_json(db)[sid]
        assert info["needs"] == "approval" and info["needs_detail"] == "Bash make deploy"
        assert isinstance(info["needs_since"], float)
        r = run("approve", sid[:8], "--db", str(db))  # no call id: the oldest waiting
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip() == f'approve sent to {sid}: Bash "make deploy" (call call_alpha)'
        assert wait_pending(db, first="call_beta") == ["call_beta"]
        r = run("deny", sid, "call_b", "--reason", "not the build dir", "--db", str(db))  # a unique prefix
        assert r.returncode == 0, r.stderr
        assert "deny sent to" in r.stderr and "(call call_beta)" in r.stderr
        result = finish(proc)
        assert result["status"] == "done" and result["ran"] == "call_alpha"
        assert sessions_json(db)[sid]["needs"] is None
        decided = sql(db, "SELECT call_id, decision, source, reason FROM approvals ORDER BY requested_seq")
        assert decided == [("call_alpha", "approved", "cli", ""), ("call_beta", "denied", "cli", "not the build dir")]
        outs = sql(db, "SELECT status, output FROM tool_calls WHERE call_id = 'call_beta'")
        assert outs[0][0] == "denied" and "not the build dir" in outs[0][1]
        # nothing left to answer: one line, exit 2
        for args, line in [
            (("approve", sid), f"shepherd: session {sid} has nothing waiting for approval"),
            (("approve", sid, "call_alpha"), f"shepherd: call call_alpha of {sid} is not waiting for approval "
                                             "(approved by cli)"),
            (("deny", sid, "zzz"), f"shepherd: session {sid} has no call 'zzz' waiting for approval "
                                   "(nothing is waiting)"),
            (("approve", sid, "call_"), f"shepherd: 'call_' matches several calls of {sid} "
                                        "(call_alpha, call_beta); type more of the id"),
        ]:
            r = run(*args, "--db", str(db))
            assert (r.returncode, r.stderr.strip()) == (2, line)
    finally:
        reap(proc)


def test_a_sigkill_while_waiting_keeps_the_call_awaiting_and_a_resume_asks_again(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_child(tmp_path, [["c1", "Bash", DEPLOY]])
    try:
        sid = session_of(proc)
        wait_pending(db)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        reap(proc)
    info = sessions_json(db)[sid]  # (opening the store recovers the dead runner's session)
    assert info["status"] == "interrupted" and info["needs"] == "approval"
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM tool_calls WHERE call_id = 'c1'").fetchall() == [("awaiting",)]
        assert con.execute("SELECT count(*) FROM events WHERE type IN ('tool.finished', 'approval.decided')"
                           ).fetchone()[0] == 0
    r = run("approve", sid, "--db", str(db))
    assert (r.returncode, r.stderr.strip()) == (2, f"shepherd: session {sid} has no live runner; "
                                                   f"shepherd resume {sid} asks again")
    proc = start_child(tmp_path, [], resume=sid)
    try:
        assert session_of(proc) == sid
        wait_count(db, "SELECT count(*) FROM events WHERE type = 'approval.requested'", 2)
        with sqlite3.connect(db) as con:
            asked = con.execute("SELECT data FROM events WHERE type = 'approval.requested' ORDER BY seq").fetchall()
        assert [json.loads(a[0])["reask_of"] for a in asked] == [None, "c1"]
        r = run("approve", sid, "c1", "--db", str(db))
        assert r.returncode == 0, r.stderr
        result = finish(proc)
        assert result["status"] == "done" and result["ran"] == "c1"  # ran once, after the yes
    finally:
        reap(proc)


def test_approvals_deny_needs_headless(tmp_path: Path) -> None:
    task, _ = write_task(tmp_path, '[[subtasks]]\nprompt = "x"\n', backend="scripted")
    r = run("run", str(task), "--approvals", "deny", "--db", str(tmp_path / "s.db"))
    assert r.returncode == 2
    assert r.stderr.strip() == "shepherd: --approvals deny is for headless runs (--headless); in the TUI a person answers"
    r = run("run", str(task), "--approvals", "maybe", "--headless", "--db", str(tmp_path / "s.db"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--approvals" in r.stderr


@pytest.mark.parametrize(("body", "message"), [
    ('approve_tools = "Bash"\n', "approve_tools: expected list, got str 'Bash'"),
    ('approve_tools = ["", "Bash"]\n', "approve_tools[0]: expected a tool name, got ''"),
    ('approve_tools = ["Bash"]\nauto_approve = [{ tool = "Bash" }]\n',
     "auto_approve[0].prefix: expected a non-empty text, got None"),
    ('approve_tools = ["Bash"]\nauto_approve = [{ tool = "Bash", prefix = "ls", when = 1 }]\n',
     "auto_approve[0]: unknown key 'when'"),
    ('auto_approve = [{ tool = "Bash", prefix = "ls" }]\n',
     "auto_approve: has rules but approve_tools names no tool to gate"),
])
def test_bad_approval_keys_are_one_line_and_exit_2(tmp_path: Path, body: str, message: str) -> None:
    task, _ = write_task(tmp_path, body + '[[subtasks]]\nprompt = "x"\n', backend="scripted")
    r = run("run", str(task), "--headless", "--db", str(tmp_path / "s.db"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "s.db").exists()


def test_the_approval_keys_are_read_and_kept_with_the_session() -> None:
    from shepherd.core.task import task_from_dict, task_from_stored

    task = task_from_dict({"subtasks": [{"prompt": "x"}], "approve_tools": ["*"],
                           "auto_approve": [{"tool": "run_command", "prefix": "pytest"}]}, check_workspace=False)
    policy = task.approval_policy()
    assert policy.active and policy.gated("anything")
    assert policy.match("run_command", {"command": "pytest -q"}) is not None
    again = task_from_stored(task.to_dict())
    assert again.approve_tools == ("*",) and again.auto_approve == ({"tool": "run_command", "prefix": "pytest"},)
    assert not task_from_dict({"subtasks": [{"prompt": "x"}]}, check_workspace=False).approval_policy().active


def test_approvals_deny_is_taken_by_a_headless_run(tmp_path: Path) -> None:
    task, _ = write_task(tmp_path, '[[subtasks]]\nprompt = "x"\nsteps = [{ text = "ok" }]\n', backend="scripted")
    r = run("run", str(task), "--headless", "--approvals", "deny", "--db", str(tmp_path / "s.db"))
    assert r.returncode == 0, r.stderr
