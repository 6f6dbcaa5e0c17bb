"""ClaudeBackend against the REAL claude-agent-sdk + bundled Claude Code CLI + a fake
Messages API on loopback (tests/fakes/fake_anthropic.py), plus unit tests of the pure parts
(config, credentials, hook policy, transcript repair point).

Each CLI start costs ~0.5-1.5 s, so the integration tests are few and each checks a lot.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.backends.base import AttemptContext, BackendUnavailable
from shepherd.core.backends.claude import (
    ClaudeBackend,
    ClaudeConfig,
    cli_env,
    credential_source,
    find_repair_point,
    session_uuid,
)
from shepherd.core.backends.claude_hooks import DENY_BACKGROUND, HookPolicy
from shepherd.core.errors import AttemptFailed, classify
from shepherd.core.events import (
    Error,
    HookDecision,
    MessageCompleted,
    TextDelta,
    ThinkingDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)
from shepherd.core.task import prompt_task, task_from_dict
from tests.fakes.fake_anthropic import (
    FakeAnthropic,
    dangling_tool_uses,
    tool_concurrency_rule,
    tool_results,
    tool_uses,
    user_texts,
)

# --- helpers -------------------------------------------------------------------------------


class Env:
    """A per-test sandbox: workspace, database, CLAUDE_CONFIG_DIR and CLI scratch dir."""

    def __init__(self, tmp: Path, api: FakeAnthropic) -> None:
        self.api = api
        tmp.mkdir(parents=True, exist_ok=True)
        self.ws = tmp / "ws"
        self.ws.mkdir(exist_ok=True)  # (a second Env on the same tmp: a new runner)
        self.cfg = tmp / "cfg"
        self.cfg.mkdir(exist_ok=True)
        (tmp / "ctmp").mkdir(exist_ok=True)
        (tmp / "home").mkdir(exist_ok=True)
        self.db = tmp / "shepherd.db"
        self.env = {
            # not the machine's shell profile: with Claude Code's Bash sandbox on (see
            # cli_env), a profile that writes into $HOME (pyenv's rehash) prints warnings
            "HOME": str(tmp / "home"),
            "ANTHROPIC_BASE_URL": api.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test-fake",
            "CLAUDE_CONFIG_DIR": str(self.cfg),
            "CLAUDE_CODE_TMPDIR": str(tmp / "ctmp"),
        }
        self.backend = ClaudeBackend(env=self.env)
        self.state: dict[str, Any] = {}

    def ctx(self, prompt: str = "hello", *, options: dict[str, Any] | None = None, continue_history: bool = False,
            prompt_extra: str = "", repair: bool = False, attempt: int = 1, reason: str = "first",
            db: bool = True, session_id: str = "s-test", approvals: Any = None) -> AttemptContext:
        data: dict[str, Any] = {"title": "t", "backend": "claude", "workspace": str(self.ws),
                                "subtasks": [{"id": "main", "prompt": prompt}]}
        if options:
            data["claude"] = options
        task = task_from_dict(data)
        return AttemptContext(
            session_id=session_id, task=task, subtask=task.subtasks[0], attempt=attempt, reason=reason,
            prompt=prompt, prompt_extra=prompt_extra, continue_history=continue_history, workspace=self.ws,
            db_path=self.db if db else None, repair=repair, state=self.state, approvals=approvals,
        )

    async def run(self, ctx: AttemptContext) -> tuple[list[Any], BaseException | None]:
        events: list[Any] = []
        try:
            async for ev in self.backend.attempt(ctx):
                events.append(ev)
        except Exception as e:  # noqa: BLE001
            return events, e
        return events, None


@pytest.fixture
def sandbox(tmp_path: Path):
    def make(script: list[dict[str, Any]] | None = None, name: str = "box") -> Env:
        api = FakeAnthropic(script=script).start()
        made.append(api)
        return Env(tmp_path / name, api)

    made: list[FakeAnthropic] = []
    yield make
    for api in made:
        api.stop()


def of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


# --- integration: the real CLI --------------------------------------------------------------


async def test_bash_tool_runs_in_workspace_and_result_reaches_next_request(sandbox) -> None:
    box = sandbox([
        {"thinking": "I should look.", "text": "Let me check the workspace.",
         "tool_use": {"name": "Bash", "input": {"command": "cat marker.txt && pwd"}}},
        {"text": "The marker says hello."},
    ])
    (box.ws / "marker.txt").write_text("marker-content-42\n")
    events, err = await box.run(box.ctx("what does the marker say?"))
    assert err is None, err

    started = of(events, ToolStarted)
    finished = of(events, ToolFinished)
    assert [(s.name, s.input) for s in started] == [("Bash", {"command": "cat marker.txt && pwd"})]
    assert len(finished) == 1 and finished[0].call_id == started[0].call_id
    assert finished[0].status == "ok"
    assert "marker-content-42" in finished[0].output and str(box.ws.resolve()) in finished[0].output
    # the tool result went back to the API in the next request
    results = tool_results(box.api.main_requests()[-1])
    assert results and "marker-content-42" in json.dumps(results)

    # live deltas, and the full text only as message.completed (never re-sent as a delta)
    deltas = of(events, TextDelta)
    completed = of(events, MessageCompleted)
    assert "".join(d.text for d in deltas) == "Let me check the workspace.The marker says hello."
    assert [c.text for c in completed] == ["Let me check the workspace.", "The marker says hello."]
    assert {d.message_id for d in deltas} == {c.message_id for c in completed}
    assert "".join(t.text for t in of(events, ThinkingDelta)) == "I should look."
    # order: the tool starts after the text of the same message and finishes before the next message
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolStarted") < kinds.index("ToolFinished") < len(kinds) - kinds[::-1].index("TextDelta")
    usage = of(events, Usage)
    assert len(usage) == 1 and usage[0].input_tokens > 0 and usage[0].output_tokens > 0
    assert usage[0].cost_usd is not None and usage[0].cost_usd > 0
    assert box.state["claude"]["session_id"] == session_uuid("s-test", "main", 0)
    # offline-safety env reached the CLI; the prompt was sent once
    assert user_texts(box.api.main_requests()[0]) == ["what does the marker say?"]


async def test_parallel_tool_calls_each_get_their_own_result(sandbox) -> None:
    box = sandbox([
        {"text": "Reading both.", "tool_use": [
            {"name": "Read", "input": {"file_path": "a.txt"}},
            {"name": "Read", "input": {"file_path": "b.txt"}},
            {"name": "Bash", "input": {"command": "echo from-bash"}},
        ]},
        {"text": "Both read."},
    ])
    (box.ws / "a.txt").write_text("alpha-content\n")
    (box.ws / "b.txt").write_text("beta-content\n")
    events, err = await box.run(box.ctx("read a and b"))
    assert err is None, err
    started = {s.call_id: s for s in of(events, ToolStarted)}
    finished = {f.call_id: f for f in of(events, ToolFinished)}
    assert set(started) == set(finished) and len(started) == 3
    by_input = {json.dumps(s.input, sort_keys=True): finished[c] for c, s in started.items()}
    assert "alpha-content" in by_input['{"file_path": "a.txt"}'].output
    assert "beta-content" in by_input['{"file_path": "b.txt"}'].output
    assert "from-bash" in by_input['{"command": "echo from-bash"}'].output
    assert all(f.status == "ok" for f in finished.values())
    # all three results went back in the one next request, matched to their ids
    req = box.api.main_requests()[-1]
    assert not dangling_tool_uses(req)
    assert {r["tool_use_id"] for r in tool_results(req)} == set(started)
    # every start precedes its finish; no finish closes another call
    kinds = [(type(e).__name__, getattr(e, "call_id", None)) for e in events]
    for cid in started:
        assert kinds.index(("ToolStarted", cid)) < kinds.index(("ToolFinished", cid))


@pytest.mark.parametrize("case", [
    ({"status": 429, "type": "rate_limit_error", "message": "Number of request tokens has exceeded your rate limit"},
     "rate_limit", 429),
    ({"status": 500, "type": "api_error", "message": "Internal server error"}, "transient", 500),
    ({"status": 529, "type": "overloaded_error", "message": "Overloaded"}, "transient", 529),
    ({"status": 401, "type": "authentication_error", "message": "invalid x-api-key"}, "auth", 401),
    ({"status": 400, "type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"},
     "context_overflow", 400),
], ids=["429", "500", "529", "401", "400-prompt-too-long"])
async def test_api_errors_surface_as_classified_attempt_failures(sandbox, case) -> None:
    err_spec, kind, status = case
    box = sandbox([{"error": err_spec, "times": None}])
    events, err = await box.run(box.ctx("go"))
    assert isinstance(err, AttemptFailed), err
    info = classify(err)
    assert (info.kind, info.status_code) == (kind, status)
    assert info.message  # a reason a person can read
    # the CLI did not retry on its own (CLAUDE_CODE_MAX_RETRIES=0, x-should-retry: false)
    assert len(box.api.main_requests()) == 1
    assert not of(events, MessageCompleted)  # the synthetic "API Error" text is not assistant output
    assert box.state["claude"]["session_id"]  # known, so the retry can resume it



async def test_turn_limit_and_cli_retries(sandbox) -> None:
    """max_turns from [claude] ends the run as max_turns; with cli_max_retries the CLI's own
    retry shows up as an informational error and the attempt goes on."""
    box = sandbox([{"tool_use": {"name": "Bash", "input": {"command": "echo 1"}}},
                   {"tool_use": {"name": "Bash", "input": {"command": "echo 2"}}}], name="turns")
    events, err = await box.run(box.ctx("loop", options={"max_turns": 1}))
    assert isinstance(err, AttemptFailed) and classify(err).kind == "max_turns", err
    assert [f.status for f in of(events, ToolFinished)] == ["ok"] and len(of(events, Usage)) == 1

    box = sandbox([{"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded",
                              "should_retry": True}},
                   {"text": "fine now"}], name="retries")
    events, err = await box.run(box.ctx("go", options={"cli_max_retries": 1}))
    assert err is None, err
    infos = of(events, Error)
    assert len(infos) == 1 and infos[0].retryable and infos[0].kind == "transient"
    assert infos[0].message.startswith("CLI retry 1/1") and infos[0].status_code == 529
    assert [c.text for c in of(events, MessageCompleted)] == ["fine now"]
    assert len(box.api.main_requests()) == 2

def _put_text_before_tool_result(db: Path, session_id: str) -> str:
    """Damage a stored transcript the way hook output does in the wild: text lands ahead of
    a tool_result, so the API sees a tool_use without its result "immediately after".
    Returns the damaged call's id."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT id, entry_json FROM claude_entries WHERE session_id = ? AND subpath = '' "
                           "ORDER BY id", (session_id,)).fetchall()
        for rid, raw in rows:
            entry = json.loads(raw)
            content = (entry.get("message") or {}).get("content")
            if entry.get("type") == "user" and isinstance(content, list) and content \
                    and content[0].get("type") == "tool_result":
                content.insert(0, {"type": "text", "text": "<hook output that landed first>"})
                con.execute("UPDATE claude_entries SET entry_json = ? WHERE id = ?", (json.dumps(entry), rid))
                con.commit()
                return content[1]["tool_use_id"]
    finally:
        con.close()
    raise AssertionError("no tool_result entry stored")


