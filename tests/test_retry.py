"""RetryPolicy schedules and the per-subtask RetryState machine (pure logic)."""

from __future__ import annotations

import random

import pytest

from shepherd.core.errors import ErrorInfo
from shepherd.core.events import RetryScheduled
from shepherd.core.retry import DEFAULT_POLICIES, MAX_RETRY_AFTER, RetryDecision, RetryPolicy, RetryState, policies_for
from shepherd.core.task import task_from_dict


def err(kind: str, retry_after: float | None = None, message: str = "boom", detail: str = "") -> ErrorInfo:
    retryable = DEFAULT_POLICIES[kind].retries
    return ErrorInfo(kind, message, "X", None, retryable, retry_after, detail)


def run(state: RetryState, info: ErrorInfo, phase: str = "coding") -> RetryDecision:
    """One failed attempt: start it, then report its error."""
    state.on_attempt_started()
    return state.on_error(info, phase)


def schedule(state: RetryState, kind: str, n: int, **kw: object) -> list[RetryDecision]:
    return [run(state, err(kind, **kw)) for _ in range(n)]  # type: ignore[arg-type]


# --- schedules ----------------------------------------------------------------------------

def test_tool_concurrency_schedule_then_stuck() -> None:
    state = RetryState()
    ds = schedule(state, "tool_concurrency", 6)
    assert [d.delay_s for d in ds[:5]] == [2, 4, 8, 16, 32]
    assert [d.retry_no for d in ds[:5]] == [1, 2, 3, 4, 5]
    assert all(d.retry and d.max_retries == 5 and d.final_status is None for d in ds[:5])
    last = ds[5]
    assert (last.retry, last.final_status, last.action) == (False, "stuck", "stuck")
    assert last.reason == "tool concurrency: 5 retries exhausted"
    assert last.retry_no == 5


def test_tool_concurrency_repair_from_second_retry() -> None:
    ds = schedule(RetryState(), "tool_concurrency", 3)
    assert [d.repair for d in ds] == [False, True, True]
    assert [d.action for d in ds] == ["retry", "repair", "repair"]
    assert ds[1].reason.startswith("tool concurrency — retry 2/5 in 4 s")
    assert ds[0].reason == "tool concurrency — retry 1/5 in 2 s"
    assert all(d.continue_history for d in ds)
    assert "ONE tool at a time" in ds[0].prompt_extra


def test_rate_limit_honours_retry_after_then_backoff() -> None:
    state = RetryState()
    first = run(state, err("rate_limit", retry_after=7))
    assert (first.delay_s, first.retry_no) == (7, 1)
    assert "(Retry-After)" in first.reason
    state2 = RetryState()
    ds = schedule(state2, "rate_limit", 6)
    assert [d.delay_s for d in ds[:5]] == [5, 10, 20, 40, 60]
    assert ds[5].final_status == "stuck"


def test_retry_after_is_capped_and_only_for_rate_limit() -> None:
    assert run(RetryState(), err("rate_limit", retry_after=10**6)).delay_s == MAX_RETRY_AFTER
    assert run(RetryState(), err("transient", retry_after=99)).delay_s == 2


def test_transient_schedule() -> None:
    ds = schedule(RetryState(), "transient", 6)
    assert [d.delay_s for d in ds[:5]] == [2, 4, 8, 16, 30]
    assert [d.action for d in ds[:5]] == ["retry"] * 5
    assert ds[5].final_status == "stuck"


def test_stream_broken_restarts_then_stuck() -> None:
    ds = schedule(RetryState(), "stream_broken", 4)
    assert [d.delay_s for d in ds[:3]] == [1, 1, 1]
    assert [d.action for d in ds[:3]] == ["restart"] * 3
    assert all(d.continue_history for d in ds[:3])
    assert ds[0].reason == "stream broken — restart 1/3 in 1 s"
    assert (ds[3].retry, ds[3].final_status) == (False, "stuck")
    assert ds[3].reason == "stream broken: 3 retries exhausted"


