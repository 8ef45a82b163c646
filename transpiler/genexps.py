"""Generator expressions inside durable functions become nested durable generators.

A generator expression is a generator function CPython writes for you: ``(E for T in A if C for U in
B)`` is ``def <genexpr>(.0): for T in .0: if C: for U in B: yield E`` called with ``iter(A)``, the
outermost iterable evaluated (and ``iter()`` called on it) where the expression is written. This pass
writes that function out (``_dg_genexprN``) so that it is compiled like any nested durable generator:
a generator expression still live at a suspension travels in snapshots like a held durable generator.

Each function is defined once at the top of the enclosing function's bodies (a def only makes a
function object; its closure is the frame's cells, so free variables are read when the expression
runs, with late binding, exactly as natively), and the expression becomes
``_dg_genexprN(_dg_iter(A))``. The function's ``__name__`` and ``__qualname__`` are set to the ones
CPython gives a generator expression (``<genexpr>``, ``outer.<locals>.<genexpr>``), which its
generators take.

Left native (a plain generator expression, as before): expressions that are not evaluated in the
durable function's own scope (inside a lambda's body, a nested ``def``, a class body, or the parts of
another comprehension that run in that comprehension's scope), asynchronous ones (``async for`` or
``await`` inside), ones with an assignment expression (it binds in the enclosing scope), and ones
that call ``locals``/``vars``/``dir``/``eval``/``exec`` (they would see the compiler's own locals).
"""
from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from .cstutil import PREFIX, block, small

FUNCTION = PREFIX + "genexpr"
"""Prefix of the functions that stand for generator expressions (locals of the enclosing function)."""

ITERATOR = PREFIX + "0"
"""The parameter holding the outermost iterator (CPython calls it ``.0``)."""

ITER = PREFIX + "iter"
"""Module-level alias of the builtin ``iter`` (the user may shadow ``iter``)."""

HEADER = f"from builtins import iter as {ITER}\n"

_DYNAMIC = {"locals", "vars", "dir", "eval", "exec"}


@dataclass
class Found:
    name: str
    node: cst.GeneratorExp
    definition: cst.FunctionDef


def _convertible(node: cst.GeneratorExp) -> bool:
    comp: cst.CompFor | None = node.for_in
    while comp is not None:
        if comp.asynchronous is not None:
            return False
        comp = comp.inner_for_in
    blocker = _Blocker()
    node.visit(blocker)
    return not blocker.found


class _Blocker(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found = False

    def visit_Await(self, node: cst.Await) -> bool:
        self.found = True
        return False

    def visit_NamedExpr(self, node: cst.NamedExpr) -> bool:
        self.found = True
        return False

    def visit_Yield(self, node: cst.Yield) -> bool:  # only in the outermost iterable (elsewhere a SyntaxError)
        self.found = True
        return False

    def visit_CompFor(self, node: cst.CompFor) -> None:
        if node.asynchronous is not None:
            self.found = True

    def visit_Name(self, node: cst.Name) -> None:
        if node.value in _DYNAMIC:
            self.found = True


class Rewriter(cst.CSTTransformer):
    """Replaces the generator expressions evaluated in the function's own scope with calls of the
    functions it writes out (``found``); ``positions`` gets the source position of their statements."""

    def __init__(self, positions: dict) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.positions = positions
        self.found: list[Found] = []

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> cst.CSTNode:  # type: ignore[override]
        result = super().on_leave(original, updated)
        if result is not original and isinstance(result, cst.CSTNode) and result not in self.positions:
            pos = self.positions.get(original)
            if pos is not None:  # rebuilt nodes keep their source position (lines of statements, yields)
                self.positions[result] = pos
        return result  # type: ignore[return-value]

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

    def leave_ListComp(self, original: cst.ListComp, updated: cst.ListComp) -> cst.ListComp:
        return updated.with_changes(for_in=self._outermost(updated))

    def leave_SetComp(self, original: cst.SetComp, updated: cst.SetComp) -> cst.SetComp:
        return updated.with_changes(for_in=self._outermost(updated))

    def leave_DictComp(self, original: cst.DictComp, updated: cst.DictComp) -> cst.DictComp:
        return updated.with_changes(for_in=self._outermost(updated))

    def leave_GeneratorExp(self, original: cst.GeneratorExp, updated: cst.GeneratorExp) -> cst.BaseExpression:
        outermost = self._outermost(updated)
        if not _convertible(original):
            return updated.with_changes(for_in=outermost)
        name = f"{FUNCTION}{len(self.found) + 1}"
        self.found.append(Found(name, original, self._definition(name, original)))
        iterator = cst.Call(func=cst.Name(ITER), args=[cst.Arg(value=outermost.iter)])
        return cst.Call(func=cst.Name(name), args=[cst.Arg(value=iterator)], lpar=updated.lpar, rpar=updated.rpar)

    # -- the function ------------------------------------------------------------------------
    def _at(self, new: cst.CSTNode, *sources: cst.CSTNode) -> None:
        for source in sources:
            pos = self.positions.get(source)
            if pos is not None:
                self.positions[new] = pos
                return

    def _definition(self, name: str, node: cst.GeneratorExp) -> cst.FunctionDef:
        """``def NAME(_dg_0): for T in _dg_0: if C: ... yield E`` (each statement at its clause's line)."""
        inner: cst.BaseStatement = small(cst.Expr(value=cst.Yield(value=node.elt)))
        self._at(inner, node.elt, node)
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
            loop = cst.For(target=clause.target, iter=iterable, body=block([inner]))
            self._at(loop, clause, node)
            inner = loop
        definition = cst.FunctionDef(name=cst.Name(name), params=cst.Parameters(params=[cst.Param(cst.Name(ITERATOR))]),
                                     body=block([inner]))
        self._at(definition, node)
        self._at(definition.name, node)
        return definition


def rewrite(body: list[cst.BaseStatement], positions: dict) -> tuple[list[cst.BaseStatement], list[Found]]:  # type: ignore[type-arg]
    """The statements with their generator expressions replaced, and the functions written out."""
    rewriter = Rewriter(positions)
    new_body = [s.visit(rewriter) if _has_genexp(s) else s for s in body]  # untouched nodes keep their identity
    return new_body, rewriter.found  # type: ignore[return-value]


class _AnyGenexp(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found = False

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.GeneratorExp):
            self.found = True
        return not self.found


def _has_genexp(node: cst.CSTNode) -> bool:
    finder = _AnyGenexp()
    node.visit(finder)
    return finder.found
