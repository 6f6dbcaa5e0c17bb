"""classify(): real SDK exceptions and error results, built the way the SDKs build them."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
from collections.abc import Callable

import httpx2  # openai 3.x builds its requests/responses with the httpx2 fork
import openai
import pytest
from agents import exceptions as agents_exc
from claude_agent_sdk import (
    AssistantMessage,
    CLIConnectionError,
    CLIJSONDecodeError,
    CLINotFoundError,
    ProcessError,
    ResultError,
    ResultMessage,
)
from claude_agent_sdk._internal.message_parser import parse_message
from claude_agent_sdk._internal.query import _error_result_text

from shepherd.core.backends.base import BackendUnavailable
from shepherd.core.errors import (
    KINDS,
    RETRYABLE_KINDS,
    AttemptFailed,
    CheckFailed,
    ErrorInfo,
    StreamBroken,
    classify,
    parse_retry_after,
    scrub,
)
from shepherd.core.events import Error
from shepherd.core.retry import DEFAULT_POLICIES

URL = "http://127.0.0.1:9/v1/chat/completions"
_client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", max_retries=0)


def api_status(status: int, message: str, *, headers: dict[str, str] | None = None,
               code: str | None = None, type_: str = "invalid_request_error") -> openai.APIStatusError:
    """The exception the openai client raises for an HTTP error response (its own factory)."""
    body = {"error": {"message": message, "type": type_, "code": code, "param": None}}
    response = httpx2.Response(status, request=httpx2.Request("POST", URL), headers=headers or {},
                               json=body)
    return _client._make_status_error_from_response(response)


def request() -> httpx2.Request:
    return httpx2.Request("POST", URL)


def result_frame(**kw: object) -> dict:
    frame = {"type": "result", "subtype": "success", "duration_ms": 10, "duration_api_ms": 5,
             "is_error": True, "num_turns": 1, "session_id": "sess", "terminal_reason": "api_error"}
    frame.update(kw)
    return frame


def result_msg(**kw: object) -> ResultMessage:
    msg = parse_message(result_frame(**kw))
    assert isinstance(msg, ResultMessage)
    return msg


def result_error(**kw: object) -> ResultError:
    """As claude_agent_sdk's query reader builds it: the CLI's error result, then exit 1."""
    frame = result_frame(**kw)
    err = ResultError(f"Claude Code returned an error result: {_error_result_text(frame)}",
                      data=frame, exit_code=1)
    err.__cause__ = ProcessError("Command failed with exit code 1", exit_code=1,
                                 stderr="Check stderr output for details")
    return err


def assistant_error(error: str, text: str = "") -> AssistantMessage:
    msg = parse_message({
        "type": "assistant", "error": error, "session_id": "sess",
        "message": {"id": "msg_1", "model": "<synthetic>", "role": "assistant",
                    "content": [{"type": "text", "text": text}] if text else []},
    })
    assert isinstance(msg, AssistantMessage)
    return msg


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as e:
        return e


CONCURRENCY_TEXT = "API Error: 400 due to tool use concurrency issues."
DANGLING_TEXT = ("messages.3: `tool_use` ids were found without `tool_result` blocks immediately after: "
                 "toolu_01AbC. Each `tool_use` block must have a corresponding `tool_result` block in the "
                 "next message.")

# (id, factory, kind, status_code)
CASES: list[tuple[str, Callable[[], object], str, int | None]] = [
    # tool_concurrency
    ("openai-400-concurrency", lambda: api_status(400, CONCURRENCY_TEXT), "tool_concurrency", 400),
    ("openai-400-dangling-tool-use", lambda: api_status(400, DANGLING_TEXT), "tool_concurrency", 400),
    ("openai-400-ids-unique", lambda: api_status(400, "messages.1.content.2: `tool_use` ids must be unique"),
     "tool_concurrency", 400),
    ("openai-400-too-many-tools", lambda: api_status(400, "Too many tools were used concurrently"),
     "tool_concurrency", 400),
    ("claude-result-concurrency", lambda: AttemptFailed(result_msg(api_error_status=400, result=CONCURRENCY_TEXT)),
     "tool_concurrency", 400),
    ("claude-resulterror-concurrency", lambda: result_error(api_error_status=400, result=CONCURRENCY_TEXT),
     "tool_concurrency", 400),
    ("claude-assistant-unknown-400", lambda: AttemptFailed(assistant_error("unknown", CONCURRENCY_TEXT)),
     "tool_concurrency", 400),
    ("claude-assistant+result", lambda: AttemptFailed(
        (assistant_error("invalid_request", CONCURRENCY_TEXT), result_msg(api_error_status=400, result=CONCURRENCY_TEXT))),
     "tool_concurrency", 400),
    ("text-no-status-strong-phrase", lambda: RuntimeError("Claude: tool use concurrency issues"),
     "tool_concurrency", None),
    # near misses of tool_concurrency
    ("openai-400-tool-not-concurrency", lambda: api_status(
        400, "tools.0.function.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"), "invalid_request", 400),
    ("openai-400-tool-choice", lambda: api_status(400, "Invalid value for 'tool_choice': tool 'x' not found"),
     "invalid_request", 400),
    ("weak-phrase-needs-400", lambda: RuntimeError("too many tools"), "unknown", None),
    ("openai-500-mentions-concurrency", lambda: api_status(500, "tool use concurrency", type_="server_error"),
     "transient", 500),
    # rate_limit
    ("openai-429", lambda: api_status(429, "Rate limit reached for gpt-x", type_="rate_limit_error"),
     "rate_limit", 429),
    ("claude-assistant-rate-limit", lambda: AttemptFailed(assistant_error("rate_limit")), "rate_limit", None),
    ("claude-resulterror-429", lambda: result_error(api_error_status=429, result="API Error: 429 rate_limit_error"),
     "rate_limit", 429),
    ("usage-limit-text", lambda: RuntimeError("Claude AI usage limit reached|1760000000"), "rate_limit", None),
    ("not-rate-limit-prose", lambda: RuntimeError("found 0 errors; rate of 429 items"), "unknown", None),
    ("openai-429-insufficient-quota", lambda: api_status(
        429, "You exceeded your current quota, please check your plan and billing details.",
        code="insufficient_quota", type_="insufficient_quota"), "auth", 429),
    # auth
    ("openai-401", lambda: api_status(401, "Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwxyz0123",
                                      code="invalid_api_key"), "auth", 401),
    ("openai-403", lambda: api_status(403, "Project does not have access to model x", type_="permission_error"),
     "auth", 403),
    ("claude-assistant-auth", lambda: AttemptFailed(
        assistant_error("authentication_failed", "Invalid API key · Fix external API key")), "auth", None),
    ("claude-not-logged-in", lambda: AttemptFailed(result_msg(result="Not logged in · Please run /login")),
     "auth", None),
    ("claude-billing", lambda: AttemptFailed(assistant_error("billing_error", "Credit balance is too low")),
     "auth", None),
    ("backend-unavailable-creds", lambda: BackendUnavailable("missing credentials: set OPENAI_API_KEY"), "auth", None),
    # context_overflow
    ("openai-context-length", lambda: api_status(
        400, "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens.",
        code="context_length_exceeded"), "context_overflow", 400),
    ("claude-prompt-too-long", lambda: result_error(
        api_error_status=400, result="API Error: 400 prompt is too long: 210000 tokens > 200000 maximum"),
     "context_overflow", 400),
    ("http-413", lambda: api_status(413, "Request exceeds the maximum size", type_="request_too_large"),
     "context_overflow", 413),
    # content_policy
    ("agents-refusal", lambda: agents_exc.ModelRefusalError("I can't help with that."), "content_policy", None),
    ("openai-content-policy", lambda: api_status(
        400, "Your request was rejected as a result of our safety system.", code="content_policy_violation"),
     "content_policy", 400),
    ("openai-content-filter-finish", lambda: openai.ContentFilterFinishReasonError(), "content_policy", None),
    # images_rejected
    ("openai-image-url-unsupported", lambda: api_status(
        400, "Invalid content type. image_url is only supported by certain models."), "images_rejected", 400),
    ("anthropic-image-too-large", lambda: api_status(
        400, "messages.0.content.1.image.source.base64: image exceeds 5 MB maximum"), "images_rejected", 400),
    ("could-not-process-image", lambda: api_status(400, "Could not process image"), "images_rejected", 400),
    # transient
    ("openai-500", lambda: api_status(500, "The server had an error", type_="server_error"), "transient", 500),
    ("openai-529-overloaded", lambda: api_status(529, "Overloaded", type_="overloaded_error"), "transient", 529),
    ("openai-503", lambda: api_status(503, "Service unavailable", type_="server_error"), "transient", 503),
    ("openai-connection", lambda: chained(openai.APIConnectionError(request=request()),
                                          httpx2.RemoteProtocolError("peer closed connection")),
     "transient", None),
    ("openai-timeout", lambda: openai.APITimeoutError(request=request()), "transient", None),
    ("agents-model-timeout", lambda: agents_exc.ModelTimeoutError(0.5), "transient", None),
    ("httpx2-read-timeout", lambda: httpx2.ReadTimeout("timed out"), "transient", None),
    ("connection-reset", lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "transient", None),
    ("connection-refused", lambda: ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "transient", None),
    ("timeout-error", lambda: TimeoutError(), "transient", None),
    ("oserror-unreachable", lambda: OSError(errno.ENETUNREACH, "Network is unreachable"), "transient", None),
    ("dns", lambda: socket.gaierror(-2, "Name or service not known"), "transient", None),
    ("claude-server-error", lambda: AttemptFailed(assistant_error("server_error", "API Error: 500 Internal")),
     "transient", 500),
    ("claude-connection-refused", lambda: result_error(
        result="API Error: Connection refused (ECONNREFUSED)"), "transient", None),
    ("claude-529", lambda: result_error(api_error_status=529, result="API Error: 529 overloaded_error"),
     "transient", 529),
    ("file-not-found-is-not-network", lambda: FileNotFoundError(2, "No such file"), "unknown", None),
    # stream_broken
    ("agents-no-final-response", lambda: agents_exc.ModelBehaviorError("Model did not produce a final response!"),
     "stream_broken", None),
    ("agents-unknown-tool", lambda: agents_exc.ModelBehaviorError("Tool no_such_tool not found in agent e"),
     "stream_broken", None),
    ("agents-bad-json-quotes-model-output", lambda: agents_exc.ModelBehaviorError(
        'Invalid JSON when parsing {"q": "rate limit 401 invalid api key"} for TypeAdapter'), "stream_broken", None),
    ("agents-terminal-error-event-rate-limit", lambda: agents_exc.ModelBehaviorError(
        "Responses stream ended with terminal event `error`. code=rate_limit_exceeded; message=Rate limit reached."),
     "rate_limit", None),
    ("agents-terminal-error-event-plain", lambda: agents_exc.ModelBehaviorError(
        "Responses stream ended with terminal event `error`. message=fake mid-stream failure."),
     "stream_broken", None),
    ("openai-sse-error-mid-stream", lambda: openai.APIError(
        "fake mid-stream failure", request(), body={"message": "fake mid-stream failure"}), "stream_broken", None),
    ("stream-broken", lambda: StreamBroken(), "stream_broken", None),
    ("claude-cli-died", lambda: CLIConnectionError("Cannot write to terminated process (exit code: 1)"),
     "stream_broken", None),
    ("claude-json-decode", lambda: CLIJSONDecodeError("{bad", ValueError("x")), "stream_broken", None),
    # invalid_request
    ("openai-400-other", lambda: api_status(400, "messages: text content blocks must be non-empty"),
     "invalid_request", 400),
    ("openai-404", lambda: api_status(404, "The model `nope` does not exist", code="model_not_found"),
     "invalid_request", 404),
    ("openai-422", lambda: api_status(422, "Unprocessable"), "invalid_request", 422),
    ("claude-400-other", lambda: result_error(
        api_error_status=400, result='API Error: 400 {"type":"invalid_request_error","message":"bad field"}'),
     "invalid_request", 400),
    ("agents-user-error", lambda: agents_exc.UserError("Tool x has an invalid schema"), "invalid_request", None),
    ("claude-cli-not-found", lambda: CLINotFoundError("Claude Code not found", "/nope/claude"),
     "invalid_request", None),
    ("claude-bad-cwd", lambda: CLIConnectionError("Working directory does not exist: /nope"),
     "invalid_request", None),
    ("backend-unavailable", lambda: BackendUnavailable("claude CLI not found on PATH"), "invalid_request", None),
    # max_turns
    ("agents-max-turns", lambda: agents_exc.MaxTurnsExceeded("Max turns (10) exceeded"), "max_turns", None),
    ("claude-max-turns-result", lambda: AttemptFailed(result_msg(
        subtype="error_max_turns", terminal_reason="max_turns", errors=["Reached maximum number of turns (1)"])),
     "max_turns", None),
    ("claude-max-turns-resulterror", lambda: result_error(subtype="error_max_turns", terminal_reason="max_turns"),
     "max_turns", None),
    # cancelled
    ("cancelled", lambda: asyncio.CancelledError(), "cancelled", None),
    ("keyboard-interrupt", lambda: KeyboardInterrupt(), "cancelled", None),
    ("claude-interrupted", lambda: AttemptFailed(result_msg(
        subtype="error_during_execution", terminal_reason="aborted_streaming")), "cancelled", None),
    # check_failed
    ("check-failed", lambda: CheckFailed("pytest -q", "FAILED tests/test_x.py::test_a - assert 1 == 2", 1),
     "check_failed", None),
    # unknown
    ("runtime-error", lambda: RuntimeError("boom"), "unknown", None),
    ("claude-process-error", lambda: ProcessError("Command failed with exit code 1", exit_code=1,
                                                  stderr="Check stderr output for details"), "unknown", None),
    ("agents-tool-timeout", lambda: agents_exc.ToolTimeoutError("slow_tool", 0.1), "unknown", None),
    ("claude-ok-result-text-ignored", lambda: AttemptFailed(result_msg(
        is_error=False, terminal_reason="completed", result="found 0 errors; rate of 429 items; API Error: 400")),
     "unknown", None),
    # chains and groups
    ("chain-runtime-from-reset", lambda: chained(RuntimeError("model call failed"), ConnectionResetError("reset")),
     "transient", None),
    ("group-with-rate-limit", lambda: ExceptionGroup("tg", [api_status(429, "Rate limit")]), "rate_limit", 429),
    ("group-only-cancelled", lambda: BaseExceptionGroup("tg", [asyncio.CancelledError()]), "cancelled", None),
]


@pytest.mark.parametrize("factory,kind,status", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_table(factory: Callable[[], object], kind: str, status: int | None) -> None:
    info = classify(factory())
    assert info.kind == kind, info
    assert info.status_code == status, info
    assert info.retryable == (kind in RETRYABLE_KINDS)
    assert info.message and len(info.message) <= 400


def test_table_covers_every_kind() -> None:
    assert {c[2] for c in CASES} == set(KINDS)


def test_retryable_agrees_with_default_policies() -> None:
    assert set(DEFAULT_POLICIES) == set(KINDS)
    assert RETRYABLE_KINDS == {k for k, p in DEFAULT_POLICIES.items() if p.retries}


def test_non_concurrency_400_is_not_retried() -> None:
    info = classify(api_status(400, "Invalid 'messages[2].tool_calls': empty array. Expected an array with minimum length 1"))
    assert (info.kind, info.retryable) == ("invalid_request", False)


def test_rate_limit_retry_after_header_seconds() -> None:
    info = classify(api_status(429, "Rate limit", headers={"retry-after": "7"}))
    assert (info.kind, info.retry_after) == ("rate_limit", 7.0)


def test_rate_limit_retry_after_ms_header_wins() -> None:
    info = classify(api_status(429, "Rate limit", headers={"retry-after-ms": "1500", "retry-after": "9"}))
    assert info.retry_after == 1.5


def test_rate_limit_retry_after_from_text() -> None:
    assert classify(api_status(429, "Rate limit reached. Please try again in 20s.")).retry_after == 20.0
    assert classify(api_status(429, "Rate limit reached. Please try again in 120ms.")).retry_after == pytest.approx(0.12)
    assert classify(api_status(429, "Rate limit")).retry_after is None


def test_retry_after_http_date() -> None:
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412500.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-3"}) is None
    assert parse_retry_after(None) is None


def test_check_failed_carries_output() -> None:
    info = classify(CheckFailed("pytest -q", "E   assert 1 == 2\nkey sk-ant-api03-SECRETSECRETSECRET", 1))
    assert info.kind == "check_failed"
    assert "pytest -q" in info.message and "exit code 1" in info.message
    assert "assert 1 == 2" in info.detail and "SECRETSECRET" not in info.detail
    timed_out = classify(CheckFailed("make test", "", None, timed_out=True))
    assert "timed out" in timed_out.message


def test_scrub_removes_keys() -> None:
    text = ("key sk-ant-api03-AbCdEfGhIjKlMnOpQr and sk-proj-0123456789abcdefXYZ, "
            "Authorization: Bearer abc.def-ghi_jklmnop, x-api-key: s3cr3tvalue, api_key=hunter22")
    out = scrub(text)
    for secret in ("AbCdEfGhIj", "0123456789abcdef", "abc.def-ghi", "s3cr3tvalue", "hunter22"):
        assert secret not in out
    assert "sk-ant-[redacted]" in out and "sk-proj-[redacted]" in out
    assert scrub("use scikit-learn and sk-learn") == "use scikit-learn and sk-learn"


def test_messages_are_scrubbed_and_short() -> None:
    info = classify(api_status(401, "Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwxyz0123"))
    assert "abcdefghijklmnop" not in info.message
    long = classify(RuntimeError("x" * 5000))
    assert len(long.message) <= 400 and long.message.endswith("…")


def test_missing_openai_key_is_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(openai.OpenAIError) as exc:
        openai.AsyncOpenAI()
    assert classify(exc.value).kind == "auth"


def test_chain_keeps_outer_type_and_explains_cause() -> None:
    info = classify(chained(RuntimeError("model call failed"), ConnectionResetError("reset by peer")))
    assert info.exception_type == "RuntimeError"
    assert "model call failed" in info.message and "reset by peer" in info.message


def test_result_exception_type_names_the_result() -> None:
    assert classify(AttemptFailed(assistant_error("rate_limit"))).exception_type == "AssistantMessage"
    assert classify(result_msg(api_error_status=500, result="API Error: 500")).kind == "transient"


def test_attempt_failed_message_from_backend_counts() -> None:
    info = classify(AttemptFailed(object(), "API Error: 400 due to tool use concurrency issues"))
    assert (info.kind, info.status_code) == ("tool_concurrency", 400)


def test_to_event_fields_builds_an_error_event() -> None:
    info = classify(api_status(429, "Rate limit", headers={"retry-after": "7"}))
    event = Error(**info.to_event_fields())
    assert (event.kind, event.status_code, event.retryable) == ("rate_limit", 429, True)
    assert set(info.to_event_fields()) == {"kind", "message", "exception_type", "status_code", "retryable"}


def test_error_info_is_frozen() -> None:
    info = ErrorInfo("unknown", "m", "E", None, True)
    with pytest.raises(AttributeError):
        info.kind = "auth"  # type: ignore[misc]


def test_modules_do_not_import_sdks() -> None:
    code = (
        "import sys\n"
        "import shepherd.core.errors, shepherd.core.retry, shepherd.core.prompts\n"
        "from shepherd.core.errors import classify\n"
        "classify(RuntimeError('rate limit')); classify(ConnectionResetError())\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('agents', 'claude_agent_sdk', 'openai', 'httpx2', 'textual')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_message_prefers_the_body_message() -> None:
    body = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}
    response = httpx2.Response(429, request=request(), json={"error": body})
    err = openai.RateLimitError(f"Error code: 429 - {{'error': {body}}}", response=response, body=body)
    assert classify(err).message == "Error code: 429 - Rate limit reached"


def test_attempt_failed_without_result() -> None:
    info = classify(AttemptFailed(None))
    assert (info.kind, info.exception_type, info.message) == ("unknown", "AttemptFailed", "attempt ended with an error result")


def test_billing_words_in_a_server_error_stay_transient() -> None:
    assert classify(api_status(503, "billing service unavailable", type_="server_error")).kind == "transient"


def test_importing_the_classifier_compiles_none_of_its_patterns() -> None:
    """Every process that starts a run imports shepherd.core.errors, few classify an error: its
    text patterns are compiled when first used (start-up does not pay for them)."""
    child = (
        "import re, shepherd.core.errors as e\n"
        "lazy = [v for v in vars(e).values() if isinstance(v, e._Lazy)]\n"
        "compiled = {key[1] for key in re._cache}\n"
        "assert len(lazy) >= 10, lazy\n"
        "print(sum(v.pattern in compiled for v in lazy))\n"
        "assert e._AUTH.search('error: invalid api key') is not None\n"  # and they work once used
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60,
                         cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
