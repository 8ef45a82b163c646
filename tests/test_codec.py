"""Tests of the value codec (runtime.values: encoder and decoder): exact round trips, sharing and cycles,
iterators, exceptions, error paths, corrupt input."""

from __future__ import annotations

import builtins
import contextlib
import copy
import math
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.values import Decoder, Encoder
from runtime.values import NO_BODY
from runtime.errors import CorruptSnapshotError, IncompatibleCodeError, SnapshotError, UnserializableValueError

# ---------------------------------------------------------------------------------------------
# fake hooks


class Box:
    """Stands for a durable generator: carried through the custom hook, payload = its ``value``."""

    def __init__(self, value: object = None) -> None:
        self.value = value


class AppError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"failed with code {code}")
        self.code = code


class SlotError(KeyError):
    __slots__ = ("extra",)


class AppOSError(OSError):
    pass


class Unknown(Exception):
    pass


class Plain:
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


ALLOWED: dict[type, str] = {AppError: "tests:AppError", SlotError: "tests:SlotError", AppOSError: "tests:AppOSError"}
if sys.version_info >= (3, 11):

    class AppGroup(ExceptionGroup):  # noqa: F821
        pass

    ALLOWED[AppGroup] = "tests:AppGroup"


class EncHooks:
    def __init__(self) -> None:
        self.custom_calls = 0

    def class_ref(self, cls: type) -> str | None:
        return ALLOWED.get(cls)

    def custom(self, obj: object) -> tuple[str, object, object] | None:
        self.custom_calls += 1
        if type(obj) is Box:
            return "box", obj.value, NO_BODY
        return None

    def find_global(self, obj: object) -> None:
        return None

    def finished(self) -> None:
        pass


class DecHooks:
    def resolve_class(self, ref: str) -> type:
        if ref == "tests:Gone":
            raise IncompatibleCodeError("class tests:Gone is gone")
        if ref == "tests:NotAnException":
            return Plain
        for cls, name in ALLOWED.items():
            if name == ref:
                return cls
        raise CorruptSnapshotError(f"unknown class {ref!r}")

    def create(self, name: str, head: object) -> object:
        if name != "box":
            raise CorruptSnapshotError(f"unknown custom value name {name!r}")
        return Box(head)

    def fill(self, name: str, obj: object, head: object, body: object) -> None:
        raise CorruptSnapshotError("boxes have no body")

    def finished(self) -> None:
        pass


def pack_all(*values: object) -> list[Any]:
    """Encode values with one encoder, then go through msgpack like runtime/snapshot does."""
    enc = Encoder(EncHooks())
    packed = [enc.encode(v, f"local {i}") for i, v in enumerate(values)]
    data = msgpack.packb(packed, use_bin_type=True)
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)  # type: ignore[no-any-return]


def roundtrip(*values: object) -> list[Any]:
    dec = Decoder(DecHooks())
    return [dec.decode(p) for p in pack_all(*values)]


def rt1(value: object) -> Any:
    return roundtrip(value)[0]


def canon(x: Any) -> Any:
    """A comparable form naming the exact type at every level (nan equals nan, -0.0 differs from 0.0)."""
    tp = type(x)
    if tp is float:
        return ("float", repr(x))
    if tp in (list, tuple):
        return (tp.__name__, [canon(y) for y in x])
    if tp is dict:
        return ("dict", [(canon(k), canon(v)) for k, v in x.items()])  # keys in insertion order
    if tp in (set, frozenset):
        return (tp.__name__, sorted((canon(y) for y in x), key=repr))
    return (tp.__name__, x)


def assert_same(a: Any, b: Any) -> None:
    assert canon(a) == canon(b)


# ---------------------------------------------------------------------------------------------
# scalars and containers

SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    255,
    2**31,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    2**200 + 12345,
    -(2**200) - 7,
    0.0,
    -0.0,
    1.5,
    1e308,
    5e-324,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "abc",
    "é€😀",
    "\ud800",
    "a\udfffb\ud83d",
    b"",
    b"\x00\xff",
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalar_roundtrip(value: object) -> None:
    assert_same(rt1(value), value)
    assert_same(rt1([value]), [value])
    assert_same(rt1({"k": value}), {"k": value})


def test_plain_scalars_travel_unwrapped() -> None:
    enc = Encoder(EncHooks())
    for value in (None, True, 7, -(2**63), 2**64 - 1, 1.25, "text", "ünï", b"raw"):
        assert enc.encode(value, "x") is value
    assert enc.encode(2**64, "x") != 2**64
    assert enc.encode("\ud800", "x") != "\ud800"


def test_bool_is_not_int_and_negative_zero_kept() -> None:
    out = rt1([True, 1, False, 0, -0.0, 0.0])
    assert [type(x) for x in out] == [bool, int, bool, int, float, float]
    assert math.copysign(1.0, out[4]) == -1.0 and math.copysign(1.0, out[5]) == 1.0
    assert math.isnan(rt1(math.nan))


