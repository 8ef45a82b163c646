"""Differential tests per language construct: one small program each, run natively and compiled
(``all_generators=True``) with a snapshot/detach/restore round trip at every suspension point.

Where a function object must be live across a yield because CPython evaluates it first (a callee
whose arguments contain a yield), or a program-class instance is live (attribute targets, class
patterns), ``allow_unserializable`` names those steps.  ``with`` statements do not get that
allowance: a manager that cannot be snapshotted is a failure the compiler/runtime must fix.
"""
from __future__ import annotations

import sys

import pytest

from harness import CLOSE, NEXT, Expr, differential, exec_, nexts, send, throw

# ============================================================================ expressions


def test_yield_in_call_arguments():
    src = """
    LOG = []
    def f(*args, **kw):
        LOG.append(("f", args, kw))
        return len(args) + len(kw)
    def g(v):
        LOG.append(("g", v))
        return v * 2
    def gen():
        r = f(1, (yield "a"), k=(yield "b"))
        yield r
        r = f(g((yield "inner")), *(yield "star"), **(yield "kw"))
        yield r
        r = "-".join([(yield "j1"), (yield "j2")])
        yield r
    """
    # callees (functions / bound methods) are live while their arguments suspend
    differential(src, [NEXT, send(1), send(2), NEXT, send(3), send((4, 5)), send({"z": 6}), NEXT,
                       send("x"), send("y"), NEXT], allow_unserializable=True)


def test_yield_in_arguments_of_container_and_string_methods():
    """``out.append((yield x))`` holds the bound built-in method across the suspension: it is carried."""
    src = """
    def gen():
        out = []
        seen = {}
        for i in range(2):
            out.append((yield i))
            seen.setdefault(i, (yield "d"))
        joined = "-".join([(yield "j1"), (yield "j2")])
        yield out, seen, joined
    """
    differential(src, [NEXT, send("a"), send("b"), send("c"), send("d"), send("x"), send("y"), NEXT])


@pytest.mark.parametrize("div", [3, 0])
def test_operators(div):
    src = """
    LOG = []
    def gen():
        a = 10
        r1 = a + (yield "add")
        r2 = (yield "mul") * a
        r3 = -(yield "neg")
        r4 = not (yield "not")
        r5 = a ** (yield "pow") % 7
        r6 = (a | (yield "or")) & 0xFF ^ 3
        r7 = (yield "in") in [1, 2, 3]
        r8 = (yield "is") is None
        r9 = "ab" * (yield "rep")
        r10 = a // (yield "div")
        yield (r1, r2, r3, r4, r5, r6, r7, r8, r9, r10)
    """
    differential(src, [NEXT, send(1), send(2), send(3), send(0), send(2), send(5), send(2),
                       send(None), send(2), send(div), NEXT])


@pytest.mark.parametrize("sends", [(1, 2, 0), (1, 1, 0), (0, 9, 9), (3, 7, 9)])
def test_chained_comparisons(sends):
    src = """
    LOG = []
    def gen():
        r = 0 < (yield "a") <= (yield "b") != 5 > (yield "c")
        yield r
    """
    differential(src, [NEXT] + [send(v) for v in sends] + [NEXT])


@pytest.mark.parametrize("script", [
    [NEXT, send(0), send(2), send(1), send(0), send("z"), NEXT],
    [NEXT, send(1), send(0), send(0), send("w"), NEXT],
    [NEXT, send([]), send(""), send(3), send(5), send(None), NEXT],
])
def test_boolean_and_conditional_expressions(script):
    src = """
    LOG = []
    def gen():
        r1 = (yield "or1") or (yield "or2")
        r2 = (yield "and1") and (yield "and2") and "all"
        r3 = "yes" if (yield "cond") else ((yield "else-val") or "default")
        yield (r1, r2, r3)
    """
    differential(src, script)


def test_subscripts_and_slices():
    src = """
    LOG = []
    def gen():
        d = {"a": 1, "b": 2}
        r1 = d[(yield "key")]
        lst = [0, 1, 2, 3, 4, 5]
        r2 = lst[(yield "lo"):(yield "hi")]
        d[(yield "set-key")] = (yield "set-val")
        lst[(yield "idx")] = "X"
        r3 = lst[::(yield "step")]
        yield (r1, r2, d, lst, r3)
        r4 = d[(yield "missing")]
        yield r4
    """
    differential(src, [NEXT, send("b"), send(1), send(4), send("v"), send("k"), send(2), send(-1),
                       NEXT, send("nope"), NEXT])


