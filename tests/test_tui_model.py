"""The session view model: a pure projection of events (no Textual involved)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from shepherd.core import events as ev
from shepherd.tui import model as m

T0 = 1_800_000_000.0


class Seq:
    """Hands out gapless seqs and timestamps like the store does."""

    def __init__(self, sid: str = "s1") -> None:
        self.sid = sid
        self.seq = 0
        self.ts = T0

    def __call__(self, cls: type[ev.Event], dt: float = 0.1, **kw: Any) -> ev.Event:
        self.seq += 1
        self.ts += dt
        kw.setdefault("session_id", self.sid)
        return cls(seq=self.seq, ts=self.ts, **kw)


def started_session(s: Seq, subtasks: tuple[str, ...] = ("a", "b")) -> list[ev.Event]:
    return [
        s(ev.SessionStarted, title="Fix it", backend="scripted", model="fake-1"),
        s(ev.PlanReady, subtasks=[{"id": i, "title": f"Task {i}", "prompt": "p"} for i in subtasks]),
        s(ev.SubtaskStarted, subtask_id=subtasks[0], title=f"Task {subtasks[0]}"),
        s(ev.AttemptStarted, subtask_id=subtasks[0], attempt=1, reason="first"),
    ]


def kinds(st: m.SubtaskView) -> list[str]:
    return [b.kind for b in st.blocks]


def test_model_module_does_not_import_textual() -> None:
    assert "textual" not in m.__dict__
    src = open(m.__file__, encoding="utf-8").read()
    assert "import textual" not in src and "from textual" not in src


def test_session_info_and_plan_order() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    ch = model.apply(started_session(s, ("a", "b", "c")))
    info = model.session
    assert (info.title, info.backend, info.model, info.status) == ("Fix it", "scripted", "fake-1", "running")
    assert info.started_at == pytest.approx(T0 + 0.1)
    assert [st.id for st in model.ordered_subtasks()] == ["a", "b", "c"]
    assert [st.state for st in model.ordered_subtasks()] == ["running", "pending", "pending"]
    assert model.subtasks["a"].attempts == 1
    assert ch.structure and ch.session and {"a", "b", "c"} <= ch.subtasks
    assert kinds(model.subtasks["a"]) == ["attempt"]
    assert model.default_subtask_id() == "a"
    assert info.is_live


def test_text_deltas_accumulate_into_one_block_and_completion_replaces() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    ch = model.apply([s(ev.TextDelta, subtask_id="a", attempt=1, message_id="m1", text=t)
                      for t in ["Hel", "lo ", "", "wor", "ld"]])
    st = model.subtasks["a"]
    assert kinds(st) == ["attempt", "text"]
    tb = st.blocks[1]
    assert isinstance(tb, m.TextBlock) and tb.text == "Hello world" and not tb.completed
    assert [b.bid for b in ch.added] == [tb.bid] and not ch.updated  # new block, not also "updated"
    v = tb.version
    ch = model.apply([s(ev.MessageCompleted, subtask_id="a", message_id="m1", text="Hello, world!")])
    assert tb.text == "Hello, world!" and tb.completed and tb.version > v
    assert list(ch.updated) == [tb.bid] and not ch.added
    # an empty completion keeps what streamed
    model.apply([s(ev.TextDelta, subtask_id="a", message_id="m2", text="kept"),
                 s(ev.MessageCompleted, subtask_id="a", message_id="m2", text="")])
    assert st.blocks[-1].text == "kept" and st.blocks[-1].completed


def test_message_completed_without_deltas_creates_block_and_empty_is_ignored() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.MessageCompleted, subtask_id="a", message_id="x", text=""),
                 s(ev.MessageCompleted, subtask_id="a", message_id="y", text="whole message")])
    st = model.subtasks["a"]
    assert kinds(st) == ["attempt", "text"]
    assert st.blocks[1].text == "whole message" and st.blocks[1].completed


def test_empty_message_ids_append_to_the_open_text_block_only() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.TextDelta, subtask_id="a", text="one "), s(ev.TextDelta, subtask_id="a", text="two"),
                 s(ev.ToolStarted, subtask_id="a", call_id="c1", name="Bash", input={"command": "ls"}),
                 s(ev.TextDelta, subtask_id="a", text="three")])
    st = model.subtasks["a"]
    assert kinds(st) == ["attempt", "text", "tool", "text"]
    assert [b.text for b in st.blocks if isinstance(b, m.TextBlock)] == ["one two", "three"]


def test_thinking_blocks_are_separate_from_text() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ThinkingDelta, subtask_id="a", message_id="t", text="hmm "),
                 s(ev.ThinkingDelta, subtask_id="a", message_id="t", text="ok"),
                 s(ev.TextDelta, subtask_id="a", message_id="t", text="Answer")])
    st = model.subtasks["a"]
    assert kinds(st) == ["attempt", "thinking", "text"]
    assert st.blocks[1].text == "hmm ok" and st.blocks[2].text == "Answer"


def test_tool_lifecycle_and_duration() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash",
                   input={"command": "pytest -q", "timeout": 60})])
    tb = model.subtasks["a"].blocks[-1]
    assert isinstance(tb, m.ToolBlock) and tb.running and tb.summary == "pytest -q timeout=60"
    assert tb.elapsed(tb.started_ts + 2.5) == pytest.approx(2.5)
    assert model.subtasks["a"].open_tools() == [tb]
    ch = model.apply([s(ev.ToolFinished, subtask_id="a", call_id="c1", status="ok", output="2 passed",
                        duration_s=1.25, dt=1.3)])
    assert tb.status == "ok" and tb.output == "2 passed" and tb.duration_s == 1.25
    assert list(ch.updated) == [tb.bid]
    # a duplicate finish never changes a finished call
    model.apply([s(ev.ToolFinished, subtask_id="a", call_id="c1", status="error", output="dup")])
    assert tb.status == "ok" and tb.output == "2 passed"
    # duration falls back to the timestamps
    model.apply([s(ev.ToolStarted, subtask_id="a", call_id="c2", name="Read", input={}),
                 s(ev.ToolFinished, subtask_id="a", call_id="c2", status="error", output="boom", dt=2.0)])
    tb2 = model.subtasks["a"].blocks[-1]
    assert tb2.status == "error" and tb2.duration_s == pytest.approx(2.0)


def test_tool_finished_before_started_is_tolerated() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ToolFinished, subtask_id="a", call_id="c9", status="ok", output="early"),
                 s(ev.ToolStarted, subtask_id="a", call_id="c9", name="Grep", input={"pattern": "TODO"})])
    st = model.subtasks["a"]
    tools = [b for b in st.blocks if isinstance(b, m.ToolBlock)]
    assert len(tools) == 1
    assert (tools[0].name, tools[0].status, tools[0].output, tools[0].summary) == ("Grep", "ok", "early", "TODO")


def test_parallel_tools_stay_open_independently() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ToolStarted, subtask_id="a", attempt=1, call_id=f"c{i}", name="Read",
                   input={"file_path": f"f{i}.py"}) for i in range(3)])
    model.apply([s(ev.ToolFinished, subtask_id="a", call_id="c1", status="ok")])
    assert [b.status for b in model.subtasks["a"].blocks if isinstance(b, m.ToolBlock)] == ["running", "ok", "running"]


def test_hook_denial_marks_the_call() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ToolStarted, subtask_id="a", call_id="c1", name="Task", input={"run_in_background": True}),
                 s(ev.HookDecision, subtask_id="a", call_id="c1", tool="Task", decision="deny",
                   reason="background sub-agents are not allowed"),
                 s(ev.ToolFinished, subtask_id="a", call_id="c1", status="denied", output="denied")])
    st = model.subtasks["a"]
    assert kinds(st) == ["attempt", "tool", "hook"]
    assert st.blocks[1].status == "denied" and "background" in st.blocks[1].denial
    assert st.blocks[2].reason == "background sub-agents are not allowed"


def test_retry_scheduled_then_next_attempt() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.Error, subtask_id="a", attempt=1, kind="tool_concurrency", message="API Error: 400",
                   status_code=400, retryable=True)])
    e = s(ev.RetryScheduled, subtask_id="a", attempt=1, kind="tool_concurrency", retry_no=2, max_retries=5,
          delay_s=4.0, resume_at=0.0, action="retry")
    e = e.with_(resume_at=e.ts + 4.0)
    model.apply([e])
    st = model.subtasks["a"]
    assert st.state == "waiting_retry" and st.retries == 1 and st.last_error_kind == "tool_concurrency"
    rb = st.retry
    assert isinstance(rb, m.RetryBlock) and rb.active and model.waiting_retry() is st
    assert rb.text(e.ts + 1.2) == "tool concurrency — retry 2/5 in 3 s"
    assert rb.progress(e.ts + 1.0) == pytest.approx(0.25)
    assert rb.seconds_left(e.ts + 10) == 0 and rb.text(e.ts + 10) == "tool concurrency — retry 2/5 now"
    assert model.session.retries == 1
    v = rb.version
    ch = model.apply([s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="retry",
                        prompt_extra="Use one tool at a time.")])
    assert st.state == "running" and st.retry is None and not rb.active and rb.outcome == "started"
    assert rb.version > v and rb.bid in ch.updated
    assert kinds(st) == ["attempt", "error", "retry", "attempt"]
    assert st.blocks[-1].reason == "retry" and st.blocks[-1].number == 2 and st.attempts == 2
    assert model.waiting_retry() is None


def test_new_attempt_interrupts_calls_left_open_by_the_previous_one() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ToolStarted, subtask_id="a", attempt=1, call_id="c1", name="Bash", input={}),
                 s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="restart")])
    tb = model.subtasks["a"].blocks[1]
    assert tb.status == "interrupted"


def test_pause_resume_and_pause_request() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.Control, command="pause", source="tui")])
    assert model.session.pause_requested and model.session.status == "running"
    note = model.subtasks["a"].blocks[-1]
    assert isinstance(note, m.NoteBlock) and note.text == "pause requested (tui)"
    model.apply([s(ev.SessionPaused, reason="user")])
    assert model.session.status == "paused" and not model.session.pause_requested
    assert model.subtasks["a"].state == "paused" and model.subtasks["b"].state == "pending"
    model.apply([s(ev.SessionResumed)])
    assert model.session.status == "running" and model.subtasks["a"].state == "running"


def _countdown(s: Seq, model: m.SessionModel, *, delay: float = 5.0, wait: float | None = None) -> m.RetryBlock:
    e = s(ev.RetryScheduled, subtask_id="a", attempt=1, kind="transient", retry_no=1, max_retries=5,
          delay_s=delay, action="retry")
    model.apply([e.with_(resume_at=e.ts + (delay if wait is None else wait))])
    rb = model.subtasks["a"].retry
    assert rb is not None and rb.active
    return rb


def test_pause_during_a_countdown_ends_it_and_says_paused() -> None:
    """The engine stops waiting when paused and starts the retry on resume: the view says
    "paused", never "now starting…" with a full bar while nothing starts."""
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    rb = _countdown(s, model)
    model.apply([s(ev.Control, command="pause", source="tui"), s(ev.SessionPaused, reason="paused by tui")])
    assert model.subtasks["a"].state == "paused" and model.waiting_retry() is None
    assert not rb.active and rb.outcome == "paused"
    assert rb.summary() == "transient error — retry 1/5 (paused: starts on resume)"
    model.apply([s(ev.SessionResumed, reason="resumed by tui")])
    assert model.subtasks["a"].state == "running" and model.waiting_retry() is None
    model.apply([s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="retry")])
    assert rb.outcome == "paused" and model.subtasks["a"].attempts == 2


def test_retry_now_ends_the_countdown_at_once() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    rb = _countdown(s, model)
    model.apply([s(ev.Control, command="retry_now", source="tui")])
    assert not rb.active and model.waiting_retry() is None and model.subtasks["a"].state == "running"
    assert rb.summary() == "transient error — retry 1/5 now (wait skipped)"  # not "after 5 s"
    model.apply([s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="retry")])
    assert rb.outcome == "retry_now"


def test_a_persons_retry_ends_the_countdown_but_a_refused_one_does_not() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    rb = _countdown(s, model)
    model.apply([s(ev.Control, command="retry", subtask_id="a", text="refused: whatever", source="cli")])
    assert rb.active
    model.apply([s(ev.Control, command="retry", subtask_id="a", source="cli")])
    assert not rb.active and rb.summary() == "transient error — retry 1/5 (restarted by a person)"


def test_a_full_countdown_says_how_long_it_really_waited() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    rb = _countdown(s, model, delay=2.0, wait=10.0)  # SHEPHERD_TIME_SCALE=5: 2 s nominal, 10 s real
    assert rb.text(rb.ts + 3) == "transient error — retry 1/5 in 7 s"
    assert rb.progress(rb.ts + 5) == pytest.approx(0.5)  # follows the real wait, not delay_s
    model.apply([s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="retry", dt=10)])
    assert rb.summary() == "transient error — retry 1/5 after 10 s"


def test_reopened_session_paused_mid_countdown_shows_no_countdown() -> None:
    s = Seq()
    events = started_session(s)
    e = s(ev.RetryScheduled, subtask_id="a", attempt=1, kind="transient", retry_no=1, max_retries=5, delay_s=5)
    events += [e.with_(resume_at=e.ts + 5), s(ev.SessionPaused, reason="paused by cli")]
    row = Row(status="paused", ended_at=None, last_seq=s.seq)
    model = m.SessionModel.from_history(row, [StRow("a", 0, "paused", retries=1)], events)
    assert model.waiting_retry() is None
    rb = next(b for b in model.subtasks["a"].blocks if isinstance(b, m.RetryBlock))
    assert not rb.active and rb.outcome == "paused"


def test_notes_and_control_go_to_the_current_subtask() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.Control, command="note", text="use pytest -x", source="tui"),
                 s(ev.Control, command="skip", subtask_id="b", source="cli")])
    a, b = model.subtasks["a"], model.subtasks["b"]
    assert a.blocks[-1].category == "note" and a.blocks[-1].text == "note (tui): use pytest -x"
    assert b.blocks[-1].text == "skip requested (cli)"


def test_subtask_finished_states_and_end_block() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ToolStarted, subtask_id="a", call_id="c1", name="Bash", input={}),
                 s(ev.SubtaskFinished, subtask_id="a", status="stuck", reason="budget exceeded")])
    st = model.subtasks["a"]
    assert st.state == "stuck" and st.reason == "budget exceeded"
    assert kinds(st)[-1] == "end" and st.blocks[-1].status == "stuck"
    assert st.blocks[1].status == "interrupted"  # never a dangling spinner
    for status in ("done", "failed", "skipped", "cancelled"):
        model.apply([s(ev.SubtaskStarted, subtask_id="b"), s(ev.SubtaskFinished, subtask_id="b", status=status)])
        assert model.subtasks["b"].state == status
    model.apply([s(ev.SubtaskFinished, subtask_id="b", status="weird")])
    assert model.subtasks["b"].state == "failed"


def test_session_interrupted_leaves_no_running_tool() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.ToolStarted, subtask_id="a", call_id="c1", name="Bash", input={}),
                 s(ev.ToolStarted, subtask_id="a", call_id="c2", name="Bash", input={}),
                 s(ev.SessionInterrupted, reason="runner died")])
    st = model.subtasks["a"]
    assert [b.status for b in st.blocks if isinstance(b, m.ToolBlock)] == ["interrupted", "interrupted"]
    assert st.state == "interrupted" and model.subtasks["b"].state == "pending"
    assert model.session.status == "interrupted" and not model.session.is_live
    assert st.blocks[-1].text == "session interrupted: runner died"


def test_session_finished_cancelled_marks_active_subtasks() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.RetryScheduled, subtask_id="a", kind="rate_limit", retry_no=1, max_retries=5,
                   delay_s=60, resume_at=T0 + 60), s(ev.SessionFinished, status="cancelled")])
    st = model.subtasks["a"]
    assert st.state == "cancelled" and st.retry is None and model.session.status == "cancelled"
    assert model.session.ended_at is not None


@dataclass(frozen=True)
class Row:
    """Stand-ins with the store's row fields (the model only reads attributes)."""

    id: str = "s1"
    title: str = "Fix it"
    backend: str = "claude"
    model: str | None = "sonnet"
    workspace: str = "/w"
    status: str = "interrupted"
    started_at: float = T0
    updated_at: float = T0 + 50
    ended_at: float | None = T0 + 50
    last_seq: int = 6
    subtasks_total: int = 2
    subtasks_done: int = 0
    retries: int = 3
    input_tokens: int = 1000
    output_tokens: int = 200
    cost_usd: float = 0.5
    task: dict[str, Any] = field(default_factory=dict)
    last_event_ts: float | None = T0 + 50


