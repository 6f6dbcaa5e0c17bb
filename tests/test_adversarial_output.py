"""Hostile text through every output channel (issue 8, items 2, 3 and 20).

Model text, titles, tool input and output, errors and notes carry terminal escape
sequences (OSC title/clipboard, CSI clear/move, C1, lone ESC, CR overwrite, bidi
overrides) and Rich/Textual markup. The store keeps them exactly (they are data); every
channel a person reads — the headless log, `shepherd show`, `shepherd sessions`, the
Markdown export, the TUI — shows them as visible marks and literal brackets, never as
instructions to the terminal or as markup. The JSONL export stays exact and parseable.

Two hostile sessions: one made by a real headless run of a scripted task file (real
Runner, real shell tool, real check), one written as events through a real Store (every
event kind, deltas that split a sequence, a 5 MB tool output).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shepherd.core import events as ev
from shepherd.core.clock import FakeClock
from shepherd.core.text import json_line_safe, safe
from tests import tui_fixtures as fx

SHEPHERD = [sys.executable, "-m", "shepherd.tui.cli"]
ROOT = Path(__file__).resolve().parents[1]

OSC_TITLE = "\x1b]0;pwned\x07"
OSC_TITLE_ST = "\x1b]2;x\x1b\\"
OSC_CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"
CSI_CLEAR = "\x1b[2J"
CSI_MOVE = "\x1b[10;10H\x1b[1A"
C1_CSI = "\x9b2J"
C1_OSC = "\x9d0;t\x9c"
LONE_ESC = "a\x1bb"
CR_OVERWRITE = "rm -rf ~\rls -la  "
BIDI = "access\u202e\u2066 level\u2069\u202c"
MARKUP = ["[/src/old]", "[bold red]x[/]", "[link=file:///etc/passwd]x[/link]", "[@click=app.quit]q[/]",
          "\\[", "trail\\"]
ESCAPES = [OSC_TITLE, OSC_TITLE_ST, OSC_CLIPBOARD, CSI_CLEAR, CSI_MOVE, C1_CSI, C1_OSC, LONE_ESC,
           CR_OVERWRITE, BIDI]
EVIL = " ".join(ESCAPES + MARKUP)
TITLE = f"Move [/src/old] into [new] {OSC_TITLE}{CSI_CLEAR}{C1_CSI} [@click=app.quit]q[/]"

# What must never reach a terminal: C0 except newline/tab, DEL, C1, bidi controls.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # Rich's own colours on a terminal


def raw_controls(text: str, *, allow_sgr: bool = False) -> list[str]:
    if allow_sgr:
        text = SGR.sub("", text)
    return sorted({repr(c) for c in RAW.findall(text)})


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "SHEPHERD_TIME_SCALE": "0.02", **(env or {})}
    return subprocess.run([*SHEPHERD, *args], capture_output=True, text=True, timeout=timeout, env=full,
                          cwd=ROOT, encoding="utf-8", errors="surrogateescape")


def run_on_tty(*args: str, columns: int = 80) -> tuple[int, str]:
    """The CLI with stdout on a pseudo-terminal ``columns`` wide (what a person sees)."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([*SHEPHERD, *args], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace").replace("\r\n", "\n")


HOSTILE_TOML = r'''
title = "Move [/src/old] into [new] \u001b]0;pwned\u0007\u001b[2J\u009b2J [@click=app.quit]q[/]"
backend = "scripted"
model = "scripted-demo"
workspace = "ws"

[[subtasks]]
id = "a"
title = "sub \u001b]2;x\u001b\\ [link=file:///etc/passwd]x[/link] \u009d0;t\u009c"
prompt = "Do it."
check = "printf 'check \\033]0;chk\\007 ok\\n'"

  [[subtasks.steps]]
  text = "said \u001b]0;pwned\u0007 \u001b]52;c;ZXZpbA==\u0007 \u001b[2J \u001b[10;10H \u009b2J a\u001bb rm -rf ~\rls -la access\u202e\u2066 level\u2069\u202c [/src/old] [bold red]x[/] [@click=app.quit]q[/] \\[ trail\\"
  tools = [{ name = "run_command", args = { command = "printf 'out \\033]0;tool\\007 \\033[2J \\302\\233 2J cr\\roverwrite \\342\\200\\256rtl [/src/old]\\n'; exit 3" } }]
'''

