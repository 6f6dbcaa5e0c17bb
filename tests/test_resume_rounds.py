"""Red-team round on records, budgets and controls under crashes and concurrency: a real
``shepherd`` runner SIGKILLed round after round at different points and resumed with
``shepherd resume --headless`` keeps one whole record; a resume that loses the race for
the lease says only that; a running check stops at once for cancel, skip and retry; a
control for a subtask the session does not have is refused by the CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shepherd.core.engine import Supervisor
from shepherd.core.store import LeaseHeld, Store, open_store
from tests.cli_helpers import ROOT, SHEPHERD, write_task
from tests.engine_helpers import FAST, make_task, stored, wait_for
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures: [sqlite]/[postgres])


def _env() -> dict[str, str]:
    return {**os.environ, "SHEPHERD_TIME_SCALE": "1"}


def _query(db: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet, or busy: look again
        return []


def _run_until(argv: list[str], db: Path, sql: str) -> subprocess.CompletedProcess[str] | None:
    """Run ``shepherd ARGV`` and SIGKILL it as soon as ``sql`` counts something; None when
    killed, the finished process when it ended first."""
    proc = subprocess.Popen([*SHEPHERD, *argv, "--db", str(db)], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None:
            assert time.monotonic() < deadline, "neither killed nor finished"
            hit = _query(db, sql) if db.exists() else []
            if hit and hit[0][0]:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                return None
            time.sleep(0.01)  # polling another process's database: there is no event to await
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def _rounds_task(tmp_path: Path) -> Path:
    # "a" passes its check; "b" fails transiently for ever: only its budget (12) ends it
    fail = ('  [[subtasks.steps]]\n  tools = [{ name = "run_command", args = { command = "sleep 0.2" } }]\n'
            '  [[subtasks.steps]]\n  fail = "transient"\n') * 16
    task, _ = write_task(tmp_path, f'''[retry.transient]
max_retries = 30
initial_delay = 0.2
max_delay = 0.2
multiplier = 1
[[subtasks]]
id = "a"
prompt = "a"
check = "sleep 0.4; echo ran >> checks.txt"
  [[subtasks.steps]]
  text = "a is done"
[[subtasks]]
id = "b"
prompt = "b"
check = "true"
{fail}''', title="rounds", backend="scripted")
    return task


def test_sigkill_rounds_and_resumes_keep_one_whole_record(tmp_path: Path) -> None:
    """SIGKILL during a check, a tool, a countdown, right after an attempt started and
    right after a subtask ended, resuming each time: attempt numbers go 1, 2, 3... per
    subtask, every call is finished once, nothing is done twice and the budget of 12
    holds across all the rounds; the session ends failed and `shepherd show` says so."""
    task, db = _rounds_task(tmp_path), tmp_path / "s.db"
    assert _run_until(["run", str(task), "--headless"], db,
                      "SELECT count(*) FROM tool_calls WHERE name = 'check' AND status = 'running'") is None
    (sid,), = _query(db, "SELECT id FROM sessions")
    kill_points = [
        "SELECT count(*) FROM events WHERE type = 'subtask.finished' AND subtask_id = 'a'",
        "SELECT count(*) FROM tool_calls WHERE name = 'run_command' AND status = 'running'",
        "SELECT count(*) FROM events WHERE type = 'retry.scheduled' AND seq > {last}",
        "SELECT count(*) FROM events WHERE type = 'attempt.started' AND seq > {last}",
        "SELECT count(*) FROM events WHERE type = 'retry.scheduled' AND seq > {last}",
    ]
    ended = None
    for point in kill_points:
        (last,), = _query(db, "SELECT max(seq) FROM events") or [(0,)]
        ended = _run_until(["resume", sid, "--headless"], db, point.format(last=last))
        assert ended is None, f"the run ended before {point}: {ended.stderr[-1500:]}"
    for _ in range(3):  # the last resumes run to the end of the budget
        ended = _run_until(["resume", sid, "--headless"], db, "SELECT 0")
        if ended is not None and ended.returncode != 0:
            break
    assert ended is not None and ended.returncode == 1, ended and ended.stderr[-1500:]
    assert "attempt budget exhausted (12/12 attempts)" in ended.stderr

    rows = _query(db, f"SELECT type, subtask_id, attempt, data FROM events WHERE session_id = '{sid}' ORDER BY seq")
    attempts: dict[str, list[int]] = {}
    calls: dict[str, list[str]] = {}
    for type_, sub, attempt, data in rows:
        if type_ == "attempt.started":
            attempts.setdefault(sub, []).append(attempt)
        elif type_ in ("tool.started", "tool.finished"):
            calls.setdefault(json.loads(data)["call_id"], []).append(type_)
    assert attempts["b"] == list(range(1, 13)), attempts
    assert attempts["a"] == list(range(1, len(attempts["a"]) + 1))
    assert all(v == ["tool.started", "tool.finished"] for v in calls.values()), calls
    finished = [(s, json.loads(d)["status"]) for t, s, _, d in rows if t == "subtask.finished"]
    assert finished.count(("a", "done")) == 1 and finished[-1] == ("b", "stuck"), finished
    checks_done = _query(db, f"SELECT count(*) FROM tool_calls WHERE session_id = '{sid}' AND name = 'check' "
                             "AND subtask_id = 'a' AND status = 'ok'")
    assert checks_done == [(1,)]
    assert _query(db, f"SELECT status FROM sessions WHERE id = '{sid}'") == [("failed",)]
    show = subprocess.run([*SHEPHERD, "show", sid, "--db", str(db)], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=60)
    assert show.returncode == 0 and "failed" in show.stdout and "stuck" in show.stdout, show.stderr


# --- two runners for one session -----------------------------------------------------------


async def _done_session_taken_by_another(tmp_path: Path) -> tuple[Path, Store, Supervisor]:
    """A finished one-subtask session whose lease this store holds, as another resume that
    got there first would: (db, store, supervisor)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    db = tmp_path / "s.db"
    store = await Store.open(db)
    sup = Supervisor(store, make_task(ws, [{"id": "a", "prompt": "p", "steps": [{"text": "did a"}]}]),
                     clock=FAST, interactive=False)
    assert await sup.run() == "done"
    await store.acquire_lease(sup.session_id)  # the other resume got there first
    return db, store, sup


