"""Tool approvals in the openai-agents based backends (openai, scripted): openai-agents' own
human-in-the-loop (``needs_approval``, ``result.interruptions``, resuming from a RunState),
driven through ``backend.attempt(ctx)`` with a real store file. The openai backend runs the
real SDK and client against the loopback FakeOpenAI (both API flavours); the scripted one
the real Runner with its scripted model. The test answers the gate the way the engine
does: after it saw the call's ``approval.requested``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shepherd.core import prompts
from shepherd.core.approvals import ApprovalGate, ApprovalWithdrawn, Decision, policy_from_task
from shepherd.core.backends.agents_common import close_dangling_calls
from shepherd.core.backends.base import AttemptContext
from shepherd.core.backends.openai_agents import OpenAIAgentsBackend
from shepherd.core.backends.scripted import ScriptedBackend
from shepherd.core.clock import AutoClock
from shepherd.core.events import ApprovalDecided, ApprovalRequested, Event, ToolFinished, ToolStarted
from shepherd.core.store.db import Store
from shepherd.core.task import task_from_dict
from tests.fakes.fake_openai import FakeOpenAI

KINDS = ["scripted", "openai-chat_completions", "openai-responses"]
PROMPT = "Please fix the parser."
MARK = "echo ran >> marker.txt"  # a gated command: marker.txt has one line per run


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    (w / "README.md").write_text("readme text\n")
    return w


def run_cmd(command: str) -> dict[str, Any]:
    return {"name": "run_command", "args": {"command": command, "timeout_s": 30}}


class Rig:
    """One backend kind over one workspace and one store file; ``turns`` is the model's
    script (scripted steps or FakeOpenAI turns: the same shape)."""

    def __init__(self, kind: str, ws: Path, db: Path, turns: list[dict[str, Any]],
                 approve_tools: list[str], auto_approve: list[dict[str, str]] | None = None) -> None:
        self.kind = kind
        self.ws = ws
        self.db = db
        self.turns = turns
        self.policy = policy_from_task(approve_tools, auto_approve or [])
        self.api: FakeOpenAI | None = None
        backend = "scripted" if kind == "scripted" else "openai"
        sub: dict[str, Any] = {"id": "main", "prompt": PROMPT}
        if kind == "scripted":
            sub["steps"] = turns
        # (the task-file keys are core/task.py's; a backend reads only the gate's policy)
        self.task = task_from_dict({"backend": backend, "workspace": str(ws), "model": "fake-model",
                                    "subtasks": [sub]})
        self.store: Store | None = None
        self.new_process()
        self.attempt_no = 0

    def new_process(self) -> None:
        """A fresh backend and backend state (what a new runner process starts with); the
        next attempt continues the subtask's history."""
        self.state: dict[str, Any] = {}
        self.attempt_no = 1
        # the openai backend is built when the fake server runs (its URL)
        self.backend: Any = ScriptedBackend() if self.kind == "scripted" else None

    @contextlib.contextmanager
    def running(self) -> Iterator["Rig"]:
        if self.kind == "scripted":
            yield self
            return
        with FakeOpenAI(list(self.turns)) as api:
            self.api = api
            yield self

    def _backend(self) -> Any:
        if self.backend is None:
            assert self.api is not None
            flavour = self.kind.split("-", 1)[1]
            self.backend = OpenAIAgentsBackend(api_key="sk-test-not-a-real-key", base_url=self.api.base_url,
                                               api=flavour)
        return self.backend

    def ctx(self, gate: ApprovalGate | None) -> AttemptContext:
        self.attempt_no += 1
        sub = self.task.subtasks[0]
        return AttemptContext(session_id="s1", task=self.task, subtask=sub, attempt=self.attempt_no,
                              reason="first" if self.attempt_no == 1 else "resume", prompt=sub.prompt,
                              prompt_extra="", continue_history=self.attempt_no > 1, workspace=self.ws,
                              db_path=self.db, store=self.store, clock=AutoClock(), state=self.state,
                              approvals=gate)

    def gate(self) -> ApprovalGate:
        return ApprovalGate(self.policy)

    async def attempt(self, gate: ApprovalGate | None,
                      answer: Callable[[ApprovalRequested], Decision | None] | None = None,
                      ) -> tuple[list[Event], BaseException | None]:
        """One attempt. On each approval.requested that no approval.decided follows at once
        (a rule's), ``answer`` is called from another task, as the engine answers."""
        events: list[Event] = []
        failures: list[BaseException] = []
        ctx = self.last_ctx = self.ctx(gate)

        def later(req: ApprovalRequested) -> None:
            if any(isinstance(e, ApprovalDecided) and e.call_id == req.call_id for e in events):
                return  # a rule answered it (its decided follows the requested at once)
            try:
                decision = answer(req) if answer is not None else None
            except BaseException as e:  # noqa: BLE001 - a failed check in the answer ends the attempt
                failures.append(e)
                decision = None
                if gate is not None:
                    gate.close()
            if decision is not None:
                assert gate is not None
                gate.answer(req.call_id, decision)

        try:
            async with contextlib.aclosing(self._backend().attempt(ctx)) as stream:
                async for ev in stream:
                    events.append(ev)
                    if isinstance(ev, ApprovalRequested):
                        asyncio.get_running_loop().call_soon(later, ev)
        except Exception as e:  # noqa: BLE001
            if failures:
                raise failures[0] from e
            return events, e
        if failures:
            raise failures[0]
        return events, None

    # what the model was sent -----------------------------------------------------------------
    def last_tool_outputs(self) -> dict[str, str]:
        """call_id -> output in the last model request."""
        if self.kind == "scripted":
            items = self.backend.calls[-1].input
            return {i["call_id"]: i["output"] for i in items
                    if isinstance(i, dict) and i.get("type") == "function_call_output"}
        assert self.api is not None
        body = self.api.requests[-1]["body"]
        if self.kind.endswith("chat_completions"):
            return {m["tool_call_id"]: m["content"] for m in body["messages"] if m.get("role") == "tool"}
        return {i["call_id"]: i["output"] for i in body["input"] if i.get("type") == "function_call_output"}

    def model_calls(self) -> int:
        if self.kind == "scripted":
            return len(self.backend.calls)
        assert self.api is not None
        return len(self.api.requests)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = await Store.open(tmp_path / "shepherd.db")
    try:
        yield s
    finally:
        await s.close()


