"""Value codec: frame-local values to msgpack-ready structures and back, keeping exact types, sharing and cycles."""

from __future__ import annotations

import builtins
import collections
import types
from typing import Any, Protocol
from collections.abc import Callable, Sequence

from .errors import CorruptSnapshotError, SnapshotError, UnserializableValueError
from .kinds import INSTANCE, NO_BODY, Unsupported

__all__ = ["DecodeHooks", "Decoder", "EncodeHooks", "Encoder"]

# ---------------------------------------------------------------------------------------------
# Wire format
#
# Scalars travel as themselves: None, bool, float, bytes, int within msgpack's range
# [-2**63, 2**64 - 1] and str that is valid UTF-8 (no lone surrogates).  A dict whose keys and
# values are all such scalars is a msgpack map.  Everything else is a msgpack array whose first
# item is a small int tag.  (A plain Python list is tagged as well, so every array on the wire is
# a tagged node.)
#
# Memo: every container, iterator, exception and custom object owns a slot numbered in
# encounter order; a later occurrence is written [REF, slot].  Mutable objects (list, dict, set,
# non-group exceptions, custom objects) take their slot before their children are written, so a
# cycle back to them becomes a ref.  Objects that can only be built from finished children
# (tuple, frozenset, iterators, exception groups) take their slot after their children.  If a
# cycle (necessarily through some mutable object) already wrote such an object while its
# children were being written, the outer copy becomes [AGAIN, slot, *children]: the decoder
# decodes the children (to replay their slot assignments) and returns the slot's object.
#
#   [0, slot]                      ref                [1, *items]            list
#   [2, *items]                    tuple              [3, *keys, *values]    dict (insertion order)
#   {key: value, ...}              dict whose keys and values are all scalars (a msgpack map)
#   [4, *items]                    set                [5, *items]            frozenset
#   [6, bytes]                     int beyond 64 bits (little-endian two's complement)
#   [7, bytes]                     str with lone surrogates (UTF-8, 'surrogatepass')
#   [8, slot, *children]           AGAIN (see above)
#   [9, name, head] | [9, name, head, body]             custom value (a kind: EncodeHooks.custom)
#   [10, name, args, ctx, cause, members, dict]       builtin exception (name in builtins)
#   [11, ref,  args, ctx, cause, members, dict]       exception of a class allowed by class_ref
#   [12 | 13, name | ref, message, excs, args, ctx, cause, members, dict]   exception groups
#   [14, start, stop, step]        range iterator over the remaining range (short or long)
#   [15, list, index]              list_iterator      [16, list, index]      list_reverseiterator
#   [17, tuple, index]             tuple_iterator     [18, text, index]      str iterator
#   [19, rest]                     bytes_iterator     [20, inner, count]     enumerate
#   [21, strict, *iterators]       zip                [22, seq, index]       reversed (tuple/str/bytes)
#   [23, layout, *values]          an instance of an allowed class: the custom value of kind
#                                  ``kinds.INSTANCE`` (``layout`` is its head, ``values`` its body)
#   [24, model, *values]           a dict with the same str keys (two or more, in the same order) as
#                                  the dict at memo slot ``model``, written whole before: only values
#
# In exception nodes ``members`` and ``dict`` are flat untagged arrays [name, value, ...] of the
# C-level member attributes (errno, value, code, __suppress_context__, ...) and of ``__dict__``
# (which holds ``__notes__``).  Tracebacks are not kept.
# ---------------------------------------------------------------------------------------------

_REF = 0
_LIST = 1
_TUPLE = 2
_DICT = 3
_SET = 4
_FROZENSET = 5
_BIGINT = 6
_USTR = 7
_AGAIN = 8
_CUSTOM = 9
_EXC = 10
_EXC_CLS = 11
_GROUP = 12
_GROUP_CLS = 13
_RANGE_IT = 14
_LIST_IT = 15
_LIST_REVIT = 16
_TUPLE_IT = 17
_STR_IT = 18
_BYTES_IT = 19
_ENUMERATE = 20
_ZIP = 21
_REVERSED = 22
_OBJECT = 23
_SHAPED = 24

