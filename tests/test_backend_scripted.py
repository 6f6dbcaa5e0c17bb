"""The scripted backend: the real openai-agents Runner, real tools and sessions, scripted model."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import SQLiteSession
from agents.exceptions import MaxTurnsExceeded, ModelBehaviorError, ModelRefusalError

from shepherd.core.backends.agents_common import SESSION_STATE_KEY
from shepherd.core.backends.base import AttemptContext
from shepherd.core.backends.scripted import CURSOR_KEY, ScriptedBackend, final_message, split_deltas
from shepherd.core.clock import AutoClock, FakeClock
from shepherd.core.errors import StreamBroken, classify
from shepherd.core.events import Event, MessageCompleted, TextDelta, ThinkingDelta, ToolFinished, ToolStarted, Usage
from shepherd.core.task import FAIL_KINDS, Task, task_from_dict

EXPECTED: dict[str, type[BaseException]] = {
    "tool_concurrency": openai.BadRequestError,
    "rate_limit": openai.RateLimitError,
    "auth": openai.AuthenticationError,
    "context_overflow": openai.BadRequestError,
    "content_policy": ModelRefusalError,
    "images_rejected": openai.BadRequestError,
    "transient": openai.InternalServerError,
    "stream_broken": ModelBehaviorError,
    "invalid_request": openai.BadRequestError,
    "max_turns": MaxTurnsExceeded,
    "unknown": RuntimeError,
}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    (w / "README.md").write_text("# Demo\nhello\n")
    return w


def make_task(ws: Path, steps: list[dict[str, Any]], **extra: Any) -> Task:
    return task_from_dict({
        "backend": "scripted", "workspace": str(ws),
        "subtasks": [{"id": "fix", "prompt": "Fix the bug.", "steps": steps}], **extra,
    })


class Runner:
    """Drives backend.attempt(ctx) the way the supervisor does, one subtask."""

    def __init__(self, task: Task, *, clock: Any = None, backend: ScriptedBackend | None = None,
                 session_factory: Any = None, state: dict[str, Any] | None = None) -> None:
        self.task = task
        self.clock = clock or AutoClock()
        self.backend = backend or ScriptedBackend(session_factory=session_factory)
        self.state: dict[str, Any] = {} if state is None else state
        self.attempt_no = 0

    def ctx(self, *, extra: str = "", cont: bool | None = None, **kw: Any) -> AttemptContext:
        self.attempt_no += 1
        sub = self.task.subtasks[0]
        return AttemptContext(
            session_id="s1", task=self.task, subtask=sub, attempt=self.attempt_no,
            reason="first" if self.attempt_no == 1 else "retry", prompt=sub.prompt, prompt_extra=extra,
            continue_history=self.attempt_no > 1 if cont is None else cont,
            workspace=self.task.workspace, clock=self.clock, state=self.state, **kw,
        )

    async def run(self, ctx: AttemptContext | None = None) -> tuple[list[Event], BaseException | None]:
        ctx = ctx or self.ctx()
        events: list[Event] = []
        try:
            async for ev in self.backend.attempt(ctx):
                events.append(ev)
        except Exception as e:  # noqa: BLE001
            return events, e
        return events, None

    @property
    def session(self) -> Any:
        return self.state[SESSION_STATE_KEY][1]


async def until(cond: Any, timeout: float = 10.0) -> None:
    """Wait (bounded) for a condition that work in threads/subprocesses makes true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition never became true"
        await asyncio.sleep(0.001)