async def test_a_resume_that_loses_the_lease_says_only_that(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Two `shepherd resume` of one session at once both find no runner; the one that
    loses the race for the lease must not announce a resume it will not do."""
    from shepherd.tui.cli_run import run_headless

    db, store, sup = await _done_session_taken_by_another(tmp_path)
    try:
        capsys.readouterr()
        args = argparse.Namespace(db=str(db), json=False)
        with pytest.raises(LeaseHeld):
            await run_headless(args, resume=sup.session_id, retry="a")
        assert "resuming" not in capsys.readouterr().err
        assert len(await stored(store, sup.session_id, "attempt.started")) == 1  # nothing ran
    finally:
        await store.close()


# --- a running check is part of the attempt ------------------------------------------------------


@pytest.mark.parametrize("control", ["cancel", "skip", "retry"])
async def test_a_person_stops_a_running_check_at_once(tmp_path: Path, control: str) -> None:
    """cancel, skip and retry during a subtask's check stop it now (its process group is
    killed and the call recorded interrupted): no waiting out a long check, and a
    cancelled or skipped subtask never ends done because its check passed later."""
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [{"id": "a", "prompt": "p", "check": "touch started; sleep 30; touch finished",
                           "check_timeout": 60, "steps": [{"text": "did a"}]}])
    store = await Store.open(tmp_path / "s.db")
    sup = Supervisor(store, task, clock=FAST, interactive=False)
    run = asyncio.create_task(sup.run())
    try:
        async def check_running() -> bool:
            return any(c.name == "check" and c.status == "running" for c in await store.tool_calls(sup.session_id))

        await wait_for(check_running, store=store, timeout=30)
        await wait_for(lambda: (ws / "started").exists(), timeout=30)
        if control == "retry":
            await sup.retry("a")
            await wait_for(lambda: _attempts_over(store, sup.session_id, 1), store=store, timeout=30)
            await sup.cancel()  # the second attempt's check would sleep too
        else:
            await getattr(sup, control)()
        final = await asyncio.wait_for(run, timeout=15)  # not the 30 s of the check
        checks = [c for c in await store.tool_calls(sup.session_id) if c.name == "check"]
        assert checks and all(c.status == "interrupted" for c in checks), [(c.attempt, c.status) for c in checks]
        sub = (await store.subtasks(sup.session_id))[0]
        expected = {"cancel": ("cancelled", "cancelled"), "skip": ("skipped", "done"),
                    "retry": ("cancelled", "cancelled")}[control]
        assert (sub.status, final) == expected
        if control == "retry":
            reasons = [a.reason for a in await stored(store, sup.session_id, "attempt.started")]
            assert reasons[:2] == ["first", "user_retry"]
        assert not (ws / "finished").exists()
    finally:
        await _stopped(run)
        await store.close()


async def _stopped(run: asyncio.Future) -> None:
    """Cancel a supervisor run a test left going (a failed assertion) and wait it out."""
    if not run.done():
        run.cancel()
        with contextlib.suppress(BaseException):
            await run


async def _attempts_over(store: Store, sid: str, n: int) -> bool:
    return len(await stored(store, sid, "attempt.started")) > n


# --- controls from the command line ---------------------------------------------------------------


def test_a_cli_control_for_an_unknown_subtask_is_refused(tmp_path: Path) -> None:
    task, _ = write_task(tmp_path, '[[subtasks]]\nid = "a"\nprompt = "p"\n  [[subtasks.steps]]\n'
                         '  fail = "rate_limit"\n  retry_after = 600\n', title="live", backend="scripted")
    db = tmp_path / "s.db"
    proc = subprocess.Popen([*SHEPHERD, "run", str(task), "--headless", "--db", str(db)], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _query(db, "SELECT count(*) FROM events WHERE type = 'retry.scheduled'")[:1] == [(1,)]:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)  # another process's database: there is no event to await
        (sid,), = _query(db, "SELECT id FROM sessions")
        for cmd in ("retry", "skip"):
            out = subprocess.run([*SHEPHERD, cmd, sid, "zz", "--db", str(db)], capture_output=True, text=True,
                                 cwd=ROOT, env=_env(), timeout=60)
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 2 and len(lines) == 1, out.stderr
            assert "has no subtask 'zz' (its subtasks: 'a')" in lines[0]
        assert _query(db, "SELECT count(*) FROM commands") == [(0,)]  # nothing was sent
        out = subprocess.run([*SHEPHERD, "cancel", sid, "--db", str(db)], capture_output=True, text=True,
                             cwd=ROOT, env=_env(), timeout=60)
        assert out.returncode == 0
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# --- an error and its retry are one step of the record ---------------------------------------------


async def _commits_of_transient_failures(tmp_path: Path, target: str | Path, *, fails: int, max_retries: int) -> list[list[str]]:
    """Run one subtask that fails transiently ``fails`` times to "failed"; the event types
    of each commit, in order. One event a batch: even where a batch is full, a pair that
    belongs together is not split."""
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [{"id": "a", "prompt": "p", "steps": [{"fail": "transient"}] * fails}],
                     retry={"transient": {"max_retries": max_retries, "initial_delay": 0.1, "max_delay": 0.1}})
    store = await open_store(target)
    store.max_batch = 1
    commits: list[list[str]] = []
    unsubscribe = store.subscribe(lambda evs: commits.append([e.type for e in evs]))
    try:
        assert await Supervisor(store, task, clock=FAST, interactive=False).run() == "failed"
    finally:
        unsubscribe()
        await store.close()
    return commits


async def test_an_error_and_the_retry_decided_on_it_are_committed_together(tmp_path: Path,
                                                                          store_target: str | Path) -> None:
    """A runner killed between the two left an error with no retry.scheduled: the resume
    then ran the lost retry as a 'resume' the per-kind count never saw (one attempt more
    than max_retries allows; test_engine_trust's per-kind test was flaky for it)."""
    commits = await _commits_of_transient_failures(tmp_path, store_target, fails=3, max_retries=2)
    with_error = [c for c in commits if "error" in c]
    assert len(with_error) == 3
    assert with_error[:2] == [["error", "retry.scheduled"]] * 2, commits  # the third is final: no retry


# --- what a tool call left outside its process group ends with the call ----------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
@pytest.mark.parametrize("how", ["finished", "cancelled"])
async def test_a_setsid_child_of_a_tool_call_ends_with_the_call(tmp_path: Path, how: str) -> None:
    """`setsid sh -c 'sleep 30; touch m' &` left the call's process group: it went on
    after the call ended (and after a person's retry cancelled the attempt), and did the
    work again beside the retried call."""
    from shepherd.core.tools.workspace import execute
    from tests.test_tool_processes import processes_with, unique_seconds, wait_gone

    secs = unique_seconds(30)
    command = f"setsid sh -c 'touch up; sleep {secs}; touch escaped' & while [ ! -e up ]; do :; done; echo started"
    if how == "finished":
        res = await execute(command, tmp_path, 20)
        assert "started" in res.output
    else:
        call = asyncio.create_task(execute(command + f"; sleep {unique_seconds(30)}", tmp_path, 20))
        deadline = asyncio.get_running_loop().time() + 20
        while not (tmp_path / "up").exists() or len(processes_with(f"sleep {secs}")) < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)  # another process starting: there is nothing to await
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert wait_gone(f"sleep {secs}") == []


