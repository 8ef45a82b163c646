"""Closures, lambdas and nested functions created in durable functions travel in snapshots, with
their cells shared with the generator (runtime/closures.py, the compiler's ``_dg_cells`` store and
cellular variants)."""
from __future__ import annotations

import msgpack
import pytest

from harness import NEXT, differential, load_compiled, nexts, run_python, send

import runtime
from runtime.errors import CorruptSnapshotError, IncompatibleCodeError


def test_lambda_capturing_a_local_across_a_yield():
    src = """
    def gen():
        base = 10
        f = lambda x: x + base
        y = yield f(1)
        base = 100
        yield f(y)
        base += 1
        yield f(0)
    """
    differential(src, [NEXT, send(5), NEXT, NEXT])


def test_nonlocal_counter_written_by_both_sides():
    src = """
    LOG = []
    def gen():
        count = 0
        def bump(by=1):
            nonlocal count
            count += by
            return count
        yield bump()
        LOG.append(count)          # the generator reads what the closure wrote
        count += 10                # the closure must see the generator's write
        yield bump(2)
        yield count, bump()
        count = -1
        yield bump(), count
    """
    differential(src, nexts(5))


def test_two_closures_share_one_cell():
    src = """
    def gen():
        total = 0
        def add(n):
            nonlocal total
            total += n
        def get():
            return total
        add(1)
        yield get()
        add(2)
        yield get(), total
        fns = [add, get]           # the same functions held in a container too
        yield fns[1]()
        fns[0](5)
        yield get(), total
    """
    differential(src, nexts(5))


def test_closure_over_a_parameter():
    src = """
    def gen(n, *rest, k=3, **kw):
        f = lambda: (n, rest, k, kw)
        yield f()
        n += 1
        k = "changed"
        yield f()
        def g():
            nonlocal n
            n *= 2
        g()
        yield n, f()
    """
    differential(src, nexts(4), entry="gen(1, 2, k=4, z=5)")


def test_defaults_and_kwdefaults():
    src = """
    def gen():
        seen = []
        def f(a, b=[1], *, c={"k": 2}):
            b.append(a)
            c[a] = len(b)
            seen.append(a)
            return list(b), dict(c)
        yield f(1)
        yield f(2)
        f.__defaults__[0].append("x")
        yield f(3), seen
    """
    differential(src, nexts(4))


def test_nested_function_with_its_own_attributes():
    src = """
    def gen():
        def f():
            f.calls += 1
            return f.calls
        f.calls = 0
        f.tag = "t"
        yield f()
        yield f(), f.tag
        yield f(), f.__name__, f.__qualname__
    """
    differential(src, nexts(4))


def test_recursive_nested_function_and_nested_depth():
    src = """
    def gen():
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)
        def maker(m):
            return lambda: m + fact(3)
        g = maker(4)
        yield fact(4)
        yield g()
        yield [h() for h in [g, lambda: fact(2)]]
    """
    differential(src, nexts(4))


def test_closure_inside_a_method_using_super():
    src = """
    class Base:
        def hello(self):
            return "base"

    class Child(Base):
        def __init__(self):
            self.__secret = 7

        def hello(self):
            return "child"

        def gen(self, n):
            count = n
            def up():
                nonlocal count
                count += 1
                return super().hello(), count, self.__secret
            yield up()
            yield up(), super().hello()
            yield count

    def gen():
        return Child().gen(1)
    """
    differential(src, nexts(4), entry="Child().gen(1)")


def test_free_variables_of_the_enclosing_function():
    src = """
    def make(start):
        total = start
        def gen():
            nonlocal total
            total += 1
            yield total
            total += 10
            yield total
        return gen
    """
    differential(src, nexts(3), entry="make(5)()")


def test_nested_durable_generator_shares_the_enclosing_cells():
    src = """
    def outer():
        x = 0
        def inner():
            nonlocal x
            while True:
                x += 1
                yield x
        g = inner()
        peek = lambda: x
        yield next(g), peek(), x
        x = 100
        yield next(g), peek(), x
        yield next(g), peek(), x
    """
    differential(src, nexts(4), entry="outer()")