CONTAINERS: list[object] = [
    [],
    [1, "a", None, 2.5, b"x", [2, [3, []]]],
    (),
    (1,),
    (1, (2, (3,)), [4]),
    {},
    {"b": 1, "a": 2, 3: "c", None: 0.5, 2.5: [1], b"k": True, (1, (2,)): "t", frozenset({1}): "fs", True: "bool"},
    set(),
    {1, "two", (3, 4), None, b"5", frozenset({6})},
    frozenset(),
    frozenset({(1, 2), "x", frozenset({"y"})}),
    [(), [], {}, set(), frozenset(), ((),)],
    {"nested": {"deeper": [{"x": (1, [2, {3}])}]}},
    [2**100, -(2**100), "\udc80", {"\ud800": 2**70}],
]


@pytest.mark.parametrize("value", CONTAINERS, ids=repr)
def test_container_roundtrip(value: object) -> None:
    assert_same(rt1(value), value)


def test_dict_insertion_order_kept() -> None:
    d = {k: i for i, k in enumerate("zyxwvutsrq")}
    del d["w"]
    d["w"] = 99
    assert list(rt1(d).items()) == list(d.items())


@pytest.mark.parametrize("exact", [True, False])
def test_dicts_with_the_same_str_keys_share_their_keys(exact: bool) -> None:
    rows = [{"id": i, "name": f"n{i}", "tags": [i] if i % 2 else None} for i in range(5)]
    inner_first = {"a": 1, "b": {"a": 2, "b": 3}}   # the inner dict is written whole first
    looped = {"a": 1, "b": None}
    looped["b"] = looped
    same_keys_other_order = {"name": "x", "id": 9, "tags": None}
    bools = [{1: "a", 2: "b"}, {True: "a", 2: "b"}]  # not str keys: never shaped (1 == True)
    values = [rows, inner_first, looped, same_keys_other_order, bools, rows[1]]
    enc = Encoder(EncHooks(), exact=exact)
    packed = [enc.encode(v, f"local {i}") for i, v in enumerate(values)]
    assert sum(1 for row in packed[0][1:] if type(row) is list and row[0] == 24) == 4  # all but the first
    data = msgpack.packb(packed, use_bin_type=True)
    dec = Decoder(DecHooks())
    out = [dec.decode(p) for p in msgpack.unpackb(data, raw=False, strict_map_key=False)]
    assert [canon(out[i]) for i in (0, 1, 3, 4)] == [canon(values[i]) for i in (0, 1, 3, 4)]
    assert out[5] is out[0][1]
    assert out[2]["b"] is out[2]
    assert list(out[3]) == ["name", "id", "tags"]
    assert [type(k) for d in out[4] for k in d] == [int, int, bool, int]
    # the stand-in for the whole snapshot: the shaped rows are smaller than maps repeating the keys
    assert len(data) < len(msgpack.packb(values[0], use_bin_type=True)) + 120


def test_builtin_subclasses_are_not_supported() -> None:
    with pytest.raises(UnserializableValueError) as info:
        Encoder(EncHooks()).encode(MyList([1]), "local 'xs'")
    assert info.value.type_name == f"{MyList.__module__}.MyList"


# ---------------------------------------------------------------------------------------------
# sharing and cycles


def test_shared_references_within_one_value() -> None:
    a = [1]
    t = (2, 3)
    d = {"k": a}
    s = {1}
    fs = frozenset({4})
    out = rt1([a, a, t, t, d, d, s, s, fs, fs])
    for i in range(0, 10, 2):
        assert out[i] is out[i + 1]
    assert out[4]["k"] is out[0]


def test_shared_references_across_encode_calls() -> None:
    a = [1, 2]
    b = {"a": a}
    t = (a,)
    da, db, dt, da2 = roundtrip(a, b, t, a)
    assert db["a"] is da and dt[0] is da and da2 is da


def test_self_containing_list_and_dict() -> None:
    lst: list[Any] = [1]
    lst.append(lst)
    d: dict[str, Any] = {"x": 1}
    d["self"] = d
    d["list"] = lst
    out_l, out_d = roundtrip(lst, d)
    assert out_l[1] is out_l and out_l[0] == 1
    assert out_d["self"] is out_d and out_d["list"] is out_l


@pytest.mark.parametrize("first", ["list", "tuple"])
def test_tuple_inside_cycle(first: str) -> None:
    lst: list[Any] = []
    tup = (lst, "x")
    lst.append(tup)
    lst.append(tup)
    if first == "list":
        out_l, out_t = roundtrip(lst, tup)
    else:
        out_t, out_l = roundtrip(tup, lst)
    assert type(out_t) is tuple and out_t[0] is out_l and out_t[1] == "x"
    assert out_l[0] is out_t and out_l[1] is out_t


