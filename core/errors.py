"""classify(): every failure, from either SDK, to one error kind (DESIGN: "Errors and retries").

The kinds are checked in the DESIGN table's order. Evidence comes from three places:
the exception's type (real SDK classes), an HTTP status (explicit, or parsed from
"API Error: 400" / "Error code: 429" prose), and the provider's error text. Text
heuristics only look at text that comes from the API or the SDK, never at model
output, so a result like "found 0 errors; rate of 429 items" cannot misfire.

SDK classes are looked up in ``sys.modules`` only: an exception can only be an
instance of a class whose module is already loaded, so classify() never pays for
importing ``agents`` (~2.4 s) or ``claude_agent_sdk`` (~1.1 s).

Decisions not spelled out in the DESIGN table (documented here, tested in
tests/test_errors.py):
- ``check_failed`` (a subtask's check command failed) is its own kind, retried with the
  check's output as context.
- claude ``CLINotFoundError`` and other permanent setup failures (working directory
  missing, bad settings), agents ``UserError`` and ``BackendUnavailable`` are
  ``invalid_request``: permanent, fail at once with the message. Missing credentials
  (``MissingCredentials``, raised by the backends as ``NoCredentials``) are ``auth``.
- Other claude ``CLIConnectionError`` (the CLI process died / stdin closed) and
  ``CLIJSONDecodeError``/``MessageParseError`` are ``stream_broken``: restart from history.
- Billing problems (claude ``billing_error``, HTTP 402, OpenAI ``insufficient_quota``
  429s) are ``auth``: an account problem that waiting does not fix.
- The strongest tool-concurrency phrases ("tool use concurrency", "`tool_use` ids were
  found without `tool_result`", "`tool_use` ids must be unique") count even when the
  status is unknown (a seed missed SDK variants without a literal "400"); the weaker
  ones ("too many tools", "concurrent tool") need a 400.
- claude ``terminal_reason`` ``aborted_streaming``/``aborted_tools`` (our own interrupt)
  is ``cancelled``; subtype ``error_max_budget_usd`` counts as ``max_turns`` (a run
  limit we set; retrying cannot help).
- An ``unknown`` top-level exception is explained by its ``__cause__``/``__context__``
  chain when a link there classifies (e.g. RuntimeError from ConnectionResetError).
"""

from __future__ import annotations

import errno
import math
import re
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import field, replace
from typing import Any
from shepherd.core.records import record

KINDS = (
    "tool_concurrency", "rate_limit", "auth", "context_overflow", "content_policy",
    "images_rejected", "transient", "stream_broken", "invalid_request", "max_turns",
    "cancelled", "unknown", "check_failed",
)
# Kinds whose default policy retries (core.retry.DEFAULT_POLICIES agrees; a test checks).
RETRYABLE_KINDS = frozenset({
    "tool_concurrency", "rate_limit", "images_rejected", "transient", "stream_broken",
    "unknown", "check_failed",
})

MESSAGE_LIMIT = 400  # characters of an ErrorInfo message
DETAIL_LIMIT = 20_000  # characters of check output kept in ErrorInfo.detail


KIND_LABELS = {
    "tool_concurrency": "tool concurrency",
    "rate_limit": "rate limit",
    "auth": "auth",
    "context_overflow": "context overflow",
    "content_policy": "content policy",
    "images_rejected": "images rejected",
    "transient": "transient error",
    "stream_broken": "stream broken",
    "invalid_request": "invalid request",
    "max_turns": "max turns",
    "cancelled": "cancelled",
    "unknown": "unknown error",
    "check_failed": "check failed",
}


def kind_label(kind: str) -> str:
    """'tool_concurrency' -> 'tool concurrency': the one wording for reasons, logs and the TUI."""
    return KIND_LABELS.get(kind, (kind or "error").replace("_", " "))


@record(frozen=True)
class ErrorInfo:
    kind: str
    message: str
    exception_type: str
    status_code: int | None
    retryable: bool
    retry_after: float | None = None
    detail: str = ""  # check_failed: the check's (scrubbed) output; else ""

    def to_event_fields(self) -> dict[str, Any]:
        """Fields for ``core.events.Error``."""
        return {
            "kind": self.kind,
            "message": self.message,
            "exception_type": self.exception_type,
            "status_code": self.status_code,
            "retryable": self.retryable,
        }


_ATTEMPT_FAILED_DEFAULT = "attempt ended with an error result"