def rig_for(kind: str, ws: Path, store: Store, turns: list[dict[str, Any]], approve: list[str],
            rules: list[dict[str, str]] | None = None) -> Rig:
    r = Rig(kind, ws, ws.parent / "shepherd.db", turns, approve, rules)
    r.store = store
    return r


def marker_runs(ws: Path) -> int:
    m = ws / "marker.txt"
    return len(m.read_text().splitlines()) if m.exists() else 0


def of(events: list[Event], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def kinds(events: list[Event], call_id: str) -> list[str]:
    """The call's events in order: started, requested, decided, finished:<status>."""
    out = []
    for e in events:
        if getattr(e, "call_id", None) != call_id:
            continue
        if isinstance(e, ToolStarted):
            out.append("started")
        elif isinstance(e, ApprovalRequested):
            out.append("requested")
        elif isinstance(e, ApprovalDecided):
            out.append(f"decided:{e.source}")
        elif isinstance(e, ToolFinished):
            out.append(f"finished:{e.status}")
    return out


YES = Decision("approved", "tui")


# --- approve, deny, rule -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_approve_runs_the_tool_once_after_the_yes(kind: str, ws: Path, store: Store) -> None:
    rig = rig_for(kind, ws, store, [{"text": "Running it.", "tools": [run_cmd(MARK)]}, {"text": "Done."}],
                  ["run_command"])
    seen: list[int] = []

    def answer(req: ApprovalRequested) -> Decision:
        seen.append(marker_runs(ws))  # nothing ran before the yes
        return YES

    with rig.running():
        events, err = await rig.attempt(rig.gate(), answer)
        assert err is None, repr(err)
        calls = rig.model_calls()
    assert seen == [0] and marker_runs(ws) == 1
    (req,) = of(events, ApprovalRequested)
    assert (req.tool, req.input, req.reask_of) == ("run_command", {"command": MARK, "timeout_s": 30}, None)
    assert kinds(events, req.call_id) == ["started", "requested", "finished:ok"]  # decided: the engine's
    assert calls == 2  # the resumed run made one more request, not a repeat of the first
    assert await store.load_run_state("s1", "main") is None  # nothing left undecided


@pytest.mark.parametrize("kind", KINDS)
async def test_deny_with_reason_reaches_the_model_and_nothing_runs(kind: str, ws: Path, store: Store) -> None:
    rig = rig_for(kind, ws, store, [{"tools": [run_cmd(MARK)]}, {"text": "Understood."}], ["run_command"])
    with rig.running():
        events, err = await rig.attempt(rig.gate(), lambda r: Decision("denied", "cli", "not on main, please"))
        assert err is None, repr(err)
        fed = rig.last_tool_outputs()
    assert marker_runs(ws) == 0
    (req,) = of(events, ApprovalRequested)
    text = prompts.approval_denied("not on main, please")
    assert fed == {req.call_id: text}
    (fin,) = of(events, ToolFinished)
    assert (fin.call_id, fin.status, fin.output) == (req.call_id, "denied", text)
    assert kinds(events, req.call_id) == ["started", "requested", "finished:denied"]
    assert await store.load_run_state("s1", "main") is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("args", ["full", "defaults"], ids=["policy-asked", "sdk-stops-for-defaults"])
async def test_a_rule_approves_without_waiting(kind: str, args: str, ws: Path, store: Store) -> None:
    """``{tool="run_command", prefix="touch"}``. With every argument given the SDK asks our
    needs_approval (False: no interruption); with a default left out it stops the run for
    the call without asking (it would change the arguments): the rule answers then."""
    call = run_cmd("touch ruled.txt") if args == "full" else {"name": "run_command",
                                                              "args": {"command": "touch ruled.txt"}}
    rig = rig_for(kind, ws, store, [{"tools": [call]}, {"text": "Done."}], ["run_command"],
                  [{"tool": "run_command", "prefix": "touch"}])
    asked: list[str] = []
    with rig.running():
        events, err = await asyncio.wait_for(rig.attempt(rig.gate(), lambda r: asked.append(r.call_id)), 60)
        assert err is None, repr(err)
    assert asked == [] and (ws / "ruled.txt").exists()
    (req,) = of(events, ApprovalRequested)
    (dec,) = of(events, ApprovalDecided)
    assert (dec.call_id, dec.decision, dec.source) == (req.call_id, "approved", "rule")
    assert "touch" in dec.reason
    assert kinds(events, req.call_id) == ["started", "requested", "decided:rule", "finished:ok"]
    assert await store.load_run_state("s1", "main") is None


async def test_a_tool_approved_for_the_session_is_not_asked_and_a_rule_never_passes_a_second_command(
        ws: Path, store: Store) -> None:
    rig = rig_for("scripted", ws, store, [
        {"tools": [{"name": "write_file", "args": {"path": "s.txt", "content": "s"}},
                   run_cmd("touch ok.txt; echo ran >> marker.txt")]},
        {"text": "Done."}], ["run_command", "write_file"], [{"tool": "run_command", "prefix": "touch"}])
    gate = rig.gate()
    gate.approve_for_session("write_file")  # a person's "a" earlier in the session
    asked: list[str] = []
    events, err = await rig.attempt(gate, lambda r: asked.append(r.tool) or YES)
    assert err is None, repr(err)
    assert asked == ["run_command"]  # "touch ...; ..." is not what the rule approved
    (dec,) = of(events, ApprovalDecided)
    assert (dec.decision, dec.source) == ("approved", "rule") and "session" in dec.reason
    assert (ws / "s.txt").read_text() == "s" and marker_runs(ws) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_no_gate_changes_nothing(kind: str, ws: Path, store: Store) -> None:
    rig = rig_for(kind, ws, store, [{"tools": [run_cmd(MARK)]}, {"text": "Done."}], ["run_command"])
    with rig.running():
        events, err = await rig.attempt(None)
    assert err is None and marker_runs(ws) == 1
    assert not of(events, ApprovalRequested) and not of(events, ApprovalDecided)


@pytest.mark.parametrize("kind", KINDS)
async def test_two_gated_calls_and_an_ungated_sibling(kind: str, ws: Path, store: Store) -> None:
    """One turn: two gated calls (approve one, deny the other) and a read_file that is not
    gated: it runs (and its output is out) before anyone answers."""
    rig = rig_for(kind, ws, store, [
        {"tools": [run_cmd(MARK), {"name": "write_file", "args": {"path": "w.txt", "content": "w"}},
                   {"name": "read_file", "args": {"path": "README.md"}}]},
        {"text": "Done."},
    ], ["run_command", "write_file"])
    order: list[str] = []

    def answer(req: ApprovalRequested) -> Decision:
        order.append(req.tool)
        return YES if req.tool == "run_command" else Decision("denied", "tui", "no new files")

    with rig.running():
        ctx_events, err = await rig.attempt(rig.gate(), answer)
        assert err is None, repr(err)
        fed = rig.last_tool_outputs()
    assert sorted(order) == ["run_command", "write_file"]
    assert marker_runs(ws) == 1 and not (ws / "w.txt").exists()
    started = {e.name: e.call_id for e in of(ctx_events, ToolStarted)}
    reqs = {r.tool: r for r in of(ctx_events, ApprovalRequested)}
    assert set(reqs) == {"run_command", "write_file"}
    read_done = next(i for i, e in enumerate(ctx_events)
                     if isinstance(e, ToolFinished) and e.call_id == started["read_file"])
    first_ask = next(i for i, e in enumerate(ctx_events) if isinstance(e, ApprovalRequested))
    assert read_done < first_ask  # the ungated sibling ran before any answer
    assert kinds(ctx_events, started["read_file"]) == ["started", "finished:ok"]
    assert kinds(ctx_events, started["run_command"]) == ["started", "requested", "finished:ok"]
    assert kinds(ctx_events, started["write_file"]) == ["started", "requested", "finished:denied"]
    assert fed[started["write_file"]] == prompts.approval_denied("no new files")
    assert fed[started["read_file"]] == "readme text\n"
    assert sorted(fed) == sorted(started.values())  # each call answered exactly once


# --- withdrawn asks, crash stand-ins, re-asking from the saved run state ------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reopen", [False, True], ids=["same-store", "store-reopened"])
async def test_withdrawn_ask_is_asked_again_from_the_saved_state(kind: str, reopen: bool, ws: Path,
                                                                 tmp_path: Path) -> None:
    """The gate closes while the call waits (a shutdown; a crash stand-in): the attempt
    raises ApprovalWithdrawn, nothing ran, the run state stays saved. The next attempt (a new
    process: fresh backend and state; with ``reopen`` a fresh Store on the same file) asks
    the same call again (same id, ``reask_of``) without asking the model, and runs it once
    after a yes."""
    db = tmp_path / "shepherd.db"
    store = await Store.open(db)
    rig = Rig(kind, ws, db, [{"text": "Running it.", "tools": [run_cmd(MARK)]}, {"text": "Done."}],
              ["run_command"])
    rig.store = store
    try:
        with rig.running():
            gate1 = rig.gate()
            events1, err = await rig.attempt(gate1, lambda r: gate1.close())
            assert isinstance(err, ApprovalWithdrawn), repr(err)
            (req1,) = of(events1, ApprovalRequested)
            assert not of(events1, ToolFinished) and marker_runs(ws) == 0
            saved = await store.load_run_state("s1", "main")
            assert saved is not None and saved[0] == [req1.call_id]
            if reopen:
                await store.close()
                store = await Store.open(db)
                rig.store = store
            rig.new_process()
            calls_before = rig.model_calls() if kind != "scripted" else 0  # (a new scripted backend: 0)
            asked: list[ApprovalRequested] = []

            def answer(req: ApprovalRequested) -> Decision:
                asked.append(req)
                assert marker_runs(ws) == 0
                assert rig.model_calls() == calls_before  # asked from the state, not the model
                return YES

            events2, err = await rig.attempt(rig.gate(), answer)
            assert err is None, repr(err)
            fed = rig.last_tool_outputs()
        assert [(a.call_id, a.tool, a.input, a.reask_of) for a in asked] == [
            (req1.call_id, "run_command", {"command": MARK, "timeout_s": 30}, req1.call_id)]
        assert marker_runs(ws) == 1
        assert kinds(events2, req1.call_id) == ["requested", "finished:ok"]
        assert list(fed) == [req1.call_id] and fed[req1.call_id] == "(no output)"
        assert any(getattr(e, "text", "") == "Done." for e in events2)  # the script went on from there
        assert await store.load_run_state("s1", "main") is None
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["scripted", "openai-responses"])
async def test_a_decision_stored_before_the_crash_is_reapplied(kind: str, ws: Path, store: Store) -> None:
    """Two gated calls; the first was answered (no), then the gate closed before the second
    was. The next attempt's gate holds the stored decision (the engine re-applies it): only
    the second is asked again; the first is denied with its reason, never run."""
    rig = rig_for(kind, ws, store, [
        {"tools": [run_cmd("echo one >> marker.txt"), run_cmd("echo two >> two.txt")]}, {"text": "Done."}],
        ["run_command"])
    no = Decision("denied", "cli", "not that one")
    with rig.running():
        gate1 = rig.gate()
        first: list[str] = []

        def answer1(req: ApprovalRequested) -> None:
            if not first:
                first.append(req.call_id)
                gate1.answer(req.call_id, no)
            else:
                gate1.close()

        events1, err = await rig.attempt(gate1, answer1)
        assert isinstance(err, ApprovalWithdrawn), repr(err)
        reqs = of(events1, ApprovalRequested)
        assert len(reqs) == 2
        rig.new_process()
        gate2 = rig.gate()
        gate2.answer(first[0], no)  # what the engine does with a committed decision
        asked: list[str] = []
        events2, err = await rig.attempt(gate2, lambda r: asked.append(r.call_id) or YES)
        assert err is None, repr(err)
        fed = rig.last_tool_outputs()
    other = next(r.call_id for r in reqs if r.call_id != first[0])
    assert asked == [other]
    assert [r.reask_of for r in of(events2, ApprovalRequested)] == [other]
    assert fed[first[0]] == prompts.approval_denied("not that one")
    assert kinds(events2, first[0]) == ["finished:denied"]
    assert kinds(events2, other) == ["requested", "finished:ok"]
    one_ran = (ws / "marker.txt").exists()
    two_ran = (ws / "two.txt").exists()
    cmd_of = {r.call_id: r.input["command"] for r in reqs}
    assert (one_ran, two_ran) == (("one" in cmd_of[other]), ("two" in cmd_of[other]))


