"""A fake Anthropic Messages API on loopback, for driving the real Claude Code CLI offline.

Stdlib only. ``with FakeAnthropic(script=[...]) as api:`` serves ``POST /v1/messages``
on 127.0.0.1 at a random port (``api.base_url``), both streaming (SSE) and not.

Each request to the main loop takes the next turn of the script:

    {"text": "hi"}                                       a text reply (streamed as deltas)
    {"thinking": "hmm", "text": "hi"}                    a thinking block first
    {"tool_use": {"name": "Bash", "input": {...}}}       one tool call (a list: parallel calls)
    {"text": "let me look", "tool_use": {...}}           text then tool call(s)
    {"error": {"status": 429, "type": "rate_limit_error", "message": "...",
               "should_retry": False, "retry_after": 3}} an HTTP error
    {"sse_error": {"type": "overloaded_error", "message": "..."}, "text": "partial"}
                                                          an ``error`` event mid-stream
    {"drop": True, "text": "partial"}                    the connection closes mid-stream
    {"rule": fn}                                          fn(request_body) -> turn | None
    when(pred, turn) / reissue_on_reask(use) / answer_orphan()   rules built from a predicate
    {"hold": threading.Event(), ...}                     answer only once the event is set
    {"text": "I can't help with that.", "stop_reason": "refusal"}   any stop_reason

Any turn takes ``"times": N`` (default 1) or ``None`` (forever). A rule answers while
``fn`` returns a turn; when it returns None the request falls through to the rest of
the script. Rules default to ``times=None``. When nothing is left, the default reply is
``Echo: <last user text>`` or, after a tool call, ``Tool said: <tool_result text>``.

Errors carry ``x-should-retry: false`` unless ``should_retry`` is true, so the CLI
never hides an error in its own retry loop. Every request body is kept in
``api.requests``; ``api.main_requests()`` are the agent-loop ones (the ones with tools
or a system prompt, i.e. not the CLI's side queries).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Turn = dict[str, Any]

_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def block_text(block: dict[str, Any]) -> str:
    """The plain text of a text or tool_result block."""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return content
        return "".join(str(c.get("text", "")) for c in content or [] if isinstance(c, dict))
    return ""


def conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The user/assistant messages of a request (the CLI also sends a system entry)."""
    return [m for m in body.get("messages", []) if m.get("role") in ("user", "assistant")]


def user_texts(body: dict[str, Any]) -> list[str]:
    """Every user text in a request, <system-reminder> blocks removed, empty ones dropped."""
    out = []
    for m in conversation(body):
        if m["role"] != "user":
            continue
        for b in _blocks(m):
            if b.get("type") == "text":
                t = _REMINDER.sub("", str(b.get("text", ""))).strip()
                if t:
                    out.append(t)
    return out


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every tool_result block in a request, in order."""
    return [b for m in conversation(body) if m["role"] == "user" for b in _blocks(m)
            if b.get("type") == "tool_result"]


def tool_uses(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every tool_use block in a request, in order."""
    return [b for m in conversation(body) if m["role"] == "assistant" for b in _blocks(m)
            if b.get("type") == "tool_use"]