def test_unknown_retries_twice_then_stuck() -> None:
    ds = schedule(RetryState(), "unknown", 3)
    assert [d.delay_s for d in ds[:2]] == [3, 3]
    assert ds[2].final_status == "stuck"


def test_images_rejected_strips_once() -> None:
    ds = schedule(RetryState(), "images_rejected", 2)
    assert (ds[0].retry, ds[0].strip_images, ds[0].action) == (True, True, "strip_images")
    assert ds[1].final_status == "stuck" and ds[1].reason == "images rejected: 1 retry exhausted"


@pytest.mark.parametrize("kind", ["auth", "context_overflow", "content_policy", "invalid_request", "max_turns"])
def test_non_retryable_kinds_fail_at_once(kind: str) -> None:
    d = run(RetryState(), err(kind, message="bad thing"))
    assert (d.retry, d.final_status, d.action, d.continue_history) == (False, "failed", "fail", False)
    assert d.prompt_extra == "" and d.delay_s == 0
    assert "bad thing" in d.reason and "not retried" in d.reason


def test_cancelled_is_not_an_error() -> None:
    state = RetryState()
    run(state, err("transient"))
    d = run(state, err("cancelled"))
    assert (d.retry, d.final_status, d.action) == (False, None, "cancel")
    assert state.count("transient") == 1  # a cancel does not touch the counters


def test_check_failed_uses_max_check_retries_and_output() -> None:
    state = RetryState(max_check_retries=2)
    info = err("check_failed", message="check `pytest -q` failed with exit code 1", detail="E assert 1 == 2")
    ds = [run(state, info) for _ in range(3)]
    assert [d.retry for d in ds] == [True, True, False]
    assert ds[0].delay_s == 1 and ds[2].final_status == "stuck"
    assert "assert 1 == 2" in ds[0].prompt_extra and "pytest -q" in ds[0].prompt_extra
    assert run(RetryState(max_check_retries=0), info).final_status == "stuck"


# --- resets -------------------------------------------------------------------------------

def test_success_resets_counters_and_context() -> None:
    state = RetryState()
    schedule(state, "tool_concurrency", 3)
    assert state.pending_context and state.count("tool_concurrency") == 3
    state.on_success()
    assert state.counts == {} and state.pending_context == "" and state.last_kind is None
    d = run(state, err("tool_concurrency"))
    assert (d.retry_no, d.delay_s, d.repair) == (1, 2, False)


def test_change_of_kind_resets_counters() -> None:
    state = RetryState()
    schedule(state, "tool_concurrency", 2)
    t = run(state, err("transient"))
    assert (t.retry_no, t.delay_s) == (1, 2)
    assert state.count("tool_concurrency") == 0
    d = run(state, err("tool_concurrency"))
    assert (d.retry_no, d.delay_s, d.repair) == (1, 2, False)
    assert state.last_kind == "tool_concurrency"


def test_change_of_kind_replaces_context() -> None:
    state = RetryState()
    run(state, err("tool_concurrency"))
    assert "ONE tool" in state.pending_context
    run(state, err("transient"))
    assert "ONE tool" not in state.pending_context and "temporary" in state.pending_context


def test_planning_context_reset_together() -> None:
    state = RetryState()
    d = run(state, err("tool_concurrency"), phase="planning")
    assert d.phase == "planning"
    assert state.context_for("planning") == d.prompt_extra and state.context_for("coding") == ""
    assert "planning phase" in d.prompt_extra
    state.on_success()  # the planning attempt succeeded: its context must not leak on
    assert state.context_for("planning") == "" and state.pending_phase is None
    d2 = run(state, err("tool_concurrency"), phase="coding")
    assert d2.retry_no == 1 and "planning" not in d2.prompt_extra


