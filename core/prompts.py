"""Every text Shepherd adds to an agent's prompt. Nothing else writes prompt text inline.

All functions are pure: the same input gives the same text, so tests pin the content.
Texts start with "[Shepherd]" so a reader of a transcript can tell them from the user's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from shepherd.core.text import truncate_middle as _truncate_middle

if TYPE_CHECKING:
    from shepherd.core.errors import ErrorInfo

OUTPUT_LIMIT = 4000  # characters of check output put into a prompt
MESSAGE_LIMIT = 300  # characters of an error message put into a prompt
MAX_PLAN_SUBTASKS = 50

_INTERRUPTED_BY = {
    "rate_limit": "a rate limit from the model API",
    "transient": "a temporary API or network error",
    "stream_broken": "a response stream that broke off before it finished",
    "unknown": "an unexpected error",
}


def truncate_middle(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return _truncate_middle(text, limit)


def _clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _planning_tail(phase: str) -> str:
    if phase != "planning":
        return ""
    return ("\nYou are still in the planning phase: finish the plan and answer with it as a JSON "
            "array of subtasks in a ```json block, as asked.")


def retry_context(info: "ErrorInfo", retry_no: int, max_retries: int, phase: str = "coding") -> str:
    """The text that opens the next attempt's prompt after a failed attempt."""
    count = f"retry {retry_no} of {max_retries}"
    continue_line = ("Continue where you left off: check what is already done (files, test results) "
                     "and do not redo finished work.")
    if info.kind == "tool_concurrency":
        body = (
            f"[Shepherd] Your previous attempt failed with an API error about tool use concurrency ({count}).\n"
            "From now on use ONE tool at a time: make a single tool call, wait for its result, "
            "and only then decide on the next call. Do not call tools in parallel and do not batch "
            "several reads; read files one by one.\n" + continue_line
        )
    elif info.kind == "check_failed" and info.exception_type == "PlanInvalid":
        return plan_retry_context(info.detail.strip() or info.message) + f" ({count})"
    elif info.kind == "check_failed":
        output = truncate_middle(info.detail.strip()) if info.detail.strip() else "(no output)"
        body = (
            f"[Shepherd] The check for this subtask did not pass ({count}): {info.message}.\n"
            f"Its output:\n```\n{output}\n```\n"
            "Fix the cause so that the check passes, then finish. Do not weaken, skip or delete the check."
        )
    elif info.kind == "images_rejected":
        body = (
            f"[Shepherd] The model API rejected the images in this conversation, so they were removed "
            f"({count}). Continue without them; if you need what an image showed, use the files or "
            "tools instead.\n" + continue_line
        )
    else:
        cause = _INTERRUPTED_BY.get(info.kind, f"an error ({info.kind.replace('_', ' ')})")
        body = (
            f"[Shepherd] Your previous attempt was interrupted by {cause} "
            f"({count}; error: {_clip(info.message)}).\n" + continue_line
        )
    return body + _planning_tail(phase)


def repair_notice(dropped: str) -> str:
    """After a transcript repair: what was rewound and why."""
    what = _clip(dropped, 600) if dropped.strip() else "the last unfinished tool call"
    return (
        "[Shepherd] The conversation was rewound to the last message before an unfinished tool call, "
        "because the API rejected the transcript (a tool use without its result). "
        f"Dropped: {what}.\n"
        "That tool call never completed and its effects are unknown: check the current state before "
        "relying on it, and call the tool again (one tool at a time) if you still need its result."
    )


def note_context(notes: list[str]) -> str:
    """A person's notes for the agent, for the next prompt ("" when there are none)."""
    notes = [n.strip() for n in notes if n and n.strip()]
    if not notes:
        return ""
    if len(notes) == 1:
        return f"[Shepherd] A person supervising this task left you a note:\n{notes[0]}"
    lines = "\n".join(f"- {n}" for n in notes)
    return f"[Shepherd] A person supervising this task left you notes:\n{lines}"


