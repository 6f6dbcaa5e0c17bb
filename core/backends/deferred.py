"""A backend made when its first attempt starts, in a thread, once ``ready`` is set.

Making a backend imports its SDK (``import agents``: over a second). The TUI starts a run
with this stand-in so the run's live view is on the screen first: the import waits for the
view's first frame (``ready``) and then runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from shepherd.core.backends.base import AttemptContext, Backend, BackendUnavailable
from shepherd.core.events import Event


class DeferredBackend:
    """``Backend`` for ``name``; the real one is made by ``make_backend`` on first use."""

    def __init__(self, name: str, ready: asyncio.Event | None = None) -> None:
        self.name = name
        self.ready = ready
        self.real: Backend | None = None
        self._making: asyncio.Future[Backend] | None = None

    def __repr__(self) -> str:
        return f"DeferredBackend({self.name!r}, real={self.real!r})"

    async def load(self) -> Backend:
        """The real backend (one thread making it, however many ask)."""
        if self.real is None:
            if self._making is None:
                self._making = asyncio.ensure_future(self._make())
            self.real = await asyncio.shield(self._making)
        return self.real

    async def _make(self) -> Backend:
        from shepherd.core.engine import make_backend

        if self.ready is not None:
            await self.ready.wait()
        try:
            return await asyncio.to_thread(make_backend, self.name)
        except (ImportError, ValueError) as e:  # a broken install, no such backend: not retried
            raise BackendUnavailable(f"the {self.name} backend cannot be loaded: {e}") from e

    async def attempt(self, ctx: AttemptContext) -> AsyncIterator[Event]:
        real = await self.load()
        stream: Any = real.attempt(ctx)
        try:
            async for ev in stream:
                yield ev
        finally:  # closing this stream closes the real one at once (the engine relies on it)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
