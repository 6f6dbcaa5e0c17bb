"""Secrets: which environment variables are credentials, the environment a tool
subprocess gets, and scrubbing their values out of anything Shepherd writes.

Two layers (DESIGN "Secrets"; README "What is never stored"):

- ``child_env()`` builds the environment of every process a tool starts (shell tool,
  ``check`` commands): credentials and cloud/provider variables are left out unless the
  task lists them in ``pass_env``. A reversed or encoded secret cannot be scrubbed
  reliably, so the first defence is that tools never get the value at all.
- ``scrub_text()`` / ``scrub_obj()`` replace every value of a secret variable present in
  the environment (also reversed and base64-encoded), plus the key-shaped patterns of
  ``core.errors.scrub``. The store's write path and the log handler call them: one
  boundary, whatever shows the text later (screen, exports, ``shepherd show``).

Only this module decides what is secret; nothing here imports anything heavy.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
MIN_SECRET_LEN = 8  # shorter values ("1", "true") would scrub ordinary words
# Name components that make a variable a credential (split on "_"): GITHUB_TOKEN,
# DB_PASSWORD, MY_SECRET_KEY, OPENAI_API_KEY... but not TOKENIZERS_PARALLELISM.
_SECRET_PARTS = frozenset({
    "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASSPHRASE", "PASS", "PWD_HASH",
    "APIKEY", "CREDENTIAL", "CREDENTIALS", "PRIVATE", "COOKIE", "SESSIONKEY", "AUTH", "OAUTH", "PAT",
    "PWD", "JWT",  # MYSQL_PWD, CI_JOB_JWT (PWD alone is the working directory: _NOT_SECRET)
})
_SECRET_INFIXES = ("PASSWORD", "PASSWD")  # anywhere in the name: PGPASSWORD, DBPASSWORD
_SECRET_SUFFIXES = ("_KEY", "_KEYS", "_KEY_ID", "_API_KEY", "_ACCESS_KEY", "_SIGNING_KEY", "_HEADERS",
                    "_SK", "_DSN", "_WEBHOOK", "_WEBHOOK_URL",  # STRIPE_SK, SENTRY_DSN, SLACK_WEBHOOK_URL
                    "_CONNECTION_STRING")  # AZURE_STORAGE_CONNECTION_STRING: AccountKey=...
_NOT_SECRET = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "XAUTHORITY", "KEY"})
# Provider and cloud variables a tool never needs (endpoints, regions, profiles included:
# they say where the credentials are). Left out of a tool's environment, not scrubbed.
_WITHHELD_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "ANTHROPIC_", "OPENAI_",
                      "CLAUDE_CODE_", "VERTEX_", "BEDROCK_")
_WITHHELD_NAMES = frozenset({"GOOGLE_APPLICATION_CREDENTIALS", "GH_TOKEN", "GITHUB_TOKEN",
                             "CLAUDE_CONFIG_DIR", "KUBECONFIG", "DOCKER_AUTH_CONFIG", "NETRC"})
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/@:\s]*:[^/@\s]+@", re.IGNORECASE)

# The marker every tool process carries, so recovery can find (and kill) what a dead
# runner left behind: "<host>:<pid>" of the runner (see core.tools.procs).
RUNNER_MARKER = "SHEPHERD_TOOL_RUNNER"


def runner_marker_value(pid: int | None = None, host: str | None = None) -> str:
    return f"{host or socket.gethostname()}:{os.getpid() if pid is None else pid}"


def is_secret_name(name: str, value: str = "") -> bool:
    """True for a credential's variable name (its value is scrubbed and withheld)."""
    upper = name.upper()
    if upper in _NOT_SECRET or upper == RUNNER_MARKER:
        return False
    if upper.endswith(_SECRET_SUFFIXES):
        return True
    if any(part in _SECRET_PARTS for part in upper.split("_")) or any(i in upper for i in _SECRET_INFIXES):
        return True
    # DATABASE_URL=postgres://user:pass@host/db and the like
    return bool(value) and _URL_WITH_PASSWORD.match(value) is not None


def is_withheld_name(name: str, value: str = "") -> bool:
    """True for a variable a tool subprocess does not get (unless passed through)."""
    upper = name.upper()
    if upper == RUNNER_MARKER:
        return True  # set fresh for each child
    return (is_secret_name(name, value) or upper in _WITHHELD_NAMES
            or upper.startswith(_WITHHELD_PREFIXES))


