"""The offline backend: the real openai-agents Runner, real workspace tools and sessions;
only the model is scripted (DESIGN "Scripted backend scenarios").

Each subtask's ``steps`` are consumed one per model call, in order, across attempts (the
cursor lives in ``ctx.state``). A step streams its text as word-sized deltas
(``delay_ms`` apart, through ``ctx.clock``), emits its tool calls as parallel function
calls, or raises the real SDK exception for ``fail`` (at the start of the call, or after
``after_deltas`` deltas). When the steps run out the model gives a short final answer.

Tool approvals (``approve_tools``) take the openai backend's code path (agents_attempt):
openai-agents' ``needs_approval``, the run's interruptions and resuming from its state. A
restored state continues the steps after the step whose calls await (the cursor is found
from the call ids in the history).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent
from agents.models.interface import Model, ModelTracing
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningTextDeltaEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from shepherd.core.backends.agents_attempt import run_agent_attempt, tools_for
from shepherd.core.backends.agents_common import SessionFactory, agent_instructions
from shepherd.core.backends.base import AttemptContext
from shepherd.core.events import Event
from shepherd.core.records import record
from shepherd.core.task import Step

CURSOR_KEY = "scripted_cursor"
FILLER_TEXT = "Working through the task step by step, checking each file as I go along."
FAKE_API_URL = "https://api.openai.com/v1/responses"  # only labels the synthetic request


def final_message() -> str:
    try:
        from shepherd.core.prompts import final_message_when_steps_run_out

        return final_message_when_steps_run_out()
    except ImportError:
        return "Done: no more scripted steps for this subtask."


def split_deltas(text: str) -> list[str]:
    """Word-ish chunks that join back to the exact text."""
    return re.findall(r"\s*\S+\s*|\s+", text) if text else []


# --- real SDK exceptions per fail kind ---------------------------------------------------------


def _httpx() -> Any:
    """The HTTP library the installed openai client uses (openai 3.x: the ``httpx2`` fork)."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # older openai releases
        import httpx

        return httpx


