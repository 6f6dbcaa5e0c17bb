"""Ending a child process that leads a process group of its own (started with
``start_new_session``), with whatever it started: tool calls, git, ``notify_command``.

Small and import-light on purpose: ``core.notify`` and ``core.worktree`` use it without
importing ``core.tools`` (~90 ms, not on the app's start-up path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a process started in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def end_group(proc: asyncio.subprocess.Process) -> None:
    """Kill ``proc``'s group if it still runs, and wait until ``proc`` is reaped. The wait
    is shielded: a caller that was cancelled (a session shut down) still gets the process
    reaped and its transport closed while the loop runs, not left to a closing loop
    ("Event loop is closed"); a second cancel during the wait ends it."""
    if proc.returncode is None:
        kill_group(proc.pid)
    await asyncio.shield(proc.wait())


__all__ = ["end_group", "kill_group"]
