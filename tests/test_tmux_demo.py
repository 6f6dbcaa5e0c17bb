"""The real `shepherd demo` in a real terminal (tmux), driven as a person would.

tmux runs the installed console script on a private server socket; the test reads the
screen with ``capture-pane`` (bounded polling: it is an external process), presses keys
with ``send-keys``, and checks that quitting leaves the terminal clean: no alternate
screen, no mouse reporting, cursor visible, exit status 0.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Callable

import pytest

TOTAL_BUDGET_S = 60.0
POLL_S = 0.05


def _shepherd_script() -> str:
    scripts = Path(sysconfig.get_path("scripts"))
    found = shutil.which("shepherd", path=str(scripts)) or shutil.which("shepherd")
    assert found, "the `shepherd` console script is not installed (pip install -e .)"
    return found


class Tmux:
    def __init__(self, socket: str, session: str) -> None:
        self.base = ["tmux", "-L", socket, "-f", "/dev/null"]
        self.session = session
        self.deadline = time.monotonic() + TOTAL_BUDGET_S

    def run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10)
        if check and out.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def fmt(self, spec: str) -> str:
        return self.run("display-message", "-p", "-t", self.session, spec).strip()

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def wait_for(self, what: str, cond: Callable[[str], bool]) -> str:
        """Poll the screen until ``cond(screen)``; bounded by the test's total budget."""
        while True:
            screen = self.screen()
            if cond(screen):
                return screen
            if time.monotonic() > self.deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen was:\n{screen}")
            time.sleep(POLL_S)


def status_line(screen: str) -> str:
    """The session screen's status bar: the line above the footer."""
    lines = [ln for ln in screen.rstrip("\n").splitlines()]
    return lines[-2] if len(lines) >= 2 else ""


@pytest.fixture
def tmux(tmp_path: Path):
    assert shutil.which("tmux"), "tmux is required for this test (apt-get install -y tmux)"
    t = Tmux(socket=f"shepherd-test-{os.getpid()}", session="demo")
    yield t
    t.run("kill-server", check=False)


def test_shepherd_demo_in_tmux(tmux: Tmux, tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    state = tmp_path / "state"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        "TMPDIR": str(tmp),
        "SHEPHERD_DB": str(db),
        "SHEPHERD_TIME_SCALE": "0.2",
        "XDG_STATE_HOME": str(state),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "OPENAI_AGENTS_DISABLE_TRACING": "1",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
    }
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + f" {shlex.quote(_shepherd_script())} demo"
    # After shepherd exits the shell prints its exit status and stays, so the terminal
    # state after exit can be inspected on a live pane (a dead pane reports no cursor);
    # remain-on-exit keeps the pane even if the shell dies.
    command += "; echo SHEPHERD-EXIT:$?; sleep 60"
    tmux.run("new-session", "-d", "-s", tmux.session, "-x", "120", "-y", "36", command,
             ";", "set-option", "-w", "-t", tmux.session, "remain-on-exit", "on")

    # 1. The demo runs: tool calls appear, then the tool-concurrency retry (its countdown
    #    lasts 2 s nominal = 0.4 s here; afterwards the banner stays as "retry 1/5 after").
    tmux.wait_for("tool calls", lambda s: "list_files" in s and "read_file" in s)
    seen_countdown = False

    def retry_shown(s: str) -> bool:
        nonlocal seen_countdown
        seen_countdown = seen_countdown or "retry now" in s
        return "retry 1/5" in s

    tmux.wait_for("the retry countdown", retry_shown)
    assert seen_countdown, "the live countdown (with its 'retry now' hint) never showed"
    assert tmux.fmt("#{alternate_on}") == "1"  # the TUI owns the screen while it runs

    # 2. p pauses (at the next safe point), p again resumes.
    tmux.keys("p")
    tmux.wait_for("paused", lambda s: "paused" in status_line(s) and "pausing" not in status_line(s))
    tmux.keys("p")
    tmux.wait_for("resumed", lambda s: "paused" not in status_line(s)
                  and ("running" in status_line(s) or "done" in status_line(s)))

    # 3. Quit: with the run still live Shepherd asks first; yes cancels it and exits.
    tmux.keys("C-q")
    screen = tmux.wait_for("the quit question or the exit",
                           lambda s: "Quit Shepherd?" in s or "SHEPHERD-EXIT:" in s)
    asked = "Quit Shepherd?" in screen
    if asked:
        tmux.keys("y")
    final = tmux.wait_for("shepherd to exit", lambda s: "SHEPHERD-EXIT:" in s)

    # 4. The terminal is clean: normal screen, no mouse reporting, cursor shown, status 0.
    assert "SHEPHERD-EXIT:0" in final
    assert tmux.fmt("#{pane_dead}") == "0"  # the shell after it is still there
    assert tmux.fmt("#{alternate_on}") == "0"
    assert tmux.fmt("#{mouse_any_flag}#{mouse_button_flag}#{mouse_standard_flag}#{mouse_sgr_flag}") == "0000"
    assert tmux.fmt("#{cursor_flag}") == "1"
    assert "Traceback" not in final and "\x1b[" not in final
    # the shell's output starts at the top of the normal screen, nothing of the TUI left
    assert final.strip().splitlines()[0].startswith("SHEPHERD-EXIT:0")

    # 5. The store agrees: cancelled when we were asked (the run was still going), else done.
    with sqlite3.connect(db) as conn:
        (status,) = conn.execute("SELECT status FROM sessions").fetchone()
        types = [t for (t,) in conn.execute("SELECT type FROM events ORDER BY session_id, seq")]
    assert asked, f"the demo ended ({status}) before the quit question could be asked"
    assert status == "cancelled"
    assert "session.paused" in types and "session.resumed" in types
    assert "tool.started" in types and "retry.scheduled" in types
    # The demo's temporary workspace went with the process.
    assert os.listdir(tmp) == []
    # The log went to the file, never to the terminal.
    assert (state / "shepherd" / "shepherd.log").exists()
