"""transpiler.points: suspension points keep their labels across unrelated edits, on every Python version."""
from __future__ import annotations

import ast
import sys
import textwrap

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from runtime.points import point
from transpiler import diagnostics as dg
from transpiler.points import Labels, PointSpec, label_function, point_call_names, strip_points

needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is a SyntaxError before Python 3.11: the "
                               "compiler rejects such a module (DG001) before any labelling")


def parse(source: str) -> tuple[cst.FunctionDef, dict, frozenset[str]]:  # type: ignore[type-arg]
    """The @durable function of the module, the module's positions and its point() names."""
    source = textwrap.dedent(source)
    wrapper = MetadataWrapper(cst.parse_module(source), unsafe_skip_copy=True)
    positions = dict(wrapper.resolve(PositionProvider))
    found = [n for n in positions if isinstance(n, cst.FunctionDef)
             and any(isinstance(d.decorator, cst.Name) and d.decorator.value == "durable" for d in n.decorators)]
    assert len(found) == 1
    return found[0], positions, point_call_names(ast.parse(source))


def label(source: str) -> Labels:
    fn, positions, names = parse(source)
    return label_function(fn, positions, names)


def points_on(source: str, text: str) -> list[PointSpec]:
    """The points on the (only) line of the source containing ``text``, left to right."""
    lines = [i for i, line in enumerate(textwrap.dedent(source).splitlines(), 1) if text in line]
    assert len(lines) == 1, (text, lines)
    return [spec for (line, _), spec in sorted(label(source).points.items()) if line == lines[0]]


def key(source: str, text: str) -> str:
    return points_on(source, text)[0].key


BASE = """\
from runtime import durable, point

def other():
    return 1

@durable
def flow(items):
    total = 0
    for item in items:
        try:
            decision = yield wait('approval')
        except ValueError as e:
            yield log(e)
    yield done(total)
"""

EDITS = [  # (what, old, new, a text on the line of the point, whether its key stays)
    ("line shift", "from runtime", "import os\n\n\nfrom runtime", "wait(", True),
    ("comments", "        try:\n", "        # first\n        try:  # why\n", "wait(", True),
    ("reformat", "decision = yield wait('approval')", "decision=(\n  yield wait( 'approval', ))", "wait(", True),
    ("parentheses", "yield log(e)", "yield (log((e)))", "log(", True),
    ("other statement", "total = 0", "total = 100", "wait(", True),
    ("statement inserted", "            decision", "            note(item)\n            decision", "wait(", True),
    ("other function", "return 1", "return 2", "done(", True),
    ("decorator", "@durable\n", "@durable\n@trace\n", "done(", True),
    ("statement changed", "wait('approval')", "wait('approve')", "wait(", False),
    ("target changed", "decision =", "choice =", "yield wait(", False),
    ("loop header changed", "for item in items:", "for item in items[1:]:", "wait(", False),
    ("handler changed", "except ValueError as e:", "except KeyError as e:", "log(", False),
    ("handler changed, body kept", "except ValueError as e:", "except KeyError as e:", "wait(", True),
    ("loop header changed, outside kept", "for item in items:", "for thing in items:", "done(", True),
    ("same statement inserted before", "        try:\n", "        yield wait('approval')\n        try:\n",
     "decision", True),
    ("same statement inserted before, in the block", "            decision",
     "            decision = yield wait('approval')\n            decision", "log(", True),
]


