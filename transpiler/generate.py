"""Code generation: finds durable functions in a module and replaces each with its compiled form."""
from __future__ import annotations

import ast
import hashlib
import symtable
import textwrap
from dataclasses import dataclass, field
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from . import FORMAT_VERSION, genexps, points, regions
from . import diagnostics as dg
from .canonical import canonical, digest
from .cstutil import (DYNAMIC_NAMES, FRAME, PREFIX, RESTORE, RT, KeepPositions, OwnScope, assign, block, body_of,
                      code_of, dotted_name, expr, has_suspension, if_, is_async_comprehension, small, stmt)
from .emit import Emitter
from .linemap import LineTable, column_shift, line_table
from .liveness import analyze_strict
from .lower_stmt import DETACHED_CLASS, DETACHING, RUNTIME_LOCALS, StmtLowerer, Unsupported


MARK = "# dg@"
"""Trailing comment that records the original line of a generated statement."""

# recomputed on restore or bound at start
_NOT_SAVED = (PREFIX + "wx", PREFIX + "ax", genexps.FUNCTION, *RUNTIME_LOCALS)

CELLS = PREFIX + "cells"
"""Local holding a never-called lambda that closes over every captured variable of a durable
function: its ``__closure__`` gives the snapshot the frame's cell objects."""


@dataclass
class FunctionPlan:
    qualname: str
    meta: str
    declaration: cst.BaseStatement
    variant: list[cst.BaseStatement] = field(default_factory=list)
    registration: cst.BaseStatement | None = None  # a generator expression's decorator, made once


@dataclass
class ModuleState:
    path: str
    all_generators: bool
    positions: dict
    diagnostics: list[dg.Diagnostic] = field(default_factory=list)
    replaced: dict[int, cst.CSTNode] = field(default_factory=dict)
    meta_prefix: str = ""
    scope: tuple[tuple[str, str], ...] = ()
    plans: list[FunctionPlan] = field(default_factory=list)
    source: str = ""
    coroutine_decorators: frozenset[str] = frozenset()  # dotted names of types/asyncio.coroutine here
    point_names: frozenset[str] = frozenset()  # dotted names of runtime.point here
    module_names: frozenset[str] | Any = frozenset()  # what the module may bind at its top level (bound_names)
    _symtable: symtable.SymbolTable | None = None

    def table_of(self, name: str, line: int) -> symtable.SymbolTable | None:
        """The symbol table of the function ``name`` defined at ``line``."""
        if self._symtable is None:
            self._symtable = symtable.symtable(self.source, self.path, "exec")
        todo = [self._symtable]
        while todo:
            t = todo.pop()
            if t.get_type() == "function" and t.get_name() == name and t.get_lineno() == line:
                return t
            todo.extend(t.get_children())
        return None

    def line_of(self, node: cst.CSTNode) -> int:
        pos = self.positions.get(node)
        return pos.start.line if pos is not None else 0

    def position_of(self, node: cst.CSTNode) -> tuple[int, int] | None:
        pos = self.positions.get(node)
        return (pos.start.line, pos.start.column) if pos is not None else None

    def report(self, cls: type[dg.Diagnostic], node: cst.CSTNode, detail: str = "") -> None:
        pos = self.positions.get(node)
        line, col = (pos.start.line, pos.start.column + 1) if pos is not None else (0, 0)
        self.diagnostics.append(cls(self.path, line, col, detail))


TARGET = regions.TARGET
"""Synthetic decorator the on-the-fly compiler puts on the one function it compiles (removed)."""


def _is_durable_decorator(d: cst.Decorator) -> bool:
    node = d.decorator
    if isinstance(node, cst.Call):  # ``@durable(keep_version=True)``
        node = node.func
    if isinstance(node, cst.Name):
        return node.value in ("durable", TARGET)
    if isinstance(node, cst.Attribute):
        return node.attr.value == "durable"
    return False


_COROUTINE_DECORATORS = {"types": "types.coroutine", "asyncio": "asyncio.coroutine"}


def coroutine_decorators(tree: ast.Module) -> frozenset[str]:
    """The dotted names under which the module can reach ``types.coroutine`` or ``asyncio.coroutine``
    (``types.coroutine``, ``import types as t`` -> ``t.coroutine``, ``from types import coroutine``)."""
    names = set(_COROUTINE_DECORATORS.values())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(f"{a.asname}.coroutine" for a in node.names if a.name in _COROUTINE_DECORATORS and a.asname)
        elif isinstance(node, ast.ImportFrom) and node.module in _COROUTINE_DECORATORS and not node.level:
            names.update(a.asname or a.name for a in node.names if a.name == "coroutine")
    return frozenset(names)


class _Everything:
    def __contains__(self, name: object) -> bool:
        return True


