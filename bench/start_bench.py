"""Start-up as a person feels it: the time from starting a process in a real pseudo-terminal
to its first screen (or first model request), each against a floor measured in the same run.

    python bench/start_bench.py [--runs R] [--sessions N] [--events E] [--only NAME,...] [--show]

Each scenario forks a child on a pty (120x36, xterm-256color), reads the pty from a thread
that timestamps every chunk as it arrives, and feeds the bytes to a VT emulator (``pyte``).
A screen counts as drawn when the emulated screen holds a marker text that only that screen
shows, painted (not just somewhere in the byte stream): the time is that chunk's arrival.

  floor    a bare Textual app (Header, a one-row DataTable, Footer) to its row on screen
  home     ``shepherd --db DB`` with N sessions in DB (made once with the real Store) to
           the newest session's row in its table                  target <= 1.3x floor
  demo     ``shepherd demo`` to its live session screen (the demo's subtasks listed and
           the session's key bar shown)                             target <= 1.5x floor
  attach   ``shepherd attach BIG`` (E events) to its last message on screen, vs the same for
           a tiny session                                           target <= 1.2x tiny
  run      ``shepherd run -p ... --backend openai --headless`` to its first request at the
           loopback fake OpenAI server (tests/fakes/fake_openai.py), vs a bare script doing
           ``Runner.run_streamed`` against the same fake            target <= 1.3x peer

Scenarios are interleaved round by round (noise hits all alike). Prints each median with
its range over the runs, and the ratio of medians with the range of the per-round ratios.
The children run ``python -c 'from shepherd.tui.cli import main; main()'`` from this checkout
(the console script would add its launcher's own start-up to both sides unevenly).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import queue
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLS, ROWS = 120, 36
TIMEOUT_S = 60.0
SHEPHERD = "import sys; from shepherd.tui.cli import main; sys.exit(main())"
LAST_WORDS = "closing-marker: every check passes now"
FLOOR_MARKER = "floor-row-marker"

FLOOR_APP = f'''
from textual.app import App
from textual.widgets import DataTable, Footer, Header


class Floor(App):
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("id", "status", "title")
        table.add_row("s0001", "done", "{FLOOR_MARKER}")


Floor().run()
'''

PEER_RUN = '''
import asyncio, os
from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI


async def main():
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"],
                         max_retries=0)
    agent = Agent(name="peer", instructions="You are a coding agent.",
                  model=OpenAIChatCompletionsModel(model="gpt-4.1", openai_client=client))
    result = Runner.run_streamed(agent, "Say hello.")
    async for _ in result.stream_events():
        pass


asyncio.run(main())
'''


# --------------------------------------------------------------------------- the pty child


@dataclass
class Outcome:
    seconds: float | None  # None: the marker never showed
    screen: str = ""


SYNC_QUERY = b"\x1b[?2026$p"  # "do you support synchronized output?" (Textual asks at start)
SYNC_REPLY = b"\x1b[?2026;2$y"  # yes (as tmux, kitty, WezTerm... answer): frames come bracketed
SYNC_START, SYNC_END = b"\x1b[?2026h", b"\x1b[?2026l"


def _reader(fd: int, out: "queue.Queue[tuple[float, bytes] | None]") -> None:
    answered = False
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # EIO: the child closed the pty
            data = b""
        if not data:
            out.put(None)
            return
        out.put((time.perf_counter(), data))
        if not answered and SYNC_QUERY in data:
            answered = True
            os.write(fd, SYNC_REPLY)


class FrameWatch:
    """The emulated screen, checked whenever what it shows may have changed: at the end of
    every synchronized update (a terminal shows nothing of one before its end), and
    after each chunk read outside one (Textual only brackets its frames once it has read
    the terminal's answer; before that a frame arrives as one write, in a few chunks
    microseconds apart)."""

    def __init__(self, done: Callable[[str], bool] | None, needles: tuple[bytes, ...] = ()) -> None:
        import pyte

        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.done = done
        self.in_frame = False
        self._tail = b""
        # Emulating costs this process CPU the child would use (2 cores, shared): chunks
        # wait here, with their arrival times, until every needle has arrived somewhere;
        # then they are emulated in order, so the answer is the same as emulating eagerly.
        self.needles = [n for n in needles if n]
        self._seen = b""
        self._backlog: list[tuple[float, bytes]] = []

    def offer(self, t: float, data: bytes) -> float | None:
        if self.needles:
            self._backlog.append((t, data))
            self._seen = self._seen[-4096:] + data
            self.needles = [n for n in self.needles if n not in self._seen]
            if self.needles:
                return None
            backlog, self._backlog = self._backlog, []
            for t_i, data_i in backlog:
                found = self.feed(t_i, data_i)
                if found is not None:
                    return found
            return None
        return self.feed(t, data)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def _check(self) -> bool:
        return self.done is not None and self.done(self.text())

    def feed(self, t: float, data: bytes) -> float | None:
        joined = self._tail + data
        shift = len(self._tail)
        self._tail = data[-(len(SYNC_END) - 1):]
        fed = 0
        pos = 0
        while (i := joined.find(SYNC_END, pos)) >= 0:
            pos = i + len(SYNC_END)
            cut = max(pos - shift, 0)
            self.stream.feed(data[fed:cut])
            fed = cut
            self.in_frame = False
            if self._check():
                return t
        self.stream.feed(data[fed:])
        rest = joined[pos:]
        if rest.rfind(SYNC_START) > rest.rfind(SYNC_END):
            self.in_frame = True
        if not self.in_frame and self._check():
            return t
        return None


def run_on_pty(argv: list[str], env: dict[str, str], cwd: Path, done: Callable[[str], bool] | None = None,
               until: Callable[[], float | None] | None = None, needles: tuple[str, ...] = ()) -> Outcome:
    """Start ``argv`` on a fresh pty; the time until a complete frame satisfies
    ``done(screen text)`` (or ``until()`` returns the time something happened elsewhere),
    then end the child as ``kill`` would (SIGTERM, SIGKILL after a grace period)."""
    watch = FrameWatch(done, tuple(n.encode() for n in needles))
    t0 = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # child: the size first, so the app's first frame has it
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
    threading.Thread(target=_reader, args=(fd, chunks), daemon=True).start()
    found: float | None = None
    deadline = t0 + TIMEOUT_S
    eof = False
    try:
        while found is None and time.perf_counter() < deadline and not eof:
            try:
                item = chunks.get(timeout=0.002 if until else 0.5)
            except queue.Empty:
                pass
            else:
                if item is None:
                    eof = True
                else:
                    found = watch.offer(*item)
            if until is not None and found is None:
                found = until()
    finally:
        _end_child(pid, chunks, eof)
        os.close(fd)
    return Outcome(None if found is None else found - t0, watch.text())


def _end_child(pid: int, chunks: "queue.Queue[tuple[float, bytes] | None]", eof: bool) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.perf_counter() + 15.0
    while not eof and time.perf_counter() < end:  # keep draining: a child blocked on a full pty never exits
        try:
            eof = chunks.get(timeout=0.1) is None
        except queue.Empty:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------- the data


async def make_home_db(path: Path, n: int) -> str:
    """N finished sessions, as runs leave them; returns the newest one's title."""
    from shepherd.core.events import MessageCompleted, SessionFinished, SessionStarted, SubtaskFinished, SubtaskStarted
    from shepherd.core.store import Store

    store = await Store.open(path)
    statuses = ("done", "done", "done", "failed", "cancelled")
    futures = []
    for i in range(n):
        sid = f"s{i:08x}home"
        status = statuses[i % len(statuses)]
        futures += [store.submit(SessionStarted(session_id=sid, title=f"home session {i:04d}: fix the parser",
                                                backend="scripted", model="scripted-demo", workspace="/tmp/ws")),
                    store.submit(SubtaskStarted(session_id=sid, subtask_id="main", title="Fix it")),
                    store.submit(MessageCompleted(session_id=sid, subtask_id="main", message_id="m1",
                                                  text="Fixed the slash branch.")),
                    store.submit(SubtaskFinished(session_id=sid, subtask_id="main",
                                                 status="done" if status == "done" else "failed")),
                    store.submit(SessionFinished(session_id=sid, status=status))]
        if len(futures) > 5000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    rows = await store.list_sessions(limit=1)
    await store.close()
    return rows[0].title