async def test_tool_concurrency_400_then_repair_with_resume_session_at(sandbox) -> None:
    box = sandbox([
        {"rule": tool_concurrency_rule},  # the real API's answer to a dangling tool_use, every time
        {"text": "Running it.", "tool_use": {"name": "Bash", "input": {"command": "echo did-it"}}},
        {"text": "It printed did-it."},
    ])
    # 1: a normal run; its transcript is mirrored into our database
    events, err = await box.run(box.ctx("do the thing"))
    assert err is None, err
    sid0 = box.state["claude"]["session_id"]
    call_id = _put_text_before_tool_result(box.db, sid0)
    # the CLI's own copy is gone: resuming must come from the database
    for f in (box.cfg / "projects").rglob("*.jsonl"):
        f.unlink()

    # 2: a plain resume hits the 400 "tool use concurrency" wall, every time
    n = len(box.api.requests)
    events, err = await box.run(box.ctx("do the thing", continue_history=True, attempt=2, reason="retry",
                                        prompt_extra="[retry context: one tool at a time]"))
    assert isinstance(err, AttemptFailed), err
    assert classify(err).kind == "tool_concurrency"
    sent = box.api.requests[n:]
    assert sent and all(dangling_tool_uses(b) == [call_id] for b in sent)
    # it continued the stored conversation: the original prompt once, then the retry context
    assert user_texts(sent[0])[0] == "do the thing"
    assert user_texts(sent[0]).count("do the thing") == 1
    assert "[retry context: one tool at a time]" in user_texts(sent[0])[-1]

    # 3: repair: rewind to the last message before the rejected tool use (resume_session_at)
    n = len(box.api.requests)
    events, err = await box.run(box.ctx("do the thing", continue_history=True, attempt=3, reason="retry",
                                        repair=True, prompt_extra="[retry context 2]"))
    assert err is None, err
    sent = box.api.requests[n:]
    assert len(sent) == 1 and not dangling_tool_uses(sent[0])
    assert call_id not in {u["id"] for u in tool_uses(sent[0])}  # the broken call is gone
    texts = user_texts(sent[0])
    assert texts[0] == "do the thing" and texts.count("do the thing") == 1
    assert "rewound" in texts[-1] and "Bash" in texts[-1] and call_id in texts[-1]  # told what was dropped
    assert "[retry context 2]" in texts[-1]
    assert "Running it." in json.dumps(sent[0]["messages"])  # kept: the text before the tool use
    sid1 = box.state["claude"]["session_id"]
    assert sid1 == session_uuid("s-test", "main", 1) != sid0  # a forked generation

    # 4: later restarts continue the repaired fork, never the broken branch
    n = len(box.api.requests)
    events, err = await box.run(box.ctx("do the thing", continue_history=True, attempt=4, reason="resume"))
    assert err is None, err
    sent = box.api.requests[n:]
    assert len(sent) == 1 and not dangling_tool_uses(sent[0])
    assert call_id not in {u["id"] for u in tool_uses(sent[0])}
    assert box.state["claude"]["session_id"] == sid1
    assert user_texts(sent[0]).count("do the thing") == 1


