"""core.otel: a past session's spans sent OTLP/HTTP to a loopback receiver that decodes the
protobuf request (span names, parent/child links, GenAI attributes, deterministic ids),
and the one-line refusals (no endpoint, no extra)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from shepherd.core import otel  # noqa: E402
from shepherd.core.events import (AttemptStarted, Error, RetryScheduled, SessionFinished, SessionStarted,  # noqa: E402
                                  SubtaskFinished, SubtaskStarted, ToolFinished, ToolStarted, Usage)
from shepherd.core.store import open_store  # noqa: E402
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: E402,F401  (fixtures)

T0 = 1_790_000_000.0
SECRET = "sk-live-do-not-send"


class Receiver:
    """A tiny OTLP/HTTP collector on 127.0.0.1: keeps every decoded export request."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                receiver.requests.append(req)
                receiver.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Any]:
        return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _no_ambient_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MY_TOKEN", SECRET)  # an env value that must never be sent


async def _session(db: Path | str, sid: str = "sess-otel") -> None:
    store = await open_store(db)
    try:
        for ev in _events(sid):
            await store.append(ev)
    finally:
        await store.close()


def _events(sid: str) -> list[Any]:
    return [
        SessionStarted(session_id=sid, title="fix the bug", backend="claude", model="opus", ts=T0),
        SubtaskStarted(session_id=sid, subtask_id="s1", ts=T0),
        AttemptStarted(session_id=sid, subtask_id="s1", attempt=1, ts=T0 + 1),
        ToolStarted(session_id=sid, subtask_id="s1", attempt=1, call_id="c1", name="bash",
                    input={"cmd": "cat marker-of-the-tool-input"},
                    ts=T0 + 2),
        ToolFinished(session_id=sid, subtask_id="s1", attempt=1, call_id="c1", status="error", output="boom",
                     ts=T0 + 4),
        Usage(session_id=sid, subtask_id="s1", attempt=1, input_tokens=100, output_tokens=10, ts=T0 + 4),
        Error(session_id=sid, subtask_id="s1", attempt=1, kind="rate_limit", message="429", ts=T0 + 5),
        RetryScheduled(session_id=sid, subtask_id="s1", attempt=1, kind="rate_limit", retry_no=1, max_retries=3,
                       ts=T0 + 5),
        AttemptStarted(session_id=sid, subtask_id="s1", attempt=2, reason="retry", ts=T0 + 10),
        ToolStarted(session_id=sid, subtask_id="s1", attempt=2, call_id="c2", name="edit", ts=T0 + 11),
        ToolFinished(session_id=sid, subtask_id="s1", attempt=2, call_id="c2", status="ok", ts=T0 + 12),
        Usage(session_id=sid, subtask_id="s1", attempt=2, input_tokens=200, output_tokens=20, ts=T0 + 12),
        SubtaskFinished(session_id=sid, subtask_id="s1", attempt=2, status="done", ts=T0 + 13),
        SessionFinished(session_id=sid, status="done", ts=T0 + 14),
    ]


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "shepherd.tui.cli", *args], capture_output=True, text=True,
                          timeout=60, env=full)


async def test_export_session_sends_genai_spans(store_target: Any, receiver: Receiver) -> None:
    db = store_target  # SQLite, then PostgreSQL
    await _session(db)
    store = await open_store(db)
    try:
        count = await otel.export_session(store, "sess-otel")
    finally:
        await store.close()
    spans = receiver.spans()
    assert count == len(spans) == 5
    assert receiver.paths == ["/v1/traces"]
    by_name: dict[str, list[Any]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    root = by_name["shepherd.session fix the bug"][0]
    attempts = by_name["invoke_agent claude"]
    tools = by_name["execute_tool bash"] + by_name["execute_tool edit"]
    assert len(attempts) == 2 and len({s.trace_id for s in spans}) == 1
    assert root.parent_span_id == b""
    assert all(a.parent_span_id == root.span_id for a in attempts)
    first, second = sorted(attempts, key=lambda s: s.start_time_unix_nano)
    assert tools[0].parent_span_id == first.span_id and tools[1].parent_span_id == second.span_id
    a1 = _attrs(first)
    assert a1["gen_ai.operation.name"] == "invoke_agent"
    assert a1["gen_ai.conversation.id"] == "sess-otel"
    assert a1["gen_ai.request.model"] == "opus"
    assert a1["gen_ai.provider.name"] == "anthropic" and a1["gen_ai.agent.name"] == "claude"
    assert (a1["gen_ai.usage.input_tokens"], a1["gen_ai.usage.output_tokens"]) == (100, 10)
    assert a1["error.type"] == "rate_limit"
    retry = [e for e in first.events if e.name == "retry"]
    assert len(retry) == 1 and _attrs(retry[0])["error.type"] == "rate_limit"
    assert _attrs(second)["gen_ai.usage.input_tokens"] == 200 and "error.type" not in _attrs(second)
    bash = _attrs(tools[0])
    assert bash["gen_ai.tool.name"] == "bash" and bash["gen_ai.tool.call.id"] == "c1"
    assert bash["error.type"] == "error"
    assert tools[0].end_time_unix_nano - tools[0].start_time_unix_nano == 2_000_000_000
    assert tools[0].status.code == 2  # STATUS_CODE_ERROR
    raw = b"".join(r.SerializeToString() for r in receiver.requests)
    assert SECRET.encode() not in raw and b"marker-of-the-tool-input" not in raw  # no env, no tool input


async def test_reexport_is_the_same_trace(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "s.db"
    await _session(db)
    for _ in range(2):
        store = await open_store(db)
        try:
            await otel.export_session(store, "sess-otel")
        finally:
            await store.close()
    ids = [sorted((s.trace_id, s.span_id, s.parent_span_id) for s in
                  (x for rs in r.resource_spans for ss in rs.scope_spans for x in ss.spans))
           for r in receiver.requests]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert ids[0][0][0] == otel.trace_id("sess-otel").to_bytes(16, "big")


async def test_cli_export_otlp(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "s.db"
    await _session(db)
    ok = _cli("export", "sess", "--format", "otlp", "--db", str(db), env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    assert ok.returncode == 0, ok.stderr
    assert "sent 5 spans" in ok.stderr and len(receiver.spans()) == 5


async def test_cli_export_otlp_without_endpoint_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await _session(db)
    out = _cli("export", "sess-otel", "--format", "otlp", "--db", str(db))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "OTEL_EXPORTER_OTLP_ENDPOINT" in out.stderr


async def test_cli_export_otlp_without_the_extra_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await _session(db)
    # A sitecustomize that hides the SDK, as if the extra were not installed.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('opentelemetry.sdk', 'opentelemetry.exporter')):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n")
    import os

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
           "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    out = _cli("export", "sess-otel", "--format", "otlp", "--db", str(db), env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "otel extra" in out.stderr


def test_live_exporter_sends_when_the_session_finishes(tmp_path: Path, receiver: Receiver) -> None:
    import asyncio

    async def main() -> int:
        store = await open_store(tmp_path / "live.db")
        live = otel.LiveExporter("sess-otel")
        unsubscribe = live.attach(store)
        try:
            await _append_all(store)
            assert live.sent is not None
            return await live.sent
        finally:
            unsubscribe()
            await store.close()

    async def _append_all(store: Any) -> None:
        for ev in _events("sess-otel"):
            await store.append(ev)
        await asyncio.sleep(0)  # the subscriber runs in the loop after the commit

    assert asyncio.run(main()) == 5
    assert {s.name for s in receiver.spans()} >= {"invoke_agent claude", "execute_tool bash"}
