"""The fuzz target: small durable generators whose real snapshots the grammar fills with values, and
module-level classes and functions that snapshots may name (this module is compiled, so restore may
resolve names in it).

Everything here that restore must never run records itself in ``CALLS``: plain functions, class
constructors, ``__hash__``/``__eq__``/``__iter__``/``__index__``, a property setter shadowing a slot,
an exception ``__setattr__``, an enum ``_missing_``, a metaclass ``__getattr__``, a class attribute
descriptor and the module's own ``__getattr__``. The generators' ``finally`` blocks and context
managers record too: a restored generator dropped through ``runtime.detach`` must run none of them.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import typing

from runtime import durable

CALLS: list[tuple[str, object]] = []


def _record(what: str, detail: object = None) -> None:
    # never the object itself: printing a hostile value (a shared tuple DAG, a huge int) may not finish
    CALLS.append((what, detail if type(detail) is str and len(detail) < 40 else type(detail).__name__))


def evil(*args, **kwargs):
    _record("evil", args)
    return True


def evil_key(*args, **kwargs):
    _record("evil_key", args)
    return 0


class Plain:
    def __init__(self, *args):
        _record("Plain.__init__", args)

    def method(self, *args):
        _record("Plain.method", args)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, *args):
        _record("Slotted.__init__", args)


class SlotBase:
    __slots__ = ("a",)


class Shadow(SlotBase):
    """A property named like a slot of its base: setting the slot by name would run the setter."""

    __slots__ = ()

    @property
    def a(self):
        return None

    @a.setter
    def a(self, value):
        _record("Shadow.a.setter", value)


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: object = None
    b: object = None


@dataclasses.dataclass
class Point:
    x: object = 0
    y: object = 0


class Stateful:
    """Restore may call ``__setstate__`` of an allowed class (documented); it must not record here."""

    def __init__(self):
        _record("Stateful.__init__")

    def __getstate__(self):
        return {"v": 1}

    def __setstate__(self, state):
        self.__dict__["state"] = state


class Hashy:
    def __hash__(self):
        _record("Hashy.__hash__")
        return 0

    def __eq__(self, other):
        _record("Hashy.__eq__")
        return self is other


class Iterable:
    def __iter__(self):
        _record("Iterable.__iter__")
        return iter(())

    def __index__(self):
        _record("Iterable.__index__")
        return 1

    def __len__(self):
        _record("Iterable.__len__")
        return 0


class Meta(type):
    def __getattr__(cls, name):
        _record("Meta.__getattr__", name)
        raise AttributeError(name)

    def __instancecheck__(cls, obj):
        _record("Meta.__instancecheck__")
        return False

    def __subclasscheck__(cls, sub):
        _record("Meta.__subclasscheck__")
        return False


class WithMeta(metaclass=Meta):
    pass


class MetaTuple(tuple, metaclass=Meta):
    pass


class Descriptor:
    def __get__(self, obj, owner=None):
        _record("Descriptor.__get__")
        return None


class Described:
    attr = Descriptor()


class Color(enum.Enum):
    RED = 1
    GREEN = "green"
    BLUE = (1, 2)

    @classmethod
    def _missing_(cls, value):
        _record("Color._missing_", value)
        return None


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1


class Shade(enum.Flag):
    DARK = 1
    LIGHT = 2


Pair = collections.namedtuple("Pair", "a b")


class Typed(typing.NamedTuple):
    x: object
    y: object = None


class AppError(Exception):
    pass


class Noisy(Exception):
    def __init__(self, *args):
        _record("Noisy.__init__", args)
        super().__init__(*args)

    def __setattr__(self, name, value):
        _record("Noisy.__setattr__", name)
        super().__setattr__(name, value)


class NoisyOS(OSError):
    def __setattr__(self, name, value):
        _record("NoisyOS.__setattr__", name)
        super().__setattr__(name, value)


class Manager:
    def __enter__(self):
        _record("Manager.__enter__")
        return self

    def __exit__(self, *exc):
        _record("Manager.__exit__", exc[0])
        return False


def __getattr__(name):
    if name.startswith("__"):  # the import system and the runtime look for dunders
        raise AttributeError(name)
    _record("module.__getattr__", name)
    raise AttributeError(name)


# --------------------------------------------------------------------------- the generators

@durable
def simple(x):
    got = yield 1
    yield x, got


@durable
def looping(items):
    total = 0
    for item in items:
        total += yield total
    return total


@durable
def guarded(n):
    manager = Manager.__new__(Manager)
    try:
        with manager:
            got = yield n
            yield got, n
    finally:
        _record("guarded.finally")


@durable
def handler(n):
    try:
        raise AppError("boom", n)
    except AppError as err:
        got = yield err
        yield got


@durable
def inner(k):
    for i in range(k):
        yield i
    return k


@durable
def outer(k):
    total = yield from inner(k)
    yield total
    return total


@durable
def closing(n):
    count = n

    def bump():
        nonlocal count
        count += 1
        return count

    got = yield count
    yield bump(), got


@durable
def holder(k):
    held = inner(k)
    next(held)
    x = yield k
    yield x, next(held)


STARTS = ["simple(evil)", "simple([1, (2, 3)])", "looping([1, 2, 3])", "guarded(1)", "handler(2)", "outer(2)",
          "closing(3)", "holder(2)"]
"""Calls that make the generators the grammar snapshots (each is snapshotted at a few points)."""
