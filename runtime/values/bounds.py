"""What decoding may cost and which code it may run: the work budget, hashing of decoded keys, and
iterators rebuilt without calling their ``__iter__``.

Decoding builds objects; the only code it runs is C code of built-in types, the standard-library
code of the value kinds, and the restore hooks a class opted into (``__setstate__``, a codec
registered with ``register_codec``). Two places would run more if nothing stopped them:

* **Hashing.** A set element or a dict key is hashed (and compared with the keys whose hash it
  shares). ``HashCheck`` walks each key first: every type on the way must hash and compare with
  known code (built-in types, tuples and named tuples, frozen dataclasses' generated methods, enum
  members, ``Fraction``, ``UUID``, paths, identity) or belong to a class that opted in. The walk also
  measures the work — a tuple shared by reference is hashed again at every use, so ``T(k) =
  (T(k-1), T(k-1))`` costs ``2**k`` — and the nesting depth (a tuple nested 200,000 deep overflows
  the C stack when hashed), and charges the work, including keys whose hashes collide, to the budget.
* **Iterators.** ``zip``, ``enumerate``, ``map`` and the itertools types call ``iter()`` on what
  they wrap. ``iterator()`` accepts the iterator types restore builds itself; an instance of an
  allowed class is wrapped in ``ResumedIterator`` so that its ``__iter__`` is never called (its
  ``__next__`` runs later, when the program asks for the next item, as it would natively).

The budget: decoding ``n`` input bytes may do at most ``WORK_PER_BYTE * n + WORK_BASE`` units of
work beyond building what the bytes describe (a unit is about one hashed element).
"""
from __future__ import annotations

import collections
import datetime
import itertools
import threading
import types
import weakref
from typing import Any, Callable

from ..errors import CorruptSnapshotError, NotAllowedError

WORK_PER_BYTE = 64
WORK_BASE = 1 << 22


class Budget:
    """The work one decoding may still do; ``charge`` raises ``CorruptSnapshotError`` when it runs out."""

    __slots__ = ("left", "limit")

    def __init__(self, input_size: int | None) -> None:
        self.limit = self.left = WORK_BASE + WORK_PER_BYTE * (input_size or 0)

    def charge(self, units: int, what: str) -> None:
        self.left -= units
        if self.left < 0:
            raise CorruptSnapshotError(
                f"malformed snapshot value: {what} would take more work than the input allows "
                f"({self.limit:,} units for its size); shared references make it far bigger than its bytes")


_local = threading.local()


def current() -> Budget:
    """The budget of the decoding running in this thread (a fresh default one outside a decoding)."""
    budget = getattr(_local, "budget", None)
    return budget if budget is not None else Budget(None)


class active:
    """``with active(budget):`` makes ``budget`` the one value kinds charge while they rebuild objects."""

    __slots__ = ("budget", "saved")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __enter__(self) -> None:
        self.saved = getattr(_local, "budget", None)
        _local.budget = self.budget

    def __exit__(self, *exc: object) -> None:
        _local.budget = self.saved


# -- class attributes without running the class's code ------------------------------------------

def class_attr(cls: type, name: str, default: Any = None) -> Any:
    """``name`` as found in the dicts of ``cls``'s MRO (no descriptor, metaclass or ``__getattr__`` runs)."""
    for klass in type.__getattribute__(cls, "__mro__"):
        found = type.__getattribute__(klass, "__dict__").get(name, _MISSING)
        if found is not _MISSING:
            return found
    return default


_MISSING = object()


def is_local(cls: type) -> bool:
    """True for a class made by a ``class`` statement inside a function (its qualname has ``<locals>``):
    one of many made at run time, which caches keyed by class must not keep alive."""
    qualname = type.__getattribute__(cls, "__qualname__")
    return isinstance(qualname, str) and "<locals>" in qualname


def own_method(cls: type, name: str) -> Callable[..., Any] | None:
    """A Python function ``name`` that ``cls`` or one of its bases (not ``object``) defines, else None."""
    found = class_attr(cls, name)
    if isinstance(found, (staticmethod, classmethod)):
        return None
    return found if type(found) is types.FunctionType else None


def opted_in(cls: type) -> bool:
    """True if ``cls`` opted in to running its own code on snapshot data: it defines ``__setstate__``
    or has a codec registered with ``register_codec``."""
    from . import kinds

    return own_method(cls, "__setstate__") is not None or cls in kinds.USER_CODECS


def finalizer(cls: type) -> str | None:
    """The qualified name of ``cls``'s own ``__del__``, if it has one (restore never builds such
    objects unless the class opted in: a failed or abandoned restore would run it on snapshot data)."""
    method = own_method(cls, "__del__")
    if method is None or opted_in(cls):
        return None
    return f"{type.__getattribute__(cls, '__qualname__')}.__del__"


