"""The fault matrix: for each error kind, a scripted scenario on the real openai-agents
Runner (scripted model, real tools, real SQLite) and the asserted outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shepherd.core.engine import Supervisor
from shepherd.core.store import Store
from tests.engine_helpers import FAST, make_task, stored

PROMPT = "Do the thing in this workspace."


async def run_steps(tmp_path: Path, steps: list[dict[str, Any]], *, interactive: bool = False,
                    check: str | None = None, **task_extra: Any) -> tuple[Store, str, str]:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (ws / "a.txt").write_text("alpha\n")
    sub: dict[str, Any] = {"id": "t1", "title": "Thing", "prompt": PROMPT, "steps": steps}
    if check:
        sub["check"] = check
    task = make_task(ws, [sub], **task_extra)
    store = await Store.open(tmp_path / "s.db")
    sup = Supervisor(store, task, clock=FAST, interactive=interactive)
    status = await sup.run()
    return store, sup.session_id, status


def fail(kind: str, **kw: Any) -> dict[str, Any]:
    return {"fail": kind, **kw}


OK = {"text": "All done."}

# kind -> (steps, expected session status, subtask status, attempts, nominal delays, actions)
MATRIX: dict[str, tuple[list[dict[str, Any]], str, str, int, list[float], list[str]]] = {
    "tool_concurrency": ([fail("tool_concurrency"), fail("tool_concurrency"), OK], "done", "done", 3, [2, 4], ["retry", "repair"]),
    "rate_limit": ([fail("rate_limit", retry_after=7), fail("rate_limit"), OK], "done", "done", 3, [7, 10], ["retry", "retry"]),
    "auth": ([fail("auth"), OK], "failed", "failed", 1, [], []),
    "context_overflow": ([fail("context_overflow"), OK], "failed", "failed", 1, [], []),
    "content_policy": ([fail("content_policy"), OK], "failed", "failed", 1, [], []),
    "images_rejected": ([fail("images_rejected"), fail("images_rejected"), OK], "failed", "stuck", 2, [0], None),
    "transient": ([fail("transient"), fail("transient"), OK], "done", "done", 3, [2, 4], ["retry", "retry"]),
    "stream_broken": ([{"text": "one two three four five six", "fail": "stream_broken", "after_deltas": 3}, OK],
                      "done", "done", 2, [1], ["restart"]),
    "invalid_request": ([fail("invalid_request"), OK], "failed", "failed", 1, [], []),
    "max_turns": ([fail("max_turns"), OK], "failed", "failed", 1, [], []),
    "unknown": ([fail("unknown"), fail("unknown"), fail("unknown"), OK], "failed", "stuck", 3, [3, 3], ["retry", "retry"]),
}


@pytest.mark.parametrize("kind", sorted(MATRIX))
async def test_fault_matrix(tmp_path: Path, kind: str) -> None:
    steps, session_status, sub_status, attempts, delays, actions = MATRIX[kind]
    store, sid, status = await run_steps(tmp_path, steps)
    try:
        assert status == session_status
        sub = (await store.subtasks(sid))[0]
        assert sub.status == sub_status
        assert sub.attempts == attempts
        retries = await stored(store, sid, "retry.scheduled")
        if kind != "images_rejected":
            assert [r.delay_s for r in retries] == delays
        else:
            assert len(retries) == 1 and retries[0].kind == "images_rejected"
        if actions is not None:
            assert [r.action for r in retries] == actions
        errors = await stored(store, sid, "error")
        assert errors and all(e.kind == kind for e in errors)
        # no tool call is left open, whatever happened
        assert not await store.tool_calls(sid, status="running")
        # the user's prompt went into the conversation exactly once
        from shepherd.core.store import open_agents_session

        items = await open_agents_session(store.path, f"{sid}:t1").get_items()
        user_turns = [i for i in items if i.get("role") == "user" and PROMPT in str(i.get("content"))]
        assert len(user_turns) == 1
    finally:
        await store.close()


async def test_retry_context_reaches_next_attempt(tmp_path: Path) -> None:
    store, sid, status = await run_steps(tmp_path, [fail("tool_concurrency"), OK])
    try:
        assert status == "done"
        attempts = await stored(store, sid, "attempt.started")
        assert [a.reason for a in attempts] == ["first", "retry"]
        assert attempts[0].prompt_extra == ""
        assert "one tool at a time" in attempts[1].prompt_extra.lower()
    finally:
        await store.close()


async def test_tool_concurrency_budget_exhausted_is_stuck(tmp_path: Path) -> None:
    store, sid, status = await run_steps(tmp_path, [fail("tool_concurrency")] * 7)
    try:
        assert status == "failed"  # headless: stuck ends the session failed
        retries = await stored(store, sid, "retry.scheduled")
        assert [r.delay_s for r in retries] == [2, 4, 8, 16, 32]
        assert [r.retry_no for r in retries] == [1, 2, 3, 4, 5]
        sub = (await store.subtasks(sid))[0]
        assert sub.status == "stuck" and sub.attempts == 6
    finally:
        await store.close()


async def test_parallel_tools_and_midstream_restart_keep_history(tmp_path: Path) -> None:
    steps = [
        {"text": "Looking.", "tools": [{"name": "list_files", "args": {"path": "."}},
                                       {"name": "read_file", "args": {"path": "a.txt"}}]},
        {"text": "alpha beta gamma delta", "fail": "stream_broken", "after_deltas": 2},
        OK,
    ]
    store, sid, status = await run_steps(tmp_path, steps)
    try:
        assert status == "done"
        calls = await store.tool_calls(sid)
        assert sorted(c.name for c in calls) == ["list_files", "read_file"]
        assert all(c.status == "ok" for c in calls)
        assert any("alpha" in c.output for c in calls if c.name == "read_file")
        deltas = await stored(store, sid, "text.delta")
        assert deltas, "deltas before the break were stored"
    finally:
        await store.close()


async def test_failing_check_is_retried_with_its_output(tmp_path: Path) -> None:
    # the first attempt leaves the check failing; the second writes the file it wants
    steps = [
        {"text": "first try"},
        {"text": "fixing", "tools": [{"name": "write_file", "args": {"path": "ok.flag", "content": "yes"}}]},
        OK,
    ]
    store, sid, status = await run_steps(tmp_path, steps, check="test -f ok.flag || (echo 'flag missing'; exit 3)")
    try:
        assert status == "done"
        errors = await stored(store, sid, "error")
        assert [e.kind for e in errors] == ["check_failed"]
        attempts = await stored(store, sid, "attempt.started")
        assert len(attempts) == 2
        assert "flag missing" in attempts[1].prompt_extra
        checks = [c for c in await store.tool_calls(sid) if c.name == "check"]
        assert [c.status for c in checks] == ["error", "ok"]
    finally:
        await store.close()


async def test_failing_check_is_bounded(tmp_path: Path) -> None:
    store, sid, status = await run_steps(tmp_path, [OK, OK, OK, OK, OK], check="exit 1", max_check_retries=2)
    try:
        assert status == "failed"
        sub = (await store.subtasks(sid))[0]
        assert sub.status == "stuck"
        assert sub.attempts == 3
    finally:
        await store.close()
