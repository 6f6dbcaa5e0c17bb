"""How a diff looks: a file's line in the list and a patch as highlighted Rich Text.

Built from data, never markup: file names and patch text are untrusted (``[bold]``-looking
text stays text, control sequences go through ``core.text.safe``). A patch longer than
``MAX_LINES`` is cut with a note (``shepherd diff`` prints it whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from shepherd.core.text import safe

if TYPE_CHECKING:
    from shepherd.core.worktree_diff import FileDiff

MAX_LINES = 5000  # a screenful scrolls fine; tens of thousands of lines cost seconds to lay out
STATUS_STYLES = {"A": "green", "D": "red", "M": "yellow", "R": "cyan", "C": "cyan", "T": "magenta"}
HEADER_PREFIXES = ("diff --git", "index ", "--- ", "+++ ", "new file", "deleted file", "old mode", "new mode",
                   "similarity", "dissimilarity", "rename ", "copy ", "Binary files")


def file_label(f: "FileDiff") -> Text:
    """'M path  +3 -1' (or 'binary'); a rename shows 'old → new'."""
    status = (f.status or "M")[:1]
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{status} ", style=f"bold {STATUS_STYLES.get(status, '')}".strip())
    if f.old_path and f.old_path != f.path:
        text.append(safe(f.old_path) + " → ")
    text.append(safe(f.path))
    if f.binary or f.added is None:
        text.append("  binary", style="dim")
    else:
        text.append(f"  +{f.added}", style="green")
        text.append(f" -{f.deleted or 0}", style="red")
    return text


def line_style(line: str, in_header: bool) -> str:
    if line.startswith("@@"):
        return "cyan"
    if in_header or line.startswith(HEADER_PREFIXES[0]):
        return "dim"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    if line.startswith("\\"):  # "\ No newline at end of file"
        return "dim"
    return ""


def patch_text(patch: str, max_lines: int = MAX_LINES) -> Text:
    """The unified diff with one style per line (+ green, - red, @@ cyan, headers dim)."""
    out = Text(no_wrap=True, end="")
    lines = safe(patch).expandtabs(4).splitlines()
    in_header = False
    for n, line in enumerate(lines[:max_lines]):
        if line.startswith("diff --git"):
            in_header = True
        elif line.startswith("@@"):
            in_header = False
        elif in_header and not line.startswith(HEADER_PREFIXES):
            in_header = False
        out.append(line, style=line_style(line, in_header))
        if n < len(lines) - 1:
            out.append("\n")
    if len(lines) > max_lines:
        out.append(f"\n… {len(lines) - max_lines} more lines (shepherd diff shows them all)", style="dim italic")
    return out


__all__ = ["MAX_LINES", "file_label", "line_style", "patch_text"]
