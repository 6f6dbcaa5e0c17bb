"""Start-up: what the first screens import, and a live view that is up before its SDK.

The speed itself is measured by bench/start_bench.py (in a real pty, against a bare
Textual app); these tests pin the behaviour the figures rely on.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.test_tui_app import home_ready, wait_until
from shepherd.tui.app import ShepherdApp
from shepherd.tui.screens.session import SessionScreen

ROOT = Path(__file__).resolve().parents[1]

# Nothing of these belongs on the path to the home screen: the SDKs (seconds), the help
# screen's Markdown (markdown-it, pygments), the session model and the error classifier.
NOT_AT_HOME = ("agents", "claude_agent_sdk", "openai", "markdown_it", "shepherd.tui.screens.help", "shepherd.tui.model",
               "shepherd.core.errors", "shepherd.core.engine", "shepherd.core.task")

HOME_CHILD = """
import asyncio, sys
import shepherd.tui.cli, shepherd.tui.app, shepherd.tui.screens.sessions
from shepherd.tui.app import ShepherdApp

async def main(db):
    app = ShepherdApp(db)
    async with app.run_test(size=(120, 30)) as pilot:
        for _ in range(500):
            if app.home is not None and app.home.loaded:
                break
            await pilot.pause(0.02)
        assert app.home is not None and app.home.loaded, "the home never loaded"
        assert app.home.row_ids() == ["s1"]
    roots = set(sys.argv[2].split(","))
    print(",".join(sorted(m for m in sys.modules if m in roots or m.split(".")[0] in roots)))

