"""Value kinds for map, filter and the itertools iterators (what each Python version lets us read)."""
from __future__ import annotations

# How each iterator's state is read, without pickling hooks CPython has deprecated:
#
# * map, filter: ``__reduce__`` (not deprecated) gives the function and the inner iterators.
# * itertools on 3.10 and 3.11: ``__reduce__`` gives ``(type, args[, state])``; the iterator is
#   rebuilt as ``type(*args)`` then ``__setstate__(state)``, with ``type`` taken from the table
#   below by the kind's name (never from the snapshot).
# * itertools on 3.12+: ``__reduce__``/``__setstate__`` warn (deprecated) and are gone in 3.14.
#   ``count`` is read from its repr (int and float numbers only); ``repeat`` from its single
#   referent (``gc.get_referents``: the element is the only object it holds) and
#   ``__length_hint__``. Every other itertools iterator has no other way to give its state, so
#   a snapshot refuses it with the unserializable-value error (kinds.Unsupported).
# * pairwise and batched never had pickling support: refused on every version.
#
# Wire heads: map ``[func, *iterators]``; filter ``[func, iterator]``; count ``[start, step]``;
# repeat ``[element]`` (endless) or ``[element, times]``; other itertools ``[args]`` or
# ``[args, state]`` (3.10/3.11 only); an inactive ``_grouper`` is ``[]`` (it yields nothing).

import gc
import itertools
import re
import sys
from typing import Any, Callable

from . import bounds, kinds
from ..errors import CorruptSnapshotError, SnapshotError
from .kinds import NO_BODY, Kind, Unsupported

_MODERN = sys.version_info >= (3, 12)  # itertools pickling deprecated (removed in 3.14)


def _build(what: str, make: Callable[[], Any]) -> Any:
    """Run a constructor on decoded values; any failure means the snapshot is malformed."""
    try:
        return make()
    except SnapshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the constructor rejects is a corrupt snapshot
        raise CorruptSnapshotError(f"malformed {what} in snapshot: {type(exc).__name__}: {exc}") from None


def _head_list(what: str, head: Any, sizes: tuple[int, ...] | None = None, minimum: int = 0) -> list[Any]:
    if type(head) is not list or (sizes is not None and len(head) not in sizes) or len(head) < minimum:
        raise CorruptSnapshotError(f"malformed {what} in snapshot")
    return head


# -- map and filter ---------------------------------------------------------------------------

def _encode_map(it: Any) -> tuple[Any, Any]:
    reduced = it.__reduce__()  # (map, (func, *iterators)) on 3.10-3.13
    if len(reduced) > 2:
        raise Unsupported("is not supported: map(strict=True) is not carried")
    return list(reduced[1]), NO_BODY


def _create_map(head: Any) -> Any:
    head = _head_list("map", head, minimum=2)
    if not callable(head[0]):
        raise CorruptSnapshotError("malformed map in snapshot: its function is not callable")
    inners = [bounds.iterator(inner, "map") for inner in head[1:]]
    return _build("map", lambda: map(head[0], *inners))  # map calls its function only when iterated


def _encode_filter(it: Any) -> tuple[Any, Any]:
    return list(it.__reduce__()[1]), NO_BODY  # (filter, (func or None, iterator))


def _create_filter(head: Any) -> Any:
    head = _head_list("filter", head, (2,))
    if head[0] is not None and not callable(head[0]):
        raise CorruptSnapshotError("malformed filter in snapshot: its function is not callable")
    inner = bounds.iterator(head[1], "filter")
    return _build("filter", lambda: filter(head[0], inner))


kinds.add(Kind("map", _encode_map, _create_map), map)
kinds.add(Kind("filter", _encode_filter, _create_filter), filter)


# -- count and repeat (every version) ---------------------------------------------------------

_NUMBER = r"-?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|inf|nan)"
_COUNT_REPR = re.compile(rf"count\(({_NUMBER})(?:, ({_NUMBER}))?\)")
_INT = re.compile(r"-?\d+")


def _number(text: str) -> int | float:
    return int(text) if _INT.fullmatch(text) else float(text)


