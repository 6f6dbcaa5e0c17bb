"""How a person steers a running session. The TUI talks to this protocol only: the
Supervisor implements it in-process; ``RemoteControl`` writes the store's commands
table for a session another process runs (``shepherd attach``, ``shepherd pause ID``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from shepherd.core.states import COMMANDS, Command  # noqa: F401  (COMMANDS: re-exported)

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore


CLEAN = "clean"  # the commands row's text of a clean retry


class Controller(Protocol):
    async def pause(self, *, immediate: bool = False, source: str = "tui") -> None: ...
    async def resume(self, *, source: str = "tui") -> None: ...
    async def retry_now(self, *, source: str = "tui") -> None: ...
    # clean: a worktree session's files are restored to the subtask's start checkpoint first
    # (and the subtasks after it that had run become pending and run again after it)
    async def retry(self, subtask_id: str | None = None, *, clean: bool = False, source: str = "tui") -> None: ...
    async def skip(self, subtask_id: str | None = None, *, source: str = "tui") -> None: ...
    async def cancel(self, *, source: str = "tui") -> None: ...
    async def note(self, text: str, *, source: str = "tui") -> None: ...
    # Tool approvals: answer a call waiting for a person (None: the oldest waiting). In
    # process the result says whether it was waiting; remotely, that it was sent.
    async def approve(self, call_id: str | None = None, *, scope: str = "call", source: str = "tui") -> bool: ...
    async def deny(self, call_id: str | None = None, *, reason: str = "", source: str = "tui") -> bool: ...


class RemoteControl:
    """Controls for a session run by another process, through the commands table."""

    def __init__(self, store: EventStore, session_id: str, source: str = "tui") -> None:
        self.store = store
        self.session_id = session_id
        self.source = source

    async def _send(self, command: str, subtask_id: str | None = None, text: str = "", source: str | None = None,
                    call_id: str | None = None) -> None:
        await self.store.enqueue_command(self.session_id, command, subtask_id=subtask_id, text=text,
                                         source=source or self.source, call_id=call_id)

    async def pause(self, *, immediate: bool = False, source: str | None = None) -> None:
        await self._send(Command.PAUSE_NOW if immediate else Command.PAUSE, source=source)

    async def resume(self, *, source: str | None = None) -> None:
        await self._send(Command.RESUME, source=source)

    async def retry_now(self, *, source: str | None = None) -> None:
        await self._send(Command.RETRY_NOW, source=source)

    async def retry(self, subtask_id: str | None = None, *, clean: bool = False, source: str | None = None) -> None:
        """(commands.text "clean" for a clean retry)"""
        await self._send(Command.RETRY, subtask_id, text=CLEAN if clean else "", source=source)

    async def skip(self, subtask_id: str | None = None, *, source: str | None = None) -> None:
        await self._send(Command.SKIP, subtask_id, source=source)

    async def cancel(self, *, source: str | None = None) -> None:
        await self._send(Command.CANCEL, source=source)

    async def note(self, text: str, *, source: str | None = None) -> None:
        await self._send(Command.NOTE, text=text, source=source)

    async def approve(self, call_id: str | None = None, *, scope: str = "call", source: str | None = None) -> bool:
        """Queued for the runner (commands.call_id; text "session" for scope session)."""
        call_id = call_id or await self._oldest_pending()
        if call_id is None:
            return False
        await self._send(Command.APPROVE, text="session" if scope == "session" else "", source=source,
                         call_id=call_id)
        return True

    async def deny(self, call_id: str | None = None, *, reason: str = "", source: str | None = None) -> bool:
        call_id = call_id or await self._oldest_pending()
        if call_id is None:
            return False
        await self._send(Command.DENY, text=reason, source=source, call_id=call_id)
        return True

    async def _oldest_pending(self) -> str | None:
        pending = await self.store.approvals(self.session_id)
        return pending[0].call_id if pending else None
