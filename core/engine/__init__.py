"""The engine: a Supervisor runs one session's subtasks attempt by attempt.

Modules (docs/DEVELOPING.md, "Engine states", has the map):

- ``states``: the subtask states' triggers, the one transition table, the requests' precedence
- ``next_attempt``: what the next attempt is (one value, one function)
- ``supervisor``: the run and the subtask loop
- ``attempt``: one attempt (stream, watcher, events, check)
- ``controls``: a person's controls (in-process, commands table, PAUSE file)
- ``countdown``: a failure's retry decision and its countdown
- ``launch``: ``start_run`` / ``resume_run`` / ``RunHandle``
- ``base``: shared state, ``SubtaskRun``, event plumbing, ``make_backend``
- ``worktrees``: worktree sessions (the worktree made or found again, checkpoints, clean retry)
"""

from shepherd.core.engine.base import Stalled, make_backend
from shepherd.core.engine.launch import RunHandle, resume_run, start_run
from shepherd.core.engine.supervisor import Supervisor

__all__ = ["Supervisor", "RunHandle", "start_run", "resume_run", "make_backend", "Stalled"]