def test_planning_retry_stays_in_planning() -> None:
    state = RetryState()
    ds = [run(state, err(k), phase="planning") for k in ("transient", "stream_broken", "unknown")]
    assert [d.phase for d in ds] == ["planning"] * 3
    assert all("planning phase" in d.prompt_extra for d in ds)


def test_final_decision_clears_pending_context() -> None:
    state = RetryState()
    run(state, err("transient"))
    run(state, err("auth"))
    assert state.pending_context == ""


def test_reset_for_a_persons_retry() -> None:
    state = RetryState(max_attempts=3)
    ds = schedule(state, "transient", 3)
    assert ds[2].final_status == "stuck"
    state.reset()
    assert (state.attempts, state.counts, state.last_decision) == (0, {}, None)
    d = run(state, err("transient"))
    assert (d.retry, d.retry_no) == (True, 1)


# --- the total attempt budget -------------------------------------------------------------

def test_total_budget_with_alternating_kinds() -> None:
    state = RetryState()  # 12 attempts
    kinds = ["transient", "unknown"] * 6
    ds = [run(state, err(k)) for k in kinds]
    assert all(d.retry for d in ds[:11])
    assert all(d.retry_no == 1 for d in ds[:11])  # each kind change restarts its counter
    last = ds[11]
    assert (last.retry, last.final_status, last.action) == (False, "stuck", "stuck")
    assert "attempt budget exhausted (12/12 attempts)" in last.reason
    assert state.attempts_left == 0


def test_budget_is_not_refilled_by_success() -> None:
    state = RetryState(max_attempts=2)
    run(state, err("transient"))
    state.on_attempt_started()
    state.on_success()
    d = state.on_error(err("transient"))
    assert d.final_status == "stuck"


# --- policies -----------------------------------------------------------------------------

def test_default_policies_match_design() -> None:
    p = DEFAULT_POLICIES
    assert (p["tool_concurrency"].max_retries, p["tool_concurrency"].max_delay) == (5, 32)
    assert (p["rate_limit"].initial_delay, p["rate_limit"].max_delay, p["rate_limit"].max_retries) == (5, 60, 5)
    assert (p["transient"].initial_delay, p["transient"].max_delay, p["transient"].max_retries) == (2, 30, 5)
    assert (p["stream_broken"].action, p["stream_broken"].max_retries, p["stream_broken"].initial_delay) == ("restart", 3, 1)
    assert (p["unknown"].max_retries, p["unknown"].initial_delay, p["unknown"].multiplier) == (2, 3, 1)
    assert (p["images_rejected"].max_retries, p["images_rejected"].action) == (1, "strip_images")
    for kind in ("auth", "context_overflow", "content_policy", "invalid_request", "max_turns", "cancelled"):
        assert (p[kind].max_retries, p[kind].action, p[kind].retries) == (0, "fail", False)