@dataclass(frozen=True)
class StRow:
    id: str
    position: int
    status: str
    title: str = ""
    session_id: str = "s1"
    phase: str = "coding"
    attempts: int = 1
    retries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    last_error_kind: str | None = None


def test_rehydrated_dead_session_has_no_spinner_even_without_interrupt_event() -> None:
    """Rows say the session is over, but the last page still shows an open call."""
    s = Seq()
    evs = started_session(s) + [s(ev.ToolStarted, subtask_id="a", call_id="c1", name="Bash", input={})]
    model = m.SessionModel.from_history(Row(status="failed", last_seq=s.seq),
                                        [StRow("a", 0, "running"), StRow("b", 1, "pending")], evs)
    tb = [b for b in model.subtasks["a"].blocks if isinstance(b, m.ToolBlock)][0]
    assert tb.status == "interrupted"
    assert model.subtasks["a"].state == "interrupted"


def test_rehydrated_live_session_keeps_its_spinner() -> None:
    s = Seq()
    evs = started_session(s) + [s(ev.ToolStarted, subtask_id="a", call_id="c1", name="Bash", input={})]
    model = m.SessionModel.from_history(Row(status="running", ended_at=None, last_seq=s.seq),
                                        [StRow("a", 0, "running"), StRow("b", 1, "pending")], evs)
    assert model.subtasks["a"].blocks[-1].status == "running"


