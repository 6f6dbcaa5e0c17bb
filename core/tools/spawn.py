"""How a tool's process is started: its environment, its sandbox, its lifetime.

Every process a tool starts (the shell tool, a subtask's ``check``) goes through
``command_argv()`` + ``spawn_kwargs()``:

- Environment: ``core.secrets.child_env`` (no credentials unless ``pass_env``), plus the
  runner marker ``SHEPHERD_TOOL_RUNNER=<host>:<pid>``.
- Lifetime: the command runs in its own session (process group) under a small ``sh``
  wrapper. On Linux the wrapper gets ``PR_SET_PDEATHSIG(SIGTERM)``: when the runner dies,
  even by SIGKILL, the kernel signals the wrapper, whose trap SIGKILLs the whole group
  (a foreground ``sleep 30`` and a background ``(sleep 3; touch x) &`` alike). A
  process that left the group (``setsid``) still carries the marker: recovery
  (``Store.recover``) kills every process marked with a dead runner of this host
  (``kill_orphans``), and each call's end kills what carries its own call marker
  (``kill_call_leftovers``). A process that both leaves the group and clears its
  environment (``setsid env -i ...``) escapes both: only the bwrap sandbox holds it.
  Elsewhere (macOS: no pdeathsig, no /proc) a SIGKILLed runner's tools run on;
  docs/DEVELOPING.md says so.
- Sandbox (``sandbox = "bwrap"``): bubblewrap with the workspace writable, the rest of
  the file system read-only, $HOME hidden (except the directories PATH uses there), a
  private /tmp and /run (no docker.sock, no session bus), its own PID namespace (nothing survives it) and no network unless
  ``sandbox_network = true``. If bwrap is missing or cannot create namespaces, the run is
  refused (``sandbox_problem``) and a spawn fails: never a silent unconfined run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shepherd.core.records import record
from shepherd.core.secrets import RUNNER_MARKER, child_env, runner_marker_value

# $1 is the command. It runs in the background so that ``wait`` (and so the trap) can be
# interrupted: on TERM/HUP (the runner died) the wrapper kills its whole process group.
WRAPPER = 'trap "kill -KILL 0" TERM HUP\n/bin/sh -c "$1" &\nwait $!\n'
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
CALL_MARKER = "SHEPHERD_TOOL_CALL"  # one tool call's processes, wherever they went
# git's variables that say which repository, index or work tree a git command uses
GIT_LOCATION_VARS = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX"})


class SandboxUnavailable(RuntimeError):
    """``sandbox = "bwrap"`` was asked for and cannot be had here."""


@record(frozen=True)
class SpawnPolicy:
    """What a task says about its tool processes (core.task: pass_env, sandbox, sandbox_network)."""

    pass_env: tuple[str, ...] = ()
    sandbox: str | None = None
    network: bool = False
    worktree: bool = False  # isolation = "worktree": git's location variables are dropped

    @classmethod
    def from_task(cls, task: Any) -> SpawnPolicy:
        if task is None:
            return cls()
        return cls(pass_env=tuple(getattr(task, "pass_env", ()) or ()),
                   sandbox=getattr(task, "sandbox", None) or None,
                   network=bool(getattr(task, "sandbox_network", False)),
                   worktree=getattr(task, "isolation", "none") == "worktree")

    @property
    def confined(self) -> bool:
        return self.sandbox == "bwrap"


# --- lifetime --------------------------------------------------------------------------

@functools.cache
def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def _child_setup(prctl: Any, parent: int) -> None:
    """Runs in the child between fork and exec: a prebound libc call and two syscalls
    (no imports, no locks), so it is safe with the runner's other threads. If the runner
    died before prctl took effect, nobody would signal us: leave at once."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)


