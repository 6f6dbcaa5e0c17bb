"""One attempt on openai-agents, for the openai and scripted backends: the workspace tools
(with ``needs_approval`` from the task's approval gate), the run, and approvals on the SDK's
own human-in-the-loop (``core.approvals`` has the contract). A run that stops with
``result.interruptions`` is saved as a ``RunState`` before its calls are asked; the answers
are applied (``approve`` / ``reject`` with the person's reason) and the run resumes from
that state. After a crash the saved state is restored and the same calls are asked again.
Never approved by default: a closed gate leaves the state saved and nothing run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepherd.core.backends.base import AttemptContext
from shepherd.core.events import ApprovalDecided, ApprovalRequested, Event, ToolFinished
from shepherd.core.backends.agents_common import (
    RUN_STATE_KEY, TOOLS_STATE_KEY, EventMapper, SessionFactory, _get, _interrupted_output_text, _parse_args,
    attempt_input, open_session, prepare_history, run_streamed, session_key, stream_run, tool_timer,
)

if TYPE_CHECKING:
    from agents import Agent, RunState

    from shepherd.core.approvals import ApprovalGate, Decision


class ApprovalBridge:
    """One gate's side of the tools: the tools' ``needs_approval`` and the event stream share
    it, so a call answered by a rule is decided once (whichever of them sees it first) and
    its ``approval.requested`` + ``approval.decided(rule)`` follow its ``tool.started``."""

    def __init__(self, gate: "ApprovalGate") -> None:
        self.gate = gate
        self._rules: dict[str, "Decision | None"] = {}
        self.emitted: set[str] = set()  # call ids whose rule decision is in the event stream

    def gated(self, tool: str) -> bool:
        return self.gate.policy.gated(tool)

    def rule_for(self, call_id: str, tool: str, tool_input: dict[str, Any]) -> "Decision | None":
        """The rule (or session-wide) approval of a gated call, decided once per call id."""
        if call_id not in self._rules:
            self._rules[call_id] = self.gate.rule_decision(tool, tool_input)
        return self._rules[call_id]

    def needs(self, tool: str) -> Callable[[Any, dict[str, Any], str], Awaitable[bool]]:
        """openai-agents' ``needs_approval`` for ``tool``: not gated or answered by a rule ->
        False (it runs); else True (the run stops with it in ``result.interruptions``)."""

        async def needs_approval(_run_context: Any, params: dict[str, Any], call_id: str) -> bool:
            if not self.gated(tool):
                return False
            return self.rule_for(str(call_id), tool, dict(params or {})) is None

        return needs_approval

    def rule_events(self, call_id: str, tool: str, tool_input: dict[str, Any],
                    reask_of: str | None = None) -> list[Event]:
        """requested + decided(rule) for a gated call a rule approves (once per call)."""
        if call_id in self.emitted or not self.gated(tool):
            return []
        decision = self.rule_for(call_id, tool, tool_input)
        if decision is None:
            return []
        self.emitted.add(call_id)
        return [ApprovalRequested(call_id=call_id, tool=tool, input=tool_input, reask_of=reask_of),
                ApprovalDecided(call_id=call_id, decision=decision.decision, source=decision.source,
                                reason=decision.reason, scope=decision.scope)]


def tools_for(ctx: AttemptContext) -> list[Any]:
    """The workspace tools, built once per subtask (building them costs ~30 ms); with an
    approval gate, each carries ``needs_approval`` from the gate's ApprovalBridge."""
    from shepherd.core.tools import SpawnPolicy, workspace_tools

    policy = SpawnPolicy.from_task(ctx.task)
    gate = ctx.approvals
    key = (str(Path(ctx.workspace).resolve()), id(ctx.clock), policy, id(gate) if gate is not None else None)
    cached = ctx.state.get(TOOLS_STATE_KEY)
    if cached is None or cached[0] != key or (gate is not None and cached[2].gate is not gate):
        bridge = ApprovalBridge(gate) if gate is not None else None
        tools = workspace_tools(ctx.workspace, ctx.clock, policy,
                                needs_approval=bridge.needs if bridge is not None else None)
        cached = (key, tools, bridge)
        ctx.state[TOOLS_STATE_KEY] = cached
    return cached[1]


