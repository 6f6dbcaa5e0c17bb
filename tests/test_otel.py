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


# --- live, from the runner --------------------------------------------------------------------

def _shepherd(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``shepherd ARGS`` with no ambient OTEL_* variable, nominal time sped up."""
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update({"SHEPHERD_TIME_SCALE": "0.01", **env})
    return subprocess.run([sys.executable, "-m", "shepherd.tui.cli", *args], capture_output=True, text=True,
                          timeout=180, env=full, cwd=cwd)


def test_headless_run_sends_spans_live_with_secrets_scrubbed(tmp_path: Path, receiver: Receiver) -> None:
    from tests.fakes.fake_openai import FakeOpenAI

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hello.txt").write_text(f"hi there {SECRET}\n")
    script = [{"error": {"status": 500, "message": f"upstream overloaded for {SECRET}"}},
              {"tools": [{"name": "read_file", "args": {"path": "hello.txt"}}]},
              {"text": f"The file says hi and {SECRET}."}]
    db = tmp_path / "s.db"
    with FakeOpenAI(script=script) as api:
        proc = _import_probe(["run", "-p", f"Read hello.txt {SECRET}", "--backend", "openai", "--headless",
                              "--workspace", str(ws), "--db", str(db)],
                             {"OPENAI_API_KEY": "sk-test-fake", "OPENAI_BASE_URL": api.base_url,
                              "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "MY_TOKEN": SECRET}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OpenTelemetry" not in proc.stderr and "OTEL-IMPORTED True" in proc.stderr
    assert set(receiver.paths) == {"/v1/traces"}
    listing = _shepherd(["sessions", "--json", "--db", str(db)], {}, tmp_path)
    import json

    sid = json.loads(listing.stdout.splitlines()[0])["id"]
    spans = receiver.spans()
    names = [s.name for s in spans]
    attempts = [s for s in spans if s.name == "invoke_agent openai"]
    tools = [s for s in spans if s.name == "execute_tool read_file"]
    assert len(attempts) >= 1 and len(tools) == 1, names
    assert sum(1 for n in names if n.startswith("shepherd.session")) == 1
    for s in attempts + tools:
        assert _attrs(s)["gen_ai.conversation.id"] == sid
    assert tools[0].parent_span_id in {a.span_id for a in attempts}
    assert any(e.name == "retry" or e.name == "exception" for a in attempts for e in a.events)  # the 500
    assert sum(_attrs(a)["gen_ai.usage.input_tokens"] for a in attempts) > 0
    # live: the spans went out in more than one request, the tool's before the session's root
    assert len(receiver.requests) >= 2
    first = [s.name for rs in receiver.requests[0].resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert not any(n.startswith("shepherd.session") for n in first)
    raw = b"".join(r.SerializeToString() for r in receiver.requests)
    assert SECRET.encode() not in raw and b"sk-test-fake" not in raw


def _import_probe(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``shepherd ARGS`` (as ``_shepherd``) in a process that says, at exit, whether the
    OpenTelemetry SDK or its exporter was imported (the API's ``opentelemetry.context``
    comes with the agents SDK's mcp dependency whatever we do: not ours to count)."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('OTEL-IMPORTED', any(m.startswith(('opentelemetry.sdk', "
            "'opentelemetry.exporter')) for m in sys.modules), file=sys.stderr))\n"
            f"sys.argv = ['shepherd', *{args!r}]\n"
            "runpy.run_module('shepherd.tui.cli', run_name='__main__')\n")
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update({"SHEPHERD_TIME_SCALE": "0.01", **env})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=full,
                          cwd=cwd)


def test_no_endpoint_no_opentelemetry_import(tmp_path: Path) -> None:
    """(The headless run above, with the endpoint set, says True: this check can fail.)"""
    off = _import_probe(["run", "-p", "hi", "--backend", "scripted", "--headless", "--db", str(tmp_path / "a.db")],
                        {}, tmp_path)
    assert off.returncode == 0, off.stderr[-2000:]
    assert "OTEL-IMPORTED False" in off.stderr


def test_traces_endpoint_variable_is_used_as_is(tmp_path: Path, receiver: Receiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The traces-only variable is a full URL, used as it is (the base one gets /v1/traces)."""
    import asyncio

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url + "/custom")

    async def main() -> int:
        store = await open_store(tmp_path / "t.db")
        try:
            live, _ = await otel.start_live(store, "sess-otel")
            assert live is not None
            for ev in _events("sess-otel"):
                await store.append(ev)
            return await live.close()
        finally:
            await store.close()

    assert asyncio.run(main()) == 5
    assert set(receiver.paths) == {"/custom"}


