"""The event vocabulary: one typed, immutable record per thing that happens.

Every event travels the same way (backend -> supervisor -> store -> TUI) and has a
stable JSON form: a flat object with ``type``, the common fields and its own fields.
Events of a type this version does not know (read from a newer database) become
``OpaqueEvent`` and keep their data, so nothing is lost and nothing crashes.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import time
from dataclasses import field
from collections.abc import Callable
from typing import Any, ClassVar

from shepherd.core.records import record
from shepherd.core.text import json_line_safe

COMMON_FIELDS = ("session_id", "seq", "ts", "subtask_id", "attempt")


class _Stored:
    """One slot beside the fields: the JSON of a stored event whose fields are not decoded
    yet (see ``lazy_event``); unset on events built any other way."""

    __slots__ = ("_raw",)


_RAW = _Stored._raw  # type: ignore[attr-defined]  # the slot's descriptor
# Every event class is a frozen, keyword-only, slotted record (core.records: what
# dataclass(frozen=True) gives, its ==, hash and repr written once instead of per class:
# importing this module is on every command's start-up).
_event = record(frozen=True, kw_only=True, slots=True)


@_event
class Event(_Stored):
    """Fields every event has. ``seq`` is 0 until the store assigns it."""

    type: ClassVar[str] = ""
    session_id: str = ""
    seq: int = 0
    ts: float = 0.0
    subtask_id: str | None = None
    attempt: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        return out

    def to_json(self) -> str:
        """One line of JSON, exact, that a terminal or a line splitter cannot misread
        (C1 controls, U+2028/9 and bidi overrides escaped; see core.text.json_line_safe)."""
        return json_line_safe(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, default=str))

    def payload(self) -> dict[str, Any]:
        """The event's own fields (without the common ones)."""
        return {k: v for k, v in self.to_dict().items() if k not in COMMON_FIELDS and k != "type"}

    def with_(self, **changes: Any) -> "Event":
        """``dataclasses.replace(self, **changes)``, several times cheaper (no __init__):
        the engine stamps every event it handles."""
        cls = type(self)
        if not changes.keys() <= _field_set(cls):
            return dataclasses.replace(self, **changes)  # (its TypeError names the field)
        new = object.__new__(cls)
        for name, set_value in zip(field_names(cls), _plan(cls)[1]):
            set_value(new, changes[name] if name in changes else getattr(self, name))
        return new

    def __getattr__(self, name: str) -> Any:
        # Only reached when a slot is empty: a lazily read stored event's fields are
        # decoded from its JSON on the first read of any of them.
        try:
            raw = _RAW.__get__(self)
        except AttributeError:
            raw = None
        if raw is None or name not in _field_set(type(self)):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        _decode_into(self, raw)
        return object.__getattribute__(self, name)


# --- session lifecycle -----------------------------------------------------------


@_event
class SessionStarted(Event):
    type: ClassVar[str] = "session.started"
    title: str = ""
    backend: str = ""
    model: str | None = None
    workspace: str = ""
    task: dict[str, Any] = field(default_factory=dict)


@_event
class PlanReady(Event):
    type: ClassVar[str] = "plan.ready"
    subtasks: list[dict[str, Any]] = field(default_factory=list)  # [{id, title, prompt}]


@_event
class SubtaskStarted(Event):
    type: ClassVar[str] = "subtask.started"
    title: str = ""
    phase: str = "coding"  # planning | coding


@_event
class AttemptStarted(Event):
    type: ClassVar[str] = "attempt.started"
    reason: str = "first"  # first | retry | restart | user_retry | resume
    prompt_extra: str = ""


# --- streaming content -----------------------------------------------------------


@_event
class TextDelta(Event):
    type: ClassVar[str] = "text.delta"
    message_id: str = ""
    text: str = ""


@_event
class ThinkingDelta(Event):
    type: ClassVar[str] = "thinking.delta"
    message_id: str = ""
    text: str = ""


@_event
class MessageCompleted(Event):
    type: ClassVar[str] = "message.completed"
    message_id: str = ""
    role: str = "assistant"
    text: str = ""


# --- tools -------------------------------------------------------------------------

