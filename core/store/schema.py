"""The database file: where it lives, how it is created (0600, WAL), checked and migrated.

Everything here runs before any writer exists, with the stdlib ``sqlite3`` (sync, fast,
called through ``asyncio.to_thread`` by async callers). A file we must refuse (not SQLite,
another program's database, a newer schema) is never written to: the checks read the
header bytes first and then use a read-only connection.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from shepherd.core.store.errors import DatabaseDamaged, NoDatabase, NotADatabase, SchemaTooNew, StoreError


APPLICATION_ID = 0x53485044  # "SHPD": tells our files from other programs' SQLite files
BUSY_TIMEOUT_MS = 10_000  # two processes writing one file wait for each other this long
SQLITE_MAGIC = b"SQLite format 3\x00"


def default_db_path() -> Path:
    """$SHEPHERD_DB, else $XDG_DATA_HOME/shepherd/shepherd.db (~/.local/share by default).
    Pure: reads the environment, touches no file. The parent directory (0700: transcripts
    are private) is made by ``prepare_database`` when a store is opened for writing."""
    env = os.environ.get("SHEPHERD_DB", "").strip()
    if env:
        path = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "").strip()
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
        path = base / "shepherd" / "shepherd.db"
    return path


# --- migrations ---------------------------------------------------------------------
# One function per schema version, applied forward inside one write transaction.
# Never edit a released migration; append a new one.


def _run_script(c: sqlite3.Connection, script: str) -> None:
    """Execute statement by statement: ``executescript`` would COMMIT our transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        statement += line
        if sqlite3.complete_statement(statement):
            c.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in migration: {statement.strip()[:60]}")


