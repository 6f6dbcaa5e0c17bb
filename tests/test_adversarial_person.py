"""Entry points a person meets by accident, through the real `shepherd` process: task
files that are pipes, devices or saved by a Windows editor; databases locked by another
process or on a read-only mount. Each: one line, exit 2, nothing stored changed, no hang.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_adversarial_input import _build_db, refused, run, snapshot, task_text


def test_a_fifo_nobody_writes_to_is_refused_not_waited_on_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "task.toml"
    os.mkfifo(fifo)
    db = tmp_path / "s.db"
    line = refused(run("run", str(fifo), "--headless", "--db", str(db), timeout=30))
    assert str(fifo) in line and "pipe" in line, line
    assert not db.exists()


def test_a_device_is_not_a_task_file(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    line = refused(run("run", "/dev/zero", "--headless", "--db", str(db)))
    assert "not a regular file" in line, line
    assert not db.exists()


def test_a_task_file_from_a_pipe_runs(tmp_path: Path) -> None:
    """`shepherd run <(make-task)`: a pipe with a writer is read to its end."""
    (tmp_path / "ws").mkdir()
    read, write = os.pipe()
    os.write(write, task_text(tmp_path / "ws").encode())
    os.close(write)
    try:
        proc = subprocess.run([*run.__globals__["SHEPHERD"], "run", f"/dev/fd/{read}", "--headless",
                               "--db", str(tmp_path / "s.db")], pass_fds=(read,), capture_output=True,
                              text=True, timeout=60, cwd=run.__globals__["ROOT"],
                              env={**os.environ, "SHEPHERD_TIME_SCALE": "0.02"})
    finally:
        os.close(read)
    assert proc.returncode == 0, proc.stderr


def test_a_task_file_with_a_byte_order_mark_runs(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + task_text(tmp_path / "ws").replace("\n", "\r\n").encode())
    proc = run("run", str(path), "--headless", "--db", str(tmp_path / "s.db"))
    assert proc.returncode == 0, proc.stderr


def test_a_database_locked_by_another_process_is_one_line_after_a_bounded_wait(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    asyncio.run(_build_db(db))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE sessions SET title = title")
    try:
        started = time.monotonic()
        line = refused(run("run", "-p", "hi", "--backend", "scripted", "--headless", "--db", str(db), timeout=60))
        assert "locked by another process" in line and str(db) in line, line
        assert time.monotonic() - started < 40
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
    con.close()


@pytest.fixture
def read_only_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A directory bind-mounted read-only (the one read-only place root cannot write)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    asyncio.run(_build_db(ro / "s.db"))
    mounted = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True).returncode == 0 and \
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode == 0
    if not mounted:
        subprocess.run(["umount", str(ro)], capture_output=True)
        pytest.skip("cannot bind-mount a read-only directory here (needs root and mount rights)")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_database_on_a_read_only_mount_is_not_called_damaged(read_only_dir: Path) -> None:
    db = read_only_dir / "s.db"
    before = snapshot(db)
    for argv in (["run", "-p", "hi", "--backend", "scripted", "--headless"], ["pause", "s0000abcdef0"]):
        line = refused(run(*argv, "--db", str(db)))
        assert "damaged" not in line and "read-only" in line, line
    assert snapshot(db) == before


# --- the TUI ended by a signal ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_tui_demo_ended_by_a_signal_cleans_up_like_quit(tmp_path: Path, sig: str) -> None:
    """`kill` or a closed terminal window: the run is cancelled and recorded (not left
    `running`), the demo's temporary workspace is removed, exit 130."""
    import pty
    import signal
    import threading

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    db = tmp_path / "s.db"
    master, slave = pty.openpty()
    os.set_blocking(master, True)
    env = {**os.environ, "TMPDIR": str(tmpdir), "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    proc = subprocess.Popen([*run.__globals__["SHEPHERD"], "demo", "--db", str(db)], stdin=slave, stdout=slave,
                            stderr=slave, cwd=run.__globals__["ROOT"], env=env, start_new_session=True)
    os.close(slave)
    threading.Thread(target=lambda: _drain(master), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not _running_session(db) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)  # polling a real process's progress, not waiting for behaviour
        assert _running_session(db), f"the demo never started (exit {proc.poll()})"
        assert [p.name for p in tmpdir.iterdir() if p.name.startswith("shepherd-demo-")]
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("shepherd-demo-")]
    with sqlite3.connect(db) as con:
        assert [r[0] for r in con.execute("SELECT status FROM sessions")] == ["cancelled"]
    con.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def _running_session(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM sessions WHERE status = 'running'").fetchone()[0] > 0
        finally:
            con.close()
    except sqlite3.Error:
        return False


def test_a_demo_killed_outright_leaves_no_folder_for_long(tmp_path: Path) -> None:
    """SIGKILL cleans nothing; the next demo removes the folders of dead demo processes
    (and leaves a live one's, and folders it cannot attribute)."""
    import signal

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    db = tmp_path / "s.db"
    env = {"TMPDIR": str(tmpdir)}
    victim = subprocess.Popen([*run.__globals__["SHEPHERD"], "demo", "--headless", "--db", str(db)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=run.__globals__["ROOT"],
                              env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while not _running_session(db) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a real process's progress
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    left = [p.name for p in tmpdir.iterdir() if p.name.startswith("shepherd-demo-")]
    assert len(left) == 1  # what SIGKILL leaves
    (tmpdir / "shepherd-demo-unknown").mkdir()  # no owner file: not ours to judge
    assert run("demo", "--headless", "--db", str(db), env_extra=env).returncode == 0
    assert sorted(p.name for p in tmpdir.iterdir()) == ["shepherd-demo-unknown"]


def test_an_empty_filtered_listing_does_not_say_there_are_no_sessions(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    asyncio.run(_build_db(db))
    for argv in (["--status", "paused"], ["--search", "nothing-like-this"]):
        proc = run("sessions", *argv, "--db", str(db))
        assert proc.returncode == 0 and proc.stdout == "", proc
        assert proc.stderr.strip() == "No sessions match.", proc.stderr


# --- the TUI's run dialog --------------------------------------------------------------------------


async def test_the_run_dialog_reads_a_slow_task_file_without_freezing_the_screen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task file that is a pipe: the dialog keeps working while it is read (typing
    still edits), a second Enter starts nothing more, and the task runs once it arrives."""
    import shepherd.core.task
    from tests.test_tui_app import home_ready, wait_until
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.modals import RunModal

    monkeypatch.setattr(shepherd.core.task, "FIFO_WAIT_S", 60.0)
    (tmp_path / "ws").mkdir()
    fifo = tmp_path / "task.toml"
    os.mkfifo(fifo)
    app = ShepherdApp(tmp_path / "s.db")
    results: list[object] = []
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        modal = RunModal("file", initial=str(fifo))
        await app.push_screen(modal, results.append)
        await wait_until(pilot, lambda: app.screen is modal, what="run modal")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "reading" in modal.error_text, what="reading shown")
        await pilot.press("enter")  # impatient: must not read (or run) twice
        field = modal.query_one("#path")
        await pilot.press("end", "x")  # the loop is free: the keypress is handled now
        assert field.value == f"{fifo}x"
        writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)
        os.write(writer, task_text(tmp_path / "ws").encode())
        os.close(writer)
        await wait_until(pilot, lambda: bool(results), what="dialog closed with the task")
        await pilot.pause(0.1)
        assert len(results) == 1 and getattr(results[0], "title", None) == "t"


async def test_the_quit_question_for_several_runs_reads_right(tmp_path: Path) -> None:
    from shepherd.core.demo import demo_task
    from tests.test_tui_app import home_ready, screen_text, wait_until
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.modals import ConfirmModal

    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(120, 30)) as pilot:
        await home_ready(pilot)
        for n in (1, 2):
            await app.start_task(demo_task(tmp_path / f"w{n}"))  # 10 s first countdown: still live
        while app.screen is not app.home:  # back on the sessions list, where q quits
            await app.pop_screen()
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="quit question")
        text = " ".join(screen_text(app).split())
        assert "Quitting cancels them; they will show as cancelled." in text, text
        await pilot.press("escape")
        await app._stop_runs(wait_s=10)


def test_a_piped_log_is_one_event_a_line(tmp_path: Path) -> None:
    """`shepherd demo --headless 2>&1 | grep ...` and `shepherd show | grep`: no event is
    wrapped onto a continuation line without its time (Rich's default is 80 columns)."""
    import re

    db = tmp_path / "s.db"
    proc = run("demo", "--headless", "--db", str(db), env_extra={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    stamp = re.compile(r"^\d\d:\d\d:\d\d ")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) > 20 and all(stamp.match(ln) for ln in lines), [ln for ln in lines if not stamp.match(ln)]
    assert any(len(ln) > 80 for ln in lines)
    sid = proc.stderr.split("session ", 1)[1].split()[0]
    shown = run("show", sid, "--db", str(db), env_extra={"COLUMNS": "80"})
    body = [ln for ln in shown.stdout.splitlines()[1:] if ln.strip()]
    assert body and all(stamp.match(ln) for ln in body), [ln for ln in body if not stamp.match(ln)]


async def test_the_title_bar_counts_what_the_filter_shows_as_such(tmp_path: Path) -> None:
    from tests import tui_fixtures as fx
    from tests.test_tui_app import home_ready, make_db, screen_text, wait_until
    from shepherd.tui.app import ShepherdApp

    db = tmp_path / "s.db"
    await make_db(db, ["done", "failed"])
    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=(100, 24)) as pilot:
        home = await home_ready(pilot)
        assert "2 sessions" in screen_text(app)
        await pilot.press("slash", *"zzzz")
        await wait_until(pilot, lambda: not home.rows, what="no rows")
        assert "0 sessions match the filter" in screen_text(app)  # not "0 sessions": there are two
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(home.rows) == 2, what="both rows again")
        assert "2 sessions" in screen_text(app) and "match" not in screen_text(app)


@pytest.mark.parametrize("argv,name", [
    (["run", "-p", "hi \udc9b there", "--backend", "scripted", "--headless"], "prompt"),
    (["run", "-p", "hi", "--model", "m\udcff", "--backend", "scripted", "--headless"], "model"),
    (["show", "s\udc9b"], "session"),
])
def test_an_argument_that_is_not_utf8_is_refused_before_anything_is_stored(
        tmp_path: Path, argv: list[str], name: str) -> None:
    """A byte that is not UTF-8 (`-p $'\\x9b'`) arrives as a lone surrogate: it used to make
    the run's first write fail half-way, leaving a `failed (untitled)` session behind."""
    db = tmp_path / "s.db"
    proc = subprocess.run([*run.__globals__["SHEPHERD"], *[a.encode("utf-8", "surrogateescape") for a in argv],
                           "--db", str(db)], capture_output=True, text=True, timeout=60,
                          cwd=run.__globals__["ROOT"], env={**os.environ, "SHEPHERD_TIME_SCALE": "0.02"})
    line = refused(proc)
    assert line.startswith(f"shepherd: {name}: not valid UTF-8 text: '") and "\\x" in line, line
    assert not db.exists()


def test_an_empty_db_path_is_not_the_default_database(tmp_path: Path) -> None:
    """`--db "$UNSET_VARIABLE"` used to list (and run into) the default database."""
    home = tmp_path / "home"
    env = {"XDG_DATA_HOME": str(home), "SHEPHERD_DB": ""}
    for argv in (["sessions", "--db", ""], ["--db", " ", "run", "-p", "hi", "--backend", "scripted", "--headless"]):
        assert "--db: the path is empty" in refused(run(*argv, env_extra=env))
    assert not home.exists()


def test_a_symlink_loop_as_the_database_is_said_so_by_readers_too(tmp_path: Path) -> None:
    (tmp_path / "a.db").symlink_to(tmp_path / "b.db")
    (tmp_path / "b.db").symlink_to(tmp_path / "a.db")
    for argv in (["sessions"], ["show", "x"]):
        assert "symbolic links" in refused(run(*argv, "--db", str(tmp_path / "a.db")))


async def test_the_app_lets_go_of_the_signals_when_it_ends(tmp_path: Path) -> None:
    import signal

    from tests.test_tui_app import home_ready
    from shepherd.tui.app import ShepherdApp

    before = signal.getsignal(signal.SIGTERM)
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await home_ready(pilot)
        assert app._signals  # installed while it runs
    assert not app._signals and signal.getsignal(signal.SIGTERM) == before
