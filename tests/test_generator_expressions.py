"""A generator expression live across a yield travels (issue 11, item 6).

Generator expressions inside durable functions (and, with ``all_generators=True``, inside any
compiled generator function) are compiled as nested durable generators (``transpiler/genexps.py``),
so a snapshot carries one held anywhere, as it carries any held durable generator. One passed
straight to a builtin that consumes it (``sum(x for x in xs)``) cannot be live at a suspension and
stays native.

Each program runs natively and compiled, with snapshot → detach → restore before every step and
once in a fresh process (``harness.differential``); the traces must be identical.
"""
from __future__ import annotations

import inspect
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

from harness import CLOSE, NEXT, differential, load_compiled, native_and_hooked, nexts, send, throw, unload
from transpiler import compile_source


# -- live across yields -------------------------------------------------------------------------

def test_a_generator_expression_in_a_local_travels_and_reads_its_free_variables_late():
    differential("""
    def gen():
        items = [3, 1, 0, 4, 1, 5]
        k = 2
        squares = (x * x * k for x in items if x)
        yield next(squares)
        k = 10                       # rebound after creation: read when the expression runs
        yield next(squares)
        items.append(9)              # the list is iterated lazily: the new item is seen
        yield list(squares)
        yield next(squares, "done")
    """, nexts(5))


def test_a_generator_expression_that_has_not_started_travels():
    differential("""
    def gen():
        words = ["a", "bb", "ccc"]
        lengths = (len(w) for w in words)
        yield "made"
        yield "still waiting"
        yield list(lengths)
    """, nexts(4))


def test_generator_expressions_passed_to_helpers_travel_where_they_are_held():
    differential("""
    from runtime import durable

    @durable
    def numbered(it, start):
        n = start
        for v in it:
            yield n, v
            n += 1

    def keep(box, g):
        box.append(g)
        return box

    def gen():
        xs = [5, 6, 7, 8]
        pairs = numbered((x + 1 for x in xs), 10)        # held by another durable generator
        shown = map(str, (x * 3 for x in xs))             # held by a map
        zipped = zip("ab", (x for x in xs if x % 2))      # held by a zip
        box = keep([], (x - 1 for x in xs))               # held by a list
        yield next(pairs), next(shown)
        yield next(zipped), next(box[0])
        yield list(pairs), list(shown), list(zipped), list(box[0])
    """, nexts(4))


def test_nested_generator_expressions_travel():
    differential("""
    def gen():
        xs = [1, 2, 3]
        totals = ((x, sum(y * x for y in range(x))) for x in xs)            # inner one consumed at once
        grid = (((x, y) for y in range(x)) for x in xs)                       # inner ones held
        chained = (v * 10 for v in (w + 1 for w in xs))                       # one over another
        yield next(totals), next(chained)
        row = next(grid)
        yield next(row), next(chained)
        row2 = next(grid)
        yield next(row2), next(row2)
        yield list(row), list(row2), list(grid), list(totals), list(chained)
    """, nexts(5))


def test_a_generator_expression_not_started_yet_shares_the_cells_of_its_enclosing_frame():
    """Before its first step a generator has no locals; the cells travel as its argument."""
    differential("""
    def gen():
        k = 1
        scaled = (x * k for x in range(3))
        bump = lambda: k + 1
        yield "made"
        k = 5                                   # after the snapshot: the held expression sees it
        yield next(scaled), bump()
        k = 7
        yield list(scaled), bump()
    """, nexts(4))


def test_generator_expressions_closing_over_loop_variables_bind_late():
    differential("""
    def gen():
        made = []
        for i in range(3):
            made.append(x * i for x in range(3))       # all three share the one cell of i
        yield next(made[0])
        i = 100
        yield [next(g) for g in made]
        yield [list(g) for g in made]
        pairs = ((a, b) for a in range(3) for b in range(a))   # the inner loop reads the outer target
        yield next(pairs)
        yield list(pairs)
    """, nexts(6))


def test_a_generator_expression_over_another_durable_generator():
    differential("""
    from runtime import durable

    LOG = []

    @durable
    def counter(n):
        try:
            for i in range(n):
                yield i
        finally:
            LOG.append(("counter finally", n))

    def gen():
        doubled = (v * 2 for v in counter(5) if v != 2)
        yield next(doubled)
        yield next(doubled)
        yield list(doubled)
        partial = (v for v in counter(4))
        yield next(partial)
        del partial                    # dropped half-way: the counter is finalized with it
        yield "after"
    """, nexts(7))


