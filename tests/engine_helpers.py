"""Shared pieces for engine tests: a controllable backend for control-flow tests and
helpers that read what the Supervisor stored."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from shepherd.core.backends.base import AttemptContext
from shepherd.core.clock import RealClock
from shepherd.core.events import Event, MessageCompleted, TextDelta, ToolFinished, ToolStarted
from shepherd.core.task import task_from_dict
from tests.pg_server import sql as store_sql

FAST = RealClock(scale=0.0005)  # nominal seconds become half-milliseconds


class GateBackend:
    """A backend whose attempts follow a per-attempt script of actions, for testing the
    supervisor's control flow (pause, skip, cancel, heartbeats) without any SDK.

    Actions: ("text", str), ("tool", call_id, name), ("result", call_id, status),
    ("wait", asyncio.Event), ("raise", exc), ("hang",),
    ("ask", call_id, name, input): a gated call the way a backend asks (core.approvals):
    tool.started, then (a rule's yes) approval.requested + approval.decided(rule), or
    approval.requested and ``await ctx.approvals.ask``; approved: it "runs" (``ran``) and
    finishes ok; denied: tool.finished(denied) with the reason. An ungated call just runs.
    ("reask",): ask again every call of ``ctx.approvals.reask`` (same id, ``reask_of``).
    ("ask_all", [(call_id, name, input), ...]): one turn's gated calls asked together (the
    openai way: every request first, then all answers awaited).
    """

    name = "gate"

    def __init__(self, attempts: list[list[tuple[Any, ...]]]) -> None:
        self.attempts = attempts
        self.contexts: list[AttemptContext] = []
        self.closed: list[int] = []
        self.ran: list[str] = []  # call ids of asked calls that ran (approved)
        self.answers: dict[str, Any] = {}  # call id -> the Decision the backend got

    async def attempt(self, ctx: AttemptContext) -> AsyncIterator[Event]:
        self.contexts.append(ctx)
        n = len(self.contexts)
        script = self.attempts[n - 1] if n <= len(self.attempts) else [("text", "done")]
        try:
            for action in script:
                kind = action[0]
                if kind == "text":
                    yield TextDelta(message_id=f"m{n}", text=action[1])
                    yield MessageCompleted(message_id=f"m{n}", text=action[1])
                elif kind == "tool":
                    yield ToolStarted(call_id=action[1], name=action[2], input={})
                elif kind == "result":
                    yield ToolFinished(call_id=action[1], status=action[2], output="out")
                elif kind == "wait":
                    waiter = asyncio.ensure_future(action[1].wait())
                    stop = asyncio.ensure_future(ctx.stop_after_turn.wait())
                    await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    stop.cancel()
                    if ctx.stop_after_turn.is_set():
                        return
                elif kind == "raise":
                    raise action[1]
                elif kind == "hang":
                    await asyncio.Event().wait()
                elif kind == "ask":
                    async for ev in self._ask(ctx, action[1], action[2], action[3], reask_of=None):
                        yield ev
                elif kind == "ask_all":
                    from shepherd.core.events import ApprovalRequested

                    for cid, tool, tool_input in action[1]:
                        yield ToolStarted(call_id=cid, name=tool, input=tool_input)
                        yield ApprovalRequested(call_id=cid, tool=tool, input=tool_input)
                    gate = ctx.approvals
                    assert gate is not None
                    decisions = await asyncio.gather(*(gate.ask(cid) for cid, _, _ in action[1]))
                    for (cid, _, _), decision in zip(action[1], decisions):
                        self.answers[cid] = decision
                        if decision.approved:
                            self.ran.append(cid)
                        yield ToolFinished(call_id=cid, status="ok" if decision.approved else "denied", output="")
                elif kind == "reask":
                    for call in (ctx.approvals.reask if ctx.approvals else ()):
                        async for ev in self._ask(ctx, call.call_id, call.tool, dict(call.input),
                                                  reask_of=call.call_id, started=True):
                            yield ev
        finally:
            self.closed.append(n)


async def _gate_ask(self: GateBackend, ctx: AttemptContext, call_id: str, tool: str, tool_input: dict[str, Any], *,
                    reask_of: str | None, started: bool = False) -> AsyncIterator[Event]:
    from shepherd.core import prompts
    from shepherd.core.events import ApprovalDecided, ApprovalRequested

    if not started:
        yield ToolStarted(call_id=call_id, name=tool, input=tool_input)
    gate = ctx.approvals
    if gate is None or not gate.policy.gated(tool):
        self.ran.append(call_id)
        yield ToolFinished(call_id=call_id, status="ok", output="ran")
        return
    rule = gate.rule_decision(tool, tool_input)
    yield ApprovalRequested(call_id=call_id, tool=tool, input=tool_input, reask_of=reask_of)
    if rule is not None:
        yield ApprovalDecided(call_id=call_id, decision="approved", source="rule", reason=rule.reason)
        decision = rule
    else:
        decision = await gate.ask(call_id)
    self.answers[call_id] = decision
    if decision.approved:
        self.ran.append(call_id)
        yield ToolFinished(call_id=call_id, status="ok", output="ran")
    else:
        yield ToolFinished(call_id=call_id, status="denied", output=prompts.approval_denied(decision.reason))


GateBackend._ask = _gate_ask  # type: ignore[attr-defined]


async def done_then_retried(store: Any, task: Any, subtask_id: str) -> Any:
    """Run ``task`` to done, then a person's retry of ``subtask_id`` (a resume) to done;
    the first run's Supervisor, whose session both ran in."""
    from shepherd.core.engine import Supervisor, resume_run

    sup = Supervisor(store, task, clock=FAST, interactive=False)
    assert await sup.run() == "done"
    handle = await resume_run(store, sup.session_id, interactive=False, clock=FAST, retry_subtask=subtask_id)
    assert await handle.task == "done"
    return sup