# --- skip and retry racing ------------------------------------------------------------------------


@pytest.mark.parametrize("order", [("skip", "retry"), ("retry", "skip")])
async def test_skip_and_retry_of_a_running_subtask_the_later_one_wins(tmp_path: Path, order: tuple[str, str],
                                                                      store_target: str | Path) -> None:
    """Both sent while the subtask runs, back to back: skip then retry runs it again (the
    retry of a skipped subtask), retry then skip skips it; neither is silently lost."""
    from tests.engine_helpers import GateBackend

    ws = tmp_path / "ws"
    ws.mkdir()
    backend = GateBackend([[("tool", "c1", "run_command"), ("hang",)]])
    store = await open_store(store_target)
    sup = Supervisor(store, make_task(ws, [{"id": "a", "prompt": "p"}]), backend=backend, clock=FAST,
                     interactive=False)
    run = asyncio.create_task(sup.run())
    try:
        async def tool_running() -> bool:
            return any(c.status == "running" for c in await store.tool_calls(sup.session_id))

        await wait_for(tool_running, store=store)
        for control in order:
            await getattr(sup, control)("a")
        assert await asyncio.wait_for(run, timeout=15) == "done"
        ends = [e.status for e in await stored(store, sup.session_id, "subtask.finished")]
        reasons = [a.reason for a in await stored(store, sup.session_id, "attempt.started")]
        if order == ("skip", "retry"):
            # skipped and run again, or (the skip not acted on yet) restarted at once, or
            # (the skip ended the session first) refused with its reason: never taken and lost
            retry = [c for c in await stored(store, sup.session_id, "control") if c.command == "retry"]
            if ends == ["skipped"]:
                assert retry[0].text == "refused: the session has ended" and reasons == ["first"]
            else:
                assert ends in (["skipped", "done"], ["done"]) and reasons == ["first", "user_retry"], (ends, reasons)
        else:
            assert ends == ["skipped"] and reasons == ["first"], (ends, reasons)
    finally:
        await _stopped(run)
        await store.close()