def texts(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def user_messages(items: list[Any]) -> list[str]:
    return [i["content"] for i in items if isinstance(i, dict) and i.get("role") == "user"]


def base_id(call_id: str) -> str:
    """Scripted call ids end in a random tail (unique across resumed processes)."""
    return re.sub(r"_[0-9a-f]{6}$", "", call_id)


# --- happy paths -----------------------------------------------------------------------------


async def test_parallel_tools_run_in_workspace_and_feed_next_call(ws: Path) -> None:
    r = Runner(make_task(ws, [
        {"text": "Let me look around.", "delay_ms": 20, "tools": [
            {"name": "list_files", "args": {"path": "."}},
            {"name": "read_file", "args": {"path": "README.md"}},
            {"name": "write_file", "args": {"path": "out/notes.txt", "content": "noted"}},
            {"name": "run_command", "args": {"command": "echo ran > ran.txt && echo ok", "timeout_s": 30}},
        ]},
        {"text": "All done."},
    ]))
    events, err = await r.run()
    assert err is None
    starts = [e for e in events if isinstance(e, ToolStarted)]
    finishes = [e for e in events if isinstance(e, ToolFinished)]
    assert [base_id(s.call_id) for s in starts] == [f"call_fix_0_{i}" for i in range(4)]
    assert len({s.call_id for s in starts}) == 4
    # parallel: every call started before any finished
    assert events.index(starts[-1]) < events.index(finishes[0])
    assert starts[0].input == {"path": "."} and starts[2].name == "write_file"
    assert all(f.status == "ok" for f in finishes), finishes
    assert (ws / "out" / "notes.txt").read_text() == "noted"
    assert (ws / "ran.txt").read_text() == "ran\n"
    outputs = {f.call_id: f.output for f in finishes}
    assert {base_id(k): v for k, v in outputs.items()}["call_fix_0_1"] == "# Demo\nhello\n"
    # the tool outputs reached the second model call
    second = r.backend.calls[1]
    assert second.step_index == 1
    fed = {i["call_id"]: i["output"] for i in second.input if i.get("type") == "function_call_output"}
    assert fed == outputs
    assert set(second.tool_names) == {"list_files", "read_file", "write_file", "run_command"}
    # streamed as deltas, paced by the clock, then completed
    assert texts(events) == "Let me look around.All done."
    assert [e.text for e in events if isinstance(e, MessageCompleted)] == ["Let me look around.", "All done."]
    assert r.clock.sleeps.count(0.02) == len(split_deltas("Let me look around."))
    assert sum(isinstance(e, Usage) for e in events) == 2
    # delta ids match their message
    first_id = next(e.message_id for e in events if isinstance(e, TextDelta))
    assert next(e for e in events if isinstance(e, MessageCompleted)).message_id == first_id


async def test_tool_error_output_is_marked_error(ws: Path) -> None:
    r = Runner(make_task(ws, [{"tools": [
        {"name": "read_file", "args": {"path": "../etc/passwd"}},
        {"name": "run_command", "args": {"command": "exit 4", "timeout_s": 5}},
    ]}]))
    events, err = await r.run()
    assert err is None
    fins = {base_id(e.call_id): e for e in events if isinstance(e, ToolFinished)}
    assert fins["call_fix_0_0"].status == "error" and "outside the workspace" in fins["call_fix_0_0"].output
    assert fins["call_fix_0_1"].status == "error" and "code 4" in fins["call_fix_0_1"].output


async def test_no_steps_and_thinking(ws: Path) -> None:
    events, err = await Runner(make_task(ws, [])).run()
    assert err is None and texts(events) == final_message()
    events, err = await Runner(make_task(ws, [{"thinking": "Hmm, the parser.", "text": "Found it."}])).run()
    assert err is None
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)) == "Hmm, the parser."
    assert texts(events) == "Found it."


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FAIL_KINDS)
async def test_fail_at_start_raises_real_exception(ws: Path, kind: str) -> None:
    r = Runner(make_task(ws, [{"fail": kind, "retry_after": 7}]))
    events, err = await r.run()
    assert type(err) is EXPECTED[kind], repr(err)
    assert not any(isinstance(e, TextDelta) for e in events)
    info = classify(err)
    assert info.kind == kind, info
    if kind == "rate_limit":
        assert info.retry_after == 7 and err.response.headers["retry-after"] == "7"  # type: ignore[union-attr]


class SlowConsumer(Runner):
    """Takes its time with every event, like a supervisor awaiting the store."""

    async def run(self, ctx: AttemptContext | None = None) -> tuple[list[Event], BaseException | None]:
        ctx = ctx or self.ctx()
        events: list[Event] = []
        try:
            async for ev in self.backend.attempt(ctx):
                events.append(ev)
                for _ in range(10):
                    await asyncio.sleep(0)
        except Exception as e:  # noqa: BLE001
            return events, e
        return events, None


