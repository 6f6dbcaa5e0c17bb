"""``@record``: what ``@dataclass`` gives, for less start-up.

``dataclass`` compiles up to seven functions per class (``__init__``, ``__eq__``,
``__repr__``, ``__setattr__``/``__delattr__`` when frozen, ``__getstate__``/``__setstate__``
when frozen and slotted) and, for a class without a docstring, computes its signature.
Every command imports ~100 of our classes (the event vocabulary, the store's rows, the
task, the engine's and the views' records) and constructs few of them before its first
screen: that was a third of the store's import time and ~35 ms of the demo's start. Here
``__eq__``, ``__hash__``, ``__repr__``, the frozen guards and ``__setstate__`` are written
once, below, and shared; a class's ``__init__`` is compiled at its first construction
(``finish()`` compiles every pending one at once).

The classes stay dataclasses to every reader: ``dataclasses.fields``, ``replace``,
``asdict`` and ``is_dataclass`` work, since ``__dataclass_fields__`` holds real ``Field``s.
Supported: ``frozen``, ``eq``, ``kw_only`` and ``slots``; ``field(default=...,
default_factory=..., init=, repr=, compare=)``; ``ClassVar`` annotations (skipped);
``__post_init__``; inheritance from other records or dataclasses. Anything else (``order``,
``KW_ONLY``, ``InitVar``) is refused: use ``dataclasses.dataclass`` for it.
``tests/test_records.py`` holds these to dataclass's behaviour, side by side.
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
import threading
import typing
from dataclasses import MISSING, Field, FrozenInstanceError
from types import SimpleNamespace
from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=type)

_PENDING: list[tuple[type, bool, bool]] = []  # (class, kw_only, frozen) whose __init__ is not compiled yet
_LOCK = threading.RLock()
_FIELD = dataclasses._FIELD  # type: ignore[attr-defined]  # what fields() keeps
_FACTORY = dataclasses._HAS_DEFAULT_FACTORY  # type: ignore[attr-defined]  # (its repr: <factory>)


# --- the shared methods (each class keeps its field names and a values getter) ----------


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is self.__class__:
        values = self.__record_values__
        return values(self) == values(other)  # type: ignore[no-any-return]
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self.__record_values__(self))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    cls = self.__class__
    return f"{cls.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in cls.__record_repr__)})"


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _setstate(self: Any, state: Any) -> None:
    """pickle and copy restore state with setattr, which a frozen record refuses."""
    if isinstance(state, tuple):  # (the __dict__ or None, the slots' values)
        merged: dict[str, Any] = {}
        for part in state:
            merged.update(part or {})
        state = merged
    for name, value in (state or {}).items():
        object.__setattr__(self, name, value)


def _getter(names: tuple[str, ...]) -> Callable[[Any], Any]:
    if len(names) > 1:
        return operator.attrgetter(*names)  # (a tuple)
    return lambda obj: tuple(getattr(obj, n) for n in names)


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):  # (from __future__ import annotations)
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is typing.ClassVar or getattr(annotation, "__origin__", None) is typing.ClassVar


def _refused(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "KW_ONLY" in text or "InitVar" in text


# --- the decorator -------------------------------------------------------------------------


def record(cls: T | None = None, /, *, frozen: bool = False, eq: bool = True, kw_only: bool = False,
           slots: bool = False) -> Any:
    """``@dataclass`` with these options (``@record`` or ``@record(frozen=True, ...)``)."""

    def make(cls: T) -> T:
        return _make(cls, frozen=frozen, eq=eq, kw_only=kw_only, slots=slots)

    return make if cls is None else make(cls)


def _make(cls: T, *, frozen: bool, eq: bool, kw_only: bool, slots: bool) -> T:
    fields: dict[str, Field[Any]] = {}
    for base in reversed(cls.__mro__[1:]):
        fields.update(base.__dict__.get("__dataclass_fields__", {}))
    own: list[str] = []
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        if _refused(annotation):
            raise TypeError(f"{cls.__name__}.{name}: KW_ONLY and InitVar need dataclasses.dataclass")
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else dataclasses.field(default=value)
        f.name, f.type, f._field_type = name, annotation, _FIELD  # type: ignore[attr-defined]
        f.kw_only = kw_only  # type: ignore[attr-defined]
        fields[name] = f
        own.append(name)
    required_after_default = False
    for f in fields.values():
        if not f.init or f.kw_only:  # type: ignore[attr-defined]
            continue
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if not has_default and required_after_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        required_after_default = required_after_default or has_default
    body = cls.__dict__
    if slots:
        if "__slots__" in body:
            raise TypeError(f"{cls.__name__} already specifies __slots__")
        ns = {k: v for k, v in body.items() if k not in own and k not in ("__dict__", "__weakref__")}
        ns["__slots__"] = tuple(own)
        cls = type(cls)(cls.__name__, cls.__bases__, ns)  # type: ignore[assignment]
    else:
        for name in own:  # a Field left on the class: its default, as dataclass leaves it
            if isinstance(body.get(name), Field):
                default = fields[name].default
                if default is MISSING:
                    delattr(cls, name)
                else:
                    type.__setattr__(cls, name, default)

    def put(name: str, value: Any) -> None:
        if name not in body:  # the class's own method wins, as with dataclass
            type.__setattr__(cls, name, value)

    compared = tuple(n for n, f in fields.items() if f.compare)
    type.__setattr__(cls, "__dataclass_fields__", fields)
    type.__setattr__(cls, "__dataclass_params__", SimpleNamespace(  # what a dataclass subclass reads
        init=True, repr=True, eq=eq, order=False, unsafe_hash=False, frozen=frozen, match_args=True,
        kw_only=kw_only, slots=slots, weakref_slot=False))
    type.__setattr__(cls, "__record_names__", tuple(fields))  # (every field, in order)
    type.__setattr__(cls, "__record_repr__", tuple(n for n, f in fields.items() if f.repr))
    type.__setattr__(cls, "__record_values__", staticmethod(_getter(compared)))
    type.__setattr__(cls, "__match_args__", tuple(n for n, f in fields.items() if f.init and not f.kw_only))  # type: ignore[attr-defined]
    put("__repr__", _repr)
    if eq:
        put("__eq__", _eq)
        explicit_hash = "__hash__" in body and not (body["__hash__"] is None and "__eq__" in body)
        if not explicit_hash:
            type.__setattr__(cls, "__hash__", _hash if frozen else None)
    if frozen:
        for name, fn in (("__setattr__", _frozen_setattr), ("__delattr__", _frozen_delattr)):
            if name in body:
                raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
            type.__setattr__(cls, name, fn)
        put("__setstate__", _setstate)
    type.__setattr__(cls, "__init__", _first_init(cls))
    _PENDING.append((cls, kw_only, frozen))
    return cls


def _first_init(cls: type) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        """The class's first construction: compile its real __init__, then call it (this
        class's, not type(self)'s: a subclass's own __init__ may be the caller)."""
        _compile(cls)
        cls.__init__(self, *args, **kwargs)  # type: ignore[misc]

    return __init__


