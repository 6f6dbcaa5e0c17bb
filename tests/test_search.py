"""Full-text search (core.store.search, store.search, `shepherd search`): what is indexed,
queries a person types, scrubbing, the migration's backfill, consistency after SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from pathlib import Path

import pytest

from shepherd.core.events import (ApprovalDecided, Control, Error, MessageCompleted, SessionStarted, TextDelta,
                                  ToolFinished, ToolStarted)
from shepherd.core.store import Store, open_store
from shepherd.core.store.search import MARK_END, MARK_START
from tests.cli_helpers import run
from tests.pg_server import is_pg, pg_dsn, pg_server, sql, store_target  # noqa: F401 - the fixtures

SECRET = "sk-ant-api03-" + "Q" * 40


async def _fill(store, sid: str = "s1") -> None:
    common = {"session_id": sid, "subtask_id": "a", "attempt": 1}
    await store.append(SessionStarted(session_id=sid, title="t", backend="scripted", workspace="/w"))
    for ev in (TextDelta(message_id="m", text="deltaonly", **common),
               MessageCompleted(message_id="m", text="the wombat sleeps", **common),
               ToolStarted(call_id="c1", name="bash", input={"cmd": "grep platypus src"}, **common),
               ToolFinished(call_id="c1", output="found echidna here", **common),
               Error(kind="api", message=f"numbat exploded with {SECRET}", **common),
               Control(command="note", text="remember the quokka", **common),
               ApprovalDecided(call_id="c1", decision="denied", reason="no bilby please", **common)):
        await store.append(ev)


async def test_every_kind_of_text_is_found_and_deltas_are_not(store_target) -> None:
    async with await open_store(store_target) as store:
        await _fill(store)
        want = {"wombat": "message.completed", "platypus": "tool.started", "echidna": "tool.finished",
                "numbat": "error", "quokka": "control", "bilby": "approval.decided"}
        for word, type_ in want.items():
            hits = await store.search(word)
            assert [(h.session_id, h.type, h.subtask_id) for h in hits] == [("s1", type_, "a")], word
            assert f"{MARK_START}{word}{MARK_END}" in hits[0].snippet
        assert await store.search("deltaonly") == []
        assert len(await store.search("wombat sleeps")) == 1  # all terms
        assert await store.search("wombat echidna") == []  # ... in one event


async def test_the_index_holds_no_secret_the_events_do_not(store_target) -> None:
    async with await open_store(store_target) as store:
        await _fill(store)
        assert (await store.search("numbat"))[0].snippet.count("redacted") == 1
        assert await store.search("QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ") == []
    bodies = sql(store_target, "SELECT body FROM search_docs")
    assert bodies and not any(SECRET in b[0] or "QQQQQQQQ" in b[0] for b in bodies)


QUERIES = ['"wombat', 'wombat"', '-wombat', 'wombat*', 'wom:bat', 'NEAR(wombat sleeps)', 'wombat NEAR sleeps',
           'AND', 'OR wombat', 'NOT', '""', "'", '(', ')', '^wombat', 'col:wombat', '{wombat}', '\\', '%', '_',
           '* * *', '-', 'wombat AND', '"""', 'sleeps:*', '&|!', "wombat's"]


async def test_typed_queries_are_words_never_syntax(store_target) -> None:
    async with await open_store(store_target) as store:
        await _fill(store)
        for q in QUERIES:
            hits = await store.search(q)  # never raises
            assert all(h.session_id == "s1" for h in hits), q
        assert len(await store.search('"wombat')) == 1
        assert len(await store.search('(wombat* -"sleeps:')) == 1
        assert await store.search("NEAR(wombat sleeps)") == []  # NEAR is a word here, and not in the text


