"""The offline demo: a sample project copied into a temporary workspace, fixed by a
scripted agent on the real openai-agents Runner with real tools and real retries.

A workspace made here lives in a ``shepherd-demo-*`` temporary directory that is removed
by ``cleanup()`` (the CLI calls it in a ``finally``) and, as a backstop for demos started
inside a long-lived TUI, when the interpreter exits. A process killed outright (SIGKILL,
a crash) cleans nothing: each folder names its process, and the next demo removes the
folders of processes that are gone. The session in the database keeps
the path; the folder itself does not outlive the process that ran the demo.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from shepherd.core.task import Task, load_task

HERE = Path(__file__).parent
# The TUI demo's first countdown (a tool-concurrency retry) is long enough for a person to
# try n (retry now), p (pause) or c (cancel) during it; the headless demo keeps the
# default 2 s so it stays quick.
TUI_FIRST_RETRY_S = 10.0

PREFIX = "shepherd-demo-"
OWNER_FILE = ".shepherd-demo-pid"  # beside the workspace, not in it: the agent never sees it

_made: list[tempfile.TemporaryDirectory[str]] = []


def demo_task(workspace: Path | None = None, *, interactive: bool = True) -> Task:
    """The demo task with a fresh copy of the sample project as its workspace
    (``interactive``: with the long first countdown, for the TUI)."""
    if workspace is None:
        sweep_stale()
        # TemporaryDirectory also removes itself at interpreter exit (weakref.finalize)
        tmp = tempfile.TemporaryDirectory(prefix=PREFIX, ignore_cleanup_errors=True)
        _made.append(tmp)
        (Path(tmp.name) / OWNER_FILE).write_text(str(os.getpid()))
        workspace = Path(tmp.name) / "tinydates"
    shutil.copytree(HERE / "sample_project", workspace, dirs_exist_ok=True)
    task = load_task(HERE / "demo.toml")
    retry = dict(task.retry)
    if interactive:
        retry["tool_concurrency"] = {**retry.get("tool_concurrency", {}), "initial_delay": TUI_FIRST_RETRY_S}
    return Task(**{**task.__dict__, "workspace": workspace.resolve(), "retry": retry})


def cleanup() -> None:
    """Remove every demo workspace this process made."""
    while _made:
        _made.pop().cleanup()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(root: Path | None = None) -> None:
    """Remove demo folders left by demo processes that no longer exist. A folder with no
    owner file (another version, someone else's) is left alone."""
    base = Path(root or tempfile.gettempdir())
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return
    for folder in candidates:
        try:
            pid = int((folder / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
