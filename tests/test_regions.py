"""Only the top-level statements holding durable functions are transformed (docs/design.md, "Passes").

For module layouts that stress the splicing (no docstring, ``__future__`` imports, CRLF line ends,
form feeds, no final newline, durable functions inside ``if``/``class``/``try`` blocks, comments
between decorators), the compiled module must run with durable generators that behave like the
native ones, every line outside the transformed statements must be copied unchanged, and the line
table must map each such line to itself.
"""
from __future__ import annotations

import ast
import itertools
import textwrap
import types

import pytest

import runtime
from transpiler import compile_source_mapped
from transpiler.linemap import compile_mapped
from transpiler.regions import split_lines

_ids = itertools.count(1)

LAYOUTS = {
    "no docstring": '''
        from runtime import durable
        SCALE = 2
        @durable
        def gen(n):
            for i in range(n):
                yield i * SCALE
        def after():
            return "after"
    ''',
    "future import and docstring": '''
        """Doc."""
        from __future__ import annotations
        from runtime import durable

        def before() -> int:
            return 1

        @durable
        def gen(n: int):
            total: int = 0
            for i in range(n):
                total += i
                yield total
            return total
    ''',
    "inside if, class and try": '''
        from runtime import durable
        if True:
            @durable
            def gen(n):
                yield from range(n)
        class Holder:
            x = 1
            @durable
            def method(self, n):
                yield self.x + n
        try:
            import json
        except ImportError:
            json = None
    ''',
    "comments between decorators": '''
        import functools
        from runtime import durable

        # a comment before the function
        @durable
        # a comment between decorators
        @staticmethod
        def gen(n):
            # a comment in the body
            yield n
    ''',
}


def module_from(source: str):
    compiled = compile_source_mapped(source, "layout.py")
    name = f"dg_layout_{next(_ids)}"
    module = types.ModuleType(name)
    import sys
    sys.modules[name] = module
    exec(compile_mapped(compiled.code, "layout.py", compiled.lines), module.__dict__)
    return compiled, module


def native_module(source: str):
    module = types.ModuleType("native_layout")
    exec(compile(source.replace("from runtime import durable", "durable = lambda f: f"), "n.py", "exec"),
         module.__dict__)
    return module


def transformed_spans(source: str) -> list[range]:
    """Lines of the top-level statements holding a @durable function, found with ast."""
    spans = []
    for statement in ast.parse(source).body:
        holds = any(isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Name) and d.id == "durable" for d in node.decorator_list)
            for node in ast.walk(statement))
        if holds:
            first = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))])
            spans.append(range(first, statement.end_lineno + 1))
    return spans


def untouched_lines_are_copied(source: str, compiled) -> None:
    """Every line outside the transformed statements is in the output, in order, unchanged, and the
    line table maps it to itself."""
    spans = transformed_spans(source)
    original = split_lines(source)
    generated = split_lines(compiled.code)
    position = 0
    for n, text in enumerate(original, 1):
        if any(n in span for span in spans):
            continue
        wanted = text.rstrip("\r\n")
        while generated[position].rstrip("\r\n") != wanted or compiled.lines[position + 1] != n:
            position += 1  # raises IndexError when the line is missing
        position += 1


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_compile_run_and_map(layout: str):
    source = textwrap.dedent(LAYOUTS[layout]).lstrip("\n")
    compiled, module = module_from(source)
    native = native_module(source)
    gen_name = "gen"
    holder = getattr(module, "Holder", None)
    for make, make_native in [(getattr(module, gen_name), getattr(native, gen_name))] + (
            [(lambda n: holder().method(n), lambda n: native.Holder().method(n))] if holder else []):
        gen, expected = make(3), list(make_native(3))
        first = next(gen)
        later = runtime.restore(runtime.snapshot(gen))
        runtime.detach(gen)
        assert [first, *later] == expected
    untouched_lines_are_copied(source, compiled)
    # every generated line maps to a line of the source
    assert all(1 <= n <= len(source.splitlines()) for n in compiled.lines[1:])


def test_crlf_form_feed_and_no_final_newline():
    source = "from runtime import durable\r\n\x0c\r\nX = 1\r\n@durable\r\ndef gen(n):\r\n    yield n + X"
    compiled, module = module_from(source)
    gen = module.gen(4)
    assert next(gen) == 5
    assert runtime.restore(runtime.snapshot(gen)) is not None
    lines = [line.rstrip("\r\n") for line in split_lines(compiled.code)]
    assert "\x0c" in compiled.code and "X = 1" in lines
    assert compiled.lines[lines.index("X = 1") + 1] == 3
    untouched_lines_are_copied(source, compiled)


def test_a_module_without_durable_functions_is_returned_unchanged():
    source = "def plain():\n    yield 1\n"
    compiled = compile_source_mapped(source, "plain.py")
    assert compiled.code is source and not compiled.changed
    assert compiled.lines == [0, 1, 2]