def make_task(workspace: Path, subtasks: list[dict[str, Any]], **extra: Any) -> Any:
    data = {"title": "test task", "backend": "scripted", "workspace": str(workspace),
            "subtasks": subtasks, **extra}
    return task_from_dict(data, src="test")


async def stored(store: Any, sid: str, type_: str | None = None) -> list[Event]:
    evs = await store.events(sid, after_seq=0, limit=100000)
    return [e for e in evs if type_ is None or e.type == type_]


async def wait_for(predicate: Callable[[], Any], *, store: Any = None, timeout: float = 10.0) -> None:
    """Wait (without sleeping a fixed time) until predicate() is truthy; polls on the
    event loop and, when a store is given, after each of its commits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    changed = asyncio.Event()
    unsubscribe = store.subscribe(lambda evs: changed.set()) if store is not None else None
    try:
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), timeout=0.05)
            except asyncio.TimeoutError:
                pass
    finally:
        if unsubscribe:
            unsubscribe()


ROOT = Path(__file__).resolve().parents[1]


def kill_headless_when(task_file: Path, db: str | Path, sql: str, params: tuple[Any, ...] = (), *,
                       ready: Callable[[], bool] | None = None, never: str = "the condition to kill never came",
                       poll_s: float = 0.01) -> int:
    """Run ``shepherd run TASK --headless`` as a real process and SIGKILL it as soon as
    ``sql`` (a count over its database, read the way another process would) is non-zero
    and ``ready()``, if given, is true. Returns the runner's pid."""
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.tui.cli", "run", str(task_file), "--headless", "--db", str(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "SHEPHERD_TIME_SCALE": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError("the run ended before it was killed: " + proc.stderr.read().decode()[-2000:])
            assert time.monotonic() < deadline, never
            if not isinstance(db, Path) or db.exists():  # (sqlite3.connect would make an empty file)
                try:
                    hit = store_sql(db, sql, params)[0][0]
                except Exception:  # noqa: BLE001 - not made yet, or busy: look again
                    hit = 0
                if hit and (ready is None or ready()):
                    break
            time.sleep(poll_s)  # polling another process's database: there is no event to await
        os.kill(proc.pid, signal.SIGKILL)
        return proc.pid
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def kill_headless_run_mid_tool(task_file: Path, db: str | Path, *, tool: str = "run_command",
                               ready: Callable[[], bool] | None = None) -> int:
    """SIGKILL a real headless run once a ``tool`` call is running (and ``ready()``, if
    given, is true). Returns the runner's pid."""
    return kill_headless_when(task_file, db, "SELECT count(*) FROM tool_calls WHERE status='running' AND name=?",
                              (tool,), ready=ready, never="the tool call never started", poll_s=0.05)


# ---------------------------------------------------------------------- a runner in a child process

ASK_CHILD = [sys.executable, "-m", "tests.engine_helpers", "ask-child"]


def ask_child_main(db: str, workspace: str, calls: str) -> int:
    """``python -m tests.engine_helpers ask-child DB WS CALLS``: a real headless runner (the
    Supervisor, a real store) whose GateBackend asks the gated calls ``CALLS`` (JSON
    ``[[call_id, tool, input], ...]``; one attempt; a resume's attempts ask again what still
    waits, then the rest). Prints ``session <id>`` once it holds the lease and ``ran <ids>``
    and ``status <final>`` at the end."""
    import json

    from shepherd.core.engine import Supervisor, resume_run
    from shepherd.core.store import is_store_url, open_store

    spec = json.loads(calls)

    async def main() -> int:
        store = await open_store(db if is_store_url(db) else Path(db))
        try:
            resume = os.environ.get("ASK_CHILD_RESUME")
            script: list[tuple[Any, ...]] = [("reask",)] if resume else []
            script += [("ask", c, t, i) for c, t, i in spec]
            backend = GateBackend([script])
            if resume:
                handle = await resume_run(store, resume, interactive=False, backend=backend, clock=FAST)
                sup = handle.supervisor
                runner = handle.task
            else:
                task = make_task(Path(workspace), [{"id": "t1", "prompt": "do it"}], approve_tools=["Bash"])
                sup = Supervisor(store, task, backend=backend, clock=FAST, interactive=False)
                runner = asyncio.ensure_future(sup.run())
                await asyncio.wait({runner, asyncio.ensure_future(sup.leased.wait())},
                                   return_when=asyncio.FIRST_COMPLETED)
            print(f"session {sup.session_id}", flush=True)
            status = await runner
            print(f"ran {' '.join(backend.ran)}", flush=True)
            print(f"status {status}", flush=True)
            return 0
        finally:
            await store.close()

    return asyncio.run(main())


if __name__ == "__main__":
    if sys.argv[1:2] == ["ask-child"]:
        sys.exit(ask_child_main(*sys.argv[2:5]))
    sys.exit(2)