async def test_resume_continues_session_without_resending_the_prompt(sandbox) -> None:
    """No database: the CLI's own transcript; a restarted Shepherd (empty ctx.state) finds
    the session by its derived id."""
    box = sandbox([{"text": "first answer"}])
    events, err = await box.run(box.ctx("the original prompt", db=False))
    assert err is None, err
    box.state.clear()  # a new process: nothing remembered
    events, err = await box.run(box.ctx("the original prompt", db=False, continue_history=True, reason="resume"))
    assert err is None, err
    first, second = box.api.main_requests()
    assert user_texts(first) == ["the original prompt"]
    texts = user_texts(second)
    assert texts[0] == "the original prompt" and texts.count("the original prompt") == 1
    assert len(texts) == 2 and texts[1].startswith("[Shepherd]")  # the short "continue" turn
    assert "first answer" in json.dumps(second["messages"])  # the earlier answer is in the history
    assert box.state["claude"]["session_id"] == session_uuid("s-test", "main", 0)
    assert [c.text for c in of(events, MessageCompleted)] == ["Echo: " + texts[1]]


async def test_mid_stream_breaks_are_recovered_and_reported(sandbox) -> None:
    box = sandbox([
        # the stream dies after a complete tool_use block: the CLI runs the tool and goes on
        {"text": "Running.", "tool_use": {"name": "Bash", "input": {"command": "echo ran"}},
         "sse_error": {"type": "overloaded_error", "message": "Overloaded"}},
        # the stream dies halfway through a text: the CLI asks again (without streaming)
        {"text": "A long answer that is cut off halfway.", "partial": True,
         "sse_error": {"type": "overloaded_error", "message": "Overloaded"}},
        {"text": "The complete answer."},
    ])
    events, err = await box.run(box.ctx("go"))
    assert err is None, err
    assert [f.status for f in of(events, ToolFinished)] == ["ok"]
    infos = of(events, Error)
    assert len(infos) == 2 and all(e.retryable and e.kind == "stream_broken" for e in infos)
    completed = of(events, MessageCompleted)
    assert completed[-1].text == "The complete answer."
    # the partial message is closed (no spinner left), under the id its deltas used
    partial = [c for c in completed if c.text.startswith("A long answer")]
    assert len(partial) == 1 and partial[0].text != "A long answer that is cut off halfway."
    assert partial[0].message_id in {d.message_id for d in of(events, TextDelta)}
    assert len(of(events, Usage)) == 1


