"""The subcommands of worktree sessions (isolation = "worktree"): `shepherd diff` (the raw
unified diff on stdout, pipe-friendly; --stat a summary; --json the Diff as one object),
`shepherd merge`, `shepherd discard` and `shepherd worktrees [--prune]`. The git work is in
core.worktree_ops / core.worktree_diff; here: the checks that make bad input one line
(exit 2) and the printing (every file name and patch terminal-safe)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shepherd.tui.cli_common import EXIT_OK, UsageError, err, open_store


async def _worktree_session(store: Any, given: str) -> tuple[str, Any]:
    sid = await store.resolve_session(given)
    row = await store.worktree(sid)
    if row is None:
        raise UsageError(f'session {sid} did not run in a worktree (isolation = "worktree"; shepherd run --worktree)')
    return sid, row


def _stat_lines(d: Any) -> list[str]:
    from shepherd.core.text import safe

    if not d.files:
        return ["no files changed"]
    width = min(60, max(len(safe(_name(f))) for f in d.files))
    lines = []
    for f in d.files:
        counts = "binary" if f.binary else f"+{f.added} -{f.deleted}"
        lines.append(f" {f.status} {safe(_name(f)):<{width}} | {counts}")
    added = sum(f.added or 0 for f in d.files)
    deleted = sum(f.deleted or 0 for f in d.files)
    n = len(d.files)
    lines.append(f" {n} file{'s' if n != 1 else ''} changed, +{added} -{deleted}"
                 + (" (more files not listed)" if d.truncated else ""))
    return lines


def _name(f: Any) -> str:
    return f"{f.old_path} => {f.path}" if f.old_path else f.path


async def cmd_diff(args: argparse.Namespace) -> int:
    from shepherd.core.worktree import GitError
    from shepherd.core.worktree_diff import NoWorktree, session_diff, with_patches

    store = await open_store(args, check=False)
    try:
        sid, _ = await _worktree_session(store, args.session)
        if args.subtask is not None:
            subs = [s.id for s in await store.subtasks(sid)]
            if args.subtask not in subs:
                known = ", ".join(repr(s) for s in subs) or "none yet"
                raise UsageError(f"session {sid} has no subtask {args.subtask!r} (its subtasks: {known})")
        try:
            d = await session_diff(store, sid, args.subtask)
            if not args.stat:
                d = await with_patches(store, d)
        except (NoWorktree, GitError) as exc:
            raise UsageError(str(exc)) from None
    finally:
        await store.close()
    out = sys.stdout
    if args.json:  # json.dumps escapes every control (ensure_ascii): exact and terminal-safe
        out.write(json.dumps(d.to_dict(), sort_keys=True) + "\n")
        return EXIT_OK
    if d.note:
        err(d.note)
    if args.stat or not d.available:
        out.write("\n".join(_stat_lines(d)) + "\n")
        return EXIT_OK
    for f in d.files:  # core.worktree.patch made each one terminal-safe
        if f.patch:
            out.write(f.patch if f.patch.endswith("\n") else f.patch + "\n")
    return EXIT_OK


async def cmd_merge(args: argparse.Namespace) -> int:
    from shepherd.core.worktree_ops import OpsError, merge

    store = await open_store(args)
    try:
        sid, _ = await _worktree_session(store, args.session)
        try:
            res = await merge(store, sid, keep=args.keep)
        except OpsError as exc:
            raise UsageError(str(exc)) from None
    finally:
        await store.close()
    kept = "; kept its worktree and branch (shepherd discard removes them)" if res.kept else \
        "; its worktree and branch are removed"
    final = f" (a final checkpoint {res.final_checkpoint[:7]} took the uncommitted files first)" \
        if res.final_checkpoint else ""
    print(f"merged session {sid} into {res.into}: commit {res.commit[:12]}{final}{kept}", file=sys.stderr)
    return EXIT_OK


async def cmd_discard(args: argparse.Namespace) -> int:
    from shepherd.core.worktree_ops import OpsError, discard

    store = await open_store(args)
    try:
        sid, row = await _worktree_session(store, args.session)
        try:
            did = await discard(store, sid)
        except OpsError as exc:
            raise UsageError(str(exc)) from None
    finally:
        await store.close()
    from shepherd.core.text import safe

    print(f"discarded session {sid}: removed {safe(row.path)} and branch {safe(row.branch)}" if did
          else f"session {sid} was already discarded: nothing left to remove", file=sys.stderr)
    return EXIT_OK


async def cmd_worktrees(args: argparse.Namespace) -> int:
    from shepherd.core.store import NoDatabase
    from shepherd.core.text import safe

    try:
        store = await open_store(args, check=args.prune)
    except NoDatabase:
        if args.json:
            return EXIT_OK
        print("No worktree sessions yet.", file=sys.stderr)
        return EXIT_OK
    try:
        if args.prune:
            from shepherd.core.worktree_ops import OpsError, prune

            try:
                report = await prune(store)
            except OpsError as exc:
                raise UsageError(str(exc)) from None
            for line in report.removed:
                print(line)
            for line in report.kept:
                print(line, file=sys.stderr)
            print(f"pruned: {len(report.removed)} removed, {len(report.kept)} kept", file=sys.stderr)
            return EXIT_OK
        rows = await store.worktrees(state=args.state)
    finally:
        await store.close()
    if args.json:
        for r in rows:
            print(json.dumps({"session": r.session_id, "state": r.state, "branch": r.branch, "path": r.path,
                              "origin": r.origin, "base_branch": r.base_branch, "base_commit": r.base_commit,
                              "commit": r.commit}, sort_keys=True))
        return EXIT_OK
    if not rows:
        print("No worktree sessions.", file=sys.stderr)
        return EXIT_OK
    for r in rows:  # one a line, tab-separated: session, state, branch, path
        print("\t".join(safe(str(v)) for v in (r.session_id, r.state, r.branch, r.path)))
    return EXIT_OK


def add_parsers(add: Any) -> None:
    """The subcommands, on tui.cli's parser (``add(name, help) -> ArgumentParser``)."""
    p = add("diff", "what a worktree session (or one subtask) changed: a unified diff on stdout")
    p.add_argument("session")
    p.add_argument("subtask", nargs="?")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--stat", action="store_true", help="a summary: one line per file")
    how.add_argument("--json", action="store_true", help="the diff as one JSON object (with the patches)")

    p = add("merge", "merge a worktree session's branch into the branch it started from")
    p.add_argument("session")
    p.add_argument("--keep", action="store_true", help="keep the worktree and the branch after merging")

    p = add("discard", "remove a worktree session's worktree and branch (its changes are lost)")
    p.add_argument("session")

    p = add("worktrees", "list worktree sessions: session, state, branch, path")
    p.add_argument("--prune", action="store_true",
                   help="remove worktrees nobody will come back to (discarded, merged, of unknown sessions "
                        "with nothing in them)")
    p.add_argument("--state", choices=("active", "merged", "discarded", "gone"))
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")


HANDLERS = {"diff": cmd_diff, "merge": cmd_merge, "discard": cmd_discard, "worktrees": cmd_worktrees}
