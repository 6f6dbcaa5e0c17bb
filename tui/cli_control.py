"""The subcommands that steer a session through the commands table (its runner, in this
process or another, takes them): pause/skip/cancel/retry, approve/deny a waiting tool call,
and what `shepherd resume` and `shepherd attach` decide before anything runs."""

from __future__ import annotations

import argparse
import json
import sys

from typing import TYPE_CHECKING

from shepherd.core.control import CLEAN
from shepherd.core.states import SessionStatus as S
from shepherd.core.states import SubtaskState as T
from shepherd.tui.cli_common import DONE_STATUSES, EXIT_OK, UsageError, open_store
from shepherd.tui.cli_run import check_task_sandbox, checked_backend

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore


async def cmd_control(args: argparse.Namespace) -> int:
    store = await open_store(args)
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        if row.status in (*DONE_STATUSES, S.INTERRUPTED):
            hint = f"; to run a subtask again: shepherd resume {sid} --retry SUBTASK" \
                if args.command == "retry" else ""
            raise UsageError(f"session {sid} is {row.status}, not running{hint}")
        if await store.lease_owner(sid) is None:
            raise UsageError(f"session {sid} has no live runner (shepherd resume {sid} starts one)")
        if args.subtask is not None:  # a command for a subtask the session does not have is no command
            subs = [s.id for s in await store.subtasks(sid)]
            if args.subtask not in subs:
                known = ", ".join(repr(s) for s in subs) or "none yet"
                raise UsageError(f"session {sid} has no subtask {args.subtask!r} (its subtasks: {known})")
        clean = bool(getattr(args, "clean", False))
        if clean:
            await require_worktree(store, sid)
        if clean:
            from shepherd.core.control import RemoteControl

            await RemoteControl(store, sid, source="cli").retry(args.subtask, clean=True)
        else:
            await store.enqueue_command(sid, args.command, subtask_id=args.subtask, source="cli")
    finally:
        await store.close()
    print(f"{args.command}{' (clean)' if clean else ''} sent to {sid}", file=sys.stderr)
    return EXIT_OK


async def cmd_answer(args: argparse.Namespace) -> int:
    """``shepherd approve|deny SESSION [CALL_ID]``: through the commands table, like pause."""
    from shepherd.core.store.derive import approval_detail
    from shepherd.core.text import safe

    store = await open_store(args)
    try:
        sid = await store.resolve_session(args.session)
        pending = await store.approvals(sid)
        if args.call_id is None:
            if not pending:
                raise UsageError(f"session {sid} has nothing waiting for approval")
            call = pending[0]
        else:
            every = await store.approvals(sid, pending=False)
            exact = [a for a in every if a.call_id == args.call_id]
            found = exact or [a for a in every if a.call_id.startswith(args.call_id)]
            if not found:
                raise UsageError(f"session {sid} has no call {safe(args.call_id)!r} waiting for approval"
                                 + ("" if pending else " (nothing is waiting)"))
            if len(found) > 1:
                raise UsageError(f"{safe(args.call_id)!r} matches several calls of {sid} "
                                 f"({', '.join(safe(a.call_id) for a in found[:5])}); type more of the id")
            call = found[0]
            if not call.pending:
                how = f"{call.decision} by {call.source}" if call.decision else "closed: it did not run"
                raise UsageError(f"call {safe(call.call_id)} of {sid} is not waiting for approval ({how})")
        if await store.lease_owner(sid) is None:
            raise UsageError(f"session {sid} has no live runner; shepherd resume {sid} asks again")
        if args.command == "approve":
            text = "session" if args.for_session else ""
        else:
            text = args.reason
        await store.enqueue_command(sid, args.command, text=text, source="cli", call_id=call.call_id)
    finally:
        await store.close()
    detail = approval_detail(call.tool, json.dumps(call.input))
    tool, _, rest = detail.partition(" ")
    scope = " for the rest of the session" if getattr(args, "for_session", False) else ""
    print(f"{args.command} sent to {sid}: {safe(tool)} {json.dumps(safe(rest), ensure_ascii=False)} "
          f"(call {safe(call.call_id)}){scope}", file=sys.stderr)
    return EXIT_OK


async def plan_resume(args: argparse.Namespace) -> tuple[str, bool]:
    """What ``shepherd resume`` does: (session id, whether a runner must be started here).
    With a live runner the commands go through the commands table and this returns
    (sid, False); otherwise every reason not to start one is one line (UsageError)."""
    from shepherd.core.task import task_from_stored

    store = await open_store(args)  # opening recovers sessions whose runner died
    try:
        sid = await store.resolve_session(args.session)
        row = await store.get_session(sid)
        subs = await store.subtasks(sid)
        if args.retry is not None and args.retry not in {s.id for s in subs}:
            known = ", ".join(repr(s.id) for s in subs) or "none"
            raise UsageError(f"session {sid} has no subtask {args.retry!r} (its subtasks: {known})")
        clean = bool(getattr(args, "clean", False))
        if clean:
            await require_worktree(store, sid)
        if await store.lease_owner(sid) is not None:
            await store.enqueue_command(sid, "resume", source="cli")
            sent = "resume"
            if args.retry:
                await store.enqueue_command(sid, "retry", subtask_id=args.retry, source="cli",
                                            text=CLEAN if clean else "")
                sent += f" and {'clean ' if clean else ''}retry {args.retry}"
            print(f"{sent} sent to {sid} (its runner is live)", file=sys.stderr)
            return sid, False
        if row.status in DONE_STATUSES and args.retry is None:
            redo = [s.id for s in subs if s.status not in (T.DONE, T.SKIPPED)]
            hint = f" (shepherd resume {sid} --retry {redo[0]} runs one again)" if redo else ""
            raise UsageError(f"session {sid} is {row.status}: nothing to resume{hint}")
        if row.status not in (*DONE_STATUSES, S.INTERRUPTED):
            raise UsageError(f"session {sid} is {row.status} but has no runner; try again in a moment")
        task = task_from_stored(row.task)
        if not task.workspace.is_dir():
            raise UsageError(f"session {sid}: its workspace {str(task.workspace)!r} no longer exists")
        checked_backend(task)  # credentials missing: one line here, not after the TUI opened
        check_task_sandbox(task)  # a confinement that cannot be had: one line, before anything runs
        return sid, True
    finally:
        await store.close()


async def require_worktree(store: EventStore, sid: str) -> None:
    """--clean restores a worktree's files: refused in one line for any other session."""
    row = await store.worktree(sid)
    if row is None:
        raise UsageError(f'--clean: session {sid} did not run in a worktree (isolation = "worktree"): '
                         "there are no checkpoints to restore; retry without --clean")
    if not row.active:
        raise UsageError(f"--clean: session {sid}'s worktree was {row.state}: there is nothing to restore")


async def resolve_live(args: argparse.Namespace) -> str:
    store = await open_store(args)  # checked like the TUI's own open, so damage is one line here
    try:
        if args.session:
            return await store.resolve_session(args.session)
        sid = await store.latest_session_id(status=S.RUNNING)
        if sid is None:
            raise UsageError("no running session to attach to (give a session id)")
        return sid
    finally:
        await store.close()
