"""User data in snapshots: instances of allowed classes, dataclasses, __getstate__/__setstate__,
registered codecs, bound methods, exceptions with attributes, and the allow-list that governs them.

Each test holds the values in live locals of a compiled durable generator, snapshots it at a
suspension, restores (after detaching the original), and compares what the restored generator
yields with an uninterrupted run of the same generator.
"""
from __future__ import annotations

import re
import textwrap

import pytest

from harness import load_compiled
import runtime
from runtime.errors import CorruptSnapshotError, NotAllowedError, UnserializableValueError

MODELS = """
import dataclasses
from runtime import durable


class Plain:
    def __init__(self, a, b):
        self.a = a
        self.b = b

    def total(self):
        return self.a + self.b

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class Slotted:
    __slots__ = ("x", "__hidden", "unset")

    def __init__(self, x):
        self.x = x
        self.__hidden = x * 2

    def hidden(self):
        return self.__hidden


class Mixed(Slotted):
    def __init__(self, x, y):
        super().__init__(x)
        self.y = y


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass(frozen=True)
class Frozen:
    name: str
    tags: tuple = ()


@dataclasses.dataclass(frozen=True, slots=True) if hasattr(dataclasses, "KW_ONLY") else dataclasses.dataclass(frozen=True)
class FrozenSlots:
    a: int
    b: list


@dataclasses.dataclass(kw_only=True) if hasattr(dataclasses, "KW_ONLY") else dataclasses.dataclass
class KwOnly:
    a: int = 1
    b: str = "x"


@dataclasses.dataclass
class Child(Point):
    z: int = 5


class Stateful:
    def __init__(self, path):
        self.path = path
        self.handle = object()   # not carried: __getstate__ leaves it out

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self.handle = "reopened " + state["path"]


class Node:
    def __init__(self, name):
        self.name = name
        self.children = []
        self.parent = None


class AppError(Exception):
    def __init__(self, code, detail):
        super().__init__(code)
        self.detail = detail


def describe(value):
    '''A comparable description: exact types and values, recursively.'''
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [describe(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(describe(k), describe(v)) for k, v in value.items()])
    if dataclasses.is_dataclass(value):
        return (type(value).__name__, describe([getattr(value, f.name) for f in dataclasses.fields(value)]))
    if isinstance(value, Slotted):
        return (type(value).__name__, value.x, value.hidden(), getattr(value, "y", None), hasattr(value, "unset"))
    if isinstance(value, BaseException):
        return (type(value).__name__, describe(list(value.args)), describe(vars(value)), getattr(value, "__notes__", None),
                describe(value.__cause__) if value.__cause__ else None)
    if isinstance(value, (Plain, Stateful)):
        return (type(value).__name__, describe(vars(value)))
    return (type(value).__name__, repr(value))
"""


def _roundtrip_future(source: str, factory: str, sends: int = 3) -> tuple[list[object], list[object]]:
    """What the generator yields after its first suspension: uninterrupted, and after a round trip."""
    mod = load_compiled(textwrap.dedent(MODELS) + textwrap.dedent(source), all_generators=False)
    reference = getattr(mod, factory)()
    original = getattr(mod, factory)()
    assert next(reference) == next(original)
    data = runtime.snapshot(original)
    runtime.detach(original)
    restored = runtime.restore(data)
    expected = [reference.send(i) for i in range(sends)]
    got = [restored.send(i) for i in range(sends)]
    return expected, got


def test_plain_slotted_and_dataclass_instances():
    expected, got = _roundtrip_future("""
    @durable
    def gen():
        values = [Plain(1, [2]), Slotted(3), Mixed(4, "y"), Point(1, 2), Frozen("f", (1, 2)),
                  FrozenSlots(1, [2]), KwOnly(a=3), Child(1, 2, 3)]
        yield "start"
        while True:
            sent = yield describe(values)
            values[0].a += sent
            values.append(Point(sent))
    """, "gen")
    assert got == expected


def test_shared_references_and_cycles_through_objects():
    expected, got = _roundtrip_future("""
    @durable
    def gen():
        root = Node("root")
        leaf = Node("leaf")
        leaf.parent = root
        root.children.append(leaf)
        same = [leaf, leaf]
        yield "start"
        while True:
            yield (root.children[0] is leaf, leaf.parent is root, same[0] is same[1] is leaf, leaf.name)
            leaf.name += "!"
    """, "gen")
    assert got == expected
    assert got[0] == (True, True, True, "leaf")


def test_getstate_setstate_classes_go_through_their_hooks():
    expected, got = _roundtrip_future("""
    @durable
    def gen():
        s = Stateful("/tmp/x")
        yield "start"
        while True:
            yield s.path, s.handle if isinstance(s.handle, str) else "live handle"
    """, "gen", sends=1)
    assert expected == [("/tmp/x", "live handle")]
    assert got == [("/tmp/x", "reopened /tmp/x")]  # __setstate__ ran on restore


def test_bound_methods_of_allowed_objects():
    expected, got = _roundtrip_future("""
    @durable
    def gen():
        p = Plain(2, 3)
        total = p.total
        s = Slotted(4)
        hidden = s.hidden
        yield "start"
        while True:
            yield total(), hidden(), total.__self__ is p
            p.a += 1
    """, "gen")
    assert got == expected and got[0] == (5, 8, True)


