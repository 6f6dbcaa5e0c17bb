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

A change of some keys is made in place: the keys both bars have stay (a key that is
only enabled or dimmed now is restyled), only a key that went is removed and only one
that came is mounted ("p" turning from Pause to Resume). Recomposing the whole bar
(~20 ms, every key mounted again, and the screen laid out again) was on the path of
every subtask switch, whose "o" lights or dims with the subtask's tool calls.
"""

from __future__ import annotations

import asyncio
from difflib import SequenceMatcher
from typing import Any

from textual.widgets import Footer
from textual.widgets._footer import FooterKey


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
        built, self._built_keys = self._built_keys, keys
        if not force and built is not None and await self._patch(built, keys):
            return
        await self.recompose()

    async def _patch(self, built: tuple[Any, ...], keys: tuple[Any, ...]) -> bool:
        """Turn the bar built for ``built`` into the one for ``keys`` in place: the keys
        both have stay, only those that went are removed and those that came mounted (what
        Footer.compose makes of them). False when only a rebuild can: binding groups, the
        palette key or the bar's style changed, or the bar is not the one built."""
        old, new = _items(built[0]), _items(keys[0])
        widgets = [w for w in self.children if type(w) is FooterKey and not w.has_class("-command-palette")]
        palette = [w for w in self.children if w.has_class("-command-palette")]
        if old is None or new is None or built[1:] != keys[1:] or len(widgets) != len(old) \
                or len(self.children) != len(widgets) + len(palette):
            return False
        gone: list[FooterKey] = []
        mounts = []
        same = [_looks(k) for k in old], [_looks(k) for k in new]
        for tag, i1, i2, j1, j2 in SequenceMatcher(None, *same, autojunk=False).get_opcodes():
            if tag == "equal":  # (the same key; it may have been enabled or disabled meanwhile)
                for widget, item in zip(widgets[i1:i2], new[j1:j2]):
                    _enable(widget, item[5])
                continue
            gone += widgets[i1:i2]
            came = [self._key(item) for item in new[j1:j2]]
            if not came:
                continue
            # (before a key that stays, or one that goes: removals come after the mounts)
            if i2 < len(widgets):
                mounts.append(self.mount_all(came, before=widgets[i2]))
            elif palette:
                mounts.append(self.mount_all(came, before=palette[0]))
            else:
                mounts.append(self.mount_all(came))
        for mounted in mounts:
            await mounted
        if gone:
            await self.remove_children(gone)
        self.styles.grid_size_columns = len(new)  # (as compose sets it)
        return True

    def _key(self, item: tuple[Any, ...]) -> FooterKey:
        """The key Footer.compose makes of a binding that is not in a group."""
        key, display, description, action, _group, enabled, tooltip = item
        widget = FooterKey(key, display, description, action, disabled=not enabled, tooltip=tooltip)
        widget.compact = self.compact  # (compose data-binds it; a change of it rebuilds the bar)
        return widget

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


def _items(keys: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
    """The keys Footer.compose makes of ``shown_keys()[0]``: each action's first binding,
    in order; None if any is in a group (compose nests those)."""
    first: dict[str, tuple[Any, ...]] = {}
    for item in keys:
        if item[4] is not None:
            return None
        first.setdefault(item[3], item)
    return list(first.values())


def _looks(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """All of a key but whether it is enabled (which ``_enable`` changes in place)."""
    return item[:5] + item[6:]


def _enable(widget: FooterKey, enabled: bool) -> None:
    """What FooterKey's constructor does with ``disabled``, for a key already shown: a
    dimmed key (its action does not apply now) keeps its place in the bar."""
    if widget._disabled == enabled:
        widget._disabled = not enabled
        widget.set_class(not enabled, "-disabled")
