"""Workspace tools: confinement, process-group kill on timeout, truncation, SDK wrapping."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from shepherd.core.clock import FakeClock, RealClock
from shepherd.core.tools import (
    ERROR_PREFIX,
    MAX_OUTPUT_CHARS,
    TIMEOUT_EXIT_CODE,
    list_files,
    read_file,
    run_check,
    run_command,
    write_file,
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    (w / "README.md").write_text("hello\n")
    (w / "src").mkdir()
    (w / "src" / "a.py").write_text("print('a')\n")
    (w / ".git").mkdir()
    (w / ".git" / "HEAD").write_text("ref\n")
    return w


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret.txt").write_text("top secret\n")
    return o


# --- confinement ---------------------------------------------------------------------


def test_read_write_list_inside(ws: Path) -> None:
    assert read_file(ws, "README.md") == "hello\n"
    assert write_file(ws, "new/dir/b.txt", "bee") == "wrote 3 bytes to new/dir/b.txt"
    assert (ws / "new/dir/b.txt").read_text() == "bee"
    listing = list_files(ws, ".").splitlines()
    assert "README.md" in listing and "src/" in listing and "src/a.py" in listing
    assert "new/dir/b.txt" in listing
    assert not any(line.startswith(".git") for line in listing)
    # absolute paths inside the workspace are fine
    assert read_file(ws, str(ws / "src" / "a.py")) == "print('a')\n"


@pytest.mark.parametrize("path", ["../outside/secret.txt", "src/../../outside/secret.txt"])
def test_dotdot_is_refused(ws: Path, outside: Path, path: str) -> None:
    for out in (read_file(ws, path), write_file(ws, path, "x"), list_files(ws, path)):
        assert out.startswith(ERROR_PREFIX) and "outside the workspace" in out
    assert (outside / "secret.txt").read_text() == "top secret\n"


def test_absolute_outside_is_refused(ws: Path, outside: Path) -> None:
    out = read_file(ws, str(outside / "secret.txt"))
    assert out.startswith(ERROR_PREFIX) and "outside the workspace" in out
    assert "top secret" not in out
    assert write_file(ws, "/etc/shepherd-should-not-exist", "x").startswith(ERROR_PREFIX)
    assert list_files(ws, "/").startswith(ERROR_PREFIX)


def test_symlink_escape_is_refused(ws: Path, outside: Path) -> None:
    (ws / "link_file").symlink_to(outside / "secret.txt")
    (ws / "link_dir").symlink_to(outside, target_is_directory=True)
    assert "outside the workspace" in read_file(ws, "link_file")
    assert "outside the workspace" in read_file(ws, "link_dir/secret.txt")
    assert "outside the workspace" in write_file(ws, "link_dir/evil.txt", "x")
    assert "outside the workspace" in write_file(ws, "link_file", "x")
    assert "outside the workspace" in list_files(ws, "link_dir")
    assert not (outside / "evil.txt").exists()
    assert (outside / "secret.txt").read_text() == "top secret\n"
    # a symlink that stays inside is fine
    (ws / "inner").symlink_to(ws / "README.md")
    assert read_file(ws, "inner") == "hello\n"


def test_missing_and_directory_errors(ws: Path) -> None:
    assert read_file(ws, "nope.txt").startswith(ERROR_PREFIX)
    assert read_file(ws, "src").startswith(ERROR_PREFIX)
    assert list_files(ws, "nope").startswith(ERROR_PREFIX)


def test_read_file_truncates(ws: Path) -> None:
    (ws / "big.txt").write_text("a" * 100 + "b" * (MAX_OUTPUT_CHARS * 3) + "THE END")
    out = read_file(ws, "big.txt")
    assert len(out) < MAX_OUTPUT_CHARS + 200
    assert "omitted" in out and out.startswith("a" * 100) and out.endswith("THE END")


# --- commands ------------------------------------------------------------------------


async def test_run_command_ok_and_failure(ws: Path) -> None:
    assert (await run_command(ws, "cat README.md")).strip() == "hello"
    out = await run_command(ws, "echo oops >&2; exit 3")
    assert out.startswith(ERROR_PREFIX + "command exited with code 3") and "oops" in out
    assert (await run_command(ws, "pwd")).strip() == str(ws.resolve())


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


async def _wait_for_file(path: Path, timeout: float = 10.0) -> str:
    """Wait for a real child process to write a file (bounded)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert loop.time() < end, f"{path} never appeared"
        await asyncio.sleep(0.01)
    return path.read_text().strip()


async def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while _alive(pid):
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


GRANDCHILD = (
    f"{sys.executable} -c \"import subprocess,sys; "
    "p=subprocess.Popen(['sleep','300']); open('gc.pid','w').write(str(p.pid)); "
    "print('started', flush=True); p.wait()\""
)


