"""The read-only subcommands: `shepherd sessions` (a table on a terminal, tab-separated
when piped, JSON lines with --json), `shepherd show` and `shepherd export`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepherd.tui.cli_common import EXIT_OK, UsageError, db_target, err, open_store

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore


async def cmd_sessions(args: argparse.Namespace) -> int:
    from shepherd.core.store import NoDatabase

    try:
        store = await open_store(args, check=False)
    except NoDatabase:  # nothing stored yet: an empty listing, and nothing created
        rows, worktrees = [], {}
    else:
        try:
            rows = await store.list_sessions(status=args.status, text=args.search, limit=args.limit)
            worktrees = {w.session_id: w for w in await store.worktrees()} if args.json else {}
        finally:
            await store.close()
    if args.json:
        for r in rows:  # json.dumps escapes every control (ensure_ascii): exact and terminal-safe
            print(json.dumps({
                "id": r.id, "title": r.title, "status": r.status, "backend": r.backend, "model": r.model,
                "started_at": r.started_at, "ended_at": r.ended_at, "subtasks_done": r.subtasks_done,
                "subtasks_total": r.subtasks_total, "retries": r.retries, "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens, "cost_usd": r.cost_usd, "workspace": r.workspace,
                "needs": r.needs, "needs_since": r.needs_since, "needs_detail": r.needs_detail,
                "worktree": _worktree_json(worktrees.get(r.id)),
            }))
        return EXIT_OK
    if not rows:
        filtered = args.status is not None or args.search is not None
        print("No sessions match." if filtered else "No sessions yet. Try `shepherd demo`.",
              file=sys.stderr if not sys.stdout.isatty() else sys.stdout)
        return EXIT_OK
    cells = [_session_cells(r) for r in rows]
    if not sys.stdout.isatty():
        # piped: plain, one row a line, tab-separated, full values (for grep, cut, awk)
        for c in cells:
            print("\t".join(c[k] for k in _SESSION_COLUMNS))
        return EXIT_OK
    _print_sessions_table(cells)
    return EXIT_OK


def _worktree_json(w: Any) -> dict[str, Any] | None:
    """A worktree session's worktree in `sessions --json`; None for any other session."""
    return None if w is None else {"path": w.path, "branch": w.branch, "state": w.state}


# Columns of `shepherd sessions`, in order; the table drops the last ones on narrow screens.
_SESSION_COLUMNS = ("id", "status", "title", "backend", "started", "took", "sub", "retries", "tokens")


def _session_cells(r: Any) -> dict[str, str]:
    """One session as plain one-line texts (stored text made terminal-safe)."""
    from shepherd.core.report import clip
    from shepherd.core.text import safe
    from shepherd.tui.fmt import fmt_span

    end = r.ended_at or time.time()
    return {
        "id": safe(r.id), "status": safe(r.status),
        "title": clip(safe(r.title), 10_000) or "(untitled)",
        "backend": clip(safe(r.backend + (f"/{r.model}" if r.model else "")), 10_000),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at)),
        "took": fmt_span(end - r.started_at), "sub": f"{r.subtasks_done}/{r.subtasks_total}",
        "retries": str(r.retries), "tokens": str(r.input_tokens + r.output_tokens),
    }


