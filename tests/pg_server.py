"""A throw-away PostgreSQL cluster for the tests: ``initdb`` + ``pg_ctl`` in a temp dir,
listening only on a Unix socket there (no TCP port), fsync off (the data dies with the
run anyway). One cluster per test process (stopped at exit); every test gets a database of its own.

Use the fixtures ``pg_server`` (the cluster: ``.dsn(dbname)``, ``.new_database()``) and
``pg_dsn`` (a fresh, empty database for one test). As root (CI) the server runs as the
system user ``postgres`` (PostgreSQL refuses to run as root). Without the server binaries
the tests skip with a loud reason, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SEARCH_DIRS = [*sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """$SHEPHERD_PG_BINDIR, else the newest Debian /usr/lib/postgresql/N/bin, else PATH."""
    env = os.environ.get("SHEPHERD_PG_BINDIR", "").strip()
    candidates = [Path(env)] if env else []
    candidates += SEARCH_DIRS
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).parent)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


class PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="shepherd-pg-"))  # short: a socket path has ~107 bytes
        self.data = self.root / "data"
        self.sock = self.root  # the socket lives beside the data dir
        self.user = "postgres"  # the cluster's superuser role
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:  # the server refuses root: run it as an unprivileged system user
            try:
                pw = pwd.getpwnam(SERVER_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
                pw = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", SERVER_USER, "--"]

    def _run(self, *args: str) -> None:
        out = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stdout}{out.stderr}")

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        opts = (f"-c listen_addresses='' -c unix_socket_directories='{self.sock}' -c fsync=off "
                "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        if not self.data.exists():  # stopped already (the session's end, then atexit)
            return
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.sock}"

    def new_database(self) -> str:
        """A fresh empty database; its DSN."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.dsn(name)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"!!! PostgreSQL tests SKIPPED: {reason} !!!")


# One cluster per test process (under pytest-xdist: one per worker, each in its own temp dir
# on its own Unix socket): every module imports the fixtures (there is no conftest plugin for
# them), and pytest would otherwise start one per importing module.
_SHARED: dict[str, object] = {}


def stop_shared_server() -> None:
    """Stop this process's cluster, if it started one (tests/conftest.py, at session end)."""
    server = _SHARED.pop("server", None)
    if server is not None:
        server.stop()  # type: ignore[attr-defined]


def _shared_server() -> PgServer:
    if "why" in _SHARED:
        _unavailable(str(_SHARED["why"]))
    if "server" in _SHARED:
        return _SHARED["server"]  # type: ignore[return-value]
    bindir = find_bindir()
    why = ""
    if bindir is None:
        why = "no initdb/pg_ctl found (install Debian's postgresql package, or set SHEPHERD_PG_BINDIR)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            why = "psycopg is not installed (pip install -e '.[test]')"
    if not why:
        server = PgServer(bindir)  # type: ignore[arg-type]
        try:
            server.start()
        except Exception as e:  # noqa: BLE001 - one loud line, skip or fail
            shutil.rmtree(server.root, ignore_errors=True)
            why = f"the throw-away cluster did not start: {e}"
        else:
            _SHARED["server"] = server
            atexit.register(server.stop)
            return server
    _SHARED["why"] = why
    _unavailable(why)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    yield _shared_server()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    return pg_server.new_database()


# --- the store suite run against both implementations ------------------------------------

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's store lives: a SQLite file, or (second run) a fresh PostgreSQL
    database's URL. Open it with ``core.store.open_store``."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_dsn"))
    return tmp_path / "shepherd.db"


def is_pg(store_or_target: object) -> bool:
    target = getattr(store_or_target, "dsn", store_or_target)
    return isinstance(target, str) and target.startswith("postgresql://")


def target_of(store: object) -> str | Path:
    """What opens another store on the same database (another process, in effect)."""
    return getattr(store, "dsn", None) or store.path  # type: ignore[attr-defined, return-value]


def sql(store_or_target: object, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement (SQLite's dialect: ``?``) straight on the store's database, behind
    its back, as another program would; the rows as tuples."""
    target = target_of(store_or_target) if not isinstance(store_or_target, (str, Path)) else store_or_target
    if is_pg(target):
        import psycopg

        from shepherd.core.store.pg.dialect import translate

        with psycopg.connect(str(target), autocommit=True) as conn:
            cur = conn.execute(translate(statement), params)  # type: ignore[arg-type]
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
    import sqlite3

    conn3 = sqlite3.connect(str(target), isolation_level=None)
    try:
        return [tuple(r) for r in conn3.execute(statement, params).fetchall()]
    finally:
        conn3.close()
