"""Frozen records made cheaply: what ``@dataclass(frozen=True)`` gives, for less start-up.

``dataclass`` compiles five to seven functions per class (``__init__``, ``__setattr__``,
``__delattr__``, ``__eq__``, ``__hash__``, ``__repr__``, and ``__getstate__``/``__setstate__``
when slotted) and, for a class without a docstring, computes its signature. Every command
imports the event vocabulary and the store's rows (~35 classes), so that was a third of the
store's import time. Here the comparisons, the hash, the repr and the frozen guards are
written once, on ``Frozen``; each class's ``__init__`` is compiled on its first use, all
pending classes in one ``exec``.

The classes stay dataclasses to every reader: ``dataclasses.fields``, ``replace``,
``asdict`` and ``is_dataclass`` work, since ``__dataclass_fields__`` holds real ``Field``s.
What is supported: fields with a default or a ``field(default_factory=...)``, ``ClassVar``
annotations (skipped), inheritance from other frozen classes, ``kw_only`` and ``slots``.
``tests/test_frozen.py`` holds it to dataclass's behaviour.
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
import typing
from types import SimpleNamespace
from dataclasses import MISSING, Field, FrozenInstanceError
from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=type)

_PENDING: list[tuple[type, bool]] = []  # (class, kw_only) whose __init__ is not compiled yet
_FIELD = dataclasses._FIELD  # type: ignore[attr-defined]  # what fields() keeps
_FACTORY = dataclasses._HAS_DEFAULT_FACTORY  # type: ignore[attr-defined]  # (its repr: <factory>)


class Frozen:
    """The shared half of every frozen record: immutable, compared and hashed by its fields."""

    __slots__ = ()
    __frozen_names__: tuple[str, ...] = ()
    __frozen_values__: Callable[[Any], Any] = staticmethod(lambda obj: ())  # type: ignore[assignment]

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            values = self.__frozen_values__
            return values(self) == values(other)  # type: ignore[no-any-return]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.__frozen_values__(self))

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        cls = self.__class__
        return f"{cls.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in cls.__frozen_names__)})"

    # pickle and copy restore state with setattr, which is refused here: set it past the guard
    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (the __dict__ or None, the slots' values)
            merged: dict[str, Any] = {}
            for part in state:
                merged.update(part or {})
            state = merged
        for name, value in (state or {}).items():
            object.__setattr__(self, name, value)


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):  # (from __future__ import annotations)
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is typing.ClassVar or getattr(annotation, "__origin__", None) is typing.ClassVar


def frozen(*, kw_only: bool = False, slots: bool = False) -> Callable[[T], T]:
    """``@dataclass(frozen=True, kw_only=..., slots=...)`` for a subclass of ``Frozen``."""

    def make(cls: T) -> T:
        if not issubclass(cls, Frozen):
            raise TypeError(f"{cls.__name__}: a frozen record must subclass Frozen")
        fields: dict[str, Field[Any]] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(base.__dict__.get("__dataclass_fields__", {}))
        own: list[str] = []
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if _is_classvar(annotation):
                continue
            value = cls.__dict__.get(name, MISSING)
            f = value if isinstance(value, Field) else dataclasses.field(default=value)
            f.name, f.type, f._field_type = name, annotation, _FIELD  # type: ignore[attr-defined]
            f.kw_only = kw_only  # type: ignore[attr-defined]
            fields[name] = f
            own.append(name)
        if not kw_only:
            required_after_default = False
            for f in fields.values():
                has_default = f.default is not MISSING or f.default_factory is not MISSING
                if not has_default and required_after_default:
                    raise TypeError(f"non-default argument {f.name!r} follows default argument")
                required_after_default = required_after_default or has_default
        if slots:
            ns = {k: v for k, v in cls.__dict__.items() if k not in own and k not in ("__dict__", "__weakref__")}
            ns["__slots__"] = tuple(own)
            cls = type(cls)(cls.__name__, cls.__bases__, ns)  # type: ignore[assignment]
        else:
            for name in own:  # a Field left on the class would shadow nothing useful
                if isinstance(cls.__dict__.get(name), Field):
                    default = fields[name].default
                    if default is MISSING:
                        delattr(cls, name)
                    else:
                        type.__setattr__(cls, name, default)
        names = tuple(fields)
        type.__setattr__(cls, "__dataclass_fields__", fields)
        type.__setattr__(cls, "__dataclass_params__", SimpleNamespace(  # what a dataclass subclass reads
            init=True, repr=True, eq=True, order=False, unsafe_hash=False, frozen=True, match_args=True,
            kw_only=kw_only, slots=slots, weakref_slot=False))
        type.__setattr__(cls, "__frozen_names__", names)
        type.__setattr__(cls, "__frozen_values__", staticmethod(
            operator.attrgetter(*names) if len(names) > 1 else (lambda obj: tuple(getattr(obj, n) for n in names))))
        type.__setattr__(cls, "__match_args__", () if kw_only else tuple(
            n for n in names if not fields[n].kw_only))  # type: ignore[attr-defined]
        type.__setattr__(cls, "__init__", _first_init)
        _PENDING.append((cls, kw_only))
        return cls

    return make


def _first_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """Every pending class's first construction: compile the real __init__s, then call it."""
    finish()
    type(self).__init__(self, *args, **kwargs)


def finish() -> None:
    """Compile the ``__init__`` of every class made so far, in one ``exec``."""
    if not _PENDING:
        return
    pending = _PENDING[:]
    del _PENDING[:]
    env: dict[str, Any] = {"_osa": object.__setattr__, "_FACTORY": _FACTORY}
    lines: list[str] = []
    for k, (cls, kw_only) in enumerate(pending):
        params: list[str] = []
        body: list[str] = []
        for i, f in enumerate(cls.__dataclass_fields__.values()):  # type: ignore[attr-defined]
            name, key = f.name, f"_{k}_{i}"
            if f.default_factory is not MISSING:
                env[f"{key}_f"] = f.default_factory
                params.append(f"{name}=_FACTORY")
                value = f"{key}_f() if {name} is _FACTORY else {name}"
            else:
                if f.default is not MISSING:
                    env[f"{key}_d"] = f.default
                params.append(name if f.default is MISSING else f"{name}={key}_d")
                value = name
            slot = next((c.__dict__[name] for c in cls.__mro__ if name in c.__dict__.get("__slots__", ())), None)
            if slot is not None:  # its descriptor sets it directly, past the frozen guard
                env[f"{key}_s"] = slot.__set__
                body.append(f"  {key}_s(self, {value})")
            else:
                body.append(f"  _osa(self, {name!r}, {value})")
        if hasattr(cls, "__post_init__"):
            body.append("  self.__post_init__()")
        star = "*, " if kw_only and params else ""
        lines.append(f"def _init_{k}(self, {star}{', '.join(params)}):")
        lines.extend(body or ["  pass"])
    exec("\n".join(lines), env)  # noqa: S102 - our own generated source, from class definitions
    for k, (cls, _) in enumerate(pending):
        init = env[f"_init_{k}"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        init.__module__ = cls.__module__
        init.__annotations__ = {f.name: f.type for f in cls.__dataclass_fields__.values()}  # type: ignore[attr-defined]
        init.__annotations__["return"] = None
        type.__setattr__(cls, "__init__", init)
