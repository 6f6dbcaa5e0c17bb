"""What the openai-agents based backends (openai, scripted) share: the per-subtask Session,
history repair before an attempt, the Runner call, and the stream -> core.events mapping.

Rules kept here (DESIGN "Errors and retries"):
- SDK exceptions propagate unchanged; the supervisor classifies them. A stream that ends
  without a final output (and without a requested stop) raises ``core.errors.StreamBroken``.
- A restart continues from the committed session history and never re-sends the prompt.
- A ``function_call`` in history without its output gets a synthetic "interrupted" output.
- ``ctx.stop_after_turn`` -> ``result.cancel(mode="after_turn")``: the turn is committed to
  the session, then the attempt ends normally. Closing the iterator early cancels at once.
- Approvals (``ctx.approvals``, core.approvals is the contract; None: none of this happens):
  the function tools carry openai-agents' ``needs_approval``; a run that ends with
  ``result.interruptions`` is saved (``store.save_run_state``) *before* its calls are asked,
  each answer goes into the state (approve / reject with ``prompts.approval_denied``), and
  the run resumes from the state. A later attempt restores a saved state and asks the same
  calls again; nothing is ever approved by default.

Only imported by the backend modules, so ``agents`` is imported lazily with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepherd.core.backends.base import AttemptContext
from shepherd.core.events import (
    ApprovalDecided,
    ApprovalRequested,
    Event,
    MessageCompleted,
    TextDelta,
    ThinkingDelta,
    ToolFinished,
    ToolStarted,
    Usage,
    new_id,
)
from shepherd.core.tools import is_error_output

if TYPE_CHECKING:
    from agents import Agent, RunHooks, RunResultStreaming, RunState
    from agents.memory import Session

    from shepherd.core.approvals import ApprovalGate, Decision

SDK_LOGGERS = ("openai.agents", "openai", "httpx", "httpx2", "httpcore", "httpcore2")
SESSION_STATE_KEY = "agents_session"
# The SDK's output for a tool that raised with the default failure function.
SDK_TOOL_FAILURE = "An error occurred while running the tool. Please try again."
_SDK_TOOL_TIMEOUT = re.compile(r"^Tool '.*' timed out after ")
IMAGE_PLACEHOLDER = "[image removed: the model rejected image input]"
CLOSE_TIMEOUT_S = 5.0  # how long an early close waits for the run loop to wind down

SessionFactory = Callable[[AttemptContext, str], "Session | Awaitable[Session]"]
TOOLS_STATE_KEY = "agents_tools"
RUN_STATE_KEY = "agents_run_state"  # (key, call ids, state text) when there is no store to save it in

_log = logging.getLogger("shepherd.backend")


def quiet_sdk_loggers() -> None:
    """The SDK loggers must never reach the terminal through Python's last-resort
    handler (it would corrupt the TUI). A NullHandler stops that; records still
    propagate to whatever handlers the app configured on the root logger."""
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


quiet_sdk_loggers()


def tracing_disabled() -> bool:
    return os.environ.get("SHEPHERD_TRACING", "").strip() != "1"


def agent_instructions(workspace: Path, task: Any = None) -> str:
    """The agent's system prompt: where it works and with what (and, truthfully, how far
    the shell reaches: see core.tools.shell_confinement)."""
    from shepherd.core.tools.spawn import SpawnPolicy
    from shepherd.core.tools.workspace import shell_confinement

    return (
        "You are a careful software engineer working in a project workspace at "
        f"{Path(workspace).resolve()}. Use the tools: list_files and read_file to look around, "
        "write_file to create or change files (always the complete content), and run_command "
        "to run shell commands (tests, builds) in the workspace root. The file tools' paths are "
        "relative to the workspace and cannot leave it. "
        f"{shell_confinement(SpawnPolicy.from_task(task))} Verify your changes by running them. "
        "When the task is done, answer with a short summary of what you did."
    )


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


def session_key(ctx: AttemptContext) -> str:
    return f"{ctx.session_id}:{ctx.subtask.id}"


async def open_session(ctx: AttemptContext, factory: SessionFactory | None = None) -> tuple["Session", bool]:
    """The subtask's openai-agents Session and whether this attempt must close it.

    Order: an injected factory (the caller owns it); the store-backed session
    (``core.store.open_agents_session(db_path, key)``: opened per attempt, closed after it,
    so no connection outlives the attempt); else an in-memory ``SQLiteSession`` kept in
    ``ctx.state`` (history then lives only as long as this process)."""
    key = session_key(ctx)
    if factory is not None:
        session: Any = factory(ctx, key)
        if inspect.isawaitable(session):
            session = await session
        return session, False
    if ctx.store is not None and hasattr(ctx.store, "agents_session"):
        # through the supervisor's store: one writer, no second connection fighting for the lock
        # (deferred: a turn's history rows share the commit of the next urgent event)
        return ctx.store.agents_session(key, deferred=True), False
    if ctx.db_path is not None:
        from shepherd.core.store import open_agents_session

        return open_agents_session(ctx.db_path, key), True
    cached = ctx.state.get(SESSION_STATE_KEY)
    if cached is None or cached[0] != key:
        from agents import SQLiteSession

        cached = (key, SQLiteSession(key))
        ctx.state[SESSION_STATE_KEY] = cached
    return cached[1], False


# --- history repair ----------------------------------------------------------------------


def _get(item: Any, key: str) -> Any:
    if isinstance(item, dict):
        return item.get(key)
    return getattr(item, key, None)


def _interrupted_output_text() -> str:
    try:
        from shepherd.core.prompts import interrupted_tool_output

        return interrupted_tool_output()
    except ImportError:
        return "interrupted: this call did not finish"


def close_dangling_calls(items: list[Any], keep: Iterable[str] = ()) -> tuple[list[Any], list[str]]:
    """Give every ``function_call`` without a ``function_call_output`` a synthetic
    "interrupted" output, placed after that turn's block of calls/outputs (so the Chat
    Completions conversion still sees tool messages right after their assistant turn).
    ``keep``: call ids left open (they await a person's approval in a saved run state).
    Returns (new items, call ids that were closed)."""
    answered = {_get(i, "call_id") for i in items if _get(i, "type") == "function_call_output"}
    answered |= set(keep)
    out: list[Any] = []
    closed: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        for cid in pending:
            out.append({"type": "function_call_output", "call_id": cid, "output": _interrupted_output_text()})
            closed.append(cid)
        pending.clear()

    for item in items:
        kind = _get(item, "type")
        if kind not in ("function_call", "function_call_output"):
            flush()
        out.append(item)
        if kind == "function_call":
            cid = _get(item, "call_id")
            if cid and cid not in answered and cid not in closed and cid not in pending:
                pending.append(cid)
    flush()
    return out, closed


def strip_image_inputs(items: list[Any]) -> tuple[list[Any], int]:
    """Replace image content parts in history with a text placeholder."""
    count = 0
    out: list[Any] = []
    for item in items:
        content = _get(item, "content")
        if isinstance(item, dict) and isinstance(content, list):
            parts = []
            for part in content:
                ptype = _get(part, "type")
                if ptype in ("input_image", "image_url", "image"):
                    parts.append({"type": "input_text", "text": IMAGE_PLACEHOLDER})
                    count += 1
                else:
                    parts.append(part)
            if count:
                item = {**item, "content": parts}
        out.append(item)
    return out, count


async def prepare_history(session: "Session", *, strip_images: bool, log: logging.Logger = _log,
                          keep: Iterable[str] = ()) -> list[Any]:
    """Repair the committed history before an attempt; rewrites the session only when
    something changed. ``keep``: call ids not to close (awaiting approval in a restored run
    state). Returns the (possibly repaired) items."""
    items = list(await session.get_items())
    fixed, closed = close_dangling_calls(items, keep)
    stripped = 0
    if strip_images:
        fixed, stripped = strip_image_inputs(fixed)
    if closed or stripped:
        log.info("repairing history: %d dangling call(s) closed, %d image(s) stripped", len(closed), stripped)
        await session.clear_session()
        await session.add_items(copy.deepcopy(fixed))
    return fixed


async def attempt_input(ctx: AttemptContext, session: "Session") -> str | list[Any]:
    """What this attempt sends. Fresh conversation: the prompt (+ prompt_extra). Continuing
    from history: nothing, or prompt_extra as one user message; the prompt never twice."""
    history = await prepare_history(session, strip_images=ctx.strip_images, log=ctx.log)
    if ctx.continue_history and history:
        if ctx.prompt_extra:
            return [{"role": "user", "content": ctx.prompt_extra}]
        return []
    if history:
        # a fresh conversation was asked for: the prompt must not land after old turns
        await session.clear_session()
    return ctx.prompt + ("\n\n" + ctx.prompt_extra if ctx.prompt_extra else "")


def run_streamed(ctx: AttemptContext, agent: "Agent[Any]", input: str | list[Any], session: "Session",
                 hooks: "RunHooks[Any] | None" = None) -> "RunResultStreaming":
    from agents import RunConfig, Runner

    return Runner.run_streamed(
        agent,
        input,
        session=session,
        max_turns=ctx.task.max_turns,
        hooks=hooks,
        run_config=RunConfig(tracing_disabled=tracing_disabled(), workflow_name="shepherd"),
    )


def tool_timer(monotonic: Callable[[], float]) -> "RunHooks[Any]":
    """Run hooks that time each tool call where it really runs, keyed by the SDK's
    tool_call_id. The SDK runs a turn's function calls concurrently and streams their
    outputs together once all are done, so timing from the stream would give every call
    the slowest one's duration. ``durations`` holds each finished call's seconds."""
    from agents import RunHooks

    class ToolTimer(RunHooks[Any]):
        def __init__(self) -> None:
            self._started: dict[str, float] = {}
            self.durations: dict[str, float] = {}

        async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
            call_id = getattr(context, "tool_call_id", None)
            if call_id:
                self._started[str(call_id)] = monotonic()

        async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
            call_id = str(getattr(context, "tool_call_id", "") or "")
            t0 = self._started.pop(call_id, None)
            if t0 is not None:
                self.durations[call_id] = round(monotonic() - t0, 3)

    return ToolTimer()


# --- stream -> events ------------------------------------------------------------------------


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(output)


def tool_status(output: str) -> str:
    if is_error_output(output) or output.startswith(SDK_TOOL_FAILURE) or _SDK_TOOL_TIMEOUT.match(output):
        return "error"
    return "ok"


def _parse_args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        return {"arguments": str(raw)}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


class EventMapper:
    """Maps openai-agents stream events to core.events (own fields only)."""

    def __init__(self, monotonic: Callable[[], float], durations: dict[str, float] | None = None,
                 approvals: ApprovalBridge | None = None) -> None:
        self._monotonic = monotonic
        self._durations = durations if durations is not None else {}  # call id -> measured where it ran
        self._approvals = approvals
        self._ids: dict[str, str] = {}  # provider item id -> our message id, per response
        self._started: dict[str, float] = {}  # call id -> start time
        self.denied: set[str] = set()  # call ids a person rejected: their output is the denial
        self.responses = 0

    def _mid(self, item_id: Any) -> str:
        key = str(item_id or "")
        if key not in self._ids:
            self._ids[key] = new_id("m")
        return self._ids[key]

    def map(self, sev: Any) -> list[Event]:
        kind = getattr(sev, "type", None)
        if kind == "raw_response_event":
            return self._raw(sev.data)
        if kind == "run_item_stream_event":
            return self._item(sev.name, sev.item)
        return []

    def _raw(self, data: Any) -> list[Event]:
        t = getattr(data, "type", None)
        if t == "response.output_text.delta":
            return [TextDelta(message_id=self._mid(data.item_id), text=data.delta)] if data.delta else []
        if t in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            return [ThinkingDelta(message_id=self._mid(data.item_id), text=data.delta)] if data.delta else []
        if t == "response.created":
            self._ids = {}
            return []
        if t == "response.completed":
            self.responses += 1
            usage = getattr(data.response, "usage", None)
            if usage is not None:
                return [Usage(input_tokens=int(usage.input_tokens or 0),
                              output_tokens=int(usage.output_tokens or 0), cost_usd=None)]
        return []

    def _item(self, name: str, item: Any) -> list[Event]:
        raw = getattr(item, "raw_item", None)
        if name == "message_output_created":
            from agents import ItemHelpers

            text = ItemHelpers.text_message_output(item)
            if not text:
                text = "".join(getattr(p, "refusal", "") or "" for p in (_get(raw, "content") or []))
            return [MessageCompleted(message_id=self._mid(_get(raw, "id")), role="assistant", text=text)]
        if name == "tool_called":
            call_id = str(_get(raw, "call_id") or _get(raw, "id") or new_id("call"))
            tool = str(_get(raw, "name") or _get(raw, "type") or "tool")
            self._started[call_id] = self._monotonic()
            tool_input = _parse_args(_get(raw, "arguments"))
            started: list[Event] = [ToolStarted(call_id=call_id, name=tool, input=tool_input)]
            if self._approvals is not None:  # a rule's yes follows the call's start at once
                started += self._approvals.rule_events(call_id, tool, tool_input)
            return started
        if name == "tool_output":
            call_id = str(_get(raw, "call_id") or _get(raw, "id") or "")
            output = _output_text(getattr(item, "output", _get(raw, "output")))
            t0 = self._started.pop(call_id, None)
            duration = self._durations.pop(call_id, None)
            if duration is None and t0 is not None:  # not a timed function tool: as the stream saw it
                duration = round(self._monotonic() - t0, 3)
            status = "denied" if call_id in self.denied else tool_status(output)
            return [ToolFinished(call_id=call_id, status=status, output=output, duration_s=duration)]
        return []


def _stream_broken(message: str) -> Exception:
    from shepherd.core.errors import StreamBroken

    return StreamBroken(message)


async def _settle(task: asyncio.Task[Any] | None, timeout: float) -> None:
    if task is not None and not task.done():
        await asyncio.wait({task}, timeout=timeout)


async def stream_run(result: "RunResultStreaming", ctx: AttemptContext,
                     durations: dict[str, float] | None = None, mapper: EventMapper | None = None) -> AsyncIterator[Event]:
    """Yield core events for one Runner run; see the module docstring for the rules.
    ``durations``: tool call seconds measured where the tools ran (``tool_timer``);
    ``mapper``: one shared by the runs of an attempt (a run resumed after approvals)."""
    if mapper is None:
        mapper = EventMapper(ctx.clock.monotonic, durations)
    stop = ctx.stop_after_turn

    async def stop_watch() -> None:
        await stop.wait()
        ctx.log.debug("stop after turn requested")
        result.cancel(mode="after_turn")

    watcher = asyncio.ensure_future(stop_watch())
    stream = result.stream_events()
    finished = False
    try:
        async for sev in stream:
            for ev in mapper.map(sev):
                yield ev
        finished = True
    finally:
        watcher.cancel()
        if not finished:
            # early close (GeneratorExit / CancelledError) or an SDK error: stop the run
            # loop now, before closing the SDK stream (which would otherwise wait for it)
            result.cancel()
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(stream.aclose(), CLOSE_TIMEOUT_S)
            await _settle(result.run_loop_task, CLOSE_TIMEOUT_S)
    if result.final_output is None and not stop.is_set() and not getattr(result, "interruptions", None):
        # (a run stopped for approvals ends without one: the caller asks and resumes it)
        raise _stream_broken("the agent run ended without a final response")


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


__all__ = [
    "ApprovalBridge", "EventMapper", "approval_bridge", "decide_interruptions", "SDK_TOOL_FAILURE", "agent_instructions", "attempt_input", "close_dangling_calls",
    "open_session", "prepare_history", "quiet_sdk_loggers", "run_agent_attempt", "run_streamed", "session_key",
    "stream_run", "strip_image_inputs", "tool_status", "tool_timer", "tools_for", "tracing_disabled",
]
