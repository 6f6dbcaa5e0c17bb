"""The PostgreSQL store (``postgresql://...``): ``PgStore``, the EventStore contract on a
shared server, for many runners and watchers on many hosts. Needs the ``postgres`` extra
(psycopg 3, psycopg_pool); importing ``core.store`` never imports this package."""

from shepherd.core.store.pg.store import PgStore, is_pg_url, redact

__all__ = ["PgStore", "is_pg_url", "redact"]
