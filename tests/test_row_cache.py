"""The writer's row cache (core.store.row_cache): a turn's commit reads no derived table but
the session's row, and what it keeps is never taken for the file's: another connection's
write, a batch that did not commit, a session this writer did not see begin."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.clock import FakeClock
from shepherd.core.events import AttemptStarted, SessionStarted, SubtaskStarted, ToolFinished, ToolStarted, Usage
from shepherd.core.store import Store
from shepherd.core.store.derive import write_events
from shepherd.core.store.row_cache import RowCache

DERIVED = ("subtasks", "tool_calls", "approvals", "attempt_costs")


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = await Store.open(tmp_path / "shepherd.db", clock=FakeClock())
    yield s
    await s.close()


def _derived(path: Path, sid: str) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(str(path)) as conn:
        out = {t: conn.execute(f"SELECT * FROM {t} WHERE session_id = ? ORDER BY 2", (sid,)).fetchall()
               for t in DERIVED}
        out["sessions"] = conn.execute(
            "SELECT status, last_seq, subtasks_total, input_tokens, output_tokens FROM sessions WHERE id = ?",
            (sid,)).fetchall()
    conn.close()
    return out


def _turn(sid: str, n: int) -> list[Any]:
    return [ToolStarted(session_id=sid, subtask_id="a", attempt=1, call_id=f"c{n}", name="edit_file"),
            ToolFinished(session_id=sid, subtask_id="a", attempt=1, call_id=f"c{n}", output="ok"),
            Usage(session_id=sid, subtask_id="a", attempt=1, input_tokens=10, output_tokens=n)]


async def _begin(store: Store, sid: str) -> None:
    await store.append(SessionStarted(session_id=sid, title="t"))
    await store.append_together(SubtaskStarted(session_id=sid, subtask_id="a", title="A"),
                                AttemptStarted(session_id=sid, subtask_id="a", attempt=1))


async def test_a_turns_commit_reads_no_derived_table_but_the_sessions_row(store: Store) -> None:
    await _begin(store, "s")
    await store.append_together(*_turn("s", 1))
    seen: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(seen.append)

    await store.run_rows(trace)
    await store.append_together(*_turn("s", 2))
    await store.run_rows(lambda conn: conn.set_trace_callback(None))
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert any("FROM sessions" in s for s in reads)
    assert not [s for s in reads if any(f"FROM {t}" in s for t in DERIVED)], reads
    assert store.row_cache.hits >= 2


async def test_the_cached_writer_derives_what_a_writer_reading_every_row_derives(tmp_path: Path) -> None:
    cached = await Store.open(tmp_path / "cached.db", clock=FakeClock())
    plain = await Store.open(tmp_path / "plain.db", clock=FakeClock())
    plain.row_cache = None  # type: ignore[assignment]  # (write_events reads every row)
    try:
        for st in (cached, plain):
            await _begin(st, "s")
            for n in range(1, 6):
                await st.append_together(*_turn("s", n))
            await st.append(ToolFinished(session_id="s", subtask_id="a", attempt=1, call_id="c3", output="again"))
            await st.append(ToolStarted(session_id="s", subtask_id="a", attempt=1, call_id="c9", name="bash"))
        assert cached.row_cache.hits > 5
        assert _derived(cached.path, "s") == _derived(plain.path, "s")
        assert cached.stats.dropped == plain.stats.dropped == 1  # the repeated finish of c3
    finally:
        await cached.close()
        await plain.close()


async def test_another_connections_write_of_the_session_is_seen(store: Store) -> None:
    """A recovery in another process finishes the open call: this writer's cache still
    says it runs, and must not be believed (its finish is then a duplicate)."""
    await _begin(store, "s")
    await store.append(ToolStarted(session_id="s", subtask_id="a", attempt=1, call_id="c1", name="bash"))
    other = sqlite3.connect(str(store.path), isolation_level=None)
    other.row_factory = sqlite3.Row
    other.execute("BEGIN IMMEDIATE")
    write_events(other, [ToolFinished(session_id="s", subtask_id="a", attempt=1, call_id="c1",
                                      status="interrupted", output="recovered", ts=1.0)], 1.0)
    other.execute("COMMIT")
    other.close()
    late = await store.append(ToolFinished(session_id="s", subtask_id="a", attempt=1, call_id="c1", output="ok"))
    assert late is None  # dropped: the call had already finished
    rows = _derived(store.path, "s")
    assert [(r[6], r[7]) for r in rows["tool_calls"]] == [("interrupted", "recovered")]
    seqs = [r[0] for r in sqlite3.connect(str(store.path)).execute(
        "SELECT seq FROM events WHERE session_id = 's' ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_batch_that_did_not_commit_leaves_nothing_believed(store: Store) -> None:
    await _begin(store, "s")
    await store.append(ToolStarted(session_id="s", subtask_id="a", attempt=1, call_id="c1", name="bash"))

    def end_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # (as a full disk or an I/O error would)
        raise sqlite3.OperationalError("disk I/O error")

    finished = store.submit(ToolFinished(session_id="s", subtask_id="a", attempt=1, call_id="c1", output="lost"))
    failed = store.submit_rows(end_the_transaction, atomic=True)
    for fut in (finished, failed):
        with pytest.raises(Exception):
            await fut
    again = await store.append(ToolFinished(session_id="s", subtask_id="a", attempt=1, call_id="c1", output="ok"))
    assert again is not None  # the lost finish was never stored: this one is
    rows = _derived(store.path, "s")
    assert [(r[6], r[7]) for r in rows["tool_calls"]] == [("ok", "ok")]
    assert rows["sessions"][0][1] == again.seq


async def test_a_session_begun_elsewhere_is_read_until_this_writer_holds_its_rows(tmp_path: Path) -> None:
    """Resumed by this process: its first batch reads the rows; a call that finished
    before is a duplicate whatever the cache has not seen."""
    first = await Store.open(tmp_path / "shepherd.db", clock=FakeClock())
    await _begin(first, "s")
    await first.append_together(*_turn("s", 1))
    await first.close()
    second = await Store.open(tmp_path / "shepherd.db", clock=FakeClock(), recover=False)
    try:
        dup = await second.append(ToolFinished(session_id="s", subtask_id="a", attempt=1, call_id="c1", output="x"))
        assert dup is None
        await second.append_together(*_turn("s", 2))
        dup2 = await second.append(ToolFinished(session_id="s", subtask_id="a", attempt=1, call_id="c1", output="y"))
        assert dup2 is None
        rows = _derived(second.path, "s")
        assert [r[1] for r in rows["tool_calls"]] == ["c1", "c2"]
        assert rows["sessions"][0][4] == 1 + 2  # both turns' usage, the first read from the file
    finally:
        await second.close()


def test_the_cache_holds_a_bounded_number_of_sessions() -> None:
    from shepherd.core.store.row_cache import MAX_SESSIONS, Entry

    cache = RowCache()
    for i in range(MAX_SESSIONS + 10):
        cache.put(f"s{i}", Entry(), {"last_seq": 1, "updated_at": 1.0})
    assert len(cache) == MAX_SESSIONS
    assert cache.take("s0", {"last_seq": 1, "updated_at": 1.0}) is None  # the oldest went first
    assert cache.take(f"s{MAX_SESSIONS + 9}", {"last_seq": 1, "updated_at": 1.0}) is not None
    assert cache.take(f"s{MAX_SESSIONS + 8}", {"last_seq": 2, "updated_at": 1.0}) is None


async def test_an_ended_session_is_forgotten(store: Store) -> None:
    from shepherd.core.events import SessionFinished

    await _begin(store, "s")
    await store.append_together(*_turn("s", 1))
    assert len(store.row_cache) == 1
    await store.append(SessionFinished(session_id="s", status="done"))
    assert len(store.row_cache) == 0
