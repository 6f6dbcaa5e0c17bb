"""The state sets the views agree on: re-exported from the one vocabulary, ``core.states``."""

from __future__ import annotations

from core.states import (ACTIVE_STATES, FINAL_STATES, LIVE_STATUSES, SUBTASK_STATES,  # noqa: F401
                         UNSTARTED_STATUSES, VIEW_LIVE_STATUSES)
