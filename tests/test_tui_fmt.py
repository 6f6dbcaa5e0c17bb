"""The views' formatters and the view model package's shape (tui.fmt, core.states, tui.model)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from shepherd.tui import fmt
from shepherd.tui import model as m
from shepherd.core import states
from shepherd.tui.screens import sessions


def test_no_module_of_the_model_package_imports_textual() -> None:
    files = sorted(Path(m.__file__).parent.glob("*.py"))
    assert len(files) > 1
    for f in files:
        src = f.read_text(encoding="utf-8")
        assert "import textual" not in src and "from textual" not in src, f.name


def test_one_fmt_tokens_with_each_screen_s_millions() -> None:
    assert m.fmt_tokens is fmt.fmt_tokens is sessions.fmt_tokens
    # the session's status bar: two decimals for millions; the home's narrow column: one
    assert m.fmt_tokens(2_500_000) == "2.50M" and m.fmt_tokens(12_345) == "12.3k"
    row = SimpleNamespace(input_tokens=2_000_000, output_tokens=500_000, cost_usd=0.0)
    assert sessions.fmt_usage(row) == "2.5M tok"  # no cost reported: tokens, never "$0.00"
    row.cost_usd, row.cost_known = 3.5, True
    assert sessions.fmt_usage(row) == "$3.50"


def test_the_home_cost_column_shows_the_waste_and_never_an_unknown_cost() -> None:
    row = SimpleNamespace(input_tokens=0, output_tokens=0, cost_usd=0.0, cost_known=False, waste_input_tokens=0,
                          waste_output_tokens=0, waste_cost_usd=0.0)
    assert sessions.fmt_usage(row) == "–"  # no usage reported
    row.input_tokens, row.waste_input_tokens = 12_300, 3_100
    assert sessions.fmt_usage(row) == "12.3k tok −3.1k"
    row.cost_known, row.cost_usd, row.waste_cost_usd = True, 0.42, 0.1
    assert sessions.fmt_usage(row) == "$0.42 −0.10"
    row.cost_usd, row.waste_cost_usd = 0.004, 0.001
    assert sessions.fmt_usage(row) == "<$0.01 −<0.01"
    row.cost_usd, row.waste_cost_usd, row.waste_input_tokens = 999.99, 999.99, 1
    assert len(sessions.fmt_usage(row)) <= 16  # the column's width
    row.cost_known, row.input_tokens, row.waste_input_tokens = False, 123_400, 100_000
    assert sessions.fmt_usage(row) == "123.4k −100.0k"  # too wide with its "tok"


def test_clip_is_public_and_one() -> None:
    from shepherd.core.report import clip as report_clip

    assert m.clip is fmt.clip is report_clip
    assert m.clip("a  b\n c", 10) == "a b c" and m.clip("x" * 20, 8) == "xxxxxxx…"


def test_live_statuses_are_one_set_and_a_view_is_also_live_before_its_first_event() -> None:
    assert sessions.LIVE_STATUSES is states.LIVE_STATUSES is m.LIVE_STATUSES
    assert states.VIEW_LIVE_STATUSES == states.LIVE_STATUSES | {"pending", "starting"}
    assert m.SessionInfo(status="pending").is_live and m.SessionInfo(status="starting").is_live
    assert not m.SessionInfo(status="interrupted").is_live
