"""core.stats (tokens, cost and retry waste per attempt, subtask, session, day) on both
stores, and `shepherd stats` (text, chart, --json, a bad --since)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.events import (AttemptStarted, Error, RetryScheduled, SessionFinished, SessionStarted,
                                  SubtaskFinished, SubtaskStarted, Usage)
from shepherd.core.stats import parse_since, session_costs, stats
from shepherd.core.store import open_store
from shepherd.tui.cli_stats import render_text
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)

DAY1 = datetime(2026, 11, 2, 10, tzinfo=timezone.utc).timestamp()
DAY2 = datetime(2026, 11, 3, 10, tzinfo=timezone.utc).timestamp()


async def write_session(store: Any, sid: str, ts: float, backend: str = "claude", model: str = "opus") -> None:
    """s1 fails once (error, retried: 100+10 tokens wasted), then succeeds (200+20); a
    planning usage (no subtask: 5+5) is never waste; s2 ends in an error (30+3 wasted)."""
    evs = [
        SessionStarted(session_id=sid, title="t", backend=backend, model=model, ts=ts),
        Usage(session_id=sid, input_tokens=5, output_tokens=5, cost_usd=0.01, ts=ts),
        SubtaskStarted(session_id=sid, subtask_id="s1", ts=ts),
        AttemptStarted(session_id=sid, subtask_id="s1", attempt=1, ts=ts),
        Usage(session_id=sid, subtask_id="s1", attempt=1, input_tokens=100, output_tokens=10, cost_usd=0.5, ts=ts),
        Error(session_id=sid, subtask_id="s1", attempt=1, kind="rate_limit", retryable=True, ts=ts),
        RetryScheduled(session_id=sid, subtask_id="s1", attempt=1, kind="rate_limit", ts=ts),
        AttemptStarted(session_id=sid, subtask_id="s1", attempt=2, reason="retry", ts=ts + 1),
        Usage(session_id=sid, subtask_id="s1", attempt=2, input_tokens=200, output_tokens=20, cost_usd=1.0, ts=ts + 1),
        SubtaskFinished(session_id=sid, subtask_id="s1", attempt=2, status="done", ts=ts + 2),
        SubtaskStarted(session_id=sid, subtask_id="s2", ts=ts + 2),
        AttemptStarted(session_id=sid, subtask_id="s2", attempt=1, ts=ts + 2),
        Usage(session_id=sid, subtask_id="s2", attempt=1, input_tokens=30, output_tokens=3, cost_usd=0.25, ts=ts + 2),
        Error(session_id=sid, subtask_id="s2", attempt=1, kind="api", ts=ts + 3),
        SubtaskFinished(session_id=sid, subtask_id="s2", attempt=1, status="failed", ts=ts + 3),
        SessionFinished(session_id=sid, status="failed", ts=ts + 3),
    ]
    for ev in evs:
        await store.append(ev)


async def test_session_costs_count_failed_attempts_as_waste(store_target: Any) -> None:
    store = await open_store(store_target)
    try:
        await write_session(store, "a", DAY1)
        costs = await session_costs(store, "a")
    finally:
        await store.close()
    assert (costs.backend, costs.model) == ("claude", "opus")
    assert (costs.total.input_tokens, costs.total.output_tokens) == (335, 38)
    assert costs.total.cost_usd == pytest.approx(1.76)
    assert (costs.waste.input_tokens, costs.waste.output_tokens) == (130, 13)
    assert costs.waste.cost_usd == pytest.approx(0.75)
    wasted = {(a.subtask_id, a.attempt): a.wasted for a in costs.attempts}
    assert wasted == {(None, None): False, ("s1", 1): True, ("s1", 2): False, ("s2", 1): True}
    sub = costs.subtasks()
    assert sub["s1"][0].tokens == 330 and sub["s1"][1].tokens == 110
    assert sub["s2"][1].tokens == 33


async def test_stats_by_day_backend_model_with_since(store_target: Any) -> None:
    store = await open_store(store_target)
    try:
        await write_session(store, "a", DAY1)
        await write_session(store, "b", DAY2)
        await write_session(store, "c", DAY2, backend="openai", model="gpt")
        rows = await stats(store)
        recent = await stats(store, since=DAY2 - 3600)
    finally:
        await store.close()
    keys = [(r.day, r.backend, r.model, r.sessions) for r in rows]
    assert keys == [("2026-11-02", "claude", "opus", 1), ("2026-11-03", "claude", "opus", 1),
                    ("2026-11-03", "openai", "gpt", 1)]
    r = rows[0]
    assert (r.input_tokens, r.output_tokens, r.waste_input_tokens, r.waste_output_tokens, r.attempts) == \
        (335, 38, 130, 13, 3)
    assert r.waste_cost_usd == pytest.approx(0.75)
    assert [x.day for x in recent] == ["2026-11-03", "2026-11-03"]


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("24h", now) == now - 86400
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()
    for bad in ("", "7", "d7", "7w", "2026-13-01", "-3d"):
        with pytest.raises(ValueError):
            parse_since(bad, now)


async def _db_with_sessions(tmp_path: Path) -> Path:
    db = tmp_path / "s.db"
    store = await open_store(db)
    try:
        await write_session(store, "a", DAY1)
        await write_session(store, "b", DAY2, backend="openai", model="gpt")
    finally:
        await store.close()
    return db


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shepherd.tui.cli", *args], capture_output=True, text=True,
                          timeout=60)


async def test_cli_stats_text_and_json(tmp_path: Path) -> None:
    db = await _db_with_sessions(tmp_path)
    text = _cli("stats", "--db", str(db))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["day", "backend", "model"]
    assert lines[1].split()[:4] == ["2026-11-02", "claude", "opus", "1"]
    assert lines[2].split()[:4] == ["2026-11-03", "openai", "gpt", "1"]
    assert "retry waste 286 tokens" in text.stdout
    assert "█" not in text.stdout  # not a terminal: no chart
    js = _cli("stats", "--db", str(db), "--json", "--since", "2026-11-03")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert [(r["day"], r["backend"], r["waste_input_tokens"]) for r in data["rows"]] == [("2026-11-03", "openai", 130)]
    bad = _cli("stats", "--db", str(db), "--since", "last week")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "--since" in bad.stderr


async def test_chart_has_a_bar_per_day_with_the_waste(store_target: Any) -> None:
    store = await open_store(store_target)
    try:
        await write_session(store, "a", DAY1)
        await write_session(store, "b", DAY2)
        await write_session(store, "c", DAY2)
        rows = await stats(store)
    finally:
        await store.close()
    lines = render_text(rows, chart=True)
    bars = [line for line in lines if line.startswith("2026-11-0") and ("█" in line or "░" in line)]
    assert len(bars) == 2
    assert bars[1].count("█") > bars[0].count("█")  # day 2 spent twice as much
    assert all("░" in b for b in bars)


async def test_stats_stays_quick_on_many_sessions(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    store = await open_store(db)
    n = 2000
    try:
        for i in range(n):
            sid = f"s{i:05d}"
            for ev in (SessionStarted(session_id=sid, backend="claude", model="m", ts=DAY1 + i),
                       AttemptStarted(session_id=sid, subtask_id="x", attempt=1, ts=DAY1 + i),
                       Usage(session_id=sid, subtask_id="x", attempt=1, input_tokens=10, output_tokens=1,
                             ts=DAY1 + i)):
                store.submit(ev)
        await store.flush()
        t0 = time.perf_counter()
        rows = await stats(store)
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    assert sum(r.sessions for r in rows) == n
    assert sum(r.input_tokens for r in rows) == 10 * n
    assert elapsed < 10, elapsed  # ~1 ms a session; the bench measures 10k
