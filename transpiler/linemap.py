"""Position mapping: compiles generated code so tracebacks report the original file, lines and columns."""
from __future__ import annotations

import ast
import re
import types

_MARK = re.compile(r"#\s*dg@(\d+)\s*$")


class LineTable(list[int]):
    """``table[n]`` is the source line of generated line ``n`` (1-based; index 0 unused);
    ``columns[n]`` is what to add to a column offset on generated line ``n`` to get the source's. A
    line without a column shift is code the compiler wrote: its nodes get no columns (CPython then
    prints no carets under it rather than carets at the wrong place)."""

    def __init__(self, lines: list[int], columns: dict[int, int]) -> None:
        super().__init__(lines)
        self.columns = columns


def column_shift(generated: str, original: str) -> int | None:
    """How far the code of a generated line sits to the left of its source line's, when it is the
    source line's code re-indented (a trailing comment of the source line aside); None otherwise."""
    code = _MARK.sub("", generated.rstrip("\r\n")).rstrip()
    body = code.lstrip()
    source = original.rstrip("\r\n")
    source_body = source.lstrip()
    if not body or not source_body.startswith(body):
        return None
    rest = source_body[len(body):].strip()
    if rest and not rest.startswith("#"):
        return None
    return (len(source) - len(source_body)) - (len(code) - len(body))


def line_table(generated: str) -> list[int]:
    """Original line for each generated line (1-based; index 0 unused)."""
    lines = generated.splitlines()
    marks = [0] * (len(lines) + 2)
    for i, text in enumerate(lines, 1):
        m = _MARK.search(text)
        if m:
            marks[i] = int(m.group(1))
    # Unmarked lines belong to the next marked statement (hoisted parts come before it).
    following = 0
    for i in range(len(lines), 0, -1):
        if marks[i]:
            following = marks[i]
        else:
            marks[i] = following
    previous = 0
    for i in range(1, len(lines) + 1):
        if marks[i]:
            previous = marks[i]
        elif previous:
            marks[i] = previous
    return marks


def remap(tree: ast.AST, table: list[int]) -> None:
    """Rewrite every node's positions through ``table``: line numbers, and column offsets where the
    table knows them (a ``LineTable``), which only a node within one generated line can have."""
    columns = getattr(table, "columns", {})
    for node in ast.walk(tree):
        if "lineno" in node._attributes and getattr(node, "lineno", None) is not None:
            end_line = getattr(node, "end_lineno", None) or node.lineno
            shift = columns.get(node.lineno) if end_line == node.lineno else None
            _move_columns(node, shift)
            start = table[node.lineno] if node.lineno < len(table) and table[node.lineno] else node.lineno
            end = table[end_line] if end_line < len(table) and table[end_line] else start
            node.lineno = start
            node.end_lineno = max(start, end)


def _move_columns(node: ast.AST, shift: int | None) -> None:
    """Shift a node's columns onto its source line's, or drop them (-1: no column information)."""
    if shift is None or getattr(node, "end_col_offset", None) is None:
        node.col_offset = -1  # type: ignore[attr-defined]
        node.end_col_offset = -1  # type: ignore[attr-defined]
        return
    node.col_offset += shift  # type: ignore[attr-defined]
    node.end_col_offset += shift  # type: ignore[attr-defined]


def compile_mapped(generated: str, filename: str, table: list[int] | None = None) -> types.CodeType:
    """Compile generated code so its positions name ``filename``'s lines: ``table`` (from the compiler)
    maps each generated line to its original line, and its columns when it is a ``LineTable``; without
    one, the ``# dg@N`` marks are read (and no columns are kept)."""
    tree = ast.parse(generated, filename)
    remap(tree, table if table is not None else line_table(generated))
    return compile(tree, filename, "exec", dont_inherit=True)