def bound_names(tree: ast.Module) -> frozenset[str] | _Everything:
    """Every name the module's code could bind at its top level: names stored, imported, defined or
    declared global anywhere in it (on purpose more than the module really binds); everything after
    a ``from m import *``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return _Everything()
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Global):
            names.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return frozenset(names)


def _coroutine_decorator(func: cst.FunctionDef, names: frozenset[str]) -> cst.Decorator | None:
    """The decorator that makes ``func`` a generator-based coroutine, if it has one."""
    return next((d for d in func.decorators if dotted_name(d.decorator) in names), None)


def _docstring(body: list[cst.BaseStatement]) -> tuple[list[cst.BaseStatement], list[cst.BaseStatement]]:
    if body and isinstance(body[0], cst.SimpleStatementLine) and len(body[0].body) == 1:
        first = body[0].body[0]
        if isinstance(first, cst.Expr) and isinstance(first.value, (cst.SimpleString, cst.ConcatenatedString)):
            return [body[0]], body[1:]
    return [], body


def definition_tree(func: cst.FunctionDef) -> ast.Module:
    """The ``ast`` of a function's definition, decorators left out: what its fingerprint and version hash."""
    return ast.parse(textwrap.dedent(code_of(func.with_changes(decorators=[], leading_lines=[]))))


def fingerprint(tree: ast.Module) -> bytes:
    """Hash of the function's normalized code (comments, formatting and decorators excluded), as
    ``ast.dump`` gives it: it differs between some Python versions, so it identifies the code only for
    snapshots of format 1 and 2 (``version`` is the identity that is the same on every version)."""
    return hashlib.blake2b(f"{FORMAT_VERSION}:{ast.dump(tree)}".encode(), digest_size=8).digest()


def version(tree: ast.Module) -> str:
    """The function's version: a hash of its canonical code (comments, formatting, decorators and
    positions excluded) that is the same on every supported Python version."""
    return digest(str(FORMAT_VERSION), canonical(tree))


class _Substitute(KeepPositions):
    """Puts already-compiled nested functions and classes into an original function body."""

    def __init__(self, replaced: dict[int, cst.CSTNode], positions: dict) -> None:  # type: ignore[type-arg]
        super().__init__(positions)
        self.replaced = replaced

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.CSTNode:
        return self.replaced.get(id(original), updated)

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.CSTNode:
        return self.replaced.get(id(original), updated)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return id(node) not in self.replaced

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return id(node) not in self.replaced


def _rewrite(node: cst.BaseStatement, replaced: dict[int, cst.CSTNode], hoist: "_Hoist",
             positions: dict) -> cst.BaseStatement:  # type: ignore[type-arg]
    """Substitute compiled nested definitions and hoist declarations, rebuilding only what changes
    (untouched nodes keep their identity, which the position table is keyed by)."""
    kinds = {type(n) for n in _walk_scope(node)}
    if kinds & {cst.FunctionDef, cst.ClassDef}:
        node = node.visit(_Substitute(replaced, positions))  # type: ignore[assignment]
    if kinds & {cst.Global, cst.Nonlocal}:
        node = node.visit(hoist)  # type: ignore[assignment]
    return node


def _walk_scope(node: cst.CSTNode) -> list[cst.CSTNode]:
    out = [node]
    if not isinstance(node, (cst.FunctionDef, cst.ClassDef)):
        for child in node.children:
            out += _walk_scope(child)
    return out


class _Hoist(KeepPositions):
    """Moves ``global``/``nonlocal`` declarations to the top: both bodies use the names."""

    def __init__(self, positions: dict) -> None:  # type: ignore[type-arg]
        super().__init__(positions)
        self.found: list[cst.BaseSmallStatement] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine
                                  ) -> cst.SimpleStatementLine | cst.RemovalSentinel:
        keep = []
        for part in updated.body:
            if isinstance(part, (cst.Global, cst.Nonlocal)):
                self.found.append(part.with_changes(semicolon=cst.MaybeSentinel.DEFAULT))
            else:
                keep.append(part)
        if len(keep) == len(updated.body):
            return updated
        if not keep:
            return updated.with_changes(body=[cst.Pass()])
        return updated.with_changes(body=keep)


def _comment(line: int) -> cst.TrailingWhitespace:
    return cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"{MARK}{line}"))


def _mark_lines(node: cst.CSTNode, line: int) -> cst.CSTNode:
    comment = _comment(line)
    if isinstance(node, cst.SimpleStatementLine):
        return node.with_changes(trailing_whitespace=comment)
    body = getattr(node, "body", None)
    if isinstance(body, cst.IndentedBlock):
        return node.with_changes(body=body.with_changes(header=comment))
    if isinstance(body, cst.SimpleStatementSuite):
        return node.with_changes(body=body.with_changes(trailing_whitespace=comment))
    return node


