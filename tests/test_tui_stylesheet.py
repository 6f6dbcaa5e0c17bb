"""tui.stylesheet: each screen's or widget's section of tui/css/ joins the app's stylesheet
when it is first used, and reaches nothing outside its class."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from textual.css.parse import parse_selectors

from shepherd.tui.stylesheet import CSS_DIR, CSSSection, section_path, sections_of
from tests.test_tui_app import home_ready, make_db, wait_until

SCREENS = ("session", "sessions", "modals", "diff", "help", "tool_output", "replay", "stats", "search")


def _owners() -> dict[str, set[str]]:
    for name in SCREENS:
        importlib.import_module(f"shepherd.tui.screens.{name}")
    importlib.import_module("shepherd.tui.widgets.approval")
    importlib.import_module("shepherd.tui.widgets.stream")
    owners: dict[str, set[str]] = {}
    todo = list(CSSSection.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        for section in sections_of(cls):
            owners.setdefault(section, set()).add(cls.__name__)
    return owners


def _selectors(css: str) -> list[str]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    heads = re.findall(r"([^{}]+)\{", css)
    return [part.strip() for head in heads for part in head.split(",") if part.strip()]


def test_every_section_is_used_and_reaches_only_inside_its_classes() -> None:
    owners = _owners()
    files = {p.stem for p in CSS_DIR.glob("*.tcss")}
    assert files == set(owners), "a section no class loads, or a class naming no file"
    for section, classes in owners.items():
        selectors = _selectors(Path(section_path(section)).read_text(encoding="utf-8"))
        assert selectors, section
        for selector in selectors:
            parse_selectors(selector)  # (valid Textual CSS)
            first = re.split(r"[\s>.#:]", selector, maxsplit=1)[0]
            assert first in classes, f"{section}.tcss: {selector!r} starts outside {sorted(classes)}"


async def test_the_home_parses_only_its_section_and_a_session_brings_its_own(tmp_path: Path) -> None:
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.session import SessionScreen

    db = tmp_path / "s.db"
    await make_db(db, ["done"])
    app = ShepherdApp(str(db))
    async with app.run_test(size=(100, 30)) as pilot:
        await home_ready(pilot)
        loaded = {Path(path).stem for path, _ in app.stylesheet.source if path.startswith(str(CSS_DIR))}
        assert loaded == {"home"}
        title = app.screen.query_one("#title-bar")
        assert title.styles.height is not None and title.styles.height.value == 1  # home.tcss applied
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionScreen), what="the session view")
        loaded = {Path(path).stem for path, _ in app.stylesheet.source if path.startswith(str(CSS_DIR))}
        assert loaded == {"home", "session", "stream"}
        status = app.screen.query_one("#status")
        assert status.styles.height is not None and status.styles.height.value == 1  # session.tcss applied