def pause_note(text: str) -> str:
    """The text of a .shepherd/PAUSE file, passed on resume ("" when the file was empty)."""
    text = (text or "").strip()
    if not text:
        return ""
    return f"[Shepherd] The session was paused by a person and is now resumed. Their note:\n{text}"


def plan_prompt(task_title: str, user_prompt: str) -> str:
    """The planning attempt's prompt: the agent answers with the subtasks as JSON."""
    return (
        f"Task: {task_title.strip() or 'untitled'}\n\n"
        f"{user_prompt.strip()}\n\n"
        "[Shepherd] Before any work is done, plan it. Look around the workspace as much as you need, "
        "but do not change any file. Then split the work into a short sequence of subtasks that can "
        "each be done and checked on their own, in order.\n"
        "Answer with the plan as a JSON array in a ```json block, one object per subtask with these keys:\n"
        '- "id": a short unique identifier (letters, digits, "-" or "_"),\n'
        '- "title": a few words,\n'
        '- "prompt": the complete instructions for an agent that does this subtask alone.\n'
        "For example:\n"
        "```json\n"
        '[{"id": "find", "title": "Find the failing test", "prompt": "Run the tests and find which one fails and why."}]\n'
        "```"
    )


# A fence opens and closes at the start of a line, so "a ```json block" in prose is no fence.
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_JSON_LANGS = ("json", "jsonc", "json5")


def _decoded(text: str) -> list[tuple[Any, str]]:
    """(value, error) for each JSON candidate: fenced blocks (json-tagged first), then the
    first JSON value starting at each "[" or "{" of the whole text (bare JSON in prose)."""
    out: list[tuple[Any, str]] = []
    fences = _FENCE.findall(text)
    bodies = [b for lang, b in fences if lang.lower() in _JSON_LANGS]
    bodies += [b for lang, b in fences if lang.lower() not in _JSON_LANGS]
    for body in bodies:
        try:
            out.append((json.loads(body), ""))
        except json.JSONDecodeError as e:
            out.append((None, f"{e.msg} at line {e.lineno} column {e.colno}"))
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "[{"][:200]
    for i in starts:
        try:
            out.append((decoder.raw_decode(text, i)[0], ""))
        except json.JSONDecodeError:
            continue
    return out


def parse_plan(text: str, reserved: Collection[str] = ("plan",)) -> list[dict[str, str]]:
    """The subtasks [{id, title, prompt}] from a planning answer. Raises ValueError with
    a reason the agent can act on (it is sent back as the planning retry's context).
    ``reserved`` ids are refused (default: the planning attempt's own id, "plan")."""
    if not text or not text.strip():
        raise ValueError("the answer is empty; expected a JSON array of subtasks in a ```json block")
    errors: list[str] = []
    lists: list[list[Any]] = []
    for value, error in _decoded(text):
        if error:
            errors.append(error)
        elif isinstance(value, dict) and isinstance(value.get("subtasks"), list):
            lists.append(value["subtasks"])
        elif isinstance(value, list):
            lists.append(value)
    # Prefer a list of objects (the plan) over a stray "[1]" in prose; else report the first.
    data = next((v for v in lists if v and all(isinstance(x, dict) for x in v)), lists[0] if lists else None)
    if data is None:
        why = f" ({errors[0]})" if errors else ""
        raise ValueError(f"no JSON array of subtasks found in the answer{why}")
    if not data:
        raise ValueError("the plan is empty; it needs at least one subtask")
    if len(data) > MAX_PLAN_SUBTASKS:
        raise ValueError(f"the plan has {len(data)} subtasks; at most {MAX_PLAN_SUBTASKS} are allowed")
    plan: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise ValueError(f"subtask {i} is not an object with id, title and prompt")
        prompt = item.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"subtask {i} has no prompt")
        title = item.get("title")
        if title is not None and not isinstance(title, str):
            raise ValueError(f"subtask {i}: title must be a string")
        raw_id = item.get("id", f"s{i}")
        sid = str(raw_id).strip() if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else ""
        if not _ID_OK.match(sid):
            raise ValueError(f"subtask {i}: id {raw_id!r} must be a short word (letters, digits, -, _)")
        if sid in seen:
            raise ValueError(f"subtask {i}: duplicate id {sid!r}")
        if sid in reserved:
            raise ValueError(f"subtask {i}: id {sid!r} is reserved; choose another")
        seen.add(sid)
        title = (title or "").strip() or _clip(prompt.strip().splitlines()[0], 60)
        plan.append({"id": sid, "title": title, "prompt": prompt.strip()})
    return plan


