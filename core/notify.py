"""Telling a person that a session waits for them (no Textual, no engine hook).

A ``Notifier`` listens to the store's committed events (``store.subscribe``) and fires
when a session starts waiting for a person:

- ``approval.requested`` whose call is not decided in the same batch (a rule's yes comes
  with it: nothing to tell);
- ``subtask.finished`` with status ``stuck`` (a retryable failure whose retries or the
  attempt budget are used up, a failed ``check`` that used up its retries included) that
  is not started again in the same batch;
- ``session.finished`` (done, failed, cancelled).

Requests and stuck subtasks are held ``hold_s`` before they are told: the engine commits a
rule's request and its ``approval.decided(rule)`` back to back, not always in one batch (that
tells nobody), and a stuck subtask of a headless run is followed at once by its session's
end (the two are one notification, keyed by the session's end).

Key = (session id, seq of that event): one wait is never announced twice. The terminal
(bell, OSC 9 / OSC 777, wrapped for tmux) is deduplicated per process; ``notify_command``
only runs in a runner (``run_commands``) and exactly once per key across processes: its
claim is ``INSERT OR IGNORE INTO notified (session_id, seq, channel='command', at)``.

Every field is untrusted (titles, tool input, reasons): ``core.text.safe``, whitespace
folded, no C0/C1 byte left, ``;`` out of the OSC 777 title, at most 200 characters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from shepherd.core.config import UserConfig
from shepherd.core.process_group import end_group
from shepherd.core.records import record
from shepherd.core.text import clip, safe

if TYPE_CHECKING:
    from shepherd.core.events import Event
    from shepherd.core.store.protocol import EventStore

log = logging.getLogger("shepherd.notify")

FIELD_MAX = 200
COMMAND_TIMEOUT_S = 10.0
HOLD_S = 0.5  # a request waits this long for a rule's yes, a stuck subtask for its session's end
POLL_S = 1.0  # how often a TUI looks for other processes' events
POLL_ROWS = 1000
COMMAND_CHANNEL = "command"
_OSC777_TERMS = ("foot", "rxvt")  # TERM prefixes whose terminals take OSC 777, not OSC 9
_CONTROLS = {c: " " for c in (*range(0x20), *range(0x7F, 0xA0))}
# what the TUI's poll reads of other processes' runs: the waits and what answers them
WATCHED_TYPES = ("approval.requested", "approval.decided", "tool.finished", "subtask.finished", "subtask.started",
                 "attempt.started", "session.started", "session.finished")


@record(frozen=True, slots=True)
class Notice:
    """One wait a person is told of. ``kind``: approval | stuck | finished."""

    session_id: str
    seq: int
    kind: str
    reason: str
    title: str = ""
    call_id: str | None = None  # approval: the call waiting
    subtask_id: str | None = None  # stuck: the subtask

    @property
    def key(self) -> tuple[str, int]:
        return (self.session_id, self.seq)


# --- what a batch of events starts ----------------------------------------------------------


def _approval_reason(tool: str, tool_input: Any) -> str:
    from shepherd.core.approvals import main_input

    try:
        _, text = main_input(tool, tool_input if isinstance(tool_input, Mapping) else {})
    except Exception:  # noqa: BLE001 - odd input: the tool's name is enough
        text = ""
    return f"waiting for approval: {tool} {text}".rstrip()


def notices_in(events: Iterable["Event"]) -> list[Notice]:
    """The waits ``events`` (one committed batch, seq order per session) start and do not
    answer themselves. Pure."""
    events = list(events)
    out: list[Notice] = []
    for i, ev in enumerate(events):
        later = events[i + 1:]
        sid = ev.session_id
        if ev.type == "approval.requested":
            call = getattr(ev, "call_id", "")
            if any(e.session_id == sid and e.type in ("approval.decided", "tool.finished")
                   and getattr(e, "call_id", None) == call for e in later):
                continue  # a rule's yes (or the call closed) in the same commit: nobody waits
            out.append(Notice(sid, ev.seq, "approval",
                              _approval_reason(str(getattr(ev, "tool", "")), getattr(ev, "input", {})), call_id=call))
        elif ev.type == "subtask.finished" and getattr(ev, "status", "") == "stuck":
            sub = ev.subtask_id
            if any(e.session_id == sid and e.subtask_id == sub and e.type in ("subtask.started", "attempt.started")
                   for e in later):
                continue  # retried in the same commit
            why = getattr(ev, "reason", "") or "waiting for a person"
            out.append(Notice(sid, ev.seq, "stuck", f"stuck: subtask {sub}: {why}", subtask_id=sub))
        elif ev.type == "session.finished":
            status = getattr(ev, "status", "") or "finished"
            why = getattr(ev, "reason", "")
            out.append(Notice(sid, ev.seq, "finished", f"session {status}" + (f": {why}" if why else "")))
    return out


def merge_end(stuck: Notice, end: Notice) -> Notice:
    """A stuck subtask and its session's end (headless): one notice, keyed by the end."""
    return replace(end, reason=f"{end.reason} ({stuck.reason})")