async def make_session(path: Path, sid: str, n: int) -> None:
    """One finished session of about ``n`` events: messages streamed as deltas (50 to a
    message), a tool call every 20 messages, and the same last message whatever ``n``."""
    from shepherd.core.events import (MessageCompleted, SessionFinished, SessionStarted, SubtaskFinished, SubtaskStarted,
                             TextDelta, ToolFinished, ToolStarted)
    from shepherd.core.store import Store

    store = await Store.open(path)
    await store.append(SessionStarted(session_id=sid, title=f"attach {sid}", backend="scripted", workspace="/tmp/ws"))
    await store.append(SubtaskStarted(session_id=sid, subtask_id="main", title="Fix the parser"))
    futures = []
    words = "the parser swaps day and month in the slash branch so we fix the order ".split()
    i = m = 0
    while i < n:
        mid = f"m{m}"
        text = []
        for j in range(50):
            piece = words[(i + j) % len(words)] + " "
            text.append(piece)
            futures.append(store.submit(TextDelta(session_id=sid, subtask_id="main", message_id=mid, text=piece)))
        futures.append(store.submit(MessageCompleted(session_id=sid, subtask_id="main", message_id=mid,
                                                     text="".join(text))))
        if m % 20 == 19:
            futures.append(store.submit(ToolStarted(session_id=sid, subtask_id="main", call_id=f"c{m}",
                                                    name="read_file", input={"path": "dates.py"})))
            futures.append(store.submit(ToolFinished(session_id=sid, subtask_id="main", call_id=f"c{m}",
                                                     output="def parse(s): ...")))
        i += 53
        m += 1
        if len(futures) > 5000:
            await asyncio.gather(*futures)
            futures = []
    futures.append(store.submit(MessageCompleted(session_id=sid, subtask_id="main", message_id="last",
                                                 text=LAST_WORDS)))
    futures.append(store.submit(SubtaskFinished(session_id=sid, subtask_id="main", status="done")))
    futures.append(store.submit(SessionFinished(session_id=sid, status="done")))
    await asyncio.gather(*futures)
    await store.close()