class AttemptFailed(Exception):
    """Raised by a backend for an error *result* (not an exception): e.g. a claude
    ``AssistantMessage`` with ``.error`` or a ``ResultMessage`` with ``is_error``.
    ``result`` may also be a tuple/list of such messages (their evidence is merged)
    or a raw dict frame with the same keys."""

    def __init__(self, result: object, message: str = "") -> None:
        self.result = result
        super().__init__(message or _ATTEMPT_FAILED_DEFAULT)


class MissingCredentials(Exception):
    """A backend has no credentials to start with (no API key, no login): kind ``auth``,
    by type, whatever the message says. Backends raise ``core.backends.base.NoCredentials``
    (also a ``BackendUnavailable``, so callers that check before a run catch it too)."""


class StreamBroken(Exception):
    """The stream ended without a final response."""

    def __init__(self, message: str = "stream ended without a final response") -> None:
        super().__init__(message)


class CheckFailed(Exception):
    """A subtask's check command failed (non-zero exit, or timed out: exit_code None)."""

    def __init__(self, command: str, output: str = "", exit_code: int | None = None, *,
                 timed_out: bool = False) -> None:
        self.command = command
        self.exit_code = exit_code
        self.output = output
        self.timed_out = timed_out
        how = "timed out" if timed_out or exit_code is None else f"failed with exit code {exit_code}"
        super().__init__(f"check `{command}` {how}")


class PlanInvalid(CheckFailed):
    """A planning answer that could not be used as a plan (kind ``check_failed``: the
    planning attempt is retried, in the planning phase, with the reason as context)."""

    def __init__(self, reason: str) -> None:
        super().__init__("plan", reason, 1)
        self.reason = reason
        Exception.__init__(self, f"the plan could not be used: {reason}")


# --- scrubbing -------------------------------------------------------------------------

