"""PreToolUse / PostToolUse policy for the Claude backend (DESIGN "Supervision: Hooks").

- Background sub-agents (``Task``/``Agent`` with ``run_in_background``) are denied: they
  outlive the turn that started them and die with the attempt. Allowed sub-agents are
  pinned to the foreground (``run_in_background: false``): Claude Code 2.1 launches SDK
  sub-agents asynchronously by default, which would hand back "launched" at once.
- At most ``max_subagents`` sub-agents run at the same time in the session. A slot is
  taken only when every check passed (a denied call uses none) and given back by
  PostToolUse / PostToolUseFailure, or when the call's result reaches the stream.
- File tools stay inside the workspace (Read/Glob/Grep may also read the CLI's own
  scratch and transcript directories, where it parks large tool outputs).
- Tool approvals (``approve_tools``): a gated call that passed every check above is
  answered "ask", which makes the CLI consult the backend's ``can_use_tool`` callback even
  for tools that ``allowed_tools`` or ``acceptEdits`` would let through on their own (the
  callback alone is shadowed by them). A pinned sub-agent keeps its ``updatedInput``.

The denial reason is what the agent sees as the tool's result. Decisions are recorded
here and handed to the stream consumer, which emits them in stream order (a hook runs in
the SDK's reader task and may fire before the consumer has seen the tool call).
Pure policy + asyncio primitives: no SDK import, so it is unit-testable without the CLI.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from shepherd.core.records import record

SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
FILE_TOOLS = frozenset({"Read", "Write", "Edit", "MultiEdit", "Glob", "Grep", "NotebookEdit"})
READ_ONLY_FILE_TOOLS = frozenset({"Read", "Glob", "Grep"})
PATH_KEYS = ("file_path", "notebook_path", "path")

# What the agent reads when a call is denied (prefixed by the CLI with "PreToolUse:<tool> hook error:").
DENY_BACKGROUND = ("Shepherd policy: background sub-agents (run_in_background) are not allowed here; "
                   "they are killed when this turn ends. Run the sub-agent in the foreground "
                   "(without run_in_background) or do the work yourself.")
DENY_SUBAGENT_LIMIT = ("Shepherd policy: at most {n} sub-agents may run at the same time in this session. "
                       "Wait for a running sub-agent to finish, or do the work yourself.")
DENY_OUTSIDE = ("Shepherd policy: {tool} may only access files inside the workspace {ws}; "
                "{path!r} is outside it. Use a path inside the workspace.")


ASK_REASON = "Shepherd: approve_tools"  # the hook's reason; can_use_tool sees it as decision_reason


class _Gated(Protocol):  # core.approvals.ApprovalPolicy
    def gated(self, tool: str) -> bool: ...


@record(frozen=True)
class Decision:
    call_id: str
    tool: str
    decision: str  # deny
    reason: str


def _inside(path: str, roots: Iterable[str]) -> bool:
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def _static_prefix(pattern: str) -> str:
    """The part of a glob pattern before its first wildcard ('/etc/**/x' -> '/etc')."""
    parts = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?[{"):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else ""


class HookPolicy:
    """One per attempt (one CLI process): sub-agent slots die with the process."""

    def __init__(self, workspace: Path, *, max_subagents: int = 4, subagents_allowed: bool = True,
                 extra_read_roots: Iterable[Path] = (), approvals: _Gated | None = None) -> None:
        self.workspace = Path(os.path.realpath(workspace))
        self.max_subagents = max(0, int(max_subagents))
        self.subagents_allowed = subagents_allowed  # may we answer "allow" (pinning to the foreground)
        self.read_roots = [str(self.workspace)] + [os.path.realpath(p) for p in extra_read_roots]
        self.approvals = approvals  # None: no tool waits for a person (no "ask")
        self.active_subagents: set[str] = set()
        self.denied: dict[str, Decision] = {}
        self.seen: set[str] = set()  # calls PreToolUse saw (and did not deny)
        self.settled: set[str] = set()  # calls PostToolUse / PostToolUseFailure saw
        self.post_info: dict[str, dict[str, Any]] = {}
        self._pending: list[Decision] = []
        self._changed = asyncio.Condition()

    # --- decisions ---------------------------------------------------------------------

    def check(self, tool: str, tool_input: dict[str, Any], call_id: str) -> tuple[str, str | None]:
        """('deny', reason) | ('allow', None) (sub-agent pinned) | ('none', None)."""
        if tool in SUBAGENT_TOOLS:
            if tool_input.get("run_in_background"):
                return "deny", DENY_BACKGROUND
            if len(self.active_subagents) >= self.max_subagents:
                return "deny", DENY_SUBAGENT_LIMIT.format(n=self.max_subagents)
            return ("allow" if self.subagents_allowed else "none"), None
        if tool in FILE_TOOLS:
            outside = self._outside_path(tool, tool_input)
            if outside is not None:
                return "deny", DENY_OUTSIDE.format(tool=tool, ws=self.workspace, path=outside)
        return "none", None

    def _outside_path(self, tool: str, tool_input: dict[str, Any]) -> str | None:
        roots = self.read_roots if tool in READ_ONLY_FILE_TOOLS else [str(self.workspace)]
        candidates = [tool_input[k] for k in PATH_KEYS if isinstance(tool_input.get(k), str) and tool_input[k]]
        pattern = tool_input.get("pattern")
        if tool == "Glob" and isinstance(pattern, str) and os.path.isabs(os.path.expanduser(pattern)):
            candidates.append(_static_prefix(os.path.expanduser(pattern)) or os.sep)
        for raw in candidates:
            p = Path(os.path.expanduser(raw))
            if not p.is_absolute():
                p = self.workspace / p
            if not _inside(os.path.realpath(p), roots):
                return raw
        return None

    # --- hook callbacks (signature of claude_agent_sdk HookCallback) ----------------------

    async def pre_tool_use(self, data: dict[str, Any], tool_use_id: str | None, _ctx: Any) -> dict[str, Any]:
        tool = str(data.get("tool_name", ""))
        tool_input = data.get("tool_input") or {}
        call_id = tool_use_id or str(data.get("tool_use_id") or "")
        verdict, reason = self.check(tool, tool_input, call_id)
        if verdict == "deny":
            d = Decision(call_id=call_id, tool=tool, decision="deny", reason=reason or "")
            self.denied[call_id] = d
            self._pending.append(d)
            await self._notify()
            return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                           "permissionDecisionReason": d.reason}}
        self.seen.add(call_id)
        ask = self.approvals is not None and self.approvals.gated(tool)
        if tool in SUBAGENT_TOOLS:
            self.active_subagents.add(call_id)  # the slot is taken only now, after every check
            if verdict == "allow":
                pinned = dict(tool_input)
                pinned["run_in_background"] = False
                out: dict[str, Any] = {"hookEventName": "PreToolUse", "updatedInput": pinned}
                out.update({"permissionDecision": "ask", "permissionDecisionReason": ASK_REASON} if ask
                           else {"permissionDecision": "allow"})
                return {"hookSpecificOutput": out}
        if ask:
            return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "ask",
                                           "permissionDecisionReason": ASK_REASON}}
        return {}

    async def post_tool_use(self, data: dict[str, Any], tool_use_id: str | None, _ctx: Any) -> dict[str, Any]:
        call_id = tool_use_id or str(data.get("tool_use_id") or "")
        self.release(call_id)
        info: dict[str, Any] = {"event": data.get("hook_event_name")}
        if isinstance(data.get("duration_ms"), (int, float)):
            info["duration_ms"] = data["duration_ms"]
        if data.get("is_interrupt"):
            info["interrupted"] = True
        self.post_info[call_id] = info
        self.settled.add(call_id)
        await self._notify()
        return {}

    def hooks(self) -> dict[str, list[Any]]:
        """The ``ClaudeAgentOptions.hooks`` value (imports the SDK's HookMatcher)."""
        from claude_agent_sdk import HookMatcher

        return {
            "PreToolUse": [HookMatcher(matcher=None, hooks=[self.pre_tool_use])],
            "PostToolUse": [HookMatcher(matcher=None, hooks=[self.post_tool_use])],
            "PostToolUseFailure": [HookMatcher(matcher=None, hooks=[self.post_tool_use])],
        }

    # --- for the stream consumer ----------------------------------------------------------

    def release(self, call_id: str) -> None:
        self.active_subagents.discard(call_id)

    def take_decisions(self, started: set[str] | None = None) -> list[Decision]:
        """Pending decisions (only those for calls in ``started`` when given), oldest first."""
        if started is None:
            out, self._pending = self._pending, []
            return out
        out = [d for d in self._pending if d.call_id in started]
        self._pending = [d for d in self._pending if d.call_id not in started]
        return out

    def expects_post(self, call_id: str) -> bool:
        """True when PreToolUse let the call through, so a Post hook will report on it."""
        return call_id in self.seen and call_id not in self.denied

    async def wait_settled(self, call_id: str, timeout: float) -> bool:
        """Wait until the Post hook for ``call_id`` ran (no sleep: a condition, bounded)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: call_id in self.settled), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
