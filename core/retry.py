"""Retry policies per error kind, the backoff schedule, and the per-subtask retry state.

Pure logic: no clock, no sleeps, no I/O. The supervisor asks ``RetryState.on_error``
what to do after a failed attempt and does the waiting itself (through the clock).

Rules (DESIGN "Errors and retries", each a lesson from the seeds):
- every retry path is bounded, per kind and by a total attempt budget per subtask;
- counters are per kind and consecutive: a success, or an error of another kind,
  resets them, together with the pending retry context (of every phase);
- a retry keeps the phase it failed in (planning stays planning);
- every retry continues from the committed history; the user message is never re-sent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from shepherd.core import prompts
from shepherd.core.errors import ErrorInfo, kind_label
from shepherd.core.records import record
from shepherd.core.task import RETRY_KEYS

# A server's Retry-After is honoured up to this (1 h): beyond it waiting in-process is
# pointless; the next attempt will get a fresh Retry-After if the limit still holds.
MAX_RETRY_AFTER = 3600.0
ACTIONS = ("retry", "restart", "strip_images", "fail")


class _Random(Protocol):
    def random(self) -> float: ...


@record(frozen=True)
class RetryPolicy:
    max_retries: int
    initial_delay: float
    max_delay: float
    multiplier: float = 2.0
    jitter: float = 0.0  # fraction: the delay varies by up to ±jitter×delay (never above max_delay)
    action: str = "retry"  # retry | restart | strip_images | fail

    @property
    def retries(self) -> bool:
        return self.action != "fail" and self.max_retries > 0

    def delay(self, retry_no: int, retry_after: float | None = None, rng: _Random | None = None) -> float:
        """Nominal seconds before retry ``retry_no`` (1-based).

        ``initial_delay * multiplier**(retry_no-1)`` capped at ``max_delay``, then jitter.
        A given ``retry_after`` (the server's Retry-After) *is* the delay: no backoff, no
        jitter, only clamped to [0, MAX_RETRY_AFTER]."""
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(0.0, float(retry_after)), MAX_RETRY_AFTER)
        n = max(1, int(retry_no))
        try:
            d = self.initial_delay * self.multiplier ** (n - 1)
        except OverflowError:
            d = math.inf
        d = max(0.0, min(d, self.max_delay))
        if self.jitter > 0 and d > 0:
            r = (rng or random).random()
            d = min(self.max_delay, max(0.0, d * (1.0 + self.jitter * (2.0 * r - 1.0))))
        return d


def _fail() -> RetryPolicy:
    return RetryPolicy(max_retries=0, initial_delay=0.0, max_delay=0.0, multiplier=1.0, action="fail")


DEFAULT_POLICIES: dict[str, RetryPolicy] = {
    "tool_concurrency": RetryPolicy(5, 2.0, 32.0, 2.0),  # 2,4,8,16,32; repair from retry 2
    "rate_limit": RetryPolicy(5, 5.0, 60.0, 2.0),  # Retry-After, else 5,10,20,40,60
    "auth": _fail(),
    "context_overflow": _fail(),
    "content_policy": _fail(),
    "images_rejected": RetryPolicy(1, 0.0, 0.0, 1.0, action="strip_images"),  # no wait: nothing to wait for
    "transient": RetryPolicy(5, 2.0, 30.0, 2.0),  # 2,4,8,16,30
    "stream_broken": RetryPolicy(3, 1.0, 1.0, 1.0, action="restart"),  # 1,1,1
    "invalid_request": _fail(),
    "max_turns": _fail(),
    "cancelled": _fail(),  # not an error: never retried (RetryState handles it apart)
    "unknown": RetryPolicy(2, 3.0, 3.0, 1.0),  # 3,3
    "check_failed": RetryPolicy(2, 1.0, 1.0, 1.0),  # max_retries set from Task.max_check_retries
}


def policies_for(overrides: Mapping[str, Mapping[str, float]] | None) -> dict[str, RetryPolicy]:
    """DEFAULT_POLICIES with a task file's ``[retry.<kind>]`` overrides merged in.

    Setting ``max_retries > 0`` on a kind that fails by default (e.g. ``[retry.auth]``)
    makes it retried: the person asked for it explicitly."""
    out = dict(DEFAULT_POLICIES)
    for kind, settings in (overrides or {}).items():
        if kind not in out:
            raise ValueError(f"retry.{kind}: unknown error kind")
        unknown = set(settings) - set(RETRY_KEYS)
        if unknown:
            raise ValueError(f"retry.{kind}.{sorted(unknown)[0]}: unknown setting")
        changes: dict[str, Any] = {}
        for key, value in settings.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"retry.{kind}.{key}: must be a number >= 0")
            changes[key] = int(value) if key == "max_retries" else float(value)
        policy = replace(out[kind], **changes)
        if policy.action == "fail" and policy.max_retries > 0:
            policy = replace(policy, action="retry")
        out[kind] = policy
    return out


@record(frozen=True)
class RetryDecision:
    retry: bool
    kind: str
    retry_no: int  # the retry this decision schedules (1-based); when not retrying: retries already made
    max_retries: int
    delay_s: float  # nominal seconds (before SHEPHERD_TIME_SCALE)
    action: str  # retry | restart | repair | strip_images | fail | stuck | cancel
    phase: str  # the phase the next attempt runs in (a planning retry stays in planning)
    prompt_extra: str  # retry context for the next prompt (from core.prompts)
    repair: bool  # tool_concurrency from the 2nd consecutive retry: repair the transcript first
    strip_images: bool
    continue_history: bool  # always True when retrying: continue from the committed history
    final_status: str | None  # "failed" | "stuck" | None (retrying, or cancelled)
    reason: str  # one line for people

    def retry_event_fields(self) -> dict[str, Any]:
        """Fields for ``core.events.RetryScheduled`` (the engine adds resume_at)."""
        return {"kind": self.kind, "retry_no": self.retry_no, "max_retries": self.max_retries,
                "delay_s": self.delay_s, "action": self.action}


def _secs(d: float) -> str:
    return f"{d:.0f}" if float(d).is_integer() else f"{d:.1f}"


class RetryState:
    """Per-subtask retry bookkeeping. Call ``on_attempt_started()`` when an attempt starts,
    ``on_success()`` when an attempt is accepted (it succeeded and its check, if any,
    passed — a failed check is ``on_error(classify(CheckFailed(...)))``), ``on_error()``
    after a failed attempt, and ``reset()`` when a person retries a finished subtask."""

    def __init__(self, policies: Mapping[str, RetryPolicy] | None = None, max_attempts: int = 12,
                 max_check_retries: int = 2, rng: _Random | None = None) -> None:
        self.policies: dict[str, RetryPolicy] = dict(policies or DEFAULT_POLICIES)
        check = self.policies.get("check_failed", DEFAULT_POLICIES["check_failed"])
        self.policies["check_failed"] = replace(check, max_retries=max(0, int(max_check_retries)))
        self.max_attempts = max(1, int(max_attempts))
        self.attempts = 0  # attempts started since the subtask (re)started
        self.last_kind: str | None = None
        self.last_decision: RetryDecision | None = None
        self._counts: dict[str, int] = {}
        self._context = ""
        self._context_phase: str | None = None
        self._rng = rng

    # --- display ----------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Consecutive retries per kind (only the last kind can be non-zero)."""
        return dict(self._counts)

    def count(self, kind: str) -> int:
        return self._counts.get(kind, 0)

    @property
    def attempts_left(self) -> int:
        return max(0, self.max_attempts - self.attempts)

    @property
    def pending_context(self) -> str:
        """The retry context waiting for the next attempt ("" if none)."""
        return self._context

    @property
    def pending_phase(self) -> str | None:
        return self._context_phase

    def context_for(self, phase: str) -> str:
        return self._context if self._context_phase == phase else ""

    def budget_spent(self) -> str:
        """Why no further attempt may start ("" while the budget lasts)."""
        if self.attempts < self.max_attempts:
            return ""
        return f"attempt budget exhausted ({self.attempts}/{self.max_attempts} attempts)"

    # --- transitions --------------------------------------------------------------------
    def on_attempt_started(self) -> int:
        """Count an attempt against the budget; returns its number (1-based)."""
        self.attempts += 1
        return self.attempts

    def _clear_retry_state(self) -> None:
        # Everything retry-related, together (a seed reset the counter but kept the
        # planning-phase context).
        self._counts.clear()
        self.last_kind = None
        self._context = ""
        self._context_phase = None

    def on_success(self) -> None:
        """An attempt was accepted: consecutive counters and pending contexts reset.
        The attempt budget is per subtask and is not refilled (``reset()`` does that)."""
        self._clear_retry_state()

    def reset(self) -> None:
        """A person retries a finished subtask: everything starts over."""
        self._clear_retry_state()
        self.attempts = 0
        self.last_decision = None

    def restore(self, history: Iterable[Any]) -> None:
        """Rebuild the budget and the consecutive counters from a subtask's stored events
        (oldest first; attempt.started, error, retry.scheduled, subtask.finished), as they
        stood when its last runner stopped: a crash and a resume refill nothing. The same
        transitions as live: a person's retry (an attempt with reason ``user_retry``) starts
        over like ``reset()``; an accepted attempt (``done``) clears the counters like
        ``on_success()``; an error of another kind starts the count over. A retry that was
        scheduled but never started leaves its context in ``pending_context`` (rebuilt from
        the stored error; not for a failed check, whose output is not stored with it)."""
        phase, error = "coding", None
        for ev in history:
            kind = getattr(ev, "kind", None)
            if ev.type == "subtask.started":
                phase = getattr(ev, "phase", "") or phase
            elif ev.type == "attempt.started":
                if getattr(ev, "reason", "") == "user_retry":
                    self.reset()
                self.attempts += 1
                self._context, self._context_phase = "", None  # the retry it waited for has started
            elif ev.type in ("error", "retry.scheduled") and kind and kind != "cancelled":
                if kind != self.last_kind:
                    self._clear_retry_state()
                self.last_kind = kind
                if ev.type == "error":
                    error = ev
                else:
                    n = int(getattr(ev, "retry_no", 0) or 0)
                    self._counts[kind] = max(self._counts.get(kind, 0), n)
                    # (a failed check's context needs its output, which the error does not keep)
                    if error is not None and error.kind == kind and (
                            kind != "check_failed" or error.exception_type == "PlanInvalid"):
                        info = ErrorInfo(kind=kind, message=error.message, exception_type=error.exception_type,
                                         status_code=error.status_code, retryable=error.retryable)
                        self._context = prompts.retry_context(info, n, int(getattr(ev, "max_retries", 0) or 0), phase)
                        self._context_phase = phase
            elif ev.type == "subtask.finished":
                self._context, self._context_phase = "", None
                if getattr(ev, "status", "") == "done":
                    self._clear_retry_state()

    def on_error(self, info: ErrorInfo, phase: str = "coding") -> RetryDecision:
        kind = info.kind
        label = kind_label(kind)
        if kind == "cancelled":  # not an error: nothing retried, nothing counted
            decision = self._final(info, phase, 0, 0, "cancel", None, "cancelled")
            self.last_decision = decision
            return decision
        policy = self.policies.get(kind) or self.policies["unknown"]
        if kind != self.last_kind:  # consecutive per kind: another kind starts over
            self._clear_retry_state()
        self.last_kind = kind
        done = self._counts.get(kind, 0)
        if policy.action == "fail":
            decision = self._final(info, phase, done, policy.max_retries, "fail", "failed",
                                   f"{label}: {info.message} (not retried)")
        elif done >= policy.max_retries:
            n = policy.max_retries
            decision = self._final(info, phase, done, n, "stuck", "stuck",
                                   f"{label}: {n} {'retry' if n == 1 else 'retries'} exhausted")
        elif self.attempts >= self.max_attempts:
            decision = self._final(info, phase, done, policy.max_retries, "stuck", "stuck",
                                   f"{label}: attempt budget exhausted "
                                   f"({self.attempts}/{self.max_attempts} attempts)")
        else:
            decision = self._schedule(info, policy, done + 1, phase)
        self.last_decision = decision
        return decision

    def _final(self, info: ErrorInfo, phase: str, retry_no: int, max_retries: int, action: str,
               final_status: str | None, reason: str) -> RetryDecision:
        self._context = ""
        self._context_phase = None
        return RetryDecision(
            retry=False, kind=info.kind, retry_no=retry_no, max_retries=max_retries, delay_s=0.0,
            action=action, phase=phase, prompt_extra="", repair=False, strip_images=False,
            continue_history=False, final_status=final_status, reason=reason,
        )

    def _schedule(self, info: ErrorInfo, policy: RetryPolicy, n: int, phase: str) -> RetryDecision:
        kind = info.kind
        self._counts[kind] = n
        retry_after = info.retry_after if kind == "rate_limit" else None
        delay = policy.delay(n, retry_after, self._rng)
        repair = kind == "tool_concurrency" and n >= 2
        strip = policy.action == "strip_images"
        action = "repair" if repair else policy.action
        extra = prompts.retry_context(info, n, policy.max_retries, phase)
        self._context = extra
        self._context_phase = phase
        verb = {"restart": "restart", "strip_images": "retry without images"}.get(policy.action, "retry")
        reason = f"{kind_label(kind)} — {verb} {n}/{policy.max_retries} in {_secs(delay)} s"
        if repair:
            reason += " (transcript repaired first)"
        elif retry_after is not None:
            reason += " (Retry-After)"
        return RetryDecision(
            retry=True, kind=kind, retry_no=n, max_retries=policy.max_retries, delay_s=delay,
            action=action, phase=phase, prompt_extra=extra, repair=repair, strip_images=strip,
            continue_history=True, final_status=None, reason=reason,
        )
