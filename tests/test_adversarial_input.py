"""Hostile input through every entry point of the `shepherd` command line, run as a real
process: task files, command-line arguments and databases.

For each case: exit 2 (or the documented code), exactly one line on stderr starting
``shepherd:``, no traceback, no raw control character from the input on stderr, and the
database (when there is one) byte for byte as it was, with nothing new beside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import run

MARKER = "MARKER-0123456789-EVENT"


def refused(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one stderr line of a refusal; checks the exit code and that it is safe to print."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("shepherd: "), lines[0]
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in lines[0]), repr(lines[0])
    return lines[0]


def snapshot(path: Path) -> tuple[str, list[str]]:
    """The file's hash and the names beside it (no -wal, -shm, .tmp may appear)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
    return digest, sorted(os.listdir(path.parent))


# --- task files -------------------------------------------------------------------------------


def task_text(ws: Path, head: str = "", sub: str = "") -> str:
    return (f'title = "t"\nworkspace = "{ws}"\n{head}\n[[subtasks]]\nid = "a"\nprompt = "p"\n{sub}\n'
            '  [[subtasks.steps]]\n  text = "hi"\n')


def bad_task_files(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (task file, fragments the one-line error must contain)."""
    ws = tmp / "ws"
    ws.mkdir()
    (tmp / "afile").write_text("x")
    cases: dict[str, tuple[str | bytes, list[str]]] = {
        "workspace missing": (task_text(tmp / "nope"), ["workspace", "does not exist"]),
        "workspace is a file": (task_text(tmp / "afile"), ["workspace", "not a directory"]),
        "heartbeat inf": (task_text(ws, "heartbeat_s = inf"), ["heartbeat_s", "finite"]),
        "stall nan": (task_text(ws, "stall_s = nan"), ["stall_s", "finite"]),
        "stall negative": (task_text(ws, "stall_s = -1"), ["stall_s", "> 0"]),
        "heartbeat zero": (task_text(ws, "heartbeat_s = 0"), ["heartbeat_s", "> 0"]),
        "max_attempts huge": (task_text(ws, "max_attempts = 9223372036854775807"), ["max_attempts", "between"]),
        "max_turns negative": (task_text(ws, "max_turns = -5"), ["max_turns", ">= 1"]),
        "check_timeout inf": (task_text(ws, sub="check_timeout = inf"), ["check_timeout", "finite"]),
        "retry delay inf": (task_text(ws, "[retry.transient]\ninitial_delay = inf"),
                            ["retry.transient.initial_delay", "finite"]),
        "retry max nan": (task_text(ws, "[retry.rate_limit]\nmax_delay = nan"),
                          ["retry.rate_limit.max_delay", "finite"]),
        "retry count huge": (task_text(ws, "[retry.transient]\nmax_retries = 1e300"),
                             ["retry.transient.max_retries", "between"]),
        "retry multiplier < 1": (task_text(ws, "[retry.transient]\nmultiplier = 0.5"), ["multiplier", ">= 1"]),
        "step retry_after inf": (task_text(ws, sub='  [[subtasks.steps]]\n  fail = "rate_limit"\n  retry_after = inf'),
                                 ["retry_after", "finite"]),
        "every unknown key": (task_text(ws, "colour = 1\nsize = 2", sub="shade = 3"),
                              ["3 problems", "'colour'", "'size'", "subtasks[0]: unknown key 'shade'"]),
        "nested 10000 arrays": (f'workspace = "{ws}"\nx = ' + "[" * 10_000 + "]" * 10_000 + "\n", ["nested"]),
        "nested 10000 tables": (f'workspace = "{ws}"\nx = ' + "{a = " * 10_000 + "1" + "}" * 10_000 + "\n",
                                ["nested"]),
        "nested 40 in args": (task_text(ws, sub='  [[subtasks.steps]]\n  tools = [{ name = "x", args = '
                                        + "{a = " * 40 + "1" + "}" * 40 + " }]"), ["nested deeper"]),
        "empty subtasks": (f'workspace = "{ws}"\nsubtasks = []\n', ["subtasks", "at least one"]),
        "duplicate ids": (f'workspace = "{ws}"\n[[subtasks]]\nid = "a"\nprompt = "p"\n[[subtasks]]\nid = "a"\n'
                          'prompt = "q"\n', ["subtasks[1].id", "duplicate"]),
        "not utf-8": (b'title = "\xff\xfe"\n', ["not a UTF-8"]),
        "binary garbage": (bytes(range(256)) * 64, ["not a UTF-8"]),
        "huge file": (task_text(ws, 'plan_prompt = "' + "x" * (20 * 1024 * 1024) + '"'), ["too large"]),
        "escape in a key": (task_text(ws, '"\\u001b]0;pwned\\u0007\\u009b2J" = 1'), ["unknown key", "\\x1b"]),
        "markup in a key": (task_text(ws, '"[bold red]boom[/]" = 1'), ["unknown key '[bold red]boom[/]'"]),
        "escape in an id": (f'workspace = "{ws}"\n[[subtasks]]\nid = "a\\u001b[2J"\nprompt = "p"\n',
                            ["subtasks[0].id", "control characters"]),
    }
    out: dict[str, tuple[Path, list[str]]] = {}
    for i, (name, (content, fragments)) in enumerate(cases.items()):
        path = tmp / f"case{i}.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        out[name] = (path, fragments)
    out["a directory"] = (ws, ["cannot read task file"])
    out["a missing file"] = (tmp / "missing.toml", ["cannot read task file"])
    return out


BAD_TASKS = sorted(["workspace missing", "workspace is a file", "heartbeat inf", "stall nan", "stall negative",
                    "heartbeat zero", "max_attempts huge", "max_turns negative", "check_timeout inf",
                    "retry delay inf", "retry max nan", "retry count huge", "retry multiplier < 1",
                    "step retry_after inf", "every unknown key", "nested 10000 arrays", "nested 10000 tables",
                    "nested 40 in args", "empty subtasks", "duplicate ids", "not utf-8", "binary garbage",
                    "huge file", "escape in a key", "markup in a key", "escape in an id", "a directory",
                    "a missing file"])


@pytest.fixture(scope="module")
def task_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    return bad_task_files(tmp_path_factory.mktemp("tasks"))


@pytest.mark.parametrize("case", BAD_TASKS)
def test_a_task_file_that_cannot_run_is_refused_before_anything_runs(
        task_files: dict[str, tuple[Path, list[str]]], tmp_path: Path, case: str) -> None:
    path, fragments = task_files[case]
    db = tmp_path / "s.db"
    line = refused(run("run", str(path), "--headless", "--db", str(db)))
    assert str(path) in line
    for fragment in fragments:
        assert fragment in line, line
    assert not db.exists()  # nothing ran, nothing was stored


# --- command-line arguments -----------------------------------------------------------------------


async def _build_db(path: Path, n_sessions: int = 2, n_events: int = 40) -> list[str]:
    """A real Shepherd database written by the real store: finished sessions of text."""
    from shepherd.core.events import MessageCompleted, SessionFinished, SessionStarted
    from shepherd.core.store import Store

    ws = path.parent / "ws"
    ws.mkdir(exist_ok=True)
    ids = []
    store = await Store.open(path)
    try:
        for s in range(n_sessions):
            sid = f"s{s:04d}abcdef{s}"
            task = {"title": f"session {s}", "backend": "scripted", "workspace": str(ws),
                    "subtasks": [{"id": "a", "prompt": "p", "steps": [{"text": "again"}]}]}
            await store.append(SessionStarted(session_id=sid, title=f"session {s}", backend="scripted",
                                              workspace=str(ws), task=task))
            for i in range(n_events):
                text = f"{MARKER}-{s}-{i} " + "lorem ipsum " * 20
                await store.append(MessageCompleted(session_id=sid, message_id=f"m{i}", text=text))
            await store.append(SessionFinished(session_id=sid, status="done"))
            ids.append(sid)
    finally:
        await store.close()
    assert not Path(f"{path}-wal").exists()  # checkpointed: every byte is in the main file
    return ids


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("good") / "s.db"
    return path, asyncio.run(_build_db(path))


@pytest.mark.parametrize("argv,fragment", [
    (["show", "zzzz"], "no session matches 'zzzz'"),
    (["show", "s"], "matches several sessions"),
    (["export", "s", "--format", "md"], "matches several sessions"),
    (["export", "zz", "--format", "pdf"], "invalid choice: 'pdf'"),
    (["export", "zz"], "--format"),
    (["sessions", "--limit", "-1"], "must be between 1 and"),
    (["sessions", "--limit", "0"], "must be between 1 and"),
    (["sessions", "--limit", "99999999999999999999999"], "must be between 1 and"),
    (["sessions", "--limit", "abc"], "expected a whole number"),
    (["run", "-p", ""], "prompt: must not be empty"),
    (["run", "-p", "  \n "], "prompt: must not be empty"),
    (["run", "-p", "hi", "--backend", "gpt"], "invalid choice: 'gpt'"),
    (["run"], "give a task file or -p PROMPT"),
    (["run", "x.toml", "-p", "hi"], "not both"),
    (["run", "-p", "hi", "--backend", "scripted", "--workspace", "/nonexistent/ws"], "does not exist"),
    (["resume", "zzzz"], "no session matches"),
    (["resume", "s0000abcdef0", "--retry", "nope"], "no subtask 'nope'"),
    (["resume", "s0000abcdef0"], "is done: nothing to resume"),
    (["pause", "zzzz"], "no session matches"),
    (["skip", "s"], "matches several sessions"),
    (["cancel", "s0000abcdef0"], "is done, not running"),
    (["retry", "s0000abcdef0", "a"], "shepherd resume s0000abcdef0 --retry SUBTASK"),
    (["attach", "zzzz"], "no session matches"),
    (["show", "\x1b]0;pwned\x07\x9b2J"], "no session matches '\\x1b]0;pwned\\x07\\x9b2J'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["sessions", "--nope"], "unrecognized arguments"),
])
def test_bad_arguments_are_one_line(good_db: tuple[Path, list[str]], argv: list[str], fragment: str) -> None:
    db, _ = good_db
    before = snapshot(db)
    line = refused(run(*argv, "--db", str(db)))
    assert fragment in line, line
    assert snapshot(db) == before


# --- databases ------------------------------------------------------------------------------------

# Every command that opens a database, with what it needs to get that far.
DB_COMMANDS = {
    "sessions": ["sessions"], "show": ["show", "s0000abcdef0"],
    "export": ["export", "s0000abcdef0", "--format", "jsonl"],
    "attach": ["attach", "s0000abcdef0"], "resume": ["resume", "s0000abcdef0", "--headless"],
    "pause": ["pause", "s0000abcdef0"], "retry": ["retry", "s0000abcdef0"],
    "run": ["run", "-p", "hi", "--backend", "scripted", "--headless"], "demo": ["demo", "--headless"],
}


def _page_size(path: Path) -> int:
    size = int.from_bytes(path.read_bytes()[16:18], "big")
    return 65536 if size == 1 else size


def _page_holding(path: Path, needle: bytes) -> int:
    data = path.read_bytes()
    at = data.index(needle)
    return at // _page_size(path)


def make_bad_db(kind: str, where: Path) -> Path:
    path = where / "bad.db"
    if kind == "not sqlite":
        path.write_bytes(b"this is not a database\n" * 200)
    elif kind == "foreign tables":
        with sqlite3.connect(path) as con:
            con.execute('CREATE TABLE "\x1b]0;pwned\x07[red]x[/]" (a)')
        con.close()
    elif kind == "a directory":
        path.mkdir()
    elif kind == "newer schema":
        asyncio.run(_build_db(path))
        with sqlite3.connect(path) as con:
            con.execute("PRAGMA user_version = 99")
        con.close()
    elif kind in ("truncated", "truncated header", "corrupted page"):
        asyncio.run(_build_db(path, n_events=200))
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            data = data[: len(data) // 2 + 123]
        elif kind == "truncated header":
            data = data[:60]
        else:  # overwrite, in the middle of the file, the events page holding one event
            page = _page_holding(path, f"{MARKER}-0-100 ".encode())
            size = _page_size(path)
            data[page * size:(page + 1) * size] = bytes((i * 7 + 13) % 251 for i in range(size))
        path.write_bytes(bytes(data))
    else:
        raise AssertionError(kind)
    return path


DB_KINDS = {  # kind -> what the line says
    "not sqlite": "not a Shepherd database",
    "a directory": "is not a file",
    "foreign tables": "another program's tables",
    "newer schema": "newer Shepherd",
    "truncated": "database damaged",
    "truncated header": "database damaged",
    "corrupted page": "database damaged",
}


@pytest.mark.parametrize("kind", sorted(DB_KINDS))
def test_a_bad_database_is_refused_by_every_command_and_left_as_it_was(tmp_path: Path, kind: str) -> None:
    db = make_bad_db(kind, tmp_path)
    before = snapshot(db)
    for name, argv in DB_COMMANDS.items():
        proc = run(*argv, "--db", str(db))
        if kind == "corrupted page" and name == "sessions":
            assert proc.returncode == 0, proc.stderr  # the sessions table is intact: it lists
            continue
        line = refused(proc)
        assert DB_KINDS[kind] in line and str(db) in line, (name, line)
        if kind.startswith("truncated"):
            assert "truncated" in line, line
        if kind == "corrupted page":
            assert ".recover" in line, line
        assert snapshot(db) == before, name


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file: no unreadable file can be made")
def test_an_unreadable_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    asyncio.run(_build_db(db))
    db.chmod(0)
    try:
        for argv in DB_COMMANDS.values():
            assert "cannot open" in refused(run(*argv, "--db", str(db)))
    finally:
        db.chmod(0o600)


def test_a_missing_directory_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "dir" / "x.db"
    listing = run("sessions", "--db", str(db))
    assert listing.returncode == 0 and "Traceback" not in listing.stderr
    assert run("sessions", "--json", "--db", str(db)).stdout == ""
    for name, argv in DB_COMMANDS.items():
        if name in ("sessions", "run", "demo"):
            continue
        assert f"no database at {db}" in refused(run(*argv, "--db", str(db))), name
    assert not (tmp_path / "missing").exists()
    assert run(*DB_COMMANDS["run"], "--db", str(db)).returncode == 0  # a run does create it
    assert db.is_file()


def test_an_event_that_does_not_decode_is_shown_as_damaged(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    asyncio.run(_build_db(db, n_sessions=1, n_events=30))
    data = bytearray(db.read_bytes())
    at = data.index(f"{MARKER}-0-7 ".encode())
    data[at - 3:at + 3] = b"\xff\x00}{\x9b["  # broken JSON and bytes that are not UTF-8, in place
    db.write_bytes(bytes(data))
    before = snapshot(db)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        (seq,) = con.execute("SELECT seq FROM events WHERE data LIKE ?", (f"%{MARKER}-0-6 %",)).fetchone()
    con.close()
    damaged_seq = seq + 1
    show = run("show", "s0000abcdef0", "--db", str(db))
    assert show.returncode == 0, show.stderr
    assert f"{MARKER}-0-6 " in show.stdout and f"{MARKER}-0-8 " in show.stdout  # the rest is readable
    assert f"[damaged event seq {damaged_seq}]" in show.stdout
    (warning,) = [ln for ln in show.stderr.splitlines() if ln.strip()]
    assert warning.startswith("shepherd: warning: 1 damaged event") and f"seq {damaged_seq}" in warning
    jl = run("export", "s0000abcdef0", "--format", "jsonl", "--db", str(db))
    rows = [json.loads(line) for line in jl.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))  # none missing
    assert rows[damaged_seq - 1]["type"] == "damaged"
    md = run("export", "s0000abcdef0", "--format", "md", "--db", str(db))
    assert md.returncode == 0 and f"{MARKER}-0-8 " in md.stdout
    assert "Traceback" not in jl.stderr + md.stderr
    assert snapshot(db) == before