def test_close_of_a_partially_consumed_generator_expression():
    differential("""
    import inspect
    from runtime import durable

    LOG = []

    @durable
    def source():
        try:
            yield 1
            yield 2
            yield 3
        finally:
            LOG.append("source closed")

    def gen():
        g = (x + 1 for x in source())
        yield next(g), inspect.getgeneratorstate(g)
        g.close()
        yield inspect.getgeneratorstate(g), g.gi_frame is None
        yield next(g, "exhausted")
        fresh = (x for x in [1, 2])
        fresh.close()                       # closing one that never started
        yield list(fresh), inspect.getgeneratorstate(fresh)
    """, nexts(5))


def test_exceptions_raised_inside_a_generator_expression():
    differential("""
    def gen():
        items = [2, 1, 0, 5]
        ratios = (10 // x for x in items)
        yield next(ratios)
        try:
            yield [next(ratios), next(ratios)]
        except ZeroDivisionError as exc:
            yield "caught", str(exc)
        yield next(ratios, "gone")              # an exception finished it
        checked = (x for x in items if 1 // x)
        yield next(checked)
        try:
            next(checked)
        except ZeroDivisionError:
            yield "in the condition"
        stopping = (next(iter([])) for _ in range(2))   # PEP 479: StopIteration inside becomes RuntimeError
        try:
            next(stopping)
        except RuntimeError as exc:
            yield type(exc.__cause__).__name__, str(exc)
        late = (y for x in items for y in range(10 // x))
        yield next(late), next(late)
        try:
            list(late)
        except ZeroDivisionError:
            yield "in an inner iterable"
    """, nexts(10))


def test_send_throw_and_close_on_a_held_generator_expression():
    differential("""
    def gen():
        g = (x * 2 for x in range(5))
        try:
            g.send(1)
        except TypeError as exc:
            yield "send", str(exc)
        yield g.send(None)
        yield g.send("ignored")                 # a generator expression discards what it is sent
        try:
            g.throw(KeyError("boom"))
        except KeyError as exc:
            yield "thrown", exc.args
        yield next(g, "finished by the throw")
        h = (x for x in range(3))
        yield next(h)
        yield h.close(), next(h, "closed")
    """, nexts(7))


def test_a_generator_expression_driven_directly():
    """The harness drives a compiled generator expression itself (made by a durable function):
    snapshot, detach and restore at every step, send/throw/close as a caller would."""
    source = """
    LOG = []

    def maker():
        base = 100
        yield (base + x for x in range(10) if x % 3)
    """
    differential(source, [NEXT, send(None), send(5), throw(ValueError("into it")), NEXT],
                 entry="next(maker())")
    differential(source, [NEXT, NEXT, CLOSE, NEXT], entry="next(maker())")
    differential(source, [NEXT, throw(GeneratorExit), NEXT], entry="next(maker())")


def test_generator_expressions_in_every_kind_of_statement():
    differential("""
    def gen():
        xs = [1, 2, 3]
        got = yield from (x * 2 for x in xs)                 # delegation to a generator expression
        yield got
        for v in (x + 10 for x in xs if x != 2):             # held by the loop
            yield v
        pending = (x for x in xs)
        while next(pending, None) is not None:
            yield "while"
        try:
            g = (100 // x for x in [4, 0])
            yield next(g)
            yield next(g)
        except ZeroDivisionError:
            yield "except"
        finally:
            last = (x * 3 for x in xs)
        match (x for x in xs):
            case it if next(it) == 1:
                yield "case", next(it)
        yield next(last)
        return tuple(x for x in (y for y in xs))
    """, nexts(14))


# -- CPython's semantics of the expression ----------------------------------------------------

def test_the_outermost_iterable_is_evaluated_eagerly_where_the_expression_is_written():
    differential("""
    LOG = []

    class Logged:
        def __init__(self, name, items):
            self.name, self.items = name, items

        def __iter__(self):
            LOG.append(("iter", self.name))
            return iter(self.items)

    def make(name, items):
        LOG.append(("evaluated", name))
        return Logged(name, items)

    def gen():
        g = (x + y for x in make("outer", [1, 2]) for y in make("inner", [10, 20]))
        yield "created"                        # only the outermost iterable ran, and iter() on it
        yield next(g)
        yield list(g)
        try:
            (x for x in 5)
        except TypeError as exc:
            yield "at creation", str(exc)
        try:
            (x for x in [1] for y in 5)         # an inner iterable: only when it is reached
        except TypeError:
            yield "not reached"
        yield "lazy"
    """, nexts(7))


