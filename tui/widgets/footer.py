"""The key bar: Textual's Footer, rebuilt once per frame however many times the keys change.

Textual's Footer recomposes (removes and mounts every key, ~20 ms) once for each
``refresh_bindings``, after the next refresh: at start-up a screen gets several at once
(focus set, a row highlighted, the screen resumed), and its first frames had an empty bar.
Here changes that arrive before a rebuild share it (the rebuild reads the bindings as they
are then, so what is shown is the same), and a screen builds its bar at the end of its
on_mount (``await footer.build()``), so its first frame has its keys. A screen that is not
on top is not rebuilt for: every screen refreshes its bindings when it comes back. A
change that leaves the keys shown as they are (focus moved, a state the keys do not
follow) costs no rebuild: the bar is rebuilt only when what it would show differs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.widgets import Footer


class KeyFooter(Footer):
    _rebuild_pending = False
    _changes = 0  # bindings changes seen
    _built_for = -1  # the count the bar was last built for
    _built_keys: tuple[Any, ...] | None = None  # what the bar shows (shown_keys) since its last build

    def bindings_changed(self, screen: Any) -> None:
        self._bindings_ready = True
        self._changes += 1
        if not screen.app.app_focus:
            return
        if not (self.is_attached and screen is self.screen and screen.is_current):
            return
        if not self._rebuild_pending:
            self._rebuild_pending = True
            self.call_after_refresh(self._rebuild)

    async def build(self) -> None:
        """Build the bar now, from the screen's bindings as they are (a screen awaits this
        in its on_mount: it paints nothing before, so its first frame has the keys)."""
        self._bindings_ready = True
        built = asyncio.Event()

        async def in_own_context() -> None:  # compose binds data: it must run as the footer
            try:
                await self._rebuild(force=True)
            finally:
                built.set()

        if self.call_later(in_own_context):
            await built.wait()

    async def _rebuild(self, force: bool = False) -> None:
        self._rebuild_pending = False  # a change from here on gets a rebuild of its own
        if not (self.is_attached and self.screen.is_current) and not force:
            return  # covered since it was asked for: its resume asks again
        if self._built_for == self._changes and not force:
            return  # nothing changed since the last build
        self._built_for = self._changes
        keys = self.shown_keys()
        if keys == self._built_keys and not force:
            return  # the same keys, the same look: nothing to rebuild
        self._built_keys = keys
        await self.recompose()

    def shown_keys(self) -> tuple[Any, ...]:
        """Everything of the screen's bindings that Footer.compose draws from."""
        app = self.app
        active = self.screen.active_bindings
        keys = tuple((b.key, app.get_key_display(b), b.description, b.action, b.group, enabled, tooltip)
                     for _, b, enabled, tooltip in active.values() if b.show)
        palette = active.get(app.COMMAND_PALETTE_BINDING) if self.show_command_palette else None
        palette_key = None if palette is None else (palette.binding.key, palette.binding.description,
                                                     palette.enabled, palette.binding.tooltip)
        return keys, palette_key, self.compact, app.ENABLE_COMMAND_PALETTE
