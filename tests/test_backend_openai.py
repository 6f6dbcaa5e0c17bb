"""The openai backend end to end: real openai-agents + real openai client + the loopback fake
server, for both API flavours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from agents.exceptions import ModelBehaviorError

from shepherd.core.backends.base import AttemptContext, BackendUnavailable
from shepherd.core.backends.openai_agents import NO_KEY_MESSAGE, OpenAIAgentsBackend, default_api
from shepherd.core.clock import AutoClock
from shepherd.core.errors import classify
from shepherd.core.events import Event, MessageCompleted, TextDelta, ToolFinished, ToolStarted, Usage
from shepherd.core.task import Task, task_from_dict
from tests.fakes.fake_openai import CHAT_PATH, RESPONSES_PATH, FakeOpenAI

APIS = ["chat_completions", "responses"]
PROMPT = "Please fix the parser."


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    (w / "README.md").write_text("readme text\n")
    return w


def make_task(ws: Path, **extra: Any) -> Task:
    return task_from_dict({"backend": "openai", "workspace": str(ws), "model": "fake-model",
                           "subtasks": [{"id": "main", "prompt": PROMPT}], **extra})


class Driver:
    def __init__(self, api: FakeOpenAI, flavour: str, ws: Path, db_path: Path | None = None,
                 **task_extra: Any) -> None:
        self.db_path = db_path
        self.backend = OpenAIAgentsBackend(api_key="sk-test-not-a-real-key", base_url=api.base_url, api=flavour)
        self.task = make_task(ws, **task_extra)
        self.state: dict[str, Any] = {}
        self.n = 0

    def ctx(self, *, extra: str = "", cont: bool | None = None) -> AttemptContext:
        self.n += 1
        sub = self.task.subtasks[0]
        return AttemptContext(session_id="s1", task=self.task, subtask=sub, attempt=self.n,
                              reason="first" if self.n == 1 else "retry", prompt=sub.prompt,
                              prompt_extra=extra, continue_history=self.n > 1 if cont is None else cont,
                              workspace=self.task.workspace, clock=AutoClock(), state=self.state,
                              db_path=self.db_path)

    async def run(self, ctx: AttemptContext | None = None) -> tuple[list[Event], BaseException | None]:
        events: list[Event] = []
        try:
            async for ev in self.backend.attempt(ctx or self.ctx()):
                events.append(ev)
        except Exception as e:  # noqa: BLE001
            return events, e
        return events, None


def path_for(flavour: str) -> str:
    return CHAT_PATH if flavour == "chat_completions" else RESPONSES_PATH


def tool_outputs(flavour: str, body: dict[str, Any]) -> dict[str, str]:
    """call_id -> output as sent back to the model in a request body."""
    if flavour == "chat_completions":
        return {m["tool_call_id"]: m["content"] for m in body["messages"] if m.get("role") == "tool"}
    return {i["call_id"]: i["output"] for i in body["input"] if i.get("type") == "function_call_output"}


def user_texts(flavour: str, body: dict[str, Any]) -> list[str]:
    items = body["messages"] if flavour == "chat_completions" else body["input"]
    if isinstance(items, str):
        return [items]
    out = []
    for m in items:
        if m.get("role") == "user":
            c = m["content"]
            out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c))
    return out


def texts(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("flavour", APIS)
async def test_tool_call_runs_and_output_reaches_next_request(ws: Path, flavour: str) -> None:
    with FakeOpenAI([
        {"text": "Writing it.", "tools": [{"name": "write_file", "args": {"path": "fix.txt", "content": "fixed"}}]},
        {"text": "All fixed now."},
    ]) as api:
        d = Driver(api, flavour, ws)
        events, err = await d.run()
    assert err is None, repr(err)
    assert (ws / "fix.txt").read_text() == "fixed"
    assert [r["path"] for r in api.requests] == [path_for(flavour)] * 2
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert [(s.name, s.input) for s in started] == [("write_file", {"path": "fix.txt", "content": "fixed"})]
    assert finished[0].status == "ok" and finished[0].output == "wrote 5 bytes to fix.txt"
    assert tool_outputs(flavour, api.requests[1]["body"]) == {started[0].call_id: "wrote 5 bytes to fix.txt"}
    assert texts(events) == "Writing it.All fixed now."
    assert [e.text for e in events if isinstance(e, MessageCompleted)][-1] == "All fixed now."
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 2 and all(u.input_tokens > 0 and u.output_tokens > 0 for u in usage)
    first = api.requests[0]["body"]
    assert first["stream"] is True and first["model"] == "fake-model"
    if flavour == "chat_completions":
        assert first["stream_options"] == {"include_usage": True}
        assert first["messages"][0]["role"] == "system" and str(ws.resolve()) in first["messages"][0]["content"]
    else:
        assert str(ws.resolve()) in first["instructions"]
    assert {t.get("name") or t["function"]["name"] for t in first["tools"]} == {
        "list_files", "read_file", "write_file", "run_command"}


@pytest.mark.parametrize("flavour", APIS)
async def test_parallel_tool_calls(ws: Path, flavour: str) -> None:
    with FakeOpenAI([
        {"tools": [{"name": "read_file", "args": {"path": "README.md"}},
                   {"name": "run_command", "args": {"command": "echo from-shell", "timeout_s": 30}},
                   {"name": "list_files", "args": {"path": "."}}]},
        {"text": "Seen everything."},
    ]) as api:
        events, err = await Driver(api, flavour, ws).run()
    assert err is None, repr(err)
    starts = [i for i, e in enumerate(events) if isinstance(e, ToolStarted)]
    ends = [i for i, e in enumerate(events) if isinstance(e, ToolFinished)]
    assert len(starts) == 3 and len(ends) == 3 and max(starts) < min(ends)
    fed = tool_outputs(flavour, api.requests[1]["body"])
    assert sorted(fed.values()) == sorted(["readme text\n", "from-shell\n", "README.md"])


@pytest.mark.parametrize("flavour", APIS)
async def test_tool_concurrency_400_is_bad_request(ws: Path, flavour: str) -> None:
    with FakeOpenAI([{"error": {"status": 400, "message": "API Error: 400 due to tool use concurrency issues."}}]) as api:
        events, err = await Driver(api, flavour, ws).run()
    assert isinstance(err, openai.BadRequestError) and err.status_code == 400
    assert classify(err).kind == "tool_concurrency"
    assert len(api.requests) == 1


@pytest.mark.parametrize("flavour", APIS)
@pytest.mark.parametrize("status,cls,kind", [
    (500, openai.InternalServerError, "transient"),
    (429, openai.RateLimitError, "rate_limit"),
    (401, openai.AuthenticationError, "auth"),
])
async def test_errors_surface_at_once_without_hidden_retries(ws: Path, flavour: str, status: int,
                                                             cls: type[Exception], kind: str) -> None:
    with FakeOpenAI([{"error": {"status": status, "message": f"fake {status}", "headers": {"retry-after": "3"}},
                      "times": 3}]) as api:
        events, err = await Driver(api, flavour, ws).run()
    assert type(err) is cls, repr(err)
    assert len(api.requests) == 1  # the client did not retry behind our back
    info = classify(err)
    assert info.kind == kind
    if kind == "rate_limit":
        assert info.retry_after == 3


@pytest.mark.parametrize("flavour", APIS)
@pytest.mark.parametrize("how", ["sse_error_after", "drop_after"])
async def test_mid_stream_break_after_deltas(ws: Path, flavour: str, how: str) -> None:
    text = "alpha beta gamma delta epsilon"
    with FakeOpenAI([{"text": text, how: 2, "delay_ms": 30}]) as api:
        events, err = await Driver(api, flavour, ws).run()
    assert err is not None
    if how == "drop_after":
        assert isinstance(err, openai.APIConnectionError), repr(err)
    elif flavour == "chat_completions":
        assert isinstance(err, openai.APIError), repr(err)
    else:
        assert isinstance(err, ModelBehaviorError), repr(err)
    assert texts(events) == "alpha beta"
    assert classify(err).kind in ("stream_broken", "transient")
    assert not any(isinstance(e, MessageCompleted) for e in events)
    assert len(api.requests) == 1


@pytest.mark.parametrize("flavour", APIS)
@pytest.mark.parametrize("store", [False, True], ids=["memory-session", "store-session"])
async def test_restart_after_failure_does_not_duplicate_user_message(ws: Path, tmp_path: Path, flavour: str,
                                                                     store: bool) -> None:
    with FakeOpenAI([
        {"tools": [{"name": "read_file", "args": {"path": "README.md"}}]},
        {"error": {"status": 500, "message": "boom"}},
        {"text": "Recovered."},
    ]) as api:
        d = Driver(api, flavour, ws, db_path=tmp_path / "shepherd.db" if store else None)
        _, err = await d.run()
        assert isinstance(err, openai.InternalServerError)
        events, err = await d.run(d.ctx(extra="[Shepherd] The last attempt failed; continue."))
    assert err is None, repr(err)
    assert texts(events) == "Recovered."
    assert len(api.requests) == 3
    restart = api.requests[2]["body"]
    assert user_texts(flavour, restart) == [PROMPT, "[Shepherd] The last attempt failed; continue."]
    # the committed tool turn of the failed attempt is in the restarted conversation
    assert list(tool_outputs(flavour, restart).values()) == ["readme text\n"]
    # the failed request itself carried the prompt once too
    assert user_texts(flavour, api.requests[1]["body"]) == [PROMPT]


@pytest.mark.parametrize("flavour", APIS)
async def test_restart_without_extra_sends_no_new_user_message(ws: Path, flavour: str) -> None:
    with FakeOpenAI([{"error": {"status": 500, "message": "boom"}}, {"text": "ok"}]) as api:
        d = Driver(api, flavour, ws)
        _, err = await d.run()
        assert isinstance(err, openai.InternalServerError)
        _, err = await d.run()
    assert err is None
    assert user_texts(flavour, api.requests[1]["body"]) == [PROMPT]


async def test_no_key_is_backend_unavailable(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI() as api:
        monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
        backend = OpenAIAgentsBackend()
        task = make_task(ws)
        with pytest.raises(BackendUnavailable, match="OPENAI_API_KEY"):
            backend.check_available(task)  # what the CLI asks before a session starts
        ctx = AttemptContext(session_id="s", task=task, subtask=task.subtasks[0], attempt=1, reason="first",
                             prompt=PROMPT, prompt_extra="", continue_history=False, workspace=ws)
        with pytest.raises(BackendUnavailable) as exc:
            async for _ in backend.attempt(ctx):
                pass
    assert str(exc.value) == NO_KEY_MESSAGE
    assert api.requests == []
    assert classify(exc.value).retryable is False


async def test_env_configuration_and_defaults(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_api(None) == "responses"
    assert default_api("https://api.openai.com/v1") == "responses"
    assert default_api("http://127.0.0.1:8000/v1") == "chat_completions"
    with FakeOpenAI([{"text": "hi from env"}]) as api:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-123456789")
        monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
        backend = OpenAIAgentsBackend()
        task = make_task(ws)
        ctx = AttemptContext(session_id="s", task=task, subtask=task.subtasks[0], attempt=1, reason="first",
                             prompt=PROMPT, prompt_extra="", continue_history=False, workspace=ws,
                             clock=AutoClock())
        settings = backend.settings(ctx)
        assert settings.api == "chat_completions" and "sk-env" not in repr(settings)
        events = [e async for e in backend.attempt(ctx)]
        assert texts(events) == "hi from env"
        assert api.requests[0]["path"] == CHAT_PATH
        # the task file can choose the flavour
        task2 = make_task(ws, openai={"api": "responses"})
        ctx2 = AttemptContext(session_id="s2", task=task2, subtask=task2.subtasks[0], attempt=1, reason="first",
                              prompt=PROMPT, prompt_extra="", continue_history=False, workspace=ws,
                              clock=AutoClock())
        events = [e async for e in backend.attempt(ctx2)]
        assert api.requests[1]["path"] == RESPONSES_PATH
        assert texts(events) == f"Echo: {PROMPT}"
        bad = make_task(ws, openai={"api": "carrier-pigeon"})
        ctx3 = AttemptContext(session_id="s3", task=bad, subtask=bad.subtasks[0], attempt=1, reason="first",
                              prompt=PROMPT, prompt_extra="", continue_history=False, workspace=ws)
        with pytest.raises(BackendUnavailable, match="api must be one of"):
            backend.settings(ctx3)
        with pytest.raises(BackendUnavailable, match="api must be one of"):
            backend.check_available(bad)
        backend.check_available(task)


@pytest.mark.parametrize("flavour", APIS)
async def test_fake_server_non_streaming(flavour: str) -> None:
    """The fake's non-streaming form, through the real client."""
    with FakeOpenAI([{"text": "plain", "tools": [{"name": "t", "args": {"a": 1}}]}]) as api:
        client = openai.AsyncOpenAI(base_url=api.base_url, api_key="sk-fake", max_retries=0)
        if flavour == "chat_completions":
            r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            assert r.choices[0].message.content == "plain"
            assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"a": 1}
        else:
            r2 = await client.responses.create(model="m", input="x")
            assert r2.output_text == "plain" and r2.usage is not None
        r3 = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "echo me"}])
        assert r3.choices[0].message.content == "Echo: echo me"
        await client.close()