# -- hashing ------------------------------------------------------------------------------------

# How a type hashes, by the code its __hash__ runs:
_IDENTITY, _LEAF, _SIZED, _TUPLE, _SLICE, _FIELDS, _AWARE, _OPTED = range(8)

_SLOT_SHAPES: dict[type, int] = {
    object: _IDENTITY, tuple: _TUPLE, int: _SIZED, bool: _LEAF, float: _LEAF, complex: _LEAF, str: _LEAF,
    bytes: _LEAF, frozenset: _LEAF, type(None): _LEAF, type: _IDENTITY, range: _SIZED, slice: _SLICE,
    types.MethodType: _IDENTITY, types.BuiltinMethodType: _IDENTITY, type(Ellipsis): _LEAF,
    datetime.date: _LEAF, datetime.timedelta: _LEAF, datetime.timezone: _LEAF, datetime.datetime: _AWARE,
    datetime.time: _AWARE,
}
"""Built-in ``__hash__`` implementations (slot wrappers, by the type that defines them)."""

_AWARE_ZONES: tuple[type, ...] = (datetime.timezone,)
_SIZED_LEAVES: dict[type, Callable[[Any], int]] = {}
_KNOWN_FUNCTIONS: dict[Any, int] = {}
_KNOWN_EQ: set[Any] = set()
_shapes: weakref.WeakKeyDictionary[type, tuple[int, str]] = weakref.WeakKeyDictionary()
"""Shapes of the classes met so far (weak: the inspector's stand-in classes live for one inspection)."""


def _load_stdlib() -> None:
    """The standard library's Python-level ``__hash__``/``__eq__`` of the value kinds, looked up once."""
    if _KNOWN_FUNCTIONS:
        return
    import decimal
    import enum
    import fractions
    import pathlib
    import uuid
    import zoneinfo

    global _AWARE_ZONES
    _AWARE_ZONES = (datetime.timezone, zoneinfo.ZoneInfo)
    _SLOT_SHAPES[decimal.Decimal] = _LEAF
    for owner, shape in ((fractions.Fraction, _SIZED), (pathlib.PurePath, _SIZED), (uuid.UUID, _LEAF),
                         (enum.Enum, _LEAF)):
        _KNOWN_FUNCTIONS[owner.__dict__["__hash__"]] = shape
        if "__eq__" in owner.__dict__:
            _KNOWN_EQ.add(owner.__dict__["__eq__"])
    _SIZED_LEAVES.update({
        int: lambda x: x.bit_length() >> 6,
        range: lambda r: (r.start.bit_length() + r.stop.bit_length() + r.step.bit_length()) >> 6,
        fractions.Fraction: lambda f: (f.numerator.bit_length() + f.denominator.bit_length()) >> 6,
        pathlib.PurePath: lambda p: len(str(p)) >> 4,
    })


_BUILTIN_SHAPES: dict[type, tuple[int, str]] = {tp: (shape, "") for tp, shape in _SLOT_SHAPES.items()
                                                if tp is not object and tp is not type}
"""The shapes of the built-in types themselves (the common case, looked up first)."""


def _generated(fn: Any, cls: type) -> bool:
    """True for a method the dataclasses module generated (source compiled from a string)."""
    return type(fn) is types.FunctionType and fn.__code__.co_filename == "<string>" \
        and class_attr(cls, "__dataclass_fields__") is not None


def _eq_known(cls: type) -> bool:
    eq = class_attr(cls, "__eq__")
    if type(eq) is types.WrapperDescriptorType:
        return eq.__objclass__ in _SLOT_SHAPES or eq.__objclass__ in _SIZED_LEAVES
    return eq in _KNOWN_EQ or _generated(eq, cls)


def shape_of(cls: type) -> tuple[int, str]:
    """How instances of ``cls`` hash: a shape, or (-1, why) when they cannot be hashed, (-2, why) when
    hashing them would run code restore does not run."""
    found = _BUILTIN_SHAPES.get(cls) or _shapes.get(cls)
    if found is not None:
        return found
    _load_stdlib()
    impl = class_attr(cls, "__hash__")
    name = type.__getattribute__(cls, "__qualname__")
    if impl is None:
        shape = (-1, f"{name} objects are not hashable")
    elif opted_in(cls):
        shape = (_OPTED, "")
    elif type(impl) is types.WrapperDescriptorType and impl.__objclass__ in _SLOT_SHAPES:
        shape = (_SLOT_SHAPES[impl.__objclass__], "")
    elif impl in _KNOWN_FUNCTIONS:
        shape = (_KNOWN_FUNCTIONS[impl], "")
    elif _generated(impl, cls):
        shape = (_FIELDS, "")
    else:
        shape = (-2, f"hashing them would run {name}.__hash__")
    if shape[0] >= 0 and shape[0] != _OPTED and not _eq_known(cls):
        shape = (-2, f"comparing them would run {name}.__eq__")
    _shapes[cls] = shape
    return shape