def _m1_initial(c: sqlite3.Connection) -> None:
    _run_script(
        c,
        """
        CREATE TABLE sessions (
            id             TEXT PRIMARY KEY,
            title          TEXT NOT NULL DEFAULT '',
            backend        TEXT NOT NULL DEFAULT '',
            model          TEXT,
            workspace      TEXT NOT NULL DEFAULT '',
            status         TEXT NOT NULL DEFAULT 'running',
            started_at     REAL NOT NULL,
            updated_at     REAL NOT NULL,
            ended_at       REAL,
            last_seq       INTEGER NOT NULL DEFAULT 0,
            last_event_ts  REAL,
            subtasks_total INTEGER NOT NULL DEFAULT 0,
            subtasks_done  INTEGER NOT NULL DEFAULT 0,
            retries        INTEGER NOT NULL DEFAULT 0,
            input_tokens   INTEGER NOT NULL DEFAULT 0,
            output_tokens  INTEGER NOT NULL DEFAULT 0,
            cost_usd       REAL NOT NULL DEFAULT 0,
            task_json      TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX sessions_started ON sessions (started_at DESC, id DESC);
        CREATE INDEX sessions_status ON sessions (status);

        CREATE TABLE events (
            id         INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            type       TEXT NOT NULL,
            ts         REAL NOT NULL,
            subtask_id TEXT,
            attempt    INTEGER,
            data       TEXT NOT NULL,
            UNIQUE (session_id, seq)
        );

        CREATE TABLE subtasks (
            session_id      TEXT NOT NULL,
            id              TEXT NOT NULL,
            title           TEXT NOT NULL DEFAULT '',
            position        INTEGER NOT NULL DEFAULT 0,
            planned         INTEGER NOT NULL DEFAULT 0,
            phase           TEXT NOT NULL DEFAULT 'coding',
            status          TEXT NOT NULL DEFAULT 'pending',
            attempts        INTEGER NOT NULL DEFAULT 0,
            retries         INTEGER NOT NULL DEFAULT 0,
            started_at      REAL,
            finished_at     REAL,
            reason          TEXT NOT NULL DEFAULT '',
            last_error_kind TEXT,
            PRIMARY KEY (session_id, id)
        );

        CREATE TABLE tool_calls (
            session_id   TEXT NOT NULL,
            call_id      TEXT NOT NULL,
            subtask_id   TEXT,
            attempt      INTEGER,
            name         TEXT NOT NULL DEFAULT '',
            input_json   TEXT NOT NULL DEFAULT '{}',
            status       TEXT NOT NULL,
            output       TEXT NOT NULL DEFAULT '',
            started_at   REAL NOT NULL,
            finished_at  REAL,
            duration_s   REAL,
            started_seq  INTEGER NOT NULL,
            finished_seq INTEGER,
            PRIMARY KEY (session_id, call_id)
        );
        CREATE INDEX tool_calls_status ON tool_calls (session_id, status);

        CREATE TABLE leases (
            session_id TEXT PRIMARY KEY,
            owner      TEXT NOT NULL,
            expires_at REAL NOT NULL,
            pid        INTEGER NOT NULL,
            host       TEXT NOT NULL
        );

        CREATE TABLE commands (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            command    TEXT NOT NULL,
            subtask_id TEXT,
            text       TEXT NOT NULL DEFAULT '',
            source     TEXT NOT NULL DEFAULT 'cli',
            created_at REAL NOT NULL,
            taken_at   REAL
        );
        CREATE INDEX commands_open ON commands (session_id, taken_at, id);

        -- claude_agent_sdk SessionStore (claude_store.py); subpath '' = main transcript
        CREATE TABLE claude_entries (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            project_key TEXT NOT NULL,
            session_id  TEXT NOT NULL,
            subpath     TEXT NOT NULL DEFAULT '',
            uuid        TEXT,
            entry_json  TEXT NOT NULL
        );
        CREATE INDEX claude_entries_key ON claude_entries (project_key, session_id, subpath, id);
        CREATE UNIQUE INDEX claude_entries_uuid
            ON claude_entries (project_key, session_id, subpath, uuid) WHERE uuid IS NOT NULL;
        CREATE TABLE claude_keys (
            project_key TEXT NOT NULL,
            session_id  TEXT NOT NULL,
            subpath     TEXT NOT NULL,
            mtime_ms    INTEGER NOT NULL,
            PRIMARY KEY (project_key, session_id, subpath)
        ) WITHOUT ROWID;
        CREATE TABLE claude_summaries (
            project_key TEXT NOT NULL,
            session_id  TEXT NOT NULL,
            mtime_ms    INTEGER NOT NULL,
            data_json   TEXT NOT NULL,
            PRIMARY KEY (project_key, session_id)
        ) WITHOUT ROWID;

        -- openai-agents Session (agents_session.py)
        CREATE TABLE agent_items (
            position   INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            item_json  TEXT NOT NULL
        );
        CREATE INDEX agent_items_session ON agent_items (session_id, position);
        """
    )


def _m2_approvals(c: sqlite3.Connection) -> None:
    """Tool approvals (core.approvals): the derived approvals table, the openai-agents run
    states saved while calls await a person, a call id on commands, what a session needs."""
    _run_script(
        c,
        """
        -- derived from approval.requested / approval.decided / tool.finished, in the events' transaction
        CREATE TABLE approvals (
            session_id    TEXT NOT NULL,
            call_id       TEXT NOT NULL,
            subtask_id    TEXT,
            attempt       INTEGER,
            tool          TEXT NOT NULL DEFAULT '',
            input_json    TEXT NOT NULL DEFAULT '{}',
            reask_of      TEXT,
            requested_seq INTEGER NOT NULL,
            requested_at  REAL NOT NULL,
            decision      TEXT,
            source        TEXT,
            reason        TEXT NOT NULL DEFAULT '',
            scope         TEXT NOT NULL DEFAULT 'call',
            decided_seq   INTEGER,
            closed        INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (session_id, call_id)
        ) WITHOUT ROWID;
        CREATE INDEX approvals_pending ON approvals (session_id, requested_at)
            WHERE decided_seq IS NULL AND closed = 0;

        -- openai-agents RunState.to_string() (scrubbed) while its calls await an answer
        CREATE TABLE run_states (
            session_id     TEXT NOT NULL,
            subtask_id     TEXT NOT NULL,
            call_ids_json  TEXT NOT NULL,
            state_json     TEXT NOT NULL,
            saved_at       REAL NOT NULL,
            PRIMARY KEY (session_id, subtask_id)
        ) WITHOUT ROWID;

        -- notifications sent, so one wait is never announced twice (channel: command | terminal)
        CREATE TABLE notified (
            session_id TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            channel    TEXT NOT NULL,
            at         REAL NOT NULL,
            PRIMARY KEY (session_id, seq, channel)
        ) WITHOUT ROWID;

        ALTER TABLE commands ADD COLUMN call_id TEXT;
        ALTER TABLE sessions ADD COLUMN needs TEXT;
        ALTER TABLE sessions ADD COLUMN needs_since REAL;
        ALTER TABLE sessions ADD COLUMN needs_detail TEXT NOT NULL DEFAULT '';
        """
    )