async def test_hooks_deny_background_and_outside_files_and_limit_subagents(sandbox) -> None:
    sub_prompt = "sub-agent job"
    box = sandbox([
        # the sub-agents' own requests
        {"rule": lambda body: {"text": "sub done"} if sub_prompt in " ".join(user_texts(body)) else None},
        {"text": "Spawning.", "tool_use": [
            {"name": "Agent", "input": {"description": "bg", "prompt": "background job", "run_in_background": True,
                                        "subagent_type": "general-purpose"}},
            {"name": "Read", "input": {"file_path": "/etc/hostname"}},
            {"name": "Read", "input": {"file_path": "inside.txt"}},
            {"name": "Agent", "input": {"description": "fg1", "prompt": sub_prompt + " 1",
                                        "subagent_type": "general-purpose"}},
            {"name": "Agent", "input": {"description": "fg2", "prompt": sub_prompt + " 2",
                                        "subagent_type": "general-purpose"}},
        ]},
        # the slot is free again: a later sub-agent is allowed
        {"tool_use": {"name": "Agent", "input": {"description": "fg3", "prompt": sub_prompt + " 3",
                                                 "subagent_type": "general-purpose"}}},
        {"text": "All done."},
    ])
    (box.ws / "inside.txt").write_text("inside-content\n")
    events, err = await box.run(box.ctx("go", options={"max_subagents": 1}))
    assert err is None, err
    started = {s.call_id: s for s in of(events, ToolStarted)}
    finished = {f.call_id: f for f in of(events, ToolFinished)}
    decisions = {d.call_id: d for d in of(events, HookDecision)}

    def call(pred) -> str:
        return next(c for c, s in started.items() if pred(s))

    bg = call(lambda s: s.input.get("run_in_background"))
    outside = call(lambda s: s.input.get("file_path") == "/etc/hostname")
    inside = call(lambda s: s.input.get("file_path") == "inside.txt")
    fg = [call(lambda s, n=n: s.input.get("description") == n) for n in ("fg1", "fg2", "fg3")]
    assert set(decisions) == {bg, outside, fg[1]}  # fg2: over the limit while fg1 runs
    assert decisions[bg].reason == DENY_BACKGROUND and decisions[bg].tool == "Agent"
    assert "workspace" in decisions[outside].reason
    assert "at most 1 sub-agent" in decisions[fg[1]].reason
    for c in decisions:
        assert finished[c].status == "denied" and decisions[c].reason in finished[c].output
    assert finished[inside].status == "ok" and "inside-content" in finished[inside].output
    assert finished[fg[0]].status == "ok" and "sub done" in finished[fg[0]].output  # ran in the foreground
    assert finished[fg[2]].status == "ok" and "sub done" in finished[fg[2]].output
    kinds = [(type(e).__name__, getattr(e, "call_id", None)) for e in events]
    for c in decisions:  # started < decision < denied result
        assert kinds.index(("ToolStarted", c)) < kinds.index(("HookDecision", c)) < kinds.index(("ToolFinished", c))
    # the agent saw the denial reason as the tool's result in the next request
    main = [b for b in box.api.main_requests() if sub_prompt not in " ".join(user_texts(b))]
    results = {r["tool_use_id"]: json.dumps(r) for b in main for r in tool_results(b)}
    assert DENY_BACKGROUND in json.loads(results[bg])["content"]
    assert "inside-content" in results[inside]