def test_fstrings():
    src = """
    LOG = []
    def gen():
        name = "w"
        s = f"{name}:{(yield 1)!s:>5}|{(yield 2):.2f}|{name!r}"
        yield s
        s = f"{'nested ' + f'{(yield 3)}'}"
        yield s
    """
    differential(src, [NEXT, send("ab"), send(3.14159), NEXT, send(7), NEXT])


def test_displays():
    src = """
    LOG = []
    def gen():
        l = [1, (yield "l"), *(yield "star"), 3]
        t = ((yield "t1"), (yield "t2"))
        s = {(yield "s"), 2}
        d = {**(yield "dstar"), "k": (yield "dv"), (yield "dk"): 0}
        one = ((yield "one"),)
        yield (l, t, sorted(s), d, one)
    """
    differential(src, [NEXT, send("x"), send((7, 8)), send(1), send(2), send(5), send({"a": 1}),
                       send("v"), send("a"), send(9), NEXT])


@pytest.mark.parametrize("last", [[1, 2], [1]])
def test_starred_unpacking_targets(last):
    src = """
    LOG = []
    def gen():
        a, *b = yield "1"
        yield (a, b)
        (x, y), *z, w = yield "2"
        yield (x, y, z, w)
        [p, q] = yield "3"
        yield (p, q)
        *init, tail = yield "4"
        yield (init, tail)
    """
    differential(src, [NEXT, send([1, 2, 3]), NEXT, send(((1, 2), 3, 4, 5)), NEXT, send(last),
                       NEXT, send("abc"), NEXT])


@pytest.mark.parametrize("values", [[1, 2, 3, 4], [1, 2]])
def test_suspension_inside_unpacking_targets(values):
    # CPython unpacks the value first, then assigns the targets left to right, evaluating each
    # target's own sub-expressions (here: a suspension) when that target is reached.
    src = """
    LOG = []
    def key(name):
        LOG.append(("key", name))
        return name
    def gen(values):
        d = {}
        x, d[(yield "k1")], *rest = values
        yield (x, sorted(d.items()), rest)
        [p, (q, d[key((yield "k2"))])] = [5, (6, 7)]
        yield (p, q, sorted(d.items()))
    """
    differential(src, [NEXT, send("a"), NEXT, send("b"), NEXT], entry=f"gen({values!r})")


def test_augmented_assignment_targets():
    src = """
    LOG = []
    class Obj:
        def __init__(self):
            self.n = 1
    def idx():
        LOG.append("idx")
        return 0
    def gen():
        x = 5
        x += yield "name"
        d = {"k": 10}
        d["k"] -= yield "subscript"
        lst = [1, 2]
        lst[idx()] *= yield "call-index"
        alias = lst
        lst += (yield "inplace")
        yield (alias is lst, alias)
        o = Obj()
        o.n += yield "attr"
        yield (x, d, lst, o.n)
    """
    # step 6: the Obj instance (a program class) is live across the yield
    differential(src, [NEXT, send(1), send(2), send(3), send([9]), NEXT, send(4), NEXT],
                 allow_unserializable={6})


def test_walrus():
    src = """
    LOG = []
    def gen():
        total = 0
        while (n := (yield ("total", total))) != 0:
            total += n
        if (m := (yield "m")) and (k := m * 2) > 4:
            yield ("k", k)
        yield [y := 1, y + (yield "in list")]
    """
    differential(src, [NEXT, send(2), send(3), send(0), send(3), NEXT, send(10), NEXT])


# ============================================================================ statements


def test_if_elif_else():
    src = """
    LOG = []
    def gen():
        for _ in range(4):
            v = yield "cond"
            if v == 1:
                yield "one"
            elif (yield "elif-test"):
                yield "elif-body"
            else:
                yield "else"
    """
    differential(src, [NEXT, send(1), NEXT, send(2), send(True), NEXT, send(3), send(False),
                       NEXT, send(1), NEXT, NEXT])