def test_rows_then_page_counts_usage_only_after_base_seq() -> None:
    """Rows hold totals up to last_seq; the page overlaps them and must not double count."""
    s = Seq()
    evs = started_session(s) + [s(ev.Usage, subtask_id="a", input_tokens=100, output_tokens=20, cost_usd=0.1),
                                s(ev.RetryScheduled, subtask_id="a", kind="transient", retry_no=1,
                                  max_retries=5, delay_s=2, resume_at=T0 + 2)]
    row = Row(status="running", ended_at=None, last_seq=s.seq, input_tokens=1000, output_tokens=200,
              cost_usd=0.5, retries=3)
    model = m.SessionModel.from_history(row, [StRow("a", 0, "waiting_retry", retries=3),
                                              StRow("b", 1, "pending", title="B")], evs)
    assert (model.session.input_tokens, model.session.output_tokens) == (1000, 200)
    assert model.session.cost_usd == pytest.approx(0.5) and model.session.retries == 3
    assert model.subtasks["a"].retries == 3 and model.subtasks["a"].state == "waiting_retry"
    assert model.subtasks["b"].title == "Task b"  # the plan event in the page renamed it
    model.apply([s(ev.Usage, input_tokens=5, output_tokens=5, cost_usd=0.01)])
    assert model.session.tokens == 1210 and model.session.cost_usd == pytest.approx(0.51)


