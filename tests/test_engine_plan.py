"""plan = true: a planning attempt writes the subtasks; its retries stay in planning."""

from __future__ import annotations

import json
from pathlib import Path

from shepherd.core.engine import Supervisor
from shepherd.core.store import Store
from tests.engine_helpers import FAST, stored
from shepherd.core.task import task_from_dict

PLAN = [{"id": "a", "title": "First part", "prompt": "Do the first part."},
        {"id": "b", "title": "Second part", "prompt": "Do the second part."}]


async def test_planning_retries_stay_in_planning_then_the_plan_runs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    task = task_from_dict({
        "title": "Planned work", "backend": "scripted", "workspace": str(ws), "plan": True,
        "plan_prompt": "Split the work.",
        "plan_steps": [
            {"fail": "tool_concurrency"},
            {"text": "Here is my plan: do a, then b."},  # no JSON: the plan is refused
            {"text": "```json\n" + json.dumps(PLAN) + "\n```"},
        ],
    }, src="test")
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, task, clock=FAST, interactive=False)
        assert await sup.run() == "done"
        sid = sup.session_id
        subs = [(s.id, s.status) for s in await store.subtasks(sid)]
        assert subs == [("plan", "done"), ("a", "done"), ("b", "done")]
        attempts = [(a.subtask_id, a.reason) for a in await stored(store, sid, "attempt.started")]
        assert attempts == [("plan", "first"), ("plan", "retry"), ("plan", "retry"), ("a", "first"), ("b", "first")]
        errors = [e.kind for e in await stored(store, sid, "error")]
        assert errors == ["tool_concurrency", "check_failed"]
        extras = [a.prompt_extra for a in await stored(store, sid, "attempt.started") if a.subtask_id == "plan"]
        assert "one tool at a time" in extras[1].lower()
        assert "json" in extras[2].lower()
        # the tool-concurrency counter did not carry over into the plan-format retry
        retries = await stored(store, sid, "retry.scheduled")
        assert [(r.kind, r.retry_no) for r in retries] == [("tool_concurrency", 1), ("check_failed", 1)]
        started = [s for s in await stored(store, sid, "subtask.started") if s.subtask_id == "plan"]
        assert {s.phase for s in started} == {"planning"}
    finally:
        await store.close()
