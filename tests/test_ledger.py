"""ToolLedger: parallel calls, duplicates dropped, a finished call never reopens,
every open call closed as interrupted when the attempt ends."""

from shepherd.core.events import ToolFinished, ToolStarted
from shepherd.core.ledger import ToolLedger


def test_parallel_calls_stay_open_until_their_own_results() -> None:
    led = ToolLedger()
    assert led.start(ToolStarted(call_id="a", name="read"), 0.0)
    assert led.start(ToolStarted(call_id="b", name="read"), 0.1)  # a second start closes nothing
    assert {c.call_id for c in led.open_calls} == {"a", "b"}
    fin = led.finish(ToolFinished(call_id="b", output="B"), 1.0)
    assert fin is not None and fin.duration_s == 0.9
    assert [c.call_id for c in led.open_calls] == ["a"]


def test_duplicate_results_are_dropped_and_finished_calls_never_reopen() -> None:
    led = ToolLedger()
    led.start(ToolStarted(call_id="a", name="x"), 0.0)
    assert led.finish(ToolFinished(call_id="a"), 1.0) is not None
    assert led.finish(ToolFinished(call_id="a", output="late duplicate"), 2.0) is None
    assert not led.start(ToolStarted(call_id="a", name="x"), 3.0)
    assert not led.has_open() and led.is_finished("a")


def test_flush_interrupts_every_open_call_once() -> None:
    led = ToolLedger()
    led.start(ToolStarted(call_id="a", name="x", attempt=2), 0.0)
    led.start(ToolStarted(call_id="b", name="y", attempt=2), 0.0)
    led.finish(ToolFinished(call_id="a"), 0.5)
    flushed = led.flush(2.0)
    assert [(f.call_id, f.status, f.attempt) for f in flushed] == [("b", "interrupted", 2)]
    assert led.flush(3.0) == []
    assert led.finish(ToolFinished(call_id="b", output="arrived after the end"), 4.0) is None


def test_a_result_without_a_start_is_accepted_once() -> None:
    led = ToolLedger()
    assert led.finish(ToolFinished(call_id="z", output="orphan"), 1.0) is not None
    assert led.finish(ToolFinished(call_id="z"), 1.0) is None