def approval_bridge(ctx: AttemptContext) -> ApprovalBridge | None:
    """The bridge of the tools ``tools_for(ctx)`` built (None without a gate)."""
    if ctx.approvals is None:
        return None
    cached = ctx.state.get(TOOLS_STATE_KEY)
    if cached is not None and len(cached) > 2 and cached[2] is not None and cached[2].gate is ctx.approvals:
        return cached[2]
    tools_for(ctx)
    return ctx.state[TOOLS_STATE_KEY][2]


# --- approvals: interruptions, the saved run state, resuming ------------------------------


async def _load_run_state(ctx: AttemptContext) -> tuple[list[str], str] | None:
    store = ctx.store
    if store is not None and hasattr(store, "load_run_state"):
        return await store.load_run_state(ctx.session_id, ctx.subtask.id)
    held = ctx.state.get(RUN_STATE_KEY)
    if held is not None and held[0] == session_key(ctx):
        return list(held[1]), held[2]
    return None


async def _save_run_state(ctx: AttemptContext, call_ids: list[str], state: str) -> None:
    """Committed when it returns (the store's): before any of these calls is asked. Without a
    store the state lives only in this process (ctx.state)."""
    store = ctx.store
    if store is not None and hasattr(store, "save_run_state"):
        await store.save_run_state(ctx.session_id, ctx.subtask.id, call_ids, state)
    else:
        ctx.state[RUN_STATE_KEY] = (session_key(ctx), list(call_ids), state)


async def _drop_run_state(ctx: AttemptContext) -> None:
    store = ctx.store
    if store is not None and hasattr(store, "drop_run_state"):
        await store.drop_run_state(ctx.session_id, ctx.subtask.id)
    ctx.state.pop(RUN_STATE_KEY, None)


def _stored_answer(gate: "ApprovalGate", call_id: str) -> "Decision | None":
    """An answer the gate holds already (the engine re-applies decisions committed before a
    crash to the new attempt's gate); ``gate.ask`` would return it at once."""
    return gate.answered(call_id)


def _item_call(item: Any) -> tuple[str, str, dict[str, Any]]:
    """(call id, tool, input) of a ToolApprovalItem."""
    raw = getattr(item, "raw_item", None)
    call_id = str(getattr(item, "call_id", None) or _get(raw, "call_id") or "")
    tool = str(getattr(item, "tool_name", None) or getattr(item, "name", None) or _get(raw, "name") or "tool")
    args = getattr(item, "arguments", None)
    return call_id, tool, _parse_args(args if args is not None else _get(raw, "arguments"))


async def _settle_session(session: Any) -> None:
    settle = getattr(session, "settle", None)
    if settle is not None:  # a deferred session: its turn's rows are committed first
        await settle()


async def decide_interruptions(ctx: AttemptContext, state: "RunState[Any]", items: list[Any],
                               bridge: ApprovalBridge, mapper: EventMapper, session: Any,
                               reask: frozenset[str] = frozenset(), restored: bool = False) -> AsyncIterator[Event]:
    """Answer a run's interruptions in ``state``: a call that is not gated (the SDK asks
    for one whose arguments it would change before running it) or that a rule approves
    runs; a decision the gate holds already is re-applied; every other call is saved with
    the state, then asked (``approval.requested``, ``reask_of`` for ``reask`` calls) and
    awaited. ``gate.ask`` raising ApprovalWithdrawn leaves the saved state for the next
    attempt. The state is dropped once every call is decided. ``restored``: ``state`` was
    saved by an earlier attempt; its calls outside ``reask`` (the ones that were asked) were
    approved before it was saved (not gated, or a rule) and are approved again."""
    from shepherd.core import prompts

    gate = bridge.gate

    def apply(item: Any, call_id: str, decision: "Decision") -> None:
        if decision.approved:
            state.approve(item)
        else:
            mapper.denied.add(call_id)
            state.reject(item, rejection_message=prompts.approval_denied(decision.reason))

    asks: list[tuple[Any, str, str, dict[str, Any]]] = []
    for item in items:
        call_id, tool, tool_input = _item_call(item)
        answered = _stored_answer(gate, call_id)
        if answered is not None:
            apply(item, call_id, answered)
            continue
        if call_id not in reask and (restored or not bridge.gated(tool)):
            # not gated (the SDK stops for a call whose arguments it would change before
            # running it, to be safe), or decided before a saved state was saved
            state.approve(item)
            continue
        for ev in bridge.rule_events(call_id, tool, tool_input, reask_of=call_id if call_id in reask else None):
            yield ev
        if call_id in bridge.emitted:
            state.approve(item)
            continue
        asks.append((item, call_id, tool, tool_input))
    if asks:
        await _settle_session(session)
        await _save_run_state(ctx, [a[1] for a in asks], state.to_string())
        for _, call_id, tool, tool_input in asks:
            yield ApprovalRequested(call_id=call_id, tool=tool, input=tool_input,
                                    reask_of=call_id if call_id in reask else None)
        for item, call_id, _, _ in asks:
            apply(item, call_id, await gate.ask(call_id))  # ApprovalWithdrawn: the state stays saved
    if asks or reask:
        await _drop_run_state(ctx)