def test_rows_alone_give_states_for_subtasks_outside_the_page() -> None:
    model = m.SessionModel.from_history(Row(status="done"), [StRow("x", 0, "done", title="X"),
                                                              StRow("y", 1, "skipped", title="Y")], [])
    assert [(st.id, st.state, st.title) for st in model.ordered_subtasks()] == [("x", "done", "X"), ("y", "skipped", "Y")]
    assert model.session.tokens == 1200


def test_duplicate_and_old_seqs_are_ignored() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    evs = started_session(s) + [s(ev.TextDelta, subtask_id="a", message_id="m", text="x")]
    model.apply(evs)
    model.apply(evs[-2:])  # a live batch overlapping the history page
    assert model.subtasks["a"].blocks[-1].text == "x"
    assert model.last_seq == s.seq and model.first_seq == 1


def test_unknown_events_become_plain_lines() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    opaque = ev.event_from_dict({"type": "future.thing", "session_id": "s1", "seq": 99, "ts": T0 + 9,
                                 "subtask_id": "a", "weird": [1, 2]})
    assert isinstance(opaque, ev.OpaqueEvent)
    model.apply([opaque])
    note = model.subtasks["a"].blocks[-1]
    assert isinstance(note, m.NoteBlock) and note.category == "opaque"
    assert note.text.startswith("future.thing") and '"weird": [1, 2]' in note.text


