"""Classes defined inside durable functions travel by value (issue 11, item 6): the class, its
instances and their bound methods, with methods, ``super()``, ``__slots__``, static and class methods
and properties. Restore makes the class again with ``type()`` and runs none of its code; what it cannot
make without running code is refused when the snapshot is taken, and crafted snapshots that ask for it
are refused when restored.
"""
from __future__ import annotations

import textwrap
from typing import Any

import pytest

import runtime
from crafting import pack, template
from harness import differential, load_compiled, nexts, send, unload

CUSTOM = 9  # the wire tag of a custom value: [9, kind, head, body]


def test_a_local_class_its_instances_and_methods_travel():
    differential("""
    def gen():
        class Point:
            \"\"\"A point.\"\"\"
            scale = 2

            def __init__(self, x):
                self.x = x

            def norm(self):
                return abs(self.x) * self.scale

            @staticmethod
            def origin():
                return 0

            @classmethod
            def make(cls, x):
                return cls(x)

            @property
            def double(self):
                return self.x * 2

            def __repr__(self):
                return f"Point({self.x})"

        class Point3(Point):
            __slots__ = ("z", "__private")

            def __init__(self, x, z):
                super().__init__(x)
                self.z = z
                self.__private = -z

            def norm(self):
                return super().norm() + self.z + self.__private

        p = Point.make(-3)
        q = Point3(1, 5)
        bound = q.norm
        yield p.norm(), q.norm()
        yield repr(p), p.double, Point.origin(), type(q).__mro__[1] is Point, bound(), isinstance(q, Point)
        Point.scale = 10                  # the class is state of the frame: the change travels
        yield Point.__doc__, Point.__qualname__, q.z, p.norm(), bound()
        yield type(p).__name__, [c.__name__ for c in Point3.__mro__], Point3.__slots__
    """, nexts(5))


def test_classes_held_in_values_and_made_in_a_loop_keep_their_identities():
    differential("""
    def gen():
        kinds = []
        for n in range(2):
            class Tagged:
                tag = n

                def __eq__(self, other):
                    return type(other) is type(self)

                __hash__ = None
            kinds.append(Tagged)
        items = {"a": kinds[0](), "b": kinds[1]()}
        got = yield [k.tag for k in kinds]
        yield type(items["a"]) is kinds[0], type(items["b"]) is kinds[1], kinds[0] is kinds[1]
        yield items["a"] == kinds[0](), items["a"] == items["b"], got
    """, [*nexts(2), send("x"), "next"])


def test_restore_reads_an_instance_without_its_classes_attribute_hooks():
    """A class's __getattribute__ and __setattr__ run when the program uses the object, never while
    restore fills it in."""
    mod = load_compiled("""
    LOG = []

    def gen():
        class Watched:
            def __init__(self):
                object.__setattr__(self, "v", 1)

            def __getattribute__(self, name):
                LOG.append("get " + name)
                return object.__getattribute__(self, name)

            def __setattr__(self, name, value):
                LOG.append("set " + name)
                object.__setattr__(self, name, value)

        w = Watched()
        yield 1
        w.v += 1
        yield w.v
    """, tag="watched")
    try:
        g = mod.gen()
        next(g)
        data = runtime.snapshot(g)
        runtime.detach(g)
        mod.LOG.clear()
        back = runtime.restore(data)
        assert mod.LOG == []
        assert next(back) == 2 and mod.LOG == ["get v", "set v", "get v"]
    finally:
        unload(mod)


HOLDERS = """
import abc
from runtime import durable

LOG = []


class Hooked:
    def __init_subclass__(cls, **kwargs):
        LOG.append(cls.__name__)


@durable
def with_metaclass():
    class Base(abc.ABC):
        pass
    yield 1
    yield Base


@durable
def with_hooked_base():
    class Child(Hooked):
        pass
    yield 1
    yield Child


@durable
def with_finalizer():
    class Closer:
        def __del__(self):
            LOG.append("del")
    yield 1
    yield Closer


@durable
def plain():
    class Box:
        def __init__(self, v):
            self.v = v
    box = Box(1)
    yield 1
    yield box.v
"""


