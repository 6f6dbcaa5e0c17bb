"""What only the PostgreSQL store has to show: writers in several processes (hosts, as
far as the store can tell) on one session, the schema by version, leases by the server's
clock, recovery across hosts after a runner is killed. The rest of the contract is the
shared store suite (tests/test_store.py, run on both)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.store import schema as sqlite_schema
from shepherd.core.clock import FakeClock
from shepherd.core.events import SessionStarted, TextDelta, ToolStarted
from shepherd.core.store import LeaseHeld, NotADatabase, SchemaTooNew, StoreError, open_store
from shepherd.core.store.pg import PgStore
from tests.pg_server import pg_dsn, pg_server, sql  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]

# A runner in another process: host id from argv, appends N events to one session as fast
# as it can once told to go (in bursts, so its batches interleave with the other writer's),
# then prints the seqs it was given.
WRITER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from shepherd.core.events import TextDelta
from shepherd.core.store.pg import PgStore

async def main(dsn, host, n):
    store = await PgStore.open(dsn, host=host, recover=False)
    print("open", flush=True)
    sys.stdin.readline()  # both are connected: go
    seqs = []
    for start in range(0, n, 25):
        done = await asyncio.gather(*[store.submit(TextDelta(session_id="shared", text=f"{host}-{i}"))
                                      for i in range(start, min(n, start + 25))])
        seqs += [e.seq for e in done]
    await store.close()
    print(json.dumps({"host": store.owner, "seqs": seqs, "batches": store.stats.batches}))

asyncio.run(main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""

# A runner that takes a session's lease, opens a tool call, says so, and waits to be killed.
RUNNER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from shepherd.core.events import SessionStarted, ToolStarted
from shepherd.core.store.pg import PgStore

async def main(dsn):
    store = await PgStore.open(dsn, host="host-a", recover=False)
    await store.acquire_lease("victim", ttl_s=30)
    await store.append(SessionStarted(session_id="victim", title="killed mid-call"))
    await store.append(ToolStarted(session_id="victim", call_id="c1", name="bash", input={"cmd": "sleep 100"}))
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[2]))
"""


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, str(ROOT), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


