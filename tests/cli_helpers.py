"""Shared pieces for tests that drive the real ``shepherd`` command line in a subprocess:
the command, a runner with the test time scale, and a task-file writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHEPHERD = [sys.executable, "-m", "shepherd.tui.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``shepherd ARGS`` to completion, output captured, nominal time sped up 50x."""
    env = {**os.environ, "SHEPHERD_TIME_SCALE": "0.02", **(env_extra or {})}
    return subprocess.run([*SHEPHERD, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def write_task(tmp_path: Path, body: str, *, title: str | None = None, backend: str | None = None,
               name: str = "t.toml") -> tuple[Path, Path]:
    """Write a task file whose workspace is ``tmp_path/ws`` (created): the ``title`` and
    ``backend`` lines when given, the workspace line, then ``body``. Returns (task, ws)."""
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    head = (f'title = "{title}"\n' if title is not None else "") + (f'backend = "{backend}"\n' if backend else "")
    task = tmp_path / name
    task.write_text(f'{head}workspace = "{ws}"\n' + body)
    return task, ws


def reap(proc: subprocess.Popen) -> None:
    """A runner a test started, killed if still going (a failed assertion) and waited for;
    its stderr pipe closed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()
