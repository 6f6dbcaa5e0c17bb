"""The TUI for worktree sessions (issue 12): the diff view (d / D), the retry modal (keep
the files or restore them), the home's worktree mark and "new run" (n).

Real parts: real git repositories in tmp_path, worktree sessions written by
tests.worktree_helpers.made_session into a real Store, the real screens driven by pilot.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from shepherd.core.clock import FakeClock
from shepherd.core.store.db import Store
from shepherd.core.task import Task
from shepherd.tui.screens import diff as diff_screen
from shepherd.tui.screens.diff import DiffScreen
from shepherd.tui.screens.modals import NewRunModal, RetryModal
from shepherd.tui.screens.session import SessionScreen
from shepherd.tui.screens.session_controls import NO_DIFF
from shepherd.tui.widgets.anim import Ticker
from shepherd.tui.widgets.diff import patch_text
from tests.worktree_helpers import made_session, make_repo, sh

T0 = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _worktrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEPHERD_WORKTREES", str(tmp_path / "wt"))
    monkeypatch.setattr(Ticker, "animate", False)


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "shepherd.db", clock=FakeClock(T0))
    yield s
    await s.close()


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []

    def notify(self: Any, message: str, **kw: Any) -> None:
        seen.append((str(message), kw.get("severity", "information")))

    monkeypatch.setattr(SessionScreen, "notify", notify)
    return seen


class Recorder:
    """A Controller that records retries (the rest of the protocol is not used here)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def retry(self, subtask_id: str | None = None, *, clean: bool = False, source: str = "tui") -> None:
        self.calls.append(("retry", subtask_id, clean))


class Harness(App[None]):

    def __init__(self, screen: SessionScreen) -> None:
        super().__init__()
        self.session_screen = screen
        self.resumed: list[tuple[str, str | None, bool]] = []

    def on_mount(self) -> None:
        self.push_screen(self.session_screen)

    def on_session_screen_resume_requested(self, message: SessionScreen.ResumeRequested) -> None:
        self.resumed.append((message.session_id, message.retry_subtask, message.clean))


async def opened(pilot: Any, screen: SessionScreen) -> None:
    await asyncio.wait_for(screen.loaded.wait(), 10)
    await pilot.pause()


async def diff_of(pilot: Any) -> DiffScreen:
    for _ in range(200):
        if isinstance(pilot.app.screen, DiffScreen):
            break
        await pilot.pause(0.01)
    screen = pilot.app.screen
    assert isinstance(screen, DiffScreen)
    await asyncio.wait_for(screen.listed.wait(), 20)
    await asyncio.wait_for(screen.patch_shown.wait(), 20)
    await pilot.pause()
    return screen


def labels(screen: DiffScreen) -> list[str]:
    files = screen.files_list
    return [str(files.get_option_at_index(i).prompt) for i in range(files.option_count)]


TWO = {"one": {"new.txt": "new\n", "a.txt": "a changed\n"}, "two": {"gone.txt": None, "pkg/sub/m.py": "x = 2\n"}}


# --- the diff view ------------------------------------------------------------------------------

async def test_d_shows_the_selected_subtask_and_D_the_whole_session(store, tmp_path: Path):
    made = await made_session(store, make_repo(tmp_path / "repo"), TWO, root=tmp_path / "wt")
    screen = SessionScreen(store, made.session_id)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        screen.subtask_list.select("one")
        await pilot.pause()
        await pilot.press("d")
        d = await diff_of(pilot)
        assert d.subtask_id == "one"
        assert sorted(labels(d)) == ["A new.txt  +1 -0", "M a.txt  +1 -1"]
        shown = d.patches[d.shown].plain  # type: ignore[index]
        assert "+a changed" in shown or "+new" in shown
        await pilot.press("escape")
        await pilot.pause()
        assert pilot.app.screen is screen
        await pilot.press("D")
        d = await diff_of(pilot)
        assert d.subtask_id is None
        assert {lb.split()[1] for lb in labels(d)} == {"new.txt", "a.txt", "gone.txt", "pkg/sub/m.py"}
        assert "4 files" in d.query_one("#diff-title").render().plain  # type: ignore[attr-defined]
        await pilot.press("q")
        await pilot.pause()
        assert pilot.app.screen is screen


