"""The key bar: Textual's Footer, rebuilt once per frame however many times the keys change.

Textual's Footer recomposes (removes and mounts every key, ~20 ms) once for each
``refresh_bindings``, after the next refresh: at start-up a screen gets several at once
(focus set, a row highlighted, the screen resumed), and its first frames had an empty bar.
Here changes that arrive before a rebuild share it (the rebuild reads the bindings as they
are then, so what is shown is the same), and a screen builds its bar at the end of its
on_mount (``await footer.build()``), so its first frame has its keys. A screen that is not
on top is not rebuilt for: every screen refreshes its bindings when it comes back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.widgets import Footer


class KeyFooter(Footer):
    _rebuild_pending = False
    _changes = 0  # bindings changes seen
    _built_for = -1  # the count the bar was last built for

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
        await self.recompose()