def test_delay_is_deterministic_without_jitter_and_bounded_with_it() -> None:
    policy = RetryPolicy(5, 2.0, 32.0)
    assert [policy.delay(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 32, 32]
    assert policy.delay(10_000) == 32  # no overflow
    jittery = RetryPolicy(5, 10.0, 100.0, jitter=0.5)
    rng = random.Random(1)
    values = [jittery.delay(1, rng=rng) for _ in range(200)]
    assert all(5.0 <= v <= 15.0 for v in values) and len(set(values)) > 100
    assert RetryPolicy(5, 10.0, 10.0, jitter=0.5).delay(3, rng=random.Random(2)) <= 10.0
    assert jittery.delay(1, retry_after=7, rng=rng) == 7  # Retry-After is exact


def test_overrides_from_a_task_file() -> None:
    task = task_from_dict({
        "title": "t", "subtasks": [{"prompt": "p"}],
        "retry": {"tool_concurrency": {"max_retries": 2, "initial_delay": 1},
                  "transient": {"max_delay": 5, "jitter": 0},
                  "auth": {"max_retries": 1}},
    })
    policies = policies_for(task.retry)
    assert policies["tool_concurrency"] == RetryPolicy(2, 1.0, 32.0, 2.0)
    assert policies["transient"].max_delay == 5
    assert policies["auth"].action == "retry" and policies["auth"].max_retries == 1
    assert policies["rate_limit"] == DEFAULT_POLICIES["rate_limit"]
    state = RetryState(policies, max_attempts=task.max_attempts)
    ds = schedule(state, "tool_concurrency", 3)
    assert [d.delay_s for d in ds[:2]] == [1, 2] and ds[2].final_status == "stuck"
    ts = schedule(RetryState(policies), "transient", 4)
    assert [d.delay_s for d in ts] == [2, 4, 5, 5]
    assert run(RetryState(policies), err("auth")).retry is True


def test_override_zero_retries_makes_a_retryable_kind_stuck_at_once() -> None:
    policies = policies_for({"transient": {"max_retries": 0}})
    d = run(RetryState(policies), err("transient"))
    assert (d.retry, d.final_status) == (False, "stuck")


@pytest.mark.parametrize("bad", [{"nope": {"max_retries": 1}}, {"transient": {"speed": 1}},
                                 {"transient": {"max_retries": -1}}, {"transient": {"jitter": True}}])
def test_bad_overrides_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        policies_for(bad)


def test_decision_feeds_retry_scheduled_event() -> None:
    d = run(RetryState(), err("stream_broken"))
    event = RetryScheduled(**d.retry_event_fields(), resume_at=100.0)
    assert (event.kind, event.retry_no, event.max_retries, event.delay_s, event.action) == (
        "stream_broken", 1, 3, 1.0, "restart")


def test_fractional_delay_in_reason() -> None:
    policies = policies_for({"transient": {"initial_delay": 1.5}})
    assert run(RetryState(policies), err("transient")).reason == "transient error — retry 1/5 in 1.5 s"


def test_images_rejected_retries_at_once() -> None:
    d = run(RetryState(), err("images_rejected"))
    assert (d.delay_s, d.reason) == (0, "images rejected — retry without images 1/1 in 0 s")


def test_restore_rebuilds_budget_and_consecutive_counters_from_stored_events() -> None:
    from shepherd.core.events import AttemptStarted, Error, RetryScheduled, SubtaskFinished

    def failed(n: int, kind: str, retry_no: int, reason: str = "retry") -> list:
        return [AttemptStarted(attempt=n, reason=reason), Error(kind=kind),
                RetryScheduled(kind=kind, retry_no=retry_no, max_retries=5)]

    history = (failed(1, "transient", 1, "first") + failed(2, "transient", 2) + failed(3, "rate_limit", 1)
               + failed(4, "rate_limit", 2) + [AttemptStarted(attempt=5, reason="resume")])
    st = RetryState()
    st.restore(history)
    assert st.attempts == 5 and st.counts == {"rate_limit": 2} and st.last_kind == "rate_limit"
    # the next rate limit is the 3rd consecutive one, not the 1st
    info = ErrorInfo(kind="rate_limit", message="429", exception_type="RateLimitError", status_code=429,
                     retryable=True)
    assert st.on_error(info).retry_no == 3
    # a person's retry starts everything over; a success clears the counters, not the budget
    again = RetryState()
    again.restore(history + [AttemptStarted(attempt=6, reason="user_retry")] + failed(7, "transient", 1))
    assert again.attempts == 2 and again.counts == {"transient": 1}
    done = RetryState()
    done.restore(history + [SubtaskFinished(status="done")])
    assert done.attempts == 5 and done.counts == {} and done.last_kind is None
    assert RetryState(max_attempts=5).budget_spent() == ""
    spent = RetryState(max_attempts=5)
    spent.restore(history)
    assert spent.budget_spent() == "attempt budget exhausted (5/5 attempts)"
