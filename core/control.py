"""How a person steers a running session. The TUI talks to this protocol only: the
Supervisor implements it in-process; ``RemoteControl`` writes the store's commands
table for a session another process runs (``shepherd attach``, ``shepherd pause ID``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.store.db import Store

COMMANDS = ("pause", "pause_now", "resume", "retry", "retry_now", "skip", "cancel", "note")


class Controller(Protocol):
    async def pause(self, *, immediate: bool = False, source: str = "tui") -> None: ...
    async def resume(self, *, source: str = "tui") -> None: ...
    async def retry_now(self, *, source: str = "tui") -> None: ...
    async def retry(self, subtask_id: str | None = None, *, source: str = "tui") -> None: ...
    async def skip(self, subtask_id: str | None = None, *, source: str = "tui") -> None: ...
    async def cancel(self, *, source: str = "tui") -> None: ...
    async def note(self, text: str, *, source: str = "tui") -> None: ...


class RemoteControl:
    """Controls for a session run by another process, through the commands table."""

    def __init__(self, store: "Store", session_id: str, source: str = "tui") -> None:
        self.store = store
        self.session_id = session_id
        self.source = source

    async def _send(self, command: str, subtask_id: str | None = None, text: str = "", source: str | None = None) -> None:
        await self.store.enqueue_command(self.session_id, command, subtask_id=subtask_id, text=text,
                                         source=source or self.source)

    async def pause(self, *, immediate: bool = False, source: str | None = None) -> None:
        await self._send("pause_now" if immediate else "pause", source=source)

    async def resume(self, *, source: str | None = None) -> None:
        await self._send("resume", source=source)

    async def retry_now(self, *, source: str | None = None) -> None:
        await self._send("retry_now", source=source)

    async def retry(self, subtask_id: str | None = None, *, source: str | None = None) -> None:
        await self._send("retry", subtask_id, source=source)

    async def skip(self, subtask_id: str | None = None, *, source: str | None = None) -> None:
        await self._send("skip", subtask_id, source=source)

    async def cancel(self, *, source: str | None = None) -> None:
        await self._send("cancel", source=source)

    async def note(self, text: str, *, source: str | None = None) -> None:
        await self._send("note", text=text, source=source)