async def test_d_without_a_worktree_is_a_one_line_notice(store, tmp_path: Path, notified):
    from shepherd.core import events as ev

    await store.append(ev.SessionStarted(session_id="splain", title="t", backend="scripted"))
    await store.append(ev.PlanReady(session_id="splain", subtasks=[{"id": "a", "title": "a", "prompt": "p"}]))
    await store.append(ev.SessionFinished(session_id="splain", status="done"))
    screen = SessionScreen(store, "splain")
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("D")
        await pilot.pause()
        assert pilot.app.screen is screen
        assert notified.count((NO_DIFF, "warning")) == 2


HOSTILE_NAME = "[bold red]x[/]\x1b[31mred\x1b]0;title\x07.txt"
HOSTILE_TEXT = "[red]boom[/red]\n\x1b[2J\x1b]52;c;Zm9v\x07cleared\n"


async def test_hostile_names_and_patches_are_plain_text(store, tmp_path: Path):
    made = await made_session(store, make_repo(tmp_path / "repo"), {"one": {HOSTILE_NAME: HOSTILE_TEXT}},
                              root=tmp_path / "wt")
    screen = SessionScreen(store, made.session_id)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        await pilot.press("D")
        d = await diff_of(pilot)
        [label] = labels(d)
        assert "[bold red]x[/]" in label and "\x1b" not in label and "\x07" not in label
        text = d.patches[0]
        assert "+[red]boom[/red]" in text.plain
        assert "\x1b" not in text.plain and "\x07" not in text.plain
        assert not any("bold red" in str(span.style) for span in text.spans)  # no markup was read
        # what reaches the terminal: the screen's own rendering has no raw escape either
        svg = pilot.app.export_screenshot()
        assert "[red]boom[/red]" in svg.replace("&#160;", " ") and "\x1b" not in svg


def test_patch_lines_get_their_colours():
    text = patch_text("diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n ctx\n")
    styles = {text.plain[s.start:s.end]: str(s.style) for s in text.spans}
    assert styles["@@ -1 +1 @@"] == "cyan" and styles["-old"] == "red" and styles["+new"] == "green"
    assert styles["--- a/x"] == "dim" and styles["+++ b/x"] == "dim" and styles["diff --git a/x b/x"] == "dim"
    assert "ctx" not in "".join(k for k, v in styles.items() if v)  # context lines are plain
    cut = patch_text("".join(f"+{i}\n" for i in range(30)), max_lines=10)
    assert cut.plain.endswith("20 more lines (shepherd diff shows them all)")


async def test_a_2000_file_diff_opens_and_scrolls(store, tmp_path: Path):
    many = {f"gen/f{i:04d}.txt": f"line {i}\n" for i in range(2000)}
    made = await made_session(store, make_repo(tmp_path / "repo"), {"gen": many}, root=tmp_path / "wt")
    screen = SessionScreen(store, made.session_id)
    async with Harness(screen).run_test(size=(80, 24)) as pilot:
        await opened(pilot, screen)
        await pilot.press("D")
        d = await diff_of(pilot)
        assert d.files_list.option_count == 2000
        d.patch_shown.clear()
        await pilot.press("end")
        await asyncio.wait_for(d.patch_shown.wait(), 20)
        await pilot.pause()
        assert d.files_list.highlighted == 1999
        assert "+line 1999" in d.patches[1999].plain
        assert d.files_list.scroll_offset.y > 1900  # the list scrolled to its end
        await pilot.press("pageup")
        await pilot.pause()
        assert d.files_list.highlighted is not None and d.files_list.highlighted < 1999


