"""Tool approvals: which calls wait for a person, the rules that answer them, and the
gate a backend awaits (pure: no SDK, no store, no Textual).

The contract between the engine and a backend:
- The backend asks ``gate.policy.gated(tool)`` for each call. For a gated call it first
  tries ``gate.rule_decision(tool, input)`` (an ``auto_approve`` rule, or a tool a person
  approved for the session); with one, it yields ``ApprovalRequested`` and then
  ``ApprovalDecided(source="rule")`` and runs the tool at once.
- Otherwise it yields ``ApprovalRequested`` in its own event stream (so it follows the
  call's ``tool.started``) and then awaits ``gate.ask(call_id)``. The engine commits the
  request, tells the person, and when an answer comes (TUI, CLI through the commands
  table, headless ``--approvals deny``) commits ``ApprovalDecided`` and calls
  ``gate.answer``. The backend never writes ``ApprovalDecided`` for a person's answer.
- An answer may arrive before the backend awaits (headless deny answers as soon as the
  request is committed); ``ask`` then returns at once. The first answer wins.
- A denial reaches the agent as the tool's result carrying the reason; the tool does not
  run. Nothing is ever approved by default: a gate that is closed (shutdown, cancel)
  makes ``ask`` raise ``ApprovalWithdrawn`` and the call stays unanswered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any, Literal
from shepherd.core.records import record

ALL_TOOLS = "*"
DecisionValue = Literal["approved", "denied"]
Source = Literal["tui", "cli", "rule", "headless"]
Scope = Literal["call", "session"]

# A command rule must not let a second command ride along: "pytest; rm -rf ~" starts with
# "pytest" but is not what the rule's author approved.
_SHELL_META = (";", "&", "|", "`", "$(", ">", "<", "\n", "\r")
_COMMAND_KEYS = ("command", "cmd")
_PATH_KEYS = ("file_path", "path", "notebook_path")


class ApprovalWithdrawn(Exception):
    """The gate closed before anyone answered: the call must not run (and is not denied:
    it stays awaiting, to be asked again after a resume)."""


@record(frozen=True, slots=True)
class Decision:
    decision: DecisionValue
    source: Source
    reason: str = ""
    scope: Scope = "call"

    @property
    def approved(self) -> bool:
        return self.decision == "approved"


@record(frozen=True, slots=True)
class Rule:
    """``{ tool = "run_command", prefix = "pytest" }`` in a task file's ``auto_approve``."""

    tool: str
    prefix: str

    def describe(self) -> str:
        return f"auto_approve rule: {self.tool} {self.prefix!r}"


@record(frozen=True, slots=True)
class AwaitingCall:
    """A call still waiting for an answer from an earlier attempt or runner (re-asked)."""

    call_id: str
    tool: str
    input: Mapping[str, Any]


def main_input(tool: str, tool_input: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, text) a rule's prefix is compared with: the command, the path, or the input's
    canonical JSON."""
    for key in _COMMAND_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str):
            return "command", value
    for key in _PATH_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str):
            return "path", value
    return "json", json.dumps(dict(tool_input), sort_keys=True, ensure_ascii=False, default=str)


def _prefix_matches(kind: str, text: str, prefix: str) -> bool:
    if not prefix or not text.startswith(prefix):
        return False
    if kind == "command":
        if any(m in text for m in _SHELL_META):
            return False
        rest = text[len(prefix):]
        # At a word boundary: "pytest" approves "pytest -q", not "pytestevil".
        return rest == "" or rest[0] in " \t" or prefix[-1] in " \t/=-"
    if kind == "path":
        rest = text[len(prefix):]
        # "src/" approves "src/a.py"; "src" does not approve "src_secret/…", nor ".." escapes.
        if ".." in text.replace("\\", "/").split("/"):
            return False
        return rest == "" or prefix.endswith("/") or rest.startswith("/")
    return True


@record(frozen=True, slots=True)
class ApprovalPolicy:
    """What a task file says: ``approve_tools`` (``"*"`` = every tool) and ``auto_approve``."""

    approve_tools: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.approve_tools)

    def gated(self, tool: str) -> bool:
        return ALL_TOOLS in self.approve_tools or tool in self.approve_tools

    def match(self, tool: str, tool_input: Mapping[str, Any]) -> Rule | None:
        kind, text = main_input(tool, tool_input)
        for rule in self.rules:
            if rule.tool in (tool, ALL_TOOLS) and _prefix_matches(kind, text, rule.prefix):
                return rule
        return None


@record
class ApprovalGate:
    """One subtask run's approvals: the policy, the tools a person approved for the
    session, the calls to ask again, and one future per asked call."""

    policy: ApprovalPolicy
    session_tools: set[str] = field(default_factory=set)
    reask: tuple[AwaitingCall, ...] = ()
    _answers: dict[str, Decision] = field(default_factory=dict)
    _waiters: dict[str, asyncio.Future[Decision]] = field(default_factory=dict)
    _closed: bool = False

    def rule_decision(self, tool: str, tool_input: Mapping[str, Any]) -> Decision | None:
        """An approval no person needs to give: a session-wide yes or an auto_approve rule."""
        if tool in self.session_tools:
            return Decision("approved", "rule", f"{tool} approved for this session")
        rule = self.policy.match(tool, tool_input)
        if rule is not None:
            return Decision("approved", "rule", rule.describe())
        return None

    def answered(self, call_id: str) -> Decision | None:
        """The answer held for ``call_id`` (``ask`` would return it at once), if any."""
        return self._answers.get(call_id)

    def pending(self) -> list[str]:
        """Call ids asked and not answered yet, oldest first."""
        return [cid for cid, fut in self._waiters.items() if not fut.done()]

    async def ask(self, call_id: str) -> Decision:
        """Wait for the answer to ``call_id`` (at once if it came already)."""
        if call_id in self._answers:
            return self._answers[call_id]
        if self._closed:
            raise ApprovalWithdrawn(call_id)
        fut = self._waiters.get(call_id)
        if fut is None:
            fut = self._waiters[call_id] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(fut)

    def answer(self, call_id: str, decision: Decision) -> bool:
        """Record the first answer for ``call_id``; False when it was answered already."""
        if call_id in self._answers:
            return False
        self._answers[call_id] = decision
        fut = self._waiters.get(call_id)
        if fut is not None and not fut.done():
            fut.set_result(decision)
        return True

    def approve_for_session(self, tool: str) -> None:
        """A person's ``a`` (scope "session"): later calls of ``tool`` need no one. The engine
        calls it when it commits such a decision, and rebuilds it from the events on resume."""
        self.session_tools.add(tool)

    def close(self) -> None:
        """No more answers (shutdown, cancel, the attempt ended): every waiter is withdrawn,
        never approved."""
        self._closed = True
        for cid, fut in self._waiters.items():
            if not fut.done() and cid not in self._answers:
                fut.set_exception(ApprovalWithdrawn(cid))
                fut.exception()  # (retrieved: a withdrawn ask nobody awaits is not an error)


def policy_from_task(approve_tools: Iterable[str], auto_approve: Iterable[Mapping[str, str]]) -> ApprovalPolicy:
    """The policy from a task file's already-validated keys."""
    return ApprovalPolicy(
        approve_tools=tuple(approve_tools),
        rules=tuple(Rule(tool=str(r["tool"]), prefix=str(r["prefix"])) for r in auto_approve),
    )
