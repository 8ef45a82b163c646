"""Msgpack-ready nodes back to values (the decoder): every malformed input is a CorruptSnapshotError."""
from __future__ import annotations

from collections.abc import Callable
from sys import intern
from typing import Any

from ..errors import CorruptSnapshotError, NotAllowedError, SnapshotError
from . import bounds
from .kinds import FORWARD, INSTANCE
from .wire import (AGAIN, BIGINT, BUILTIN_EXC, BYTES_IT, CUSTOM, DICT, DecodeHooks, ENUMERATE, EXC,
                   EXCEPTION_GROUP, EXC_CLS, FROZENSET, GROUP, GROUP_CLS, LIST, LIST_IT, LIST_REVIT, OBJECT,
                   PENDING, RANGE_IT, REF, REVERSED, SCALARS, SET, SHAPED, STR_IT, TUPLE, TUPLE_IT, USTR, ZIP,
                   EXC_STATE, builtin_base, exc_members)


class Pairs(list):  # type: ignore[type-arg]
    """A msgpack map unpacked as its list of (key, value) pairs (``unpack`` falls back to it)."""


def _corrupt(message: str) -> CorruptSnapshotError:
    return CorruptSnapshotError(f"malformed snapshot value: {message}")


# Identifier-like strings come back interned, as the compiler interns such constants, so that
# `value is SENTINEL` holds after a restore as it did before. The length cap bounds what outside data
# adds to the interpreter's table (interned strings are immortal on CPython 3.12).
INTERN_MAX_LENGTH = 64


def _name(text: str) -> str:
    """``text`` interned when it looks like a name."""
    if len(text) <= INTERN_MAX_LENGTH and text.isidentifier() and text.isascii():
        return intern(text)
    return text


def _named(values: list[Any]) -> list[Any]:
    """``values`` (a list the decoder owns) with its name-like strs interned in place."""
    if str in map(type, values):
        for i, value in enumerate(values):
            if type(value) is str:
                values[i] = _name(value)
    return values