@pytest.mark.parametrize("kind", FAIL_KINDS)
@pytest.mark.parametrize("runner_cls", [Runner, SlowConsumer])
async def test_fail_mid_stream_after_n_deltas(ws: Path, kind: str, runner_cls: type[Runner]) -> None:
    text = "One two three four five six."
    r = runner_cls(make_task(ws, [{"text": text, "fail": kind, "after_deltas": 3, "retry_after": 2}]))
    events, err = await r.run()
    assert type(err) is EXPECTED[kind], repr(err)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert [d.text for d in deltas] == split_deltas(text)[:3]
    assert not any(isinstance(e, MessageCompleted) for e in events)
    assert classify(err).kind == kind


async def test_mid_stream_failure_without_text_uses_filler(ws: Path) -> None:
    events, err = await Runner(make_task(ws, [{"fail": "transient", "after_deltas": 20}])).run()
    assert isinstance(err, openai.InternalServerError)
    assert sum(isinstance(e, TextDelta) for e in events) == 20


async def test_failed_turn_leaves_no_partial_history(ws: Path) -> None:
    r = Runner(make_task(ws, [{"text": "partial words here", "fail": "stream_broken", "after_deltas": 2}]))
    _, err = await r.run()
    assert isinstance(err, ModelBehaviorError)
    items = await r.session.get_items()
    assert user_messages(items) == ["Fix the bug."] and len(items) == 1


# --- attempts, history, restarts --------------------------------------------------------------------


async def test_cursor_continues_across_attempts_and_restart_keeps_one_user_message(ws: Path) -> None:
    r = Runner(make_task(ws, [
        {"text": "Reading.", "tools": [{"name": "read_file", "args": {"path": "README.md"}}]},
        {"fail": "tool_concurrency"},
        {"text": "Trying again", "fail": "transient", "after_deltas": 1},
        {"text": "Fixed it."},
    ]))
    _, err = await r.run(r.ctx())
    assert isinstance(err, openai.BadRequestError)
    assert r.state[CURSOR_KEY] == 2
    # retry with context: continue from history, no second copy of the prompt
    _, err = await r.run(r.ctx(extra="[Shepherd] one tool at a time, please"))
    assert isinstance(err, openai.InternalServerError)
    events, err = await r.run(r.ctx())
    assert err is None and texts(events) == "Fixed it."
    assert [c.step_index for c in r.backend.calls] == [0, 1, 2, 3]
    assert [c.attempt for c in r.backend.calls] == [1, 1, 2, 3]
    last_input = r.backend.calls[-1].input
    assert user_messages(last_input) == ["Fix the bug.", "[Shepherd] one tool at a time, please"]
    # the completed first turn (call + output) is in the history the restart saw
    assert [i.get("type") for i in last_input if i.get("type", "").startswith("function")] == [
        "function_call", "function_call_output"]
    items = await r.session.get_items()
    assert user_messages(items) == ["Fix the bug.", "[Shepherd] one tool at a time, please"]
    # when steps run out, the model just finishes
    events, err = await r.run(r.ctx())
    assert err is None and texts(events) == final_message()


async def test_fresh_attempt_sends_prompt_with_extra(ws: Path) -> None:
    r = Runner(make_task(ws, [{"text": "ok"}]))
    await r.run(r.ctx(extra="Note: be brief.", cont=False))
    assert user_messages(r.backend.calls[0].input) == ["Fix the bug.\n\nNote: be brief."]


async def test_continue_without_history_sends_the_prompt(ws: Path) -> None:
    r = Runner(make_task(ws, [{"text": "ok"}]))
    await r.run(r.ctx(cont=True))
    assert user_messages(r.backend.calls[0].input) == ["Fix the bug."]


