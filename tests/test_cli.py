"""The `shepherd` command line, run as a real process: exit codes, one-line errors,
the headless demo, and a SIGKILL mid-tool that reopening recovers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import ROOT, SHEPHERD, reap, run, write_task
from tests.engine_helpers import kill_headless_run_mid_tool
from tests.pg_server import BACKENDS, pg_dsn, pg_server, sql, store_target  # noqa: F401  (fixtures: [sqlite]/[postgres])



def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_demo_headless_runs_to_done(store_target: str | Path) -> None:
    db = store_target
    proc = run("demo", "--headless", "--db", str(db))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr
    # at SHEPHERD_TIME_SCALE=0.02 the log says the real wait, and the nominal one beside it
    for needle in ("list_files", "read_file", "tool concurrency — retry 1/5 in 0.04 s (2 s nominal, time-scaled)",
                   "stream broken — restart",
                   "check failed", "session done"):
        assert needle in log, needle
    listing = run("sessions", "--json", "--db", str(db))
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert rows[0]["status"] == "done" and rows[0]["subtasks_done"] == 3
    md = run("export", rows[0]["id"], "--format", "md", "--db", str(db))
    assert md.returncode == 0 and "tool concurrency" in md.stdout
    jl = run("export", rows[0]["id"][:7], "--format", "jsonl", "--db", str(db))
    seqs = [json.loads(line)["seq"] for line in jl.stdout.splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))
    show = run("show", rows[0]["id"], "--db", str(db))
    assert show.returncode == 0 and "session done" in show.stdout


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('title = "x"\nbackend = "nope"\n[[subtasks]]\nprompt = "p"\n')
    line = one_line_error(run("run", str(bad), "--headless", "--db", str(tmp_path / "s.db")))
    assert "bad.toml" in line and "backend" in line and "nope" in line

    dup = tmp_path / "dup.toml"
    dup.write_text('[[subtasks]]\nid = "a"\nprompt = "p"\n[[subtasks]]\nid = "a"\nprompt = "q"\n')
    assert "duplicate subtask id" in one_line_error(run("run", str(dup), "--headless", "--db", str(tmp_path / "s.db")))

    broken = tmp_path / "broken.toml"
    broken.write_text("title = \n")
    assert "invalid TOML" in one_line_error(run("run", str(broken), "--headless"))

    kind = tmp_path / "kind.toml"
    kind.write_text('[[subtasks]]\nprompt = "p"\n[[subtasks.steps]]\nfail = "gremlins"\n')
    assert "subtasks[0].steps[0].fail" in one_line_error(run("run", str(kind), "--headless"))

    noprompt = tmp_path / "noprompt.toml"
    noprompt.write_text('[[subtasks]]\nid = "a"\n')
    assert "missing prompt" in one_line_error(run("run", str(noprompt), "--headless"))

    db = tmp_path / "s.db"
    assert run("sessions", "--db", str(db)).returncode == 0
    assert not db.exists()  # listing nothing creates nothing
    assert "no database at" in one_line_error(run("show", "zzzz", "--db", str(db)))
    one_line_error(run("export", "x", "--format", "pdf", "--db", str(db)))
    one_line_error(run("frobnicate"))

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    line = one_line_error(run("sessions", "--db", str(junk)))
    assert "junk.db" in line
    assert junk.read_bytes() == b"this is not sqlite at all" * 100


def test_no_credentials_fail_at_once_naming_the_variable(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path / "claude")}
    line = one_line_error(run("run", "-p", "hi", "--backend", "openai", "--headless",
                              "--db", str(tmp_path / "s.db"), env_extra=env))
    assert "OPENAI_API_KEY" in line
    line = one_line_error(run("run", "-p", "hi", "--backend", "claude", "--headless",
                              "--db", str(tmp_path / "s.db"), env_extra=env))
    assert "ANTHROPIC_API_KEY" in line


def test_sigkill_mid_tool_then_reopen_recovers(tmp_path: Path, store_target: str | Path) -> None:
    task, _ = write_task(tmp_path, '''[[subtasks]]
id = "slow"
prompt = "run something slow"
  [[subtasks.steps]]
  text = "starting"
  tools = [{ name = "run_command", args = { command = "sleep 3" } }, { name = "list_files", args = { path = "." } }]
''', title="long tool", backend="scripted")
    db = store_target
    kill_headless_run_mid_tool(task, db)

    listing = run("sessions", "--json", "--db", str(db))  # opening the db runs recovery
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert rows[0]["status"] == "interrupted"
    assert sql(db, "SELECT count(*) FROM tool_calls WHERE status='running'")[0][0] == 0
    assert "interrupted" in {r[0] for r in sql(db, "SELECT status FROM tool_calls")}
    again = run("sessions", "--json", "--db", str(db))
    assert again.stdout == listing.stdout  # recovery is idempotent


@pytest.fixture(scope="module")
def finished_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("finished") / "s.db"
    assert run("demo", "--headless", "--db", str(db)).returncode == 0
    return db


@pytest.fixture(scope="module", params=BACKENDS)
def finished_target(request: pytest.FixtureRequest, finished_db: Path) -> str | Path:
    """The finished demo session on either store (a PostgreSQL database of its own)."""
    if request.param == "sqlite":
        return finished_db
    target = request.getfixturevalue("pg_server").new_database()
    assert run("demo", "--headless", "--db", target).returncode == 0
    return target


@pytest.mark.parametrize("cmd", ["pause", "skip", "cancel", "retry"])
def test_control_commands_reject_finished_sessions(finished_target: str | Path, cmd: str) -> None:
    sid = json.loads(run("sessions", "--json", "--db", str(finished_target)).stdout.splitlines()[0])["id"]
    assert "not running" in one_line_error(run(cmd, sid, "--db", str(finished_target)))


def test_resume_of_a_done_session_without_retry_is_refused(finished_db: Path) -> None:
    sid = json.loads(run("sessions", "--json", "--db", str(finished_db)).stdout.splitlines()[0])["id"]
    before = finished_db.read_bytes()
    for extra in ([], ["--headless"]):
        assert "is done: nothing to resume" in one_line_error(run("resume", sid, *extra, "--db", str(finished_db)))
    assert finished_db.read_bytes() == before


def _run_with_env(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHEPHERD_TIME_SCALE": "0.01", **env_extra}
    return subprocess.run([*SHEPHERD, *args], capture_output=True, text=True, timeout=180, env=env, cwd=cwd)


def test_run_prompt_openai_backend_against_the_fake(tmp_path: Path) -> None:
    from tests.fakes.fake_openai import FakeOpenAI

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hello.txt").write_text("hi there\n")
    script = [{"error": {"status": 500, "message": "upstream overloaded"}},
              {"tools": [{"name": "read_file", "args": {"path": "hello.txt"}}]},
              {"text": "The file says hi."}]
    with FakeOpenAI(script=script) as api:
        proc = _run_with_env(["run", "-p", "Read hello.txt", "--backend", "openai", "--headless",
                              "--workspace", str(ws), "--db", str(tmp_path / "s.db")],
                             {"OPENAI_API_KEY": "sk-test-fake", "OPENAI_BASE_URL": api.base_url}, ROOT)
        bodies = [r["body"] for r in api.requests]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "transient error (500)" in proc.stderr and "retry 1/5" in proc.stderr
    assert "read_file" in proc.stderr and "session done" in proc.stderr
    assert len(bodies) == 3  # no hidden client retries: the engine saw the 500
    assert "hi there" in json.dumps(bodies[-1])  # the tool result reached the next request
    assert "sk-test-fake" not in (tmp_path / "s.db").read_bytes().decode("latin-1")


def test_run_prompt_claude_backend_against_the_fake(tmp_path: Path) -> None:
    from tests.fakes.fake_anthropic import FakeAnthropic, offline_cli_env

    ws = tmp_path / "ws"
    ws.mkdir()
    with FakeAnthropic(script=[{"tool_use": {"name": "Bash", "input": {"command": "echo from-bash > out.txt"}}},
                               {"text": "Wrote out.txt."}]) as api:
        env = offline_cli_env(api.base_url, str(tmp_path / "claude"), str(tmp_path / "ctmp"))
        proc = _run_with_env(["run", "-p", "Write out.txt with bash", "--backend", "claude", "--headless",
                              "--workspace", str(ws), "--db", str(tmp_path / "s.db")], env, ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (ws / "out.txt").read_text() == "from-bash\n"
    assert "Bash" in proc.stderr and "session done" in proc.stderr
    assert "sk-ant-fake-key" not in (tmp_path / "s.db").read_bytes().decode("latin-1")


# --- --db before and after every subcommand (and $SHEPHERD_DB) ----------------------------------

def _junk(tmp_path: Path) -> Path:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite " * 50)
    return junk


def _task_file(tmp_path: Path, body: str = "", title: str = "tiny") -> Path:
    body = body or '[[subtasks]]\nid = "a"\nprompt = "say hi"\n  [[subtasks.steps]]\n  text = "hi"\n'
    return write_task(tmp_path, body, title=title, name=f"{title}.toml")[0]


# Each subcommand with the arguments it needs to reach its database.
SUBCOMMANDS = {
    "demo": ["--headless"], "run": ["-p", "hi", "--backend", "scripted", "--headless"],
    "attach": ["s1"], "sessions": [], "show": ["s1"], "export": ["s1", "--format", "md"],
    "resume": ["s1", "--headless"], "pause": ["s1"], "skip": ["s1"], "cancel": ["s1"], "retry": ["s1"],
}


@pytest.mark.parametrize("cmd", sorted(SUBCOMMANDS))
def test_db_before_or_after_the_subcommand_is_the_one_used(tmp_path: Path, cmd: str) -> None:
    """A junk file as --db, in either place or as $SHEPHERD_DB: the command must meet that
    file (and refuse it by name), not the default database."""
    junk = _junk(tmp_path)
    before = junk.read_bytes()
    for argv, env in (([cmd, *SUBCOMMANDS[cmd], "--db", str(junk)], {}),
                      (["--db", str(junk), cmd, *SUBCOMMANDS[cmd]], {}),
                      ([cmd, *SUBCOMMANDS[cmd]], {"SHEPHERD_DB": str(junk)})):
        line = one_line_error(run(*argv, env_extra=env))
        assert str(junk) in line and "not a Shepherd database" in line, (argv, line)
    assert junk.read_bytes() == before


def test_db_before_the_subcommand_gets_the_data(tmp_path: Path) -> None:
    db = tmp_path / "chosen.db"
    task = _task_file(tmp_path)
    assert run("--db", str(db), "run", str(task), "--headless").returncode == 0
    assert run("--db", str(db), "demo", "--headless").returncode == 0
    rows = [json.loads(line) for line in run("--db", str(db), "sessions", "--json").stdout.splitlines()]
    assert sorted(r["title"] for r in rows) == ["Demo: fix the date parser in tinydates", "tiny"]
    default = Path(os.environ["XDG_DATA_HOME"]) / "shepherd" / "shepherd.db"
    assert not default.exists()  # nothing went to the default database


# --- shepherd resume -----------------------------------------------------------------------------

def _sessions(db: str | Path) -> list[dict]:
    return [json.loads(line) for line in run("sessions", "--json", "--db", str(db)).stdout.splitlines()]


def _ran(tmp_path: Path, body: str, *, code: int, db: str | Path | None = None) -> tuple[str | Path, dict]:
    """``shepherd run`` a task of ``body`` headless, expecting exit ``code``: the database
    (``db``: a store target, else a new SQLite file) and its one session's row."""
    db = db or tmp_path / "s.db"
    task = _task_file(tmp_path, body)
    assert run("run", str(task), "--headless", "--db", str(db)).returncode == code
    (row,) = _sessions(db)
    return db, row