def test_events_for_unknown_subtasks_and_before_any_subtask() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply([s(ev.SessionStarted, title="t"), s(ev.Control, command="pause"),
                 s(ev.TextDelta, subtask_id="ghost", text="boo")])
    assert list(model.subtasks) == [m.SESSION_PSEUDO_ID, "ghost"]
    assert model.subtasks[""].label == "session"
    assert model.subtasks["ghost"].blocks[-1].text == "boo"


def test_malformed_event_fields_do_not_crash() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.PlanReady, subtasks=["not a dict", {"id": "z"}]),
                 s(ev.ToolStarted, subtask_id="a", call_id="", name="", input=None),  # type: ignore[arg-type]
                 s(ev.Usage, input_tokens=None, output_tokens=None, cost_usd=None),  # type: ignore[arg-type]
                 s(ev.Heartbeat, idle_s=None)])  # type: ignore[arg-type]
    assert "z" in model.subtasks
    assert model.last_seq == s.seq


def test_heartbeat_idle_and_stall() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    last = model.session.last_activity_ts
    model.apply([s(ev.Heartbeat, idle_s=15.0, open_calls=1, dt=15)])
    info = model.session
    assert info.open_calls == 1 and info.idle_s == 15.0
    assert info.idle(info.heartbeat_ts + 5) == pytest.approx(20.0)
    assert info.last_activity_ts == pytest.approx(last)
    model.apply([s(ev.Heartbeat, idle_s=120.0, stalled=True, dt=105)])
    assert info.stalled
    assert model.subtasks["a"].blocks[-1].category == "stall"
    model.apply([s(ev.Heartbeat, idle_s=135.0, stalled=True, dt=15)])
    assert sum(1 for b in model.subtasks["a"].blocks if getattr(b, "category", "") == "stall") == 1
    model.apply([s(ev.TextDelta, subtask_id="a", text="back")])
    assert not info.stalled and info.idle(s.ts) == 0


