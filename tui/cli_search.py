"""`shepherd search QUERY [--session S] [--json] [--limit N]`: full-text search over every
session (core.store.search). One hit a line: session id, seq, subtask, event type and a
snippet with each match marked, bold on a terminal and between « » when piped; --json: JSON
lines (session_id, seq, subtask_id, type, ts, snippet with « »). Every field is terminal-safe."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shepherd.tui.cli_common import EXIT_OK, UsageError, check_at, event_seq, open_store
from shepherd.tui.snippet import render_snippet  # noqa: F401 - shared with the TUI's search screen

PLAIN_MARKS = ("«", "»")
BOLD_MARKS = ("\x1b[1m", "\x1b[22m")


def hit_line(hit: Any, marks: tuple[str, str]) -> str:
    from shepherd.core.text import safe

    return (f"{safe(hit.session_id)} #{hit.seq} {safe(hit.subtask_id or '-')} {hit.type}: "
            f"{render_snippet(hit.snippet, marks)}")


def hit_json(hit: Any) -> str:
    from shepherd.core.text import json_line_safe

    return json_line_safe(json.dumps({"session_id": hit.session_id, "seq": hit.seq, "subtask_id": hit.subtask_id,
                                      "type": hit.type, "ts": hit.ts,
                                      "snippet": render_snippet(hit.snippet, PLAIN_MARKS)}, ensure_ascii=False))


async def cmd_search(args: argparse.Namespace) -> int:
    from shepherd.core.store.search import terms

    if not terms(args.query):
        raise UsageError(f"search: {args.query!r} has no word to look for")
    store = await open_store(args, check=False)
    try:
        sid = await store.resolve_session(args.session) if args.session is not None else None
        hits = await store.search(args.query, session_id=sid, limit=args.limit)
    finally:
        await store.close()
    marks = BOLD_MARKS if sys.stdout.isatty() and not args.json else PLAIN_MARKS
    for hit in hits:
        print(hit_json(hit) if args.json else hit_line(hit, marks))
    if not hits and not args.json:
        print("no matches", file=sys.stderr)
    return EXIT_OK


def add_parser(add: Any, limit_type: Any) -> None:
    p = add("search", "full-text search over every session: text, tool inputs and outputs, errors, notes")
    p.add_argument("query", help="words to look for (all of them; quotes, -, * are plain text); newest first")
    p.add_argument("--session", metavar="S", default=None, help="only this session (id or unique prefix)")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--limit", type=limit_type, default=50, metavar="N", help="at most N hits (default 50)")


def add_attach_at(p: Any) -> None:
    """`shepherd attach SESSION --at SEQ`: the session view opens at that event."""
    p.add_argument("--at", type=event_seq, default=None, metavar="SEQ",
                   help="open at this event (its number, as `shepherd search` prints it after #)")


async def attach_at(args: argparse.Namespace, sid: str) -> int | None:
    """``--at`` checked against the session (one line, exit 2, for an event it does not have)."""
    if getattr(args, "at", None) is None:
        return None
    store = await open_store(args, check=False)
    try:
        last = await store.last_seq(sid)
    finally:
        await store.close()
    check_at("attach", args.at, sid, last)
    return int(args.at)
