"""Compile-time diagnostics of ``transpiler.compile_source`` (README: "Diagnostic codes").

Every problem is raised as ``transpiler.CompileError`` whose ``.diagnostics`` list every problem of
the module, each rendered as ``path:line:col: error: CODE message`` followed by a hint line.
Lines and columns are 1-based (as in compiler messages and CPython's ``SyntaxError.offset``);
expectations are derived from the source text itself (the position of the offending token) or from
CPython's own parser, never from the compiler's output.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import transpiler
from transpiler import CompileError, compile_source

PATH = "pkg/flows.py"
ROOT = Path(__file__).resolve().parent.parent


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def pos_of(source: str, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the ``occurrence``-th appearance of ``needle`` in ``source``."""
    index = -1
    for _ in range(occurrence + 1):
        index = source.index(needle, index + 1)
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return line, column


def line_of(source: str, needle: str) -> int:
    return pos_of(source, needle)[0]


def compile_error(source: str, *, all_generators: bool = False, path: str = PATH) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile_source(source, path, all_generators=all_generators)
    err = info.value
    assert isinstance(err, Exception)
    assert err.diagnostics, "CompileError without diagnostics"
    return err


def only(err: CompileError):
    assert len(err.diagnostics) == 1, [d.text() for d in err.diagnostics]
    return err.diagnostics[0]


HEADLINE = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<col>\d+): error: (?P<code>DG\d{3}) (?P<msg>.+)$")


def check_text(diag, code: str, line: int, column: int, path: str = PATH) -> str:
    """The diagnostic's text is ``path:line:col: error: CODE message`` plus an indented hint line."""
    text = diag.text()
    lines = text.splitlines()
    assert len(lines) >= 2, f"no hint line in {text!r}"
    m = HEADLINE.match(lines[0])
    assert m, f"bad headline {lines[0]!r}"
    assert m["path"] == path
    assert (int(m["line"]), int(m["col"])) == (line, column), text
    assert m["code"] == code
    assert m["msg"].strip()
    assert re.match(r"^\s+hint: \S", lines[1]), f"bad hint line {lines[1]!r}"
    return m["msg"]


def check(diag, cls_name: str, code: str, line: int, column: int) -> str:
    assert type(diag).__name__ == cls_name
    assert diag.code == code
    assert diag.path == PATH
    assert (diag.line, diag.column) == (line, column), diag.text()
    return check_text(diag, code, line, column)


# ============================================================================ the exception itself


def test_compile_error_is_exported_and_str_lists_every_diagnostic():
    assert transpiler.CompileError is CompileError
    source = src("""
        from runtime import durable

        @durable
        def f():
            return 1

        @durable
        def g():
            return 2
    """)
    err = compile_error(source)
    assert len(err.diagnostics) == 2
    message = str(err)
    for d in err.diagnostics:
        assert d.text() in message
    assert message.count("hint:") == 2


# ============================================================================ DG001 syntax


SYNTAX_CASES = [
    "x = 1\ndef f(:\n    pass\n",
    "a = 1\nclass 3:\n    pass\n",
    "a = 1\nb = 2\nc = = 3\nd = 4\n",
    "import os\n\nif True\n    pass\n",
]


@pytest.mark.parametrize("source", SYNTAX_CASES, ids=["def-paren", "class-number", "double-assign", "if-colon"])
def test_dg001_syntax_error_position_matches_cpython(source):
    with pytest.raises(SyntaxError) as native:
        compile(source, PATH, "exec", dont_inherit=True)
    want_line, want_col = native.value.lineno, native.value.offset
    diag = only(compile_error(source))
    assert type(diag).__name__ == "SyntaxProblem" and diag.code == "DG001"
    # The line must be CPython's; the column may differ by one (parsers disagree on which token).
    assert diag.line == want_line, f"{diag.text()}\nCPython reports line {want_line}, column {want_col}"
    assert abs(diag.column - want_col) <= 1, f"{diag.text()}\nCPython reports column {want_col}"
    msg = check_text(diag, "DG001", diag.line, diag.column)
    assert "syntax" in msg.lower()


def test_dg001_reported_even_without_any_durable_function():
    source = "def plain():\n    return (1,\n"
    diag = only(compile_error(source))
    assert diag.code == "DG001"


# ============================================================================ DG002 reserved names


