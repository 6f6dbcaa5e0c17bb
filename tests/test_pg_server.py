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