@pytest.mark.parametrize("kind", ["scripted", "openai-chat_completions"])
async def test_an_unreadable_saved_state_closes_its_calls_never_runs_them(kind: str, ws: Path,
                                                                          store: Store) -> None:
    """RunState.from_string fails (a newer SDK's schema): the row is dropped, the calls are
    closed as interrupted (tool.finished and the history repair), never approved."""
    rig = rig_for(kind, ws, store, [{"tools": [run_cmd(MARK)]}, {"text": "Moving on."}], ["run_command"])
    with rig.running():
        gate1 = rig.gate()
        events1, err = await rig.attempt(gate1, lambda r: gate1.close())
        assert isinstance(err, ApprovalWithdrawn)
        (req,) = of(events1, ApprovalRequested)
        ids, blob = await store.load_run_state("s1", "main")  # type: ignore[misc]
        doc = json.loads(blob)
        doc["$schemaVersion"] = "999.0"
        await store.save_run_state("s1", "main", ids, json.dumps(doc))
        rig.new_process()
        events2, err = await rig.attempt(rig.gate(), lambda r: YES)
        assert err is None, repr(err)
        fed = rig.last_tool_outputs()
    assert marker_runs(ws) == 0
    assert not of(events2, ApprovalRequested)
    assert kinds(events2, req.call_id) == ["finished:interrupted"]
    assert fed == {req.call_id: prompts.interrupted_tool_output()}
    assert await store.load_run_state("s1", "main") is None


