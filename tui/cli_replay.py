"""`shepherd replay SESSION [--speed 1|10|max] [--at SEQ]`: the TUI on a session in replay
mode (tui.screens.replay), playing from its start, or paused at event SEQ. The session and
the seq are checked first: an unknown one is one line and exit 2, before any screen."""

from __future__ import annotations

import argparse
from typing import Any

from shepherd.tui.cli_common import EXIT_OK, UsageError, check_at, db_target, event_seq, open_store

SPEED_CHOICES = ("1", "10", "max")


def add_parser(add: Any) -> None:
    p = add("replay", "replay a session as it happened (the TUI: play, pause, step, jump, scrub)")
    p.add_argument("session", help="session id or unique prefix")
    p.add_argument("--speed", choices=SPEED_CHOICES, default="1",
                   help="1 (real pace, long gaps cut to 5 s), 10 or max (default 1)")
    p.add_argument("--at", type=event_seq, default=None, metavar="SEQ", help="open paused at this event")


async def replay_plan(args: argparse.Namespace) -> tuple[str, float | None, int | None]:
    """(session id, speed, seq) once the session and the seq are known to exist."""
    from shepherd.tui.model.replay import SPEEDS

    store = await open_store(args, check=False)
    try:
        sid = await store.resolve_session(args.session)
        last = await store.last_seq(sid)
    finally:
        await store.close()
    if not last:
        raise UsageError(f"session {sid} has no events to replay")
    check_at("replay", args.at, sid, last)
    return sid, SPEEDS[args.speed], args.at


async def cmd_replay(args: argparse.Namespace) -> int:
    from shepherd.tui.cli_run import configure_logging, user_config

    plan = await replay_plan(args)
    config = user_config()
    from shepherd.tui.app import ShepherdApp

    configure_logging()
    app = ShepherdApp(db_target(args), replay=plan)
    app.user_config = config
    result = await app.run_async()
    return result if isinstance(result, int) else EXIT_OK


HANDLERS = {"replay": cmd_replay}