def plan_retry_context(reason: str) -> str:
    """After a planning answer that could not be parsed: what to fix."""
    return (f"[Shepherd] Your plan could not be used: {reason}. Answer again with the plan as a JSON "
            "array of {\"id\", \"title\", \"prompt\"} objects in a ```json block.")


def final_message_when_steps_run_out() -> str:
    """The scripted backend's final message when a subtask's scripted steps are used up."""
    return "Done: no more scripted steps for this subtask."


def interrupted_tool_output() -> str:
    """Synthetic output for a function_call found in history without its output."""
    return ("[interrupted] This tool call did not finish: the previous attempt ended before it "
            "returned a result. Its effects are unknown; check the state before relying on it and "
            "call the tool again if you need its result.")


def user_retry_context() -> str:
    """A person asked to run a finished (or stuck/failed) subtask again."""
    return ("[Shepherd] A person asked you to do this subtask again. Check the current state of "
            "the workspace first, then finish the subtask; do not assume earlier work is correct.")


def clean_retry_context() -> str:
    """A person asked to run a subtask again from clean: the worktree's files were put
    back as they were when the subtask first started (its conversation starts over too)."""
    return ("[Shepherd] A person asked you to do this subtask again from a clean start: the files "
            "in the workspace were restored to how they were when this subtask started, so "
            "none of the earlier attempt's changes are there. Do the subtask from the beginning.")


def continue_prompt() -> str:
    """The user turn for a resumed conversation when there is nothing else to say."""
    return "[Shepherd] Continue the task from where you left off."


def shell_confinement(confined: bool, network: bool = False) -> str:
    """The truth about the shell tool (core.tools.spawn), for its description and the
    agent's instructions: the file tools are confined, the shell only in the sandbox."""
    if not confined:
        return ("The shell is not confined to the workspace (only the file tools are); "
                "credentials are not in its environment.")
    net = "has the network" if network else "has no network"
    return ("The shell runs in a sandbox: only the workspace is writable, the rest of the file "
            f"system is read-only, the home directory is hidden, /tmp is private and it {net}.")


# --- approvals (core.approvals) --------------------------------------------------------

NO_ONE_TO_APPROVE = "no one to approve"  # headless --approvals deny: the decision's reason


def approval_denied(reason: str) -> str:
    """The tool's result the agent gets when a person (or headless mode) says no."""
    reason = _clip((reason or "").strip(), 600)
    why = f" Their reason: {reason}" if reason else " They gave no reason."
    return ("[Shepherd] A person supervising this task did not approve this tool call, so it did "
            f"not run.{why}\nDo not retry the same call unchanged; take their reason into account.")


def approval_reask_notice(calls: list[str]) -> str:
    """After a resume (claude): the conversation was rewound before calls that were still
    waiting for a person's approval when Shepherd stopped; ``calls`` describes them."""
    what = "; ".join(_clip(c, 200) for c in calls if c.strip()) or "a tool call"
    return ("[Shepherd] Shepherd stopped while a tool call was waiting for a person's approval: "
            f"{what}. It did not run, and the conversation was rewound to before it. Call it "
            "again if you still need it; it will be asked again.")