def test_nested_tuples_in_cycle() -> None:
    lst: list[Any] = []
    inner = (lst,)
    outer = (inner, inner, (inner,))
    lst.append(outer)
    out = rt1(outer)
    assert out[0] is out[1] is out[2][0]
    assert out[0][0][0] is out


def test_frozenset_and_set_with_tuple_referring_back() -> None:
    err = ValueError()
    fs = frozenset({(err, 1)})
    err.args = (fs,)
    out = rt1(fs)
    (member,) = out
    assert type(member) is tuple and type(member[0]) is ValueError
    assert member[0].args[0] is out

    err2 = KeyError()
    s = {(err2,), "x"}
    err2.args = (s,)
    out_s = rt1(s)
    (tup,) = [m for m in out_s if m != "x"]
    assert tup[0].args[0] is out_s


def test_custom_objects_keep_identity_and_share_payload_parts() -> None:
    shared = [1, 2]
    box = Box({"items": shared, "n": 3})
    out_shared, out_box, out_again = roundtrip(shared, box, [box, box])
    assert type(out_box) is Box and out_box.value["items"] is out_shared
    assert out_again[0] is out_box and out_again[1] is out_box


def test_one_phase_custom_object_referring_to_itself_is_refused() -> None:
    box = Box()
    box.value = [box]
    with pytest.raises(UnserializableValueError, match="cannot hold a cycle") as info:
        pack_all(box)
    assert info.value.path == ["local 0", ".value", "[0]"]
    # the same cycle crafted by hand is refused on decode
    with pytest.raises(CorruptSnapshotError, match="still being decoded"):
        Decoder(DecHooks()).decode([9, "box", [1, [0, 0]]])


def test_custom_object_referred_from_a_cycle_outside_its_payload() -> None:
    box = Box([1])
    lst: list[Any] = [box]
    lst.append(lst)
    out = rt1(lst)
    assert type(out[0]) is Box and out[0].value == [1] and out[1] is out


# ---------------------------------------------------------------------------------------------
# iterators

D = {"a": 1, "b": 2, "c": 3, "d": 4}
ITERATORS: dict[str, Callable[[], Iterator[Any]]] = {
    "range": lambda: iter(range(10)),
    "range-step": lambda: iter(range(10, -10, -3)),
    "range-empty": lambda: iter(range(0)),
    "range-reversed": lambda: reversed(range(7)),
    "longrange": lambda: iter(range(2**70, 2**70 + 9)),
    "longrange-step": lambda: iter(range(-(2**70), 2**70, 2**68)),
    "list": lambda: iter([1, "two", 3.0, [4], 5]),
    "list-reversed": lambda: reversed([1, 2, 3, 4, 5]),
    "tuple": lambda: iter((1, 2, 3, 4)),
    "str-ascii": lambda: iter("abcdef"),
    "str-unicode": lambda: iter("aé€😀b"),
    "str-surrogate": lambda: iter("a\ud800bc"),
    "bytes": lambda: iter(b"\x00abc\xff"),
    "dict-keys": lambda: iter(D),
    "dict-values": lambda: iter(D.values()),
    "dict-items": lambda: iter(D.items()),
    "dict-keys-reversed": lambda: reversed(D),
    "dict-values-reversed": lambda: reversed(D.values()),
    "dict-items-reversed": lambda: reversed(D.items()),
    "set": lambda: iter({1, 2, 3, 4}),
    "enumerate": lambda: enumerate(["a", "b", "c", "d"], 5),
    "enumerate-range": lambda: enumerate(iter(range(6))),
    "enumerate-big-start": lambda: enumerate("abc", 2**80),
    "zip": lambda: zip([1, 2, 3], "abcd", iter(range(10)), strict=False),
    "zip-strict": lambda: zip([1, 2, 3], (4, 5, 6), strict=True),
    "reversed-tuple": lambda: reversed((1, 2, 3, 4)),
    "reversed-str": lambda: reversed("abcé"),
    "reversed-bytes": lambda: reversed(b"xyz"),
}
# Dict and set iterators come back as list iterators over their remaining items (documented).
BECOMES_LIST_ITERATOR = {name for name in ITERATORS if name.startswith(("dict-", "set"))}


def _advance(it: Iterator[Any], steps: int) -> None:
    for _ in range(steps):
        next(it, None)


@pytest.mark.parametrize("steps", [0, 1, 3, 100])
@pytest.mark.parametrize("name", list(ITERATORS))
def test_iterator_roundtrip(name: str, steps: int) -> None:
    make = ITERATORS[name]
    original, twin = make(), make()
    _advance(original, steps)
    _advance(twin, steps)
    restored = rt1(original)
    if name in BECOMES_LIST_ITERATOR:
        assert type(restored) is type(iter([]))
    else:
        assert type(restored) is type(original)
    assert_same(list(restored), list(twin))
    assert list(restored) == []  # exhausted now, and stays so


