"""Make the README screenshots from the real app: ``python screenshots/make_screenshots.py``.

Each view is the real ShepherdApp on a database written from real events (the same
fixtures as tests/test_snapshots.py), with the clock frozen, the time zone UTC and the
spinners still, so the SVGs only change when the UI does.

``needs-you-inbox.svg`` and ``approval-block.svg`` are the snapshots of
tests/test_tui_approvals.py (``test_snapshot_inbox``, ``test_snapshot_inline_approval_bash``),
copied here: they are made the same way, from the real app on a real database. So are
``diff-view.svg`` (tests/test_tui_worktrees.py, ``test_snapshot_a_subtask_diff_wide``) and
``replay.svg`` (tests/test_tui_replay.py, ``test_snapshot_mid_replay_a_countdown``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import tui_fixtures as fx  # noqa: E402
from shepherd.tui.app import ShepherdApp  # noqa: E402
from shepherd.tui.widgets.anim import Ticker  # noqa: E402

OUT = Path(__file__).resolve().parent
ALL_SHAPES = ["done", "failed", "cancelled", "live", "retry", "stuck", "interrupted"]

# file name -> (session shape to open or None for the home screen, terminal size, window title)
VIEWS: dict[str, tuple[str | None, tuple[int, int], str]] = {
    "home.svg": (None, (120, 24), "shepherd — sessions"),
    "live-parallel-tools.svg": ("live", (120, 32), "shepherd — a live session with parallel tool calls"),
    "retry-countdown.svg": ("retry", (120, 32), "shepherd — waiting for a retry"),
    "stuck-subtask.svg": ("stuck", (120, 32), "shepherd — a stuck subtask"),
    "interrupted-session.svg": ("interrupted", (120, 32), "shepherd — a reopened interrupted session"),
}
# file name -> (the query typed in the home's search, terminal size, window title)
SEARCHES: dict[str, tuple[str, tuple[int, int], str]] = {
    "search.svg": ("project", (120, 24), "shepherd — search every session (s)"),
}


async def shoot(db: Path, shape: str | None, size: tuple[int, int], title: str) -> str:
    sid = fx.SESSION_IDS[shape] if shape else None
    app = ShepherdApp(db, open_session=sid, clock=lambda: fx.NOW)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 20
        while True:
            loaded = getattr(app.screen, "loaded", None)
            ready = app.home is not None and app.home.loaded and (
                sid is None or (isinstance(loaded, asyncio.Event) and loaded.is_set()))
            if ready:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{title}: the app did not settle")
            await pilot.pause(0.02)
        flush = getattr(app.screen, "flush_now", None)
        if flush is not None:
            await flush()
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        return app.export_screenshot(title=title)


async def shoot_search(db: Path, query: str, size: tuple[int, int], title: str) -> str:
    """The home's search (``s``) with ``query`` typed and its hits listed."""
    from shepherd.tui.screens.search import SearchScreen

    app = ShepherdApp(db, clock=lambda: fx.NOW)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 20

        async def wait(cond: object, what: str) -> None:
            while not cond():  # type: ignore[operator]
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{title}: {what}")
                await pilot.pause(0.02)

        await wait(lambda: app.home is not None and app.home.loaded, "the home did not load")
        await pilot.press("s")
        await wait(lambda: isinstance(app.screen, SearchScreen), "no search screen")
        await pilot.press(*query, "enter")
        await wait(lambda: app.screen.shown_query == query, "no results")
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        return app.export_screenshot(title=title)


def main() -> int:
    os.environ["TZ"] = "UTC"
    time.tzset()
    Ticker.animate = False
    with tempfile.TemporaryDirectory(prefix="shepherd-shots-") as tmp:
        os.chdir(tmp)  # the database path is shown on screen: keep it short and stable
        db = Path("shepherd.db")
        fx.build_db(db, ALL_SHAPES)
        for name, (shape, size, title) in VIEWS.items():
            svg = asyncio.run(shoot(db, shape, size, title))
            (OUT / name).write_text(svg, encoding="utf-8")
            print(f"wrote {OUT / name}")
        for name, (query, size, title) in SEARCHES.items():
            svg = asyncio.run(shoot_search(db, query, size, title))
            (OUT / name).write_text(svg, encoding="utf-8")
            print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