_SECRET_PATTERNS = (
    # sk-..., sk-ant-api03-..., sk-proj-..., sk-svcacct-...: keep the prefix so the text stays readable.
    (re.compile(r"\b(sk-(?:ant-|proj-|svcacct-|admin-)?)[A-Za-z0-9][A-Za-z0-9_\-]{6,}"), r"\1[redacted]"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*"), r"\1[redacted]"),
    (re.compile(r"(?i)\b((?:x-)?(?:api[_-]?key|auth[_-]?token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]{4,}"),
     r"\1[redacted]"),
    # scheme://user:password@host (DATABASE_URL and friends): keep the user and host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/@:\s]*:)[^/@\s]+@"), r"\1[redacted]@"),
)


# Every pattern above needs one of these (lower-cased); most text has none, so they are
# looked for first (plain substring tests are ~10x faster than the patterns).
_SECRET_HINTS = ("sk-", "bearer", "api", "auth", "://")


def has_secret_hint(lower: str) -> bool:
    """Whether lower-cased text could hold anything ``scrub_patterns`` removes."""
    return any(h in lower for h in _SECRET_HINTS)


def scrub_patterns(text: str) -> str:
    """Remove anything that looks like an API key, a bearer token or a URL's password."""
    if not text:
        return ""
    lower = text.lower()
    if not any(h in lower for h in _SECRET_HINTS):
        return text
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def scrub(text: str) -> str:
    """``scrub_patterns`` plus every value of a secret environment variable (also
    reversed and base64-encoded): the one scrubber of error messages, the store and the log."""
    from shepherd.core.secrets import scrub_text  # tiny, no import cycle at module load

    return scrub_text(text) if text else ""


def _short(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = re.sub(r"\s+", " ", scrub(text)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- text heuristics (on lower-cased provider/SDK text) ------------------------------------

class _Lazy:
    """A pattern compiled when first used (``search``...): compiling these ~15 costs
    milliseconds at every start-up, and most processes never classify an error."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:  # search, match...: the compiled pattern's
        if self._compiled is None:
            self._compiled = re.compile(self.pattern)
        return getattr(self._compiled, name)


def _rx(*parts: str) -> _Lazy:
    return _Lazy("|".join(f"(?:{p})" for p in parts))


_STATUS_IN_TEXT = _Lazy(
    r"\b(?:api error|error code|status code|status|http(?: status)?)\s*[:=]?\s*([1-5]\d\d)\b"
)
_TOOL_CONC_STRONG = _rx(
    r"tool[\s_-]*use[\s_-]*concurrency",
    r"tool_use`?\s+ids?\b.{0,80}?\bwithout\W{0,3}tool_result",
    r"tool_use`?\s+ids?\s+must\s+be\s+unique",
    r"unexpected\s+`?tool_use_id",
)
_TOOL_CONC = _rx(
    _TOOL_CONC_STRONG.pattern,
    r"\btool\b.{0,40}\bconcurren",
    r"too many tools",
    r"concurrent tool",
)
_BILLING = _rx(
    r"insufficient_quota", r"exceeded your current quota", r"credit balance", r"billing",
)
_RATE = _rx(
    r"rate[\s_-]?limit", r"usage limit", r"too many requests", r"quota exceeded",
    r"resource[\s_-]?exhausted",
)
_AUTH = _rx(
    r"invalid[\s_-]*(?:x-)?api[\s_-]*key", r"incorrect api key",
    r"api[\s_-]*key\b.{0,40}\b(?:invalid|incorrect|missing|not set|must be set|not provided|required|expired|revoked)",
    r"not logged in", r"please run /login", r"authentication[\s_-]*(?:failed|error)",
    r"failed to authenticate", r"\bunauthori[sz]ed\b", r"invalid (?:auth(?:entication)? |bearer )?token",
    r"token (?:has )?expired", r"does not have access to claude", r"missing credentials",
    r"no credentials", r"credentials? (?:are |is )?(?:missing|invalid|not found)",
)
_CONTEXT = _rx(
    r"prompt is too long", r"prompt too long", r"context[\s_-]*length[\s_-]*exceeded",
    r"maximum context length", r"exceeds? (?:the )?(?:model'?s? )?(?:maximum )?context window",
    r"context window (?:is |was )?exceeded", r"input tokens? exceeds?", r"input is too long",
    r"too many (?:input )?tokens", r"reduce the length of the messages",
)
_POLICY = _rx(
    r"content[\s_-]*polic(?:y|ies)", r"content[\s_-]*filter", r"content management policy",
    r"safety system", r"\brefusal\b", r"model refused", r"usage polic(?:y|ies)",
    r"flagged as (?:potentially )?violating",
)
_IMAGES = _rx(
    r"\bimages?\b.{0,60}?\b(?:not supported|unsupported|invalid|could not be (?:processed|decoded)"
    r"|cannot be (?:processed|decoded)|not allowed|too large|exceeds|rejected|not a valid"
    r"|failed to (?:process|decode))",
    r"(?:does not support|doesn'?t support|unsupported|invalid|could not process|unable to process)"
    r"\s+(?:the\s+)?(?:image|images|image input|image_url|image content)\b",
    r"image_url is only supported", r"image input is not supported", r"image_parse_error",
)
_TRANSIENT = _rx(
    r"overloaded", r"connection (?:reset|refused|error|closed|aborted|timed out|lost)",
    r"econnreset", r"econnrefused", r"etimedout", r"socket hang up", r"network (?:error|is unreachable)",
    r"timed out", r"\btimeout\b", r"internal server error", r"service unavailable", r"bad gateway",
    r"gateway timeout", r"server[\s_-]error", r"temporarily unavailable", r"upstream connect error",
)
_RETRY_AFTER_TEXT = _Lazy(
    r"(?:retry|try again)\s+(?:after|in)\s+(\d+(?:\.\d+)?)\s*"
    r"(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)?\b"
)
_SETUP_TEXT = _rx(
    r"working directory does not exist", r"refusing to execute", r"on_failure",
    r"failed to load settings", r"claude code not found", r"cli path not resolved",
)
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
        "ENETDOWN", "ENETRESET", "EPIPE", "EHOSTDOWN", "ENOTCONN", "ESHUTDOWN",
    ) if hasattr(errno, name)
)
_TRANSPORT_CLASS_NAMES = frozenset({
    "TransportError", "NetworkError", "TimeoutException", "ConnectError", "ReadError", "WriteError",
    "CloseError", "RemoteProtocolError", "ConnectTimeout", "ReadTimeout", "WriteTimeout",
    "PoolTimeout", "ProxyError",
})


# --- evidence ------------------------------------------------------------------------------

@record
class _Facts:
    exception_type: str
    message: str = ""
    texts: list[str] = field(default_factory=list)  # trusted provider/SDK text
    status: int | None = None
    retry_after: float | None = None
    claude_error: str | None = None
    terminal_reason: str | None = None
    subtype: str | None = None
    stop_reason: str | None = None
    flags: set[str] = field(default_factory=set)
    detail: str = ""

    @property
    def text(self) -> str:
        return "\n".join(t for t in self.texts if t).lower()


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _isinstance(obj: object, module: Any, *names: str) -> bool:
    if module is None:
        return False
    classes = tuple(c for c in (getattr(module, n, None) for n in names) if isinstance(c, type))
    return bool(classes) and isinstance(obj, classes)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f >= 0 else None


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    get = headers.get
    ms = _num(get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = get("retry-after")
    if raw is None:
        return None
    secs = _num(raw)
    if secs is not None:
        return secs
    import email.utils  # rare (HTTP-date form): keep it off the import path

    try:
        parsed = email.utils.parsedate_tz(str(raw))
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))
    except (TypeError, ValueError, OverflowError):
        return None


def _retry_after_from_text(text: str) -> float | None:
    m = _RETRY_AFTER_TEXT.search(text)
    if not m:
        return None
    value, unit = float(m.group(1)), (m.group(2) or "s")
    if unit.startswith("ms") or unit.startswith("milli"):
        return value / 1000.0
    if unit.startswith("m"):
        return value * 60.0
    if unit.startswith("h"):
        return value * 3600.0
    return value


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        text = _get(block, "text")
        if isinstance(text, str):
            parts.append(text)
    return "\n".join(parts)


def _add_result_facts(f: _Facts, result: Any, trusted: bool = False) -> None:
    """Evidence from a claude message/result (object or raw dict frame). Text is read
    only from error results: a successful result's text is the model's, not an error."""
    error = _get(result, "error")
    if isinstance(error, Mapping):  # a raw frame's nested error object
        error = error.get("type") or error.get("message")
    is_error = _get(result, "is_error")
    if isinstance(error, str) and error:
        f.claude_error = f.claude_error or error
        text = _content_text(_get(result, "content") or (_get(_get(result, "message"), "content")))
        if text:
            f.texts.append(text)
            f.message = f.message or text
    if trusted or is_error:
        status = _get(result, "api_error_status")
        if isinstance(status, int) and f.status is None:
            f.status = status
        res = _get(result, "result")
        errs = _get(result, "errors")
        errs = [errs] if isinstance(errs, str) else [e for e in (errs or []) if isinstance(e, str)]
        if isinstance(res, str) and res:
            f.texts.append(res)
            f.message = f.message or res
        if errs:
            f.texts.extend(errs)
            f.message = f.message or "; ".join(errs)
    for attr in ("terminal_reason", "subtype", "stop_reason"):
        value = _get(result, attr)
        if isinstance(value, str) and getattr(f, attr) is None:
            setattr(f, attr, value)
    if not f.message and isinstance(error, str) and error:
        f.message = f"assistant error: {error}"
    if not f.message and isinstance(_get(result, "subtype"), str):
        f.message = f"result {_get(result, 'subtype')}"


def _facts(err: object) -> _Facts:
    name = type(err).__name__
    f = _Facts(exception_type=name)
    openai_mod = _module("openai")
    agents_exc = _module("agents.exceptions")
    claude_mod = _module("claude_agent_sdk._errors") or _module("claude_agent_sdk")

    if not isinstance(err, BaseException) or isinstance(err, AttemptFailed):
        result = err.result if isinstance(err, AttemptFailed) else err
        items = list(result) if isinstance(result, (list, tuple)) else [] if result is None else [result]
        for item in items:
            _add_result_facts(f, item)
        if items:
            f.exception_type = type(items[-1]).__name__
        if isinstance(err, AttemptFailed) and err.args and err.args[0] != _ATTEMPT_FAILED_DEFAULT:
            f.texts.append(str(err))  # written by the backend from the error result
            f.message = f.message or str(err)
        f.message = f.message or _ATTEMPT_FAILED_DEFAULT
        return f

    f.message = str(err) or name
    aio = _module("asyncio")  # not imported here: a CancelledError implies asyncio is loaded
    if isinstance(err, (KeyboardInterrupt, SystemExit, GeneratorExit)) or (
            aio is not None and isinstance(err, aio.CancelledError)):
        f.flags.add("cancelled")
        return f
    if isinstance(err, CheckFailed):
        f.flags.add("check_failed")
        f.detail = scrub(err.output)[-DETAIL_LIMIT:]
        return f
    if isinstance(err, StreamBroken):
        f.flags.add("stream_broken")
        return f

    # openai ------------------------------------------------------------------------
    if _isinstance(err, openai_mod, "APIResponseValidationError"):
        f.flags.add("stream_broken")
        return f
    if _isinstance(err, openai_mod, "APIStatusError"):
        status = getattr(err, "status_code", None)
        f.status = status if isinstance(status, int) else None
        f.message = getattr(err, "message", "") or f.message
        f.texts.append(f.message)
        body = getattr(err, "body", None)
        if isinstance(body, Mapping):
            inner = body.get("error", body)
            if isinstance(inner, Mapping):
                f.texts.extend(str(inner.get(k)) for k in ("message", "type", "code") if inner.get(k))
                if isinstance(inner.get("message"), str) and inner["message"] and f.status is not None:
                    # what openai 3.x prints; older builders put the whole body dict in the text
                    f.message = f"Error code: {f.status} - {inner['message']}"
        elif isinstance(body, str):
            f.texts.append(body[:2000])
        response = getattr(err, "response", None)
        f.retry_after = parse_retry_after(getattr(response, "headers", None))
        return f
    if _isinstance(err, openai_mod, "APIConnectionError"):  # includes APITimeoutError
        f.flags.add("network")
        return f
    if _isinstance(err, openai_mod, "APIError"):  # an SSE error payload mid-stream
        f.flags.add("sse_error")
        f.message = getattr(err, "message", "") or f.message
        f.texts.append(f.message)
        body = getattr(err, "body", None)
        if isinstance(body, Mapping):
            f.texts.extend(str(body.get(k)) for k in ("type", "code") if body.get(k))
        return f
    if _isinstance(err, openai_mod, "ContentFilterFinishReasonError"):
        f.flags.add("refusal")
        return f

    # openai-agents -------------------------------------------------------------------
    if _isinstance(err, agents_exc, "MaxTurnsExceeded"):
        f.flags.add("max_turns")
        return f
    if _isinstance(err, agents_exc, "ModelRefusalError", "InputGuardrailTripwireTriggered",
                   "OutputGuardrailTripwireTriggered", "ToolInputGuardrailTripwireTriggered",
                   "ToolOutputGuardrailTripwireTriggered"):
        f.flags.add("refusal")
        return f
    if _isinstance(err, agents_exc, "ModelTimeoutError"):
        f.flags.add("network")
        return f
    if _isinstance(err, agents_exc, "ModelBehaviorError"):
        # Only a Responses terminal error event carries provider text; other messages
        # may quote model output (e.g. invalid tool-call JSON), so they are not read.
        marker = "responses stream ended with terminal event"
        if f.message.lower().startswith(marker):
            f.texts.append(f.message[len(marker):])
        f.flags.add("sse_error")
        return f
    if _isinstance(err, agents_exc, "UserError"):
        f.flags.add("setup")
        return f
    if _isinstance(err, agents_exc, "ToolTimeoutError", "MCPToolCancellationError"):
        return f  # a tool problem, no provider text: unknown

    # claude-agent-sdk ----------------------------------------------------------------
    if _isinstance(err, claude_mod, "ResultError"):
        _add_result_facts(f, err, trusted=True)
        f.message = getattr(err, "result", None) or "; ".join(getattr(err, "errors", None) or []) \
            or f.message
        return f
    if _isinstance(err, claude_mod, "CLINotFoundError"):
        f.flags.add("setup")
        return f
    if _isinstance(err, claude_mod, "CLIConnectionError"):
        f.flags.add("setup" if _SETUP_TEXT.search(f.message.lower()) else "stream_broken")
        return f
    if _isinstance(err, claude_mod, "CLIJSONDecodeError", "MessageParseError"):
        f.flags.add("stream_broken")
        return f
    if _isinstance(err, claude_mod, "ProcessError"):
        f.texts.append(f.message)
        stderr = getattr(err, "stderr", None)
        if isinstance(stderr, str):
            f.texts.append(stderr)
        return f

    # ours and the standard library ----------------------------------------------------
    if isinstance(err, MissingCredentials):
        f.flags.add("credentials")
        f.texts.append(f.message)
        return f
    backend_base = _module("shepherd.core.backends.base")
    if _isinstance(err, backend_base, "BackendUnavailable"):
        f.flags.add("setup")
        f.texts.append(f.message)
        return f
    if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)) or (
        isinstance(err, OSError) and err.errno in _NETWORK_ERRNOS
    ):
        f.flags.add("network")
        return f
    if any(c.__name__ in _TRANSPORT_CLASS_NAMES and c.__module__.split(".")[0].startswith(("httpx", "httpcore"))
           for c in type(err).__mro__):
        f.flags.add("network")
        return f

    f.texts.append(f.message)
    ra = _num(getattr(err, "retry_after", None))
    if ra is not None:
        f.retry_after = ra
    return f


# --- the table ------------------------------------------------------------------------------

def _decide(f: _Facts) -> str:
    text = f.text
    status = f.status
    if status is None and text:
        m = _STATUS_IN_TEXT.search(text)
        if m:
            status = f.status = int(m.group(1))
    flags = f.flags
    client_or_unknown = status is None or 400 <= status < 500
    if "cancelled" in flags or f.terminal_reason in ("aborted_streaming", "aborted_tools"):
        return "cancelled"
    if "check_failed" in flags:
        return "check_failed"
    if text and ((status == 400 and _TOOL_CONC.search(text))
                 or (status is None and _TOOL_CONC_STRONG.search(text))):
        return "tool_concurrency"
    billing = bool(text) and client_or_unknown and _BILLING.search(text) is not None
    if not billing and (status == 429 or f.claude_error == "rate_limit"
                        or (status is None and _RATE.search(text))):
        return "rate_limit"
    if (status in (401, 402, 403) or billing or "credentials" in flags
            or f.claude_error in ("authentication_failed", "billing_error")
            or (status is None and text and _AUTH.search(text))):
        return "auth"
    if status == 413 and not _IMAGES.search(text):
        return "context_overflow"
    if client_or_unknown and text and _CONTEXT.search(text):
        return "context_overflow"
    if "refusal" in flags or f.stop_reason == "refusal" or (client_or_unknown and text and _POLICY.search(text)):
        return "content_policy"
    if client_or_unknown and text and _IMAGES.search(text):
        return "images_rejected"
    if ("network" in flags or f.claude_error == "server_error"
            or (status is not None and (status >= 500 or status in (408, 409, 425)))
            or (status is None and text and _TRANSIENT.search(text))):
        return "transient"
    if flags & {"stream_broken", "sse_error"}:
        return "stream_broken"
    if (status is not None and 400 <= status < 500) or f.claude_error == "invalid_request" or "setup" in flags:
        return "invalid_request"
    if ("max_turns" in flags or f.terminal_reason == "max_turns"
            or f.subtype in ("error_max_turns", "error_max_budget_usd")):
        return "max_turns"
    return "unknown"


def _info(f: _Facts, kind: str) -> ErrorInfo:
    retry_after = f.retry_after
    if retry_after is None and kind in ("rate_limit", "transient"):
        retry_after = _retry_after_from_text(f.text)
    message = _short(f.message) or kind_label(kind)
    return ErrorInfo(
        kind=kind,
        message=message,
        exception_type=f.exception_type,
        status_code=f.status,
        retryable=kind in RETRYABLE_KINDS,
        retry_after=retry_after,
        detail=f.detail,
    )


def _leaves(group: BaseException) -> Iterable[BaseException]:
    for sub in getattr(group, "exceptions", ()):
        if isinstance(sub, BaseExceptionGroup):
            yield from _leaves(sub)
        else:
            yield sub


def _chain(err: BaseException, limit: int = 8) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen and len(out) < limit:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return out


def classify(err: BaseException | object) -> ErrorInfo:
    """Map a failure (an exception, an AttemptFailed, or a bare error result) to ErrorInfo."""
    if isinstance(err, BaseExceptionGroup):
        leaves = list(_leaves(err))
        infos = [classify(e) for e in leaves]
        real = [i for i in infos if i.kind != "cancelled"]
        if not real:
            return infos[0] if infos else _info(_Facts(exception_type=type(err).__name__), "unknown")
        return real[0]

    facts = _facts(err)
    kind = _decide(facts)
    info = _info(facts, kind)
    if kind != "unknown" or not isinstance(err, BaseException):
        return info
    for inner in _chain(err)[1:]:
        sub = classify(inner)
        if sub.kind not in ("unknown", "cancelled"):
            msg = info.message if sub.message in info.message else f"{info.message} (caused by {sub.exception_type}: {sub.message})"
            return replace(sub, exception_type=info.exception_type, message=_short(msg))
    return info