TOOL_STATUSES = ("ok", "error", "denied", "interrupted")


@_event
class ToolStarted(Event):
    type: ClassVar[str] = "tool.started"
    call_id: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)


@_event
class ToolFinished(Event):
    type: ClassVar[str] = "tool.finished"
    call_id: str = ""
    status: str = "ok"  # ok | error | denied | interrupted
    output: str = ""
    duration_s: float | None = None


@_event
class HookDecision(Event):
    type: ClassVar[str] = "hook.decision"
    call_id: str = ""
    tool: str = ""
    decision: str = "deny"  # allow | deny
    reason: str = ""


@_event
class ApprovalRequested(Event):
    """A gated tool call waits for a person's yes (``approve_tools``). Follows the call's
    ``tool.started``; ``reask_of`` names the call this asks again after a resume (the
    same id for openai/scripted, the withdrawn id for claude)."""

    type: ClassVar[str] = "approval.requested"
    call_id: str = ""
    tool: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    reask_of: str | None = None


APPROVAL_DECISIONS = ("approved", "denied")
APPROVAL_SOURCES = ("tui", "cli", "rule", "headless")


@_event
class ApprovalDecided(Event):
    """The answer to an ``approval.requested``. A denial reaches the agent as the tool's
    result with ``reason``; ``scope="session"`` approves the tool for the rest of the session."""

    type: ClassVar[str] = "approval.decided"
    call_id: str = ""
    decision: str = "denied"  # approved | denied
    source: str = "tui"  # tui | cli | rule | headless
    reason: str = ""
    scope: str = "call"  # call | session


# --- worktrees (isolation = "worktree") -------------------------------------------------

CHECKPOINT_AT = ("subtask_start", "subtask_done", "restore")
CHECKPOINT_FILES_MAX = 300  # a subtask_done checkpoint lists at most this many files


@_event
class Checkpoint(Event):
    """A worktree session's state recorded as a commit on its branch ``shepherd/<sid>``
    (``at``: subtask_start | subtask_done), or the worktree reset to one (``restore``: a
    person's clean retry; ``commit`` is the restored one). A subtask_done checkpoint lists
    the subtask's changed files (``core.worktree.FileChange`` as dicts, at most
    CHECKPOINT_FILES_MAX; ``files_more`` counts the rest), so the list outlives the worktree.
    ``reason`` says anything unusual (a commit made by plumbing because the agent left the
    branch; a checkpoint found in git that a crash kept out of the record)."""

    type: ClassVar[str] = "checkpoint"
    commit: str = ""
    at: str = "subtask_start"  # subtask_start | subtask_done | restore
    files: list[dict[str, Any]] = field(default_factory=list)
    files_more: int = 0
    reason: str = ""


WORKTREE_ACTIONS = ("created", "reused", "recreated", "merged", "discarded", "missing")


@_event
class WorktreeChanged(Event):
    """What happened to a session's worktree. Every one carries the whole identity (the
    derived ``worktrees`` row is rebuilt from the latest): ``path`` of the worktree,
    ``branch`` ``shepherd/<sid>``, ``origin`` the user's checkout it came from (where a
    merge runs), ``repo`` the shared git dir, ``base_commit``/``base_branch`` what it was
    made from (``base_branch`` None: a detached HEAD). ``commit``: the merge commit
    (merged). ``workspace``: where the agent works (``path`` + the task's sub-directory)."""

    type: ClassVar[str] = "worktree"
    action: str = "created"  # created | reused | recreated | merged | discarded | missing
    path: str = ""
    branch: str = ""
    origin: str = ""
    repo: str = ""
    workspace: str = ""
    base_commit: str = ""
    base_branch: str | None = None
    commit: str | None = None
    reason: str = ""


# --- accounting and liveness ---------------------------------------------------------


@_event
class Usage(Event):
    type: ClassVar[str] = "usage"
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


@_event
class Heartbeat(Event):
    type: ClassVar[str] = "heartbeat"
    idle_s: float = 0.0
    open_calls: int = 0
    stalled: bool = False  # set by the stall watchdog


# --- errors, retries, control ---------------------------------------------------------