async def test_timeout_kills_whole_process_group(ws: Path) -> None:
    clock = FakeClock()
    task = asyncio.create_task(run_command(ws, GRANDCHILD, timeout_s=5, clock=clock))
    pid = int(await _wait_for_file(ws / "gc.pid"))
    assert _alive(pid)
    clock.advance(5)
    out = await asyncio.wait_for(task, 10)
    assert out.startswith(ERROR_PREFIX + "command timed out after 5 s")
    assert "started" in out
    assert await _wait_gone(pid), f"grandchild {pid} survived the timeout"


async def test_run_check_timeout_and_exit_codes(ws: Path) -> None:
    assert await run_check("true", ws, 10) == (0, "")
    code, out = await run_check("echo fail; exit 2", ws, 10)
    assert (code, out.strip()) == (2, "fail")
    clock = FakeClock()
    task = asyncio.create_task(run_check(GRANDCHILD, ws, 7, clock=clock))
    pid = int(await _wait_for_file(ws / "gc.pid"))
    clock.advance(7)
    code, out = await asyncio.wait_for(task, 10)
    assert code == TIMEOUT_EXIT_CODE and out.endswith("timed out after 7 s")
    assert await _wait_gone(pid)


async def test_cancelled_command_kills_group(ws: Path) -> None:
    task = asyncio.create_task(run_command(ws, GRANDCHILD, timeout_s=300, clock=FakeClock()))
    pid = int(await _wait_for_file(ws / "gc.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_gone(pid)


async def test_a_command_cancelled_while_it_starts_leaves_nothing_running(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel that lands while the process is being started (a skip as a check began:
    the check had run its first command, asyncio had not handed the process over yet)
    ends all of it. Before, the command's children ran on (its sleep, then whatever came
    after it). The race is widened here: the loop's start returns only when told to."""
    loop = asyncio.get_running_loop()
    real_start = loop.subprocess_exec
    running, release = asyncio.Event(), asyncio.Event()

    async def slow_start(*args: object, **kwargs: object) -> object:
        started = await real_start(*args, **kwargs)  # type: ignore[arg-type]
        running.set()
        await release.wait()
        return started

    monkeypatch.setattr(loop, "subprocess_exec", slow_start)
    task = asyncio.create_task(run_command(ws, GRANDCHILD, timeout_s=300, clock=FakeClock()))
    await running.wait()
    pid = int(await _wait_for_file(ws / "gc.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await _wait_gone(pid), f"grandchild {pid} survived the cancel"


async def test_background_leftovers_do_not_hang_the_call(ws: Path) -> None:
    # the shell exits at once but its background child keeps the pipe open
    out = await asyncio.wait_for(
        run_command(ws, "sleep 300 & echo $! > bg.pid; echo done", clock=RealClock(scale=1.0)), 10
    )
    assert out.strip() == "done"
    assert await _wait_gone(int((ws / "bg.pid").read_text()))


async def test_command_output_truncated(ws: Path) -> None:
    out = await run_command(
        ws, f"{sys.executable} -c \"print('x' * 2_000_000); print('LAST LINE')\""
    )
    assert len(out) < MAX_OUTPUT_CHARS + 200
    assert "omitted" in out and out.rstrip().endswith("LAST LINE")


# --- the SDK wrappers ------------------------------------------------------------------


async def test_function_tools_schema_and_invoke(ws: Path) -> None:
    from agents.tool_context import ToolContext

    from shepherd.core.tools import workspace_tools

    tools = workspace_tools(ws, RealClock(scale=1.0))
    by_name = {t.name: t for t in tools}
    assert set(by_name) == {"list_files", "read_file", "write_file", "run_command"}
    assert set(by_name["run_command"].params_json_schema["properties"]) == {"command", "timeout_s"}

    async def call(name: str, args: dict) -> str:
        raw = json.dumps(args)
        ctx = ToolContext(context=None, tool_name=name, tool_call_id="c1", tool_arguments=raw)
        return await by_name[name].on_invoke_tool(ctx, raw)

    assert await call("write_file", {"path": "x.txt", "content": "hi"}) == "wrote 2 bytes to x.txt"
    assert await call("read_file", {"path": "x.txt"}) == "hi"
    assert "outside the workspace" in await call("read_file", {"path": "../outside/secret.txt"})
    assert (await call("run_command", {"command": "cat x.txt", "timeout_s": 5})).strip() == "hi"
    assert "x.txt" in await call("list_files", {"path": "."})
    assert os.environ.get("OPENAI_API_KEY") is None  # the conftest guard is in effect