@pytest.mark.parametrize("script", [nexts(14), [NEXT, send("stop")] + nexts(10)])
def test_loops_else_break_continue(script):
    src = """
    LOG = []
    def gen():
        d = {"a": 1, "b": 2, "c": 3}
        for i, (k, v) in enumerate(d.items()):
            if k == "b":
                continue
            x = yield (i, k, v)
            if x == "stop":
                break
        else:
            yield "no break"
        for a, b in zip(range(3), reversed("xyz")):
            yield (a, b)
        n = 0
        while True:
            n += 1
            if n % 2:
                continue
            if (yield n) == "stop" or n > 4:
                break
        for key in d:
            LOG.append(key)
        for key in d.keys():
            yield key
        yield "done"
    """
    differential(src, script)


@pytest.mark.parametrize("script", [
    nexts(14),
    [NEXT, send("raise"), NEXT, NEXT, send("key"), NEXT, NEXT, NEXT, NEXT, NEXT, NEXT],
    [NEXT, throw(TypeError("t")), NEXT, throw(ValueError("in finally")), NEXT],
    [NEXT, send("raise"), throw(OSError("in handler")), NEXT, NEXT],
    [NEXT, NEXT, CLOSE],
])
def test_try_except_else_finally(script):
    src = """
    LOG = []
    def gen():
        for mode in range(3):
            try:
                LOG.append(("try", mode))
                x = yield ("try", mode)
                if x == "raise":
                    raise ValueError(mode)
                if x == "key":
                    raise KeyError(mode)
            except ValueError as e:
                y = yield ("except V", e.args)
            except (KeyError, TypeError) as e:
                y = yield ("except KT", type(e).__name__)
            else:
                y = yield ("else", mode)
            finally:
                z = yield ("finally", mode)
                LOG.append(("finally got", z))
        yield "end"
    """
    differential(src, script)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is 3.11+ syntax")
@pytest.mark.parametrize("script", [
    nexts(6),
    [NEXT, send("none"), NEXT, NEXT],
    [throw(Expr('ExceptionGroup("t", [ValueError("x"), OSError("o")])')), NEXT],
    [NEXT, throw(Expr('ExceptionGroup("t", [KeyError("x"), OSError("o")])')), NEXT, NEXT],
    [NEXT, throw(KeyError("naked")), NEXT, NEXT],
])
def test_try_except_star(script):
    src = """
    LOG = []
    def gen():
        try:
            x = yield "start"
            if x != "none":
                raise ExceptionGroup("g", [ValueError(1), KeyError(2)])
        except* ValueError as eg:
            yield ("V", repr(eg.exceptions))
        except* KeyError as eg:
            yield ("K", repr(eg.exceptions))
        else:
            yield "else"
        finally:
            yield "finally"
        yield "after"
    """
    differential(src, script)


WITH_SRC = """
LOG = []
class CM:
    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress
    def __enter__(self):
        LOG.append(("enter", self.name))
        return self.name
    def __exit__(self, t, v, tb):
        LOG.append(("exit", self.name, t.__name__ if t else None))
        return self.suppress
def gen():
    with CM("a") as a, CM("b", suppress=True) as b:
        x = yield (a, b)
        if x == "raise":
            raise ValueError("body")
        yield "body end"
    yield "after1"
    with (CM("c") as c, CM("d") as d):
        x = yield (c, d)
        if x == "raise":
            raise KeyError("body2")
    yield "after2"
    with CM("e"):
        with CM("f", suppress=True) as f:
            yield f
            raise OSError("swallowed")
        yield "between"
    yield "end"
"""


@pytest.mark.parametrize("script", [
    nexts(8),
    [NEXT, send("raise"), NEXT, send("raise"), NEXT],
    [NEXT, NEXT, NEXT, NEXT, throw(TypeError("thrown")), NEXT],
    [NEXT, throw(TypeError("suppressed by b")), NEXT],
    [NEXT, NEXT, NEXT, CLOSE],
    [NEXT, NEXT, NEXT, NEXT, NEXT, NEXT, CLOSE],
])
def test_with_several_managers(script):
    differential(WITH_SRC, script)


