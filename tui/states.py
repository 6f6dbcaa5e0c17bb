"""The state sets the views agree on (the home screen, the app and the session model).

Light on purpose: the home screen imports it, and must not import the session model.
"""

from __future__ import annotations

# Stored session statuses while a runner owns the session. The store derives only these
# and the final ones (done, failed, cancelled, interrupted) for a session.
LIVE_STATUSES = frozenset({"running", "waiting", "paused", "stuck"})
# What a session view shows before the session's first event has arrived: never stored,
# but live too (nothing may be settled as interrupted while it is starting).
UNSTARTED_STATUSES = frozenset({"pending", "starting"})
# A session view is live while a runner owns its session or it is still starting.
VIEW_LIVE_STATUSES = LIVE_STATUSES | UNSTARTED_STATUSES

# Subtask states in which nothing will move by itself any more.
FINAL_STATES = frozenset({"done", "failed", "stuck", "skipped", "cancelled", "interrupted"})
ACTIVE_STATES = frozenset({"running", "waiting_retry", "paused"})
SUBTASK_STATES = ("pending", "running", "waiting_retry", "paused", "done", "failed", "stuck",
                  "skipped", "cancelled", "interrupted")