class _MarkAll(cst.CSTTransformer):
    """Tags every statement (and clause header) of the module with its original line."""

    def __init__(self, positions: dict) -> None:  # type: ignore[type-arg]
        self.positions = positions

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> cst.CSTNode:  # type: ignore[override]
        if isinstance(original, (cst.BaseStatement, cst.ExceptHandler, cst.ExceptStarHandler, cst.Else,
                                 cst.Finally, cst.MatchCase, cst.Decorator)):
            pos = self.positions.get(original)
            if pos is not None:
                if isinstance(updated, cst.Decorator):
                    return updated.with_changes(trailing_whitespace=_comment(pos.start.line))
                if isinstance(original, (cst.FunctionDef, cst.ClassDef)) and original.decorators:
                    # The statement starts at its first decorator; its header line is the def.
                    header = self.positions.get(original.name)
                    return _mark_lines(updated, header.start.line if header else pos.start.line)
                return _mark_lines(updated, pos.start.line)
        return updated


class _MarkingLowerer(StmtLowerer):
    """A statement lowerer that tags each produced statement with its original line."""

    def lower_stmt(self, node: cst.BaseStatement) -> list[cst.BaseStatement]:
        out = super().lower_stmt(node)
        line = self.line_of(node)
        if not line:
            return out
        marked: list[cst.BaseStatement] = []
        for s in out:
            m = _mark_lines(s, line)
            for table in (self.exprs.yield_lines, self.exprs.yield_nodes, self.exprs.await_slots, self.try_info):
                if id(s) in table:
                    table[id(m)] = table.pop(id(s))  # type: ignore[index]
            marked.append(m)
        return marked


def captured_names(state: ModuleState, original: cst.FunctionDef) -> tuple[list[str], list[str]]:
    """(cell variables, free variables) of a durable function: its locals that nested functions,
    lambdas, classes or comprehensions capture, and the enclosing function's variables it uses.
    Comprehensions count on every version (3.12+ inlines them), so the compiled code is the same."""
    cells, frees, _ = scope_names(state, original)
    return cells, frees


def scope_names(state: ModuleState, original: cst.FunctionDef) -> tuple[list[str], list[str], set[str]]:
    """``captured_names`` and the names a nested scope of the function resolves in a function
    scope (its own locals and the enclosing functions' variables it passes through)."""
    header = state.positions.get(original.name)
    table = state.table_of(original.name.value, header.start.line) if header is not None else None
    if table is None:
        return [], [], set()
    tree = ast.parse(textwrap.dedent(code_of(original.with_changes(decorators=[], leading_lines=[]))))
    return _scope_names(table, tree.body[0])


def plain_locals(state: ModuleState, original: cst.FunctionDef, cells: list[str]) -> frozenset[str]:
    """The locals of a function that only its own code can rebind: not cells, not a ``:=`` target, in a
    function that does not read its scope dynamically (``locals()``, ``eval``...). While its frame is
    suspended such a local cannot change, so an operand that reads it before an await need not be
    copied first (``total += await f()`` stays as written)."""
    header = state.positions.get(original.name)
    table = state.table_of(original.name.value, header.start.line) if header is not None else None
    if table is None:
        return frozenset()
    walrus: set[str] = set()
    for node in ast.walk(definition_tree(original)):
        if isinstance(node, ast.Name) and node.id in DYNAMIC_NAMES:
            return frozenset()
        if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            walrus.add(node.target.id)
    return frozenset(set(table.get_locals()) - set(cells) - walrus)  # type: ignore[attr-defined]


def _synthetic_scope_names(definition: cst.FunctionDef, visible: set[str], klass: str | None
                           ) -> tuple[list[str], list[str], set[str]]:
    """``scope_names`` of a function the compiler wrote (a generator expression's): its symbol
    table, in a function binding the names it may resolve in a function scope (and in its class,
    so that private names are mangled as in the real code)."""
    code = textwrap.dedent(code_of(definition))
    binds = f"    {' = '.join(sorted(visible))} = None\n" if visible else "    pass\n"
    context = f"def {PREFIX}ctx():\n{binds}{textwrap.indent(code, '    ')}"
    if klass is not None:
        context = f"class {klass}:\n{textwrap.indent(context, '    ')}"
    todo = [symtable.symtable(context, "<generator expression>", "exec")]
    while todo:
        table = todo.pop()
        if table.get_type() == "function" and table.get_name() == definition.name.value:
            cells, frees, inner = _scope_names(table, ast.parse(code).body[0])
            return cells, frees, visible | inner
        todo.extend(table.get_children())
    raise AssertionError("the generator expression's function is missing from its symbol table")