TOOL_OUTPUT_RAW = "out \x1b]0;tool\x07 \x1b[2J \x9b 2J cr\roverwrite \u202ertl [/src/old]"


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real `shepherd run --headless` of the hostile task file."""
    base = tmp_path_factory.mktemp("hostile")
    (base / "ws").mkdir()
    task = base / "hostile.toml"
    task.write_text(HOSTILE_TOML, encoding="utf-8")
    db = base / "s.db"
    proc = run("run", str(task), "--headless", "--db", str(db))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sid = json.loads(run("sessions", "--json", "--db", str(db)).stdout.splitlines()[0])["id"]
    return {"db": db, "sid": sid, "log": proc.stderr}


BIG = 5 * 1024 * 1024


async def shape_hostile(store: Any, sid: str, t0: float) -> None:
    """Every event kind a person reads, each carrying hostile text."""
    w = fx.Writer(store, sid, t0)
    await w.start(TITLE, subtasks=[{"id": "a", "title": f"sub {OSC_TITLE_ST} {MARKUP[2]}", "prompt": EVIL}])
    await w.subtask_start(1, "a", f"sub {OSC_TITLE_ST} {MARKUP[2]}", extra=f"note {OSC_CLIPBOARD} [bold]n[/]")
    await w.add(1.1, ev.ThinkingDelta(message_id="t1", text=f"thinking {CSI_MOVE}"))
    await w.say(1.2, f"said {EVIL}", mid="m1", chunk=3)  # chunks cut sequences in the middle
    await w.say(1.5, f"cut off {OSC_TITLE}", mid="m2", complete=False)
    await w.tool(2.0, "c1", "run_command", {"command": f"echo {OSC_TITLE} {MARKUP[0]}"},
                 output=f"{TOOL_OUTPUT_RAW}\n" + "\x1b[31mred\x1b[0m\n```\nnot a fence end\n", status="error")
    await w.tool(2.5, "c2", "run_command", {"command": "yes | head -c 5M"},
                 output=(("y" * 99 + "\n") * (BIG // 100)) + OSC_TITLE)
    await w.add(3, ev.HookDecision(call_id="c3", tool=f"rm {CSI_CLEAR}", decision="deny", reason=f"no {C1_OSC} [b]"))
    await w.add(3.1, ev.Error(kind="transient", message=f"boom {OSC_TITLE} {MARKUP[0]}", retryable=True))
    await w.add(3.2, ev.RetryScheduled(kind="transient", retry_no=1, max_retries=3, delay_s=1, resume_at=t0 + 4.2))
    await w.add(3.3, ev.Control(command="note", source="cli", text=f"hi {CR_OVERWRITE} {MARKUP[3]}"))
    await w.attempt_start(4.2, 2, "retry")
    await w.finish_subtask(5, "failed", reason=f"gave up {BIDI} [/]")
    await w.finish(6, "failed", reason=f"failed {OSC_CLIPBOARD} [/src/old]")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("written") / "s.db"
    sid = "s6b49d200b0ad"

    async def build() -> None:
        store = await fx.open_store(db, FakeClock(start=fx.T0 - 1))
        try:
            await shape_hostile(store, sid, fx.T0)
        finally:
            await store.close()

    asyncio.run(build())
    return {"db": db, "sid": sid}


async def stored_events(db: Path, sid: str) -> list[ev.Event]:
    from shepherd.core.store.db import Store

    store = await Store.open(db)
    try:
        return await store.events(sid, after_seq=0, limit=100_000)
    finally:
        await store.close()


# --- the store: exact ----------------------------------------------------------------------------


def test_the_store_keeps_hostile_text_exactly(headless: dict[str, Any], written: dict[str, Any]) -> None:
    events = asyncio.run(stored_events(headless["db"], headless["sid"]))
    started = next(e for e in events if isinstance(e, ev.SessionStarted))
    assert started.title == "Move [/src/old] into [new] \x1b]0;pwned\x07\x1b[2J\x9b2J [@click=app.quit]q[/]"
    said = next(e for e in events if isinstance(e, ev.MessageCompleted) and e.text.startswith("said"))
    assert OSC_TITLE in said.text and OSC_CLIPBOARD in said.text and "\rls -la" in said.text and BIDI in said.text
    out = next(e for e in events if isinstance(e, ev.ToolFinished) and e.call_id != "" and "out " in e.output)
    assert TOOL_OUTPUT_RAW in out.output
    events = asyncio.run(stored_events(written["db"], written["sid"]))
    big = next(e for e in events if isinstance(e, ev.ToolFinished) and e.call_id == "c2")
    assert len(big.output) == (BIG // 100) * 100 + len(OSC_TITLE) and big.output.endswith(OSC_TITLE)


# --- the sanitiser -----------------------------------------------------------------------------------


def test_safe_makes_every_control_visible_and_keeps_text() -> None:
    assert safe("plain\ttext\nline 2 [b]x[/]") == "plain\ttext\nline 2 [b]x[/]"
    assert safe(OSC_TITLE) == "␛]0;pwned␇"
    assert safe(OSC_TITLE_ST) == "␛]2;x␛\\"
    assert safe(C1_CSI) == "\\x9b2J" and safe(C1_OSC) == "\\x9d0;t\\x9c"
    assert safe(CR_OVERWRITE) == "rm -rf ~␍ls -la  " and safe("a\r\nb") == "a\nb"
    assert safe(BIDI) == "access\\u202e\\u2066 level\\u2069\\u202c"
    assert safe("\x1b[1;31mred\x1b[0m \x7f \x00") == "red ␡ ␀"  # colour codes carry no text
    assert safe("\ud800") == "\ufffd"  # a lone surrogate cannot be written to a terminal
    assert safe("👨\u200d👩\u200d👧") == "👨\u200d👩\u200d👧"  # joiners are part of emoji
    for hostile in ESCAPES:
        assert not raw_controls(safe(hostile))


def test_safe_is_fast_enough_for_every_delta() -> None:
    clean = "A line of ordinary model output with `code` and ünïcödé. " * 2
    n = 20_000
    t = time.perf_counter()
    for _ in range(n):
        safe(clean)
    per_clean = (time.perf_counter() - t) / n
    big = ("y" * 99 + "\n") * (BIG // 100) + OSC_TITLE
    t = time.perf_counter()
    safe(big)
    per_big = time.perf_counter() - t
    # measured ~0.3 µs per clean delta, ~40 ms for 5 MB with a control in it (2-core box)
    assert per_clean < 20e-6, per_clean
    assert per_big < 2.0, per_big


# --- the headless log, `show` ------------------------------------------------------------------------


def test_headless_log_shows_controls_as_marks(headless: dict[str, Any]) -> None:
    log = headless["log"]
    assert not raw_controls(log), raw_controls(log)
    assert "␛]0;pwned␇" in log and "\\x9b2J" in log and "␍ls -la" in log and "\\u202e" in log
    assert "[/src/old]" in log and "[@click=app.quit]q[/]" in log  # markup shows as typed
    assert "session done" in log


@pytest.mark.parametrize("which", ["headless", "written"])
def test_show_is_safe_and_does_not_die_on_markup(which: str, headless: dict[str, Any],
                                                 written: dict[str, Any]) -> None:
    s = headless if which == "headless" else written
    proc = run("show", s["sid"], "--db", str(s["db"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not raw_controls(proc.stdout), raw_controls(proc.stdout)
    assert "Move [/src/old] into [new] ␛]0;pwned␇␛[2J\\x9b2J [@click=app.quit]q[/]" in proc.stdout
    code, out = run_on_tty("show", s["sid"], "--db", str(s["db"]), columns=100)
    assert code == 0 and "Traceback" not in out
    assert not raw_controls(out, allow_sgr=True), raw_controls(out, allow_sgr=True)


# --- `shepherd sessions` ----------------------------------------------------------------------------


def test_sessions_piped_is_plain_one_row_a_line(headless: dict[str, Any]) -> None:
    proc = run("sessions", "--db", str(headless["db"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not raw_controls(proc.stdout)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    fields = lines[0].split("\t")
    assert fields[0] == headless["sid"] and fields[1] == "done" and len(fields) == 9
    assert fields[2] == "Move [/src/old] into [new] ␛]0;pwned␇␛[2J\\x9b2J [@click=app.quit]q[/]"


def test_sessions_json_is_exact(headless: dict[str, Any]) -> None:
    proc = run("sessions", "--json", "--db", str(headless["db"]))
    assert not raw_controls(proc.stdout)  # JSON escapes them
    row = json.loads(proc.stdout)
    assert row["title"] == "Move [/src/old] into [new] \x1b]0;pwned\x07\x1b[2J\x9b2J [@click=app.quit]q[/]"


def test_sessions_on_a_terminal_is_safe(headless: dict[str, Any]) -> None:
    code, out = run_on_tty("sessions", "--db", str(headless["db"]), columns=80)
    assert code == 0 and "Traceback" not in out, out[-2000:]
    assert not raw_controls(out, allow_sgr=True), raw_controls(out, allow_sgr=True)
    assert headless["sid"] in out


async def _many_titles(db: Path) -> list[str]:
    store = await fx.open_store(db, FakeClock(start=fx.T0 - 1))
    ids = []
    try:
        for i, title in enumerate(["Fix the flaky retry test in the engine and document the new "
                                   "behaviour for the people who maintain the scheduler", "Short",
                                   "Update the changelog"]):
            sid = f"s6b49d200c00{i}"
            w = fx.Writer(store, sid, fx.T0 + i)
            await w.start(title, backend="claude", model="claude-sonnet-4-5")
            await w.finish(2, "done")
            ids.append(sid)
    finally:
        await store.close()
    return ids


def test_sessions_at_80_columns_keeps_ids_whole_and_titles_on_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    ids = asyncio.run(_many_titles(db))
    code, out = run_on_tty("sessions", "--db", str(db), columns=80)
    assert code == 0, out
    lines = [SGR.sub("", ln) for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 + len(ids), out  # a header and one line per session: nothing wraps
    for sid in ids:
        assert any(ln.startswith(sid + " ") for ln in lines), (sid, out)
    assert all(len(ln.rstrip()) <= 80 for ln in lines), out
    assert any("Fix the flaky retry" in ln and "…" in ln for ln in lines), out  # cut, with an ellipsis
    assert "Update the changelog" in out


def test_sessions_piped_prints_full_values_for_grep_and_cut(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    ids = asyncio.run(_many_titles(db))
    proc = run("sessions", "--db", str(db), env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ids[::-1]  # newest first, whole ids
    assert "\x1b" not in proc.stdout  # no colour in a pipe
    long = next(ln for ln in lines if "flaky" in ln).split("\t")
    assert long[2].endswith("people who maintain the scheduler") and long[3] == "claude/claude-sonnet-4-5"


# --- exports ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["headless", "written"])
def test_markdown_export_is_safe(which: str, headless: dict[str, Any], written: dict[str, Any]) -> None:
    s = headless if which == "headless" else written
    proc = run("export", s["sid"], "--format", "md", "--db", str(s["db"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = proc.stdout
    assert not raw_controls(md), raw_controls(md)
    assert "# Move [/src/old] into [new] ␛]0;pwned␇␛[2J\\x9b2J" in md
    if which == "written":
        # a ``` inside tool output does not end its code block: the fence is longer
        block = re.search(r"^(`{4,})text\n(.*?)^\1$", md, re.S | re.M)
        assert block is not None and "not a fence end" in block.group(2), md[:3000]
        assert "| sub ␛]2;x␛\\ [link=file:///etc/passwd]x[/link] |" in md


@pytest.mark.parametrize("which", ["headless", "written"])
def test_jsonl_export_is_exact_and_one_event_a_line(which: str, headless: dict[str, Any],
                                                    written: dict[str, Any]) -> None:
    s = headless if which == "headless" else written
    proc = run("export", s["sid"], "--format", "jsonl", "--db", str(s["db"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not raw_controls(proc.stdout), raw_controls(proc.stdout)
    stored = asyncio.run(stored_events(s["db"], s["sid"]))
    lines = proc.stdout.splitlines()  # str.splitlines also breaks at NEL and U+2028: none left raw
    assert len(lines) == len(stored)
    assert [json.loads(ln) for ln in lines] == [json.loads(e.to_json()) for e in stored]


def test_run_json_stream_is_exact_and_one_event_a_line(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    task = tmp_path / "hostile.toml"
    task.write_text(HOSTILE_TOML, encoding="utf-8")
    db = tmp_path / "s.db"
    proc = run("run", str(task), "--json", "--db", str(db))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not raw_controls(proc.stdout) and not raw_controls(proc.stderr)
    lines = proc.stdout.splitlines()
    sid = json.loads(lines[0])["session_id"]
    stored = asyncio.run(stored_events(db, sid))
    assert [json.loads(ln) for ln in lines] == [json.loads(e.to_json()) for e in stored]
    said = next(json.loads(ln) for ln in lines if '"message.completed"' in ln and "said" in ln)
    assert OSC_TITLE in said["text"] and "\x9b2J" in said["text"]


def test_json_line_safe_round_trips() -> None:
    value = {"t": "\x9b\x85\u2028\u2029\u202e\x7f\ud800 ok \\u009b", "k\x9d": ["\x1b"]}
    dumped = json.dumps(value, ensure_ascii=False)
    escaped = json_line_safe(dumped)
    assert json.loads(escaped) == value
    assert not raw_controls(escaped) and len(escaped.splitlines()) == 1


# --- the TUI -------------------------------------------------------------------------------------------


def rendered(app: Any) -> str:
    """Every character the compositor would send for the current screen (toasts included)."""
    return "".join(seg.text for strip in app.screen._compositor.render_strips() for seg in strip)


async def _wait(pilot: Any, cond: Any, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


@pytest.mark.parametrize("which", ["headless", "written"])
async def test_tui_home_and_session_show_no_raw_control_and_no_markup(
        which: str, headless: dict[str, Any], written: dict[str, Any]) -> None:
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.session import SessionScreen

    s = headless if which == "headless" else written
    app = ShepherdApp(s["db"], clock=lambda: fx.NOW)
    async with app.run_test(size=(160, 50)) as pilot:
        await _wait(pilot, lambda: app.home is not None and app.home.loaded, "home")
        await pilot.pause(0.1)
        home_text = rendered(app)
        assert not raw_controls(home_text), raw_controls(home_text)
        assert "Move [/src/old] into [new] ␛]0;pwned␇␛[2J" in home_text  # literal brackets, visible ESC
        await app.open_session(s["sid"])
        await _wait(pilot, lambda: isinstance(app.screen, SessionScreen), "session screen")
        screen = app.screen
        await asyncio.wait_for(screen.loaded.wait(), 20)
        await pilot.pause(0.2)
        text = rendered(app)
        assert not raw_controls(text), raw_controls(text)
        assert "[/src/old]" in text and "␛]0;pwned␇" in text
        # clicking what looks like an action in data does nothing: it is text, not a link
        assert "[@click=app.quit]q[/]" in text
        assert app.is_running and not [n for n in app._notifications if n.severity == "error"]


async def test_tui_filter_text_is_not_markup(tmp_path: Path) -> None:
    from shepherd.tui.app import ShepherdApp

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["done"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await _wait(pilot, lambda: app.home is not None and app.home.loaded, "home")
        app.home.query_one("#filter").value = "[/src/old] [@click=app.quit]q[/]"
        await _wait(pilot, lambda: not app.home.rows, "no match")
        await pilot.pause(0.3)
        text = rendered(app)
        assert "No sessions match “[/src/old] [@click=app.quit]q[/]”" in text
        assert app.is_running


# --- the TUI in a real terminal ------------------------------------------------------------------------


def test_tui_in_tmux_leaves_the_pane_title_and_screen_alone(headless: dict[str, Any], tmp_path: Path) -> None:
    """The issue's reproduction: opening the session in the TUI set the tmux pane title."""
    import shlex
    import shutil

    from tests.test_tmux_demo import Tmux, _shepherd_script

    assert shutil.which("tmux"), "tmux is required for this test (apt-get install -y tmux)"
    tmux = Tmux(socket=f"shepherd-adv-{os.getpid()}", session="adv")
    env = {"SHEPHERD_DB": str(headless["db"]), "XDG_STATE_HOME": str(tmp_path / "state"),
           "TERM": "xterm-256color", "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
    command = "env -u COLUMNS -u LINES " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) \
        + f" {shlex.quote(_shepherd_script())}"  # the pane's size, not the test runner's
    try:
        tmux.run("new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "40",
                 command + "; echo SHEPHERD-EXIT:$?; sleep 60",
                 ";", "set-option", "-w", "-t", tmux.session, "window-size", "manual",
                 ";", "resize-window", "-t", tmux.session, "-x", "160", "-y", "40")
        tmux.run("set-option", "-p", "-t", tmux.session, "allow-set-title", "on", check=False)
        tmux.run("select-pane", "-t", tmux.session, "-T", "before")
        # the title row shows, literally: the CSI 2J in it did not clear the list
        tmux.wait_for("the home list", lambda s: "Move [/src/old] into [new] ␛]0;pwned␇" in s)
        tmux.keys("Enter")
        tmux.wait_for("the session", lambda s: "said ␛]0;pwned␇" in s)
        assert tmux.fmt("#{pane_title}") == "before"
        tmux.keys("C-q")
        # quit, and gone before the server is killed: a TUI still shutting down when its
        # terminal vanished was left running, orphaned, after the suite
        assert "SHEPHERD-EXIT:0" in tmux.wait_for("shepherd to exit", lambda s: "SHEPHERD-EXIT:" in s)
    finally:
        tmux.run("kill-server", check=False)


