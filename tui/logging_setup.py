"""Logging for the TUI: everything goes to a rotating file, nothing to the terminal.

While Textual owns the screen, a single line on stderr (an SDK warning, Python's
``lastResort`` handler, a ``warnings.warn``) corrupts the display. So every logger we
know of is routed to one file, stream handlers are removed, and API keys are masked
before anything is written.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from shepherd.core.secrets import scrub_text
from shepherd.core.text import safe

# Loggers the SDKs and we use. They propagate to the root, which owns the file handler.
ROUTED_LOGGERS = ("openai", "openai.agents", "httpx", "httpcore", "claude_agent_sdk", "anthropic",
                  "aiosqlite", "asyncio", "shepherd")

_HANDLER_TAG = "_shepherd_file_handler"
_current_path: Path | None = None


def current_log_path() -> Path | None:
    """Where configure_logging last sent the logs (None if it was never called)."""
    return _current_path


def redact(text: str) -> str:
    """Mask secrets (the same rules as error messages and the store: core.secrets; what
    core.errors.scrub does, without importing core.errors at start-up)."""
    return scrub_text(text) if text else ""


class RedactFilter(logging.Filter):
    """Masks secrets in the message: key patterns and every value of a secret environment
    variable (core.errors.scrub). Args are merged in first, so secrets passed as ``%s``
    arguments are caught too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """Masks keys in the final text too, which covers tracebacks and exception text; log
    lines quote model and tool text, so controls are made visible (`tail -f` is a terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        return safe(redact(super().format(record)))


def default_log_path() -> Path:
    """``$XDG_STATE_HOME/shepherd/shepherd.log`` (``~/.local/state`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "shepherd" / "shepherd.log"


def _is_terminal_stream_handler(handler: logging.Handler) -> bool:
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    stream = getattr(handler, "stream", None)
    if stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__):
        return True
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure_logging(log_path: Path | str | None = None, *, level: int = logging.INFO,
                      max_bytes: int = 2_000_000, backups: int = 3) -> Path:
    """Send all logging to a rotating file at ``log_path`` and none to the terminal.

    Idempotent: calling it again replaces the previous file handler. Returns the path.
    """
    path = Path(log_path) if log_path else default_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The log may hold prompts and tool output: keep it private like the database.
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    os.close(fd)

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False) or _is_terminal_stream_handler(handler):
            root.removeHandler(handler)
            if getattr(handler, _HANDLER_TAG, False):
                handler.close()

    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                   encoding="utf-8", delay=True)
    setattr(handler, _HANDLER_TAG, True)
    handler.addFilter(RedactFilter())
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)

    for name in ROUTED_LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):  # e.g. agents' enable_verbose_stdout_logging()
            if _is_terminal_stream_handler(h):
                logger.removeHandler(h)
        logger.propagate = True
        if name in ("httpx", "httpcore", "aiosqlite", "asyncio") and logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)  # per-request chatter is noise at INFO

    # No handler-less fallback to stderr, and warnings go to the file too.
    logging.lastResort = None
    logging.captureWarnings(True)
    global _current_path
    _current_path = path
    return path


# --- errors inside the running app ------------------------------------------------------

_error_log = logging.getLogger("shepherd.tui")


def report_error(app: object, error: BaseException, context: str = "") -> None:
    """Write ``error`` with its traceback to the log and show it as a notification.

    The app keeps running: this is for failures in a handler or a worker, which
    would otherwise take the whole app down (Textual exits on unhandled errors).
    """
    _error_log.error("%s", context or "error in the TUI", exc_info=error)
    summary = redact(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    if len(summary) > 300:
        summary = summary[:300] + "…"
    notify = getattr(app, "notify", None)
    if notify is not None:
        try:
            notify(f"{summary}\n(details in the log file)", title=context or "Error", severity="error",
                   timeout=10, markup=False)
        except Exception:  # the app may be shutting down; the log has it
            _error_log.debug("could not show a notification", exc_info=True)


def guarded(context: str):
    """Decorator for Textual handlers/actions (sync or async) on a widget, screen or app:
    an exception becomes a notification plus a log entry instead of a crash."""
    import functools
    import inspect

    def wrap(fn):
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(self, *args, **kwargs):
                try:
                    return await fn(self, *args, **kwargs)
                except Exception as error:  # noqa: BLE001 - that is the point
                    report_error(self.app, error, context)
                    return None
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as error:  # noqa: BLE001
                report_error(self.app, error, context)
                return None
        return wrapper

    return wrap
