"""`shepherd stats` (tokens, cost and retry waste by day, backend and model) and
`shepherd export SESSION --format otlp` (the session's spans to an OTLP/HTTP collector)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shepherd.core.text import safe
from shepherd.tui.cli_common import EXIT_OK, UsageError, open_store

_BLOCKS = " ▏▎▍▌▋▊▉█"
_BAR_WIDTH = 40


def add_parsers(add: Any) -> None:
    p = add("stats", "tokens, cost and retry waste by day, backend and model")
    p.add_argument("--since", default=None, help="a span (7d, 24h, 90m) or a date (2026-11-01); default: everything")
    p.add_argument("--json", action="store_true", help="an object with the rows")


def _bar(value: float, top: float, width: int = _BAR_WIDTH) -> str:
    """A horizontal bar in eighths of a cell."""
    if top <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / top * width * 8))
    return "█" * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")


def _fmt_tokens(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n / 1e3:.1f}k" if n >= 10_000 else str(n)


def render_text(rows: list[Any], *, chart: bool) -> list[str]:
    lines: list[str] = []
    if not rows:
        return ["no usage recorded"]
    header = f"{'day':<10}  {'backend':<10}  {'model':<22}  {'sess':>4}  {'tokens':>8}  {'cost $':>9}  " \
             f"{'waste tok':>9}  {'waste $':>8}"
    lines.append(header)
    total = [0, 0, 0.0, 0, 0.0]
    for r in rows:
        tokens = r.input_tokens + r.output_tokens
        waste = r.waste_input_tokens + r.waste_output_tokens
        total[0] += r.sessions
        total[1] += tokens
        total[2] += r.cost_usd
        total[3] += waste
        total[4] += r.waste_cost_usd
        lines.append(f"{r.day:<10}  {safe(r.backend)[:10]:<10}  {safe(r.model or '-')[:22]:<22}  {r.sessions:>4}  "
                     f"{_fmt_tokens(tokens):>8}  {r.cost_usd:>9.4f}  {_fmt_tokens(waste):>9}  {r.waste_cost_usd:>8.4f}")
    pct = f" ({total[3] / total[1]:.0%} of tokens)" if total[1] else ""
    lines.append(f"total: {_fmt_tokens(int(total[1]))} tokens, ${total[2]:.4f}; "
                 f"retry waste {_fmt_tokens(int(total[3]))} tokens, ${total[4]:.4f}{pct}")
    if chart:
        from shepherd.core.stats import by_day

        days = by_day(rows)
        top = max(d.tokens for d in days)
        lines.append("")
        lines.append("tokens per day (░ the retry waste)")
        for d in days:
            used = _bar(d.tokens - d.waste_tokens, top)
            wasted = "░" * round(d.waste_tokens / top * _BAR_WIDTH) if top else ""
            lines.append(f"{d.day}  {used}{wasted}  {_fmt_tokens(d.tokens)}")
    return lines


async def cmd_stats(args: argparse.Namespace) -> int:
    from shepherd.core.stats import parse_since, stats

    since = None
    if args.since is not None:
        try:
            since = parse_since(args.since)
        except ValueError as e:
            raise UsageError(str(e)) from None
    store = await open_store(args, check=False)
    try:
        rows = await stats(store, since)
    finally:
        await store.close()
    if args.json:
        json.dump({"since": since, "rows": [r.as_dict() for r in rows]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(render_text(rows, chart=sys.stdout.isatty())) + "\n")
    return EXIT_OK


async def cmd_export_otlp(args: argparse.Namespace) -> int:
    from shepherd.core import otel

    try:
        endpoint = otel.endpoint()
        otel.require_sdk()
    except otel.OtelUnavailable as e:
        raise UsageError(str(e)) from None
    store = await open_store(args, check=False)
    try:
        sid = await store.resolve_session(args.session)
        count = await otel.export_session(store, sid)
    except otel.OtelUnavailable as e:
        raise UsageError(str(e)) from None
    finally:
        await store.close()
    print(f"sent {count} spans of session {sid} to {safe(endpoint)}", file=sys.stderr)
    return EXIT_OK


HANDLERS = {"stats": cmd_stats}