class Unsafe(Exception):
    """A key whose hashing would run code restore does not run (``runs_code``), or that cannot be
    hashed at all: unhashable, nested too deeply, or containing itself."""

    def __init__(self, value: object, reason: str, *, runs_code: bool = False) -> None:
        super().__init__(reason)
        self.value = value
        self.reason = reason
        self.runs_code = runs_code


_OPEN = (-1, -1)  # memo mark of an object whose children are being walked


class HashCheck:
    """Walks values about to be hashed: refuses unknown code, measures work and depth (memoized per object)."""

    __slots__ = ("_memo", "_keep", "max_depth")

    def __init__(self, max_depth: int) -> None:
        self._memo: dict[int, tuple[int, int]] = {}  # id -> (work, depth), for objects with children
        self._keep: list[Any] = []  # the objects of the memo's ids stay alive while it is used
        self.max_depth = max_depth

    def cost(self, key: Any) -> int:
        """The work of hashing ``key`` (raises ``Unsafe``)."""
        tp = type(key)
        if tp in _FLAT:
            return 1
        if tp is tuple and _FLAT.issuperset(map(type, key)):  # the common case: a tuple of scalars
            return 1 + len(key)
        return self._walk(key)[0]

    def _walk(self, root: Any) -> tuple[int, int]:
        memo = self._memo
        # iterative post-order: (object, children or None before they are expanded)
        stack: list[tuple[Any, list[Any] | None]] = [(root, None)]
        result = (0, 0)
        while stack:
            obj, children = stack.pop()
            if children is None:
                known = memo.get(id(obj))
                if known is not None:
                    if known is _OPEN:
                        raise Unsafe(obj, "it contains itself (hashing it never ends)")
                    result = known
                    continue
                shape, why = shape_of(type(obj))
                if shape < 0:
                    raise Unsafe(obj, why, runs_code=shape == -2)
                parts = self._children(obj, shape)
                if not parts:
                    result = (1 + self._leaf(obj, shape), 1)
                    continue
                memo[id(obj)] = _OPEN
                self._keep.append(obj)
                stack.append((obj, parts))
                stack.extend((child, None) for child in parts)
                continue
            work, depth = 1 + self._leaf(obj, shape_of(type(obj))[0]), 0
            for child in children:
                child_work, child_depth = memo.get(id(child)) or self._leaf_result(child)
                work += child_work
                depth = max(depth, child_depth)
            depth += 1
            if depth > self.max_depth:
                raise Unsafe(obj, f"it nests more than {self.max_depth} levels deep (hashing it would overflow "
                                  "the C stack)")
            result = memo[id(obj)] = (work, depth)
        return result

    def _leaf_result(self, obj: Any) -> tuple[int, int]:
        shape = shape_of(type(obj))[0]
        return 1 + self._leaf(obj, shape), 1

    @staticmethod
    def _leaf(obj: Any, shape: int) -> int:
        """The work of ``obj``'s own hash, beyond its children's."""
        if shape == _TUPLE:
            return len(obj)
        if shape != _SIZED:
            return 0
        for base in type(obj).__mro__:
            size = _SIZED_LEAVES.get(base)
            if size is not None:
                return size(obj)
        return 0

    @staticmethod
    def _children(obj: Any, shape: int) -> list[Any]:
        if shape == _TUPLE:
            return [x for x in tuple.__iter__(obj) if type(x) not in _FLAT]
        if shape == _SLICE:
            return [x for x in (obj.start, obj.stop, obj.step) if type(x) not in _FLAT]
        if shape == _AWARE:
            zone = obj.tzinfo
            if zone is not None and type(zone) not in _AWARE_ZONES:
                raise Unsafe(zone, f"hashing an aware {type(obj).__name__} would call "
                                   f"{type(zone).__qualname__}.utcoffset", runs_code=True)
            return []
        if shape == _FIELDS:
            return _hashed_fields(obj)
        return []


_FLAT = frozenset({str, bytes, float, int, bool, type(None)})
"""Types whose hash runs known code once per occurrence in the input: str and bytes cache their
hash, an int's costs its size, and an int is never shared by reference (each occurrence is its own
bytes), so an int's hash costs no more than the bytes that carried it."""


