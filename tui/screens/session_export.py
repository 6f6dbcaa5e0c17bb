"""Export a session to a file next to its database (the session view's `e`): Markdown
through core.report, else the events as JSONL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore


def _file_part(text: str) -> str:
    """A session id as one safe file-name part: a database from elsewhere may hold any id
    ("../x", controls), and the export must land in its directory, under a readable name."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip(".") or "session"


async def export_session(store: "EventStore", session_id: str, directory: Path | None = None) -> Path:
    """Write the whole session next to the database: Markdown through core.report when
    it is there, else the event JSONL. Returns the file written."""
    events: list[Any] = []
    after = 0
    while True:
        page = await store.events(session_id, after_seq=after, limit=5000)
        if not page:
            break
        events.extend(page)
        after = page[-1].seq
    if directory is None:
        from shepherd.core.store import default_db_path  # a URL store has no folder: the data directory

        directory = Path(store.path).parent if "://" not in str(store.path) else default_db_path().parent
    try:
        from shepherd.core.report import export_markdown, load_changes
    except ImportError:
        export_markdown = None  # type: ignore[assignment]
    row = await store.get_session(session_id)
    if export_markdown is not None and row is not None:
        subtasks = await store.subtasks(session_id)
        changes = await load_changes(store, session_id)  # a worktree session's diffs (else none)
        text = "".join(export_markdown(row, list(subtasks), events, changes=changes))
        path = directory / f"shepherd-{_file_part(session_id)}.md"
    else:
        text = "".join(e.to_json() + "\n" for e in events)
        path = directory / f"shepherd-{_file_part(session_id)}.jsonl"
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    return path