def test_iterator_exhausted_by_stop_iteration_stays_exhausted() -> None:
    for name, make in ITERATORS.items():
        it = make()
        for _ in it:
            pass
        restored = rt1(it)
        assert list(restored) == [], name


def test_zip_strict_flag_is_kept() -> None:
    strict = zip([1, 2, 3], [1, 2], strict=True)
    loose = zip([1, 2, 3], [1, 2], strict=False)
    out_strict, out_loose = roundtrip(strict, loose)
    assert list(out_loose) == [(1, 1), (2, 2)]
    with pytest.raises(ValueError):
        list(out_strict)


def test_iterator_shares_its_list_with_a_local() -> None:
    lst = [1, 2, 3]
    it = iter(lst)
    rev = reversed(lst)
    next(it)
    next(rev)
    for order in ("list-first", "iterators-first"):
        if order == "list-first":
            out_l, out_it, out_rev = roundtrip(lst, it, rev)
        else:
            out_it, out_rev, out_l = roundtrip(it, rev, lst)
        out_l[0] = "first"
        out_l[1] = "second"
        out_l.append(4)
        # the iterators walk the decoded list object itself
        assert list(out_it) == ["second", 3, 4], order
        assert list(out_rev) == ["second", "first"], order


def test_iterator_stored_inside_the_list_it_iterates() -> None:
    lst: list[Any] = [1, 2, 3]
    it = iter(lst)
    rev = reversed(lst)
    next(it)
    next(rev)
    lst.append(it)
    lst.append(rev)
    out_it, out_rev = roundtrip(it, rev)
    rest = list(out_it)
    assert rest[:2] == [2, 3] and rest[2] is out_it and rest[3] is out_rev
    assert list(out_rev) == [2, 1]


def test_tuple_iterator_inside_a_cycle_through_its_tuple() -> None:
    lst: list[Any] = []
    tup = (lst, "a", "b")
    it = iter(tup)
    next(it)
    lst.append(it)
    out_t = rt1(tup)
    out_it = out_t[0][0]
    assert type(out_it) is type(it)
    assert list(out_it) == ["a", "b"]


def test_same_iterator_referenced_twice_is_one_object() -> None:
    it = iter([1, 2, 3, 4])
    e = enumerate(it)
    next(e)
    z = zip(it, it, strict=False)
    out_it, out_e, out_z, pair = roundtrip(it, e, z, [it, it])
    assert pair[0] is out_it and pair[1] is out_it
    assert next(out_e) == (1, 2)  # advancing the enumerate advances the shared list iterator
    assert list(out_z) == [(3, 4)]
    assert list(out_it) == []


def test_dict_iterator_over_shared_dict_restores_remaining_items() -> None:
    d = {"x": 1, "y": 2, "z": 3}
    it = iter(d.items())
    next(it)
    out_d, out_it = roundtrip(d, it)
    assert out_d == d
    assert list(out_it) == [("y", 2), ("z", 3)]


def test_map_and_generator_are_not_supported() -> None:
    for value, type_name in ((map(str, [1]), "map"), ((x for x in [1]), "generator")):
        with pytest.raises(UnserializableValueError) as info:
            Encoder(EncHooks()).encode(value, "local 'g'")
        assert info.value.type_name == type_name


# ---------------------------------------------------------------------------------------------
# exceptions


def _raise_chain() -> KeyError:
    try:
        try:
            raise ValueError("inner", 1)
        except ValueError as inner:
            raise KeyError("outer") from inner
    except KeyError as outer:
        return outer


def test_exception_cause_context_suppress_notes_and_dict() -> None:
    exc = _raise_chain()
    exc.extra = [1, 2]  # type: ignore[attr-defined]
    if sys.version_info >= (3, 11):
        exc.add_note("first note")
    out = rt1(exc)
    assert type(out) is KeyError and out.args == ("outer",)
    assert type(out.__cause__) is ValueError and out.__cause__.args == ("inner", 1)
    assert out.__context__ is out.__cause__
    assert out.__suppress_context__ is True
    assert out.extra == [1, 2]
    assert out.__traceback__ is None  # tracebacks are not kept
    if sys.version_info >= (3, 11):
        assert out.__notes__ == ["first note"]


def test_exception_context_without_cause() -> None:
    try:
        try:
            raise OSError("disk")
        except OSError:
            raise RuntimeError("while handling")  # noqa: B904 - an implicit __context__ is the point
    except RuntimeError as exc:
        out = rt1(exc)
    assert type(out) is RuntimeError and out.__cause__ is None
    assert type(out.__context__) is OSError and out.__context__.args == ("disk",)
    assert out.__suppress_context__ is False