_NoneType = type(None)
# Types that msgpack carries unchanged, needing no check at all.
_PLAIN: frozenset[type] = frozenset({_NoneType, bool, float, bytes})
# Types that msgpack hands back and that may stand for themselves in a packed value.
_SCALARS: frozenset[type] = frozenset({_NoneType, bool, int, float, str, bytes})
_STR_ONLY: frozenset[type] = frozenset({str})

_range_iterator: type = type(iter(range(0)))
_longrange_iterator: type = type(iter(range(1 << 100)))
_list_iterator: type = type(iter([]))
_list_reverseiterator: type = type(reversed([]))
_tuple_iterator: type = type(iter(()))
_str_iterator: type = type(iter("\u00e9"))
_str_iterators: set[type] = {type(iter("")), _str_iterator}  # str_ascii_iterator exists on 3.12+
_bytes_iterator: type = type(iter(b""))
# Dict and set iterators only expose (via __reduce__) the list of their remaining items, so they
# are restored as a list_iterator over that list: same items, same order, different type.
_snapshot_list_iterators: set[type] = {
    type(iter({})),
    type(iter({}.values())),
    type(iter({}.items())),
    type(reversed({})),
    type(reversed({}.values())),
    type(reversed({}.items())),
    type(iter(set())),
}

_BaseExceptionGroup: type | None = getattr(builtins, "BaseExceptionGroup", None)
_BUILTIN_EXC: dict[str, type] = {
    name: obj for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
}
_BUILTIN_EXC_SET = frozenset(_BUILTIN_EXC.values())
# Member attributes never carried: the group's are constructor arguments (read-only), and
# AttributeError.obj points at an arbitrary live object (typically a module or instance).
_SKIPPED_MEMBERS = frozenset({"message", "exceptions", "obj"})

_PENDING = object()  # memo placeholder of a custom object whose payload is being decoded


def _type_name(tp: type) -> str:
    """``module.qualname`` of a type, or just ``qualname`` for builtins."""
    module = getattr(tp, "__module__", None)
    qualname = str(getattr(tp, "__qualname__", None) or getattr(tp, "__name__", repr(tp)))
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def _bigint_bytes(x: int) -> bytes:
    return x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_members_cache: dict[type, tuple[str, ...]] = {}


def _exc_members(cls: type) -> tuple[str, ...]:
    """Names of the member (slot-like) attributes an exception class carries besides args/__dict__."""
    names = _members_cache.get(cls)
    if names is None:
        found: list[str] = []
        for klass in cls.__mro__:
            for name, desc in vars(klass).items():
                if not isinstance(desc, types.MemberDescriptorType) or name in found:
                    continue
                if klass in _BUILTIN_EXC_SET and name in _SKIPPED_MEMBERS:
                    continue
                found.append(name)
        if issubclass(cls, OSError):
            found.append("characters_written")  # a getset of BlockingIOError's family, absent unless set
        names = _members_cache[cls] = tuple(found)
    return names


_base_cache: dict[type, type] = {}


def _builtin_base(cls: type) -> type:
    """The first builtin exception class in ``cls``'s MRO, whose ``__new__`` is safe to call for ``cls``."""
    base = _base_cache.get(cls)
    if base is None:
        base = next(k for k in cls.__mro__ if k in _BUILTIN_EXC_SET)
        _base_cache[cls] = base
    return base


class EncodeHooks(Protocol):
    """What the encoder asks its caller about values it cannot judge by itself."""

    def class_ref(self, cls: type) -> str | None:
        """``"module:qualname"`` if instances of ``cls`` may be carried (a compiled module's class), else None."""
        ...

    def plain_instances(self, cls: type) -> bool:
        """True if every instance of ``cls`` is of kind ``INSTANCE`` with its ``__dict__`` as its state
        (head: a layout depending only on the class and the attribute names, body: the values)."""
        ...

    def custom(self, obj: object) -> tuple[str, object, object] | None:
        """``(name, head, body)`` for an object the codec does not know, or None (see ``runtime.kinds``).

        Head and body are encoded in turn; ``body`` is ``kinds.NO_BODY`` for one-phase kinds.
        """
        ...


