"""Reading a Claude transcript: our derived session ids, and where to rewind it — before
a tool use the API rejects (the repair) or before calls still awaiting approval when a
runner stopped (the re-ask)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any
from shepherd.core.records import record

_NS = uuid.UUID("5b0f3c2e-8a51-4d7e-9a43-6c1d2f0e7a19")  # namespace of our Claude session ids


def session_uuid(shepherd_session: str, subtask_id: str, generation: int = 0) -> str:
    """The Claude session id for a subtask: derived, so a restarted Shepherd finds it."""
    name = f"{shepherd_session}/{subtask_id}" + (f"#{generation}" if generation else "")
    return str(uuid.uuid5(_NS, name))


# --- transcript repair ----------------------------------------------------------------------


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _blocks(message: Any) -> list[dict[str, Any]]:
    content = _get(message, "content") if message is not None else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


@record(frozen=True)
class RepairPoint:
    resume_at: str  # uuid of the last message kept
    dropped_calls: tuple[tuple[str, str, dict[str, Any]], ...]  # (id, name, input) never answered properly
    dropped_messages: int
    found: bool  # True: a tool use the API rejects was found; False: the fallback (last tool turn)

    def describe(self) -> str:
        calls = ", ".join(f"{name} {json.dumps(inp, ensure_ascii=False)[:120]} (id {cid})"
                          for cid, name, inp in self.dropped_calls[:5])
        more = f" and {len(self.dropped_calls) - 5} more" if len(self.dropped_calls) > 5 else ""
        n = self.dropped_messages
        return (f"the tool call{'s' if len(self.dropped_calls) != 1 else ''} {calls}{more}, "
                f"and {n} transcript message{'s' if n != 1 else ''} from there on")


def find_repair_point(messages: list[Any]) -> RepairPoint | None:
    """Where to rewind a transcript the API rejects for a tool use without its result.

    ``messages``: the session's main chain in order (claude_agent_sdk SessionMessage, or
    dicts with type/uuid/message). The API merges consecutive same-role messages into one
    turn and wants every tool_use answered by a tool_result at the head of the very next
    user turn. The first assistant turn that breaks this is cut off: we keep everything
    before its first tool_use. With nothing visibly wrong, the last turn with tool calls
    is cut (the API named something we cannot see). None: nothing to rewind to.
    """
    msgs = [m for m in messages if _get(m, "type") in ("user", "assistant") and _get(m, "uuid")]
    turns: list[tuple[str, list[int]]] = []  # (role, indexes into msgs)
    for i, m in enumerate(msgs):
        role = _get(m, "type")
        if turns and turns[-1][0] == role:
            turns[-1][1].append(i)
        else:
            turns.append((role, [i]))

    def tool_uses(idx: list[int]) -> list[tuple[int, dict[str, Any]]]:
        return [(i, b) for i in idx for b in _blocks(_get(msgs[i], "message")) if b.get("type") == "tool_use"]

    bad_turn: int | None = None
    for t, (role, idx) in enumerate(turns):
        uses = tool_uses(idx) if role == "assistant" else []
        if not uses:
            continue
        answered: set[Any] = set()
        if t + 1 < len(turns):
            for i in turns[t + 1][1]:
                blocks = _blocks(_get(msgs[i], "message"))
                lead = True
                for b in blocks:
                    if b.get("type") != "tool_result":
                        lead = False
                        break
                    answered.add(b.get("tool_use_id"))
                if not lead:
                    break
        if any(b.get("id") not in answered for _, b in uses):
            bad_turn = t
            break
    found = bad_turn is not None
    if bad_turn is None:
        tool_turns = [t for t, (role, idx) in enumerate(turns) if role == "assistant" and tool_uses(idx)]
        if not tool_turns:
            return None
        bad_turn = tool_turns[-1]
    uses = tool_uses(turns[bad_turn][1])
    first = uses[0][0]
    if first == 0:
        return None
    dropped = [b for _, b in uses]  # we keep everything before the first of them
    return RepairPoint(
        resume_at=str(_get(msgs[first - 1], "uuid")),
        dropped_calls=tuple((str(b.get("id")), str(b.get("name")), dict(b.get("input") or {})) for b in dropped),
        dropped_messages=len(msgs) - first,
        found=found,
    )


def repair_point_before(messages: list[Any], call_ids: Any) -> RepairPoint | None:
    """Where to rewind so that the calls ``call_ids`` were never made: the last message
    before the first tool_use of the earliest assistant turn holding one of them (their
    sibling calls go too). None when none of them is in the transcript (or nothing comes
    before it)."""
    wanted = set(call_ids)
    msgs = [m for m in messages if _get(m, "type") in ("user", "assistant") and _get(m, "uuid")]
    turns: list[list[int]] = []  # assistant turns (consecutive assistant messages)
    for i, m in enumerate(msgs):
        if _get(m, "type") == "assistant":
            if turns and turns[-1][-1] == i - 1:
                turns[-1].append(i)
            else:
                turns.append([i])
    for idx in turns:
        uses = [(i, b) for i in idx for b in _blocks(_get(msgs[i], "message")) if b.get("type") == "tool_use"]
        if not any(b.get("id") in wanted for _, b in uses):
            continue
        first = uses[0][0]
        if first == 0:
            return None
        return RepairPoint(
            resume_at=str(_get(msgs[first - 1], "uuid")),
            dropped_calls=tuple((str(b.get("id")), str(b.get("name")), dict(b.get("input") or {}))
                                for _, b in uses),
            dropped_messages=len(msgs) - first,
            found=True,
        )
    return None


def _position(messages: list[Any], uuid_: str) -> int:
    for i, m in enumerate(messages):
        if str(_get(m, "uuid")) == uuid_:
            return i
    return len(messages)


def _describe_call(tool: str, tool_input: Mapping[str, Any], call_id: str) -> str:
    return f"{tool} {json.dumps(dict(tool_input), ensure_ascii=False, default=str)[:120]} (id {call_id})"


def _text_of(content: Any) -> str:
    """Plain text of a message/result content (a string or a list of blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        text = block.get("text") if isinstance(block, dict) else getattr(block, "text", None)
        if isinstance(text, str):
            parts.append(text)
        elif isinstance(block, dict) and block.get("type") == "image":
            parts.append("[image]")
    return "\n".join(parts)