def test_elapsed_uses_end_for_dead_sessions() -> None:
    info = m.SessionInfo(status="done", started_at=100.0, ended_at=160.0)
    assert info.elapsed(1000.0) == 60.0
    info = m.SessionInfo(status="running", started_at=100.0)
    assert info.elapsed(130.0) == 30.0


def test_versions_only_bump_on_change() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    a_blocks = model.subtasks["a"].blocks
    before = [b.version for b in a_blocks]
    model.apply([s(ev.TextDelta, subtask_id="b", message_id="q", text="elsewhere")])
    assert [b.version for b in a_blocks] == before


def test_changes_merge() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    c1 = model.apply(started_session(s) + [s(ev.TextDelta, subtask_id="a", message_id="m", text="x")])
    c2 = model.apply([s(ev.TextDelta, subtask_id="a", message_id="m", text="y")])
    tb = model.subtasks["a"].blocks[-1]
    assert tb.bid in c2.updated
    c1.merge(c2)
    assert tb.bid not in c1.updated and tb in c1.added


@pytest.mark.parametrize("args,expected", [
    (("tool_concurrency", 2, 5, 3.0), "tool concurrency — retry 2/5 in 3 s"),
    (("tool_concurrency", 2, 5, 2.01), "tool concurrency — retry 2/5 in 3 s"),
    (("rate_limit", 1, 5, 75.0), "rate limit — retry 1/5 in 1 m 15 s"),
    (("stream_broken", 1, 3, 0.0), "stream broken — restart 1/3 now"),
    (("transient", 4, 0, None), "transient error — retry 4"),
    (("brand_new_kind", 1, 2, 1.0), "brand new kind — retry 1/2 in 1 s"),
])
def test_retry_text(args: tuple, expected: str) -> None:
    kind, no, mx, left = args
    action = "restart" if kind == "stream_broken" else "retry"
    assert m.retry_text(kind, no, mx, left, action) == expected