def _attempts(db: str | Path, sid: str) -> list[tuple[str, str]]:
    rows = sql(db, "SELECT data FROM events WHERE session_id = ? AND type = 'attempt.started' ORDER BY seq", (sid,))
    return [(json.loads(str(d))["subtask_id"], json.loads(str(d))["reason"]) for (d,) in rows]


def test_resume_headless_runs_an_interrupted_session_to_done(tmp_path: Path, store_target: str | Path) -> None:
    task, ws = write_task(tmp_path, '''[[subtasks]]
id = "one"
prompt = "make a marker file"
  [[subtasks.steps]]
  tools = [{ name = "run_command", args = { command = "sleep 2; echo done > marker.txt" } }]
  [[subtasks.steps]]
  text = "Marker written."
[[subtasks]]
id = "two"
prompt = "say so"
  [[subtasks.steps]]
  text = "All done."
''', title="resumable")
    db = store_target
    kill_headless_run_mid_tool(task, db)
    (row,) = _sessions(db)
    assert row["status"] == "interrupted"
    proc = run("resume", row["id"][:8], "--headless", "--db", str(db))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "session done" in proc.stderr
    (row,) = _sessions(db)
    assert row["status"] == "done" and row["subtasks_done"] == 2
    assert (ws / "marker.txt").read_text() == "done\n"
    assert _attempts(db, row["id"]) == [("one", "first"), ("one", "resume"), ("two", "first")]