def _processes_with(marker: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


async def test_stop_after_turn_interrupts_once_open_calls_finished(sandbox) -> None:
    import threading

    hold = threading.Event()  # the second model call never answers on its own
    box = sandbox([
        {"text": "First step.", "tool_use": {"name": "Bash", "input": {"command": "echo one"}}},
        {"hold": hold, "tool_use": {"name": "Bash", "input": {"command": "echo two"}}},
    ])
    ctx = box.ctx("go")
    events: list[Any] = []
    async for ev in box.backend.attempt(ctx):  # ends without raising: a stop we asked for
        events.append(ev)
        if isinstance(ev, ToolStarted):
            ctx.stop_after_turn.set()  # asked while the tool runs: wait for its result first
    hold.set()
    assert [(s.input["command"]) for s in of(events, ToolStarted)] == ["echo one"]
    assert [(f.status, f.output) for f in of(events, ToolFinished)] == [("ok", "one")]
    assert len(of(events, Usage)) == 1
    # the next attempt continues the conversation from that committed turn
    events, err = await box.run(box.ctx("go", continue_history=True, reason="resume"))
    assert err is None, err
    last = box.api.main_requests()[-1]
    assert user_texts(last).count("go") == 1 and "one" in json.dumps(tool_results(last))


async def test_early_close_interrupts_and_stops_the_cli_quickly(sandbox) -> None:
    marker = "sleep 31.7"
    box = sandbox([{"tool_use": {"name": "Bash", "input": {"command": marker}}}])
    agen = box.backend.attempt(box.ctx("go")).__aiter__()
    while True:
        ev = await agen.__anext__()
        if isinstance(ev, ToolStarted):
            break
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(agen.aclose(), 10)  # what the supervisor does on pause-now/cancel
    assert loop.time() - t0 < 8
    cli = str(Path(__import__("claude_agent_sdk").__file__).parent / "_bundled" / "claude")
    assert not [p for p in _processes_with(cli) if str(box.ws) in Path(f"/proc/{p}/cwd").resolve().as_posix()]
    assert not _processes_with(marker)


async def test_no_credentials_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_BASE_URL",
                "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY", "CLAUDE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    task = prompt_task("hi", backend="claude", workspace=tmp_path)
    ctx = AttemptContext(session_id="s", task=task, subtask=task.subtasks[0], attempt=1, reason="first",
                         prompt="hi", prompt_extra="", continue_history=False, workspace=tmp_path)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(BackendUnavailable) as ei:
        async for _ in ClaudeBackend().attempt(ctx):
            pass
    assert loop.time() - t0 < 0.5  # no CLI was started
    assert "ANTHROPIC_API_KEY" in str(ei.value) and "claude login" in str(ei.value)
    assert not classify(ei.value).retryable
    with pytest.raises(BackendUnavailable, match="ANTHROPIC_API_KEY"):  # the CLI's pre-flight check
        ClaudeBackend().check_available(task)
    ClaudeBackend(env={"ANTHROPIC_API_KEY": "k"}).check_available(task)
    # a Claude login (credentials file) is enough
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text("{}")
    assert credential_source({"HOME": str(tmp_path)}) is not None


# --- the supervisor driving the real CLI --------------------------------------------------------


async def _supervise(box: Env, prompt: str) -> tuple[Any, str, str]:
    from shepherd.core.clock import RealClock
    from shepherd.core.engine import Supervisor
    from shepherd.core.store import Store

    task = task_from_dict({"title": "t", "backend": "claude", "workspace": str(box.ws),
                           "heartbeat_s": 10_000, "stall_s": 86_400,  # no heartbeat noise at this time scale
                           "subtasks": [{"id": "main", "prompt": prompt}]})
    store = await Store.open(box.db)
    sup = Supervisor(store, task, backend=box.backend, clock=RealClock(scale=0.001), interactive=False)
    status = await sup.run()
    return store, sup.session_id, status


async def test_supervisor_retries_tool_concurrency_with_backoff_then_repairs(sandbox) -> None:
    box = sandbox([
        # the API keeps rejecting any transcript holding this tool use: retrying as-is cannot help
        {"rule": lambda body: tool_concurrency_rule(body) or (
            {"error": {**_TC400, "message": _TC400["message"].format(i=1, ids=tool_uses(body)[0]["id"])}}
            if tool_uses(body) else None)},
        {"text": "Starting.", "tool_use": {"name": "Bash", "input": {"command": "echo step"}}},
        {"text": "Finished after the repair."},
    ])
    store, sid, status = await _supervise(box, "the task prompt")
    try:
        evs = await store.events(sid, after_seq=0, limit=10_000)
        errors = [e for e in evs if e.type == "error"]
        retries = [e for e in evs if e.type == "retry.scheduled"]
        attempts = [e for e in evs if e.type == "attempt.started"]
        assert status == "done"
        assert [e.kind for e in errors] == ["tool_concurrency", "tool_concurrency"]
        assert [(r.delay_s, r.action) for r in retries] == [(2.0, "retry"), (4.0, "repair")]
        assert [a.reason for a in attempts] == ["first", "retry", "retry"]
        # the retry context reached the model in the next request; the prompt never twice
        last = box.api.main_requests()[-1]
        texts = user_texts(last)
        assert texts.count("the task prompt") == 1
        assert "ONE tool at a time" in texts[-1] and "rewound" in texts[-1]  # retry context + repair notice
        second_attempt_first = next(b for b in box.api.main_requests()
                                    if any("ONE tool at a time" in t for t in user_texts(b)))
        assert "rewound" not in user_texts(second_attempt_first)[-1]
        assert not tool_uses(last)  # repaired: the rejected tool turn is gone
        done = [e for e in evs if e.type == "subtask.finished"]
        assert [d.status for d in done] == ["done"]
        assert any(e.type == "message.completed" and e.text == "Finished after the repair." for e in evs)
    finally:
        await store.close()


async def test_supervisor_fails_at_once_on_401_with_a_clear_reason(sandbox) -> None:
    box = sandbox([{"error": {"status": 401, "type": "authentication_error", "message": "invalid x-api-key"},
                    "times": None}])
    store, sid, status = await _supervise(box, "anything")
    try:
        evs = await store.events(sid, after_seq=0, limit=10_000)
        assert status == "failed"
        assert len(box.api.main_requests()) == 1
        assert not [e for e in evs if e.type == "retry.scheduled"]
        assert len([e for e in evs if e.type == "attempt.started"]) == 1
        err = [e for e in evs if e.type == "error"]
        assert len(err) == 1 and err[0].kind == "auth" and not err[0].retryable and err[0].status_code == 401
        assert "API key" in err[0].message
        fin = [e for e in evs if e.type == "subtask.finished"]
        assert fin[0].status == "failed" and fin[0].reason
    finally:
        await store.close()


_TC400 = {
    "status": 400, "type": "invalid_request_error",
    "message": "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {ids}. "
               "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
}


# --- unit: configuration, credentials, environment -----------------------------------------------


def test_config_defaults_and_overrides(tmp_path: Path) -> None:
    task = prompt_task("hi", backend="claude", workspace=tmp_path, model="claude-x")
    cfg = ClaudeConfig.from_task(task)
    assert cfg.model == "claude-x" and cfg.permission_mode == "acceptEdits"
    assert cfg.allowed_tools == ("Bash", "Read", "Write", "Edit", "Glob", "Grep", "Task")
    assert (cfg.max_turns, cfg.cli_max_retries, cfg.max_subagents, cfg.setting_sources) == (50, 0, 4, ())
    assert cfg.max_budget_usd is None
    task = task_from_dict({"title": "t", "backend": "claude", "workspace": str(tmp_path),
                           "subtasks": [{"prompt": "p"}],
                           "claude": {"model": "m2", "permission_mode": "default", "allowed_tools": ["Read"],
                                      "max_turns": 3, "max_budget_usd": 1.5, "cli_max_retries": 2,
                                      "max_subagents": 0, "setting_sources": ["project"]}})
    cfg = ClaudeConfig.from_task(task)
    assert (cfg.model, cfg.permission_mode, cfg.allowed_tools, cfg.max_turns, cfg.max_budget_usd,
            cfg.cli_max_retries, cfg.max_subagents, cfg.setting_sources) == \
        ("m2", "default", ("Read",), 3, 1.5, 2, 0, ("project",))


@pytest.mark.parametrize("bad", [{"permission_mode": "yolo"}, {"allowed_tools": "Bash"}, {"max_turns": 0},
                                 {"cli_max_retries": -1}, {"max_subagents": 1.5}, {"setting_sources": ["web"]},
                                 {"max_budget_usd": True}])
def test_config_rejects_bad_values_with_the_key_named(tmp_path: Path, bad: dict[str, Any]) -> None:
    task = task_from_dict({"title": "t", "backend": "claude", "workspace": str(tmp_path),
                           "subtasks": [{"prompt": "p"}], "claude": bad})
    with pytest.raises(BackendUnavailable, match=next(iter(bad))):
        ClaudeConfig.from_task(task)


def test_credential_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    empty = str(tmp_path / "cfg")
    assert credential_source({"CLAUDE_CONFIG_DIR": empty}) is None
    assert credential_source({"ANTHROPIC_API_KEY": "k"}) == "ANTHROPIC_API_KEY"
    assert credential_source({"ANTHROPIC_AUTH_TOKEN": "t"}) == "ANTHROPIC_AUTH_TOKEN"
    assert credential_source({"ANTHROPIC_BASE_URL": "https://gw.example"}).startswith("ANTHROPIC_BASE_URL")
    assert credential_source({"ANTHROPIC_API_KEY": "", "CLAUDE_CONFIG_DIR": empty}) is None
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "settings.json").write_text('{"apiKeyHelper": "get-key"}')
    assert credential_source({"CLAUDE_CONFIG_DIR": empty}) == "apiKeyHelper"
    (tmp_path / "cfg" / ".credentials.json").write_text("{}")
    assert "login" in credential_source({"CLAUDE_CONFIG_DIR": empty})


