"""Fewer commits, same record: history rows and a lease's release share the writer's transactions,
the engine's paired lifecycle events share a commit, and the store's one-look scrub check
(Scrubber.clean_json) still scrubs every form of every secret."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.clock import FakeClock
from shepherd.core.events import EVENT_TYPES, SessionStarted, TextDelta, ToolFinished, ToolStarted
from shepherd.core.secrets import REDACTED, Scrubber, _forms
from shepherd.core.store import Store
from tests.test_store_reads import _odd_values


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = await Store.open(tmp_path / "shepherd.db", clock=FakeClock())
    yield s
    await s.close()


async def test_history_rows_share_the_commit_of_the_events_around_them(store: Store) -> None:
    history = store.agents_session("h")
    await store.append(SessionStarted(session_id="h"))
    items_when_committed: list[int] = []

    def on_commit(events: list[Any]) -> None:  # runs right after each commit
        with sqlite3.connect(str(store.path)) as conn:
            items_when_committed.append(conn.execute("SELECT COUNT(*) FROM agent_items").fetchone()[0])
        conn.close()

    store.subscribe(on_commit)
    before = store.stats.batches
    started = store.submit(ToolStarted(session_id="h", call_id="c", name="t"))
    finished = store.submit(ToolFinished(session_id="h", call_id="c", output="ok"))
    await history.add_items([{"role": "assistant", "content": "turn"}])
    assert started.done() and finished.done()
    assert store.stats.batches == before + 1
    assert items_when_committed == [1]  # the tool events' commit held the history row too
    assert await history.get_items() == [{"role": "assistant", "content": "turn"}]


async def test_a_failing_row_write_is_undone_alone(store: Store) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO agent_items (session_id, item_json) VALUES ('r', '{}')")
        raise ValueError("row job failed")

    def ok(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO agent_items (session_id, item_json) VALUES ('r', '[1]')")
        return 7

    ev = store.submit(TextDelta(session_id="r", text="kept"))
    bad = store.submit_rows(half_then_fail)
    good = store.submit_rows(ok)
    with pytest.raises(ValueError, match="row job failed"):
        await bad
    assert await good == 7 and (await ev).seq == 1  # type: ignore[union-attr]
    rows = await store.run_read(lambda c: c.execute_fetchall("SELECT item_json FROM agent_items"))
    assert [r[0] for r in rows] == ["[1]"]
    with pytest.raises(sqlite3.IntegrityError):  # an SQL error reaches its caller too
        await store.run_rows(lambda c: c.execute("INSERT INTO leases (session_id) VALUES (NULL)"))
    assert store.stats.failed_batches == 0


async def test_the_lease_is_taken_and_given_up_through_the_writer(tmp_path: Path) -> None:
    from shepherd.core.store import LeaseHeld

    a = await Store.open(tmp_path / "l.db", clock=FakeClock())
    b = await Store.open(tmp_path / "l.db", clock=FakeClock(), recover=False)
    try:
        await a.acquire_lease("s")
        with pytest.raises(LeaseHeld):
            await b.acquire_lease("s")
        await a.refresh_lease("s")
        assert await b.lease_owner("s") == a.owner
        await a.release_lease("s")
        await b.acquire_lease("s")
        assert await a.lease_owner("s") == b.owner
    finally:
        await a.close()
        await b.close()


async def test_a_run_commits_its_paired_lifecycle_events_together(tmp_path: Path) -> None:
    from shepherd.core.engine import Supervisor
    from shepherd.core.task import task_from_dict

    ws = tmp_path / "ws"
    ws.mkdir()
    task = task_from_dict({"title": "t", "backend": "scripted", "workspace": str(ws), "heartbeat_s": 86400,
                           "subtasks": [{"id": "a", "prompt": "p", "steps": [{"text": "done"}]}]})
    store = await Store.open(tmp_path / "e.db")
    seen: list[list[str]] = []
    store.subscribe(lambda evs: seen.append([e.type for e in evs]))
    try:
        sup = Supervisor(store, task, clock=FakeClock(), interactive=False)
        assert await sup.run() == "done"
        # the run's opening is one commit: nothing acts on the start and the plan before the
        # first attempt, whose commit confirms them
        assert seen[0] == ["session.started", "plan.ready", "subtask.started", "attempt.started"]
        # a success is committed before anything runs after it (a crash must not run it
        # again): with the session's end (and the lease's release), the next awaited event
        assert seen[-1] == ["subtask.finished", "session.finished"]
        assert await store.lease_owner(sup.session_id) is None  # released in that same commit
        rows = await store.run_read(lambda c: c.execute_fetchall("SELECT COUNT(*) FROM leases"))
        assert list(rows)[0][0] == 0
    finally:
        await store.close()


# --- the one-look scrub check ------------------------------------------------------------

QUOTED = 'pa"ss\\w0rd-Zq81xYv3'  # a secret holding characters JSON escapes


@pytest.mark.parametrize("secret", ["tok-9f8e7d6c5b4a39281706", QUOTED, "ünïcødé-sëcret-vålue-42"])
async def test_every_form_of_a_secret_is_scrubbed_from_every_field(store: Store, secret: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", secret)
    forms = [f for f in _forms(secret) if f] + [base64.b64encode(secret.encode()).decode()]
    for cls in EVENT_TYPES.values():
        for form in forms:
            values = _odd_values(cls)
            for name, value in values.items():
                if isinstance(value, str):
                    values[name] = f"before {form} after"
                elif isinstance(value, dict):
                    values[name] = {"k": [f"x{form}y"], form: 1}
                elif isinstance(value, list):
                    values[name] = [{"id": f"({form})"}]
            await store.append(cls(session_id="x", **values))
    await store.append(TextDelta(session_id="x", text="api_key = 'abcd1234efgh' and Bearer abcdefghij12"))
    conn = sqlite3.connect(str(store.path))
    stored = [r[0] for r in conn.execute("SELECT data FROM events WHERE session_id = 'x'")]
    conn.close()
    text = "\n".join(stored)
    for form in forms:
        assert form not in text and json.dumps(form)[1:-1] not in text, form
    assert REDACTED in text and "abcd1234efgh" not in text and "abcdefghij12" not in text


def test_clean_json_says_clean_only_when_the_walk_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-9f8e7d6c5b4a39281706")
    scrubber = Scrubber()
    samples: list[Any] = [
        {"text": "plain words", "n": 3}, {"text": "tok-9f8e7d6c5b4a39281706"[::-1]},
        {"text": "see https://user:pw@host/x"}, {"k": ["\ud800 lone surrogate"]},
        {"API_KEY": "x"}, {"text": "AUTH_TOKEN=abcdefgh"}, {"text": "ordinary ünïcødé"},
        {"text": 'quotes " and \\ backslashes\n'}, {"text": "sk-proj-abcdefghijkl"},
    ]
    for obj in samples:
        dumped = json.dumps(obj, ensure_ascii=False, sort_keys=True)
        if scrubber.clean_json(dumped):
            assert scrubber.obj(obj) is obj, obj
    assert scrubber.clean_json(json.dumps(samples[0]))
    monkeypatch.setenv("OTHER_SECRET_TOKEN", QUOTED)
    assert not Scrubber().clean_json(json.dumps(samples[0]))  # a form JSON escapes: always walk


def test_with_is_dataclasses_replace() -> None:
    for cls in EVENT_TYPES.values():
        ev = cls(session_id="s", **_odd_values(cls))
        assert ev.with_(seq=4, ts=2.5) == dataclasses.replace(ev, seq=4, ts=2.5)
        assert type(ev.with_()) is cls
        with pytest.raises(TypeError):
            ev.with_(no_such_field=1)


# --- lazy items: held for the next urgent commit -------------------------------------------


async def _turns(n: int = 5) -> None:
    for _ in range(n):  # a few loop iterations: time for the writer to act, were it to
        await asyncio.sleep(0)


async def test_a_lazy_event_waits_for_the_next_urgent_one_and_shares_its_commit(store: Store) -> None:
    store.lazy_s = store.max_wait_s = 3600.0  # (held until something urgent comes: no timing in the test)
    seen: list[list[str]] = []
    store.subscribe(lambda evs: seen.append([e.type for e in evs]))
    text = store.submit(TextDelta(session_id="z", text="streamed"), lazy=True)
    end = store.submit(ToolFinished(session_id="z", call_id="c0", output="ok"), lazy=True)
    await _turns()
    assert not text.done() and not end.done()  # held: nothing else to commit with yet
    started = store.submit(ToolStarted(session_id="z", call_id="c1", name="t"))
    await asyncio.wait_for(asyncio.gather(text, end, started), 10)
    assert seen == [["text.delta", "tool.finished", "tool.started"]]


async def test_urge_flush_and_close_end_the_hold(tmp_path: Path) -> None:
    s = await Store.open(tmp_path / "u.db", clock=FakeClock())
    s.lazy_s = s.max_wait_s = 3600.0
    try:
        first = s.submit(TextDelta(session_id="u", text="a"), lazy=True)
        await _turns()
        s.urge()
        assert (await asyncio.wait_for(first, 10)).seq == 1  # type: ignore[union-attr]
        second = s.submit(TextDelta(session_id="u", text="b"), lazy=True)
        await asyncio.wait_for(s.flush(), 10)
        assert second.done()
        third = s.submit(TextDelta(session_id="u", text="c"), lazy=True)
        await _turns()
    finally:
        await asyncio.wait_for(s.close(), 10)
    assert third.done() and third.result().seq == 3  # type: ignore[union-attr]


async def test_a_deferred_history_write_returns_before_its_commit_and_reads_see_it(store: Store) -> None:
    store.lazy_s = store.max_wait_s = 3600.0
    history = store.agents_session("d", deferred=True)
    await history.add_items([{"role": "assistant", "content": "turn 1"}])
    with sqlite3.connect(str(store.path)) as conn:  # not committed yet: the SDK went on anyway
        assert conn.execute("SELECT COUNT(*) FROM agent_items").fetchone()[0] == 0
    conn.close()
    assert await asyncio.wait_for(history.get_items(), 10) == [{"role": "assistant", "content": "turn 1"}]
    await history.add_items([{"role": "assistant", "content": "turn 2"}])
    await asyncio.wait_for(history.settle(), 10)
    with sqlite3.connect(str(store.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM agent_items").fetchone()[0] == 2
    conn.close()


async def test_a_deferred_history_reads_the_database_once_and_stays_what_it_holds(store: Store) -> None:
    """The runner's own session keeps the rows it read and wrote: later reads take no trip
    to SQLite and give what a fresh read of the committed rows gives."""
    await store.agents_session("k").add_items([{"role": "user", "content": "old"}, {"n": [1, 2]}])
    history = store.agents_session("k", deferred=True)
    reads = 0
    real = store.run_read

    async def counting(fn: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real(fn)

    store.run_read = counting  # type: ignore[method-assign]

    async def fresh() -> list[Any]:
        await history.settle()
        return await store.agents_session("k").get_items()

    assert await history.get_items() == [{"role": "user", "content": "old"}, {"n": [1, 2]}]
    await history.add_items([{"role": "assistant", "content": "turn", "t": (1, "é")}])
    assert await history.get_items() == await fresh()
    assert await history.get_items(limit=1) == [{"role": "assistant", "content": "turn", "t": [1, "é"]}]
    assert await history.get_items(limit=0) == [] and len(await history.get_items(limit=-1)) == 3
    assert reads == 1 + 1  # (the one fresh read above is the other)
    assert await history.pop_item() == {"role": "assistant", "content": "turn", "t": [1, "é"]}
    assert await history.get_items() == await fresh()
    await history.clear_session()
    assert await history.get_items() == [] == await fresh()
    await history.add_items([{"role": "user", "content": "new"}])
    assert await history.get_items() == [{"role": "user", "content": "new"}] == await fresh()


async def test_a_failed_deferred_history_write_is_raised_and_nothing_lands_after_it(store: Store) -> None:
    from shepherd.core.store.agents_session import HistoryWriteFailed

    await store.run_rows(lambda c: c.execute(
        "CREATE TEMP TRIGGER no_boom BEFORE INSERT ON agent_items WHEN NEW.item_json LIKE '%boom%' "
        "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"))
    store.lazy_s = store.max_wait_s = 3600.0
    history = store.agents_session("f", deferred=True)
    await history.add_items([{"role": "user", "content": "kept"}])
    await history.settle()
    await history.add_items([{"role": "assistant", "content": "boom"}])  # fails on the writer
    await history.add_items([{"role": "assistant", "content": "after the gap"}])  # queued behind it
    with pytest.raises(HistoryWriteFailed):
        await asyncio.wait_for(history.settle(), 10)
    with pytest.raises(HistoryWriteFailed):  # and on every later call
        await history.add_items([{"role": "assistant", "content": "later"}])
    with pytest.raises(HistoryWriteFailed):
        await history.get_items()
    assert await store.agents_session("f").get_items() == [{"role": "user", "content": "kept"}]


async def test_a_streaming_turn_takes_one_commit(tmp_path: Path) -> None:
    """A turn's text, tool ends and history rows ride with the next tool call's start (or
    the attempt's end): one commit per turn, not two; nothing waits on a held item."""
    from shepherd.core.engine import Supervisor
    from shepherd.core.task import task_from_dict

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("a\n")
    steps = [{"text": f"look {i}", "tools": [{"name": "read_file", "args": {"path": "a.txt"}}]} for i in range(4)]
    task = task_from_dict({"title": "t", "backend": "scripted", "workspace": str(ws), "heartbeat_s": 86400,
                           "subtasks": [{"id": "a", "prompt": "p", "steps": steps}]})
    store = await Store.open(tmp_path / "t.db")
    store.lazy_s = store.max_wait_s = 3600.0  # a held item is committed only by an urgent one, or by a wait for it
    seen: list[list[str]] = []
    store.subscribe(lambda evs: seen.append([e.type for e in evs]))
    try:
        sup = Supervisor(store, task, clock=FakeClock(), interactive=False)
        assert await asyncio.wait_for(sup.run(), 60) == "done"
        start = next(i for i, b in enumerate(seen) if "attempt.started" in b)
        end = next(i for i, b in enumerate(seen) if "subtask.finished" in b)
        turns = seen[start + 1:end]  # (the last: the final answer, committed as the attempt ends)
        # every commit is a tool call's start (with the turn before it), but the last; a
        # consumer running behind the SDK may find two turns queued at once: fewer, never more
        assert sum(b.count("tool.started") for b in turns) == 4 and len(turns) <= 5
        assert all("tool.started" in b for b in turns[:-1])
        assert all(b[0] == "tool.finished" for b in turns[1:])  # the turn before, in the same commit
        items = await store.agents_session(f"{sup.session_id}:a").get_items()
        assert sum(1 for i in items if i.get("type") == "function_call_output") == 4
    finally:
        await store.close()


async def test_a_read_only_tools_start_is_lazy_and_a_writing_tools_is_not(tmp_path: Path) -> None:
    """A turn of reads (list_files, read_file: no effect a crash could leave unrecorded)
    needs no commit of its own: its start rides with the next urgent commit. A writing
    tool's start is urgent: its turn is a commit, in order with everything before it."""
    from shepherd.core.engine import Supervisor
    from shepherd.core.task import task_from_dict

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("a\n")
    reads = [{"text": f"look {i}", "tools": [{"name": "read_file", "args": {"path": "a.txt"}},
                                             {"name": "list_files", "args": {"path": "."}}]} for i in range(3)]
    write = [{"text": "write", "tools": [{"name": "write_file", "args": {"path": "b.txt", "content": "b"}}]}]
    task = task_from_dict({"title": "t", "backend": "scripted", "workspace": str(ws), "heartbeat_s": 86400,
                           "subtasks": [{"id": "a", "prompt": "p", "steps": reads + write + reads}]})
    store = await Store.open(tmp_path / "t.db")
    store.lazy_s = store.max_wait_s = 3600.0  # a held item is committed only by an urgent one, or by a wait for it
    seen: list[list[Any]] = []
    store.subscribe(lambda evs: seen.append(list(evs)))
    try:
        sup = Supervisor(store, task, clock=FakeClock(), interactive=False)
        assert await asyncio.wait_for(sup.run(), 60) == "done"
        starts = [[e.name for e in b if e.type == "tool.started"] for b in seen]
        batches = [names for names in starts if names]
        # the reads before the write share the write's commit; the reads after it, the commit
        # the attempt's end waits for
        assert batches == [["read_file", "list_files"] * 3 + ["write_file"], ["read_file", "list_files"] * 3]
        assert (ws / "b.txt").read_text() == "b"
    finally:
        await store.close()


async def test_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path: Path) -> None:
    """No commit of the writer copies the WAL into the file (SQLite's own checkpoint would run
    inside one of them, fsyncs included); the checkpoint thread does, and a closed store
    still leaves every byte in the main file."""
    from shepherd.core.store import db

    path = tmp_path / "wal.db"
    s = await Store.open(path, clock=FakeClock())
    try:
        conn = s._wconn
        assert conn is not None
        assert (await conn.execute_fetchall("PRAGMA wal_autocheckpoint"))[0][0] == 0
        for i in range(db.CHECKPOINT_EVERY - 5):
            await s.append(TextDelta(session_id="w", text=f"t{i}"))
        assert s.checkpointer.runs == 0
        for i in range(10):
            await s.append(TextDelta(session_id="w", text=f"u{i}"))
        for _ in range(1000):
            if s.checkpointer.runs:
                break
            await asyncio.to_thread(lambda: None)
        assert s.checkpointer.runs == 1
    finally:
        await s.close()
    assert not Path(f"{path}-wal").exists()
    with sqlite3.connect(str(path)) as check:
        assert check.execute("SELECT COUNT(*) FROM events").fetchone()[0] == db.CHECKPOINT_EVERY + 5
    check.close()


