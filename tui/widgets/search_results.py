"""The search screen's list of hits: one option per hit, two lines each.

Line one says where the hit is (the session's title and id when the search spans
every session, else the event's number), its subtask, the event's type and its age; line
two is the snippet with each match in ``MATCH_STYLE``. Every stored text goes through
``core.text.safe`` (tui.snippet) and into a ``Text`` of its own: never markup."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Sequence

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from shepherd.core.text import clip, safe
from shepherd.tui.snippet import snippet_pieces
from shepherd.tui.widgets.session_list import fmt_started

if TYPE_CHECKING:
    from shepherd.core.store.search import SearchHit

MATCH_STYLE = "bold reverse"  # a span within the line (the list's colours are the stylesheet's)
TITLE_MAX = 48
ID_MAX = 16  # session ids are 13 characters: shown whole (their first 8 are a time, shared by many)


def hit_text(hit: "SearchHit", title: str | None, now: float, *, with_session: bool = True) -> Text:
    """The two lines of one hit (``title``: the session's, already made safe)."""
    head = Text(no_wrap=True, overflow="ellipsis")
    if with_session:
        head.append(clip(title or "(untitled)", TITLE_MAX), style="bold")
        head.append(f"  {clip(safe(hit.session_id), ID_MAX)}", style="dim")
        head.append(f" #{hit.seq}", style="dim")
    else:
        head.append(f"#{hit.seq}", style="bold")
    head.append(f"  {clip(safe(hit.subtask_id), 32)}" if hit.subtask_id else "  session", style="cyan")
    head.append(f"  {safe(hit.type)}", style="magenta")
    head.append(f"  {fmt_started(hit.ts, now)}", style="dim")
    body = Text("  ", no_wrap=True, overflow="ellipsis")
    for piece, match in snippet_pieces(hit.snippet):
        body.append(piece, style=MATCH_STYLE if match else "")
    return Text("\n", no_wrap=True, overflow="ellipsis").join([head, body])


class SearchResults(OptionList):
    """Hits in the store's order (newest first); ``hit_at(index)`` gives one back."""

    def __init__(self, clock: Callable[[], float] = time.time, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.hits: list[SearchHit] = []

    def set_hits(self, hits: Sequence["SearchHit"], titles: dict[str, str], *, with_session: bool = True) -> None:
        now = self.clock()
        self.hits = list(hits)
        self.clear_options()
        self.add_options([Option(hit_text(h, titles.get(h.session_id), now, with_session=with_session),
                                 id=f"hit-{i}") for i, h in enumerate(self.hits)])
        if self.hits:
            self.highlighted = 0

    def hit_at(self, index: int | None) -> "SearchHit | None":
        if index is None or not 0 <= index < len(self.hits):
            return None
        return self.hits[index]

    def rendered(self) -> list[Text]:
        """Each hit as shown (tests)."""
        return [self.get_option_at_index(i).prompt for i in range(self.option_count)]  # type: ignore[misc]
