"""A pure projection of events into view state for the session screen.

No Textual here: ``SessionModel.apply(events)`` folds events into a ``SessionInfo``,
subtasks in plan order, and per subtask an ordered list of blocks (attempt separators,
streamed text, tool calls, retries, ...). Every mutated block, subtask and the session
get a fresh ``version`` so widgets re-render only what changed; ``apply`` also returns
a ``Changes`` summary so the screen touches nothing else.

History is loaded as "derived rows + the last page of events": the rows already hold
totals (tokens, cost, retries) up to ``SessionRow.last_seq``, so counters are only
accumulated for events after that (``base_seq``), while states are simply replayed.

The package: ``blocks`` (the block dataclasses), ``views`` (SubtaskView, SessionInfo,
Changes), ``projection`` (SessionModel), ``fold`` (its per-event handlers), ``paging``
(pruning and load-earlier), ``replay`` (a stored session replayed: the cursor, the virtual
clock, the same fold up to the cursor; imported by the replay screen only). Formatters are in tui.fmt, glyphs in tui.icons, the states and
their sets in core.states (all three light: the home screen uses them without this package). Callers
use ``from tui import model as m`` and the names below.
"""

from __future__ import annotations

from shepherd.core.errors import kind_label
from shepherd.core.report import compact_input
from shepherd.tui.fmt import (
    approval_preview, clip, fmt_clock, fmt_cost, fmt_duration, fmt_seconds_left, fmt_span, fmt_tokens, output_preview,
)
from shepherd.tui.icons import APPROVAL_ICONS, SPINNER_FRAMES, STATE_ICONS, TOOL_ICONS, spinner
from shepherd.tui.model.blocks import (
    ACTION_LABELS, RETRY_OUTCOMES, AttemptBlock, Block, ErrorBlock, HookBlock, NoteBlock,
    RetryBlock, SubtaskEndBlock, TextBlock, ThinkingBlock, ToolBlock, block_key, is_open,
    retry_text,
)
from shepherd.tui.model.projection import ID_FIELDS, SessionModel
from shepherd.tui.model.views import SESSION_PSEUDO_ID, Changes, SessionInfo, SubtaskView
from shepherd.core.states import (
    ACTIVE_STATES, FINAL_STATES, LIVE_STATUSES, SUBTASK_STATES, UNSTARTED_STATUSES,
    VIEW_LIVE_STATUSES,
)

__all__ = [
    "ACTION_LABELS", "ACTIVE_STATES", "APPROVAL_ICONS", "FINAL_STATES", "ID_FIELDS", "LIVE_STATUSES", "RETRY_OUTCOMES",
    "SESSION_PSEUDO_ID", "SPINNER_FRAMES", "STATE_ICONS", "SUBTASK_STATES", "TOOL_ICONS",
    "UNSTARTED_STATUSES", "VIEW_LIVE_STATUSES",
    "AttemptBlock", "Block", "Changes", "ErrorBlock", "HookBlock", "NoteBlock", "RetryBlock",
    "SessionInfo", "SessionModel", "SubtaskEndBlock", "SubtaskView", "TextBlock", "ThinkingBlock",
    "ToolBlock",
    "approval_preview", "block_key", "clip", "compact_input", "fmt_clock", "fmt_cost", "fmt_duration",
    "fmt_seconds_left", "fmt_span", "fmt_tokens", "is_open", "kind_label", "output_preview",
    "retry_text", "spinner",
]