async def test_toasts_show_error_text_with_visible_controls(tmp_path: Path) -> None:
    """Error texts quote model and tool output; a toast is a terminal channel too."""
    from shepherd.tui.app import ShepherdApp

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["done"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await _wait(pilot, lambda: app.home is not None and app.home.loaded, "home")
        app.home.notify(f"no {OSC_TITLE} {C1_CSI}", title=f"t {CSI_CLEAR}", severity="error", markup=False)
        await pilot.pause(0.3)
        text = rendered(app)
        assert "no ␛]0;pwned␇ \\x9b2J" in text and "t ␛[2J" in text
        assert not raw_controls(text), raw_controls(text)


def test_the_log_file_shows_controls_as_marks(tmp_path: Path) -> None:
    import logging

    from tests.test_tui_app import logging_kept
    from shepherd.tui.logging_setup import configure_logging

    path = tmp_path / "shepherd.log"
    with logging_kept():
        configure_logging(path)
        logging.getLogger("shepherd.test").info("started run %s (%s)", "s1", TITLE)
        try:
            raise RuntimeError(f"tool said {OSC_CLIPBOARD}{CR_OVERWRITE}")
        except RuntimeError:
            logging.getLogger("shepherd.test").exception("failed")
    text = path.read_bytes().decode("utf-8")  # not read_text: it would turn a CR into a newline
    assert "Move [/src/old] into [new] ␛]0;pwned␇␛[2J\\x9b2J" in text and "␛]52;c;" in text
    assert "Traceback" in text and not raw_controls(text), raw_controls(text)


async def test_tui_export_file_name_stays_in_its_directory(tmp_path: Path) -> None:
    """A database from elsewhere can hold any session id: the `e` export's file name is
    built from it and must neither leave the directory nor carry controls."""
    from shepherd.tui.screens.session import export_session

    db = tmp_path / "db" / "s.db"
    db.parent.mkdir()
    sid = f"../../evil{OSC_TITLE}"
    store = await fx.open_store(db, FakeClock(start=fx.T0 - 1))
    try:
        w = fx.Writer(store, sid, fx.T0)
        await w.start(TITLE)
        await w.finish(1, "done")
        path = await export_session(store, sid)
    finally:
        await store.close()
    assert path.parent == db.parent and path.name.startswith("shepherd-") and not raw_controls(path.name)
    text = path.read_bytes().decode("utf-8")
    assert not raw_controls(text) and "␛]0;pwned␇" in text


async def test_tui_shows_a_hostile_session_id_as_text(tmp_path: Path) -> None:
    """Ids stay exact in the model (they address the store and commands) and are made
    safe where they are shown: the home's id column and the session header."""
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    sid = f"s6{OSC_TITLE}"  # fits the id column
    store = await fx.open_store(db, FakeClock(start=fx.T0 - 1))
    try:
        w = fx.Writer(store, sid, fx.T0)
        await w.start("benign")
        await w.finish(1, "done")
    finally:
        await store.close()
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(160, 30)) as pilot:
        await _wait(pilot, lambda: app.home is not None and app.home.loaded, "home")
        await pilot.pause(0.1)
        assert not raw_controls(rendered(app)) and "s6␛]0;pwned␇" in rendered(app)
        await app.open_session(sid)
        await _wait(pilot, lambda: isinstance(app.screen, SessionScreen), "session screen")
        await asyncio.wait_for(app.screen.loaded.wait(), 20)
        await pilot.pause(0.2)
        assert app.screen.model.session.title == "benign"  # the exact id found the session
        assert not raw_controls(rendered(app)) and "s6␛]0;pwned␇" in rendered(app)