def test_the_loop_variables_do_not_leak():
    differential("""
    def gen():
        x = "outer x"
        g = (x for x in range(3))
        yield list(g), x
        pairs = ((a, b) for a in "ab" for b in "cd")
        yield next(pairs)
        try:
            a
        except NameError as exc:
            yield x, str(exc)
    """, nexts(4))


def test_names_and_type_are_a_generator_expressions():
    differential("""
    import inspect

    class Holder:
        def method(self):
            g = (x for x in range(3))
            yield g.__name__, g.__qualname__, inspect.isgenerator(g), type(g).__name__
            yield next(g)

    def gen():
        g = (x for x in range(3))
        yield g.__name__, g.__qualname__, inspect.isgenerator(g), inspect.getgeneratorstate(g)
        nested = ((y for y in range(x)) for x in range(3))
        inner = next(nested)
        yield inner.__name__, inner.__qualname__, inspect.isgenerator(inner)
        m = Holder().method()
        yield next(m)
        yield next(m), next(g), inspect.getgeneratorstate(g), g.gi_running
        yield list(g), g.gi_frame is None
    """, nexts(6))


def test_names_are_cpythons():
    """Checked against the literal strings too (the differential test compares with native)."""
    module = load_compiled("""
    import inspect

    def outer():
        g = (x for x in range(2))
        nested = ((y for y in range(x)) for x in range(3))
        next(nested)
        yield g, next(nested)
    """)
    try:
        g, inner = next(module.outer())
        assert (g.__name__, g.__qualname__) == ("<genexpr>", "outer.<locals>.<genexpr>")
        assert (inner.__name__, inner.__qualname__) == ("<genexpr>", "outer.<locals>.<genexpr>.<genexpr>")
        assert inspect.isgenerator(g) and inspect.isgenerator(inner)
        assert type(g) is type(x for x in ())
        from runtime import snapshot
        assert isinstance(snapshot(g), bytes)   # it is durable itself
    finally:
        unload(module)


def test_names_survive_a_restore():
    differential("""
    def gen():
        k = 3
        g = (x * k for x in range(3))
        yield "made"
        yield g.__name__, g.__qualname__
    """, nexts(2))


def test_class_body_and_comprehension_edge_cases():
    differential("""
    def gen():
        n = "function n"

        class C:
            n = "class n"
            items = [1, 2]
            firsts = list(x for x in items)                 # the outermost iterable sees the class scope
            seen = list(n for _ in items)                   # the rest does not: the function's n
            held = (x * 2 for x in items)                   # left native (a class body)

        yield C.firsts, C.seen
        yield next(C.held)
        from_listcomp = [g for g in [(y * 2 for y in range(3))]]    # outermost iterable of a comprehension
        yield next(from_listcomp[0])
        total = [sum(y for y in range(x)) for x in range(4)]         # inside a comprehension: native
        yield total, list(from_listcomp[0])
        with_default = lambda g=(z for z in "xyz"): g                # a lambda's default: the function's scope
        yield next(with_default())
        yield list(with_default())
    """, nexts(7), allow_unserializable=True)


def test_a_generator_expression_whose_outermost_iterable_suspends():
    differential("""
    def gen():
        g = (x * 2 for x in (yield "give me a list"))
        yield next(g)
        yield list(g)
    """, [NEXT, send([1, 2, 3]), NEXT, NEXT])


def test_in_a_method_with_private_names_and_a_walrus_elsewhere():
    differential("""
    class Flow:
        __scale = 7

        def run(self, items):
            factor = self.__scale
            g = (x * factor + self.__scale for x in items)
            yield next(g)
            if (n := len(items)) > 1:
                yield list(g), n

    def gen():
        yield from Flow().run([1, 2, 3])
    """, nexts(3))


# -- what stays native ---------------------------------------------------------------------------

def _compiled_text(source: str, all_generators: bool = False) -> str:
    """The compiled code without its declarations (they carry each function's source text)."""
    code = compile_source(textwrap.dedent(source), "m.py", all_generators=all_generators)
    return "\n".join(line for line in code.splitlines() if "_dg_rt.declare(" not in line)


def test_generator_expressions_consumed_at_once_by_a_builtin_stay_native():
    text = _compiled_text("""
    from runtime import durable

    @durable
    def flow(xs):
        a = sum(x for x in xs)
        b = any(x > 2 for x in xs), all(x for x in xs), max((x for x in xs), default=0)
        c = ", ".join(str(x) for x in xs)
        d = next((x for x in xs if x > 1), None)
        e = sorted(x for x in xs), list(x for x in xs), tuple(x for x in xs), set(x for x in xs)
        held = (x for x in xs)
        yield a, b, c, d, e, list(held)
    """)
    assert "held = (_dg_genexpr1(_dg_iter(xs)))" in text and "_dg_genexpr2" not in text
    assert "sum(x for x in xs)" in text and '", ".join(str(x) for x in xs)' in text


