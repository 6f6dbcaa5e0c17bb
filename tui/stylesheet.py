"""The app's stylesheet in sections (``tui/css/*.tcss``) that join it when they are first needed.

Textual parses an app's ``CSS_PATH`` whole before the first frame, and again when the
first screen's mode starts (``refresh_css``, on a fresh stylesheet: nothing parsed before
is reused). Our ~330 lines cost 20-40 ms there, before the first frame, and most of them
are for screens that are not on it. Instead a screen or widget class names its section
(``CSS_SECTION``); the section joins the app's stylesheet when the first instance is
registered, before any style is applied to it or its children. It goes in as the app's own
CSS (``Stylesheet.read``, what ``CSS_PATH`` does: the same priority over widgets' defaults),
without the whole re-parse that Textual's ``Screen.CSS_PATH`` costs: the next parse reads
the new section and takes the others from its cache.

A section's rules must only reach its class and what is inside it (each file starts with
its class's name in every selector); ``tests/test_tui_stylesheet.py`` checks that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

CSS_DIR = Path(__file__).with_name("css")


def section_path(name: str) -> str:
    """The path a section is read from, as ``Stylesheet.read`` keys it."""
    return os.path.abspath(CSS_DIR / f"{name}.tcss")


def sections_of(cls: type) -> list[str]:
    """The sections a class and its bases name, bases first."""
    out: list[str] = []
    for klass in reversed(cls.__mro__):
        names = klass.__dict__.get("CSS_SECTION", ())
        for name in (names,) if isinstance(names, str) else names:
            if name not in out:
                out.append(name)
    return out


def load_sections(app: Any, cls: type) -> None:
    sheet = app.stylesheet
    for name in sections_of(cls):
        path = section_path(name)
        if not sheet.has_source(path, ""):
            sheet.read(path)  # (the next parse, before this widget's styles, reads it)


class CSSSection:
    """Mixin, before Textual's class in the bases: ``CSS_SECTION`` joins the app's
    stylesheet when the first instance is registered."""

    CSS_SECTION: ClassVar[str | tuple[str, ...]] = ()

    def _post_register(self, app: Any) -> None:
        super()._post_register(app)  # type: ignore[misc]  # (Textual's: the widget's default CSS)
        load_sections(app, type(self))
