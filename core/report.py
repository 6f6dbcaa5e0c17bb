"""Sessions as text: the headless Rich log, `shepherd show`, and Markdown/JSONL export.

Everything here renders from stored events, the same vocabulary the TUI uses.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.text import Text

from shepherd.core.errors import kind_label
from shepherd.core.text import clip, safe_fields  # clip: here too for its callers (tui.cli)

from shepherd.core.events import (
    ApprovalDecided, ApprovalRequested, AttemptStarted, Checkpoint, Control, Error, Event, Heartbeat, HookDecision,
    MessageCompleted, OpaqueEvent, PlanReady, RetryScheduled, SessionFinished, SessionInterrupted, SessionPaused, SessionResumed,
    SessionStarted, SubtaskFinished, SubtaskStarted, TextDelta, ThinkingDelta, ToolFinished,
    ToolStarted, Usage, WorktreeChanged,
)

if TYPE_CHECKING:
    from shepherd.core.store.protocol import EventStore
    from shepherd.core.store.rows import SessionRow, SubtaskRow
    from shepherd.core.worktree_diff import Diff

STATUS_STYLE = {
    "done": "green", "ok": "green", "failed": "red", "error": "red", "stuck": "bold yellow",
    "cancelled": "magenta", "skipped": "cyan", "interrupted": "yellow", "denied": "yellow",
    "running": "blue", "paused": "yellow",
}


_SUMMARY_KEYS = ("command", "cmd", "file_path", "path", "pattern", "query", "url", "description",
                 "prompt", "subagent_type", "name", "text", "content")


def compact_input(name: str, data: Any, width: int = 72) -> str:
    """One line that says what a tool call does: the telling argument first."""
    if not isinstance(data, dict):
        return clip(str(data), width) if data not in (None, "") else ""
    if not data:
        return ""
    primary = next((k for k in _SUMMARY_KEYS if data.get(k) not in (None, "")), None)
    parts: list[str] = [_value_text(data[primary])] if primary else []
    for k, v in data.items():
        if k == primary:
            continue
        if len(parts) >= 3:
            parts.append("…")
            break
        parts.append(f"{k}={_value_text(v, 24)}")
    return clip(" ".join(parts), width)


def _value_text(v: Any, width: int = 200) -> str:
    if isinstance(v, str):
        return clip(v, width)
    try:
        return clip(json.dumps(v, ensure_ascii=False, default=str), width)
    except Exception:
        return clip(repr(v), width)


def compact(value: Any, width: int = 80) -> str:
    """A one-line preview: a tool input (telling argument first) or any other value."""
    if isinstance(value, dict):
        return compact_input("", value, width)
    return clip(str(value), width)


def clock_time(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "--:--:--"


def wait_text(ev: RetryScheduled) -> str:
    """How long a retry really waited: ``resume_at`` is when the engine resumes, so under
    SHEPHERD_TIME_SCALE the log says the real wait and names the nominal one beside it."""
    try:
        nominal = float(ev.delay_s or 0.0)
        real = float(ev.resume_at) - float(ev.ts) if ev.resume_at and ev.ts else nominal
    except (TypeError, ValueError):  # a foreign or damaged row: say what is there, never fail
        return f"{ev.delay_s!r} s"
    if real < 0 or abs(real - nominal) <= max(0.05, nominal * 0.02):
        return f"{nominal:g} s"
    return f"{real:.2g} s ({nominal:g} s nominal, time-scaled)"


class LogFormatter:
    """Turns events into readable log lines (Rich Text); keeps just enough state to
    print assistant text once per message and tool names on their results."""

    def __init__(self, *, show_text: bool = True, max_text_lines: int = 6) -> None:
        self.show_text = show_text
        self.max_text_lines = max_text_lines
        self._tool_names: dict[str, str] = {}
        self._partial: dict[str, list[str]] = {}

    def _line(self, ev: Event, body: Text | str, indent: int = 0) -> Text:
        out = Text(clock_time(ev.ts) + " ", style="dim")
        out.append("  " * indent)
        out.append(body if isinstance(body, Text) else Text(body))
        return out

    def _flush_partial(self, ev: Event) -> list[Text]:
        out = []
        for mid, chunks in list(self._partial.items()):
            text = "".join(chunks).strip()
            if text and self.show_text:
                out.append(self._text_block(ev, text + " …(cut off)"))
        self._partial.clear()
        return out

    def _text_block(self, ev: Event, text: str) -> Text:
        lines = text.splitlines() or [""]
        if len(lines) > self.max_text_lines:
            lines = lines[: self.max_text_lines] + [f"… ({len(lines) - self.max_text_lines} more lines)"]
        body = Text("💬 ", style="cyan")
        body.append("\n".join(lines), style="italic")
        return self._line(ev, body, 2)

    def format(self, ev: Event) -> list[Text]:
        ev = safe_fields(ev)  # untrusted text enters the log here: no raw control reaches a terminal
        if isinstance(ev, (TextDelta, ThinkingDelta)):
            if isinstance(ev, TextDelta):
                self._partial.setdefault(ev.message_id, []).append(ev.text)
            return []
        if isinstance(ev, Heartbeat):
            if ev.stalled:
                return [self._line(ev, Text(f"⏳ stalled: no event for {ev.idle_s:.0f} s", style="yellow"), 2)]
            return []
        if isinstance(ev, MessageCompleted):
            self._partial.pop(ev.message_id, None)
            return [self._text_block(ev, ev.text)] if (self.show_text and ev.text.strip()) else []
        if isinstance(ev, SessionStarted):
            t = Text("▶ ", style="bold")
            t.append(f"session {ev.session_id} ", style="bold")
            t.append(f"“{ev.title}” ")
            t.append(f"[{ev.backend}{'/' + ev.model if ev.model else ''}] in {ev.workspace}", style="dim")
            return [self._line(ev, t)]
        if isinstance(ev, PlanReady):
            names = ", ".join(s.get("id", "?") for s in ev.subtasks)
            return [self._line(ev, Text(f"plan: {len(ev.subtasks)} subtasks ({names})", style="dim"))]
        if isinstance(ev, SubtaskStarted):
            t = Text("● ", style="bold blue")
            t.append(f"{ev.subtask_id}", style="bold")
            t.append(f"  {ev.title}" + (f"  ({ev.phase})" if ev.phase != "coding" else ""))
            return [self._line(ev, t)]
        if isinstance(ev, AttemptStarted):
            t = Text(f"attempt {ev.attempt} ({ev.reason})", style="dim")
            if ev.prompt_extra:
                first = ev.prompt_extra.strip().splitlines()[0]
                t.append(f" + context: {compact(first, 70)}", style="dim italic")
            return [self._line(ev, t, 1)]
        if isinstance(ev, ToolStarted):
            self._tool_names[ev.call_id] = ev.name
            out = self._flush_partial(ev)
            t = Text("⚙ ", style="blue")
            t.append(ev.name, style="bold")
            t.append(f" {compact(ev.input, 70)}", style="dim")
            return out + [self._line(ev, t, 2)]
        if isinstance(ev, ToolFinished):
            name = self._tool_names.get(ev.call_id, ev.call_id)
            mark = {"ok": "✓", "error": "✗", "denied": "⊘", "interrupted": "⊘"}.get(ev.status, "?")
            t = Text(f"{mark} {name} ", style=STATUS_STYLE.get(ev.status, ""))
            t.append(ev.status)
            if ev.duration_s is not None:
                t.append(f" {ev.duration_s:.2f}s", style="dim")
            if ev.status != "ok" and ev.output:
                t.append(f"  {compact(ev.output, 70)}", style="dim")
            return [self._line(ev, t, 2)]
        if isinstance(ev, HookDecision):
            t = Text(f"⊘ hook {ev.decision} {ev.tool}: ", style="yellow")
            t.append(compact(ev.reason, 80))
            return [self._line(ev, t, 2)]
        if isinstance(ev, ApprovalRequested):
            self._tool_names.setdefault(ev.call_id, ev.tool)
            t = Text(f"⧗ approval asked: {ev.tool}", style="yellow")
            t.append(f" {compact(ev.input, 60)}" + (" (asked again)" if ev.reask_of else "") + f"  call {ev.call_id}",
                     style="dim")
            return [self._line(ev, t, 2)]
        if isinstance(ev, ApprovalDecided):
            name = self._tool_names.get(ev.call_id, ev.call_id)
            scope = " for the session" if ev.scope == "session" else ""
            t = Text(f"{'✓' if ev.decision == 'approved' else '⊘'} {ev.decision}{scope}: {name} (by {ev.source})",
                     style="green" if ev.decision == "approved" else "yellow")
            if ev.reason:
                t.append(f"  {compact(ev.reason, 70)}", style="dim")
            return [self._line(ev, t, 2)]
        if isinstance(ev, Error):
            out = self._flush_partial(ev)
            t = Text(f"✗ {kind_label(ev.kind)}", style="bold red" if not ev.retryable else "red")
            if ev.status_code:
                t.append(f" ({ev.status_code})")
            t.append(f": {compact(ev.message, 100)}")
            return out + [self._line(ev, t, 2)]
        if isinstance(ev, RetryScheduled):
            verb = {"restart": "restart", "repair": "repair + retry"}.get(ev.action, "retry")
            t = Text(f"↻ {kind_label(ev.kind)} — {verb} {ev.retry_no}/{ev.max_retries} in {wait_text(ev)}",
                     style="yellow")
            return [self._line(ev, t, 2)]
        if isinstance(ev, Control):
            t = Text(f"☛ {ev.command}" + (" clean: files restored" if ev.clean else ""), style="magenta")
            t.append(f" (from {ev.source})" + (f": {compact(ev.text, 60)}" if ev.text else ""), style="dim")
            return [self._line(ev, t, 1)]
        if isinstance(ev, SubtaskFinished):
            out = self._flush_partial(ev)
            t = Text(f"■ {ev.subtask_id} {ev.status}", style=STATUS_STYLE.get(ev.status, "bold"))
            if ev.reason:
                t.append(f": {ev.reason}", style="dim")
            return out + [self._line(ev, t)]
        if isinstance(ev, (SessionPaused, SessionResumed)):
            word = "⏸ paused" if isinstance(ev, SessionPaused) else "▶ resumed"
            return [self._line(ev, Text(f"{word} {ev.reason}", style="yellow"))]
        if isinstance(ev, SessionFinished):
            t = Text(f"■ session {ev.status}", style="bold " + STATUS_STYLE.get(ev.status, ""))
            if ev.reason:
                t.append(f": {ev.reason}", style="dim")
            return [self._line(ev, t)]
        if isinstance(ev, SessionInterrupted):
            return [self._line(ev, Text(f"⊘ session interrupted: {ev.reason}", style="yellow"))]
        if isinstance(ev, Checkpoint):
            return [self._line(ev, Text(checkpoint_text(ev), style="dim"), 1)]
        if isinstance(ev, WorktreeChanged):
            return [self._line(ev, Text(worktree_text(ev), style="bold" if ev.action in ("merged", "discarded")
                                        else "dim"))]
        if isinstance(ev, Usage):
            return []
        if isinstance(ev, OpaqueEvent):
            return [self._line(ev, Text(f"· {ev.type_name} {compact(ev.data, 60)}", style="dim"))]
        return []


def _short(commit: str | None) -> str:
    return (commit or "?")[:7]


def _file_count(files: list[dict[str, Any]], more: int = 0) -> str:
    n = len(files) + more
    added = sum(int(f.get("added") or 0) for f in files)
    deleted = sum(int(f.get("deleted") or 0) for f in files)
    return f"{n} file{'s' if n != 1 else ''} (+{added} -{deleted}{', partly counted' if more else ''})"


def checkpoint_text(ev: Checkpoint) -> str:
    """A checkpoint event as one line (its texts are made safe by the caller)."""
    if ev.at == "restore":
        text = f"↺ files restored to {_short(ev.commit)} (the start of {ev.subtask_id or 'the subtask'})"
    elif ev.at == "subtask_done":
        text = f"⎇ checkpoint {_short(ev.commit)} at the end{' of ' + ev.subtask_id if ev.subtask_id else ''}: " \
               + _file_count(ev.files, ev.files_more)
    else:
        text = f"⎇ checkpoint {_short(ev.commit)} at the start{' of ' + ev.subtask_id if ev.subtask_id else ''}"
    return text + (f"  ({compact(ev.reason, 80)})" if ev.reason else "")


def worktree_text(ev: WorktreeChanged) -> str:
    """A worktree event as one line (its texts are made safe by the caller)."""
    base = f"{ev.base_branch or 'detached HEAD'}@{_short(ev.base_commit)}"
    text = {
        "created": f"⎇ worktree {ev.path} on {ev.branch}, from {base}",
        "reused": f"⎇ worktree {ev.path} reused ({ev.branch})",
        "recreated": f"⎇ worktree {ev.path} made again from {ev.branch}",
        "merged": f"⎇ {ev.branch} merged into {ev.base_branch or '?'} (commit {_short(ev.commit)})",
        "discarded": f"⎇ worktree and branch {ev.branch} discarded",
        "missing": f"⎇ worktree {ev.path} is missing",
    }.get(ev.action, f"⎇ worktree {ev.action}: {ev.path}")
    return text + (f"  ({compact(ev.reason, 80)})" if ev.reason else "")


async def load_changes(store: "EventStore", session_id: str) -> list["Diff"]:
    """What a worktree session changed, one Diff (patches loaded) per subtask that has a
    checkpoint, in plan order; [] for any other session or when git cannot tell. For the
    exports (``changes=``)."""
    from shepherd.core.worktree import GitError
    from shepherd.core.worktree_diff import NoWorktree, session_diff, with_patches

    if await store.worktree(session_id) is None:
        return []
    with_checkpoint = {cp.subtask_id for cp in await store.checkpoints(session_id) if cp.subtask_id}
    out: list[Diff] = []
    for sub in await store.subtasks(session_id):
        if sub.id not in with_checkpoint:
            continue
        try:
            out.append(await with_patches(store, await session_diff(store, session_id, sub.id)))
        except (NoWorktree, GitError):
            continue
    return out


def _file_record(f: Any) -> dict[str, Any]:
    return {"path": f.path, "old_path": f.old_path, "status": f.status, "added": f.added, "deleted": f.deleted,
            "binary": f.binary, "patch": f.patch}


def export_jsonl(events: Iterable[Event], changes: Iterable["Diff"] = ()) -> Iterable[str]:
    """The events exactly, one JSON object a line (``Event.to_json`` escapes what a
    terminal or a line splitter would act on, so the file is safe to `cat` and to split);
    then, for a worktree session, one ``{"type": "diff", ...}`` record per subtask."""
    from shepherd.core.text import json_line_safe

    for ev in events:
        yield ev.to_json() + "\n"
    for d in changes:
        record = {"type": "diff", "session_id": d.session_id, "subtask_id": d.subtask_id, "base": d.base,
                  "head": d.head, "truncated": d.truncated, "note": d.note,
                  "files": [_file_record(f) for f in d.files]}
        yield json_line_safe(json.dumps(record, sort_keys=True, ensure_ascii=False)) + "\n"


MD_DIFF_MAX = 100_000  # characters of patch per subtask in a Markdown export


def _markdown_changes(d: "Diff") -> Iterable[str]:
    from shepherd.core.text import safe

    yield f"## Changes: {safe(d.subtask_id or 'the session')}\n\n"
    if d.note:
        yield f"*{_cell(safe(d.note))}*\n\n"
    if not d.files:
        yield "No files changed.\n\n"
        return
    yield "| file | status | + | - |\n|---|---|---|---|\n"
    for f in d.files:
        name = safe(f.path if not f.old_path else f"{f.old_path} → {f.path}")
        plus, minus = ("bin", "bin") if f.binary else (f.added, f.deleted)
        yield f"| `{_cell(name).replace('`', chr(0x2035))}` | {f.status} | {plus} | {minus} |\n"
    if d.truncated:
        yield "| … | more files not listed | | |\n"
    yield "\n"
    text = "".join(safe(f.patch) for f in d.files if f.patch and d.available)
    if text.strip():
        if len(text) > MD_DIFF_MAX:
            text = text[:text.rfind("\n", 0, MD_DIFF_MAX) + 1] + f"… (cut at {MD_DIFF_MAX // 1000}k characters)\n"
        yield _fenced(text.rstrip("\n"), "diff")


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, no column break."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _fenced(text: str, info: str = "text") -> str:
    """A code block whose fence no backtick run in ``text`` can close."""
    runs = [len(r) for r in re.findall(r"`{3,}", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{info}\n{text}\n{fence}\n\n"


def export_markdown(session: SessionRow, subtasks: list[SubtaskRow], events: Iterable[Event],
                    changes: Iterable["Diff"] = ()) -> Iterable[str]:
    """A readable transcript: header, subtasks table, then per event a line or block; then
    a worktree session's ``changes`` (``load_changes``), a "## Changes" section per subtask.
    Every stored text is passed through ``core.text.safe`` on the way in."""
    session = safe_fields(session)
    subtasks = [safe_fields(s) for s in subtasks]
    events = (safe_fields(ev) for ev in events)
    yield f"# {session.title or session.id}\n\n"
    yield f"- Session: `{session.id}`\n- Status: **{session.status}**\n"
    yield f"- Backend: {session.backend}{' / ' + session.model if session.model else ''}\n"
    yield f"- Workspace: `{session.workspace}`\n"
    yield f"- Started: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(session.started_at))}\n"
    yield f"- Retries: {session.retries}; tokens in/out: {session.input_tokens}/{session.output_tokens}"
    yield f"; cost: ${session.cost_usd:.4f}\n\n" if session.cost_usd else "\n\n"
    if subtasks:
        yield "| subtask | title | status | attempts |\n|---|---|---|---|\n"
        for s in subtasks:
            yield f"| `{_cell(s.id)}` | {_cell(s.title)} | {s.status} | {s.attempts} |\n"
        yield "\n"
    names: dict[str, str] = {}
    partial: dict[str, list[str]] = {}
    for ev in events:
        if isinstance(ev, TextDelta):
            partial.setdefault(ev.message_id, []).append(ev.text)
        elif isinstance(ev, MessageCompleted):
            partial.pop(ev.message_id, None)
            if ev.text.strip():
                yield f"> {ev.text.strip().replace(chr(10), chr(10) + '> ')}\n\n"
        elif isinstance(ev, SubtaskStarted):
            yield f"## {ev.subtask_id}: {ev.title}\n\n"
        elif isinstance(ev, AttemptStarted):
            yield f"**Attempt {ev.attempt}** ({ev.reason})\n\n"
            if ev.prompt_extra:
                yield _fenced(ev.prompt_extra.strip())
        elif isinstance(ev, ToolStarted):
            names[ev.call_id] = ev.name
            yield f"- ⚙ `{ev.name}` {compact(ev.input, 100)}\n"
        elif isinstance(ev, ToolFinished):
            dur = f" in {ev.duration_s:.2f}s" if ev.duration_s is not None else ""
            yield f"  - {names.get(ev.call_id, ev.call_id)}: **{ev.status}**{dur}\n"
            if ev.output.strip():
                out = ev.output.strip()
                if len(out) > 2000:
                    out = out[:2000] + "\n… (truncated)"
                yield "\n" + _fenced(out)
        elif isinstance(ev, Error):
            yield f"\n**Error — {kind_label(ev.kind)}**: {ev.message}\n\n"
        elif isinstance(ev, RetryScheduled):
            yield f"*{kind_label(ev.kind)} — retry {ev.retry_no}/{ev.max_retries} after {wait_text(ev)}*\n\n"
        elif isinstance(ev, HookDecision):
            yield f"- ⊘ hook {ev.decision} `{ev.tool}`: {ev.reason}\n"
        elif isinstance(ev, ApprovalRequested):
            again = " (asked again)" if ev.reask_of else ""
            yield f"  - ⧗ approval asked for `{ev.tool}`{again}: {compact(ev.input, 100)}\n"
        elif isinstance(ev, ApprovalDecided):
            scope = " for the session" if ev.scope == "session" else ""
            yield f"  - {ev.decision}{scope} by {ev.source}{': ' + ev.reason if ev.reason else ''}\n"
        elif isinstance(ev, Control):
            clean = " (files restored)" if ev.clean else ""
            yield f"*☛ {ev.command}{clean} from {ev.source}{': ' + ev.text if ev.text else ''}*\n\n"
        elif isinstance(ev, SubtaskFinished):
            yield f"**{ev.subtask_id} {ev.status}**{': ' + ev.reason if ev.reason else ''}\n\n"
        elif isinstance(ev, (SessionPaused, SessionResumed, SessionInterrupted)):
            yield f"*{ev.type}: {ev.reason}*\n\n"
        elif isinstance(ev, Checkpoint):
            yield f"- {checkpoint_text(ev)}\n"
        elif isinstance(ev, WorktreeChanged):
            yield f"*{worktree_text(ev)}*\n\n"
        elif isinstance(ev, SessionFinished):
            yield f"---\n\n**Session {ev.status}**{': ' + ev.reason if ev.reason else ''}\n"
    for d in changes:
        yield "\n"
        yield from _markdown_changes(d)
