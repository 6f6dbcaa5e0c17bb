"""Secrets (issue 8, item 1): tool processes get no credentials, and no secret value (nor
its reverse, nor its base64) reaches the store, the log, an export, `shepherd show`, or the
model through a tool's output.

Secrets are set with monkeypatch.setenv, so both this process and the `shepherd` processes
it starts have them; the conftest has removed any real ones."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shepherd.core.store import Store
from tests.test_backend_scripted import Runner

ROOT = Path(__file__).resolve().parents[1]
SHEPHERD = [sys.executable, "-m", "shepherd.tui.cli"]

# Shaped like real keys, and one (a service token) that no key pattern recognises.
OPENAI = "sk-proj-Q7x2LmN8pR4tV6wY9zA1bC3dE5fG7hJ"
ANTHROPIC = "sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0"
SERVICE = "svc-5f1c9e2ab7d84c36a0e1"  # pass_env'd below: the tool sees it, the store must not


def forms(value: str) -> list[str]:
    """The value, reversed, and a base64 run of it as `echo $X | base64` prints it."""
    b64 = base64.b64encode(value.encode()).decode().rstrip("=")
    return [value, value[::-1], b64[:-2]]


ALL_FORMS = [f for v in (OPENAI, ANTHROPIC, SERVICE) for f in forms(v)]


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC)
    monkeypatch.setenv("MY_SERVICE_TOKEN", SERVICE)


def assert_clean(blob: bytes | str, where: str) -> None:
    data = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    for f in ALL_FORMS:
        assert f not in data, f"{where} contains a secret form {f[:6]}…"


LEAKY_STEPS = '''
  [[subtasks.steps]]
  text = "Looking at the environment."
  tools = [
    { name = "run_command", args = { command = "env | grep -i -e key -e token; echo done-env" } },
    { name = "run_command", args = { command = "echo $ANTHROPIC_API_KEY | rev; echo $MY_SERVICE_TOKEN | rev" } },
    { name = "run_command", args = { command = "echo $MY_SERVICE_TOKEN; echo $MY_SERVICE_TOKEN | base64" } },
  ]
  [[subtasks.steps]]
  tools = [{ name = "read_file", args = { path = ".env" } }]
  [[subtasks.steps]]
  text = "All printed."
'''


def leaky_task(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".env").write_text(f"TOKEN={SERVICE}\n")  # read_file gives it back to the model
    task = tmp_path / "leak.toml"
    task.write_text(f'''
title = "print the environment"
backend = "scripted"
workspace = "{ws}"
pass_env = ["MY_SERVICE_TOKEN"]
[[subtasks]]
id = "leak"
prompt = "show me the keys"
check = "env; echo $MY_SERVICE_TOKEN | rev"
{LEAKY_STEPS}''')
    return task


def shepherd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHEPHERD_TIME_SCALE": "0.02"}
    return subprocess.run([*SHEPHERD, *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_a_run_printing_the_environment_stores_exports_and_logs_no_secret(tmp_path: Path, secret_env: None) -> None:
    db = tmp_path / "s.db"
    run = shepherd("run", str(leaky_task(tmp_path)), "--headless", "--db", str(db))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "done-env" in run.stderr  # the tool did run and print
    assert_clean(run.stderr, "the headless log")

    # every table, every page: the raw file bytes (the WAL too, if one is left)
    for f in tmp_path.glob("s.db*"):
        assert_clean(f.read_bytes(), f.name)
    con = __import__("sqlite3").connect(db)
    try:
        outputs = [r[0] for r in con.execute("SELECT output FROM tool_calls")]
        items = [r[0] for r in con.execute("SELECT item_json FROM agent_items")]
    finally:
        con.close()
    assert any("[redacted]" in o for o in outputs)  # scrubbed, not just absent
    assert items and all("svc-" not in i for i in items)

    sid = json.loads(shepherd("sessions", "--json", "--db", str(db)).stdout.splitlines()[0])["id"]
    for fmt in ("jsonl", "md"):
        out = shepherd("export", sid, "--format", fmt, "--db", str(db))
        assert out.returncode == 0, out.stderr
        assert "done-env" in out.stdout
        assert_clean(out.stdout, f"the {fmt} export")
    show = shepherd("show", sid, "--db", str(db))
    assert show.returncode == 0, show.stderr
    assert_clean(show.stdout + show.stderr, "shepherd show")
    log = Path(os.environ["XDG_STATE_HOME"]) / "shepherd" / "shepherd.log"
    if log.exists():
        assert_clean(log.read_bytes(), "the log file")


async def test_tool_output_given_back_to_the_model_has_no_secret(tmp_path: Path, secret_env: None) -> None:
    from shepherd.core.task import load_task

    task = load_task(leaky_task(tmp_path))
    r = Runner(task)
    events, err = await r.run()
    assert err is None, err
    sent = json.dumps([c.input for c in r.backend.calls])
    assert "done-env" in sent  # the outputs did go back
    assert "[redacted]" in sent  # the pass_env'd token was printed, and scrubbed
    assert_clean(sent, "the model's input")
    assert_clean(json.dumps([e.to_dict() for e in events]), "the backend's events")
    assert_clean(r.backend.calls[0].instructions or "", "the instructions")


async def test_tool_processes_get_no_credentials_unless_passed_through(tmp_path: Path, secret_env: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from shepherd.core.tools import SpawnPolicy, execute

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-0123456789")
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw-0123456789@db.internal/app")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_0123456789abcdefghij")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    res = await execute("env", tmp_path)
    names = {line.split("=", 1)[0] for line in res.output.splitlines() if "=" in line}
    for gone in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_SERVICE_TOKEN", "AWS_SECRET_ACCESS_KEY",
                 "DATABASE_URL", "GITHUB_TOKEN"):
        assert gone not in names, gone
    assert {"PATH", "HOME", "TOKENIZERS_PARALLELISM"} <= names
    passed = await execute("echo $MY_SERVICE_TOKEN", tmp_path, policy=SpawnPolicy(pass_env=("MY_SERVICE_TOKEN",)))
    assert passed.output.strip() == SERVICE


def test_secret_names_and_the_scrubber(monkeypatch: pytest.MonkeyPatch) -> None:
    from shepherd.core.secrets import child_env, is_secret_name, is_withheld_name, scrub_text

    for name in ("OPENAI_API_KEY", "GH_TOKEN", "DB_PASSWORD", "MY_SECRET", "STRIPE_SECRET_KEY", "AWS_ACCESS_KEY_ID",
                 "NPM_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN", "SLACK_BOT_TOKEN"):
        assert is_secret_name(name), name
    for name in ("PATH", "HOME", "TOKENIZERS_PARALLELISM", "PWD", "SSH_AUTH_SOCK", "KEYBOARD_LAYOUT", "TERM"):
        assert not is_secret_name(name), name
    assert is_secret_name("DATABASE_URL", "postgres://u:p4ss@h/db") and not is_secret_name("HOMEPAGE_URL", "https://x.org")
    assert is_withheld_name("AWS_REGION") and is_withheld_name("ANTHROPIC_BASE_URL") and not is_withheld_name("LANG")
    assert "OPENAI_API_KEY" in child_env(("openai_api_key",), base={"OPENAI_API_KEY": "x", "LANG": "C"})

    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to scrub without scrubbing ordinary text
    monkeypatch.setenv("MY_SERVICE_TOKEN", SERVICE)
    text = f"a {SERVICE} b {SERVICE[::-1]} c {base64.b64encode(('X=' + SERVICE).encode()).decode()} 1 d"
    out = scrub_text(text)
    assert SERVICE not in out and SERVICE[::-1] not in out and out.endswith(" 1 d")
    assert scrub_text("postgres://app:hunter22@db/x") == "postgres://app:[redacted]@db/x"


async def test_every_store_write_path_scrubs(tmp_path: Path, secret_env: None) -> None:
    """Events (and the tables derived from them), the agents session, the claude transcript
    mirror and the commands table: the raw file has no secret."""
    from shepherd.core.events import Error, SessionStarted, ToolFinished, ToolStarted

    db = tmp_path / "w.db"
    store = await Store.open(db)
    try:
        sid = "s-secret"
        await store.append(SessionStarted(session_id=sid, title=f"t {SERVICE}", backend="scripted",
                                          workspace=str(tmp_path), task={"nested": [{"k": ANTHROPIC[::-1]}]}))
        await store.append(ToolStarted(session_id=sid, call_id="c1", name="run_command",
                                       input={"command": f"curl -H 'x: {SERVICE}'"}))
        await store.append(ToolFinished(session_id=sid, call_id="c1", status="ok", output=f"{OPENAI}\n"))
        await store.append(Error(session_id=sid, kind="auth", message=f"bad key {ANTHROPIC}",
                                 exception_type="X", status_code=401, retryable=False))
        await store.agents_session(sid).add_items([{"role": "user", "content": f"key {SERVICE[::-1]}"}])
        await store.claude_session_store().append(
            {"project_key": "p", "session_id": "c"},
            [{"type": "user", "uuid": "u1", "message": {"content": f"{OPENAI[::-1]}"}}])
        await store.enqueue_command(sid, "note", text=f"use {SERVICE}")
        rows = await store.tool_calls(sid)
        assert rows[0].output == "[redacted]\n" and "[redacted]" in rows[0].input["command"]
    finally:
        await store.close()
    for f in tmp_path.glob("w.db*"):
        assert_clean(f.read_bytes(), f.name)


def test_the_log_file_has_no_secret_value(tmp_path: Path, secret_env: None) -> None:
    from shepherd.tui.logging_setup import configure_logging

    path = configure_logging(tmp_path / "shepherd.log")
    try:
        log = logging.getLogger("shepherd.test")
        log.warning("token %s reversed %s", SERVICE, SERVICE[::-1])
        try:
            raise RuntimeError(f"failed with {ANTHROPIC[::-1]}")
        except RuntimeError:
            log.exception("boom")
        for h in logging.getLogger().handlers:
            h.flush()
    finally:
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_shepherd_file_handler", False):
                logging.getLogger().removeHandler(h)
                h.close()
    text = path.read_text()
    assert "token [redacted] reversed [redacted]" in text and "boom" in text
    assert_clean(text, "the log file")


def _claude_scrub_available() -> bool:
    from shepherd.core.backends.claude import subprocess_scrub_available

    return subprocess_scrub_available()


@pytest.mark.skipif(not _claude_scrub_available() and not os.environ.get("CI"), reason="Claude Code scrubs its Bash tool's environment only "
                    "with bubblewrap and socat (Linux); without them its Bash tool sees the CLI's key")
async def test_claude_code_bash_tool_sees_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real bundled CLI against the loopback fake API: the CLI has its key (it talks
    to the API), its Bash tool has neither that key nor Shepherd's other secrets."""
    from shepherd.core.events import ToolFinished
    from tests.fakes.fake_anthropic import FakeAnthropic, tool_results
    from tests.test_backend_claude import Env, of

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI)
    monkeypatch.setenv("MY_SERVICE_TOKEN", SERVICE)
    command = ("env | grep -i -e key -e token; echo AK=$ANTHROPIC_API_KEY; echo $OPENAI_API_KEY | rev; "
               "cat /proc/$PPID/environ 2>/dev/null | tr '\\0' '\\n' | grep -i key; echo bash-ran")
    api = FakeAnthropic(script=[{"text": "Looking.", "tool_use": {"name": "Bash", "input": {"command": command}}},
                                {"text": "Done."}]).start()
    try:
        box = Env(tmp_path / "box", api)
        key = box.env["ANTHROPIC_API_KEY"]
        events, err = await box.run(box.ctx("print the keys"))
        assert err is None, err
        out = [f.output for f in of(events, ToolFinished)]
        assert len(out) == 1 and "bash-ran" in out[0] and "AK=\n" in out[0] + "\n"
        sent = json.dumps(tool_results(api.main_requests()[-1]))
        for text in (out[0], sent):
            for secret in (key, key[::-1], OPENAI, OPENAI[::-1], SERVICE):
                assert secret not in text
    finally:
        api.stop()


async def test_tools_scrub_secret_values_but_leave_code_alone(tmp_path: Path, secret_env: None) -> None:
    """What the model reads it may write back: key-shaped code must stay code, only the
    values of secret variables go."""
    from shepherd.core.tools import workspace_tools

    code = 'api_key = os.environ["OPENAI_API_KEY"]\nheaders = {"Authorization": "Bearer " + token}\n'
    (tmp_path / "conf.py").write_text(code + f"FALLBACK = '{SERVICE}'\n")
    tools = {t.name: t for t in workspace_tools(tmp_path)}
    from agents.tool_context import ToolContext

    raw = json.dumps({"path": "conf.py"})
    ctx = ToolContext(context=None, tool_name="read_file", tool_call_id="c1", tool_arguments=raw)
    out = await tools["read_file"].on_invoke_tool(ctx, raw)
    assert out == code + "FALLBACK = '[redacted]'\n"
