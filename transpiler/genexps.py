"""Generator expressions inside durable functions become nested durable generators.

A generator expression is a generator function CPython writes for you: ``(E for T in A if C for U in
B)`` is ``def <genexpr>(.0): for T in .0: if C: for U in B: yield E`` called with ``iter(A)``, the
outermost iterable evaluated (and ``iter()`` called on it) where the expression is written. This pass
writes that function out (``_dg_genexprN``) so that it is compiled like any nested durable generator:
a generator expression still live at a suspension travels in snapshots like a held durable generator.

A generator expression passed straight to a builtin that consumes it and keeps no reference to it
(``sum(x * x for x in xs)``, ``any(...)``, ``"".join(...)``, see ``CONSUMERS``) cannot be live at a
suspension: it stays native, at CPython's speed.

Each function is defined once at the top of the enclosing function's bodies (a def only makes a
function object; its closure is the frame's cells, so free variables are read when the expression
runs, with late binding, exactly as natively), with its decorator made once at import
(``_dg_regN``), and the expression becomes ``_dg_genexprN(_dg_iter(A))``, or
``_dg_genexprN(_dg_iter(A), _dg_cells)`` when it has free variables: a generator that has not started
has no locals but its arguments, and the enclosing frame's ``_dg_cells`` lambda among them lets a
snapshot carry its cells (shared with the enclosing frame) instead of their values. Its loop iterates
``_dg_0`` itself (no second ``iter()``, as natively). The function's ``__name__`` and
``__qualname__`` are set to the ones CPython gives a generator expression (``<genexpr>``,
``outer.<locals>.<genexpr>``, ``outer.<locals>.<genexpr>.<genexpr>``), which its generators take.

Left native (a plain generator expression, as before): expressions that are not evaluated in the
durable function's own scope (inside a lambda's body, a nested ``def``, a class body, or the parts of
another comprehension that run in that comprehension's scope), asynchronous ones (``async for`` or
``await`` inside), ones with an assignment expression (it binds in the enclosing scope), and ones
that call ``locals``/``vars``/``dir``/``eval``/``exec`` (they would see the compiler's own locals).

What still tells a compiled one from a native one: its code object (``gi_code.co_name`` and the
function name in a traceback are ``_dg_genexprN``; the line is the user's), its frame's locals (the
compiler's ``_dg_`` names among them), the qualnames of lambdas written inside it
(``outer.<locals>._dg_genexpr1.<locals>.<lambda>``), and, until the runtime names restored generators
from their declaration, the ``__name__``/``__qualname__`` of one that came back from a snapshot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import libcst as cst

from .cstutil import DYNAMIC_NAMES, PREFIX, KeepPositions, block, is_async_comprehension, small

FUNCTION = PREFIX + "genexpr"
"""Prefix of the functions that stand for generator expressions (locals of the enclosing function)."""

ITERATOR = PREFIX + "0"
"""The parameter holding the outermost iterator (CPython calls it ``.0``)."""

ITER = PREFIX + "iter"
"""Module-level alias of the builtin ``iter`` (the user may shadow ``iter``)."""

HEADER = f"from builtins import iter as {ITER}\n"

RESULT = PREFIX + "comp"
"""The local of a written-out comprehension that collects its result."""

CELLS = PREFIX + "cells"
"""The enclosing frame's never-called lambda over its captured variables (``generate.CELLS``)."""


CONSUMERS = frozenset({"sum", "any", "all", "min", "max", "list", "tuple", "set", "frozenset", "sorted", "dict",
                       "bytes", "bytearray", "next"})
"""Builtins that take what they need from a generator expression passed to them and keep no
reference to it once they return: an expression passed straight to one of them (``sum(x for x in
xs)``) can never be live at a suspension, so it stays a native generator expression (CPython's speed
and exact behaviour). So does one passed to ``"sep".join`` on a string literal."""