def _hashed_fields(obj: Any) -> list[Any]:
    """The field values a dataclass's generated ``__hash__`` hashes (read without running descriptors)."""
    cls = type(obj)
    fields = class_attr(cls, "__dataclass_fields__")
    values = []
    state = _instance_dict(obj)
    for name, field in fields.items():
        if type(field).__name__ != "Field" or str(getattr(field, "_field_type", "")) != "_FIELD":
            continue
        if not (field.hash if field.hash is not None else field.compare):
            continue
        if state is not None and name in state:
            values.append(state[name])
            continue
        slot = class_attr(cls, name)
        if type(slot) is not types.MemberDescriptorType:
            raise Unsafe(obj, f"its field {name!r} is not a plain attribute", runs_code=True)
        try:
            values.append(slot.__get__(obj, cls))
        except AttributeError:
            raise Unsafe(obj, f"its field {name!r} is not set") from None
    return [v for v in values if type(v) not in _FLAT]


def _instance_dict(obj: Any) -> dict[str, Any] | None:
    try:
        state = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None
    return state if type(state) is dict else None


STR_KEYS = frozenset({str})
RANDOMIZED = frozenset({str, bytes})
"""Key types whose hashes are randomized per process: a crafted input cannot make them collide."""


def check_keys(keys: list[Any], check: HashCheck, budget: Budget, what: str) -> None:
    """Refuse ``keys`` (about to be hashed as ``what``: "the elements of a set") when hashing would run
    unknown code, and charge the work to ``budget``, including the comparisons colliding hashes force."""
    kinds = set(map(type, keys))
    if kinds <= RANDOMIZED:
        return
    work = len(keys) if kinds <= _FLAT else 0
    try:
        if not work:
            for key in keys:
                work += check.cost(key)
    except Unsafe as unsafe:
        where = f"snapshot puts a {type(unsafe.value).__qualname__} among {what}, but {unsafe.reason}"
        if unsafe.runs_code:
            raise NotAllowedError(f"{where}; restore never runs methods of your classes on snapshot data") from None
        raise CorruptSnapshotError(f"malformed snapshot value: {where}") from None
    budget.charge(2 * work, f"hashing {what}")
    if len(keys) > 8 and not (kinds <= _SMALL_INT_KINDS and -_HASH_MODULUS < min(keys) and max(keys) < _HASH_MODULUS):
        hashes = list(map(hash, keys))
        if len(set(hashes)) < len(hashes):
            counts = collections.Counter(hashes)
            collisions = sum(n * (n - 1) // 2 for n in counts.values() if n > 1)
            budget.charge(collisions * (1 + work // len(keys)), f"comparing the colliding hashes of {what}")


_SMALL_INT_KINDS = frozenset({int, bool})
_HASH_MODULUS = (1 << 61) - 1
"""An int of smaller magnitude hashes to itself (-1 to -2): small ints never collide but for that one pair."""


# -- iterators ----------------------------------------------------------------------------------

class ResumedIterator:
    """Stands for an iterator of an allowed class inside ``zip``, ``enumerate``, ``map`` and the like,
    so that rebuilding them never calls the class's ``__iter__``: ``next()`` goes to its ``__next__``."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __iter__(self) -> ResumedIterator:
        return self

    def __next__(self) -> Any:
        return next(self.inner)


def _iterator_types() -> frozenset[type]:
    found = {type(iter(x)) for x in ([], (), "", "\u00e9", b"", bytearray(), range(0), range(1 << 100), {}, set(),
                                     {}.values(), {}.items(), frozenset())}
    found |= {type(reversed(x)) for x in ([], (), range(0), {}, {}.values(), {}.items())}
    found |= {enumerate, zip, map, filter, reversed, types.GeneratorType, ResumedIterator}
    found |= {v for v in vars(itertools).values() if isinstance(v, type) and hasattr(v, "__next__")}
    found |= {type(next(itertools.groupby("x"))[1]), type(itertools.tee(())[0])}
    return frozenset(found)


ITERATOR_TYPES = _iterator_types()
"""Iterators whose ``iter()`` is their own C code returning themselves."""


_ITERABLE_TYPES = frozenset({tuple, list, str, bytes, bytearray, dict, set, frozenset, range})
"""Built-in containers whose ``iter()`` is C code (``zip_longest`` keeps ``()`` for an exhausted input)."""


def iterator(value: Any, what: str) -> Any:
    """``value`` when ``iter(value)`` runs no user code, a ``ResumedIterator`` around an iterator of an
    allowed class, else ``CorruptSnapshotError`` (no iterator ``what`` could have held)."""
    tp = type(value)
    if tp in ITERATOR_TYPES or tp in _ITERABLE_TYPES:
        return value
    if own_method(tp, "__next__") is not None and not isinstance(value, type):
        return ResumedIterator(value)
    raise CorruptSnapshotError(f"malformed {what} in snapshot: it holds a {tp.__qualname__}, which is not an iterator")