@functools.cache
def protect_runner() -> None:
    """Make this process's /proc entries (environ, mem, fd...) unreadable to its tools:
    they run as the same user, and without the sandbox ``tr '\\0' '\\n' < /proc/$RUNNER/environ
    | rot13`` would hand the model every credential the runner holds, past child_env and
    past any scrubbing. Not dumpable = no core dumps and no same-user ptrace of the runner
    either; a tool's own processes are dumpable again after their exec. Called before the
    first tool spawn and when a Supervisor starts (the claude CLI's own Bash tool is a
    descendant too)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def spawn_kwargs(policy: SpawnPolicy | None = None, call: str | None = None) -> dict[str, Any]:
    """Popen keyword arguments for a tool process: env, own session, pdeathsig; ``call``
    (a fresh token per tool call) marks its processes for ``kill_call_leftovers``."""
    policy = policy or SpawnPolicy()
    protect_runner()
    # the sandbox's only writable scratch place is its private /tmp
    extra = {"TMPDIR": "/tmp"} if policy.confined else {}
    if call is not None:
        extra[CALL_MARKER] = call
    env = child_env(policy.pass_env, extra=extra or None)
    if policy.worktree:  # a GIT_DIR/GIT_INDEX_FILE a runner inherited would aim the agent's git at the user's repo
        env = {k: v for k, v in env.items() if k not in GIT_LOCATION_VARS}
    kwargs: dict[str, Any] = {"env": env, "start_new_session": True}
    prctl = _prctl()
    if prctl is not None:
        kwargs["preexec_fn"] = functools.partial(_child_setup, prctl, os.getpid())
    return kwargs


def command_argv(command: str, workspace: Path, policy: SpawnPolicy | None = None) -> list[str]:
    """The argv that runs ``command`` in ``workspace`` (through the wrapper, and bwrap
    when the policy asks for it). Raises SandboxUnavailable rather than run unconfined."""
    policy = policy or SpawnPolicy()
    inner = ["/bin/sh", "-c", WRAPPER, "shepherd-tool", command]
    if not policy.confined:
        return inner
    problem = sandbox_problem(policy)
    if problem:
        raise SandboxUnavailable(problem)
    return bwrap_argv(workspace, network=policy.network) + ["--"] + inner


# --- the bwrap sandbox -------------------------------------------------------------------

def _home_exposed(home: Path, path_env: str) -> list[Path]:
    """Directories under $HOME that PATH uses (toolchains such as ~/.pyenv, ~/.cargo),
    by their first component below $HOME: shown read-only over the hidden home."""
    out: list[Path] = []
    for entry in path_env.split(os.pathsep):
        if not entry:
            continue
        p = Path(entry)
        with contextlib.suppress(ValueError):
            rel = p.relative_to(home)
            if rel.parts:
                top = home / rel.parts[0]
                if top.is_dir() and top not in out:
                    out.append(top)
    return out


def bwrap_argv(workspace: Path, *, network: bool = False, home: Path | None = None,
               path_env: str | None = None) -> list[str]:
    ws = str(Path(workspace).resolve())
    argv = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if not network:
        argv.append("--unshare-net")
    if Path("/run").is_dir() and not Path("/run").is_symlink():
        # sockets (docker.sock, the session bus, agents under /run/user) work through a
        # read-only mount too: hide them; keep the resolver's files when there is a network
        argv += ["--tmpfs", "/run"]
        resolve = Path("/run/systemd/resolve")
        if network and resolve.is_dir():
            argv += ["--ro-bind", str(resolve), str(resolve)]
    home = Path(home or os.environ.get("HOME") or Path.home()).resolve()
    if home != Path("/") and home.is_dir():
        argv += ["--tmpfs", str(home)]  # ~/.ssh, ~/.aws, ~/.config ... are not there
        for top in _home_exposed(home, os.environ.get("PATH", "") if path_env is None else path_env):
            argv += ["--ro-bind", str(top), str(top)]
    argv += _worktree_binds(Path(ws))
    argv += ["--bind", ws, ws, "--chdir", ws]
    return argv


def _worktree_binds(ws: Path) -> list[str]:
    """A git worktree's workspace (a Shepherd worktree session's): its git data lives in the
    repository's shared git dir, which the tmpfs on /tmp or $HOME may hide. Bind that dir
    read-only and the worktree's own admin dir (``<common>/worktrees/<name>``: its index,
    HEAD) writable, so the agent's ``git status``/``diff``/``log`` work while a commit fails
    cleanly (objects and refs are read-only: no moving the user's branches)."""
    for top in (ws, *ws.parents):
        dot = top / ".git"
        if dot.is_dir():
            return []  # an ordinary checkout: its .git is inside what is already bound
        if dot.is_file():
            break
    else:
        return []
    try:
        text = dot.read_text(errors="replace").strip()
    except OSError:
        return []
    if not text.startswith("gitdir:"):
        return []
    gitdir = Path(text.removeprefix("gitdir:").strip())
    gitdir = (gitdir if gitdir.is_absolute() else top / gitdir).resolve()
    if gitdir.parent.name != "worktrees" or not gitdir.is_dir():
        return []
    common = gitdir.parent.parent
    binds = ["--ro-bind", str(common), str(common), "--bind", str(gitdir), str(gitdir)]
    if top != ws:  # the workspace is a sub-directory: git sees the whole worktree, read-only
        binds += ["--ro-bind", str(top), str(top)]
    return binds


_probe_cache: dict[tuple[str, bool], str | None] = {}


def sandbox_problem(policy: SpawnPolicy) -> str | None:
    """Why the policy's sandbox cannot run here (one line), or None. Probes bwrap once per
    (binary, network) with the flags a real run uses."""
    if not policy.confined:
        return None
    if not sys.platform.startswith("linux"):
        return f'sandbox = "bwrap" needs Linux (this is {sys.platform}); remove it to run the shell unconfined'
    exe = shutil.which("bwrap")
    if exe is None:
        return ('sandbox = "bwrap" needs bubblewrap, which is not installed (apt-get install bubblewrap); '
                "remove it to run the shell unconfined")
    key = (exe, policy.network)
    if key not in _probe_cache:
        argv = bwrap_argv(Path("/"), network=policy.network) + ["--", "/bin/true"]
        try:
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, timeout=10, check=False)
            err = res.stderr.decode("utf-8", "replace").strip().splitlines()
            _probe_cache[key] = None if res.returncode == 0 else (
                f'sandbox = "bwrap": bubblewrap cannot create its sandbox here '
                f"({err[-1] if err else f'exit code {res.returncode}'})")
        except (OSError, subprocess.TimeoutExpired) as e:
            _probe_cache[key] = f'sandbox = "bwrap": bubblewrap does not start ({e})'
    return _probe_cache[key]


