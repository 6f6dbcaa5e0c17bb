"""Whether a screen can be seen, so hidden screens skip work nobody would see."""

from __future__ import annotations

from textual.screen import Screen


def on_screen(screen: Screen) -> bool:
    """The top screen, or under screens that all let it show through (a modal's
    translucent background). Textual's ``Screen.is_current`` also says True for the
    screen right under an opaque one (the sessions list under a session view)."""
    if not screen.is_attached:
        return False
    try:
        stack = screen.app.screen_stack
    except Exception:  # noqa: BLE001 - no app, or no screens yet
        return False
    if screen not in stack:
        return False
    return all(above.styles.background.a < 1 for above in stack[stack.index(screen) + 1:])