# --- terminal sequences ---------------------------------------------------------------------


def clean(text: Any, limit: int = FIELD_MAX) -> str:
    """An untrusted field for a notification: terminal-safe (``safe``), no control byte at
    all (newlines and tabs folded), at most ``limit`` characters."""
    return clip(safe(str(text)).translate(_CONTROLS), limit)


def tmux_wrap(seq: str) -> str:
    """An escape sequence passed through tmux to the outer terminal (needs tmux >= 3.3
    with ``set -g allow-passthrough on``)."""
    return "\x1bPtmux;" + seq.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def desktop_mode(config: UserConfig, env: Mapping[str, str]) -> str:
    mode = config.desktop
    if mode == "auto":
        term = env.get("TERM", "")
        if term in ("", "dumb") or term.startswith("linux"):  # the Linux console would show the bytes
            return "off"
        return "osc777" if term.startswith(_OSC777_TERMS) else "osc9"
    return mode


def terminal_text(notice: Notice, config: UserConfig, env: Mapping[str, str] | None = None) -> str:
    """What to write to the person's terminal for ``notice`` ("" for nothing)."""
    env = os.environ if env is None else env
    if not config.notify:
        return ""
    out = "\a" if config.bell else ""
    mode = desktop_mode(config, env)
    title, reason = clean(notice.title or notice.session_id), clean(notice.reason)
    if mode == "osc9":
        # "Shepherd" first: a text of the form "4;..." would be ConEmu's progress sequence
        seq = f"\x1b]9;{clean(f'Shepherd: {title}: {reason}')}\x07"
    elif mode == "osc777":
        seq = f"\x1b]777;notify;{clean(f'Shepherd: {title}').replace(';', '')};{reason}\x07"
    else:
        return out
    return out + (tmux_wrap(seq) if env.get("TMUX") else seq)


def tty_writer(stream: Any) -> Callable[[str], Any] | None:
    """Writes (and flushes) notifications' sequences to ``stream`` if it is a terminal;
    None if it is not (a headless runner's log piped or redirected gets no sequences)."""
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError, OSError):
        return None

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


# --- the notifier ---------------------------------------------------------------------------


def _claim(session_id: str, seq: int, at: float) -> Callable[[sqlite3.Connection], bool]:
    def fn(raw: sqlite3.Connection) -> bool:
        cur = raw.execute("INSERT OR IGNORE INTO notified (session_id, seq, channel, at) VALUES (?, ?, ?, ?)",
                          (session_id, seq, COMMAND_CHANNEL, at))
        return cur.rowcount == 1
    return fn