async def test_dangling_call_gets_interrupted_output(ws: Path) -> None:
    session = SQLiteSession("pre")
    await session.add_items([
        {"role": "user", "content": "Fix the bug."},
        {"type": "function_call", "call_id": "call_old_1", "name": "run_command", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_old_2", "name": "read_file", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_old_2", "output": "fine"},
        {"role": "user", "content": "later note"},
    ])
    r = Runner(make_task(ws, [{"text": "ok"}]), session_factory=lambda ctx, key: session)
    events, err = await r.run(r.ctx(cont=True, repair=True))
    assert err is None
    seen = r.backend.calls[0].input
    kinds = [(i.get("type") or i.get("role"), i.get("call_id")) for i in seen]
    assert kinds == [("user", None), ("function_call", "call_old_1"), ("function_call", "call_old_2"),
                     ("function_call_output", "call_old_2"), ("function_call_output", "call_old_1"),
                     ("user", None)]
    synthetic = seen[4]["output"]
    assert "interrupted" in synthetic.lower()
    stored = await session.get_items()
    assert sum(1 for i in stored if i.get("type") == "function_call_output") == 2
    assert user_messages(stored) == ["Fix the bug.", "later note"]


async def test_strip_images_replaces_image_inputs(ws: Path) -> None:
    session = SQLiteSession("img")
    await session.add_items([{"role": "user", "content": [
        {"type": "input_text", "text": "See this screenshot"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
    ]}])
    r = Runner(make_task(ws, [{"text": "ok"}]), session_factory=lambda ctx, key: session)
    _, err = await r.run(r.ctx(cont=True, strip_images=True))
    assert err is None
    parts = r.backend.calls[0].input[0]["content"]
    assert [p["type"] for p in parts] == ["input_text", "input_text"]
    assert "image removed" in parts[1]["text"]


async def test_new_process_recovers_cursor_from_history(ws: Path, tmp_path: Path) -> None:
    db = tmp_path / "agents.db"
    steps = [{"tools": [{"name": "list_files", "args": {}}]}, {"fail": "transient"}, {"text": "Resumed."}]
    r1 = Runner(make_task(ws, steps), session_factory=lambda ctx, key: SQLiteSession(key, db))
    _, err = await r1.run()
    assert isinstance(err, openai.InternalServerError)
    # a new process: fresh backend state, same session on disk
    r2 = Runner(make_task(ws, steps), session_factory=lambda ctx, key: SQLiteSession(key, db))
    r2.attempt_no = 1
    events, err = await r2.run(r2.ctx(cont=True))
    # step 0 left its calls in the history, so it is not replayed (no duplicate call ids);
    # the failing step 1 left no trace and plays again
    assert r2.backend.calls[0].step_index == 1
    assert isinstance(err, openai.InternalServerError)
    events, err = await r2.run(r2.ctx(cont=True))
    assert err is None and texts(events) == "Resumed."


# --- stopping --------------------------------------------------------------------------------------------


async def test_stop_after_turn_commits_the_turn(ws: Path) -> None:
    r = Runner(make_task(ws, [
        {"text": "Two things at once.", "tools": [
            {"name": "write_file", "args": {"path": "a.txt", "content": "A"}},
            {"name": "run_command", "args": {"command": "echo B > b.txt", "timeout_s": 30}},
        ]},
        {"text": "Finished after the pause."},
    ]))
    ctx = r.ctx()
    events: list[Event] = []
    async for ev in r.backend.attempt(ctx):
        events.append(ev)
        if isinstance(ev, ToolStarted):
            ctx.stop_after_turn.set()
    # ended normally, after both tools finished, without another model call
    assert sum(isinstance(e, ToolFinished) for e in events) == 2
    assert len(r.backend.calls) == 1
    assert (ws / "a.txt").read_text() == "A" and (ws / "b.txt").read_text() == "B\n"
    items = await r.session.get_items()
    assert sum(1 for i in items if i.get("type") == "function_call_output") == 2
    # resume continues from the committed turn
    events, err = await r.run(r.ctx())
    assert err is None and texts(events) == "Finished after the pause."
    assert user_messages(r.backend.calls[-1].input) == ["Fix the bug."]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def test_early_close_cancels_run_and_kills_tool(ws: Path) -> None:
    r = Runner(make_task(ws, [{"tools": [
        {"name": "run_command", "args": {"command": "sleep 300 & echo $! > bg.pid; wait", "timeout_s": 600}},
    ]}]))
    ctx = r.ctx()
    agen = r.backend.attempt(ctx)
    async for ev in agen:
        if isinstance(ev, ToolStarted):
            break
    pidfile = ws / "bg.pid"
    await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    pid = int(pidfile.read_text())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(agen.aclose(), 10)
    assert loop.time() - t0 < 5
    await until(lambda: not _alive(pid), timeout=5)  # the tool's process group was killed


async def test_cancelled_consumer_cancels_run(ws: Path) -> None:
    clock = FakeClock()
    r = Runner(make_task(ws, [{"text": "slow words are streaming here", "delay_ms": 1000}]), clock=clock)
    got: list[Event] = []

    async def consume() -> None:
        async for ev in r.backend.attempt(r.ctx()):
            got.append(ev)

    task = asyncio.create_task(consume())
    await until(lambda: clock.pending() == 1)
    clock.advance(1)
    await until(lambda: bool(got) and clock.pending() == 1)  # first delta out, sleeping before the 2nd
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert [e.text for e in got if isinstance(e, TextDelta)] == ["slow "]
    assert clock.pending() == 0  # the model stream was cancelled with the run


async def test_run_without_final_output_is_stream_broken(ws: Path) -> None:
    from shepherd.core.backends.agents_common import stream_run

    class NoFinal:
        final_output = None
        run_loop_task = None

        def cancel(self, mode: str = "immediate") -> None:
            pass

        async def stream_events(self):  # type: ignore[no-untyped-def]
            return
            yield

    r = Runner(make_task(ws, []))
    with pytest.raises(StreamBroken):
        async for _ in stream_run(NoFinal(), r.ctx()):  # type: ignore[arg-type]
            pass


async def test_sdk_loggers_stay_off_the_terminal(ws: Path, capfd: pytest.CaptureFixture[str]) -> None:
    r = Runner(make_task(ws, [{"text": "x y z", "fail": "transient", "after_deltas": 1},
                              {"tools": [{"name": "no_such_tool", "args": {}}]}]))
    _, err = await r.run()
    assert isinstance(err, openai.InternalServerError)
    _, err = await r.run()
    assert isinstance(err, ModelBehaviorError)  # unknown tool
    out, errout = capfd.readouterr()
    assert out == "" and errout == ""


async def test_store_backed_session_survives_a_new_process(ws: Path, tmp_path: Path) -> None:
    from shepherd.core.store import open_agents_session
    from shepherd.core.store.db import Store

    db = tmp_path / "shepherd.db"
    store = await Store.open(db)  # the engine holds the store open while attempts run
    try:
        steps = [{"text": "Looking.", "tools": [{"name": "read_file", "args": {"path": "README.md"}}]},
                 {"fail": "rate_limit", "retry_after": 1}, {"text": "Back again."}]
        r1 = Runner(make_task(ws, steps))
        _, err = await r1.run(r1.ctx(db_path=db))
        assert isinstance(err, openai.RateLimitError)
        assert SESSION_STATE_KEY not in r1.state  # nothing cached: the database holds the history
        # a new process (fresh backend and state) continues from the database
        r2 = Runner(make_task(ws, steps))
        r2.attempt_no = 1
        events, err = await r2.run(r2.ctx(db_path=db, cont=True, extra="[Shepherd] retry note"))
        assert isinstance(err, openai.RateLimitError)  # step 1 replays (it left no trace)
        events, err = await r2.run(r2.ctx(db_path=db, cont=True))
        assert err is None and texts(events) == "Back again."
        seen = r2.backend.calls[-1].input
        assert user_messages(seen) == ["Fix the bug.", "[Shepherd] retry note"]
        assert [base_id(i["call_id"]) for i in seen if i.get("type") == "function_call_output"] == ["call_fix_0_0"]
        session = open_agents_session(db, "s1:fix")
        try:
            stored = await session.get_items()
        finally:
            await session.close()
        assert user_messages(stored) == ["Fix the bug.", "[Shepherd] retry note"]
        assert stored[-1]["role"] == "assistant"
    finally:
        await store.close()