def test_dg002_assignment():
    source = src("""
        from runtime import durable

        @durable
        def gen():
            x = 1
            _dg_total = x
            yield _dg_total
    """)
    err = compile_error(source)
    diags = [d for d in err.diagnostics if d.code == "DG002"]
    assert diags and all(type(d).__name__ == "ReservedName" for d in diags)
    line, col = pos_of(source, "_dg_total")
    msg = check(diags[0], "ReservedName", "DG002", line, col)
    assert "_dg_total" in msg


def test_dg002_parameter():
    source = src("""
        from runtime import durable

        @durable
        def gen(a, _dg_param=1):
            yield a
    """)
    diag = only(compile_error(source))
    line, col = pos_of(source, "_dg_param")
    msg = check(diag, "ReservedName", "DG002", line, col)
    assert "_dg_param" in msg


def test_dg002_loop_target_in_method():
    source = src("""
        from runtime import durable


        class Jobs:
            @durable
            def run(self):
                for _dg_i in range(3):
                    yield self
    """)
    diag = only(compile_error(source))
    line, col = pos_of(source, "_dg_i")
    check(diag, "ReservedName", "DG002", line, col)


def test_dg002_not_reported_outside_durable_functions():
    source = src("""
        from runtime import durable

        def helper():
            _dg_plain = 1
            yield _dg_plain

        @durable
        def gen():
            yield 1
    """)
    out = compile_source(source, PATH)
    assert "_dg_rt.compiled" in out


# ============================================================================ DG003 async


def test_dg003_durable_async_generator():
    source = src("""
        from runtime import durable


        @durable
        async def agen():
            yield 1
    """)
    diag = only(compile_error(source))
    line, col = pos_of(source, "async def")
    check(diag, "AsyncNotSupported", "DG003", line, col)
    assert "agen" in diag.text()


def test_durable_coroutine_method_compiles():
    source = src("""
        from runtime import durable

        class Service:
            @durable
            async def fetch(self):
                return 1
    """)
    out = compile_source(source, PATH)
    assert "@_dg_rt.compiled(" in out and "async def fetch(self):" in out


def test_dg006_async_comprehension_with_an_assignment_expression() -> None:
    source = src("""
        from runtime import durable

        async def f(x):
            return x

        @durable
        async def flow(xs):
            values = [last := await f(x) for x in xs]
            return values, last
    """)
    diag = only(compile_error(source))
    check(diag, "UnsupportedConstruct", "DG006", *pos_of(source, "[last"))
    assert "await or async for inside a comprehension that uses :=" in diag.text()


@pytest.mark.parametrize("statement", [
    "values = [await f(x) for x in xs]",
    "values = {x: await f(x) for x in xs}",
    "values = [x async for x in xs]",
])
def test_async_comprehensions_compile(statement: str) -> None:
    source = src(f"""
        from runtime import durable

        async def f(x):
            return x

        @durable
        async def flow(xs):
            {statement}
            return values
    """)
    assert "_dg_genexpr1" in compile_source(source, PATH)


def test_await_in_a_comprehension_first_iterable_compiles() -> None:
    source = src("""
        from runtime import durable

        @durable
        async def flow(source):
            return [x * 2 for x in await source()]
    """)
    assert "_dg_rt.resume_await" in compile_source(source, PATH)


@pytest.mark.parametrize("statement", ["async for x in xs:\n                pass",
                                       "async with xs as x:\n                pass"])
def test_async_for_and_async_with_compile(statement: str) -> None:
    source = src(f"""
        from runtime import durable

        @durable
        async def flow(xs):
            {statement}
    """)
    assert "_dg_rt.resume_await" in compile_source(source, PATH)


def test_dg003_reported_with_all_generators_too():
    source = src("""
        from runtime import durable

        @durable
        async def agen():
            yield 1
    """)
    diag = only(compile_error(source, all_generators=True))
    assert diag.code == "DG003"


# ============================================================================ DG004 non-generator


def test_dg004_plain_function():
    source = src("""
        from runtime import durable

        @durable
        def compute(n):
            return n * 2
    """)
    diag = only(compile_error(source))
    line, col = pos_of(source, "def compute")
    msg = check(diag, "NotAGenerator", "DG004", line, col)
    assert "compute" in msg


def test_dg004_method_and_attribute_decorator():
    source = src("""
        import runtime

        class Box:
            @runtime.durable
            def size(self):
                return 3
    """)
    diag = only(compile_error(source))
    line, col = pos_of(source, "def size")
    assert col == 5
    check(diag, "NotAGenerator", "DG004", line, col)