async def _restore(ctx: AttemptContext, agent: "Agent[Any]") -> tuple["RunState[Any] | None", list[str], list[Event]]:
    """A run state saved by an earlier attempt (or runner) of this subtask: (state, its call
    ids, events). A state that cannot be restored (an SDK schema change) is dropped and its
    calls closed as interrupted (never run; the dangling repair answers them)."""
    saved = await _load_run_state(ctx)
    if saved is None:
        return None, [], []
    call_ids, blob = saved
    if not ctx.continue_history:  # a fresh conversation: that run is over (the engine closes its calls)
        await _drop_run_state(ctx)
        return None, [], []
    try:
        from agents import RunState

        state = await RunState.from_string(agent, blob)
    except Exception as e:  # noqa: BLE001 - any failure: the calls are closed, never run
        ctx.log.warning("the saved run state of %s cannot be restored (%s): its call(s) are closed as "
                        "interrupted, never run", ctx.subtask.id, type(e).__name__)
        await _drop_run_state(ctx)
        text = _interrupted_output_text()
        return None, [], [ToolFinished(call_id=cid, status="interrupted", output=text) for cid in call_ids]
    return state, call_ids, []


async def run_agent_attempt(ctx: AttemptContext, agent: "Agent[Any]",
                            session_factory: SessionFactory | None = None) -> AsyncIterator[Event]:
    """One attempt: open the subtask's session, repair history, choose the input (or restore
    a run state whose calls await approval), run the agent and yield its events; a run
    stopped for approvals is asked, answered and resumed from its state, until it ends."""
    session, owned = await open_session(ctx, session_factory)
    try:
        bridge = approval_bridge(ctx)
        timer = tool_timer(ctx.clock.monotonic)
        mapper = EventMapper(ctx.clock.monotonic, timer.durations, bridge)  # type: ignore[attr-defined]
        state: Any = None
        if bridge is not None:
            state, saved_ids, events = await _restore(ctx, agent)
            for ev in events:
                yield ev
        if state is not None:
            assert bridge is not None
            items = list(state.get_interruptions())
            await prepare_history(session, strip_images=ctx.strip_images, log=ctx.log,
                                  keep=[_item_call(i)[0] for i in items])
            if ctx.prompt_extra:
                ctx.log.debug("resuming a saved run state: prompt_extra not sent")
            async for ev in decide_interruptions(ctx, state, items, bridge, mapper, session,
                                                 frozenset(saved_ids), restored=True):
                yield ev
            run_input: Any = state
        else:
            run_input = await attempt_input(ctx, session)
        while True:
            result = run_streamed(ctx, agent, run_input, session, hooks=timer)
            async for ev in stream_run(result, ctx, timer.durations, mapper):  # type: ignore[attr-defined]
                yield ev
            items = list(getattr(result, "interruptions", None) or [])
            if not items or bridge is None:
                break
            run_input = result.to_state()
            async for ev in decide_interruptions(ctx, run_input, items, bridge, mapper, session):
                yield ev
        await _settle_session(session)  # the attempt ends with its history committed
    finally:
        if owned:
            await session.close()


__all__ = ["ApprovalBridge", "approval_bridge", "decide_interruptions", "run_agent_attempt", "tools_for"]
