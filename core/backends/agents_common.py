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
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepherd.core.backends.base import AttemptContext
from shepherd.core.events import (
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
    from agents import Agent, RunHooks, RunResultStreaming
    from agents.memory import Session

    from shepherd.core.backends.agents_attempt import ApprovalBridge

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


__all__ = [
    "EventMapper", "SDK_TOOL_FAILURE", "agent_instructions", "attempt_input", "close_dangling_calls",
    "open_session", "prepare_history", "quiet_sdk_loggers", "run_streamed", "session_key",
    "stream_run", "strip_image_inputs", "tool_status", "tool_timer", "tracing_disabled",
]
