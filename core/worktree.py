"""The git layer for worktree sessions (``isolation = "worktree"``).

Every git call goes through :func:`git`: ``git -C PATH`` with overrides that keep the user's
configuration from running programs or signing (hooks, gpg, gc, maintenance), an
environment stripped of every ``GIT_*`` variable (``GIT_INDEX_FILE``/``GIT_DIR`` inherited
from a hook or an IDE would aim the call at the user's index), stdin from /dev/null and a
timeout. A failure is a :class:`GitError` whose message is git's first ``fatal:``/``error:``
line, made terminal-safe. Research: docs/next/worktrees.md (§1, §2.2, §2.4-2.7).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from shepherd.core.process_group import end_group
from shepherd.core.records import record
from shepherd.core.text import safe

GIT_TIMEOUT = 120.0
BRANCH_PREFIX = "shepherd/"
_EXCLUDE_SHEPHERD = ":(exclude).shepherd"

_OVERRIDES = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "commit.gpgsign=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "user.name=Shepherd",
    "-c", "user.email=shepherd@localhost",
    "-c", "core.quotePath=false",
)


class GitError(Exception):
    """A git call failed or a precondition was refused; ``str()`` is one safe line."""


@record(frozen=True)
class RepoInfo:
    toplevel: str           # realpath of the user's checkout (or of the worktree it was run in)
    prefix: str             # workspace relative to toplevel, "" or "pkg/sub/"
    common_dir: str         # realpath of the shared .git directory
    head_commit: str
    head_branch: str | None  # "main"; None on a detached HEAD


@record(frozen=True)
class Worktree:
    path: str               # realpath of the worktree's top level
    branch: str             # "shepherd/<sid>"
    base_commit: str
    base_branch: str | None
    workspace: str          # path / prefix: where the agent works


def worktree_from_row(row: object) -> Worktree:
    """The ``Worktree`` of a stored ``WorktreeRow`` (or ``WorktreeChanged`` event)."""
    return Worktree(getattr(row, "path"), getattr(row, "branch"), getattr(row, "base_commit"),
                    getattr(row, "base_branch"), getattr(row, "workspace") or getattr(row, "path"))


@record(frozen=True)
class FileChange:
    path: str
    old_path: str | None    # set for renames and copies
    status: str             # A M D R C T U X
    added: int | None       # None for a binary file
    deleted: int | None
    binary: bool


def worktrees_root() -> Path:
    """Where worktrees live: ``$SHEPHERD_WORKTREES``, else
    ``$XDG_DATA_HOME/shepherd/worktrees`` (``~/.local/share``). Outside every repository on
    purpose (§1.6: a worktree inside one whose .git went missing resolves to the user's)."""
    override = os.environ.get("SHEPHERD_WORKTREES")
    if override:
        return Path(override).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "shepherd" / "worktrees"


def worktree_dir(info: "RepoInfo", session_id: str) -> Path:
    """``ROOT/<repo-name>-<hash8>/<session-id>``: one folder per repository (hash8 of its
    git dir's real path), the session id last (git's admin name for the worktree)."""
    import hashlib

    digest = hashlib.sha256(info.common_dir.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    name = os.path.basename(info.toplevel.rstrip("/")) or "repo"
    return worktrees_root() / f"{name}-{digest}" / session_id


def isolation_refusal(workspace: str | os.PathLike[str]) -> str | None:
    """Why ``workspace`` cannot hold a worktree session (one line), or None. Synchronous:
    for loading a task file (three quick git calls)."""
    import subprocess

    ws = os.fspath(workspace)

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-C", ws, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              env=_env(), timeout=30)

    try:
        bare = run("rev-parse", "--is-bare-repository")
    except FileNotFoundError:
        return "git is not installed"
    except (OSError, subprocess.SubprocessError) as exc:
        return safe(f"cannot run git: {exc}")
    if bare.returncode != 0:
        return safe(f"{ws} is not inside a git repository")
    if bare.stdout.strip() == b"true":
        return safe(f"{ws} is a bare git repository (no working tree)")
    if run("rev-parse", "-q", "--verify", "HEAD^{commit}").returncode != 0:
        return safe(f"the repository at {ws} has no commit yet")
    return None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["LC_ALL"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _first_line(stderr: str, rc: int | None, args: tuple[str, ...]) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("fatal:", "error:")):
            return safe(ln)
    if lines:
        return safe(lines[0])
    return safe(f"git {args[0] if args else ''} failed (exit {rc})")


async def git(path: str | os.PathLike[str], *args: str, input: bytes | None = None,
              timeout: float = GIT_TIMEOUT, check: bool = True,
              index_file: str | None = None) -> tuple[int, bytes]:
    """Run ``git -C path <overrides> args``; return ``(rc, stdout)``. Raises GitError when
    ``check`` and rc != 0, or on a timeout (the process is killed). ``index_file``: the one
    GIT_* variable we ever set ourselves (a private copy of an index, see snapshot_tree)."""
    env = _env()
    if index_file is not None:
        env["GIT_INDEX_FILE"] = index_file
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", "-C", os.fspath(path), *_OVERRIDES, *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            start_new_session=True)  # (its group: what git starts ends with it)
    except FileNotFoundError as exc:  # git itself missing, or cwd trouble
        raise GitError(safe(f"cannot run git: {exc}")) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except asyncio.TimeoutError:
        await end_group(proc)
        raise GitError(safe(f"git {args[0] if args else ''} timed out after {timeout:g}s")) from None
    except asyncio.CancelledError:  # the session is shut down: git does not go on writing alone
        await end_group(proc)
        raise
    if check and proc.returncode != 0:
        raise GitError(_first_line(err.decode("utf-8", "replace"), proc.returncode, args))
    return proc.returncode or 0, out


async def _text(path: str, *args: str) -> str:
    return (await git(path, *args))[1].decode("utf-8", "surrogateescape").rstrip("\n")


async def repo_info(workspace: str | os.PathLike[str]) -> RepoInfo:
    """Facts about the repository holding ``workspace``; refuses (GitError, one line) a
    missing directory, a non-repository, a bare repository and a repository with no commit."""
    ws = os.fspath(workspace)
    if not os.path.isdir(ws):
        raise GitError(safe(f"workspace {ws} is not a directory"))
    rc, out = await git(ws, "rev-parse", "--is-bare-repository", check=False)
    if rc != 0:
        raise GitError(safe(f"workspace {ws} is not in a git repository"))
    if out.strip() == b"true":
        raise GitError(safe(f"workspace {ws} is a bare git repository (no working tree)"))
    top, prefix, common = (await _text(ws, "rev-parse", "--show-toplevel", "--show-prefix",
                                       "--git-common-dir")).split("\n")
    rc, head = await git(ws, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
    if rc != 0:
        raise GitError(safe(f"repository {top} has no commit yet"))
    rc, ref = await git(ws, "symbolic-ref", "-q", "HEAD", check=False)
    ref_s = ref.decode("utf-8", "surrogateescape").strip() if rc == 0 else ""
    branch = ref_s.removeprefix("refs/heads/") if ref_s.startswith("refs/heads/") else None
    common_abs = common if os.path.isabs(common) else os.path.join(ws, common)
    return RepoInfo(os.path.realpath(top), prefix, os.path.realpath(common_abs),
                    head.decode().strip(), branch)


async def _branch_commit(repo: str, branch: str) -> str | None:
    rc, out = await git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}",
                        check=False)
    return out.decode().strip() if rc == 0 else None


async def create(info: RepoInfo, session_id: str, root: str | os.PathLike[str]) -> Worktree:
    """``git worktree add --lock -b shepherd/<sid> ROOT/<sid> HEAD-commit``: a clean copy of the
    recorded head commit, born locked. On failure the branch it left behind is deleted."""
    if not session_id or "/" in session_id or session_id.startswith((".", "-")):
        raise GitError(safe(f"bad session id for a worktree: {session_id!r}"))
    branch = BRANCH_PREFIX + session_id
    os.makedirs(root, exist_ok=True)
    path = os.path.join(os.path.realpath(root), session_id)
    existed = await _branch_commit(info.toplevel, branch)
    if existed is not None:
        raise GitError(safe(f"a branch named '{branch}' already exists"))
    try:
        await git(info.toplevel, "worktree", "add", "-q", "--lock", "--reason",
                  f"shepherd session {session_id}", "-b", branch, path, info.head_commit)
    except GitError:
        # §1.1: a failed add (path exists) leaves the new branch behind.
        if await _branch_commit(info.toplevel, branch) == info.head_commit:
            await git(info.toplevel, "branch", "-D", branch, check=False)
        raise
    path = os.path.realpath(path)
    return Worktree(path, branch, info.head_commit, info.head_branch,
                    os.path.join(path, info.prefix.rstrip("/")) if info.prefix else path)


async def _verify(wt: Worktree) -> None:
    """Refuse to touch anything but the recorded worktree on its session branch (§1.6: a
    worktree whose .git is gone would resolve to the user's repository)."""
    if not os.path.isfile(os.path.join(wt.path, ".git")):
        raise GitError(safe(f"{wt.path} is not a git worktree any more (its .git file is gone)"))
    top = await _text(wt.path, "rev-parse", "--show-toplevel")
    if os.path.realpath(top) != os.path.realpath(wt.path):
        raise GitError(safe(f"{wt.path} resolves to {top}, not to the session's worktree"))
    rc, ref = await git(wt.path, "symbolic-ref", "-q", "HEAD", check=False)
    ref_s = ref.decode("utf-8", "surrogateescape").strip() if rc == 0 else "(detached)"
    if ref_s != "refs/heads/" + wt.branch:
        raise GitError(safe(f"the worktree {wt.path} is on {ref_s}, not on {wt.branch}"))


async def checkpoint(wt: Worktree, message: str) -> str:
    """Commit everything in the worktree (untracked files too, never ignored ones nor
    .shepherd/) on the session branch; return the new commit id (always a new one)."""
    await _verify(wt)
    await git(wt.path, "add", "-A", "--", ".", _EXCLUDE_SHEPHERD)
    await git(wt.path, "commit", "-q", "--no-verify", "--allow-empty", "-F", "-",
              input=message.encode("utf-8", "surrogateescape"))
    return await _text(wt.path, "rev-parse", "HEAD")


async def restore(wt: Worktree, commit: str) -> None:
    """Bring the worktree's files back to ``commit`` (tracked files reset, untracked ones
    removed, ignored ones and .shepherd/ kept)."""
    await _verify(wt)
    await git(wt.path, "reset", "-q", "--hard", commit)
    await git(wt.path, "clean", "-q", "-fd", "-e", ".shepherd")


async def snapshot_tree(wt: Worktree) -> str:
    """A tree of the worktree's files as they are now (untracked ones too, never ignored
    ones nor .shepherd/), written through a private copy of its index: neither HEAD nor
    the worktree's own index moves (a live diff of a running subtask)."""
    import shutil
    import tempfile

    await _verify(wt)
    index = await _text(wt.path, "rev-parse", "--git-path", "index")
    index = index if os.path.isabs(index) else os.path.join(wt.path, index)
    with tempfile.TemporaryDirectory(prefix="shepherd-index-") as tmp:
        copy = os.path.join(tmp, "index")
        if os.path.exists(index):
            shutil.copyfile(index, copy)
        await git(wt.path, "add", "-A", "--", ".", _EXCLUDE_SHEPHERD, index_file=copy)
        _, out = await git(wt.path, "write-tree", index_file=copy)
    return out.decode().strip()


async def is_ancestor(where: str, commit: str, of: str) -> bool:
    rc, _ = await git(where, "merge-base", "--is-ancestor", commit, of, check=False)
    return rc == 0


async def commit_exists(where: str, commit: str) -> bool:
    rc, _ = await git(where, "cat-file", "-e", f"{commit}^{{commit}}", check=False)
    return rc == 0


def _where(target: Worktree | RepoInfo | str) -> str:
    if isinstance(target, Worktree):
        return target.path
    if isinstance(target, RepoInfo):
        return target.toplevel
    return os.fspath(target)


_DIFF_OPTS = ("-M", "--no-ext-diff", "--no-textconv", "--no-color")


def _parse_diff(out: bytes) -> list[FileChange]:
    """Parse ``git diff -M --raw --numstat -z``: first every raw record
    (``:mode mode sha sha STATUS\\0path\\0`` [+ ``new\\0`` for R/C]), then every numstat
    record (``added\\tdeleted\\tpath\\0`` or, for a rename, ``added\\tdeleted\\t\\0old\\0new\\0``)."""
    def dec(b: bytes) -> str:
        return b.decode("utf-8", "surrogateescape")

    fields = out.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    i = 0
    raw: list[tuple[str, str | None, str]] = []
    while i < len(fields) and fields[i].startswith(b":"):
        status = dec(fields[i].split(b" ")[-1])[:1]
        if status in ("R", "C"):
            raw.append((dec(fields[i + 2]), dec(fields[i + 1]), status))
            i += 3
        else:
            raw.append((dec(fields[i + 1]), None, status))
            i += 2
    stats: list[tuple[int | None, int | None]] = []
    while i < len(fields):
        added, deleted, rest = fields[i].split(b"\t", 2)
        i += 1
        if rest == b"":  # rename/copy: old and new follow as their own fields
            i += 2
        stats.append((None if added == b"-" else int(added), None if deleted == b"-" else int(deleted)))
    if len(stats) != len(raw):
        raise GitError(f"cannot parse git diff output ({len(raw)} raw, {len(stats)} numstat records)")
    return [FileChange(path, old, status, a, d, a is None)
            for (path, old, status), (a, d) in zip(raw, stats)]


async def diff(target: Worktree | RepoInfo | str, a: str, b: str) -> list[FileChange]:
    """The files changed between commits (or trees) ``a`` and ``b``, renames detected."""
    _, out = await git(_where(target), "diff", *_DIFF_OPTS, "--raw", "--numstat", "-z", a, b, "--")
    return _parse_diff(out)


async def patch(target: Worktree | RepoInfo | str, a: str, b: str, path: str,
                old_path: str | None = None) -> str:
    """The unified diff of one file between ``a`` and ``b`` (both paths for a rename), as
    terminal-safe text."""
    paths = [path] if old_path is None else [old_path, path]
    _, out = await git(_where(target), "diff", *_DIFF_OPTS, a, b, "--",
                       *(":(literal)" + p for p in paths))
    return safe(out.decode("utf-8", "replace"))


async def remove(wt: Worktree, repo: str | None = None) -> None:
    """Remove the worktree (even locked and dirty) and delete its branch. ``repo`` is any
    path in the repository; by default the worktree's common dir is found from its .git."""
    where = repo or await _common_toplevel(wt)
    await git(where, "worktree", "remove", "--force", "--force", wt.path)
    await git(where, "branch", "-D", wt.branch)


async def _common_toplevel(wt: Worktree) -> str:
    common = await _text(wt.path, "rev-parse", "--git-common-dir")
    common = common if os.path.isabs(common) else os.path.join(wt.path, common)
    return str(Path(os.path.realpath(common)).parent)


# ---------------------------------------------------------------------- recovery (resume)

TRAILERS = ("Shepherd-Session", "Shepherd-Subtask", "Shepherd-At")


def commit_text(text: str) -> str:
    """Untrusted text (a title) for a commit message: one line, terminal-safe. A person
    reads commit messages through `git log`, whose pager passes escape sequences on."""
    return safe(" ".join(text.split()))


def checkpoint_message(session_id: str, subtask_id: str, at: str, title: str = "") -> str:
    """``shepherd: <at> <subtask> — <title>`` plus the trailers recovery reads back (§2.7:
    a commit whose checkpoint event a crash lost is found by them)."""
    head = f"shepherd: {at} {commit_text(subtask_id)}" + (f" — {commit_text(title)}" if title.strip() else "")
    return (f"{head[:200]}\n\nShepherd-Session: {session_id}\nShepherd-Subtask: {subtask_id}\n"
            f"Shepherd-At: {at}\n")


async def branch_commit(where: str, branch: str) -> str | None:
    """The commit ``refs/heads/<branch>`` points at, or None when the branch is gone."""
    return await _branch_commit(where, branch)


def git_dir_of(wt: Worktree) -> str | None:
    """The worktree's own git dir (``<common>/worktrees/<name>``), read from its ``.git``
    file without running git (it may be the thing that is broken)."""
    try:
        text = Path(wt.path, ".git").read_text(errors="surrogateescape").strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    gd = text.removeprefix("gitdir:").strip()
    return os.path.realpath(gd if os.path.isabs(gd) else os.path.join(wt.path, gd))


def clear_stale_locks(wt: Worktree, common_dir: str) -> list[str]:
    """Delete the lock files a killed git left in THIS worktree (its index.lock and HEAD.lock)
    and on its branch ref (``refs/heads/shepherd/<sid>.lock``); never any other. Only for
    the runner that holds the session's lease after its previous runner died (§1.8: a lock
    is only a file; nobody else writes this worktree). Returns the paths removed."""
    gd = git_dir_of(wt)
    common = os.path.realpath(common_dir)
    candidates = [os.path.join(common, "refs", "heads", *wt.branch.split("/")) + ".lock"]
    if gd is not None and os.path.dirname(gd) == os.path.join(common, "worktrees"):
        candidates += [os.path.join(gd, "index.lock"), os.path.join(gd, "HEAD.lock")]
    removed = []
    for p in candidates:
        try:
            os.unlink(p)
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


async def reopen(wt: Worktree, where: str, session_id: str) -> tuple[Worktree, str]:
    """A resumed session's worktree: ``(wt, "reused")`` when it is there on its branch;
    ``(wt, "recreated")`` when its directory is gone but its branch is not (a new checkout of
    the branch tip: uncommitted work is lost). Refuses (GitError, one line) when the
    branch is gone, or the directory is there but is not that worktree. ``where``: any
    path of the repository (the user's checkout, or its git dir)."""
    tip = await _branch_commit(where, wt.branch)
    if tip is None:
        raise GitError(safe(f"its branch {wt.branch} was deleted; the session cannot go on"))
    if os.path.isfile(os.path.join(wt.path, ".git")):
        await _verify(wt)
        return wt, "reused"
    if os.path.exists(wt.path) and os.listdir(wt.path):
        raise GitError(safe(f"{wt.path} is there but is not the session's worktree any more"))
    # the directory went away: our entry is locked, so unlock it before prune can drop it
    await git(where, "worktree", "unlock", wt.path, check=False)
    await git(where, "worktree", "prune")
    await git(where, "worktree", "add", "-q", "--lock", "--reason", f"shepherd session {session_id}",
              wt.path, wt.branch)
    return wt, "recreated"


@record(frozen=True)
class SessionCommit:
    commit: str
    subtask_id: str
    at: str


async def session_commits(where: str, base: str, branch: str, session_id: str) -> list[SessionCommit]:
    """The checkpoint commits on ``branch`` since ``base`` whose trailers name ``session_id``,
    oldest first."""
    fmt = "%H%x1f" + "%x1f".join(f"%(trailers:key={k},valueonly,separator=%x2c)" for k in TRAILERS) + "%x1e"
    _, out = await git(where, "log", "--reverse", f"--format={fmt}", f"{base}..refs/heads/{branch}", "--")
    found = []
    for rec in out.decode("utf-8", "surrogateescape").split("\x1e"):
        parts = [p.strip() for p in rec.strip().split("\x1f")]
        if len(parts) == 4 and parts[1] == session_id and parts[2] and parts[3]:
            found.append(SessionCommit(parts[0], parts[2], parts[3]))
    return found