def test_endpoint_without_the_extra_warns_once_and_runs(tmp_path: Path) -> None:
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
    proc = _shepherd(["run", "-p", "hi", "--backend", "scripted", "--headless", "--db", str(tmp_path / "s.db")],
                     env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [ln for ln in proc.stderr.splitlines() if "OpenTelemetry" in ln]
    assert len(notes) == 1 and "otel extra" in notes[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "session done" in proc.stderr


def test_span_strings_pass_the_secret_scrubber(receiver: Receiver) -> None:
    """Events fed straight in (not through the store, which scrubs too): the title, the
    error message and a tool's name still go out without the secret."""
    sid = "sess-scrub"
    b = otel.SpanBuilder(sid)
    for ev in [SessionStarted(session_id=sid, title=f"fix {SECRET}", backend="openai", ts=T0, seq=1),
               AttemptStarted(session_id=sid, subtask_id="s1", attempt=1, ts=T0 + 1, seq=2),
               ToolStarted(session_id=sid, subtask_id="s1", attempt=1, call_id="c1", name=f"t{SECRET}", ts=T0 + 2,
                           seq=3),
               Error(session_id=sid, subtask_id="s1", attempt=1, kind="api", message=f"bad key {SECRET}",
                     ts=T0 + 3, seq=4),
               SessionFinished(session_id=sid, status="failed", ts=T0 + 4, seq=5)]:
        b.feed(ev)
    assert any(SECRET in s.name for s in b.spans())  # the builder's data still has it...
    assert otel.send(sid, b.spans()) == 3
    raw = b"".join(r.SerializeToString() for r in receiver.requests)
    assert SECRET.encode() not in raw and b"[redacted]" in raw  # ...the request does not


def test_resumed_run_continues_the_trace_without_resending(tmp_path: Path, receiver: Receiver) -> None:
    """A resumed session's exporter folds the earlier run's events first: the spans that
    closed then (they went out then) are not sent again; the rest go out as they close."""
    import asyncio

    evs = _events("sess-otel")

    async def main() -> tuple[int, set[str]]:
        store = await open_store(tmp_path / "r.db")
        try:
            for ev in evs[:9]:  # the earlier run: attempt 1 and its tool call closed, attempt 2 begun
                await store.append(ev)
            live, note = await otel.start_live(store, "sess-otel", resumed=True)
            assert live is not None and note is None
            for ev in evs[9:]:
                await store.append(ev)
            await asyncio.sleep(0)
            return await live.close(), {s.name for s in receiver.spans()}
        finally:
            await store.close()

    count, names = asyncio.run(main())
    assert count == 3 and len(receiver.spans()) == 3
    assert names == {"shepherd.session fix the bug", "invoke_agent claude", "execute_tool edit"}
    second = next(s for s in receiver.spans() if s.name == "invoke_agent claude")
    assert second.span_id == otel.span_id("sess-otel", 9).to_bytes(8, "big")  # attempt 2: the same ids as an export


async def test_a_tui_run_sends_its_spans_live(tmp_path: Path, receiver: Receiver,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started in the TUI goes through the same launch: its spans go out as it runs,
    the last ones when it ends (the app goes on)."""
    from shepherd.core.task import task_from_dict
    from shepherd.tui.app import ShepherdApp
    from tests.test_tui_app import wait_until

    monkeypatch.setenv("SHEPHERD_TIME_SCALE", "0.01")
    task = task_from_dict({
        "title": "look around", "backend": "scripted",
        "subtasks": [{"id": "main", "title": "Look", "prompt": "p",
                      "steps": [{"text": "Looking.", "tools": [{"name": "list_files", "args": {"path": "."}}]},
                                {"text": "Done."}]}],
    }, base_dir=tmp_path)
    app = ShepherdApp(tmp_path / "s.db")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.home is not None and app.home.loaded, what="home")
        handle = await app.start_task(task)
        assert handle.telemetry is not None and handle.telemetry_note is None
        await wait_until(pilot, lambda: handle.task.done(), timeout=60, what="the run's end")
        await wait_until(pilot, lambda: any(s.name.startswith("shepherd.session") for s in receiver.spans()),
                         timeout=15, what="the session's root span")
        names = sorted(s.name for s in receiver.spans())
        assert names == ["execute_tool list_files", "invoke_agent scripted", "shepherd.session look around"]
        assert {_attrs(s)["gen_ai.conversation.id"] for s in receiver.spans() if s.parent_span_id} == \
            {handle.session_id}