def test_dg004_yield_only_in_nested_function_does_not_count():
    source = src("""
        from runtime import durable

        @durable
        def outer():
            def inner():
                yield 1
            return inner
    """)
    diag = only(compile_error(source))
    line, col = pos_of(source, "def outer")
    check(diag, "NotAGenerator", "DG004", line, col)


# ============================================================================ DG006 unsupported constructs


def _dg006(source: str, construct: str, *, extra_ok: tuple[str, ...] = ()):
    """The DG006 diagnostic must point at the offending construct (its first token) or at the
    suspension inside it."""
    diag = only(compile_error(source))
    assert type(diag).__name__ == "UnsupportedConstruct" and diag.code == "DG006"
    paren_line, paren_col = pos_of(source, "(yield")
    allowed = {pos_of(source, construct), (paren_line, paren_col), (paren_line, paren_col + 1)}
    allowed |= {pos_of(source, e) for e in extra_ok}
    assert (diag.line, diag.column) in allowed, f"{diag.text()}\nexpected one of {sorted(allowed)}"
    msg = check_text(diag, "DG006", diag.line, diag.column)
    return diag, msg


def test_dg006_yield_in_fstring_format_spec():
    source = src("""
        from runtime import durable

        @durable
        def gen(x):
            text = f"{x:{(yield 1)}}"
            yield text
    """)
    diag, msg = _dg006(source, 'f"{x:', extra_ok=("text = f", "{x:"))
    assert "format spec" in msg


def test_dg006_yield_in_except_clause_type():
    source = src("""
        from runtime import durable

        @durable
        def gen():
            try:
                yield 0
            except (
                    (yield 1)
            ):
                pass
    """)
    diag, msg = _dg006(source, "except (")
    assert "except" in msg
    # the diagnostic is not placed at the def or at the try
    assert diag.line != line_of(source, "def gen") and diag.line != line_of(source, "try:")


def test_dg006_yield_in_annotation():
    source = src("""
        from runtime import durable

        @durable
        def gen():
            yield 0
            value: (yield 1) = 3
    """)
    diag, msg = _dg006(source, "value:", extra_ok=("(yield 1) = 3",))
    assert "annotation" in msg


# ============================================================================ DG007 coroutine decorators


COROUTINE_CASES = {
    "types-above": ("import types", "@types.coroutine\n@durable", "@types.coroutine"),
    "types-below": ("import types", "@durable\n@types.coroutine", "@types.coroutine"),
    "asyncio-above": ("import asyncio", "@asyncio.coroutine\n@durable", "@asyncio.coroutine"),
    "imported-name-below": ("from types import coroutine as legacy", "@durable\n@legacy", "@legacy"),
}


@pytest.mark.parametrize("case", sorted(COROUTINE_CASES))
def test_dg007_coroutine_decorator_stacked_on_durable(case):
    """``types.coroutine`` rewrites the function's code object, so the function would silently stop
    being durable: refused at compile time, above or below ``@durable``."""
    imports, decorators, needle = COROUTINE_CASES[case]
    source = src(f"""
        {imports}
        from runtime import durable

        __DECORATORS__
        def ticks(n):
            for i in range(n):
                yield i
    """).replace("__DECORATORS__", decorators)
    diag = only(compile_error(source))
    line, col = pos_of(source, needle)
    msg = check(diag, "CoroutineDecorator", "DG007", line, col)
    assert needle[1:] in msg and "ticks" in msg


