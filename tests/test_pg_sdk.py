"""The SDK adapters kept in a PostgreSQL store: claude_agent_sdk's SessionStore conformance
suite, and openai-agents' Session call for call against the SDK's own SQLiteSession (the
same adapters as on SQLite, their SQL through the dialect seam)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from shepherd.core.store.pg import PgStore
from tests.pg_server import PgServer, pg_dsn, pg_server  # noqa: F401  (fixtures)
from tests.test_store_sdk import _items, _script


async def test_claude_store_in_a_pg_store_passes_the_sdk_conformance_suite(pg_server: PgServer) -> None:
    from claude_agent_sdk.testing import run_session_store_conformance

    opened: list[PgStore] = []
    counter = itertools.count()

    async def make_store() -> Any:  # a fresh database every time, as the suite wants
        next(counter)
        store = await PgStore.open(pg_server.new_database())
        opened.append(store)
        return store.claude_session_store()

    try:
        await run_session_store_conformance(make_store)
    finally:
        for store in opened:
            await store.close()
    assert len(opened) >= 14


async def test_agents_session_in_a_pg_store_matches_the_sdks_sqlite_session(pg_dsn: str, tmp_path: Path) -> None:
    from agents import SQLiteSession

    theirs = SQLiteSession("conv", db_path=tmp_path / "theirs.db")
    other_theirs = SQLiteSession("other", db_path=tmp_path / "theirs.db")
    store = await PgStore.open(pg_dsn)
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
    store = await PgStore.open(pg_dsn)  # reopened: the same history, the other session untouched
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
