"""Small builders and predicates over libcst nodes shared by the compiler passes."""
from __future__ import annotations

from typing import Iterable, Sequence

import libcst as cst

PREFIX = "_dg_"
"""Names the compiler introduces start with this prefix; user code may not use it."""

STATE = PREFIX + "s"
RESTORE = PREFIX + "r"
FRAME = PREFIX + "f"
RT = PREFIX + "rt"


def name(ident: str) -> cst.Name:
    return cst.Name(ident)


def expr(code: str) -> cst.BaseExpression:
    return cst.parse_expression(code)


def stmt(code: str) -> cst.BaseStatement:
    return cst.parse_statement(code)


def small(node: cst.BaseSmallStatement) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine(body=[node])


def assign(target: str | cst.BaseAssignTargetExpression, value: cst.BaseExpression) -> cst.SimpleStatementLine:
    tgt = cst.Name(target) if isinstance(target, str) else target
    if not value.lpar and (isinstance(value, (cst.NamedExpr, cst.Yield)) or "\n" in code_of(value)):
        value = paren(value)  # a part of a bracketed expression may span lines: brackets of its own
    return small(cst.Assign(targets=[cst.AssignTarget(target=tgt)], value=value))


def releasing(stmts: Sequence[cst.BaseStatement], *names: str) -> cst.Try:
    """``try: stmts finally: name = None``: a compiler temporary that stands for a value CPython
    keeps on its stack lets go of it when the construct ends, as CPython does (so finalizers of
    for-loop iterators, delegates and managers run at the same moment)."""
    return cst.Try(body=block(stmts), finalbody=cst.Finally(body=block([
        small(cst.Assign(targets=[cst.AssignTarget(cst.Name(n)) for n in names], value=cst.Name("None")))])))


def expr_stmt(value: cst.BaseExpression) -> cst.SimpleStatementLine:
    return small(cst.Expr(value=value))


def block(stmts: Sequence[cst.BaseStatement]) -> cst.IndentedBlock:
    body = list(stmts) or [small(cst.Pass())]
    return cst.IndentedBlock(body=body)


def if_(test: cst.BaseExpression, body: Sequence[cst.BaseStatement],
        orelse: Sequence[cst.BaseStatement] | None = None) -> cst.If:
    return cst.If(test=test, body=block(body),
                  orelse=cst.Else(body=block(orelse)) if orelse else None)


def attr(obj: str, attribute: str) -> cst.Attribute:
    return cst.Attribute(value=cst.Name(obj), attr=cst.Name(attribute))


def rt(attribute: str) -> cst.Attribute:
    """A reference to a name of the runtime support module inside compiled code."""
    return attr(RT, attribute)


def call(func: cst.BaseExpression, *args: cst.BaseExpression) -> cst.Call:
    return cst.Call(func=func, args=[cst.Arg(value=_argument(a)) for a in args])


def _argument(node: cst.BaseExpression) -> cst.BaseExpression:
    """An unparenthesized tuple (``for v in 1, 2:``) must be wrapped to stay one argument."""
    if isinstance(node, cst.Tuple) and not node.lpar:
        return paren(node)
    return node


def paren(node: cst.BaseExpression) -> cst.BaseExpression:
    """Wrap an expression in parentheses (once) so it can be embedded anywhere."""
    if node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def body_of(node: cst.BaseSuite) -> list[cst.BaseStatement]:
    if isinstance(node, cst.IndentedBlock):
        return list(node.body)
    assert isinstance(node, cst.SimpleStatementSuite)
    return [cst.SimpleStatementLine(body=list(node.body))]


def flatten(stmts: Iterable[cst.BaseStatement | Sequence[cst.BaseStatement]]) -> list[cst.BaseStatement]:
    out: list[cst.BaseStatement] = []
    for item in stmts:
        if isinstance(item, (list, tuple)):
            out.extend(item)
        else:
            out.append(item)  # type: ignore[arg-type]
    return out


