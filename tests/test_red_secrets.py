"""Red-team round, secrets and terminal safety: what survived the first fixes of issue 8.

- a secret value the model streams over two deltas that land in two stored rows (each row
  scrubbed alone holds only a piece; the view and the JSONL export join them again);
- credentials under names the first rules missed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shepherd.core.backends.base import AttemptContext
from shepherd.core.engine import Supervisor
from shepherd.core.events import Event, MessageCompleted, TextDelta
from shepherd.core.secrets import REDACTED, child_env, held_tail, is_secret_name, scrub_text
from shepherd.core.store import Store
from tests.engine_helpers import FAST, make_task, stored

KEY = "sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0"


class SplitBackend:
    """Streams ``pieces`` as deltas of one message, waiting after each until the engine
    has committed a text.delta row (or a while), so the pieces land in separate rows."""

    name = "split"

    def __init__(self, store: Store, pieces: list[str]) -> None:
        self.store, self.pieces = store, pieces

    async def attempt(self, ctx: AttemptContext) -> AsyncIterator[Event]:
        committed = asyncio.Event()
        unsubscribe = self.store.subscribe(
            lambda evs: committed.set() if any(e.type == "text.delta" for e in evs) else None)
        try:
            for piece in self.pieces:
                committed.clear()
                yield TextDelta(message_id="m1", text=piece)
                try:  # the old engine commits every piece alone after its 25 ms window
                    await asyncio.wait_for(committed.wait(), timeout=0.5)
                except asyncio.TimeoutError:
                    pass  # the piece was held back: nothing to commit yet
            yield MessageCompleted(message_id="m1", text="".join(self.pieces))
        finally:
            unsubscribe()


async def _stream(tmp_path: Path, pieces: list[str]) -> list[str]:
    ws = tmp_path / "ws"
    ws.mkdir()
    store = await Store.open(tmp_path / "s.db")
    try:
        sup = Supervisor(store, make_task(ws, [{"id": "t1", "prompt": "p"}]),
                         backend=SplitBackend(store, pieces), clock=FAST, interactive=False)
        assert await sup.run() == "done"
        return [e.text for e in await stored(store, sup.session_id, "text.delta")]  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_secret_streamed_over_two_deltas_is_never_stored_in_pieces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    rows = await _stream(tmp_path, ["The key is ", KEY[:14], KEY[14:30], KEY[30:] + " and ", "that's all."])
    joined = "".join(rows)
    assert KEY[:14] not in joined and KEY[14:30] not in joined and KEY[30:] not in joined, rows
    assert joined == f"The key is {REDACTED} and that's all."
    assert len(rows) > 1  # still streamed: the text before the key was not held back


async def test_a_key_shaped_word_split_over_deltas_is_stored_whole(tmp_path: Path) -> None:
    """A key the model read from a file (not in the environment): the key patterns can only
    see it whole, so a trailing word is held back until it ends."""
    key = "sk-proj-" + "Ab3dEf6hIj9lMn2pQr5tUv8x"
    rows = await _stream(tmp_path, ["Found ", key[:10], key[10:] + " in .env"])
    assert not any(key[:10] in r or key[10:] in r for r in rows), rows
    assert key not in "".join(rows)


def test_held_tail_holds_only_what_could_grow_into_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "p@ss w0rd!long")  # spaces and symbols: held by value
    assert held_tail("hello world ") == 0
    assert held_tail("hello wor") == 3  # a word may still grow into a key
    assert held_tail("the pass is p@ss w0") == len("p@ss w0")
    assert held_tail("x" * 5000) == 512  # a long run of word characters: bounded
    assert held_tail("中文没有空格的文本") == 0  # text without spaces still streams


@pytest.mark.parametrize("name,value", [
    ("STRIPE_SK", "sk_live_51HabcdefGHIJKLmnop"),
    ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"),
    ("SENTRY_DSN", "https://abcdef0123456789@o1.ingest.sentry.io/42"),
    ("MY_DB_PASS", "hunter2hunter2"),
    ("DATABASE_URL", "postgres://app:s3cretpw@db/app"),
    ("PGPASSWORD", "s3cretpw-pg"),  # the README says *PASSWORD*
    ("MYSQL_PWD", "s3cretpw-my"),
    ("CI_JOB_JWT", "eyJhbGciOiJIUzI1NiJ9.e30.abc"),
    ("AZURE_STORAGE_CONNECTION_STRING", "DefaultEndpointsProtocol=https;AccountKey=abcdEFGH1234=="),
])
def test_credentials_under_names_the_first_rules_missed(name: str, value: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    assert is_secret_name(name, value)
    assert name not in child_env()
    assert value not in scrub_text(f"x {value} y")


def test_ordinary_variables_stay_in_a_tools_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PATH", "HOME", "LANG", "SKIP_TESTS", "WEBHOOK_TIMEOUT", "TOKENIZERS_PARALLELISM", "DESK",
                 "PWD", "OLDPWD", "CONNECTION_TIMEOUT"):
        monkeypatch.setenv(name, "some-value-1234")
        assert not is_secret_name(name, "some-value-1234"), name
        assert name in child_env()


async def test_a_secret_with_quotes_and_accents_is_scrubbed_inside_json_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function call's ``arguments`` is JSON *text* inside the stored item: there the
    value reads ``p\\"\\u00e4...``, not as it is in the environment."""
    import json
    import sqlite3
    from urllib.parse import quote

    value = 'pä"ss\\wörd/&=12345'
    monkeypatch.setenv("MY_DB_PASSWORD", value)
    escaped = [json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]
    items = [{"type": "function_call", "call_id": "c1", "name": "run_command",
              "arguments": json.dumps({"command": f"psql --password {value}"}, ensure_ascii=asc)}
             for asc in (True, False)]
    items.append({"type": "message", "content": "see https://x.test/?p=" + quote(value)})
    store = await Store.open(tmp_path / "s.db")
    try:
        await store.agents_session("s1").add_items(items)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "s.db") as con:
        stored_items = "\n".join(r[0] for r in con.execute("SELECT item_json FROM agent_items"))
    assert stored_items.count(REDACTED) == 3, stored_items
    for form in (value, *escaped, quote(value, safe="")):
        assert form not in stored_items