Scope = tuple[list[str], list[str], set[str]]
"""(cell variables, free variables, names resolved in a function scope) of a function."""


@dataclass
class Found:
    name: str
    node: cst.GeneratorExp | cst.ListComp | cst.SetComp | cst.DictComp
    definition: cst.FunctionDef
    scope: Scope
    label: str = "<genexpr>"
    """The name CPython gives the function (``<genexpr>``, ``<listcomp>``, ``<setcomp>``, ``<dictcomp>``)."""


LABELS = {cst.ListComp: "<listcomp>", cst.SetComp: "<setcomp>", cst.DictComp: "<dictcomp>"}


def convertible(node: cst.GeneratorExp | cst.ListComp | cst.SetComp | cst.DictComp) -> bool:
    """Whether the expression can be written out as a function (an async comprehension may await)."""
    asynchronous = not isinstance(node, cst.GeneratorExp)
    comp: cst.CompFor | None = node.for_in
    while comp is not None:
        if comp.asynchronous is not None and not asynchronous:
            return False
        comp = comp.inner_for_in
    blocker = _Blocker(asynchronous)
    first = node.for_in
    # the outermost iterable runs in the enclosing scope (a yield there is the enclosing function's)
    values = [node.key, node.value] if isinstance(node, cst.DictComp) else [node.elt]
    for part in (*values, first.target, *first.ifs, *([first.inner_for_in] if first.inner_for_in else [])):
        part.visit(blocker)
    return not blocker.found


class _Blocker(cst.CSTVisitor):
    def __init__(self, asynchronous: bool = False) -> None:
        self.found = False
        self.asynchronous = asynchronous

    def visit_Await(self, node: cst.Await) -> bool:
        if not self.asynchronous:
            self.found = True
        return False

    def visit_NamedExpr(self, node: cst.NamedExpr) -> bool:
        self.found = True
        return False

    def visit_CompFor(self, node: cst.CompFor) -> None:
        if node.asynchronous is not None and not self.asynchronous:
            self.found = True

    def visit_Name(self, node: cst.Name) -> None:
        if node.value in DYNAMIC_NAMES:
            self.found = True


