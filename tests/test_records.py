"""core.records held to what @dataclass does, class by class, side by side."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from shepherd.core import events
from shepherd.core.records import finish, record
from shepherd.core.store import rows


@record(frozen=True, kw_only=True, slots=True)
class Base:
    kind: ClassVar[str] = "base"
    a: str = ""
    n: int = 0


@record(frozen=True, kw_only=True, slots=True)
class Child(Base):
    kind: ClassVar[str] = "child"
    items: list[int] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DBase:
    kind: ClassVar[str] = "base"
    a: str = ""
    n: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class DChild(DBase):
    kind: ClassVar[str] = "child"
    items: list[int] = field(default_factory=list)
    note: str | None = None


@record(frozen=True)
class Row:
    id: str
    count: int
    extra: dict[str, Any] = field(default_factory=dict)
    label: str = "x"

    def doubled(self) -> int:
        return self.count * 2


@dataclass(frozen=True)
class DRow:
    id: str
    count: int
    extra: dict[str, Any] = field(default_factory=dict)
    label: str = "x"


PAIRS = [(Child, DChild, {"a": "s", "n": 3, "items": [1, 2]}), (Row, DRow, {"id": "r", "count": 2})]


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PAIRS)
def test_behaves_as_a_frozen_dataclass(ours: type, theirs: type, kwargs: dict[str, Any]) -> None:
    mine, ref = ours(**kwargs), theirs(**kwargs)
    assert [(f.name, f.type, f.kw_only) for f in dataclasses.fields(mine)] == \
           [(f.name, f.type, f.kw_only) for f in dataclasses.fields(ref)]
    assert dataclasses.is_dataclass(mine) and dataclasses.asdict(mine) == dataclasses.asdict(ref)
    assert repr(mine).replace(ours.__qualname__, "X") == repr(ref).replace(theirs.__qualname__, "X")
    assert str(inspect.signature(ours)) == str(inspect.signature(theirs))
    assert ours.__match_args__ == theirs.__match_args__
    assert mine == ours(**kwargs) and mine != ours(**{**kwargs, "n" if "n" in kwargs else "count": 99})
    assert mine != ref  # another class: not equal, as between two dataclasses
    name = next(iter(kwargs))
    for act in (lambda: setattr(mine, name, "y"), lambda: delattr(mine, name), lambda: setattr(mine, "zz", 1)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            act()
    changed = dataclasses.replace(mine, **{name: "other"})
    assert getattr(changed, name) == "other" and getattr(mine, name) == kwargs[name]
    for clone in (pickle.loads(pickle.dumps(mine)), copy.copy(mine), copy.deepcopy(mine)):
        assert clone == mine and type(clone) is ours


def test_factories_kw_only_slots_and_hash() -> None:
    one, two = Child(), Child()
    assert one.items == [] and one.items is not two.items  # a fresh list each time
    assert Child.kind == "child" and "kind" not in [f.name for f in dataclasses.fields(Child)]
    assert not hasattr(one, "__dict__") and Child.__slots__ == ("items", "note")
    with pytest.raises(TypeError):
        Child("positional")  # type: ignore[misc]
    with pytest.raises(TypeError):
        Child(nope=1)  # type: ignore[call-arg]
    assert hash(Base(a="x", n=1)) == hash(Base(a="x", n=1)) != hash(Base(a="x", n=2))
    assert len({Base(a="x"), Base(a="x"), Base(a="y")}) == 2
    with pytest.raises(TypeError):
        hash(Child())  # a list field: unhashable, as in a dataclass
    row = Row("r", 4)
    assert row.doubled() == 8 and row.label == "x" and Row.label == "x" and row.__dict__
    with pytest.raises(TypeError):
        Row("r")  # type: ignore[call-arg]  # a required field missing


def test_refuses_what_dataclass_refuses() -> None:
    with pytest.raises(TypeError, match="non-default argument"):
        @record(frozen=True)
        class Bad:
            a: int = 0
            b: int
    with pytest.raises(TypeError, match="cannot overwrite attribute __setattr__"):
        @record(frozen=True)
        class Guarded:
            a: int = 0

            def __setattr__(self, name: str, value: Any) -> None: ...
    with pytest.raises(TypeError, match="KW_ONLY"):
        @record
        class Marked:
            a: int = 0
            _: dataclasses.KW_ONLY
            b: int = 1


def test_compiled_on_first_use_and_by_finish() -> None:
    @record(frozen=True, kw_only=True, slots=True)
    class Late(Base):
        z: int = 5

    assert Late.__init__.__qualname__ != "Late.__init__"  # still the first-use stub
    assert Late(z=6).z == 6 and Late.__init__.__qualname__.endswith("Late.__init__")

    @record(frozen=True)
    class Later:
        q: int = 1

    finish()
    assert Later.__init__.__qualname__.endswith("Later.__init__") and Later().q == 1


def test_the_real_vocabulary_and_rows() -> None:
    for cls in (*events.EVENT_TYPES.values(), events.OpaqueEvent):
        ev = cls(session_id="s", seq=1)
        assert events.event_from_json(ev.to_json()) == ev
        assert dataclasses.replace(ev, seq=2).seq == 2 and pickle.loads(pickle.dumps(ev)) == ev
        assert repr(ev).startswith(f"{cls.__qualname__}(session_id='s', seq=1")
    stored = events.lazy_event(events.TextDelta, "s", 7, events.TextDelta(session_id="s", seq=7, text="hi").to_json())
    assert pickle.loads(pickle.dumps(stored)) == stored and stored.text == "hi"
    for name in ("SessionRow", "SubtaskRow", "ToolCallRow", "CommandRow", "ApprovalRow", "WorktreeRow"):
        cls = getattr(rows, name)
        assert dataclasses.is_dataclass(cls) and not dataclasses.fields(cls)[0].kw_only


@record
class Tally:
    tokens: int = 0
    seen: list[str] = field(default_factory=list)
    note: str = field(default="", compare=False, repr=False)
    total: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.total = self.tokens * 2


@dataclass
class DTally:
    tokens: int = 0
    seen: list[str] = field(default_factory=list)
    note: str = field(default="", compare=False, repr=False)
    total: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.total = self.tokens * 2


@record(eq=False, slots=True)
class Block:
    bid: int
    text: str = ""


@dataclass(eq=False, slots=True)
class DBlock:
    bid: int
    text: str = ""


def test_mutable_records_behave_as_dataclasses() -> None:
    mine, ref = Tally(3, ["a"], note="x"), DTally(3, ["a"], note="x")
    assert repr(mine).replace("Tally", "X") == repr(ref).replace("DTally", "X")
    assert str(inspect.signature(Tally)) == str(inspect.signature(DTally))
    assert mine.total == ref.total == 6 and Tally.__match_args__ == DTally.__match_args__
    assert mine == Tally(3, ["a"], note="other")  # compare=False
    assert mine != Tally(4, ["a"])
    assert Tally.__hash__ is None and DTally.__hash__ is None  # mutable and compared: unhashable
    mine.tokens = 5
    assert mine.tokens == 5 and dataclasses.asdict(mine) == {"tokens": 5, "seen": ["a"], "note": "x", "total": 6}
    assert dataclasses.replace(mine, tokens=1).total == 2
    assert Tally().seen is not Tally().seen
    for clone in (pickle.loads(pickle.dumps(mine)), copy.copy(mine), copy.deepcopy(mine)):
        assert clone == mine
    one, same = Block(1, "t"), Block(1, "t")
    assert one != same and hash(one) != hash(same) and one == one  # eq=False: identity, as DBlock
    assert (DBlock(1) != DBlock(1)) and repr(one).replace("Block", "X") == repr(DBlock(1, "t")).replace("DBlock", "X")
    assert not hasattr(one, "__dict__") and Block.__slots__ == DBlock.__slots__
    one.text = "u"
    assert one.text == "u" and pickle.loads(pickle.dumps(one)).text == "u"
    with pytest.raises(TypeError):
        Block()  # type: ignore[call-arg]


def test_a_dataclass_may_subclass_a_record() -> None:
    @dataclass(frozen=True)
    class More(Row):
        more: int = 0

    assert More("r", 1, more=2).more == 2 and More("r", 1).label == "x"


def test_a_plain_subclass_calling_super_init_first_runs_once() -> None:
    @record
    class Parent:
        a: int = 0

    calls: list[int] = []

    class Child(Parent):
        def __init__(self, a: int) -> None:
            calls.append(a)
            super().__init__(a)

    assert Child(3).a == 3 and calls == [3]


def test_core_and_tui_make_records_not_dataclasses() -> None:
    """Every command imports most of them: one @dataclass costs ~0.5 ms at start-up."""
    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for folder in ("core", "tui") for p in (root / folder).rglob("*.py")
                 if p.name != "records.py" and re.search(r"^\s*@(dataclasses\.)?dataclass\b", p.read_text(), re.M)]
    assert offenders == [], f"use shepherd.core.records.record: {offenders}"


def test_first_constructions_from_two_threads_at_once() -> None:
    import threading

    made = []
    for n in range(20):
        @record(frozen=True)
        class Fresh:
            a: int = n

        made.append(Fresh)
    barrier, errors = threading.Barrier(4), []

    def build() -> None:
        barrier.wait()
        try:
            for cls in made:
                assert cls(a=7).a == 7
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(cls().a == i for i, cls in enumerate(made))
