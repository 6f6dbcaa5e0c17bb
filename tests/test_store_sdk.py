"""The SDK adapters over Shepherd's database: claude_agent_sdk's SessionStore conformance
suite, and openai-agents' Session checked call for call against the SDK's SQLiteSession."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.store import Store, open_agents_session, open_claude_session_store, open_store
from tests.pg_server import BACKENDS, pg_dsn, pg_server, store_target  # noqa: F401  (fixtures)

OPTIONAL = ("list_sessions", "list_session_summaries", "delete", "list_subkeys")


# --- claude_agent_sdk SessionStore ----------------------------------------------------------


def test_claude_store_overrides_every_optional_method(tmp_path: Path) -> None:
    """So the conformance suite below runs all 14 contracts and skips none."""
    from claude_agent_sdk import SessionStore

    store = open_claude_session_store(tmp_path / "c.db")
    for name in OPTIONAL:
        assert getattr(type(store), name) is not getattr(SessionStore, name), name


async def test_claude_store_passes_the_sdk_conformance_suite(tmp_path: Path) -> None:
    from claude_agent_sdk.testing import run_session_store_conformance

    made: list[Any] = []
    counter = itertools.count()

    def make_store() -> Any:  # a fresh store on a fresh database file every time
        store = open_claude_session_store(tmp_path / f"conf{next(counter)}.db")
        made.append(store)
        return store

    try:
        await run_session_store_conformance(make_store)
    finally:
        for store in made:
            await store.close()
    assert len(made) >= 14


@pytest.mark.parametrize("backend", BACKENDS)
async def test_claude_store_through_a_shepherd_store_passes_too(tmp_path: Path, backend: str,
                                                               request: pytest.FixtureRequest) -> None:
    """The SDK's suite against the store the engine writes, on SQLite and on PostgreSQL
    (a fresh database for every store the suite asks for)."""
    from claude_agent_sdk.testing import run_session_store_conformance

    opened: list[Any] = []
    counter = itertools.count()
    server = request.getfixturevalue("pg_server") if backend == "postgres" else None

    async def make_store() -> Any:
        target = server.new_database() if server else tmp_path / f"shared{next(counter)}.db"
        store = await open_store(target)
        opened.append(store)
        return store.claude_session_store()

    try:
        await run_session_store_conformance(make_store)
    finally:
        for store in opened:
            await store.close()


async def test_claude_store_uuid_is_an_idempotency_key_and_survives_reopen(tmp_path: Path) -> None:
    from claude_agent_sdk import (
        get_session_messages_from_store,
        list_sessions_from_store,
        project_key_for_directory,
    )

    path = tmp_path / "claude.db"
    workdir = str(tmp_path / "w")
    key = {"project_key": project_key_for_directory(workdir), "session_id": "3f1c0b4e-0000-4000-8000-000000000001"}
    user = {"type": "user", "uuid": "u1", "parentUuid": None, "sessionId": key["session_id"],
            "timestamp": "2026-01-01T00:00:00.000Z", "cwd": "/w",
            "message": {"role": "user", "content": "Fix the parser"}}
    reply = {"type": "assistant", "uuid": "a1", "parentUuid": "u1", "sessionId": key["session_id"],
             "timestamp": "2026-01-01T00:00:01.000Z", "cwd": "/w",
             "message": {"role": "assistant", "content": [{"type": "text", "text": "On it."}]}}
    title = {"type": "custom-title", "customTitle": "Parser", "sessionId": key["session_id"]}
    store = open_claude_session_store(path)
    try:
        await store.append(key, [user, reply])
        await store.append(key, [reply, title])  # the SDK re-sends a batch after a timeout
        await store.append(key, [title])  # no uuid: appended again, as the protocol says
    finally:
        await store.close()

    store = open_claude_session_store(path)
    try:
        assert await store.load(key) == [user, reply, title, title]
        # the SDK's own store-reading helpers work over it
        infos = await list_sessions_from_store(store, directory=workdir)
        assert [(i.session_id, i.custom_title) for i in infos] == [(key["session_id"], "Parser")]
        messages = await get_session_messages_from_store(store, key["session_id"], directory=workdir)
        assert [m.type for m in messages] == ["user", "assistant"]
    finally:
        await store.close()


def test_opening_the_claude_store_checks_the_file_at_once(tmp_path: Path) -> None:
    from shepherd.core.store import NotADatabase

    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite at all, just text " * 10)
    with pytest.raises(NotADatabase):
        open_claude_session_store(bad)
    new = tmp_path / "sub" / "fresh.db"
    open_claude_session_store(new)
    assert oct(new.stat().st_mode & 0o777) == "0o600"


# --- openai-agents Session ---------------------------------------------------------------------


def _items(n: int, start: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        if i % 3 == 0:
            out.append({"role": "user", "content": f"message {i} ✓"})
        elif i % 3 == 1:
            out.append({"type": "function_call", "call_id": f"call_{i}", "name": "read_file",
                        "arguments": '{"path": "a.py"}'})
        else:
            out.append({"type": "function_call_output", "call_id": f"call_{i - 1}", "output": "x" * i})
    return out


async def _script(session: Any) -> list[Any]:
    """The same calls on any Session; every result recorded."""
    results: list[Any] = []
    results.append(await session.get_items())
    results.append(await session.pop_item())  # pop on empty
    await session.add_items([])
    await session.add_items(_items(1))
    await session.add_items(_items(6, start=1))
    results.append(await session.get_items())
    results.append(await session.get_items(limit=3))
    results.append(await session.get_items(limit=50))  # larger than count
    results.append(await session.get_items(limit=0))
    results.append(await session.get_items(limit=-1))
    results.append(await session.pop_item())
    results.append(await session.pop_item())
    results.append(await session.get_items())
    await session.add_items(_items(2, start=40))
    results.append(await session.get_items(limit=2))
    results.append(await session.get_items())
    return results


async def test_agents_session_matches_the_sdks_sqlite_session(tmp_path: Path) -> None:
    from agents import SQLiteSession

    theirs = SQLiteSession("conv", db_path=tmp_path / "theirs.db")
    ours = open_agents_session(tmp_path / "ours.db", "conv")
    other_theirs = SQLiteSession("other", db_path=tmp_path / "theirs.db")
    other_ours = open_agents_session(tmp_path / "ours.db", "other")
    try:
        assert ours.session_id == theirs.session_id == "conv"
        assert ours.session_settings == theirs.session_settings
        await other_theirs.add_items(_items(2, start=90))
        await other_ours.add_items(_items(2, start=90))
        expected = await _script(theirs)
        assert await _script(ours) == expected
        assert expected[1] is None and len(expected[2]) == 7 and expected[5] == []
    finally:
        theirs.close()
        other_theirs.close()
        await ours.close()
        await other_ours.close()

    # reopened from disk: the same history; the other session untouched; then cleared
    theirs = SQLiteSession("conv", db_path=tmp_path / "theirs.db")
    ours = open_agents_session(tmp_path / "ours.db", "conv")
    other_ours = open_agents_session(tmp_path / "ours.db", "other")
    try:
        assert await ours.get_items() == await theirs.get_items() != []
        await theirs.clear_session()
        await ours.clear_session()
        assert await ours.get_items() == await theirs.get_items() == []
        assert await ours.pop_item() is await theirs.pop_item() is None
        assert await other_ours.get_items() == _items(2, start=90)
    finally:
        theirs.close()
        await ours.close()
        await other_ours.close()


async def test_agents_session_in_a_shepherd_store_matches_the_sdks_sqlite_session(
        store_target: str | Path, tmp_path: Path) -> None:
    """The Session the engine hands the Runner (kept in the Shepherd store, SQLite or
    PostgreSQL) call for call against the SDK's own SQLiteSession, and after a reopen."""
    from agents import SQLiteSession

    theirs = SQLiteSession("conv", db_path=tmp_path / "theirs.db")
    other_theirs = SQLiteSession("other", db_path=tmp_path / "theirs.db")
    store = await open_store(store_target)
    ours, other_ours = store.agents_session("conv"), store.agents_session("other")
    try:
        await other_theirs.add_items(_items(2, start=90))
        await other_ours.add_items(_items(2, start=90))
        expected = await _script(theirs)
        assert await _script(ours) == expected
        assert expected[1] is None and len(expected[2]) == 7 and expected[5] == []
    finally:
        theirs.close()
        other_theirs.close()
        await store.close()
    store = await open_store(store_target)  # reopened: the same history, the other session untouched
    theirs = SQLiteSession("conv", db_path=tmp_path / "theirs.db")
    try:
        ours, other_ours = store.agents_session("conv"), store.agents_session("other")
        assert await ours.get_items() == await theirs.get_items() != []
        await theirs.clear_session()
        await ours.clear_session()
        assert await ours.get_items() == await theirs.get_items() == []
        assert await ours.pop_item() is await theirs.pop_item() is None
        assert await other_ours.get_items() == _items(2, start=90)
    finally:
        theirs.close()
        await store.close()