def _print_sessions_table(cells: list[dict[str, str]]) -> None:
    """The listing on a terminal: ids whole, titles cut to one line with an ellipsis,
    less important columns dropped when the screen is narrow. Cells are Text, never markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from shepherd.core.report import STATUS_STYLE

    console = Console(highlight=False)
    short_date = console.width < 120
    if short_date:
        cells = [{**c, "started": c["started"][5:]} for c in cells]
    shown = list(_SESSION_COLUMNS)
    need = {k: max(len(k), *(len(c[k]) for c in cells)) for k in shown}
    title_min = min(need["title"], 24)
    for k in ("backend", "tokens", "retries", "started", "took", "sub"):  # least needed first
        if sum(need[c] + 2 for c in shown if c != "title") + title_min <= console.width:
            break
        shown.remove(k)
    table = Table(box=None, header_style="bold", pad_edge=False)
    id_width = max(len(c["id"]) for c in cells)
    for k in shown:
        if k == "id":  # never cut: folds onto a second line before it is shortened
            table.add_column(k, min_width=id_width, overflow="fold")
        elif k == "title":  # the one column that gives way
            table.add_column(k, min_width=title_min, overflow="ellipsis")
        else:
            table.add_column(k, no_wrap=True, overflow="ellipsis",
                             justify="right" if k in ("took", "sub", "retries", "tokens") else "left")
    for c in cells:
        row = []
        for k in shown:
            value = c[k]
            style = STATUS_STYLE.get(value, "") if k == "status" else ("dim" if k == "id" else "")
            row.append(Text(value, style=style, no_wrap=k != "id", overflow="fold" if k == "id" else "ellipsis"))
        table.add_row(*row)
    console.print(table)


async def _all_events(store: EventStore, sid: str) -> Any:
    after = 0
    while True:
        page = await store.events(sid, after_seq=after, limit=2000)
        if not page:
            return
        for ev in page:
            yield ev
        after = page[-1].seq


async def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from shepherd.core.report import LogFormatter

    store = await open_store(args, check=False)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())  # piped: one event a line
        console.print(_show_header(row))
        fmt = LogFormatter()  # makes every event's text terminal-safe (core.text.safe)
        async for ev in _all_events(store, sid):
            for line in fmt.format(ev):
                console.print(line)
        _warn_damaged(store)
    finally:
        await store.close()
    return EXIT_OK


def _show_header(row: Any) -> Any:
    """`show`'s first line, built as Text: a title is data, never markup."""
    from rich.text import Text

    from shepherd.core.text import safe

    return Text.assemble(
        (safe(row.title), "bold"), "  ", (safe(row.id), "dim"), "  status: ", (safe(row.status), "bold"),
        f"  subtasks {row.subtasks_done}/{row.subtasks_total}  retries {row.retries}  "
        f"tokens {row.input_tokens}/{row.output_tokens}")


def _warn_damaged(store: EventStore) -> None:
    """One line naming the events that could not be decoded (shown as damaged)."""
    seqs = sorted(seq for _, seq in store.damaged_events)
    if seqs:
        shown = ", ".join(map(str, seqs[:10])) + (", …" if len(seqs) > 10 else "")
        err(f"warning: {len(seqs)} damaged event(s) in {store.path} (seq {shown}) are shown as "
             "[damaged event seq N]; the rest is intact")


def _output_path(args: argparse.Namespace) -> Path | None:
    """The -o file, checked before anything is read: a writable place that is not a
    directory and not the database itself."""
    if not args.output:
        return None
    out = Path(args.output).expanduser()
    if out.is_dir():
        raise UsageError(f"cannot write {out}: it is a directory (give a file name)")
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: the directory {out.parent} does not exist")
    db = db_target(args)
    for name in ((db, Path(f"{db}-wal"), Path(f"{db}-shm")) if isinstance(db, Path) else ()):  # a URL has no file
        if out.resolve() == name.resolve():
            raise UsageError(f"cannot write {out}: it is the database")
    return out


def _write_atomically(out: Path, chunks: Any) -> None:
    """Write through a temporary file beside ``out`` and rename it into place; on any
    failure the temporary file is removed and ``out`` is left as it was."""
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(chunks)
        os.replace(tmp, out)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
        raise


async def cmd_export(args: argparse.Namespace) -> int:
    from shepherd.core.report import export_jsonl, export_markdown, load_changes

    out = _output_path(args)
    store = await open_store(args, check=False)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        events = [ev async for ev in _all_events(store, sid)]
        changes = await load_changes(store, sid)  # a worktree session's diff per subtask; [] otherwise
        chunks = export_jsonl(events, changes) if args.format == "jsonl" else \
            export_markdown(row, await store.subtasks(sid), events, changes)
        if out is not None:
            _write_atomically(out, chunks)
            print(f"wrote {out}", file=sys.stderr)
        else:
            sys.stdout.writelines(chunks)
        _warn_damaged(store)
    finally:
        await store.close()
    return EXIT_OK
