"""A session's events as OpenTelemetry spans (GenAI semantic conventions), sent OTLP/HTTP.

Names per the GenAI conventions (semantic-conventions v1.41 gen-ai-agent-spans.md): span
``invoke_agent {gen_ai.agent.name}`` and ``execute_tool {gen_ai.tool.name}``, with
``gen_ai.operation.name``, ``gen_ai.provider.name`` (and the older ``gen_ai.system``),
``error.type`` (``_OTHER`` when the kind is unknown). Our own details are ``shepherd.*``.

One trace per session: a root span for the session, an ``invoke_agent`` span per attempt
(its child), an ``execute_tool`` span per tool call (the attempt's child); a retry is a span
event ``retry`` on the failed attempt with ``error.type``. Trace and span ids are derived
from the session id and the seq of the event that opens the span, so exporting a session
twice sends the same trace (a collector deduplicates or shows it once).

Nothing here runs unless asked: the SDK (the ``otel`` extra) is imported lazily, and
nothing is sent when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is unset. Only what the events carry
is sent, never tool inputs or outputs, never environment values; every string that goes
out (names, titles, error messages: text from the model and the tools) passes the secret
scrubber on its way (``_to_sdk``), as everything Shepherd writes does. Spans are read by a
collector, never shown on this terminal, so they get no terminal sanitising (``safe``).

Live (``LiveExporter``, attached by core.engine.launch to every run when the endpoint is
set): each span goes out as soon as it closes (a tool call when it finishes, an attempt
when the next one starts or its subtask ends), the session's root span when it finishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import field
from typing import Any, Callable

from shepherd.core.events import (AttemptStarted, Error, Event, RetryScheduled, SessionFinished, SessionStarted,
                                  SubtaskFinished, SubtaskStarted, ToolFinished, ToolStarted, Usage)
from shepherd.core.records import record
from shepherd.core.secrets import Scrubber
from shepherd.core.text import safe  # for messages that reach the terminal (not for spans)

_log = logging.getLogger(__name__)
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_TYPES = (SessionStarted.type, SessionFinished.type, SubtaskStarted.type, AttemptStarted.type, Usage.type,
              Error.type, RetryScheduled.type, ToolStarted.type, ToolFinished.type, SubtaskFinished.type)
# gen_ai.provider.name's well-known values for our backends (others pass as they are).
_PROVIDERS = {"claude": "anthropic", "anthropic": "anthropic", "openai": "openai", "codex": "openai"}


class OtelUnavailable(Exception):
    """One line: the extra is missing, the endpoint is unset, or the collector refused."""


def endpoint() -> str:
    value = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(ENDPOINT_ENV) or ""
    if not value.strip():
        raise OtelUnavailable(f"{ENDPOINT_ENV} is not set: point it at an OTLP/HTTP collector "
                              "(e.g. http://localhost:4318)")
    return value.strip()


def require_sdk() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise OtelUnavailable("OpenTelemetry export needs the otel extra: pip install 'shepherd-agents[otel]'") \
            from None


def _id(bits: int, *parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1  # zero is the invalid id


def trace_id(session_id: str) -> int:
    return _id(128, "shepherd-trace", session_id)


def span_id(session_id: str, seq: int | str) -> int:
    return _id(64, "shepherd-span", session_id, seq)


def _text(value: object) -> str:
    """A string attribute from event data (scrubbed later, on the way out: ``_to_sdk``)."""
    return "" if value is None else str(value)


def _ns(ts: float) -> int:
    return int(ts * 1e9)


@record
class SpanData:
    """A span before the SDK sees it (plain data: tests and the live stream read it)."""
    name: str
    span_id: int
    parent_id: int | None
    start: float
    end: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None  # error.type; the span's status is ERROR when set


class SpanBuilder:
    """Fold a session's events (seq order) into spans; ``feed`` as they come (live) or all
    at once (a past session)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.root = SpanData("shepherd.session", span_id(session_id, "root"), None, 0.0,
                             attributes={"gen_ai.conversation.id": session_id})
        self.attempts: dict[tuple[str | None, int | None], SpanData] = {}
        self.tools: dict[str, SpanData] = {}
        self.backend, self.model = "", None
        self.last_ts = 0.0
        self.finished = False
        self._current: dict[str | None, SpanData] = {}  # subtask -> its open attempt
        self.created: list[SpanData] = []  # spans made since a live reader last took them

    def _attempt_of(self, ev: Event) -> SpanData:
        span = self.attempts.get((ev.subtask_id, ev.attempt)) if ev.attempt is not None else None
        return span or self._current.get(ev.subtask_id) or self.root

    def _close_attempt(self, span: SpanData | None, ts: float) -> None:
        if span is not None and span.end is None:
            span.end = ts

    def feed(self, ev: Event) -> None:
        ts = ev.ts or self.last_ts
        self.last_ts = max(self.last_ts, ts)
        if isinstance(ev, SessionStarted):
            self.root.start = ts
            self.backend, self.model = _text(ev.backend), ev.model and _text(ev.model)
            self.root.name = f"shepherd.session {_text(ev.title)[:80]}".strip()
            self.root.attributes.update({"shepherd.backend": self.backend, "shepherd.session.title": _text(ev.title)})
            if self.model:
                self.root.attributes["gen_ai.request.model"] = self.model
        elif isinstance(ev, AttemptStarted):
            self._close_attempt(self._current.get(ev.subtask_id), ts)
            agent = self.backend or "agent"
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                "gen_ai.provider.name": _PROVIDERS.get(agent, agent), "gen_ai.system": _PROVIDERS.get(agent, agent),
                "gen_ai.conversation.id": self.session_id, "gen_ai.usage.input_tokens": 0,
                "gen_ai.usage.output_tokens": 0, "shepherd.attempt.reason": _text(ev.reason)}
            if self.model:
                attrs["gen_ai.request.model"] = self.model
            if ev.subtask_id is not None:
                attrs["shepherd.subtask.id"] = _text(ev.subtask_id)
            if ev.attempt is not None:
                attrs["shepherd.attempt"] = ev.attempt
            span = SpanData(f"invoke_agent {agent}", span_id(self.session_id, ev.seq), self.root.span_id, ts,
                            attributes=attrs)
            self.attempts[(ev.subtask_id, ev.attempt)] = span
            self._current[ev.subtask_id] = span
            self.created.append(span)
        elif isinstance(ev, Usage):
            span = self._attempt_of(ev)
            a = span.attributes
            a["gen_ai.usage.input_tokens"] = a.get("gen_ai.usage.input_tokens", 0) + int(ev.input_tokens or 0)
            a["gen_ai.usage.output_tokens"] = a.get("gen_ai.usage.output_tokens", 0) + int(ev.output_tokens or 0)
            if ev.cost_usd is not None:
                a["shepherd.cost_usd"] = a.get("shepherd.cost_usd", 0.0) + float(ev.cost_usd)
        elif isinstance(ev, Error):
            span = self._attempt_of(ev)
            span.error = _text(ev.kind) or "_OTHER"
            span.attributes["error.type"] = span.error
            span.events.append(("exception", ts, {"exception.type": _text(ev.exception_type or ev.kind),
                                                  "exception.message": _text(ev.message)[:500]}))
        elif isinstance(ev, RetryScheduled):
            span = self._attempt_of(ev)
            span.events.append(("retry", ts, {"error.type": _text(ev.kind) or "_OTHER",
                                              "shepherd.retry.no": ev.retry_no,
                                              "shepherd.retry.max": ev.max_retries,
                                              "shepherd.retry.delay_s": ev.delay_s,
                                              "shepherd.retry.action": _text(ev.action)}))
        elif isinstance(ev, ToolStarted):
            parent = self._attempt_of(ev)
            name = _text(ev.name) or "tool"
            tool = self.tools[ev.call_id] = SpanData(
                f"execute_tool {name}", span_id(self.session_id, ev.seq), parent.span_id, ts,
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                            "gen_ai.tool.call.id": _text(ev.call_id), "gen_ai.conversation.id": self.session_id})
            self.created.append(tool)
        elif isinstance(ev, ToolFinished):
            span = self.tools.get(ev.call_id)
            if span is not None:
                span.end = ts if ev.duration_s is None else max(span.start, min(ts, span.start + ev.duration_s))
                span.attributes["shepherd.tool.status"] = _text(ev.status)
                if ev.status != "ok":
                    span.error = _text(ev.status)
                    span.attributes["error.type"] = span.error
        elif isinstance(ev, SubtaskFinished):
            self._close_attempt(self._current.pop(ev.subtask_id, None), ts)
        elif isinstance(ev, SessionFinished):
            self.root.end = ts
            self.root.attributes["shepherd.session.status"] = _text(ev.status)
            if ev.status != "done":
                self.root.error = _text(ev.status)
                self.root.attributes["error.type"] = self.root.error
            self.finished = True

    def spans(self) -> list[SpanData]:
        """Every span, open ones ended at the last event seen (a past session that stopped)."""
        out = [self.root, *self.attempts.values(), *self.tools.values()]
        for s in out:
            if s.end is None:
                s.end = self.last_ts
            if s is not self.root and s.start < self.root.start:
                self.root.start = s.start
        return out


