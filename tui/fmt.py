"""Small formatters the home screen and ``shepherd sessions`` need without the session
model (tui.model imports core.errors, core.report...: milliseconds at start-up)."""

from __future__ import annotations


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
