"""`shepherd serve`: parse-side checks, bind, print the URL once, serve until Ctrl+C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from shepherd.tui.cli_common import EXIT_OK, UsageError, err

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420


def add_parser(add) -> None:  # noqa: ANN001 - tui.cli's add(name, help) helper
    p = add("serve", "serve the sessions list in a browser (textual-serve), behind a random token")
    p.add_argument("--host", default=None,
                   help=f"address to listen on (default {DEFAULT_HOST}; anything else must be asked for)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from shepherd.tui.serve import TokenServer, app_command, is_loopback, new_token
    except ImportError:
        raise UsageError("shepherd serve needs textual-serve: pip install 'shepherd-agents[serve]'") from None
    host = args.host if args.host is not None else DEFAULT_HOST
    if not host.strip():
        raise UsageError("--host: the address is empty")
    if not is_loopback(host):  # only reached with an explicit --host
        err(f"warning: serving on {host}: anyone who can reach it with the token controls the agents")
    if args.db is not None and not args.db.strip():
        raise UsageError("--db: the path is empty")
    token = new_token()
    server = TokenServer(app_command(args.db), host=host, port=args.port, token=token)
    return asyncio.run(_serve(server, token))


async def _serve(server, token: str) -> int:  # noqa: ANN001 - a TokenServer
    from aiohttp import web

    runner = web.AppRunner(await server._make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, server.host, server.port)
    try:
        await site.start()
    except OSError as e:  # in use, not ours to bind, no such address
        await runner.cleanup()
        reason = e.strerror or str(e)
        raise UsageError(f"cannot listen on {server.host}:{server.port}: {reason}") from None
    port = runner.addresses[0][1]  # the real one when --port 0
    server.bound(port)
    # The one time the token is shown: stdout, not a log
    print(f"{server.public_url}/?token={token}", flush=True)
    print("shepherd serve: open that URL in a browser; Ctrl+C stops", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return EXIT_OK