# --------------------------------------------------------------------------- scenarios


@dataclass
class Bench:
    tmp: Path
    show: bool
    home_db: Path = field(init=False)
    home_title: str = ""
    attach_db: Path = field(init=False)
    fake: object = None
    first_request: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home_db = self.tmp / "home.db"
        self.attach_db = self.tmp / "attach.db"
        (self.tmp / "floor.py").write_text(FLOOR_APP)
        (self.tmp / "peer_run.py").write_text(PEER_RUN)
        (self.tmp / "ws").mkdir()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHEPHERD_", "OPENAI_", "TEXTUAL"))}
        env.update(TERM="xterm-256color", COLORTERM="truecolor", PYTHONPATH=str(ROOT),
                   TMPDIR=str(self.tmp), XDG_STATE_HOME=str(self.tmp / "state"),
                   XDG_DATA_HOME=str(self.tmp / "data"), OPENAI_AGENTS_DISABLE_TRACING="1")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(extra)
        return env

    def _report(self, name: str, out: Outcome) -> float:
        if out.seconds is None:
            raise SystemExit(f"{name}: its screen never showed within {TIMEOUT_S:.0f} s; the screen was:\n{out.screen}")
        if self.show:
            print(f"--- {name}: {out.seconds:.3f} s\n{out.screen}\n")
        return out.seconds

    def floor(self) -> float:
        out = run_on_pty([sys.executable, str(self.tmp / "floor.py")], self.env(), self.tmp,
                         lambda s: FLOOR_MARKER in s and "q Quit" in s, needles=(FLOOR_MARKER, "Quit"))
        return self._report("floor", out)

    def home(self) -> float:
        title = self.home_title
        out = run_on_pty([sys.executable, "-c", SHEPHERD, "--db", str(self.home_db)], self.env(), self.tmp,
                         lambda s: title in s and "q Quit" in s, needles=(title, "Quit"))
        return self._report("home", out)

    def demo(self, n: int) -> float:
        db = self.tmp / f"demo{n}.db"
        # the session screen, live: its subtask list (the demo's last subtask title) and its
        # key bar (Pause: only a live session screen offers it)
        out = run_on_pty([sys.executable, "-c", SHEPHERD, "--db", str(db), "demo"], self.env(), self.tmp,
                         lambda s: "Write down what changed" in s and "p Pause" in s,
                         needles=("Write down what changed", "Pause"))
        return self._report("demo", out)

    def attach(self, sid: str) -> float:
        out = run_on_pty([sys.executable, "-c", SHEPHERD, "--db", str(self.attach_db), "attach", sid],
                         self.env(), self.tmp, lambda s: LAST_WORDS in s and "esc Back" in s,
                         needles=("closing-marker", "Back"))
        return self._report(f"attach {sid}", out)

    def _until_request(self) -> Callable[[], float | None]:
        self.first_request.clear()
        return lambda: self.first_request[0] if self.first_request else None

    def run_peer(self) -> float:
        env = self.env(OPENAI_BASE_URL=self.fake.base_url, OPENAI_API_KEY="sk-fake")  # type: ignore[attr-defined]
        out = run_on_pty([sys.executable, str(self.tmp / "peer_run.py")], env, self.tmp, until=self._until_request())
        return self._report("run peer", out)

    def run_shepherd(self, n: int) -> float:
        env = self.env(OPENAI_BASE_URL=self.fake.base_url, OPENAI_API_KEY="sk-fake")  # type: ignore[attr-defined]
        argv = [sys.executable, "-c", SHEPHERD, "--db", str(self.tmp / f"run{n}.db"), "run", "-p", "Say hello.",
                "--backend", "openai", "--headless", "--workspace", str(self.tmp / "ws")]
        out = run_on_pty(argv, env, self.tmp, until=self._until_request())
        return self._report("run shepherd", out)


