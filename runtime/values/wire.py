"""The wire format of snapshot values: node tags, scalar rules and what encoder and decoder share."""

from __future__ import annotations

import builtins
import types
import weakref
from typing import Any, Protocol



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

REF = 0
LIST = 1
TUPLE = 2
DICT = 3
SET = 4
FROZENSET = 5
BIGINT = 6
USTR = 7
AGAIN = 8
CUSTOM = 9
EXC = 10
EXC_CLS = 11
GROUP = 12
GROUP_CLS = 13
RANGE_IT = 14
LIST_IT = 15
LIST_REVIT = 16
TUPLE_IT = 17
STR_IT = 18
BYTES_IT = 19
ENUMERATE = 20
ZIP = 21
REVERSED = 22
OBJECT = 23
SHAPED = 24

NoneType = type(None)
# Types that msgpack carries unchanged, needing no check at all.
PLAIN: frozenset[type] = frozenset({NoneType, bool, float, bytes})
# Types that msgpack hands back and that may stand for themselves in a packed value.
SCALARS: frozenset[type] = frozenset({NoneType, bool, int, float, str, bytes})
STR_ONLY: frozenset[type] = frozenset({str})

RANGE_ITERATOR: type = type(iter(range(0)))
LONGRANGE_ITERATOR: type = type(iter(range(1 << 100)))
LIST_ITERATOR: type = type(iter([]))
LIST_REVERSEITERATOR: type = type(reversed([]))
TUPLE_ITERATOR: type = type(iter(()))
STR_ITERATOR: type = type(iter("\u00e9"))
STR_ITERATORS: set[type] = {type(iter("")), STR_ITERATOR}  # str_ascii_iterator exists on 3.12+
BYTES_ITERATOR: type = type(iter(b""))
# Dict and set iterators only expose (via __reduce__) the list of their remaining items, so they
# are restored as a list_iterator over that list: same items, same order, different type.
ITEMS_ITERATORS: set[type] = {
    type(iter({})),
    type(iter({}.values())),
    type(iter({}.items())),
    type(reversed({})),
    type(reversed({}.values())),
    type(reversed({}.items())),
    type(iter(set())),
}

EXCEPTION_GROUP: type | None = getattr(builtins, "BaseExceptionGroup", None)
BUILTIN_EXC: dict[str, type] = {
    name: obj for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
}
BUILTIN_EXC_SET = frozenset(BUILTIN_EXC.values())
# Member attributes never carried: the group's are constructor arguments (read-only), and
# AttributeError.obj points at an arbitrary live object (typically a module or instance).
SKIPPED_MEMBERS = frozenset({"message", "exceptions", "obj"})

PENDING = object()  # memo placeholder of a custom object whose payload is being decoded


def type_name(tp: type) -> str:
    """``module.qualname`` of a type, or just ``qualname`` for builtins."""
    module = getattr(tp, "__module__", None)
    qualname = str(getattr(tp, "__qualname__", None) or getattr(tp, "__name__", repr(tp)))
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def bigint_bytes(x: int) -> bytes:
    return x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)


def is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_members_cache: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()
# (weak: the inspector decodes with stand-in classes made for one inspection)


def exc_members(cls: type) -> dict[str, Any]:
    """The member (slot-like) attributes an exception class carries besides args/__dict__: name ->
    the descriptor that stores it (the decoder sets them through it, so no property or
    ``__setattr__`` of the class runs)."""
    found = _members_cache.get(cls)
    if found is None:
        found = {}
        for klass in cls.__mro__:
            for name, desc in vars(klass).items():
                if not isinstance(desc, types.MemberDescriptorType) or name in found:
                    continue
                if klass in BUILTIN_EXC_SET and name in SKIPPED_MEMBERS:
                    continue
                found[name] = desc
        if issubclass(cls, OSError):  # a getset of BlockingIOError's family, absent unless set
            found["characters_written"] = vars(OSError)["characters_written"]
        _members_cache[cls] = found
    return found


EXC_STATE = {name: vars(BaseException)[name] for name in ("args", "__context__", "__cause__",
                                                          "__suppress_context__", "__dict__")}
"""The descriptors of BaseException's own state, set directly (never through the class's attributes)."""


_base_cache: weakref.WeakKeyDictionary[type, type] = weakref.WeakKeyDictionary()


def builtin_base(cls: type) -> type:
    """The first builtin exception class in ``cls``'s MRO, whose ``__new__`` is safe to call for ``cls``."""
    base = _base_cache.get(cls)
    if base is None:
        base = next(k for k in cls.__mro__ if k in BUILTIN_EXC_SET)
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

    def find_global(self, obj: object) -> tuple[str, str] | None:
        """``(module, name)`` of an allowed module's global whose value is ``obj``, else None."""
        ...

    def custom(self, obj: object) -> tuple[str, object, object] | None:
        """``(name, head, body)`` for an object the codec does not know, or None (see ``runtime.kinds``).

        Head and body are encoded in turn; ``body`` is ``kinds.NO_BODY`` for one-phase kinds.
        """
        ...

    def finished(self) -> None:
        """The encoder is done with one snapshot (or the decoder with one restore's values): forget what
        was kept about the objects it met that the program makes at run time (classes in functions)."""
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

    def finished(self) -> None:
        """As ``EncodeHooks.finished``."""
        ...

