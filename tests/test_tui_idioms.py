"""Textual's own idioms at the UI edges: messages up (the feed, a resume), the look in the
one stylesheet, one state vocabulary (core.states)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from shepherd.core import events as ev
from shepherd.tui.feed import FeedEvents, StaticFeed

TUI = Path(__file__).resolve().parents[1] / "tui"


def sources(*parts: str) -> dict[str, str]:
    files = [f for part in parts for f in sorted((TUI / part).glob("*.py"))] if parts else sorted(TUI.rglob("*.py"))
    return {str(f.relative_to(TUI)): f.read_text(encoding="utf-8") for f in files}


def test_screens_build_no_css_in_python() -> None:
    for name, src in sources("screens").items():
        assert not re.search(r"^\s*(DEFAULT_)?CSS\s*=", src, re.M), name


def test_no_app_or_container_function_found_by_getattr_nor_awaitables_guessed() -> None:
    for name, src in sources().items():
        for smell in ("getattr(self.app", "getattr(self.parent", "getattr(self.screen", "isawaitable"):
            assert smell not in src, (name, smell)


def test_the_views_speak_core_states() -> None:
    assert not (TUI / "states.py").exists()
    for name, src in sources().items():
        assert "shepherd.tui.states" not in src and "from tui import states" not in src, name


def test_block_colours_are_the_stylesheet_s() -> None:
    from shepherd.tui.widgets import blocks

    assert not hasattr(blocks, "TOOL_STYLES") and not hasattr(blocks, "END_STYLES")
    css = "".join(p.read_text(encoding="utf-8") for p in (TUI / "css").glob("*.tcss"))
    for rule in ("ToolCallView.-ok", "SubtaskEndView.-done", "HookView.-deny", "RetryBanner.-active",
                 "NoteView.-category-note", "SessionsScreen #title-bar", "RunModal #row"):
        assert rule in css, rule


class Target:
    """What a feed posts to (a screen): records the messages."""

    def __init__(self) -> None:
        self.posted: list[Any] = []

    def post_message(self, message: Any) -> bool:
        self.posted.append(message)
        return True


def test_a_feed_fills_its_inbox_at_once_and_posts_when_it_stops_being_empty() -> None:
    feed = StaticFeed(store=None, session_id="s")  # type: ignore[arg-type]
    target = Target()
    batch = [ev.Heartbeat(session_id="s", seq=i) for i in (1, 2, 3)]
    feed._deliver(batch)  # not started: nothing is delivered
    assert feed.inbox == [] and target.posted == []
    feed.start(target)  # type: ignore[arg-type]
    feed._deliver(batch)
    feed._deliver(batch[1:] + [ev.Heartbeat(session_id="s", seq=4)])  # an overlap is dropped
    assert [e.seq for e in feed.inbox] == [1, 2, 3, 4] and feed.received == 4
    assert [(type(m), m.count) for m in target.posted] == [(FeedEvents, 3)] and not FeedEvents.bubble
    assert [e.seq for e in feed.take()] == [1, 2, 3, 4] and feed.inbox == []
    feed._deliver([ev.Heartbeat(session_id="s", seq=5)])  # taken: the next batch tells again
    assert [m.count for m in target.posted] == [3, 1] and feed.received == 5
