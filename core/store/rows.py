"""The rows a store's queries return: one frozen dataclass per derived table (sessions,
subtasks, tool calls, commands), and how each is built from a database row (anything that
maps column names to values: ``sqlite3.Row`` here, a dict row elsewhere)."""

from __future__ import annotations

import json
from shepherd.core.records import record
from typing import Any


@record(frozen=True)
class SessionRow:
    id: str
    title: str
    backend: str
    model: str | None
    workspace: str
    status: str  # running | paused | waiting | stuck | done | failed | cancelled | interrupted
    started_at: float
    updated_at: float
    ended_at: float | None
    last_seq: int
    subtasks_total: int
    subtasks_done: int
    retries: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    task: dict[str, Any]
    last_event_ts: float | None = None
    needs: str | None = None  # approval | stuck | None: what the session waits for from a person
    needs_since: float | None = None
    needs_detail: str = ""  # the tool and an input preview, or the stuck reason
    # (core.store.costs) whether any usage reported a cost, and the part of the totals that
    # went on attempts that failed or were retried ("retry waste", core.stats' rules)
    cost_known: bool = False
    waste_input_tokens: int = 0
    waste_output_tokens: int = 0
    waste_cost_usd: float = 0.0


@record(frozen=True)
class SubtaskRow:
    session_id: str
    id: str
    title: str
    position: int
    phase: str
    status: str  # pending | running | waiting_retry | paused | done | failed | stuck | skipped | cancelled
    attempts: int
    retries: int
    started_at: float | None
    finished_at: float | None
    reason: str
    last_error_kind: str | None


@record(frozen=True)
class ToolCallRow:
    session_id: str
    call_id: str
    subtask_id: str | None
    attempt: int | None
    name: str
    input: dict[str, Any]
    status: str  # awaiting (an approval) | running | ok | error | denied | interrupted
    output: str
    started_at: float
    finished_at: float | None
    duration_s: float | None
    started_seq: int
    finished_seq: int | None


@record(frozen=True)
class CommandRow:
    id: int
    session_id: str
    command: str
    subtask_id: str | None
    text: str
    source: str
    created_at: float
    call_id: str | None = None  # approve / deny: the call answered (None: the oldest pending)


@record(frozen=True)
class ApprovalRow:
    """A gated tool call's approval (table ``approvals``, derived from approval.requested /
    approval.decided / tool.finished). Pending: not decided and not closed."""

    session_id: str
    call_id: str
    subtask_id: str | None
    attempt: int | None
    tool: str
    input: dict[str, Any]
    reask_of: str | None
    requested_seq: int
    requested_at: float
    decision: str | None  # approved | denied | None (pending, or closed unanswered)
    source: str | None  # tui | cli | rule | headless
    reason: str
    scope: str  # call | session
    decided_seq: int | None
    closed: bool  # finished without an answer (withdrawn, cancelled, skipped)

    @property
    def pending(self) -> bool:
        return self.decided_seq is None and not self.closed


@record(frozen=True)
class WorktreeRow:
    """A worktree session's worktree (table ``worktrees``, from its latest ``worktree``
    event; fields as ``core.events.WorktreeChanged``). ``state``: active | merged |
    discarded | gone."""

    session_id: str
    path: str
    branch: str
    origin: str
    repo: str
    workspace: str
    base_commit: str
    base_branch: str | None
    state: str
    commit: str | None
    updated_seq: int
    updated_at: float

    @property
    def active(self) -> bool:
        return self.state == "active"


def worktree_row(r: Any) -> WorktreeRow:
    return WorktreeRow(
        session_id=r["session_id"], path=r["path"], branch=r["branch"], origin=r["origin"], repo=r["repo"],
        workspace=r["workspace"], base_commit=r["base_commit"], base_branch=r["base_branch"], state=r["state"],
        commit=r["commit_id"], updated_seq=r["updated_seq"], updated_at=r["updated_at"])


def _json(text: str | None) -> Any:
    """A stored JSON value, or {} for a missing or damaged one."""
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {}


def session_row(r: Any) -> SessionRow:
    task = _json(r["task_json"])
    return SessionRow(
        id=r["id"], title=r["title"], backend=r["backend"], model=r["model"],
        workspace=r["workspace"], status=r["status"], started_at=r["started_at"],
        updated_at=r["updated_at"], ended_at=r["ended_at"], last_seq=r["last_seq"],
        subtasks_total=r["subtasks_total"], subtasks_done=r["subtasks_done"],
        retries=r["retries"], input_tokens=r["input_tokens"], output_tokens=r["output_tokens"],
        cost_usd=r["cost_usd"], task=task if isinstance(task, dict) else {},
        last_event_ts=r["last_event_ts"], needs=r["needs"], needs_since=r["needs_since"],
        needs_detail=r["needs_detail"] or "", cost_known=bool(r["cost_known"]),
        waste_input_tokens=r["waste_input_tokens"], waste_output_tokens=r["waste_output_tokens"],
        waste_cost_usd=r["waste_cost_usd"])


def subtask_row(r: Any) -> SubtaskRow:
    return SubtaskRow(
        session_id=r["session_id"], id=r["id"], title=r["title"], position=r["position"],
        phase=r["phase"], status=r["status"], attempts=r["attempts"], retries=r["retries"],
        started_at=r["started_at"], finished_at=r["finished_at"], reason=r["reason"],
        last_error_kind=r["last_error_kind"])


def tool_call_row(r: Any) -> ToolCallRow:
    return ToolCallRow(
        session_id=r["session_id"], call_id=r["call_id"], subtask_id=r["subtask_id"],
        attempt=r["attempt"], name=r["name"], input=_json(r["input_json"]), status=r["status"],
        output=r["output"], started_at=r["started_at"], finished_at=r["finished_at"],
        duration_s=r["duration_s"], started_seq=r["started_seq"], finished_seq=r["finished_seq"])


def command_row(r: Any) -> CommandRow:
    return CommandRow(id=r["id"], session_id=r["session_id"], command=r["command"],
                      subtask_id=r["subtask_id"], text=r["text"], source=r["source"],
                      created_at=r["created_at"], call_id=r["call_id"])


def approval_row(r: Any) -> ApprovalRow:
    value = _json(r["input_json"])
    return ApprovalRow(
        session_id=r["session_id"], call_id=r["call_id"], subtask_id=r["subtask_id"], attempt=r["attempt"],
        tool=r["tool"], input=value if isinstance(value, dict) else {}, reask_of=r["reask_of"],
        requested_seq=r["requested_seq"], requested_at=r["requested_at"], decision=r["decision"],
        source=r["source"], reason=r["reason"] or "", scope=r["scope"] or "call", decided_seq=r["decided_seq"],
        closed=bool(r["closed"]))


__all__ = ["ApprovalRow", "approval_row", "CommandRow", "SessionRow", "SubtaskRow", "ToolCallRow", "command_row", "session_row",
           "subtask_row", "tool_call_row"]