def test_resume_retry_headless_reruns_a_subtask_of_a_finished_session(tmp_path: Path,
                                                                     store_target: str | Path) -> None:
    db, row = _ran(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "one"\n  [[subtasks.steps]]\n  text = "did a"\n'
                   '[[subtasks]]\nid = "b"\nprompt = "two"\n  [[subtasks.steps]]\n  text = "did b"\n', code=0,
                   db=store_target)
    proc = run("resume", row["id"], "--retry", "a", "--headless", "--db", str(db))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _attempts(db, row["id"]) == [("a", "first"), ("b", "first"), ("a", "user_retry")]
    assert "no subtask 'zz'" in one_line_error(run("resume", row["id"], "--retry", "zz", "--headless",
                                                   "--db", str(db)))


def test_resume_exit_code_follows_the_run(tmp_path: Path, store_target: str | Path) -> None:
    db, row = _ran(tmp_path, 'max_check_retries = 0\n[[subtasks]]\nid = "a"\nprompt = "one"\ncheck = "false"\n'
                   '  [[subtasks.steps]]\n  text = "did a"\n', code=1, db=store_target)
    assert row["status"] == "failed"
    assert run("resume", row["id"], "--retry", "a", "--headless", "--db", str(db)).returncode == 1


def _wait_for_lease(db: str | Path, proc: subprocess.Popen, *, status: str | None = None) -> str:
    """The live runner's session id, once it holds its lease (and, with ``status``, once
    its session row reads that status)."""
    import time

    deadline = time.monotonic() + 60
    query = ("SELECT l.session_id FROM leases l JOIN sessions s ON s.id = l.session_id"
             + (" WHERE s.status = ?" if status else ""))
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, f"the runner never took its lease ({status or 'any status'})"
        if not isinstance(db, Path) or db.exists():  # (sqlite3.connect would make an empty file)
            try:
                rows = sql(db, query, (status,) if status else ())
            except Exception:  # noqa: BLE001 - not made yet, or busy: look again
                rows = []
            if rows:
                return str(rows[0][0])
        time.sleep(0.05)  # another process's database: there is no event to await


