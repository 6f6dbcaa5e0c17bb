"""Reading events back: the lazily decoded rows give exactly what a full decode of the
stored JSON gives, for every type and for rows a damaged or foreign database holds."""

from __future__ import annotations

import json
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shepherd.core.clock import FakeClock
from shepherd.core.events import (
    EVENT_TYPES,
    OpaqueEvent,
    SessionStarted,
    TextDelta,
    ToolStarted,
    event_from_json,
    field_names,
    loads,
)
from shepherd.core.store import Store, open_store
from tests.pg_server import is_pg, pg_dsn, pg_server, sql, store_target  # noqa: F401  (fixtures)


@pytest.fixture
async def store(store_target: Any) -> Any:
    """On SQLite, then on PostgreSQL."""
    s = await open_store(store_target, clock=FakeClock())
    yield s
    await s.close()


def _odd_values(cls: type) -> dict[str, Any]:
    """A value for every own field that the column copies could not reproduce exactly."""
    out: dict[str, Any] = {}
    for name in field_names(cls):
        if name in ("session_id", "seq", "ts", "subtask_id", "attempt"):
            continue
        default = getattr(cls(), name)
        if isinstance(default, bool):
            out[name] = True
        elif isinstance(default, (int, float)) or default is None:
            out[name] = 7
        elif isinstance(default, str):
            out[name] = f"{name} \u2028 é \x1b[31m"
        elif isinstance(default, dict):
            out[name] = {"nested": [1, 2.5, None, {"deep": "x"}]}
        elif isinstance(default, list):
            out[name] = [{"id": "a", "title": "A"}]
    return out


def _stored(path: Any, sid: str) -> list[tuple[int, str]]:
    if is_pg(path):
        return sql(path, "SELECT seq, data FROM events WHERE session_id = ? ORDER BY seq", (sid,))  # type: ignore[return-value]
    conn = sqlite3.connect(str(path))
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    rows = conn.execute("SELECT seq, data FROM events WHERE session_id = ? ORDER BY seq", (sid,)).fetchall()
    conn.close()
    return rows


async def test_every_type_reads_back_as_a_full_decode_of_its_row(store: Store) -> None:
    # ts 100 (an int) is stored as 100.0 in the ts column: the event must keep the JSON's 100
    for cls in EVENT_TYPES.values():
        await store.append(cls(session_id="r", ts=100, subtask_id="sub", attempt=2, **_odd_values(cls)))
    back = await store.events("r", limit=None)
    assert [type(e) for e in back] == list(EVENT_TYPES.values())
    for ev, (seq, data) in zip(back, _stored(getattr(store, "dsn", store.path), "r")):
        want = event_from_json(data)
        assert ev.seq == seq
        assert ev == want and ev.to_json() == want.to_json()
        assert type(ev.ts) is int and ev.ts == 100
    page = await store.events_before("r", back[-1].seq + 1, limit=3)
    assert page == back[-3:]


async def test_a_page_is_decoded_on_the_first_read_of_a_field(store: Store) -> None:
    await store.append(TextDelta(session_id="r", message_id="m", text="hello"))
    (ev,) = await store.events("r")
    assert ev.seq == 1 and ev.session_id == "r"
    with pytest.raises(AttributeError):
        object.__getattribute__(ev, "text")  # not decoded by reading the page
    assert ev.text == "hello"
    assert object.__getattribute__(ev, "message_id") == "m"  # one read decoded all of them
    assert getattr(ev, "call_id", "none") == "none" and not hasattr(ev, "nope")
    (again,) = await store.events("r")
    assert pickle.loads(pickle.dumps(again)) == ev == again.with_()
    assert repr(again) == repr(ev)


async def test_damaged_and_foreign_rows_read_as_before(store: Store) -> None:
    if is_pg(store):  # (PostgreSQL: no torn pages; every row is one our writer made, see pg/reads.py)
        pytest.skip("SQLite's damaged pages and rows edited behind the store's back: SQLite only")
    await store.append(SessionStarted(session_id="d", title="t"))
    for i in range(7):
        await store.append(TextDelta(session_id="d", message_id="m", text=f"row {i}"))
    conn = sqlite3.connect(str(store.path), isolation_level=None)
    edits = {
        2: b'{"type": "text.delta", "text": "cut',  # broken JSON
        3: b'[1, 2]',  # JSON, not an object
        # NaN: Python's JSON reads it, SQLite's json_valid does not
        4: b'{"type": "usage", "session_id": "d", "seq": 4, "ts": 1.0, "subtask_id": null, '
           b'"attempt": null, "input_tokens": 1, "output_tokens": 2, "cost_usd": NaN}',
        # the JSON says another type and seq than the row's columns
        5: json.dumps({"type": "tool.started", "session_id": "d", "seq": 50, "ts": 2.0, "subtask_id": None,
                       "attempt": None, "call_id": "c", "name": "n", "input": {}}).encode(),
        # an older writer: fields missing
        6: b'{"type": "text.delta", "session_id": "d", "seq": 6, "text": "old"}',
        # bytes that are not UTF-8 inside a string
        7: b'{"type": "text.delta", "session_id": "d", "seq": 7, "ts": 3.0, "subtask_id": null, '
           b'"attempt": null, "message_id": "m", "text": "bad \xff\xfe byte"}',
    }
    for seq, data in edits.items():
        conn.execute("UPDATE events SET data = CAST(? AS TEXT) WHERE session_id = 'd' AND seq = ?", (data, seq))
    conn.close()
    back = await store.events("d", limit=None)
    assert [e.seq for e in back[:5]] == [1, 2, 3, 4, 50]
    for seq in (2, 3):
        ev = back[seq - 1]
        assert isinstance(ev, OpaqueEvent) and ev.type == "damaged"
        assert ev.data == {"note": f"[damaged event seq {seq}]"}
    assert store.damaged_events == {("d", 2), ("d", 3)}
    nan = back[3]
    assert nan.type == "usage" and nan.output_tokens == 2 and nan.cost_usd != nan.cost_usd
    assert isinstance(back[4], ToolStarted) and back[4].call_id == "c"
    assert isinstance(back[5], TextDelta) and (back[5].text, back[5].message_id, back[5].ts) == ("old", "", 0.0)
    assert back[6].text == "bad \ufffd\ufffd byte"
    for ev, (_, data) in zip(back[4:], _stored(store.path, "d")[4:]):
        assert ev == event_from_json(data)  # the full decode's values, whichever path read the row


@pytest.mark.parametrize("text", ['{"a": 1}', ' {"a": 1}', '{"a": 1} ', '{"a": 1}x', '{"a":', "", "[1]",
                                  '"s"', '{"a": NaN}', "\ufeff{}", '{"a": "\\ud800"}'])
def test_loads_is_json_loads(text: str) -> None:
    try:
        want: Any = json.loads(text)
    except ValueError as e:
        with pytest.raises(type(e)) as got:
            loads(text)
        assert str(got.value) == str(e)
        return
    assert json.dumps(loads(text)) == json.dumps(want)
