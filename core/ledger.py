"""ToolLedger: which tool calls are open, and the rule that each closes exactly once.

Parallel calls are normal: a start never closes earlier open calls. A result for a call
that already finished is a duplicate and is dropped. A finished call never reopens.
When an attempt ends in any way, ``flush`` closes every open call as interrupted.
"""

from __future__ import annotations


from shepherd.core.events import ToolFinished, ToolStarted
from shepherd.core.records import record


@record
class OpenCall:
    call_id: str
    name: str
    started_at: float  # monotonic
    attempt: int | None


class ToolLedger:
    def __init__(self) -> None:
        self._open: dict[str, OpenCall] = {}
        self._finished: set[str] = set()

    @property
    def open_calls(self) -> list[OpenCall]:
        return list(self._open.values())

    def has_open(self) -> bool:
        return bool(self._open)

    def is_finished(self, call_id: str) -> bool:
        return call_id in self._finished

    def start(self, ev: ToolStarted, now: float) -> bool:
        """Record a start; False if the call is already open or finished (drop the event)."""
        if ev.call_id in self._open or ev.call_id in self._finished:
            return False
        self._open[ev.call_id] = OpenCall(ev.call_id, ev.name, now, ev.attempt)
        return True

    def finish(self, ev: ToolFinished, now: float) -> ToolFinished | None:
        """Record a result; returns the event to store (with a duration filled in), or
        None for a duplicate. A result with no known start is accepted once."""
        if ev.call_id in self._finished:
            return None
        call = self._open.pop(ev.call_id, None)
        self._finished.add(ev.call_id)
        if ev.duration_s is None and call is not None:
            ev = ev.with_(duration_s=round(now - call.started_at, 3))  # type: ignore[assignment]
        return ev

    def flush(self, now: float, output: str = "interrupted: the attempt ended before this call finished") -> list[ToolFinished]:
        """Close every open call as interrupted (attempt ended in any way)."""
        out = []
        for call in list(self._open.values()):
            out.append(
                ToolFinished(
                    call_id=call.call_id,
                    status="interrupted",
                    output=output,
                    duration_s=round(now - call.started_at, 3),
                    attempt=call.attempt,
                )
            )
            self._finished.add(call.call_id)
        self._open.clear()
        return out