class DecodeHooks(Protocol):
    """What the decoder asks its caller to turn references back into objects."""

    def resolve_class(self, ref: str) -> type:
        """The class named by ``ref``; raises a SnapshotError subclass itself when it is not allowed."""
        ...

    def create(self, name: str, head: object) -> object:
        """Rebuild a custom object (or, for a two-phase kind, an empty one) from its decoded head."""
        ...

    def fill(self, name: str, obj: object, head: object, body: object) -> None:
        """Give a two-phase custom object (made by ``create`` from ``head``) its decoded body."""
        ...

    def plain_layout(self, layout: object) -> tuple[type, tuple[str, ...]] | None:
        """For an ``INSTANCE`` head whose objects are a class and ``__dict__`` values: the class and the
        attribute names (the decoder then rebuilds such objects itself), else None."""
        ...


class _Fail(Exception):
    """Internal: an unsupported value was met; carries the chain of parents to build the path lazily."""

    def __init__(self, value: object, reason: str = "is not supported") -> None:
        super().__init__()
        self.value = value
        self.reason = reason
        # (parent, step) from the innermost parent outwards; step None means "find the child in parent"
        self.chain: list[tuple[object, str | None]] = []

    def error(self, label: str) -> UnserializableValueError:
        steps: list[str] = []
        child = self.value
        for parent, step in self.chain:
            steps.append(step if step is not None else _locate(parent, child))
            child = parent
        path = [label, *reversed(steps)]
        type_name = _type_name(type(self.value))
        return UnserializableValueError(
            f"cannot snapshot {' → '.join(path)}: value of type {type_name!r} {self.reason}",
            path=path,
            type_name=type_name,
        )


def _locate(parent: object, child: object) -> str:
    """The path step leading from a container to one of its items (searched by identity)."""
    if isinstance(parent, (list, tuple, collections.deque)):
        for i, item in enumerate(parent):
            if item is child:
                return f"[{i}]"
    elif isinstance(parent, dict):
        for key, item in parent.items():
            if item is child:
                return f"[{key!r}]"
        for i, key in enumerate(parent):
            if key is child:
                return f"<key #{i}>"
    elif isinstance(parent, (set, frozenset)):
        return "<element>"
    for name, item in _attributes(parent):
        if item is child:
            return f".{name}"
    return f"<{type(parent).__name__}>"


def _attributes(obj: object) -> list[tuple[str, object]]:
    """An object's instance attributes, from ``__dict__``, ``__slots__`` and the C-level members of
    builtin and standard-library types (``default_factory``, ``start``, ``tzinfo``, ...)."""
    found = list(getattr(obj, "__dict__", {}).items())
    for klass in type(obj).__mro__:
        for name in getattr(klass, "__slots__", ()):
            if isinstance(name, str) and name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                found.append((name, getattr(obj, name)))
        for name, member in vars(klass).items():
            if type(member) in _C_MEMBERS and not name.startswith("__"):
                try:
                    found.append((name, getattr(obj, name)))
                except Exception:  # noqa: BLE001, S110 - an unset or unreadable member names nothing
                    pass
    return found


_C_MEMBERS = (types.MemberDescriptorType, types.GetSetDescriptorType)