def test_the_lazy_hold_leaves_room_for_its_commit_within_the_bound() -> None:
    """Lazy items wait up to LAZY_S, less when the commits measured lately would not land
    within the 50 ms bound after it; never below zero."""
    from shepherd.core.store.db import HOLD_MARGIN_S, LAZY_S, MAX_WAIT_S, hold_s

    assert hold_s(LAZY_S, MAX_WAIT_S, 0.0) == min(LAZY_S, MAX_WAIT_S - HOLD_MARGIN_S)
    assert LAZY_S + HOLD_MARGIN_S <= MAX_WAIT_S
    for commit_s in (0.001, 0.004, 0.008, 0.015, 0.03, 0.2):
        hold = hold_s(LAZY_S, MAX_WAIT_S, commit_s)
        assert 0.0 <= hold <= LAZY_S
        assert hold == 0.0 or hold + 2 * commit_s <= MAX_WAIT_S + 1e-12
    assert hold_s(LAZY_S, MAX_WAIT_S, 0.015) < hold_s(LAZY_S, MAX_WAIT_S, 0.004)


async def test_the_writer_measures_its_commits_for_the_hold(store: Store) -> None:
    await store.append(SessionStarted(session_id="m"))
    first = store.commit_s
    assert first > 0.0
    for i in range(5):
        await store.append(TextDelta(session_id="m", text=str(i)))
    assert store.commit_s > 0.0 and store.stats.batches >= 6
