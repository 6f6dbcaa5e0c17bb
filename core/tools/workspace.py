"""Workspace tools for the openai/scripted backends: list, read, write files and run commands.

Plain functions first (testable without the SDK), then ``workspace_tools()`` which wraps
them as openai-agents ``function_tool``s bound to one workspace. Every path of the *file*
tools is confined to the workspace (symlinks resolved, then opened component by component
without following a link that appeared since); the shell is not, unless the task
asks for ``sandbox = "bwrap"`` (core.tools.spawn). A refusal or failure is *returned* as
text starting with ``ERROR_PREFIX`` so the model sees it and the UI can mark the call as failed.

Commands run in their own session (process group) with ``core.tools.spawn``'s environment
(no credentials) and lifetime rules; on timeout or cancellation the whole group is killed
with SIGKILL, so a grandchild sleeper cannot outlive the call. What a tool returns to the
model is scrubbed of secret values (core.secrets) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepherd.core.clock import Clock, real_time
from shepherd.core.records import record
from shepherd.core.secrets import scrub_values
from shepherd.core.text import truncate_middle as _truncate_middle
from shepherd.core.process_group import kill_group
from shepherd.core.tools.spawn import SandboxUnavailable, SpawnPolicy, command_argv, kill_call_leftovers, spawn_kwargs

if TYPE_CHECKING:
    from agents import Tool

ERROR_PREFIX = "Error: "
MAX_OUTPUT_CHARS = 30_000  # what a tool hands back to the model
MAX_CAPTURE_BYTES = 4 * MAX_OUTPUT_CHARS  # what we keep while a command runs (head + tail)
MAX_LIST_ENTRIES = 500
MAX_COMMAND_TIMEOUT_S = 900.0
SKIP_DIRS = frozenset({".git", "__pycache__", "node_modules", ".venv", ".mypy_cache", ".pytest_cache"})
# After the shell exits, background children may still hold the pipe open; wait this
# long (real seconds) for the rest of the output, then kill the group.
_DRAIN_GRACE_S = 0.5


class ConfinementError(ValueError):
    """A path that points outside the workspace."""


def is_error_output(text: str) -> bool:
    return text.startswith(ERROR_PREFIX)


def truncate_middle(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    return _truncate_middle(text, limit, head_share=1 / 3)


def resolve_in_workspace(workspace: Path, path: str) -> Path:
    """The real path of ``path`` (relative to the workspace, or absolute inside it).
    Raises ConfinementError when it resolves outside the workspace (``..``, absolute
    paths elsewhere, symlinks pointing out)."""
    root = Path(workspace).resolve()
    raw = Path(os.path.expanduser(path or "."))
    candidate = raw if raw.is_absolute() else root / raw
    try:
        real = candidate.resolve()  # follows symlinks, also of missing files' parents
    except (OSError, RuntimeError) as e:  # a symlink loop, or a link changing under us
        why = getattr(e, "strerror", None) or e
        raise ConfinementError(f"{ERROR_PREFIX}cannot resolve path {path!r}: {why}") from None
    if real != root and root not in real.parents:
        raise ConfinementError(
            f"{ERROR_PREFIX}path {path!r} is outside the workspace ({root}); only paths inside it are allowed"
        )
    return real


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CONFINED_OPEN = bool(_NOFOLLOW and _DIRECTORY) and os.open in os.supports_dir_fd


def _open_confined(workspace: Path, real: Path, flags: int, *, make_parents: bool = False) -> int:
    """Open ``real`` (a path resolve_in_workspace returned) one component at a time from
    the workspace root, following no symlink. ``real`` has none (it was resolved), so a
    link met here was put there since: by the agent's own shell racing the file tool
    (which runs outside any sandbox) to redirect a write or read outside the workspace.
    Raises ConfinementError then; OSError for everything else."""
    root = Path(workspace).resolve()
    if not _CONFINED_OPEN:  # no dir_fd/O_NOFOLLOW here: the resolved path is all we have
        if make_parents:
            real.parent.mkdir(parents=True, exist_ok=True)
        return os.open(real, flags, 0o666)
    parts = real.relative_to(root).parts
    if not parts:
        raise IsADirectoryError(str(real))
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for part in parts[:-1]:
            if make_parents:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            try:
                nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if _is_link(e, part, fd):
                    raise _swapped(workspace, real) from None
                raise
            os.close(fd)
            fd = nxt
        try:
            return os.open(parts[-1], flags | _NOFOLLOW, 0o666, dir_fd=fd)
        except OSError as e:
            if _is_link(e, parts[-1], fd):
                raise _swapped(workspace, real) from None
            raise
    finally:
        os.close(fd)


def _is_link(err: OSError, name: str, dir_fd: int) -> bool:
    """Whether an O_NOFOLLOW open failed because ``name`` is a symlink (ELOOP; ENOTDIR
    for a directory expected)."""
    if err.errno == errno.ELOOP:
        return True
    if err.errno != errno.ENOTDIR:
        return False
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _swapped(workspace: Path, real: Path) -> ConfinementError:
    return ConfinementError(f"{ERROR_PREFIX}{_rel(workspace, real)!r} became a symbolic link while it was "
                            "opened; only paths inside the workspace are allowed")


def _rel(workspace: Path, real: Path) -> str:
    root = Path(workspace).resolve()
    return "." if real == root else str(real.relative_to(root))


# --- plain functions -----------------------------------------------------------------


def list_files(workspace: Path, path: str = ".") -> str:
    """Files under ``path`` (recursive, sorted, directories end with '/'), skipping VCS
    and cache directories; capped at MAX_LIST_ENTRIES."""
    try:
        base = resolve_in_workspace(workspace, path)
    except ConfinementError as e:
        return str(e)
    if not base.exists():
        return f"{ERROR_PREFIX}{path!r} does not exist"
    if base.is_file():
        return _rel(workspace, base)
    root = Path(workspace).resolve()
    out: list[str] = []
    more = False
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        here = Path(dirpath)
        entries = [here / d for d in dirnames] + [here / f for f in sorted(filenames)]
        for entry in entries:
            if len(out) >= MAX_LIST_ENTRIES:
                more = True
                break
            rel = str(entry.relative_to(root))
            out.append(rel + "/" if entry.is_dir() and not entry.is_symlink() else rel)
        if more:
            break
    if not out:
        return "(empty directory)"
    listing = "\n".join(sorted(out))
    if more:
        listing += f"\n... (listing stopped at {MAX_LIST_ENTRIES} entries; list a subdirectory)"
    return listing


def read_file(workspace: Path, path: str) -> str:
    try:
        real = resolve_in_workspace(workspace, path)
    except ConfinementError as e:
        return str(e)
    if not real.exists():
        return f"{ERROR_PREFIX}{path!r} does not exist"
    if real.is_dir():
        return f"{ERROR_PREFIX}{path!r} is a directory (use list_files)"
    try:
        with os.fdopen(_open_confined(workspace, real, os.O_RDONLY), "rb") as f:
            data = f.read()
    except ConfinementError as e:
        return str(e)
    except OSError as e:
        return f"{ERROR_PREFIX}cannot read {path!r}: {e.strerror or e}"
    if b"\x00" in data[:8192]:
        return f"{ERROR_PREFIX}{path!r} looks like a binary file ({len(data)} bytes)"
    return truncate_middle(data.decode("utf-8", errors="replace"))


def write_file(workspace: Path, path: str, content: str) -> str:
    try:
        real = resolve_in_workspace(workspace, path)
    except ConfinementError as e:
        return str(e)
    if real.is_dir():
        return f"{ERROR_PREFIX}{path!r} is a directory"
    try:
        data = content.encode("utf-8")
        fd = _open_confined(workspace, real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, make_parents=True)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except ConfinementError as e:
        return str(e)
    except OSError as e:
        return f"{ERROR_PREFIX}cannot write {path!r}: {e.strerror or e}"
    return f"wrote {len(data)} bytes to {_rel(workspace, real)}"


@record
class CommandResult:
    exit_code: int | None  # None when killed on timeout
    output: str  # stdout+stderr, truncated
    timed_out: bool
    duration_s: float


def _end_spawned(spawn: "asyncio.Future[Any]", call: str) -> None:
    """The whole of a process whose caller gave up while it was being started."""
    if not spawn.cancelled() and spawn.exception() is None:
        transport, _ = spawn.result()
        kill_group(transport.get_pid())
        transport.close()
    kill_call_leftovers(call)


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Resolves ``exited`` when the shell itself exits, pipes open or not."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _capture(stream: asyncio.StreamReader, buf: bytearray, tail: bytearray) -> None:
    """Read to EOF keeping the first half of the budget in ``buf`` and the latest bytes
    in ``tail``, so a flood of output never fills memory."""
    half = MAX_CAPTURE_BYTES // 2
    while chunk := await stream.read(65536):
        room = half - len(buf)
        if room > 0:
            buf += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            tail += chunk
            if len(tail) > half:
                del tail[: len(tail) - half]


async def execute(command: str, workspace: Path, timeout_s: float = 60.0, *,
                  clock: Clock | None = None, policy: SpawnPolicy | None = None) -> CommandResult:
    """Run ``command`` through the shell in ``workspace``, in a new session, as ``policy``
    says (environment, sandbox). On timeout, or if the caller is cancelled, the whole
    process group gets SIGKILL. Raises SandboxUnavailable rather than run a confined
    command unconfined."""
    clock = real_time(clock)
    start = clock.monotonic()
    loop = asyncio.get_running_loop()
    argv = command_argv(command, Path(workspace), policy)
    call = os.urandom(8).hex()
    spawn = asyncio.ensure_future(loop.subprocess_exec(
        lambda: _ExitAwareProtocol(loop),
        *argv,
        cwd=str(workspace),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        **spawn_kwargs(policy, call),
    ))
    try:
        transport, proto = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        # Cancelled while the process was being started (a skip as a check began): it
        # runs already, its first commands too, and asyncio's own clean-up would kill
        # the shell alone, leaving the rest of its group running. It ends once it is ours.
        spawn.add_done_callback(lambda done: _end_spawned(done, call))
        raise
    proc = asyncio.subprocess.Process(transport, proto, loop)
    head, tail = bytearray(), bytearray()
    assert proc.stdout is not None
    reader = asyncio.ensure_future(_capture(proc.stdout, head, tail))
    timer = asyncio.ensure_future(clock.sleep(timeout_s))
    timed_out = False
    try:
        # proc.wait() would also wait for the pipe to close, which a background child
        # can hold open forever: wait for the shell's own exit instead
        await asyncio.wait({proto.exited, timer}, return_when=asyncio.FIRST_COMPLETED)
        if not proto.exited.done():
            timed_out = True
            kill_group(proc.pid)
            await proto.exited
        # the shell is gone; give lingering background children a moment to finish
        # writing, then make sure nothing of the group survives the call
        await asyncio.wait({reader}, timeout=_DRAIN_GRACE_S)
        kill_group(proc.pid)
        await asyncio.wait({reader}, timeout=_DRAIN_GRACE_S)
    finally:
        if transport.get_returncode() is None:  # cancelled while running
            kill_group(proc.pid)
        kill_call_leftovers(call)  # what left the group (setsid) ends with the call too
        for fut in (timer, reader):
            if not fut.done():
                fut.cancel()
        transport.close()
    returncode = transport.get_returncode()
    data = bytes(head)
    if tail:
        data += b"\n... [output truncated] ...\n" + bytes(tail)
    text = truncate_middle(data.decode("utf-8", errors="replace"))
    return CommandResult(
        exit_code=None if timed_out else returncode,
        output=text,
        timed_out=timed_out,
        duration_s=clock.monotonic() - start,
    )


def _fmt_seconds(s: float) -> str:
    return f"{s:g}"


async def run_command(workspace: Path, command: str, timeout_s: float = 60.0, *,
                      clock: Clock | None = None, policy: SpawnPolicy | None = None) -> str:
    """The tool's text: the output (secrets scrubbed), prefixed with an error line on
    failure or timeout."""
    if not command or not command.strip():
        return f"{ERROR_PREFIX}empty command"
    timeout_s = min(max(float(timeout_s), 0.1), MAX_COMMAND_TIMEOUT_S)
    try:
        res = await execute(command, workspace, timeout_s, clock=clock, policy=policy)
    except SandboxUnavailable as e:
        return f"{ERROR_PREFIX}not run: {e}"
    except OSError as e:
        return f"{ERROR_PREFIX}cannot start command: {e.strerror or e}"
    output = scrub_values(res.output)
    body = output if output.strip() else "(no output)"
    if res.timed_out:
        return f"{ERROR_PREFIX}command timed out after {_fmt_seconds(timeout_s)} s (process group killed)\n{body}"
    if res.exit_code != 0:
        return f"{ERROR_PREFIX}command exited with code {res.exit_code}\n{body}"
    return body


TIMEOUT_EXIT_CODE = 124  # what run_check reports for a timed-out check (as coreutils timeout)


async def run_check(command: str, workspace: Path, timeout_s: float, *,
                    clock: Clock | None = None, task: Any = None) -> tuple[int, str]:
    """Run a subtask's ``check`` command as the task's tools run (environment, sandbox):
    (exit_code, output). A timeout kills the whole process group and gives
    (TIMEOUT_EXIT_CODE, output + 'timed out after N s'). The output goes back to the model
    as retry context, so it is scrubbed of secrets here."""
    try:
        res = await execute(command, workspace, timeout_s, clock=clock, policy=SpawnPolicy.from_task(task))
    except SandboxUnavailable as e:
        return 126, f"check not run: {e}"
    except OSError as e:
        return 127, f"cannot start check command: {e.strerror or e}"
    output = scrub_values(res.output)
    if res.timed_out:
        out = output.rstrip("\n")
        sep = "\n" if out else ""
        return TIMEOUT_EXIT_CODE, f"{out}{sep}timed out after {_fmt_seconds(timeout_s)} s"
    return (res.exit_code if res.exit_code is not None else -1), output


# --- the SDK tools -------------------------------------------------------------------


def shell_confinement(policy: SpawnPolicy | None) -> str:
    """The truth about the shell tool under ``policy`` (the words live in core.prompts)."""
    from shepherd.core.prompts import shell_confinement as words

    return words(bool(policy and policy.confined), bool(policy and policy.network))


def _tool_failure(ctx: Any, error: Exception) -> str:
    """Unexpected exceptions in a tool become a readable error output, never a crash."""
    return f"{ERROR_PREFIX}{type(error).__name__}: {error}"


# The tools above that change nothing (no file, no process): a crash while one runs leaves
# no effect to account for, so their start need not be committed before they run (the
# engine submits it lazily; see core.engine.LAZY_EVENTS).
READ_ONLY_TOOLS = frozenset({"list_files", "read_file"})


def workspace_tools(workspace: Path, clock: Clock | None = None,
                    policy: SpawnPolicy | None = None,
                    needs_approval: Callable[[str], Any] | None = None) -> list["Tool"]:
    """The four tools bound to ``workspace`` as openai-agents FunctionTools; ``policy``
    (SpawnPolicy.from_task) says how run_command's processes run. ``needs_approval(name)``,
    when given, returns each tool's openai-agents ``needs_approval`` setting (a bool or an
    async ``(run_context, params, call_id) -> bool``): the SDK's human-in-the-loop."""
    from agents import function_tool  # lazy: the SDK is expensive to import

    ws = Path(workspace).resolve()
    policy = policy or SpawnPolicy()

    async def list_files_tool(path: str = ".") -> str:
        """List the files under a directory of the workspace (recursive).

        Args:
            path: Directory relative to the workspace root; "." for the root.
        """
        return await asyncio.to_thread(list_files, ws, path)

    async def read_file_tool(path: str) -> str:
        """Read a text file of the workspace.

        Args:
            path: File path relative to the workspace root.
        """
        return scrub_values(await asyncio.to_thread(read_file, ws, path))  # e.g. a .env file

    async def write_file_tool(path: str, content: str) -> str:
        """Create or overwrite a text file in the workspace (parent directories are created).

        Args:
            path: File path relative to the workspace root.
            content: The complete new content of the file.
        """
        return await asyncio.to_thread(write_file, ws, path, content)

    async def run_command_tool(command: str, timeout_s: int = 60) -> str:
        return await run_command(ws, command, timeout_s, clock=clock, policy=policy)

    run_command_tool.__doc__ = f"""Run a shell command in the workspace root and return its output (stdout and stderr).

        {shell_confinement(policy)}

        Args:
            command: The shell command line.
            timeout_s: Seconds before the command and all its child processes are killed.
        """

    specs = (
        ("list_files", list_files_tool),
        ("read_file", read_file_tool),
        ("write_file", write_file_tool),
        ("run_command", run_command_tool),
    )
    if needs_approval is None:
        return [function_tool(fn, name_override=name, failure_error_function=_tool_failure) for name, fn in specs]
    return [
        function_tool(fn, name_override=name, failure_error_function=_tool_failure,
                      needs_approval=needs_approval(name))
        for name, fn in specs
    ]