@_event
class Error(Event):
    type: ClassVar[str] = "error"
    kind: str = "unknown"
    message: str = ""
    exception_type: str = ""
    status_code: int | None = None
    retryable: bool = False


@_event
class RetryScheduled(Event):
    type: ClassVar[str] = "retry.scheduled"
    kind: str = "unknown"
    retry_no: int = 1
    max_retries: int = 0
    delay_s: float = 0.0  # nominal (before SHEPHERD_TIME_SCALE)
    resume_at: float = 0.0  # wall-clock time the next attempt starts (nominal)
    action: str = "retry"  # retry | restart | repair


@_event
class Control(Event):
    type: ClassVar[str] = "control"
    command: str = ""  # pause | resume | retry | retry_now | skip | cancel | note
    source: str = "tui"  # tui | cli | pause_file | api
    text: str = ""
    clean: bool = False  # retry: the worktree's files were restored to the subtask's start


@_event
class SubtaskFinished(Event):
    type: ClassVar[str] = "subtask.finished"
    status: str = "done"  # done | failed | stuck | skipped | cancelled
    reason: str = ""


@_event
class SessionPaused(Event):
    type: ClassVar[str] = "session.paused"
    reason: str = ""


@_event
class SessionResumed(Event):
    type: ClassVar[str] = "session.resumed"
    reason: str = ""


@_event
class SessionFinished(Event):
    type: ClassVar[str] = "session.finished"
    status: str = "done"  # done | failed | cancelled
    reason: str = ""


@_event
class SessionInterrupted(Event):
    type: ClassVar[str] = "session.interrupted"
    reason: str = ""


@_event
class OpaqueEvent(Event):
    """An event of a type this version does not know; ``data`` keeps all of it."""

    type_name: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:  # type: ignore[override]
        return self.type_name

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.data)
        out.update({k: getattr(self, k) for k in COMMON_FIELDS})
        out["type"] = self.type_name
        return out


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        SessionStarted, PlanReady, SubtaskStarted, AttemptStarted, TextDelta, ThinkingDelta,
        MessageCompleted, ToolStarted, ToolFinished, HookDecision, ApprovalRequested,
        ApprovalDecided, Checkpoint, WorktreeChanged, Usage, Heartbeat, Error,
        RetryScheduled, Control, SubtaskFinished, SessionPaused, SessionResumed,
        SessionFinished, SessionInterrupted,
    )
}


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form. Unknown types become OpaqueEvent; unknown
    fields of known types (a newer writer) are ignored."""
    type_name = d.get("type", "")
    common = {k: d[k] for k in COMMON_FIELDS if k in d}
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        rest = {k: v for k, v in d.items() if k not in COMMON_FIELDS and k != "type"}
        return OpaqueEvent(type_name=type_name, data=rest, **common)
    names = {f.name for f in dataclasses.fields(cls)}
    own = {k: v for k, v in d.items() if k in names and k not in COMMON_FIELDS}
    return cls(**common, **own)


def event_from_json(text: str) -> Event:
    return event_from_dict(json.loads(text))


# --- lazily decoded stored events ------------------------------------------------------

_FIELD_SETS: dict[type, frozenset[str]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """The field names of an event class, in order (core.records keeps them on the class)."""
    return cls.__record_names__  # type: ignore[attr-defined,no-any-return]


def _field_set(cls: type) -> frozenset[str]:
    names = _FIELD_SETS.get(cls)
    if names is None:
        names = _FIELD_SETS[cls] = frozenset(field_names(cls))
    return names


# The types a stored row may be read lazily as (OpaqueEvent has its own JSON form).
LAZY_TYPES: dict[str, type[Event]] = {t: c for t, c in EVENT_TYPES.items() if c.to_dict is Event.to_dict}
_SEQ = Event.seq  # type: ignore[attr-defined]  # slot descriptors: set without __setattr__
_SESSION = Event.session_id  # type: ignore[attr-defined]


def lazy_event(cls: type[Event], session_id: str, seq: int, raw: str) -> Event:
    """A stored event of type ``cls`` whose other fields are decoded from ``raw`` (its
    stored JSON) when one of them is first read: a page of 1,000 rows costs no JSON
    parsing until something looks inside. The caller vouches that ``raw`` is a valid JSON
    object of this type, with this ``session_id`` and ``seq`` (the store checks it in its
    query); the values then are exactly ``event_from_json(raw)``'s."""
    ev = object.__new__(cls)
    _SEQ.__set__(ev, seq)
    _SESSION.__set__(ev, session_id)
    _RAW.__set__(ev, raw)
    return ev