BUILTIN_EXCEPTIONS: list[Callable[[], BaseException]] = [
    lambda: KeyError("k"),
    lambda: ValueError(1, [2], {"three": 3}),
    lambda: StopIteration(42),
    lambda: StopIteration(),
    lambda: GeneratorExit(),
    lambda: SystemExit(3),
    lambda: KeyboardInterrupt(),
    lambda: OSError(2, "No such file or directory", "missing.txt"),
    lambda: OSError(13, "Permission denied", "a", None, "b"),
    lambda: OSError("just a message"),
    lambda: BlockingIOError(11, "would block", 5),
    lambda: UnicodeDecodeError("utf-8", b"\xff\xfe", 0, 1, "invalid start byte"),
    lambda: UnicodeEncodeError("ascii", "\u00e9", 0, 1, "ordinal not in range"),
    lambda: SyntaxError("bad syntax", ("f.py", 3, 4, "x = = 1\n", 3, 6)),
    lambda: ImportError("no module", name="mod", path="/p/mod.py"),
    lambda: NameError("name 'q' is not defined", name="q"),
    lambda: AttributeError("no attr"),
    lambda: ZeroDivisionError("division by zero"),
    lambda: StopAsyncIteration("v"),
]


@pytest.mark.parametrize("make", BUILTIN_EXCEPTIONS)
def test_builtin_exception_roundtrip(make: Callable[[], BaseException]) -> None:
    exc = make()
    out = rt1(exc)
    assert type(out) is type(exc)
    assert out.args == exc.args
    assert str(out) == str(exc)
    assert repr(out) == repr(exc)
    for attr in (
        "value",
        "code",
        "errno",
        "strerror",
        "filename",
        "filename2",
        "characters_written",
        "encoding",
        "object",
        "start",
        "end",
        "reason",
        "msg",
        "lineno",
        "offset",
        "text",
        "name",
        "path",
    ):
        if hasattr(exc, attr):
            assert getattr(out, attr) == getattr(exc, attr), attr


def test_os_error_subclass_and_errno() -> None:
    exc = OSError(2, "No such file or directory", "f.txt")
    assert type(exc) is FileNotFoundError
    out = rt1(exc)
    assert type(out) is FileNotFoundError and out.errno == 2 and out.filename == "f.txt"
    assert out.strerror == "No such file or directory"


def test_stop_iteration_value_changed_after_creation() -> None:
    exc = StopIteration(1)
    exc.value = [2]
    out = rt1(exc)
    assert out.args == (1,) and out.value == [2]


def test_attribute_error_obj_is_dropped() -> None:
    exc = AttributeError("no attr", name="attr", obj=socket)
    out = rt1(exc)
    assert out.name == "attr" and out.obj is None


def test_exception_referring_to_itself_and_shared_args() -> None:
    payload = [1, 2]
    exc = ValueError(payload)
    exc.me = exc  # type: ignore[attr-defined]
    e1, e2 = RuntimeError("a"), RuntimeError("b")
    e1.__context__ = e2
    e2.__context__ = e1
    out_exc, out_payload, out_e1 = roundtrip(exc, payload, e1)
    assert out_exc.me is out_exc and out_exc.args[0] is out_payload
    assert out_e1.__context__.__context__ is out_e1


def test_exception_of_allowed_class_via_hooks() -> None:
    exc = AppError(7)
    exc.__cause__ = KeyError("why")
    out = rt1(exc)
    assert type(out) is AppError and out.code == 7 and out.args == ("failed with code 7",)
    assert type(out.__cause__) is KeyError

    slot_exc = SlotError("k")
    slot_exc.extra = {"slot": True}
    out_slot = rt1(slot_exc)
    assert type(out_slot) is SlotError and out_slot.extra == {"slot": True} and out_slot.args == ("k",)

    os_exc = AppOSError(5, "I/O error", "dev")
    out_os = rt1(os_exc)
    assert type(out_os) is AppOSError and out_os.errno == 5 and out_os.filename == "dev"


def test_exception_of_unknown_class_is_not_supported() -> None:
    with pytest.raises(UnserializableValueError) as info:
        Encoder(EncHooks()).encode({"errors": [Unknown("x")]}, "local 'e'")
    expected = f"{Unknown.__module__}.Unknown"
    assert info.value.type_name == expected
    assert info.value.path == ["local 'e'", "['errors']", "[0]"]
    assert (
        str(info.value) == f"cannot snapshot local 'e' → ['errors'] → [0]: value of type '{expected}' is not supported"
    )


def test_exception_context_of_unknown_class_is_not_supported() -> None:
    exc = KeyError("k")
    exc.__context__ = Unknown()
    with pytest.raises(UnserializableValueError) as info:
        Encoder(EncHooks()).encode(exc, "local 'e'")
    assert info.value.path == ["local 'e'", ".__context__"]


