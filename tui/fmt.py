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


_COMMAND_KEYS = ("command", "cmd")
_PATH_KEYS = ("file_path", "path", "notebook_path")
_CONTENT_KEYS = ("content", "file_text", "text", "new_source")


def approval_preview(tool: str, data: object, max_lines: int = 8, width: int = 200) -> list[str]:
    """What a person reads before saying yes: the command (``$ make deploy``), or the
    path and the first lines of the content a Write would put there, or an Edit's old
    and new text; else the input, a key a line. Long lines wrap at ``width``; at most
    ``max_lines`` lines (the last says how many more). The text is already terminal-safe
    (the model made it so)."""
    if not isinstance(data, dict):
        text = "" if data in (None, "") else str(data)
        return _limit(text.splitlines(), max_lines, width)
    command = next((data[k] for k in _COMMAND_KEYS if isinstance(data.get(k), str)), None)
    if command is not None:
        lines = command.rstrip("\n").split("\n") or [""]
        return _limit(["$ " + lines[0], *("  " + line for line in lines[1:])], max_lines, width)
    path = next((data[k] for k in _PATH_KEYS if isinstance(data.get(k), str)), None)
    out: list[str] = [path] if path is not None else []
    content = next((data[k] for k in _CONTENT_KEYS if isinstance(data.get(k), str)), None)
    if content is not None:
        body = content.rstrip("\n").split("\n") if content else []
        size = len(content.encode("utf-8", "replace"))
        out[0:1] = [f"{path or '(no path)'}  ({len(body)} line{'s' if len(body) != 1 else ''}, {size} bytes)"]
        return _limit(out + ["│ " + line for line in body], max_lines, width)
    old, new = data.get("old_string"), data.get("new_string")
    if isinstance(old, str) or isinstance(new, str):
        old_lines = ["- " + x for x in str(old or "").rstrip("\n").split("\n")] if old else []
        new_lines = ["+ " + x for x in str(new or "").rstrip("\n").split("\n")] if new else []
        return _limit(out + old_lines + new_lines, max_lines, width)
    rest = [f"{k}: {_one_line(v)}" for k, v in data.items() if k not in _PATH_KEYS]
    return _limit(out + rest, max_lines, width)


def _one_line(value: object) -> str:
    import json

    if isinstance(value, str):
        return value.replace("\n", "⏎")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _wrap(line: str, width: int) -> list[str]:
    """One line in pieces of ``width`` (the first piece's indentation kept, the rest
    indented two more): nothing of what a person approves is cut off."""
    line = line.expandtabs(4).rstrip()
    if len(line) <= width:
        return [line]
    pad = " " * (len(line) - len(line.lstrip()) + 2)
    out, rest = [line[:width]], line[width:]
    step = max(1, width - len(pad))
    while rest:
        out.append(pad + rest[:step])
        rest = rest[step:]
    return out


def _limit(lines: list[str], max_lines: int, width: int) -> list[str]:
    lines = [piece for line in lines for piece in _wrap(line, width)]
    if len(lines) <= max_lines:
        return lines
    keep = max(1, max_lines - 1)
    return lines[:keep] + [f"… {len(lines) - keep} more lines (o: all of it)"]