def test_cli_env_limits_retries_and_keeps_loopback_off_proxies() -> None:
    cfg = ClaudeConfig(cli_max_retries=2)
    env = cli_env({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "NO_PROXY": "corp.example"}, cfg)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1" and env["CLAUDE_CODE_MAX_RETRIES"] == "2"
    assert env["NO_PROXY"].split(",")[:2] == ["corp.example", "127.0.0.1"] and "localhost" in env["no_proxy"]
    env = cli_env({"ANTHROPIC_BASE_URL": "https://gateway.example"}, ClaudeConfig())
    assert "NO_PROXY" not in env and env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    assert "NO_PROXY" in cli_env({"ANTHROPIC_BASE_URL": "http://localhost:8080"}, cfg)


def test_session_ids_are_derived_per_subtask_and_generation() -> None:
    a = session_uuid("s1", "main")
    assert a == session_uuid("s1", "main", 0) and uuid.UUID(a).version == 5
    assert len({a, session_uuid("s1", "main", 1), session_uuid("s1", "other"), session_uuid("s2", "main")}) == 4


# --- unit: hook policy -------------------------------------------------------------------------------


def _deny_reason(out: dict[str, Any]) -> str | None:
    spec = out.get("hookSpecificOutput") or {}
    return spec.get("permissionDecisionReason") if spec.get("permissionDecision") == "deny" else None


