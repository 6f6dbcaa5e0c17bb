"""Which block of a subtask's stream shows a given event (opening a session at a search hit).

A block starts at one event (``Block.seq``) and may take in later ones: a tool call its
finish and approval, a message its deltas and completion. So an event that names its call
or message is found by that name; any other by its own seq, else the block just before it.
Pure data, no Textual."""

from __future__ import annotations

from typing import Sequence

from shepherd.tui.model.blocks import Block, TextBlock, ThinkingBlock, ToolBlock


def block_at(blocks: Sequence[Block], seq: int, *, call_id: str | None = None,
             message_id: str | None = None) -> Block | None:
    """The block that shows event ``seq`` (None when ``blocks`` is empty)."""
    if call_id:
        hit = next((b for b in blocks if isinstance(b, ToolBlock) and b.call_id == call_id), None)
        if hit is not None:
            return hit
    if message_id:
        hit = next((b for b in blocks if isinstance(b, (TextBlock, ThinkingBlock)) and b.message_id == message_id
                    and b.seq <= seq), None)
        if hit is not None:
            return hit
    best: Block | None = None
    for b in blocks:
        if b.seq == seq:
            return b
        if b.seq and b.seq < seq and (best is None or b.seq >= best.seq):
            best = b
    return best if best is not None else (blocks[0] if blocks else None)