def test_resume_against_a_live_runner_sends_the_commands(tmp_path: Path, store_target: str | Path) -> None:
    """On both stores: the CLI and the runner are two processes; the commands table carries it."""
    db = store_target
    task = _task_file(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "one"\n'
                      '  [[subtasks.steps]]\n  fail = "rate_limit"\n  retry_after = 600\n')
    proc = subprocess.Popen([*SHEPHERD, "run", str(task), "--headless", "--db", str(db)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "SHEPHERD_TIME_SCALE": "1"})
    try:
        sid = _wait_for_lease(db, proc, status="waiting")  # in the 600 s countdown, not before it
        out = run("resume", sid, "--retry", "a", "--db", str(db))
        assert out.returncode == 0 and "resume and retry a sent" in out.stderr, out.stderr
        cmds = sql(db, "SELECT command, subtask_id, source FROM commands ORDER BY id")
        assert cmds == [("resume", None, "cli"), ("retry", "a", "cli")]
        # the runner acts on them: the retry cuts the 600 s wait short with a person's
        # retry, whose attempt finds the steps used up and ends the run done
        assert proc.wait(timeout=60) == 0
        reasons = [reason for _sub, reason in _attempts(db, sid)]
        assert reasons == ["first", "user_retry"], reasons
    finally:
        reap(proc)


# --- export -o ----------------------------------------------------------------------------------

def test_export_output_that_cannot_be_written_is_one_line_and_leaves_nothing(finished_db: Path,
                                                                             tmp_path: Path) -> None:
    sid = _sessions(finished_db)[0]["id"]
    before = finished_db.read_bytes()
    target_dir = tmp_path / "out"
    target_dir.mkdir()
    listing = sorted(os.listdir(tmp_path))
    for output, fragment in ((str(target_dir), "is a directory"), ("/nonexistent/x.md", "does not exist"),
                             (str(finished_db), "it is the database")):
        line = one_line_error(run("export", sid, "--format", "md", "-o", output, "--db", str(finished_db)))
        assert line.startswith("shepherd: cannot write") and fragment in line, line
    assert sorted(os.listdir(tmp_path)) == listing and os.listdir(target_dir) == []
    assert finished_db.read_bytes() == before
    good = target_dir / "s.md"
    assert run("export", sid, "--format", "md", "-o", str(good), "--db", str(finished_db)).returncode == 0
    assert good.read_text().startswith("# Demo") and os.listdir(target_dir) == ["s.md"]


# --- the demo's temporary workspace -------------------------------------------------------------