class Encoder:
    """Encodes values into msgpack-ready structures; one memo is shared by all ``encode`` calls.

    ``exact=True`` (the default) checks every int and str, so the result always packs.  With
    ``exact=False`` ints and strs travel as themselves without a check: faster, and right unless
    an int is beyond 64 bits or a str holds a lone surrogate, in which case msgpack's ``pack``
    raises OverflowError or UnicodeEncodeError and the caller must encode again with
    ``exact=True`` (runtime.snapshot does).  After an ``encode`` call raised, the encoder's memo
    is unreliable: discard the encoder.
    """

    __slots__ = ("_hooks", "_memo", "_keep", "_plain", "_open", "_layouts", "_shapes", "_first_dict", "_shaping")

    def __init__(self, hooks: EncodeHooks, *, exact: bool = True) -> None:
        self._hooks = hooks
        self._memo: dict[int, int] = {}  # id(obj) -> slot
        # The slot of a new object is len(memo).  Memo keys are ids, so every registered object
        # must stay alive while the encoder lives: objects reachable from the values given to
        # encode() are kept by those values; _keep holds those values themselves and the
        # temporaries (iterator __reduce__ results, custom payloads) that nothing else holds.
        self._keep: list[object] = []
        # Types whose values are written as themselves without a look at the value.
        self._plain = _PLAIN if exact else _SCALARS
        # ids of one-phase custom objects whose head is being encoded (a ref to one is a cycle
        # that restore could not rebuild)
        self._open: set[int] = set()
        # plain-instance classes -> {attribute names: memo slot of their layout}: the fast path of
        # instances whose state is their __dict__ (see _other)
        self._layouts: dict[type, dict[tuple[str, ...], int]] = {}
        # str keys of dicts written whole -> the memo slot of the first such dict (see _dict)
        self._shapes: dict[tuple[str, ...], int] = {}
        # the first dict written whole: shapes are worked out only once a second dict comes
        self._first_dict: tuple[dict[Any, Any], int] | None = None
        self._shaping = False

    def reset(self) -> None:
        """Forget every object encoded so far: the encoder starts afresh (and holds nothing)."""
        self._memo.clear()
        self._keep.clear()
        if self._layouts or self._shapes or self._open:
            self._open.clear()
            self._layouts.clear()
            self._shapes.clear()
        self._first_dict = None
        self._shaping = False

    def encode(self, value: object, label: str) -> object:
        """Return a msgpack-serializable form of ``value``; ``label`` names it in error paths (``"local 'x'"``)."""
        out = [value]
        self.encode_all(out, (label,))
        return out[0]

    def encode_all(self, values: list[Any], labels: Sequence[str]) -> None:
        """Replace each of ``values`` by its msgpack-serializable form; ``labels[i]`` names ``values[i]``."""
        plain = self._plain
        keep = self._keep.append
        encoders = _ENCODERS
        i = 0
        try:
            for i, value in enumerate(values):
                tp = type(value)
                if tp in plain:
                    continue
                keep(value)
                fn = encoders.get(tp)
                values[i] = self._other(value) if fn is None else fn(self, value)
        except _Fail as fail:
            raise fail.error(labels[i]) from None
        except RecursionError:
            raise UnserializableValueError(
                f"cannot snapshot {labels[i]}: value is nested too deeply", path=[labels[i]],
                type_name=_type_name(type(values[i]))
            ) from None

    # -- generic ------------------------------------------------------------------------------

    def _enc(self, x: Any) -> Any:
        fn = _ENCODERS.get(type(x))
        if fn is None:
            return self._other(x)
        return fn(self, x)

    def _register(self, obj: object) -> None:
        memo = self._memo
        memo[id(obj)] = len(memo)

    def _seal(self, obj: object, out: list[Any]) -> list[Any]:
        """Give a build-after-children object its slot, or emit AGAIN if a cycle already wrote it."""
        memo = self._memo
        slot = memo.get(id(obj))
        if slot is not None:
            out[0] = slot
            out.insert(0, _AGAIN)
            return out
        memo[id(obj)] = len(memo)
        return out

    def _int(self, x: int) -> Any:
        if -9223372036854775808 <= x <= 18446744073709551615:
            return x
        return [_BIGINT, _bigint_bytes(x)]

    def _str(self, x: str) -> Any:
        if x.isascii() or _is_utf8(x):
            return x
        return [_USTR, x.encode("utf-8", "surrogatepass")]

    # -- containers ---------------------------------------------------------------------------

    def _items(self, tag: int, v: Any) -> list[Any]:
        """``[tag, *encoded items]``; all-plain items are copied in one go (the hot path)."""
        plain = self._plain
        if plain.issuperset(map(type, v)):
            return [tag, *v]
        out: list[Any] = [tag]
        ap = out.append
        enc = self._enc
        try:
            for x in v:
                ap(x if type(x) in plain else enc(x))
        except _Fail as fail:
            fail.chain.append((v, None))
            raise
        return out

    def _list(self, v: list[Any]) -> Any:
        memo = self._memo
        key = id(v)
        slot = memo.get(key)
        if slot is not None:
            return [_REF, slot]
        memo[key] = len(memo)
        return self._items(_LIST, v)

    def _set(self, v: set[Any]) -> Any:
        slot = self._memo.get(id(v))
        if slot is not None:
            return [_REF, slot]
        self._register(v)
        return self._items(_SET, v)

    def _tuple(self, v: tuple[Any, ...]) -> Any:
        slot = self._memo.get(id(v))
        if slot is not None:
            return [_REF, slot]
        return self._seal(v, self._items(_TUPLE, v))

    def _frozenset(self, v: frozenset[Any]) -> Any:
        slot = self._memo.get(id(v))
        if slot is not None:
            return [_REF, slot]
        return self._seal(v, self._items(_FROZENSET, v))

    def _dict(self, v: dict[Any, Any]) -> Any:
        memo = self._memo
        key = id(v)
        slot = memo.get(key)
        if slot is not None:
            return [_REF, slot]
        own = memo[key] = len(memo)
        plain = self._plain
        names = None
        if len(v) > 1:
            if self._first_dict is not None:  # a second dict: shapes start paying off
                first, slot = self._first_dict
                self._first_dict = None
                self._shaping = True
                if _STR_ONLY.issuperset(map(type, first)):
                    self._shapes.setdefault(tuple(first), slot)
            if self._shaping and _STR_ONLY.issuperset(map(type, v)):
                names = tuple(v)
        if names is not None:
            model = self._shapes.get(names)
            if model is not None:  # the same str keys as a dict written before: only the values
                return [_SHAPED, model, *self._values(v, list(v.values()))]
        if plain.issuperset(map(type, v)) and plain.issuperset(map(type, v.values())):
            out: Any = v  # packed as a msgpack map
        else:
            out = [_DICT]
            ap = out.append
            enc = self._enc
            try:
                for x in v:
                    ap(x if type(x) in plain else enc(x))
                for x in v.values():
                    ap(x if type(x) in plain else enc(x))
            except _Fail as fail:
                fail.chain.append((v, None))
                raise
        if names is not None:
            self._shapes.setdefault(names, own)  # once written whole, it is a model for later dicts
        elif len(v) > 1 and not self._shaping and self._first_dict is None:
            self._first_dict = (v, own)  # becomes a model only if another dict follows
        return out

    # -- iterators ----------------------------------------------------------------------------

    def _part(self, it: object, step: str, x: Any) -> Any:
        """Encode one child of an iterator or exception, naming the step on failure."""
        try:
            return self._enc(x)
        except _Fail as fail:
            fail.chain.append((it, step))
            raise

    def _range_it(self, it: Any) -> Any:
        memo = self._memo
        key = id(it)
        slot = memo.get(key)
        if slot is not None:
            return [_REF, slot]
        memo[key] = len(memo)  # no children: registering first gives the slot the decoder uses
        # 3.10/3.11: (iter, (range,), index); 3.12+: (iter, (remaining range,), None)
        reduced = it.__reduce__()
        rng = reduced[1][0]
        start = rng.start
        stop = rng.stop
        step = rng.step
        if reduced[2]:
            start += reduced[2] * step
            if (start > stop) if step > 0 else (start < stop):
                start = stop  # exhausted: keep the numbers within the original bounds
        if self._plain is _SCALARS:
            return [_RANGE_IT, start, stop, step]
        return [_RANGE_IT, self._int(start), self._int(stop), self._int(step)]

    def _seq_it(self, it: Any, tag: int, exhausted_index: int) -> Any:
        """Iterators reducing to ``(callable, (seq,), index)``, or ``(callable, (empty,))`` once exhausted."""
        slot = self._memo.get(id(it))
        if slot is not None:
            return [_REF, slot]
        reduced = it.__reduce__()
        self._keep.append(reduced)
        index = reduced[2] if len(reduced) > 2 else exhausted_index
        return self._seal(it, [tag, self._part(it, "<iterated sequence>", reduced[1][0]), index])

    def _list_it(self, it: Any) -> Any:
        return self._seq_it(it, _LIST_IT, 0)

    def _list_revit(self, it: Any) -> Any:
        # exhausted: reduces to iter([]) (3.10-3.12) or reversed([]) without index (3.13)
        return self._seq_it(it, _LIST_REVIT, -1)

    def _tuple_it(self, it: Any) -> Any:
        return self._seq_it(it, _TUPLE_IT, 0)

    def _reversed(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [_REF, slot]
        reduced = it.__reduce__()
        seq = reduced[1][0]
        if type(seq) not in (tuple, str, bytes):
            fail = _Fail(seq)
            fail.chain.append((it, "<iterated sequence>"))
            raise fail
        index = reduced[2] if len(reduced) > 2 else -1
        return self._seal(it, [_REVERSED, self._part(it, "<iterated sequence>", seq), index])

    def _str_it(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [_REF, slot]
        reduced = it.__reduce__()
        if len(reduced) > 2:
            text, index = reduced[1][0], reduced[2]
        elif type(it) is _str_iterator:
            text, index = "\x80", 1  # exhausted, and kept a str_iterator rather than a str_ascii_iterator
        else:
            text, index = "", 0
        # The whole text travels (not only the rest): iter() picks the iterator type from it.
        out = [_STR_IT, self._str(text), index]
        self._register(it)
        return out

    def _bytes_it(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [_REF, slot]
        reduced = it.__reduce__()
        rest = bytes(reduced[1][0][reduced[2] :]) if len(reduced) > 2 else b""
        out = [_BYTES_IT, rest]
        self._register(it)
        return out

    def _items_it(self, it: Any) -> Any:
        # dict key/value/item iterators (and their reversed variants) and set iterators reduce to
        # (iter, ([remaining items],)): they come back as a list_iterator over those items.
        slot = self._memo.get(id(it))
        if slot is not None:
            return [_REF, slot]
        remaining = it.__reduce__()[1][0]
        self._keep.append(remaining)
        return self._seal(it, [_LIST_IT, self._part(it, "<remaining items>", remaining), 0])

    def _enumerate(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [_REF, slot]
        inner, count = it.__reduce__()[1]
        out = [_ENUMERATE, self._part(it, "<enumerated iterator>", inner), self._int(count)]
        return self._seal(it, out)

    def _zip(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [_REF, slot]
        reduced = it.__reduce__()  # (zip, iterators) or (zip, iterators, strict) on 3.10+
        strict = bool(reduced[2]) if len(reduced) > 2 else False
        out: list[Any] = [_ZIP, strict]
        for i, inner in enumerate(reduced[1]):
            out.append(self._part(it, f"<zipped iterator #{i}>", inner))
        return self._seal(it, out)

    # -- exceptions and custom objects --------------------------------------------------------

    def _other(self, x: Any) -> Any:
        memo = self._memo
        slot = memo.get(id(x))
        if slot is not None:
            if self._open and id(x) in self._open:
                raise _Fail(x, "refers back to itself through a value that cannot hold a cycle")
            return [_REF, slot]
        layouts = self._layouts.get(type(x))
        if layouts is not None:  # a plain instance whose class was seen in this snapshot already
            attrs = x.__dict__
            layout_slot = layouts.get(tuple(attrs))
            if layout_slot is not None:
                memo[id(x)] = len(memo)
                return [_OBJECT, [_REF, layout_slot], *self._values(x, list(attrs.values()))]
        if isinstance(x, BaseException):
            out = self._exception(x)
            if out is not None:
                return out
        try:
            handled = self._hooks.custom(x)
        except Unsupported as exc:  # a kind that knows why it cannot carry x
            raise _Fail(x, exc.reason) from None
        if handled is None:
            raise _Fail(x)
        name, head, body = handled
        self._keep.append(handled)
        self._register(x)  # before its parts: the body may refer back to x
        if name is INSTANCE:  # the common case gets a compact node: [OBJECT, layout, *values]
            out = [_OBJECT, self._component(x, head)]
            if self._hooks.plain_instances(type(x)):
                self._layouts.setdefault(type(x), {})[tuple(x.__dict__)] = self._memo[id(head)]
            out += self._values(x, body)
            return out
        if body is NO_BODY:
            self._open.add(id(x))
            out = [_CUSTOM, name, self._component(x, head)]
            self._open.discard(id(x))
            return out
        return [_CUSTOM, name, self._component(x, head), self._component(x, body)]

    def _values(self, owner: object, values: list[Any]) -> list[Any]:
        """``values`` (of ``owner``'s attributes or items) encoded; as they are when all are plain."""
        plain = self._plain
        if plain.issuperset(map(type, values)):
            return values
        try:
            return [v if type(v) in plain else self._enc(v) for v in values]
        except _Fail as fail:
            fail.chain.append((owner, None))
            raise

    def _component(self, x: object, part: Any) -> Any:
        """Encode the head or body of custom object ``x``; a failure's path steps into ``x`` itself."""
        try:
            return self._enc(part)
        except _Fail as fail:
            if fail.chain and fail.chain[-1][0] is part and _locate(x, part).startswith("<"):
                fail.chain.pop()  # a container the kind made for x's parts is not a step of the path
            fail.chain.append((x, None))
            raise

    def _exception(self, e: BaseException) -> Any:
        tp = type(e)
        builtin = _BUILTIN_EXC.get(tp.__name__) is tp
        spec = tp.__name__ if builtin else self._hooks.class_ref(tp)
        if spec is None:
            return None
        part = self._part
        if _BaseExceptionGroup is not None and isinstance(e, _BaseExceptionGroup):
            group: Any = e
            ctor = [
                _GROUP if builtin else _GROUP_CLS,
                spec,
                part(e, ".message", group.message),
                part(e, ".exceptions", group.exceptions),
            ]
            slot = self._memo.get(id(e))
            if slot is not None:  # a cycle through the nested exceptions already wrote e
                return [_AGAIN, slot, *ctor[2:]]
            out = ctor
        else:
            out = [_EXC if builtin else _EXC_CLS, spec]
        self._register(e)
        out.append(part(e, ".args", e.args))
        out.append(part(e, ".__context__", e.__context__))
        out.append(part(e, ".__cause__", e.__cause__))
        members: list[Any] = []
        for name in _exc_members(tp):
            try:
                value = getattr(e, name)
            except AttributeError:
                continue
            if value is None or (value is False and name == "__suppress_context__"):
                continue
            members.append(name)
            members.append(part(e, f".{name}", value))
        out.append(members)
        attrs: list[Any] = []
        for name, value in e.__dict__.items():
            if type(name) is not str or not (name.isascii() or _is_utf8(name)):
                fail = _Fail(name)  # an attribute name msgpack cannot carry as a str
                fail.chain.append((e, ".__dict__"))
                raise fail
            attrs.append(name)
            attrs.append(part(e, f".{name}", value))
        out.append(attrs)
        return out


def _identity(self: Encoder, x: Any) -> Any:
    return x


_ENCODERS: dict[type, Callable[[Encoder, Any], Any]] = {
    list: Encoder._list,
    dict: Encoder._dict,
    tuple: Encoder._tuple,
    set: Encoder._set,
    frozenset: Encoder._frozenset,
    int: Encoder._int,
    str: Encoder._str,
    _range_iterator: Encoder._range_it,
    _longrange_iterator: Encoder._range_it,
    _list_iterator: Encoder._list_it,
    _list_reverseiterator: Encoder._list_revit,
    _tuple_iterator: Encoder._tuple_it,
    _bytes_iterator: Encoder._bytes_it,
    enumerate: Encoder._enumerate,
    zip: Encoder._zip,
    reversed: Encoder._reversed,
    **{tp: _identity for tp in _PLAIN},
    **{tp: Encoder._str_it for tp in _str_iterators},
    **{tp: Encoder._items_it for tp in _snapshot_list_iterators},
}


def _corrupt(message: str) -> CorruptSnapshotError:
    return CorruptSnapshotError(f"malformed snapshot value: {message}")


class Decoder:
    """Inverse of :class:`Encoder`; ``decode`` must see the packed values in ``encode`` order.

    Any malformed input raises CorruptSnapshotError (SnapshotErrors raised by the hooks pass through).
    """

    __slots__ = ("_hooks", "_memo", "_pending", "_depth", "_max_depth", "_layouts", "_shapes")

    def __init__(self, hooks: DecodeHooks, *, max_depth: int = 1000) -> None:
        self._hooks = hooks
        self._depth = 0
        self._max_depth = max_depth
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
        scalars = _SCALARS
        node = self._node
        try:
            values = [x if type(x) in scalars else node(x) for x in packed]
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
        return values

    # -- generic ------------------------------------------------------------------------------

    def _node(self, p: Any) -> Any:
        if type(p) is not list:
            if type(p) is dict:
                return self._map(p)
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
        return x if type(x) in _SCALARS else self._node(x)

    def _values(self, values: list[Any]) -> list[Any]:
        """``values`` decoded; the list itself when all are scalars."""
        if _SCALARS.issuperset(map(type, values)):
            return values
        node = self._node
        return [x if type(x) in _SCALARS else node(x) for x in values]

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
        if obj is _PENDING:
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
        if _SCALARS.issuperset(map(type, items)):
            self._memo.append(items)
            return items
        out: list[Any] = []
        self._memo.append(out)
        node = self._node
        scalars = _SCALARS
        out.extend([x if type(x) in scalars else node(x) for x in items])
        return out

    def _set(self, p: list[Any]) -> set[Any]:
        out: set[Any] = set()
        self._memo.append(out)
        out.update(self._items(p))
        return out

    def _map(self, p: dict[Any, Any]) -> dict[Any, Any]:
        """A msgpack map: a dict whose keys and values are all scalars, used as it is."""
        if not (_SCALARS.issuperset(map(type, p)) and _SCALARS.issuperset(map(type, p.values()))):
            raise _corrupt("map with a value that is not a scalar")
        self._memo.append(p)
        return p

    def _dict(self, p: list[Any]) -> dict[Any, Any]:
        if not len(p) & 1:
            raise _corrupt("dict node with an odd number of keys and values")
        half = len(p) // 2 + 1
        out: dict[Any, Any] = {}
        self._memo.append(out)
        items = self._items(p)  # keys first, then values: the order the encoder wrote them
        half -= 1
        out.update(zip(items[:half], items[half:]))
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
            keys = self._shapes[model] = list(memo[model])
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
        out = frozenset(self._items(p))
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
        inner = self._one(p[1])
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
        inners = self._items(p[1:])
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
        memo.append(_PENDING)
        head = self._one(p[2])
        memo[slot] = obj = self._hooks.create(name, head)
        if len(p) == 4:
            self._hooks.fill(name, obj, head, self._one(p[3]))
        return obj

    def _object(self, p: list[Any]) -> Any:
        if len(p) < 2:
            raise _corrupt("bad object node")
        memo = self._memo
        slot = len(memo)
        memo.append(_PENDING)
        ref = p[1]
        if type(ref) is list and len(ref) == 2 and ref[0] == _REF and type(ref[1]) is int and 0 <= ref[1] < slot:
            head = memo[ref[1]]  # the layout written for an earlier object: the common case, inlined
            if head is _PENDING:
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
        if p[0] in (_EXC, _GROUP):
            cls: Any = _BUILTIN_EXC.get(spec)
            if cls is None:
                raise _corrupt(f"{spec!r} is not a builtin exception")
        else:
            cls = self._hooks.resolve_class(spec)
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise _corrupt(f"{spec!r} is not an exception class")
        is_group = _BaseExceptionGroup is not None and issubclass(cls, _BaseExceptionGroup)
        if is_group != group:
            raise _corrupt(f"exception class {spec!r} does not match its node")
        return cls  # type: ignore[no-any-return]

    def _exception(self, p: list[Any]) -> BaseException:
        self._arity(p, 7)
        cls = self._exc_class(p, False)
        base: Any = _builtin_base(cls)
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
        base: Any = _builtin_base(cls)
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
        allowed = _exc_members(cls)
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
        obj.args = args
        obj.__context__ = context
        obj.__cause__ = cause  # also sets __suppress_context__, which the members then restore
        obj.__suppress_context__ = False
        for name, value in member_values:
            setattr(obj, name, value)
        obj.__dict__.update(attr_values)


_DECODERS: dict[int, Callable[[Decoder, list[Any]], Any]] = {
    _REF: Decoder._ref,
    _LIST: Decoder._list,
    _TUPLE: Decoder._tuple,
    _DICT: Decoder._dict,
    _SET: Decoder._set,
    _FROZENSET: Decoder._frozenset,
    _BIGINT: Decoder._bigint,
    _USTR: Decoder._ustr,
    _AGAIN: Decoder._again,
    _CUSTOM: Decoder._custom,
    _EXC: Decoder._exception,
    _EXC_CLS: Decoder._exception,
    _GROUP: Decoder._group,
    _GROUP_CLS: Decoder._group,
    _RANGE_IT: Decoder._range_it,
    _LIST_IT: Decoder._list_it,
    _LIST_REVIT: Decoder._list_revit,
    _TUPLE_IT: Decoder._tuple_it,
    _STR_IT: Decoder._str_it,
    _BYTES_IT: Decoder._bytes_it,
    _ENUMERATE: Decoder._enumerate,
    _ZIP: Decoder._zip,
    _REVERSED: Decoder._reversed,
    _OBJECT: Decoder._object,
    _SHAPED: Decoder._shaped,
}