async def test_two_hosts_append_to_one_session_gapless(pg_dsn: str) -> None:
    first = await PgStore.open(pg_dsn)
    await first.append(SessionStarted(session_id="shared", title="two writers"))
    await first.close()
    n = 1000
    procs = [_child(WRITER, pg_dsn, host, str(n)) for host in ("host-a", "host-b")]
    for p in procs:
        line = await asyncio.to_thread(p.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "open", p.stderr.read() if p.stderr else ""
    for p in procs:  # both go at once
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    outs = []
    for p in procs:
        out, err = await asyncio.to_thread(p.communicate, None, 120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["host"].startswith("host-a:") and outs[1]["host"].startswith("host-b:")
    mine = [sorted(o["seqs"]) for o in outs]
    for seqs in mine:
        assert seqs == sorted(set(seqs)) and len(seqs) == n
    assert sorted(mine[0] + mine[1]) == list(range(2, 2 * n + 2))  # gapless, unique, after session.started
    # interleaved for real: neither writer had the session to itself
    assert not (max(mine[0]) < min(mine[1]) or max(mine[1]) < min(mine[0]))
    store = await PgStore.open(pg_dsn, recover=False)
    try:
        events = await store.events("shared", limit=None)
        assert [e.seq for e in events] == list(range(1, 2 * n + 2))
        row = await store.get_session("shared")
        assert row is not None and row.last_seq == 2 * n + 1
        # each writer's own events kept their submission order
        for host in ("host-a", "host-b"):
            texts = [e.text for e in events if getattr(e, "text", "").startswith(host)]
            assert texts == [f"{host}-{i}" for i in range(n)]
    finally:
        await store.close()


async def test_a_killed_runner_is_recovered_by_another_host_once_its_lease_expires(pg_dsn: str) -> None:
    await (await PgStore.open(pg_dsn)).close()  # the schema, before two processes race for it
    runner = _child(RUNNER, pg_dsn)
    try:
        line = await asyncio.to_thread(runner.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "ready", runner.stderr.read() if runner.stderr else ""
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
    other = await PgStore.open(pg_dsn, host="host-b")  # recovery at open: the lease still runs
    try:
        assert (await other.get_session("victim")).status == "running"  # type: ignore[union-attr]
        assert await other.lease_owner("victim") is not None  # another host's pid: never checked
        with pytest.raises(LeaseHeld):
            await other.acquire_lease("victim")
        sql(pg_dsn, "UPDATE leases SET expires_at = expires_at - 31")  # 31 s pass on the server
        assert await other.lease_owner("victim") is None
        assert await other.recover() == ["victim"]
        calls = await other.tool_calls("victim")
        assert [(c.call_id, c.status) for c in calls] == [("c1", "interrupted")]
        row = await other.get_session("victim")
        assert row is not None and row.status == "interrupted"
        assert [e.type for e in await other.events("victim")][-2:] == ["tool.finished", "session.interrupted"]
        assert await other.recover() == []  # idempotent
    finally:
        await other.close()


async def test_recovery_on_two_hosts_at_once_closes_a_session_once(pg_dsn: str) -> None:
    setup = await PgStore.open(pg_dsn, host="host-a")
    await setup.append(SessionStarted(session_id="orphan"))
    await setup.append(ToolStarted(session_id="orphan", call_id="c"))
    await setup.close()
    a = await PgStore.open(pg_dsn, host="host-b", recover=False)
    b = await PgStore.open(pg_dsn, host="host-c", recover=False)
    try:
        found = await asyncio.gather(a.recover(), b.recover())
        assert sorted(found, key=len) == [[], ["orphan"]]
        assert [e.type for e in await a.events("orphan")] == ["session.started", "tool.started", "tool.finished",
                                                             "session.interrupted"]
    finally:
        await a.close()
        await b.close()


async def test_leases_go_by_the_servers_clock_not_the_runners(pg_dsn: str) -> None:
    early, late = FakeClock(start=1_000_000_000.0), FakeClock(start=2_500_000_000.0)
    a = await PgStore.open(pg_dsn, clock=early, host="host-a")
    b = await PgStore.open(pg_dsn, clock=late, host="host-b", recover=False)
    try:
        await a.acquire_lease("L", ttl_s=60)
        late.advance(10_000)  # b's clock says the lease ran out long ago: b must not believe it
        assert await b.lease_owner("L") == a.owner
        with pytest.raises(LeaseHeld):
            await b.acquire_lease("L")
        expires = sql(pg_dsn, "SELECT expires_at - EXTRACT(EPOCH FROM now())::float8 FROM leases")[0][0]
        assert 50 < float(expires) <= 60  # type: ignore[arg-type]
        assert await b.recover() == []
    finally:
        await a.close()
        await b.close()


async def test_a_newer_schema_is_refused_in_one_line(pg_dsn: str) -> None:
    await (await PgStore.open(pg_dsn)).close()
    sql(pg_dsn, "UPDATE shepherd_schema SET version = version + 1")
    with pytest.raises(SchemaTooNew) as info:
        await open_store(pg_dsn)
    assert "newer Shepherd" in str(info.value) and "\n" not in str(info.value)


async def test_another_programs_database_is_refused(pg_dsn: str) -> None:
    sql(pg_dsn, "CREATE TABLE invoices (id int)")
    with pytest.raises(NotADatabase, match="invoices"):
        await open_store(pg_dsn)
    assert sql(pg_dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'events'") == [(0,)]  # left alone


async def test_two_processes_opening_a_new_database_migrate_it_once(pg_dsn: str) -> None:
    stores = await asyncio.gather(*[open_store(pg_dsn) for _ in range(4)])
    for s in stores:
        await s.close()
    assert sql(pg_dsn, "SELECT version FROM shepherd_schema") == [(sqlite_schema.SCHEMA_VERSION,)]
    assert sql(pg_dsn, "SELECT count(*) FROM pg_tables WHERE tablename IN ('events', 'worktrees', 'approvals', "
                       "'run_states', 'notified', 'agent_items', 'claude_entries')") == [(7,)]


async def test_no_server_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        await open_store(f"postgresql://nobody@/nowhere?host={tmp_path}", recover=False)
    text = str(info.value)
    assert text.startswith("cannot open postgresql://") and "\n" not in text


async def test_the_subtask_order_survives_an_upsert(pg_dsn: str) -> None:
    """SQLite's REPLACE renumbers a row (ORDER BY position, rowid); the PG rowid column too."""
    from shepherd.core.events import SubtaskStarted

    s = await PgStore.open(pg_dsn)
    try:
        for sub in ("p1", "p2", "p3"):  # before a plan: positions from -1e6 in start order
            await s.append(SubtaskStarted(session_id="o", subtask_id=sub))
        assert [r.id for r in await s.subtasks("o")] == ["p1", "p2", "p3"]
    finally:
        await s.close()


def test_the_sql_dialect_rewrites() -> None:
    from shepherd.core.store.pg.dialect import translate

    assert translate("SELECT * FROM s WHERE id LIKE ? ESCAPE '\\' LIMIT ?") == \
        "SELECT * FROM s WHERE id ILIKE %s ESCAPE '\\' LIMIT NULLIF(%s::bigint, -1)"
    up = translate("INSERT OR REPLACE INTO subtasks (session_id, id, title) VALUES (?, ?, ?), (?, ?, ?)")
    assert up == ("INSERT INTO subtasks (session_id, id, title) VALUES (%s, %s, %s), (%s, %s, %s) "
                  "ON CONFLICT (session_id, id) DO UPDATE SET title = EXCLUDED.title, rowid = DEFAULT")
    assert translate("INSERT INTO commands (a) VALUES (?)").endswith("RETURNING id AS id")
    assert translate("INSERT INTO agent_items (a) VALUES (?)").endswith("RETURNING position AS id")
    assert translate("INSERT OR IGNORE INTO notified (session_id, seq) VALUES (?, ?)") == \
        "INSERT INTO notified (session_id, seq) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    assert translate("SELECT IFNULL(model, '') FROM x WHERE a NOT LIKE '5%'") == \
        "SELECT COALESCE(model, '') FROM x WHERE a NOT ILIKE '5%%'"


async def test_event_text_is_kept_byte_for_byte(pg_dsn: str) -> None:
    s = await PgStore.open(pg_dsn)
    try:
        weird = "tab\tnul-free \u202e rtl \U0001F600 \\ % ? '"
        done = await s.append(TextDelta(session_id="w", text=weird))
        assert done is not None
        back = (await s.events("w"))[0]
        assert back.text == weird and back == done  # type: ignore[attr-defined]
    finally:
        await s.close()


async def test_two_hosts_racing_for_a_lease_one_wins(pg_dsn: str) -> None:
    a = await PgStore.open(pg_dsn, host="host-a")
    b = await PgStore.open(pg_dsn, host="host-b", recover=False)
    try:
        sids = [f"race{i}" for i in range(20)]
        results = await asyncio.gather(*[s.acquire_lease(sid) for sid in sids for s in (a, b)],
                                       return_exceptions=True)
        for i, sid in enumerate(sids):
            pair = results[2 * i:2 * i + 2]
            assert sum(r is None for r in pair) == 1 and sum(isinstance(r, LeaseHeld) for r in pair) == 1, pair
            winner = a if pair[0] is None else b
            assert await a.lease_owner(sid) == winner.owner
    finally:
        await a.close()
        await b.close()


async def test_tail_is_woken_by_notify_and_catches_up_by_seq(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No polling: with the fallback read an hour away, each commit of another store (another
    process, in effect) still reaches the follower at once; and a session's events committed
    before the follower listened are read by seq all the same."""
    from shepherd.core.store.pg import notify

    monkeypatch.setattr(notify, "FALLBACK_S", 3600.0)
    writer = await PgStore.open(pg_dsn, host="runner-host")
    reader = await PgStore.open(pg_dsn, host="laptop", recover=False)
    try:
        await writer.append(SessionStarted(session_id="t"))  # before anyone listens
        got: list[int] = []
        seen = asyncio.Event()

        async def follow() -> None:
            async for batch in reader.tail("t"):
                got.extend(e.seq for e in batch)
                seen.set()

        task = asyncio.create_task(follow())
        for i in range(20):
            await asyncio.wait_for(seen.wait(), 10)
            seen.clear()
            await writer.append(TextDelta(session_id="t", text=str(i)))
            await writer.append(TextDelta(session_id="other", text="not followed"))
        await asyncio.wait_for(seen.wait(), 10)
        assert got == list(range(1, 22))
        assert reader.listener.heard >= 20
        task.cancel()
    finally:
        await reader.close()
        await writer.close()


async def test_raw_sql_of_other_modules_runs_through_the_seam(pg_dsn: str) -> None:
    """core/notify.py's SQL (aiosqlite's cursor API, INSERT OR IGNORE) on a PgStore."""
    from shepherd.core.notify import _claim

    s = await PgStore.open(pg_dsn)
    try:
        await s.append(SessionStarted(session_id="n"))
        assert await s.run_rows(_claim("n", 1, 1.0)) is True
        assert await s.run_rows(_claim("n", 1, 2.0)) is False  # claimed once, whoever asks again

        async def top(conn: Any) -> int:
            async with conn.execute("SELECT COALESCE(MAX(id), 0) FROM events") as cur:
                return int((await cur.fetchone())[0])

        assert await s.run_read(top) >= 1
        cur = await s.run_write(lambda c: c.execute("INSERT INTO commands (session_id, command, created_at) "
                                                    "VALUES ('n', 'pause', 0)"))
        assert cur.lastrowid == 1
    finally:
        await s.close()


async def test_open_store_picks_postgresql_for_a_url_and_shepherd_db(pg_dsn: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from shepherd.core.store import NoDatabase

    with pytest.raises(NoDatabase):  # a read-only command on an empty database makes no tables
        await open_store(pg_dsn, create=False)
    assert sql(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    monkeypatch.setenv("SHEPHERD_DB", pg_dsn)
    s = await open_store()
    try:
        assert isinstance(s, PgStore) and s.dsn == pg_dsn
    finally:
        await s.close()
    s = await open_store(pg_dsn, create=False)  # now there is one
    await s.close()


async def test_the_writer_reconnects_after_its_connection_is_killed(pg_dsn: str) -> None:
    s = await PgStore.open(pg_dsn)
    try:
        await s.append(TextDelta(session_id="k", text="before"))
        pid = s._wsync.raw.info.backend_pid  # type: ignore[union-attr]
        sql(pg_dsn, "SELECT pg_terminate_backend(?)", (pid,))
        with pytest.raises(StoreError):  # the batch in flight fails, in one line
            await s.append(TextDelta(session_id="k", text="lost"))
        done = await s.append(TextDelta(session_id="k", text="after"))
        assert done is not None and done.seq == 2
        assert [e.text for e in await s.events("k")] == ["before", "after"]  # type: ignore[attr-defined]
    finally:
        await s.close()


# tests/store_child.py's runner, on PostgreSQL: the same script with PgStore for Store
PG_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); import tests.store_child as child; "
            "from shepherd.core.store.pg import PgStore; child.Store = PgStore; child.main(sys.argv[2:])")


async def test_sigkill_never_loses_an_acknowledged_event_on_postgresql(pg_dsn: str) -> None:
    """tests/test_store_procs.py's crash test, fewer rounds: a runner SIGKILLed at a random
    point loses no acknowledged event, leaves no gap, and the next open recovers it (a
    runner of this host whose process is gone) exactly once."""
    import random

    await (await PgStore.open(pg_dsn)).close()
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    for round_no in range(8):
        sid = f"crash{round_no}"
        lease = round_no % 2 == 0
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PG_CHILD, str(ROOT), "kill", pg_dsn, sid, *(["--lease"] if lease else []),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        acked: list[int] = []
        kill_after = rng.randint(1, 300)
        while len(acked) < kill_after:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"child ended early: {err.decode(errors='replace')}")
            acked.append(int(line))
        proc.kill()
        await proc.wait()
        acked += [int(x) for x in (await proc.stdout.read()).decode().split("\n")[:-1] if x.strip()]
        stored = [int(r[0]) for r in sql(pg_dsn, "SELECT seq FROM events WHERE session_id = ? ORDER BY seq", (sid,))]
        assert not sorted(set(acked) - set(stored)), f"round {round_no}: acknowledged seqs lost"
        assert stored == list(range(1, len(stored) + 1))
        store = await PgStore.open(pg_dsn)  # recovery: this host's runner pid is gone
        try:
            row = await store.get_session(sid)
            assert row is not None and row.status == "interrupted"
            assert await store.tool_calls(sid, status="running") == []
            last = (await store.events(sid, limit=None))[-1]
            assert last.type == "session.interrupted"
            assert ("process" if lease else "no lease") in last.reason  # type: ignore[attr-defined]
            assert await store.recover() == []
        finally:
            await store.close()


async def test_a_servers_message_quoting_our_data_is_one_safe_line(pg_dsn: str) -> None:
    s = await PgStore.open(pg_dsn)
    try:
        async def clash(conn: Any) -> None:  # a unique key the server names in its message
            for _ in range(2):
                await conn.execute("INSERT INTO leases (session_id, owner, expires_at, pid, host) "
                                   "VALUES ('evil\x1b[31m\nid', 'o', 0, 1, 'h')")

        with pytest.raises(StoreError) as info:
            await s.run_write(clash)
        text = str(info.value)
        assert "\x1b" not in text and "\n" not in text and "evil" in text
    finally:
        await s.close()


async def test_a_percent_sign_in_sql_without_parameters_stays_one(pg_dsn: str) -> None:
    s = await PgStore.open(pg_dsn)
    try:
        await s.append(SessionStarted(session_id="50%", title="half"))
        rows = await s.run_read(lambda c: c.execute_fetchall("SELECT id FROM sessions WHERE id = '50%'"))
        assert [r[0] for r in rows] == ["50%"]
        assert await s.resolve_session("50") == "50%"
    finally:
        await s.close()


async def test_approvals_run_states_and_worktrees_derive_on_postgresql(pg_dsn: str) -> None:
    """The derived tables the shared suite touches least, through the same derivation."""
    from shepherd.core.events import ApprovalDecided, ApprovalRequested, Checkpoint, SubtaskStarted, WorktreeChanged

    s = await PgStore.open(pg_dsn)
    try:
        sid = "ap"
        await s.append(SessionStarted(session_id=sid))
        await s.append(SubtaskStarted(session_id=sid, subtask_id="a"))
        await s.append(ToolStarted(session_id=sid, subtask_id="a", call_id="c1", name="run_command",
                                   input={"command": "rm -rf build"}))
        await s.save_run_state(sid, "a", ["c1"], '{"state": 1}')
        await s.append(ApprovalRequested(session_id=sid, subtask_id="a", call_id="c1", tool="run_command",
                                         input={"command": "rm -rf build"}))
        row = await s.get_session(sid)
        assert row is not None and row.needs == "approval" and "rm -rf build" in row.needs_detail
        assert [a.call_id for a in await s.approvals(sid)] == ["c1"]
        assert (await s.tool_calls(sid))[0].status == "awaiting"
        assert await s.load_run_state(sid, "a") == (["c1"], '{"state": 1}')
        await s.append(ApprovalDecided(session_id=sid, subtask_id="a", call_id="c1", decision="approved",
                                       scope="session"))
        assert await s.approvals(sid) == [] and await s.session_tools(sid) == {"run_command"}
        assert await s.load_run_state(sid, "a") is None  # settled: dropped in the events' transaction
        row = await s.get_session(sid)
        assert row is not None and row.needs is None
        for action in ("created", "merged"):
            await s.append(WorktreeChanged(session_id=sid, action=action, path="/wt/ap", branch="shepherd/ap",
                                           origin="/repo", repo="/repo/.git", base_commit="abc"))
        await s.append(Checkpoint(session_id=sid, subtask_id="a", commit="def", at="subtask_done"))
        wt = await s.worktree(sid)
        assert wt is not None and wt.state == "merged" and wt.workspace == "/wt/ap"
        assert [w.session_id for w in await s.worktrees(state="merged", repo="/repo/.git")] == [sid]
        assert [c.commit for c in await s.checkpoints(sid)] == ["def"]  # type: ignore[attr-defined]
    finally:
        await s.close()


@pytest.mark.parametrize("dsn", ["postgresql://u:hunter2@h:notaport/db", "postgresql://u:hunter2@[::1/db",
                                 "postgresql://u:hun@ter2@h/db"])
def test_redact_never_shows_the_password_and_never_raises(dsn: str) -> None:
    from shepherd.core.store.pg import redact
    shown = redact(dsn)
    assert "hunter2" not in shown and "ter2" not in shown and shown.endswith("/db")