def start_fake(bench: Bench) -> object:
    from tests.fakes.fake_openai import FakeOpenAI

    class Timed(FakeOpenAI):
        def _take(self, path, body):  # type: ignore[no-untyped-def]
            bench.first_request.append(time.perf_counter())
            return super()._take(path, body)

    fake = Timed(script=[{"text": "Hello.", "times": 10_000}])
    fake.__enter__()
    return fake


# --------------------------------------------------------------------------- report


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def ratio_line(name: str, got: list[float], floor: list[float], floor_name: str, target: float) -> str:
    per_round = [g / f for g, f in zip(got, floor)]
    r = statistics.median(got) / statistics.median(floor)
    verdict = "ok" if r <= target else "OVER"
    return (f"  {name:<8} {spread(got)}   {r:.2f}x {floor_name} (per round {min(per_round):.2f}-"
            f"{max(per_round):.2f}x)   target <= {target}x: {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="rounds (every scenario once each); default 5")
    ap.add_argument("--sessions", type=int, default=1000, help="sessions in the home database")
    ap.add_argument("--events", type=int, default=100_000, help="events in the big attached session")
    ap.add_argument("--only", default="home,demo,attach,run", help="comma-separated: home,demo,attach,run")
    ap.add_argument("--show", action="store_true", help="print each screen as it was when measured")
    args = ap.parse_args()
    only = set(args.only.split(","))
    try:
        import pyte  # noqa: F401
    except ImportError:
        print("start_bench needs pyte (pip install pyte, or the 'bench' extra)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="start-bench-"))
    bench = Bench(tmp, args.show)
    try:
        t = time.perf_counter()
        if "home" in only:
            bench.home_title = asyncio.run(make_home_db(bench.home_db, args.sessions))
        if "attach" in only:
            asyncio.run(make_session(bench.attach_db, "big", args.events))
            asyncio.run(make_session(bench.attach_db, "tiny", 10))
        if "run" in only:
            bench.fake = start_fake(bench)
        print(f"data made in {time.perf_counter() - t:.1f} s ({args.sessions} sessions, a {args.events}-event "
              f"session); {args.runs} rounds, pty {COLS}x{ROWS}")
        res: dict[str, list[float]] = {k: [] for k in ("floor", "home", "demo", "tiny", "big", "peer", "run")}
        for n in range(args.runs):
            res["floor"].append(bench.floor())
            if "home" in only:
                res["home"].append(bench.home())
            if "demo" in only:
                res["demo"].append(bench.demo(n))
            if "attach" in only:
                res["tiny"].append(bench.attach("tiny"))
                res["big"].append(bench.attach("big"))
            if "run" in only:
                res["peer"].append(bench.run_peer())
                res["run"].append(bench.run_shepherd(n))
            print(f"  round {n + 1}: " + "  ".join(f"{k} {v[-1]:.3f}" for k, v in res.items() if v), flush=True)
        print("\nfirst screen (median, range over rounds; ratio of medians, range of per-round ratios)")
        print(f"  {'floor':<8} {spread(res['floor'])}   bare Textual app (Header, one-row DataTable, Footer)")
        if res["home"]:
            print(ratio_line("home", res["home"], res["floor"], "floor", 1.3))
        if res["demo"]:
            print(ratio_line("demo", res["demo"], res["floor"], "floor", 1.5))
        if res["big"]:
            print(f"  {'tiny':<8} {spread(res['tiny'])}   attach to a 10-event session, to its last message")
            print(ratio_line("attach", res["big"], res["tiny"], "tiny", 1.2))
        if res["run"]:
            print(f"  {'peer':<8} {spread(res['peer'])}   bare Runner.run_streamed script, to its first request")
            print(ratio_line("run", res["run"], res["peer"], "peer", 1.3))
    finally:
        if bench.fake is not None:
            bench.fake.__exit__(None, None, None)  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
