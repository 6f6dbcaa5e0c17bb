"""Big sessions in the session view: time to the last screen, and memory while streaming.

    python bench/session_bench.py [--events 100000] [--runs 3] [--stream 200000]
    python bench/session_bench.py --events 1000000 --stream 1000000   # the 1M case

(1) open: the real ShepherdApp (headless, ``run_test``) opens a past session of
``--events`` events as ``shepherd attach`` does (``open_session=..., attach=True``:
tail feed + remote control) until its session screen has loaded and rendered its last
screen; the peer is the same app opening a tiny session (5 events). Each open runs in
its own child process, alternating big/tiny; the ratio big/tiny is printed per pair.

(2) stream: the real app shows one live session (``follow="local"``) while a synthetic
agent submits ``--stream`` events (text deltas, message ends, tool calls, usage)
through the real Store; current RSS is sampled. The floor is the same app showing a
tiny live session that gets nothing. Printed: peak RSS (MB), peak minus floor, and the
growth per 100k events over the second half of the stream (the trend).

The databases are written once through the store's real batch path (``derive.
write_events`` in large transactions into the real schema) and cached in the temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path(tempfile.gettempdir()) / "shepherd-session-bench"
SID = "sbig0000001"
TINY = "stiny000001"
SUBTASKS = 4
WORDS = ("the parser reads each field and returns a tuple of ints while the check runs "
         "`pytest -q` against dates.py so that DD/MM/YYYY values are no longer swapped").split()


def synthetic(sid: str, n: int, seed: int = 1, t0: float = 1_700_000_000.0, finish: bool = True) -> Iterator[Any]:
    """``n`` events of a plausible session: a plan of SUBTASKS subtasks, each with attempts,
    messages streamed as deltas (merged as the engine stores them), tool calls, usage."""
    from shepherd.core import events as ev

    rnd = random.Random(seed)
    plan = [{"id": f"s{i + 1}", "title": f"Subtask {i + 1}", "prompt": "p"} for i in range(SUBTASKS)]
    ts = t0
    out = 0

    def tick() -> float:
        nonlocal ts
        ts += 0.01
        return ts

    yield ev.SessionStarted(session_id=sid, title="Big session", backend="scripted", ts=tick())
    yield ev.PlanReady(session_id=sid, subtasks=plan, ts=tick())
    out += 2
    per = max(1, (n - 3) // SUBTASKS)
    for i in range(SUBTASKS):
        st = f"s{i + 1}"
        common = {"session_id": sid, "subtask_id": st, "attempt": 1}
        yield ev.SubtaskStarted(session_id=sid, subtask_id=st, title=f"Subtask {i + 1}", ts=tick())
        yield ev.AttemptStarted(**common, ts=tick())
        out += 2
        budget = per if i < SUBTASKS - 1 else n - 1 - out
        msg = 0
        k = 0
        while k < budget - 1:
            mid = f"{st}m{msg}"
            for _ in range(min(20, budget - 1 - k)):
                yield ev.TextDelta(**common, message_id=mid, ts=tick(),
                                   text=" ".join(rnd.choice(WORDS) for _ in range(6)) + " ")
                k += 1
            if k + 4 > budget - 1:
                break
            yield ev.MessageCompleted(**common, message_id=mid, text="", ts=tick())
            yield ev.ToolStarted(**common, call_id=f"{mid}c", name="read_file", input={"path": "dates.py"},
                                 ts=tick())
            yield ev.ToolFinished(**common, call_id=f"{mid}c", status="ok", output="def parse_date(): ...",
                                  duration_s=0.01, ts=tick())
            yield ev.Usage(**common, input_tokens=100, output_tokens=20, cost_usd=0.001, ts=tick())
            k += 4
            msg += 1
        out += k
        yield ev.SubtaskFinished(**common, status="done", ts=tick())
        out += 1
    if finish:
        yield ev.SessionFinished(session_id=sid, status="done", ts=tick())


def build_db(path: Path, sessions: dict[str, int]) -> None:
    """Write the sessions through the store's batch path (derive.write_events)."""
    from shepherd.core.store.derive import write_events
    from shepherd.core.store.schema import prepare_database

    tmp = path.with_suffix(".tmp")
    for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        p.unlink(missing_ok=True)
    prepare_database(tmp, create=True)
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous=OFF")
    for sid, n in sessions.items():
        chunk: list[Any] = []
        for e in synthetic(sid, n):
            chunk.append(e)
            if len(chunk) >= 20_000:
                conn.execute("BEGIN IMMEDIATE")
                write_events(conn, chunk, time.time())
                conn.execute("COMMIT")
                chunk = []
        if chunk:
            conn.execute("BEGIN IMMEDIATE")
            write_events(conn, chunk, time.time())
            conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(tmp, path)


