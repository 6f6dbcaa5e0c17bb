"""The offline demo: a sample project copied into a temporary workspace, fixed by a
scripted agent on the real openai-agents Runner with real tools and real retries."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from core.task import Task, load_task

HERE = Path(__file__).parent


def demo_task(workspace: Path | None = None) -> Task:
    """The demo task with a fresh copy of the sample project as its workspace."""
    if workspace is None:
        workspace = Path(tempfile.mkdtemp(prefix="shepherd-demo-")) / "tinydates"
    shutil.copytree(HERE / "sample_project", workspace, dirs_exist_ok=True)
    task = load_task(HERE / "demo.toml")
    return Task(**{**task.__dict__, "workspace": workspace.resolve()})