@pytest.mark.parametrize("flavour", APIS)
async def test_stop_after_turn_then_resume(ws: Path, flavour: str) -> None:
    with FakeOpenAI([
        {"tools": [{"name": "write_file", "args": {"path": "a.txt", "content": "A"}},
                   {"name": "read_file", "args": {"path": "README.md"}}]},
        {"text": "Resumed and done."},
    ]) as api:
        d = Driver(api, flavour, ws)
        ctx = d.ctx()
        events: list[Event] = []
        async for ev in d.backend.attempt(ctx):
            events.append(ev)
            if isinstance(ev, ToolStarted):
                ctx.stop_after_turn.set()
        assert sum(isinstance(e, ToolFinished) for e in events) == 2
        assert len(api.requests) == 1  # stopped before the next model call
        events, err = await d.run(d.ctx())
    assert err is None and texts(events) == "Resumed and done."
    assert user_texts(flavour, api.requests[1]["body"]) == [PROMPT]
    assert len(tool_outputs(flavour, api.requests[1]["body"])) == 2


@pytest.mark.parametrize("flavour", APIS)
async def test_early_close_mid_stream_does_not_hang(ws: Path, flavour: str) -> None:
    import asyncio

    with FakeOpenAI([{"text": " ".join(["slow"] * 200), "delay_ms": 20}]) as api:
        d = Driver(api, flavour, ws)
        agen = d.backend.attempt(d.ctx())
        async for ev in agen:
            if isinstance(ev, TextDelta):
                break
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(agen.aclose(), 10)
        assert loop.time() - t0 < 2
    assert len(api.requests) == 1