def turns(body: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The conversation as the API sees it: consecutive same-role messages merged."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for m in conversation(body):
        if out and out[-1][0] == m["role"]:
            out[-1][1].extend(_blocks(m))
        else:
            out.append((m["role"], list(_blocks(m))))
    return out


def dangling_tool_uses(body: dict[str, Any]) -> list[str]:
    """Ids of tool_use blocks the real API rejects: not answered by a tool_result at the
    head of the very next user turn (a missing result, or text placed before it)."""
    ts = turns(body)
    out: list[str] = []
    for i, (role, blocks) in enumerate(ts):
        if role != "assistant":
            continue
        ids = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
        if not ids:
            continue
        answered: set[Any] = set()
        if i + 1 < len(ts) and ts[i + 1][0] == "user":
            for b in ts[i + 1][1]:
                if b.get("type") != "tool_result":
                    break
                answered.add(b.get("tool_use_id"))
        out.extend(x for x in ids if x not in answered)
    return out


TOOL_CONCURRENCY_400 = {
    "status": 400,
    "type": "invalid_request_error",
    "message": "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
               "after: {ids}. Each `tool_use` block must have a corresponding `tool_result` block "
               "in the next message.",
}


def tool_concurrency_rule(body: dict[str, Any]) -> Turn | None:
    """A rule: the real API's 400 while the request holds a dangling tool_use."""
    ids = dangling_tool_uses(body)
    if not ids:
        return None
    err = dict(TOOL_CONCURRENCY_400)
    err["message"] = err["message"].format(i=max(0, len(turns(body)) - 2), ids=", ".join(ids))
    return {"error": err}


def last_user_text(body: dict[str, Any]) -> str:
    """The text blocks of the request's last message when it is a user one (reminders
    removed; tool_result blocks are not text), joined; "" otherwise."""
    msgs = conversation(body)
    if not msgs or msgs[-1].get("role") != "user":
        return ""
    return "\n".join(user_texts({"messages": [msgs[-1]]}))


def last_tool_result_text(body: dict[str, Any]) -> str:
    """The text of the tool_result blocks of the request's last message (user), joined."""
    msgs = conversation(body)
    if not msgs or msgs[-1].get("role") != "user":
        return ""
    return "\n".join(block_text(b) for b in _blocks(msgs[-1]) if b.get("type") == "tool_result")


def when(pred: Any, turn: Turn) -> Turn:
    """A rule turn: ``turn`` while ``pred(body)`` holds (else the script goes on)."""
    return {"rule": lambda body: dict(turn) if pred(body) else None}


# approvals: Shepherd's re-ask notice (prompts.approval_reask_notice) and what the CLI
# records when the runner died while it was asking (the orphaned CLI carries on alone)
REASK_NOTICE_MARK = "was waiting for a person's approval"
PERMISSION_STREAM_CLOSED = "Tool permission stream closed"


def reissue_on_reask(tool_use: dict[str, Any] | list[dict[str, Any]], text: str = "Asking again.") -> Turn:
    """A rule: the model issues ``tool_use`` again (a new id) when the last user text is
    Shepherd's re-ask notice."""
    return when(lambda body: REASK_NOTICE_MARK in last_user_text(body), {"text": text, "tool_use": tool_use})


def answer_orphan(text: str = "The permission request failed; stopping here.") -> Turn:
    """A rule: plain text when the last tool result is the orphaned CLI's
    "Tool permission stream closed" (so an orphan ends its turn without more tool calls)."""
    return when(lambda body: PERMISSION_STREAM_CLOSED in last_tool_result_text(body), {"text": text})


def default_reply(body: dict[str, Any]) -> Turn:
    msgs = conversation(body)
    last = msgs[-1] if msgs else {}
    results = [b for b in _blocks(last) if b.get("type") == "tool_result"] if last.get("role") == "user" else []
    if results:
        return {"text": "Tool said: " + "\n".join(block_text(b) for b in results)}
    texts = user_texts({"messages": [last]}) if last.get("role") == "user" else []
    return {"text": "Echo: " + (texts[-1] if texts else "")}


class _Entry:
    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.left: int | None = turn.get("times", None if "rule" in turn else 1)


class FakeAnthropic:
    def __init__(self, script: list[Turn] | None = None, *, model: str = "claude-fake-1",
                 chunk: int = 8, port: int = 0) -> None:
        self.model = model
        self.port = port
        self.chunk = chunk  # characters per text delta
        self._script = [_Entry(t) for t in (script or [])]
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []  # {path, headers, body, turn}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> "FakeAnthropic":
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for entry in self._script:
            hold = entry.turn.get("hold")
            if hold is not None:
                hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- script ----------------------------------------------------------------------

    def add(self, *turns: Turn) -> None:
        with self._lock:
            self._script.extend(_Entry(t) for t in turns)

    def main_requests(self) -> list[dict[str, Any]]:
        return [e["body"] for e in self.log if e["main"]]

    @staticmethod
    def is_main(body: dict[str, Any]) -> bool:
        return bool(body.get("tools")) or bool(body.get("system")) and body.get("max_tokens", 0) > 4096

    def next_turn(self, body: dict[str, Any]) -> Turn:
        with self._lock:
            for entry in self._script:
                if entry.left is not None and entry.left <= 0:
                    continue
                turn = entry.turn
                if "rule" in turn:
                    got = turn["rule"](body)
                    if got is None:
                        continue
                    turn = got
                if entry.left is not None:
                    entry.left -= 1
                return turn
        return default_reply(body)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-reply (an interrupted CLI) is not our problem


class _Handler(BaseHTTPRequestHandler):
    api: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- plumbing --------------------------------------------------------------------

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", self.api.new_id("req"))
        self.send_header("connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _sse(self, event: str, obj: dict[str, Any]) -> None:
        self._chunk(f"event: {event}\ndata: {json.dumps(obj)}\n\n".encode())

    def do_GET(self) -> None:  # noqa: N802
        self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad json"}})
            return
        path = self.path.split("?")[0]
        if path.endswith("/count_tokens"):
            self._send_json(200, {"input_tokens": 10})
            return
        if not path.endswith("/v1/messages"):
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
            return
        main = self.api.is_main(body)
        turn = self.api.next_turn(body) if main else {"text": "ok"}
        with self.api._lock:
            self.api.requests.append(body)
            self.api.log.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                 "main": main, "turn": {k: v for k, v in turn.items() if k != "rule"}})
        hold = turn.get("hold")
        if hold is not None:
            hold.wait(60)  # released by the test, or by stop()
        if "error" in turn:
            self._error(turn["error"])
            return
        if body.get("stream"):
            self._stream(body, turn)
        else:
            self._send_json(200, self._message(body, turn))

    # --- replies ---------------------------------------------------------------------

    def _error(self, err: dict[str, Any]) -> None:
        status = int(err.get("status", 500))
        headers = {"x-should-retry": "true" if err.get("should_retry") else "false"}
        if err.get("retry_after") is not None:
            headers["retry-after"] = str(err["retry_after"])
        self._send_json(status, {"type": "error", "error": {"type": err.get("type", "api_error"),
                                                              "message": err.get("message", "error")}},
                        headers)

    def _content(self, turn: Turn) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if turn.get("thinking"):
            blocks.append({"type": "thinking", "thinking": turn["thinking"], "signature": "sig-fake"})
        if turn.get("text"):
            blocks.append({"type": "text", "text": turn["text"]})
        uses = turn.get("tool_use") or []
        for use in uses if isinstance(uses, list) else [uses]:
            blocks.append({"type": "tool_use", "id": use.get("id") or self.api.new_id("toolu"),
                           "name": use["name"], "input": use.get("input", {})})
        return blocks

    def _usage(self, body: dict[str, Any], output: int) -> dict[str, int]:
        size = len(json.dumps(body.get("messages", [])))
        return {"input_tokens": max(1, size // 4), "output_tokens": output,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}

    def _message(self, body: dict[str, Any], turn: Turn) -> dict[str, Any]:
        content = self._content(turn)
        stop = turn.get("stop_reason") or ("tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn")
        return {"id": self.api.new_id("msg"), "type": "message", "role": "assistant",
                "model": body.get("model") or self.api.model, "content": content,
                "stop_reason": stop, "stop_sequence": None,
                "usage": self._usage(body, sum(len(json.dumps(b)) // 4 for b in content) or 1)}

    def _stream(self, body: dict[str, Any], turn: Turn) -> None:
        msg = self._message(body, turn)
        try:
            self._stream_reply(msg, turn)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client went away (an interrupt)

    def _stream_reply(self, msg: dict[str, Any], turn: Turn) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self.api.new_id("req"))
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        start = dict(msg, content=[], stop_reason=None, usage=dict(msg["usage"], output_tokens=1))
        self._sse("message_start", {"type": "message_start", "message": start})
        n = self.api.chunk
        broke = "sse_error" in turn or turn.get("drop")
        for i, block in enumerate(msg["content"]):
            if block["type"] == "text":
                self._sse("content_block_start", {"type": "content_block_start", "index": i,
                                                  "content_block": {"type": "text", "text": ""}})
                text = block["text"]
                if broke and turn.get("partial"):  # break halfway through the first text block
                    text = text[: max(1, len(text) // 2)]
                for j in range(0, len(text), n):
                    self._sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "text_delta", "text": text[j:j + n]}})
                if broke and turn.get("partial"):
                    break
            elif block["type"] == "thinking":
                self._sse("content_block_start", {"type": "content_block_start", "index": i,
                                                  "content_block": {"type": "thinking", "thinking": "",
                                                                    "signature": ""}})
                text = block["thinking"]
                for j in range(0, len(text), n):
                    self._sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "thinking_delta",
                                                                "thinking": text[j:j + n]}})
                self._sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                  "delta": {"type": "signature_delta",
                                                            "signature": block["signature"]}})
            else:
                self._sse("content_block_start", {"type": "content_block_start", "index": i,
                                                  "content_block": {"type": "tool_use", "id": block["id"],
                                                                    "name": block["name"], "input": {}}})
                self._sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                  "delta": {"type": "input_json_delta",
                                                            "partial_json": json.dumps(block["input"])}})
            self._sse("content_block_stop", {"type": "content_block_stop", "index": i})
        # a break (sse_error / drop) comes after the content blocks, before message_delta,
        # or halfway through the first text block with "partial": True
        if "sse_error" in turn:
            err = turn["sse_error"]
            self._sse("error", {"type": "error", "error": {"type": err.get("type", "overloaded_error"),
                                                            "message": err.get("message", "Overloaded")}})
            self._chunk(b"")
            return
        if turn.get("drop"):
            self.wfile.flush()
            self.connection.shutdown(2)  # abrupt: no terminating chunk
            return
        self._sse("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                                    "usage": {"output_tokens": msg["usage"]["output_tokens"]}})
        self._sse("message_stop", {"type": "message_stop"})
        self._chunk(b"")


def offline_cli_env(base_url: str, config_dir: str, tmp_dir: str | None = None,
                    api_key: str = "sk-ant-fake-key") -> dict[str, str]:
    """Environment for the real CLI against this fake (all offline)."""
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CONFIG_DIR": config_dir,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    if tmp_dir:
        env["CLAUDE_CODE_TMPDIR"] = tmp_dir
    return env


if __name__ == "__main__":  # a standalone fake for manual runs: python fake_anthropic.py --port 8765
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    api = FakeAnthropic(port=args.port)
    api.start()
    print(api.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()
