"""A tool's processes do not outlive their runner (issue 8, item 7): a SIGKILLed
`shepherd run --headless` takes the tool's whole process tree with it (Linux: pdeathsig on
the tool's wrapper, which kills its process group), and recovery kills whatever a dead
runner of this host left that still carries its marker."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shepherd.core.store import Store
from tests.cli_helpers import write_task
from tests.engine_helpers import kill_headless_run_mid_tool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pdeathsig and /proc are Linux's")


def processes_with(token: str) -> list[int]:
    """Pids whose command line contains ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in cmdline and state != "Z":  # a zombie has already died
            found.append(int(entry.name))
    return found


def wait_gone(token: str, timeout: float = 10.0) -> list[int]:
    """Poll (with a deadline) until no process carries ``token``; returns what is left."""
    deadline = time.monotonic() + timeout
    while (left := processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.02)  # another process's death: there is nothing to await
    return left


def unique_seconds(base: int) -> str:
    """A sleep duration no other process on the machine uses, to find ours in /proc."""
    return f"{base}.{secrets.randbelow(10**6):06d}1"


def test_sigkilled_runner_takes_foreground_and_background_tool_processes_with_it(tmp_path: Path) -> None:
    short, long = unique_seconds(3), unique_seconds(30)
    task, ws = write_task(tmp_path, f'''[[subtasks]]
id = "one"
prompt = "sleep"
  [[subtasks.steps]]
  tools = [{{ name = "run_command", args = {{ command = "(sleep {short}; touch marker) & sleep {long}; touch done" }} }}]
  [[subtasks.steps]]
  text = "Slept."
''', title="sleepers", backend="scripted")
    db = tmp_path / "s.db"
    kill_headless_run_mid_tool(task, db, ready=lambda: len(processes_with(short)) + len(processes_with(long)) >= 2)
    left = wait_gone(short) + wait_gone(long)
    assert not left, f"tool processes outlived their runner: {left}"
    # nothing is left that could still write them
    assert not (ws / "marker").exists() and not (ws / "done").exists()


async def test_recovery_kills_what_a_dead_runner_left_behind(tmp_path: Path) -> None:
    """A process that escaped the group (or a system without pdeathsig) is still marked
    with its runner: opening the store after that runner died kills it."""
    from shepherd.core.events import SessionStarted
    from shepherd.core.secrets import RUNNER_MARKER

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that has just exited: a runner that is gone
    host = socket.gethostname()
    db = tmp_path / "s.db"
    store = await Store.open(db)
    try:
        await store.append(SessionStarted(session_id="s1", title="t", backend="scripted", workspace=str(tmp_path)))

        async def fake_lease(conn) -> None:
            await conn.execute("INSERT OR REPLACE INTO leases (session_id, owner, expires_at, pid, host) "
                               "VALUES (?, ?, ?, ?, ?)", ("s1", f"{host}:{dead.pid}:x", time.time() + 600, dead.pid, host))

        await store.run_write(fake_lease)
    finally:
        await store.close()
    long, other = unique_seconds(30), unique_seconds(30)
    env = {**os.environ, RUNNER_MARKER: f"{host}:{dead.pid}"}
    orphan = subprocess.Popen(["sleep", long], env=env, start_new_session=True)
    bystander = subprocess.Popen(["sleep", other], env={**os.environ, RUNNER_MARKER: f"{host}:{os.getpid()}"},
                                 start_new_session=True)
    try:
        store = await Store.open(db)  # recovery
        try:
            assert (await store.get_session("s1")).status == "interrupted"
        finally:
            await store.close()
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None  # a live runner's tools are left alone
    finally:
        for p in (orphan, bystander):
            if p.poll() is None:
                p.kill()
            p.wait()


async def test_wrapped_commands_keep_exit_codes_and_output(tmp_path: Path) -> None:
    from shepherd.core.tools import execute

    res = await execute("echo out; echo err >&2; exit 3", tmp_path)
    assert res.exit_code == 3 and res.output == "out\nerr\n"
    res = await execute('printf "%s" "$0"', tmp_path)  # the command runs under sh, as before
    assert res.exit_code == 0 and res.output