def test_formatters() -> None:
    assert m.fmt_duration(0.42) == "420 ms" and m.fmt_duration(0.0004) == "1 ms" and m.fmt_duration(0) == "0 s"
    assert m.fmt_duration(1.25) == "1.2 s"
    assert m.fmt_duration(3) == "3 s"
    assert m.fmt_duration(125) == "2 m 05 s"
    assert m.fmt_duration(3725) == "1 h 02 m"
    assert m.fmt_duration(None) == "–"
    assert m.fmt_clock(7) == "0:07" and m.fmt_clock(3723) == "1:02:03"
    assert m.fmt_tokens(999) == "999" and m.fmt_tokens(12_345) == "12.3k" and m.fmt_tokens(2_500_000) == "2.50M"
    assert m.fmt_cost(0) == "$0" and m.fmt_cost(0.00123) == "$0.0012" and m.fmt_cost(1.5) == "$1.50"


def test_compact_input() -> None:
    assert m.compact_input("Bash", {"command": "ls   -la\n /tmp"}) == "ls -la /tmp"
    assert m.compact_input("Read", {"file_path": "a.py", "offset": 1}) == "a.py offset=1"
    assert m.compact_input("X", {"a": 1, "b": "two", "c": [1], "d": 4}) == 'a=1 b=two c=[1] …'
    assert m.compact_input("X", {}) == ""
    long = m.compact_input("Bash", {"command": "x" * 500}, width=40)
    assert len(long) == 40 and long.endswith("…")


def test_output_preview() -> None:
    text = "\n".join(str(i) for i in range(300))
    head, more = m.output_preview(text, max_lines=200)
    assert more == 100 and head.splitlines()[-1] == "199"
    assert m.output_preview("short") == ("short", 0)


def test_large_stream_folds_fast() -> None:
    """50k deltas fold into one block per message quickly (a long session opens fast)."""
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    batch = [s(ev.TextDelta, subtask_id="a", message_id=f"m{i // 1000}", text="tok ", dt=0.001)
             for i in range(50_000)]
    import time
    t = time.perf_counter()
    model.apply(batch)
    took = time.perf_counter() - t
    assert len(model.subtasks["a"].blocks) == 1 + 50
    assert model.subtasks["a"].blocks[-1].text == "tok " * 1000
    assert took < 5.0, took  # ~0.2 s on an idle 2-core machine


def test_a_new_plan_replaces_subtasks_that_never_started() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply([s(ev.SessionStarted, title="t"),
                 s(ev.SubtaskStarted, subtask_id="plan", title="Plan", phase="planning"),
                 s(ev.PlanReady, subtasks=[{"id": "x", "title": "X"}, {"id": "y", "title": "Y"}])])
    assert list(model.subtasks) == ["plan", "x", "y"]
    ch = model.apply([s(ev.PlanReady, subtasks=[{"id": "z", "title": "Z"}, {"id": "x", "title": "X2"}])])
    assert list(model.subtasks) == ["plan", "z", "x"] and ch.structure
    assert model.subtasks["x"].title == "X2"