def _count_state(it: itertools.count) -> tuple[Any, Any]:
    if not _MODERN:
        args = it.__reduce__()[1]
        return args[0], (args[1] if len(args) > 1 else 1)
    # 3.12+: the repr shows the next value and the step (the step only when it is not int 1).
    # Every object count holds is visited by gc.get_referents; anything but an int or a float
    # among them (a number-like object whose repr looks like a number) is refused.
    if any(type(ref) not in (int, float) for ref in gc.get_referents(it) if ref is not type(it)):
        raise Unsupported("is not supported: itertools.count is carried only with int or float start and step")
    match = _COUNT_REPR.fullmatch(repr(it))
    if match is None:
        raise Unsupported("is not supported: itertools.count is carried only with int or float start and step")
    start = _number(match.group(1))
    step = _number(match.group(2)) if match.group(2) is not None else 1
    return start, step


def _encode_count(it: itertools.count) -> tuple[Any, Any]:
    start, step = _count_state(it)
    if type(start) not in (int, float) or type(step) not in (int, float):
        raise Unsupported("is not supported: itertools.count is carried only with int or float start and step")
    return [start, step], NO_BODY


def _create_count(head: Any) -> Any:
    head = _head_list("itertools.count", head, (2,))
    if not all(type(x) in (int, float) for x in head):
        raise CorruptSnapshotError("malformed itertools.count in snapshot")
    return itertools.count(*head)


def _encode_repeat(it: itertools.repeat) -> tuple[Any, Any]:
    if not _MODERN:
        return list(it.__reduce__()[1]), NO_BODY  # (element,) or (element, times left)
    # 3.12+: repeat holds one object, its element (besides its heap type, visited first); the
    # count left comes from __length_hint__, which raises TypeError for an endless repeat.
    refs = gc.get_referents(it)
    if refs and refs[0] is type(it):
        refs = refs[1:]
    if len(refs) != 1:
        raise Unsupported("is not supported: Python 3.12+ deprecated reading the state of itertools.repeat "
                          "and its element could not be found otherwise")
    try:
        times = it.__length_hint__()
    except TypeError:
        return [refs[0]], NO_BODY
    return [refs[0], times], NO_BODY


def _create_repeat(head: Any) -> Any:
    head = _head_list("itertools.repeat", head, (1, 2))
    if len(head) == 2 and type(head[1]) is not int:
        raise CorruptSnapshotError("malformed itertools.repeat in snapshot")
    return _build("itertools.repeat", lambda: itertools.repeat(*head))


kinds.add(Kind("itertools.count", _encode_count, _create_count), itertools.count)
kinds.add(Kind("itertools.repeat", _encode_repeat, _create_repeat), itertools.repeat)


# -- the other itertools iterators ------------------------------------------------------------

_grouper: type = type(next(itertools.groupby("x"))[1])
_tee: type = type(itertools.tee(())[0])
_tee_dataobject: type = getattr(itertools, "_tee_dataobject")

_REDUCIBLE: dict[str, type] = {
    "cycle": itertools.cycle,
    "islice": itertools.islice,
    "chain": itertools.chain,
    "compress": itertools.compress,
    "dropwhile": itertools.dropwhile,
    "takewhile": itertools.takewhile,
    "starmap": itertools.starmap,
    "accumulate": itertools.accumulate,
    "groupby": itertools.groupby,
    "_grouper": _grouper,
    "zip_longest": itertools.zip_longest,
    "product": itertools.product,
    "permutations": itertools.permutations,
    "combinations": itertools.combinations,
    "combinations_with_replacement": itertools.combinations_with_replacement,
    "tee": _tee,
    "_tee_dataobject": _tee_dataobject,
}
"""itertools iterators whose state ``__reduce__`` gives (deprecated on 3.12+, gone in 3.14)."""

_NEVER_READABLE: dict[str, type] = {
    name: getattr(itertools, name) for name in ("pairwise", "batched") if hasattr(itertools, name)
}
"""itertools iterators that never had a way to give their state (no pickling support)."""