def test_a_shadowed_builtin_does_not_count_as_consuming():
    for shadow in ("def sum(g):\n    return g\n", "from helpers import sum\n", "sum = len\n"):
        text = _compiled_text(shadow + textwrap.dedent("""
        from runtime import durable

        @durable
        def flow(xs):
            yield sum(x for x in xs)
        """))
        assert "_dg_genexpr1(_dg_iter(xs))" in text, shadow
    text = _compiled_text("""
    from runtime import durable

    @durable
    def flow(xs, sum):
        yield sum(x for x in xs)
    """)
    assert "_dg_genexpr1(_dg_iter(xs))" in text
    differential("""
    def sum(g, box):
        box.append(g)
        return "kept"

    def gen():
        box = []
        yield sum((x * 2 for x in range(4)), box)
        yield next(box[0])
        yield list(box[0])
    """, nexts(3))


def test_async_walrus_and_dynamic_generator_expressions_are_left_alone():
    text = _compiled_text("""
    from runtime import durable

    @durable
    def flow(xs, aiter):
        a = (x async for x in aiter)
        b = ((last := x) for x in xs)
        c = (locals() for x in xs)
        d = [(y for y in range(x)) for x in xs]
        e = lambda: (z for z in xs)
        yield a, b, c, d, e
    """)
    assert "_dg_genexpr" not in text
    assert "(x async for x in aiter)" in text and "((last := x) for x in xs)" in text


def test_a_generator_expression_in_a_plain_function_is_left_native():
    source = """
    from runtime import durable

    def helper(xs):
        return (x for x in xs)

    def plain_gen(xs):
        g = (x for x in xs)
        yield g

    @durable
    def flow(xs):
        g = (x for x in xs)
        yield g
    """
    text = _compiled_text(source)
    assert text.count("g = (x for x in xs)") == 1 and "return (x for x in xs)" in text   # plain_gen's
    text = _compiled_text(source, all_generators=True)
    assert "g = (x for x in xs)" not in text and "return (x for x in xs)" in text


def test_a_yield_inside_a_generator_expression_is_a_syntax_error():
    from transpiler import CompileError
    with pytest.raises(CompileError, match="DG001"):
        _compiled_text("""
        from runtime import durable

        @durable
        def flow(xs):
            g = ((yield x) for x in xs)
            yield g
        """)


def test_snapshot_errors_name_the_generator_expressions_iterator():
    from runtime import UnserializableValueError, snapshot
    module = load_compiled("""
    import threading

    def gen():
        g = (lock for lock in [threading.Lock(), threading.Lock()])
        next(g)
        yield g
    """)
    try:
        g = next(module.gen())
        with pytest.raises(UnserializableValueError, match="the iterator of the generator expression at line 5"):
            snapshot(g)
    finally:
        unload(module)


# -- tracebacks and line tracing (through the import hook, with the source's lines) ---------------

SOURCE = '''\
from runtime import durable


@durable
def flow(items):
    total = 0
    ratios = (
        100 // x
        for x in items
    )
    yield next(ratios)
    if total:
        unused = (x for x in items)
    yield list(ratios)
'''


@pytest.fixture
def hooked(tmp_path: Path):
    with native_and_hooked(tmp_path, "ge", SOURCE) as pair:
        yield pair


def _failure(module):
    flow = module.flow([5, 0])
    next(flow)
    with pytest.raises(ZeroDivisionError) as info:
        next(flow)
    return [(f.lineno, f.line) for f in traceback.extract_tb(info.value.__traceback__)]


def test_tracebacks_point_at_the_users_line(hooked):
    native, compiled = hooked
    want, got = _failure(native), _failure(compiled)
    assert got == want
    assert got[-1] == (8, "100 // x")


def test_line_tracing_sees_no_line_the_function_did_not_reach(hooked):
    native, compiled = hooked

    def lines(module) -> set[int]:
        seen: set[int] = set()

        def tracer(frame, event, arg):
            if frame.f_code.co_filename == module.__file__ and event == "line":
                seen.add(frame.f_lineno)
            return tracer

        sys.settrace(tracer)
        try:
            list(module.flow([5, 1]))
        finally:
            sys.settrace(None)
        return seen

    native_lines, compiled_lines = lines(native), lines(compiled)
    assert native_lines <= compiled_lines
    assert 13 not in compiled_lines                          # the expression in the branch not taken
    assert compiled_lines <= set(range(5, 15)), sorted(compiled_lines)
