"""Replay of a big session (tui.model.replay): reading it, folding it, going back.

    python bench/replay_bench.py [--events 100000] [--runs 3]

On the session of ``--events`` events that bench/session_bench.py writes (same synthetic
agent, same cache), through the real SQLite Store:

* load: every event read in the replay screen's pages (5,000) into a ReplayDriver;
* to the end: the cursor from the first event to the last (the fold, checkpoints kept);
* back one: one step back from the end (the nearest checkpoint copied, folded on);
* back to the middle, and the peer of both: a rebuild from the start without checkpoints
  (what going back would cost with none), printed as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.session_bench import SID, cached_db  # noqa: E402


async def load(path: Path) -> list:
    from shepherd.core.store.db import Store

    store = await Store.open(path, recover=False)
    try:
        out: list = []
        after = 0
        while True:
            page = await store.events(SID, after_seq=after, limit=5000)
            out.extend(page)
            if len(page) < 5000:
                return out
            after = page[-1].seq
    finally:
        await store.close()


def run_once(path: Path) -> dict[str, float]:
    from shepherd.tui.model.replay import ReplayDriver

    t = time.perf_counter()
    events = asyncio.run(load(path))
    times = {"load": time.perf_counter() - t}
    d = ReplayDriver(SID, events)
    t = time.perf_counter()
    d.seek(d.total - 1)
    times["to the end"] = time.perf_counter() - t
    t = time.perf_counter()
    d.step(-1)
    times["back one"] = time.perf_counter() - t
    t = time.perf_counter()
    d.seek(d.total // 2)
    times["back to the middle"] = time.perf_counter() - t
    bare = ReplayDriver(SID, events, checkpoint_every=1 << 40)  # no checkpoint: the peer
    bare.seek(bare.total - 1)
    t = time.perf_counter()
    bare.step(-1)
    times["back one, no checkpoints"] = time.perf_counter() - t
    times["checkpoints"] = len(d._checkpoints)
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = cached_db(args.events)
    runs = [run_once(path) for _ in range(args.runs)]
    print(f"replay of a {args.events:,}-event session ({args.runs} runs, median)")
    for key in runs[0]:
        value = statistics.median(r[key] for r in runs)
        print(f"  {key:<26} {value:8.3f}" + (" s" if key != "checkpoints" else ""))
    one = statistics.median(r["back one"] for r in runs)
    bare = statistics.median(r["back one, no checkpoints"] for r in runs)
    print(f"  one step back: {bare / one:.0f}x faster with checkpoints than a rebuild from the start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