class Notifier:
    """Notifications for the sessions of one store.

    ``terminal``: writes a string to the person's terminal (None: no terminal, e.g. a
    headless runner whose stderr is not a tty). ``run_commands``: this process runs the
    sessions it hears of through ``subscribe`` (a runner): it runs ``notify_command``.
    """

    def __init__(self, store: "EventStore", config: UserConfig, *, terminal: Callable[[str], Any] | None = None,
                 run_commands: bool = False, env: Mapping[str, str] | None = None, hold_s: float = HOLD_S,
                 command_timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.store = store
        self.config = config
        self.terminal = terminal
        self.run_commands = run_commands
        self.env = dict(os.environ if env is None else env)
        self.hold_s = hold_s
        self.command_timeout_s = command_timeout_s
        self._titles: dict[str, str] = {}
        self._told: set[tuple[str, int]] = set()  # keys written to the terminal by this process
        self._tried: set[tuple[str, int]] = set()  # keys this process claimed (or tried to) for the command
        self._held: dict[tuple[str, int], tuple[Notice, bool, asyncio.TimerHandle | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._failed_once = False
        self.attach_point: int | None = None  # set once follow_others has read where every session was
        self._closed = False
        self.commands_run = 0

    @property
    def active(self) -> bool:
        c = self.config
        return c.notify and ((self.terminal is not None and c.terminal_on)
                             or (self.run_commands and bool(c.notify_command)))

    def start(self) -> "Notifier":
        """Listen to this process's commits (before the run writes its first event)."""
        if self.active and self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self._on_commit)
        return self

    def _on_commit(self, events: list["Event"]) -> None:
        self.feed(events, commands=self.run_commands)

    def feed(self, events: Iterable["Event"], *, commands: bool = False) -> None:
        """One committed batch (``commands``: this process runs those sessions).

        A request or a stuck subtask is held ``hold_s`` first: a rule's yes committed just
        after its request, or a person's quick retry, tells nobody; a headless run's end
        right after its stuck subtask becomes one notice."""
        if self._closed:
            return
        events = list(events)
        for ev in events:
            if ev.type == "session.started":
                self._titles[ev.session_id] = str(getattr(ev, "title", "") or "")
        self._drop_answered(events)
        for notice in notices_in(events):
            cmd = commands
            held = self._held.get(notice.key)
            if held is not None:  # the same one, heard twice (subscribe and the poll)
                self._held[notice.key] = (held[0], held[1] or cmd, held[2])
                continue
            if notice.kind == "finished":
                for key, (stuck, held_cmd, timer) in list(self._held.items()):
                    if stuck.session_id == notice.session_id and stuck.kind == "stuck":
                        del self._held[key]
                        if timer is not None:
                            timer.cancel()
                        notice, cmd = merge_end(stuck, notice), cmd or held_cmd
            if notice.kind in ("approval", "stuck") and self.hold_s > 0 and notice.key not in self._told:
                timer = asyncio.get_running_loop().call_later(self.hold_s, self._release, notice.key)
                self._held[notice.key] = (notice, cmd, timer)
                continue
            self._fire(notice, cmd)

    def _drop_answered(self, events: list["Event"]) -> None:
        """Held notices a later event answers: the call decided or closed, the subtask
        started again."""
        if not self._held:
            return
        for ev in events:
            for key, (held, _, timer) in list(self._held.items()):
                if held.session_id != ev.session_id or ev.seq <= held.seq:
                    continue
                if (held.kind == "approval" and ev.type in ("approval.decided", "tool.finished")
                        and getattr(ev, "call_id", None) == held.call_id) or \
                        (held.kind == "stuck" and ev.type in ("subtask.started", "attempt.started")
                         and ev.subtask_id == held.subtask_id):
                    del self._held[key]
                    if timer is not None:
                        timer.cancel()

    def _release(self, key: tuple[str, int]) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._fire(held[0], held[1])

    def _fire(self, notice: Notice, commands: bool) -> None:
        to_terminal = self.terminal is not None and self.config.terminal_on and notice.key not in self._told
        to_command = (commands and self.run_commands and bool(self.config.notify_command)
                      and notice.key not in self._tried)
        if not self.config.notify or not (to_terminal or to_command):
            return
        if to_terminal:
            self._told.add(notice.key)
        if to_command:
            self._tried.add(notice.key)
        task = asyncio.get_running_loop().create_task(self._tell(notice, to_terminal, to_command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _title(self, session_id: str) -> str:
        title = self._titles.get(session_id)
        if title is None:
            try:
                row = await self.store.get_session(session_id)
            except Exception:  # noqa: BLE001 - the id stands in for it
                row = None
            title = self._titles[session_id] = str(getattr(row, "title", "") or "")
        return title

    async def _tell(self, notice: Notice, to_terminal: bool, to_command: bool) -> None:
        try:
            notice = replace(notice, title=await self._title(notice.session_id))
            if to_terminal:
                text = terminal_text(notice, self.config, self.env)
                if text and self.terminal is not None:
                    try:
                        self.terminal(text)
                    except Exception:  # noqa: BLE001 - a closed terminal: nothing to tell it
                        log.debug("writing a notification to the terminal failed", exc_info=True)
            if to_command and await self._claimed(notice):
                await self._run_command(notice)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a notification never takes anything down
            self._fail_once("notification for %s seq %s failed", notice.session_id, notice.seq, exc_info=True)

    async def _claimed(self, notice: Notice) -> bool:
        """This process is the one to run the command for ``notice`` (across processes)."""
        return bool(await self.store.run_rows(_claim(notice.session_id, notice.seq, time.time())))

    async def _run_command(self, notice: Notice) -> None:
        from shepherd.core.secrets import child_env

        argv = [*self.config.notify_command, notice.session_id, clean(notice.title), clean(notice.reason)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, env=child_env(self.config.notify_pass_env, base=self.env), start_new_session=True)
        except OSError as e:
            self._fail_once("notify_command %r could not start: %s", self.config.notify_command[0], e.strerror or e)
            return
        self.commands_run += 1
        try:
            code = await asyncio.wait_for(proc.wait(), self.command_timeout_s)
        except asyncio.TimeoutError:
            await end_group(proc)
            self._fail_once("notify_command %r took longer than %s s: killed", self.config.notify_command[0],
                            self.command_timeout_s)
            return
        except asyncio.CancelledError:  # (shutting down: the command does not go on alone)
            await end_group(proc)
            raise
        if code != 0:
            self._fail_once("notify_command %r exited with %s", self.config.notify_command[0], code)

    def _fail_once(self, msg: str, *args: Any, exc_info: bool = False) -> None:
        level = logging.DEBUG if self._failed_once else logging.WARNING
        self._failed_once = True
        log.log(level, msg, *args, exc_info=exc_info)

    # --- other processes' runs (a TUI) ----------------------------------------------------

    def follow_others(self, poll_s: float | None = None) -> None:
        """Also tell the terminal of what other processes' runs commit from now on (a
        TUI): never ``notify_command`` for them (their runner does), never for events
        older than now (the attach point); on either store (followed by seq per session)."""
        if self._poller is None and self.terminal is not None and self.config.terminal_on \
                and hasattr(self.store, "run_read"):
            self._poller = asyncio.get_running_loop().create_task(self._poll(POLL_S if poll_s is None else poll_s))

    async def _poll(self, poll_s: float) -> None:
        # Followed per session by seq (sessions.last_seq is derived in the events' own
        # transaction), not by events.id: on PostgreSQL concurrent writers commit ids out
        # of order, and an id range read once would skip the row committed late.
        async def tops(conn: Any) -> dict[str, int]:
            async with conn.execute("SELECT id, last_seq FROM sessions") as cur:
                return {str(r[0]): int(r[1]) for r in await cur.fetchall()}

        try:
            seen = await self.store.run_read(tops)  # type: ignore[attr-defined]
            self.attach_point = sum(seen.values())
            while not self._closed:
                await asyncio.sleep(poll_s)
                now = await self.store.run_read(tops)  # type: ignore[attr-defined]
                for sid, top in now.items():
                    last = seen.get(sid, 0)
                    while top > last and not self._closed:
                        page = await self.store.events(sid, after_seq=last, limit=POLL_ROWS, types=WATCHED_TYPES)
                        page = [ev for ev in page if ev.seq <= top]
                        last = page[-1].seq if len(page) == POLL_ROWS else top
                        seen[sid] = last
                        if page:
                            self.feed(page, commands=False)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the store closed under it: following just stops
            log.debug("following other runs for notifications stopped", exc_info=True)

    async def drain(self) -> None:
        """Wait for the notifications under way (held ones are told now)."""
        for key in list(self._held):
            held = self._held.pop(key)
            if held[2] is not None:
                held[2].cancel()
            self._fire(held[0], held[1])
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop listening; tell what is held and let running commands end (each is bounded
        by its timeout). Call before the store closes."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        await self.drain()
        self._closed = True


__all__ = ["Notice", "Notifier", "clean", "desktop_mode", "merge_end", "notices_in", "terminal_text", "tmux_wrap",
           "tty_writer"]
