"""ClaudeBackend against the REAL claude-agent-sdk + bundled Claude Code CLI + a fake
Messages API on loopback (tests/fakes/fake_anthropic.py), plus unit tests of the pure parts
(config, credentials, hook policy, transcript repair point).

Each CLI start costs ~0.5-1.5 s, so the integration tests are few and each checks a lot.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.backends.base import AttemptContext, BackendUnavailable
from core.backends.claude import (
    ClaudeBackend,
    ClaudeConfig,
    cli_env,
    credential_source,
    find_repair_point,
    session_uuid,
)
from core.backends.claude_hooks import DENY_BACKGROUND, HookPolicy
from core.errors import AttemptFailed, classify
from core.events import (
    Error,
    HookDecision,
    MessageCompleted,
    TextDelta,
    ThinkingDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)
from core.task import prompt_task, task_from_dict
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
        self.ws.mkdir()
        self.cfg = tmp / "cfg"
        self.cfg.mkdir()
        (tmp / "ctmp").mkdir()
        self.db = tmp / "shepherd.db"
        self.env = {
            "ANTHROPIC_BASE_URL": api.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-test-fake",
            "CLAUDE_CONFIG_DIR": str(self.cfg),
            "CLAUDE_CODE_TMPDIR": str(tmp / "ctmp"),
        }
        self.backend = ClaudeBackend(env=self.env)
        self.state: dict[str, Any] = {}

    def ctx(self, prompt: str = "hello", *, options: dict[str, Any] | None = None, continue_history: bool = False,
            prompt_extra: str = "", repair: bool = False, attempt: int = 1, reason: str = "first",
            db: bool = True) -> AttemptContext:
        data: dict[str, Any] = {"title": "t", "backend": "claude", "workspace": str(self.ws),
                                "subtasks": [{"id": "main", "prompt": prompt}]}
        if options:
            data["claude"] = options
        task = task_from_dict(data)
        return AttemptContext(
            session_id="s-test", task=task, subtask=task.subtasks[0], attempt=attempt, reason=reason,
            prompt=prompt, prompt_extra=prompt_extra, continue_history=continue_history, workspace=self.ws,
            db_path=self.db if db else None, repair=repair, state=self.state,
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