def _m3_worktrees(c: sqlite3.Connection) -> None:
    """Worktree sessions (isolation = "worktree"): the derived worktrees table, one row per
    session that has one, rebuilt from its latest ``worktree`` event in the events'
    transaction. ``state``: active (the worktree is there) | merged | discarded | gone."""
    _run_script(
        c,
        """
        CREATE TABLE worktrees (
            session_id  TEXT PRIMARY KEY,
            path        TEXT NOT NULL,
            branch      TEXT NOT NULL,
            origin      TEXT NOT NULL,
            repo        TEXT NOT NULL,
            workspace   TEXT NOT NULL,
            base_commit TEXT NOT NULL,
            base_branch TEXT,
            state       TEXT NOT NULL,
            commit_id   TEXT,
            updated_seq INTEGER NOT NULL,
            updated_at  REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX worktrees_repo ON worktrees (repo, state);
        CREATE INDEX events_checkpoints ON events (session_id, seq) WHERE type = 'checkpoint';
        """
    )


def _m4_search(c: sqlite3.Connection) -> None:
    """Full-text search (core.store.search): an FTS5 table of each event's searchable text,
    keyed by (session_id, seq), written in the events' transaction; the events already
    stored are indexed here. PostgreSQL has its own form of this step (pg/schema.py)."""
    from shepherd.core.store.search import backfill

    # session_id is indexed too: a search inside one session then reads that session's
    # postings, not every match of a common word in the whole database (bench/search_bench.py)
    c.execute("CREATE VIRTUAL TABLE search_docs USING fts5(session_id, seq UNINDEXED, body, "
              "tokenize = 'unicode61 remove_diacritics 2')")
    backfill(c)


def _m5_costs(c: sqlite3.Connection) -> None:
    """Tokens, cost and retry waste (core.store.costs): the session's figures beside its
    totals, and per attempt its tally and how it ended (core.cost_ledger's rows; subtask ''
    is usage of no subtask, attempt -1 one that named none). Filled from the events already
    stored by BACKFILLS[5], on both stores."""
    _run_script(
        c,
        """
        ALTER TABLE sessions ADD COLUMN cost_known INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE sessions ADD COLUMN waste_input_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE sessions ADD COLUMN waste_output_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE sessions ADD COLUMN waste_cost_usd REAL NOT NULL DEFAULT 0;
        CREATE TABLE attempt_costs (
            session_id    TEXT NOT NULL,
            subtask_id    TEXT NOT NULL,
            attempt       INTEGER NOT NULL,
            input_tokens  INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd      REAL NOT NULL DEFAULT 0,
            cost_known    INTEGER NOT NULL DEFAULT 0,
            started       INTEGER NOT NULL DEFAULT 0,
            errored       INTEGER NOT NULL DEFAULT 0,
            done          INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (session_id, subtask_id, attempt)
        ) WITHOUT ROWID;
        """
    )


def _backfill_costs(c: object) -> None:
    from shepherd.core.store.costs import backfill

    backfill(c)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m1_initial, _m2_approvals, _m3_worktrees, _m4_search,
                                                         _m5_costs]