def test_resolve_class_errors_pass_through() -> None:
    (packed,) = pack_all(AppError(1))
    packed[1] = "tests:Gone"
    with pytest.raises(IncompatibleCodeError):
        Decoder(DecHooks()).decode(packed)
    packed[1] = "tests:NotAnException"
    with pytest.raises(CorruptSnapshotError):
        Decoder(DecHooks()).decode(packed)


if sys.version_info >= (3, 11):

    def test_exception_groups() -> None:
        leaf = ValueError(1)
        group = ExceptionGroup("many", [leaf, KeyError(2), ExceptionGroup("inner", [TypeError(3)])])  # noqa: F821
        group.add_note("grouped")
        base = BaseExceptionGroup("base", [KeyboardInterrupt(), ValueError(4)])  # noqa: F821
        app = AppGroup("app", [RuntimeError(5)])
        out_group, out_base, out_app, out_leaf = roundtrip(group, base, app, leaf)
        assert type(out_group) is ExceptionGroup and out_group.message == "many"  # noqa: F821
        assert [type(e) for e in out_group.exceptions] == [ValueError, KeyError, ExceptionGroup]  # noqa: F821
        assert out_group.exceptions[0] is out_leaf
        assert out_group.exceptions[2].exceptions[0].args == (3,)
        assert out_group.args[0] == "many" and type(out_group.args[1]) is list
        assert out_group.args[1][0] is out_leaf and out_group.__notes__ == ["grouped"]
        assert type(out_base) is BaseExceptionGroup and type(out_base.exceptions[0]) is KeyboardInterrupt  # noqa: F821
        assert type(out_app) is AppGroup and out_app.exceptions[0].args == (5,)

    def test_exception_group_in_a_cycle_through_its_members() -> None:
        leaf = ValueError("leaf")
        group = ExceptionGroup("g", [leaf])  # noqa: F821
        leaf.__context__ = group
        for values in ((group,), (leaf,)):
            out = rt1(values[0])
            out_group = out if type(out) is ExceptionGroup else out.__context__  # noqa: F821
            assert type(out_group) is ExceptionGroup  # noqa: F821
            assert out_group.exceptions[0].__context__ is out_group


# ---------------------------------------------------------------------------------------------
# unsupported values and their paths


def test_path_and_type_of_unsupported_value() -> None:
    sock = socket.socket()
    try:
        with pytest.raises(UnserializableValueError) as info:
            Encoder(EncHooks()).encode([0, 1, {"key": sock}], "local 'x'")
    finally:
        sock.close()
    err = info.value
    assert str(err) == "cannot snapshot local 'x' → [2] → ['key']: value of type 'socket.socket' is not supported"
    assert err.path == ["local 'x'", "[2]", "['key']"]
    assert err.type_name == "socket.socket"


def _fn() -> None:
    pass


@pytest.mark.parametrize(
    ("value", "steps", "type_name"),
    [
        (_fn, [], "function"),
        (lambda: 0, [], "function"),
        (sys, [], "module"),
        (int, [], "type"),
        (Plain(), [], f"{Plain.__module__}.Plain"),
        (bytearray(b"x"), [], "bytearray"),
        (Ellipsis, [], "ellipsis"),
        ((1, (2, _fn)), ["[1]", "[1]"], "function"),
        ({_fn}, ["<element>"], "function"),
        (frozenset({1, Plain}), ["<element>"], "type"),
        ({"ok": 1, Plain: 2}, ["<key #1>"], "type"),
        ([iter([1, _fn])], ["[0]", "<iterated sequence>", "[1]"], "function"),
        (enumerate([_fn]), ["<enumerated iterator>", "<iterated sequence>", "[0]"], "function"),
        (zip([1], [_fn], strict=False), ["<zipped iterator #1>", "<iterated sequence>", "[0]"], "function"),
        (iter({"k": _fn}.values()), ["<remaining items>", "[0]"], "function"),
        (ValueError(1, _fn), [".args", "[1]"], "function"),
        (Box([[_fn]]), [".value", "[0]", "[0]"], "function"),
        (MyList(), [], f"{MyList.__module__}.MyList"),
        ([1, 2, [3, (4, {5: (6, [7, [sys]])})]], ["[2]", "[1]", "[1]", "[5]", "[1]", "[1]", "[0]"], "module"),
    ],
    ids=repr,
)
def test_unsupported_values(value: object, steps: list[str], type_name: str) -> None:
    with pytest.raises(UnserializableValueError) as info:
        Encoder(EncHooks()).encode(value, "local 'v'")
    err = info.value
    assert err.path == ["local 'v'", *steps]
    assert err.type_name == type_name
    assert str(err) == f"cannot snapshot {' → '.join(err.path)}: value of type '{type_name}' is not supported"