SWAPPER = """
import os, sys
ws = sys.argv[1]
print("ready", flush=True)
while True:  # "f" is a file, then a symlink to a file outside, then a file again...
    for a, b in (("file", "f"), ("f", "file"), ("link", "f"), ("f", "link")):
        try:
            os.rename(os.path.join(ws, a), os.path.join(ws, b))
        except OSError:
            pass
        open(os.path.join(ws, "file"), "a").close()
"""


def test_file_tools_never_write_or_read_through_a_link_swapped_in_after_the_check(tmp_path: Path) -> None:
    """The file tools run in Shepherd's process, outside any sandbox; the agent's shell
    (even confined by bwrap) can write the workspace, so it can swap a file for a symlink
    between the path check and the open. Real race, real files: another process swaps
    ``f`` between a file and a link to a file outside, as fast as it can."""
    import os
    import subprocess
    import sys

    from shepherd.core.tools.workspace import read_file, write_file

    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    (outside / "f").write_text("outside secret")
    os.symlink(outside / "f", ws / "link")
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(ws)],  # its own GIL: a real race
                               stdout=subprocess.PIPE, text=True)
    assert swapper.stdout is not None and swapper.stdout.readline() == "ready\n"
    reads, refused = set(), 0
    try:
        for i in range(3000):
            refused += write_file(ws, "f", f"written {i}").startswith("Error:")
            reads.add(read_file(ws, "f"))
    finally:
        swapper.kill()
        swapper.wait()
    assert (outside / "f").read_text() == "outside secret"  # never written through the link
    assert "outside secret" not in reads  # never read through it
    assert {r.split(" ")[0] for r in reads} <= {"written", "", "Error:"}
    assert refused < 3000  # the tools still work between swaps


def test_a_symlink_loop_is_an_error_the_model_reads_not_an_exception(tmp_path: Path) -> None:
    import os

    from shepherd.core.tools.workspace import list_files, read_file, write_file

    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    for out in (read_file(tmp_path, "a"), write_file(tmp_path, "a/x", "y"), list_files(tmp_path, "b")):
        assert out.startswith("Error: "), out


RUNNER_SCRIPT = r'''
import asyncio, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from shepherd.core.tools.workspace import run_command

cmd = """p=$$
for i in 1 2 3; do
  p=$(awk '{print $4}' /proc/$p/stat)
  echo "ancestor $p: $(tr '\\0' '\\n' < /proc/$p/environ | grep -a LEAKME | tr a-zA-Z n-za-mN-ZA-M)"
done 2>&1"""
print(asyncio.run(run_command(Path(tempfile.mkdtemp()), cmd, 30)))
'''


def test_a_tool_cannot_read_the_runners_environment_from_proc() -> None:
    """Without the sandbox the shell runs as the same user: /proc/<runner>/environ held
    every credential child_env withheld, and rot13 got it past every scrubber into the
    store and back to the model. A real runner process and a real tool process, as an
    ordinary user (root reads every /proc entry whatever the runner does)."""
    import codecs
    import os
    import shutil
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("/proc and prctl are Linux")
    root = str(Path(__file__).resolve().parents[1])
    argv = [sys.executable, "-c", RUNNER_SCRIPT, root]
    if os.geteuid() == 0:
        setpriv, system_python = shutil.which("setpriv"), shutil.which("python3", path="/usr/bin")
        if not setpriv or not system_python:
            pytest.skip("running as root, without setpriv and /usr/bin/python3 to run as an ordinary user")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", system_python, "-c",
                RUNNER_SCRIPT, root]
    env = {**os.environ, "LEAKME_API_KEY": "leakme-0123456789abcdefghij"}  # in the runner's /proc environ
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/", env=env)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "ancestor" in out, out
    assert codecs.encode("leakme-0123456789abcdefghij", "rot13") not in out, out
    assert "Permission denied" in out  # the runner's own environ