def test_dg007_is_reported_by_durable_check_with_exit_code_3(tmp_path):
    source = src("""
        import types
        from runtime import durable


        class Jobs:
            @durable
            @types.coroutine
            def run(self):
                yield self
    """)
    (tmp_path / "flows.py").write_text(source, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", "check", "flows.py"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    line, col = pos_of(source, "@types.coroutine")
    assert f"flows.py:{line}:{col}: error: DG007 " in proc.stderr, proc.stderr
    assert "hint: " in proc.stderr and "Traceback" not in proc.stderr


def test_coroutine_decorated_generators_are_left_alone_with_all_generators():
    source = src("""
        import types


        @types.coroutine
        def legacy():
            yield
    """)
    assert compile_source(source, PATH, all_generators=True) == source


# ============================================================================ several problems


def test_every_problem_in_a_module_is_reported():
    source = src("""
        from runtime import durable

        @durable
        def reserved():
            _dg_a = 1
            yield _dg_a

        @durable
        def not_a_generator():
            return 2

        @durable
        async def asynchronous():
            yield 3

        def fine():
            yield 4

        @durable
        def unsupported(t):
            try:
                pass
            except (yield):
                pass

        class Holder:
            @durable
            def method(self):
                return 5
    """)
    err = compile_error(source)
    got = sorted((d.code, d.line, d.column) for d in err.diagnostics)
    want = sorted([
        ("DG002",) + pos_of(source, "_dg_a"),
        ("DG004",) + pos_of(source, "def not_a_generator"),
        ("DG003",) + pos_of(source, "async def asynchronous"),
        ("DG006", line_of(source, "except (yield)"), 0),
        ("DG004",) + pos_of(source, "def method"),
    ])
    # DG006 column is checked elsewhere: compare it by line only
    got = [(c, l, col if c != "DG006" else 0) for c, l, col in got]
    assert got == want, str(err)
    text = str(err)
    assert text.count(f"{PATH}:") == 5
    assert text.count("hint:") == 5


def test_problems_in_two_functions_with_unsupported_constructs_are_both_reported():
    source = src("""
        from runtime import durable

        @durable
        def first(b):
            s = f"{b:{(yield)}}"

        @durable
        def second():
            x: (yield) = 1
    """)
    err = compile_error(source)
    assert [d.code for d in err.diagnostics] == ["DG006", "DG006"]
    assert sorted(d.line for d in err.diagnostics) == [
        line_of(source, 's = f"{b:{(yield)}}"'), line_of(source, "x: (yield)")]


# ============================================================================ all_generators


ALL_GENERATORS_SOURCE = src("""
    import asyncio

    async def ticker(n):
        for i in range(n):
            yield i
            await asyncio.sleep(0)

    async def coro():
        return 7

    def plain(n):
        total = 0
        for i in range(n):
            total += yield i
        return total

    def not_a_generator():
        return 3
""")


def _exec(code: str, name: str) -> dict:
    namespace: dict = {"__name__": name}
    exec(compile(code, f"{name}.py", "exec"), namespace)
    return namespace


def test_all_generators_skips_async_generators_silently_and_compiles_generators_and_coroutines():
    out = compile_source(ALL_GENERATORS_SOURCE, PATH, all_generators=True)
    assert "_dg_rt.compiled" in out
    ns = _exec(out, "dg_allgen_mod")
    assert getattr(ns["plain"], "__durable__", None) is not None
    assert getattr(ns["ticker"], "__durable__", None) is None
    assert getattr(ns["coro"], "__durable__", None) is not None  # coroutine functions compile too
    assert getattr(ns["not_a_generator"], "__durable__", None) is None
    # the async generator and coroutine still behave natively
    import asyncio

    async def drain():
        return [i async for i in ns["ticker"](3)], await ns["coro"]()

    assert asyncio.run(drain()) == ([0, 1, 2], 7)
    gen = ns["plain"](3)
    assert next(gen) == 0 and gen.send(5) == 1 and gen.send(6) == 2
    with pytest.raises(StopIteration) as stop:
        gen.send(7)
    assert stop.value.value == 18
    assert isinstance(gen, types.GeneratorType)
    assert ns["not_a_generator"]() == 3


def test_without_all_generators_undecorated_generators_are_left_alone():
    out = compile_source(ALL_GENERATORS_SOURCE, PATH)
    assert out == ALL_GENERATORS_SOURCE


@pytest.mark.parametrize("order", ["above", "below"])
def test_dg007_on_the_fly(tmp_path, monkeypatch, order):
    """A module that was not compiled: ``@durable`` compiles the function when it runs, and refuses."""
    decorators = "@types.coroutine\n@durable" if order == "above" else "@durable\n@types.coroutine"
    source = "import types\nfrom runtime import durable\n\n" + decorators + "\ndef ticks():\n    yield 1\n"
    path = tmp_path / f"dg007_fly_{order}.py"
    path.write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    from runtime import DurableCompileError
    with pytest.raises(DurableCompileError) as info:
        __import__(f"dg007_fly_{order}")
    line, col = pos_of(source, "@types.coroutine")
    assert str(info.value).startswith(f"{path}:{line}:{col}: error: DG007 @types.coroutine on @durable function")
