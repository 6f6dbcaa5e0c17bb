"""`shepherd serve`: the real server (a subprocess on a free loopback port) behind its token,
and a real headless Chromium that opens the printed URL, sees the sessions list and opens
the help with `?`.

The browser is driven over the Chrome DevTools Protocol with aiohttp's websocket client
(aiohttp comes with textual-serve): no driver binary, no npm. The app draws on a canvas
(xterm.js), so the page has no text to read; what the browser received is read instead:
the websocket frames the app sent it (Network.webSocketFrameReceived), the terminal output
it draws.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") == "true":  # in CI a missing textual-serve fails (the test extra has it)
    import aiohttp
    import textual_serve  # noqa: F401
else:
    aiohttp = pytest.importorskip("aiohttp", reason="NO TEXTUAL-SERVE: pip install -e '.[test]'")
    pytest.importorskip("textual_serve", reason="NO TEXTUAL-SERVE: pip install -e '.[test]'")

from shepherd.core.events import SessionFinished, SessionStarted  # noqa: E402
from shepherd.core.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Zebra migration 42"


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def _fixture_db(path: Path) -> None:
    store = await Store.open(path, create=True)
    try:
        await store.append(SessionStarted(session_id="s-serve-1", title=TITLE, backend="scripted", workspace="/tmp"))
        await store.append(SessionFinished(session_id="s-serve-1", status="done"))
    finally:
        await store.close()


@pytest.fixture
def served(tmp_path: Path):
    db = tmp_path / "serve.db"
    asyncio.run(_fixture_db(db))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.tui.cli", "serve", "--port", "0", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline().strip()  # the URL, printed once
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{40,}", line), (line, proc.stderr.read())
        yield proc, line
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_token_guards_every_route(served: Any) -> None:
    proc, url = served
    base, token = url.split("/?token=")
    # unsafe: aiohttp's jar keeps no cookie of an IP address otherwise (a browser does)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for path in ("/", "/?token=", f"/?token={token[:-1]}x", "/static/js/textual.js", "/ws", "/download/x"):
            async with http.get(base + path) as r:
                assert r.status == 403, path
        for ws_url in (base + "/ws", base + f"/ws?token={token}0"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await http.ws_connect(ws_url)
            assert e.value.status == 403
        async with aiohttp.ClientSession(cookies={"shepherd_token": "nope"}) as other:
            async with other.get(base + "/static/js/textual.js") as r:
                assert r.status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await other.ws_connect(base + "/ws")
        assert _children(proc.pid) == []  # no app process for any of them

        async with http.get(url) as r:  # the right token: the page, and its cookie for the rest
            assert r.status == 200
            assert "textual.js" in await r.text()
        async with http.get(base + "/static/js/textual.js") as r:
            assert r.status == 200
        ws = await http.ws_connect(base + "/ws?width=80&height=24")
        try:
            msg = await asyncio.wait_for(ws.receive(), 20)  # the app started and draws
            assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT)
            kids = _children(proc.pid)
            assert kids, "no app process for the websocket"
            for pid in kids:  # the token is not handed to the app (environment or argv)
                for name in ("environ", "cmdline"):
                    assert token.encode() not in Path(f"/proc/{pid}/{name}").read_bytes()
                for grandchild in _children(pid):  # the shell's child: the app itself
                    assert token.encode() not in Path(f"/proc/{grandchild}/environ").read_bytes()
        finally:
            await ws.close()


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-m", "shepherd.tui.cli", "serve", "--port", str(port),
                            "--db", str(tmp_path / "x.db")], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2
    assert r.stdout == ""  # no URL, no token
    assert len(r.stderr.strip().splitlines()) == 1 and f"127.0.0.1:{port}" in r.stderr


def test_loopback_names() -> None:
    from shepherd.tui.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_an_explicit_other_host_warns_in_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.tui.cli", "serve", "--host", "0.0.0.0", "--port", "0",
                             "--db", str(tmp_path / "x.db")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        url = proc.stdout.readline()
        warning = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert url.startswith("http://0.0.0.0:") and "?token=" in url
    assert warning.startswith("shepherd: warning: serving on 0.0.0.0") and "controls the agents" in warning
    assert url.split("?token=")[1].strip() not in warning


def test_serve_bad_input_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for extra in (["--port", "70000"], ["--host", " "]):
        r = subprocess.run([sys.executable, "-m", "shepherd.tui.cli", "serve", *extra], capture_output=True,
                           text=True, env=env, timeout=30)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", (extra, r.stderr)


# ---------------------------------------------------------------- the browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class _Cdp:
    """The few DevTools calls this test needs, over one page's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id, self.frames = ws, 0, bytearray()
        self.replies: dict[int, asyncio.Future] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.replies:
                self.replies.pop(data["id"]).set_result(data)
            elif data.get("method") == "Network.webSocketFrameReceived":
                resp = data["params"]["response"]
                payload = resp["payloadData"]
                self.frames += base64.b64decode(payload) if resp["opcode"] == 2 else payload.encode()

    async def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.replies[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        return await asyncio.wait_for(fut, 15)

    def text(self) -> str:  # the terminal output without its escape sequences
        plain = re.sub(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]", b"", self.frames)
        return plain.decode("utf-8", "replace")

    async def until(self, needle: str, timeout: float = 20) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while needle not in self.text():
            assert loop.time() < end, f"{needle!r} never reached the browser; it got: {self.text()[-600:]!r}"
            await asyncio.sleep(0.05)


async def test_headless_chromium_sees_the_list_and_a_key_works(served: Any, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs it): the browser test must run in CI")
        pytest.skip("NO CHROMIUM: the browser test of `shepherd serve` did not run (apt-get install chromium)")
    _, url = served
    browser = await asyncio.create_subprocess_exec(
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
        f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1200,800", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        devtools = None
        while devtools is None:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
            line = await asyncio.wait_for(browser.stderr.readline(), 20)
            assert line, "chromium exited before DevTools listened"
            if m := re.search(rb"DevTools listening on ws://([\d.]+:\d+)/", line):
                devtools = m.group(1).decode()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{devtools}/json/list") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _Cdp(ws)
                await cdp.call("Network.enable")
                await cdp.call("Page.enable")
                await cdp.call("Page.navigate", url=url)
                await cdp.until(TITLE)  # the sessions list, drawn in the browser
                seen = await cdp.call("Runtime.evaluate", expression="document.cookie")
                assert "shepherd_token" not in seen["result"]["result"].get("value", "")  # HttpOnly: no script reads it
                # a click on the terminal focuses it; then `?`, as a person types it
                await cdp.call("Input.dispatchMouseEvent", type="mousePressed", x=600, y=400, button="left", clickCount=1)
                await cdp.call("Input.dispatchMouseEvent", type="mouseReleased", x=600, y=400, button="left", clickCount=1)
                before = len(cdp.frames)
                help_text = "Clear filter"  # a row of the help screen's key table (near its top)
                assert help_text not in cdp.text()
                await cdp.call("Input.dispatchKeyEvent", type="keyDown", key="?", code="Slash", text="?",
                               windowsVirtualKeyCode=191, modifiers=8)
                await cdp.call("Input.dispatchKeyEvent", type="keyUp", key="?", code="Slash", windowsVirtualKeyCode=191, modifiers=8)
                await cdp.until(help_text)
                assert len(cdp.frames) > before
                cdp.reader.cancel()
    finally:
        if browser.returncode is None:
            browser.terminate()
            await browser.wait()