def _scope_names(table: symtable.SymbolTable, func: ast.AST) -> tuple[list[str], list[str], set[str]]:
    comprehensions: list[ast.AST] = []
    comp_targets: set[str] = set()
    bound: set[str] = set()  # bound in the function itself, outside comprehension targets
    todo: list[ast.AST] = list(ast.iter_child_nodes(func))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            todo.extend([*node.decorator_list, *getattr(node, "bases", ())])
            continue  # their own tables are looked at below
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            comprehensions.append(node)
            comp_targets.update(n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name))
            bound.update(n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr))
            todo.append(node.generators[0].iter)  # evaluated in the function's own scope
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    # 3.12+ inlines comprehensions: their targets show up as the function's locals
    local = {s.get_name() for s in table.get_symbols() if s.is_local() and not s.is_global()
             and (s.get_name() in bound or s.is_parameter() or s.is_imported() or s.get_name() not in comp_targets)}
    frees = {s.get_name() for s in table.get_symbols() if s.is_free()}
    cells: set[str] = set()
    for child in table.get_children():
        cells.update(s.get_name() for s in child.get_symbols() if s.is_free() and s.get_name() in local)
    for node in comprehensions:  # names a comprehension's own scope reads (on 3.10/3.11: cells)
        targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        parts = [*node.generators[0].ifs, *node.generators[1:],
                 *([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt])]
        cells.update(n.id for part in parts for n in ast.walk(part)
                     if isinstance(n, ast.Name) and n.id in local and n.id not in targets)
    visible = (local | frees) - {"__class__"}
    cells.discard("__class__")
    frees.discard("__class__")
    return sorted(cells), sorted(frees - cells), visible


