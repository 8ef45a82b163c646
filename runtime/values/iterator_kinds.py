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

from . import kinds
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
    return _build("map", lambda: map(*head))


def _encode_filter(it: Any) -> tuple[Any, Any]:
    return list(it.__reduce__()[1]), NO_BODY  # (filter, (func or None, iterator))


def _create_filter(head: Any) -> Any:
    head = _head_list("filter", head, (2,))
    if head[0] is not None and not callable(head[0]):
        raise CorruptSnapshotError("malformed filter in snapshot: its function is not callable")
    return _build("filter", lambda: filter(*head))


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
        args = head[0]
        if type(args) is not tuple:
            raise CorruptSnapshotError(f"malformed {what} in snapshot")
        obj = _build(what, lambda: tp(*args))
        if len(head) == 2:
            _build(what, lambda: obj.__setstate__(head[1]))
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
