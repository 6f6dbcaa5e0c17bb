"""Notifications (core/notify.py) and the user config (core/config.py): the exact bytes a
terminal gets (bell, OSC 9, OSC 777, through tmux), hostile fields made harmless, one
notification per wait (in a process, and for ``notify_command`` across processes on one
database), the config file's errors as one line and exit 2, and a real headless run whose
end runs the user's command with (session id, title, reason)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from shepherd.core.config import ConfigError, UserConfig, config_path, load_config, parse_config
from shepherd.core.events import (ApprovalDecided, ApprovalRequested, AttemptStarted, SessionFinished, SessionStarted,
                                  SubtaskFinished, SubtaskStarted, ToolStarted)
from shepherd.core.notify import Notice, Notifier, clean, notices_in, terminal_text, tmux_wrap
from shepherd.core.store import Store
from tests.cli_helpers import run, write_task
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)

RECORDER = """\
import json, sys
with open(sys.argv[1], "a", encoding="utf-8") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
"""

NO_TMUX = {"TERM": "xterm-256color"}
IN_TMUX = {"TERM": "tmux-256color", "TMUX": "/tmp/tmux-0/default,1,0"}
NOTICE = Notice("s1", 7, "approval", "waiting for approval: Bash make deploy", title="Fix it")


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never the user's own config file."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def _recorder(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    out = tmp_path / "calls.jsonl"
    return [sys.executable, str(script), str(out)], out


def _calls(out: Path) -> list[list[str]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


# --- exact bytes ----------------------------------------------------------------------------


def test_terminal_bytes_bell_osc9_osc777_and_tmux() -> None:
    osc9 = "\x1b]9;Shepherd: Fix it: waiting for approval: Bash make deploy\x07"
    assert terminal_text(NOTICE, UserConfig(), NO_TMUX) == "\a" + osc9
    assert terminal_text(NOTICE, UserConfig(desktop="osc9", bell=False), NO_TMUX) == osc9
    osc777 = "\x1b]777;notify;Shepherd: Fix it;waiting for approval: Bash make deploy\x07"
    assert terminal_text(NOTICE, UserConfig(desktop="osc777"), NO_TMUX) == "\a" + osc777
    assert terminal_text(NOTICE, UserConfig(), {"TERM": "foot"}) == "\a" + osc777  # auto: foot takes 777
    assert terminal_text(NOTICE, UserConfig(), {"TERM": "linux"}) == "\a"  # auto: not on the Linux console
    assert terminal_text(NOTICE, UserConfig(desktop="osc9"), {"TERM": "linux"}) == "\a" + osc9  # asked for
    # tmux: the OSC passed through (ESC doubled inside DCS tmux; ... ST), the bell as it is
    assert terminal_text(NOTICE, UserConfig(), IN_TMUX) == "\a\x1bPtmux;\x1b\x1b]9;Shepherd: Fix it: waiting for " \
                                                           "approval: Bash make deploy\x07\x1b\\"
    assert tmux_wrap("\x1b]9;x\x07") == "\x1bPtmux;\x1b\x1b]9;x\x07\x1b\\"
    assert terminal_text(NOTICE, UserConfig(desktop="off"), IN_TMUX) == "\a"
    assert terminal_text(NOTICE, UserConfig(desktop="off", bell=False), NO_TMUX) == ""
    assert terminal_text(NOTICE, UserConfig(notify=False), NO_TMUX) == ""


HOSTILE = ("\x1b]0;owned\x07\x1b]52;c;cGF5bG9hZA==\x07\x9b31m[bold red]x[/bold red];a;b\r\n\t\x00\x7f"
           + "z" * 10_000)


def _no_controls_but_framing(text: str) -> None:
    """Only the sequences' own ESC/BEL are left; no other C0/C1 byte at all."""
    stripped = re.sub(r"\x1b\]9;[^\x1b\x07]*\x07|\x1b\]777;notify;[^;\x1b\x07]*;[^\x1b\x07]*\x07", "OSC", text)
    stripped = stripped.removeprefix("\a")
    assert re.search("[\x00-\x1f\x7f-\x9f]", stripped) is None, repr(stripped[:200])