def code_of(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def dotted_name(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a name or a chain of attributes, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted_name(node.value)
        return f"{base}.{node.attr.value}" if base is not None else None
    return None


class OwnScope:
    """Mixin of a libcst visitor or transformer that stays in the scope it starts in: it does not enter
    nested functions, lambdas or classes."""

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False


class KeepPositions(cst.CSTTransformer):
    """A transformer whose rebuilt nodes keep the source position of the node they replace in
    ``positions`` (lines of statements and yields, the labels of points and the owners of compiler locals
    are found by position)."""

    def __init__(self, positions: dict | None) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.positions = positions

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> cst.CSTNode:  # type: ignore[override]
        result = super().on_leave(original, updated)
        if (self.positions is not None and result is not original and isinstance(result, cst.CSTNode)
                and result not in self.positions):
            pos = self.positions.get(original)
            if pos is not None:
                self.positions[result] = pos
        return result  # type: ignore[return-value]


class _SuspensionFinder(OwnScope, cst.CSTVisitor):
    """Finds a yield or an await that belongs to the scope being searched (not to nested functions or
    classes)."""

    def __init__(self) -> None:
        self.found = False

    def visit_Yield(self, node: cst.Yield) -> bool:
        self.found = True
        return False

    def visit_Await(self, node: cst.Await) -> bool:
        self.found = True
        return False

    def visit_For(self, node: cst.For) -> None:
        if node.asynchronous is not None:  # every step awaits the iterator
            self.found = True

    def visit_With(self, node: cst.With) -> None:
        if node.asynchronous is not None:  # awaits __aenter__ and __aexit__
            self.found = True

    def _comprehension(self, node: cst.BaseComp) -> bool:
        # Only the outermost iterable is evaluated in the enclosing scope; an async comprehension
        # suspends it while it runs.
        if is_async_comprehension(node):
            self.found = True
        node.for_in.iter.visit(self)
        return False

    def visit_ListComp(self, node: cst.ListComp) -> bool:
        return self._comprehension(node)

    def visit_SetComp(self, node: cst.SetComp) -> bool:
        return self._comprehension(node)

    def visit_DictComp(self, node: cst.DictComp) -> bool:
        return self._comprehension(node)

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> bool:
        return self._comprehension(node)


DYNAMIC_NAMES = frozenset({"locals", "vars", "dir", "eval", "exec"})
"""Builtins that read a function's scope by name: code that calls them sees every local, the compiler's too."""

SUSPENSIONS = (cst.Yield, cst.Await)
"""The expressions that suspend a durable function: ``yield`` in a generator, ``await`` in a coroutine."""


def has_suspension(node: cst.CSTNode | None) -> bool:
    """True when ``node`` contains a yield or an await of the current function's own scope."""
    if node is None:
        return False
    if isinstance(node, SUSPENSIONS):
        return True
    finder = _SuspensionFinder()
    node.visit(finder)
    return finder.found


def any_suspension(nodes: Iterable[cst.CSTNode | None]) -> bool:
    return any(has_suspension(n) for n in nodes)


class _AwaitsInComprehension(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found = False

    def visit_Await(self, node: cst.Await) -> bool:
        self.found = True
        return False

    def visit_CompFor(self, node: cst.CompFor) -> None:
        if node.asynchronous is not None:
            self.found = True

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False


def is_async_comprehension(node: cst.CSTNode) -> bool:
    """A list, set or dict comprehension that awaits (anywhere but in its first iterable, which runs in
    the enclosing scope) or iterates with ``async for``: running it suspends the enclosing coroutine."""
    if not isinstance(node, (cst.ListComp, cst.SetComp, cst.DictComp)):
        return False
    first = node.for_in
    if first.asynchronous is not None:
        return True
    parts: list[cst.CSTNode] = [*first.ifs, first.target]
    parts += [node.key, node.value] if isinstance(node, cst.DictComp) else [node.elt]
    if first.inner_for_in is not None:
        parts.append(first.inner_for_in)
    finder = _AwaitsInComprehension()
    for part in parts:
        part.visit(finder)
    return finder.found