# --- a planned session resumes its plan ------------------------------------------------------------


async def test_a_planned_session_resumed_after_its_plan_runs_the_planned_subtasks(tmp_path: Path,
                                                                                  store_target: str | Path) -> None:
    """The stored task of a `plan = true` session has no subtasks; its plan is in the
    record. A runner stopped after planning was resumed as 'session done' with none of
    the planned subtasks run."""
    from tests.engine_helpers import GateBackend

    plan = [{"id": "a", "title": "First", "prompt": "do a"}, {"id": "b", "title": "Second", "prompt": "do b"}]
    ws = tmp_path / "ws"
    ws.mkdir()
    task = make_task(ws, [], plan=True, plan_prompt="split it")
    backend = GateBackend([[("text", "```json\n" + json.dumps(plan) + "\n```")], [("hang",)]])
    store = await open_store(store_target)
    sup = Supervisor(store, task, backend=backend, clock=FAST, interactive=False)
    first = asyncio.create_task(sup.run())
    try:
        async def a_running() -> bool:
            return any(a.subtask_id == "a" for a in await stored(store, sup.session_id, "attempt.started"))

        await wait_for(a_running, store=store)
        first.cancel()  # its runner stops in the middle of "a"
        with contextlib.suppress(asyncio.CancelledError):
            await first
        from shepherd.core.engine import resume_run

        handle = await resume_run(store, sup.session_id, interactive=False, clock=FAST,
                                  backend=GateBackend([[("text", "did a")], [("text", "did b")]]))
        assert await handle.task == "done"
        ends = [(e.subtask_id, e.status) for e in await stored(store, sup.session_id, "subtask.finished")]
        assert ends == [("plan", "done"), ("a", "done"), ("b", "done")]
    finally:
        await store.close()