MATCH_SRC = """
LOG = []
class Point:
    __match_args__ = ("x", "y")
    def __init__(self, x, y):
        self.x = x
        self.y = y
def gen():
    while True:
        cmd = yield "cmd"
        match cmd:
            case "quit":
                return "bye"
            case ["go", direction] | ["move", direction]:
                yield ("go", direction)
            case ["drop", *objs] if len(objs) > (yield "threshold"):
                yield ("drop many", objs)
            case {"x": x, **rest}:
                yield ("map", x, rest)
            case (1 | 2 | 3) as small:
                yield ("small", small)
            case Point(x=0, y=yy):
                yield ("on y axis", yy)
            case Point(a, b):
                yield ("point", a, b)
            case str() as s if s.startswith("p"):
                yield ("p-word", s)
            case _:
                yield ("other", cmd)
"""


def test_match_statement():
    differential(MATCH_SRC, [
        NEXT, send(["go", "north"]), NEXT, send(("move", "s")), NEXT,
        send(["drop", 1, 2, 3]), send(2), NEXT, send(["drop", 1]), send(5), NEXT,
        send({"x": 1, "y": 2}), NEXT, send(2), NEXT, send(Expr("Point(0, 5)")), NEXT,
        send(Expr("Point(3, 4)")), NEXT, send("pear"), NEXT, send(42), NEXT, send("quit"), NEXT,
    ])


# A case that suspends, then cases that do not, then a suspension after the ``match``: restoring at
# that later suspension read the match's case number (not saved there) in the restore body's test of
# the trailing cases (UnboundLocalError on ``_dg_mcN``).
MATCH_THEN_SUSPENSION_SRC = {
    "case": """
    LOG = []
    def gen(v):
        match v:
            case 0:
                yield "zero"
            case 1:
                LOG.append("one")
        yield "after"
        LOG.append("done")
    """,
    "wildcard": """
    LOG = []
    def gen(v):
        match v:
            case 0:
                yield "zero"
            case _:
                LOG.append("other")
        yield "after"
        LOG.append("done")
    """,
    "guard": """
    LOG = []
    def gen(v):
        match v:
            case 1:
                LOG.append("one")
            case int() as n if n % 2 == 0:
                yield ("even", n)
            case n if n > 5:
                LOG.append(("big", n))
            case _:
                LOG.append("other")
        yield "after"
        LOG.append("done")
    """,
    "suspending guard": """
    LOG = []
    def gen(v):
        match v:
            case n if n > (yield "limit"):
                yield ("above", n)
            case 1:
                LOG.append("one")
            case n if n < 0:
                LOG.append(("negative", n))
            case _:
                LOG.append("other")
        yield "after"
        LOG.append("done")
    """,
}


@pytest.mark.parametrize("v", [0, 1, 2, 7, -3])
@pytest.mark.parametrize("shape", list(MATCH_THEN_SUSPENSION_SRC))
def test_match_case_that_suspends_then_cases_that_do_not(shape, v):
    differential(MATCH_THEN_SUSPENSION_SRC[shape], [NEXT, send(4), NEXT, NEXT], entry=f"gen({v})")


def test_return_raise_from_assert():
    src = """
    LOG = []
    def gen():
        x = yield "assert"
        assert x != "bad", "assertion message"
        try:
            x = yield "raise-from"
            raise ValueError("outer") from KeyError(x)
        except ValueError as e:
            yield (repr(e), repr(e.__cause__), e.__suppress_context__)
        v = yield "maybe-raise"
        if v == "none":
            raise RuntimeError("no cause") from None
        if v == "cause":
            raise RuntimeError("with cause") from TypeError("t")
        return ("ret", v)
    """
    differential(src, [NEXT, send("bad")])
    differential(src, [NEXT, send("ok"), send("k"), NEXT, send("none"), NEXT])
    differential(src, [NEXT, send("ok"), send("k"), NEXT, send("cause")])
    differential(src, [NEXT, send("ok"), send("k"), NEXT, send(7), NEXT])


def test_del_statement():
    src = """
    LOG = []
    def gen():
        a, b, c = 1, [2], {"k": 3}
        del a
        yield "a deleted"
        del b[0], c["k"]
        yield (b, c)
        try:
            LOG.append(a)
        except UnboundLocalError as e:
            LOG.append(type(e).__name__)
        a = yield "rebind"
        yield a
        del a
        yield "again"
        del a
    """
    differential(src, [NEXT, NEXT, NEXT, send(5), NEXT, NEXT])