def _status_error(cls: type[Exception], status: int, message: str, *, code: str | None = None,
                  err_type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> Exception:
    """Built the way the openai client builds it from an HTTP error response."""
    httpx = _httpx()
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    request = httpx.Request("POST", FAKE_API_URL)
    response = httpx.Response(status, request=request, headers=headers or {}, json=body)
    return cls(f"Error code: {status} - {body}", response=response, body=body["error"])  # type: ignore[call-arg]


def make_error(kind: str, *, message: str | None = None, retry_after: float | None = None,
               max_turns: int = 50) -> Exception:
    """The exception the real SDK raises for an error of ``kind``."""
    import openai
    from agents.exceptions import MaxTurnsExceeded, ModelBehaviorError, ModelRefusalError

    if kind == "tool_concurrency":
        return _status_error(openai.BadRequestError, 400, message or "API Error: 400 due to tool use concurrency issues.")
    if kind == "rate_limit":
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        wait = f" Please try again in {retry_after:g}s." if retry_after is not None else ""
        return _status_error(openai.RateLimitError, 429, message or f"Rate limit reached for requests.{wait}",
                             code="rate_limit_exceeded", err_type="requests", headers=headers)
    if kind == "auth":
        return _status_error(openai.AuthenticationError, 401, message or "Incorrect API key provided.",
                             code="invalid_api_key")
    if kind == "context_overflow":
        return _status_error(
            openai.BadRequestError, 400,
            message or "prompt is too long: 212000 tokens > 200000 maximum. This model's maximum context "
            "length was exceeded.", code="context_length_exceeded")
    if kind == "content_policy":
        return ModelRefusalError(message or "I can't help with that: the request was flagged by the content policy.")
    if kind == "images_rejected":
        return _status_error(openai.BadRequestError, 400,
                             message or "Invalid content: this model does not support image inputs.",
                             code="image_input_not_supported")
    if kind == "transient":
        return _status_error(openai.InternalServerError, 500,
                             message or "The server had an error while processing your request.",
                             err_type="server_error")
    if kind == "stream_broken":
        return ModelBehaviorError(message or "Model did not produce a final response!")
    if kind == "invalid_request":
        return _status_error(openai.BadRequestError, 400,
                             message or "Invalid value for 'input[0].role': unsupported role.", code="invalid_value")
    if kind == "max_turns":
        return MaxTurnsExceeded(message or f"Max turns ({max_turns}) exceeded")
    if kind == "unknown":
        return RuntimeError(message or "scripted failure of an unknown kind")
    raise ValueError(f"unknown fail kind {kind!r}")


def _mark_drain(error: Exception) -> Exception:
    """Ask the SDK stream to deliver the queued pre-error deltas before raising (it does so
    for some errors of its own), so 'N deltas, then the error' holds however slowly the
    consumer reads. Private SDK hook; without it only the asyncio.sleep(0) pacing helps."""
    try:
        from agents.exceptions import _mark_error_to_drain_stream_events

        _mark_error_to_drain_stream_events(error)
    except ImportError:
        pass
    return error


# --- the scripted model ---------------------------------------------------------------------------


@record
class ScriptedCall:
    """One model call, recorded for tests and debugging."""

    subtask_id: str
    attempt: int
    step_index: int | None  # None: the final answer after the steps ran out
    input: list[Any]
    instructions: str | None
    tool_names: list[str]


def _usage(input_chars: int, output_chars: int) -> ResponseUsage:
    inp, out = max(1, input_chars // 4), max(1, output_chars // 4)
    return ResponseUsage(input_tokens=inp, output_tokens=out, total_tokens=inp + out,
                         input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
                         output_tokens_details=OutputTokensDetails(reasoning_tokens=0))


class StepModel(Model):
    """A ``Model`` that plays a subtask's scripted steps as Responses stream events."""

    def __init__(self, ctx: AttemptContext, calls: list[ScriptedCall]) -> None:
        self.ctx = ctx
        self.calls = calls
        self._responses = 0

    # the cursor ------------------------------------------------------------------------
    def _next_step(self, input: list[Any]) -> tuple[int | None, Step | None]:
        state = self.ctx.state
        if CURSOR_KEY not in state:
            state[CURSOR_KEY] = self._cursor_from_history(input)
        cursor = state[CURSOR_KEY]
        steps = self.ctx.subtask.steps
        if cursor >= len(steps):
            return None, None
        state[CURSOR_KEY] = cursor + 1
        return cursor, steps[cursor]

    def _cursor_from_history(self, input: list[Any]) -> int:
        """A new process resuming a session has no cursor: continue after the last step
        whose tool calls are in the history (text-only steps leave no trace)."""
        pattern = re.compile(rf"^call_{re.escape(self.ctx.subtask.id)}_(\d+)_\d+(?:_[0-9a-f]+)?$")
        last = -1
        for item in input:
            if isinstance(item, dict) and item.get("type") == "function_call":
                m = pattern.match(str(item.get("call_id", "")))
                if m:
                    last = max(last, int(m.group(1)))
        return last + 1

    async def _pause(self, delay_ms: int) -> None:
        # always yield to the loop between events so the consumer sees each delta
        if delay_ms > 0:
            await self.ctx.clock.sleep(delay_ms / 1000)
        else:
            await asyncio.sleep(0)

    # the Model interface -----------------------------------------------------------------
    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                           tools: list[Any], output_schema: Any, handoffs: list[Any],
                           tracing: ModelTracing, *, previous_response_id: str | None,
                           conversation_id: str | None, prompt: Any) -> Any:
        from agents.items import ModelResponse
        from agents.usage import Usage

        final: Response | None = None
        async for ev in self.stream_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
            previous_response_id=previous_response_id, conversation_id=conversation_id, prompt=prompt,
        ):
            if isinstance(ev, ResponseCompletedEvent):
                final = ev.response
        assert final is not None and final.usage is not None
        u = final.usage
        return ModelResponse(output=list(final.output), response_id=final.id,
                             usage=Usage(requests=1, input_tokens=u.input_tokens,
                                         output_tokens=u.output_tokens, total_tokens=u.total_tokens))

    async def stream_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                              tools: list[Any], output_schema: Any, handoffs: list[Any],
                              tracing: ModelTracing, *, previous_response_id: str | None,
                              conversation_id: str | None, prompt: Any) -> AsyncIterator[Any]:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        index, step = self._next_step(items)
        self.calls.append(ScriptedCall(
            subtask_id=self.ctx.subtask.id, attempt=self.ctx.attempt, step_index=index,
            input=copy.deepcopy(items), instructions=system_instructions,
            tool_names=[getattr(t, "name", "?") for t in tools],
        ))
        if step is None:
            step = Step(text=final_message())
        if step.fail and step.after_deltas <= 0:
            raise self._error(step)
        async for ev in self._play(step, index, len(json.dumps(items, default=str))):
            yield ev

    def _error(self, step: Step) -> Exception:
        assert step.fail is not None
        return make_error(step.fail, message=step.message, retry_after=step.retry_after,
                          max_turns=self.ctx.task.max_turns)

    async def _play(self, step: Step, index: int | None, input_chars: int) -> AsyncIterator[Any]:
        self._responses += 1
        tag = f"{self.ctx.subtask.id}_{index if index is not None else 'end'}_{self.ctx.attempt}_{self._responses}"
        resp_id = f"resp_{tag}"
        seq = 0

        def nxt() -> int:
            nonlocal seq
            seq += 1
            return seq - 1

        base = dict(id=resp_id, created_at=0, model="scripted", object="response", tool_choice="auto",
                    tools=[], top_p=None, parallel_tool_calls=True)
        yield ResponseCreatedEvent(type="response.created", sequence_number=nxt(),
                                   response=Response(output=[], status="in_progress", **base))
        output: list[Any] = []
        out_chars = 0

        if step.thinking:
            for chunk in split_deltas(step.thinking):
                await self._pause(step.delay_ms)
                yield ResponseReasoningTextDeltaEvent(
                    type="response.reasoning_text.delta", item_id=f"rs_{tag}", output_index=0,
                    content_index=0, delta=chunk, sequence_number=nxt())

        text = step.text
        fail_after = step.after_deltas if step.fail else 0
        if fail_after and not text:
            text = FILLER_TEXT
        chunks = split_deltas(text)
        while fail_after and len(chunks) < fail_after:
            chunks += split_deltas(" " + FILLER_TEXT)
        if chunks:
            msg_id = f"msg_{tag}"
            oi = len(output)
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", output_index=oi, sequence_number=nxt(),
                item=ResponseOutputMessage(id=msg_id, type="message", role="assistant",
                                           status="in_progress", content=[]))
            yield ResponseContentPartAddedEvent(
                type="response.content_part.added", item_id=msg_id, output_index=oi, content_index=0,
                sequence_number=nxt(),
                part=ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[]))
            for n, chunk in enumerate(chunks, 1):
                await self._pause(step.delay_ms)
                yield ResponseTextDeltaEvent(
                    type="response.output_text.delta", item_id=msg_id, output_index=oi, content_index=0,
                    delta=chunk, logprobs=[], sequence_number=nxt())
                if fail_after and n >= fail_after:
                    await asyncio.sleep(0)  # let the consumer take the last delta
                    raise _mark_drain(self._error(step))
            full = "".join(chunks)
            out_chars += len(full)
            part = ResponseOutputText(type="output_text", text=full, annotations=[], logprobs=[])
            yield ResponseTextDoneEvent(type="response.output_text.done", item_id=msg_id, output_index=oi,
                                        content_index=0, text=full, logprobs=[], sequence_number=nxt())
            yield ResponseContentPartDoneEvent(type="response.content_part.done", item_id=msg_id,
                                               output_index=oi, content_index=0, part=part,
                                               sequence_number=nxt())
            message = ResponseOutputMessage(id=msg_id, type="message", role="assistant",
                                            status="completed", content=[part])
            output.append(message)
            yield ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=oi,
                                              item=message, sequence_number=nxt())

        for i, spec in enumerate(step.tools):
            # a random tail keeps ids unique when a resumed process replays a step whose
            # calls never reached the history (they were closed as interrupted)
            call_id = f"call_{self.ctx.subtask.id}_{index if index is not None else 'end'}_{i}_{os.urandom(3).hex()}"
            args = json.dumps(spec.args, ensure_ascii=False)
            out_chars += len(args) + len(spec.name)
            oi = len(output)
            call = ResponseFunctionToolCall(id=f"fc_{tag}_{i}", call_id=call_id, type="function_call",
                                            name=spec.name, arguments=args, status="completed")
            await self._pause(0)
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", output_index=oi, sequence_number=nxt(),
                item=call.model_copy(update={"arguments": "", "status": "in_progress"}))
            yield ResponseFunctionCallArgumentsDeltaEvent(
                type="response.function_call_arguments.delta", item_id=call.id or call_id, output_index=oi,
                delta=args, sequence_number=nxt())
            yield ResponseFunctionCallArgumentsDoneEvent.model_validate(
                {"type": "response.function_call_arguments.done", "item_id": call.id or call_id,
                 "output_index": oi, "arguments": args, "name": spec.name, "sequence_number": nxt()})
            output.append(call)
            yield ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=oi,
                                              item=call, sequence_number=nxt())

        await asyncio.sleep(0)
        yield ResponseCompletedEvent(
            type="response.completed", sequence_number=nxt(),
            response=Response(output=output, status="completed", usage=_usage(input_chars, out_chars), **base))


class ScriptedBackend:
    """``Backend`` for ``backend = "scripted"``. ``calls`` records every model call
    (input, step index) of every attempt, for tests and debugging."""

    name = "scripted"

    def __init__(self, *, session_factory: SessionFactory | None = None) -> None:
        self._session_factory = session_factory
        self.calls: list[ScriptedCall] = []

    def make_agent(self, ctx: AttemptContext) -> Agent[Any]:
        return Agent(
            name="shepherd",
            instructions=agent_instructions(ctx.workspace, ctx.task),
            tools=tools_for(ctx),
            model=StepModel(ctx, self.calls),
        )

    async def attempt(self, ctx: AttemptContext) -> AsyncIterator[Event]:
        async for ev in run_agent_attempt(ctx, self.make_agent(ctx), self._session_factory):
            yield ev


__all__ = ["ScriptedBackend", "ScriptedCall", "StepModel", "make_error", "split_deltas", "CURSOR_KEY"]