async def test_the_error_a_subtask_ends_on_is_committed_with_its_end(tmp_path: Path,
                                                                    store_target: str | Path) -> None:
    """Killed between them, the record ended on an error with no subtask.finished: the
    resume ran one attempt more after retries were exhausted (or after an auth failure)."""
    commits = await _commits_of_transient_failures(tmp_path, store_target, fails=2, max_retries=1)
    assert [c for c in commits if "error" in c] == [["error", "retry.scheduled"], ["error", "subtask.finished"]]


# --- a stopped runner is not a dead one ------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
async def test_a_runner_stopped_with_ctrl_z_is_not_recovered_as_gone(tmp_path: Path) -> None:
    """Ctrl-Z on a headless run for longer than its lease: `shepherd sessions` marked the
    session interrupted (its running calls too) while the runner was only stopped, and a
    resume would start a second runner beside it. A stopped process of this host keeps
    its session; a dead one does not."""
    from shepherd.core.clock import FakeClock
    from shepherd.core.events import SessionStarted

    clock = FakeClock(start=1_000_000.0)
    path = tmp_path / "s.db"
    runner = await Store.open(path, clock=clock)
    await runner.append(SessionStarted(session_id="s1", title="stopped"))
    await runner.append(SessionStarted(session_id="s2", title="dead"))
    await runner.acquire_lease("s1", ttl_s=30)
    await runner.acquire_lease("s2", ttl_s=30)
    await runner.close()
    stopped = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        os.kill(stopped.pid, signal.SIGSTOP)
        with sqlite3.connect(path) as con:  # the leases of two runners: one stopped, one gone
            con.execute("UPDATE leases SET pid = ? WHERE session_id = 's1'", (stopped.pid,))
            con.execute("UPDATE leases SET pid = ? WHERE session_id = 's2'", (dead.pid,))
        clock.advance(120)  # both leases ran out
        store = await Store.open(path, clock=clock)  # recovery runs here
        try:
            assert (await store.get_session("s1")).status == "running"
            assert await store.lease_owner("s1") is not None  # resume sends commands to it
            assert (await store.get_session("s2")).status == "interrupted"
            os.kill(stopped.pid, signal.SIGCONT)
            stopped.kill()
            stopped.wait(timeout=10)
            assert await store.recover() == ["s1"]  # once it is really gone, it is recovered
        finally:
            await store.close()
    finally:
        if stopped.poll() is None:
            stopped.kill()
            stopped.wait(timeout=10)


async def test_the_tui_resume_that_loses_the_lease_says_so_in_one_line(tmp_path: Path) -> None:
    """The TUI's resume of a session another runner has just taken: one 'Cannot resume'
    line, not a 'Run … crashed' error report and a session screen for a run that is not."""
    from shepherd.tui.app import ShepherdApp

    db, store, sup = await _done_session_taken_by_another(tmp_path)
    try:
        app = ShepherdApp(db)
        async with app.run_test(size=(120, 36)) as pilot:
            assert await app.resume_session(sup.session_id, retry_subtask="a") is None
            await pilot.pause(0.05)
            messages = [(n.title, n.message) for n in app._notifications]
            assert [m for m in messages if "already being run" in m[1]] == [
                ("Cannot resume", f"session {sup.session_id} is already being run by {store.owner}")], messages
            assert not any("crashed" in m[1] for m in messages), messages
            assert sup.session_id not in app.runs
    finally:
        await store.close()