def child_env(pass_env: Iterable[str] = (), base: Mapping[str, str] | None = None,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process a tool starts: ``base`` (default os.environ) without
    credentials and provider/cloud variables, except the names in ``pass_env``; then
    ``extra``; then the runner marker. The one function every tool spawn uses."""
    env = os.environ if base is None else base
    allowed = {n.upper() for n in pass_env}
    out = {k: v for k, v in env.items()
           if k.upper() in allowed or not is_withheld_name(k, v)}
    if extra:
        out.update(extra)
    out[RUNNER_MARKER] = runner_marker_value()
    return out


def withheld_names(base: Mapping[str, str] | None = None, pass_env: Iterable[str] = ()) -> list[str]:
    """Names ``child_env`` would leave out (for the claude CLI, which merges os.environ)."""
    env = os.environ if base is None else base
    allowed = {n.upper() for n in pass_env}
    return sorted(k for k, v in env.items() if k.upper() not in allowed and is_withheld_name(k, v))


# --- values ------------------------------------------------------------------------------

_lock = threading.Lock()
_registered: dict[str, None] = {}  # values given to us outside os.environ (a backend's env)
_cache: tuple[Any, re.Pattern[str] | None, tuple[str, ...]] = ((), None, ())


def register_env(env: Mapping[str, str]) -> None:
    """Scrub the secret values of ``env`` too (e.g. ClaudeBackend(env=...), which is laid
    over os.environ for the CLI only)."""
    global _cache
    with _lock:
        for k, v in env.items():
            if isinstance(v, str) and len(v) >= MIN_SECRET_LEN and is_secret_name(k, v):
                _registered[v] = None
        _cache = ((), None, ())


def _b64_forms(value: str) -> list[str]:
    """The parts of base64(value) that are the same wherever the value sits in a longer
    encoded stream (three alignments), so ``env | base64`` is caught too."""
    raw = value.encode("utf-8", "surrogateescape")
    forms = []
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw).decode("ascii").rstrip("=")
        # drop the characters that mix in neighbouring bytes at either end
        start = (shift * 4 + 2) // 3 if shift else 0
        end = len(enc) - (1 if (shift + len(raw)) % 3 else 0)
        part = enc[start:end]
        if len(part) >= MIN_SECRET_LEN:
            forms.append(part)
    return forms


def _escaped_forms(value: str) -> list[str]:
    """The value as it appears inside JSON text (a function call's ``arguments`` string,
    an ``ensure_ascii`` dump) and URL-encoded: other text than the value when it holds a
    quote, a backslash, non-ASCII or URL-reserved characters."""
    out = [json.dumps(value, ensure_ascii=asc)[1:-1] for asc in (False, True)]
    out += [urllib.parse.quote(value, safe=keep) for keep in ("", "/")]
    out.append(urllib.parse.quote_plus(value, safe=""))
    return list(dict.fromkeys(f for f in out if f != value))


def _forms(value: str) -> list[str]:
    return [value, value[::-1], *_b64_forms(value), *_escaped_forms(value)]


_name_cache: dict[str, bool] = {}


def _secret_by_name(name: str) -> bool:
    known = _name_cache.get(name)
    if known is None:
        known = _name_cache[name] = is_secret_name(name)
    return known


def _secret_pair(name: str, value: str) -> bool:
    if len(value) < MIN_SECRET_LEN:
        return False
    if _secret_by_name(name):
        return True
    return "@" in value and _URL_WITH_PASSWORD.match(value) is not None


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values to scrub: secret variables of ``env`` (default os.environ) plus the
    registered ones, longest first."""
    src = os.environ if env is None else env
    values = {v: None for k, v in src.items() if _secret_pair(k, v)}
    values.update(_registered)
    return sorted(values, key=len, reverse=True)


def _current_values() -> tuple[str, ...]:
    """secret_values() of os.environ, cheaply: called once per store submit."""
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return tuple(secret_values())
    decode = os.fsdecode
    values = {decode(v): None for k, v in data.items()
              if len(v) >= MIN_SECRET_LEN and _secret_pair(decode(k), decode(v))}
    values.update(_registered)
    return tuple(sorted(values, key=len, reverse=True))


_env_seen: tuple[Any, ...] | None = None  # os.environ's items when _cache was last checked


def _pattern() -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """One compiled alternation of every form of every secret value, and the forms.
    Called for every store submit, so the common case is cheap: while os.environ holds
    the very same items (a tuple compare, by identity) nothing is recomputed."""
    global _cache, _env_seen
    data = getattr(os.environ, "_data", None)
    snapshot = tuple(data.items()) if isinstance(data, dict) else None
    key, pattern, forms = _cache
    if snapshot is not None and snapshot == _env_seen and key:
        return pattern, forms
    values = _current_values()
    if key != values or not key:
        found: dict[str, None] = {}
        for v in values:
            for f in _forms(v):
                found[f] = None
        forms = tuple(sorted(found, key=len, reverse=True))
        pattern = re.compile("|".join(re.escape(f) for f in forms)) if forms else None
        key = values or ("",)  # never empty once checked, so the fast path can trust it
    with _lock:
        _cache = (key, pattern, forms)
        _env_seen = snapshot
    return pattern, forms


@functools.cache
def _scrub_patterns() -> Any:
    from shepherd.core.errors import scrub_patterns  # core.errors imports us lazily, never at load

    return scrub_patterns


_SURROGATE = re.compile("[\ud800-\udfff]")


# What JSON text (ensure_ascii=False) writes other than as itself: a quote, a backslash,
# the C0 controls. A form without them appears in a dump exactly where it appears in a string.
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
_plain_seen: tuple[tuple[str, ...], bool] = ((), True)


def _plain(forms: tuple[str, ...]) -> bool:
    global _plain_seen
    seen, plain = _plain_seen
    if forms is not seen:
        plain = not any(_JSON_ESCAPED.search(f) for f in forms)
        _plain_seen = (forms, plain)
    return plain


@functools.cache
def _hinted() -> Any:
    from shepherd.core.errors import has_secret_hint

    return has_secret_hint


class Scrubber:
    """Scrubs one batch of text with the secret values as they are now (built once per
    batch, so a store commit of 500 events checks the environment once)."""

    __slots__ = ("pattern", "forms", "_patterns", "_plain")

    def __init__(self, *, patterns: bool = True) -> None:
        """``patterns=False``: only the values, not the key-shaped patterns (for text the
        model reads and may write back: ``api_key = os.environ[...]`` must stay code)."""
        self.pattern, self.forms = _pattern()
        self._patterns = _scrub_patterns() if patterns else None
        self._plain = _plain(self.forms)

    def clean_json(self, dumped: str) -> bool:
        """True when ``obj(x)`` is certainly ``x`` itself, judged from ``dumped``, x's JSON
        (``ensure_ascii=False``): no lone surrogate, no secret form and no hint of a key
        pattern anywhere in it. The store checks an event's JSON this way (a few substring
        tests over one string) instead of walking every field. Every string of x appears
        in ``dumped`` escaped only at quotes, backslashes and controls, so the answer is
        exact unless a form holds one of those: then it is always False."""
        if not self._plain or _SURROGATE.search(dumped):
            return False
        if self.pattern is not None and any(f in dumped for f in self.forms):
            return False
        return self._patterns is None or not _hinted()(dumped.lower())

    def text(self, text: str) -> str:
        """The scrubbed text; the same object when there was nothing to scrub. Lone
        surrogates (a command-line byte that is not UTF-8, half an emoji in a model's JSON)
        become U+FFFD too: no UTF-8 database, file or request can hold them."""
        if not text:
            return text
        new = _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
        if self.pattern is not None and any(f in new for f in self.forms):
            new = self.pattern.sub(REDACTED, new)
        if self._patterns is not None:
            new = self._patterns(new)
        return text if new == text else new

    def obj(self, obj: Any) -> Any:
        """``obj`` with every string in it (keys too) scrubbed; the same object when
        nothing changed, so clean data is not copied."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            out: dict[Any, Any] = {}
            changed = False
            for k, v in obj.items():
                nk = self.text(k) if isinstance(k, str) else k
                nv = self.obj(v)
                changed = changed or nk is not k or nv is not v
                out[nk] = nv
            return out if changed else obj
        if isinstance(obj, (list, tuple)):
            items = [self.obj(v) for v in obj]
            if any(a is not b for a, b in zip(items, obj)):
                return type(obj)(items) if isinstance(obj, list) else tuple(items)
            return obj
        return obj


# A run of the characters keys are made of: a streamed word ending in one may still grow
# into a key-shaped pattern. Bounded, so a long unbroken run still streams.
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/=.:~%")
_KEY_RUN_MAX = 512


def held_tail(text: str) -> int:
    """How many characters at the end of ``text`` (a streamed piece whose message goes on)
    to hold back until more arrives: the longest ending that is the start of a secret
    value's form (so a value split over two stored rows is stored whole, and scrubbed),
    or a trailing run of key characters (so the key patterns see a key whole)."""
    if not text:
        return 0
    hold = 0
    for ch in reversed(text[-_KEY_RUN_MAX:]):
        if ch not in _KEY_CHARS:
            break
        hold += 1
    _, forms = _pattern()
    for form in forms:
        start = max(0, len(text) - len(form) + 1)
        i = text.find(form[0], start)
        while i != -1 and len(text) - i > hold:
            if form.startswith(text[i:]):
                hold = len(text) - i
                break
            i = text.find(form[0], i + 1)
    return hold


def scrub_text(text: str) -> str:
    """``text`` without secret values (and their reversed/base64 forms) or key patterns."""
    return Scrubber().text(text)


def scrub_values(text: str) -> str:
    """Only the secret values (and their reversed/base64 forms): what a tool hands back to
    the model, which may write that text into a file again."""
    return Scrubber(patterns=False).text(text)


def scrub_obj(obj: Any) -> Any:
    return Scrubber().obj(obj)
