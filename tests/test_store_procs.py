"""The store with real processes: SIGKILL at random moments, and two writers on one session."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

from shepherd.core.events import SessionStarted
from shepherd.core.store import Store

CHILD = str(Path(__file__).with_name("store_child.py"))
ROUNDS = 30


def _seqs(db: Path, sid: str) -> list[int]:
    """Seqs straight from the file (read-only), without opening a Store (which recovers)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM events WHERE session_id = ? ORDER BY seq", (sid,))]
    finally:
        conn.close()


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, CHILD, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_sigkill_never_loses_an_acknowledged_event(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    seed_note = f"(rng state {rng.getstate()[1][0]})"
    for round_no in range(ROUNDS):
        sid = f"crash{round_no:02d}"
        lease = round_no % 2 == 0  # even rounds: a lease of a pid that dies; odd: no lease at all
        proc = await _spawn("kill", str(db), sid, *(["--lease"] if lease else []))
        assert proc.stdout is not None
        kill_after = rng.randint(1, 400)  # acknowledged lines to read before the kill
        acked: list[int] = []
        while len(acked) < kill_after:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"child ended early: {err.decode(errors='replace')}")
            acked.append(int(line))
        proc.kill()  # SIGKILL, wherever the child's writer happens to be
        await proc.wait()  # reap it: its pid is gone now
        rest = await proc.stdout.read()
        acked += [int(x) for x in rest.decode().split("\n")[:-1] if x.strip()]  # complete lines only

        stored = _seqs(db, sid)
        missing = sorted(set(acked) - set(stored))
        assert not missing, f"round {round_no}: acknowledged seqs lost: {missing[:10]} {seed_note}"
        assert stored == list(range(1, len(stored) + 1)), f"round {round_no}: gaps in {stored[-10:]}"

        store = await Store.open(db)  # recovery runs here
        try:
            row = await store.get_session(sid)
            assert row is not None
            assert row.status == "interrupted", (round_no, row.status)
            assert await store.tool_calls(sid, status="running") == []
            subtask = {s.id: s.status for s in await store.subtasks(sid)}
            started = 3 in acked  # seq 3 is subtask.started
            assert subtask.get("a") in (("interrupted",) if started else ("interrupted", "pending", None))
            events = await store.events(sid, after_seq=0, limit=None)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            last = events[-1]
            assert last.type == "session.interrupted"
            why = "process" if lease else "no lease"
            assert why in last.reason, last.reason
            interrupted = [e for e in events if e.type == "tool.finished" and e.status == "interrupted"]
            assert all(e.output == "interrupted: the runner stopped" and e.subtask_id == "a" and e.attempt == 1
                       for e in interrupted)
            assert await store.lease_owner(sid) is None
            last_seq = row.last_seq
        finally:
            await store.close()

        again = await Store.open(db)  # a second open appends nothing more
        try:
            assert await again.recover() == []
            assert await again.last_seq(sid) == last_seq
        finally:
            await again.close()


async def test_two_processes_append_to_one_session_without_gaps_or_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    sid = "shared"
    store = await Store.open(db)
    await store.append(SessionStarted(session_id=sid, title="two writers"))
    await store.close()

    procs = [await _spawn("append", str(db), sid, "0.6", tag) for tag in ("A", "B")]
    for proc in procs:  # both connected and waiting
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).strip() == b"ready"
    for proc in procs:  # go at the same moment
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    counts: dict[str, int] = {}
    for tag, proc in zip("AB", procs):
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        except asyncio.TimeoutError:
            for p in procs:  # show where a stuck child is stuck (faulthandler), then fail
                if p.returncode is None:
                    p.send_signal(signal.SIGUSR1)
            await asyncio.sleep(1)
            for p in procs:
                if p.returncode is None:
                    p.kill()
            dumps = [((await p.stderr.read()) if p.stderr else b"").decode(errors="replace") for p in procs]
            raise AssertionError("a writer process hung:\n" + "\n---\n".join(dumps)) from None
        assert proc.returncode == 0, err.decode(errors="replace")
        word, number = out.split()
        assert word == b"done"
        counts[tag] = int(number)

    total = counts["A"] + counts["B"]
    store = await Store.open(db, recover=False)
    try:
        events = await store.events(sid, limit=None)
        assert [e.seq for e in events] == list(range(1, total + 2))
        tags = [e.message_id for e in events[1:]]
        assert tags.count("A") == counts["A"] > 0 and tags.count("B") == counts["B"] > 0
        # both really wrote while the other did: their events interleave
        switches = sum(1 for a, b in zip(tags, tags[1:]) if a != b)
        assert switches > 2, f"the two writers never interleaved ({switches} switches)"
        row = await store.get_session(sid)
        assert row is not None and row.last_seq == total + 1
    finally:
        await store.close()


async def test_a_forgotten_close_does_not_hang_the_process_at_exit(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from shepherd.core.events import SessionStarted\n"
        "from shepherd.core.store import Store, open_claude_session_store\n"
        "async def main():\n"
        f"    s = await Store.open({str(tmp_path / 'f.db')!r})\n"
        "    await s.append(SessionStarted(session_id='x'))\n"
        f"    c = open_claude_session_store({str(tmp_path / 'f.db')!r})\n"
        "    await c.load({'project_key': 'p', 'session_id': 'x'})\n"
        "asyncio.run(main())\n"
        "print('bye')\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0 and out.strip() == b"bye", err.decode(errors="replace")


async def test_sigkill_keeps_the_derived_costs_equal_to_the_events(tmp_path: Path) -> None:
    """Costs are derived in the events' own transaction: wherever a SIGKILL lands (in a
    batch, in a commit), each session's figures and its attempt_costs ledger equal a fold
    of the events that were stored (core.stats.session_costs), and still do once the next
    open has recovered the sessions the kill left running."""
    from shepherd.core.stats import session_costs
    from tests.cost_sessions import check_costs

    db = tmp_path / "costs.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    seed_note = f"(rng state {rng.getstate()[1][0]})"
    for round_no in range(8):
        proc = await _spawn("costs", str(db), str(round_no))
        assert proc.stdout is not None
        kill_after = rng.randint(1, 120)  # committed batches to see before the kill
        for _ in range(kill_after):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"child ended early: {err.decode(errors='replace')}")
        proc.kill()
        await proc.wait()

        store = await Store.open(db)  # recovery runs here
        try:
            rows = await store.list_sessions(limit=10_000)
            assert rows, "nothing was stored"
            for row in rows:
                ledger = await store.cost_ledger(row.id)
                want = await session_costs(store, row.id)
                assert ledger is not None and ledger.seq == row.last_seq, (round_no, row.id, seed_note)
                check_costs(row, ledger, want)
        finally:
            await store.close()
