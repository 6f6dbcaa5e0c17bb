"""The store seam: the SQLite Store and the PostgreSQL PgStore satisfy the EventStore
protocol member by member, and resolving the database path or reading an empty data
directory creates nothing."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.store import open_store, protocol
from shepherd.core.store.db import Store
from shepherd.core.store.pg import PgStore
from shepherd.core.store.protocol import EventStore
from tests.pg_server import pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
GROUPS = (protocol.EventWriter, protocol.EventReader, protocol.Leases, protocol.Commands,
          protocol.Recovery, protocol.SDKSessions)
_PROTOCOL_INTERNALS = {"__init__", "__subclasshook__", "__class_getitem__", "__init_subclass__"}


def members(proto: type) -> dict[str, Any]:
    """What ``proto`` declares, its bases' too: name -> function (or None for data)."""
    found: dict[str, Any] = {}
    for klass in reversed(proto.__mro__):
        if not getattr(klass, "_is_protocol", False) or klass.__module__ == "typing":
            continue
        for name in klass.__dict__.get("__annotations__", {}):
            found[name] = None
        for name, value in klass.__dict__.items():
            if name in _PROTOCOL_INTERNALS or (name.startswith("_") and name not in ("__aenter__", "__aexit__")):
                continue
            if callable(value):
                found[name] = value
    return found


def _compatible(declared: Any, actual: Any) -> list[str]:
    """Why ``actual`` cannot stand in for ``declared`` (empty when it can)."""
    problems = []
    if inspect.iscoroutinefunction(declared) and not inspect.iscoroutinefunction(actual):
        problems.append("declared async, implemented sync")
    if not inspect.iscoroutinefunction(declared) and inspect.iscoroutinefunction(actual):
        problems.append("declared sync (or an async iterator), implemented as a coroutine")
    want = inspect.signature(declared).parameters
    have = inspect.signature(actual).parameters
    for name, p in want.items():
        if p.kind is p.VAR_POSITIONAL:
            if not any(q.kind is q.VAR_POSITIONAL for q in have.values()):
                problems.append(f"no *{name}")
            continue
        q = have.get(name)
        if q is None:
            problems.append(f"no parameter {name}")
        elif q.kind != p.kind:
            problems.append(f"{name}: {q.kind.description}, declared {p.kind.description}")
        elif q.default != p.default:
            problems.append(f"{name}: default {q.default!r}, declared {p.default!r}")
    for name, q in have.items():
        if name not in want and q.default is q.empty and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD):
            problems.append(f"extra required parameter {name}")
    return problems


def test_the_protocol_has_every_group_and_what_callers_use() -> None:
    declared = members(EventStore)
    for group in GROUPS:
        assert set(members(group)) <= set(declared), group.__name__
    for name in ("append", "submit", "urge", "flush", "subscribe", "run_rows", "submit_rows", "list_sessions",
                 "get_session", "resolve_session", "latest_session_id", "events", "events_before", "last_seq",
                 "subtasks", "tool_calls", "tail", "acquire_lease", "refresh_lease", "release_lease",
                 "release_lease_soon", "lease_owner", "enqueue_command", "take_commands", "recover",
                 "agents_session", "claude_session_store", "path", "clock", "close", "damaged_events",
                 "subtask_history", "last_plan", "subtask_events_before", "subtask_events_after",
                 "current_subtask_at", "append_together", "owner"):
        assert name in declared, name


@pytest.mark.parametrize("impl", [Store, PgStore], ids=["sqlite", "postgres"])
def test_every_protocol_method_exists_on_each_store_with_a_compatible_signature(impl: type) -> None:
    problems = {}
    for name, declared in members(EventStore).items():
        if declared is None:
            continue
        actual = getattr(impl, name, None)
        if actual is None:
            problems[name] = ["missing"]
        elif found := _compatible(declared, actual):
            problems[name] = found
    assert problems == {}


def test_the_signature_check_catches_a_mismatch() -> None:
    async def declared(self: Any, session_id: str, limit: int = 500) -> None: ...
    async def renamed(self: Any, sid: str, limit: int = 500) -> None: ...
    def sync(self: Any, session_id: str, limit: int = 500) -> None: ...
    async def other_default(self: Any, session_id: str, limit: int = 50) -> None: ...
    async def more(self: Any, session_id: str, limit: int = 500, *, page: int = 1) -> None: ...
    assert _compatible(declared, renamed) and _compatible(declared, sync) and _compatible(declared, other_default)
    assert _compatible(declared, more) == []


async def test_an_open_store_is_an_event_store(store_target: Any) -> None:
    store = await open_store(store_target)
    try:
        assert isinstance(store, EventStore)
        for group in GROUPS:
            assert isinstance(store, group), group.__name__
        for name, declared in members(EventStore).items():
            assert hasattr(store, name), name
    finally:
        await store.close()
    assert not isinstance(object(), EventStore)


# --- reading creates nothing ----------------------------------------------------------


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_resolving_the_default_path_creates_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shepherd.core.store import default_db_path

    monkeypatch.delenv("SHEPHERD_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "shepherd" / "shepherd.db"
    monkeypatch.setenv("SHEPHERD_DB", str(tmp_path / "elsewhere" / "x.db"))
    assert default_db_path() == tmp_path / "elsewhere" / "x.db"
    assert _tree(tmp_path) == []


async def test_a_store_opened_for_writing_makes_its_directory(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.delenv("SHEPHERD_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = await Store.open()
    try:
        assert store.path == tmp_path / "xdg" / "shepherd" / "shepherd.db" and store.path.is_file()
        assert (store.path.parent.stat().st_mode & 0o777) == 0o700
    finally:
        await store.close()


@pytest.mark.parametrize("argv", [["sessions"], ["sessions", "--json"], ["show", "abc"], ["export", "abc"]])
def test_a_read_only_command_in_an_empty_data_directory_creates_nothing(tmp_path: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHEPHERD_DB"}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    (tmp_path / "xdg").mkdir()
    (tmp_path / "home").mkdir()
    out = subprocess.run([sys.executable, "-m", "shepherd.tui.cli", *argv], cwd=tmp_path / "home", env=env,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    assert _tree(tmp_path) == ["home", "xdg"], out.stderr