async def test_patches_load_off_the_event_loop(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made = await made_session(store, make_repo(tmp_path / "repo"), TWO, root=tmp_path / "wt")
    gate = asyncio.Event()
    loads: list[str] = []
    laid_out_in: list[str] = []
    real_load, real_text = diff_screen.load_patch, diff_screen.patch_text

    async def slow_load(store: Any, d: Any, f: Any) -> Any:
        loads.append(f.path)
        await gate.wait()  # a slow git: the screen must keep working meanwhile
        return await real_load(store, d, f)

    def text_in_thread(patch: str) -> Any:
        laid_out_in.append(threading.current_thread().name)
        return real_text(patch)

    monkeypatch.setattr(diff_screen, "load_patch", slow_load)
    monkeypatch.setattr(diff_screen, "patch_text", text_in_thread)
    screen = SessionScreen(store, made.session_id)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        await pilot.press("D")
        for _ in range(200):
            if isinstance(pilot.app.screen, DiffScreen) and pilot.app.screen.listed.is_set():
                break
            await pilot.pause(0.01)
        d = pilot.app.screen
        assert isinstance(d, DiffScreen) and not d.patch_shown.is_set()
        assert "loading" in str(d.patch_view.render())  # type: ignore[attr-defined]
        await pilot.press("down")  # the keys work while the first patch is still loading
        await pilot.pause()
        assert d.files_list.highlighted == 1 and len(loads) == 2
        gate.set()
        await asyncio.wait_for(d.patch_shown.wait(), 20)
        assert d.shown == 1 and laid_out_in and threading.main_thread().name not in laid_out_in


async def test_r_refreshes_a_running_subtasks_diff(store, tmp_path: Path):
    made = await made_session(store, make_repo(tmp_path / "repo"), {"one": {"a.txt": "a1\n"}},
                              root=tmp_path / "wt", running="one")
    screen = SessionScreen(store, made.session_id)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        screen.subtask_list.select("one")
        await pilot.pause()
        await pilot.press("d")
        d = await diff_of(pilot)
        assert d.diff is not None and d.diff.live and labels(d) == ["M a.txt  +1 -1"]
        (Path(made.worktree.path) / "later.txt").write_text("more\n")  # the agent goes on writing
        await pilot.press("r")
        await pilot.pause()
        await asyncio.wait_for(d.listed.wait(), 20)
        await asyncio.wait_for(d.patch_shown.wait(), 20)
        assert sorted(labels(d)) == ["A later.txt  +1 -0", "M a.txt  +1 -1"]


# --- retry: keep the files or restore them -------------------------------------------------------

async def test_r_on_a_past_worktree_session_asks_and_clean_resumes_with_clean(store, tmp_path: Path):
    made = await made_session(store, make_repo(tmp_path / "repo"), TWO, root=tmp_path / "wt")
    screen = SessionScreen(store, made.session_id)
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        screen.subtask_list.select("one")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, RetryModal)
        await pilot.press("escape")  # cancel: nothing happens
        await pilot.pause()
        assert app.screen is screen and app.resumed == []
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        assert app.resumed == [(made.session_id, "one", True)]


async def test_keep_resumes_without_clean(store, tmp_path: Path):
    made = await made_session(store, make_repo(tmp_path / "repo"), TWO, root=tmp_path / "wt")
    screen = SessionScreen(store, made.session_id)
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        screen.subtask_list.select("two")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("k")
        await pilot.pause()
        assert app.resumed == [(made.session_id, "two", False)]


async def test_a_live_sessions_clean_retry_reaches_the_controller(store, tmp_path: Path):
    made = await made_session(store, make_repo(tmp_path / "repo"),
                              {"one": {"a.txt": "1\n"}, "two": {"b.txt": "2\n"}}, root=tmp_path / "wt",
                              running="two")
    ctl = Recorder()
    screen = SessionScreen(store, made.session_id, controller=ctl, follow="local")  # type: ignore[arg-type]
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        screen.subtask_list.select("two")  # still running: today's retry, no question
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, RetryModal) and ctl.calls == [("retry", "two", False)]
        screen.subtask_list.select("one")  # ended done: asks
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, RetryModal)
        await pilot.press("c")
        await pilot.pause()
        assert ctl.calls[-1] == ("retry", "one", True)


async def test_a_session_without_a_worktree_keeps_todays_retry(store, tmp_path: Path):
    from shepherd.core import events as ev

    sid = "splain2"
    await store.append(ev.SessionStarted(session_id=sid, title="t", backend="scripted"))
    await store.append(ev.PlanReady(session_id=sid, subtasks=[{"id": "a", "title": "a", "prompt": "p"}]))
    await store.append(ev.SubtaskStarted(session_id=sid, subtask_id="a", title="a"))
    await store.append(ev.SubtaskFinished(session_id=sid, subtask_id="a", attempt=1, status="done"))
    await store.append(ev.SessionFinished(session_id=sid, status="done"))
    screen = SessionScreen(store, sid)
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        screen.subtask_list.select("a")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, RetryModal)
        assert app.resumed == [(sid, "a", False)]


# --- the app: the home's mark, a clean resume, new run --------------------------------------------

async def app_db(tmp_path: Path) -> tuple[Path, str, str]:
    """A database with a finished worktree session and a plain one: (path, worktree id, plain id)."""
    from shepherd.core import events as ev

    db = tmp_path / "app.db"
    s = await Store.open(db, clock=FakeClock(T0))
    try:
        made = await made_session(s, make_repo(tmp_path / "repo"), TWO, root=tmp_path / "wt",
                                  session_id="s6b49d200b001")
        plain = "s6b49d200b002"
        await s.append(ev.SessionStarted(session_id=plain, title="no worktree", backend="scripted"))
        await s.append(ev.PlanReady(session_id=plain, subtasks=[{"id": "a", "title": "a", "prompt": "p"}]))
        await s.append(ev.SessionFinished(session_id=plain, status="done"))
    finally:
        await s.close()
    return db, made.session_id, plain


