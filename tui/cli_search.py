"""`shepherd search QUERY [--session S] [--json] [--limit N]`: full-text search over every
session (core.store.search). One hit a line: session id, seq, subtask, event type and a
snippet with each match marked, bold on a terminal and between « » when piped; --json: JSON
lines (session_id, seq, subtask_id, type, ts, snippet with « »). Every field is terminal-safe."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shepherd.tui.cli_common import EXIT_OK, UsageError, open_store

PLAIN_MARKS = ("«", "»")
BOLD_MARKS = ("\x1b[1m", "\x1b[22m")


def render_snippet(snippet: str, marks: tuple[str, str]) -> str:
    """The store's snippet (matches between search.MARK_START/MARK_END) on one line, each
    piece made terminal-safe before ``marks`` (ours, trusted) go around the matches."""
    from shepherd.core.store.search import MARK_END, MARK_START
    from shepherd.core.text import safe

    out: list[str] = []
    for i, part in enumerate(snippet.split(MARK_START)):
        match, _, rest = part.partition(MARK_END) if i else ("", "", part)
        if i:
            out.append(marks[0] + _flat(safe(match)) + marks[1])
        out.append(_flat(safe(rest)))
    return "".join(out)


def _flat(text: str) -> str:
    return " ".join(text.split()) if ("\n" in text or "\t" in text) else text


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
