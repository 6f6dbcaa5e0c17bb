"""A loopback fake of the OpenAI HTTP API (stdlib only) for driving the real openai client
and the real openai-agents SDK offline.

    with FakeOpenAI(script=[{"tools": [{"name": "read_file", "args": {"path": "a"}}]},
                            {"text": "done"}]) as api:
        client = AsyncOpenAI(base_url=api.base_url, api_key="sk-fake", max_retries=0)
        ...
        api.requests  # [{"method", "path", "body"}] in arrival order

Serves POST /v1/chat/completions and /v1/responses, streaming (SSE) and not. Each model
request consumes one turn of the script:

    {"text": "..."}                                 an assistant message
    {"tools": [{"name": ..., "args": {...}}, ...]}  parallel function calls (may add "text")
    {"error": {"status": 429, "message": ..., "headers": {...}, "code": ..., "type": ...}}
    {"text": ..., "sse_error_after": N}             N text deltas, then an error payload in the stream
    {"text": ..., "drop_after": N}                  N text deltas, then the TCP connection is cut
    "times": N                                      the turn repeats N times
    "delay_ms": N                                   real pause between streamed events

When the script runs out the reply is "Echo: <last user text>". ``stream_options.include_usage``
is honoured for chat completions; responses always carry usage.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"


def _words(text: str) -> list[str]:
    out: list[str] = []
    for i, w in enumerate(text.split(" ")):
        out.append(w if i == 0 else " " + w)
    return [w for w in out if w] or ([text] if text else [])


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")
        )
    return ""


def last_user_text(path: str, body: dict[str, Any]) -> str:
    if path == CHAT_PATH:
        items = body.get("messages") or []
    else:
        items = body.get("input")
        if isinstance(items, str):
            return items
        items = items or []
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (drop tests, pooled connections at exit) are normal here."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Drop(Exception):
    """Cut the connection now."""


class FakeOpenAI:
    def __init__(self, script: list[dict[str, Any]] | None = None) -> None:
        self._turns: list[dict[str, Any]] = []
        for turn in script or []:
            self._turns.extend([turn] * int(turn.get("times", 1)))
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            api = fake

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # idle keep-alive connections must not block close
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- script ---------------------------------------------------------------------------
    def add(self, *turns: dict[str, Any]) -> None:
        with self._lock:
            for turn in turns:
                self._turns.extend([turn] * int(turn.get("times", 1)))

    def _take(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append({"method": "POST", "path": path, "body": body})
            if self._turns:
                return self._turns.pop(0)
        return {"text": f"Echo: {last_user_text(path, body)}"}

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._turns)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"


def _usage_numbers(body: dict[str, Any], turn: dict[str, Any]) -> tuple[int, int]:
    prompt = max(1, len(json.dumps(body)) // 4)
    completion = max(1, (len(turn.get("text") or "") + len(json.dumps(turn.get("tools") or []))) // 4)
    return prompt, completion


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep tests quiet
        pass

    # --- plumbing ----------------------------------------------------------------------------
    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Cut the TCP connection in the middle of the body."""
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return
        path = self.path.split("?")[0].rstrip("/")
        if path not in (CHAT_PATH, RESPONSES_PATH):
            self._json(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
            return
        turn = self.api._take(path, body)
        if "error" in turn:
            err = turn["error"]
            status = int(err.get("status", 500))
            payload = {"error": {"message": err.get("message", f"fake error {status}"),
                                 "type": err.get("type", "invalid_request_error" if status < 500 else "server_error"),
                                 "param": None, "code": err.get("code")}}
            self._json(status, payload, err.get("headers"))
            return
        stream = bool(body.get("stream"))
        try:
            if path == CHAT_PATH:
                self._chat_stream(body, turn) if stream else self._chat_plain(body, turn)
            else:
                self._responses_stream(body, turn) if stream else self._responses_plain(body, turn)
        except _Drop:
            self._drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _pause(self, turn: dict[str, Any]) -> None:
        if turn.get("delay_ms"):
            time.sleep(turn["delay_ms"] / 1000)

    def _tool_calls(self, turn: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(self.api.next_id("call"), t["name"], json.dumps(t.get("args", {})))
                for t in turn.get("tools") or []]

    def _cut_points(self, turn: dict[str, Any]) -> tuple[int | None, int | None]:
        return turn.get("sse_error_after"), turn.get("drop_after")

    # --- chat completions ------------------------------------------------------------------------
    def _chat_plain(self, body: dict[str, Any], turn: dict[str, Any]) -> None:
        calls = self._tool_calls(turn)
        message: dict[str, Any] = {"role": "assistant", "content": turn.get("text")}
        if calls:
            message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                                     for cid, n, a in calls]
        p, c = _usage_numbers(body, turn)
        self._json(200, {
            "id": self.api.next_id("chatcmpl"), "object": "chat.completion", "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        })

    def _chat_stream(self, body: dict[str, Any], turn: dict[str, Any]) -> None:
        cid = self.api.next_id("chatcmpl")
        model = body.get("model", "fake")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return "data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }) + "\n\n"

        error_after, drop_after = self._cut_points(turn)
        self._start_sse()
        self._chunk(chunk({"role": "assistant", "content": ""}))
        text = turn.get("text") or ("" if error_after is None and drop_after is None else "partial answer before the failure")
        for n, word in enumerate(_words(text), 1):
            self._pause(turn)
            self._chunk(chunk({"content": word}))
            if error_after is not None and n >= error_after:
                break
            if drop_after is not None and n >= drop_after:
                break
        if error_after is not None:
            self._pause(turn)
            self._chunk("data: " + json.dumps({"error": {"message": "fake mid-stream failure", "type": "server_error",
                                                         "code": "server_error"}}) + "\n\n")
            self._end_chunks()
            return
        if drop_after is not None:
            self._pause(turn)
            raise _Drop
        calls = self._tool_calls(turn)
        for i, (call_id, name, args) in enumerate(calls):
            self._pause(turn)
            self._chunk(chunk({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                               "function": {"name": name, "arguments": ""}}]}))
            self._chunk(chunk({"tool_calls": [{"index": i, "function": {"arguments": args}}]}))
        self._chunk(chunk({}, "tool_calls" if calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            p, c = _usage_numbers(body, turn)
            self._chunk("data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
            }) + "\n\n")
        self._chunk("data: [DONE]\n\n")
        self._end_chunks()

    # --- responses ----------------------------------------------------------------------------------
    def _response_obj(self, rid: str, body: dict[str, Any], status: str, output: list[Any],
                      usage: dict[str, Any] | None) -> dict[str, Any]:
        return {"id": rid, "object": "response", "created_at": 0, "model": body.get("model", "fake"),
                "status": status, "output": output, "usage": usage, "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": [], "top_p": None, "error": None, "incomplete_details": None,
                "instructions": None, "metadata": {}, "temperature": None}

    def _responses_usage(self, body: dict[str, Any], turn: dict[str, Any]) -> dict[str, Any]:
        p, c = _usage_numbers(body, turn)
        return {"input_tokens": p, "output_tokens": c, "total_tokens": p + c,
                "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}

    def _output_items(self, turn: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        msg = None
        if turn.get("text"):
            msg = {"id": self.api.next_id("msg"), "type": "message", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": turn["text"], "annotations": []}]}
        calls = [{"id": self.api.next_id("fc"), "type": "function_call", "call_id": cid, "name": n,
                  "arguments": a, "status": "completed"} for cid, n, a in self._tool_calls(turn)]
        return msg, calls

    def _responses_plain(self, body: dict[str, Any], turn: dict[str, Any]) -> None:
        msg, calls = self._output_items(turn)
        output = ([msg] if msg else []) + calls
        self._json(200, self._response_obj(self.api.next_id("resp"), body, "completed", output,
                                           self._responses_usage(body, turn)))

    def _responses_stream(self, body: dict[str, Any], turn: dict[str, Any]) -> None:
        rid = self.api.next_id("resp")
        seq = itertools.count()

        def event(obj: dict[str, Any]) -> str:
            obj["sequence_number"] = next(seq)
            return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n"

        error_after, drop_after = self._cut_points(turn)
        if (error_after is not None or drop_after is not None) and not turn.get("text"):
            turn = {**turn, "text": "partial answer before the failure"}
        msg, calls = self._output_items(turn)
        self._start_sse()
        self._chunk(event({"type": "response.created", "response": self._response_obj(rid, body, "in_progress", [], None)}))
        self._chunk(event({"type": "response.in_progress", "response": self._response_obj(rid, body, "in_progress", [], None)}))
        output: list[Any] = []
        if msg is not None:
            oi = len(output)
            self._chunk(event({"type": "response.output_item.added", "output_index": oi,
                               "item": {**msg, "status": "in_progress", "content": []}}))
            self._chunk(event({"type": "response.content_part.added", "item_id": msg["id"], "output_index": oi,
                               "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}))
            for n, word in enumerate(_words(turn["text"]), 1):
                self._pause(turn)
                self._chunk(event({"type": "response.output_text.delta", "item_id": msg["id"], "output_index": oi,
                                   "content_index": 0, "delta": word, "logprobs": []}))
                if error_after is not None and n >= error_after:
                    self._pause(turn)
                    self._chunk(event({"type": "error", "code": "server_error", "message": "fake mid-stream failure",
                                       "param": None}))
                    self._end_chunks()
                    return
                if drop_after is not None and n >= drop_after:
                    self._pause(turn)
                    raise _Drop
            self._chunk(event({"type": "response.output_text.done", "item_id": msg["id"], "output_index": oi,
                               "content_index": 0, "text": turn["text"], "logprobs": []}))
            self._chunk(event({"type": "response.content_part.done", "item_id": msg["id"], "output_index": oi,
                               "content_index": 0, "part": msg["content"][0]}))
            self._chunk(event({"type": "response.output_item.done", "output_index": oi, "item": msg}))
            output.append(msg)
        for call in calls:
            oi = len(output)
            self._pause(turn)
            self._chunk(event({"type": "response.output_item.added", "output_index": oi,
                               "item": {**call, "arguments": "", "status": "in_progress"}}))
            self._chunk(event({"type": "response.function_call_arguments.delta", "item_id": call["id"],
                               "output_index": oi, "delta": call["arguments"]}))
            self._chunk(event({"type": "response.function_call_arguments.done", "item_id": call["id"],
                               "output_index": oi, "arguments": call["arguments"], "name": call["name"]}))
            self._chunk(event({"type": "response.output_item.done", "output_index": oi, "item": call}))
            output.append(call)
        self._chunk(event({"type": "response.completed",
                           "response": self._response_obj(rid, body, "completed", output,
                                                          self._responses_usage(body, turn))}))
        self._end_chunks()


def iter_request_texts(api: FakeOpenAI) -> Iterator[tuple[str, str]]:
    """(path, last user text) per recorded request."""
    for r in api.requests:
        yield r["path"], last_user_text(r["path"], r["body"])


__all__ = ["FakeOpenAI", "CHAT_PATH", "RESPONSES_PATH", "last_user_text", "iter_request_texts"]
