"""What each event changes in the derived tables: one handler per event type, given the
batch's working rows (``derive._Batch``: sessions, subtasks, tool calls, approvals, as
dicts) and marking what it changed. Pure Python over those rows: ``derive.write_events``
reads and writes them, inside the events' transaction."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shepherd.core.store.derive import _Batch

# Subtask ends that close its calls still awaiting an answer (a stuck or failed one keeps
# them: a person's retry or a resume asks them again).
CLOSING_ENDS = frozenset({"done", "skipped", "cancelled"})
LIVE_SUBTASK = frozenset({"running", "waiting_retry", "waiting_approval", "paused"})
# the same options as Event.to_json
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)

def _set_running(s: dict[str, Any]) -> None:
    s["status"] = "running"
    s["ended_at"] = None


# --- one handler per event type that changes derived rows ------------------------------


def _on_session_started(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    s.update(title=ev.title, backend=ev.backend, model=ev.model, workspace=ev.workspace,
             task_json=_ENCODER.encode(ev.task))
    _set_running(s)


def _on_plan_ready(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    sid = ev.session_id
    in_plan: set[str] = set()
    for position, spec in enumerate(ev.subtasks):
        sub_id = str(spec.get("id", "")) if isinstance(spec, dict) else str(spec)
        if not sub_id or sub_id in in_plan:
            continue
        in_plan.add(sub_id)
        row = b.subtask(sid, sub_id, ev.ts)
        row["position"] = position
        row["planned"] = 1
        if isinstance(spec, dict) and spec.get("title"):
            row["title"] = str(spec["title"])
    # A new plan replaces the old one: drop rows that never started, demote the rest.
    for sub_id, row in list(b.subtasks.get(sid, {}).items()):
        if sub_id in in_plan or not row["planned"]:
            continue
        if row["status"] == "pending":
            del b.subtasks[sid][sub_id]
            b.deleted_subtasks.add((sid, sub_id))
            b.dirty_subtasks.discard((sid, sub_id))
        else:
            row["planned"] = 0
            b.dirty_subtasks.add((sid, sub_id))
    b.subtasks.setdefault(sid, {})


def _run_subtask(b: _Batch, s: dict[str, Any], ev: Any) -> dict[str, Any] | None:
    """The session and the event's subtask are running again: the subtask's row (None
    for an event of no subtask)."""
    _set_running(s)
    if not ev.subtask_id:
        return None
    row = b.subtask(ev.session_id, ev.subtask_id, ev.ts)
    row["status"] = "running"
    if row["started_at"] is None:
        row["started_at"] = ev.ts
    row["finished_at"] = None
    return row


def _on_subtask_started(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    row = _run_subtask(b, s, ev)
    if row is None:
        return
    row["phase"] = ev.phase or row["phase"]
    if ev.title:
        row["title"] = ev.title
    row["reason"] = ""


def _on_attempt_started(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    row = _run_subtask(b, s, ev)
    if row is not None:
        row["attempts"] += 1


def _on_retry_scheduled(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    s["retries"] += 1
    if s["status"] == "running":
        s["status"] = "waiting"  # a retry countdown; the next attempt.started makes it running
    if ev.subtask_id:
        row = b.subtask(ev.session_id, ev.subtask_id, ev.ts)
        row["status"] = "waiting_retry"
        row["retries"] += 1


def _on_error(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    if ev.subtask_id:
        b.subtask(ev.session_id, ev.subtask_id, ev.ts)["last_error_kind"] = ev.kind


def _on_subtask_finished(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    if ev.subtask_id:
        row = b.subtask(ev.session_id, ev.subtask_id, ev.ts)
        row["status"] = ev.status
        row["reason"] = ev.reason
        row["finished_at"] = ev.ts
        if ev.status in CLOSING_ENDS:  # nothing of it will be asked again
            for (sid, cid), a in list(b.approvals.items()):
                if sid == ev.session_id and a["subtask_id"] == ev.subtask_id:
                    b.close_approval(sid, cid)
            b.state_subtasks.add((ev.session_id, ev.subtask_id))
    if ev.status == "stuck":
        s["status"] = "stuck"  # waiting for a person


def _on_session_paused(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    s["status"] = "paused"
    b.set_subtasks_where(ev.session_id, frozenset({"running"}), "paused")


def _on_session_resumed(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    _set_running(s)
    b.set_subtasks_where(ev.session_id, frozenset({"paused"}), "running")


def _on_session_finished(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    s["status"] = ev.status
    s["ended_at"] = ev.ts


def _on_session_interrupted(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    s["status"] = "interrupted"
    s["ended_at"] = ev.ts
    b.set_subtasks_where(ev.session_id, LIVE_SUBTASK, "interrupted")


def _on_tool_started(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    key = (ev.session_id, ev.call_id)
    row = b.calls.get(key)
    input_json = _ENCODER.encode(ev.input)
    if row is None:  # (a repeated start of a running call keeps its first seq and time)
        row = {"session_id": ev.session_id, "call_id": ev.call_id, "output": "",
               "started_at": ev.ts, "finished_at": None, "duration_s": None,
               "started_seq": ev.seq, "finished_seq": None, "status": "running"}
        b.calls[key] = row
    row.update(subtask_id=ev.subtask_id, attempt=ev.attempt, name=ev.name, input_json=input_json)
    b.dirty_calls.add(key)


def _on_tool_finished(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    key = (ev.session_id, ev.call_id)
    row = b.calls.get(key)
    if row is None:  # finished without a recorded start (e.g. denied before it ran)
        row = {"session_id": ev.session_id, "call_id": ev.call_id, "subtask_id": ev.subtask_id,
               "attempt": ev.attempt, "name": "", "input_json": "{}", "started_at": ev.ts,
               "started_seq": ev.seq}
        b.calls[key] = row
    row.update(status=ev.status, output=ev.output, duration_s=ev.duration_s,
               finished_at=ev.ts, finished_seq=ev.seq)
    b.dirty_calls.add(key)
    b.close_approval(ev.session_id, ev.call_id)  # finished without an answer (withdrawn, cancelled)


def _on_approval_requested(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    key = (ev.session_id, ev.call_id)
    row = b.approvals.get(key)
    if row is None or row["decided_seq"] is not None or row["closed"]:
        row = {"session_id": ev.session_id, "call_id": ev.call_id, "decision": None, "source": None,
               "reason": "", "scope": "call", "decided_seq": None, "closed": 0}
        b.approvals[key] = row
    # (asked again with the same id after a resume: the same row, asked anew)
    row.update(subtask_id=ev.subtask_id, attempt=ev.attempt, tool=ev.tool, input_json=_ENCODER.encode(ev.input),
               reask_of=ev.reask_of, requested_seq=ev.seq, requested_at=ev.ts)
    b.dirty_approvals.add(key)
    call = b.calls.get(key)
    if call is not None and call["status"] == "running":
        call["status"] = "awaiting"
        b.dirty_calls.add(key)


def _on_approval_decided(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    key = (ev.session_id, ev.call_id)
    row = b.approvals.get(key)
    if row is None:  # decided without a stored request: keep the answer anyway
        row = {"session_id": ev.session_id, "call_id": ev.call_id, "subtask_id": ev.subtask_id,
               "attempt": ev.attempt, "tool": "", "input_json": "{}", "reask_of": None,
               "requested_seq": ev.seq, "requested_at": ev.ts, "closed": 0}
        b.approvals[key] = row
    elif row["decided_seq"] is not None:  # the first answer wins (the engine drops later ones)
        return
    row.update(decision=ev.decision, source=ev.source, reason=ev.reason, scope=ev.scope, decided_seq=ev.seq)
    b.dirty_approvals.add(key)
    if row["subtask_id"]:
        b.state_subtasks.add((ev.session_id, row["subtask_id"]))
    call = b.calls.get(key)
    if call is not None and call["status"] == "awaiting":
        call["status"] = "running"  # approved: it runs; denied: its tool.finished(denied) follows
        b.dirty_calls.add(key)


# a worktree event's action -> the state of the session's worktrees row
WORKTREE_STATES = {"created": "active", "reused": "active", "recreated": "active", "merged": "merged",
                   "discarded": "discarded", "missing": "gone"}


def _on_worktree(b: _Batch, s: dict[str, Any], ev: Any) -> None:
    """Every worktree event carries the whole identity: the row is the latest one's."""
    b.worktrees[ev.session_id] = {
        "session_id": ev.session_id, "path": ev.path, "branch": ev.branch, "origin": ev.origin,
        "repo": ev.repo, "workspace": ev.workspace or ev.path, "base_commit": ev.base_commit,
        "base_branch": ev.base_branch, "state": WORKTREE_STATES.get(ev.action, "active"),
        "commit_id": ev.commit, "updated_seq": ev.seq, "updated_at": ev.ts}


HANDLERS = {
    "session.started": _on_session_started,
    "plan.ready": _on_plan_ready,
    "subtask.started": _on_subtask_started,
    "attempt.started": _on_attempt_started,
    "retry.scheduled": _on_retry_scheduled,
    "error": _on_error,
    "subtask.finished": _on_subtask_finished,
    "session.paused": _on_session_paused,
    "session.resumed": _on_session_resumed,
    "session.finished": _on_session_finished,
    "session.interrupted": _on_session_interrupted,
    # (usage: the session's tokens and cost come from its cost ledger, core.store.costs)
    "tool.started": _on_tool_started,
    "tool.finished": _on_tool_finished,
    "approval.requested": _on_approval_requested,
    "approval.decided": _on_approval_decided,
    "worktree": _on_worktree,
}
