"""Small text helpers shared by the engine, the tools and the prompts."""

from __future__ import annotations


def truncate_middle(text: str, limit: int, *, head_share: float = 0.25) -> str:
    """Keep the head and (more of) the tail — errors and summaries tend to be at the end —
    and say how much was cut."""
    if len(text) <= limit:
        return text
    head = int(limit * head_share)
    tail = limit - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n… [{omitted} characters omitted] …\n{text[-tail:]}"