@pytest.mark.parametrize("kind", ["scripted", "openai-chat_completions"])
async def test_an_ungated_call_the_sdk_stopped_for_survives_a_restore(kind: str, ws: Path, store: Store) -> None:
    """list_files with its default left out: the SDK stops the run for it too (it would
    change the arguments); it is not gated, so it is approved without asking, also when the
    saved state is restored by a new process; only the gated call is asked (again)."""
    rig = rig_for(kind, ws, store, [{"tools": [{"name": "list_files", "args": {}}, run_cmd(MARK)]},
                                    {"text": "Done."}], ["run_command"])
    with rig.running():
        gate1 = rig.gate()
        events1, err = await rig.attempt(gate1, lambda r: gate1.close())
        assert isinstance(err, ApprovalWithdrawn)
        started = {e.name: e.call_id for e in of(events1, ToolStarted)}
        assert [r.tool for r in of(events1, ApprovalRequested)] == ["run_command"]
        saved = await store.load_run_state("s1", "main")
        assert saved is not None and saved[0] == [started["run_command"]]
        rig.new_process()
        events2, err = await rig.attempt(rig.gate(), lambda r: YES)
        assert err is None, repr(err)
        fed = rig.last_tool_outputs()
    assert [(r.tool, r.reask_of) for r in of(events2, ApprovalRequested)] == [
        ("run_command", started["run_command"])]
    assert kinds(events2, started["list_files"]) == ["finished:ok"]
    assert "README.md" in fed[started["list_files"]] and marker_runs(ws) == 1