def test_global_statement():
    src = """
    LOG = []
    G = 0
    def gen():
        global G
        G += 1
        x = yield G
        G = x
        yield G
        del G
        yield "deleted"
        LOG.append(G)
    """
    # globals are not part of a snapshot: the fresh-process check starts from the beginning
    differential(src, [NEXT, send(10), exec_("LOG.append(G)"), NEXT, NEXT], fresh_at=0)


def test_nonlocal_and_nested_functions():
    src = """
    LOG = []
    def gen():
        count = 0
        for i in range(3):
            by = yield count
            def inc():
                nonlocal count
                count += by or 1
            inc()
        def square(v):
            return v * v
        sq = [square(i) for i in range(count)]
        yield sq
        def outer_fn():
            level = "outer"
            def inner_fn():
                return level + "/inner"
            return inner_fn()
        yield outer_fn()
    """
    differential(src, [NEXT, send(2), send(None), send(5), NEXT, NEXT, NEXT])


def test_lambdas_not_live_across_yields():
    src = """
    LOG = []
    def gen(data):
        yield sorted(data, key=lambda t: -t)
        r = (lambda a, b=2: a * b)((yield "arg"))
        yield r
        k = 3
        yield list(map(lambda v: v + k, data))
    """
    differential(src, [NEXT, NEXT, send(4), NEXT, NEXT], entry="gen([3, 1, 2])",
                 allow_unserializable={2})


def test_comprehensions():
    src = """
    LOG = []
    def gen(n):
        yield [i * i for i in range(n)]
        base = yield "base"
        yield {i: base + i for i in range(n) if i % 2}
        yield [[j for j in range(i)] for i in range(n)]
        yield sorted({c for c in (yield "letters")})
        total = sum(x for x in (yield "nums"))
        yield total
    """
    # steps 5 and 7: the callees sorted/sum are live while their argument suspends
    differential(src, [NEXT, NEXT, send(10), NEXT, NEXT, send("hello"), NEXT, send([1, 2, 3]),
                       NEXT], entry="gen(4)", allow_unserializable={5, 7})


def test_class_defined_inside():
    src = """
    LOG = []
    def gen():
        class Local:
            k = 3
            def m(self):
                return self.k * 2
        v = Local().m()
        name = Local.__qualname__
        yield (v, name)
        x = yield "again"
        class Other(Exception):
            pass
        try:
            raise Other(x)
        except Other as e:
            LOG.append((type(e).__qualname__, e.args))
        yield "end"
    """
    differential(src, [NEXT, NEXT, send(5), NEXT])


def test_recursion_without_yield_from():
    src = """
    LOG = []
    def countdown(n):
        if n == 0:
            yield "liftoff"
            return
        yield n
        for v in countdown(n - 1):
            yield ("sub", v)
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)
    def gen():
        yield fact(5)
        yield from countdown(3)
    """
    differential(src, nexts(8))


def test_yield_from_various_iterables():
    src = """
    LOG = []
    def sub(n):
        x = yield ("sub", n)
        LOG.append(("sub got", x))
        return n * 2
    def gen():
        yield from [1, 2]
        yield from range(3, 5)
        yield from "ab"
        yield from b"\\x01"
        yield from (7, 8)
        yield from {"k1": 1, "k2": 2}
        yield from {"k": "v"}.items()
        yield from enumerate("xy")
        yield from zip("ab", range(2))
        yield from reversed([1, 2])
        r = yield from sub(5)
        yield ("sub returned", r)
        r = yield from []
        yield ("empty returned", r)
    """
    differential(src, nexts(19) + [send("s"), NEXT, NEXT, NEXT])


def test_a_for_loop_does_not_call_a_name_iter_of_the_program():
    """A `for` loop gets its iterator as CPython does, not through whatever `iter` means in the program."""
    differential("""
    LOG = []

    def iter(x):
        LOG.append("module iter")
        raise AssertionError("a for loop must not call this")

    def gen(items=(1, 2)):
        for item in items:
            yield item
        iter = lambda x: "local"
        for item in "ab":
            yield item, iter(0)
    """, nexts(5))
