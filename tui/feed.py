"""Where the session screen's events come from.

Every feed first loads history: the derived session row, the subtask rows and only the
LAST page of events (a 100k-event session must open at once); ``load_earlier()`` pages
backwards on demand. Then, for a live session, it delivers new committed events:

* ``LocalFeed``  the run is in this process: ``store.subscribe`` (no polling, no lag).
* ``TailFeed``   another process runs it: ``store.tail`` polls the database.
* ``StaticFeed`` a past session: history only.

Rows are read before events, so replaying the page never moves state backwards;
the model drops events whose seq it has already seen, so overlaps are harmless.

New events wait in the feed's ``inbox`` (taken by the screen's next frame); the first batch
into an empty inbox posts ``FeedEvents`` to the screen that started the feed (Textual's way
up, no callback), so a flood of small commits costs one message a frame, not one a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import field
from typing import TYPE_CHECKING, Any, Callable

from textual.message import Message
from textual.message_pump import MessagePump

from shepherd.core.events import Event
from shepherd.core.records import record

if TYPE_CHECKING:
    from shepherd.core.cost_ledger import CostLedger
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.store.rows import SessionRow, SubtaskRow

PAGE_SIZE = 2000


class FeedEvents(Message, bubble=False):  # for the screen that follows the feed only
    """New committed events wait in the feed's inbox (posted when it stops being empty)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count


@record
class History:
    session: "SessionRow | None"
    subtasks: "list[SubtaskRow]" = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    has_earlier: bool = False
    costs: "CostLedger | None" = None  # tokens, cost and waste per attempt (read after the events)

    @property
    def last_seq(self) -> int:
        if self.events:
            return self.events[-1].seq
        return int(getattr(self.session, "last_seq", 0) or 0)


class StaticFeed:
    """History only (a session nobody runs)."""

    live = False

    def __init__(self, store: "EventStore", session_id: str, page_size: int = PAGE_SIZE) -> None:
        self.store = store
        self.session_id = session_id
        self.page_size = page_size
        self.first_seq: int | None = None  # oldest event loaded so far
        self.last_seq = 0
        # Delivered and not taken yet. Filled at once, on the store's side (a frame, a
        # switch or a test reads it without waiting for the message to be handled).
        self.inbox: list[Event] = []
        self.received = 0  # events delivered over the feed's life
        self._target: MessagePump | None = None
        self._closed = False

    async def open(self) -> History:
        row = await self.store.get_session(self.session_id)
        subtasks = await self.store.subtasks(self.session_id)
        last = await self.store.last_seq(self.session_id)
        events = await self.store.events_before(self.session_id, last + 1, limit=self.page_size) if last else []
        if events:
            self.first_seq = events[0].seq
            self.last_seq = events[-1].seq
        else:
            self.first_seq = last + 1 if last else None
            self.last_seq = last
        costs = None
        if row is not None:  # (read after the page: it holds the page's events already, or more)
            try:
                costs = await self.store.cost_ledger(self.session_id)
            except Exception:  # the view works without: the costs fold from the events it sees
                costs = None
        return History(row, list(subtasks), list(events), has_earlier=self.has_earlier, costs=costs)

    @property
    def has_earlier(self) -> bool:
        return self.first_seq is not None and self.first_seq > 1

    async def load_earlier(self, limit: int | None = None) -> list[Event]:
        """The page of events just before the oldest loaded one (ascending seq)."""
        if not self.has_earlier:
            return []
        events = await self.store.events_before(self.session_id, self.first_seq, limit=limit or self.page_size)
        if events:
            self.first_seq = events[0].seq
        else:
            self.first_seq = 1
        return list(events)

    def start(self, target: MessagePump) -> None:
        """Deliver new events from now on, telling ``target`` (the screen) of each batch."""
        self._target = target

    def take(self) -> list[Event]:
        """What was delivered since the last take, oldest first."""
        events, self.inbox = self.inbox, []
        return events

    async def close(self) -> None:
        self._closed = True
        self._target = None

    def _deliver(self, events: list[Event]) -> None:
        fresh = [e for e in events if e.seq > self.last_seq]
        if not fresh or self._target is None or self._closed:
            return
        self.last_seq = fresh[-1].seq
        was_empty = not self.inbox
        self.inbox.extend(fresh)
        self.received += len(fresh)
        if was_empty:  # post_message is safe from the store's writer task, outside the app's context
            self._target.post_message(FeedEvents(len(fresh)))


class LocalFeed(StaticFeed):
    """The run lives in this process: committed batches arrive through store.subscribe."""

    live = True

    def __init__(self, store: "EventStore", session_id: str, page_size: int = PAGE_SIZE) -> None:
        super().__init__(store, session_id, page_size)
        self._buffer: list[Event] = []
        self._unsubscribe: Callable[[], Any] | None = None

    async def open(self) -> History:
        # Subscribe before reading, so nothing committed meanwhile is missed.
        self._unsubscribe = self.store.subscribe(self._on_commit)
        return await super().open()

    def _on_commit(self, events: list[Event]) -> None:
        mine = [e for e in events if e.session_id == self.session_id]
        if not mine:
            return
        if self._target is None:
            self._buffer.extend(mine)
        else:
            self._deliver(mine)

    def start(self, target: MessagePump) -> None:
        super().start(target)
        buffered, self._buffer = self._buffer, []
        if buffered:
            self._deliver(buffered)

    async def close(self) -> None:
        await super().close()
        if self._unsubscribe is not None:
            with contextlib.suppress(Exception):
                self._unsubscribe()
            self._unsubscribe = None


class TailFeed(StaticFeed):
    """Another process runs the session: follow the database with store.tail."""

    live = True

    def __init__(self, store: "EventStore", session_id: str, page_size: int = PAGE_SIZE,
                 poll_s: float = 0.1) -> None:
        super().__init__(store, session_id, page_size)
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def start(self, target: MessagePump) -> None:
        super().start(target)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        try:
            async for batch in self.store.tail(self.session_id, after_seq=self.last_seq, poll_s=self.poll_s):
                if self._closed:
                    break
                self._deliver(list(batch))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the screen shows it; following just stops
            self.error = exc

    async def close(self) -> None:
        await super().close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def make_feed(store: "EventStore", session_id: str, follow: str | None, page_size: int = PAGE_SIZE) -> StaticFeed:
    if follow == "local":
        return LocalFeed(store, session_id, page_size)
    if follow == "tail":
        return TailFeed(store, session_id, page_size)
    return StaticFeed(store, session_id, page_size)