class Decoder:
    """Inverse of :class:`Encoder`; ``decode`` must see the packed values in ``encode`` order.

    Any malformed input raises CorruptSnapshotError (SnapshotErrors raised by the hooks pass through).
    """

    __slots__ = ("_hooks", "_memo", "_pending", "_depth", "_max_depth", "_layouts", "_shapes", "_budget", "_hashes",
                 "_forward")

    def __init__(self, hooks: DecodeHooks, *, max_depth: int = 1000, input_size: int | None = None) -> None:
        """``input_size``: the bytes the packed values came from, which set the work budget (``bounds``)."""
        self._hooks = hooks
        self._depth = 0
        self._max_depth = max_depth
        self._budget = bounds.Budget(input_size)
        self._hashes = bounds.HashCheck(max_depth)
        # pending memo slot -> the cells waiting for it: (kind name, cell, head, body items, index)
        self._forward: dict[int, list[tuple[str, Any, Any, list[Any], int]]] = {}
        self._layouts: dict[int, tuple[type, tuple[str, ...]]] = {}  # id(layout) -> plain_layout(layout)
        self._shapes: dict[int, list[Any]] = {}  # memo slot of a model dict -> its keys
        self._memo: list[object] = []
        # iterators over a list that was still being filled: (iterator, index) to apply at the end
        self._pending: list[tuple[Any, int]] = []

    def decode(self, packed: object) -> object:
        """Rebuild the value that ``Encoder.encode`` turned into ``packed``."""
        return self.decode_all([packed])[0]

    def decode_all(self, packed: list[Any]) -> list[Any]:
        """Rebuild the values that ``Encoder.encode_all`` (or ``encode``, in this order) packed."""
        scalars = SCALARS
        node = self._node
        try:
            values = _named([x if type(x) in scalars else node(x) for x in packed])
            if self._pending:  # (an index beyond the C range raises OverflowError: corrupt too)
                for it, index in self._pending:
                    it.__setstate__(index)
                self._pending.clear()
        except SnapshotError:
            self._pending.clear()
            self._depth = 0
            raise
        except RecursionError:
            self._pending.clear()
            self._depth = 0
            raise CorruptSnapshotError("malformed snapshot value: nested too deeply to decode") from None
        except Exception as exc:
            self._pending.clear()
            self._depth = 0
            raise CorruptSnapshotError(f"malformed snapshot value: {type(exc).__name__}: {exc}") from exc
        finally:
            self._hooks.finished()
        return values

    # -- generic ------------------------------------------------------------------------------

    def _node(self, p: Any) -> Any:
        if type(p) is not list:
            if type(p) is dict:
                return self._map(p)
            if type(p) is Pairs:
                return self._pairs(p)
            raise _corrupt(f"unexpected {type(p).__name__}")
        tag = p[0]
        if type(tag) is not int:
            raise _corrupt(f"bad tag {tag!r}")
        fn = _DECODERS.get(tag)
        if fn is None:
            raise _corrupt(f"unknown tag {tag!r}")
        depth = self._depth = self._depth + 1
        if depth > self._max_depth:
            raise _corrupt(f"values nested deeper than the limit of {self._max_depth} (runtime.configure(max_depth=...))")
        out = fn(self, p)
        self._depth = depth - 1
        return out

    def _one(self, x: Any) -> Any:
        if type(x) is str:
            return _name(x)
        return x if type(x) in SCALARS else self._node(x)

    def _values(self, values: list[Any]) -> list[Any]:
        """``values`` decoded; the list itself when all are scalars."""
        if SCALARS.issuperset(map(type, values)):
            return _named(values)
        node = self._node
        return _named([x if type(x) in SCALARS else node(x) for x in values])

    def _items(self, p: list[Any]) -> list[Any]:
        """The decoded items of ``p`` after its tag."""
        return self._values(p[1:])

    @staticmethod
    def _arity(p: list[Any], n: int) -> None:
        if len(p) != n:
            raise _corrupt(f"tag {p[0]} needs {n - 1} fields, got {len(p) - 1}")

    def _ref(self, p: list[Any]) -> Any:
        if len(p) != 2:
            raise _corrupt("bad ref")
        slot = p[1]
        memo = self._memo
        if type(slot) is not int or not 0 <= slot < len(memo):
            raise _corrupt(f"bad ref {slot!r}")
        obj = memo[slot]
        if obj is PENDING:
            raise _corrupt("ref to a custom object whose payload is still being decoded")
        return obj

    def _again(self, p: list[Any]) -> Any:
        if len(p) < 2:
            raise _corrupt("bad AGAIN node")
        self._items(p[1:])  # replays the slot assignments of the duplicate children
        return self._ref(p[:2])

    # -- scalars that need a wrapper ----------------------------------------------------------

    def _bigint(self, p: list[Any]) -> int:
        if len(p) != 2 or type(p[1]) is not bytes:
            raise _corrupt("bad big int")
        return int.from_bytes(p[1], "little", signed=True)

    def _ustr(self, p: list[Any]) -> str:
        if len(p) != 2 or type(p[1]) is not bytes:
            raise _corrupt("bad surrogate string")
        return p[1].decode("utf-8", "surrogatepass")

    # -- containers ---------------------------------------------------------------------------

    # Fast paths: when every item is a scalar there are no child slots, so the container can be
    # registered after it is built.

    def _list(self, p: list[Any]) -> list[Any]:
        items = p[1:]
        if SCALARS.issuperset(map(type, items)):
            self._memo.append(items)
            return _named(items)
        out: list[Any] = []
        self._memo.append(out)
        node = self._node
        scalars = SCALARS
        out.extend(_named([x if type(x) in scalars else node(x) for x in items]))
        return out

    def _set(self, p: list[Any]) -> set[Any]:
        out: set[Any] = set()
        self._memo.append(out)
        items = self._items(p)
        bounds.check_keys(items, self._hashes, self._budget, "the elements of a set")
        out.update(items)
        return out

    def _map(self, p: dict[Any, Any]) -> dict[Any, Any]:
        """A msgpack map: a dict whose keys are str (msgpack refuses others: ``unpack``) and whose values
        are scalars, used as it is."""
        if not (bounds.RANDOMIZED.issuperset(map(type, p)) and SCALARS.issuperset(map(type, p.values()))):
            raise _corrupt("map with a key that is not a str or a value that is not a scalar")
        if str in map(type, p.values()):
            for key, value in p.items():  # (msgpack interns the keys itself)
                if type(value) is str:
                    p[key] = _name(value)
        self._memo.append(p)
        return p

    def _pairs(self, p: list[tuple[Any, Any]]) -> dict[Any, Any]:
        """A msgpack map read as its pairs (older snapshots wrote maps with int keys), made a dict once
        its keys are checked."""
        keys = _named([pair[0] for pair in p])
        values = _named([pair[1] for pair in p])
        if not (SCALARS.issuperset(map(type, keys)) and SCALARS.issuperset(map(type, values))):
            raise _corrupt("map with a key or value that is not a scalar")
        bounds.check_keys(keys, self._hashes, self._budget, "the keys of a dict")
        out = dict(zip(keys, values))
        self._memo.append(out)
        return out

    def _dict(self, p: list[Any]) -> dict[Any, Any]:
        if not len(p) & 1:
            raise _corrupt("dict node with an odd number of keys and values")
        half = len(p) // 2 + 1
        out: dict[Any, Any] = {}
        self._memo.append(out)
        items = self._items(p)  # keys first, then values: the order the encoder wrote them
        half -= 1
        keys = items[:half]
        bounds.check_keys(keys, self._hashes, self._budget, "the keys of a dict")
        out.update(zip(keys, items[half:]))
        return out

    def _shaped(self, p: list[Any]) -> dict[Any, Any]:
        if len(p) < 2:
            raise _corrupt("bad shaped dict")
        memo = self._memo
        model = p[1]
        keys = self._shapes.get(model)
        if keys is None:
            if type(model) is not int or not 0 <= model < len(memo) or type(memo[model]) is not dict:
                raise _corrupt("shaped dict without a model dict")
            keys = list(memo[model])
            if not bounds.STR_KEYS.issuperset(map(type, keys)):
                raise _corrupt("shaped dict whose model has keys that are not str")
            self._shapes[model] = keys
        values = p[2:]
        if len(values) != len(keys) or len(keys) < 2:
            raise _corrupt("shaped dict values do not match its model's keys")
        out: dict[Any, Any] = {}
        memo.append(out)
        values = self._values(values)
        out.update(zip(keys, values))
        return out

    def _tuple(self, p: list[Any]) -> tuple[Any, ...]:
        out = tuple(self._items(p))
        self._memo.append(out)
        return out

    def _frozenset(self, p: list[Any]) -> frozenset[Any]:
        items = self._items(p)
        bounds.check_keys(items, self._hashes, self._budget, "the elements of a frozenset")
        out = frozenset(items)
        self._memo.append(out)
        return out

    # -- iterators ----------------------------------------------------------------------------

    def _range_it(self, p: list[Any]) -> Any:
        _, start, stop, step = p  # a wrong arity raises ValueError: reported as corrupt
        if type(start) is not int or type(stop) is not int or type(step) is not int:
            start, stop, step = self._one(start), self._one(stop), self._one(step)  # big ints
            if type(start) is not int or type(stop) is not int or type(step) is not int:
                raise _corrupt("bad range iterator")
        out = iter(range(start, stop, step))
        self._memo.append(out)
        return out

    def _index(self, x: Any) -> int:
        if type(x) is not int:
            raise _corrupt(f"bad iterator index {x!r}")
        return x

    def _list_it(self, p: list[Any]) -> Any:
        self._arity(p, 3)
        seq = self._one(p[1])
        index = self._index(p[2])
        if type(seq) is not list or index < 0:
            raise _corrupt("bad list iterator")
        out: Any = iter(seq)
        if index:
            if index <= len(seq):
                out.__setstate__(index)
            else:  # the list is still being filled (it contains this iterator)
                self._pending.append((out, index))
        self._memo.append(out)
        return out

    def _list_revit(self, p: list[Any]) -> Any:
        self._arity(p, 3)
        seq = self._one(p[1])
        index = self._index(p[2])
        if type(seq) is not list or index < -1:
            raise _corrupt("bad list reverse iterator")
        out: Any = reversed(seq)
        if index < len(seq):
            out.__setstate__(index)
        else:
            self._pending.append((out, index))
        self._memo.append(out)
        return out

    def _indexed_it(self, p: list[Any], kinds: tuple[type, ...], lowest: int, make: Callable[[Any], Any],
                    what: str) -> Any:
        """An iterator over a sequence rebuilt at its saved position (``__setstate__``)."""
        self._arity(p, 3)
        seq = self._one(p[1])
        index = self._index(p[2])
        if type(seq) not in kinds or index < lowest:
            raise _corrupt(f"bad {what}")
        out: Any = make(seq)
        out.__setstate__(index)
        self._memo.append(out)
        return out

    def _tuple_it(self, p: list[Any]) -> Any:
        return self._indexed_it(p, (tuple,), 0, iter, "tuple iterator")

    def _reversed(self, p: list[Any]) -> Any:
        return self._indexed_it(p, (tuple, str, bytes), -1, reversed, "reversed iterator")

    def _str_it(self, p: list[Any]) -> Any:
        return self._indexed_it(p, (str,), 0, iter, "str iterator")

    def _bytes_it(self, p: list[Any]) -> Any:
        self._arity(p, 2)
        rest = p[1]
        if type(rest) is not bytes:
            raise _corrupt("bad bytes iterator")
        out = iter(rest)
        self._memo.append(out)
        return out

    def _enumerate(self, p: list[Any]) -> Any:
        self._arity(p, 3)
        inner = bounds.iterator(self._one(p[1]), "enumerate")
        count = self._one(p[2])
        if type(count) is not int:
            raise _corrupt("bad enumerate")
        out = enumerate(inner, count)
        self._memo.append(out)
        return out

    def _zip(self, p: list[Any]) -> Any:
        if len(p) < 2 or type(p[1]) is not bool:
            raise _corrupt("bad zip")
        strict = p[1]
        inners = [bounds.iterator(inner, "zip") for inner in self._items(p[1:])]
        out = zip(*inners, strict=strict)
        self._memo.append(out)
        return out

    # -- exceptions and custom objects --------------------------------------------------------

    def _custom(self, p: list[Any]) -> Any:
        if len(p) not in (3, 4):
            raise _corrupt(f"custom node needs 2 or 3 fields, got {len(p) - 1}")
        name = p[1]
        if type(name) is not str:
            raise _corrupt("bad custom value name")
        memo = self._memo
        slot = len(memo)
        memo.append(PENDING)
        head = self._one(p[2])
        with bounds.active(self._budget):  # what the kind builds is charged to this decoding
            obj = self._hooks.create(name, head)
            self.provide(slot, obj)
            if len(p) == 4:
                if name in FORWARD:
                    self._forward_fill(name, obj, head, p[3])
                else:
                    self._hooks.fill(name, obj, head, self._one(p[3]))
        return obj

    # -- objects referred to before they exist ------------------------------------------------

    def reserve(self) -> int:
        """A memo slot for an object made outside the decoder later (a frame's generator: the encoder
        reserved one); until ``provide`` fills it, only a cell's content may refer to it."""
        self._memo.append(PENDING)
        return len(self._memo) - 1

    def provide(self, slot: int, obj: object) -> None:
        """Fill ``slot`` with ``obj``, and the cells that were waiting for it."""
        self._memo[slot] = obj
        waiting = self._forward.pop(slot, None)
        if waiting:
            for name, cell, head, items, index in waiting:
                items[index] = obj
                if not any(item is PENDING for item in items):
                    self._hooks.fill(name, cell, head, items)

    def unresolved(self) -> bool:
        """True while a cell still waits for an object that was never provided (malformed input)."""
        return bool(self._forward)

    def _forward_fill(self, name: str, obj: object, head: object, node: Any) -> None:
        """The body of a kind in ``kinds.FORWARD``: a list whose items may be refs to slots still
        pending (filled by ``provide``); the kind's ``fill`` runs once none is pending."""
        if type(node) is not list or not node or node[0] != LIST:
            raise _corrupt(f"malformed body of a {name!r} value")
        items: list[Any] = []
        self._memo.append(items)
        for index, item in enumerate(node[1:]):
            if type(item) is list and len(item) == 2 and item[0] == REF and type(item[1]) is int \
                    and 0 <= item[1] < len(self._memo) and self._memo[item[1]] is PENDING:
                items.append(PENDING)
                self._forward.setdefault(item[1], []).append((name, obj, head, items, index))
            else:
                items.append(self._one(item))
        if not any(item is PENDING for item in items):
            self._hooks.fill(name, obj, head, items)

    def _object(self, p: list[Any]) -> Any:
        if len(p) < 2:
            raise _corrupt("bad object node")
        memo = self._memo
        slot = len(memo)
        memo.append(PENDING)
        ref = p[1]
        if type(ref) is list and len(ref) == 2 and ref[0] == REF and type(ref[1]) is int and 0 <= ref[1] < slot:
            head = memo[ref[1]]  # the layout written for an earlier object: the common case, inlined
            if head is PENDING:
                raise _corrupt("ref to a custom object whose payload is still being decoded")
        else:
            head = self._one(ref)
        plain = self._layouts.get(id(head))
        if plain is None:
            plain = self._hooks.plain_layout(head)
            if plain is not None:
                self._layouts[id(head)] = plain
        values = p[2:]
        if plain is not None:  # a class allowed when its layout was decoded, and __dict__ values
            cls, names = plain
            memo[slot] = obj = object.__new__(cls)
            values = self._values(values)
            if len(values) != len(names):
                raise _corrupt("object attributes do not match its layout")
            obj.__dict__.update(zip(names, values))
            return obj
        memo[slot] = obj = self._hooks.create(INSTANCE, head)
        values = self._values(values)
        self._hooks.fill(INSTANCE, obj, head, values)
        return obj

    def _exc_class(self, p: list[Any], group: bool) -> type:
        spec = p[1]
        if type(spec) is not str:
            raise _corrupt("bad exception class")
        if p[0] in (EXC, GROUP):
            cls: Any = BUILTIN_EXC.get(spec)
            if cls is None:
                raise _corrupt(f"{spec!r} is not a builtin exception")
        else:
            cls = self._hooks.resolve_class(spec)
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise _corrupt(f"{spec!r} is not an exception class")
        finalizer = bounds.finalizer(cls)
        if finalizer is not None:
            raise NotAllowedError(f"snapshot holds an exception of class {spec!r}, which defines {finalizer}; restore "
                                  "never builds objects whose finalizer would run on snapshot data")
        is_group = EXCEPTION_GROUP is not None and issubclass(cls, EXCEPTION_GROUP)
        if is_group != group:
            raise _corrupt(f"exception class {spec!r} does not match its node")
        return cls  # type: ignore[no-any-return]

    def _exception(self, p: list[Any]) -> BaseException:
        self._arity(p, 7)
        cls = self._exc_class(p, False)
        base: Any = builtin_base(cls)
        obj: BaseException = base.__new__(cls)
        if type(obj) is not cls:
            raise _corrupt(f"cannot rebuild {cls.__qualname__}")
        self._memo.append(obj)
        self._exc_state(obj, cls, p, 2)
        return obj

    def _group(self, p: list[Any]) -> BaseException:
        self._arity(p, 9)
        cls = self._exc_class(p, True)
        message = self._one(p[2])
        excs = self._one(p[3])
        if type(message) is not str or type(excs) is not tuple:
            raise _corrupt("bad exception group")
        base: Any = builtin_base(cls)
        obj: BaseException = base.__new__(cls, message, excs)
        if type(obj) is not cls:
            raise _corrupt(f"cannot rebuild {cls.__qualname__}")
        self._memo.append(obj)
        self._exc_state(obj, cls, p, 4)
        return obj

    def _exc_state(self, obj: BaseException, cls: type, p: list[Any], at: int) -> None:
        args = self._one(p[at])
        context = self._one(p[at + 1])
        cause = self._one(p[at + 2])
        members, attrs = p[at + 3], p[at + 4]
        if type(args) is not tuple or type(members) is not list or type(attrs) is not list:
            raise _corrupt("bad exception node")
        if len(members) & 1 or len(attrs) & 1:
            raise _corrupt("bad exception attributes")
        allowed = exc_members(cls)
        member_values: list[tuple[str, Any]] = []
        for i in range(0, len(members), 2):
            name = members[i]
            if type(name) is not str or name not in allowed:
                raise _corrupt(f"bad exception member {name!r}")
            member_values.append((name, self._one(members[i + 1])))
        attr_values: list[tuple[str, Any]] = []
        for i in range(0, len(attrs), 2):
            name = attrs[i]
            if type(name) is not str:
                raise _corrupt(f"bad exception attribute {name!r}")
            attr_values.append((name, self._one(attrs[i + 1])))
        # through BaseException's own descriptors: no property or __setattr__ of the class runs
        EXC_STATE["args"].__set__(obj, args)
        EXC_STATE["__context__"].__set__(obj, context)
        EXC_STATE["__cause__"].__set__(obj, cause)  # also sets __suppress_context__, which the members restore
        EXC_STATE["__suppress_context__"].__set__(obj, False)
        for name, value in member_values:
            allowed[name].__set__(obj, value)
        EXC_STATE["__dict__"].__get__(obj).update(attr_values)


_DECODERS: dict[int, Callable[[Decoder, list[Any]], Any]] = {
    REF: Decoder._ref,
    LIST: Decoder._list,
    TUPLE: Decoder._tuple,
    DICT: Decoder._dict,
    SET: Decoder._set,
    FROZENSET: Decoder._frozenset,
    BIGINT: Decoder._bigint,
    USTR: Decoder._ustr,
    AGAIN: Decoder._again,
    CUSTOM: Decoder._custom,
    EXC: Decoder._exception,
    EXC_CLS: Decoder._exception,
    GROUP: Decoder._group,
    GROUP_CLS: Decoder._group,
    RANGE_IT: Decoder._range_it,
    LIST_IT: Decoder._list_it,
    LIST_REVIT: Decoder._list_revit,
    TUPLE_IT: Decoder._tuple_it,
    STR_IT: Decoder._str_it,
    BYTES_IT: Decoder._bytes_it,
    ENUMERATE: Decoder._enumerate,
    ZIP: Decoder._zip,
    REVERSED: Decoder._reversed,
    OBJECT: Decoder._object,
    SHAPED: Decoder._shaped,
}