async def test_agents_session_settings_limit_behaves_like_theirs(tmp_path: Path) -> None:
    from agents import SQLiteSession
    from agents.memory import SessionSettings

    theirs = SQLiteSession("s", db_path=tmp_path / "t.db", session_settings=SessionSettings(limit=2))
    ours = open_agents_session(tmp_path / "o.db", "s", session_settings={"limit": 2})
    try:
        for s in (theirs, ours):
            await s.add_items(_items(5))
        assert await ours.get_items() == await theirs.get_items() == _items(5)[-2:]
        assert await ours.get_items(limit=4) == await theirs.get_items(limit=4)
    finally:
        theirs.close()
        await ours.close()


async def test_store_agents_session_runs_a_real_agent_and_resumes(tmp_path: Path) -> None:
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Agent, Runner
    from agents.testing import ScriptedModel, assistant_message

    path = tmp_path / "run.db"
    store = await Store.open(path)
    try:
        session = store.agents_session("s-agent")
        model = ScriptedModel([[assistant_message("Hello from turn one")],
                               [assistant_message("And turn two")]])
        agent = Agent(name="helper", instructions="be brief", model=model)
        first = await Runner.run(agent, "hi", session=session)
        assert first.final_output == "Hello from turn one"
        second = await Runner.run(agent, "again", session=session)
        assert second.final_output == "And turn two"
        # the second model call saw the whole committed history
        seen = model.calls[1].input
        assert isinstance(seen, list) and len(seen) == 3
    finally:
        await store.close()

    reopened = open_agents_session(path, "s-agent")
    try:
        items = await reopened.get_items()
        assert [i.get("role") for i in items] == ["user", "assistant", "user", "assistant"]
    finally:
        await reopened.close()
