"""A search hit's snippet as the views show it: the store's text (matches between
``core.store.search.MARK_START``/``MARK_END``) split into pieces, each made terminal-safe
and flattened to one line. ``shepherd search`` joins them with its marks around the
matches; the TUI's search screen styles the matches (a ``Text`` span, never markup)."""

from __future__ import annotations


def snippet_pieces(snippet: str) -> list[tuple[str, bool]]:
    """(text, is_match) in order; every text through ``safe`` and on one line."""
    # imported here: the CLI's parser imports this module, and the store package is not light
    from shepherd.core.store.search import MARK_END, MARK_START
    from shepherd.core.text import safe

    out: list[tuple[str, bool]] = []
    for i, part in enumerate(snippet.split(MARK_START)):
        match, _, rest = part.partition(MARK_END) if i else ("", "", part)
        if i:
            out.append((_flat(safe(match)), True))
        if rest:
            out.append((_flat(safe(rest)), False))
    return out


def render_snippet(snippet: str, marks: tuple[str, str]) -> str:
    """The snippet on one line with ``marks`` (ours, trusted) around each match."""
    return "".join(marks[0] + text + marks[1] if hit else text for text, hit in snippet_pieces(snippet))


def _flat(text: str) -> str:
    return " ".join(text.split()) if ("\n" in text or "\t" in text) else text