async def test_policy_subagents_background_limit_and_slots(tmp_path: Path) -> None:
    pol = HookPolicy(tmp_path, max_subagents=2)

    async def pre(tool: str, inp: dict[str, Any], cid: str) -> dict[str, Any]:
        return await pol.pre_tool_use({"tool_name": tool, "tool_input": inp}, cid, {"signal": None})

    assert _deny_reason(await pre("Agent", {"prompt": "x", "run_in_background": True}, "bg")) == DENY_BACKGROUND
    a = await pre("Task", {"prompt": "x"}, "a")
    assert a["hookSpecificOutput"]["permissionDecision"] == "allow"
    assert a["hookSpecificOutput"]["updatedInput"] == {"prompt": "x", "run_in_background": False}  # pinned
    assert (await pre("Agent", {"prompt": "y"}, "b"))["hookSpecificOutput"]["permissionDecision"] == "allow"
    assert "at most 2" in (_deny_reason(await pre("Agent", {"prompt": "z"}, "c")) or "")
    assert pol.active_subagents == {"a", "b"}  # the denied ones took no slot
    await pol.post_tool_use({"hook_event_name": "PostToolUseFailure", "tool_name": "Agent"}, "a", {})
    assert _deny_reason(await pre("Agent", {"prompt": "z"}, "d")) is None
    assert pol.active_subagents == {"b", "d"}
    assert [d.call_id for d in pol.take_decisions({"bg"})] == ["bg"]
    assert [d.call_id for d in pol.take_decisions()] == ["c"]
    assert pol.expects_post("b") and not pol.expects_post("c")
    # sub-agents not in allowed_tools: no "allow" (the CLI's permissions decide), still no background
    strict = HookPolicy(tmp_path, subagents_allowed=False)
    assert await strict.pre_tool_use({"tool_name": "Agent", "tool_input": {"prompt": "x"}}, "e", {}) == {}
    assert HookPolicy(tmp_path, max_subagents=0).check("Agent", {"prompt": "x"}, "f")[0] == "deny"