def _to_sdk(session_id: str, spans: list[SpanData]) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event as SdkEvent, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    tid = trace_id(session_id)
    resource = Resource.create({"service.name": "shepherd"})
    scope = InstrumentationScope("shepherd")
    scrub = Scrubber().text  # one boundary for every string sent: secrets never leave

    def clean(attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: scrub(v) if isinstance(v, str) else v for k, v in attrs.items()}

    def ctx(sid: int) -> Any:
        return SpanContext(tid, sid, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    out = []
    for s in spans:
        # INTERNAL throughout: the agent loop runs in this process or a local subprocess (the
        # conventions' "invoke agent internal span"), tools run locally.
        kind = SpanKind.INTERNAL
        status = Status(StatusCode.ERROR, scrub(s.error)) if s.error else Status(StatusCode.UNSET)
        out.append(ReadableSpan(
            name=scrub(s.name), context=ctx(s.span_id), parent=ctx(s.parent_id) if s.parent_id else None,
            resource=resource, attributes=clean(s.attributes),
            events=[SdkEvent(n, clean(a), timestamp=_ns(t)) for n, t, a in s.events],
            kind=kind, status=status, start_time=_ns(s.start), end_time=_ns(s.end or s.start),
            instrumentation_scope=scope))
    return out


def send(session_id: str, spans: list[SpanData]) -> int:
    """Export synchronously (OTLP/HTTP protobuf to the standard env's endpoint); the count."""
    endpoint()
    require_sdk()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout)
    try:
        result = exporter.export(_to_sdk(session_id, spans))
    finally:
        exporter.shutdown()
    if result is not SpanExportResult.SUCCESS:
        raise OtelUnavailable(f"the collector at {safe(endpoint())} did not accept the spans")
    return len(spans)