class Rewriter(KeepPositions):
    """Replaces the generator expressions evaluated in the function's own scope with calls of the
    functions it writes out (``found``); ``positions`` gets the source position of their statements."""

    def __init__(self, positions: dict, shadowed: Callable[[str], bool],  # type: ignore[type-arg]
                 scope_of: Callable[[cst.FunctionDef], Scope]) -> None:
        super().__init__(positions)
        self.shadowed = shadowed
        self.scope_of = scope_of
        self.found: list[Found] = []
        self.consumed: set[int] = set()

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if (isinstance(func, cst.Name) and func.value in CONSUMERS and not self.shadowed(func.value)) or (
                isinstance(func, cst.Attribute) and func.attr.value == "join"
                and isinstance(func.value, (cst.SimpleString, cst.ConcatenatedString))):
            self.consumed.update(id(a.value) for a in node.args
                                 if isinstance(a.value, cst.GeneratorExp) and a.keyword is None and not a.star)

    # -- scopes: only what they evaluate in this scope ----------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        return updated.with_changes(decorators=[d.visit(self) for d in updated.decorators],
                                    params=self._defaults(updated.params))

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        return updated.with_changes(decorators=[d.visit(self) for d in updated.decorators],
                                    bases=[a.visit(self) for a in updated.bases],
                                    keywords=[a.visit(self) for a in updated.keywords])

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def leave_Lambda(self, original: cst.Lambda, updated: cst.Lambda) -> cst.Lambda:
        return updated.with_changes(params=self._defaults(updated.params))

    def _defaults(self, params: cst.Parameters) -> cst.Parameters:
        def fix(p: cst.Param) -> cst.Param:
            return p.with_changes(default=p.default.visit(self)) if p.default is not None else p
        return params.with_changes(params=[fix(p) for p in params.params],
                                   posonly_params=[fix(p) for p in params.posonly_params],
                                   kwonly_params=[fix(p) for p in params.kwonly_params])

    def _outermost(self, node: cst.BaseComp) -> cst.CompFor:
        return node.for_in.with_changes(iter=node.for_in.iter.visit(self))

    def visit_ListComp(self, node: cst.ListComp) -> bool:
        return False

    def visit_SetComp(self, node: cst.SetComp) -> bool:
        return False

    def visit_DictComp(self, node: cst.DictComp) -> bool:
        return False

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> bool:
        return False

    def leave_ListComp(self, original: cst.ListComp, updated: cst.ListComp) -> cst.BaseExpression:
        return self._comprehension(original, updated)

    def leave_SetComp(self, original: cst.SetComp, updated: cst.SetComp) -> cst.BaseExpression:
        return self._comprehension(original, updated)

    def leave_DictComp(self, original: cst.DictComp, updated: cst.DictComp) -> cst.BaseExpression:
        return self._comprehension(original, updated)

    def _comprehension(self, original: cst.ListComp | cst.SetComp | cst.DictComp,
                       updated: cst.ListComp | cst.SetComp | cst.DictComp) -> cst.BaseExpression:
        """A comprehension runs to its end where it is written; one that awaits suspends the coroutine
        while it runs: it becomes ``await`` of a coroutine function written out (like CPython's own,
        which it is up to 3.11), so that it is compiled like any durable coroutine."""
        outermost = self._outermost(updated)
        if not (is_async_comprehension(original) and convertible(original)):
            return updated.with_changes(for_in=outermost)
        first = outermost.iter
        if original.for_in.asynchronous is not None:  # __aiter__ is called where the comprehension is
            entry = cst.Call(func=cst.Attribute(value=cst.Name(PREFIX + "rt"), attr=cst.Name("aiter_of")),
                             args=[cst.Arg(value=first)])
        else:
            entry = cst.Call(func=cst.Name(ITER), args=[cst.Arg(value=first)])
        awaited = cst.Await(expression=self._written_out(original, entry), lpar=updated.lpar, rpar=updated.rpar)
        self._at(awaited, original)
        return awaited

    def leave_GeneratorExp(self, original: cst.GeneratorExp, updated: cst.GeneratorExp) -> cst.BaseExpression:
        outermost = self._outermost(updated)
        if id(original) in self.consumed or not convertible(original):
            return updated.with_changes(for_in=outermost)
        call = self._written_out(original, cst.Call(func=cst.Name(ITER), args=[cst.Arg(value=outermost.iter)]))
        return call.with_changes(lpar=updated.lpar, rpar=updated.rpar)

    def _written_out(self, original: cst.GeneratorExp | cst.ListComp | cst.SetComp | cst.DictComp,
                     entry: cst.BaseExpression) -> cst.Call:
        """The call of the function written out for ``original``, given what its loop iterates."""
        name = f"{FUNCTION}{len(self.found) + 1}"
        definition = self._definition(name, original)
        scope = self.scope_of(definition)
        args = [cst.Arg(value=entry)]
        if scope[1]:
            # Its free variables' cells, as an argument: a snapshot of the generator before it starts
            # (it has no locals yet) carries these cells, shared with the enclosing frame.
            definition = definition.with_changes(params=definition.params.with_changes(
                params=[*definition.params.params, cst.Param(cst.Name(CELLS))]))
            self._at(definition, original)
            self._at(definition.name, original)
            args.append(cst.Arg(value=cst.Name(CELLS)))
        self.found.append(Found(name, original, definition, scope, LABELS.get(type(original), "<genexpr>")))
        return cst.Call(func=cst.Name(name), args=args)

    # -- the function ------------------------------------------------------------------------
    def _at(self, new: cst.CSTNode, *sources: cst.CSTNode) -> None:
        for source in sources:
            pos = self.positions.get(source)
            if pos is not None:
                self.positions[new] = pos
                return

    def _definition(self, name: str, node: cst.GeneratorExp | cst.ListComp | cst.SetComp | cst.DictComp
                    ) -> cst.FunctionDef:
        """``def NAME(_dg_0): for T in _dg_0: if C: ... yield E`` (each statement at its clause's line);
        for a comprehension ``async def NAME(_dg_0): RESULT = []; [async] for T in _dg_0: ...
        RESULT.append(E); return RESULT``."""
        element: cst.BaseExpression
        if isinstance(node, cst.GeneratorExp):
            element = cst.Yield(value=node.elt)
            self._at(element, node.elt, node)
        elif isinstance(node, cst.DictComp):  # the key is evaluated first
            element = _call(RESULT, "__setitem__", node.key, node.value)
        else:
            element = _call(RESULT, "append" if isinstance(node, cst.ListComp) else "add", node.elt)
        inner: cst.BaseStatement = small(cst.Expr(value=element))
        self._at(inner, node.value if isinstance(node, cst.DictComp) else node.elt, node)
        clauses: list[cst.CompFor] = []
        comp: cst.CompFor | None = node.for_in
        while comp is not None:
            clauses.append(comp)
            comp = comp.inner_for_in
        for index in range(len(clauses) - 1, -1, -1):
            clause = clauses[index]
            for test in reversed(clause.ifs):
                wrapped = cst.If(test=test.test, body=block([inner]))
                self._at(wrapped, test, clause, node)
                inner = wrapped
            iterable = cst.Name(ITERATOR) if index == 0 else clause.iter
            loop = cst.For(target=clause.target, iter=iterable, body=block([inner]), asynchronous=clause.asynchronous)
            self._at(loop, clause, node)
            inner = loop
        body: list[cst.BaseStatement] = [inner]
        if not isinstance(node, cst.GeneratorExp):
            empty = {cst.ListComp: "[]", cst.SetComp: "set()", cst.DictComp: "{}"}[type(node)]
            body = [small(cst.Assign([cst.AssignTarget(cst.Name(RESULT))], cst.parse_expression(empty))), inner,
                    small(cst.Return(cst.Name(RESULT)))]
            for statement in body[::2]:
                self._at(statement, node)
        definition = cst.FunctionDef(name=cst.Name(name), params=cst.Parameters(params=[cst.Param(cst.Name(ITERATOR))]),
                                     body=block(body),
                                     asynchronous=None if isinstance(node, cst.GeneratorExp) else cst.Asynchronous())
        self._at(definition, node)
        self._at(definition.name, node)
        return definition


def _call(name: str, method: str, *args: cst.BaseExpression) -> cst.Call:
    return cst.Call(func=cst.Attribute(value=cst.Name(name), attr=cst.Name(method)), args=[cst.Arg(a) for a in args])


def rewrite(body: list[cst.BaseStatement], positions: dict, shadowed: Callable[[str], bool],  # type: ignore[type-arg]
            scope_of: Callable[[cst.FunctionDef], Scope]) -> tuple[list[cst.BaseStatement], list[Found]]:
    """The statements with their generator expressions replaced, and the functions written out.
    ``shadowed(name)``: whether a builtin's name may mean something else where the function runs;
    ``scope_of(definition)``: the ``Scope`` of a function written out."""
    rewriter = Rewriter(positions, shadowed, scope_of)
    new_body = [s.visit(rewriter) if _has_genexp(s) else s for s in body]  # untouched nodes keep their identity
    return new_body, rewriter.found  # type: ignore[return-value]


class _AnyGenexp(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found = False

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.GeneratorExp) or is_async_comprehension(node):
            self.found = True
        return not self.found


def _has_genexp(node: cst.CSTNode) -> bool:
    finder = _AnyGenexp()
    node.visit(finder)
    return finder.found