async def until(pilot: Any, cond: Any, what: str = "", tries: int = 500) -> None:
    for _ in range(tries):
        if cond():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_home_marks_finished_sessions_that_hold_a_worktree(tmp_path: Path):
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.widgets.session_list import WORKTREE_MARK

    db, wsid, plain = await app_db(tmp_path)
    app = ShepherdApp(db, clock=lambda: T0 + 900)
    async with app.run_test(size=(120, 24)) as pilot:
        await until(pilot, lambda: app.home is not None and app.home.loaded, "home")
        cells = app.home._cells  # type: ignore[union-attr]
        assert WORKTREE_MARK.strip() in cells[wsid]["title"]
        assert WORKTREE_MARK.strip() not in cells[plain]["title"]


async def test_a_clean_retry_of_a_past_session_reaches_resume_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shepherd.core.engine as engine
    from shepherd.core.store.db import StoreError
    from shepherd.tui.app import ShepherdApp

    db, wsid, _ = await app_db(tmp_path)
    asked: list[dict[str, Any]] = []

    async def resume_run(store: Any, session_id: str, **kw: Any) -> Any:
        asked.append({"session_id": session_id, **kw})
        raise StoreError("held elsewhere")  # nothing starts: the view goes back to what is true

    monkeypatch.setattr(engine, "resume_run", resume_run)
    app = ShepherdApp(db, open_session=wsid, clock=lambda: T0 + 900)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(), "view")
        screen = app.screen
        assert isinstance(screen, SessionScreen)
        screen.subtask_list.select("one")
        await pilot.pause()
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RetryModal), "the retry modal")
        await pilot.press("c")
        await until(pilot, lambda: bool(asked), "resume_run")
        assert asked[0]["session_id"] == wsid and asked[0]["retry_subtask"] == "one" and asked[0]["clean"] is True


async def test_shepherd_resume_retry_clean_in_the_tui_resumes_with_clean(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """`shepherd resume S --retry X --clean` without --headless: the app's start-up resume."""
    import shepherd.core.engine as engine
    from shepherd.core.store.db import StoreError
    from shepherd.tui.app import ShepherdApp

    db, wsid, _ = await app_db(tmp_path)
    asked: list[dict[str, Any]] = []

    async def resume_run(store: Any, session_id: str, **kw: Any) -> Any:
        asked.append({"session_id": session_id, **kw})
        raise StoreError("held elsewhere")

    monkeypatch.setattr(engine, "resume_run", resume_run)
    app = ShepherdApp(db, resume=(wsid, "one", True), clock=lambda: T0 + 900)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: bool(asked), "resume_run")
        assert asked[0]["retry_subtask"] == "one" and asked[0]["clean"] is True


async def test_new_run_checks_its_input_and_starts_a_worktree_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from shepherd.tui.app import ShepherdApp

    db, _, _ = await app_db(tmp_path)
    repo = tmp_path / "repo"
    started: list[Task] = []

    async def start_task(self: Any, task: Task) -> None:
        started.append(task)

    monkeypatch.setattr(ShepherdApp, "start_task", start_task)
    app = ShepherdApp(db, clock=lambda: T0 + 900)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.home is not None and app.home.loaded, "home")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewRunModal), "the modal")
        modal = app.screen
        assert isinstance(modal, NewRunModal)
        await pilot.press("escape")  # cancel: nothing starts
        await until(pilot, lambda: not isinstance(app.screen, NewRunModal), "closed")
        assert started == []

        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewRunModal), "the modal")
        modal = app.screen
        assert isinstance(modal, NewRunModal)

        async def submit(what: str, workspace: str, worktree: bool) -> str:
            modal.show_error("")
            modal.query_one("#what").value = what  # type: ignore[attr-defined]
            modal.query_one("#workspace").value = workspace  # type: ignore[attr-defined]
            modal.query_one("#worktree").value = worktree  # type: ignore[attr-defined]
            await pilot.pause()
            modal.query_one("#run").press()  # type: ignore[attr-defined]
            # The modal leaves the screen stack before its children are removed: test the stack,
            # not ``is_attached`` (which stays true while the dismissal unmounts the children).
            await until(pilot, lambda: app.screen is not modal or modal.error_text not in ("", "checking…"),
                        "checked")
            return modal.error_text if app.screen is modal else ""

        assert "no such file" in (await submit(str(tmp_path / "missing.toml"), str(repo), False)).lower() \
            or "missing.toml" in modal.error_text
        assert len(modal.error_text.splitlines()) == 1
        plain_dir = tmp_path / "not-a-repo"
        plain_dir.mkdir()
        err = await submit("fix the bug", str(plain_dir), True)
        assert "not inside a git repository" in err and len(err.splitlines()) == 1
        assert await submit("", str(repo), True) == "enter a task file path or a prompt"
        bad = tmp_path / "bad.toml"
        bad.write_text('title = "x"\nbackend = "nope"\n[[subtasks]]\nid = "a"\nprompt = "p"\n')
        err = await submit(str(bad), str(repo), False)
        assert "backend" in err and len(err.splitlines()) == 1
        assert started == []
        assert await submit("fix the [bold]bug[/bold]", str(repo), True) == ""
        await until(pilot, lambda: bool(started), "start_task")
        task = started[0]
        assert task.isolation == "worktree" and task.backend == "scripted"
        assert Path(task.workspace) == repo.resolve()
        assert sh(repo, "status", "--porcelain") == ""  # checking touched nothing of the user's


