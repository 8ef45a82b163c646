"""Analysis: finds the top-level statements that hold durable functions, so only they pay for libcst."""
from __future__ import annotations

import ast
import re

from .cstutil import PREFIX

TARGET = PREFIX + "target"
"""Synthetic decorator the on-the-fly compiler puts on the one function it compiles (removed)."""

_NEWLINE = re.compile(r"\r\n|\r|\n")


def split_lines(source: str) -> list[str]:
    """Lines with their endings, split where CPython's tokenizer splits them (not at form feeds)."""
    lines: list[str] = []
    start = 0
    for m in _NEWLINE.finditer(source):
        lines.append(source[start:m.end()])
        start = m.end()
    if start < len(source):
        lines.append(source[start:])
    return lines


def is_durable_decorator(node: ast.expr) -> bool:
    if isinstance(node, ast.Call):  # ``@durable(keep_version=True)``
        node = node.func
    if isinstance(node, ast.Name):
        return node.id in ("durable", TARGET)
    return isinstance(node, ast.Attribute) and node.attr == "durable"


class _Finder(ast.NodeVisitor):
    """Does a statement hold a function the compiler must see (compile or report)?"""

    def __init__(self, all_generators: bool) -> None:
        self.all_generators = all_generators
        self.found = False

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if any(is_durable_decorator(d) for d in node.decorator_list) or (
                self.all_generators and _suspends(node)):
            self.found = True
        else:
            self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]


def _suspends(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A generator function or a coroutine function (``all_generators`` compiles both; an asynchronous
    generator, an ``async def`` with a yield, is left alone)."""
    return _yields(func) if isinstance(func, ast.FunctionDef) else not _yields(func)


def _yields(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    todo: list[ast.AST] = list(func.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return False


def durable_regions(tree: ast.Module, lines: list[str], all_generators: bool) -> list[tuple[int, int]]:
    """(first line, last line) of every top-level statement holding a durable function."""
    regions = []
    for statement in tree.body:
        if isinstance(statement, _SIMPLE):
            continue  # a simple statement cannot hold a def
        decorators = getattr(statement, "decorator_list", [])
        first = min([statement.lineno, *(d.lineno for d in decorators)])
        last = statement.end_lineno or statement.lineno
        if not all_generators and not any("durable" in line or TARGET in line for line in lines[first - 1:last]):
            continue  # cheap text test before walking the tree
        finder = _Finder(all_generators)
        finder.visit(statement)
        if finder.found:
            regions.append((first, last))
    return regions


_SIMPLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Import, ast.ImportFrom, ast.Pass, ast.Return,
           ast.Delete, ast.Raise, ast.Assert, ast.Global, ast.Nonlocal, ast.Break, ast.Continue)


def masked_source(lines: list[str], regions: list[tuple[int, int]]) -> str:
    """The source with everything outside ``regions`` blanked, keeping line numbers: a run of several
    blank lines becomes one multi-line string statement, which libcst parses as a single node.
    Every top-level simple statement of the result is such a filler."""
    out: list[str] = []
    line = 1
    for first, last in [*regions, (len(lines) + 1, len(lines))]:
        gap = first - line
        if gap == 1:
            out.append("\n")
        elif gap > 1:
            out.append('"""' + "\n" * (gap - 1) + '"""\n')
        out.extend(lines[first - 1:last])
        line = last + 1
    return "".join(out)


def header_line(tree: ast.Module) -> int:
    """The line after which the compiler's declarations go: after the docstring and
    ``from __future__`` imports (0 when the module starts with neither)."""
    line = 0
    for i, statement in enumerate(tree.body):
        if i == 0 and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str):
            line = statement.end_lineno or statement.lineno
        elif isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            line = statement.end_lineno or statement.lineno
        else:
            break
    return line