def test_hostile_fields_are_sanitised() -> None:
    evil = Notice("s1", 3, "approval", HOSTILE, title=HOSTILE)
    for mode in ("osc9", "osc777"):
        text = terminal_text(evil, UserConfig(desktop=mode), NO_TMUX)
        _no_controls_but_framing(text)
        assert "[bold red]x[/bold red]" in text  # data, shown as it is (never markup)
        assert len(text) < 2 * 200 + 40
    text = terminal_text(evil, UserConfig(desktop="osc777"), NO_TMUX)
    title = text.split(";")[2]
    assert text.startswith("\a\x1b]777;notify;") and ";" not in title and len(title) <= 200
    body = text[len("\a\x1b]777;notify;") + len(title) + 1:-1]
    assert len(body) <= 200 and "\x1b" not in body and "\x07" not in body
    assert "␛]0;owned␇" in text  # visible marks instead of the controls
    # in tmux too: the only ESCs are the wrapper's and the doubled introducer
    wrapped = terminal_text(evil, UserConfig(desktop="osc9"), IN_TMUX)
    assert wrapped.count("\x1b") == 4 and wrapped.count("\x07") == 2
    assert clean("a\nb\tc") == "a b c" and len(clean("x" * 10_000)) == 200


# --- which events ---------------------------------------------------------------------------


def test_notices_in_a_batch() -> None:
    req = ApprovalRequested(session_id="s", seq=5, call_id="c1", tool="Bash", input={"command": "make deploy"})
    ruled = ApprovalDecided(session_id="s", seq=6, call_id="c1", decision="approved", source="rule")
    assert [n.reason for n in notices_in([req])] == ["waiting for approval: Bash make deploy"]
    assert notices_in([req, ruled]) == []  # a rule's yes comes with the request: nobody waits
    stuck = SubtaskFinished(session_id="s", seq=9, subtask_id="fix", status="stuck",
                            reason="check failed: 2 retries exhausted")
    assert [(n.kind, n.seq, n.reason) for n in notices_in([stuck])] == [
        ("stuck", 9, "stuck: subtask fix: check failed: 2 retries exhausted")]
    again = AttemptStarted(session_id="s", seq=10, subtask_id="fix", reason="user_retry")
    assert notices_in([stuck, again]) == []
    assert notices_in([SubtaskFinished(session_id="s", seq=9, subtask_id="fix", status="done")]) == []
    end = SessionFinished(session_id="s", seq=11, status="failed", reason="subtask fix stuck")
    assert [(n.kind, n.reason) for n in notices_in([end])] == [("finished", "session failed: subtask fix stuck")]


async def _store(tmp_path: Path, name: str = "s.db") -> Store:
    return await Store.open(tmp_path / name)


