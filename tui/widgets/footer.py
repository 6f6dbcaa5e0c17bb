"""The key bar: Textual's Footer, rebuilt once per frame however many times the keys change.

Textual's Footer recomposes (removes and mounts every key, ~20 ms) once for each
``refresh_bindings`` after the next refresh: at start-up a screen gets several at once
(focus set, a row highlighted, the screen resumed), so its keys appeared ~100 ms after its
first frame. Here changes that arrive before the rebuild share it: the rebuild reads the
bindings as they are then, so what is shown is the same.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Footer


class KeyFooter(Footer):
    _rebuild_pending = False

    def bindings_changed(self, screen: Any) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen and not self._rebuild_pending:
            self._rebuild_pending = True
            self.call_after_refresh(self._rebuild)

    async def _rebuild(self) -> None:
        self._rebuild_pending = False  # a change from here on gets a rebuild of its own
        await self.recompose()