def check_sandbox(task: Any) -> None:
    """Refuse a task whose sandbox cannot be had (raises SandboxUnavailable)."""
    problem = sandbox_problem(SpawnPolicy.from_task(task))
    if problem:
        raise SandboxUnavailable(problem)


# --- what a dead runner left behind ----------------------------------------------------------

def marked_processes(marker: str, proc: Path = Path("/proc"), name: str = RUNNER_MARKER) -> list[tuple[int, int]]:
    """(pid, pgid) of every process whose environment carries ``name=marker`` (Linux;
    elsewhere nothing). Reading another user's environ fails: those are skipped."""
    needle = f"{name}={marker}".encode()
    out: list[tuple[int, int]] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return out
    me = os.getpid()
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
            pgid = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if needle in env.split(b"\0"):
            out.append((int(entry.name), pgid))
    return out


def kill_orphans(pid: int, host: str | None = None) -> int:
    """SIGKILL every tool process (and its group) a dead runner ``pid`` of this host left
    behind. Only called once that pid is known to be gone, so its marker cannot belong
    to a live runner. Returns how many processes were signalled."""
    return _kill_marked(marked_processes(runner_marker_value(pid, host)))


def kill_call_leftovers(call: str) -> int:
    """SIGKILL what one tool call left running outside its process group (``setsid``,
    a double fork): a call's processes end with the call, however it ended."""
    return _kill_marked(marked_processes(call, name=CALL_MARKER))


def _kill_marked(marked: list[tuple[int, int]]) -> int:
    own_group = os.getpgrp()
    pids = {p for p, _ in marked}
    for p, pgid in marked:
        # a group is killed only when its leader is one of the marked processes
        if pgid in pids and pgid not in (own_group, 0, 1):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    return len(marked)


def marked_by_any(markers: Iterable[str]) -> list[int]:
    """Pids carrying any of ``markers`` (tests)."""
    return sorted({p for m in markers for p, _ in marked_processes(m)})