def finish() -> None:
    """Compile the ``__init__`` of every record made so far, in one ``exec`` (else each is
    compiled at its class's first construction: compiling is most of what a record costs,
    ~25 µs a line, and most classes are not constructed on a given command's way to its
    first screen)."""
    _compile(None)


def _compile(only: type | None) -> None:
    """Compile the pending ``__init__`` of ``only`` (None: of every pending record)."""
    with _LOCK:  # (the store's reader thread makes rows while the loop makes events)
        pending = [entry for entry in _PENDING if only is None or entry[0] is only]
        for entry in pending:
            _PENDING.remove(entry)
        if pending:
            _compile_inits(pending)


def _compile_inits(pending: list[tuple[type, bool, bool]]) -> None:
    env: dict[str, Any] = {"_osa": object.__setattr__, "_FACTORY": _FACTORY}
    lines: list[str] = []
    for k, (cls, kw_only, frozen) in enumerate(pending):
        params: list[str] = []
        kw_params: list[str] = []
        body: list[str] = []
        for i, f in enumerate(cls.__dataclass_fields__.values()):  # type: ignore[attr-defined]
            name, key = f.name, f"_{k}_{i}"
            if f.default_factory is not MISSING:
                env[f"{key}_f"] = f.default_factory
                value = f"{key}_f() if {name} is _FACTORY else {name}" if f.init else f"{key}_f()"
                param = f"{name}=_FACTORY"
            elif f.default is not MISSING:
                env[f"{key}_d"] = f.default
                value = name if f.init else f"{key}_d"
                param = f"{name}={key}_d"
            elif f.init:
                value, param = name, name
            else:
                continue  # no init, no default: not set, as with dataclass
            if f.init:
                (kw_params if f.kw_only else params).append(param)
            slot = next((c.__dict__[name] for c in cls.__mro__ if name in c.__dict__.get("__slots__", ())), None)
            if slot is not None and frozen:  # its descriptor sets it directly, past the frozen guard
                env[f"{key}_s"] = slot.__set__
                body.append(f"  {key}_s(self, {value})")
            elif frozen:
                body.append(f"  _osa(self, {name!r}, {value})")
            else:
                body.append(f"  self.{name} = {value}")
        if hasattr(cls, "__post_init__"):
            body.append("  self.__post_init__()")
        all_params = ", ".join(params + (["*", *kw_params] if kw_params else []))
        lines.append(f"def _init_{k}(self{', ' if all_params else ''}{all_params}):")
        lines.extend(body or ["  pass"])
    exec("\n".join(lines), env)  # noqa: S102 - our own generated source, from class definitions
    for k, (cls, _, _) in enumerate(pending):
        init = env[f"_init_{k}"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        init.__module__ = cls.__module__
        init.__annotations__ = {f.name: f.type for f in cls.__dataclass_fields__.values() if f.init}  # type: ignore[attr-defined]
        init.__annotations__["return"] = None
        type.__setattr__(cls, "__init__", init)