@pytest.mark.parametrize(("old", "new", "where", "same"), [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_keys_survive_unrelated_edits(old: str, new: str, where: str, same: bool) -> None:
    edited = BASE.replace(old, new)
    assert edited != BASE
    assert (key(BASE, where) == key(edited, where)) is same


def test_keys_are_the_same_on_every_python_version() -> None:
    labels = label(BASE)
    assert [(pos, spec.key) for pos, spec in sorted(labels.points.items())] == [
        ((11, 23), "4c85f7ce90f2ea4b"), ((13, 12), "af517f501103c0be"), ((14, 4), "213740c3cb7f37aa")]
    assert labels.owners[9, 4].hash == "770bca56"
    assert labels.points[11, 23].display == "for item in items: › try: › decision = yield wait('approval')"
    assert labels.points[11, 23].aliases == () and labels.points[11, 23].name is None


def test_identical_siblings_are_counted_only_among_those_that_suspend() -> None:
    base = textwrap.dedent("""\
    @durable
    def f(xs):
        for x in xs:
            yield x  # first
        for x in xs:
            yield x  # second
    """)
    first, second = key(base, "first"), key(base, "second")
    assert first != second
    quiet = base.replace("    for x in xs:\n        yield x  # first", "    for x in xs:\n        print(x)\n"
                         "    for x in xs:\n        yield x  # first")
    assert (key(quiet, "first"), key(quiet, "second")) == (first, second)
    louder = base.replace("    for x in xs:\n        yield x  # first", "    for x in xs:\n        yield x\n"
                          "    for x in xs:\n        yield x  # first")
    assert key(louder, "first") == second


def test_small_statements_of_one_line_are_units() -> None:
    source = textwrap.dedent("""\
    @durable
    def f():
        a = 1; b = yield a; yield b
    """)
    labels = label(source)
    assert sorted(labels.owners) == [(3, 11), (3, 24)]  # a = 1 holds no yield: it needs no identity
    b, last = points_on(source, "a = 1")
    assert last.display == "yield b" and b.display == "b = yield a"
    assert key(source.replace("a = 1; ", "a = 2; "), "b = yield") == b.key  # another small statement changed


def test_elif_and_else_clauses() -> None:
    source = textwrap.dedent("""\
    @durable
    def f(a, b, c):
        if a:
            yield 1
        elif b:
            yield 2  # b
        elif c:
            yield 3  # c
        else:
            yield 4  # else
    """)
    keys = {k for k in (key(source, "1"), key(source, "# b"), key(source, "# c"), key(source, "# else"))}
    assert len(keys) == 4
    inserted = source.replace("    elif c:", "    elif d:\n        yield 5\n    elif c:")
    assert key(inserted, "# c") == key(source, "# c")  # an elif is a clause of the if, not of the elif before it
    assert key(source.replace("if a:", "if not a:"), "# c") != key(source, "# c")
    owners = label(source).owners
    assert owners[5, 4].display == "if a: › elif b:" and owners[9, 4].display == "if a: › else:"
    assert points_on(source, "# c")[0].display == "if a: › elif c: › yield 3"


def test_try_clauses() -> None:
    source = textwrap.dedent("""\
    @durable
    def f():
        try:
            yield 1
        except (KeyError, ValueError) as e:
            yield 2
        except Exception:
            yield 3
        else:
            yield 4
        finally:
            yield 5
    """)
    labels = label(source)
    assert [o.display for _, o in sorted(labels.owners.items()) if o.display.endswith(":")] == [
        "try:", "try: › except (KeyError, ValueError) as e:", "try: › except Exception:", "try: › else:",
        "try: › finally:"]
    assert len({p.key for p in labels.points.values()}) == 5
    assert key(source.replace("except Exception:", "except BaseException:"), "yield 2") == key(source, "yield 2")


@needs_311
def test_except_star_clauses() -> None:
    source = textwrap.dedent("""\
    @durable
    def f():
        try:
            yield 1
        except* ValueError as g:
            yield 2
    """)
    labels = label(source)
    assert labels.owners[5, 4].display == "try: › except* ValueError as g:"
    plain = source.replace("except*", "except")
    assert key(source, "yield 1") == key(plain, "yield 1")  # the try body is the try's
    assert key(source, "yield 2") != key(plain, "yield 2")


def test_match_cases_and_guards() -> None:
    source = textwrap.dedent("""\
    @durable
    def f(cmd):
        match cmd:
            case Point(x=0) if (yield 'guard'):
                yield 'zero'
            case _:
                yield 'other'
    """)
    labels = label(source)
    assert labels.owners[4, 8].display == "match cmd: › case Point(x=0) if (yield 'guard'):"
    assert points_on(source, "'guard'")[0].display == "match cmd: › case Point(x=0) if (yield 'guard'):"
    changed = source.replace("Point(x=0)", "Point(x=1)")
    assert key(changed, "'zero'") != key(source, "'zero'")
    assert key(changed, "'other'") == key(source, "'other'")


@pytest.mark.parametrize("loop", ["while waiting:", "for x in xs:"])
def test_loop_else(loop: str) -> None:
    source = textwrap.dedent(f"""\
    @durable
    def f(xs, waiting):
        {loop}
            yield 'body'
        else:
            yield 'else'
    """)
    labels = label(source)
    assert labels.owners[5, 4].display == f"{loop} › else:"
    assert points_on(source, "'else'")[0].display == f"{loop} › else: › yield 'else'"
    assert key(source, "'body'") != key(source, "'else'")


@pytest.mark.parametrize("header", ["for x in (yield 'h'):", "if (yield 'h'):", "with (yield 'h') as m:",
                                    "while (yield 'h'):", "async for x in (yield 'h'):"])
def test_a_compound_header_owns_its_yields(header: str) -> None:
    source = textwrap.dedent(f"""\
    @durable
    def f():
        {header}
            yield 'body'
    """)
    (spec,) = points_on(source, "'h'")
    assert spec.display == header
    assert spec.key != key(source, "'body'")
    assert key(source.replace("yield 'body'", "yield 'other'"), "'h'") == spec.key


def test_several_yields_in_one_statement_are_numbered_in_evaluation_order() -> None:
    source = textwrap.dedent("""\
    @durable
    def f():
        total = (yield 1) + (yield (yield 2))
    """)
    specs = label(source).points
    assert [specs[3, column].display for column in (13, 25, 32)] == [
        "total = (yield 1) + (yield (yield 2))", "total = (yield 1) + (yield (yield 2)) [yield 3]",
        "total = (yield 1) + (yield (yield 2)) [yield 2]"]
    assert len({s.key for s in specs.values()}) == 3


def test_yield_from() -> None:
    source = textwrap.dedent("""\
    @durable
    def f():
        result = yield from sub()
    """)
    (spec,) = points_on(source, "sub()")
    assert spec.display == "result = yield from sub()"
    assert key(source.replace("sub()", "other()"), "yield from") != spec.key


def test_nested_scopes_are_not_points_of_the_function() -> None:
    source = textwrap.dedent("""\
    @durable
    def f(xs):
        def inner():
            yield 'inner'
        class K:
            def m(self):
                yield 'method'
        lam = lambda: (yield 'lambda')
        gen = (x for x in xs)
        first = [x for x in (yield 'iterable')]
        yield 'own'
    """)
    labels = label(source)
    assert sorted(p.display for p in labels.points.values()) == [
        "first = [x for x in (yield 'iterable')]", "yield 'own'"]
    assert not {(4, 8), (6, 8), (7, 12)} & set(labels.owners)  # inside nested scopes
    assert (3, 4) not in labels.owners  # the def holds no yield of this function
    # the outermost iterable of a comprehension is evaluated in the function: its yield is a point
    edited = source.replace("yield 'inner'", "yield 'changed'").replace("lambda: (yield", "lambda: (yield 1 or")
    assert key(edited, "'own'") == key(source, "'own'")


NAMED = """\
from runtime import durable, point

@durable
def f(t):
    for i in range(3):
        decision = yield point("approval", wait("approval", timeout=t))
        total = yield from point("charge", charge(i))
        yield point("tick")
"""


@pytest.mark.parametrize(("text", "name", "stripped"), [
    ('point("approval"', "approval", ('point("approval", wait("approval", timeout=t))',
                                       'wait("approval", timeout=t)')),
    ('point("charge"', "charge", ('point("charge", charge(i))', "charge(i)")),
    ('point("tick")', "tick", ('yield point("tick")', "yield  # tick")),
])
def test_a_named_point_has_its_default_key_as_alias(text: str, name: str, stripped: tuple[str, str]) -> None:
    (spec,) = points_on(NAMED, text)
    assert (spec.key, spec.display, spec.name) == (f"@{name}", f"@{name}", name)
    plain = NAMED.replace(*stripped)
    assert spec.aliases == (key(plain, stripped[1]),)
    # naming a point changes no owner: the compiler locals of its statements keep their names
    assert {p: o.hash for p, o in label(NAMED).owners.items()} == {p: o.hash for p, o in label(plain).owners.items()}


def test_a_named_point_keeps_its_key_when_its_statement_changes() -> None:
    edited = NAMED.replace('wait("approval", timeout=t)', 'wait("approval", timeout=2 * t)')
    assert key(edited, "approval") == "@approval"
    assert points_on(edited, "approval")[0].aliases != points_on(NAMED, "approval")[0].aliases


ASYNC_NAMED = """\
from runtime import durable, point

@durable
async def f(t):
    decision = await point("approval", wait("approval", timeout=t))
    plain = await wait("other")
"""


def test_an_await_is_named_like_a_yield_and_its_key_differs_from_a_yield_s() -> None:
    (spec,) = points_on(ASYNC_NAMED, 'point("approval"')
    plain = ASYNC_NAMED.replace('point("approval", wait("approval", timeout=t))', 'wait("approval", timeout=t)')
    assert (spec.key, spec.name, spec.aliases) == ("@approval", "approval", (key(plain, 'wait("approval"'),))
    # the same statement in a generator: another key (a run never resumes in the wrong kind of frame)
    generator = plain.replace("async def", "def").replace("await wait", "yield wait")
    assert key(generator, 'wait("approval"') != key(plain, 'wait("approval"')


def test_await_points_are_stripped() -> None:
    fn, positions, names = parse(ASYNC_NAMED)
    body = strip_points(list(fn.body.body), positions, names)
    assert cst.Module(body=body).code.splitlines()[0].strip() == 'decision = await wait("approval", timeout=t)'


@pytest.mark.parametrize(("imports", "call", "named"), [
    ("from runtime import point", "point", True),
    ("from runtime import point as label", "label", True),
    ("from runtime.points import point", "point", True),
    ("import runtime", "runtime.point", True),
    ("import runtime as rt", "rt.point", True),
    ("import runtime.points as rp", "rp.point", True),
    ("from runtime import points", "points.point", True),
    ("import other as rt", "rt.point", False),
    ("from other import point", "point", False),
    ("from .runtime import point", "point", False),
])
def test_point_is_found_through_the_imports(imports: str, call: str, named: bool) -> None:
    source = f"{imports}\n\n@durable\ndef f():\n    yield {call}('n', 1)\n"
    (spec,) = points_on(source, "yield")
    assert (spec.name == "n") is named


PROBLEMS = [  # (statement, class, (line, column) of the node reported, detail)
    ("yield point(name, 1)", dg.BadPoint, (5, 16), "string literal"),
    ("yield point(f'n', 1)", dg.BadPoint, (5, 16), "string literal"),
    ("yield point(b'n', 1)", dg.BadPoint, (5, 16), "string literal"),
    ("yield point('a b', 1)", dg.BadPoint, (5, 16), "string literal"),
    ("yield point('', 1)", dg.BadPoint, (5, 16), "string literal"),
    ("yield point('n' * 101, 1)", dg.BadPoint, (5, 16), "string literal"),
    (f"yield point('{'n' * 101}', 1)", dg.BadPoint, (5, 16), "string literal"),
    ("yield point('n', 1, 2)", dg.BadPoint, (5, 10), "positional"),
    ("yield point('n', value=1)", dg.BadPoint, (5, 10), "positional"),
    ("yield point(*args)", dg.BadPoint, (5, 10), "positional"),
    ("yield point()", dg.BadPoint, (5, 10), "positional"),
    ("yield from point('n')", dg.BadPoint, (5, 15), "a name and a generator"),
    ("await point('n')", dg.BadPoint, (5, 10), "a name and an awaitable"),
    ("x = point('n', 1)", dg.BadPoint, (5, 8), "operand"),
    ("yield wrap(point('n', 1))", dg.BadPoint, (5, 15), "operand"),
    ("yield [point('n', 1) for _ in (yield)]", dg.BadPoint, (5, 11), "operand"),
    ("yield point('n', 1); yield point('n', 2)", dg.DuplicatePoint, (5, 31), "n"),
]


@pytest.mark.parametrize(("statement", "problem", "where", "detail"), PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_point_problems(statement: str, problem: type[dg.Diagnostic], where: tuple[int, int], detail: str) -> None:
    kind = "async def" if "await" in statement else "def"
    fn, positions, names = parse(f"from runtime import point\n\n@durable\n{kind} f(name, args):\n    {statement}\n")
    ((node, found, text),) = label_function(fn, positions, names).problems
    start = positions[node].start
    assert (found, (start.line, start.column)) == (problem, where)
    assert detail in text
    assert problem(path="m.py", line=1, column=1, detail=text).text().startswith(f"m.py:1:1: error: {problem.code}")


def test_valid_points_and_nested_scopes_are_no_problem() -> None:
    source = NAMED + "        yield point('a.b:c-d_1', 1)\n        def g():\n            return point('x', 1)\n"
    assert label(source).problems == []


def test_diagnostic_codes() -> None:
    assert (dg.BadPoint.code, dg.DuplicatePoint.code) == ("DG008", "DG009")
    assert dg.BadPoint.hint and dg.DuplicatePoint.hint


def test_strip_points_keeps_positions() -> None:
    source = textwrap.dedent("""\
    from runtime import point

    @durable
    def f():
        decision = yield point("approval", ask())
        yield point("tick")
        total = yield from(point("charge", charge()))
        value = yield point("multi",
                            a +
                            b)
        def g():
            yield point("kept", 1)
        yield other(point)
    """)
    fn, positions, names = parse(source)
    labels = label_function(fn, positions, names)
    body = strip_points(list(fn.body.body), positions, names)  # type: ignore[attr-defined]
    code = cst.Module(body).code
    assert code == textwrap.dedent("""\
    decision = yield ask()
    yield
    total = yield from charge()
    value = yield (a +
                        b)
    def g():
        yield point("kept", 1)
    yield other(point)
    """)

    class Yields(cst.CSTVisitor):
        def __init__(self) -> None:
            self.found: list[tuple[int, int]] = []

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return False

        def visit_Yield(self, node: cst.Yield) -> None:
            self.found.append((positions[node].start.line, positions[node].start.column))

    finder = Yields()
    for statement in body:
        statement.visit(finder)
        assert statement in positions
    assert finder.found == sorted(labels.points)
    assert [labels.points[p].key for p in finder.found] == ["@approval", "@tick", "@charge", "@multi",
                                                            labels.points[13, 4].key]


def test_strip_points_without_names_returns_the_body() -> None:
    fn, positions, _ = parse("@durable\ndef f():\n    yield point('n', 1)\n")
    body = list(fn.body.body)  # type: ignore[attr-defined]
    assert strip_points(body, positions, frozenset()) == body


def test_owners_of_statements_and_clauses() -> None:
    source = textwrap.dedent("""\
    @durable
    def f(xs):
        with open(p) as fh, lock:
            for x in xs:
                try:
                    yield x
                except OSError:
                    pass
                finally:
                    close()
        match xs:
            case [a, *_] if a:
                pass
    """)
    owners = label(source).owners
    assert {pos: o.display for pos, o in owners.items()} == {
        (3, 4): "with open(p) as fh, lock:",
        (4, 8): "with open(p) as fh, lock: › for x in xs:",
        (5, 12): "with open(p) as fh, lock: › for x in xs: › try:",
        (6, 16): "with open(p) as fh, lock: › for x in xs: › try: › yield x",
        (7, 12): "with open(p) as fh, lock: › for x in xs: › try: › except OSError:",
        (9, 12): "with open(p) as fh, lock: › for x in xs: › try: › finally:",
    }  # the clauses of a statement that holds a yield, and the statements that hold one: not `pass`, `match`
    assert all(len(o.hash) == 8 for o in owners.values())
    assert len({o.hash for o in owners.values()}) == len(owners)


def test_display_drops_comments_and_line_breaks() -> None:
    source = textwrap.dedent("""\
    @durable
    def f(xs):
        for x in sorted(  # by size
                xs,
                key=len):
            value = yield ask(  # why
                x,
            )
    """)
    (spec,) = points_on(source, "value")
    assert spec.display == "for x in sorted(xs, key=len): › value = yield ask(x,)"


def test_point_is_the_identity_natively() -> None:
    marker = object()
    assert point("n", marker) is marker
    assert point("n") is None