@pytest.fixture(scope="module")
def holders():
    module = load_compiled(HOLDERS, all_generators=False, tag="localcls")
    yield module
    unload(module)


@pytest.mark.parametrize("function, reason", [
    ("with_metaclass", "has the metaclass ABCMeta; only classes made by `type` travel by value"),
    ("with_hooked_base", "its base Hooked defines __init_subclass__, which would run again"),
    ("with_finalizer", "defines __del__, which restore never sets on a class it makes"),
])
def test_classes_restore_could_not_make_without_running_code_are_refused_at_snapshot(holders, function, reason):
    gen = getattr(holders, function)()
    next(gen)
    with pytest.raises(runtime.UnserializableValueError, match=reason):
        runtime.snapshot(gen)
    gen.close()


def _local_class_node(envelope: Any) -> list[Any]:
    """The [CUSTOM, "local-class", head, body] node of the first frame's values."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            if len(node) == 4 and node[0] == CUSTOM and node[1] == "local-class":
                found.append(node)
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)

    walk(envelope[2][5])
    return found[0]


def add_attr(name: str, value: Any):
    """An edit of the class's namespace node ([DICT, *keys, *values]) that adds ``name``."""
    def edit(head: list[Any], body: list[Any], module: str) -> None:
        half = (len(body) - 1) // 2
        body[:] = [body[0], *body[1:1 + half], name, *body[1 + half:], value]
    return edit


def set_head(index: int, value: Any):
    """An edit of the class's head node ([LIST, name, qualname, module, bases, slots])."""
    def edit(head: list[Any], body: list[Any], module: str) -> None:
        head[1 + index] = value(module) if callable(value) else value
    return edit


@pytest.mark.parametrize("edit, message", [
    (add_attr("__bases__", [2]), "sets __bases__ on class"),
    (add_attr("__class__", None), "sets __class__ on class"),
    (add_attr("__init_subclass__", None), "sets __init_subclass__ on class"),
    (set_head(3, lambda module: [2, [CUSTOM, "ref", f"{module}:Hooked"]]), "whose base defines __init_subclass__"),
    (set_head(2, "os"), "module 'os', which is not allowed"),
    (set_head(3, [2, [CUSTOM, "builtin", "int"], [CUSTOM, "builtin", "str"]]), "cannot make class"),
])
def test_crafted_classes_are_refused_and_run_nothing(holders, edit, message):
    gen = holders.plain()
    next(gen)
    envelope = template(gen)
    _, _, head, body = _local_class_node(envelope)
    edit(head, body, holders.__name__)
    holders.LOG.clear()
    with pytest.raises(runtime.SnapshotError, match=message):
        runtime.restore(pack(envelope))
    assert holders.LOG == []


def test_a_restored_class_is_made_again_in_a_fresh_process(tmp_path):
    result = differential(textwrap.dedent("""
    def gen():
        class Counter:
            __slots__ = ("n",)

            def __init__(self):
                self.n = 0

            def bump(self):
                self.n += 1
                return self.n

        c = Counter()
        while True:
            yield c.bump(), type(c).__qualname__
    """), nexts(4), fresh_at=2)
    assert result.fresh_at == 2


def test_the_runtime_keeps_no_local_class_alive(holders):
    """Each call makes a new class: what the runtime remembers about one (its layout, how its instances
    travel) must not outlive it."""
    import gc

    def boxes() -> list[type]:
        gc.collect()
        return [cls for cls in gc.get_objects() if isinstance(cls, type) and cls.__name__ == "Box"
                and cls.__module__ == holders.__name__]

    before = len(boxes())
    g = holders.plain()
    next(g)
    back = runtime.restore(runtime.snapshot(g))
    runtime.detach(g)
    box = runtime.restore(runtime.snapshot(back))   # a restored class's instances travel again
    runtime.detach(back)
    assert len(boxes()) == before + 1   # the detached generators' classes are gone already
    assert next(box) == 1
    del g, back, box
    assert len(boxes()) == before