def test_exceptions_of_allowed_classes_keep_args_attributes_notes_and_cause():
    expected, got = _roundtrip_future("""
    @durable
    def gen():
        try:
            try:
                raise KeyError("k")
            except KeyError as inner:
                err = AppError(42, {"why": "bad"})
                if hasattr(err, "add_note"):
                    err.add_note("a note")
                raise err from inner
        except AppError as caught:
            saved = caught
        yield "start"
        while True:
            yield describe(saved), saved.__traceback__ is None
    """, "gen", sends=1)
    assert got[0][0] == expected[0][0]
    assert got[0][1] is True  # tracebacks are not carried


def test_registered_codec():
    mod = load_compiled(textwrap.dedent("""
    from runtime import durable

    class Money:
        def __init__(self, cents, currency):
            self.cents, self.currency = cents, currency

    @durable
    def gen():
        price = Money(1250, "EUR")
        both = [price, price]
        yield "start"
        yield price.cents, price.currency, both[0] is both[1] is price, type(price).__name__
    """), all_generators=False)
    calls = []

    def encode(m):
        calls.append("encode")
        return [m.cents, m.currency]

    def decode(v):
        calls.append("decode")
        return mod.Money(*v)

    runtime.register_codec(mod.Money, encode, decode, name=f"test:{mod.__name__}:Money")
    g = mod.gen()
    next(g)
    restored = runtime.restore(runtime.snapshot(g))
    runtime.detach(g)
    assert next(restored) == (1250, "EUR", True, "Money")
    assert calls == ["encode", "decode"]  # once each: the second reference is shared


UNALLOWED = """
import socket
from runtime import durable

@durable
def gen(obj):
    holder = {"session": obj}
    yield 1
    yield holder
"""


def test_instances_of_classes_outside_the_allow_list_are_unserializable_with_a_path_and_hint():
    mod = load_compiled(UNALLOWED, all_generators=False)
    from fractions import Fraction  # a class of a module that is neither compiled nor allowed

    class Session:  # defined in a test function: never allowed
        def __init__(self):
            self.sock = Fraction(1, 3)

    g = mod.gen(Session())
    next(g)
    with pytest.raises(UnserializableValueError) as info:
        runtime.snapshot(g)
    message = str(info.value)
    assert info.value.path == ["local 'holder'", "['session']"]
    assert "Session" in info.value.type_name
    assert "hint:" in message and "register_codec" in message and "serializable" in message
    assert re.search(r"suspended at line \d+", message)


def test_attribute_path_into_allowed_objects():
    mod = load_compiled(textwrap.dedent("""
    import threading
    from runtime import durable

    class Client:
        def __init__(self):
            self.session = Session()

    class Session:
        def __init__(self):
            self._sock = threading.Lock()

    @durable
    def gen():
        client = Client()
        yield 1
        yield client
    """), all_generators=False)
    g = mod.gen()
    next(g)
    with pytest.raises(UnserializableValueError) as info:
        runtime.snapshot(g)
    assert info.value.path == ["local 'client'", ".session", "._sock"]
    assert "local 'client' → .session → ._sock" in str(info.value)


def test_serializable_and_allow_modules_open_the_allow_list(tmp_path, monkeypatch):
    (tmp_path / "dg_models_allowed.py").write_text(textwrap.dedent("""
        class Kept:
            def __init__(self, v):
                self.v = v

        class Marked:
            def __init__(self, v):
                self.v = v
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import dg_models_allowed as models
    mod = load_compiled(UNALLOWED, all_generators=False)
    g = mod.gen(models.Kept(1))
    next(g)
    with pytest.raises(UnserializableValueError):
        runtime.snapshot(g)
    runtime.allow_modules("dg_models_allowed")
    try:
        data = runtime.snapshot(g)
        assert runtime.restore(data).send(None)["session"].v == 1
    finally:
        runtime.disallow_modules("dg_models_allowed")
    with pytest.raises(NotAllowedError, match="not allowed"):
        runtime.restore(data)
    runtime.serializable(models.Marked)
    g2 = mod.gen(models.Marked(2))
    next(g2)
    restored = runtime.restore(runtime.snapshot(g2))
    assert type(restored.send(None)["session"]) is models.Marked


def test_allow_modules_rejects_bad_prefixes():
    for bad in ("", ".x", "x.", 3):
        with pytest.raises(ValueError):
            runtime.allow_modules(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        runtime.serializable(3)  # type: ignore[arg-type]


def test_malformed_object_heads_are_corrupt():
    from runtime.values import objects
    for name, head in [("obj", "x"), ("obj", (1, 2)), ("obj", (int, (), ())), ("ref", 5), ("builtin", "eval"),
                       ("method", [1]), ("state", int), ("nope", None)]:
        with pytest.raises((CorruptSnapshotError, NotAllowedError)):
            objects.create(name, head)


def test_safe_builtins_travel_and_dangerous_ones_do_not():
    mod = load_compiled("""
    from runtime import durable

    @durable
    def gen(fn):
        f = fn
        yield 1
        yield f
    """, all_generators=False)
    g = mod.gen(len)
    next(g)
    assert runtime.restore(runtime.snapshot(g)).send(None) is len
    g = mod.gen(eval)
    next(g)
    with pytest.raises(UnserializableValueError, match="builtin_function_or_method"):
        runtime.snapshot(g)
