"""`shepherd copy --from SRC --to DST [--session S ...]`: sessions moved between stores
(SQLite <-> PostgreSQL), ids and seqs kept (core.store.pg.copy does the copying).

A session already in DST with the same events is skipped, so a re-run is a no-op; one
with different events is refused in one line before anything is written."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from shepherd.tui.cli_common import EXIT_OK, UsageError, db_target

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore


def add_parser(add: Any) -> None:
    p = add("copy", "copy sessions between stores (SQLite <-> PostgreSQL), keeping ids and seqs")
    p.add_argument("--from", dest="src", required=True, metavar="SRC", help="the store to read (a file or a URL)")
    p.add_argument("--to", dest="dst", required=True, metavar="DST", help="the store to write (made if missing)")
    p.add_argument("--session", action="append", metavar="S", help="a session id or prefix (repeatable; default: all)")


async def _all_events(store: EventStore, sid: str) -> list[str]:
    out: list[str] = []
    while True:
        page = await store.events(sid, after_seq=len(out), limit=1000)
        if not page:
            return out
        out.extend(ev.to_json() for ev in page)


async def cmd_copy(args: argparse.Namespace) -> int:
    from shepherd.core.store import open_store
    from shepherd.core.store.pg.copy import _all_session_ids, copy_sessions
    from shepherd.core.text import safe

    src_t, dst_t = (db_target(argparse.Namespace(db=v)) for v in (args.src, args.dst))
    if str(src_t) == str(dst_t):
        raise UsageError("copy: --from and --to are the same store")
    src = await open_store(src_t, create=False, check=False, recover=False)
    try:
        dst = await open_store(dst_t, create=True, check=True, recover=False)
        try:
            if args.session:
                wanted = [await src.resolve_session(s) for s in args.session]
            else:
                wanted = await _all_session_ids(src)
            todo: list[str] = []
            for sid in wanted:
                if await dst.last_seq(sid) == 0 and await dst.get_session(sid) is None:
                    todo.append(sid)
                elif await _all_events(dst, sid) != await _all_events(src, sid):
                    raise UsageError(f"copy: session {safe(sid)} is in {safe(str(dst.path))} already with "
                                     "different events; nothing was copied")
            copied = await copy_sessions(src, dst, todo) if todo else []
        finally:
            await dst.close()
    finally:
        await src.close()
    print(f"copied {len(copied)} session(s); {len(wanted) - len(copied)} already there")
    return EXIT_OK