# On 3.10/3.11 an itertools iterator is rebuilt as ``type(*args)`` then ``__setstate__(state)``, with
# ``type`` from the table above. Constructors run C code only, but some consume what they are given
# (``product``, ``permutations``, ``combinations`` turn their iterable into a tuple) and every one
# calls ``iter()`` on the iterators it wraps: each kind checks its arguments first, so that nothing
# a snapshot names is called (an iterable must be a tuple where the constructor would consume it,
# and an iterator ``bounds.iterator`` accepts elsewhere) and nothing grows beyond what the input
# carries (``r`` of the combinatoric iterators).

def _it(value: Any, what: str) -> Any:
    return bounds.iterator(value, what)


def _int_or_none(value: Any, what: str) -> Any:
    if value is not None and type(value) is not int:
        raise CorruptSnapshotError(f"malformed {what} in snapshot")
    return value


def _fn_or_none(value: Any, what: str) -> Any:
    if value is not None and not callable(value):
        raise CorruptSnapshotError(f"malformed {what} in snapshot: its function is not callable")
    return value


def _pool(value: Any, what: str) -> tuple[Any, ...]:
    if type(value) is not tuple:
        raise CorruptSnapshotError(f"malformed {what} in snapshot: its pool is not a tuple")
    return value


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if type(value) is not tuple or not all(type(x) is int for x in value):
        raise CorruptSnapshotError(f"malformed {what} in snapshot: its state is not a tuple of ints")
    return value


def _r(value: Any, pool: tuple[Any, ...], what: str, *, beyond: bool) -> int:
    """The length ``r`` of a combinatoric iterator's results. Past the pool's size nothing is yielded
    (``beyond``: combinations_with_replacement still yields), so a larger ``r`` stands for ``n + 1``
    or, where it yields, costs its size in work: the constructor allocates ``r`` indices."""
    if type(value) is not int or value < 0:
        raise CorruptSnapshotError(f"malformed {what} in snapshot: bad r")
    if value > len(pool):
        if not beyond:
            return len(pool) + 1
        bounds.current().charge(value, f"an {what} of length {value}")
    return value


