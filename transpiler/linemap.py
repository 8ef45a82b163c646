"""Line mapping: compiles generated code so tracebacks report the original file and lines."""
from __future__ import annotations

import ast
import re
import types

_MARK = re.compile(r"#\s*dg@(\d+)\s*$")


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
    """Rewrite every node's line numbers through ``table``."""
    for node in ast.walk(tree):
        if "lineno" in node._attributes and getattr(node, "lineno", None) is not None:
            start = table[node.lineno] if node.lineno < len(table) and table[node.lineno] else node.lineno
            end_line = getattr(node, "end_lineno", None) or node.lineno
            end = table[end_line] if end_line < len(table) and table[end_line] else start
            node.lineno = start
            node.end_lineno = max(start, end)
            if node.end_lineno == start and getattr(node, "end_col_offset", None) is not None:
                if node.end_col_offset < node.col_offset:
                    node.end_col_offset = node.col_offset


def compile_mapped(generated: str, filename: str, table: list[int] | None = None) -> types.CodeType:
    """Compile generated code so its positions name ``filename``'s lines: ``table`` (from the compiler)
    maps each generated line to its original line; without one, the ``# dg@N`` marks are read."""
    tree = ast.parse(generated, filename)
    remap(tree, table if table is not None else line_table(generated))
    return compile(tree, filename, "exec", dont_inherit=True)
