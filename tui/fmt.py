"""The views' formatters: pure, and light enough for the home screen and ``shepherd
sessions``, which must not import the session model (tui.model imports core.errors,
core.report...: milliseconds at start-up)."""

from __future__ import annotations

import math

from shepherd.core.text import clip  # noqa: F401 - one line of at most N characters, public here for the views


def fmt_span(seconds: float | None) -> str:
    """Compact spans for table columns: '45s', '2m05s', '1h02m', '3d04h'."""
    if seconds is None or seconds < 0:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_duration(seconds: float | None) -> str:
    """Short human durations: '420 ms', '1.3 s', '3 s', '2 m 05 s', '1 h 02 m'."""
    if seconds is None:
        return "–"
    seconds = max(0.0, float(seconds))
    if 0 < seconds < 0.95:
        return f"{max(1, round(seconds * 1000))} ms"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    m, s = divmod(total, 60)
    if m < 60:
        return f"{m} m {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} m"


def fmt_seconds_left(seconds: float) -> str:
    """Countdown seconds, rounded up so "0 s" only shows when the wait is over."""
    return fmt_duration(math.ceil(max(0.0, seconds) - 1e-9))


def fmt_clock(seconds: float | None) -> str:
    """Elapsed time as a clock: '0:07', '12:03', '1:02:03'."""
    if seconds is None:
        return "–"
    total = int(max(0.0, seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_tokens(n: int, mega_places: int = 2) -> str:
    """Token counts: '999', '12.3k', '2.50M'. Millions get ``mega_places`` decimals: the
    session's status bar shows two, the home screen's narrow column one ('2.5M')."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.{mega_places}f}M"


def fmt_cost(usd: float | None) -> str:
    if not usd:
        return "$0"
    if usd < 0.01:
        return f"${usd:.4f}"
    return f"${usd:.2f}"


def output_preview(output: str, max_lines: int = 200) -> tuple[str, int]:
    """The first ``max_lines`` lines of a tool output and how many were left out."""
    lines = output.splitlines()
    if len(lines) <= max_lines:
        return output, 0
    return "\n".join(lines[:max_lines]), len(lines) - max_lines
