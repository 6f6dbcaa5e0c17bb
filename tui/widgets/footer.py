"""The key bar: Textual's Footer, rebuilt once per frame however many times the keys change.

Textual's Footer recomposes (removes and mounts every key, ~20 ms) once for each
``refresh_bindings`` after the next refresh: at start-up a screen gets several at once
(focus set, a row highlighted, the screen resumed), so its keys appeared ~100 ms after its
first frame. Here changes that arrive before the rebuild share it: the rebuild reads the
bindings as they are then, so what is shown is the same. The first rebuild does not wait
for a refresh: the screen's first frame has its keys (Textual's had an empty bar). A
screen that is not on top is not rebuilt for (its keys change as another screen opens
over it): it is when it comes back, as every screen refreshes its bindings on resume.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Footer


class KeyFooter(Footer):
    _rebuild_pending = False
    _built = False

    def bindings_changed(self, screen: Any) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if not (self.is_attached and screen is self.screen and screen.is_current):
            return
        if not self._rebuild_pending:
            self._rebuild_pending = True
            if self._built:
                self.call_after_refresh(self._rebuild)
            else:  # through the screen's queue: after its on_mount (which sets its state),
                # before it paints; then in the footer's own context (its compose binds data)
                screen.call_later(self.call_later, self._rebuild)

    async def _rebuild(self) -> None:
        self._rebuild_pending = False  # a change from here on gets a rebuild of its own
        if not (self.is_attached and self.screen.is_current):  # covered since: its resume asks again
            return
        self._built = True
        await self.recompose()