async def session_spans(store: Any, session_id: str) -> list[SpanData]:
    builder = SpanBuilder(session_id)
    after = 0
    while True:
        page = await store.events(session_id, after_seq=after, limit=5000, types=OTEL_TYPES)
        for ev in page:
            builder.feed(ev)
        if len(page) < 5000:
            return builder.spans()
        after = page[-1].seq


async def export_session(store: Any, session_id: str) -> int:
    """A past session's trace to the collector; the number of spans sent."""
    endpoint()
    require_sdk()
    spans = await session_spans(store, session_id)
    return await asyncio.to_thread(send, session_id, spans)


def requested() -> bool:
    """Whether live export is asked for (an endpoint in the standard variables)."""
    return bool((os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(ENDPOINT_ENV) or "").strip())


class LiveExporter:
    """For a runner: subscribe to the store, fold every committed event of the session, and
    send each span once it has closed, the rest when the session finishes (or ``close``).

    Sends run one after another in a worker thread (an HTTP request must not hold up the
    event loop), through one OTLP exporter. A live run never fails for its telemetry: a
    refused export is logged and the run goes on. A span changed after it went out (rare:
    a late usage event) is not sent again: the ids are per span, a collector would show
    it twice."""

    def __init__(self, session_id: str) -> None:
        self.builder = SpanBuilder(session_id)
        self.sent: asyncio.Future[int] | None = None  # the count, once the finished session is out
        self.count = 0  # spans sent so far
        self.failed = 0  # spans the collector did not take
        self._out: set[int] = set()  # span ids handed to the sender
        self._open: dict[int, SpanData] = {}  # spans not sent yet (the root aside): few, the running ones
        self._after_seq = 0  # events up to this seq were read from the store (a resumed run)
        self._queue: asyncio.Queue[list[Any] | None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._exporter: Any = None
        self._unsubscribe: Callable[[], None] = lambda: None
        self._closing: asyncio.Future[int] | None = None

    def attach(self, store: Any) -> Callable[[], None]:
        """Subscribe (a no-op when the endpoint is unset or the extra is missing); returns
        the unsubscribe."""
        try:
            endpoint()
            require_sdk()
        except OtelUnavailable:
            return lambda: None
        self._unsubscribe = store.subscribe(self.on_events)
        return self._unsubscribe

    async def preload(self, store: Any) -> None:
        """A resumed session: fold what its earlier runs wrote, so its spans continue (the
        attempt a dead runner left open closes now); spans closed then went out then."""
        after = 0
        while True:
            page = await store.events(self.builder.session_id, after_seq=after, limit=5000, types=OTEL_TYPES)
            for ev in page:
                self.builder.feed(ev)
            if page:
                after = page[-1].seq
            if len(page) < 5000:
                break
        self._after_seq = after
        self.builder.finished = False  # a retried subtask of a finished session: it finishes again
        self._out.update(s.span_id for s in self.builder.created if s.end is not None)
        self._take_created()

    def on_events(self, events: list[Event]) -> None:
        sid = self.builder.session_id
        for ev in events:
            if ev.session_id == sid and ev.type in OTEL_TYPES and ev.seq > self._after_seq:
                self.builder.feed(ev)
        self._take_created()
        if self.builder.finished:
            self._flush_all()
            return
        closed = [s for s in self._open.values() if s.end is not None]
        if closed:
            self._enqueue(closed)

    def _take_created(self) -> None:
        for s in self.builder.created:
            if s.span_id not in self._out:
                self._open[s.span_id] = s
        self.builder.created.clear()

    def _flush_all(self) -> None:
        rest = [s for s in self.builder.spans() if s.span_id not in self._out]  # open ones end now
        if rest:
            self._enqueue(rest)
        if self.sent is None and self._queue is not None:
            self.sent = asyncio.ensure_future(self._drained())

    def _enqueue(self, spans: list[SpanData]) -> None:
        self._out.update(s.span_id for s in spans)
        for s in spans:
            self._open.pop(s.span_id, None)
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._sender = asyncio.ensure_future(self._send_loop())
        # converted (and scrubbed) now, in the loop: the thread never reads a span the
        # builder is still changing
        self._queue.put_nowait(_to_sdk(self.builder.session_id, spans))

    async def _send_loop(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._queue.get()
            try:
                if batch is None:
                    return
                ok = await asyncio.to_thread(self._export, batch)
                if ok:
                    self.count += len(batch)
                else:
                    self.failed += len(batch)
            finally:
                self._queue.task_done()

    def _export(self, batch: list[Any]) -> bool:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import SpanExportResult

            if self._exporter is None:
                self._exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout)
            if self._exporter.export(batch) is SpanExportResult.SUCCESS:
                return True
            _log.warning("otel export of %s: the collector did not accept %d spans", self.builder.session_id,
                         len(batch))
        except Exception as e:  # noqa: BLE001 - the collector down, the network, the SDK
            _log.warning("otel export of %s failed: %s", self.builder.session_id, str(e)[:200])
        return False

    async def _drained(self) -> int:
        assert self._queue is not None
        await self._queue.join()
        return self.count if not self.failed else -1

    async def close(self, timeout: float = 10.0, *, flush: bool = True) -> int:
        """Stop listening, send what is left (``flush``; a run that ended without
        ``session.finished``: its open spans end at its last event), wait for the sends
        (bounded); the count sent, -1 if any was refused. Called again, the same answer."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(timeout, flush))
        return await asyncio.shield(self._closing)

    async def _close(self, timeout: float, flush: bool) -> int:
        self._unsubscribe()
        self._unsubscribe = lambda: None
        if flush and self.builder.last_ts:
            self._flush_all()
        if self._queue is None:
            return 0
        try:
            await asyncio.wait_for(asyncio.shield(self._drained()), timeout)
        except asyncio.TimeoutError:
            _log.warning("otel export of %s: the collector did not answer in %.0f s", self.builder.session_id,
                         timeout)
        self._queue.put_nowait(None)
        exporter, self._exporter = self._exporter, None
        if exporter is not None:
            await asyncio.to_thread(exporter.shutdown)
        return self.count if not self.failed else -1


async def start_live(store: Any, session_id: str, *, resumed: bool = False) -> tuple[LiveExporter | None, str | None]:
    """(the exporter attached to ``store``, None) when the endpoint is set and the extra is
    there; (None, the one line saying why not) when the endpoint is set but the extra is
    missing; (None, None) when it is not asked for."""
    if not requested():
        return None, None
    try:
        await asyncio.to_thread(require_sdk)  # the SDK's import, off the event loop (the TUI draws on)
    except OtelUnavailable as e:
        return None, f"OpenTelemetry export is off: {e}"
    live = LiveExporter(session_id)
    if resumed:
        await live.preload(store)
    live.attach(store)
    return live, None
