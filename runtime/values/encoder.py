"""Values to msgpack-ready nodes (the encoder): exact types, shared references and cycles, readable failure paths."""
from __future__ import annotations

import collections
import types
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import UnserializableValueError
from . import bounds, settings
from .kinds import FORWARD, GLOBAL, INSTANCE, NO_BODY, STALE_ITERATOR, Unsupported
from .wire import (AGAIN, BIGINT, BUILTIN_EXC, BYTES_IT, BYTES_ITERATOR, CUSTOM, DICT, ENUMERATE, EXC,
                   EXCEPTION_GROUP, EXC_CLS, EncodeHooks, FROZENSET, GROUP, GROUP_CLS, ITEMS_ITERATORS, LIST,
                   LIST_IT, LIST_ITERATOR, LIST_REVERSEITERATOR, LIST_REVIT, LONGRANGE_ITERATOR, OBJECT,
                   PLAIN, RANGE_IT, RANGE_ITERATOR, REF, REVERSED, SCALARS, SET, SHAPED, STR_IT, STR_ITERATOR,
                   STR_ITERATORS, STR_ONLY, TUPLE, TUPLE_IT, TUPLE_ITERATOR, USTR, ZIP, bigint_bytes,
                   exc_members, is_utf8, type_name)


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
        name = type_name(type(self.value))
        return UnserializableValueError(
            f"cannot snapshot {' → '.join(path)}: value of type {name!r} {self.reason}",
            path=path,
            type_name=name,
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

    __slots__ = ("_hooks", "_memo", "_keep", "_plain", "_open", "_layouts", "_shapes", "_first_dict", "_shaping",
                 "_hash_check", "_globals")

    def __init__(self, hooks: EncodeHooks, *, exact: bool = True) -> None:
        self._hooks = hooks
        self._memo: dict[int, int] = {}  # id(obj) -> slot
        # The slot of a new object is len(memo).  Memo keys are ids, so every registered object
        # must stay alive while the encoder lives: objects reachable from the values given to
        # encode() are kept by those values; _keep holds those values themselves and the
        # temporaries (iterator __reduce__ results, custom payloads) that nothing else holds.
        self._keep: list[object] = []
        # Types whose values are written as themselves without a look at the value.
        self._plain = PLAIN if exact else SCALARS
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
        # set elements and dict keys that restore must hash: checked as the decoder will (bounds)
        self._hash_check: bounds.HashCheck | None = None
        # module-level objects met by reference, not copied: id -> (module, name) (see by_reference)
        self._globals: dict[int, tuple[str, str]] = {}

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
        self._hash_check = None
        self._globals.clear()
        self._hooks.finished()

    def by_reference(self, objects: dict[int, tuple[str, str]]) -> None:
        """Write these objects (by ``id``: ``(module, name)``, module globals whose values live in this
        process) as references to the module's name, not as copies: after restore a local holds the
        module's own object, as it did (kind "global")."""
        for key, where in objects.items():
            if key not in self._memo:
                self._globals[key] = where

    def _global(self, x: Any) -> Any:
        module, name = self._globals.pop(id(x))
        self._register(x)  # before its head, as the decoder numbers a custom value
        head = [module, name]
        self._keep.append(head)
        return [CUSTOM, GLOBAL, self._component(x, head)]

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
                if self._globals and id(value) in self._globals:
                    values[i] = self._global(value)
                    continue
                fn = encoders.get(tp)
                values[i] = self._other(value) if fn is None else fn(self, value)
        except _Fail as fail:
            raise fail.error(labels[i]) from None
        except RecursionError:
            raise UnserializableValueError(
                f"cannot snapshot {labels[i]}: value is nested too deeply", path=[labels[i]],
                type_name=type_name(type(values[i]))
            ) from None

    # -- generic ------------------------------------------------------------------------------

    def _enc(self, x: Any) -> Any:
        if self._globals and id(x) in self._globals:
            return self._global(x)
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
            out.insert(0, AGAIN)
            return out
        memo[id(obj)] = len(memo)
        return out

    def _int(self, x: int) -> Any:
        if -9223372036854775808 <= x <= 18446744073709551615:
            return x
        return [BIGINT, bigint_bytes(x)]

    def _str(self, x: str) -> Any:
        if x.isascii() or is_utf8(x):
            return x
        return [USTR, x.encode("utf-8", "surrogatepass")]

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
            return [REF, slot]
        memo[key] = len(memo)
        return self._items(LIST, v)

    def _set(self, v: set[Any]) -> Any:
        slot = self._memo.get(id(v))
        if slot is not None:
            return [REF, slot]
        self._register(v)
        if not self._plain.issuperset(map(type, v)):
            self._hashed(v, v)
        return self._items(SET, v)

    def _tuple(self, v: tuple[Any, ...]) -> Any:
        slot = self._memo.get(id(v))
        if slot is not None:
            return [REF, slot]
        return self._seal(v, self._items(TUPLE, v))

    def _frozenset(self, v: frozenset[Any]) -> Any:
        slot = self._memo.get(id(v))
        if slot is not None:
            return [REF, slot]
        if not self._plain.issuperset(map(type, v)):
            self._hashed(v, v)
        return self._seal(v, self._items(FROZENSET, v))

    def _dict(self, v: dict[Any, Any]) -> Any:
        memo = self._memo
        key = id(v)
        slot = memo.get(key)
        if slot is not None:
            return [REF, slot]
        own = memo[key] = len(memo)
        plain = self._plain
        if not plain.issuperset(map(type, v)):
            self._hashed(v, v)
        names = None
        if len(v) > 1:
            if self._first_dict is not None:  # a second dict: shapes start paying off
                first, slot = self._first_dict
                self._first_dict = None
                self._shaping = True
                if STR_ONLY.issuperset(map(type, first)):
                    self._shapes.setdefault(tuple(first), slot)
            if self._shaping and STR_ONLY.issuperset(map(type, v)):
                names = tuple(v)
        if names is not None:
            model = self._shapes.get(names)
            if model is not None:  # the same str keys as a dict written before: only the values
                return [SHAPED, model, *self._values(v, list(v.values()))]
        if plain.issuperset(map(type, v)) and plain.issuperset(map(type, v.values())):
            # packed as a msgpack map when its keys are str (see unpack), else as keys then values
            out: Any = v if plain is SCALARS and STR_ONLY.issuperset(map(type, v)) else [DICT, *v, *v.values()]
        else:
            out = [DICT]
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

    def _hashed(self, owner: object, keys: Any) -> None:
        """Refuse set elements or dict keys that restore could not hash without running a class's own
        ``__hash__``/``__eq__`` (or that nest too deeply to hash): the decoder checks the same."""
        check = self._hash_check
        if check is None:
            check = self._hash_check = bounds.HashCheck(settings.current.max_depth)
        for key in keys:
            if type(key) in SCALARS:
                continue
            try:
                check.cost(key)
            except bounds.Unsafe as unsafe:
                fail = _Fail(unsafe.value, f"is not supported as a set element or dict key: {unsafe.reason}"
                             + ("; restore never runs methods of your classes on snapshot data (define "
                                "__setstate__ on the class to opt in, or register a codec)" if unsafe.runs_code
                                else ""))
                if unsafe.value is not key:
                    fail.chain.append((key, None))
                fail.chain.append((owner, None))
                raise fail from None

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
            return [REF, slot]
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
        if self._plain is SCALARS:
            return [RANGE_IT, start, stop, step]
        return [RANGE_IT, self._int(start), self._int(stop), self._int(step)]

    def _seq_it(self, it: Any, tag: int, exhausted_index: int) -> Any:
        """Iterators reducing to ``(callable, (seq,), index)``, or ``(callable, (empty,))`` once exhausted."""
        slot = self._memo.get(id(it))
        if slot is not None:
            return [REF, slot]
        reduced = it.__reduce__()
        self._keep.append(reduced)
        index = reduced[2] if len(reduced) > 2 else exhausted_index
        return self._seal(it, [tag, self._part(it, "<iterated sequence>", reduced[1][0]), index])

    def _list_it(self, it: Any) -> Any:
        return self._seq_it(it, LIST_IT, 0)

    def _list_revit(self, it: Any) -> Any:
        # exhausted: reduces to iter([]) (3.10-3.12) or reversed([]) without index (3.13)
        return self._seq_it(it, LIST_REVIT, -1)

    def _tuple_it(self, it: Any) -> Any:
        return self._seq_it(it, TUPLE_IT, 0)

    def _reversed(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [REF, slot]
        reduced = it.__reduce__()
        seq = reduced[1][0]
        if type(seq) not in (tuple, str, bytes):
            fail = _Fail(seq)
            fail.chain.append((it, "<iterated sequence>"))
            raise fail
        index = reduced[2] if len(reduced) > 2 else -1
        return self._seal(it, [REVERSED, self._part(it, "<iterated sequence>", seq), index])

    def _str_it(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [REF, slot]
        reduced = it.__reduce__()
        if len(reduced) > 2:
            text, index = reduced[1][0], reduced[2]
        elif type(it) is STR_ITERATOR:
            text, index = "\x80", 1  # exhausted, and kept a str_iterator rather than a str_ascii_iterator
        else:
            text, index = "", 0
        # The whole text travels (not only the rest): iter() picks the iterator type from it.
        out = [STR_IT, self._str(text), index]
        self._register(it)
        return out

    def _bytes_it(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [REF, slot]
        reduced = it.__reduce__()
        rest = bytes(reduced[1][0][reduced[2] :]) if len(reduced) > 2 else b""
        out = [BYTES_IT, rest]
        self._register(it)
        return out

    def _items_it(self, it: Any) -> Any:
        # dict key/value/item iterators (and their reversed variants) and set iterators reduce to
        # (iter, ([remaining items],)): they come back as a list_iterator over those items.
        slot = self._memo.get(id(it))
        if slot is not None:
            return [REF, slot]
        try:
            remaining = it.__reduce__()[1][0]
        except RuntimeError as exc:  # its dict or set changed size: it raises this at every next()
            self._register(it)
            return [CUSTOM, STALE_ITERATOR, str(exc)]
        self._keep.append(remaining)
        return self._seal(it, [LIST_IT, self._part(it, "<remaining items>", remaining), 0])

    def _enumerate(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [REF, slot]
        inner, count = it.__reduce__()[1]
        out = [ENUMERATE, self._part(it, "<enumerated iterator>", inner), self._int(count)]
        return self._seal(it, out)

    def _zip(self, it: Any) -> Any:
        slot = self._memo.get(id(it))
        if slot is not None:
            return [REF, slot]
        reduced = it.__reduce__()  # (zip, iterators) or (zip, iterators, strict) on 3.10+
        strict = bool(reduced[2]) if len(reduced) > 2 else False
        out: list[Any] = [ZIP, strict]
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
            return [REF, slot]
        layouts = self._layouts.get(type(x))
        if layouts is not None:  # a plain instance whose class was seen in this snapshot already
            attrs = x.__dict__
            layout_slot = layouts.get(tuple(attrs))
            if layout_slot is not None:
                memo[id(x)] = len(memo)
                return [OBJECT, [REF, layout_slot], *self._values(x, list(attrs.values()))]
        if isinstance(x, BaseException):
            out = self._exception(x)
            if out is not None:
                return out
        try:
            handled = self._hooks.custom(x)
        except Unsupported as exc:  # a kind that knows why it cannot carry x
            raise _Fail(x, exc.reason) from None
        if handled is None:
            where = self._hooks.find_global(x)  # last resort: an object some allowed module holds by name
            if where is None:
                raise _Fail(x)
            self._globals[id(x)] = where
            return self._global(x)
        name, head, body = handled
        self._keep.append(handled)
        self._register(x)  # before its parts: the body may refer back to x
        if name is INSTANCE:  # the common case gets a compact node: [OBJECT, layout, *values]
            out = [OBJECT, self._component(x, head)]
            if self._hooks.plain_instances(type(x)):
                self._layouts.setdefault(type(x), {})[tuple(x.__dict__)] = self._memo[id(head)]
            out += self._values(x, body)
            return out
        if body is NO_BODY:
            self._open.add(id(x))
            out = [CUSTOM, name, self._component(x, head)]
            self._open.discard(id(x))
            return out
        if name in FORWARD:
            return [CUSTOM, name, self._component(x, head), self._forward_body(x, body)]
        return [CUSTOM, name, self._component(x, head), self._component(x, body)]

    def reserve(self, obj: object) -> None:
        """Give ``obj`` (a generator whose frame the snapshot holds) the next memo slot before its parts
        are encoded: until ``release``, a reference to it may only be the direct content of a cell."""
        self._register(obj)
        self._keep.append(obj)
        self._open.add(id(obj))

    def release(self, obj: object) -> None:
        self._open.discard(id(obj))

    def _forward_body(self, x: object, body: list[Any]) -> Any:
        """The body of a kind in ``kinds.FORWARD``: its items may refer to an object still being built
        (written as a ref; the decoder fills them once the object exists)."""
        self._register(body)
        self._keep.append(body)
        open_ = self._open
        out: list[Any] = [LIST]
        for item in body:
            slot = self._memo.get(id(item)) if id(item) in open_ else None
            out.append([REF, slot] if slot is not None else self._component(x, item))
        return out

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
        builtin = BUILTIN_EXC.get(tp.__name__) is tp
        spec = tp.__name__ if builtin else self._hooks.class_ref(tp)
        if spec is None:
            return None
        finalizer = None if builtin else bounds.finalizer(tp)
        if finalizer is not None:
            raise _Fail(e, f"is not supported: its class defines {finalizer}, which would run for the original "
                           "and again for the restored copy")
        part = self._part
        if EXCEPTION_GROUP is not None and isinstance(e, EXCEPTION_GROUP):
            group: Any = e
            ctor = [
                GROUP if builtin else GROUP_CLS,
                spec,
                part(e, ".message", group.message),
                part(e, ".exceptions", group.exceptions),
            ]
            slot = self._memo.get(id(e))
            if slot is not None:  # a cycle through the nested exceptions already wrote e
                return [AGAIN, slot, *ctor[2:]]
            out = ctor
        else:
            out = [EXC if builtin else EXC_CLS, spec]
        self._register(e)
        out.append(part(e, ".args", e.args))
        out.append(part(e, ".__context__", e.__context__))
        out.append(part(e, ".__cause__", e.__cause__))
        members: list[Any] = []
        for name in exc_members(tp):
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
            if type(name) is not str or not (name.isascii() or is_utf8(name)):
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
    RANGE_ITERATOR: Encoder._range_it,
    LONGRANGE_ITERATOR: Encoder._range_it,
    LIST_ITERATOR: Encoder._list_it,
    LIST_REVERSEITERATOR: Encoder._list_revit,
    TUPLE_ITERATOR: Encoder._tuple_it,
    BYTES_ITERATOR: Encoder._bytes_it,
    enumerate: Encoder._enumerate,
    zip: Encoder._zip,
    reversed: Encoder._reversed,
    **{tp: _identity for tp in PLAIN},
    **{tp: Encoder._str_it for tp in STR_ITERATORS},
    **{tp: Encoder._items_it for tp in ITEMS_ITERATORS},
}

