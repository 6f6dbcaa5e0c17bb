"""Tool approvals in the claude backend: the REAL claude-agent-sdk + bundled Claude Code CLI
against the fake Messages API on loopback (tests/fakes/fake_anthropic.py). The test drives
``ClaudeBackend.attempt`` directly and plays the engine: it answers the gate when an
``ApprovalRequested`` arrives.

Each CLI start costs ~1 s: few integration tests, each checking a lot (one runner is a
child process, SIGKILLed while it asks); the pure parts (the hook's "ask", where a re-ask
rewinds, the re-ask plan over the SDK's in-memory session store) are unit tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

from shepherd.core import prompts
from shepherd.core.approvals import ApprovalGate, ApprovalPolicy, ApprovalWithdrawn, AwaitingCall, Decision, Rule
from shepherd.core.backends.base import AttemptContext
from shepherd.core.backends.claude import (
    NOT_ALLOWED,
    REASK_NOT_STORED,
    REASK_REWOUND,
    ClaudeBackend,
    repair_point_before,
    session_uuid,
)
from shepherd.core.backends.claude_hooks import ASK_REASON, HookPolicy
from shepherd.core.events import ApprovalDecided, ApprovalRequested, HookDecision, ToolFinished, ToolStarted
from shepherd.core.task import task_from_dict
from tests.test_backend_claude import Env as BackendEnv
from tests.fakes.fake_anthropic import (
    PERMISSION_STREAM_CLOSED,
    FakeAnthropic,
    answer_orphan,
    dangling_tool_uses,
    last_tool_result_text,
    last_user_text,
    reissue_on_reask,
    tool_results,
    tool_uses,
    user_texts,
)

Answer = Callable[[ApprovalRequested], Decision | None]


class Env(BackendEnv):
    """The claude backend tests' sandbox, with a gate in the context and a runner loop that
    answers the approvals it asks."""

    def ctx(self, gate: ApprovalGate | None, prompt: str = "go", *, continue_history: bool = False,  # type: ignore[override]
            attempt: int = 1, reason: str = "first", options: dict[str, Any] | None = None) -> AttemptContext:
        return super().ctx(prompt, options=options, continue_history=continue_history, attempt=attempt,
                           reason=reason, session_id="s-apr", approvals=gate)

    async def run(self, ctx: AttemptContext, answer: Answer) -> tuple[list[Any], BaseException | None]:
        """Run one attempt; each ApprovalRequested is answered by ``answer`` (None: not now)."""
        events: list[Any] = []
        gate = ctx.approvals
        try:
            async for ev in self.backend.attempt(ctx):
                events.append(ev)
                if isinstance(ev, ApprovalRequested) and gate is not None:
                    d = answer(ev)
                    if d is not None:
                        gate.answer(ev.call_id, d)
        except Exception as e:  # noqa: BLE001
            return events, e
        return events, None


@pytest.fixture
def sandbox(tmp_path: Path):
    made: list[FakeAnthropic] = []

    def make(script: list[dict[str, Any]]) -> Env:
        api = FakeAnthropic(script=script).start()
        made.append(api)
        return Env(tmp_path / f"box{len(made)}", api)

    yield make
    for api in made:
        api.stop()


def of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def trail(events: list[Any], call_id: str) -> list[str]:
    """The approval-relevant events of one call, in order."""
    names = {ToolStarted: "started", ApprovalRequested: "requested", ApprovalDecided: "decided",
             ToolFinished: "finished"}
    return [names[type(e)] for e in events if type(e) in names and e.call_id == call_id]


def request_after(api: FakeAnthropic, call_id: str) -> dict[str, Any]:
    """The first agent-loop request that carries the tool_result of ``call_id``."""
    for body in api.main_requests():
        if any(r.get("tool_use_id") == call_id for r in tool_results(body)):
            return body
    raise AssertionError(f"no request carries the result of {call_id}")


# --- integration: the real CLI -------------------------------------------------------------------


async def test_approve_deny_rule_and_shadowed_tools_are_asked(sandbox) -> None:
    """One attempt under the default [claude] options (Bash and Write in allowed_tools,
    permission_mode acceptEdits: both would shadow can_use_tool alone): approved Bash runs;
    denied Bash does not run and the agent gets the reason; a rule approves without anyone;
    Write under acceptEdits is asked, approved for the session, and the next Write is not
    asked; Read (not gated) is not asked; parallel gated calls are each answered."""
    box = sandbox([])
    (box.ws / "sibling.txt").write_text("sibling\n")
    box.api.add(
        {"text": "First.", "tool_use": {"name": "Bash", "input": {"command": "echo yes-ran > approved.txt"}}},
        {"tool_use": {"name": "Bash", "input": {"command": "echo no-ran > denied.txt"}}},
        {"tool_use": {"name": "Bash", "input": {"command": "echo by-rule"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(box.ws / "written.txt"), "content": "via Write\n"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(box.ws / "w2.txt"), "content": "session\n"}}},
        {"tool_use": [{"name": "Bash", "input": {"command": "echo p1 > p1.txt"}},
                      {"name": "Bash", "input": {"command": "echo p2 > p2.txt"}},
                      {"name": "Read", "input": {"file_path": str(box.ws / "sibling.txt")}}]},
        {"tool_use": {"name": "Read", "input": {"file_path": str(box.ws / "approved.txt")}}},
        {"tool_use": {"name": "WebFetch", "input": {"url": "http://127.0.0.1:9/", "prompt": "p"}}},
        {"text": "All done."},
    )
    # the rule approves "echo by-rule" but not "echo ... > file" (a redirection is not a plain echo)
    gate = ApprovalGate(ApprovalPolicy(approve_tools=("Bash", "Write"), rules=(Rule("Bash", "echo"),)))
    asked: list[ApprovalRequested] = []

    def answer(req: ApprovalRequested) -> Decision | None:
        asked.append(req)
        if "denied.txt" in json.dumps(req.input):
            return Decision("denied", "tui", "not on a Friday")
        if "p2.txt" in json.dumps(req.input):
            return Decision("denied", "cli", "only one of them")
        if req.tool == "Write":  # the person's "a": the engine commits it and tells the gate
            gate.approve_for_session("Write")
            return Decision("approved", "tui", scope="session")
        if req.tool == "Bash" and req.input.get("command") == "echo by-rule":
            return None  # the rule answers: no one is asked
        return Decision("approved", "cli")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events, err = await box.run(box.ctx(gate), answer)
    assert err is None, err
    assert not [w for w in caught if "can_use_tool" in str(w.message)]  # the shadowing warning is silenced

    started = {s.input.get("command") or Path(s.input.get("file_path") or s.name).name: s
               for s in of(events, ToolStarted)}
    finished = {f.call_id: f for f in of(events, ToolFinished)}
    requested = {r.call_id: r for r in of(events, ApprovalRequested)}
    decided = {d.call_id: d for d in of(events, ApprovalDecided)}
    approve = started["echo yes-ran > approved.txt"].call_id
    deny = started["echo no-ran > denied.txt"].call_id
    rule = started["echo by-rule"].call_id
    write = started["written.txt"].call_id
    write2 = started["w2.txt"].call_id
    read = started["approved.txt"].call_id
    fetch = started["WebFetch"].call_id

    # approved: asked, then the tool ran
    assert trail(events, approve) == ["started", "requested", "finished"]
    assert requested[approve].tool == "Bash" and requested[approve].input == {"command": "echo yes-ran > approved.txt"}
    assert requested[approve].reask_of is None
    assert finished[approve].status == "ok" and (box.ws / "approved.txt").read_text() == "yes-ran\n"

    # denied with a reason: the tool did not run, the agent got the reason as its result
    assert trail(events, deny) == ["started", "requested", "finished"]
    assert not (box.ws / "denied.txt").exists()
    assert finished[deny].status == "denied" and finished[deny].output == prompts.approval_denied("not on a Friday")
    result = next(r for r in tool_results(request_after(box.api, deny)) if r["tool_use_id"] == deny)
    assert result.get("is_error") is True and "not on a Friday" in json.dumps(result)
    assert last_tool_result_text(request_after(box.api, deny)) == prompts.approval_denied("not on a Friday")

    # a rule: requested + decided(rule) at once, nobody waited, the tool ran
    assert trail(events, rule) == ["started", "requested", "decided", "finished"]
    assert decided[rule].decision == "approved" and decided[rule].source == "rule"
    assert "'echo'" in decided[rule].reason
    assert finished[rule].status == "ok" and "by-rule" in finished[rule].output

    # Write under acceptEdits: still asked (the hook's "ask"), then written
    assert trail(events, write) == ["started", "requested", "finished"]
    assert finished[write].status == "ok" and (box.ws / "written.txt").read_text() == "via Write\n"
    # ... approved for the session: the next Write is decided by that, no one asked
    assert trail(events, write2) == ["started", "requested", "decided", "finished"]
    assert (decided[write2].source, decided[write2].decision) == ("rule", "approved")
    assert "session" in decided[write2].reason and (box.ws / "w2.txt").read_text() == "session\n"
    assert list(decided) == [rule, write2]

    # parallel calls in one turn: each gated one answered on its own, the ungated one runs,
    # and all the results go back together
    p1, p2 = started["echo p1 > p1.txt"].call_id, started["echo p2 > p2.txt"].call_id
    sibling = started["sibling.txt"].call_id
    assert (finished[p1].status, finished[p2].status, finished[sibling].status) == ("ok", "denied", "ok")
    assert (box.ws / "p1.txt").exists() and not (box.ws / "p2.txt").exists()
    after = request_after(box.api, p2)
    assert not dangling_tool_uses(after) and {p1, p2, sibling} <= {r["tool_use_id"] for r in tool_results(after)}
    assert "only one of them" in json.dumps([r for r in tool_results(after) if r["tool_use_id"] == p2])

    # Read is not gated: never asked
    assert trail(events, read) == ["started", "finished"] and finished[read].status == "ok"

    # neither gated nor allowed (the callback is consulted): denied in the CLI's own words, as
    # without approvals
    assert trail(events, fetch) == ["started", "finished"] and finished[fetch].status == "denied"
    assert finished[fetch].output == NOT_ALLOWED.format(tool="WebFetch")
    assert [(h.call_id, h.reason) for h in of(events, HookDecision)] == [(fetch, NOT_ALLOWED.format(tool="WebFetch"))]

    # the person was asked exactly for the calls that needed one; every call finished
    assert [r.call_id for r in asked] == [approve, deny, rule, write, write2, p1, p2]
    assert set(finished) == {approve, deny, rule, write, write2, p1, p2, sibling, read, fetch}
    # the text of a message comes before its call
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("MessageCompleted") < kinds.index("ToolStarted")
    assert gate.pending() == []


@pytest.mark.parametrize("mode", ["bypassPermissions", "dontAsk"])
async def test_gated_tools_are_asked_in_every_permission_mode(sandbox, mode: str) -> None:
    """No permission mode lets a gated call past the person (the hook's "ask" wins even over
    bypassPermissions); a denial keeps the tool from running."""
    box = sandbox([{"tool_use": {"name": "Bash", "input": {"command": "echo hi > m.txt"}}}, {"text": "ok"}])
    ctx = box.ctx(ApprovalGate(ApprovalPolicy(approve_tools=("Bash",))), options={"permission_mode": mode})
    events, err = await box.run(ctx, lambda req: Decision("denied", "cli", "nope"))
    assert err is None, err
    [req] = of(events, ApprovalRequested)
    [fin] = of(events, ToolFinished)
    assert fin.call_id == req.call_id and fin.status == "denied" and not (box.ws / "m.txt").exists()


async def test_withdrawn_ask_then_resume_without_the_call_stored_asks_again(sandbox) -> None:
    """Attempt 1: the gated call is asked, then the gate closes (the runner stops) before
    anyone answers: the call does not run and gets no tool.finished, the attempt ends with
    ApprovalWithdrawn. The stored transcript lags (it lost the call). Attempt 2 (a resume,
    with the call in ``reask``): the old call is withdrawn first, the stored conversation is
    resumed as it is with the notice, and the re-issued call is asked with reask_of; after
    a yes it runs exactly once. (The rewind, with the call stored: the SIGKILL test.)"""
    command = "echo once >> ran.txt"
    box = sandbox([
        {"text": "I will run it.", "tool_use": {"name": "Bash", "input": {"command": command}}},
        reissue_on_reask({"name": "Bash", "input": {"command": command}}),
        {"text": "Ran it."},
    ])
    gate1 = ApprovalGate(ApprovalPolicy(approve_tools=("*",)))

    def close_instead(req: ApprovalRequested) -> None:
        gate1.close()  # shutdown: withdrawn, never approved

    events1, err = await box.run(box.ctx(gate1, "run the thing"), close_instead)
    assert isinstance(err, ApprovalWithdrawn), err
    [req1] = of(events1, ApprovalRequested)
    old = req1.call_id
    assert trail(events1, old) == ["started", "requested"]  # stays awaiting: no tool.finished
    assert not (box.ws / "ran.txt").exists()
    sid0 = box.state["claude"]["session_id"]
    assert sid0 == session_uuid("s-apr", "main", 0)
    assert _forget_from(box, sid0, old) > 0

    # attempt 2: resume with the awaiting call to ask again
    gate2 = ApprovalGate(ApprovalPolicy(approve_tools=("*",)),
                         reask=(AwaitingCall(call_id=old, tool="Bash", input={"command": command}),))
    n = len(box.api.main_requests())
    events2, err = await box.run(box.ctx(gate2, "run the thing", continue_history=True, attempt=2,
                                         reason="resume"),
                                 lambda req: Decision("approved", "cli"))
    assert err is None, err
    first = events2[0]
    assert isinstance(first, ToolFinished) and first.call_id == old
    assert (first.status, first.output) == ("interrupted", REASK_NOT_STORED)
    [req2] = of(events2, ApprovalRequested)
    assert req2.reask_of == old and req2.call_id != old
    assert req2.tool == "Bash" and req2.input == {"command": command}
    assert trail(events2, req2.call_id) == ["started", "requested", "finished"]
    assert (box.ws / "ran.txt").read_text() == "once\n"  # ran exactly once, after the yes

    # the resumed conversation: the old call is not in it, the prompt once, the notice last
    sent = box.api.main_requests()[n:]
    assert sent and old not in {u["id"] for u in tool_uses(sent[0])}
    assert not dangling_tool_uses(sent[0])
    texts = user_texts(sent[0])
    assert texts.count("run the thing") == 1
    assert last_user_text(sent[0]) == prompts.approval_reask_notice(
        [f'Bash {json.dumps({"command": command})} (id {old})'])
    assert box.state["claude"]["session_id"] == sid0  # resumed as is: no fork


async def test_pause_while_asking_waits_for_the_answer_and_closing_leaves_the_call_awaiting(sandbox) -> None:
    """A safe pause (stop_after_turn) while a call waits for a person does not cut the wait:
    after the yes the tool runs and the attempt stops at the next boundary. Closing the
    attempt while a call waits (the engine's shutdown) interrupts the CLI: the call does
    not run, and its ask is left unanswered (never approved, never denied)."""
    box = sandbox([{"tool_use": {"name": "Bash", "input": {"command": "echo paused-ok >> ran.txt"}}}])
    gate = ApprovalGate(ApprovalPolicy(approve_tools=("Bash",)))
    ctx = box.ctx(gate, "pause test")

    def pause_then_yes(req: ApprovalRequested) -> Decision:
        ctx.stop_after_turn.set()
        return Decision("approved", "tui")

    events, err = await box.run(ctx, pause_then_yes)
    assert err is None, err
    [fin] = of(events, ToolFinished)
    assert fin.status == "ok" and (box.ws / "ran.txt").read_text() == "paused-ok\n"
    assert len(of(events, ApprovalRequested)) == 1  # stopped at the boundary: no second call

    # (a box of its own: the CLI above may have asked for its next turn before the stop landed)
    box = sandbox([{"tool_use": {"name": "Bash", "input": {"command": "echo never >> never.txt"}}}])
    gate2 = ApprovalGate(ApprovalPolicy(approve_tools=("Bash",)))
    seen: list[Any] = []
    agen = box.backend.attempt(box.ctx(gate2, "close test"))
    async for ev in agen:
        seen.append(ev)
        if isinstance(ev, ApprovalRequested):
            break
    await agen.aclose()  # the engine closes the attempt while the call waits
    [req] = of(seen, ApprovalRequested)
    assert not of(seen, ToolFinished) and gate2.pending() == [req.call_id]
    assert gate2.answer(req.call_id, Decision("approved", "cli"))  # too late: the CLI is gone
    assert not (box.ws / "never.txt").exists()


_CHILD = r"""
import asyncio, json, os, sys
from pathlib import Path
from types import SimpleNamespace

from shepherd.core.approvals import ApprovalGate, ApprovalPolicy
from shepherd.core.events import ApprovalRequested
from tests.test_approvals_claude import Env


def children() -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                out.append(int(p))
    return out


async def rewindable(box: Env, ctx: object, call_id: str) -> None:
    # Until the stored conversation (the database's mirror, or the CLI's file beside it)
    # holds the message a resume rewinds to, as the resume will read it: the SDK mirrors
    # the transcript in batches, and the scenario is a runner killed after that (bounded:
    # a real CLI and the SDK's batching, no clock of ours to drive).
    from shepherd.core.backends.claude import _Attempt
    from shepherd.core.backends.claude_transcript import repair_point_before, session_uuid
    from shepherd.core.store import open_claude_session_store

    reader, store = _Attempt(box.backend, ctx), open_claude_session_store(box.db)  # (starts nothing)
    try:
        for _ in range(400):
            msgs = await reader._transcript(store, session_uuid("s-apr", "main", 0), (call_id,))
            if repair_point_before(msgs, [call_id]) is not None:
                return
            await asyncio.sleep(0.025)
    finally:
        await store.close()


async def main() -> None:
    box = Env(Path(sys.argv[1]), SimpleNamespace(base_url=sys.argv[2]))
    gate = ApprovalGate(ApprovalPolicy(approve_tools=("Bash",)))  # nobody ever answers
    ctx = box.ctx(gate, "run the thing")
    async for ev in box.backend.attempt(ctx):
        if isinstance(ev, ApprovalRequested):
            await rewindable(box, ctx, ev.call_id)
            print(json.dumps({"call_id": ev.call_id, "input": ev.input, "cli": children()}), flush=True)


asyncio.run(main())
"""


async def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait (on a pidfd, no polling) until process ``pid`` is gone."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = await asyncio.to_thread(select.select, [fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds")
async def test_runner_sigkilled_while_asking_then_resume_asks_again(sandbox, tmp_path: Path) -> None:
    """The runner (a child process driving the backend) is SIGKILLed while the CLI waits in
    can_use_tool: the orphaned CLI records the failed permission request and runs nothing.
    A new runner resumes with the call in ``reask``: the old call is withdrawn, the turn
    holding it is rewound (its ungated sibling too, and the agent is told), the re-issued
    call is asked (reask_of) and runs exactly once, after the yes."""
    command = "echo once >> ran.txt"
    box = sandbox([])
    (box.ws / "notes.txt").write_text("notes\n")
    read = {"name": "Read", "input": {"file_path": str(box.ws / "notes.txt")}}
    box.api.add(
        answer_orphan(),  # the orphan's next request ends its turn
        {"text": "I will run it.", "tool_use": [{"name": "Bash", "input": {"command": command}}, read]},
        reissue_on_reask({"name": "Bash", "input": {"command": command}}),
        {"text": "Ran it."},
    )
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    root = Path(__file__).resolve().parent.parent
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(box.ws.parent), box.api.base_url, cwd=str(root),
        env={**os.environ, "PYTHONPATH": str(root)}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=open(tmp_path / "child.err", "wb"))
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line, (tmp_path / "child.err").read_text()[-2000:]
        asked = json.loads(line)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    old = asked["call_id"]
    assert asked["input"] == {"command": command} and asked["cli"]
    for pid in asked["cli"]:  # the orphaned CLI carries on alone, then exits
        assert await _wait_exit(pid, 60), f"the orphaned CLI {pid} did not exit"
    assert not (box.ws / "ran.txt").exists()  # never approved by default
    orphan = [b for b in box.api.main_requests() if PERMISSION_STREAM_CLOSED in last_tool_result_text(b)]
    assert orphan, "the orphaned CLI did not record the failed permission request"

    sid = session_uuid("s-apr", "main", 0)

    # a new runner (no in-memory state) resumes and asks again
    box.state.clear()
    gate = ApprovalGate(ApprovalPolicy(approve_tools=("Bash",)),
                        reask=(AwaitingCall(call_id=old, tool="Bash", input={"command": command}),))
    n = len(box.api.main_requests())
    events, err = await box.run(box.ctx(gate, "run the thing", continue_history=True, attempt=1, reason="resume"),
                                lambda req: Decision("approved", "cli"))
    assert err is None, err
    first = events[0]
    assert isinstance(first, ToolFinished) and first.call_id == old and first.status == "interrupted"
    assert first.output == REASK_REWOUND  # found in the CLI's own transcript (the mirror lags)
    [req] = of(events, ApprovalRequested)
    assert req.reask_of == old and req.call_id != old and req.input == {"command": command}
    assert trail(events, req.call_id) == ["started", "requested", "finished"]
    assert (box.ws / "ran.txt").read_text() == "once\n"
    sent = box.api.main_requests()[n:]
    assert sent and all(not dangling_tool_uses(b) for b in sent)
    assert old not in {u["id"] for u in tool_uses(sent[0])}
    assert user_texts(sent[0]).count("run the thing") == 1
    [old_read] = [u["id"] for u in tool_uses(box.api.main_requests()[n - 1]) if u["name"] == "Read"]
    assert old_read not in {u["id"] for u in tool_uses(sent[0])}  # the sibling went with it
    assert last_user_text(sent[0]) == prompts.approval_reask_notice(
        [f'Bash {json.dumps({"command": command})} (id {old})',
         f'Read {json.dumps(read["input"])} (id {old_read}) (rewound with it; it may have run already)'])
    assert box.state["claude"]["session_id"] == session_uuid("s-apr", "main", 1) != sid  # forked


def _forget_from(box: Env, session_id: str, call_id: str) -> int:
    """A transcript that lags (the mirror had not caught up): drop the stored entries from
    the one holding ``call_id`` on, in the database and in the CLI's own copy."""
    import sqlite3

    dropped = 0
    con = sqlite3.connect(box.db)
    try:
        rows = con.execute("SELECT id, entry_json FROM claude_entries WHERE session_id = ? ORDER BY id",
                           (session_id,)).fetchall()
        first = next((rid for rid, raw in rows if call_id in raw), None)
        if first is not None:
            dropped += con.execute("DELETE FROM claude_entries WHERE session_id = ? AND id >= ?",
                                   (session_id, first)).rowcount
            con.commit()
    finally:
        con.close()
    for f in (box.cfg / "projects").rglob(f"{session_id}.jsonl"):
        lines = f.read_text().splitlines(keepends=True)
        keep = next((i for i, ln in enumerate(lines) if call_id in ln), len(lines))
        dropped += len(lines) - keep
        f.write_text("".join(lines[:keep]))
    return dropped


# --- unit: the hook's "ask" and where a re-ask rewinds ------------------------------------------


async def test_hook_answers_ask_only_for_gated_tools_after_its_own_checks(tmp_path: Path) -> None:
    pol = HookPolicy(tmp_path, approvals=ApprovalPolicy(approve_tools=("Bash", "Agent", "Read")))

    async def pre(tool: str, inp: dict[str, Any], cid: str) -> dict[str, Any]:
        return (await pol.pre_tool_use({"tool_name": tool, "tool_input": inp}, cid, {})).get("hookSpecificOutput", {})

    assert await pre("Bash", {"command": "ls"}, "b") == {
        "hookEventName": "PreToolUse", "permissionDecision": "ask", "permissionDecisionReason": ASK_REASON}
    assert await pre("Grep", {"pattern": "x"}, "g") == {}  # not gated
    # its own denials come first: never asked
    assert (await pre("Read", {"file_path": "/etc/passwd"}, "r"))["permissionDecision"] == "deny"
    # a sub-agent stays pinned to the foreground, and is asked
    out = await pre("Agent", {"prompt": "x"}, "a")
    assert out["permissionDecision"] == "ask" and out["updatedInput"] == {"prompt": "x", "run_in_background": False}
    # without approvals nothing changes
    plain = HookPolicy(tmp_path)
    assert await plain.pre_tool_use({"tool_name": "Bash", "tool_input": {"command": "ls"}}, "b", {}) == {}
    assert (await plain.pre_tool_use({"tool_name": "Agent", "tool_input": {"prompt": "x"}}, "a", {})
            )["hookSpecificOutput"]["permissionDecision"] == "allow"


def _m(kind: str, uid: str, *blocks: dict[str, Any] | str) -> dict[str, Any]:
    content: Any = blocks[0] if len(blocks) == 1 and isinstance(blocks[0], str) else list(blocks)
    return {"type": kind, "uuid": uid, "message": {"role": kind, "content": content}}


def _use(cid: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": cid, "name": "Bash", "input": {"command": cid}}


def _res(cid: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": cid, "content": "ok"}


def test_repair_point_before_the_turn_holding_the_call() -> None:
    history = [_m("user", "u1", "go"), _m("assistant", "a1", {"type": "text", "text": "hi"}),
               _m("assistant", "a2", _use("t1")), _m("user", "u2", _res("t1")),
               _m("assistant", "a3", _use("t2")), _m("assistant", "a4", _use("t3"))]
    p = repair_point_before(history, ["t3"])  # a sibling's turn: cut before its first call
    assert p and p.resume_at == "u2" and [c[0] for c in p.dropped_calls] == ["t2", "t3"]
    assert p.dropped_messages == 2
    p = repair_point_before(history, ["t3", "t1"])  # the earliest turn wins
    assert p and p.resume_at == "a1" and [c[0] for c in p.dropped_calls] == ["t1"]
    assert repair_point_before(history, ["nope"]) is None  # not stored: a plain resume
    assert repair_point_before([_m("assistant", "a1", _use("t1"))], ["t1"]) is None
    assert REASK_NOT_STORED != REASK_REWOUND


async def test_plan_of_a_reask_resume(tmp_path: Path) -> None:
    """Which session a re-ask attempt runs and what the agent is told, from a stored
    transcript (the SDK's in-memory session store): a rewind before the awaiting call's
    turn; an earlier repair point covering it; a call not stored; no conversation at all."""
    from claude_agent_sdk import InMemorySessionStore, project_key_for_directory

    from shepherd.core.backends.claude import _Attempt

    ws = tmp_path / "ws"
    ws.mkdir()
    sid = session_uuid("s-plan", "main", 0)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(7)]

    def entry(kind: str, i: int, content: Any) -> dict[str, Any]:
        return {"type": kind, "uuid": ids[i], "parentUuid": ids[i - 1] if i else None, "sessionId": sid,
                "isSidechain": False, "timestamp": "2026-12-02T00:00:00Z", "cwd": str(ws),
                "message": {"role": kind, "content": content}}

    hook_text = {"type": "text", "text": "<hook output that landed first>"}
    entries = [
        entry("user", 0, "do it"),
        entry("assistant", 1, [_use("t1")]),
        entry("user", 2, [hook_text, _res("t1")]),  # the API rejects t1 (text before its result)
        entry("assistant", 3, [{"type": "text", "text": "next"}]),
        entry("user", 4, "go on"),
        entry("assistant", 5, [_use("t2"), _use("t3")]),  # t2 waited for a person; t3 its sibling
        entry("user", 6, [_res("t3")]),
    ]
    store = InMemorySessionStore()
    await store.append({"project_key": project_key_for_directory(str(ws)), "session_id": sid}, entries)
    backend = ClaudeBackend(env={"ANTHROPIC_API_KEY": "k", "CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")})

    async def plan(reask: list[str], *, repair: bool = False, continue_history: bool = True):
        task = task_from_dict({"title": "t", "backend": "claude", "workspace": str(ws),
                               "subtasks": [{"id": "main", "prompt": "do it"}]})
        gate = ApprovalGate(ApprovalPolicy(approve_tools=("Bash",)),
                            reask=tuple(AwaitingCall(c, "Bash", {"command": c}) for c in reask))
        ctx = AttemptContext(session_id="s-plan", task=task, subtask=task.subtasks[0], attempt=2, reason="resume",
                             prompt="do it", prompt_extra="", continue_history=continue_history, workspace=ws,
                             repair=repair, approvals=gate)
        run = _Attempt(backend, ctx)
        options, prompt = await run._plan(store)
        events = []
        while not run.queue.empty():
            events.append(run.queue.get_nowait())
        return options, prompt, [(e.call_id, e.status, e.output) for e in events]

    def desc(cid: str) -> str:
        return f'Bash {json.dumps({"command": cid})} (id {cid})'

    sibling = desc("t3") + " (rewound with it; it may have run already)"
    # the awaiting call's turn is cut off (with its sibling), in a fork
    options, prompt, evs = await plan(["t2"])
    assert (options.resume, options.resume_session_at, options.fork_session) == (sid, ids[4], True)
    assert options.session_id == session_uuid("s-plan", "main", 1) and options.can_use_tool is not None
    assert evs == [("t2", "interrupted", REASK_REWOUND)]
    assert prompt == prompts.approval_reask_notice([desc("t2"), sibling])
    # a repair too, whose point is earlier: that one covers both, and both are told
    options, prompt, evs = await plan(["t2"], repair=True)
    assert options.resume_session_at == ids[0] and evs == [("t2", "interrupted", REASK_REWOUND)]
    assert prompt.startswith(prompts.approval_reask_notice([desc("t2"), sibling]) + "\n\n")
    assert "rewound" in prompt.split("\n\n", 1)[1] and "t1" in prompt.split("\n\n", 1)[1]
    # not stored: resumed as it is, with the notice
    options, prompt, evs = await plan(["t9"])
    assert (options.resume, options.resume_session_at) == (sid, None)
    assert evs == [("t9", "interrupted", REASK_NOT_STORED)] and prompt == prompts.approval_reask_notice([desc("t9")])
    # no conversation to continue: the prompt, fresh; the call is withdrawn all the same
    options, prompt, evs = await plan(["t2"], continue_history=False)
    assert options.resume is None and prompt == "do it" and evs == [("t2", "interrupted", REASK_NOT_STORED)]