def test_too_deep_value_is_reported_as_unserializable() -> None:
    deep: list[Any] = []
    for _ in range(sys.getrecursionlimit() * 3):
        deep = [deep]
    with pytest.raises(UnserializableValueError, match="nested too deeply"):
        Encoder(EncHooks()).encode(deep, "local 'deep'")


# ---------------------------------------------------------------------------------------------
# corrupt input


CORRUPT: list[object] = [
    [],
    [99],
    [-1],
    [True, 1],
    [1.0, 1],
    ["list"],
    [None],
    {"a": [1]},  # a map holds scalars only
    {"a": msgpack.ExtType(1, b"x")},
    {msgpack.ExtType(1, b"x"): 1},
    msgpack.ExtType(1, b"x"),
    [0],
    [0, 0],
    [0, 5],
    [0, -1],
    [0, "0"],
    [0, 0, 0],
    [1, {"a": [0, 0]}],
    [1, [0, 3]],
    [3, 1],
    [3, [1], 1],
    [4, [1]],
    [5, [1, 2]],
    [6, "x"],
    [6],
    [7, b"\xff"],
    [7, "x"],
    [8],
    [8, 0],
    [8, 3, 1, 2],
    [9, 1, 2],
    [9, "box"],
    [9, "nope", 1],
    [9, "box", [1, [0, 0]]],
    [10, "NotAnException", [2], None, None, [], []],
    [10, "print", [2], None, None, [], []],
    [10, "int", [2], None, None, [], []],
    [10, "KeyError", [1], None, None, [], []],
    [10, "KeyError", [2], 5, None, [], []],
    [10, "KeyError", [2], None, [1], [], []],
    [10, "KeyError", [2], None, None, ["bogus", 1], []],
    [10, "KeyError", [2], None, None, ["__suppress_context__", 3], []],
    [10, "KeyError", [2], None, None, [], [1, 2]],
    [10, "KeyError", [2], None, None, [], ["a"]],
    [10, "KeyError", [2], None, None, {}, []],
    [10, "KeyError", [2], None, None, []],
    [10, "ExceptionGroup", [2], None, None, [], []],
    [11, "tests:Missing", [2], None, None, [], []],
    [11, 5, [2], None, None, [], []],
    [12, "ExceptionGroup", "m", [2], [2], None, None, [], []],
    [12, "ExceptionGroup", 1, [2, [10, "KeyError", [2], None, None, [], []]], [2], None, None, [], []],
    [12, "KeyError", "m", [2, [10, "KeyError", [2], None, None, [], []]], [2], None, None, [], []],
    [12, "ExceptionGroup", "m", [2, [10, "KeyboardInterrupt", [2], None, None, [], []]], [2], None, None, [], []],
    [14, 1, 2],
    [14, 1, 2, 0],
    [14, 1.0, 2, 1],
    [14, True, 2, 1],
    [14, [6, "x"], 2, 1],
    [15, [2], 0],
    [15, [1], -1],
    [15, [1], "0"],
    [15, [1]],
    [16, [1], -2],
    [17, [1], 0],
    [17, [2], -1],
    [18, 5],
    [18, b"x"],
    [19, "x"],
    [20, [1], "x"],
    [20, [10, "KeyError", [2], None, None, [], []], 0],
    [21, "x"],
    [21],
    [21, True, 5],
    [22, [1], 0],
    [22, [2], -5],
    [1, 1, 2, [1, [99]]],
    # one field too many
    [6, b"\x01", 1],
    [7, b"x", 1],
    [9, "box", 1, 2],
    [24],
    [24, 0, 1, 2],            # no model dict at slot 0
    [1, [3, "a", "b", 1, 2], [24, 0, 5, 6]],   # the model is the list, not the dict
    [1, [3, "a", "b", 1, 2], [24, 2, 5]],      # too few values
    [10, "KeyError", [2], None, None, [], [], 1],
    [14, 1, 2, 1, 1],
    [15, [1], 0, 0],
    [16, [1], 0, 0],
    [17, [2], 0, 1],
    [18, "x", 0, 0],
    [19, b"x", 0],
    [20, [15, [1], 0], 0, 0],
    [22, [2], 0, 0],
]


@pytest.mark.parametrize("packed", CORRUPT, ids=repr)
def test_corrupt_values(packed: object) -> None:
    with pytest.raises(CorruptSnapshotError):
        Decoder(DecHooks()).decode(copy.deepcopy(packed))


def test_corrupt_value_after_valid_ones_in_same_decoder() -> None:
    packed = pack_all([1, 2], "x")
    dec = Decoder(DecHooks())
    assert dec.decode(packed[0]) == [1, 2]
    assert dec.decode(packed[1]) == "x"
    assert dec.decode([0, 0]) == [1, 2]
    with pytest.raises(CorruptSnapshotError):
        dec.decode([0, 1])