def test_policy_keeps_file_tools_in_the_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (ws / "link").symlink_to(tmp_path)  # a symlink that leads out
    pol = HookPolicy(ws, extra_read_roots=[scratch])
    ok = [("Read", {"file_path": "sub/a.txt"}), ("Write", {"file_path": str(ws / "new.txt")}),
          ("Edit", {"file_path": "./sub/../a.txt"}), ("Glob", {"pattern": "**/*.py"}),
          ("Grep", {"pattern": "x", "path": "sub"}), ("Read", {"file_path": str(scratch / "out.txt")}),
          ("Bash", {"command": "cat /etc/passwd"}), ("Glob", {"pattern": str(ws / "sub" / "*.py")})]
    for tool, inp in ok:
        assert pol.check(tool, inp, "x") == ("none", None), (tool, inp)
    bad = [("Read", {"file_path": "/etc/passwd"}), ("Write", {"file_path": "../escape.txt"}),
           ("Edit", {"file_path": "link/x.txt"}), ("MultiEdit", {"file_path": "~/x"}),
           ("NotebookEdit", {"notebook_path": "/tmp/n.ipynb"}), ("Grep", {"pattern": "x", "path": "/"}),
           ("Glob", {"pattern": "/etc/**/*.conf"}), ("Write", {"file_path": str(scratch / "w.txt")})]
    for tool, inp in bad:
        verdict, reason = pol.check(tool, inp, "x")
        assert verdict == "deny" and "inside the workspace" in (reason or ""), (tool, inp)


async def test_policy_post_hook_sync_waits_on_a_condition(tmp_path: Path) -> None:
    pol = HookPolicy(tmp_path)
    waiter = asyncio.ensure_future(pol.wait_settled("t1", 5))
    await asyncio.sleep(0)
    assert not waiter.done()
    await pol.post_tool_use({"hook_event_name": "PostToolUse", "duration_ms": 12}, "t1", {})
    assert await waiter is True and pol.post_info["t1"]["duration_ms"] == 12
    assert await pol.wait_settled("never", 0.01) is False


# --- unit: where to rewind a transcript -------------------------------------------------------------


def _m(kind: str, uid: str, *blocks: dict[str, Any] | str) -> dict[str, Any]:
    content: Any = blocks[0] if len(blocks) == 1 and isinstance(blocks[0], str) else list(blocks)
    return {"type": kind, "uuid": uid, "message": {"role": kind, "content": content}}


def _use(cid: str, name: str = "Bash") -> dict[str, Any]:
    return {"type": "tool_use", "id": cid, "name": name, "input": {"command": cid}}


def _res(cid: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": cid, "content": "ok"}


def test_repair_point_cases() -> None:
    text = {"type": "text", "text": "note"}
    ok_history = [_m("user", "u1", "go"), _m("assistant", "a1", {"type": "text", "text": "hi"}),
                  _m("assistant", "a2", _use("t1")), _m("user", "u2", _res("t1"))]
    # text ahead of the result: the API rejects t1; keep what came before the tool use
    p = find_repair_point(ok_history[:3] + [_m("user", "u2", text, _res("t1")), _m("assistant", "a3", "x")])
    assert p and p.found and p.resume_at == "a1" and [c[0] for c in p.dropped_calls] == ["t1"]
    assert p.dropped_messages == 3 and "Bash" in p.describe() and "t1" in p.describe()
    # a result missing altogether, later turns after it
    p = find_repair_point(ok_history[:3] + [_m("user", "u3", "continue"), _m("assistant", "a3", "y")])
    assert p and p.found and p.resume_at == "a1"
    # parallel calls with one result missing: cut before the first call of the turn
    p = find_repair_point([_m("user", "u1", "go"), _m("assistant", "a1", _use("t1")),
                           _m("assistant", "a2", _use("t2")), _m("user", "u2", _res("t1"))])
    assert p and p.resume_at == "u1" and [c[0] for c in p.dropped_calls] == ["t1", "t2"]
    # the first bad turn wins even when a later one is bad too
    p = find_repair_point([_m("user", "u1", "go"), _m("assistant", "a1", _use("t1")), _m("user", "u2", "hm"),
                           _m("assistant", "a2", _use("t2")), _m("user", "u3", _res("t2")),
                           _m("assistant", "a3", _use("t3"))])
    assert p and p.resume_at == "u1"
    # nothing visibly wrong: cut the last tool turn (the API named something we cannot see)
    p = find_repair_point(ok_history + [_m("assistant", "a3", "done")])
    assert p and not p.found and p.resume_at == "a1"
    # nothing to rewind to
    assert find_repair_point([_m("user", "u1", "go"), _m("assistant", "a1", "hi")]) is None
    assert find_repair_point([_m("assistant", "a1", _use("t1"))]) is None
    assert find_repair_point([]) is None