@pytest.mark.parametrize("kind", ["scripted", "openai-responses"])
async def test_stop_after_turn_while_waiting_runs_the_answered_call_then_stops(kind: str, ws: Path,
                                                                                store: Store) -> None:
    """A safe pause while a call waits: the turn is not over; after the answer the call runs
    (its result committed to the history) and the attempt ends without another model call."""
    rig = rig_for(kind, ws, store, [{"tools": [run_cmd(MARK)]}, {"text": "Done."}], ["run_command"])

    def answer(req: ApprovalRequested) -> Decision:
        rig.last_ctx.stop_after_turn.set()
        return YES

    with rig.running():
        events, err = await rig.attempt(rig.gate(), answer)
        assert err is None, repr(err)
        calls = rig.model_calls()
    assert marker_runs(ws) == 1 and calls == 1
    (req,) = of(events, ApprovalRequested)
    assert kinds(events, req.call_id) == ["started", "requested", "finished:ok"]
    assert await store.load_run_state("s1", "main") is None


async def test_cancelled_while_waiting_keeps_the_state(ws: Path, store: Store) -> None:
    """The engine cancels the attempt (pause-now, shutdown) while a call waits: nothing ran,
    the saved state stays for the next attempt."""
    rig = rig_for("scripted", ws, store, [{"tools": [run_cmd(MARK)]}, {"text": "Done."}], ["run_command"])
    asked = asyncio.Event()
    task = asyncio.ensure_future(rig.attempt(rig.gate(), lambda r: asked.set()))
    await asyncio.wait_for(asked.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert marker_runs(ws) == 0
    saved = await store.load_run_state("s1", "main")
    assert saved is not None and len(saved[0]) == 1


def test_history_repair_keeps_the_calls_of_a_saved_state_open() -> None:
    items = [{"role": "user", "content": "p"},
             {"type": "function_call", "call_id": "a", "name": "run_command", "arguments": "{}"},
             {"type": "function_call", "call_id": "b", "name": "run_command", "arguments": "{}"}]
    fixed, closed = close_dangling_calls(items, keep=["a"])
    assert closed == ["b"]
    assert [i.get("call_id") for i in fixed if i.get("type") == "function_call_output"] == ["b"]