def test_deeply_nested_input_is_corrupt_not_recursion_error() -> None:
    packed: list[Any] = [1]
    for _ in range(sys.getrecursionlimit() * 3):
        packed = [1, packed]
    with pytest.raises(CorruptSnapshotError):
        Decoder(DecHooks()).decode(packed)


def _sample_values() -> list[object]:
    lst: list[Any] = [1, "a"]
    lst.append(lst)
    tup = (lst, 2**70)
    it = iter(lst)
    next(it)
    exc = _raise_chain()
    values: list[object] = [
        lst,
        tup,
        {"k": [1, 2, {3}], (1, 2): frozenset({"x"}), "s": "\ud800"},
        it,
        enumerate(zip("ab", iter(range(2**70, 2**70 + 3)), strict=True)),
        reversed((1, 2, 3)),
        iter(b"abc"),
        iter("xyz"),
        exc,
        AppError(3),
        Box([tup, 1]),
    ]
    if sys.version_info >= (3, 11):
        values.append(ExceptionGroup("g", [ValueError(1)]))  # noqa: F821
    return values


REPLACEMENTS: list[object] = [0, -1, 1, 7, 99, 2**40, None, True, 1.5, "x", b"x", [], [0], [0, 99], [2], {}]


def _mutations(packed: Any) -> Iterator[Any]:
    """Every structure obtained by deleting, replacing or truncating one array item, at any depth."""
    if type(packed) is not list:
        return
    for i in range(len(packed)):
        yield packed[:i] + packed[i + 1 :]
        yield packed[:i]
        for rep in REPLACEMENTS:
            yield [*packed[:i], copy.deepcopy(rep), *packed[i + 1 :]]
        for sub in _mutations(packed[i]):
            yield [*packed[:i], sub, *packed[i + 1 :]]


def _decode_all(packed: list[Any]) -> None:
    dec = Decoder(DecHooks())
    for p in packed:
        dec.decode(p)


def test_mutated_real_snapshots_raise_only_corrupt_snapshot_error() -> None:
    packed_all = pack_all(*_sample_values())
    _decode_all(copy.deepcopy(packed_all))  # the unmutated values decode
    count = corrupt = 0
    for index, packed in enumerate(packed_all):
        for mutated in _mutations(packed):
            candidate = copy.deepcopy(packed_all)
            candidate[index] = mutated
            count += 1
            try:
                _decode_all(candidate)
            except CorruptSnapshotError:
                corrupt += 1
            except SnapshotError as exc:  # what the fake hooks raise for names they do not know
                assert isinstance(exc, CorruptSnapshotError), exc
    assert count > 1000 and corrupt > count // 3


_msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
_msgpack_values = st.recursive(
    _msgpack_scalars | st.integers(0, 25),
    lambda children: (
        st.lists(children, max_size=6)
        | st.tuples(st.integers(0, 25), st.lists(children, max_size=6)).map(lambda t: [t[0], *t[1]])
        | st.dictionaries(st.text(max_size=3) | st.integers(-5, 5), children, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_msgpack_values, min_size=1, max_size=3))
def test_random_msgpack_objects_raise_only_corrupt_snapshot_error(values: list[Any]) -> None:
    dec = Decoder(DecHooks())
    for value in values:
        with contextlib.suppress(CorruptSnapshotError):
            dec.decode(value)


_hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.binary(max_size=5),
    lambda children: st.tuples(children, children) | st.frozensets(children, max_size=3),
    max_leaves=8,
)
_supported = st.recursive(
    _hashable,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(_hashable, children, max_size=4)
        | st.sets(_hashable, max_size=4)
        | st.frozensets(_hashable, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_supported)
def test_random_supported_values_roundtrip_exactly(value: object) -> None:
    assert_same(rt1(value), value)


# ---------------------------------------------------------------------------------------------
# compactness


def test_small_frame_packs_compactly() -> None:
    it = iter(range(1000))
    _advance(it, 17)
    frame = [1000, 12345, 17, [1, 2, 3, 4, 5, 6, 7, 8], {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, it]
    enc = Encoder(EncHooks())
    data = msgpack.packb([enc.encode(v, "local") for v in frame], use_bin_type=True)
    assert len(data) <= 50
    out = [Decoder(DecHooks()).decode(p) for p in msgpack.unpackb(data, raw=False, strict_map_key=False)]
    assert out[:5] == frame[:5] and list(out[5]) == list(range(17, 1000))


def test_builtins_table_only_holds_exception_classes() -> None:
    # decode never instantiates a builtin that is not an exception class
    for name in ("print", "eval", "exec", "open", "object", "type", "int", "__import__"):
        packed = [10, name, [2], None, None, [], []]
        with pytest.raises(CorruptSnapshotError):
            Decoder(DecHooks()).decode(packed)
        assert callable(getattr(builtins, name))
