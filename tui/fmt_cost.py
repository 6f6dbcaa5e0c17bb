"""How tokens, cost and retry waste read on screen: the home's cost column, the session's
status bar, the subtask list and an attempt's separator. Pure and light (the home imports
it at start-up), given plain numbers or a ``core.stats.Tally``.

Honest by construction: a cost only where some usage reported one (``cost_known``), tokens
otherwise, nothing (or "–") where no usage was reported at all; never "$0.00" for unknown.
"""

from __future__ import annotations

from typing import Any

from shepherd.tui.fmt import fmt_cost, fmt_tokens

NO_USAGE = "–"  # the home's mark for an empty cell


def money(usd: float) -> str:
    """Compact dollars: '<$0.01', '$0.42', '$12.34', '$1234'."""
    if usd < 0.01:
        return "<$0.01" if usd > 0 else "$0.00"
    if usd >= 1000:
        return f"${usd:.0f}"
    return f"${usd:.2f}"


def usage_text(tokens: int, cost_usd: float, cost_known: bool) -> str:
    """'$0.42' where a cost was reported, else '12.3k tok', else '' (nothing reported)."""
    if cost_known:
        return money(cost_usd)
    return f"{fmt_tokens(tokens, mega_places=1)} tok" if tokens else ""


def waste_text(tokens: int, cost_usd: float, cost_known: bool, *, short: bool = False,
               exact: bool = False) -> str:
    """The wasted part, '' when none: '$0.10' ('0.10' when ``short``, beside a cost) or
    '3.1k tok' when no cost was reported for it."""
    if not tokens and not cost_usd:
        return ""
    if cost_known and cost_usd:
        text = fmt_cost(cost_usd) if exact else money(cost_usd)
        return text.replace("$", "", 1) if short else text
    return f"{fmt_tokens(tokens, mega_places=1)} tok"


def of(t: Any) -> tuple[int, float, bool]:
    """(tokens, cost_usd, cost_known) of a Tally."""
    return t.input_tokens + t.output_tokens, t.cost_usd, t.cost_known


HOME_WIDTH = 16  # the home's cost column: '$999.99 −999.99', '15.4k tok −12.3k'


def home_cost(row: Any) -> tuple[str, str]:
    """The home's cost column for a sessions row: (its cost or tokens, the waste after a
    '−', '' when none). ('–', '') when no usage was reported. Tokens too many for the
    column lose their 'tok' (no '$' says what they are)."""
    tokens = (row.input_tokens or 0) + (row.output_tokens or 0)
    known = bool(getattr(row, "cost_known", False))
    main = usage_text(tokens, row.cost_usd or 0.0, known)
    if not main:
        return NO_USAGE, ""
    w_tokens = (getattr(row, "waste_input_tokens", 0) or 0) + (getattr(row, "waste_output_tokens", 0) or 0)
    w_cost = getattr(row, "waste_cost_usd", 0.0) or 0.0
    waste = waste_text(w_tokens, w_cost, known, short=True)
    if waste and not known and waste.endswith(" tok"):
        waste = waste[:-4]  # beside '12.3k tok': the unit is said once
        if len(main) + 2 + len(waste) > HOME_WIDTH:
            main = main[:-4]
    return main, ("−" + waste if waste else "")


def status_cost(cost_usd: float, cost_known: bool, waste: Any) -> tuple[str, str]:
    """The status bar's cost and waste segments: ('$0.42', '$0.10 wasted'); '' for a part
    not to show (no cost reported; nothing wasted)."""
    main = fmt_cost(cost_usd) if cost_known else ""
    wasted = waste_text(*of(waste), exact=True)
    return main, (f"{wasted} wasted" if wasted else "")


def subtask_cost(cost: Any, waste: Any) -> tuple[str, str]:
    """A subtask's line: ('$0.42', '−0.10') / ('12.3k tok', '−3.1k tok'); ('', '') when no usage."""
    if cost is None:
        return "", ""
    tokens, usd, known = of(cost)
    main = usage_text(tokens, usd, known)
    if not main or waste is None:
        return main, ""
    wasted = waste_text(*of(waste), short=known)
    return main, ("−" + wasted if wasted else "")


def attempt_cost(a: Any) -> tuple[str, bool]:
    """An attempt's separator: ('3.2k tok · $0.0042', wasted?); ('', False) when it used nothing."""
    if a is None:
        return "", False
    tokens, usd, known = of(a.usage)
    if not tokens and not known:
        return "", False
    text = f"{fmt_tokens(tokens)} tok" + (f" · {fmt_cost(usd) if usd else '$0'}" if known else "")
    return text, bool(a.wasted)
