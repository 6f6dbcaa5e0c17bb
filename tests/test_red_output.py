"""Red-team round, terminal safety: text that reaches the screen by a path the first fixes
of issue 8 did not sanitise. Real Store files, the real app via pilot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shepherd.core import events as ev
from shepherd.core.store.db import Store
from tests.test_adversarial_output import raw_controls, rendered
from tests.test_tui_session import SID, Clock, Harness, Writer, loaded, until
from tests.test_tui_session import _frozen_animation, store  # noqa: F401  (fixtures: imported, pytest uses them here)
from shepherd.tui.screens.session import SessionScreen

HOSTILE = "A\x1b]0;PWNED\x07 \x9d0;C1TITLE\x9c \x9b2J \u202eevil\u202c [bold]b[/] [@click=app.quit]q[/] \x1b[2J Z"


async def test_the_full_output_modal_shows_stored_controls_as_marks(store: Store) -> None:
    """``o`` reads the call from the store (not from the sanitised view model): that row
    enters the view there, and must be made safe there too."""
    from shepherd.tui.screens.tool_output import ToolOutputScreen

    w = Writer(store)
    await w.start()
    await w.add(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash",
                input={"command": HOSTILE, HOSTILE: 1})
    await w.add(ev.ToolFinished, subtask_id="a", attempt=1, call_id="c1", status="ok",
                output=HOSTILE + "\n" + HOSTILE, duration_s=0.5)
    screen = SessionScreen(store, SID, controller=None, follow=None, clock=Clock(w.ts))
    app: Any = Harness(screen)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot, screen)
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, ToolOutputScreen), "the full output")
        await pilot.pause()
        text = rendered(app)
        assert not raw_controls(text), raw_controls(text)
        assert "[bold]b[/]" in text and "[@click=app.quit]q[/]" in text
        assert "\\x9d0;C1TITLE\\x9c" in text  # visible, as everywhere else
        assert app.is_running


def _cli(*args: str | bytes, tmp: Path) -> Any:
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable.encode(), b"-m", b"shepherd.tui.cli", *[a if isinstance(a, bytes) else a.encode() for a in args]],
                          capture_output=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "SHEPHERD_DB": str(tmp / "s.db")})


def test_command_line_bytes_that_are_not_utf8_are_refused_not_a_crash(tmp_path: Path) -> None:
    """A byte that is not UTF-8 (``\\x9b``, 8-bit CSI) in an argument reaches Python as a
    lone surrogate, which SQLite cannot encode: the run died writing its first events, and
    every session lookup died with a traceback. Now: one line, exit 2, nothing stored."""
    ws = tmp_path / "ws"
    ws.mkdir()
    run = _cli("run", "-p", b"fix \x9b it [x]", "--backend", "scripted", "--headless",
               "--workspace", str(ws), tmp=tmp_path)
    err = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 2 and err.count("\n") == 1 and "not valid UTF-8" in err, err
    assert not (tmp_path / "s.db").exists()  # refused before anything was stored
    for cmd in ("show", "resume", "pause", "retry", "attach"):
        bad = _cli(cmd, b"\x1b]0;x\x07\x9b", tmp=tmp_path)
        err = bad.stderr.decode("utf-8", "replace")
        assert bad.returncode == 2 and "Traceback" not in err, (cmd, err)
        assert err.count("\n") == 1 and "\x1b" not in err, (cmd, err)


async def test_a_lone_surrogate_in_model_text_is_stored_as_a_replacement_not_a_failed_write(
        tmp_path: Path) -> None:
    """The store's write path is the backstop for data the CLI never saw (a model's JSON
    can carry ``"\\udc9b"``): it stores U+FFFD instead of failing the whole batch."""
    from shepherd.core import events as ev

    async with await Store.open(tmp_path / "s.db") as s:
        await s.append(ev.SessionStarted(session_id="s1", ts=1.0, title="t \udc9b", backend="scripted",
                                         model=None, workspace="/tmp", task={}))
        await s.append(ev.TextDelta(session_id="s1", ts=2.0, message_id="m", text="half \ud83d emoji"))
        got = await s.events("s1")
    assert got[0].title == "t \ufffd" and got[1].text == "half \ufffd emoji"


async def test_a_toast_quoting_data_is_text_even_from_a_widget(tmp_path: Path) -> None:
    """Widget.notify passes markup=True to the app: the app's notify (every toast's one
    boundary) must not let a session id or an error text become markup."""
    from shepherd.tui.app import ShepherdApp
    from tests.test_adversarial_output import _wait

    async with await Store.open(tmp_path / "s.db") as s:
        await s.flush()
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await _wait(pilot, lambda: app.home is not None and app.home.loaded, "home")
        app.screen.notify("Run [/src/old] ended", timeout=30)
        app.screen.notify("[@click=app.quit]q[/] [b]b[/b]", timeout=30)
        await pilot.pause(0.3)
        text = rendered(app)
        assert "Run [/src/old] ended" in text and "[@click=app.quit]q[/] [b]b[/b]" in text
        assert app.is_running