async def test_run_modal_error_quoting_the_task_file_is_text(tmp_path: Path) -> None:
    """The run dialog's one-line error quotes the path and the file: never markup."""
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.modals import RunModal

    (tmp_path / "[b]x[").mkdir()
    bad = tmp_path / "[b]x[" / "src] [@click=app.quit]q.toml"  # the path reads "[b]x[/src] …"
    bad.write_text('title = "x"\nbackend = "scripted"\n[[subtasks]]\nid = "a"\n')  # no prompt
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(160, 30)) as pilot:
        await _wait(pilot, lambda: app.home is not None and app.home.loaded, "home")
        await pilot.press("o")
        await _wait(pilot, lambda: isinstance(app.screen, RunModal), "run modal")
        modal = app.screen
        modal.query_one("#path").value = str(bad)
        await pilot.press("enter")
        await _wait(pilot, lambda: "missing prompt" in modal.error_text, "inline error")
        await pilot.pause(0.2)
        from tests.test_tui_app import screen_text

        # The modal wraps the path where its length (tmp_path's) puts the break: compare
        # the text with whitespace and the dialog's border glyphs taken out.
        flat = re.sub(r"[\s█▊▎▔▁]+", "", screen_text(app))
        assert "x[/src][@click=app.quit]q.toml:subtasks[0].prompt" in flat, screen_text(app)
        assert app.is_running and app.screen is modal
