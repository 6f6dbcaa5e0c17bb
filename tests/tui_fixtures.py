"""Stored sessions of given shapes, written through a real Store as real events.

Every builder takes the store, a fixed session id and a start time ``t0`` and appends
events with fixed ``ts`` values, so screenshots of them are byte-stable. Times are
nominal: ``T0`` is the reference "now" minus a few minutes; snapshot tests freeze the
app's clock at ``NOW``.

Use ``build_db(path, shapes)`` from sync code (snapshot tests, the screenshot script):
it opens the store on a FakeClock, writes, runs recovery where a shape needs it, and
closes, so the app later opens an ordinary file.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from shepherd.core import events as ev
from shepherd.core.clock import FakeClock

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
NOW = T0 + 900.0  # the frozen "now" of snapshot tests: 15 minutes after T0
LEASE_TTL = 10 * 365 * 86400.0  # live fixtures keep their lease "forever"

SESSION_IDS = {
    "done": "s6b49d200a001",
    "failed": "s6b49d200a002",
    "live": "s6b49d200a003",
    "retry": "s6b49d200a004",
    "stuck": "s6b49d200a005",
    "interrupted": "s6b49d200a006",
    "cancelled": "s6b49d200a007",
}

TASK_SUBTASKS = [
    {"id": "explore", "title": "Look around the project", "prompt": "Find out how dates are parsed."},
    {"id": "fix", "title": "Fix the DD/MM/YYYY branch", "prompt": "Fix parse_date."},
    {"id": "notes", "title": "Write down what changed", "prompt": "Add a note to NOTES.md."},
]


class Writer:
    """Appends events for one session with fixed timestamps ``t0 + offset``."""

    def __init__(self, store: Any, sid: str, t0: float) -> None:
        self.store = store
        self.sid = sid
        self.t0 = t0
        self.subtask: str | None = None
        self.attempt: int | None = None

    async def add(self, at: float, event: ev.Event, *, session_level: bool = False) -> ev.Event | None:
        fields: dict[str, Any] = {"session_id": self.sid, "ts": self.t0 + at}
        if not session_level:
            if event.subtask_id is None:
                fields["subtask_id"] = self.subtask
            if event.attempt is None:
                fields["attempt"] = self.attempt
        return await self.store.append(event.with_(**fields))

    async def start(self, title: str, *, backend: str = "scripted", model: str | None = "scripted-demo",
                    subtasks: list[dict[str, str]] | None = None) -> None:
        subtasks = subtasks if subtasks is not None else TASK_SUBTASKS
        await self.add(0, ev.SessionStarted(title=title, backend=backend, model=model, workspace="/tmp/tinydates",
                                            task={"title": title, "backend": backend, "model": model,
                                                  "workspace": "/tmp/tinydates", "subtasks": subtasks}),
                       session_level=True)
        await self.add(0.1, ev.PlanReady(subtasks=subtasks), session_level=True)

    async def subtask_start(self, at: float, sub_id: str, title: str, *, reason: str = "first",
                            attempt: int = 1, extra: str = "") -> None:
        self.subtask, self.attempt = sub_id, attempt
        await self.add(at, ev.SubtaskStarted(title=title, phase="coding"))
        await self.add(at + 0.05, ev.AttemptStarted(reason=reason, prompt_extra=extra))

    async def attempt_start(self, at: float, attempt: int, reason: str, extra: str = "") -> None:
        self.attempt = attempt
        await self.add(at, ev.AttemptStarted(reason=reason, prompt_extra=extra))

    async def say(self, at: float, text: str, *, mid: str, chunk: int = 12, complete: bool = True) -> None:
        pieces = [text[i:i + chunk] for i in range(0, len(text), chunk)]
        for i, piece in enumerate(pieces):
            await self.add(at + i * 0.04, ev.TextDelta(message_id=mid, text=piece))
        if complete:
            await self.add(at + len(pieces) * 0.04, ev.MessageCompleted(message_id=mid, text=text))

    async def tool(self, at: float, call_id: str, name: str, args: dict[str, Any], *,
                   output: str | None = None, took: float = 0.4, status: str = "ok") -> None:
        await self.add(at, ev.ToolStarted(call_id=call_id, name=name, input=args))
        if output is not None:
            await self.add(at + took, ev.ToolFinished(call_id=call_id, status=status, output=output,
                                                      duration_s=took))

    async def usage(self, at: float, inp: int, out: int, cost: float | None = None) -> None:
        await self.add(at, ev.Usage(input_tokens=inp, output_tokens=out, cost_usd=cost))

    async def finish_subtask(self, at: float, status: str = "done", reason: str = "") -> None:
        await self.add(at, ev.SubtaskFinished(status=status, reason=reason))

    async def finish(self, at: float, status: str = "done", reason: str = "") -> None:
        await self.add(at, ev.SessionFinished(status=status, reason=reason), session_level=True)


# --- shapes -----------------------------------------------------------------------------------


async def shape_done(store: Any, sid: str, t0: float) -> None:
    """A finished session: three subtasks done, one retry on the way."""
    w = Writer(store, sid, t0)
    await w.start("Demo: fix the date parser in tinydates")
    await w.subtask_start(1, "explore", "Look around the project")
    await w.say(1.2, "Let me look around the project first.", mid="m1")
    await w.tool(2.0, "c1", "list_files", {"path": "."}, output="README.md\ndates.py\ncheck_dates.py")
    await w.tool(2.0, "c2", "read_file", {"path": "dates.py"}, output="def parse_date(text): ...")
    await w.usage(3.0, 1200, 180, 0.0021)
    await w.finish_subtask(3.5)
    await w.subtask_start(4, "fix", "Fix the DD/MM/YYYY branch")
    await w.add(5, ev.Error(kind="stream_broken", message="stream ended without a final response",
                            exception_type="ModelBehaviorError", retryable=True))
    await w.add(5.01, ev.RetryScheduled(kind="stream_broken", retry_no=1, max_retries=3, delay_s=1,
                                        resume_at=t0 + 6, action="restart"))
    await w.attempt_start(6, 2, "restart")
    await w.tool(6.5, "c3", "write_file", {"path": "dates.py"}, output="wrote 312 bytes")
    await w.usage(7.0, 2400, 300, 0.0042)
    await w.finish_subtask(8)
    await w.subtask_start(8.5, "notes", "Write down what changed")
    await w.say(9, "Recording the fix in NOTES.md.", mid="m2")
    await w.usage(10, 800, 60, 0.0009)
    await w.finish_subtask(11)
    await w.finish(11.5, "done")


async def shape_failed(store: Any, sid: str, t0: float) -> None:
    """Failed at once: the API key was rejected (auth is never retried)."""
    w = Writer(store, sid, t0)
    await w.start("Refactor the config loader", backend="claude", model="claude-sonnet-4-5",
                  subtasks=[{"id": "main", "title": "Refactor the config loader", "prompt": "Refactor."}])
    await w.subtask_start(1, "main", "Refactor the config loader")
    await w.add(2, ev.Error(kind="auth", message="401 invalid x-api-key", exception_type="AuthenticationError",
                            status_code=401, retryable=False))
    await w.finish_subtask(2.1, "failed", "auth: 401 invalid x-api-key")
    await w.finish(2.2, "failed", "auth")


async def shape_cancelled(store: Any, sid: str, t0: float) -> None:
    w = Writer(store, sid, t0)
    await w.start("Add type hints to utils", backend="openai", model="gpt-4.1",
                  subtasks=[{"id": "main", "title": "Add type hints", "prompt": "Add hints."}])
    await w.subtask_start(1, "main", "Add type hints")
    await w.say(1.5, "Starting with utils/io.py.", mid="m1")
    await w.usage(2, 900, 40, 0.003)
    await w.add(40, ev.Control(command="cancel", source="tui"))
    await w.finish_subtask(40.5, "cancelled", "cancelled by a person")
    await w.finish(41, "cancelled", "cancelled by a person")


async def _live_prefix(store: Any, w: Writer, title: str) -> None:
    await store.acquire_lease(w.sid, ttl_s=LEASE_TTL)
    await w.start(title)
    await w.subtask_start(1, "explore", "Look around the project")
    await w.say(1.2, "Let me look around the project first: the file list, the README and the parser, "
                     "all at once.", mid="m1")
    await w.usage(2.0, 1500, 120, 0.0024)


async def shape_live(store: Any, sid: str, t0: float) -> None:
    """Running, with three parallel tool calls of which one has finished."""
    w = Writer(store, sid, t0)
    await _live_prefix(store, w, "Demo: fix the date parser in tinydates")
    await w.tool(3.0, "call_ls", "list_files", {"path": "."}, output="README.md\ncheck_dates.py\ndates.py\nNOTES.md",
                 took=0.2)
    await w.tool(3.0, "call_readme", "read_file", {"path": "README.md"})
    await w.tool(3.0, "call_dates", "read_file", {"path": "dates.py"})


async def shape_retry(store: Any, sid: str, t0: float) -> None:
    """Waiting for a retry: a rate limit, the next attempt 20 s after the frozen NOW."""
    w = Writer(store, sid, t0)
    await _live_prefix(store, w, "Update the changelog")
    await w.tool(3.0, "call_ls", "list_files", {"path": "."}, output="CHANGELOG.md\nsrc", took=0.1)
    await w.add(4.0, ev.Error(kind="rate_limit", message="429 rate limit reached for requests",
                              exception_type="RateLimitError", status_code=429, retryable=True))
    delay = (NOW - t0) - 4.0 + 20.0
    await w.add(4.01, ev.RetryScheduled(kind="rate_limit", retry_no=2, max_retries=5, delay_s=delay,
                                        resume_at=t0 + 4.0 + delay, action="retry"))


async def shape_stuck(store: Any, sid: str, t0: float) -> None:
    """Stuck: tool concurrency errors until the retry budget ran out."""
    w = Writer(store, sid, t0)
    await _live_prefix(store, w, "Split the parser module")
    t = 3.0
    for n in range(1, 4):
        await w.add(t, ev.Error(kind="tool_concurrency",
                                message="API Error: 400 due to tool use concurrency issues.",
                                exception_type="BadRequestError", status_code=400, retryable=True))
        await w.add(t + 0.01, ev.RetryScheduled(kind="tool_concurrency", retry_no=n, max_retries=3,
                                                delay_s=2.0 ** n, resume_at=t + 2.0 ** n,
                                                action="repair" if n >= 2 else "retry"))
        t += 2.0 ** n
        await w.attempt_start(t, n + 1, "retry", "Use one tool at a time.")
        t += 1.0
    await w.add(t, ev.Error(kind="tool_concurrency", message="API Error: 400 due to tool use concurrency issues.",
                            exception_type="BadRequestError", status_code=400, retryable=True))
    await w.finish_subtask(t + 0.1, "stuck", "tool_concurrency: 3 retries used up")


async def shape_interrupted(store: Any, sid: str, t0: float) -> None:
    """The runner died with two tool calls open: recovery closes them as interrupted.

    Needs a store on a FakeClock (``build_db`` does it): the lease is taken with a short
    ttl, the clock moves past it, and ``recover()`` runs as the next app start would.
    """
    w = Writer(store, sid, t0)
    await store.acquire_lease(sid, ttl_s=30)
    await w.start("Speed up the test suite")
    await w.subtask_start(1, "explore", "Look around the project")
    await w.say(1.2, "Profiling the slowest tests first.", mid="m1")
    await w.tool(2.0, "call_a", "run_command", {"command": "pytest --durations=5"})
    await w.tool(2.0, "call_b", "read_file", {"path": "conftest.py"})
    await w.usage(2.5, 700, 50, 0.001)


SHAPES: dict[str, Callable[[Any, str, float], Awaitable[None]]] = {
    "done": shape_done,
    "failed": shape_failed,
    "cancelled": shape_cancelled,
    "live": shape_live,
    "retry": shape_retry,
    "stuck": shape_stuck,
    "interrupted": shape_interrupted,
}

# Start offsets (before NOW) so the list has a realistic spread, newest first:
DEFAULT_STARTS = {
    "live": NOW - 30,
    "retry": NOW - 120,
    "stuck": NOW - 600,
    "interrupted": NOW - 3 * 3600,
    "done": NOW - 5 * 3600,
    "failed": NOW - 26 * 3600,
    "cancelled": NOW - 3 * 86400,
}


async def populate(store: Any, shapes: list[str], *, starts: dict[str, float] | None = None) -> dict[str, str]:
    """Write ``shapes`` (keys of SHAPES) into ``store``; returns shape -> session id.
    (An ``interrupted`` shape is only marked so by the recovery of the next Store.open
    after its lease expired: ``build_db_async`` does that.)"""
    starts = {**DEFAULT_STARTS, **(starts or {})}
    ids: dict[str, str] = {}
    for shape in shapes:
        sid = SESSION_IDS[shape]
        await SHAPES[shape](store, sid, starts[shape])
        ids[shape] = sid
    await store.flush()
    return ids


async def open_store(path: Path, clock: FakeClock | None = None) -> Any:
    from shepherd.core.store.db import Store

    return await Store.open(path, clock=clock)


async def build_db_async(path: Path, shapes: list[str], *, starts: dict[str, float] | None = None) -> dict[str, str]:
    clock = FakeClock(start=min([{**DEFAULT_STARTS, **(starts or {})}[s] for s in shapes] or [T0]) - 1)
    store = await open_store(path, clock)
    try:
        ids = await populate(store, shapes, starts=starts)
    finally:
        await store.close()
    if "interrupted" in shapes:
        # The next start after the runner died: its lease has expired, recovery runs on open.
        clock.advance(max(0.0, {**DEFAULT_STARTS, **(starts or {})}["interrupted"] + 120 - clock.now()))
        await (await open_store(path, clock)).close()
    return ids


def build_db(path: Path, shapes: list[str], *, starts: dict[str, float] | None = None) -> dict[str, str]:
    """Sync wrapper (its own event loop): write the shapes to a database file at ``path``."""
    return asyncio.run(build_db_async(path, shapes, starts=starts))


async def many_sessions(store: Any, n: int, *, t0: float = T0) -> list[str]:
    """``n`` small finished sessions (ids ``sm{i:011d}``), the i-th started at t0 + i.
    Submitted without waiting per event (one flush at the end), so thousands are quick."""
    ids = []
    sub = [{"id": "main", "title": "Main", "prompt": "p"}]
    for i in range(n):
        sid = f"sm{i:011d}"
        title = f"Session number {i}"
        store.submit(ev.SessionStarted(session_id=sid, ts=t0 + i, title=title, backend="scripted",
                                       model=None, workspace="/tmp", task={"title": title}))
        store.submit(ev.PlanReady(session_id=sid, ts=t0 + i + 0.1, subtasks=sub))
        store.submit(ev.SessionFinished(session_id=sid, ts=t0 + i + 1, status="done" if i % 3 else "failed"))
        ids.append(sid)
    await store.flush()
    return ids


# --- what a snapshot or screen test freezes ---------------------------------------------------


def frozen_screen(monkeypatch: Any, tmp_path: Path) -> Iterator[None]:
    """UTC, no animation, and the temp dir as the working one (a relative db path is shown
    on screen): the body of each screen test module's ``frozen`` fixture."""
    from shepherd.tui.widgets.anim import Ticker

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(Ticker, "animate", False)
    monkeypatch.chdir(tmp_path)
    yield
    monkeypatch.undo()
    time.tzset()


class Clock:
    """The app's (real) clock, moved by the test."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