# --- snapshots (new ones; tests/__snapshots__/test_tui_worktrees/) --------------------------------

SNAP_SID = "s6b49d200c001"
DATES_PY = '''"""Parse the dates people type."""

from datetime import date


def parse_date(text: str) -> date:
    day, month, year = (int(p) for p in text.strip().split("/"))
    return date(year, month, day)
'''
SNAP_CHANGES: dict[str, dict[str, str | None]] = {
    "explore": {"NOTES.md": "# Notes\n\nDates are parsed in src/dates.py.\n"},
    "fix": {"src/dates.py": DATES_PY, "keep.txt": "one\n2\nthree\nfour\nfive\n", "gone.txt": None,
            "logo.bin": "\x00\x01\x02binary\x00"},
    "notes": {"NOTES.md": "# Notes\n\nDates are parsed in src/dates.py (DD/MM/YYYY).\n"},
}


class FixedCommits:
    """A store whose checkpoint events name fixed commit ids (git's differ with the clock):
    for screenshots of the session view, which shows them. The diff needs the real ones."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.n = 0

    async def append(self, event: Any) -> Any:
        from shepherd.core import events as ev

        if isinstance(event, ev.Checkpoint):
            self.n += 1
            event = event.with_(commit=f"{self.n:07d}" + "0" * 33)
        return await self.store.append(event)


def snap_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_session: bool = True,
             fixed_commits: bool = False) -> Any:
    import time as _time

    from shepherd.tui.app import ShepherdApp

    monkeypatch.setenv("TZ", "UTC")
    _time.tzset()
    monkeypatch.chdir(tmp_path)

    async def build() -> None:
        s = await Store.open(Path("shepherd.db"), clock=FakeClock(T0))
        try:
            await made_session(FixedCommits(s) if fixed_commits else s, make_repo(tmp_path / "repo"), SNAP_CHANGES,
                               root=tmp_path / "wt", session_id=SNAP_SID)
        finally:
            await s.close()

    asyncio.run(build())
    return ShepherdApp(Path("shepherd.db"), open_session=SNAP_SID if open_session else None,
                       clock=lambda: T0 + 900)


async def _view(pilot: Any) -> SessionScreen:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set(), "view")
    await app.screen.flush_now()
    return app.screen


def _diff_keys(*keys: str, subtask: str | None = None) -> Any:
    async def run_before(pilot: Any) -> None:
        screen = await _view(pilot)
        if subtask:
            screen.subtask_list.select(subtask)
            await pilot.pause()
        await pilot.press(*keys)
        await diff_of(pilot)
        await pilot.pause()
    return run_before


def test_snapshot_the_session_diff_at_80x24(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert snap_compare(snap_app(tmp_path, monkeypatch), terminal_size=(80, 24), run_before=_diff_keys("D"))


def test_snapshot_a_subtask_diff_wide(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert snap_compare(snap_app(tmp_path, monkeypatch), terminal_size=(130, 32),
                        run_before=_diff_keys("d", "down", subtask="fix"))


def test_snapshot_the_retry_modal(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_before(pilot: Any) -> None:
        screen = await _view(pilot)
        screen.subtask_list.select("fix")
        await pilot.pause()
        await pilot.press("r")
        await until(pilot, lambda: isinstance(pilot.app.screen, RetryModal), "the modal")
        await pilot.pause()

    assert snap_compare(snap_app(tmp_path, monkeypatch, fixed_commits=True), terminal_size=(100, 30),
                        run_before=run_before)


def test_snapshot_the_home_with_a_worktree_mark(snap_compare, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_before(pilot: Any) -> None:
        await until(pilot, lambda: pilot.app.home is not None and pilot.app.home.loaded, "home")
        await pilot.pause()

    assert snap_compare(snap_app(tmp_path, monkeypatch, open_session=False), terminal_size=(120, 24),
                        run_before=run_before)


WAITING_TOML = '''title = "Second run"
backend = "scripted"
workspace = "{ws}"

[[subtasks]]
id = "main"
title = "Wait"
prompt = "p"
steps = [{{ text = "Working on it." }}, {{ fail = "rate_limit", retry_after = 600 }}]
'''


async def test_new_run_starts_beside_a_run_already_live(tmp_path: Path):
    """n while a run of this process is live: the second starts (its own runner) and its view opens."""
    from shepherd.core.task import task_from_dict
    from shepherd.tui.app import ShepherdApp

    first_task = task_from_dict({"title": "First run", "backend": "scripted", "workspace": str(tmp_path),
                                 "subtasks": [{"id": "main", "title": "Wait", "prompt": "p",
                                               "steps": [{"fail": "rate_limit", "retry_after": 600}]}]})
    toml = tmp_path / "second.toml"
    toml.write_text(WAITING_TOML.format(ws=tmp_path))
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.home is not None and app.home.loaded, "home")
        first = await app.start_task(first_task)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.home, "home again")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewRunModal), "the modal")
        modal = app.screen
        modal.query_one("#what").value = str(toml)  # type: ignore[attr-defined]
        await pilot.pause()
        modal.query_one("#run").press()  # type: ignore[attr-defined]
        try:
            await until(pilot, lambda: len(app.live_run_ids()) == 2, "the second run", tries=1500)
        except AssertionError:
            raise AssertionError(f"{[n.message for n in app._notifications]} {app.screen} {app.runs}")
        second = (app.live_run_ids() - {first.session_id}).pop()
        await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.session_id == second,
                    "its view")
        await app._stop_runs(wait_s=10)


async def test_the_keys_are_in_the_help_and_hostile_subtask_names_stay_text(store, tmp_path: Path):
    from shepherd.tui.screens.help import _key_rows
    from shepherd.tui.screens.sessions import SessionsScreen

    made = await made_session(store, make_repo(tmp_path / "repo"), TWO, root=tmp_path / "wt")
    screen = SessionScreen(store, made.session_id)
    app = Harness(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await opened(pilot, screen)
        local, _ = _key_rows(screen)
        assert ("d", "Diff") in local and any(desc == "Session diff" for _, desc in local)
        assert any("worktree session's diff" in desc for _, desc in local)
        # the home's n: described (so in its help and the palette) though not in its footer
        assert [b.description for b in SessionsScreen.BINDINGS if b.action == "app.new_run"] == ["New run"]
        app.push_screen(RetryModal("[bold]x[/]\x1b[31mred"))
        await pilot.pause()
        title = app.screen.query_one(".dialog-title").render()
        assert "[bold]x[/]" in str(title) and "\x1b" not in str(title)


async def test_shepherd_run_of_two_task_files_starts_both_in_the_tui(tmp_path: Path):
    """`shepherd run a.toml b.toml` without --headless: both start here, side by side."""
    from shepherd.core.task import task_from_dict
    from shepherd.tui.app import ShepherdApp

    def waiting(title: str) -> Task:
        return task_from_dict({"title": title, "backend": "scripted", "workspace": str(tmp_path),
                               "subtasks": [{"id": "main", "title": "Wait", "prompt": "p",
                                             "steps": [{"fail": "rate_limit", "retry_after": 600}]}]})

    app = ShepherdApp(tmp_path / "s.db", start=lambda: [waiting("One"), waiting("Two")])
    async with app.run_test(size=(120, 30)) as pilot:
        try:
            await until(pilot, lambda: len(app.live_run_ids()) == 2, "both runs", tries=1500)
            assert isinstance(app.screen, SessionScreen)  # the last one's view on top
        finally:
            for handle in list(app.runs.values()):
                await handle.supervisor.cancel()
