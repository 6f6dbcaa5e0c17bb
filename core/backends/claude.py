"""Claude Agent SDK backend: one attempt = one ``ClaudeSDKClient`` over the bundled CLI.

The client keeps one anyio task group from connect to disconnect, so it lives in a
worker task of its own; the supervisor reads events from a queue (it reads the
iterator from a fresh task for every step, which the client would not survive).

Stream -> events (only their own fields; the supervisor fills in the rest):
  StreamEvent text_delta / thinking_delta      -> TextDelta / ThinkingDelta (live)
  AssistantMessage TextBlock                    -> MessageCompleted (the text is not
      re-emitted as a delta; the CLI sends one AssistantMessage per content block, so the
      message's text so far is sent each time, under the API message id)
  ToolUseBlock                                  -> ToolStarted
  ToolResultBlock (UserMessage)                 -> ToolFinished (ok | error | denied | interrupted)
  ResultMessage                                 -> Usage (per attempt), or AttemptFailed
  SystemMessage api_retry / permission_denied, a mid-stream break the CLI recovered
      from, an error message the run survived    -> informational Error / HookDecision

Failures raise: ``AttemptFailed(result_message, text)`` for error results,
``StreamBroken`` when the stream ends without a result, and the SDK's own exceptions
(ProcessError, CLIConnectionError, CLINotFoundError, ...). Retries belong to the
supervisor: the CLI runs with ``CLAUDE_CODE_MAX_RETRIES`` = ``[claude] cli_max_retries``
(default 0) so a 529 does not hide inside it for minutes.

Sessions: the Claude session id is derived from (Shepherd session, subtask, generation)
so it is known even after a restart, and kept in ``ctx.state``. A restart resumes it
(``resume=``) with ``ctx.prompt_extra`` (or a short "continue") as the new user turn: the
original prompt is never sent twice. The transcript is mirrored into our database
(``core.store.open_claude_session_store``), so a resume works with an empty
CLAUDE_CONFIG_DIR. A repair (``ctx.repair``) forks the session at the last message before
the tool use the API rejects (``resume_session_at`` + ``fork_session``: the next
generation), and the agent is told what was dropped.

Approvals (``ctx.approvals``, the contract in ``core.approvals``; without a gate nothing
here changes): the PreToolUse hook answers "ask" for a gated tool, so the CLI consults
``can_use_tool`` even where ``allowed_tools``/``acceptEdits`` would allow it (the SDK's
shadowing warning is silenced: it is intended, and stderr would corrupt the TUI). The
callback yields ``ApprovalRequested`` after the call's ``ToolStarted``; a rule (or a
session-wide yes) adds ``ApprovalDecided(source="rule")`` and allows at once; otherwise it
awaits ``gate.ask``: yes -> the tool runs; no -> the tool's result is
``prompts.approval_denied(reason)`` and its ``tool.finished`` is "denied". A call whose ask
is withdrawn or cancelled gets no ``tool.finished`` (it stays awaiting). Calls still
awaiting from an earlier runner (``gate.reask``) are withdrawn first
(``tool.finished(interrupted)``), the conversation is rewound to before the turn holding
them (``resume_session_at`` + ``fork_session``, like the repair), the agent is told, and
its re-issued call is asked with ``reask_of`` = the old id.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from shepherd.core import prompts
from shepherd.core.approvals import ApprovalWithdrawn, AwaitingCall
from shepherd.core.backends.base import AttemptContext, NoCredentials
from shepherd.core.backends.claude_hooks import HookPolicy
from shepherd.core.errors import AttemptFailed, StreamBroken, classify
from shepherd.core.events import (
    ApprovalDecided,
    ApprovalRequested,
    Error,
    Event,
    HookDecision,
    MessageCompleted,
    TextDelta,
    ThinkingDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)

log = logging.getLogger("shepherd.claude")

OUTPUT_LIMIT = 20_000  # characters of a tool result kept in tool.finished
POST_HOOK_WAIT_S = 5.0  # bound on waiting for a Post hook the CLI should already have run
INTERRUPT_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 6.0  # interrupt + wait for the worker + disconnect stays under the engine's 10 s
_CONTINUE_FALLBACK = "[Shepherd] Continue the task from where you left off."
# what the agent gets when a tool that is neither gated nor allowed reaches can_use_tool:
# the CLI's own words without a callback (no one here grants it), so nothing changes for it
NOT_ALLOWED = "Claude requested permissions to use {tool}, but you haven't granted it yet."
WITHDRAWN = "[Shepherd] This tool call was withdrawn before anyone answered its approval; it did not run."
REASK_REWOUND = "withdrawn: rewound before this call"
REASK_NOT_STORED = "withdrawn: not in the stored conversation, which was resumed without it"

from shepherd.core.backends.claude_config import (
    DEFAULT_ALLOWED_TOOLS, NO_CREDENTIALS, ClaudeConfig, cli_env, credential_source,
    subprocess_scrub_available,
)
from shepherd.core.records import record
from shepherd.core.backends.claude_transcript import (
    RepairPoint, _describe_call, _get, _position, _text_of, find_repair_point, repair_point_before, session_uuid,
)



# --- the backend ------------------------------------------------------------------------------


class ClaudeBackend:
    """``env`` is laid over os.environ for the CLI (tests point it at a fake API)."""

    name = "claude"

    def __init__(self, *, env: Mapping[str, str] | None = None, cli_path: str | None = None) -> None:
        from shepherd.core.secrets import register_env

        self.env = dict(env or {})
        self.cli_path = cli_path
        register_env(self.env)  # its keys are secrets too, though not in os.environ

    def effective_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def check_available(self, task: Any) -> None:
        """Fail before anything runs (raises BackendUnavailable): no credentials, or bad
        ``[claude]`` options. Cheap: no SDK import, no CLI start."""
        if credential_source(self.effective_env()) is None:
            raise NoCredentials(NO_CREDENTIALS)
        ClaudeConfig.from_task(task)

    async def attempt(self, ctx: AttemptContext) -> AsyncIterator[Event]:
        run = _Attempt(self, ctx)  # raises BackendUnavailable at once
        run.start()
        try:
            while True:
                item = await run.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await run.shutdown()


_END = object()


@record
class _MessageState:
    texts: list[str] = field(default_factory=list)  # completed text blocks
    streamed: str = ""  # text deltas since the last completed text block
    thinking_streamed: bool = False


class _Attempt:
    """One attempt: a worker task owns the client; events go through ``queue``."""

    def __init__(self, backend: ClaudeBackend, ctx: AttemptContext) -> None:
        self.ctx = ctx
        self.env = backend.effective_env()
        if credential_source(self.env) is None:
            raise NoCredentials(NO_CREDENTIALS)
        self.config = ClaudeConfig.from_task(ctx.task)
        self.cli_path = self.config.cli_path or backend.cli_path
        self.extra_env = {**backend.env, **cli_env(self.env, self.config, tuple(getattr(ctx.task, "pass_env", ())))}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.client: Any = None
        self.connected = False
        self.closing = False
        self.result_seen = False
        self.interrupt_sent = False
        self.stop_interrupt = False  # the interrupt was ours, for ctx.stop_after_turn
        self.at_boundary = False  # between turns: every tool call answered, no new output yet
        self.messages: dict[str, _MessageState] = {}
        self.current_message: str = ""
        self.started: set[str] = set()
        self.open_calls: dict[str, str] = {}  # call id -> tool name
        self.denied: dict[str, str] = {}  # call id -> reason (our hook or the CLI's permissions)
        # approvals (ctx.approvals): calls whose ask was withdrawn or cancelled (no tool.finished),
        # the inputs the stream showed, the earlier calls a re-issued one may ask again
        self.gate = ctx.approvals
        self.awaiting: set[str] = set()
        self.block_inputs: dict[str, dict[str, Any]] = {}
        self.reask_left: list[AwaitingCall] = list(self.gate.reask) if self.gate is not None else []
        self.withdrawn: ApprovalWithdrawn | None = None
        self.pending_error: Any = None  # an error AssistantMessage, until we know if the run survived
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.tasks: set[asyncio.Task[Any]] = set()
        extra_roots = []
        tmp = self.env.get("CLAUDE_CODE_TMPDIR") or self.env.get("TMPDIR") or "/tmp"
        extra_roots.append(Path(tmp) / f"claude-{os.getuid()}" if hasattr(os, "getuid") else Path(tmp))
        config_dir = Path(self.env.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude").expanduser()
        extra_roots.append(config_dir / "projects")
        self.config_dir = config_dir
        tools = set(self.config.allowed_tools)
        self.policy = HookPolicy(
            ctx.workspace, max_subagents=self.config.max_subagents,
            subagents_allowed=bool(tools & {"Task", "Agent"}) or self.config.permission_mode == "bypassPermissions",
            extra_read_roots=extra_roots,
            approvals=self.gate.policy if self.gate is not None else None,
        )

    # --- plumbing -----------------------------------------------------------------------

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._main(), name="claude-attempt")

    def emit(self, ev: Event) -> None:
        self.queue.put_nowait(ev)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _stderr(self, line: str) -> None:
        self.stderr_tail.append(line)
        log.info("cli: %s", line.rstrip())

    async def shutdown(self) -> None:
        """Early close (or normal end): interrupt the CLI, let the worker disconnect; bounded."""
        worker = self.worker
        if worker is None or worker.done():
            return
        self.closing = True
        if self.connected and not self.result_seen and not self.interrupt_sent:
            self.interrupt_sent = True
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.client.interrupt(), INTERRUPT_TIMEOUT_S)
        done, _ = await asyncio.wait({worker}, timeout=CLOSE_TIMEOUT_S / 2)
        if not done:
            worker.cancel()
            await asyncio.wait({worker}, timeout=CLOSE_TIMEOUT_S / 2)
        for t in list(self.tasks):
            t.cancel()

    # --- the worker -----------------------------------------------------------------------

    async def _main(self) -> None:
        store = None
        try:
            # the first import costs ~1 s: not on the event loop (the TUI and heartbeats run there)
            await asyncio.to_thread(importlib.import_module, "claude_agent_sdk")
            store = self._open_store()
            options, prompt = await self._plan(store)
            await self._run_client(options, prompt)
        except asyncio.CancelledError:
            if not self.closing:
                self.queue.put_nowait(asyncio.CancelledError())
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            self.queue.put_nowait(e)
        finally:
            for t in list(self.tasks):
                t.cancel()
            if store is not None:
                with contextlib.suppress(Exception):
                    await store.close()
            self.queue.put_nowait(_END)

    def _open_store(self) -> Any:
        if self.ctx.store is not None and hasattr(self.ctx.store, "claude_session_store"):
            return self.ctx.store.claude_session_store()  # its close() leaves the Store open
        if self.ctx.db_path is None:
            return None
        from shepherd.core.store import open_claude_session_store

        return open_claude_session_store(self.ctx.db_path)

    async def _run_client(self, options: Any, prompt: str) -> None:
        from claude_agent_sdk import ClaudeSDKClient

        client = ClaudeSDKClient(options)
        self.client = client
        try:
            await client.connect()
            self.connected = True
            if self.closing:
                return
            self._spawn(self._watch_stop())
            await client.query(prompt)
            ended = False
            async for msg in client.receive_messages():
                if await self._handle(msg):
                    ended = True
                    break
            if not ended and not self.closing:
                if self.withdrawn is not None:
                    raise self.withdrawn
                if self.pending_error is not None:  # the CLI reported an API error, then went away
                    err, self.pending_error = self.pending_error, None
                    raise AttemptFailed(err, _text_of(err.content) or f"assistant error: {err.error}")
                tail = " | ".join(list(self.stderr_tail)[-3:])
                raise StreamBroken("the Claude CLI stream ended without a result" + (f" ({tail})" if tail else ""))
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await client.disconnect()

    # --- session planning -------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return self.ctx.state.setdefault("claude", {})

    def _sid(self, generation: int) -> str:
        return session_uuid(self.ctx.session_id, self.ctx.subtask.id, generation)

    async def _known_sessions(self, store: Any) -> set[str]:
        """Claude session ids with a transcript for this workspace: in the database, or
        (without one) in the CLI's own projects directory."""
        from claude_agent_sdk import project_key_for_directory

        key = project_key_for_directory(str(self.ctx.workspace))
        known: set[str] = set()
        if store is not None:
            with contextlib.suppress(Exception):
                known.update(str(s["session_id"]) for s in await store.list_sessions(key))
        with contextlib.suppress(OSError):
            known.update(p.stem for p in (self.config_dir / "projects" / key).glob("*.jsonl"))
        return known

    def _latest(self, known: set[str]) -> int | None:
        """The newest generation of this subtask's session that exists, if any."""
        state = self._state()
        if "generation" in state and self._sid(int(state["generation"])) in known:
            return int(state["generation"])
        found = None
        for g in range(0, 256):
            if self._sid(g) in known:
                found = g
            elif found is not None or g > 0:
                break
        return found

    async def _transcript(self, store: Any, sid: str, calls: tuple[str, ...] = ()) -> list[Any]:
        """The stored conversation: the database's mirror, or the CLI's own file when the
        mirror is empty — or, for a re-ask, when the mirror lags behind the file (it may not
        hold the awaiting call yet when a runner dies) but holds the message to rewind to."""
        from claude_agent_sdk import get_session_messages_from_store

        cwd = str(self.ctx.workspace)
        msgs: list[Any] = []
        if store is not None:
            with contextlib.suppress(Exception):
                msgs = await get_session_messages_from_store(store, sid, directory=cwd)
        if not msgs:  # no database: the CLI's own transcript file
            return await self._cli_transcript(sid)
        if calls and repair_point_before(msgs, list(calls)) is None:
            from_file = await self._cli_transcript(sid)
            point = repair_point_before(from_file, list(calls))
            if point is not None and any(str(_get(m, "uuid")) == point.resume_at for m in msgs):
                return from_file
        return msgs

    async def _cli_transcript(self, sid: str) -> list[Any]:
        from claude_agent_sdk import InMemorySessionStore, get_session_messages_from_store, project_key_for_directory

        cwd = str(self.ctx.workspace)
        path = self.config_dir / "projects" / project_key_for_directory(cwd) / f"{sid}.jsonl"
        with contextlib.suppress(OSError, ValueError):
            mem = InMemorySessionStore()
            entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            await mem.append({"project_key": project_key_for_directory(cwd), "session_id": sid}, entries)
            return await get_session_messages_from_store(mem, sid, directory=cwd)
        return []

    async def _plan(self, store: Any) -> tuple[Any, str]:
        """Which session to run (fresh, resumed, or repaired) and the user turn to send."""
        ctx, state = self.ctx, self._state()
        extra = ctx.prompt_extra.strip()
        resume: str | None = None
        resume_at: str | None = None
        fork = False
        known = await self._known_sessions(store)
        latest = self._latest(known) if ctx.continue_history else None
        reask = tuple(self.gate.reask) if self.gate is not None else ()
        if latest is not None:
            resume = self._sid(latest)
            generation = latest
            prompt = extra or _continue_prompt()
            messages = (await self._transcript(store, resume, tuple(c.call_id for c in reask))
                        if (ctx.repair or reask) else [])
            point = find_repair_point(messages) if ctx.repair else None
            if ctx.repair and point is None:
                log.warning("repair asked for, but session %s has no tool use to rewind; resuming as is", resume)
            ask_point = repair_point_before(messages, [c.call_id for c in reask]) if reask else None
            # the earlier rewind of the two covers both
            use_reask = ask_point is not None and (
                point is None or _position(messages, ask_point.resume_at) <= _position(messages, point.resume_at))
            chosen = ask_point if use_reask else point
            if chosen is not None:
                resume_at, fork = chosen.resume_at, True
                generation = latest + 1
                while self._sid(generation) in known:
                    generation += 1
            if point is not None:
                state["repairs"] = int(state.get("repairs", 0)) + 1
                log.info("repairing session %s: rewinding to %s (%s)", resume, resume_at,
                         "rejected tool use found" if point.found else "last tool turn")
            notices = []
            if reask:  # found, the calls are rewound (by their own point or an earlier repair one)
                notices.append(self._reask_notice(reask, ask_point))
            if point is not None and not (use_reask and ask_point is not None
                                          and ask_point.resume_at == point.resume_at):
                notices.append(prompts.repair_notice(point.describe()))
            if notices:
                prompt = "\n\n".join(notices) + ("\n\n" + extra if extra else "")
        elif reask:
            # no conversation to rewind (never stored): the calls are withdrawn all the same
            self._reask_notice(reask, None)
            generation = 0
            newest = self._latest(known)
            if newest is not None:
                generation = newest + 1
            prompt = ctx.prompt + ("\n\n" + extra if extra else "")
        else:
            # a fresh conversation: the original prompt (with any retry context) is the user turn
            generation = 0
            newest = self._latest(known)
            if newest is not None:
                generation = newest + 1
            prompt = ctx.prompt + ("\n\n" + extra if extra else "")
        sid = self._sid(generation)
        state.update(session_id=sid, generation=generation)
        if ctx.strip_images:
            log.info("strip_images: the Claude CLI already drops images the API rejected; resuming")
        return self._options(resume=resume, resume_at=resume_at, fork=fork, session_id=sid, store=store), prompt

    def _reask_notice(self, reask: tuple[AwaitingCall, ...], point: RepairPoint | None) -> str:
        """Withdraw the calls asked again (``tool.finished`` first, before anything of this
        attempt) and say what the agent is told."""
        for c in reask:
            self.emit(ToolFinished(call_id=c.call_id, status="interrupted",
                                   output=REASK_REWOUND if point is not None else REASK_NOT_STORED))
        ids = {c.call_id for c in reask}
        calls = [_describe_call(c.tool, c.input, c.call_id) for c in reask]
        if point is not None:
            calls += [_describe_call(name, inp, cid) + " (rewound with it; it may have run already)"
                      for cid, name, inp in point.dropped_calls if cid not in ids]
        else:
            log.info("re-ask: %s not in the stored conversation; resuming it as is", ", ".join(sorted(ids)))
        return prompts.approval_reask_notice(calls)

    def _options(self, *, resume: str | None, resume_at: str | None, fork: bool, session_id: str,
                 store: Any) -> Any:
        from claude_agent_sdk import ClaudeAgentOptions

        cfg = self.config
        kwargs: dict[str, Any] = dict(
            cwd=str(self.ctx.workspace),
            env=self.extra_env,
            stderr=self._stderr,
            model=cfg.model,
            permission_mode=cfg.permission_mode,
            allowed_tools=list(cfg.allowed_tools),
            disallowed_tools=list(cfg.disallowed_tools),
            max_turns=cfg.max_turns,
            max_budget_usd=cfg.max_budget_usd,
            include_partial_messages=True,
            hooks=self.policy.hooks(),
            setting_sources=list(cfg.setting_sources) if cfg.setting_sources is not None else None,
        )
        if self.gate is not None:
            import warnings

            from claude_agent_sdk.types import CanUseToolShadowedWarning

            # intended: the PreToolUse hook's "ask" reaches the callback for gated tools; the
            # warning would print on stderr, under the TUI
            warnings.filterwarnings("ignore", category=CanUseToolShadowedWarning)
            kwargs["can_use_tool"] = self._can_use_tool
        if self.cli_path:
            kwargs["cli_path"] = self.cli_path
        if store is not None:
            kwargs.update(session_store=store, session_store_flush="eager")
        if resume is None:
            kwargs["session_id"] = session_id
        else:
            kwargs["resume"] = resume
            if resume_at:
                kwargs.update(resume_session_at=resume_at, fork_session=fork, session_id=session_id)
        return ClaudeAgentOptions(**kwargs)

    # --- stop at the next safe point ---------------------------------------------------------

    async def _watch_stop(self) -> None:
        await self.ctx.stop_after_turn.wait()
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        if (self.ctx.stop_after_turn.is_set() and self.at_boundary and not self.open_calls
                and not self.interrupt_sent and not self.result_seen and self.connected):
            self.interrupt_sent = self.stop_interrupt = True
            self._spawn(self._interrupt())

    async def _interrupt(self) -> None:
        try:
            await asyncio.wait_for(self.client.interrupt(), INTERRUPT_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - the CLI may already be done
            log.info("interrupt failed: %s", e)

    # --- messages -> events ---------------------------------------------------------------

    async def _handle(self, msg: Any) -> bool:
        """Translate one SDK message; True when the attempt's stream is over."""
        from claude_agent_sdk import AssistantMessage, ResultMessage, StreamEvent, SystemMessage, UserMessage

        if isinstance(msg, ResultMessage):
            self.result_seen = True
            self._finish_result(msg)
            return True
        if isinstance(msg, StreamEvent):
            self._on_stream_event(msg)
        elif isinstance(msg, AssistantMessage):
            if msg.error:
                self._flush_pending_error()
                self.pending_error = msg
                return False
            self._flush_pending_error()
            self._on_assistant(msg)
        elif isinstance(msg, UserMessage):
            self._flush_pending_error()
            await self._on_user(msg)
        elif isinstance(msg, SystemMessage):
            self._on_system(msg)
        for d in self.policy.take_decisions(self.started):
            self._emit_decision(d.call_id, d.tool, d.reason)
        self._maybe_stop()
        return False

    def _flush_pending_error(self) -> None:
        """An error message the run went on after (e.g. a stream cut mid-response that the
        CLI recovered from) is only information."""
        msg, self.pending_error = self.pending_error, None
        if msg is None:
            return
        text = _text_of(msg.content)
        info = classify(AttemptFailed(msg, text))
        kind = "stream_broken" if "mid-response" in text.lower() or "mid-stream" in text.lower() else info.kind
        self.emit(Error(kind=kind, message=text or f"assistant error: {msg.error}",
                        exception_type="AssistantMessage", status_code=info.status_code, retryable=True))

    def _on_stream_event(self, msg: Any) -> None:
        if msg.parent_tool_use_id:  # a sub-agent's stream: its report arrives as the tool result
            return
        ev = msg.event or {}
        kind = ev.get("type")
        if kind == "message_start":
            self.current_message = str((ev.get("message") or {}).get("id") or f"m_{msg.uuid}")
            self.messages.setdefault(self.current_message, _MessageState())
            self.at_boundary = False
        elif kind == "content_block_delta":
            delta = ev.get("delta") or {}
            state = self.messages.setdefault(self.current_message, _MessageState())
            if delta.get("type") == "text_delta" and delta.get("text"):
                state.streamed += delta["text"]
                self.emit(TextDelta(message_id=self.current_message, text=delta["text"]))
            elif delta.get("type") == "thinking_delta" and delta.get("thinking"):
                state.thinking_streamed = True
                self.emit(ThinkingDelta(message_id=self.current_message, text=delta["thinking"]))
        elif kind == "message_stop":
            state = self.messages.get(self.current_message)
            if state is not None and state.streamed:
                # deltas that no full text block followed: the stream broke off mid-message and
                # the CLI asked again; close the partial message and say so
                state.texts.append(state.streamed)
                state.streamed = ""
                self.emit(MessageCompleted(message_id=self.current_message, text="\n\n".join(state.texts)))
                self.emit(Error(kind="stream_broken", retryable=True, exception_type="StreamEvent",
                                message="the response stream broke off mid-message; the Claude CLI asked again"))

    def _on_assistant(self, msg: Any) -> None:
        from claude_agent_sdk import TextBlock, ThinkingBlock, ToolUseBlock

        mid = msg.message_id or self.current_message or f"m_{msg.uuid}"
        top = not msg.parent_tool_use_id
        state = self.messages.setdefault(mid, _MessageState())
        for block in msg.content:
            if isinstance(block, TextBlock) and top:
                state.texts.append(block.text)
                state.streamed = ""
                self.emit(MessageCompleted(message_id=mid, text="\n\n".join(state.texts)))
            elif isinstance(block, ThinkingBlock) and top:
                if not state.thinking_streamed and block.thinking:
                    self.emit(ThinkingDelta(message_id=mid, text=block.thinking))
            elif isinstance(block, ToolUseBlock):
                self.block_inputs.setdefault(block.id, dict(block.input or {}))
                self._start_call(block.id, block.name, dict(block.input or {}))
        if top:
            self.at_boundary = False

    def _start_call(self, call_id: str, tool: str, tool_input: dict[str, Any]) -> None:
        if call_id in self.started:
            return
        self.started.add(call_id)
        self.open_calls[call_id] = tool
        self.emit(ToolStarted(call_id=call_id, name=tool, input=tool_input))

    # --- approvals (can_use_tool: runs in a task of the SDK's, on this loop) ------------------

    async def _can_use_tool(self, tool: str, tool_input: dict[str, Any], pctx: Any) -> Any:
        from claude_agent_sdk import PermissionResultAllow, PermissionResultDeny

        gate = self.gate
        call_id = str(getattr(pctx, "tool_use_id", None) or "")
        tool_input = dict(tool_input or {})
        # the request may come before the stream shows the call: start it here, then decide
        self._start_call(call_id, tool, tool_input)
        if gate is None or not gate.policy.gated(tool):
            # reached only for a tool nothing allows (not gated, not in allowed_tools): what the
            # CLI does without a callback (a permission denial), since no one here grants it
            message = NOT_ALLOWED.format(tool=tool)
            self._emit_decision(call_id, tool, message)
            return PermissionResultDeny(message=message)
        self.emit(ApprovalRequested(call_id=call_id, tool=tool, input=tool_input,
                                    reask_of=self._reask_of(call_id, tool, tool_input)))
        ruled = gate.rule_decision(tool, tool_input)
        if ruled is not None:
            self.emit(ApprovalDecided(call_id=call_id, decision="approved", source="rule", reason=ruled.reason,
                                      scope="call"))
            return PermissionResultAllow()
        try:
            decision = await gate.ask(call_id)
        except ApprovalWithdrawn as e:
            # the gate closed (shutdown, cancel): never approved, never denied; the call stays
            # awaiting and the attempt ends (the engine asks again after a resume)
            self.awaiting.add(call_id)
            if self.withdrawn is None:
                self.withdrawn = e
            if self.connected and not self.interrupt_sent and not self.result_seen:
                self.interrupt_sent = True
                self._spawn(self._interrupt())
            return PermissionResultDeny(message=WITHDRAWN, interrupt=True)
        except asyncio.CancelledError:
            self.awaiting.add(call_id)  # an interrupt or the CLI's cancel: the call stays awaiting
            raise
        if decision.approved:
            return PermissionResultAllow()
        message = prompts.approval_denied(decision.reason)
        self.denied[call_id] = message
        return PermissionResultDeny(message=message, interrupt=False)

    def _reask_of(self, call_id: str, tool: str, tool_input: dict[str, Any]) -> str | None:
        """The earlier, withdrawn call this one issues again (same tool and input), once."""
        inputs = [tool_input, self.block_inputs.get(call_id)]
        for i, old in enumerate(self.reask_left):
            if old.tool == tool and dict(old.input) in inputs:
                del self.reask_left[i]
                return old.call_id
        return None

    async def _on_user(self, msg: Any) -> None:
        from claude_agent_sdk import ToolResultBlock

        if not isinstance(msg.content, list):
            return
        had_results = False
        for block in msg.content:
            if not isinstance(block, ToolResultBlock):
                continue
            had_results = True
            call_id = block.tool_use_id
            # synchronise with the Post hook (it runs in the SDK's reader task): its effects
            # (the sub-agent slot) must land before we move past this result
            if call_id in self.awaiting:  # its ask was withdrawn: it stays awaiting, no tool.finished
                self.policy.release(call_id)
                self.open_calls.pop(call_id, None)
                continue
            if self.policy.expects_post(call_id) and call_id not in self.denied and not self.interrupt_sent:
                if not await self.policy.wait_settled(call_id, POST_HOOK_WAIT_S):
                    log.debug("no Post hook for %s within %.0f s", call_id, POST_HOOK_WAIT_S)
            self.policy.release(call_id)
            for d in self.policy.take_decisions({call_id}):
                self._emit_decision(d.call_id, d.tool, d.reason)
            output = _text_of(block.content)
            info = self.policy.post_info.get(call_id, {})
            if call_id in self.denied:
                status = "denied"
            elif block.is_error and (self.interrupt_sent or info.get("interrupted")):
                status = "interrupted"
            elif block.is_error:
                status = "error"
            else:
                status = "ok"
            duration = info.get("duration_ms")
            self.open_calls.pop(call_id, None)
            self.emit(ToolFinished(call_id=call_id, status=status,
                                   output=prompts.truncate_middle(output, OUTPUT_LIMIT),
                                   duration_s=round(duration / 1000.0, 3) if duration is not None else None))
        if had_results and not msg.parent_tool_use_id and not self.open_calls:
            self.at_boundary = True

    def _emit_decision(self, call_id: str, tool: str, reason: str) -> None:
        if call_id in self.denied:
            return
        self.denied[call_id] = reason
        self.emit(HookDecision(call_id=call_id, tool=tool, decision="deny", reason=reason))

    def _on_system(self, msg: Any) -> None:
        data = msg.data or {}
        if msg.subtype == "init":
            sid = data.get("session_id")
            if sid:
                self._state()["session_id"] = sid
        elif msg.subtype == "api_retry":
            status = data.get("error_status")
            err = str(data.get("error") or "")
            info = classify(AttemptFailed({"is_error": True, "api_error_status": status,
                                           "result": f"API Error: {status} {err}".strip()}))
            delay = (data.get("retry_delay_ms") or 0) / 1000.0
            self.emit(Error(kind=info.kind, retryable=True, status_code=status, exception_type="api_retry",
                            message=f"CLI retry {data.get('attempt')}/{data.get('max_retries')} in "
                                    f"{delay:.1f} s after: {info.message}"))
        elif msg.subtype == "permission_denied":
            call_id = str(data.get("tool_use_id") or "")
            if call_id:
                self._emit_decision(call_id, str(data.get("tool_name") or ""),
                                    str(data.get("message") or "permission denied"))
        elif msg.subtype == "mirror_error":
            log.warning("transcript mirror to the database failed: %s", data.get("error"))

    def _finish_result(self, msg: Any) -> None:
        for d in self.policy.take_decisions():
            self._emit_decision(d.call_id, d.tool, d.reason)
        usage = msg.usage or {}
        tokens_in = sum(int(usage.get(k) or 0) for k in
                        ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        tokens_out = int(usage.get("output_tokens") or 0)
        if tokens_in or tokens_out or msg.total_cost_usd:
            self.emit(Usage(input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=msg.total_cost_usd))
        aborted = msg.terminal_reason in ("aborted_streaming", "aborted_tools")
        failed = msg.is_error or msg.subtype != "success"
        if self.withdrawn is not None and not self.closing:
            raise self.withdrawn  # the gate closed while a call waited: the attempt is not finished
        if failed and (self.closing or (self.stop_interrupt and (aborted or msg.subtype == "error_during_execution"))):
            return  # the stop we asked for
        if not failed and msg.stop_reason == "refusal":  # a refusal is not a finished subtask
            raise AttemptFailed(msg, f"the model refused to continue: {(msg.result or '').strip()[:300]}")
        if failed:
            evidence = (msg, self.pending_error) if self.pending_error is not None else msg
            text = msg.result or (_text_of(self.pending_error.content) if self.pending_error is not None else "") \
                or "; ".join(msg.errors or []) or f"Claude run ended with {msg.subtype}"
            self.pending_error = None
            raise AttemptFailed(evidence, text)
        self._flush_pending_error()


def _continue_prompt() -> str:
    fn = getattr(prompts, "continue_prompt", None)
    return fn() if callable(fn) else _CONTINUE_FALLBACK


__all__ = [
    "ClaudeBackend", "ClaudeConfig", "RepairPoint", "credential_source", "cli_env", "find_repair_point",
    "repair_point_before", "session_uuid", "subprocess_scrub_available", "NO_CREDENTIALS", "DEFAULT_ALLOWED_TOOLS",
]
