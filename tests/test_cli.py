"""The `shepherd` command line, run as a real process: exit codes, one-line errors,
the headless demo, and a SIGKILL mid-tool that reopening recovers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import kill_headless_run_mid_tool

SHEPHERD = [sys.executable, "-m", "tui.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHEPHERD_TIME_SCALE": "0.02", **(env_extra or {})}
    return subprocess.run([*SHEPHERD, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_demo_headless_runs_to_done(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = run("demo", "--headless", "--db", str(db))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr
    for needle in ("list_files", "read_file", "tool concurrency — retry 1/5 in 2 s", "stream broken — restart",
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


def test_sigkill_mid_tool_then_reopen_recovers(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    task = tmp_path / "t.toml"
    task.write_text(f'''
title = "long tool"
backend = "scripted"
workspace = "{ws}"
[[subtasks]]
id = "slow"
prompt = "run something slow"
  [[subtasks.steps]]
  text = "starting"
  tools = [{{ name = "run_command", args = {{ command = "sleep 3" }} }}, {{ name = "list_files", args = {{ path = "." }} }}]
''')
    db = tmp_path / "s.db"
    kill_headless_run_mid_tool(task, db)

    listing = run("sessions", "--json", "--db", str(db))  # opening the db runs recovery
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert rows[0]["status"] == "interrupted"
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM tool_calls WHERE status='running'").fetchone()[0] == 0
        statuses = {r[0] for r in con.execute("SELECT status FROM tool_calls")}
        assert "interrupted" in statuses
    again = run("sessions", "--json", "--db", str(db))
    assert again.stdout == listing.stdout  # recovery is idempotent


@pytest.fixture(scope="module")
def finished_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("finished") / "s.db"
    assert run("demo", "--headless", "--db", str(db)).returncode == 0
    return db


@pytest.mark.parametrize("cmd", ["pause", "skip", "cancel", "retry"])
def test_control_commands_reject_finished_sessions(finished_db: Path, cmd: str) -> None:
    sid = json.loads(run("sessions", "--json", "--db", str(finished_db)).stdout.splitlines()[0])["id"]
    assert "not running" in one_line_error(run(cmd, sid, "--db", str(finished_db)))


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