async def test_session_filter_limit_and_newest_first(store_target) -> None:
    async with await open_store(store_target) as store:
        await _fill(store, "s1")
        await _fill(store, "s2")
        hits = await store.search("wombat")
        assert [h.session_id for h in hits] == ["s2", "s1"]
        assert [h.session_id for h in await store.search("wombat", session_id="s1")] == ["s1"]
        assert len(await store.search("wombat", limit=1)) == 1
        assert await store.search("s1") == []  # the text is searched, not the session id
        await _fill(store, 's"1 x')
        assert [h.session_id for h in await store.search("wombat", session_id='s"1 x')] == ['s"1 x']
        assert await store.search("wombat", session_id="1 x") == []
        assert [h.type for h in await store.search("echidna OR platypus")] == []


async def test_the_migration_indexes_an_existing_database(store_target) -> None:
    async with await open_store(store_target) as store:
        await _fill(store)
    # a schema-3 database: no index yet (nor what migration 5 adds)
    sql(store_target, "DROP TABLE search_docs")
    sql(store_target, "DROP TABLE attempt_costs")
    for column in ("cost_known", "waste_input_tokens", "waste_output_tokens", "waste_cost_usd"):
        sql(store_target, f"ALTER TABLE sessions DROP COLUMN {column}")
    if is_pg(store_target):
        sql(store_target, "UPDATE shepherd_schema SET version = 3")
    else:
        sql(store_target, "PRAGMA user_version = 3")
    async with await open_store(store_target) as store:
        assert [h.type for h in await store.search("platypus")] == ["tool.started"]
        assert len(await store.search("wombat")) == 1
        await store.append(MessageCompleted(session_id="s1", text="after the wombat"))
        assert len(await store.search("wombat")) == 2


# --- the command line ----------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cli.db"

    async def fill() -> None:
        async with await Store.open(path) as store:
            await _fill(store, "sess-one")
            await store.append(MessageCompleted(session_id="sess-one", text="evil \x1b[31m wombat \x1b]0;x\x07 tail\nnext"))
    asyncio.run(fill())
    return path


def test_cli_prints_one_hit_a_line_with_plain_marks_when_piped(db: Path) -> None:
    proc = run("search", "wombat", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[1] == "sess-one #3 a message.completed: the «wombat» sleeps"
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "[" not in lines[1]
    assert "«wombat»" in lines[0] and "tail next" in lines[0]


def test_cli_json_lines(db: Path) -> None:
    proc = run("search", "echidna", "--json", "--session", "sess", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["session_id"], r["seq"], r["type"], r["snippet"]) for r in rows] == [
        ("sess-one", 5, "tool.finished", "found «echidna» here")]


@pytest.mark.parametrize("args, says", [
    (["   "], "no word"), (["-"], "no word"), (["wombat", "--limit", "0"], "--limit"),
    (["wombat", "--limit", "x"], "--limit"), (["wombat", "--session", "nope"], "nope")])
def test_cli_bad_input_is_one_line_and_exit_2(db: Path, args: list[str], says: str) -> None:
    proc = run("search", *args, "--db", str(db))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr


def test_cli_no_database_is_one_line(tmp_path: Path) -> None:
    proc = run("search", "wombat", "--db", str(tmp_path / "none.db"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists()


# --- consistency after SIGKILL --------------------------------------------------------

CHILD = """
import asyncio, sys
sys.path.insert(0, {root!r})
from shepherd.core.events import MessageCompleted, SessionStarted, ToolFinished
from shepherd.core.store.db import Store

async def main():
    store = await Store.open({db!r})
    sid = {sid!r}
    await store.append(SessionStarted(session_id=sid, title="k", backend="scripted", workspace="/w"))
    async def producer(p):
        i = 0
        while True:
            word = f"w{{p}}x{{i}}"
            cls = MessageCompleted(session_id=sid, text=f"word {{word}} end") if i % 2 else \\
                ToolFinished(session_id=sid, call_id=word, output=f"out {{word}}")
            done = await store.append(cls)
            sys.stdout.write(word + "\\n"); sys.stdout.flush()
            i += 1
    await asyncio.gather(*(producer(p) for p in range(4)))
asyncio.run(main())
"""


async def test_after_sigkill_every_committed_event_is_found_and_nothing_else(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    root = str(Path(__file__).resolve().parents[1])
    for round_no in range(6):
        sid = f"k{round_no}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD.format(root=root, db=str(db), sid=sid),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        acked: set[str] = set()
        for _ in range(rng.randint(5, 300)):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, (await proc.stderr.read()).decode()
            acked.add(line.decode().strip())
        proc.kill()
        await proc.wait()
        async with await Store.open(db) as store:
            events = await store.events(sid, limit=None)
            committed = {(getattr(e, "call_id", "") or e.text.split()[1]): e.seq
                         for e in events if e.type in ("message.completed", "tool.finished")}
            assert acked <= set(committed)  # (the store's own promise)
            for word, seq in committed.items():
                hits = await store.search(word, session_id=sid)
                assert [(h.seq) for h in hits] == [seq], (round_no, word)
            p_max = {p: max((int(w.split("x")[1]) for w in committed if w.startswith(f"w{p}x")), default=-1)
                     for p in range(4)}
            for p, top in p_max.items():  # the next words, never committed: never found
                for i in range(top + 1, top + 4):
                    assert await store.search(f"w{p}x{i}", session_id=sid) == []
        orphans = sql(db, "SELECT COUNT(*) FROM search_docs d LEFT JOIN events e ON e.session_id = d.session_id "
                          "AND e.seq = d.seq WHERE d.session_id = ? AND e.id IS NULL", (sid,))[0][0]
        docs = sql(db, "SELECT COUNT(*) FROM search_docs d JOIN events e ON e.session_id = d.session_id "
                       "AND e.seq = d.seq WHERE d.session_id = ? AND e.type IN ('message.completed', "
                       "'tool.finished')", (sid,))[0][0]
        assert (orphans, docs) == (0, len(committed))


def test_a_terminal_gets_bold_marks_around_safe_text() -> None:
    from shepherd.tui.cli_search import BOLD_MARKS, render_snippet

    out = render_snippet(f"a\x1b[2J {MARK_START}hit\x1b]0;t\x07{MARK_END}\nb", BOLD_MARKS)
    assert out.count("\x1b[1m") == 1 and out.count("\x1b[22m") == 1
    assert "\x1b[2J" not in out and "\x07" not in out and "\n" not in out


def test_the_writer_indexes_its_events_as_their_stored_json_would_be() -> None:
    """The writer reads the index text off the events it holds (search.event_docs), not off
    their JSON: for every indexed type and odd values, the same rows as from the JSON."""
    from shepherd.core.events import (ApprovalRequested, SessionFinished, SessionInterrupted, SessionPaused,
                                      SubtaskFinished)
    from shepherd.core.store.search import doc_rows, event_docs

    odd = ["plain", "", "\x02mark\x03 and \x00nul", "\x1b[31mred\x1b[0m [bold]x[/bold]", "ünï 😀 \u2028",
           "y" * 30_000, "  padded  "]
    inputs = [{}, {"cmd": "ls", "n": 3, "nested": {"b": [1, 2.5, None, True], "a": "x"}},
              {"path": Path("/tmp/x")}, {"t": (1, "two")}, {1: "int key"}]
    events = []
    for i, text in enumerate(odd):
        common = {"session_id": "s", "seq": i + 1, "subtask_id": "a", "attempt": 1}
        inp = inputs[i % len(inputs)]
        events += [MessageCompleted(message_id="m", text=text, **common),
                   ToolStarted(call_id="c", name=text[:10], input=inp, **common),
                   ToolFinished(call_id="c", output=text, **common), Error(kind="api", message=text, **common),
                   Control(command="note", text=text, **common),
                   ApprovalRequested(call_id="c", tool="bash", input=inp, **common),
                   ApprovalDecided(call_id="c", decision="denied", reason=text, **common),
                   SubtaskFinished(status="done", reason=text, **common),
                   SessionFinished(status="done", reason=text, **common),
                   SessionPaused(reason=text, **common), SessionInterrupted(reason=text, **common),
                   TextDelta(message_id="m", text=text, **common)]
    from_json = doc_rows([(e.session_id, e.seq, e.type, e.to_json()) for e in events])
    assert event_docs(events) == from_json
    assert len(from_json) > len(odd) * 8