SCHEMA_VERSION = len(MIGRATIONS)
# Data steps run after a migration's statements, on both stores (the connection: sqlite3's,
# or PostgreSQL's dialect.SyncConn), where the statements alone cannot fill a new table.
BACKFILLS: dict[int, Callable[[object], None]] = {5: _backfill_costs}


# --- opening ------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``why`` may quote the file (table names, SQLite's schema errors): never a raw
    control character in a message for the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _not_a_db(path: Path, why: str) -> Exception:
    return NotADatabase(f"{path} is not a Shepherd database: {_printable(why)}")


def damaged(path: Path, why: str) -> Exception:
    """The one wording for a Shepherd database SQLite cannot read whole."""
    return DatabaseDamaged(f"database damaged: {path}: {_printable(why)} (try `sqlite3 {path} .recover` "
                           "into a new file; this one is left as it is)")


def _too_new(path: Path, version: int) -> Exception:
    return SchemaTooNew(f"{path} was written by a newer Shepherd (schema {version} > "
                        f"{SCHEMA_VERSION}); upgrade Shepherd")


def _create_private(path: Path) -> None:
    """Create the empty file 0600 ourselves, before SQLite picks a mode (it then gives
    -wal and -shm the same mode as the main file)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # in case the umask was odd
    finally:
        os.close(fd)


def _check_header(path: Path) -> bool:
    """Refuse foreign, newer or truncated files from their first 100 bytes, before SQLite
    opens them (a read-write open could checkpoint a WAL into the file on close).
    Returns whether the header is ours (application_id SHPD)."""
    with open(path, "rb") as f:
        header = f.read(100)
    if not header:
        return False  # empty file: a new database
    if not header.startswith(SQLITE_MAGIC):
        raise _not_a_db(path, "the file is not a SQLite database")
    if len(header) < 100:
        raise damaged(path, f"the file is truncated ({len(header)} bytes, not even a header)")
    user_version = int.from_bytes(header[60:64], "big")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id not in (0, APPLICATION_ID):
        raise _not_a_db(path, f"it belongs to another program (application_id {app_id:#x})")
    if user_version > SCHEMA_VERSION and app_id == APPLICATION_ID:
        raise _too_new(path, user_version)
    # The header's page count is valid when its "version-valid-for" matches the change
    # counter (SQLite >= 3.7.0 keeps both). A file shorter than that was cut off.
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # Not while a WAL file holds frames: a checkpoint writes page 1 (the new count) before
    # the pages that grow the file, so a runner killed inside one leaves the file short
    # until the next open replays the WAL; that is a crash SQLite recovers, not damage.
    if header[92:96] == header[24:28] and pages and not _wal_has_frames(path):
        expected, size = pages * page_size, path.stat().st_size
        if size < expected:
            raise damaged(path, f"the file is truncated ({size} of {expected} bytes)")
    return app_id == APPLICATION_ID


def _wal_has_frames(path: Path) -> bool:
    try:
        return os.path.getsize(f"{path}-wal") > 32  # (a bare WAL header is 32 bytes)
    except OSError:
        return False


def _readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot change anything. Without a -wal file no other connection
    is open and the main file is all there is: ``immutable`` then keeps SQLite from
    creating -wal/-shm beside a file we may be about to refuse."""
    wal = Path(f"{path}-wal").exists()
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if wal else "&immutable=1")
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)