def lazy_events(session_id: str, rows: list[tuple[Any, ...]],
                decode: Callable[[int, Any], Event]) -> list[Event]:
    """``lazy_event`` over rows of (seq, type, raw JSON, sound), inlined (a read of 100k
    events is common): a row not ``sound`` (not vouched for), or of a type not in
    LAZY_TYPES, is ``decode(seq, raw)`` instead."""
    out: list[Event] = []
    append = out.append
    new, set_seq, set_session, set_raw, types = object.__new__, _SEQ.__set__, _SESSION.__set__, _RAW.__set__, LAZY_TYPES
    for seq, type_name, raw, sound in rows:
        cls = types.get(type_name) if sound else None
        if cls is None:
            append(decode(seq, raw))
            continue
        ev = new(cls)
        set_seq(ev, seq)
        set_session(ev, session_id)
        set_raw(ev, raw)
        append(ev)
    return out


_PLANS: dict[type, tuple[Any, tuple[Any, ...]]] = {}


def _plan(cls: type) -> tuple[Any, tuple[Any, ...]]:
    """A getter of the class's field values out of its JSON dict (KeyError if one is
    missing) and the setters of its slots, in the same order."""
    plan = _PLANS.get(cls)
    if plan is None:
        names = field_names(cls)
        getter = operator.itemgetter(*names) if len(names) > 1 else (lambda d, n=names[0]: (d[n],))
        plan = _PLANS[cls] = (getter, tuple(getattr(cls, name).__set__ for name in names))
    return plan


def build_event(cls: type[Event], d: dict[str, Any]) -> Event:
    """``event_from_dict(d)`` for a dict with every field of ``cls`` (KeyError if not),
    several times faster: no __init__, no dataclasses.fields walk."""
    getter, setters = _plan(cls)
    ev = object.__new__(cls)
    for set_value, value in zip(setters, getter(d)):
        set_value(ev, value)
    return ev


try:  # the C scanner json.loads ends in, called directly: a third less per stored row
    from json.scanner import c_make_scanner as _c_make_scanner

    _SCAN: Any = _c_make_scanner(json.JSONDecoder())
except (ImportError, TypeError):  # pragma: no cover - interpreters without _json
    _SCAN = None


def loads(raw: str) -> Any:
    """``json.loads(raw)``, without its Python layers for JSON that starts at offset 0
    and runs to the end (every row we write); anything else goes through json.loads."""
    if _SCAN is not None:
        try:
            value, end = _SCAN(raw, 0)
        except StopIteration:  # (leading whitespace, or not JSON): json.loads says which
            return json.loads(raw)
        if end == len(raw):
            return value
    return json.loads(raw)


def _decode_into(ev: Event, raw: str) -> None:
    cls = type(ev)
    getter, setters = _plan(cls)
    try:
        d = loads(raw)
        values = getter(d)
    except KeyError:  # written by an older version: defaults fill the gaps
        full = event_from_dict(d)
        values = tuple(getattr(full, name) for name in field_names(cls))
    except Exception:  # noqa: BLE001 - valid JSON to SQLite but not to Python (too deep)
        full = cls(session_id=ev.session_id, seq=ev.seq)
        values = tuple(getattr(full, name) for name in field_names(cls))
    for set_value, value in zip(setters, values):
        set_value(ev, value)
    _RAW.__set__(ev, None)


def new_session_id() -> str:
    """Short, time-ordered, unique enough to type: 's' + 8 hex of time + 4 random hex."""
    return f"s{int(time.time()):08x}{os.urandom(2).hex()}"


def new_id(prefix: str = "m") -> str:
    return f"{prefix}_{os.urandom(6).hex()}"