def _args_of(name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Checked constructor arguments of the itertools kind ``name`` (see above)."""
    what = f"itertools.{name}"
    n = len(args)
    if name in ("cycle",) and n == 1:
        return (_it(args[0], what),)
    if name == "islice" and 2 <= n <= 4:  # (iterator, stop) once exhausted
        return (_it(args[0], what), *(_int_or_none(x, what) for x in args[1:]))
    if name == "chain" and n == 0:
        return ()
    if name == "compress" and n == 2:
        return _it(args[0], what), _it(args[1], what)
    if name in ("dropwhile", "takewhile", "starmap") and n == 2 and callable(args[0]):
        return args[0], _it(args[1], what)
    if name == "accumulate" and n == 2:
        return _it(args[0], what), _fn_or_none(args[1], what)
    if name == "groupby" and n == 2:
        return _it(args[0], what), _fn_or_none(args[1], what)
    if name == "_grouper" and n == 2 and type(args[0]) is itertools.groupby:
        return args
    if name == "zip_longest":
        return tuple(_it(x, what) for x in args)
    if name == "product":
        return tuple(_pool(x, what) for x in args)
    if name in ("permutations", "combinations", "combinations_with_replacement") and n == 2:
        pool = _pool(args[0], what)
        if name == "permutations" and args[1] is None:
            return pool, None
        return pool, _r(args[1], pool, what, beyond=name == "combinations_with_replacement")
    if name == "tee" and n == 1 and type(args[0]) is tuple and not args[0]:  # ((),): never ==, which runs __eq__
        return args
    if name == "_tee_dataobject" and n == 3 and type(args[1]) is list \
            and (args[2] is None or type(args[2]) is _tee_dataobject):
        return _it(args[0], what), args[1], args[2]
    raise CorruptSnapshotError(f"malformed {what} in snapshot: unexpected arguments")


def _state_of(name: str, state: Any) -> Any:
    """A checked ``__setstate__`` argument of the itertools kind ``name``."""
    what = f"itertools.{name}"
    if name == "chain":
        if type(state) is tuple and 1 <= len(state) <= 2:
            return tuple(_it(x, what) for x in state)
    elif name == "cycle":
        if type(state) is tuple and len(state) == 2 and type(state[0]) is list and type(state[1]) in (bool, int):
            return state
    elif name in ("product", "combinations", "combinations_with_replacement"):
        return _ints(state, what)
    elif name == "permutations":
        if type(state) is tuple and len(state) == 2:
            return _ints(state[0], what), _ints(state[1], what)
    elif name == "tee":
        if type(state) is tuple and len(state) == 2 and type(state[0]) is _tee_dataobject and type(state[1]) is int:
            return state
    elif name in ("islice", "dropwhile", "takewhile"):
        if type(state) in (int, bool):
            return state
    elif name in ("accumulate", "zip_longest", "groupby"):
        return state  # a value (the running total, the fill value, the current key and value): no code runs
    raise CorruptSnapshotError(f"malformed {what} in snapshot: unexpected state")


def _reduce_kind(name: str, tp: type) -> Kind:
    what = f"itertools.{name}"

    def encode(it: Any) -> tuple[Any, Any]:
        reduced = it.__reduce__()
        if reduced[0] is not tp:
            if tp is _grouper and reduced[0] is iter and reduced[1] == ((),):
                return [], NO_BODY  # a group its groupby moved past: yields nothing more
            raise Unsupported(f"is not supported: unexpected state of {what}")
        args = reduced[1]
        if len(reduced) > 2 and reduced[2] is not None:
            return [args, reduced[2]], NO_BODY
        return [args], NO_BODY

    def create(head: Any) -> Any:
        head = _head_list(what, head, (0, 1, 2))
        if not head:
            if tp is not _grouper:
                raise CorruptSnapshotError(f"malformed {what} in snapshot")
            return iter(())
        if type(head[0]) is not tuple:
            raise CorruptSnapshotError(f"malformed {what} in snapshot")
        args = _args_of(name, head[0])
        obj = _build(what, lambda: tp(*args))
        if len(head) == 2:
            state = _state_of(name, head[1])
            _build(what, lambda: obj.__setstate__(state))
        return obj

    return Kind(what, encode, create)


def _refuse_kind(name: str, reason: str) -> Kind:
    what = f"itertools.{name}"

    def encode(it: Any) -> tuple[Any, Any]:
        raise Unsupported(f"is not supported: {reason}")

    def create(head: Any) -> Any:
        raise CorruptSnapshotError(f"snapshot holds an {what}, which Python "
                                   f"{sys.version_info[0]}.{sys.version_info[1]} cannot rebuild")

    return Kind(what, encode, create)


if not _MODERN:
    for _name, _tp in _REDUCIBLE.items():
        kinds.add(_reduce_kind(_name, _tp), _tp)
else:
    for _name, _tp in _REDUCIBLE.items():
        kinds.add(_refuse_kind(_name, (
            f"Python 3.12+ deprecated reading the state of itertools.{_name} (its pickling support, removed "
            "in 3.14), and it offers no other way to read it; rebuild it after the yield, or keep a list or "
            "a carried iterator in the local instead")), _tp)
for _name, _tp in _NEVER_READABLE.items():
    kinds.add(_refuse_kind(_name, (
        f"itertools.{_name} offers no way to read its state (it was never picklable); rebuild it after the "
        "yield, or keep a list or a carried iterator in the local instead")), _tp)


# -- dict and set iterators whose container changed size under them -------------------------------

class StaleIterator:
    """An iterator over a dict or set that changed size while it iterated: like the original, every
    ``next()`` raises ``RuntimeError`` with its message (the snapshot carried that state, not its items)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __iter__(self) -> StaleIterator:
        return self

    def __next__(self) -> Any:
        raise RuntimeError(self.message)


def _create_stale(message: Any) -> StaleIterator:
    if type(message) is not str:
        raise CorruptSnapshotError("malformed stale iterator in snapshot")
    return StaleIterator(message)


kinds.add(Kind(kinds.STALE_ITERATOR, lambda it: (it.message, NO_BODY), _create_stale), StaleIterator)


# -- iterators of allowed classes inside zip, enumerate, map, ... (see bounds.iterator) --------------

def _create_resumed(inner: Any) -> Any:
    return bounds.iterator(inner, "wrapped iterator")


kinds.add(Kind("resumed-iterator", lambda wrapper: (wrapper.inner, NO_BODY), _create_resumed),
          bounds.ResumedIterator)