def test_a_stuck_subtask_makes_the_session_wait_for_a_person() -> None:
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    model.apply([s(ev.SubtaskFinished, subtask_id="a", status="stuck", reason="budget")])
    assert model.session.status == "stuck" and model.session.is_live
    model.apply([s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="user_retry")])
    assert model.session.status == "running" and model.subtasks["a"].state == "running"


def test_replayed_events_never_move_the_session_status_behind_the_rows() -> None:
    """Events up to the row's last_seq are already in its status: replaying an
    attempt.started from the page must not make a finished session look running."""
    s = Seq()
    evs = started_session(s)
    model = m.SessionModel.from_history(Row(status="done", last_seq=s.seq), [StRow("a", 0, "done")], evs)
    assert model.session.status == "done" and not model.session.is_live
    assert model.subtasks["a"].state == "done"
    # a new event after the rows does move it
    model.apply([s(ev.SessionResumed, reason="resume")])
    assert model.session.status == "running"


def test_retry_banner_widget_after_a_skip_or_a_pause_shows_no_bar_and_no_starting() -> None:
    """The real RetryBanner widget (no app needed to render a block)."""
    from shepherd.tui.widgets.blocks import RetryBanner

    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s))
    rb = _countdown(s, model, delay=2.0, wait=10.0)
    live = RetryBanner(rb, clock=lambda: rb.ts + 5).render_block(60).plain
    assert "in 5 s" in live and "━" in live and "starting" not in live  # half way through the real wait
    model.apply([s(ev.SessionPaused, reason="paused by tui")])
    paused = RetryBanner(rb, clock=lambda: rb.ts + 30).render_block(60).plain
    assert "paused" in paused and "starting" not in paused and "━" not in paused and "\n" not in paused
    model.apply([s(ev.SessionResumed, reason="resumed by tui"),
                 s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="retry")])
    rb2 = _countdown(s, model, delay=5.0)
    model.apply([s(ev.Control, command="retry_now", source="tui")])
    skipped = RetryBanner(rb2, clock=lambda: rb2.ts + 1).render_block(60).plain
    assert skipped == "⟳ transient error — retry 1/5 now (wait skipped)"


def test_the_log_and_export_say_the_real_wait_of_a_countdown() -> None:
    """Without a time scale the nominal wait is the real one; with one, both are said (the
    headless log and the Markdown export must not claim a 2 s wait that lasted 0.04 s)."""
    from shepherd.core.events import RetryScheduled
    from shepherd.core.report import wait_text

    plain = RetryScheduled(kind="transient", retry_no=1, max_retries=5, delay_s=2.0, resume_at=102.0,
                           action="retry", ts=100.0)
    scaled = plain.with_(resume_at=100.04)
    assert wait_text(plain) == "2 s"
    assert wait_text(scaled) == "0.04 s (2 s nominal, time-scaled)"


def test_a_live_session_in_a_countdown_reads_waiting_then_running_again() -> None:
    """The store calls a session in a retry countdown `waiting`; a session followed in this
    process (folded from events, not read from its row) must say the same, not `running`."""
    s = Seq()
    model = m.SessionModel("s1")
    model.apply(started_session(s, ("a",)))
    model.apply([s(ev.Error, subtask_id="a", attempt=1, kind="transient", message="503", retryable=True),
                 s(ev.RetryScheduled, subtask_id="a", attempt=1, kind="transient", retry_no=1, max_retries=5,
                   delay_s=5, resume_at=s.ts + 5.1, action="retry")])
    assert model.session.status == "waiting"
    model.apply([s(ev.AttemptStarted, subtask_id="a", attempt=2, reason="retry")])
    assert model.session.status == "running"


def test_a_countdown_row_with_a_non_number_wait_is_shown_not_a_crash() -> None:
    """`show` reads rows a foreign or damaged database may fill with anything."""
    from shepherd.core.events import RetryScheduled
    from shepherd.core.report import wait_text

    odd = RetryScheduled(kind="transient", retry_no=1, max_retries=5, delay_s="soon",  # type: ignore[arg-type]
                         resume_at="later", action="retry", ts=100.0)  # type: ignore[arg-type]
    assert wait_text(odd) == "'soon' s"