asyncio.run(main(sys.argv[1]))
"""


async def test_the_home_screen_imports_no_sdk_no_help_no_session_model(tmp_path: Path) -> None:
    """The CLI's modules and the home screen, up and loaded, in a fresh interpreter."""
    from shepherd.core.events import SessionFinished, SessionStarted
    from shepherd.core.store import Store

    db = tmp_path / "s.db"
    store = await Store.open(db)
    await store.append(SessionStarted(session_id="s1", title="one", backend="scripted"))
    await store.append(SessionFinished(session_id="s1", status="done"))
    await store.close()
    out = subprocess.run([sys.executable, "-c", HOME_CHILD, str(db), ",".join(NOT_AT_HOME)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported on the way to the home screen: {out.stdout.strip()}"


async def test_the_demo_is_live_on_screen_before_its_sdk_import_ends(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`shepherd demo`: its session, subtasks and keys are on the screen while the SDK is
    still importing (in a thread, never the loop's); once it is in, the run goes on."""
    import shepherd.core.engine as engine
    from shepherd.core.demo import demo_task

    monkeypatch.setenv("SHEPHERD_TIME_SCALE", "0.01")
    real, gate, where = engine.make_backend, threading.Event(), []

    def slow_import(name: str) -> Any:
        where.append(threading.current_thread() is threading.main_thread())
        assert gate.wait(30)
        return real(name)

    monkeypatch.setattr(engine, "make_backend", slow_import)
    app = ShepherdApp(tmp_path / "s.db", start=lambda: demo_task(tmp_path / "ws"))
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(),
                             what="the demo's live view")
            screen = app.screen
            await wait_until(pilot, lambda: [s.title for s in screen.model.ordered_subtasks()]
                             == ["Look around the project", "Fix the DD/MM/YYYY branch", "Write down what changed"],
                             what="the demo's subtasks listed")
            await wait_until(pilot, lambda: "Pause" in [k.description for k in screen.query("FooterKey")],
                             what="its keys")
            assert screen.model.session.status == "running"
            await wait_until(pilot, lambda: bool(where), what="the SDK import started")
            assert where == [False], "the SDK import ran on the event loop"
            for _ in range(5):  # the screen goes on working while the import runs
                await pilot.pause(0.01)
            assert app.screen is screen and not gate.is_set()
            gate.set()
            sid = screen.session_id
            for _ in range(1500):
                if await app.store.events(sid, types=["tool.started"], limit=1):
                    break
                await pilot.pause(0.02)
            else:
                raise AssertionError("the demo did not go on once its SDK was in")
            await app._stop_runs(wait_s=10)
    finally:
        gate.set()


async def test_a_long_list_is_all_there_once_loaded_in_order(tmp_path: Path) -> None:
    """The first frame gets the rows that fit; the rest of the page follows it, in order,
    before the home counts as loaded."""
    from shepherd.core.events import SessionFinished, SessionStarted
    from shepherd.core.store import Store

    db = tmp_path / "s.db"
    store = await Store.open(db)
    ids = [f"s{i:04d}" for i in range(80)]
    for sid in ids:
        await store.append(SessionStarted(session_id=sid, title=f"t {sid}", backend="scripted"))
        await store.append(SessionFinished(session_id=sid, status="done"))
    newest_first = [r.id for r in await store.list_sessions(limit=100)]
    await store.close()
    app = ShepherdApp(db)
    async with app.run_test(size=(120, 30)) as pilot:
        home = await home_ready(pilot)
        assert [r.key.value for r in home.table.ordered_rows] == newest_first


class FirstFrames(ShepherdApp):
    """The app, keeping the text of the first frame each screen class puts on the terminal
    (what ``_display`` is given to write: headless, it writes nothing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_frames: dict[str, str] = {}
        self.first_dimmed: dict[str, set[str]] = {}  # the keys drawn dimmed in that frame

    def _display(self, screen: Any, renderable: Any) -> None:
        name = type(self.screen).__name__
        if renderable is not None and not self._batch_count and name not in self.first_frames:
            from tests.test_tui_app import screen_text

            self.first_frames[name] = screen_text(self)
            self.first_dimmed[name] = {k.key for k in self.screen.query("FooterKey") if k.has_class("-disabled")}
        super()._display(screen, renderable)


async def test_the_demo_live_view_first_frame_has_its_plan_and_its_keys(tmp_path: Path) -> None:
    """The first frame of the demo's live view is whole: the session, its subtasks and the
    keys that apply (not a key bar that fills in a frame later), and the home under it was
    never drawn."""
    from shepherd.core.demo import demo_task

    app = FirstFrames(tmp_path / "s.db", start=lambda: demo_task(tmp_path / "ws"))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: "SessionScreen" in app.first_frames, what="the live view drawn")
        first = app.first_frames["SessionScreen"]
        assert "Write down what changed" in first and "running" in first, first
        for key in ("p Pause", "r Retry", "s Skip", "c Cancel", "m Note", "esc Back"):
            assert key in first, f"{key!r} not in the first frame:\n{first}"
        # no tool call yet: o has nothing to open, and is drawn dimmed (in its place in the bar)
        assert "o Output" in first and app.first_dimmed["SessionScreen"] == {"o"}, app.first_dimmed
        assert "SessionsScreen" not in app.first_frames
        await app._stop_runs(wait_s=10)


async def test_the_home_under_a_view_opened_at_start_is_built_after_that_view_is_drawn(tmp_path: Path) -> None:
    """`shepherd attach`/`resume`/`demo`: the home is neither composed nor loaded before the
    view's first frame; it is once that frame is drawn, while covered, so going back shows
    it whole in its first frame (rows and keys)."""
    from tests import tui_fixtures as fx
    from shepherd.tui.screens.sessions import SessionTable

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["done", "failed"])
    sid = fx.SESSION_IDS["done"]
    widgets_at_view_frame: list[int] = []

    class App(FirstFrames):
        def _display(self, screen: Any, renderable: Any) -> None:
            if "SessionScreen" not in self.first_frames and self.home is not None:
                widgets_at_view_frame[:] = [len(self.home.query(SessionTable))]
            super()._display(screen, renderable)

    app = App(db, open_session=sid, clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: "SessionScreen" in app.first_frames, what="the session view drawn")
        assert widgets_at_view_frame == [0], "the home was built before the view's first frame"
        await wait_until(pilot, lambda: app.home is not None and app.home.loaded, what="the home built, covered")
        assert isinstance(app.screen, SessionScreen) and "SessionsScreen" not in app.first_frames
        await pilot.press("escape")
        await wait_until(pilot, lambda: "SessionsScreen" in app.first_frames, what="back home")
        home = app.first_frames["SessionsScreen"]
        # (at 120 columns the title column gives the cost column room: the title is cut)
        assert "Demo: fix the date parser in tinyda" in home and "2 sessions" in home, home
        for key in ("d Demo", "q Quit"):
            assert key in home, f"{key!r} not in the home's first frame:\n{home}"


async def test_back_before_the_covered_home_was_built_builds_it_then(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A person going back before the home's build came (it waits for the view's frames)
    gets the home built and loaded then."""
    from tests import tui_fixtures as fx

    db = tmp_path / "s.db"
    await fx.build_db_async(db, ["done"])
    monkeypatch.setattr(ShepherdApp, "_after_two_frames", lambda self, callback: None)  # the build never comes
    app = ShepherdApp(db, open_session=fx.SESSION_IDS["done"], clock=lambda: fx.NOW)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(),
                         what="the session view")
        for _ in range(3):
            await pilot.pause()
        assert app.home is not None and not app.home.loaded
        await pilot.press("escape")
        home = await home_ready(pilot)
        assert app.screen is home and home.row_ids() == [fx.SESSION_IDS["done"]]
        await wait_until(pilot, lambda: "d Demo" in [f"{k.key_display or k.key} {k.description}"
                                                     for k in home.query("FooterKey")], what="the home's keys")


DEMO_CHILD = """
import asyncio, sys, threading

imported_by = []


class Watch:  # notes which thread imports markdown-it (a finder asked first, finding nothing)
    def find_spec(self, name, path=None, target=None):
        if name == "markdown_it":
            imported_by.append(threading.current_thread() is threading.main_thread())
        return None


sys.meta_path.insert(0, Watch())
from shepherd.core.demo import demo_task
from shepherd.tui.app import ShepherdApp

at_first_frame = []


class App(ShepherdApp):
    def _display(self, screen, renderable):
        if renderable is not None and not self._batch_count and not at_first_frame \\
                and type(self.screen).__name__ == "SessionScreen":
            at_first_frame.append("markdown_it" in sys.modules)
        super()._display(screen, renderable)


async def main(db, ws):
    app = App(db, start=lambda: demo_task(__import__("pathlib").Path(ws)))
    async with app.run_test(size=(120, 36)) as pilot:
        for _ in range(500):
            if at_first_frame and "markdown_it" in sys.modules:
                break
            await pilot.pause(0.02)
        await app._stop_runs(wait_s=10)
    print(at_first_frame, imported_by)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_the_demo_view_is_drawn_before_markdown_it_is_imported_which_is_off_the_loop(tmp_path: Path) -> None:
    """The live view of a run with no message yet needs no Markdown parser: markdown-it
    (~15 ms) is imported after its first frame, in a thread, so its first message finds it."""
    out = subprocess.run([sys.executable, "-c", DEMO_CHILD, str(tmp_path / "s.db"), str(tmp_path / "ws")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[False] [False]", out.stdout


GC_CHILD = """
import gc, sys
import textual.app

collections = []


def in_run_tui():
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "run_tui":
            return True
        frame = frame.f_back
    return False


def count(phase, info):  # a collection while start-up builds the app (before it is frozen)
    if phase == "start" and in_run_tui() and not gc.get_freeze_count():
        collections.append(1)


gc.callbacks.append(count)
textual.app.App.run = lambda self, *a, **k: print(len(collections), gc.isenabled(), gc.get_freeze_count() > 0)
from shepherd.tui.cli import main
main(["--db", sys.argv[1], "demo"])
"""


def test_the_tui_start_up_runs_no_garbage_collection_and_collects_again_once_running(tmp_path: Path) -> None:
    """What start-up makes (modules, classes, the app) lives as long as the app: no
    collection runs while it is made; it is frozen, and collection is back on when the app runs."""
    out = subprocess.run([sys.executable, "-c", GC_CHILD, str(tmp_path / "s.db")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "True", "True"], out.stdout


@pytest.mark.parametrize("argv", [[], ["--db", "x.db"], ["--db=x.db"], ["--db", "demo"], ["--db", "-x"], ["--db="],
                                  ["--db", ""], ["--d", "x.db"], ["--db", "x", "sessions"], ["sessions"]])
def test_the_homes_arguments_read_as_the_parser_reads_them(argv: list[str]) -> None:
    """`shepherd [--db X]` skips building the parser: the same namespace, or the parser's way."""
    from shepherd.tui import cli
    from shepherd.tui.cli_common import UsageError

    quick = cli._home_args(argv)
    try:
        parsed = vars(cli.build_parser().parse_args(argv))
    except UsageError:
        parsed = None
    if quick is not None:
        assert vars(quick) == parsed
    else:  # the parser's way: what it makes of these is not the plain home
        assert argv not in ([], ["--db", "x.db"], ["--db=x.db"], ["--db", "demo"])


def test_the_home_command_imports_no_command_module(tmp_path: Path) -> None:
    """`shepherd --db X` (the home) gets as far as the TUI without the other commands' modules."""
    child = ("import sys; import shepherd.tui.cli_run as r; r.run_tui = lambda args: print(sorted(m for m in sys.modules "
             "if m.startswith('shepherd.tui.cli'))) or 0; from shepherd.tui.cli import main; sys.exit(main())")
    out = subprocess.run([sys.executable, "-c", child, "--db", str(tmp_path / "x.db")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['shepherd.tui.cli', 'shepherd.tui.cli_common', 'shepherd.tui.cli_run']"


async def test_the_tuis_open_after_the_clis_precheck_prepares_the_file_once(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`shepherd`: the precheck prepares and checks the file; the app's own open (checked)
    only connects, and reads what the precheck recovered."""
    import shepherd.core.store.db as db
    from shepherd.core.events import SessionStarted
    from shepherd.core.store import Store

    real, calls = db.prepare_database, []
    monkeypatch.setattr(db, "prepare_database", lambda *a, **k: calls.append(k) or real(*a, **k))
    path = tmp_path / "s.db"
    first = await Store.open(path)  # the precheck's open
    await first.append(SessionStarted(session_id="s1", title="one", backend="scripted"))
    await first.close()
    app = ShepherdApp(str(path), checked=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        assert app.home is not None and app.home.row_ids() == ["s1"]
    assert len(calls) == 1