async def test_one_notification_per_wait_and_none_for_a_rule(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    written: list[str] = []
    notifier = Notifier(store, UserConfig(desktop="osc9"), terminal=written.append, env=NO_TMUX).start()
    try:
        await store.append(SessionStarted(session_id="s1", title="Deploy"))
        await store.append(ToolStarted(session_id="s1", call_id="c0", name="Bash", input={"command": "pytest"}))
        # a rule approval: requested and decided in one commit
        await store.append_together(
            ApprovalRequested(session_id="s1", call_id="c0", tool="Bash", input={"command": "pytest"}),
            ApprovalDecided(session_id="s1", call_id="c0", decision="approved", source="rule"))
        await notifier.drain()
        assert written == []
        # a rule's yes committed just after its request (not in the same batch): held, dropped
        await store.append(ApprovalRequested(session_id="s1", call_id="c9", tool="Bash", input={"command": "ls"}))
        await store.append(ApprovalDecided(session_id="s1", call_id="c9", decision="approved", source="rule"))
        await notifier.drain()
        assert written == []
        req = await store.append(ApprovalRequested(session_id="s1", call_id="c1", tool="Bash",
                                                   input={"command": "make deploy"}))
        await notifier.drain()
        notifier.feed([req])  # the same event again (e.g. seen by the poll too): told once
        await notifier.drain()
        assert written == ["\a\x1b]9;Shepherd: Deploy: waiting for approval: Bash make deploy\x07"]
        # asked again after a resume: a new event, a new wait, a new notification
        await store.append(ApprovalRequested(session_id="s1", call_id="c1", tool="Bash",
                                             input={"command": "make deploy"}, reask_of="c1"))
        await notifier.drain()
        assert len(written) == 2 and written[1] == written[0]
    finally:
        await notifier.close()
        await store.close()


async def test_stuck_then_session_end_is_one_notification(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    written: list[str] = []
    notifier = Notifier(store, UserConfig(desktop="off"), terminal=written.append, env=NO_TMUX, hold_s=30)
    try:
        await store.append(SessionStarted(session_id="s1", title="T"))
        await store.append(SubtaskStarted(session_id="s1", subtask_id="fix"))
        stuck = await store.append(SubtaskFinished(session_id="s1", subtask_id="fix", status="stuck", reason="r"))
        end = await store.append(SessionFinished(session_id="s1", status="failed", reason="subtask fix stuck"))
        notifier.feed([stuck])
        notifier.feed([end])  # a headless run's end right after: merged into the end's notice
        await notifier.drain()
        assert written == ["\a"]
        notifier.feed([stuck])
        notifier.feed([end])
        await notifier.drain()
        assert written == ["\a"]  # both keys told already
    finally:
        await notifier.close()
        await store.close()


async def test_off_entirely_subscribes_to_nothing(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    argv, out = _recorder(tmp_path)
    written: list[str] = []
    notifier = Notifier(store, UserConfig(notify=False, notify_command=tuple(argv)), terminal=written.append,
                        run_commands=True).start()
    try:
        assert not notifier.active
        await store.append(SessionStarted(session_id="s1", title="T"))
        await store.append(SessionFinished(session_id="s1", status="done"))
        await notifier.drain()
    finally:
        await notifier.close()
        await store.close()
    assert written == [] and _calls(out) == []


# --- notify_command: once across processes --------------------------------------------------


async def test_notify_command_runs_once_across_two_notifiers_on_one_database(tmp_path: Path) -> None:
    argv, out = _recorder(tmp_path)
    config = UserConfig(notify_command=tuple(argv), bell=False, desktop="off")
    a, b = await _store(tmp_path), await _store(tmp_path)  # two connections: as two processes have
    one = Notifier(a, config, run_commands=True).start()
    two = Notifier(b, config, run_commands=True)
    try:
        await a.append(SessionStarted(session_id="s1", title="Ship ; it [b]x[/b]\x1b]0;t\x07"))
        req = await a.append(ApprovalRequested(session_id="s1", call_id="c1", tool="Bash",
                                               input={"command": "make deploy"}))
        await one.drain()
        two.feed([req], commands=True)  # another runner hears of the same event: claimed already
        await two.drain()
        one.feed([req], commands=True)
        await one.drain()
    finally:
        await one.close()
        await two.close()
        await a.close()
        await b.close()
    assert _calls(out) == [["s1", "Ship ; it [b]x[/b]␛]0;t␇", "waiting for approval: Bash make deploy"]]
    assert one.commands_run == 1 and two.commands_run == 0


async def test_notify_command_without_secrets_and_bounded(tmp_path: Path) -> None:
    """The child gets child_env (no credentials); one that hangs is killed at the timeout;
    a failure is logged, nothing raised."""
    env_dump = tmp_path / "env.json"
    script = tmp_path / "dump.py"
    script.write_text("import json, os, sys\nopen(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))\n"
                      "import time\nif len(sys.argv) > 2 and sys.argv[2] == 's2': time.sleep(60)\n")
    store = await _store(tmp_path)
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-notify-123456", "MY_SERVICE_TOKEN": "tok-abcdef123456",
           "HOOK_WEBHOOK_URL": "https://hooks.example/abc123456"}
    notifier = Notifier(store, UserConfig(notify_command=(sys.executable, str(script), str(env_dump)),
                                          bell=False, desktop="off", notify_pass_env=("HOOK_WEBHOOK_URL",)),
                        run_commands=True, env=env, command_timeout_s=0.5).start()
    try:
        await store.append(SessionStarted(session_id="s1", title="T"))
        await store.append(SessionFinished(session_id="s1", status="done"))
        await notifier.drain()
        child = json.loads(env_dump.read_text())
        assert "OPENAI_API_KEY" not in child and "MY_SERVICE_TOKEN" not in child
        assert "PATH" in child and child["HOOK_WEBHOOK_URL"] == "https://hooks.example/abc123456"  # passed by name
        await store.append(SessionStarted(session_id="s2", title="T"))
        await store.append(SessionFinished(session_id="s2", status="done"))
        await asyncio.wait_for(notifier.drain(), 10)  # killed after 0.5 s, not 60
    finally:
        await notifier.close()
        await store.close()


async def test_missing_program_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = await _store(tmp_path)
    notifier = Notifier(store, UserConfig(notify_command=(str(tmp_path / "no-such-program"),), bell=False,
                                          desktop="off"), run_commands=True).start()
    try:
        for sid in ("s1", "s2"):
            await store.append(SessionStarted(session_id=sid, title="T"))
            await store.append(SessionFinished(session_id=sid, status="done"))
        await notifier.drain()
    finally:
        await notifier.close()
        await store.close()
    warnings = [r for r in caplog.records if r.name == "shepherd.notify" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "could not start" in warnings[0].getMessage()


# --- the config file ------------------------------------------------------------------------


def test_config_file_parse(tmp_path: Path, _own_config_home: Path) -> None:
    path = config_path()
    assert path == _own_config_home / "shepherd" / "config.toml"
    assert load_config() == UserConfig()  # no file: the defaults
    path.parent.mkdir(parents=True)
    path.write_text('bell = false\ndesktop = "osc777"\nnotify_command = "notify-send -a \'shep herd\'"\n')
    assert load_config() == UserConfig(bell=False, desktop="osc777", notify_command=("notify-send", "-a", "shep herd"))
    path.write_text('notify_command = ["curl", "-d", "@-"]\nnotify = false\nnotify_pass_env = ["HOOK_URL"]\n')
    assert load_config() == UserConfig(notify_command=("curl", "-d", "@-"), notify=False, notify_pass_env=("HOOK_URL",))
    assert config_path({"XDG_CONFIG_HOME": "relative", "HOME": "/h"}) == Path("/h/.config/shepherd/config.toml")


@pytest.mark.parametrize(("text", "needle"), [
    ("bell = ", "invalid TOML"),
    ("bel = true", "unknown key 'bel'"),
    ('bell = "yes"', "bell must be true or false, got a string"),
    ('desktop = "growl"', "desktop must be one of auto, osc9, osc777, off, got 'growl'"),
    ("notify_command = 3", "notify_command must be a list of strings or a string, got a number"),
    ('notify_command = ["a", 1]', "notify_command must be a list of strings"),
    ("notify_command = \"say 'hi\"", "notify_command: No closing quotation"),
    ('notify_command = ["  "]', "the program name is empty"),
    ('notify_pass_env = "X"', "notify_pass_env must be a list of variable names"),
    ('notify_pass_env = ["A=B"]', "notify_pass_env must be a list of variable names"),
])
def test_config_errors_are_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_bad_config_file_exits_2_with_one_line(tmp_path: Path, _own_config_home: Path) -> None:
    path = _own_config_home / "shepherd" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('desktop = "growl"\n')
    task, _ = write_task(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "hi"\n  [[subtasks.steps]]\n  text = "hi"\n',
                         title="tiny", backend="scripted")
    db = tmp_path / "s.db"
    proc = run("run", str(task), "--headless", "--db", str(db), env_extra={"XDG_CONFIG_HOME": str(_own_config_home)})
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"shepherd: {path}: desktop must be one of auto, osc9, osc777, off, got 'growl'"]
    assert not db.exists()  # refused before anything ran
    tui = run("demo", "--db", str(db), env_extra={"XDG_CONFIG_HOME": str(_own_config_home)}, timeout=60)
    assert tui.returncode == 2 and tui.stderr.strip().splitlines() == lines  # the TUI does not start either
    path.write_bytes(b"bell = \xff\n")
    assert "not UTF-8" in run("demo", "--headless", "--db", str(db),
                              env_extra={"XDG_CONFIG_HOME": str(_own_config_home)}).stderr


# --- a real headless run ----------------------------------------------------------------------


def test_headless_run_end_runs_notify_command(tmp_path: Path, _own_config_home: Path) -> None:
    argv, out = _recorder(tmp_path)
    path = _own_config_home / "shepherd" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f"notify_command = {json.dumps(argv)}\n")
    task, _ = write_task(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "hi"\n  [[subtasks.steps]]\n  text = "hi"\n',
                         title="tiny [b]x[/b]", backend="scripted")
    db = tmp_path / "s.db"
    proc = run("run", str(task), "--headless", "--db", str(db), env_extra={"XDG_CONFIG_HOME": str(_own_config_home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in run("sessions", "--json", "--db", str(db)).stdout.splitlines()]
    sid = rows[0]["id"]
    assert _calls(out) == [[sid, "tiny [b]x[/b]", "session done"]]
    assert "\x07" not in proc.stderr and "\x1b]" not in proc.stderr  # stderr is not a tty: no sequences
    import sqlite3

    with sqlite3.connect(db) as c:
        assert c.execute("SELECT session_id, channel FROM notified").fetchall() == [(sid, "command")]


# --- the TUI --------------------------------------------------------------------------------


async def test_tui_tells_its_terminal_of_other_runs_only_from_its_start(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A TUI beside another process's run: its terminal gets the bell and OSC for waits
    committed after it started, never for older ones, and it runs no notify_command for a
    run it does not own."""
    import shepherd.core.notify as notify
    from shepherd.tui.app import ShepherdApp
    from tests.test_tui_app import home_ready, wait_until

    monkeypatch.setattr(notify, "POLL_S", 0.02)
    db = tmp_path / "s.db"
    other = await Store.open(db)  # stands in for the runner's process: its commits are not this app's
    argv, out = _recorder(tmp_path)
    try:
        await other.append(SessionStarted(session_id="old", title="Old"))
        await other.append(ApprovalRequested(session_id="old", call_id="c0", tool="Bash", input={"command": "ls"}))
        app = ShepherdApp(db)
        app.user_config = UserConfig(desktop="osc777", notify_command=tuple(argv))
        written: list[str] = []
        app._write_terminal = written.append  # type: ignore[method-assign]  # the driver of a headless test app writes nowhere
        async with app.run_test(size=(100, 24)) as pilot:
            await home_ready(pilot)
            await wait_until(pilot, lambda: app.notifier is not None and app.notifier.attach_point is not None,
                             what="notifier following")
            await other.append(SessionStarted(session_id="new", title="New; one"))
            await other.append(ApprovalRequested(session_id="new", call_id="c1", tool="Write",
                                                 input={"file_path": "a.py", "content": "x"}))
            await wait_until(pilot, lambda: bool(written), what="a notification")
            await other.append(SessionFinished(session_id="new", status="done"))
            await wait_until(pilot, lambda: len(written) == 2, what="the second notification")
            await app.notifier.drain()
        assert written == ["\a\x1b]777;notify;Shepherd: New one;waiting for approval: Write a.py\x07",
                           "\a\x1b]777;notify;Shepherd: New one;session done\x07"]
        assert _calls(out) == []  # its runner runs the command, not the TUI
    finally:
        await other.close()


def test_headless_check_that_used_up_its_retries_is_one_notification(tmp_path: Path, _own_config_home: Path) -> None:
    """A check failing past its retries makes the subtask stuck (subtask.finished stuck);
    headless, the session ends failed right after: one notify_command call names both."""
    argv, out = _recorder(tmp_path)
    path = _own_config_home / "shepherd" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f"notify_command = {json.dumps(argv)}\n")
    body = ('max_check_retries = 0\n[[subtasks]]\nid = "a"\nprompt = "hi"\ncheck = "exit 3"\n'
            '  [[subtasks.steps]]\n  text = "hi"\n')
    task, _ = write_task(tmp_path, body, title="checked", backend="scripted")
    db = tmp_path / "s.db"
    proc = run("run", str(task), "--headless", "--db", str(db), env_extra={"XDG_CONFIG_HOME": str(_own_config_home)})
    assert proc.returncode == 1, proc.stderr[-3000:]
    sid = json.loads(run("sessions", "--json", "--db", str(db)).stdout.splitlines()[0])["id"]
    import sqlite3

    with sqlite3.connect(db) as c:
        (stuck_reason,) = c.execute("SELECT json_extract(data, '$.reason') FROM events WHERE type = "
                                    "'subtask.finished' AND json_extract(data, '$.status') = 'stuck'").fetchone()
    assert "check failed" in stuck_reason
    assert _calls(out) == [[sid, "checked", f"session failed: subtask a stuck (stuck: subtask a: {stuck_reason})"]]


async def test_a_held_stuck_heard_twice_keeps_one_notice_and_the_runner_flag(tmp_path: Path) -> None:
    """A TUI that runs the session hears its commits twice (subscribe and its poll): the
    stuck notice held by the poll (terminal only) still runs the command when the runner's
    own hearing comes second, and the end merges with it."""
    argv, out = _recorder(tmp_path)
    store = await _store(tmp_path)
    written: list[str] = []
    notifier = Notifier(store, UserConfig(desktop="off", notify_command=tuple(argv)), terminal=written.append,
                        run_commands=True, env=NO_TMUX, hold_s=30)
    try:
        await store.append(SessionStarted(session_id="s1", title="T"))
        stuck = await store.append(SubtaskFinished(session_id="s1", subtask_id="a", status="stuck", reason="r"))
        end = await store.append(SessionFinished(session_id="s1", status="failed", reason="subtask a stuck"))
        notifier.feed([stuck], commands=False)  # the poll first
        notifier.feed([stuck], commands=True)  # then the runner's subscription
        notifier.feed([end], commands=False)
        await notifier.drain()
    finally:
        await notifier.close()
        await store.close()
    assert written == ["\a"]
    assert _calls(out) == [["s1", "T", "session failed: subtask a stuck (stuck: subtask a: r)"]]


async def test_tui_running_a_session_runs_notify_command_and_tells_its_terminal(tmp_path: Path) -> None:
    """The TUI is the runner of a run it starts: its end reaches the terminal once and the
    user's command once."""
    from shepherd.core.task import load_task
    from shepherd.tui.app import ShepherdApp
    from tests.test_tui_app import wait_until

    argv, out = _recorder(tmp_path)
    task_file, _ = write_task(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "hi"\n  [[subtasks.steps]]\n  text = "hi"\n',
                              title="local", backend="scripted")
    task = load_task(task_file)
    app = ShepherdApp(tmp_path / "s.db", start=lambda: task)
    app.user_config = UserConfig(desktop="osc9", notify_command=tuple(argv))
    written: list[str] = []
    app._write_terminal = written.append  # type: ignore[method-assign]
    async with app.run_test(size=(100, 24)) as pilot:
        await wait_until(pilot, lambda: bool(_calls(out)), what="the command's call")
        await app.notifier.drain()
        sid = next(iter(app.runs))
        assert written == ["\a\x1b]9;Shepherd: local: session done\x07"]
    assert _calls(out) == [[sid, "local", "session done"]]


def test_headless_run_on_a_terminal_gets_the_bell_and_osc(tmp_path: Path, _own_config_home: Path) -> None:
    """stderr a terminal (a pty): the run's end writes the bell and OSC 9 there, once."""
    import pty
    import select
    import subprocess

    from tests.cli_helpers import ROOT, SHEPHERD

    task, _ = write_task(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "hi"\n  [[subtasks.steps]]\n  text = "hi"\n',
                         title="on a tty", backend="scripted")
    master, slave = pty.openpty()
    env = {**os.environ, "SHEPHERD_TIME_SCALE": "0.02", "XDG_CONFIG_HOME": str(_own_config_home),
           "TERM": "xterm-256color"}
    env.pop("TMUX", None)
    proc = subprocess.Popen([*SHEPHERD, "run", str(task), "--headless", "--db", str(tmp_path / "s.db")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=60) == 0, seen[-2000:]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert seen.count(b"\x07") == 2 and seen.count(b"\x1b]9;Shepherd: on a tty: session done\x07") == 1, seen[-2000:]
    assert b"\a\x1b]9;" in seen


async def test_the_command_claim_is_once_per_event_on_both_stores(store_target: str | Path) -> None:
    """Several runners hear of one event: exactly one claims the notify command (the
    ``notified`` row), on SQLite and on PostgreSQL alike (the claim's SQL goes through the
    dialect)."""
    from shepherd.core.notify import _claim
    from shepherd.core.store import open_store

    stores = [await open_store(store_target) for _ in range(2)]
    try:
        won = [await st.run_rows(_claim("s1", 7, 1.0)) for st in stores]
        won.append(await stores[0].run_rows(_claim("s1", 8, 2.0)))
    finally:
        for st in stores:
            await st.close()
    assert won == [True, False, True]


async def test_a_cancelled_notify_command_is_killed_and_reaped_with_what_it_started(tmp_path: Path) -> None:
    """Shutting down (the notification's task cancelled) while the command runs: the
    command and its child are killed, and the command is reaped before the cancel ends
    (not left to a loop that is closing)."""
    from tests.test_tools import _alive, _wait_for_file

    pids = tmp_path / "pids"
    script = tmp_path / "slow.py"
    script.write_text("import os, subprocess, sys, time\n"
                      "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
                      "open(sys.argv[1] + '.tmp', 'w').write(f'{os.getpid()} {child.pid}')\n"
                      "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
                      "time.sleep(300)\n")
    store = await _store(tmp_path)
    notifier = Notifier(store, UserConfig(notify_command=(sys.executable, str(script), str(pids)), bell=False,
                                          desktop="off"), run_commands=True, command_timeout_s=300).start()
    try:
        await store.append(SessionStarted(session_id="s1", title="T"))
        await store.append(SessionFinished(session_id="s1", status="done"))
        drain = asyncio.ensure_future(notifier.drain())
        command, child = map(int, (await _wait_for_file(pids)).split())
        for task in list(notifier._tasks):
            task.cancel()
        await asyncio.wait_for(drain, 10)
        assert not Path(f"/proc/{command}").exists()  # killed and reaped
        assert not _alive(child)
    finally:
        await notifier.close()
        await store.close()
