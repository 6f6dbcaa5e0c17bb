"""Small text helpers shared by the engine, the tools, the prompts and every view."""

from __future__ import annotations

import dataclasses as _dc
import re as _re
from typing import Any as _Any


def clip(text: str, width: int) -> str:
    """One line of at most ``width`` characters (whitespace folded, an ellipsis when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def truncate_middle(text: str, limit: int, *, head_share: float = 0.25) -> str:
    """Keep the head and (more of) the tail — errors and summaries tend to be at the end —
    and say how much was cut."""
    if len(text) <= limit:
        return text
    head = int(limit * head_share)
    tail = limit - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n… [{omitted} characters omitted] …\n{text[-tail:]}"


# --- terminal safety ----------------------------------------------------------------------
#
# Untrusted text (model output, tool output, titles, error messages) is data: on a terminal
# a raw ESC, C1 or CR is an instruction (set the window title, write the clipboard, clear
# the screen, overwrite a line). ``safe`` is the one sanitiser the view layer applies where
# such text enters it (TUI model, Rich log, `show`, `sessions`, Markdown export, log file).
# Only colour/style sequences (SGR, ``ESC[...m``) are dropped, since they carry no text and
# tool output is full of them; every other control stays visible as a readable mark.

# Bidirectional embeddings, overrides and isolates reorder what a person reads ("Trojan
# Source", CVE-2021-42574). Zero-width joiners are left alone: emoji and several scripts
# need them, and they cannot move or hide text on a terminal.
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))

_TABLE: dict[int, str] = {c: chr(0x2400 + c) for c in range(0x20) if c not in (0x09, 0x0A)}  # ␛ ␍ ␇ …
_TABLE[0x7F] = "␡"
_TABLE.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})  # C1: no control pictures exist
_TABLE.update({c: f"\\u{c:04x}" for c in _BIDI})
_TABLE.update({c: "\ufffd" for c in range(0xD800, 0xE000)})  # lone surrogates cannot be written

_UNSAFE = _re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SGR = _re.compile(r"\x1b\[[0-9;:]*m")


def safe(text: str) -> str:
    """``text`` made harmless for a terminal: every C0/C1 control except newline and tab,
    DEL, bidi overrides and lone surrogates become visible marks (ESC -> ``␛``, CR -> ``␍``,
    ``\\x9b`` -> the four characters ``\\x9b``); CRLF becomes LF; SGR colour codes go.
    Returns ``text`` itself when there is nothing to do (the common case, kept fast)."""
    if not isinstance(text, str):
        text = str(text)
    if _UNSAFE.search(text) is None:
        return text
    if "\x1b[" in text:
        text = _SGR.sub("", text)
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    return _UNSAFE.sub(_mark, text)  # touches only the controls (translate walks every char)


def _mark(m: _re.Match[str]) -> str:
    return _TABLE[ord(m.group())]


def safe_data(value: _Any) -> _Any:
    """``safe`` through JSON-like data (dict keys and values, lists, tuples); other values
    pass unchanged. Returns ``value`` itself when nothing needed changing."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, dict):
        out = {safe_data(k): safe_data(v) for k, v in value.items()}
        same = len(out) == len(value) and all(
            a is b and out[a] is value[b] for a, b in zip(out, value))
        return value if same else out
    if isinstance(value, (list, tuple)):
        items = [safe_data(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(items) if isinstance(value, list) else tuple(items)
    return value


_FIELD_NAMES: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def safe_fields(obj: _Any, keep: tuple[str, ...] = ()) -> _Any:
    """A dataclass instance (an event, a store row) with ``safe_data`` applied to every
    field except those in ``keep`` (identifiers the caller still needs exact). Returns
    ``obj`` itself when nothing needed changing (or when it is not a dataclass)."""
    if not _dc.is_dataclass(obj) or isinstance(obj, type):
        return obj
    key = (type(obj), keep)
    names = _FIELD_NAMES.get(key)
    if names is None:
        names = _FIELD_NAMES[key] = tuple(f.name for f in _dc.fields(obj) if f.init and f.name not in keep)
    changes = {}
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, (str, dict, list, tuple)):
            s = safe_data(v)
            if s is not v:
                changes[name] = s
    return _dc.replace(obj, **changes) if changes else obj


# Characters json.dumps(ensure_ascii=False) leaves raw although they are controls on a
# terminal, line breaks to str.splitlines (NEL, U+2028/9), or unencodable (surrogates).
_JSON_RAW = _re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def json_line_safe(dumped: str) -> str:
    """Escape, inside JSON text, what ``json.dumps(ensure_ascii=False)`` leaves raw and a
    terminal or a line splitter would act on. Exact: ``json.loads`` gives the same value."""
    if _JSON_RAW.search(dumped) is None:
        return dumped
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)