def test_demo_leaves_no_temporary_folder_on_any_exit(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    assert run("demo", "--headless", "--db", str(tmp_path / "s.db"), env_extra=env).returncode == 0
    assert os.listdir(tmp) == []
    one_line_error(run("demo", "--headless", "--db", str(_junk(tmp_path)), env_extra=env))  # failure path
    assert os.listdir(tmp) == []
    # Ctrl-C mid-run (real time: the demo's first countdown is 2 s)
    db = tmp_path / "c.db"
    proc = subprocess.Popen([*SHEPHERD, "demo", "--headless", "--db", str(db)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "SHEPHERD_TIME_SCALE": "1", **env})
    try:
        _wait_for_lease(db, proc)
        assert [p.name for p in tmp.iterdir()][0].startswith("shepherd-demo-")  # it was there
        proc.send_signal(__import__("signal").SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        reap(proc)
    assert os.listdir(tmp) == []


async def test_tui_demo_has_a_countdown_long_enough_to_act_on(tmp_path: Path) -> None:
    from shepherd.core.demo import demo_task
    from shepherd.core.engine import Supervisor
    from shepherd.core.store import Store
    from tests.engine_helpers import FAST, stored

    store = await Store.open(tmp_path / "s.db")
    try:
        delays = {}
        for interactive in (True, False):
            task = demo_task(tmp_path / f"ws{interactive}", interactive=interactive)
            sup = Supervisor(store, task, clock=FAST, interactive=False)
            assert await sup.run() == "done"
            delays[interactive] = [e.delay_s for e in await stored(store, sup.session_id, "retry.scheduled")]
    finally:
        await store.close()
    assert max(delays[True]) >= 8  # time to try n, p or c in the TUI
    assert max(delays[False]) <= 2  # the headless demo stays quick


async def test_resume_without_headless_opens_the_tui_running_the_session(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What `shepherd resume SESSION` (no --headless) starts: the TUI, resuming it in-process."""
    import asyncio

    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.session import SessionScreen

    monkeypatch.setenv("SHEPHERD_TIME_SCALE", "0.01")
    task, _ = write_task(tmp_path, '[[subtasks]]\nid = "one"\nprompt = "p"\n'
                        '  [[subtasks.steps]]\n  tools = [{ name = "run_command", args = { command = "sleep 2" } }]\n')
    db = tmp_path / "s.db"
    kill_headless_run_mid_tool(task, db)
    (row,) = _sessions(db)
    app = ShepherdApp(db, resume=(row["id"], None))
    async with app.run_test(size=(120, 36)) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (isinstance(app.screen, SessionScreen) and row["id"] in app.runs):
            assert loop.time() < deadline, "the resumed session never opened"
            await pilot.pause(0.02)
        assert app.screen.session_id == row["id"] and app.screen.follow == "local"
        assert await asyncio.wait_for(asyncio.shield(app.runs[row["id"]].task), 60) == "done"
    assert _attempts(db, row["id"]) == [("one", "first"), ("one", "resume")]


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_a_headless_log_whose_reader_goes_away_does_not_hang_the_run(tmp_path: Path, extra: list[str]) -> None:
    """`shepherd run --headless 2>&1 | head -1`: Rich's SystemExit on a broken pipe used to
    escape the event loop and leave the process hanging at exit, its session never finished."""
    db = tmp_path / "s.db"
    task = _task_file(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "p"\n  [[subtasks.steps]]\n'
                      '  tools = [{ name = "run_command", args = { command = "sleep 1" } }]\n'
                      '  [[subtasks.steps]]\n  text = "done"\n')
    reader, writer = os.pipe()
    proc = subprocess.Popen([*SHEPHERD, "run", str(task), "--headless", *extra, "--db", str(db)], cwd=ROOT,
                            stdout=writer, stderr=writer, env={**os.environ, "SHEPHERD_TIME_SCALE": "0.02"})
    os.close(writer)
    try:
        with os.fdopen(reader, "rb") as r:
            assert r.readline()  # the first line, then the reader goes away
        assert proc.wait(timeout=60) == 0
    finally:
        reap(proc)
    assert _sessions(db)[0]["status"] == "done"


@pytest.mark.parametrize("argv", [[], ["demo"], ["run", "-p", "hi", "--backend", "scripted"]])
def test_the_tui_entry_points_refuse_a_bad_database_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    junk = _junk(tmp_path)
    before = junk.read_bytes()
    line = one_line_error(run("--db", str(junk), *argv, timeout=30))
    assert str(junk) in line and "not a Shepherd database" in line
    assert junk.read_bytes() == before