def test_shared_cells_after_restore_are_one_cell():
    mod = load_compiled("""
    def gen():
        count = 0
        def bump():
            nonlocal count
            count += 1
            return count
        x = yield bump
        yield count
    """)
    g = mod.gen()
    bump = next(g)
    bump()
    data = runtime.snapshot(g)
    runtime.detach(g)
    g2 = runtime.restore(data)
    # the restored frame's own closure and the restored bump hold the same cell
    f_locals = g2.gi_frame.f_locals
    assert f_locals["count"] == 1
    cells = dict(zip(f_locals["_dg_cells"].__code__.co_freevars, f_locals["_dg_cells"].__closure__))
    data2 = runtime.snapshot(g2)
    again = runtime.restore(data2)
    assert again.send(None) == 1 and cells["count"].cell_contents == 1


def test_restore_in_a_fresh_process():
    mod = load_compiled("""
    def gen():
        count = 0
        def bump(by=1):
            nonlocal count
            count += by
            return count
        fs = {"b": bump, "peek": lambda: count}
        yield bump()
        count += 5
        yield fs["b"](2), fs["peek"]()
        yield count
    """)
    g = mod.gen()
    assert next(g) == 1
    data = runtime.snapshot(g)
    runtime.detach(g)
    proc = run_python(f"""
        import runtime
        runtime.allow_modules({mod.__name__!r})  # restore imports only allowed modules
        g = runtime.restore({data!r})
        print(next(g), next(g))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(8,", "8)", "8"]


def _tamper_paths(data: bytes, change) -> bytes:
    """Rewrite every nested-function path in a snapshot with ``change(path)``."""
    envelope = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)

    def walk(node):
        if isinstance(node, list):
            if len(node) >= 3 and node[0] == 9 and node[1] == "fn":
                node[2][3] = change(node[2][3])  # head: [LIST, ident, fingerprint, path, ...]
            for item in node:
                walk(item)
    walk(envelope)
    return msgpack.packb(envelope, use_bin_type=True)


def test_snapshot_naming_a_missing_nested_code_is_refused():
    mod = load_compiled("""
    def gen():
        k = 1
        f = lambda: k
        yield f()
        yield f()
    """)
    g = mod.gen()
    next(g)
    data = runtime.snapshot(g)
    assert runtime.restore(data) is not None
    with pytest.raises(IncompatibleCodeError):
        runtime.restore(_tamper_paths(data, lambda p: [1, [1, "nope", 0]]))  # tagged lists on the wire
    with pytest.raises(IncompatibleCodeError):
        runtime.restore(_tamper_paths(data, lambda p: [1, [1, p[1][1], 99]]))
    with pytest.raises((CorruptSnapshotError, IncompatibleCodeError)):
        runtime.restore(_tamper_paths(data, lambda p: "garbage"))


def test_functions_made_by_other_functions_of_a_compiled_module_travel():
    """Issue 11: a closure made by a plain function (or method) of a compiled module is carried by its
    place in that function's code, with its cells; its code is never taken from the snapshot."""
    src = """
    class Maker:
        def adder(self, n):
            return lambda x: x + n

    def helper():
        k = 1
        def inner(step):
            nonlocal k
            k += step
            return k
        return inner

    def gen():
        f = helper()
        add = Maker().adder(10)
        yield f(1)
        yield f(2), add(5)
        yield f(3)
    """
    differential(src, nexts(4))


def test_a_function_whose_owner_changed_shape_is_incompatible():
    mod = load_compiled("""
    def helper():
        k = 1
        return lambda: k

    def gen():
        f = helper()
        yield 1
        yield f()
    """)
    g = mod.gen()
    next(g)
    data = runtime.snapshot(g)
    runtime.detach(g)
    mod.helper = _replaced(mod.helper)
    with pytest.raises(runtime.errors.IncompatibleCodeError, match="changed since the snapshot"):
        runtime.restore(data)


def _replaced(original):
    """A module-level function of the same name whose nested lambda takes an argument now."""
    namespace: dict = {}
    exec("def helper():\n    k = 1\n    return lambda extra: k\n", namespace)
    fn = namespace["helper"]
    fn.__module__, fn.__qualname__ = original.__module__, original.__qualname__
    return fn


def test_no_cells_store_without_captured_variables():
    from transpiler import compile_source
    out = compile_source("from runtime import durable\n@durable\ndef gen(n):\n    for i in range(n):\n        yield i\n")
    assert "_dg_cells" not in out and "_dg_cellular" not in out


def test_comprehensions_and_lambdas_made_in_them():
    src = """
    def gen(n, xs):
        ys = [n + x for x in xs]
        yield ys
        n += 1
        fs = [lambda i=i: i + n for i in range(3)]
        gs = {k: (lambda: k * n) for k in "ab"}
        yield [f() for f in fs], gs["a"]()
        n += 1
        yield [f() for f in fs], [g() for g in gs.values()]
    """
    differential(src, nexts(4), entry="gen(1, [1, 2])")


def test_compiled_code_is_the_same_on_every_version():
    # 3.12+ inlines comprehensions; the captured variables must not depend on that
    from transpiler import compile_source
    out = compile_source("from runtime import durable\n@durable\ndef gen(n, xs):\n"
                         "    fs = [lambda: i for i in range(3)]\n    ys = [n + x for x in xs]\n"
                         "    yield fs, ys\n")
    assert "_dg_cells = lambda: (n,)" in out


# Annotated assignments to captured locals. The cellular variant declares the captured locals
# nonlocal, and an annotated name can't be nonlocal (SyntaxError): there it is a plain assignment.
# CPython evaluates no annotation of a function's local (UNDEFINED below is never looked up).

def test_annotated_assignment_of_a_captured_local():
    src = """
    def gen():
        seen: list = []
        def note(i):
            seen.append(i)
            return len(seen)
        note(1)
        got = yield note(2)
        seen: UNDEFINED = [got]     # rebinds the cell the closure reads
        yield note(3), seen
        return seen
    """
    differential(src, [NEXT, send("sent"), NEXT])


def test_annotated_assignment_of_a_captured_local_async():
    src = """
    from runtime.programs.requests import suspend
    async def main():
        seen: list = []
        count: int = 0
        def note(i):
            nonlocal count
            count += 1
            seen.append(i)
            return count
        note(await suspend("first"))
        seen: UNDEFINED = seen + [await suspend("second")]
        total: int = note(3) + await suspend(("third", count))
        got: "str" = await suspend("fourth")
        peek = lambda: (got, total)
        return seen, count, total, peek()
    """
    differential(src, [NEXT, send(1), send(2), send(10), send("x")], entry="main()")


def test_annotation_only_declaration_of_a_captured_local():
    src = """
    def gen():
        x: int
        def read():
            try:
                return x
            except NameError:
                return "unbound"
        yield read()                # the cell is empty across this suspension
        x = 5
        yield read(), x
        y: UNDEFINED
        y = yield read()
        f = lambda: y * 2
        yield f(), x
    """
    differential(src, [NEXT, NEXT, NEXT, send(21), NEXT])


def test_annotated_assignment_of_a_captured_local_in_a_loop():
    src = """
    def gen(n):
        acc: list = []
        history = []
        for i in range(n):
            acc: list = acc + [i]
            snap = lambda: list(acc)
            history.append(snap)
            got: int = yield [h() for h in history]
            acc: list = acc + [got]
        k = 0
        while k < 2:
            total: int = k + (yield ("while", k))
            show = lambda: total
            k += 1
            yield show()
        return acc, [h() for h in history]
    """
    differential(src, [NEXT, send(10), send(20), send(30), NEXT, send(100), NEXT, send(200), NEXT, NEXT],
                 entry="gen(3)")


def test_annotated_assignment_of_a_captured_local_async_loop():
    src = """
    from runtime.programs.requests import suspend
    async def main():
        results = []
        for i in range(2):
            value: int = await suspend(("loop", i))
            results.append(lambda: value)
        return [r() for r in results]
    """
    differential(src, [NEXT, send(7), send(8)], entry="main()")


def test_annotations_of_class_bodies_are_kept():
    # a class body's annotations are evaluated and stored, with or without a captured local of the same name
    src = """
    class Module:
        seen: int = 1
        other: "fwd"

        def gen(self):
            seen: list = []
            class Local:
                seen: int = 2
                count: list
            note = lambda i: seen.append(i)
            note(Local.seen)
            yield Local.__annotations__, Module.__annotations__, seen
            seen: dict = {"after": True}
            yield Local.seen, seen, self.seen

    def gen():
        return Module().gen()
    """
    result = differential(src, [NEXT, NEXT, NEXT])
    assert result.compiled_module.Module.__annotations__ == {"seen": int, "other": "fwd"}


def test_annotated_captured_local_is_plain_only_in_the_cellular_variant():
    from transpiler import compile_source
    out = compile_source("from runtime import durable\n@durable\ndef gen():\n"
                         "    seen: list = []\n    other: int = 1\n    note = lambda: seen\n    yield other\n")
    variant, function = out.split("def _dg_cellular1():")[1].split("_dg_rt.cellular(")
    assert "seen: list = []" not in variant and "seen = []" in variant and "other: int = 1" in variant
    assert "seen: list = []" in function and "other: int = 1" in function
