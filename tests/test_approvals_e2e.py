"""Approvals end to end, through real processes: a runner SIGKILLed while a call waits for a
person, recovery, `shepherd resume`, `shepherd approve` from another process — the call is
asked again (the same call, from the saved run state) and runs exactly once, after the yes.
Also `shepherd deny` with a reason reaching the agent, and headless `--approvals deny`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.cli_helpers import ROOT, SHEPHERD, reap, run, write_task
from tests.engine_helpers import kill_headless_when
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures: [sqlite]/[postgres])
from tests.pg_server import sql as store_sql

PENDING = "SELECT count(*) FROM approvals WHERE decided_seq IS NULL AND closed = 0"


def gated_task(tmp_path: Path, command: str = "echo ran >> ran.txt") -> tuple[Path, Path]:
    return write_task(tmp_path, f'''approve_tools = ["run_command"]
[[subtasks]]
id = "deploy"
prompt = "deploy it"
  [[subtasks.steps]]
  text = "deploying"
  tools = [{{ name = "run_command", args = {{ command = "{command}" }} }}]
  [[subtasks.steps]]
  text = "deployed"
''', title="gated deploy", backend="scripted")


def _rows(db: str | Path) -> list[dict]:
    out = run("sessions", "--json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _events(db: str | Path, type_: str) -> list[dict]:
    return [json.loads(str(r[0])) for r in store_sql(db, "SELECT data FROM events WHERE type = ? ORDER BY seq",
                                                       (type_,))]


def _wait_for(db: str | Path, sql: str, at_least: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the runner ended: " + (proc.stderr.read().decode()[-2000:] if proc.stderr else "")
        assert time.monotonic() < deadline, f"never: {sql}"
        if not isinstance(db, Path) or db.exists():  # (sqlite3.connect would make an empty file)
            try:
                if store_sql(db, sql)[0][0] >= at_least:
                    return
            except Exception:  # noqa: BLE001 - not created or migrated yet
                pass
        time.sleep(0.05)  # polling another process's database: there is no event to await


def _runner(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*SHEPHERD, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "SHEPHERD_TIME_SCALE": "0.02"})


def test_sigkill_while_waiting_then_resume_asks_the_same_call_and_runs_it_once_after_yes(
        tmp_path: Path, store_target: str | Path) -> None:
    """On both stores: the runner, the resume and the answer are three processes."""
    task, ws = gated_task(tmp_path)
    db = store_target
    kill_headless_when(task, db, PENDING, never="the call was never asked", poll_s=0.05)

    (row,) = _rows(db)  # opening the database runs recovery
    assert row["status"] == "interrupted" and row["needs"] == "approval"
    assert not (ws / "ran.txt").exists()
    first = _events(db, "approval.requested")
    assert len(first) == 1 and not _events(db, "approval.decided")

    proc = _runner("resume", row["id"], "--headless", "--db", str(db))
    try:
        _wait_for(db, "SELECT count(*) FROM events WHERE type = 'approval.requested'", 2, proc)
        assert not (ws / "ran.txt").exists()  # still only asked
        answer = run("approve", row["id"], "--db", str(db))
        assert answer.returncode == 0, answer.stderr
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    finally:
        reap(proc)
    assert (ws / "ran.txt").read_text() == "ran\n"  # exactly once, after the yes
    again = _events(db, "approval.requested")
    assert again[1]["call_id"] == first[0]["call_id"] and again[1]["reask_of"] == first[0]["call_id"]
    (decided,) = _events(db, "approval.decided")
    assert (decided["decision"], decided["source"]) == ("approved", "cli")
    assert _rows(db)[0]["status"] == "done" and _rows(db)[0]["needs"] is None


def test_deny_from_the_command_line_reaches_the_agent_and_the_tool_never_runs(tmp_path: Path) -> None:
    task, ws = gated_task(tmp_path)
    db = tmp_path / "s.db"
    proc = _runner("run", str(task), "--headless", "--db", str(db))
    try:
        _wait_for(db, PENDING, 1, proc)
        sid = _rows(db)[0]["id"]
        assert _rows(db)[0]["needs"] == "approval"
        answer = run("deny", sid, "--reason", "not on a Friday", "--db", str(db))
        assert answer.returncode == 0, answer.stderr
        assert proc.wait(timeout=60) == 0
    finally:
        reap(proc)
    assert not (ws / "ran.txt").exists()
    (finished,) = [e for e in _events(db, "tool.finished")]
    assert finished["status"] == "denied" and "not on a Friday" in finished["output"]
    nothing = run("approve", sid, "--db", str(db))
    assert nothing.returncode == 2 and len(nothing.stderr.strip().splitlines()) == 1


def test_headless_deny_answers_at_once_with_no_one_to_approve(tmp_path: Path) -> None:
    task, ws = gated_task(tmp_path)
    db = tmp_path / "s.db"
    out = run("run", str(task), "--headless", "--approvals", "deny", "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert not (ws / "ran.txt").exists()
    (decided,) = _events(db, "approval.decided")
    assert (decided["decision"], decided["source"], decided["reason"]) == ("denied", "headless", "no one to approve")


async def test_a_tui_attached_to_another_process_approves_and_the_run_goes_on(tmp_path: Path) -> None:
    """A headless runner (a child process) waits; the real app, attached from this process,
    shows the waiting call and `y` answers it through the database; the tool runs once."""
    import asyncio

    from shepherd.tui.app import ShepherdApp

    task, ws = gated_task(tmp_path)
    db = tmp_path / "s.db"
    proc = _runner("run", str(task), "--headless", "--db", str(db))
    try:
        await asyncio.to_thread(_wait_for, db, PENDING, 1, proc)
        sid = _rows(db)[0]["id"]
        app = ShepherdApp(db, open_session=sid, attach=True)
        async with app.run_test(size=(120, 36)) as pilot:
            for _ in range(2000):
                loaded = getattr(app.screen, "loaded", None)
                model = getattr(app.screen, "model", None)
                if isinstance(loaded, asyncio.Event) and loaded.is_set() and model and model.pending_approvals():
                    break
                await pilot.pause(0.01)
            else:
                raise AssertionError("the attached view never showed the waiting call")
            await pilot.press("y")
            code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    finally:
        reap(proc)
    assert (ws / "ran.txt").read_text() == "ran\n"
    (decided,) = _events(db, "approval.decided")
    assert (decided["decision"], decided["source"]) == ("approved", "tui")