class _Unannotate(cst.CSTTransformer):
    """Annotated assignments to ``names`` made plain, outside nested scopes: a name the variant
    declares nonlocal can't be annotated (SyntaxError). CPython never evaluates the annotation of a
    function's local, so ``x: T = v`` is ``x = v``, and ``x: T`` does nothing (``pass``)."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def leave_AnnAssign(self, original: cst.AnnAssign, updated: cst.AnnAssign) -> cst.BaseSmallStatement:
        if not (isinstance(updated.target, cst.Name) and updated.target.value in self.names):
            return updated
        if updated.value is None:
            return cst.Pass(semicolon=updated.semicolon)
        return cst.Assign(targets=[cst.AssignTarget(updated.target)], value=updated.value, semicolon=updated.semicolon)


def _variant(updated: cst.FunctionDef, body: list[cst.BaseStatement], meta: str, cells: list[str],
             frees: list[str], klass: str | None) -> list[cst.BaseStatement]:
    """The cellular variant: the same compiled function nested in a factory that declares its
    captured variables, so they are free variables a restore can supply cells for (CPython makes
    a frame's own cell variables fresh). The factory is never called: ``_dg_rt.cellular`` takes
    the variant's code object from the factory's constants."""
    def strip(p: cst.Param) -> cst.Param:
        name = p.name.value
        return p.with_changes(name=cst.Name(PREFIX + "p_" + name) if name in cells else p.name,
                              default=None, equal=cst.MaybeSentinel.DEFAULT, annotation=None)
    ps = updated.params
    star = ps.star_arg
    params = ps.with_changes(
        params=[strip(p) for p in ps.params], posonly_params=[strip(p) for p in ps.posonly_params],
        kwonly_params=[strip(p) for p in ps.kwonly_params],
        star_arg=strip(star) if isinstance(star, cst.Param) else star,
        star_kwarg=strip(ps.star_kwarg) if ps.star_kwarg is not None else None)
    declare = small(cst.Nonlocal(names=[cst.NameItem(cst.Name(n)) for n in cells]))
    unannotate = _Unannotate(set(cells))
    body = [s.visit(unannotate) for s in body]  # type: ignore[misc]
    worker = updated.with_changes(decorators=[], params=params, returns=None, leading_lines=[],
                                  body=block([declare, *body]))
    names = [*cells, *frees]
    inner: list[cst.BaseStatement] = [stmt(" = ".join(names) + " = None\n"), worker]
    factory = PREFIX + "cellular" + meta[len(PREFIX + "meta"):]
    if klass is not None:  # private names are mangled with the class name, and super() needs __class__
        inner = [cst.ClassDef(name=cst.Name(klass), body=block([
            cst.FunctionDef(name=cst.Name(PREFIX + "f"), params=cst.Parameters(), body=block(inner))]))]
    return [cst.FunctionDef(name=cst.Name(factory), params=cst.Parameters(), body=block(inner)),
            stmt(f"{RT}.cellular({meta}, {factory}.__code__, {updated.name.value!r})\n"),
            stmt(f"del {factory}\n")]


def compile_function(state: ModuleState, original: cst.FunctionDef, updated: cst.FunctionDef,
                     qualname: str, klass: str | None = None, *, display: str | None = None,
                     scope: tuple[list[str], list[str], set[str]] | None = None) -> cst.FunctionDef:
    """Compile one durable function. ``display`` and ``scope`` are given for a function the compiler
    wrote itself (a generator expression's): the qualname CPython gives it, and its
    ``scope_names``."""
    if scope is None:
        for node in _names(original.with_changes(decorators=[])):
            if node.value.startswith(PREFIX):
                state.report(dg.ReservedName, node, node.value)
                return updated
    labels = points.label_function(original, state.positions, state.point_names) if scope is None else None
    if labels is not None and labels.problems:
        for node, problem, detail in labels.problems:
            state.report(problem, node, detail)
        return updated
    doc, body = _docstring(list(body_of(original.body)))
    hoist = _Hoist(state.positions)
    body = [_rewrite(s, state.replaced, hoist, state.positions) for s in body]
    if state.point_names:
        body = points.strip_points(body, state.positions, state.point_names)
    cells, frees, visible = scope if scope is not None else scope_names(state, original)
    body, found = genexps.rewrite(body, state.positions,
                                  lambda name: name in visible or name in state.module_names,
                                  lambda definition: _synthetic_scope_names(definition, visible, klass))
    made_here: list[cst.BaseStatement] = []
    # Their defs run when the function starts: marked with the line of its first statement, so a line
    # tracer sees no line the function has not reached (their bodies keep the expressions' lines).
    first_line = state.line_of(body[0]) if body else 0
    for item in found:  # innermost first: a nested generator expression is compiled inside its own
        # CPython adds no <locals> under a comprehension: outer.<locals>.<genexpr>.<genexpr>
        inner_display = f"{display}.{item.label}" if display else f"{qualname}.<locals>.{item.label}"
        inner = compile_function(state, item.definition, item.definition, f"{qualname}.<locals>.{item.name}", klass,
                                 display=inner_display, scope=item.scope)
        rename = stmt(f"{item.name}.__name__, {item.name}.__qualname__ = {item.label!r}, {inner_display!r}\n")
        if first_line:
            inner = _mark_lines(inner, first_line).with_changes(  # type: ignore[assignment]
                decorators=[d.with_changes(trailing_whitespace=_comment(first_line)) for d in inner.decorators])
            rename = _mark_lines(rename, first_line)  # type: ignore[assignment]
        made_here += [inner, rename]
    def owner_of(node: cst.CSTNode) -> str | None:
        owner = labels.owners.get(state.position_of(node)) if labels is not None else None  # type: ignore[arg-type]
        return owner.hash if owner is not None else None

    asynchronous = original.asynchronous is not None
    lowerer = _MarkingLowerer(state.line_of, owner_of, "await" if asynchronous else "yield")
    if asynchronous and scope is None:
        lowerer.exprs.plain_locals = plain_locals(state, original, cells)
    try:
        lowered = lowerer.lower_body(body)
    except Unsupported as exc:
        state.report(dg.UnsupportedConstruct, _find_original(original, exc.node) or original, exc.kind)
        return updated
    emitter = Emitter(lowered, lowerer.exprs.yield_lines, lowerer.try_info, lowerer.exprs.await_slots)
    fast = emitter.fast()
    probe = updated.with_changes(decorators=[], body=block(fast or [small(cst.Pass())]), leading_lines=[])
    params, others, live, strict = analyze_strict(textwrap.dedent(code_of(probe)))
    captured = set(cells) | set(frees)
    states: dict[int, tuple[str, ...]] = {}
    restore_body = emitter.restore()
    saved: set[str] = set()
    for k in sorted(emitter.state_of.values()):
        names = (live.get(k, set()) | emitter.needs.get(k, set()))
        names = {n for n in names if not n.startswith(_NOT_SAVED) and n not in captured and n != CELLS}
        ordered = tuple(sorted(names, key=lambda n: (n not in params, params.index(n) if n in params else 0, n)))
        states[k] = ordered
        saved.update(ordered)
    prologue: list[cst.BaseStatement] = [assign(PREFIX + "L", expr(f"{FRAME}.values"))]
    for p in params:
        if p in captured or p == CELLS:
            continue  # carried by its cell; a generator expression's cells argument (stored above)
        prologue.append(stmt(f"if {p!r} in {PREFIX}L: {p} = {PREFIX}L[{p!r}]\nelse: del {p}\n"))
    for name in sorted(saved - set(params)):
        prologue.append(stmt(f"if {name!r} in {PREFIX}L: {name} = {PREFIX}L[{name!r}]\n"))
    prologue.append(assign(RESTORE, expr(f"{FRAME}.state")))
    # The saved values now live in the locals only (nothing else may keep them alive).
    prologue.append(stmt(f"{FRAME} = {PREFIX}L = None\n"))
    meta = f"{PREFIX}meta{state.meta_prefix}{len(state.plans) + 1}"
    decls = [small(cst.Global(names=[cst.NameItem(cst.Name(n)) for n in _declared(h)])) if isinstance(h, cst.Global)
             else small(cst.Nonlocal(names=[cst.NameItem(cst.Name(n)) for n in _declared(h)])) for h in hoist.found]
    fast_body = emitter.fast_final() or [small(cst.Pass())]
    # functions of generator expressions: made once per call, in both bodies (never carried)
    prologue[0:0] = made_here
    fast_body[0:0] = made_here
    if captured:
        store = stmt(f"{CELLS} = lambda: ({', '.join(sorted(captured))},)\n")
        prologue.insert(0, store)
        fast_body.insert(0, store)
    # a coroutine that never awaits has only state 0, restored by calling it: no restore body
    entry = [if_(expr(f"{RT}.PENDING and ({FRAME} := {RT}.take({meta})) is not None"),
                 prologue + restore_body, fast_body)] if emitter.state_of else fast_body
    bindings: list[cst.BaseStatement] = []
    lowered_code = code_of(cst.Module(body=lowered))
    if DETACHED_CLASS in lowered_code or DETACHING in lowered_code:
        bindings.append(stmt(f"{DETACHED_CLASS}, {DETACHING} = {RT}.Detached, {RT}.detaching\n"))
    new_body = doc + decls + bindings + entry
    target = [d for d in updated.decorators if isinstance(d.decorator, cst.Name) and d.decorator.value == TARGET]
    decorator = cst.Decorator(decorator=expr(f"{RT}.compiled({meta})"))
    registration = None
    if scope is not None:  # a generator expression's function is made at every call of the enclosing one
        register = PREFIX + "reg" + meta[len(PREFIX + "meta"):]
        registration = stmt(f"{register} = {RT}.compiled({meta})\n")
        decorator = cst.Decorator(decorator=cst.Name(register))
    if target:  # the on-the-fly compiler's marker stands where the user's first decorator was
        decorator = decorator.with_changes(trailing_whitespace=target[0].trailing_whitespace)
    lines = {k: emitter.lines[k] for k in states}
    yf = sorted(k for k, delegates in emitter.delegating.items() if delegates)
    described = {n: lowerer.made[n] for n in sorted(saved) if n in lowerer.made}
    if scope is not None:  # a generator expression's function: its loops are the expression's clauses
        described = {n: text.replace("the `for` loop", "the `for` clause of the generator expression")
                     for n, text in described.items()}
        if genexps.ITERATOR in saved:
            described[genexps.ITERATOR] = f"the iterator of the generator expression at line {state.line_of(original)}"
    # what the compiler's own locals hold, for error messages (left out when there are none)
    extra = f", compiler_locals={described!r}" if described else ""
    tree = definition_tree(original)
    extra += _identity(state, original, tree, labels, emitter, lowerer, strict, captured, saved)
    declaration = stmt(
        f"{meta} = {RT}.declare(__name__, {qualname!r}, {fingerprint(tree)!r}, {states!r}, {lines!r}, "
        f"{tuple(yf)!r}, {tuple(params)!r}{extra})\n")
    variant = _variant(updated, new_body, meta, cells, frees, klass) if cells else []
    state.plans.append(FunctionPlan(qualname, meta, declaration, variant, registration))
    kept = [d for d in updated.decorators if not (isinstance(d.decorator, cst.Name) and d.decorator.value == TARGET)]
    body = updated.body.with_changes(body=new_body) if isinstance(updated.body, cst.IndentedBlock) else block(new_body)
    return updated.with_changes(body=body, decorators=[*kept, decorator])


def _identity(state: ModuleState, original: cst.FunctionDef, tree: ast.Module, labels: points.Labels | None,
              emitter: Emitter, lowerer: StmtLowerer, strict: dict[int, set[str]], captured: set[str],
              saved: set[str]) -> str:
    """The declaration's arguments that say what survives a deploy: the version, each point's
    label and the captured variables its code reads (its contract's cells; the other locals it
    needs are its state's names), the names compiler locals had before they were structural, and
    the function's source text."""
    by_state: dict[int, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {}
    for line_id, k in emitter.state_of.items():
        node = lowerer.exprs.yield_nodes.get(line_id)
        written_out = lowerer.exprs.synthetic.get(id(node))
        if labels is None or node is None:
            spec = None
        elif written_out is not None:  # an await of an async for or async with
            spec = labels.written_out.get((state.position_of(written_out.statement), written_out.role))  # type: ignore[arg-type]
        else:
            spec = labels.points.get(state.position_of(node))  # type: ignore[arg-type]
        cells = tuple(sorted(strict.get(k, set()) & captured))
        if spec is None:  # a written-out generator expression or comprehension: its points are its clauses
            by_state[k] = (f"#{k}", f"{lowerer.suspension} at line {emitter.lines[k]}", (), cells)
        else:
            by_state[k] = (spec.key, spec.display, spec.aliases, cells)
    legacy = {name: lowerer.legacy[name] for name in sorted(saved) if name in lowerer.legacy}
    source = _source_text(state, original) if labels else None
    return f", version={version(tree)!r}, points={by_state!r}, legacy_names={legacy!r}, source={source!r}"


def _source_text(state: ModuleState, original: cst.FunctionDef) -> tuple[int, str] | None:
    """(number of the first line, the lines) of the function as written in its file, decorators included."""
    start = state.positions.get(original.decorators[0] if original.decorators else original)
    end = state.positions.get(original)
    if start is None or end is None:
        return None
    lines = state.source.splitlines(keepends=True)[start.start.line - 1:end.end.line]
    return start.start.line, "".join(lines)


def _declared(node: cst.Global | cst.Nonlocal) -> list[str]:
    return [item.name.value for item in node.names]


def _names(node: cst.CSTNode) -> list[cst.Name]:
    found: list[cst.Name] = []

    class Collect(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            found.append(n)

    node.visit(Collect())
    return found


def _find_original(original: cst.CSTNode, node: cst.CSTNode) -> cst.CSTNode | None:
    """Lowering may rebuild nodes; find the original node with the same code for its position."""
    target = code_of(node).strip()
    result: list[cst.CSTNode] = []

    class Find(cst.CSTVisitor):
        def on_visit(self, n: cst.CSTNode) -> bool:
            if not result and type(n) is type(node) and code_of(n).strip() == target:
                result.append(n)
            return not result

    original.visit(Find())
    return result[0] if result else None


class ModuleCompiler(cst.CSTTransformer):
    """Walks a module, compiling durable functions (innermost first) and tracking qualnames."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, state: ModuleState) -> None:
        super().__init__()
        self.state = state
        self.scopes: list[tuple[str, str]] = []

    def _qualname(self, name: str) -> str:
        parts: list[str] = []
        scopes = [s for s in self.scopes if not s[1].startswith(PREFIX)]  # on-the-fly wrappers
        for kind, scope in [*self.state.scope, *scopes]:
            parts.append(scope)
            if kind == "def":
                parts.append("<locals>")
        return ".".join(parts + [name])

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.scopes.append(("class", node.name.value))

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        self.scopes.pop()
        self.state.replaced[id(original)] = updated
        return updated

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scopes.append(("def", node.name.value))

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        result = self._function(original, updated)
        self.state.replaced[id(original)] = result
        return result

    def _function(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        self.scopes.pop()
        marked = any(_is_durable_decorator(d) for d in original.decorators)
        if original.asynchronous is not None:
            return self._coroutine(original, updated, marked)
        is_gen = has_suspension(original.body)
        coroutine = _coroutine_decorator(original, self.state.coroutine_decorators)
        if coroutine is not None:  # types.coroutine replaces the code object: never durable
            if marked:
                detail = f"@{dotted_name(coroutine.decorator)} on @durable function {original.name.value!r}"
                self.state.report(dg.CoroutineDecorator, coroutine, detail)
            return updated
        if marked and not is_gen:
            self.state.report(dg.NotAGenerator, original, original.name.value)
            return updated
        if not (marked or (self.state.all_generators and is_gen)):
            return updated
        return self._compile(original, updated)

    def _coroutine(self, original: cst.FunctionDef, updated: cst.FunctionDef, marked: bool) -> cst.FunctionDef:
        """``async def``: a coroutine function compiles (its awaits are its suspension points); an
        asynchronous generator is refused when marked, and left alone by ``all_generators``."""
        if _yields(original.body):
            if marked:
                self.state.report(dg.AsyncNotSupported, original, original.name.value)
            return updated
        if not (marked or self.state.all_generators):
            return updated
        comprehension = _async_comprehension(original.body)
        if comprehension is not None:
            self.state.report(dg.UnsupportedConstruct, comprehension,
                              "await or async for inside a comprehension that uses := or locals()/vars()/eval()/exec()")
            return updated
        return self._compile(original, updated)

    def _compile(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        classes = [name for kind, name in [*self.state.scope, *self.scopes] if kind == "class"]
        return compile_function(self.state, original, updated, self._qualname(original.name.value),
                                classes[-1] if classes else None)


class _YieldFinder(OwnScope, cst.CSTVisitor):
    def __init__(self) -> None:
        self.found = False

    def visit_Yield(self, node: cst.Yield) -> bool:
        self.found = True
        return False


def _yields(node: cst.CSTNode) -> bool:
    """Whether the function's own scope has a yield (in an ``async def``: an asynchronous generator)."""
    finder = _YieldFinder()
    node.visit(finder)
    return finder.found


class _AsyncComprehensions(OwnScope, cst.CSTVisitor):
    """The first list, set or dict comprehension that awaits and cannot be written out as a coroutine
    function (it binds a name in the enclosing scope with ``:=``, or reads the scope dynamically)."""

    def __init__(self) -> None:
        self.found: cst.CSTNode | None = None

    def _comprehension(self, node: cst.ListComp | cst.SetComp | cst.DictComp) -> bool:
        if self.found is None and is_async_comprehension(node) and not genexps.convertible(node):
            self.found = node
        return True

    visit_ListComp = visit_SetComp = visit_DictComp = _comprehension  # type: ignore[assignment]


def _async_comprehension(body: cst.CSTNode) -> cst.CSTNode | None:
    finder = _AsyncComprehensions()
    body.visit(finder)
    return finder.found


@dataclass(frozen=True)
class CompiledModule:
    """A compiled module's source and, for each of its lines, the original line it came from."""

    code: str
    lines: list[int]
    """``lines[n]`` is the source line of generated line ``n`` (1-based; index 0 unused)."""
    changed: bool


def compile_module(source: str, path: str = "<string>", *, all_generators: bool = False, meta_prefix: str = "",
                   scope: tuple[tuple[str, str], ...] = ()) -> str:
    """Compile a module's durable functions. ``meta_prefix`` and ``scope`` serve the on-the-fly
    compiler: unique names for its declarations and the qualname of the enclosing scope."""
    return compile_module_mapped(source, path, all_generators=all_generators, meta_prefix=meta_prefix,
                                 scope=scope).code


def compile_module_mapped(source: str, path: str = "<string>", *, all_generators: bool = False,
                          meta_prefix: str = "", scope: tuple[tuple[str, str], ...] = ()) -> CompiledModule:
    """``compile_module`` with the line table that maps the result back onto ``source``.

    Only the top-level statements that hold durable functions go through libcst (the rest of the
    module is blanked out for it, keeping line numbers); everything else is copied unchanged."""
    try:
        # CPython's own compiler gives the exact position, and also rejects what only its later
        # stages catch (a yield inside a comprehension, a nonlocal without a binding, ...).
        tree = compile(source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        compile(tree, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise dg.CompileError([dg.SyntaxProblem(path, exc.lineno or 1, exc.offset or 1, exc.msg)]) from None
    lines = regions.split_lines(source)
    found = regions.durable_regions(tree, lines, all_generators)
    if not found:
        return CompiledModule(source, list(range(len(lines) + 1)), False)
    masked = regions.masked_source(lines, found)
    try:
        module = cst.parse_module(masked)
    except cst.ParserSyntaxError as exc:
        raise dg.CompileError([dg.SyntaxProblem(path, exc.editor_line, exc.editor_column, exc.message)]) from None
    first = MetadataWrapper(module, unsafe_skip_copy=True)
    module = module.visit(_MarkAll(first.resolve(PositionProvider)))
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    state = ModuleState(path, all_generators, dict(positions), meta_prefix=meta_prefix, scope=scope, source=masked,
                        coroutine_decorators=coroutine_decorators(tree), module_names=bound_names(tree),
                        point_names=points.point_call_names(tree))
    new_module = wrapper.visit(ModuleCompiler(state))
    if state.diagnostics:
        raise dg.CompileError(state.diagnostics)
    if not state.plans:
        return CompiledModule(source, list(range(len(lines) + 1)), False)
    statements = [s for s in new_module.body if not isinstance(s, cst.SimpleStatementLine)]  # not fillers
    assert len(statements) == len(found), "one compiled statement per region"
    compiled = [new_module.code_for_node(s.with_changes(leading_lines=())) for s in statements]
    header = [stmt(f"import runtime._support as {RT}\n"), stmt(genexps.HEADER)]  # (lowered loops use ITER too)
    header += [s for p in state.plans for s in (p.declaration, p.registration) if s is not None]
    header += [s for p in state.plans for s in p.variant]
    header_code = new_module.with_changes(body=header, header=(), footer=()).code
    return _splice(lines, found, compiled, header_code, regions.header_line(tree))


def _splice(lines: list[str], found: list[tuple[int, int]], compiled: list[str], header_code: str,
            after: int) -> CompiledModule:
    """The original lines with each region replaced by its compiled code and the compiler's
    declarations inserted after line ``after``, plus the line table of the result (with the column
    shift of every generated line that is a source line's code, re-indented or copied)."""
    out: list[str] = []
    table = [0]
    columns: dict[int, int] = {}
    starts = {first: (last, code) for (first, last), code in zip(found, compiled)}

    def block(code: str, fallback: int, region: bool) -> None:
        if not code.endswith(("\n", "\r")):
            code += "\n"
        out.append(code)
        marks = line_table(code)
        for index, text in enumerate(regions.split_lines(code), 1):
            mark = marks[index] or fallback
            shift = column_shift(text, lines[mark - 1]) if region and 0 < mark <= len(lines) else None
            if shift is not None:
                columns[len(table)] = shift
            table.append(mark)

    if after == 0:
        block(header_code, found[0][0], False)
    n = 1
    while n <= len(lines):
        if n in starts:
            last, code = starts[n]
            block(code, n, True)
            n = last + 1
            continue
        line = lines[n - 1]
        out.append(line if line.endswith(("\n", "\r")) else line + "\n")
        columns[len(table)] = 0
        table.append(n)
        if n == after:
            block(header_code, found[0][0], False)
        n += 1
    return CompiledModule("".join(out), LineTable(table, columns), True)
