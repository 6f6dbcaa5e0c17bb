"""The `shepherd` command line on either store, as real processes: --db URL and
SHEPHERD_DB select PostgreSQL, a bad URL / a server that is down is one line (no
password), and `shepherd copy` moves sessions both ways, idempotently."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from shepherd.core.events import TextDelta
from shepherd.core.store import open_store
from tests.cli_helpers import run
from tests.pg_server import pg_dsn, pg_server, sql  # noqa: F401  (fixtures)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _sessions(db: str) -> list[dict]:
    listing = run("sessions", "--json", "--db", db)
    assert listing.returncode == 0, listing.stderr
    return [json.loads(line) for line in listing.stdout.splitlines()]


def _seqs(db: str, sid: str) -> list[int]:
    jl = run("export", sid, "--format", "jsonl", "--db", db)
    assert jl.returncode == 0, jl.stderr
    return [json.loads(line)["seq"] for line in jl.stdout.splitlines()]


def test_demo_then_the_readers_on_postgres_by_url_and_by_env(pg_dsn: str) -> None:  # noqa: F811
    db = pg_dsn  # (tests/test_cli.py runs the demo on both stores; here: the data is really in the server)
    proc = run("demo", "--headless", "--db", db)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _sessions(db)
    assert rows[0]["status"] == "done" and rows[0]["subtasks_done"] == 3
    assert sql(db, "SELECT id FROM sessions") == [(rows[0]["id"],)]  # not a file named "postgresql:/..."
    seqs = _seqs(db, rows[0]["id"][:7])
    assert seqs == list(range(1, len(seqs) + 1))
    show = run("show", rows[0]["id"], "--db", db)
    assert show.returncode == 0 and "session done" in show.stdout
    via_env = run("sessions", "--json", env_extra={"SHEPHERD_DB": db})
    assert [json.loads(x)["id"] for x in via_env.stdout.splitlines()] == [rows[0]["id"]], via_env.stderr


@pytest.mark.parametrize("url, needle", [
    ("postgresql://u@[bad/x", "not a PostgreSQL URL"),
    ("postgresql://u:pw@127.0.0.1:99999/x", "not a PostgreSQL URL"),
    ("postgresql://u:s3cretpw@127.0.0.1:1/x", "127.0.0.1"),  # nothing listens on port 1
])
def test_a_bad_url_or_a_server_that_is_down_is_one_line_without_the_password(url: str, needle: str) -> None:
    for argv in (["sessions"], ["run", "-p", "hi", "--backend", "scripted", "--headless"], ["copy", "--from", url,
                                                                                               "--to", "x.db"]):
        line = one_line_error(run(*argv, "--db", url) if argv[0] != "copy" else run(*argv))
        assert needle in line and "s3cretpw" not in line, line


def test_a_database_that_does_not_exist_is_one_line(pg_dsn: str) -> None:  # noqa: F811
    gone = pg_dsn.rsplit("/", 1)[0] + "/no_such_db_here"
    line = one_line_error(run("sessions", "--db", gone))
    assert "no_such_db_here" in line


def test_copy_sqlite_to_postgres_and_back_keeps_ids_and_seqs(tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    assert run("demo", "--headless", "--db", a).returncode == 0
    sid = _sessions(a)[0]["id"]
    there = run("copy", "--from", a, "--to", pg_dsn)
    assert there.returncode == 0 and "copied 1 session" in there.stdout, there.stderr
    again = run("copy", "--from", a, "--to", pg_dsn)  # a re-run: nothing to do, no error
    assert again.returncode == 0 and "copied 0 session(s); 1 already there" in again.stdout, again.stderr
    back = run("copy", "--from", pg_dsn, "--to", b, "--session", sid[:7])
    assert back.returncode == 0, back.stderr
    assert _seqs(a, sid) == _seqs(pg_dsn, sid) == _seqs(b, sid)
    assert run("export", sid, "--format", "jsonl", "--db", b).stdout == \
        run("export", sid, "--format", "jsonl", "--db", a).stdout
    assert [r["status"] for r in _sessions(pg_dsn)] == ["done"]
    assert sql(pg_dsn, "SELECT max(seq), count(*) FROM events WHERE session_id = ?", (sid,))[0] == \
        (len(_seqs(a, sid)),) * 2

    async def diverge() -> None:  # the copy in b gets an event a does not have
        store = await open_store(b)
        try:
            await store.append(TextDelta(session_id=sid, subtask_id=None, text="only in b"))
        finally:
            await store.close()

    asyncio.run(diverge())
    line = one_line_error(run("copy", "--from", pg_dsn, "--to", b))
    assert "different events" in line and sid in line


def test_a_runner_sigkilled_on_one_host_is_recovered_by_another_once_its_lease_expired(
        tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    import os
    import signal
    import sys
    import time

    from tests.cli_helpers import ROOT, write_task

    task, _ = write_task(tmp_path, '''[[subtasks]]
id = "slow"
prompt = "run something slow"
  [[subtasks.steps]]
  text = "starting"
  tools = [{ name = "run_command", args = { command = "sleep 5" } }]
''', title="long tool", backend="scripted")
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.tui.cli", "run", str(task), "--headless", "--db", pg_dsn],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "SHEPHERD_TIME_SCALE": "1", "SHEPHERD_HOST_ID": "host-a"})
    import psycopg

    def running() -> int:
        try:
            return int(sql(pg_dsn, "SELECT count(*) FROM tool_calls WHERE status='running'")[0][0])  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:  # the runner has not made the schema yet
            return 0

    try:
        deadline = time.monotonic() + 60
        while not running():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:] \
                if proc.stderr else "no tool call"
            time.sleep(0.05)  # another process's database: nothing to await
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
    other = {"SHEPHERD_HOST_ID": "host-b"}
    live = run("sessions", "--json", "--db", pg_dsn, env_extra=other)
    assert [json.loads(x)["status"] for x in live.stdout.splitlines()] == ["running"], live.stderr  # no pid check
    sql(pg_dsn, "UPDATE leases SET expires_at = expires_at - 3600")  # the lease ran out (server time)
    listing = run("sessions", "--json", "--db", pg_dsn, env_extra=other)
    assert [json.loads(x)["status"] for x in listing.stdout.splitlines()] == ["interrupted"], listing.stderr
    assert sql(pg_dsn, "SELECT count(*) FROM tool_calls WHERE status='running'")[0][0] == 0
    assert "interrupted" in {r[0] for r in sql(pg_dsn, "SELECT status FROM tool_calls")}
    again = run("sessions", "--json", "--db", pg_dsn, env_extra=other)
    assert again.stdout == listing.stdout  # recovery is idempotent
