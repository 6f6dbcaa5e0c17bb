"""A real process writing to a Shepherd database, for tests/test_store_procs.py.

    python tests/store_child.py kill   DB SESSION [--lease]
        Runs a session like a runner would: session.started, plan, subtask, attempt, then
        4 concurrent producers streaming tool.started (every other call left open), text
        deltas and some tool.finished, forever. Prints each acknowledged seq on its own line
        (flushed) the moment append() returns. The test SIGKILLs it at a random point.

    python tests/store_child.py costs   DB SEED
        Writes varied sessions with usage and costs (tests/cost_sessions.py) in batches of
        random sizes, each batch one transaction, from 2 concurrent writers (their batches
        share commits), forever; prints a line for each batch committed. The test SIGKILLs
        it at a random point.

    python tests/store_child.py append  DB SESSION SECONDS TAG
        Prints "ready", waits for a line on stdin, then appends text deltas (message_id=TAG)
        to SESSION from 4 concurrent producers for SECONDS, prints "done <count>". (A time
        window, not a count, so two such processes surely overlap even on a busy machine.)
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shepherd.core.events import (  # noqa: E402
    AttemptStarted,
    PlanReady,
    SessionStarted,
    SubtaskStarted,
    TextDelta,
    ToolFinished,
    ToolStarted,
)
from shepherd.core.store.db import Store  # noqa: E402


def ack(seq: int) -> None:
    sys.stdout.write(f"{seq}\n")
    sys.stdout.flush()


async def run_kill(db: str, sid: str, lease: bool) -> None:
    store = await Store.open(db)
    if lease:
        await store.acquire_lease(sid, ttl_s=600)
    for ev in (SessionStarted(session_id=sid, title="crash test", backend="scripted", workspace="/w"),
               PlanReady(session_id=sid, subtasks=[{"id": "a", "title": "A", "prompt": "p"}]),
               SubtaskStarted(session_id=sid, subtask_id="a", title="A"),
               AttemptStarted(session_id=sid, subtask_id="a", attempt=1)):
        done = await store.append(ev)
        assert done is not None
        ack(done.seq)

    async def producer(p: int) -> None:
        i = 0
        while True:
            call = f"c{p}-{i}"
            common = {"session_id": sid, "subtask_id": "a", "attempt": 1}
            started = await store.append(ToolStarted(call_id=call, name="read_file", input={"i": i}, **common))
            assert started is not None
            ack(started.seq)
            for k in range(3):
                delta = await store.append(TextDelta(message_id=f"m{p}-{i}", text=f"chunk {k} ", **common))
                assert delta is not None
                ack(delta.seq)
            if i % 2 == 0:  # every other call finishes; the rest stay open until the kill
                finished = await store.append(ToolFinished(call_id=call, output="ok", duration_s=0.01, **common))
                assert finished is not None
                ack(finished.seq)
            i += 1

    await asyncio.gather(*(producer(p) for p in range(4)))


async def run_costs(db: str, seed: int) -> None:
    import itertools
    import random

    from tests.cost_sessions import random_session

    store = await Store.open(db)

    async def writer(w: int) -> None:
        rng = random.Random(seed * 2 + w)
        for n in itertools.count():
            evs = random_session(rng, f"k{seed}-{w}-{n}")
            i = 0
            while i < len(evs):
                size = rng.choice([1, 2, 3, 7, 20])
                await store.append_together(*evs[i:i + size])
                i += size
                ack(i)

    await asyncio.gather(writer(0), writer(1))


async def run_append(db: str, sid: str, seconds: float, tag: str) -> None:
    # recover=False: the session belongs to the test, not to a runner that died.
    store = await Store.open(db, recover=False)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    deadline = time.monotonic() + seconds
    written = 0

    async def producer() -> None:
        nonlocal written
        while time.monotonic() < deadline:
            done = await store.append(TextDelta(session_id=sid, message_id=tag, text="x"))
            assert done is not None
            written += 1

    await asyncio.gather(*(producer() for _ in range(4)))
    await store.close()
    print(f"done {written}", flush=True)


def main(argv: list[str]) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test can ask where we hang
    mode = argv[0]
    if mode == "kill":
        asyncio.run(run_kill(argv[1], argv[2], "--lease" in argv[3:]))
    elif mode == "costs":
        asyncio.run(run_costs(argv[1], int(argv[2])))
    elif mode == "append":
        asyncio.run(run_append(argv[1], argv[2], float(argv[3]), argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