def cached_db(n: int) -> Path:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"session-{n}-v1.db"
    if not path.exists():
        t = time.perf_counter()
        build_db(path, {SID: n, TINY: 5})
        print(f"  built {path} ({n:,} events) in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- child: open ---------------------------------------------------------------------------


async def child_open(db: str, sid: str) -> dict[str, Any]:
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.session import SessionScreen

    t0 = time.perf_counter()
    app = ShepherdApp(db, open_session=sid, attach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        while not (isinstance(app.screen, SessionScreen) and app.screen.loaded.is_set()):
            await asyncio.sleep(0.001)
        await pilot.pause()  # the last screen is painted
        t = time.perf_counter() - t0
        screen = app.screen
        st = screen.model.subtask(screen.selected)
        shown = [b.seq for b in screen.stream.widgets_blocks()]
        out = {"open_s": t, "blocks_mounted": len(shown), "last_seq_shown": max(shown or [0]),
               "session_last_seq": screen.model.last_seq, "tokens": screen.model.session.tokens,
               "selected": screen.selected, "model_blocks": len(st.blocks) if st else 0}
    return out


# --- child: stream -------------------------------------------------------------------------


async def child_stream(db: str, n: int) -> dict[str, Any]:
    import gc

    from shepherd.core import events as ev
    from shepherd.tui.app import ShepherdApp
    from shepherd.tui.screens.session import SessionScreen

    sid = "slive%07d" % os.getpid()
    app = ShepherdApp(db)
    samples: list[tuple[int, float]] = []
    async with app.run_test(size=(120, 40)) as pilot:
        while app.home is None or not app.home.loaded:
            await pilot.pause(0.01)
        store = app.store
        gen = synthetic(sid, n + 3, finish=False) if n else synthetic(sid, 5, finish=False)
        head = [next(gen) for _ in range(4)]  # started, plan, subtask, attempt
        for e in head:
            store.submit(e)
        await store.flush()
        screen = SessionScreen(store, sid, controller=None, follow="local", clock=time.time)
        await app.push_screen(screen)
        await asyncio.wait_for(screen.loaded.wait(), 30)
        await pilot.pause()
        gc.collect()
        samples.append((0, rss_mb()))
        sent = 0
        inflight: list[asyncio.Future[Any]] = []
        t0 = time.perf_counter()
        step = max(1, n // 40)
        for e in gen if n else ():
            inflight.append(store.submit(e))
            sent += 1
            if len(inflight) >= 500:
                await inflight[-1]
                inflight.clear()
                await asyncio.sleep(0)  # let the screen's frame timer run
            if sent % step == 0:
                samples.append((sent, rss_mb()))
        if inflight:
            await inflight[-1]
        await store.flush()
        await screen.flush_now()
        await pilot.pause()
        elapsed = time.perf_counter() - t0
        samples.append((sent, rss_mb()))
        st = screen.model.subtask(screen.selected)
        out = {"events": sent, "seconds": elapsed, "samples": samples, "peak_rss_mb": peak_rss_mb(),
               "model_blocks": sum(len(s.blocks) for s in screen.model.subtasks.values()),
               "widgets": len(screen.stream.widgets), "tokens": screen.model.session.tokens,
               "gc_pauses": list(getattr(type(screen.stream), "gc_pauses", [])),
               "selected_blocks": len(st.blocks) if st else 0}
    return out


def run_child(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                       timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def slope_per_100k(samples: list[list[float]]) -> float:
    """RSS growth per 100k events over the second half of the stream (least squares)."""
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    if len(half) < 2:
        return float("nan")
    xs, ys = [s[0] for s in half], [s[1] for s in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 100_000) if den else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="events of the big session to open")
    ap.add_argument("--stream", type=int, default=200_000, help="events streamed through a live view")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-open", action="store_true")
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "open":
            res = asyncio.run(child_open(rest[0], rest[1]))
        else:
            res = asyncio.run(child_stream(rest[0], int(rest[1])))
        print(json.dumps(res))
        return

    if not a.skip_open:
        db = cached_db(a.events)
        print(f"open: {a.events:,}-event session vs a tiny one (5 events), shepherd attach, headless")
        ratios = []
        for i in range(a.runs):
            pair = [("tiny", TINY), ("big", SID)] if i % 2 == 0 else [("big", SID), ("tiny", TINY)]
            res = {name: run_child(["open", str(db), sid]) for name, sid in pair}
            big, tiny = res["big"], res["tiny"]
            ratio = big["open_s"] / tiny["open_s"]
            ratios.append(ratio)
            print(f"  run {i + 1}: big {big['open_s']:.3f} s ({big['blocks_mounted']} blocks mounted, "
                  f"{big['model_blocks']} in the model, last seq shown {big['last_seq_shown']:,}/"
                  f"{big['session_last_seq']:,}), tiny {tiny['open_s']:.3f} s -> {ratio:.2f}x", flush=True)
        print(f"  big/tiny: {min(ratios):.2f}-{max(ratios):.2f}x (target <= 1.2x)")

    if not a.skip_stream:
        print(f"stream: {a.stream:,} events through a live session view (real Store, follow=local)")
        for i in range(a.runs):
            tmp = Path(tempfile.mkdtemp(prefix="shepherd-sbench-"))
            floor = run_child(["stream", str(tmp / "floor.db"), "0"])
            big = run_child(["stream", str(tmp / "big.db"), str(a.stream)])
            slope = slope_per_100k(big["samples"])
            print(f"  run {i + 1}: peak {big['peak_rss_mb']:.0f} MB after {big['events']:,} events "
                  f"({big['events'] / big['seconds']:,.0f} ev/s), floor (tiny live session) "
                  f"{floor['peak_rss_mb']:.0f} MB -> +{big['peak_rss_mb'] - floor['peak_rss_mb']:.0f} MB; "
                  f"growth {slope:.1f} MB/100k events (2nd half); model blocks {big['model_blocks']}, "
                  f"widgets {big['widgets']}", flush=True)
            gcp = sorted(big.get("gc_pauses") or [0.0])
            print(f"         full collections after pruning: {len(big.get('gc_pauses') or [])}, "
                  f"median {gcp[len(gcp) // 2] * 1000:.0f} ms, max {gcp[-1] * 1000:.0f} ms")
            curve = big["samples"][:: max(1, len(big["samples"]) // 8)] + big["samples"][-1:]
            print("         RSS (MB) by events: " + ", ".join(f"{int(n / 1000)}k {r:.0f}" for n, r in curve))
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
        print("  target: under 200 MB at 1M events (--stream 1000000)")


if __name__ == "__main__":
    main()