def _inspect_readonly(path: Path) -> tuple[int, int, list[str]]:
    """user_version, application_id and table names through a read-only connection
    (sees committed changes still in the WAL; cannot modify the file)."""
    conn = _readonly(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    finally:
        conn.close()
    return version, app_id, tables


def _quick_check(path: Path) -> None:
    """PRAGMA quick_check on a read-only connection: every page and record is walked,
    indexes are not cross-checked. Measured ~40 ms for 100k events (53 MB, warm cache):
    cheap enough for every runner's open. A runner must never write into a damaged file."""
    conn = _readonly(path)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
    finally:
        conn.close()
    if problems != ["ok"]:
        raise damaged(path, "; ".join(str(p) for p in problems)[:300])


def _validate(path: Path, version: int, app_id: int, tables: list[str]) -> None:
    if app_id not in (0, APPLICATION_ID):
        raise _not_a_db(path, f"it belongs to another program (application_id {app_id:#x})")
    if version == 0 and tables:
        shown = ", ".join(sorted(tables)[:5])
        raise _not_a_db(path, f"it holds another program's tables ({shown})")
    if version > 0 and app_id != APPLICATION_ID:
        raise _not_a_db(path, "it is another program's SQLite database")
    if version > SCHEMA_VERSION:
        raise _too_new(path, version)


def prepare_database(path: Path, *, create: bool = True, check: bool = False) -> Path:
    """Create (0600) or check the file, switch it to WAL and migrate it to SCHEMA_VERSION.
    Raises NotADatabase / SchemaTooNew / DatabaseDamaged / StoreError; a refused file is
    left untouched. ``create=False`` (read-only commands): a missing or empty file raises
    NoDatabase and nothing (no directory, no file) is made. ``check``: run quick_check
    first (runners, which will write)."""
    path = Path(path).expanduser()
    ours = False
    try:
        if path.exists() and not path.is_file():
            raise StoreError(f"{path} is not a file")
        if not create and not path.exists():
            if path.is_symlink():  # a loop (ELOOP) is not "no database": say what it is
                try:
                    os.stat(path)
                except FileNotFoundError:  # dangling: there is no database (a run makes one)
                    pass
            raise NoDatabase(f"no database at {path}")
        if not create and path.stat().st_size == 0:
            raise NoDatabase(f"no database at {path} (the file is empty)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private(path)
        ours = _check_header(path)
        if path.stat().st_size > 0:
            version, app_id, tables = _inspect_readonly(path)
            _validate(path, version, app_id, tables)
            ours = app_id == APPLICATION_ID
            if check:
                _quick_check(path)
            if version == SCHEMA_VERSION:
                _ensure_wal(path, probe_write=check)
                return path
        _migrate(path)
    except sqlite3.OperationalError as e:  # the file is fine; this process cannot use it now
        raise _cannot_use(path, e) from None
    except sqlite3.DatabaseError as e:
        if ours or "malformed" in str(e):
            raise damaged(path, str(e)) from None
        if "not a database" in str(e):
            raise _not_a_db(path, str(e)) from None
        raise StoreError(f"cannot open {path}: {_printable(str(e))}") from None
    except OSError as e:
        raise StoreError(f"cannot open {path}: {e.strerror or e}") from None
    _tighten_sidecars(path)
    return path


def _connect_rw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _cannot_use(path: Path, e: sqlite3.OperationalError) -> Exception:
    """Locked, read-only, unopenable: one line that says so (never "damaged")."""
    text = str(e)
    if "locked" in text or "busy" in text:
        return StoreError(f"database {path} is locked by another process (waited "
                          f"{BUSY_TIMEOUT_MS // 1000} s); try again when it has finished")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return StoreError(f"cannot open {path} for writing: {_printable(text)} (is the file or "
                          "its directory read-only?)")
    return StoreError(f"cannot open {path}: {_printable(text)}")


def _ensure_wal(path: Path, *, probe_write: bool = False) -> None:
    """WAL on; ``probe_write`` (runners): take and drop the write lock once, so a database
    another process keeps locked is one line here after the busy timeout, not a traceback
    from the middle of a run."""
    conn = _connect_rw(path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        if probe_write:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def _migrate(path: Path) -> None:
    conn = _connect_rw(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
            _validate(path, version, app_id, tables)
            for number in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[number - 1](conn)
                if number in BACKFILLS:
                    BACKFILLS[number](conn)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def _tighten_sidecars(path: Path) -> None:
    """-wal/-shm inherit the main file's mode; make sure they are never wider than 0600."""
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        try:
            mode = stat.S_IMODE(side.stat().st_mode)
            if mode & 0o077:
                os.chmod(side, 0o600)
        except OSError:
            pass
