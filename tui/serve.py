"""`shepherd serve`: the sessions list in a browser (textual-serve) behind a random token.

textual-serve starts one app process per websocket connection (the browser's page opens
one), each with the driver set to Textual's web driver. Whoever reaches the websocket
controls the agents, so every route checks the token first: a request without it gets
403 and starts nothing. The token is given once, as the URL's ``?token=``; the page then
carries it as a cookie (HttpOnly, SameSite=Strict: its assets and its websocket are
fetched by the page's own script, which cannot add a query to them; and a page of another
site cannot send it). The token is never logged, stored, or given to the app process.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import shlex
import sys
from typing import Any

from aiohttp import web
from textual_serve.server import Server

COOKIE = "shepherd_token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost: it may resolve anywhere


def app_command(db: str | None) -> str:
    """The command textual-serve runs (through a shell) per connection: this Python, this
    shepherd, the sessions list on the same database."""
    argv = [sys.executable, "-m", "shepherd.tui.cli"]
    if db is not None:
        argv += ["--db", db]
    return shlex.join(argv)


def url_base(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def token_ok(given: str | None, token: str) -> bool:
    # constant time: the comparison does not tell how much of a guess was right
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


class TokenServer(Server):
    """textual-serve's Server with the token in front of every route."""

    def __init__(self, command: str, *, host: str, port: int, token: str) -> None:
        super().__init__(command, host=host, port=port, title="shepherd", public_url=url_base(host, port))
        self._token = token

    def bound(self, port: int) -> None:
        """The port the socket got (--port 0: a free one): the page's websocket URL uses it."""
        self.port, self.public_url = port, url_base(self.host, port)

    def initialize_logging(self) -> None:
        pass  # no root logging set-up of its own (the access log, which prints URLs, is off: cli_serve)

    async def on_startup(self, app: web.Application) -> None:
        pass  # the command prints the one URL itself (textual-serve's banner has no token)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._check_token)
        return app

    @web.middleware
    async def _check_token(self, request: web.Request, handler: Any) -> web.StreamResponse:
        query = request.query.get("token")
        if not (token_ok(query, self._token) or token_ok(request.cookies.get(COOKIE), self._token)):
            return web.Response(status=403, text="403: open the URL `shepherd serve` printed (with its token)\n")
        response = await handler(request)
        if query is not None and isinstance(response, web.Response):
            response.set_cookie(COOKIE, self._token, httponly=True, samesite="Strict", path="/")
        return response


def new_token() -> str:
    return secrets.token_urlsafe(32)
