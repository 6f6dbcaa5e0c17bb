"""The throw-away PostgreSQL cluster of tests/pg_server.py works: two databases, each empty."""

from __future__ import annotations

from tests.pg_server import PgServer, pg_dsn, pg_server  # noqa: F401  (fixtures)


def test_each_test_gets_a_fresh_database(pg_server: PgServer) -> None:
    import psycopg

    a, b = pg_server.new_database(), pg_server.new_database()
    assert a != b
    with psycopg.connect(a, autocommit=True) as conn:
        conn.execute("CREATE TABLE x (i int)")
    with psycopg.connect(b, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'x'").fetchone() == (0,)
        assert "host=" in b and conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)


def test_without_server_binaries_it_skips_loudly_but_fails_in_ci(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from tests import pg_server as mod

    monkeypatch.setattr(mod, "SEARCH_DIRS", [])
    monkeypatch.setenv("SHEPHERD_PG_BINDIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert mod.find_bindir() is None
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI"):
        mod._unavailable("no initdb")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="SKIPPED"):
        mod._unavailable("no initdb")
